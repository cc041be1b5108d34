//! The local scheduler on the smoke spec: a sweep killed mid-way (SIGKILL) and rerun skips
//! finished runs, resumes the interrupted one and ends with the results of an uninterrupted
//! sweep, with no temporary file of a cut-short write left in runs/ or plots/; two
//! schedulers on one runs/ run each run exactly once; children of a killed
//! scheduler checkpoint and stop.
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use mpdp::runner::read_metrics;
use mpdp::sched::{self, RunStatus};
use mpdp::spec;

mod common;
use common::{Dir, temporary_files};

fn smoke() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments/smoke.toml")
}

/// Longer runs than the smoke spec's, checkpointed often, so a kill lands mid-run.
fn sets(steps: u64, slots: usize) -> Vec<String> {
    vec![
        format!("envs.InvertedPendulum.steps={steps}"),
        format!("envs.Hopper.steps={steps}"),
        "run.checkpoint_every=250".into(),
        "eval.every=1000".into(),
        format!("devices.runs_per_device={slots}"),
    ]
}

fn command(runs: &Path, sets: &[String]) -> Command {
    on_smoke("run", runs, sets)
}

/// `mpdp <sub> experiments/smoke.toml --runs-dir <runs> --set …`.
fn on_smoke(sub: &str, runs: &Path, sets: &[String]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mpdp"));
    c.arg(sub).arg(smoke()).arg("--runs-dir").arg(runs);
    for s in sets {
        c.args(["--set", s]);
    }
    c.env("MPDP_HEARTBEAT_S", "0.2");
    c
}

