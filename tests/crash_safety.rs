//! Nothing a run has saved is lost to a crash: a small SAC run is aborted at every write step
//! of its checkpoints and its finish (each file written, each rename, each deletion; the
//! `MPDP_FAULT_AFTER_WRITES` hook), resumed, and must end with the metrics of an
//! uninterrupted run, row for row. The same after a damaged `status.json` on a finished run
//! and after a truncated newest checkpoint; a run whose checkpoints are all unreadable fails,
//! saying which file.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use mpdp::runner::{measures_time, read_metrics};
use mpdp::store::{self, RunState};

mod common;
use common::{Dir, temporary_files};

fn command(runs: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mpdp"));
    c.args([
        "run-one",
        "--env",
        "InvertedPendulum",
        "--algo",
        "sac",
        "--seed",
        "4",
        "--steps",
        "300",
        "--eval-every",
        "100",
        "--eval-episodes",
        "2",
        "--checkpoint-every",
        "100",
        "--checkpoint-minutes",
        "0",
        "--log-every",
        "50",
        "--quiet",
        "--set",
        "hidden=[16, 16]",
        "--set",
        "batch_size=32",
        "--set",
        "learning_starts=100",
    ]);
    c.arg("--runs-dir")
        .arg(runs)
        .env_remove(store::FAULT_ENV_VAR);
    c
}

fn run(runs: &Path, fault_at: Option<usize>) -> Output {
    let mut c = command(runs);
    if let Some(n) = fault_at {
        c.env(store::FAULT_ENV_VAR, n.to_string());
    }
    c.output().unwrap()
}

