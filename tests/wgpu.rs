//! The GPU path (`--features wgpu`, `MPDP_DEVICE=wgpu`) against the CPU. Every algorithm runs a
//! tiny run on both devices and their first evaluations and training statistics agree; the
//! fused swish's fallback (burn's `silu` off the CPU) agrees with the fused kernel, values and
//! gradients; a checkpoint written on one device resumes on the other and back; the
//! benchmarks run on the GPU.
//!
//! `just test-wgpu` runs these (they are ignored otherwise: they need a device). Any Vulkan,
//! Metal or DX12 device serves; without a GPU, Mesa's lavapipe (Debian's `mesa-vulkan-drivers`,
//! `just setup-wgpu`) runs every kernel on the CPU, slowly but correctly, which is what CI does.
//!
//! Why the agreement is within a tolerance and not exact: the two backends sum in different
//! orders (tiled GPU matmuls and tree reductions against the CPU's GEMM), so the same f32
//! operation differs in its last bits, and training compounds that. Everything drawn at random
//! (initial weights, noise, env resets) comes from the run's seeded RNG on the host, so until the
//! first gradient step both runs hold the same weights and act alike. See [`TOLERANCE`].
#![cfg(feature = "wgpu")]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use mpdp::runner::{MetricRow, measures_time, read_metrics};

mod common;
use common::succeed;

/// The device values `MPDP_DEVICE` takes here.
const CPU: &str = "cpu";
const GPU: &str = "wgpu";

/// Relative tolerance of the CPU-vs-wgpu agreement, on |a − b| / max(|a|, |b|, 1):
/// - evaluations before the first gradient step (same weights, deterministic actions): a
///   forward pass's last-bit differences can move a termination by a step at most;
/// - the first logged training statistics: means over the first updates (and the first model
///   fit), where the last-bit differences of each step have compounded over a few dozen
///   optimizer steps but not yet changed which data the agents see.
///
/// A GPU-only mistake (a wrong normalisation, a wrong activation, a wrong reduction) moves these
/// values by tens of percent or more.
const TOLERANCE: f64 = 1e-2;

/// The first evaluation at step 100 comes before any update (`learning_starts` 100).
const FIRST_EVAL: u64 = 100;
/// Compared: the first 100 steps of learning, their logged statistics (every 50 steps) and the
/// evaluation at their end.
const COMPARED_UNTIL: u64 = 200;

/// `mpdp run-one` of `algo` on InvertedPendulum for 300 steps with tiny sizes on `device`.
fn run_one(runs: &Path, algo: &str, sets: &[&str], device: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mpdp"));
    c.env("MPDP_DEVICE", device).args([
        "run-one",
        "--env",
        "InvertedPendulum",
        "--algo",
        algo,
        "--seed",
        "3",
        "--steps",
        "300",
        "--eval-every",
        "100",
        "--eval-episodes",
        "2",
        "--checkpoint-every",
        "100",
        "--log-every",
        "50",
        "--quiet",
    ]);
    for set in sets {
        c.args(["--set", set]);
    }
    c.arg("--runs-dir").arg(runs);
    c
}

/// Runs `algo` to the end on `device` and returns its metrics.
fn metrics(dir: &common::Dir, algo: &str, sets: &[&str], device: &str) -> Vec<MetricRow> {
    let runs = dir.0.join(device);
    succeed(&mut run_one(&runs, algo, sets, device));
    read_metrics(&common::only_run(&runs).join("metrics.parquet")).unwrap()
}

/// |a − b| relative to the larger magnitude (and to 1, for values near zero).
fn relative(a: f64, b: f64) -> f64 {
    (a - b).abs() / a.abs().max(b.abs()).max(1.0)
}

