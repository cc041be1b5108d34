//! Learning checks on real MuJoCo tasks: minutes of CPU each, so opt-in (`just test-learning`,
//! which runs them with `--ignored` on a release build). Each prints its eval curve; a "solves
//! within N steps" check ends its run at the first evaluation that solves the task.
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use mpdp::runner::read_metrics;
use mpdp::sched::local::end_with_parent;

/// The return that counts as solving InvertedPendulum (its maximum is 1000).
const SOLVED: f64 = 950.0;

/// Runs `mpdp run-one` and returns the eval curve (step, mean return) and the wall time.
/// `stop_at`: end the run at the first evaluation that reaches this return.
fn train(
    runs: &Path,
    env: &str,
    algo: &str,
    seed: u64,
    steps: u64,
    eval_every: u64,
    stop_at: Option<f64>,
) -> (Vec<(u64, f64)>, f64) {
    let opts = Opts {
        eval_every,
        stop_at,
        ..Opts::default()
    };
    train_with(runs, env, algo, seed, steps, &opts)
}

/// What a learning check may change of a run.
struct Opts<'a> {
    eval_every: u64,
    eval_episodes: usize,
    stop_at: Option<f64>,
    /// `--set` overrides of the agent's parameters.
    sets: &'a [&'a str],
}

impl Default for Opts<'_> {
    fn default() -> Self {
        Opts {
            eval_every: 1000,
            eval_episodes: 5,
            stop_at: None,
            sets: &[],
        }
    }
}

/// [`train`] with evaluation episodes and agent parameters of its own.
fn train_with(
    runs: &Path,
    env: &str,
    algo: &str,
    seed: u64,
    steps: u64,
    opts: &Opts<'_>,
) -> (Vec<(u64, f64)>, f64) {
    let (eval_every, stop_at) = (opts.eval_every, opts.stop_at);
    let start = Instant::now();
    let stop: Vec<String> = stop_at
        .map(|r| vec!["--stop-at-return".into(), r.to_string()])
        .unwrap_or_default();
    // A test killed mid-run (a timeout, `kill`) takes its training run with it.
    let out = end_with_parent(&mut Command::new(env!("CARGO_BIN_EXE_mpdp")))
        .args([
            "run-one",
            "--env",
            env,
            "--algo",
            algo,
            "--quiet",
            "--experiment",
            "learning",
        ])
        .args(["--seed", &seed.to_string(), "--steps", &steps.to_string()])
        .args([
            "--eval-every",
            &eval_every.to_string(),
            "--eval-episodes",
            &opts.eval_episodes.to_string(),
        ])
        .args(&stop)
        .args(opts.sets.iter().flat_map(|s| ["--set", s]))
        .arg("--runs-dir")
        .arg(runs)
        .output()
        .expect("spawn mpdp");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let dir = stderr.lines().find_map(|l| {
        l.strip_prefix("done (")
            .and_then(|r| r.split_once("): "))
            .map(|(_, d)| d.to_string())
    });
    let dir = PathBuf::from(dir.expect("run dir in output"));
    let curve = read_metrics(&dir.join("metrics.parquet"))
        .unwrap()
        .into_iter()
        .filter(|r| r.metric == "eval/return_mean")
        .map(|r| (r.step, r.value))
        .collect();
    (curve, start.elapsed().as_secs_f64())
}

fn runs_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mpdp-learning-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn show(label: &str, curve: &[(u64, f64)], secs: f64) {
    let points: Vec<String> = curve
        .iter()
        .map(|(s, r)| format!("{}k:{r:.0}", *s as f64 / 1000.0))
        .collect();
    println!("{label} ({secs:.0} s): {}", points.join(" "));
}

