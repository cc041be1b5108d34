//! Command-line interface (clap derive definitions).
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "mpdp",
    version,
    about = "MPDP and its baselines on MuJoCo: experiments from TOML specs"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run an experiment spec (for now: a uniform-random policy on the spec's environments).
    Run {
        /// The spec, e.g. experiments/quick.toml.
        spec: PathBuf,
    },
    /// Train one agent on one env and write runs/<experiment>/<run_id>/ (rerun to resume).
    RunOne(RunOneArgs),
    /// Inspect and drive the environments.
    #[command(subcommand)]
    Env(EnvCommand),
    /// Throughput benchmarks against reference implementations.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Debug, Subcommand)]
pub enum EnvCommand {
    /// List the tasks with observation and action sizes, action bounds and XML hash.
    List {
        /// Observation variant: v5 or mbpo.
        #[arg(long, default_value = "v5")]
        variant: String,
    },
    /// Replay actions from a given state and print CSV:
    /// step,reward,terminated,truncated,obs_0,...
    Replay(ReplayArgs),
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Task name (Hopper) or Gymnasium id (Hopper-v5).
    #[arg(long)]
    pub env: String,
    /// JSON file {"qpos": [...], "qvel": [...]} with the initial state.
    #[arg(long, conflicts_with = "seed")]
    pub init: Option<PathBuf>,
    /// Without --init: start from the task's noisy reset with this seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// CSV with one action per row, no header.
    #[arg(long)]
    pub actions: PathBuf,
    /// Observation variant: v5 or mbpo.
    #[arg(long, default_value = "v5")]
    pub variant: String,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Env steps/s per task next to raw mj_step × frame skip and Gymnasium's env.step.
    Env {
        /// Environment steps per measurement.
        #[arg(long, default_value_t = 20_000)]
        steps: usize,
        /// Measurements per implementation (the best counts).
        #[arg(long, default_value_t = 3)]
        repeats: usize,
        /// Tasks to measure (default: all six).
        #[arg(long, value_delimiter = ',')]
        tasks: Vec<String>,
        /// Skip the Gymnasium reference.
        #[arg(long)]
        no_python: bool,
        /// Python interpreter with Gymnasium (default: the venv `just setup` creates).
        #[arg(long)]
        python: Option<PathBuf>,
    },
    /// SAC updates/s (batch 256, Hopper sizes) next to a plain PyTorch CPU implementation.
    Sac {
        /// Updates per measurement.
        #[arg(long, default_value_t = 200)]
        updates: usize,
        /// Measurements per implementation (the best counts).
        #[arg(long, default_value_t = 3)]
        repeats: usize,
        #[arg(long, default_value_t = 11)]
        obs_dim: usize,
        #[arg(long, default_value_t = 3)]
        act_dim: usize,
        #[arg(long, default_value_t = 256)]
        batch: usize,
        /// Skip the PyTorch reference.
        #[arg(long)]
        no_python: bool,
        /// Python interpreter with PyTorch (default: the venv `just bench-setup` creates).
        #[arg(long)]
        python: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
pub struct RunOneArgs {
    /// Task name, e.g. InvertedPendulum or Hopper-v5.
    #[arg(long)]
    pub env: String,
    /// Algorithm: sac or ddpg.
    #[arg(long)]
    pub algo: String,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Environment steps.
    #[arg(long)]
    pub steps: u64,
    /// Observation variant: v5 or mbpo.
    #[arg(long, default_value = "v5")]
    pub variant: String,
    /// Experiment name: the run goes to <runs-dir>/<experiment>/<run_id>.
    #[arg(long, default_value = "adhoc")]
    pub experiment: String,
    #[arg(long, default_value = "runs")]
    pub runs_dir: PathBuf,
    /// Training envs stepped in parallel.
    #[arg(long, default_value_t = 1)]
    pub num_envs: usize,
    #[arg(long, default_value_t = 1000)]
    pub eval_every: u64,
    /// Deterministic eval episodes (run in parallel, one env each).
    #[arg(long, default_value_t = 5)]
    pub eval_episodes: usize,
    #[arg(long, default_value_t = 5000)]
    pub checkpoint_every: u64,
    #[arg(long, default_value_t = 1000)]
    pub log_every: u64,
    /// Agent parameter, e.g. --set actor_lr=1e-3 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}
