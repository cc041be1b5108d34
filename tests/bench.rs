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

/// The reference is told to run on the kind of device our side ran on (`--device cpu` here,
/// `cuda` when ours runs on wgpu), and the rate it reports is the ratio's denominator. A stub
/// interpreter stands in for PyTorch and echoes the device it was given.
#[test]
fn the_reference_runs_on_our_kind_of_device_and_sets_the_ratio() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("mpdp-bench-stub-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let stub = dir.join("python");
    std::fs::write(
        &stub,
        "#!/bin/sh\n\
         test -f \"$1\" || { echo \"no script $1\" >&2; exit 1; }\n\
         device=$(echo \"$@\" | sed -n 's/.*--device \\([a-z]*\\).*/\\1/p')\n\
         echo \"torch=stub device=$device threads=1\"\n\
         echo updates_per_s=1000\n",
    )
    .unwrap();
    std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mpdp"))
        .args(["bench", "mpdp", "--horizon", "2", "--batch", "8"])
        .args(["--updates", "1", "--repeats", "1", "--python"])
        .arg(&stub)
        .env_remove("MPDP_DEVICE")
        .output()
        .expect("spawn mpdp");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("PyTorch CPU (torch=stub device=cpu threads=1):"),
        "{text}"
    );
    let rate = |prefix: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.split_whitespace().find_map(|w| w.parse().ok()))
            .unwrap_or_else(|| panic!("no {prefix} line in {text}"))
    };
    let ratio: f64 = text
        .lines()
        .last()
        .and_then(|l| l.strip_prefix("ratio="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no ratio last in {text}"));
    let expected = rate("ours") / 1000.0;
    // The ratio is printed with three decimals.
    assert!((ratio - expected).abs() <= 6e-4, "{text}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_cem_benchmark_times_a_planning_call() {
    let text = bench(&[
        "cem",
        "--no-python",
        "--hidden",
        "16",
        "--population",
        "20",
        "--elites",
        "4",
        "--iterations",
        "2",
        "--particles",
        "5",
        "--horizon",
        "4",
        "--repeats",
        "1",
    ]);
    // 20 × 5 × 4 × 2 = 800 member evaluations per call.
    assert!(text.contains("= 0.00M member evaluations"), "{text}");
    let rate: f64 = text
        .lines()
        .find(|l| l.contains("ours"))
        .and_then(|l| l.split(':').nth(1))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no rate in {text}"));
    assert!(rate > 0.0, "{text}");
}
