//! `mpdp bench env`: environment steps per second for each task, next to raw MuJoCo stepping
//! (`mj_step` × frame skip with the same controls, states and resets, nothing else) and next
//! to Gymnasium's `env.step` in Python on the same actions.
use std::io::Write;
use std::process::Command;
use std::time::Instant;

use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};

use super::reference_script;
use crate::env::{self, Env, EnvError, MujocoEnv, ObsVariant, Task};

/// What to measure (`mpdp bench env`'s options).
#[derive(Debug, Clone, clap::Args)]
pub struct EnvBenchConfig {
    /// Tasks to measure (default: all six).
    #[arg(long, value_delimiter = ',')]
    pub tasks: Vec<Task>,
    /// Environment steps per measurement.
    #[arg(long, default_value_t = 20_000)]
    pub steps: usize,
    /// Measurements per implementation (the best counts).
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    #[arg(skip)]
    pub seed: u64,
    #[command(flatten)]
    pub reference: super::Reference,
}

impl EnvBenchConfig {
    /// The tasks to measure: those given, or all six.
    pub fn tasks(&self) -> Vec<Task> {
        if self.tasks.is_empty() {
            Task::ALL.to_vec()
        } else {
            self.tasks.clone()
        }
    }
}

/// Steps per second of one task.
#[derive(Debug, Clone)]
pub struct EnvBenchRow {
    pub task: Task,
    pub frame_skip: usize,
    pub env_steps_per_s: f64,
    /// Raw physics rate expressed in environment steps (mj_step/s ÷ frame skip).
    pub raw_steps_per_s: f64,
    pub gymnasium_steps_per_s: Option<f64>,
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Env(#[from] EnvError),
    #[error("running the Gymnasium reference ({command}): {message}")]
    Reference { command: String, message: String },
}

/// Runs the benchmark, calling `progress` before each task.
pub fn run(
    cfg: &EnvBenchConfig,
    mut progress: impl FnMut(Task),
) -> Result<Vec<EnvBenchRow>, BenchError> {
    let mut rows = Vec::new();
    let python = cfg.reference.python(super::default_python);
    for task in cfg.tasks() {
        progress(task);
        let mut env = env::make(task, ObsVariant::V5)?;
        let actions = random_actions(&env, cfg.steps, cfg.seed);
        let mut env_best = f64::MAX;
        let mut raw_best = f64::MAX;
        for _ in 0..cfg.repeats.max(1) {
            let (secs, resets) = time_env(&mut env, &actions, cfg.seed);
            env_best = env_best.min(secs);
            raw_best = raw_best.min(time_raw(&mut env, &actions, &resets, cfg.seed));
        }
        let gymnasium_steps_per_s = match &python {
            Some(python) => Some(gymnasium_rate(python, task, cfg)?),
            None => None,
        };
        rows.push(EnvBenchRow {
            task,
            frame_skip: task.frame_skip(),
            env_steps_per_s: cfg.steps as f64 / env_best,
            raw_steps_per_s: cfg.steps as f64 / raw_best,
            gymnasium_steps_per_s,
        });
    }
    Ok(rows)
}

fn random_actions(env: &MujocoEnv, n: usize, seed: u64) -> Vec<Vec<f64>> {
    let info = env.info();
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed ^ 0x5eed_ac71);
    (0..n)
        .map(|_| {
            info.action_low
                .iter()
                .zip(&info.action_high)
                .map(|(&lo, &hi)| rng.random_range(lo..hi))
                .collect()
        })
        .collect()
}

/// Full environment steps, resetting when an episode ends. Returns seconds and the indices
/// of the steps after which it reset.
fn time_env(env: &mut MujocoEnv, actions: &[Vec<f64>], seed: u64) -> (f64, Vec<usize>) {
    let mut resets = Vec::new();
    env.reset(Some(seed));
    let start = Instant::now();
    for (i, action) in actions.iter().enumerate() {
        if env.step(action).done() {
            env.reset(None);
            resets.push(i);
        }
    }
    (start.elapsed().as_secs_f64(), resets)
}

/// The same controls, states and resets with physics only: set ctrl, mj_step × frame skip.
fn time_raw(env: &mut MujocoEnv, actions: &[Vec<f64>], resets: &[usize], seed: u64) -> f64 {
    let frame_skip = env.info().task.frame_skip();
    let mut resets = resets.iter().peekable();
    env.reset(Some(seed));
    let start = Instant::now();
    for (i, action) in actions.iter().enumerate() {
        env.set_ctrl(action);
        env.step_physics(frame_skip);
        if resets.next_if_eq(&&i).is_some() {
            env.reset(None);
        }
    }
    start.elapsed().as_secs_f64()
}

fn gymnasium_rate(
    python: &std::path::Path,
    task: Task,
    cfg: &EnvBenchConfig,
) -> Result<f64, BenchError> {
    let script = reference_script("gym_env_bench.py");
    let mut cmd = Command::new(python);
    // MuJoCo's Python warnings append to MUJOCO_LOG.TXT in the working directory.
    cmd.current_dir(std::env::temp_dir())
        .arg(&script)
        .args(["--env", &task.gymnasium_id()])
        .args(["--steps", &cfg.steps.to_string()])
        .args(["--repeats", &cfg.repeats.max(1).to_string()])
        .args(["--seed", &cfg.seed.to_string()]);
    let command = format!("{} {}", python.display(), script.display());
    let fail = |message: String| BenchError::Reference {
        command: command.clone(),
        message,
    };
    let out = cmd
        .output()
        .map_err(|e| fail(format!("{e}; run `just setup`")))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(fail(stderr.lines().last().unwrap_or("failed").to_string()));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("steps_per_s="))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| fail(format!("no steps_per_s= line in its output: {stdout}")))
}

/// Prints the table and, last, the worst ratios over the tasks.
pub fn print_report(rows: &[EnvBenchRow], out: &mut impl Write) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<17} {:>4} {:>12} {:>12} {:>12} {:>8} {:>8} {:>8}",
        "task", "skip", "env step/s", "raw step/s", "gym step/s", "env/raw", "env/gym", "raw/gym"
    )?;
    for r in rows {
        let gym = r.gymnasium_steps_per_s;
        writeln!(
            out,
            "{:<17} {:>4} {:>12.0} {:>12.0} {:>12} {:>8.3} {:>8} {:>8}",
            r.task.name(),
            r.frame_skip,
            r.env_steps_per_s,
            r.raw_steps_per_s,
            gym.map_or("-".into(), |g| format!("{g:.0}")),
            r.env_steps_per_s / r.raw_steps_per_s,
            gym.map_or("-".into(), |g| format!("{:.2}", r.env_steps_per_s / g)),
            gym.map_or("-".into(), |g| format!("{:.2}", r.raw_steps_per_s / g)),
        )?;
    }
    writeln!(
        out,
        "raw step/s = MuJoCo mj_step/s divided by the frame skip (same controls, states and resets)"
    )?;
    let min_raw = rows
        .iter()
        .map(|r| r.env_steps_per_s / r.raw_steps_per_s)
        .fold(f64::INFINITY, f64::min);
    writeln!(out, "min_ratio_raw={min_raw:.3} (target >= 0.95)")?;
    let gym: Vec<f64> = rows
        .iter()
        .filter_map(|r| r.gymnasium_steps_per_s.map(|g| r.env_steps_per_s / g))
        .collect();
    if !gym.is_empty() {
        let min_gym = gym.into_iter().fold(f64::INFINITY, f64::min);
        writeln!(out, "min_ratio_gymnasium={min_gym:.2} (target >= 1.3)")?;
    }
    Ok(())
}
