//! A spec fuzzer: the shipped example specs, mutated at random (values swapped for other
//! types, extreme, negative, NaN, infinite and huge numbers, long and odd strings; keys
//! deleted, duplicated and invented; the text truncated, or given bytes that are not UTF-8),
//! are loaded as `plan` loads them, thousands of times per test run. Every mutant must be
//! accepted or refused with a message that names a key or a position, never a panic; a sample
//! also goes through the `mpdp plan` binary, which must exit 0 or 2, write nothing, and
//! never die of a signal; and a sample of the accepted ones is run, with tiny budgets, to a
//! finish or a failure with a reason.
//!
//! Each test run draws a new seed (printed); `MPDP_FUZZ_SEED=N` replays one, `MPDP_FUZZ_CASES`
//! sets the number of mutants (default 2500).
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::process::Command;

use mpdp::spec::{self, SpecError};
use rand::rngs::Xoshiro256PlusPlus;
use rand::{Rng, RngExt, SeedableRng};

mod common;
use common::Dir;

fn seed() -> u64 {
    std::env::var("MPDP_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        })
}

fn cases() -> usize {
    std::env::var("MPDP_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2500)
}

/// The shipped specs, as text.
fn bases() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments");
    let mut out: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&p).unwrap())
        })
        .collect();
    out.sort();
    assert!(out.len() >= 4, "{out:?}");
    out
}

/// Every leaf of a table (array elements included) by its path.
fn leaves(v: &toml::Value, path: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                path.push(k.clone());
                out.push(path.clone());
                leaves(v, path, out);
                path.pop();
            }
        }
        toml::Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                path.push(format!("#{i}"));
                out.push(path.clone());
                leaves(v, path, out);
                path.pop();
            }
        }
        _ => {}
    }
}

fn at<'a>(v: &'a mut toml::Value, path: &[String]) -> Option<&'a mut toml::Value> {
    path.iter()
        .try_fold(v, |v, k| match (v, k.strip_prefix('#')) {
            (toml::Value::Table(t), None) => t.get_mut(k),
            (toml::Value::Array(a), Some(i)) => a.get_mut(i.parse::<usize>().ok()?),
            _ => None,
        })
}

/// A value chosen to break things.
fn hostile<R: Rng>(rng: &mut R) -> toml::Value {
    use toml::Value::*;
    match rng.random_range(0..22) {
        0 => Integer(0),
        1 => Integer(-1),
        2 => Integer(i64::MAX),
        3 => Integer(i64::MIN),
        4 => Integer(1_000_000_000_000_000),
        5 => Integer(rng.random_range(-1000..1000)),
        6 => Float(f64::NAN),
        7 => Float(f64::INFINITY),
        8 => Float(f64::NEG_INFINITY),
        9 => Float(1e308),
        10 => Float(-1e-308),
        11 => Float(rng.random_range(-10.0..10.0)),
        12 => String(std::string::String::new()),
        13 => String("x".repeat(rng.random_range(100..20_000))),
        14 => String("../../etc/passwd".into()),
        15 => String("ünï\u{0}cødé \u{202e} 🙂".into()),
        16 => Boolean(rng.random()),
        17 => Array(Vec::new()),
        18 => Array(vec![Integer(0), Integer(0)]),
        19 => Array((0..rng.random_range(1..50)).map(Integer).collect()),
        20 => Table(toml::Table::new()),
        _ => Datetime("1979-05-27T07:32:00Z".parse().unwrap()),
    }
}

/// One mutant of `text`: bytes, since some mutants are not UTF-8.
fn mutate<R: Rng>(text: &str, rng: &mut R) -> Vec<u8> {
    let mut doc: toml::Value = toml::Value::Table(text.parse().unwrap());
    let mut paths = Vec::new();
    leaves(&doc, &mut Vec::new(), &mut paths);
    let edits = rng.random_range(1..=3);
    for _ in 0..edits {
        let path = &paths[rng.random_range(0..paths.len())];
        match rng.random_range(0..10) {
            // Delete the key (or array element).
            0 => {
                let (last, parent) = path.split_last().unwrap();
                match (at(&mut doc, parent), last.strip_prefix('#')) {
                    (Some(toml::Value::Table(t)), None) => {
                        t.remove(last);
                    }
                    (Some(toml::Value::Array(a)), Some(i)) => {
                        let i: usize = i.parse().unwrap();
                        if i < a.len() {
                            a.remove(i);
                        }
                    }
                    _ => {}
                }
            }
            // Add a key nobody reads beside it.
            1 => {
                let (_, parent) = path.split_last().unwrap();
                if let Some(toml::Value::Table(t)) = at(&mut doc, parent) {
                    t.insert("surprise_key".into(), hostile(rng));
                }
            }
            // Replace the value.
            _ => {
                if let Some(v) = at(&mut doc, path) {
                    *v = hostile(rng);
                }
            }
        }
    }
    let mut bytes = toml::to_string(&doc).unwrap_or_default().into_bytes();
    match rng.random_range(0..12) {
        // The same key twice.
        0 => {
            let lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
            let pick = lines[rng.random_range(0..lines.len())].to_vec();
            bytes.push(b'\n');
            bytes.extend(pick);
            bytes.push(b'\n');
        }
        // Cut short.
        1 => bytes.truncate(rng.random_range(0..=bytes.len())),
        // Not UTF-8.
        2 => {
            let i = rng.random_range(0..=bytes.len());
            bytes.splice(i..i, [0xff, 0xfe, 0xc3]);
        }
        // A byte changed.
        3 if !bytes.is_empty() => {
            let i = rng.random_range(0..bytes.len());
            bytes[i] = rng.random();
        }
        _ => {}
    }
    bytes
}

