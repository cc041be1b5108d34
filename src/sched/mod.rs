//! Executors: the local process pool ([`local`]) and Slurm job arrays ([`slurm`]). Both run
//! each run of a plan as `mpdp run-one --plan FILE --run-id ID` (or `--index I`), one OS
//! process per run; the run directory is the only state, so rerunning an executor skips
//! what is done and resumes what was interrupted.

pub mod cost;
pub mod local;
pub mod slurm;

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::spec::{DeviceKind, Plan, PlannedRun};
use crate::store::lock::{LockInfo, live_lock};
use crate::store::{self, RunState};

/// Exit code of `run-one` when another live process holds the run.
pub const EXIT_BUSY: u8 = 73;
/// Exit code of `run-one` when a signal stopped the run after a checkpoint (EX_TEMPFAIL).
pub const EXIT_PREEMPTED: u8 = 75;

#[derive(Debug, thiserror::Error)]
pub enum SchedError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}:{line}: {message}", path.display())]
    PlanFile {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{0}")]
    Usage(String),
    #[error("slurm: {0}")]
    Slurm(String),
}

impl crate::config::IsUsage for SchedError {
    fn is_usage(&self) -> bool {
        matches!(self, SchedError::Usage(_) | SchedError::PlanFile { .. })
    }
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SchedError + '_ {
    move |source| SchedError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Where a planned run stands, read from its directory alone.
#[derive(Debug, Clone, PartialEq)]
pub enum RunStatus {
    Todo,
    /// Held by a live process.
    Running(LockInfo),
    Done,
    Failed(String),
    /// Stopped by a signal after a checkpoint: resumes on the next run.
    Preempted,
    /// Its process died without a word (status says running, nobody holds it): resumes from
    /// its last checkpoint on the next run.
    Interrupted,
}

impl RunStatus {
    pub fn name(&self) -> &'static str {
        match self {
            RunStatus::Todo => "todo",
            RunStatus::Running(_) => "running",
            RunStatus::Done => "done",
            RunStatus::Failed(_) => "failed",
            RunStatus::Preempted => "preempted",
            RunStatus::Interrupted => "interrupted",
        }
    }
}

/// How many runs are in each state, by [`RunStatus::name`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StatusCounts(std::collections::BTreeMap<&'static str, usize>);

impl StatusCounts {
    /// The states of `runs`, read from their directories under `runs_dir`.
    pub fn of<'a>(runs: impl IntoIterator<Item = &'a PlannedRun>, runs_dir: &Path) -> Self {
        let mut counts = StatusCounts::default();
        for run in runs {
            counts.add(&status_of(&run_dir(runs_dir, run)));
        }
        counts
    }

    pub fn add(&mut self, status: &RunStatus) {
        *self.0.entry(status.name()).or_default() += 1;
    }

    /// Runs in the state named `name`.
    pub fn get(&self, name: &str) -> usize {
        self.0.get(name).copied().unwrap_or(0)
    }
}

/// `3 done, 1 todo`: the states present, by name.
impl std::fmt::Display for StatusCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|(k, v)| format!("{v} {k}")).collect();
        f.write_str(&parts.join(", "))
    }
}

pub fn run_dir(runs_dir: &Path, run: &PlannedRun) -> PathBuf {
    runs_dir.join(&run.config.experiment).join(&run.run_id)
}

pub fn status_of(run_dir: &Path) -> RunStatus {
    let status = store::read_status(run_dir);
    if store::finished_with(run_dir, status.as_ref()) {
        return RunStatus::Done;
    }
    if let Some(holder) = live_lock(run_dir) {
        return RunStatus::Running(holder);
    }
    match status {
        None => RunStatus::Todo,
        Some(s) => match s.state {
            RunState::Done => unreachable!("a done status is finished"),
            RunState::Failed => RunStatus::Failed(s.reason.unwrap_or_default()),
            RunState::Preempted => RunStatus::Preempted,
            RunState::Running => RunStatus::Interrupted,
        },
    }
}

