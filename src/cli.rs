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
    /// Run every run of a spec that is not done yet, as many at once as its device slots
    /// allow (rerun to resume after a crash or Ctrl-C).
    Run {
        #[command(flatten)]
        spec: SpecArgs,
        /// Run failed runs again (by default they are listed and left alone), resuming each
        /// from its checkpoint (the one before it when the newest cannot be read).
        #[arg(long)]
        retry_failed: bool,
        /// With --retry-failed: start failed runs over from step 0, discarding their
        /// checkpoints and saved metrics (said in each run's log.txt).
        #[arg(long, requires = "retry_failed")]
        from_scratch: bool,
        /// Where figures and the report go: <plots-dir>/<experiment>/.
        #[arg(long, default_value = "plots")]
        plots_dir: PathBuf,
        /// Don't aggregate and draw the figures at the end.
        #[arg(long)]
        no_plots: bool,
    },
    /// Aggregate a spec's done runs across seeds into runs/<name>/summary.parquet and
    /// final_scores.parquet, and print the final scores.
    Aggregate {
        #[command(flatten)]
        spec: SpecArgs,
    },
    /// Aggregate, draw the spec's figures (SVG and PNG) and write plots/<name>/report.md.
    Plots {
        #[command(flatten)]
        spec: SpecArgs,
        /// Where figures and the report go: <plots-dir>/<experiment>/.
        #[arg(long, default_value = "plots")]
        plots_dir: PathBuf,
    },
    /// List every run of a spec with its id and status (todo, running, done, failed...).
    Plan {
        #[command(flatten)]
        spec: SpecArgs,
        /// Print the plan as JSON lines (the file `run-one --plan` reads).
        #[arg(long, conflicts_with = "cost")]
        json: bool,
        /// Estimate each run's compute on this machine and sum it per agent and env. Each
        /// distinct agent and task is calibrated once (seconds to a minute) and cached per
        /// machine (`MPDP_CACHE_DIR`, else ~/.cache/mpdp).
        #[arg(long)]
        cost: bool,
        /// With --cost: calibrate again even what the cache has.
        #[arg(long, requires = "cost")]
        recalibrate: bool,
    },
    /// Print the fully resolved config of every run and where each value came from.
    Explain {
        #[command(flatten)]
        spec: SpecArgs,
        /// Only the run whose id starts with this.
        #[arg(long)]
        run: Option<String>,
    },
    /// Progress of a spec's runs: counts, active and failed runs, ETA.
    Status {
        #[command(flatten)]
        spec: SpecArgs,
    },
    /// Hand the runs that are not done to a cluster scheduler (one Slurm job array).
    Submit(SubmitArgs),
    /// Train one agent on one env and write runs/<experiment>/<run_id>/ (rerun to resume).
    RunOne(RunOneArgs),
    /// Evaluate a run's saved policy: deterministic episodes from its newest checkpoint
    /// (a finished run's final policy), by default the run's last evaluation again.
    Eval(EvalArgs),
    /// Inspect and drive the environments.
    #[command(subcommand)]
    Env(EnvCommand),
    /// Throughput benchmarks against reference implementations.
    Bench(BenchArgs),
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

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Our side's device: cpu, wgpu or wgpu:N, as `MPDP_DEVICE` takes (default: what
    /// `MPDP_DEVICE` says, else the CPU). A GPU needs a build with `--features wgpu`.
    #[arg(long, global = true)]
    pub device: Option<String>,
    /// The PyTorch reference's device (default: cuda when ours runs on a GPU, else cpu). Say cpu
    /// where the GPU is a software one, such as Mesa's lavapipe.
    #[arg(long, global = true, value_parser = ["cpu", "cuda"])]
    pub reference_device: Option<String>,
    #[command(subcommand)]
    pub which: BenchCommand,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Env steps/s per task next to raw mj_step × frame skip and Gymnasium's env.step.
    Env(mpdp::bench::env::EnvBenchConfig),
    /// Dynamics-ensemble training steps/s and inference rows/s (7 x 4x200, Hopper sizes) next
    /// to a plain PyTorch implementation (CUDA when ours runs on a GPU, else CPU).
    Ensemble(mpdp::bench::ensemble::EnsembleBenchConfig),
    /// MPDP updates/s (H 5, batch 256, Hopper sizes) next to a plain PyTorch implementation (CUDA when ours runs on a GPU, else CPU).
    Mpdp(mpdp::bench::mpdp::MpdpBenchConfig),
    /// One PETS planning call (CEM 500 x 20 particles x horizon 30 x 5 iterations, Hopper sizes)
    /// next to a plain PyTorch implementation (CUDA when ours runs on a GPU, else CPU).
    Cem(mpdp::bench::cem::CemBenchConfig),
    /// SAC updates/s (batch 256, Hopper sizes) next to a plain PyTorch implementation (CUDA when ours runs on a GPU, else CPU).
    Sac(mpdp::bench::sac::SacBenchConfig),
}

