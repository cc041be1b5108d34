//! The algorithms mpdp knows, one entry each: its `algo` name, what it is, the preset tables
//! it takes from `presets.toml`, its config type and its constructor. Parameter resolution,
//! agent construction, the unknown-algo message and `--algo`'s accepted values all read this
//! table; adding an algorithm is its file, an [`Algorithm`] impl and one line in [`ALGOS`].
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Agent, AgentError, ddpg, mbpo, mpdp, pets, poplin, sac};
use crate::config::{Invalid, Validate, from_table, to_table};
use crate::env::Task;

/// What an agent is built for: the task, its sizes, the seed and the compute device.
#[derive(Debug, Clone, Copy)]
pub struct Setting<'a> {
    pub task: Task,
    pub obs_dim: usize,
    pub act_dim: usize,
    pub seed: u64,
    pub device: &'a burn::prelude::Device,
}

/// An algorithm: its config (documented defaults, range checks) and how to build the agent.
pub trait Algorithm {
    type Config: Default + Serialize + DeserializeOwned + Validate;
    fn build(cfg: Self::Config, setting: &Setting<'_>) -> Box<dyn Agent>;
    /// When its agent learns, for compute estimates (`mpdp plan --cost`).
    fn workload(cfg: &Self::Config) -> Workload;
}

/// When an agent learns, as far as its compute depends on it: the uniform random steps
/// before any learning, then, for a model-based agent, a model fit every `train_freq` env
/// steps on every transition gathered so far (the first at `learning_starts`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Workload {
    pub learning_starts: usize,
    pub model: Option<ModelFits>,
}

/// A model-based agent's model fits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelFits {
    pub train_freq: usize,
    /// The epochs a fit runs at most; `None` when the hold-out rule alone ends it.
    pub max_epochs: Option<usize>,
}

/// One registry entry.
pub struct Algo {
    /// The `algo` value in specs and on the command line.
    pub name: &'static str,
    /// One line for help texts.
    pub about: &'static str,
    /// `presets.toml` tables applied in this order over the defaults.
    pub presets: &'static [&'static str],
    /// The training statistics its agent reports (logged as `train/<name>`), in groups; a
    /// test holds them against the golden runs' metrics.
    pub metrics: &'static [&'static [&'static str]],
    /// The config's defaults as a table.
    pub defaults: fn() -> toml::Table,
    /// Parses and validates a merged table; returns it with every key present.
    pub check: fn(toml::Table) -> Result<toml::Table, Invalid>,
    /// Builds the agent from resolved parameters.
    pub build: Build,
    /// When the agent of resolved parameters learns.
    pub workload: fn(&toml::Table) -> Result<Workload, Invalid>,
}

