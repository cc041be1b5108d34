//! Agents: the [`Agent`] trait, the registry keyed by `algo`, and per-environment presets.
//!
//! An agent's parameters resolve in three layers: the config struct's documented defaults,
//! then the per-environment preset in `presets.toml` (data, with its provenance), then what
//! the user set. Unknown keys and wrong types are errors naming the key.

pub mod ddpg;
pub mod mbpo;
mod mpc;
pub mod mpdp;
mod off_policy;
pub mod pets;
pub mod poplin;
pub mod registry;
pub mod sac;
pub(crate) mod schedule;

use std::path::Path;

pub use registry::{Algo, ModelFits, Setting, Workload};

use crate::ckpt::CkptError;
use crate::config::{Invalid, IsUsage, merge_tables};
use crate::env::Task;

/// One transition, with the action in the agent's normalised [-1, 1] space.
#[derive(Debug, Clone, Copy)]
pub struct Transition<'a> {
    pub obs: &'a [f64],
    pub action: &'a [f64],
    pub reward: f64,
    pub next_obs: &'a [f64],
    /// The episode ended by termination (not by the time limit): no bootstrap.
    pub terminated: bool,
}

/// Named training statistics (means over the updates of one call).
pub type Stats = Vec<(&'static str, f64)>;

/// Means of named statistics over the updates that reported each; a non-finite value is
/// divergence.
#[derive(Debug, Default)]
pub struct StatMeans(Vec<(&'static str, f64, usize)>);

impl StatMeans {
    pub fn add(&mut self, algo: &str, name: &'static str, v: f64) -> Result<(), AgentError> {
        if !v.is_finite() {
            return Err(AgentError::Diverged(format!("{algo} {name} = {v}")));
        }
        match self.0.iter_mut().find(|s| s.0 == name) {
            Some(s) => {
                s.1 += v;
                s.2 += 1;
            }
            None => self.0.push((name, v, 1)),
        }
        Ok(())
    }

    /// The means, or `None` if nothing was reported.
    pub fn finish(self) -> Option<Stats> {
        (!self.0.is_empty()).then(|| {
            self.0
                .into_iter()
                .map(|(n, s, c)| (n, s / c as f64))
                .collect()
        })
    }
}

/// A learning agent. Actions are normalised to [-1, 1]^|A|; the runner maps them onto the
/// env's bounds.
pub trait Agent: Send {
    /// Training-time actions for `rows` observations (row-major): uniform random before
    /// learning starts, then the agent's exploration policy.
    fn explore(&mut self, obs: &[f64], rows: usize) -> Vec<f64>;
    /// Evaluation actions (deterministic) for `rows` observations.
    fn exploit(&mut self, obs: &[f64], rows: usize) -> Vec<f64>;
    /// Evaluation actions for evaluation episodes run together: `envs` are the indices of
    /// the episodes still running (the rows of `obs`, increasing), `first` is true on their
    /// first step. Agents that carry a plan from one step to the next (the warm start of
    /// PETS's and POPLIN's planners) keep one per episode; the others act as
    /// [`Agent::exploit`].
    fn exploit_envs(&mut self, obs: &[f64], envs: &[usize], first: bool) -> Vec<f64> {
        let _ = first;
        self.exploit(obs, envs.len())
    }
    /// The episodes of these rows of [`Agent::explore`] (training envs) ended; their next rows
    /// start new episodes. A planner drops the plan it carried for them.
    fn restarted(&mut self, rows: &[usize]) {
        let _ = rows;
    }
    /// Stores a transition.
    fn observe(&mut self, t: &Transition<'_>);
    /// The learning due after `new_transitions` more transitions: gradient updates, target
    /// updates, model fits. Returns the mean statistics of the updates made, if any; an error
    /// if a loss or parameter became NaN or infinite. A long phase that starts the call (a
    /// model fit) asks `interrupted` as it goes and, when it answers true, gives up with
    /// [`AgentError::Interrupted`], leaving the agent exactly as it was before the call.
    fn learn(
        &mut self,
        new_transitions: usize,
        interrupted: &dyn Fn() -> bool,
    ) -> Result<Option<Stats>, AgentError>;
    /// Writes everything needed to continue bit for bit into `dir`.
    fn save(&self, dir: &Path) -> Result<(), AgentError>;
    /// Restores what [`Agent::save`] wrote.
    fn load(&mut self, dir: &Path) -> Result<(), AgentError>;
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("unknown algo '{0}' (known: {known})", known = registry::names().join(", "))]
    UnknownAlgo(String),
    #[error("agent parameters for {algo}: {}", match key { Some(k) => format!("{k}: {message}"), None => message.clone() })]
    Params {
        algo: String,
        /// The parameter at fault, when one is.
        key: Option<String>,
        message: String,
    },
    #[error("diverged: {0}")]
    Diverged(String),
    /// [`Agent::learn`] gave up on a stop request; the agent is as it was before the call.
    #[error("interrupted before the learning due was done")]
    Interrupted,
    #[error(transparent)]
    Checkpoint(#[from] CkptError),
}

impl IsUsage for AgentError {
    fn is_usage(&self) -> bool {
        matches!(self, AgentError::UnknownAlgo(_) | AgentError::Params { .. })
    }
}

impl AgentError {
    fn params(algo: &str, e: Invalid) -> Self {
        AgentError::Params {
            algo: algo.to_string(),
            key: e.key,
            message: e.message,
        }
    }
}

const PRESETS: &str = include_str!("presets.toml");

/// The fully resolved parameters of `algo` on `task`: defaults, then the task's preset, then
/// `overrides`. Every key is present in the result, except optional ones at their default
/// (left out so that adding them kept existing run ids).
pub fn resolve_params(
    algo: &str,
    task: Task,
    overrides: &toml::Table,
) -> Result<toml::Table, AgentError> {
    let entry = registry::find(algo)?;
    let mut table = (entry.defaults)();
    merge_tables(&mut table, &preset(entry, task));
    merge_tables(&mut table, overrides);
    (entry.check)(table).map_err(|e| AgentError::params(algo, e))
}

/// The defaults of `algo`'s config and its preset for `task` (the first two layers of
/// [`resolve_params`]), for `mpdp explain`.
pub fn param_layers(algo: &str, task: Task) -> Result<(toml::Table, toml::Table), AgentError> {
    let entry = registry::find(algo)?;
    Ok(((entry.defaults)(), preset(entry, task)))
}

/// The algorithm's per-task presets from `presets.toml`, merged in the order its registry
/// entry lists them (M2AC: MBPO's, then its own).
fn preset(entry: &Algo, task: Task) -> toml::Table {
    let presets: toml::Table = PRESETS.parse().expect("presets.toml parses");
    let mut table = toml::Table::new();
    for name in entry.presets {
        if let Some(p) = presets
            .get(*name)
            .and_then(|t| t.get(task.name()))
            .and_then(|p| p.as_table())
        {
            merge_tables(&mut table, p);
        }
    }
    table
}

/// Creates the agent for `algo` from resolved parameters (see [`resolve_params`]).
pub fn make(
    algo: &str,
    params: &toml::Table,
    setting: &Setting<'_>,
) -> Result<Box<dyn Agent>, AgentError> {
    let entry = registry::find(algo)?;
    (entry.build)(params, setting).map_err(|e| AgentError::params(algo, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_resolve_defaults_then_preset_then_overrides() {
        let none = toml::Table::new();
        let hopper = resolve_params("sac", Task::Hopper, &none).unwrap();
        assert_eq!(hopper["learning_starts"].as_integer(), Some(5000));
        let pendulum = resolve_params("sac", Task::InvertedPendulum, &none).unwrap();
        assert_eq!(pendulum["learning_starts"].as_integer(), Some(1000));
        let set: toml::Table = "learning_starts = 7\nactor_lr = 1e-3".parse().unwrap();
        let custom = resolve_params("sac", Task::InvertedPendulum, &set).unwrap();
        assert_eq!(custom["learning_starts"].as_integer(), Some(7));
        assert_eq!(custom["actor_lr"].as_float(), Some(1e-3));
    }

    #[test]
    fn bad_params_name_the_key() {
        let typo: toml::Table = "actor_rl = 1e-3".parse().unwrap();
        let e = resolve_params("sac", Task::Hopper, &typo)
            .unwrap_err()
            .to_string();
        assert!(e.contains("actor_rl"), "{e}");
        let negative: toml::Table = "gamma = -0.5".parse().unwrap();
        let e = resolve_params("ddpg", Task::Hopper, &negative)
            .unwrap_err()
            .to_string();
        assert!(e.contains("gamma"), "{e}");
        let e = resolve_params("ppo", Task::Hopper, &toml::Table::new())
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown algo 'ppo'"), "{e}");
    }
}
