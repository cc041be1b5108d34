//! `mpdp eval RUN_DIR`: a finished run's saved policy, evaluated again, gives the returns of
//! the run's own final evaluation on the same seeds, for every algorithm; other seeds give
//! other episodes; a directory that is not a run, a missing checkpoint and an unreadable one
//! are the user's errors (exit 2) that say what is wrong.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use mpdp::runner::read_metrics;

mod common;
use common::Dir;

/// Tiny settings per algorithm: small networks, a few updates, model fits on the way.
fn tiny(algo: &str) -> Vec<&'static str> {
    let sac = "hidden=[16, 16]";
    match algo {
        "sac" | "ddpg" => vec![sac, "batch_size=16", "learning_starts=100"],
        "mbpo" | "m2ac" => vec![
            "sac={hidden=[16, 16], batch_size=16, learning_starts=100, updates_per_step=1}",
            "model={members=3, elites=2, hidden=[16], batch_size=32, max_epochs=2}",
            "model_train_freq=100",
            "rollout_batch_size=20",
            "epoch_length=100",
        ],
        "mpdp" => vec![
            "sac={hidden=[16, 16], batch_size=16, learning_starts=100, updates_per_step=1}",
            "model={members=3, elites=2, hidden=[16], batch_size=32, max_epochs=2}",
            "model_train_freq=100",
            "horizon=3",
        ],
        "pets" => vec![
            "model={members=3, elites=2, hidden=[16], batch_size=32, max_epochs=2}",
            "learning_starts=100",
            "model_train_freq=100",
            "horizon=3",
            "particles=2",
            "cem={population=16, elites=4, iterations=2}",
        ],
        "poplin_p" => vec![
            "planner={model={members=3, elites=2, hidden=[16], batch_size=32, max_epochs=2}, \
             learning_starts=100, model_train_freq=100, horizon=3, particles=2, \
             cem={population=16, elites=4, iterations=2}}",
            "policy={hidden=[8]}",
        ],
        other => panic!("no tiny settings for {other}"),
    }
}

/// Trains `algo` on Hopper for 300 steps (checkpoints every 200, so the last one is the
/// final step's) and returns its run directory.
fn train(runs: &Path, algo: &str) -> PathBuf {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mpdp"));
    c.args([
        "run-one",
        "--env",
        "Hopper",
        "--algo",
        algo,
        "--seed",
        "3",
        "--steps",
        "300",
        "--eval-every",
        "150",
        "--eval-episodes",
        "3",
        "--checkpoint-every",
        "200",
        "--log-every",
        "100",
        "--quiet",
    ]);
    for set in tiny(algo) {
        c.args(["--set", set]);
    }
    let out = c.arg("--runs-dir").arg(runs).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    common::only_run(runs)
}

fn eval(run: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mpdp"))
        .arg("eval")
        .arg(run)
        .args(extra)
        .output()
        .unwrap()
}

fn json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The run's last `eval/return_mean` and its step.
fn final_eval(run: &Path) -> (u64, f64) {
    let rows = read_metrics(&run.join("metrics.parquet")).unwrap();
    rows.iter()
        .filter(|r| r.metric == "eval/return_mean")
        .map(|r| (r.step, r.value))
        .max_by_key(|r| r.0)
        .unwrap()
}

#[test]
fn a_finished_run_evaluates_to_its_own_final_returns() {
    // PETS and POPLIN plan their evaluation actions: warm starts and an RNG of their own.
    for algo in ["sac", "ddpg", "mbpo", "mpdp", "pets", "poplin_p"] {
        let dir = Dir::new(algo);
        let run = train(&dir.0, algo);
        let (step, want) = final_eval(&run);
        assert_eq!(step, 300);
        let got = json(&eval(&run, &["--json"]));
        assert_eq!(got["step"].as_u64(), Some(300), "{algo}: the final policy");
        assert_eq!(got["returns"].as_array().unwrap().len(), 3);
        let mean = got["return_mean"].as_f64().unwrap();
        assert_eq!(mean, want, "{algo}: eval {mean} vs the run's final {want}");

        // Other seeds: other start states, other returns; the table names them.
        let other = json(&eval(&run, &["--json", "--seed", "11", "--episodes", "2"]));
        assert_eq!(other["returns"].as_array().unwrap().len(), 2);
        assert_ne!(other["seeds"], got["seeds"]);
        let text = eval(&run, &[]);
        let text = String::from_utf8(text.stdout).unwrap();
        assert!(text.contains("over 3 episodes"), "{text}");
    }
}