/// The values compared, by metric and step: the evaluations and the training statistics up to
/// step [`COMPARED_UNTIL`], without timings (which differ by design) and the training
/// episodes' returns and lengths (whose steps move with the episodes' ends).
fn compared(rows: &[MetricRow]) -> BTreeMap<(String, u64), f64> {
    rows.iter()
        .filter(|r| {
            r.step <= COMPARED_UNTIL
                && (r.metric.starts_with("eval/return") || r.metric.starts_with("train/"))
                && !r.metric.starts_with("train/episode_")
                && !measures_time(&r.metric)
        })
        .map(|r| ((r.metric.clone(), r.step), r.value))
        .collect()
}

/// The largest relative CPU-vs-wgpu difference of `algo`'s first values, after checking that
/// both devices logged the same metrics at the same steps, the first evaluation came before any
/// update, and every difference is within [`TOLERANCE`].
fn agrees(algo: &str, sets: &[&str]) -> f64 {
    let dir = common::Dir::new(&format!("{algo}-{}", sets.len()));
    let cpu = compared(&metrics(&dir, algo, sets, CPU));
    let gpu = compared(&metrics(&dir, algo, sets, GPU));
    assert_eq!(
        cpu.keys().collect::<Vec<_>>(),
        gpu.keys().collect::<Vec<_>>(),
        "{algo}: the devices logged different metrics or at different steps"
    );
    let evals: Vec<u64> = cpu
        .keys()
        .filter(|(m, _)| m == "eval/return_mean")
        .map(|k| k.1)
        .collect();
    assert_eq!(evals, [FIRST_EVAL, COMPARED_UNTIL], "{algo}");
    assert!(
        cpu.keys()
            .any(|(m, s)| m.starts_with("train/") && *s > FIRST_EVAL),
        "{algo}: no training statistics"
    );
    let mut worst = (0.0, String::new());
    let mut report = Vec::new();
    for (key, a) in &cpu {
        let b = gpu[key];
        let (m, step) = key;
        assert!(
            a.is_finite() && b.is_finite(),
            "{algo}: {m}@{step}: cpu {a}, wgpu {b}"
        );
        let d = relative(*a, b);
        report.push(format!("{m}@{step}: cpu {a:.6} wgpu {b:.6} rel {d:.1e}"));
        if d > worst.0 {
            worst = (d, format!("{m}@{step}"));
        }
    }
    let report = report.join("\n  ");
    eprintln!(
        "{algo} {sets:?}: worst {:.1e} ({})\n  {report}",
        worst.0, worst.1
    );
    assert!(
        worst.0 <= TOLERANCE,
        "{algo}: {} differs by {:.1e} between the CPU and wgpu (tolerance {TOLERANCE}):\n  {report}",
        worst.1,
        worst.0
    );
    worst.0
}

const SAC_TINY: &str =
    "sac={hidden=[32, 32], batch_size=32, learning_starts=100, updates_per_step=1}";
const MODEL_TINY: &str =
    "model={members=3, elites=2, hidden=[32, 32], batch_size=64, max_epochs=5}";
const PLANNER_TINY: [&str; 6] = [
    MODEL_TINY,
    "learning_starts=100",
    "model_train_freq=100",
    "horizon=3",
    "particles=2",
    "cem={population=16, elites=4, iterations=2}",
];

#[test]
#[ignore = "needs a Vulkan device (lavapipe where there is no GPU): just test-wgpu"]
fn sac_and_ddpg_agree_with_the_cpu() {
    agrees(
        "sac",
        &["hidden=[32, 32]", "batch_size=32", "learning_starts=100"],
    );
    agrees(
        "ddpg",
        &["hidden=[32, 32]", "batch_size=32", "learning_starts=100"],
    );
}

#[test]
#[ignore = "needs a Vulkan device (lavapipe where there is no GPU): just test-wgpu"]
fn mbpo_and_m2ac_agree_with_the_cpu() {
    for algo in ["mbpo", "m2ac"] {
        agrees(
            algo,
            &[
                SAC_TINY,
                MODEL_TINY,
                "model_train_freq=100",
                "epoch_length=100",
                "rollout_batch_size=100",
            ],
        );
    }
}