fn run(runs: &Path, sets: &[String]) -> Output {
    let out = command(runs, sets).output().expect("spawn mpdp run");
    assert!(
        out.status.success(),
        "mpdp run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn spawn(runs: &Path, sets: &[String]) -> Child {
    use std::os::unix::process::CommandExt;
    let mut c = command(runs, sets);
    c.stdout(Stdio::null()).stderr(Stdio::piped());
    // Its own process group, so the test can kill the scheduler with its children.
    c.process_group(0);
    c.spawn().expect("spawn mpdp run")
}

fn plan(sets: &[String]) -> spec::Plan {
    spec::load(&smoke(), sets).unwrap()
}

fn eval_curve(dir: &Path) -> Vec<(u64, f64)> {
    read_metrics(&dir.join("metrics.parquet"))
        .unwrap()
        .into_iter()
        .filter(|r| r.metric == "eval/return_mean")
        .map(|r| (r.step, r.value))
        .collect()
}

/// The step of a run's checkpoint, if it has one.
fn checkpoint_step(dir: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(dir.join("ckpt/loop.json")).ok()?;
    serde_json::from_str::<serde_json::Value>(&text).ok()?["step"].as_u64()
}

fn log_count(dir: &Path, needle: &str) -> usize {
    std::fs::read_to_string(dir.join("log.txt"))
        .unwrap_or_default()
        .matches(needle)
        .count()
}

fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(t.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The pid of a process that has ended.
fn dead_pid() -> u32 {
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

#[test]
fn a_killed_sweep_resumes_to_the_results_of_an_uninterrupted_one() {
    let (a, b) = (Dir::new("whole"), Dir::new("killed"));
    let sets = sets(6000, 1);
    let plan = plan(&sets);
    run(&a.0, &sets);

    let mut child = spawn(&b.0, &sets);
    let dirs: Vec<PathBuf> = plan.runs.iter().map(|r| sched::run_dir(&b.0, r)).collect();
    // Kill when one run is done and another has a checkpoint after its first evaluation
    // but is not done.
    wait_for(
        "a finished run and one checkpointed after an evaluation",
        Duration::from_secs(300),
        || {
            let done = dirs
                .iter()
                .filter(|d| sched::status_of(d) == RunStatus::Done)
                .count();
            let mid = dirs.iter().any(|d| {
                checkpoint_step(d).is_some_and(|step| step >= 1000)
                    && sched::status_of(d) != RunStatus::Done
            });
            done >= 1 && mid
        },
    );
    // SAFETY: SIGKILL to the process group the test created for the scheduler.
    unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
    child.wait().unwrap();
    let finished: Vec<bool> = dirs
        .iter()
        .map(|d| sched::status_of(d) == RunStatus::Done)
        .collect();
    let interrupted: Vec<&PathBuf> = dirs
        .iter()
        .filter(|d| d.join("ckpt/loop.json").exists() && sched::status_of(d) != RunStatus::Done)
        .collect();
    assert!(!interrupted.is_empty());

    // Temporary files as writers killed between writing and renaming leave them, in every
    // kind of place they write: the next scheduler, aggregation and report remove them.
    let plots = Dir::new("killed-plots");
    let dead = dead_pid();
    let done_dir = dirs.iter().zip(&finished).find(|(_, f)| **f).unwrap().0;
    for (i, (dir, name)) in [
        (b.0.join("smoke"), "summary.parquet"),
        (b.0.join("smoke/plans"), "x.jsonl"),
        (plots.0.join("smoke"), "report.md"),
        (done_dir.clone(), "status.json"),
        (interrupted[0].clone(), "lock.json"),
    ]
    .into_iter()
    .enumerate()
    {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!(".{name}.{dead}-{i}.tmp")), "").unwrap();
    }
    // The report of the killed sweep shows each interrupted run's evaluations so far, which
    // are the uninterrupted run's up to its checkpoint.
    let out = on_smoke("plots", &b.0, &sets)
        .arg("--plots-dir")
        .arg(&plots.0)
        .output()
        .unwrap();
    assert!(out.status.success());
    let report = std::fs::read_to_string(plots.0.join("smoke/report.md")).unwrap();
    let mut shown = 0;
    for run in &plan.runs {
        let dir = sched::run_dir(&b.0, run);
        let Some(step) = checkpoint_step(&dir).filter(|_| interrupted.contains(&&dir)) else {
            continue;
        };
        let saved: Vec<(u64, f64)> = eval_curve(&sched::run_dir(&a.0, run))
            .into_iter()
            .filter(|(s, _)| *s <= step)
            .collect();
        let cells: Vec<String> = saved.iter().map(|(s, v)| format!("{s}: {v:.1}")).collect();
        let row = report
            .lines()
            .find(|l| l.starts_with(&format!("| {} |", run.run_id)))
            .unwrap_or_else(|| panic!("{} not in the report:\n{report}", run.run_id));
        assert!(row.ends_with(&format!("| {} |", cells.join(", "))), "{row}");
        shown += saved.len();
    }
    assert!(shown > 0, "{report}");

    let out = run(&b.0, &sets);
    let err = String::from_utf8_lossy(&out.stderr);
    let skipped = finished.iter().filter(|f| **f).count();
    assert!(err.contains(&format!("{skipped} done before")), "{err}");
    for (dir, was_done) in dirs.iter().zip(&finished) {
        assert_eq!(sched::status_of(dir), RunStatus::Done);
        assert_eq!(log_count(dir, "started sac"), 1, "{}", dir.display());
        if *was_done {
            assert_eq!(log_count(dir, "resumed"), 0, "a finished run ran again");
        }
    }
    for dir in &interrupted {
        assert_eq!(log_count(dir, "resumed from the checkpoint"), 1);
    }
    let litter = [temporary_files(&b.0), temporary_files(&plots.0)].concat();
    assert!(litter.is_empty(), "left: {litter:?}");
    for run in &plan.runs {
        let (x, y) = (sched::run_dir(&a.0, run), sched::run_dir(&b.0, run));
        let curve = eval_curve(&x);
        assert_eq!(curve.len(), 6, "{}", x.display());
        assert_eq!(
            curve,
            eval_curve(&y),
            "{} differs after the kill",
            run.run_id
        );
    }
}

#[test]
fn two_schedulers_on_one_runs_dir_run_each_run_once() {
    let d = Dir::new("twice");
    let sets = sets(3000, 2);
    let first = spawn(&d.0, &sets);
    let second = spawn(&d.0, &sets);
    let (x, y) = (
        first.wait_with_output().unwrap(),
        second.wait_with_output().unwrap(),
    );
    let mut finished = 0;
    for out in [&x, &y] {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
        let n: usize = err
            .split(" finished now")
            .next()
            .and_then(|s| s.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no summary in {err}"));
        finished += n;
    }
    let plan = plan(&sets);
    assert_eq!(
        finished,
        plan.runs.len(),
        "each run is finished by exactly one scheduler"
    );
    for run in &plan.runs {
        let dir = sched::run_dir(&d.0, run);
        assert_eq!(sched::status_of(&dir), RunStatus::Done);
        assert_eq!(log_count(&dir, "started sac"), 1, "{}", dir.display());
        assert_eq!(log_count(&dir, "resumed"), 0);
    }
}

#[test]
fn children_of_a_killed_scheduler_checkpoint_and_stop() {
    let d = Dir::new("orphans");
    let sets = sets(200_000, 2);
    let mut child = spawn(&d.0, &sets);
    let dirs: Vec<PathBuf> = plan(&sets)
        .runs
        .iter()
        .map(|r| sched::run_dir(&d.0, r))
        .collect();
    wait_for(
        "two runs with checkpoints",
        Duration::from_secs(120),
        || {
            dirs.iter()
                .filter(|d| d.join("ckpt/loop.json").exists())
                .count()
                >= 2
        },
    );
    // The scheduler alone: its children get SIGTERM from the kernel (PR_SET_PDEATHSIG).
    child.kill().unwrap();
    child.wait().unwrap();
    wait_for("the orphaned runs to stop", Duration::from_secs(60), || {
        dirs.iter()
            .all(|d| !matches!(sched::status_of(d), RunStatus::Running(_)))
    });
    let preempted = dirs
        .iter()
        .filter(|d| sched::status_of(d) == RunStatus::Preempted)
        .count();
    assert_eq!(
        preempted, 2,
        "both running runs checkpoint and mark themselves preempted"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_mpdp"))
        .arg("status")
        .arg(smoke())
        .arg("--runs-dir")
        .arg(&d.0)
        .args(sets.iter().flat_map(|s| ["--set", s.as_str()]))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("2 todo, 2 preempted"), "{text}");
}

#[test]
fn failed_runs_are_listed_with_their_logs_and_the_sweep_goes_on() {
    let d = Dir::new("failed");
    let mut sets = sets(600, 2);
    sets.extend([
        "agents.SAC.per_env.Hopper.critic_lr=1e30".to_string(),
        "agents.SAC.per_env.Hopper.actor_lr=1e30".to_string(),
    ]);
    let out = command(&d.0, &sets).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("2 finished now"), "{err}");
    assert!(err.contains("2 failed"), "{err}");
    for seed in [0, 1] {
        assert!(
            err.contains(&format!("FAILED SAC Hopper seed {seed}")),
            "{err}"
        );
    }
    assert!(err.contains("diverged at step"), "{err}");
    assert!(
        err.contains("    log.txt: "),
        "the last log lines are shown: {err}"
    );
    let statuses: Vec<RunStatus> = plan(&sets)
        .runs
        .iter()
        .map(|r| sched::status_of(&sched::run_dir(&d.0, r)))
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == RunStatus::Done).count(),
        2
    );
    // Rerun: the failed runs are listed, not retried.
    let out = command(&d.0, &sets).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("0 finished now"), "{err}");
    assert!(err.contains("--retry-failed resumes it"), "{err}");
    assert!(err.contains("--from-scratch starts it over"), "{err}");
}

#[test]
fn schedulers_with_different_overrides_keep_their_own_plans() {
    let d = Dir::new("overrides");
    let (a, b) = (sets(400, 2), sets(500, 2));
    let first = spawn(&d.0, &a);
    let second = spawn(&d.0, &b);
    for out in [
        first.wait_with_output().unwrap(),
        second.wait_with_output().unwrap(),
    ] {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for sets in [&a, &b] {
        for run in &plan(sets).runs {
            assert_eq!(
                sched::status_of(&sched::run_dir(&d.0, run)),
                RunStatus::Done
            );
        }
    }
}