/// The guard every check's training child runs under: once the thread that spawned it ends,
/// the child is sent SIGTERM.
#[test]
fn a_child_ends_with_the_thread_that_spawned_it() {
    let mut child = std::thread::spawn(|| {
        end_with_parent(Command::new("sleep").arg("60"))
            .spawn()
            .expect("spawn sleep")
    })
    .join()
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().ok();
            panic!("the child outlived the thread that spawned it by 20 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.signal(), Some(libc::SIGTERM), "{status:?}");
}

#[test]
#[ignore = "minutes of CPU: run with `just test-learning`"]
fn sac_solves_inverted_pendulum_within_20k_steps() {
    let runs = runs_dir("sac-ip");
    for seed in 0..3 {
        let (curve, secs) = train(
            &runs,
            "InvertedPendulum",
            "sac",
            seed,
            20_000,
            1000,
            Some(SOLVED),
        );
        show(&format!("SAC InvertedPendulum seed {seed}"), &curve, secs);
        let best = curve.iter().map(|c| c.1).fold(f64::MIN, f64::max);
        assert!(
            best >= SOLVED,
            "seed {seed}: best eval return {best:.1} < 950 within 20k steps"
        );
    }
}

#[test]
#[ignore = "minutes of CPU: run with `just test-learning`"]
fn ddpg_learns_inverted_pendulum() {
    let runs = runs_dir("ddpg-ip");
    let (curve, secs) = train(
        &runs,
        "InvertedPendulum",
        "ddpg",
        0,
        20_000,
        1000,
        Some(SOLVED),
    );
    show("DDPG InvertedPendulum seed 0", &curve, secs);
    let first = curve.iter().find(|c| c.1 >= SOLVED).map(|c| c.0);
    println!("DDPG first eval >= 950 at step {first:?}");
    assert!(first.is_some(), "DDPG never reached 950 within 20k steps");
}

#[test]
#[ignore = "minutes of CPU: run with `just test-learning`"]
fn sac_on_hopper_improves_over_30k_steps() {
    let runs = runs_dir("sac-hopper");
    let (curve, secs) = train(&runs, "Hopper", "sac", 0, 30_000, 2500, None);
    show("SAC Hopper seed 0", &curve, secs);
    let early = curve
        .iter()
        .filter(|c| c.0 <= 7_500)
        .map(|c| c.1)
        .fold(f64::MIN, f64::max);
    let late: Vec<f64> = curve.iter().rev().take(3).map(|c| c.1).collect();
    let late = late.iter().sum::<f64>() / late.len() as f64;
    assert!(
        late > early,
        "eval return did not rise: first evals best {early:.1}, last three mean {late:.1}"
    );
}

#[test]
#[ignore = "minutes of CPU: run with `just test-learning`"]
fn mbpo_solves_inverted_pendulum_within_5k_steps() {
    let runs = runs_dir("mbpo-ip");
    for seed in 0..3 {
        let (curve, secs) = train(
            &runs,
            "InvertedPendulum",
            "mbpo",
            seed,
            5_000,
            250,
            Some(SOLVED),
        );
        show(&format!("MBPO InvertedPendulum seed {seed}"), &curve, secs);
        let best = curve.iter().map(|c| c.1).fold(f64::MIN, f64::max);
        assert!(
            best >= SOLVED,
            "seed {seed}: best eval return {best:.1} < 950 within 5k steps"
        );
    }
}

#[test]
#[ignore = "minutes of CPU: run with `just test-learning`"]
fn mpdp_solves_inverted_pendulum_within_5k_steps() {
    let runs = runs_dir("mpdp-ip");
    for seed in 0..3 {
        let (curve, secs) = train(
            &runs,
            "InvertedPendulum",
            "mpdp",
            seed,
            5_000,
            250,
            Some(SOLVED),
        );
        show(&format!("MPDP InvertedPendulum seed {seed}"), &curve, secs);
        let best = curve.iter().map(|c| c.1).fold(f64::MIN, f64::max);
        assert!(
            best >= SOLVED,
            "seed {seed}: best eval return {best:.1} < 950 within 5k steps"
        );
    }
}

/// PETS with a planner reduced for the CPU: horizon 30, CEM 200/20/5, 5 particles (one per
/// elite), a 3 × 200 model fit by the hold-out rule (up to 100 epochs).
const PETS_REDUCED: &[&str] = &[
    "model={hidden=[200, 200, 200], max_epochs=100}",
    "horizon=30",
    "particles=5",
    "cem={population=200, elites=20, iterations=5}",
];

/// A planner solves InvertedPendulum (≥ 950) within 3,000 steps on three seeds; evaluating
/// every 500 steps, 3 episodes (each evaluation step plans).
fn planner_solves_inverted_pendulum(algo: &str, sets: &[&str]) {
    let runs = runs_dir(&format!("{algo}-ip"));
    for seed in 0..3 {
        let opts = Opts {
            eval_every: 500,
            eval_episodes: 3,
            stop_at: Some(SOLVED),
            sets,
        };
        let (curve, secs) = train_with(&runs, "InvertedPendulum", algo, seed, 3_000, &opts);
        let steps = curve.last().map_or(1, |c| c.0);
        show(
            &format!("{algo} InvertedPendulum seed {seed}"),
            &curve,
            secs,
        );
        println!(
            "{algo}: {:.3} s per env step, evaluations included",
            secs / steps as f64
        );
        let best = curve.iter().map(|c| c.1).fold(f64::MIN, f64::max);
        assert!(
            best >= SOLVED,
            "{algo} seed {seed}: best eval return {best:.1} < 950 within 3k steps"
        );
    }
}

#[test]
#[ignore = "an hour of CPU: run with `just test-learning`"]
fn pets_solves_inverted_pendulum_within_3k_steps() {
    planner_solves_inverted_pendulum("pets", PETS_REDUCED);
}

#[test]
#[ignore = "an hour of CPU: run with `just test-learning`"]
fn poplin_p_solves_inverted_pendulum_within_3k_steps() {
    let planner = format!("planner={{{}}}", PETS_REDUCED.join(", "));
    planner_solves_inverted_pendulum("poplin_p", &[&planner]);
}

/// On HalfCheetah at 10k steps PETS's eval return is above SAC's, seed by seed (a planner
/// needs no value function to learn, which pays early).
#[test]
#[ignore = "hours of CPU: run with `just test-learning`"]
fn pets_beats_sac_on_half_cheetah_at_10k_steps() {
    let runs = runs_dir("pets-cheetah");
    let pets = [
        "horizon=30",
        "particles=5",
        "cem={population=200, elites=20, iterations=5}",
    ];
    for seed in 0..3 {
        let opts = Opts {
            eval_every: 10_000,
            eval_episodes: 2,
            ..Opts::default()
        };
        let (sac, sac_s) = train_with(&runs, "HalfCheetah", "sac", seed, 10_000, &opts);
        show(&format!("SAC HalfCheetah seed {seed}"), &sac, sac_s);
        let opts = Opts {
            sets: &pets,
            ..opts
        };
        let (planned, pets_s) = train_with(&runs, "HalfCheetah", "pets", seed, 10_000, &opts);
        show(&format!("PETS HalfCheetah seed {seed}"), &planned, pets_s);
        let last = |c: &[(u64, f64)]| c.last().map_or(f64::MIN, |c| c.1);
        assert!(
            last(&planned) > last(&sac),
            "seed {seed}: PETS {:.1} is not above SAC {:.1} at 10k steps",
            last(&planned),
            last(&sac)
        );
    }
}
