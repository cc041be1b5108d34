//! The benchmarks run end to end (tiny sizes, without the PyTorch reference, which needs
//! `just bench-setup`): they measure and print what they promise.
use std::process::Command;

/// Runs `mpdp bench ARGS`, asserts it succeeded and returns what it printed.
fn bench(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_mpdp"))
        .arg("bench")
        .args(args)
        .output()
        .expect("spawn mpdp");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_ensemble_benchmark_measures_both_workloads() {
    let text = bench(&[
        "ensemble",
        "--no-python",
        "--members",
        "3",
        "--hidden",
        "16",
        "--steps",
        "3",
        "--rows",
        "500",
        "--repeats",
        "1",
    ]);
    let rate = |unit: &str| -> f64 {
        text.lines()
            .find(|l| l.contains("ours") && l.ends_with(unit))
            .and_then(|l| l.split_whitespace().rev().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {unit} in {text}"))
    };
    assert!(rate("steps/s") > 0.0 && rate("rows/s") > 0.0, "{text}");
}

#[test]
fn the_mpdp_benchmark_plans_every_row_to_the_horizon() {
    let text = bench(&[
        "mpdp",
        "--no-python",
        "--horizon",
        "3",
        "--batch",
        "16",
        "--updates",
        "2",
        "--repeats",
        "1",
    ]);
    let ours = text
        .lines()
        .find(|l| l.starts_with("ours"))
        .unwrap_or_else(|| panic!("no rate in {text}"));
    let rate: f64 = ours
        .split_whitespace()
        .find_map(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("no rate in {ours}"));
    assert!(rate > 0.0, "{text}");
    assert!(ours.contains("mean planned horizon 3.00"), "{text}");
}
