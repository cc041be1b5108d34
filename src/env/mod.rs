//! Environments: the [`Env`] trait and the six MuJoCo tasks with Gymnasium v5 semantics.
//!
//! Every task follows `gymnasium/envs/mujoco/*_v5.py` of Gymnasium 1.4.0 exactly (observation
//! layout, reward terms and coefficients, termination ranges, reset noise, 1000-step limit);
//! the parity test replays the same states and actions in Gymnasium and compares to 1e-9.
//! Each task also has a termination function on predicted observations ([`Task::is_terminal`])
//! for model rollouts.

mod assets;
mod mujoco;
pub mod playback;
mod termination;

pub(crate) use assets::asset_path;
pub use assets::{AssetError, assets_dir, python_script, venv_python, xml_sha256};
pub use mujoco::{EnvSnapshot, MujocoEnv};

use std::fmt;
use std::str::FromStr;

/// Gymnasium's `max_episode_steps` for every MuJoCo v5 task, InvertedPendulum included.
pub const MAX_EPISODE_STEPS: usize = 1000;

/// What one call to [`Env::step`] returns besides the observation (read it with [`Env::obs`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    pub reward: f64,
    /// The task ended (unhealthy state): do not bootstrap through this transition.
    pub terminated: bool,
    /// The time limit ended the episode: bootstrap through this transition.
    pub truncated: bool,
}

impl Step {
    /// The episode is over, by termination or by the time limit.
    pub fn done(&self) -> bool {
        self.terminated || self.truncated
    }
}

/// An episodic control task with continuous observations and actions.
pub trait Env: Send {
    /// Static facts: name, dimensions, action bounds, time limit, model hash.
    fn info(&self) -> &EnvInfo;
    /// Starts a new episode. `Some(seed)` reseeds the environment's RNG first (as Gymnasium's
    /// `reset(seed=...)`); `None` continues its stream. Returns the first observation.
    fn reset(&mut self, seed: Option<u64>) -> &[f64];
    /// Applies `action` (length `info().act_dim`) and advances one environment step.
    fn step(&mut self, action: &[f64]) -> Step;
    /// The current observation (length `info().obs_dim`).
    fn obs(&self) -> &[f64];
}

/// Static description of an environment instance.
#[derive(Debug, Clone, PartialEq)]
pub struct EnvInfo {
    pub task: Task,
    pub variant: ObsVariant,
    pub obs_dim: usize,
    pub act_dim: usize,
    pub action_low: Vec<f64>,
    pub action_high: Vec<f64>,
    pub max_episode_steps: usize,
    /// Seconds of simulated time per environment step (model timestep × frame skip).
    pub dt: f64,
    /// SHA-256 of the task's XML file, so results can say exactly which model they used.
    pub xml_sha256: String,
}

/// The six MuJoCo tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Task {
    InvertedPendulum,
    Hopper,
    Walker2d,
    HalfCheetah,
    Ant,
    Humanoid,
}

/// How a task's reset perturbs the model's default state `qpos0` and zero velocity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ResetNoise {
    /// qpos and qvel each get U(−scale, scale).
    Uniform(f64),
    /// qpos gets U(−scale, scale); qvel gets scale·N(0, 1).
    UniformNormal(f64),
}

