//! Agents: the [`Agent`] trait, the registry keyed by `algo`, and per-environment presets.
//!
//! An agent's parameters resolve in three layers: the config struct's documented defaults,
//! then the per-environment preset in `presets.toml` (data, with its provenance), then what
//! the user set. Unknown keys and wrong types are errors naming the key.

pub mod ddpg;
pub mod mbpo;
pub mod mpdp;
mod off_policy;
pub mod sac;
pub(crate) mod schedule;

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::env::Task;

/// Algorithms the registry knows.
pub const ALGOS: [&str; 5] = ["sac", "ddpg", "mbpo", "m2ac", "mpdp"];

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
    #[error("unknown algo '{0}' (known: sac, ddpg, mbpo, m2ac, mpdp)")]
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
    #[error("checkpoint {path}: {message}")]
    Checkpoint { path: PathBuf, message: String },
}

impl AgentError {
    pub(crate) fn checkpoint(path: &Path, message: impl std::fmt::Display) -> Self {
        AgentError::Checkpoint {
            path: path.to_path_buf(),
            message: message.to_string(),
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
    match algo {
        "sac" => resolve::<sac::SacConfig>(algo, task, overrides),
        "ddpg" => resolve::<ddpg::DdpgConfig>(algo, task, overrides),
        "mbpo" => resolve::<mbpo::MbpoConfig>(algo, task, overrides),
        "m2ac" => resolve::<mbpo::M2acConfig>(algo, task, overrides),
        "mpdp" => resolve::<mpdp::MpdpConfig>(algo, task, overrides),
        other => Err(AgentError::UnknownAlgo(other.to_string())),
    }
}

/// Merges `over` into `base`: tables key by key (nested configs such as MBPO's `sac` and
/// `model` keep the keys an override does not name), other values replaced.
pub fn merge_tables(base: &mut toml::Table, over: &toml::Table) {
    for (k, v) in over {
        match (base.get_mut(k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge_tables(b, o),
            _ => {
                base.insert(k.clone(), v.clone());
            }
        }
    }
}

fn resolve<C>(algo: &str, task: Task, overrides: &toml::Table) -> Result<toml::Table, AgentError>
where
    C: Default + Serialize + DeserializeOwned + Validate,
{
    let err = |e: Invalid| AgentError::Params {
        algo: algo.to_string(),
        key: e.key,
        message: e.message,
    };
    let mut table = to_table(C::default())
        .map_err(Invalid::whole)
        .map_err(err)?;
    merge_tables(&mut table, &preset(algo, task));
    merge_tables(&mut table, overrides);
    let config: C = from_table(table).map_err(err)?;
    config.validate().map_err(err)?;
    to_table(config).map_err(Invalid::whole).map_err(err)
}

/// The defaults of `algo`'s config and its preset for `task` (the first two layers of
/// [`resolve_params`]), for `mpdp explain`.
pub fn param_layers(algo: &str, task: Task) -> Result<(toml::Table, toml::Table), AgentError> {
    let defaults = match algo {
        "sac" => to_table(sac::SacConfig::default()),
        "ddpg" => to_table(ddpg::DdpgConfig::default()),
        "mbpo" => to_table(mbpo::MbpoConfig::default()),
        "m2ac" => to_table(mbpo::M2acConfig::default()),
        "mpdp" => to_table(mpdp::MpdpConfig::default()),
        other => return Err(AgentError::UnknownAlgo(other.to_string())),
    }
    .expect("default configs serialise");
    Ok((defaults, preset(algo, task)))
}

/// `algo`'s per-task preset from `presets.toml`. M2AC is MBPO with masking: MBPO's preset
/// applies first, then M2AC's own.
fn preset(algo: &str, task: Task) -> toml::Table {
    let presets: toml::Table = PRESETS.parse().expect("presets.toml parses");
    let lookup = |a: &str| {
        presets
            .get(a)
            .and_then(|t| t.get(task.name()))
            .and_then(|p| p.as_table())
            .cloned()
            .unwrap_or_default()
    };
    let mut table = toml::Table::new();
    if algo == "m2ac" {
        merge_tables(&mut table, &lookup("mbpo"));
    }
    merge_tables(&mut table, &lookup(algo));
    table
}

/// A parameter that failed to parse or validate: which one (if one) and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Invalid {
    pub key: Option<String>,
    pub message: String,
}

impl Invalid {
    pub fn new(key: &str, message: impl Into<String>) -> Self {
        Invalid {
            key: Some(key.to_string()),
            message: message.into(),
        }
    }

    /// The same problem, with its key inside the nested table `prefix`.
    pub fn within(self, prefix: &str) -> Self {
        Invalid {
            key: Some(match self.key {
                Some(k) => format!("{prefix}.{k}"),
                None => prefix.to_string(),
            }),
            message: self.message,
        }
    }

    fn whole(message: String) -> Self {
        Invalid { key: None, message }
    }
}

/// Deserialises a config from a table; errors name the key path (`hidden[0]`).
fn from_table<C: DeserializeOwned>(table: toml::Table) -> Result<C, Invalid> {
    serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
        let path = e.path().to_string();
        let message = e.into_inner().message().to_string();
        Invalid {
            key: (path != ".").then_some(path),
            message,
        }
    })
}