#[test]
#[ignore = "needs a Vulkan device (lavapipe where there is no GPU): just test-wgpu"]
fn mpdp_agrees_with_the_cpu_with_both_updates() {
    for update in ["update=\"consistent\"", "update=\"literal\""] {
        agrees(
            "mpdp",
            &[
                SAC_TINY,
                MODEL_TINY,
                "model_train_freq=100",
                "horizon=3",
                update,
            ],
        );
    }
}

#[test]
#[ignore = "needs a Vulkan device (lavapipe where there is no GPU): just test-wgpu"]
fn pets_and_poplin_agree_with_the_cpu() {
    agrees("pets", &PLANNER_TINY);
    let planner = format!("planner={{{}}}", PLANNER_TINY.join(", "));
    for algo in ["poplin_a", "poplin_p"] {
        agrees(algo, &[&planner, "policy={hidden=[16], epochs=3}"]);
    }
}

/// Swish off the CPU is burn's `silu`; it must be the same function as the fused CPU kernel,
/// values and gradients, including at 0 and at large |x|.
#[test]
#[ignore = "needs a Vulkan device (lavapipe where there is no GPU): just test-wgpu"]
fn the_swish_fallback_on_the_gpu_matches_the_fused_kernel() {
    use burn::prelude::*;
    let xs: Vec<f32> = (0..2001)
        .map(|i| (i as f32 - 1000.0) * 0.03)
        .chain([0.0, -0.0, 1e-6, -1e-6, 88.0, -88.0, 200.0, -200.0])
        .collect();
    let n = xs.len();
    let run = |device: Device| -> (Vec<f32>, Vec<f32>) {
        let x = Tensor::<1>::from_data(TensorData::new(xs.clone(), [n]), &device).require_grad();
        let y = mpdp::nn::swish(x.clone());
        // A non-uniform upstream gradient: d/dx Σ y²/2 = y·swish'(x).
        let grads = (y.clone() * y.clone()).sum().mul_scalar(0.5).backward();
        let gx = x.grad(&grads).expect("a gradient");
        (mpdp::nn::to_vec(y.inner()), mpdp::nn::to_vec(gx))
    };
    let (y_cpu, g_cpu) = run(Device::flex().autodiff());
    let gpu = Device::wgpu(DeviceKind::DefaultDevice).autodiff();
    let (y_gpu, g_gpu) = run(gpu);
    for i in 0..n {
        let x = xs[i];
        assert!(
            relative(y_cpu[i] as f64, y_gpu[i] as f64) < 1e-5,
            "swish({x}): cpu {} wgpu {}",
            y_cpu[i],
            y_gpu[i]
        );
        assert!(
            relative(g_cpu[i] as f64, g_gpu[i] as f64) < 1e-4,
            "swish'({x})·swish({x}): cpu {} wgpu {}",
            g_cpu[i],
            g_gpu[i]
        );
    }
}