#[test]
fn a_trace_holds_the_recorded_episode_state_by_state() {
    let dir = Dir::new("trace");
    let run = train(&dir.0, "sac");
    let got = json(&eval(&run, &["--json"]));
    let csv = dir.0.join("ep1.csv");
    let out = eval(&run, &["--trace", csv.to_str().unwrap(), "--episode", "1"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("episode 1"), "{text}");
    let csv = std::fs::read_to_string(&csv).unwrap();
    let mut lines = csv.lines();
    // Hopper: 6 joint positions, 11 observations (the x position left out).
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(header.len(), 2 + 6 + 11, "{header:?}");
    assert_eq!(header[..3], ["step", "return", "qpos_0"]);
    assert_eq!(header[18], "obs_10");
    let rows: Vec<Vec<f64>> = lines
        .map(|l| l.split(',').map(|x| x.parse().unwrap()).collect())
        .collect();
    // The reset state, then one row per step: the episode's length and return.
    let length = got["lengths"][1].as_f64().unwrap();
    assert_eq!(rows.len() as f64, length + 1.0);
    assert_eq!(rows[0][1], 0.0);
    let ret = got["returns"][1].as_f64().unwrap();
    assert!((rows.last().unwrap()[1] - ret).abs() < 1e-9, "{ret}");
    // Hopper's observation starts with qpos[1..]: the trace's columns line up.
    for r in &rows {
        assert_eq!(r[2 + 1], r[2 + 6], "qpos_1 is obs_0");
    }
    refused(
        &eval(&run, &["--trace", csv_dir(&dir.0).to_str().unwrap()]),
        "writing the trace",
    );
}

/// A path whose parent is a file, so nothing can be written there.
fn csv_dir(root: &Path) -> PathBuf {
    let file = root.join("plain-file");
    std::fs::write(&file, "x").unwrap();
    file.join("t.csv")
}

fn refused(out: &Output, says: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(says), "expected {says:?} in: {stderr}");
}

#[test]
fn missing_and_unreadable_checkpoints_are_clear_errors() {
    let dir = Dir::new("errors");
    refused(&eval(&dir.0, &[]), "not a run directory");
    let run = train(&dir.0, "sac");
    refused(
        &eval(&run, &["--checkpoint", "nowhere"]),
        "nowhere: no checkpoint to evaluate",
    );
    refused(
        &eval(&run, &["--episodes", "0"]),
        "--episodes must be in 1..=",
    );
    refused(
        &eval(&run, &["--video", "clip.avi"]),
        "rendering clip.avi: expected a .mp4, .webm or .gif file",
    );
    refused(
        &eval(&run, &["--video", "clip.mp4", "--video-size", "7"]),
        "the frame size must be an even number of pixels in 16..=4096, found 7",
    );
    // A damaged policy file: cut to a few bytes.
    let agent = run.join("ckpt/agent");
    let policy = std::fs::read_dir(&agent)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("actor")
        })
        .expect("a policy file");
    std::fs::write(&policy, b"oops").unwrap();
    refused(&eval(&run, &[]), "the checkpoint cannot be read");
    // The generation before is still there to evaluate.
    let prev = run.join("ckpt.prev");
    let out = eval(&run, &["--json", "--checkpoint", prev.to_str().unwrap()]);
    assert_eq!(json(&out)["step"].as_u64(), Some(200));

    // Regression: a hand-edited resolved.toml was used unchecked (a discount of 5 trained on,
    // layers of 16384 units aborted in an allocation, an unknown env exited 1), and one that
    // is not UTF-8 was "not a run directory".
    let resolved = run.join("resolved.toml");
    let good = std::fs::read_to_string(&resolved).unwrap();
    for (from, to, says) in [
        ("gamma = 0.99", "gamma = 5.0", "resolved.toml: agent:"),
        (
            "hidden = [16, 16]",
            "hidden = [16384, 16384, 16384, 16384, 16384, 16384]",
            "hidden",
        ),
        ("env = \"Hopper\"", "env = \"Foo\"", "resolved.toml: env:"),
        (
            "experiment = \"adhoc\"",
            "experiment = \"../x\"",
            "resolved.toml: experiment:",
        ),
    ] {
        assert!(good.contains(from), "{from} not in:\n{good}");
        std::fs::write(&resolved, good.replace(from, to)).unwrap();
        refused(&eval(&run, &[]), says);
    }
    // Regression: a malformed one said what was wrong but not where.
    std::fs::write(&resolved, good.replace("gamma = 0.99", "gamma = [")).unwrap();
    refused(&eval(&run, &[]), "line ");
    std::fs::write(&resolved, b"\xff\xfe not text").unwrap();
    let out = eval(&run, &[]);
    assert_ne!(out.status.code(), Some(0));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("not a run directory"));
}