fn to_table<T: Serialize>(value: T) -> Result<toml::Table, String> {
    match toml::Value::try_from(value) {
        Ok(toml::Value::Table(t)) => Ok(t),
        Ok(_) => Err("not a table".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// Range checks beyond what the types express.
pub trait Validate {
    fn validate(&self) -> Result<(), Invalid>;
}

/// Creates the agent for `algo` from resolved parameters (see [`resolve_params`]).
pub fn make(
    algo: &str,
    params: &toml::Table,
    task: Task,
    obs_dim: usize,
    act_dim: usize,
    seed: u64,
) -> Result<Box<dyn Agent>, AgentError> {
    let parse = |e: Invalid| AgentError::Params {
        algo: algo.to_string(),
        key: e.key,
        message: e.message,
    };
    Ok(match algo {
        "sac" => Box::new(sac::Sac::new(
            obs_dim,
            act_dim,
            from_table(params.clone()).map_err(parse)?,
            seed,
        )),
        "ddpg" => Box::new(ddpg::Ddpg::new(
            obs_dim,
            act_dim,
            from_table(params.clone()).map_err(parse)?,
            seed,
        )),
        "mbpo" => Box::new(mbpo::Mbpo::new(
            task,
            obs_dim,
            act_dim,
            from_table(params.clone()).map_err(parse)?,
            seed,
        )),
        "m2ac" => Box::new(mbpo::Mbpo::new(
            task,
            obs_dim,
            act_dim,
            from_table::<mbpo::M2acConfig>(params.clone())
                .map_err(parse)?
                .0,
            seed,
        )),
        "mpdp" => Box::new(mpdp::Mpdp::new(
            task,
            obs_dim,
            act_dim,
            from_table(params.clone()).map_err(parse)?,
            seed,
        )),
        other => return Err(AgentError::UnknownAlgo(other.to_string())),
    })
}

/// Range checks shared by the off-policy agents' configs: positive finite rates, γ in [0, 1],
/// τ in (0, 1], at least one positive hidden layer size, positive counts.
pub(crate) fn check_common(
    rates: &[(&str, f64)],
    gamma: f64,
    tau: f64,
    hidden: &[usize],
    counts: &[(&str, usize)],
) -> Result<(), Invalid> {
    for &(name, v) in rates.iter().chain(&[("tau", tau)]) {
        positive(name, v)?;
    }
    unit_interval("gamma", gamma)?;
    if tau > 1.0 {
        return Err(Invalid::new(
            "tau",
            format!("expected a value in (0, 1], found {tau}"),
        ));
    }
    if hidden.is_empty() || hidden.contains(&0) {
        return Err(Invalid::new(
            "hidden",
            format!("expected one or more positive layer sizes, found {hidden:?}"),
        ));
    }
    positive_counts(counts)
}

/// Every count is at least 1.
pub(crate) fn positive_counts(counts: &[(&str, usize)]) -> Result<(), Invalid> {
    match counts.iter().find(|(_, v)| *v == 0) {
        Some((name, _)) => Err(Invalid::new(name, "expected a positive count, found 0")),
        None => Ok(()),
    }
}

/// A finite number.
pub(crate) fn finite(name: &str, v: f64) -> Result<(), Invalid> {
    if v.is_finite() {
        Ok(())
    } else {
        Err(Invalid::new(
            name,
            format!("expected a finite number, found {v}"),
        ))
    }
}

/// A positive finite number.
pub(crate) fn positive(name: &str, v: f64) -> Result<(), Invalid> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(Invalid::new(
            name,
            format!("expected a positive finite number, found {v}"),
        ))
    }
}

/// A finite number >= 0.
pub(crate) fn non_negative(name: &str, v: f64) -> Result<(), Invalid> {
    if v.is_finite() && v >= 0.0 {
        Ok(())
    } else {
        Err(Invalid::new(
            name,
            format!("expected a finite value >= 0, found {v}"),
        ))
    }
}

/// A number in [0, 1].
pub(crate) fn unit_interval(name: &str, v: f64) -> Result<(), Invalid> {
    if (0.0..=1.0).contains(&v) {
        Ok(())
    } else {
        Err(Invalid::new(
            name,
            format!("expected a value in [0, 1], found {v}"),
        ))
    }
}

/// Checkpoint helpers shared by agents: JSON files and the RNG.
pub mod ckpt {
    use std::path::Path;

    use burn::module::Module;
    use burn::optim::ModuleOptimizer;

    use serde::Serialize;
    use serde::de::DeserializeOwned;

    use super::AgentError;

    pub fn write_json<T: Serialize>(dir: &Path, name: &str, value: &T) -> Result<(), AgentError> {
        let path = dir.join(name);
        let text = serde_json::to_string(value).map_err(|e| AgentError::checkpoint(&path, e))?;
        std::fs::write(&path, text).map_err(|e| AgentError::checkpoint(&path, e))
    }

    /// Writes a module's parameters to `dir/name` (a burnpack record, parameter ids included).
    pub fn save_module<M: Module>(dir: &Path, name: &str, module: &M) -> Result<(), AgentError> {
        let path = dir.join(name);
        module
            .clone()
            .save_file(&path)
            .map_err(|e| AgentError::checkpoint(&path, format!("{e:?}")))
    }

    /// Loads `dir/name` into a module of the same architecture.
    pub fn load_module<M: Module>(dir: &Path, name: &str, module: &M) -> Result<M, AgentError> {
        let path = dir.join(name);
        module
            .clone()
            .try_load_file(&path)
            .map_err(|e| AgentError::checkpoint(&path, format!("{e:?}")))
    }

    pub fn save_optimizer(dir: &Path, name: &str, opt: &ModuleOptimizer) -> Result<(), AgentError> {
        let path = dir.join(name);
        opt.save(&path)
            .map_err(|e| AgentError::checkpoint(&path, format!("{e:?}")))
    }

    /// Loads an Adam state saved by [`save_optimizer`]; load the module it optimises first
    /// (states are keyed by parameter id).
    pub fn load_optimizer(
        dir: &Path,
        name: &str,
        adam_epsilon: f64,
    ) -> Result<ModuleOptimizer, AgentError> {
        let path = dir.join(name);
        crate::nn::adam(adam_epsilon)
            .load(&path)
            .map_err(|e| AgentError::checkpoint(&path, format!("{e:?}")))
    }

    pub fn read_json<T: DeserializeOwned>(dir: &Path, name: &str) -> Result<T, AgentError> {
        let path = dir.join(name);
        let text = std::fs::read_to_string(&path).map_err(|e| AgentError::checkpoint(&path, e))?;
        serde_json::from_str(&text).map_err(|e| AgentError::checkpoint(&path, e))
    }
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