/// Steps a run has made (done runs: all of them).
pub fn steps_of(run_dir: &Path, status: &RunStatus, total: u64) -> u64 {
    match status {
        RunStatus::Done => total,
        RunStatus::Running(l) => l.step,
        // A run that stopped (or died) has made at least the steps of its checkpoint; its
        // status may be older (written when it last started).
        _ => store::read_status(run_dir)
            .map_or(0, |s| s.step)
            .max(crate::runner::checkpoint_step(run_dir).unwrap_or(0)),
    }
}

/// Writes the runs of a plan as JSON lines (the file `run-one --plan` reads), atomically.
pub fn write_plan_file(path: &Path, runs: &[&PlannedRun]) -> Result<(), SchedError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io_err(parent))?;
    }
    let mut text = Vec::new();
    for run in runs {
        serde_json::to_writer(&mut text, run).expect("planned runs serialise");
        text.push(b'\n');
    }
    store::write_atomic(path, &text).map_err(io_err(path))
}

pub fn read_plan_file(path: &Path) -> Result<Vec<PlannedRun>, SchedError> {
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| SchedError::PlanFile {
                path: path.to_path_buf(),
                line: i + 1,
                message: e.to_string(),
            })
        })
        .collect()
}

/// `runs/<experiment>/plans/<hash>.jsonl`, named by the hash of its run ids: schedulers
/// started with different overrides never overwrite the plan another one's children read.
pub fn plan_path(runs_dir: &Path, plan: &Plan) -> PathBuf {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    for run in unique_runs(plan) {
        hash.update(run.run_id.as_bytes());
    }
    let hex: String = hash.finalize()[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    runs_dir
        .join(&plan.spec.name)
        .join("plans")
        .join(format!("{hex}.jsonl"))
}

/// Runs listed once each (sweeps can't repeat ids; this guards the executors anyway).
pub fn unique_runs(plan: &Plan) -> Vec<&PlannedRun> {
    let mut seen = std::collections::BTreeSet::new();
    plan.runs
        .iter()
        .filter(|r| seen.insert(r.run_id.as_str()))
        .collect()
}

/// Checks that this binary can use the spec's device.
pub fn check_device(kind: DeviceKind) -> Result<(), SchedError> {
    match kind {
        DeviceKind::Cpu => Ok(()),
        DeviceKind::Wgpu if cfg!(feature = "wgpu") => Ok(()),
        DeviceKind::Wgpu => Err(SchedError::Usage(
            "devices.kind = \"wgpu\", but this binary was built without the `wgpu` feature \
             (cargo build --release --features wgpu)"
                .into(),
        )),
        DeviceKind::Cuda => Err(SchedError::Usage(
            "devices.kind = \"cuda\": this build has no CUDA backend; use \"wgpu\" for GPUs".into(),
        )),
    }
}

/// The last `n` lines of the run's `log.txt` and of its process output, for failure reports.
pub fn tail(run_dir: &Path, n: usize) -> Vec<String> {
    let mut lines = Vec::new();
    for name in ["log.txt", "output.log"] {
        if let Ok(text) = std::fs::read_to_string(run_dir.join(name)) {
            let all: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
            let from = all.len().saturating_sub(n);
            lines.extend(all[from..].iter().map(|l| format!("{name}: {l}")));
        }
    }
    lines
}

/// `mpdp status`: counts by state, the active and failed runs, and an ETA from the active
/// runs' rates.
pub fn print_status(plan: &Plan, runs_dir: &Path, out: &mut impl Write) -> std::io::Result<()> {
    let runs = unique_runs(plan);
    let mut counts = StatusCounts::default();
    let (mut remaining, mut total_steps, mut rate) = (0u64, 0u64, 0.0);
    let mut active = Vec::new();
    let mut failed = Vec::new();
    // What is left of each run that is not done, for the estimate below.
    let mut left = Vec::new();
    for run in &runs {
        let dir = run_dir(runs_dir, run);
        let status = status_of(&dir);
        counts.add(&status);
        let total = run.config.total_steps;
        let steps = steps_of(&dir, &status, total);
        total_steps += total;
        remaining += total - steps.min(total);
        if !matches!(status, RunStatus::Done) {
            left.push((&run.config, steps));
        }
        match &status {
            RunStatus::Running(l) => {
                rate += l.rate().unwrap_or(0.0);
                active.push((run, l.clone()));
            }
            RunStatus::Failed(reason) => failed.push((run, reason.clone(), dir)),
            _ => {}
        }
    }
    writeln!(
        out,
        "{}: {} runs, {} env steps in all",
        plan.spec.name,
        runs.len(),
        total_steps
    )?;
    let summary: Vec<String> = [
        "done",
        "running",
        "todo",
        "preempted",
        "interrupted",
        "failed",
    ]
    .iter()
    .filter(|s| counts.get(s) > 0)
    .map(|s| format!("{} {s}", counts.get(s)))
    .collect();
    writeln!(out, "  {}", summary.join(", "))?;
    let done_steps = total_steps - remaining;
    writeln!(
        out,
        "  progress: {:.1}% of env steps",
        100.0 * done_steps as f64 / total_steps.max(1) as f64
    )?;
    for (run, l) in &active {
        let eval = l
            .last_eval
            .map_or(String::new(), |e| format!(", eval {e:.1}"));
        let eval = match l.rate() {
            Some(r) => format!("{eval}, {} steps/s", fmt_rate(r)),
            None => eval,
        };
        writeln!(
            out,
            "  running {} {} seed {} ({}): {}/{} steps{eval}, {} on {}",
            run.label(),
            run.env,
            run.seed,
            run.run_id,
            l.step,
            l.total_steps,
            l.owner,
            l.host
        )?;
    }
    for (run, reason, dir) in &failed {
        writeln!(
            out,
            "  failed {} {} seed {} ({}): {reason}",
            run.label(),
            run.env,
            run.seed,
            run.run_id
        )?;
        for line in tail(dir, 3) {
            writeln!(out, "      {line}")?;
        }
    }
    if remaining > 0 {
        if rate > 0.0 {
            writeln!(
                out,
                "  ETA {} at the current {} steps/s (runs that are not running count at \
                 the same rate once they start)",
                fmt_duration(remaining as f64 / rate),
                fmt_rate(rate)
            )?;
        } else {
            let cache = cost::Cache::load(&cost::Cache::default_path());
            let costed = cost::from_cache(plan, &cache);
            let why = if active.is_empty() {
                "nothing is running"
            } else {
                "no run has measured its rate yet"
            };
            let predicted: Option<f64> = left
                .iter()
                .map(|(cfg, steps)| costed.remaining(cfg, *steps))
                .sum();
            match predicted {
                Some(s) => {
                    let slots = plan.spec.devices.slots.len().max(1);
                    writeln!(
                        out,
                        "  ETA {} at {slots} run(s) at a time ({why}; estimated from this \
                         machine's calibrations, `mpdp plan --cost`)",
                        fmt_duration(s / slots as f64)
                    )?;
                }
                None => writeln!(
                    out,
                    "  ETA unknown: {why} (`mpdp plan --cost` calibrates an estimate)"
                )?,
            }
        }
    }
    Ok(())
}

/// Steps per second with three significant digits at most (0.613, 12.4, 1520).
pub fn fmt_rate(rate: f64) -> String {
    match rate {
        r if r >= 100.0 => format!("{r:.0}"),
        r if r >= 10.0 => format!("{r:.1}"),
        r if r >= 1.0 => format!("{r:.2}"),
        r => format!("{r:.3}"),
    }
}

pub fn fmt_duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: an interrupted run showed the step of its last start (0 for a first run)
    /// however far its checkpoints had got.
    #[test]
    fn an_interrupted_run_counts_the_steps_of_its_checkpoint() {
        let dir = std::env::temp_dir().join(format!("mpdp-steps-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("ckpt")).unwrap();
        let status = store::Status::new(RunState::Running, 0, 1000, None);
        store::write_status(&dir, &status).unwrap();
        assert_eq!(steps_of(&dir, &RunStatus::Interrupted, 1000), 0);
        std::fs::write(dir.join("ckpt/loop.json"), r#"{"step":400,"episode":3}"#).unwrap();
        assert_eq!(steps_of(&dir, &RunStatus::Interrupted, 1000), 400);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