/// `step` of a run's newest checkpoint, once there is one.
fn checkpoint_step(runs: &Path) -> Option<u64> {
    let run = std::fs::read_dir(runs.join("adhoc"))
        .ok()?
        .next()?
        .ok()?
        .path();
    let text = std::fs::read_to_string(run.join("ckpt/loop.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v.get("step")?.as_u64()
}

/// Runs `c` until its checkpoint reaches `step`, then stops it with SIGTERM (exit 75); returns
/// the step of the checkpoint it left.
fn stop_after_checkpoint(mut c: Command, runs: &Path, step: u64) -> u64 {
    let mut child = c.spawn().expect("spawn mpdp");
    let t = Instant::now();
    while checkpoint_step(runs).is_none_or(|s| s < step) {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before its checkpoint at {step}"
        );
        assert!(
            t.elapsed() < Duration::from_secs(600),
            "no checkpoint at {step}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: SIGTERM to the child this test spawned.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(
        child.wait().unwrap().code(),
        Some(75),
        "not stopped at {step}"
    );
    checkpoint_step(runs).unwrap()
}

/// MBPO (networks, optimiser moments, model, replay and RNG in its checkpoint) stopped on the
/// CPU resumes on wgpu, is stopped there and resumes on the CPU again, and ends where a run on
/// the CPU alone ends, within the tolerance. The evaluations before the first handover are the
/// CPU's, exactly.
#[test]
#[ignore = "needs a Vulkan device (lavapipe where there is no GPU): just test-wgpu"]
fn a_checkpoint_moves_from_the_cpu_to_wgpu_and_back() {
    let sets = [
        SAC_TINY,
        MODEL_TINY,
        "model_train_freq=100",
        "epoch_length=100",
        "rollout_batch_size=100",
    ];
    let dir = common::Dir::new("handover");
    let whole = metrics(&dir, "mbpo", &sets, CPU);

    let runs: PathBuf = dir.0.join("handover");
    let on_cpu = stop_after_checkpoint(run_one(&runs, "mbpo", &sets, CPU), &runs, 100);
    let on_gpu = stop_after_checkpoint(run_one(&runs, "mbpo", &sets, GPU), &runs, 200);
    assert!(on_cpu < on_gpu && on_gpu < 300, "{on_cpu} {on_gpu}");
    succeed(&mut run_one(&runs, "mbpo", &sets, CPU));
    let run = common::only_run(&runs);
    let moved = read_metrics(&run.join("metrics.parquet")).unwrap();
    let log = std::fs::read_to_string(run.join("log.txt")).unwrap();
    assert_eq!(
        log.matches("resumed from the checkpoint").count(),
        2,
        "{log}"
    );

    let evals = |rows: &[MetricRow]| -> Vec<(u64, f64)> {
        rows.iter()
            .filter(|r| r.metric == "eval/return_mean")
            .map(|r| (r.step, r.value))
            .collect()
    };
    let (a, b) = (evals(&whole), evals(&moved));
    assert_eq!(
        a.iter().map(|e| e.0).collect::<Vec<_>>(),
        b.iter().map(|e| e.0).collect::<Vec<_>>()
    );
    eprintln!("CPU to step {on_cpu}, wgpu to {on_gpu}, then the CPU: evals {b:?}, CPU alone {a:?}");
    assert_eq!(a[0], b[0], "the CPU's own evaluation before the handover");
    for (x, y) in a.iter().zip(&b) {
        assert!(
            relative(x.1, y.1) <= TOLERANCE,
            "eval at {}: CPU alone {} vs moved {}",
            x.0,
            x.1,
            y.1
        );
    }
}

/// Every benchmark runs on the GPU with tiny sizes (without the PyTorch side) and prints a
/// throughput labelled as the GPU's.
#[test]
#[ignore = "needs a Vulkan device (lavapipe where there is no GPU): just test-wgpu"]
fn the_benchmarks_run_on_wgpu() {
    let cases: [&[&str]; 4] = [
        &["sac", "--batch", "32", "--updates", "2", "--repeats", "1"],
        &[
            "ensemble",
            "--members",
            "3",
            "--hidden",
            "16",
            "--steps",
            "2",
            "--rows",
            "200",
            "--repeats",
            "1",
        ],
        &[
            "mpdp",
            "--horizon",
            "2",
            "--batch",
            "8",
            "--updates",
            "1",
            "--repeats",
            "1",
        ],
        &[
            "cem",
            "--population",
            "16",
            "--elites",
            "4",
            "--hidden",
            "16",
            "--particles",
            "5",
            "--horizon",
            "3",
            "--iterations",
            "2",
            "--repeats",
            "1",
        ],
    ];
    for args in cases {
        let mut c = Command::new(env!("CARGO_BIN_EXE_mpdp"));
        c.args(["bench", "--device", GPU])
            .args(args)
            .arg("--no-python");
        let out = succeed(&mut c);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("ours (burn wgpu GPU)"), "{args:?}: {text}");
    }
}
