//! Golden metrics: short fixed-seed runs of every algorithm (tiny networks, a few hundred
//! steps, InvertedPendulum and Hopper) compared row by row, bit for bit, with the metrics
//! recorded in `tests/golden/`. A change that alters what any agent computes, however
//! slightly, fails here; a refactoring that keeps behaviour passes. The run id is part of the
//! record, so a change to how configs hash (which would orphan finished runs) fails too.
//!
//! Float results depend on the CPU's vector instructions (the backend and our kernels pick
//! their code at run time: AVX-512 and AVX2 sum in different orders), so the records are kept
//! per family of instruction sets, `tests/golden/<family>/<case>.csv`, each naming the exact
//! sets it was made on. A CPU compares its metrics with its own family's record; on one with
//! no record the metrics are not compared, and the test says so instead of failing. The run
//! id does not depend on the CPU: it is checked against every family's record, everywhere.
//!
//! `MPDP_GOLDEN_RECORD=1 cargo test --test golden` rewrites this CPU's records and removes
//! the other families' (a change meant to alter behaviour makes them stale: re-record them on
//! such a CPU); do that only for such a change, and say why in its commit.
//! `MPDP_GOLDEN_RECORD=add` only adds a record for this CPU's family where it has none.
use std::path::{Path, PathBuf};
use std::process::Command;

use mpdp::runner::{measures_time, read_metrics};

mod common;
use common::Dir;

/// Small settings shared by the model-based agents' cases.
const SAC_TINY: &str =
    "sac={hidden=[16, 16], batch_size=32, learning_starts=100, updates_per_step=2}";
const MODEL_TINY: &str =
    "model={members=3, elites=2, hidden=[16, 16], batch_size=64, max_epochs=3}";

struct Case {
    name: &'static str,
    algo: &'static str,
    env: &'static str,
    steps: u64,
    sets: &'static [&'static str],
}

const SAC: &[&str] = &["hidden=[16, 16]", "batch_size=32", "learning_starts=100"];
const MBPO: &[&str] = &[
    SAC_TINY,
    MODEL_TINY,
    "model_train_freq=100",
    "epoch_length=100",
    "rollout_batch_size=100",
    "rollout_schedule=[1, 3, 1, 3]",
];
const M2AC: &[&str] = &[
    SAC_TINY,
    MODEL_TINY,
    "model_train_freq=100",
    "rollout_batch_size=100",
    "rollout_schedule=[0, 0, 3, 3]",
];
const MPDP: &[&str] = &[SAC_TINY, MODEL_TINY, "model_train_freq=100", "horizon=4"];
const MPDP_LITERAL: &[&str] = &[
    SAC_TINY,
    MODEL_TINY,
    "model_train_freq=100",
    "horizon=4",
    "update=\"literal\"",
];

/// The sampling planners at a tiny size: 2 particles over 2 elites, CEM 16/4/2, H = 3.
const PLANNER_TINY: &[&str] = &[
    "model={members=3, elites=2, hidden=[16, 16], batch_size=64, max_epochs=3}",
    "learning_starts=100",
    "model_train_freq=100",
    "horizon=3",
    "particles=2",
    "cem={population=16, elites=4, iterations=2}",
];
const POPLIN_PLANNER: &str = "planner={model={members=3, elites=2, hidden=[16, 16], \
    batch_size=64, max_epochs=3}, learning_starts=100, model_train_freq=100, horizon=3, \
    particles=2, cem={population=16, elites=4, iterations=2}}";
const POPLIN_POLICY: &str = "policy={hidden=[8], epochs=2}";

/// `base` followed by `more`, for the life of the test binary.
fn with(base: &[&'static str], more: &[&'static str]) -> &'static [&'static str] {
    Box::leak([base, more].concat().into_boxed_slice())
}

