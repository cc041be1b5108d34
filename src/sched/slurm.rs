//! The Slurm executor: one sbatch job array per submission, element i running
//! `mpdp run-one --plan FILE --index i`. Elements are requeued when a signal stops them
//! (the time limit's warning, preemption); their results land in the same runs/ and
//! aggregate the same way. Nothing has to stay alive after `submit`.
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{
    EXIT_BUSY, EXIT_PREEMPTED, RunStatus, SchedError, check_device, io_err, run_dir, status_of,
    unique_runs, write_plan_file,
};
use crate::spec::{DeviceKind, Plan, PlannedRun};
use crate::store;

/// sbatch settings of a submission.
#[derive(Debug, Clone, Default)]
pub struct SlurmOptions {
    pub partition: Option<String>,
    pub account: Option<String>,
    /// Wall-clock limit per element (`--time`, e.g. `12:00:00`).
    pub time: Option<String>,
    /// Memory per element (`--mem`, e.g. `8G`).
    pub mem: Option<String>,
    pub gpus_per_run: u32,
    /// CPUs per element (default: the spec's threads_per_run).
    pub cpus_per_run: Option<usize>,
    /// Elements running at once (`--array=...%N`).
    pub max_parallel: Option<usize>,
    /// Seconds before the time limit at which the element is told to checkpoint.
    pub signal_before: u32,
    /// More `#SBATCH` lines, e.g. `--qos=long`.
    pub extra: Vec<String>,
}

/// A written (and maybe submitted) job array.
#[derive(Debug)]
pub struct Submission {
    pub dir: PathBuf,
    pub script: PathBuf,
    pub runs: Vec<PlannedRun>,
    /// Runs left out because they are done or running.
    pub skipped: usize,
    pub job_id: Option<String>,
}