/// A spec and its command-line overrides.
#[derive(Debug, Args)]
pub struct SpecArgs {
    /// The spec, e.g. experiments/quick.toml.
    pub spec: PathBuf,
    /// Override a spec value, e.g. --set agents.SAC.actor_lr=1e-3 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Where run directories live: <runs-dir>/<experiment>/<run_id>/.
    #[arg(long, default_value = "runs")]
    pub runs_dir: PathBuf,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Executor {
    Slurm,
}

#[derive(Debug, Args)]
pub struct SubmitArgs {
    #[command(flatten)]
    pub spec: SpecArgs,
    #[arg(long, value_enum)]
    pub executor: Executor,
    #[arg(long)]
    pub partition: Option<String>,
    #[arg(long)]
    pub account: Option<String>,
    /// Time limit per run, e.g. 12:00:00.
    #[arg(long)]
    pub time: Option<String>,
    /// Memory per run, e.g. 8G.
    #[arg(long)]
    pub mem: Option<String>,
    #[arg(long, default_value_t = 0)]
    pub gpus_per_run: u32,
    /// CPUs per run (default: the spec's devices.threads_per_run).
    #[arg(long)]
    pub cpus_per_run: Option<usize>,
    /// Array elements running at once.
    #[arg(long)]
    pub max_parallel: Option<usize>,
    /// Seconds before the time limit at which a run checkpoints and is requeued.
    #[arg(long, default_value_t = 120)]
    pub signal_before: u32,
    /// Extra #SBATCH option, e.g. --sbatch-arg=--qos=long (repeatable).
    #[arg(long = "sbatch-arg", value_name = "OPTION", allow_hyphen_values = true)]
    pub sbatch_args: Vec<String>,
    /// Write the script and plan but do not submit.
    #[arg(long)]
    pub dry_run: bool,
    /// Stay and report progress until the job array has finished.
    #[arg(long)]
    pub wait: bool,
}

#[derive(Debug, Args)]
pub struct RunOneArgs {
    /// Plan file (JSON lines, written by `mpdp run`/`submit`): run the run with --run-id or
    /// the one at --index from it; the flags below are then not used.
    #[arg(long, conflicts_with_all = ["env", "algo", "steps"])]
    pub plan: Option<PathBuf>,
    /// With --plan: the run's id.
    #[arg(long, requires = "plan", conflicts_with = "index")]
    pub run_id: Option<String>,
    /// With --plan: the run's line number, from 0 (a job array's element index).
    #[arg(long, requires = "plan")]
    pub index: Option<usize>,
    /// Recorded in the run's lock as who runs it.
    #[arg(long, default_value = "run-one")]
    pub owner: String,
    /// Also checkpoint whenever this many minutes of wall time have passed since the last
    /// checkpoint, so a crash loses at most that much work whatever --checkpoint-every is
    /// (0: only every --checkpoint-every steps). Results and the run id do not depend on it.
    #[arg(
        long,
        value_name = "MINUTES",
        default_value_t = 10.0,
        allow_negative_numbers = true
    )]
    pub checkpoint_minutes: f64,
    /// Task name, e.g. InvertedPendulum or Hopper-v5.
    #[arg(long, required_unless_present = "plan")]
    pub env: Option<String>,
    #[arg(long, required_unless_present = "plan", help = mpdp::agent::registry::help(),
          value_parser = |s: &str| mpdp::agent::registry::find(s).map(|a| a.name.to_string()))]
    pub algo: Option<String>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Environment steps.
    #[arg(long, required_unless_present = "plan")]
    pub steps: Option<u64>,
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
    /// End the run (done) at the first evaluation whose mean return reaches this value.
    #[arg(long, value_name = "RETURN", allow_negative_numbers = true)]
    pub stop_at_return: Option<f64>,
    #[arg(long, default_value_t = mpdp::runner::DEFAULT_CHECKPOINT_EVERY)]
    pub checkpoint_every: u64,
    #[arg(long, default_value_t = 1000)]
    pub log_every: u64,
    /// Agent parameter, e.g. --set actor_lr=1e-3 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Start the run over from step 0, discarding its checkpoints and saved metrics (said in
    /// its log.txt). A finished run is never touched.
    #[arg(long)]
    pub from_scratch: bool,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    /// `run-one --help` once named only the first two algorithms.
    #[test]
    fn run_one_help_names_every_algorithm() {
        let mut cli = Cli::command();
        let help = cli
            .find_subcommand_mut("run-one")
            .expect("run-one")
            .render_help()
            .to_string();
        for algo in mpdp::agent::registry::names() {
            assert!(help.contains(algo), "run-one --help lacks {algo}:\n{help}");
        }
    }
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// The run's directory, runs/<experiment>/<run_id>.
    pub run_dir: PathBuf,
    /// A checkpoint directory to evaluate instead of RUN_DIR/ckpt (e.g. RUN_DIR/ckpt.prev).
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// Episodes (default: the run's eval.episodes).
    #[arg(long)]
    pub episodes: Option<usize>,
    /// Seed the episodes' envs from this instead of repeating the run's last evaluation.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Print the result as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Render one episode into this video (.mp4, .webm or .gif) with MuJoCo's offscreen
    /// renderer, the return and step drawn in a corner (needs `just setup-video`).
    #[arg(long, value_name = "PATH")]
    pub video: Option<PathBuf>,
    /// Write one episode as CSV, a row per state (the reset state is step 0): the return so
    /// far, the joint positions (qpos) and the observation.
    #[arg(long, value_name = "CSV")]
    pub trace: Option<PathBuf>,
    /// Which episode --video and --trace record, from 0.
    #[arg(long = "episode", visible_alias = "video-episode", default_value_t = 0)]
    pub episode: usize,
    /// With --video: at most this many frames (the episode's first ones).
    #[arg(long, requires = "video")]
    pub video_frames: Option<usize>,
    /// With --video: frame width and height in pixels.
    #[arg(long, default_value_t = 480, requires = "video")]
    pub video_size: u32,
}