/// An entry's constructor: the agent from resolved parameters.
pub type Build = fn(&toml::Table, &Setting<'_>) -> Result<Box<dyn Agent>, Invalid>;

impl Algo {
    const fn of<A: Algorithm>(
        name: &'static str,
        about: &'static str,
        presets: &'static [&'static str],
        metrics: &'static [&'static [&'static str]],
    ) -> Algo {
        Algo {
            name,
            about,
            presets,
            metrics,
            defaults: defaults::<A::Config>,
            check: check::<A::Config>,
            build: build::<A>,
            workload: workload::<A>,
        }
    }
}

/// The critic's and the temperature's statistics (SAC's learner; MPDP's too).
const CRITIC_STATS: &[&str] = &["critic_loss", "q_mean", "alpha_loss", "alpha", "entropy"];

/// What every model fit logs: the error on unseen transitions and the fit.
const MODEL_FIT_STATS: &[&str] = &[
    "model_error",
    "model_error_5step",
    "model_holdout_mse",
    "model_train_nll",
    "model_epochs",
    "model_fit_s",
];

/// The OvR uncertainty of the predictions used (MBPO's rollouts, MPDP's planning).
const UNCERTAINTY_STATS: &[&str] = &["uncertainty_mean", "uncertainty_p50", "uncertainty_p90"];

/// MBPO's and M2AC's rollouts.
const ROLLOUT_STATS: &[&str] = &[
    "rollout_kept_fraction",
    "rollout_length",
    "rollout_mean_length",
    "model_buffer",
];

/// MPDP's planning update.
const PLAN_STATS: &[&str] = &[
    "value_loss",
    "v_mean",
    "objective",
    "grad_norm",
    "horizon_mean",
    "cut_uncertain_fraction",
    "cut_terminal_fraction",
    "reached_max_fraction",
    "u_threshold",
    "penalty_grad_share",
    // Per planning step t (docs/algorithms.md, "MPDP: diagnostics").
    "live_t{t}",
    "grad_norm_t{t}",
];

/// The sampling planners' (PETS, POPLIN) planning, every env step.
const MPC_STATS: &[&str] = &crate::planning::mpc::PLAN_STATS;

/// Every algorithm, in the order help texts list them.
pub const ALGOS: &[Algo] = &[
    Algo::of::<sac::Sac>(
        "sac",
        "Soft Actor-Critic (Haarnoja et al. 2018), the model-free baseline",
        &["sac"],
        &[CRITIC_STATS, &["actor_loss"]],
    ),
    Algo::of::<ddpg::Ddpg>(
        "ddpg",
        "DDPG (Lillicrap et al. 2016) with Gaussian exploration noise",
        &["ddpg"],
        &[&["critic_loss", "actor_loss", "q_mean"]],
    ),
    Algo::of::<mbpo::Mbpo>(
        "mbpo",
        "MBPO (Janner et al. 2019): SAC on branched rollouts of a dynamics ensemble",
        &["mbpo"],
        &[
            CRITIC_STATS,
            &["actor_loss"],
            MODEL_FIT_STATS,
            UNCERTAINTY_STATS,
            ROLLOUT_STATS,
        ],
    ),
    Algo::of::<mbpo::M2ac>(
        "m2ac",
        "M2AC (Pan et al. 2020): MBPO with rollouts masked by one-vs-rest uncertainty",
        &["mbpo", "m2ac"],
        &[
            CRITIC_STATS,
            &["actor_loss"],
            MODEL_FIT_STATS,
            UNCERTAINTY_STATS,
            ROLLOUT_STATS,
        ],
    ),
    Algo::of::<mpdp::Mpdp>(
        "mpdp",
        "MPDP (the paper): policies improved by differentiable planning through the ensemble",
        &["mpdp"],
        &[CRITIC_STATS, MODEL_FIT_STATS, UNCERTAINTY_STATS, PLAN_STATS],
    ),
    Algo::of::<pets::Pets>(
        "pets",
        "PETS (Chua et al. 2018): CEM over action sequences through the ensemble, with trajectory sampling",
        &["pets"],
        &[MODEL_FIT_STATS, MPC_STATS],
    ),
    Algo::of::<poplin::PoplinA>(
        "poplin_a",
        "POPLIN-A (Wang & Ba 2020): CEM over residuals of a policy's actions, distilled by behaviour cloning",
        &["poplin_a"],
        &[MODEL_FIT_STATS, MPC_STATS, &["distill_loss"]],
    ),
    Algo::of::<poplin::PoplinP>(
        "poplin_p",
        "POPLIN-P (Wang & Ba 2020): CEM over perturbations of a policy's weights, averaged into it",
        &["poplin_p"],
        &[
            MODEL_FIT_STATS,
            MPC_STATS,
            &["distill_step", "distill_loss"],
        ],
    ),
];

impl Algo {
    /// Every training statistic its agent reports.
    /// Every training statistic its agent reports; a name with
    /// [`STEP`](crate::stats::STEP) stands for one statistic per planning step.
    pub fn stats(&self) -> impl Iterator<Item = &'static str> {
        self.metrics.iter().flat_map(|group| group.iter().copied())
    }

    /// Whether its agent reports the training statistic `name` (`live_t3` through
    /// `live_t{t}`).
    pub fn logs(&self, name: &str) -> bool {
        let declared = crate::stats::declared_name(name);
        self.stats().any(|s| s == declared)
    }
}

/// The entry named `name`.
pub fn find(name: &str) -> Result<&'static Algo, AgentError> {
    ALGOS
        .iter()
        .find(|a| a.name == name)
        .ok_or_else(|| AgentError::UnknownAlgo(name.to_string()))
}

/// Every `algo` name.
pub fn names() -> Vec<&'static str> {
    ALGOS.iter().map(|a| a.name).collect()
}

/// `--algo`'s help: every name with what it is.
pub fn help() -> String {
    let names: Vec<String> = ALGOS
        .iter()
        .map(|a| format!("{} ({})", a.name, a.about))
        .collect();
    format!("Algorithm: {}", names.join("; "))
}

fn defaults<C: Default + Serialize>() -> toml::Table {
    to_table(C::default()).expect("default configs serialise")
}

fn check<C: Serialize + DeserializeOwned + Validate>(
    table: toml::Table,
) -> Result<toml::Table, Invalid> {
    let config: C = from_table(table)?;
    config.validate()?;
    to_table(config).map_err(Invalid::whole)
}

fn build<A: Algorithm>(
    params: &toml::Table,
    setting: &Setting<'_>,
) -> Result<Box<dyn Agent>, Invalid> {
    Ok(A::build(from_table(params.clone())?, setting))
}

fn workload<A: Algorithm>(params: &toml::Table) -> Result<Workload, Invalid> {
    Ok(A::workload(&from_table(params.clone())?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_entry_has_a_unique_name_and_resolves_on_every_task() {
        let mut names = names();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), ALGOS.len());
        for algo in ALGOS {
            for task in Task::ALL {
                super::super::resolve_params(algo.name, task, &toml::Table::new())
                    .unwrap_or_else(|e| panic!("{} on {task}: {e}", algo.name));
            }
        }
        let e = find("ppo").err().unwrap().to_string();
        assert!(
            e.contains("known: sac, ddpg, mbpo, m2ac, mpdp, pets, poplin_a, poplin_p"),
            "{e}"
        );
    }
}