fn cases(algo: &str) -> Vec<Case> {
    let planner = |sets: &'static [&'static str], run_algo: &str| {
        // Hopper only: a planner plans at every evaluation step too, and Hopper's episodes
        // end early while the policy is poor.
        vec![Case {
            name: leak(format!("{algo}-Hopper")),
            algo: leak(run_algo.to_string()),
            env: "Hopper",
            steps: 300,
            sets,
        }]
    };
    let poplin = &[POPLIN_PLANNER, POPLIN_POLICY];
    match algo {
        "pets" => return planner(PLANNER_TINY, "pets"),
        "pets-ts1" => return planner(with(PLANNER_TINY, &["propagation=\"ts1\""]), "pets"),
        "poplin_a" => return planner(poplin, "poplin_a"),
        "poplin_a-replan" => return planner(with(poplin, &["variant=\"replan\""]), "poplin_a"),
        "poplin_p" => return planner(poplin, "poplin_p"),
        "poplin_p-uni-bc" => {
            return planner(
                with(poplin, &["variant=\"uni\"", "distill=\"bc\""]),
                "poplin_p",
            );
        }
        _ => {}
    }
    let sets: &'static [&'static str] = match algo {
        "sac" | "ddpg" => SAC,
        "mbpo" => MBPO,
        "m2ac" => M2AC,
        "mpdp" => MPDP,
        "mpdp-literal" => MPDP_LITERAL,
        other => panic!("no golden case for {other}"),
    };
    let run_algo = if algo == "mpdp-literal" { "mpdp" } else { algo };
    [("InvertedPendulum", 600), ("Hopper", 500)]
        .into_iter()
        .map(|(env, steps)| Case {
            name: leak(format!("{algo}-{env}")),
            algo: leak(run_algo.to_string()),
            env,
            steps,
            sets,
        })
        .collect()
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// The x86 vector instruction sets that decide which kernels the backend runs.
fn cpu_features() -> String {
    #[cfg(target_arch = "x86_64")]
    {
        let mut f = Vec::new();
        macro_rules! check {
            ($($name:tt),*) => {$(
                if std::arch::is_x86_feature_detected!($name) {
                    f.push($name);
                }
            )*};
        }
        check!(
            "sse4.2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512dq"
        );
        f.join(",")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        std::env::consts::ARCH.to_string()
    }
}

/// The family of vector instruction sets a CPU's records are kept under: the widest of the
/// sets the kernels dispatch on (`src/nn/simd.rs`, and the backend's matmul).
fn family(features: &str) -> &'static str {
    let has = |set: &str| features.split(',').any(|f| f == set);
    if has("avx512f") {
        "avx512"
    } else if has("avx2") && has("fma") {
        "avx2"
    } else {
        "baseline"
    }
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// The folders of every family's records, in name order.
fn family_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(golden_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs
}

/// A record: the instruction sets it was made on and its lines (the run id, then the rows).
struct Golden {
    path: PathBuf,
    features: String,
    lines: Vec<String>,
}

fn read_golden(path: &Path) -> Option<Golden> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    let features = header.strip_prefix("# cpu features: ").unwrap_or("unknown");
    Some(Golden {
        path: path.to_path_buf(),
        features: features.to_string(),
        lines: lines.map(str::to_string).collect(),
    })
}

fn write_golden(path: &Path, features: &str, lines: &[String]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut text = format!("# cpu features: {features}\n");
    for l in lines {
        text.push_str(l);
        text.push('\n');
    }
    std::fs::write(path, text).unwrap();
    eprintln!("recorded {}", path.display());
}