/// A refusal must say where: a key, or a line and column.
fn check_message(e: &SpecError, bytes: &[u8]) {
    let shown = e.to_string();
    assert!(
        shown.len() < 2000,
        "an overlong message: {} bytes: {}",
        shown.len(),
        &shown[..shown.len().min(600)]
    );
    match e {
        SpecError::Invalid { key, message, .. } => {
            assert!(
                !key.is_empty() || message.contains('`'),
                "no key named: {shown}\n--- spec:\n{}",
                String::from_utf8_lossy(bytes)
            );
            assert!(!shown.contains("struct "), "a type name: {shown}");
        }
        SpecError::Syntax { message, .. } => {
            assert!(
                message.contains("line") || message.contains("column"),
                "no position: {shown}\n--- spec:\n{}",
                String::from_utf8_lossy(bytes)
            );
        }
        SpecError::Read { .. } => panic!("the spec was written: {shown}"),
    }
}

#[test]
fn mutated_specs_are_accepted_or_refused_by_name_never_a_panic() {
    let seed = seed();
    let n = cases();
    eprintln!("spec fuzzer: seed {seed} (MPDP_FUZZ_SEED={seed} replays it), {n} mutants");
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let bases = bases();
    let dir = Dir::new("fuzz");
    let runs = dir.0.join("runs");
    let (mut accepted, mut refused) = (Vec::new(), 0);
    let mut through_cli = 0;
    for case in 0..n {
        let (name, text) = &bases[case % bases.len()];
        let bytes = mutate(text, &mut rng);
        let path = dir.0.join(format!("case-{case}.toml"));
        std::fs::write(&path, &bytes).unwrap();
        let what = format!("case {case} (seed {seed}, from {name})");
        let loaded = std::panic::catch_unwind(AssertUnwindSafe(|| spec::load(&path, &[])));
        match loaded {
            Err(_) => panic!(
                "{what}: loading panicked on\n{}",
                String::from_utf8_lossy(&bytes)
            ),
            Ok(Ok(plan)) => {
                // What `plan` would show: every run resolves, every id is unique.
                assert!(!plan.runs.is_empty(), "{what}: a plan without runs");
                accepted.push((path.clone(), plan.runs.len()));
            }
            Ok(Err(e)) => {
                check_message(&e, &bytes);
                refused += 1;
            }
        }
        // One in twenty through the binary: exit 0 or 2, never a signal or a panic's 101.
        if case % 20 == 0 {
            let out = Command::new(env!("CARGO_BIN_EXE_mpdp"))
                .args(["plan", path.to_str().unwrap(), "--runs-dir"])
                .arg(&runs)
                .output()
                .unwrap();
            assert!(
                matches!(out.status.code(), Some(0 | 2)),
                "{what}: mpdp plan {:?}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
            through_cli += 1;
        }
        std::fs::remove_file(&path).ok();
    }
    assert!(!runs.exists(), "plan wrote {}", runs.display());
    eprintln!(
        "spec fuzzer: {} accepted, {refused} refused, {through_cli} through `mpdp plan`",
        accepted.len()
    );
    // Both outcomes must be exercised, or the mutations are too weak or too strong.
    assert!(
        refused > n / 4 && accepted.len() > n / 50,
        "{} / {refused}",
        accepted.len()
    );
}

/// Accepted mutants run: each is shrunk to a tiny budget (`--set`), one of its runs is
/// executed, and it must end done or failed with a reason (never a crash, a panic or a
/// hang), within an address-space limit.
#[test]
fn accepted_mutants_run_to_an_end() {
    let seed = seed() ^ 0x5eed;
    eprintln!("spec fuzzer (runs): seed {seed}");
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let bases = bases();
    let dir = Dir::new("fuzz-run");
    let target = 50;
    let (mut ran, mut tried) = (0, 0);
    while ran < target {
        tried += 1;
        assert!(tried < 5000, "only {ran} accepted mutants in {tried}");
        let (_, text) = &bases[tried % bases.len()];
        let bytes = mutate(text, &mut rng);
        let path = dir.0.join(format!("run-{tried}.toml"));
        std::fs::write(&path, &bytes).unwrap();
        let Ok(plan) = spec::load(&path, &tiny(&path)) else {
            continue;
        };
        let run = &plan.runs[rng.random_range(0..plan.runs.len())];
        let plan_file = dir.0.join(format!("plan-{tried}.jsonl"));
        std::fs::write(&plan_file, serde_json::to_string(run).unwrap() + "\n").unwrap();
        let out = run_limited(&plan_file, &run.run_id, &dir.0.join("runs"));
        let code = out.status.code();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            matches!(code, Some(0..=2)),
            "run {tried} (seed {seed}): {:?}\n{stderr}\n--- spec:\n{}",
            out.status,
            String::from_utf8_lossy(&bytes)
        );
        let status = mpdp::store::read_status(&mpdp::sched::run_dir(&dir.0.join("runs"), run));
        match code {
            Some(0) => assert_eq!(
                status.map(|s| s.state),
                Some(mpdp::store::RunState::Done),
                "run {tried}: exit 0 without done"
            ),
            Some(1) => assert!(
                status.is_some_and(|s| s.reason.is_some_and(|r| !r.is_empty())),
                "run {tried}: failed without a reason: {stderr}"
            ),
            _ => {}
        }
        ran += 1;
    }
    eprintln!("spec fuzzer (runs): {ran} accepted mutants run, of {tried} drawn");
}