impl Task {
    pub const ALL: [Task; 6] = [
        Task::InvertedPendulum,
        Task::Hopper,
        Task::Walker2d,
        Task::HalfCheetah,
        Task::Ant,
        Task::Humanoid,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Task::InvertedPendulum => "InvertedPendulum",
            Task::Hopper => "Hopper",
            Task::Walker2d => "Walker2d",
            Task::HalfCheetah => "HalfCheetah",
            Task::Ant => "Ant",
            Task::Humanoid => "Humanoid",
        }
    }

    /// The Gymnasium id this task reproduces.
    pub fn gymnasium_id(self) -> String {
        format!("{}-v5", self.name())
    }

    /// The XML file in Gymnasium's `envs/mujoco/assets` (v5 defaults).
    pub fn xml_file(self) -> &'static str {
        match self {
            Task::InvertedPendulum => "inverted_pendulum.xml",
            Task::Hopper => "hopper.xml",
            Task::Walker2d => "walker2d_v5.xml",
            Task::HalfCheetah => "half_cheetah.xml",
            Task::Ant => "ant.xml",
            Task::Humanoid => "humanoid.xml",
        }
    }

    /// MuJoCo steps per environment step.
    pub fn frame_skip(self) -> usize {
        match self {
            Task::InvertedPendulum => 2,
            Task::Hopper | Task::Walker2d => 4,
            Task::HalfCheetah | Task::Ant | Task::Humanoid => 5,
        }
    }

    pub fn reset_noise(self) -> ResetNoise {
        match self {
            Task::InvertedPendulum | Task::Humanoid => ResetNoise::Uniform(0.01),
            Task::Hopper | Task::Walker2d => ResetNoise::Uniform(5e-3),
            Task::HalfCheetah | Task::Ant => ResetNoise::UniformNormal(0.1),
        }
    }

    /// Whether observation or reward read `cfrc_ext`, which needs `mj_rnePostConstraint` after
    /// stepping (MuJoCo leaves it zero otherwise).
    pub fn reads_contact_forces(self) -> bool {
        matches!(self, Task::Ant | Task::Humanoid)
    }

    /// Observation size for `variant`, given the model's sizes.
    pub fn obs_dim(self, variant: ObsVariant, nq: usize, nv: usize, nbody: usize) -> usize {
        match (self, variant) {
            (Task::InvertedPendulum, _) => nq + nv,
            (Task::Hopper | Task::Walker2d | Task::HalfCheetah, _) => nq - 1 + nv,
            (Task::Ant, ObsVariant::V5) => nq - 2 + nv + 6 * (nbody - 1),
            (Task::Humanoid, ObsVariant::V5) => {
                // qpos[2:], qvel, cinert[1:], cvel[1:], qfrc_actuator[6:], cfrc_ext[1:]
                nq - 2 + nv + 10 * (nbody - 1) + 6 * (nbody - 1) + (nv - 6) + 6 * (nbody - 1)
            }
            (Task::Ant | Task::Humanoid, ObsVariant::Mbpo) => nq - 2 + nv,
        }
    }
}

impl fmt::Display for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Task {
    type Err = EnvError;

    /// Accepts the task name (`Hopper`), its Gymnasium id (`Hopper-v5`), any case.
    fn from_str(s: &str) -> Result<Self, EnvError> {
        let base = s.strip_suffix("-v5").unwrap_or(s);
        Task::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(base))
            .ok_or_else(|| EnvError::UnknownTask(s.to_string()))
    }
}

/// Observation variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ObsVariant {
    /// Gymnasium v5 defaults.
    #[default]
    V5,
    /// MBPO's truncated observations: Ant 27 dims (`qpos[2:]`, qvel; no contact forces) and
    /// Humanoid 45 dims (`qpos[2:]`, qvel). Rewards are v5's. Other tasks are as in v5. In
    /// Gymnasium terms: `include_cfrc_ext_in_observation=False` for Ant, and all four
    /// `include_*_in_observation=False` for Humanoid.
    Mbpo,
}

impl ObsVariant {
    pub fn name(self) -> &'static str {
        match self {
            ObsVariant::V5 => "v5",
            ObsVariant::Mbpo => "mbpo",
        }
    }
}

impl fmt::Display for ObsVariant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ObsVariant {
    type Err = EnvError;

    fn from_str(s: &str) -> Result<Self, EnvError> {
        match s.to_ascii_lowercase().as_str() {
            "v5" => Ok(ObsVariant::V5),
            "mbpo" => Ok(ObsVariant::Mbpo),
            _ => Err(EnvError::UnknownVariant(s.to_string())),
        }
    }
}

/// Errors from creating or driving an environment.
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    #[error(
        "unknown environment '{0}' (expected one of InvertedPendulum, Hopper, Walker2d, HalfCheetah, Ant, Humanoid)"
    )]
    UnknownTask(String),
    #[error("unknown observation variant '{0}' (expected v5 or mbpo)")]
    UnknownVariant(String),
    #[error(transparent)]
    Assets(#[from] AssetError),
    #[error("MuJoCo could not load {path}: {message}")]
    ModelLoad { path: String, message: String },
    #[error("cannot restore the environment: {0}")]
    Snapshot(String),
    #[error("{what} has {got} values, {task} expects {expected}")]
    StateLength {
        task: Task,
        what: &'static str,
        expected: usize,
        got: usize,
    },
}

impl crate::config::IsUsage for EnvError {
    fn is_usage(&self) -> bool {
        matches!(
            self,
            EnvError::UnknownTask(_)
                | EnvError::UnknownVariant(_)
                | EnvError::StateLength { .. }
                | EnvError::Assets(_)
        )
    }
}

/// Creates the environment for `task` with observation `variant`.
pub fn make(task: Task, variant: ObsVariant) -> Result<MujocoEnv, EnvError> {
    MujocoEnv::new(task, variant)
}
