//! The model-based agents end to end on real tasks with tiny networks and budgets: MBPO's
//! model trains and its rollouts fill the model buffer, M2AC masks them, MPDP plans through
//! the model; diagnostics are logged; and a run stopped by SIGTERM resumes to exactly the
//! metrics of an uninterrupted run (model, buffers, RNG and counters are in the checkpoint).
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use mpdp::runner::{MetricRow, measures_time, read_metrics};
use mpdp::store::{self, RunState};

mod common;

fn tmp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mpdp-model-based-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `mpdp run-one` of `algo` on InvertedPendulum, 600 steps, with the tiny settings `sets`.
fn command(runs: &Path, algo: &str, sets: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mpdp"));
    c.args([
        "run-one",
        "--env",
        "InvertedPendulum",
        "--algo",
        algo,
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
    for set in sets {
        c.args(["--set", set]);
    }
    c.arg("--runs-dir").arg(runs);
    c
}

/// Runs `algo` in `runs` to the end (or on from its checkpoint) and returns its metrics.
fn run_to_end(runs: &Path, algo: &str, sets: &[&str]) -> Vec<MetricRow> {
    let out = command(runs, algo, sets).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    read_metrics(&common::only_run(runs).join("metrics.parquet")).unwrap()
}

/// MPDP with tiny networks, a model fit every 100 steps and H_max = 4.
const MPDP_TINY: [&str; 4] = [
    "sac={hidden=[32, 32], batch_size=32, learning_starts=100, updates_per_step=2}",
    "model={members=3, elites=2, hidden=[32, 32], batch_size=64, max_epochs=5}",
    "model_train_freq=100",
    "horizon=4",
];

/// Runs `algo` whole, then again stopped by SIGTERM after its first checkpoint and resumed;
/// asserts both give the same `compare` metrics. Returns the whole run's metrics.
fn resumes_exactly(algo: &str, sets: &[&str], compare: &str) -> Vec<MetricRow> {
    let (a, b) = (
        tmp(&format!("{algo}-whole")),
        tmp(&format!("{algo}-stopped")),
    );
    let whole = run_to_end(&a, algo, sets);

    let mut child = command(&b, algo, sets).spawn().unwrap();
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
    let resumed = run_to_end(&b, algo, sets);
    let curve = |rows: Vec<MetricRow>| -> Vec<(u64, f64)> {
        rows.into_iter()
            .filter(|r| r.metric == "eval/return_mean" || r.metric == compare)
            .map(|r| (r.step, r.value))
            .collect()
    };
    assert!(
        resumed.iter().any(|r| r.metric == compare),
        "{compare} not logged"
    );
    assert_eq!(curve(whole.clone()), curve(resumed));
    let log = std::fs::read_to_string(dir.join("log.txt")).unwrap();
    assert!(log.contains("resumed from the checkpoint"), "{log}");
    std::fs::remove_dir_all(&a).ok();
    std::fs::remove_dir_all(&b).ok();
    whole
}

fn values(rows: &[MetricRow], m: &str) -> Vec<f64> {
    rows.iter()
        .filter(|r| r.metric == m)
        .map(|r| r.value)
        .collect()
}

#[test]
fn mbpo_trains_its_model_rolls_out_and_resumes_exactly() {
    let rows = resumes_exactly(
        "mbpo",
        &[
            "sac={hidden=[32, 32], batch_size=32, learning_starts=100, updates_per_step=2}",
            "model={members=3, elites=2, hidden=[32, 32], batch_size=64, max_epochs=5}",
            "model_train_freq=100",
            "epoch_length=100",
            "rollout_batch_size=200",
            "rollout_schedule=[1, 3, 1, 3]",
        ],
        "train/model_holdout_mse",
    );
    let values = |m: &str| values(&rows, m);
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
    // The 5-step open-loop error along real episodes compounds the one-step error.
    let (one, five) = (
        values("train/model_error"),
        values("train/model_error_5step"),
    );
    assert!(!five.is_empty(), "train/model_error_5step not logged");
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    assert!(mean(&five) > mean(&one), "{one:?} vs {five:?}");
}

/// With three training envs a step brings three transitions, and the first model fit (due
/// at 100 transitions, in the call that ends at 102) has no model before it to measure: the
/// model error is logged from the second fit on, as with one env.
#[test]
fn the_first_fit_measures_no_model_error_with_several_envs() {
    let runs = tmp("envs");
    let mut c = command(
        &runs,
        "mbpo",
        &[
            "sac={hidden=[32, 32], batch_size=32, learning_starts=100, updates_per_step=1}",
            "model={members=3, elites=2, hidden=[32, 32], batch_size=64, max_epochs=3}",
            "model_train_freq=100",
            "rollout_batch_size=100",
        ],
    );
    let out = c.args(["--num-envs", "3"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = read_metrics(&common::only_run(&runs).join("metrics.parquet")).unwrap();
    let steps = |m: &str| -> Vec<u64> {
        rows.iter()
            .filter(|r| r.metric == m)
            .map(|r| r.step)
            .collect()
    };
    let (fits, errors) = (steps("train/model_holdout_mse"), steps("train/model_error"));
    assert!(fits.len() >= 3, "{fits:?}");
    assert_eq!(errors, fits[1..], "fits logged at {fits:?}");
    std::fs::remove_dir_all(&runs).ok();
}

#[test]
fn mpdp_plans_through_its_model_logs_its_horizon_and_resumes_exactly() {
    for update in ["consistent", "literal"] {
        let update = format!("update=\"{update}\"");
        let rows = resumes_exactly(
            "mpdp",
            &[&MPDP_TINY[..], &[update.as_str()]].concat(),
            "train/horizon_mean",
        );
        let values = |m: &str| values(&rows, m);
        let h = values("train/horizon_mean");
        assert!(h.iter().all(|h| (1.0..=4.0).contains(h)), "{update}: {h:?}");
        // u_T is the 90% quantile of u on real pairs: some rows are cut, not all.
        let cut = values("train/cut_uncertain_fraction");
        assert!(
            cut.iter().all(|c| (0.0..1.0).contains(c)),
            "{update}: {cut:?}"
        );
        assert!(cut.iter().any(|c| *c > 0.0), "{update}: {cut:?}");
        for m in [
            "train/model_error",
            "train/model_error_5step",
            "train/u_threshold",
            "train/uncertainty_p90",
            "train/grad_norm",
            "train/alpha",
            "train/q_mean",
            "train/cut_terminal_fraction",
            "train/model_fit_s",
            "time/learn_s",
        ] {
            let v = values(m);
            assert!(
                !v.is_empty() && v.iter().all(|x| x.is_finite()),
                "{update}: {m}: {v:?}"
            );
        }
        let v_logged = !values("train/v_mean").is_empty();
        assert_eq!(v_logged, update.contains("literal"), "{update}");
    }
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
        let rows = read_metrics(&common::only_run(&runs).join("metrics.parquet")).unwrap();
        let values = |m: &str| values(&rows, m);
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

/// A stop signal during a long model fit ends the run at once: the fit gives up at its next
/// epoch, the checkpoint holds the agent as it was before the step's learning, and the
/// resumed run redoes that learning first, so its metrics equal an uninterrupted run's.
#[test]
fn a_stop_during_a_model_fit_is_prompt_and_the_fit_is_redone_on_resume() {
    // One fit, at step 100, that runs all of its epochs (patience never ends it early).
    let sets = [
        "sac={hidden=[32, 32], batch_size=32, learning_starts=100, updates_per_step=2}",
        "model={members=3, elites=2, hidden=[32, 32], batch_size=64, max_epochs=3000, patience=1000000}",
        "model_train_freq=1000",
        "horizon=4",
    ];
    let (a, b) = (tmp("fit-stop-whole"), tmp("fit-stop-stopped"));
    let t = Instant::now();
    let whole = run_to_end(&a, "mpdp", &sets);
    let whole_s = t.elapsed().as_secs_f64();
    assert_eq!(values(&whole, "train/model_epochs"), vec![3000.0]);

    let mut child = command(&b, "mpdp", &sets)
        .env("MPDP_HEARTBEAT_S", "0.05")
        .spawn()
        .unwrap();
    let t = Instant::now();
    // The lock shows step 99 from the end of step 99's learning until step 100's (the fit).
    let dir = loop {
        if let Some(Ok(e)) = std::fs::read_dir(b.join("adhoc"))
            .ok()
            .and_then(|mut d| d.next())
            && store::lock::read_lock(&e.path()).is_some_and(|l| l.step >= 99)
        {
            break e.path();
        }
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "the run never reached step 99"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    std::thread::sleep(Duration::from_millis(100));
    let t = Instant::now();
    // SAFETY: SIGTERM to the child this test spawned.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    let stop_s = t.elapsed().as_secs_f64();
    assert_eq!(status.code(), Some(75), "the run ended before the signal");
    let s = store::read_status(&dir).unwrap();
    assert_eq!((s.state, s.step), (RunState::Preempted, 100));
    let log = std::fs::read_to_string(dir.join("log.txt")).unwrap();
    assert!(
        log.contains("stop requested while learning at step 100"),
        "{log}"
    );
    assert!(
        stop_s < whole_s / 4.0,
        "the stop took {stop_s:.2} s; the whole run {whole_s:.2} s"
    );

    let resumed = run_to_end(&b, "mpdp", &sets);
    let curve = |rows: &[MetricRow]| -> Vec<(u64, String, f64)> {
        rows.iter()
            .filter(|r| r.metric.starts_with("eval/") || r.metric.starts_with("train/model"))
            .filter(|r| !measures_time(&r.metric))
            .map(|r| (r.step, r.metric.clone(), r.value))
            .collect()
    };
    assert_eq!(curve(&whole), curve(&resumed));
    std::fs::remove_dir_all(&a).ok();
    std::fs::remove_dir_all(&b).ok();
}

/// `u_members = "all"`: u compares every member, so a single elite (which alone predicts)
/// is enough; the run plans, logs u and records the choice in its resolved config. The
/// dotted `model.elites` merges into the tiny `model` table set before it.
#[test]
fn mpdp_measures_u_over_all_members_when_asked() {
    let runs = tmp("u-members");
    let sets = [&MPDP_TINY[..], &["u_members=\"all\"", "model.elites=1"]].concat();
    let rows = run_to_end(&runs, "mpdp", &sets);
    let u = values(&rows, "train/uncertainty_mean");
    assert!(!u.is_empty() && u.iter().all(|u| *u > 0.0), "{u:?}");
    assert!(!values(&rows, "train/horizon_mean").is_empty());
    let resolved = std::fs::read_to_string(common::only_run(&runs).join("resolved.toml")).unwrap();
    let resolved: toml::Table = resolved.parse().unwrap();
    let agent = &resolved["agent"];
    assert_eq!(agent["u_members"].as_str(), Some("all"));
    let model = &agent["model"];
    assert_eq!(
        (model["members"].as_integer(), model["elites"].as_integer()),
        (Some(3), Some(1))
    );
    std::fs::remove_dir_all(&runs).ok();
}

/// `u_min` / `u_max` clamp the "auto" u_T: a cap of ~0 cuts every planned row at its first
/// step, a floor above any u cuts none; bad bounds (and a single elite, which leaves u no
/// rest to compare with) are refused before anything runs.
#[test]
fn mpdp_auto_threshold_is_clamped_to_u_min_and_u_max() {
    let with = |extra: &[&'static str]| [&MPDP_TINY[..], extra].concat();
    let run = |bound: &'static str| -> Vec<MetricRow> {
        let runs = tmp(&format!("clamp-{}", bound.replace(['=', '.'], "-")));
        let rows = run_to_end(&runs, "mpdp", &with(&[bound]));
        std::fs::remove_dir_all(&runs).ok();
        rows
    };
    let capped = run("u_max=1e-12");
    assert!(
        values(&capped, "train/u_threshold")
            .iter()
            .all(|u| *u == 1e-12)
    );
    let h = values(&capped, "train/horizon_mean");
    assert!(!h.is_empty() && h.iter().all(|h| *h == 1.0), "{h:?}");
    let cut = values(&capped, "train/cut_uncertain_fraction");
    assert!(cut.iter().all(|c| *c == 1.0), "{cut:?}");

    let floored = run("u_min=1e12");
    assert!(
        values(&floored, "train/u_threshold")
            .iter()
            .all(|u| *u == 1e12)
    );
    let cut = values(&floored, "train/cut_uncertain_fraction");
    assert!(!cut.is_empty() && cut.iter().all(|c| *c == 0.0), "{cut:?}");

    let bad: [(&[&'static str], &[&str]); 5] = [
        (&["model.elites=1"], &["model.elites", "at least 2"]),
        (&["u_max=-1"], &["u_max"]),
        (&["u_min=nan"], &["u_min"]),
        (&["u_threshold=2.0", "u_max=3.0"], &["u_max"]),
        (&["u_min=2.0", "u_max=1.0"], &["u_min", "u_max (1)"]),
    ];
    for (sets, wanted) in bad {
        let runs = tmp("clamp-bad");
        let out = command(&runs, "mpdp", &with(sets)).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{sets:?}: {err}");
        for key in wanted {
            assert!(err.contains(key), "{sets:?}: {err}");
        }
        std::fs::remove_dir_all(&runs).ok();
    }
}

/// The planner settings every sampling-planner test shares: a tiny ensemble, H = 3, two
/// particles over the two elites, CEM 16/4/2.
const PLANNER_TINY: [&str; 6] = [
    "model={members=3, elites=2, hidden=[32, 32], batch_size=64, max_epochs=5}",
    "learning_starts=100",
    "model_train_freq=100",
    "horizon=3",
    "particles=2",
    "cem={population=16, elites=4, iterations=2}",
];

/// PETS and both POPLINs plan every step once their start phase ends, log what their planner
/// did, and resume bit for bit (the warm starts, POPLIN's policy and the planned-step
/// counters are in the checkpoint).
#[test]
fn the_sampling_planners_plan_log_and_resume_exactly() {
    let pets: Vec<String> = PLANNER_TINY.iter().map(|s| s.to_string()).collect();
    let poplin = format!("planner={{{}}}", PLANNER_TINY.join(", "));
    let cases: [(&str, Vec<String>); 3] = [
        ("pets", pets),
        (
            "poplin_a",
            vec![poplin.clone(), "policy={hidden=[16], epochs=3}".into()],
        ),
        (
            "poplin_p",
            vec![poplin, "policy={hidden=[16], epochs=3}".into()],
        ),
    ];
    for (algo, sets) in cases {
        let sets: Vec<&str> = sets.iter().map(String::as_str).collect();
        let rows = resumes_exactly(algo, &sets, "train/plan_return");
        let values = |m: &str| values(&rows, m);
        let iters = values("train/cem_iterations");
        assert!(
            iters.iter().all(|i| (1.0..=2.0).contains(i)),
            "{algo}: {iters:?}"
        );
        let std = values("train/cem_std");
        assert!(std.iter().all(|s| *s > 0.0 && *s < 0.5), "{algo}: {std:?}");
        for m in [
            "train/plan_return",
            "train/plan_s",
            "train/model_error",
            "train/model_holdout_mse",
        ] {
            let v = values(m);
            assert!(
                !v.is_empty() && v.iter().all(|x| x.is_finite()),
                "{algo}: {m}: {v:?}"
            );
        }
        let distilled = match algo {
            "poplin_a" => values("train/distill_loss"),
            "poplin_p" => values("train/distill_step"),
            _ => vec![0.0],
        };
        assert!(!distilled.is_empty(), "{algo}: nothing distilled");
    }
}