fn run_dir(runs: &Path) -> PathBuf {
    std::fs::read_dir(runs.join("adhoc"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
}

/// The saved metrics that do not measure time, as `step metric value` lines.
fn metrics(dir: &Path) -> Vec<String> {
    read_metrics(&dir.join(store::METRICS_FILE))
        .unwrap()
        .into_iter()
        .filter(|r| !measures_time(&r.metric))
        .map(|r| format!("{} {} {:?}", r.step, r.metric, r.value))
        .collect()
}

/// `got` equals `want` row for row; else says where they part (the rows can be many).
fn assert_same(got: &[String], want: &[String], what: &str) {
    if let Some(i) = (0..got.len().max(want.len())).find(|&i| got.get(i) != want.get(i)) {
        panic!(
            "{what}: {} rows, the uninterrupted run has {}; first difference at row {i}: {:?} vs {:?}",
            got.len(),
            want.len(),
            got.get(i),
            want.get(i)
        );
    }
}

fn assert_success(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs to the end in a fresh directory and returns the directory and its metrics.
fn reference(tag: &str) -> (Dir, Vec<String>) {
    let runs = Dir::new(tag);
    assert_success(&run(&runs.0, None), "uninterrupted run");
    let rows = metrics(&run_dir(&runs.0));
    assert!(rows.len() > 20, "{rows:?}");
    (runs, rows)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn a_crash_at_any_write_step_loses_nothing() {
    let (_whole, want) = reference("whole");
    let mut truncated_checked = false;
    let mut crashes = 0;
    for n in 1.. {
        let runs = Dir::new(&format!("fault-{n}"));
        let out = run(&runs.0, Some(n));
        if out.status.success() {
            // Past the last write step: the run finished untouched.
            assert_same(
                &metrics(&run_dir(&runs.0)),
                &want,
                "a run past the last step",
            );
            break;
        }
        assert_eq!(out.status.code(), None, "step {n}: not a crash: {out:?}");
        crashes += 1;
        let dir = run_dir(&runs.0);
        // Once, where both checkpoint generations exist and the run has not finished:
        // the newest checkpoint truncated, the resume falls back to the one before it.
        if !truncated_checked
            && dir.join("ckpt.prev/loop.json").exists()
            && dir.join("ckpt/loop.json").exists()
            && !dir.join(store::METRICS_FILE).exists()
        {
            let copy = Dir::new(&format!("truncated-{n}"));
            copy_dir(&runs.0, &copy.0);
            let copied = run_dir(&copy.0);
            let replay = copied.join("ckpt/agent/replay.bin");
            let len = std::fs::metadata(&replay).unwrap().len();
            std::fs::OpenOptions::new()
                .write(true)
                .open(&replay)
                .unwrap()
                .set_len(len / 2)
                .unwrap();
            assert_success(&run(&copy.0, None), "resume past a truncated checkpoint");
            assert_same(
                &metrics(&copied),
                &want,
                "after a truncated newest checkpoint",
            );
            let log = std::fs::read_to_string(copied.join("log.txt")).unwrap();
            assert!(log.contains("ckpt.prev"), "{log}");
            truncated_checked = true;
        }
        assert_success(
            &run(&runs.0, None),
            &format!("resume after a crash at step {n}"),
        );
        assert_same(
            &metrics(&dir),
            &want,
            &format!("after a crash at write step {n}"),
        );
        let status = store::read_status(&dir).unwrap();
        assert_eq!(
            status.state,
            RunState::Done,
            "after a crash at write step {n}"
        );
        assert!(
            !dir.join("metrics").exists(),
            "part files left after step {n}"
        );
        let litter = temporary_files(&dir);
        assert!(litter.is_empty(), "after step {n}: {litter:?} left");
    }
    eprintln!("{crashes} crash points, each resumed to the uninterrupted run's metrics");
    assert!(crashes > 30, "only {crashes} write steps counted");
    assert!(
        truncated_checked,
        "no crash left two checkpoint generations"
    );
}

/// Regression: a done run whose `status.json` was damaged was resumed from its last
/// checkpoint, and its `metrics.parquet` rewritten with only the rows after it.
#[test]
fn a_damaged_status_on_a_finished_run_is_repaired_not_rerun() {
    let (runs, want) = reference("status");
    let dir = run_dir(&runs.0);
    std::fs::write(dir.join("status.json"), "{ not json").unwrap();
    assert_success(&run(&runs.0, None), "rerun");
    assert_same(&metrics(&dir), &want, "after a damaged status.json");
    let status = store::read_status(&dir).unwrap();
    assert_eq!((status.state, status.step), (RunState::Done, 300));
    let log = std::fs::read_to_string(dir.join("log.txt")).unwrap();
    assert!(log.contains("repaired"), "{log}");
    // A status saying "running" (a crash between metrics.parquet and the status) likewise.
    let running = store::Status::new(RunState::Running, 200, 300, None);
    store::write_status(&dir, &running).unwrap();
    assert_success(&run(&runs.0, None), "rerun");
    assert_same(&metrics(&dir), &want, "after a status left running");
    assert_eq!(store::read_status(&dir).unwrap().state, RunState::Done);
}

/// A run whose checkpoints are all unreadable fails with the file and the reason in its
/// status, instead of staying "running" with no word; `--from-scratch` starts it over and it
/// ends as an uninterrupted run does.
#[test]
fn unreadable_checkpoints_fail_the_run_with_a_reason() {
    let (_whole, want) = reference("unreadable-whole");
    let runs = Dir::new("unreadable");
    // Crash late enough for two checkpoint generations, before the finish.
    let mut n = 1;
    let dir = loop {
        let _ = std::fs::remove_dir_all(runs.0.join("adhoc"));
        assert!(!run(&runs.0, Some(n)).status.success(), "no crash at {n}");
        let dir = run_dir(&runs.0);
        if dir.join("ckpt.prev/loop.json").exists() {
            break dir;
        }
        n += 5;
    };
    for generation in ["ckpt", "ckpt.prev"] {
        std::fs::write(dir.join(generation).join("loop.json"), "{ truncated").unwrap();
    }
    let out = run(&runs.0, None);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let status = store::read_status(&dir).unwrap();
    assert_eq!(status.state, RunState::Failed);
    let reason = status.reason.unwrap();
    assert!(reason.contains("loop.json"), "{reason}");
    // Retried as it is, it fails again; started over, it finishes.
    assert_eq!(run(&runs.0, None).status.code(), Some(1));
    let out = command(&runs.0).arg("--from-scratch").output().unwrap();
    assert_success(&out, "--from-scratch");
    assert_same(&metrics(&dir), &want, "after --from-scratch");
    let log = std::fs::read_to_string(dir.join("log.txt")).unwrap();
    assert!(log.contains("starting over from scratch"), "{log}");
}

/// A panic inside a run (a bug, here injected into its second checkpoint) fails the run with
/// the panic's message in its status, instead of leaving it "running" with no word.
#[test]
fn a_panic_fails_the_run_with_its_message() {
    let runs = Dir::new("panic");
    let mut c = command(&runs.0);
    let out = c.env(store::FAULT_ENV_VAR, "panic:20").output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let status = store::read_status(&run_dir(&runs.0)).unwrap();
    assert_eq!(status.state, RunState::Failed);
    let reason = status.reason.unwrap();
    assert!(
        reason.contains("internal error") && reason.contains("write step 20"),
        "{reason}"
    );
}