/// Writes the plan file and sbatch script of the runs of `plan` that are not done and not
/// running into `runs/<experiment>/slurm/<stamp>/`, and submits it unless `dry_run`.
pub fn submit(
    plan: &Plan,
    runs_dir: &Path,
    exe: &Path,
    opts: &SlurmOptions,
    dry_run: bool,
) -> Result<Submission, SchedError> {
    check_device(plan.spec.devices.kind)?;
    let mut todo = Vec::new();
    let mut skipped = 0;
    for run in unique_runs(plan) {
        match status_of(&run_dir(runs_dir, run)) {
            RunStatus::Done | RunStatus::Running(_) => skipped += 1,
            _ => todo.push(run),
        }
    }
    let stamp = format!("{:.0}", store::unix_now() * 1000.0);
    let dir = runs_dir.join(&plan.spec.name).join("slurm").join(stamp);
    std::fs::create_dir_all(dir.join("logs")).map_err(io_err(&dir))?;
    let plan_file = dir.join("plan.jsonl");
    write_plan_file(&plan_file, &todo)?;
    let script = dir.join("array.sbatch");
    let text = script_text(plan, todo.len(), &dir, &plan_file, runs_dir, exe, opts);
    store::write_atomic(&script, text.as_bytes()).map_err(io_err(&script))?;
    let mut sub = Submission {
        dir,
        script,
        runs: todo.into_iter().cloned().collect(),
        skipped,
        job_id: None,
    };
    if dry_run || sub.runs.is_empty() {
        return Ok(sub);
    }
    let out = Command::new("sbatch")
        .arg("--parsable")
        .arg(&sub.script)
        .output()
        .map_err(|e| SchedError::Slurm(format!("running sbatch: {e} (is Slurm installed?)")))?;
    if !out.status.success() {
        return Err(SchedError::Slurm(format!(
            "sbatch {} failed: {}",
            sub.script.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    // `--parsable` prints `jobid` or `jobid;cluster`.
    let id = String::from_utf8_lossy(&out.stdout)
        .trim()
        .split(';')
        .next()
        .unwrap_or_default()
        .to_string();
    let record = serde_json::json!({
        "job_id": id,
        "runs": sub.runs.iter().map(|r| &r.run_id).collect::<Vec<_>>(),
        "submitted": store::unix_now(),
    });
    let path = sub.dir.join("submission.json");
    store::write_atomic(&path, record.to_string().as_bytes()).map_err(io_err(&path))?;
    sub.job_id = Some(id);
    Ok(sub)
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn script_text(
    plan: &Plan,
    n: usize,
    dir: &Path,
    plan_file: &Path,
    runs_dir: &Path,
    exe: &Path,
    opts: &SlurmOptions,
) -> String {
    let devices = &plan.spec.devices;
    let cpus = opts.cpus_per_run.unwrap_or(devices.threads_per_run);
    let mut s = String::from("#!/bin/bash\n");
    let mut sb = |line: String| {
        let _ = writeln!(s, "#SBATCH {line}");
    };
    sb(format!("--job-name=mpdp-{}", plan.spec.name));
    let throttle = opts.max_parallel.map_or(String::new(), |p| format!("%{p}"));
    sb(format!("--array=0-{}{throttle}", n.saturating_sub(1)));
    sb(format!("--cpus-per-task={cpus}"));
    sb("--ntasks=1".into());
    sb("--requeue".into());
    // SIGTERM to the batch shell before the time limit; it passes it on and requeues.
    sb(format!("--signal=B:TERM@{}", opts.signal_before));
    sb("--open-mode=append".into());
    sb(format!("--output={}/logs/%A_%a.out", dir.display()));
    if let Some(p) = &opts.partition {
        sb(format!("--partition={p}"));
    }
    if let Some(a) = &opts.account {
        sb(format!("--account={a}"));
    }
    if let Some(t) = &opts.time {
        sb(format!("--time={t}"));
    }
    if let Some(m) = &opts.mem {
        sb(format!("--mem={m}"));
    }
    if opts.gpus_per_run > 0 {
        sb(format!("--gpus-per-task={}", opts.gpus_per_run));
    }
    for e in &opts.extra {
        sb(e.clone());
    }
    let device = match devices.kind {
        DeviceKind::Cpu => "cpu",
        kind => kind.name(),
    };
    let _ = write!(
        s,
        r#"
# Written by `mpdp submit` for spec {spec}: {n} runs, element i = line i of plan.jsonl.
# Each element is idempotent (a done run exits at once, a checkpointed one resumes).
set -u
export RAYON_NUM_THREADS={cpus} OMP_NUM_THREADS={cpus} MPDP_DEVICE={device}
{exe} run-one --plan {plan_file} --index "$SLURM_ARRAY_TASK_ID" \
    --runs-dir {runs_dir} --quiet --owner "slurm ${{SLURM_ARRAY_JOB_ID}}_${{SLURM_ARRAY_TASK_ID}}" &
child=$!
trap 'kill -TERM "$child" 2>/dev/null' TERM USR1
wait "$child"
code=$?
# A trapped signal ends `wait` early: wait for the run to checkpoint and exit.
while kill -0 "$child" 2>/dev/null; do
    wait "$child"
    code=$?
done
if [ "$code" -eq {preempted} ]; then
    echo "preempted: requeueing ${{SLURM_ARRAY_JOB_ID}}_${{SLURM_ARRAY_TASK_ID}}"
    scontrol requeue "${{SLURM_ARRAY_JOB_ID}}_${{SLURM_ARRAY_TASK_ID}}"
    exit 0
fi
if [ "$code" -eq {busy} ]; then
    echo "another executor holds this run; leaving it to them"
    exit 0
fi
exit "$code"
"#,
        spec = plan.spec.path.display(),
        exe = quote(&exe.display().to_string()),
        plan_file = quote(&plan_file.display().to_string()),
        runs_dir = quote(&runs_dir.display().to_string()),
        preempted = EXIT_PREEMPTED,
        busy = EXIT_BUSY,
    );
    s
}

/// Follows job array `job` of a submission of `runs` until Slurm no longer lists it,
/// calling `progress` with the runs' state counts whenever they change (every 2 s at most).
/// Returns how many of the runs are not done at the end.
pub fn wait(
    job: &str,
    runs: &[PlannedRun],
    runs_dir: &Path,
    progress: &mut dyn FnMut(&super::StatusCounts),
) -> Result<usize, SchedError> {
    let mut last = None;
    loop {
        let active = job_active(job)?;
        let counts = super::StatusCounts::of(runs, runs_dir);
        if last.as_ref() != Some(&counts) {
            progress(&counts);
            last = Some(counts);
        }
        if !active {
            break;
        }
        std::thread::sleep(std::time::Duration::from_secs(2));
    }
    Ok(runs
        .iter()
        .filter(|r| status_of(&run_dir(runs_dir, r)) != RunStatus::Done)
        .count())
}

/// Whether job `id` still has elements pending or running (`squeue`).
pub fn job_active(id: &str) -> Result<bool, SchedError> {
    let out = Command::new("squeue")
        .args(["-h", "-j", id, "-o", "%i %T"])
        .output()
        .map_err(|e| SchedError::Slurm(format!("running squeue: {e}")))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        // Finished jobs age out of slurmctld; squeue then calls the id invalid.
        if err.contains("Invalid job id") {
            return Ok(false);
        }
        return Err(SchedError::Slurm(format!("squeue -j {id}: {}", err.trim())));
    }
    Ok(!String::from_utf8_lossy(&out.stdout).trim().is_empty())
}