/// `--set`s that shrink a spec to a tiny budget: every env and agent to 60 steps, evaluations
/// to one episode, every agent's random start past the end (so no network is trained: the runs
/// check setup, stepping, evaluation, checkpoints and the finish, not learning speed), and
/// the planners' CEM to a few candidates.
fn tiny(path: &Path) -> Vec<String> {
    let Ok(plan) = spec::load(path, &[]) else {
        return Vec::new();
    };
    let mut sets = vec!["eval.episodes=1".to_string(), "eval.every=30".into()];
    for env in &plan.spec.envs {
        // The spec may spell the env as its Gymnasium id; the task name finds it either way
        // only when it is the key, so both spellings are tried by the caller's load.
        sets.push(format!("envs.{}.steps=60", env.name()));
    }
    for run in &plan.runs {
        let keys: &[&str] = match run.config.algo.as_str() {
            "sac" | "ddpg" => &["learning_starts=1000"],
            // The planners plan every evaluation step: a tiny CEM keeps those cheap.
            "pets" => &[
                "learning_starts=1000",
                "horizon=2",
                "cem.population=8",
                "cem.elites=2",
                "cem.iterations=1",
            ],
            "poplin_a" | "poplin_p" => &[
                "planner.learning_starts=1000",
                "planner.horizon=2",
                "planner.cem.population=8",
                "planner.cem.elites=2",
                "planner.cem.iterations=1",
            ],
            _ => &["sac.learning_starts=1000"],
        };
        // An agent's own budget and evaluation episodes override the spec's.
        for key in keys.iter().chain(&["steps=60", "eval_episodes=1"]) {
            let set = format!("agents.{}.{key}", run.agent);
            if !sets.contains(&set) {
                sets.push(set);
            }
        }
    }
    sets
}

/// `mpdp run-one --plan FILE --run-id ID` under a 12 GiB address-space limit and a time
/// limit (a run that exceeds it is killed, which fails the test).
fn run_limited(plan: &Path, id: &str, runs: &Path) -> std::process::Output {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mpdp"));
    cmd.args([
        "run-one",
        "--plan",
        plan.to_str().unwrap(),
        "--run-id",
        id,
        "--quiet",
    ])
    .arg("--runs-dir")
    .arg(runs);
    // SAFETY: setrlimit is async-signal-safe; it only limits the child.
    unsafe {
        cmd.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 12 << 30,
                rlim_max: 12 << 30,
            };
            libc::setrlimit(libc::RLIMIT_AS, &limit);
            let cpu = libc::rlimit {
                rlim_cur: 120,
                rlim_max: 120,
            };
            libc::setrlimit(libc::RLIMIT_CPU, &cpu);
            Ok(())
        });
    }
    cmd.output().unwrap()
}

/// The shrinking sets bound every run of every shipped spec, whatever budgets its agents set
/// for themselves (an agent's own `steps` once kept a 60k-step run in the fuzzer's budget).
#[test]
fn the_shrinking_sets_bound_every_run_of_the_shipped_specs() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments");
    for (name, _) in bases() {
        let path = dir.join(&name);
        let plan = spec::load(&path, &tiny(&path)).unwrap_or_else(|e| panic!("{name}: {e}"));
        for run in &plan.runs {
            let c = &run.config;
            assert!(
                c.total_steps <= 60,
                "{name}: {} runs {} steps",
                run.agent,
                c.total_steps
            );
            assert_eq!(c.eval.episodes, 1, "{name}: {}", run.agent);
            if let Some(cem) = c
                .agent
                .get("cem")
                .or_else(|| c.agent.get("planner").and_then(|p| p.get("cem")))
            {
                assert_eq!(
                    cem["population"].as_integer(),
                    Some(8),
                    "{name}: {}",
                    run.agent
                );
            }
        }
    }
}