/// Runs the case and returns its record: the run id, then `step,metric,value` rows of every
/// metric that does not measure time, values in their shortest exact form.
fn record(case: &Case) -> Vec<String> {
    let runs = Dir::new(case.name);
    let mut c = Command::new(env!("CARGO_BIN_EXE_mpdp"));
    c.args([
        "run-one",
        "--env",
        case.env,
        "--algo",
        case.algo,
        "--seed",
        "7",
        "--steps",
        &case.steps.to_string(),
        "--eval-every",
        "100",
        "--eval-episodes",
        "2",
        "--log-every",
        "50",
        "--quiet",
    ]);
    for set in case.sets {
        c.args(["--set", set]);
    }
    let out = c.arg("--runs-dir").arg(&runs.0).output().unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        case.name,
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = std::fs::read_dir(runs.0.join("adhoc"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let run_id = dir.file_name().unwrap().to_string_lossy().to_string();
    let mut lines = vec![format!("run_id,{run_id}")];
    for r in read_metrics(&dir.join("metrics.parquet")).unwrap() {
        if !measures_time(&r.metric) {
            lines.push(format!("{},{},{:?}", r.step, r.metric, r.value));
        }
    }
    lines
}

fn check(algo: &str) {
    let features = cpu_features();
    let own = family(&features);
    let mode = std::env::var("MPDP_GOLDEN_RECORD").unwrap_or_default();
    assert!(
        ["", "0", "1", "add"].contains(&mode.as_str()),
        "MPDP_GOLDEN_RECORD={mode}: expected 1 (rewrite) or add"
    );
    for case in cases(algo) {
        let file = format!("{}.csv", case.name);
        let own_path = golden_dir().join(own).join(&file);
        let records: Vec<Golden> = family_dirs()
            .iter()
            .filter_map(|dir| read_golden(&dir.join(&file)))
            .collect();
        let got = record(&case);
        if mode == "1" {
            for other in records.iter().filter(|r| r.path != own_path) {
                std::fs::remove_file(&other.path).unwrap();
                eprintln!(
                    "removed {} (made on [{}]): re-record it on such a CPU",
                    other.path.display(),
                    other.features
                );
            }
            write_golden(&own_path, &features, &got);
            continue;
        }
        // The run id hashes the config alone: every family's record must have this one.
        for r in &records {
            assert_eq!(
                Some(&got[0]),
                r.lines.first(),
                "{}: the run id changed ({}): finished runs of this config would no longer be \
                 found",
                case.name,
                r.path.display()
            );
        }
        assert!(
            !records.is_empty(),
            "{}: no golden record in any family (record with MPDP_GOLDEN_RECORD=1 cargo test \
             --test golden)",
            case.name
        );
        let Some(want) = records.iter().find(|r| r.path == own_path) else {
            if mode == "add" {
                write_golden(&own_path, &features, &got);
            } else {
                eprintln!(
                    "golden {}: metrics NOT COMPARED: no record for this CPU's instruction sets \
                     [{features}] (family {own}); float kernels differ between instruction \
                     sets, so bit-for-bit equality is only expected within one. \
                     MPDP_GOLDEN_RECORD=add records it.",
                    case.name
                );
            }
            continue;
        };
        if want.features != features {
            eprintln!(
                "golden {}: metrics NOT COMPARED: {} was made on [{}], this CPU has \
                 [{features}]",
                case.name,
                want.path.display(),
                want.features
            );
            continue;
        }
        for (i, (g, w)) in got.iter().zip(&want.lines).enumerate() {
            assert_eq!(
                g,
                w,
                "{}: metrics differ from the golden record at row {i} ({})",
                case.name,
                want.path.display()
            );
        }
        assert_eq!(
            got.len(),
            want.lines.len(),
            "{}: {} metric rows, the golden record has {}",
            case.name,
            got.len(),
            want.lines.len()
        );
    }
}

#[test]
fn sac_is_unchanged() {
    check("sac");
}

#[test]
fn ddpg_is_unchanged() {
    check("ddpg");
}

#[test]
fn mbpo_is_unchanged() {
    check("mbpo");
}

#[test]
fn m2ac_is_unchanged() {
    check("m2ac");
}

#[test]
fn mpdp_is_unchanged() {
    check("mpdp");
}

#[test]
fn mpdp_literal_is_unchanged() {
    check("mpdp-literal");
}

#[test]
fn pets_is_unchanged() {
    check("pets");
    check("pets-ts1");
}

#[test]
fn poplin_a_is_unchanged() {
    check("poplin_a");
    check("poplin_a-replan");
}

#[test]
fn poplin_p_is_unchanged() {
    check("poplin_p");
    check("poplin_p-uni-bc");
}

/// The statistics each registry entry declares (what `metric` figures are checked against)
/// are the ones its golden runs log: none missing from the declaration, none declared that
/// no run of it logs.
#[test]
fn declared_metrics_are_the_logged_ones() {
    use std::collections::BTreeSet;
    for algo in mpdp::agent::registry::ALGOS {
        let mut logged = BTreeSet::new();
        let files = family_dirs()
            .into_iter()
            .flat_map(|dir| std::fs::read_dir(dir).unwrap())
            .map(|e| e.unwrap().path());
        for path in files {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if !name.starts_with(&format!("{}-", algo.name)) {
                continue;
            }
            for line in std::fs::read_to_string(&path).unwrap().lines().skip(2) {
                let metric = line.split(',').nth(1).unwrap();
                if !mpdp::runner::RUN_METRICS.contains(&metric) {
                    let name = metric.strip_prefix("train/").unwrap();
                    logged.insert(mpdp::stats::declared_name(name).into_owned());
                }
            }
        }
        // The golden records leave out what measures time.
        let declared: BTreeSet<String> = algo
            .stats()
            .filter(|m| !measures_time(m))
            .map(|m| m.to_string())
            .collect();
        assert_eq!(declared, logged, "{}: declared vs logged", algo.name);
    }
}
