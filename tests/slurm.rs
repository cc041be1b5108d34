//! `mpdp submit --executor slurm` on a real Slurm cluster (`scripts/slurm-local start`; CI
//! starts one): the smoke spec's 2 envs x 2 seeds as one job array, all runs `done`; and an
//! element stopped by a signal checkpoints, requeues itself and resumes.
//!
//! Needs sbatch/squeue/scontrol and a running cluster: `just test-slurm`.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use mpdp::sched::{self, RunStatus};
use mpdp::spec;

fn smoke() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments/smoke.toml")
}

fn tmp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mpdp-slurm-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn submit(runs: &Path, sets: &[&str], wait: bool) -> (String, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mpdp"));
    c.arg("submit")
        .arg(smoke())
        .args(["--executor", "slurm", "--runs-dir"])
        .arg(runs);
    for s in sets {
        c.args(["--set", s]);
    }
    if wait {
        c.arg("--wait");
    }
    let out = c.output().expect("spawn mpdp submit");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "mpdp submit failed: {err}");
    let job = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(job.parse::<u64>().is_ok(), "job id {job:?}; stderr: {err}");
    (job, err)
}

fn statuses(runs: &Path, sets: &[String]) -> Vec<RunStatus> {
    spec::load(&smoke(), sets)
        .unwrap()
        .runs
        .iter()
        .map(|r| sched::status_of(&sched::run_dir(runs, r)))
        .collect()
}

#[test]
#[ignore = "needs a Slurm cluster: just test-slurm"]
fn a_job_array_runs_the_smoke_sweep() {
    let runs = tmp("array");
    let (job, err) = submit(&runs, &[], true);
    assert!(
        err.contains(&format!("job {job}: all 4 runs done")),
        "{err}"
    );
    assert!(statuses(&runs, &[]).iter().all(|s| *s == RunStatus::Done));
    // Submitting again has nothing to do.
    let out = Command::new(env!("CARGO_BIN_EXE_mpdp"))
        .arg("submit")
        .arg(smoke())
        .args(["--executor", "slurm", "--runs-dir"])
        .arg(&runs)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing to submit"));
    std::fs::remove_dir_all(&runs).ok();
}

#[test]
#[ignore = "needs a Slurm cluster: just test-slurm"]
fn a_signalled_element_checkpoints_requeues_and_resumes() {
    let runs = tmp("requeue");
    let sets = [
        "envs.InvertedPendulum.steps=30000",
        "envs.Hopper.steps=300",
        "run.checkpoint_every=250",
    ];
    let owned: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    let (job, _) = submit(&runs, &sets, false);
    let sub_dir = std::fs::read_dir(runs.join("smoke/slurm"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let first = &sched::read_plan_file(&sub_dir.join("plan.jsonl")).unwrap()[0];
    assert_eq!(first.env, "InvertedPendulum");
    let dir = sched::run_dir(&runs, first);
    let t = Instant::now();
    while !(dir.join("ckpt/loop.json").exists()
        && matches!(sched::status_of(&dir), RunStatus::Running(_)))
    {
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "element 0 never got going"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // What Slurm sends before a time limit (--signal=B:TERM@...): SIGTERM to the batch shell.
    let st = Command::new("scancel")
        .args(["--signal=TERM", "--batch", &format!("{job}_0")])
        .status()
        .unwrap();
    assert!(st.success());
    let t = Instant::now();
    while sched::slurm::job_active(&job).unwrap()
        || !statuses(&runs, &owned)
            .iter()
            .all(|s| *s == RunStatus::Done)
    {
        assert!(
            t.elapsed() < Duration::from_secs(300),
            "job {job} did not finish: {:?}",
            statuses(&runs, &owned)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let log = std::fs::read_to_string(dir.join("log.txt")).unwrap();
    assert!(log.contains("preempted at step"), "{log}");
    assert!(log.contains("resumed from the checkpoint"), "{log}");
    assert_eq!(log.matches("started sac").count(), 1, "{log}");
    std::fs::remove_dir_all(&runs).ok();
}
