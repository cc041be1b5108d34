//! MBPO end to end on InvertedPendulum with tiny networks and budgets: the model trains,
//! rollouts fill the model buffer, diagnostics are logged, and a run stopped by SIGTERM
//! resumes to exactly the metrics of an uninterrupted run (model, both buffers, RNG and
//! counters are in the checkpoint).
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use mpdp::runner::read_metrics;
use mpdp::store::{self, RunState};

fn tmp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mpdp-mbpo-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn command(runs: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mpdp"));
    c.args([
        "run-one",
        "--env",
        "InvertedPendulum",
        "--algo",
        "mbpo",
        "--seed",
        "1",
        "--steps",
        "600",
        "--eval-every",
        "200",
        "--eval-episodes",
        "2",
        "--checkpoint-every",
        "100",
        "--log-every",
        "100",
        "--quiet",
    ]);
    for set in [
        "sac={hidden=[32, 32], batch_size=32, learning_starts=100, updates_per_step=2}",
        "model={members=3, elites=2, hidden=[32, 32], batch_size=64, max_epochs=5}",
        "model_train_freq=100",
        "epoch_length=100",
        "rollout_batch_size=200",
        "rollout_schedule=[1, 3, 1, 3]",
    ] {
        c.args(["--set", set]);
    }
    c.arg("--runs-dir").arg(runs);
    c
}

fn run_dir(runs: &Path) -> PathBuf {
    let exp = runs.join("adhoc");
    std::fs::read_dir(&exp)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
}

#[test]
fn mbpo_trains_its_model_rolls_out_and_resumes_exactly() {
    let (a, b) = (tmp("whole"), tmp("stopped"));
    let out = command(&a).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = read_metrics(&run_dir(&a).join("metrics.parquet")).unwrap();
    let values = |m: &str| -> Vec<f64> {
        rows.iter()
            .filter(|r| r.metric == m)
            .map(|r| r.value)
            .collect()
    };
    for m in [
        "train/model_holdout_mse",
        "train/rollout_mean_length",
        "train/critic_loss",
    ] {
        assert!(!values(m).is_empty(), "{m} not logged");
    }
    // The rollout length grows with the schedule [1, 3, 1, 3] (epochs of 100 steps).
    let k = values("train/rollout_length");
    assert!(k.first() < k.last(), "{k:?}");
    assert!(values("train/model_buffer").iter().all(|n| *n > 0.0));
    // The one-step error of the model on fresh transitions: positive, finite, and below the
    // size of InvertedPendulum's states.
    assert!(
        values("train/model_error")
            .iter()
            .all(|e| *e > 0.0 && *e < 10.0)
    );

    let mut child = command(&b).spawn().unwrap();
    let t = Instant::now();
    let dir = loop {
        let exp = b.join("adhoc");
        if let Some(Ok(e)) = std::fs::read_dir(&exp).ok().and_then(|mut d| d.next())
            && e.path().join("ckpt/loop.json").exists()
        {
            break e.path();
        }
        assert!(t.elapsed() < Duration::from_secs(120), "no checkpoint");
        std::thread::sleep(Duration::from_millis(10));
    };
    // SAFETY: SIGTERM to the child this test spawned.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(75), "the run ended before the signal");
    assert_eq!(store::read_status(&dir).unwrap().state, RunState::Preempted);
    let out = command(&b).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let curve = |d: &Path| -> Vec<(u64, f64)> {
        read_metrics(&d.join("metrics.parquet"))
            .unwrap()
            .into_iter()
            .filter(|r| r.metric == "eval/return_mean" || r.metric == "train/model_holdout_mse")
            .map(|r| (r.step, r.value))
            .collect()
    };
    assert_eq!(curve(&run_dir(&a)), curve(&dir));
    let log = std::fs::read_to_string(dir.join("log.txt")).unwrap();
    assert!(log.contains("resumed from the checkpoint"), "{log}");
    std::fs::remove_dir_all(&a).ok();
    std::fs::remove_dir_all(&b).ok();
}

#[test]
fn m2ac_masks_its_rollouts_and_logs_the_kept_fraction_and_uncertainty() {
    for env in ["InvertedPendulum", "Hopper"] {
        let runs = tmp(&format!("m2ac-{env}"));
        let mut c = Command::new(env!("CARGO_BIN_EXE_mpdp"));
        c.args([
            "run-one",
            "--env",
            env,
            "--algo",
            "m2ac",
            "--steps",
            "400",
            "--eval-every",
            "200",
            "--eval-episodes",
            "2",
            "--log-every",
            "100",
            "--quiet",
        ]);
        for set in [
            "sac={hidden=[32, 32], batch_size=32, learning_starts=100, updates_per_step=2}",
            "model={members=3, elites=3, hidden=[32, 32], batch_size=64, max_epochs=5}",
            "model_train_freq=100",
            "rollout_batch_size=200",
            "rollout_schedule=[0, 0, 4, 4]",
        ] {
            c.args(["--set", set]);
        }
        let out = c.arg("--runs-dir").arg(&runs).output().unwrap();
        assert!(
            out.status.success(),
            "{env}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let rows = read_metrics(&run_dir(&runs).join("metrics.parquet")).unwrap();
        let values = |m: &str| -> Vec<f64> {
            rows.iter()
                .filter(|r| r.metric == m)
                .map(|r| r.value)
                .collect()
        };
        // H = 4: w_h = 4/10, 3/10, 2/10, 1/10 of the start rows; at most 1.0 of what the
        // surviving rows predicted, and well below it when all rows survive.
        let kept = values("train/rollout_kept_fraction");
        assert!(
            !kept.is_empty() && kept.iter().all(|k| *k > 0.0 && *k <= 1.0),
            "{env}: {kept:?}"
        );
        if env == "InvertedPendulum" {
            assert!(kept.iter().all(|k| *k < 0.9), "{env}: {kept:?}");
        }
        let (mean, p50, p90) = (
            values("train/uncertainty_mean"),
            values("train/uncertainty_p50"),
            values("train/uncertainty_p90"),
        );
        assert!(!mean.is_empty() && mean.iter().all(|u| u.is_finite() && *u >= 0.0));
        assert!(p50.iter().zip(&p90).all(|(a, b)| a <= b));
        std::fs::remove_dir_all(&runs).ok();
    }
}
