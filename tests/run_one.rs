//! `mpdp run-one` end to end on InvertedPendulum with small networks and budgets: the run
//! directory contract, determinism, resume after SIGKILL and SIGTERM, the divergence guard.
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use mpdp::runner::{MetricRow, measures_time, read_metrics};
use mpdp::store::{self, RunState};

mod common;
use common::Dir;

/// A small SAC run: about 2000 updates of 32-unit networks.
fn args(runs: &Path, steps: u64, extra: &[&str]) -> Vec<String> {
    let mut sac = vec![
        "--set",
        "hidden=[32, 32]",
        "--set",
        "batch_size=32",
        "--set",
        "learning_starts=100",
    ];
    sac.extend(extra);
    algo_args(runs, "sac", steps, &sac)
}

/// A run of `algo` on InvertedPendulum with its default parameters; `extra` as for [`args`].
fn algo_args(runs: &Path, algo: &str, steps: u64, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = [
        "run-one",
        "--env",
        "InvertedPendulum",
        "--algo",
        algo,
        "--seed",
        "3",
        "--eval-every",
        "250",
        "--eval-episodes",
        "3",
        "--checkpoint-every",
        "50",
        "--log-every",
        "100",
        "--quiet",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.extend([
        "--steps".into(),
        steps.to_string(),
        "--runs-dir".into(),
        runs.display().to_string(),
    ]);
    // A flag in `extra` (other than the repeatable --set) replaces the default one.
    for flag in extra
        .iter()
        .filter(|e| e.starts_with("--") && **e != "--set")
    {
        if let Some(i) = a.iter().position(|x| x == flag) {
            a.drain(i..i + 2);
        }
    }
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

fn mpdp(args: &[String]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mpdp"))
        .args(args)
        .output()
        .expect("spawn mpdp")
}

/// Sends SIGTERM to `child` and returns its exit code.
fn sigterm(mut child: Child) -> Option<i32> {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    child.wait().unwrap().code()
}

fn spawn(args: &[String]) -> Child {
    spawn_env(args, &[])
}

/// `mpdp args` in the background with extra environment variables, output discarded.
fn spawn_env(args: &[String], env: &[(&str, &str)]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_mpdp"))
        .args(args)
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn mpdp")
}

/// The single run directory under `runs/adhoc/`.
fn run_dir(runs: &Path) -> PathBuf {
    let exp = runs.join("adhoc");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&exp)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    dirs.pop().unwrap()
}

/// Metrics that must not depend on timing.
fn deterministic_metrics(dir: &Path) -> Vec<(u64, String, f64)> {
    let rows: Vec<MetricRow> = read_metrics(&dir.join("metrics.parquet")).unwrap();
    rows.into_iter()
        .filter(|r| !measures_time(&r.metric))
        .map(|r| (r.step, r.metric, r.value))
        .collect()
}

/// Steps that have an eval row.
fn eval_steps(metrics: &[(u64, String, f64)]) -> Vec<u64> {
    metrics
        .iter()
        .filter(|m| m.1 == "eval/return_mean")
        .map(|m| m.0)
        .collect()
}

/// Waits (up to 60 s) until the run under `runs` has written its first checkpoint.
fn wait_for_checkpoint(runs: &Path) {
    let start = Instant::now();
    while !std::fs::read_dir(runs.join("adhoc")).is_ok_and(|mut d| {
        d.next()
            .is_some_and(|e| e.unwrap().path().join("ckpt/loop.json").exists())
    }) {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no checkpoint within 60 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Equal metric lists, reporting the first difference only.
fn assert_same(got: &[(u64, String, f64)], want: &[(u64, String, f64)], what: &str) {
    if let Some(i) = (0..got.len().min(want.len())).find(|&i| got[i] != want[i]) {
        panic!("{what}: row {i} differs: {:?} vs {:?}", got[i], want[i]);
    }
    assert_eq!(got.len(), want.len(), "{what}: row counts differ");
}

fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "mpdp failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_run_writes_the_run_directory_contract() {
    let runs = Dir::new("contract");
    assert_ok(&mpdp(&args(&runs.0, 600, &[])));
    let dir = run_dir(&runs.0);
    let status = store::read_status(&dir).unwrap();
    assert_eq!((status.state, status.step), (RunState::Done, 600));
    for f in [
        "resolved.toml",
        "provenance.json",
        "metrics.parquet",
        "log.txt",
    ] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
    let prov: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("provenance.json")).unwrap())
            .unwrap();
    assert_eq!(prov["env"]["task"], "InvertedPendulum");
    assert_eq!(prov["env"]["xml_sha256"].as_str().unwrap().len(), 64);
    assert!(prov["mujoco_version"].as_str().unwrap().starts_with("3.17"));
    assert_eq!(prov["git_commit"].as_str().unwrap().len(), 40);
    let resolved = std::fs::read_to_string(dir.join("resolved.toml")).unwrap();
    assert!(
        resolved.contains("learning_starts = 100") && resolved.contains("actor_lr = 0.0003"),
        "{resolved}"
    );

    let metrics = deterministic_metrics(&dir);
    let evals = eval_steps(&metrics);
    assert_eq!(evals, vec![250, 500, 600], "every 250 steps and at the end");
    for name in [
        "train/critic_loss",
        "train/actor_loss",
        "train/alpha",
        "train/q_mean",
        "train/episode_return",
    ] {
        assert!(metrics.iter().any(|m| m.1 == name), "{name} missing");
    }
    // Each log row says where its window's wall time went: the phases add up to no more
    // than the window, and learning (SAC's updates) takes time once it has started.
    let rows = read_metrics(&dir.join("metrics.parquet")).unwrap();
    let at = |step: u64, name: &str| {
        rows.iter()
            .find(|r| r.step == step && r.metric == name)
            .unwrap_or_else(|| panic!("{name} at {step} missing"))
    };
    let mut last_wall = 0.0;
    for step in [100, 200, 300, 400, 500, 600] {
        let phases =
            ["env", "learn", "eval", "checkpoint"].map(|p| at(step, &format!("time/{p}_s")).value);
        assert!(phases.iter().all(|s| *s >= 0.0), "{step}: {phases:?}");
        let wall = at(step, "train/steps_per_s").wall_s;
        assert!(
            phases.iter().sum::<f64>() <= wall - last_wall + 1e-3,
            "{step}: {phases:?}"
        );
        assert!(step <= 100 || phases[1] > 0.0, "{step}: {phases:?}");
        last_wall = wall;
    }
    // Rerunning a finished run does nothing.
    let before = std::fs::metadata(dir.join("metrics.parquet"))
        .unwrap()
        .modified()
        .unwrap();
    assert_ok(&mpdp(&args(&runs.0, 600, &[])));
    assert_eq!(
        std::fs::metadata(dir.join("metrics.parquet"))
            .unwrap()
            .modified()
            .unwrap(),
        before
    );
}

#[test]
fn stop_at_return_ends_the_run_at_the_first_eval_that_reaches_it() {
    let runs = Dir::new("stop-at");
    // Every return reaches -1: the run ends, done, at its first evaluation.
    assert_ok(&mpdp(&args(&runs.0, 600, &["--stop-at-return", "-1"])));
    let dir = run_dir(&runs.0);
    let status = store::read_status(&dir).unwrap();
    assert_eq!((status.state, status.step), (RunState::Done, 250));
    assert_eq!(eval_steps(&deterministic_metrics(&dir)), vec![250]);
    let log = std::fs::read_to_string(dir.join("log.txt")).unwrap();
    assert!(
        log.contains("reached stop_at_return -1; done at step 250"),
        "{log}"
    );
    // Out of reach (InvertedPendulum returns are at most 1000): every step is run, and the
    // run id is its own, apart from the run without the flag.
    assert_ok(&mpdp(&args(&runs.0, 600, &["--stop-at-return", "1e6"])));
    let mut done: Vec<u64> = std::fs::read_dir(runs.0.join("adhoc"))
        .unwrap()
        .map(|d| store::read_status(&d.unwrap().path()).unwrap().step)
        .collect();
    done.sort();
    assert_eq!(done, vec![250, 600]);
}

#[test]
fn the_same_seed_gives_identical_metrics() {
    let (a, b) = (Dir::new("det-a"), Dir::new("det-b"));
    assert_ok(&mpdp(&args(&a.0, 500, &["--set", "learning_starts=150"])));
    assert_ok(&mpdp(&args(&b.0, 500, &["--set", "learning_starts=150"])));
    let (ma, mb) = (
        deterministic_metrics(&run_dir(&a.0)),
        deterministic_metrics(&run_dir(&b.0)),
    );
    assert!(ma.len() > 10);
    assert_same(&ma, &mb, "same seed");
}

/// The thread count does not change results: an MPDP run whose matmuls are large enough for
/// the CPU backend to split them across threads (the ensemble's 200-unit layers, 256-unit
/// policies and critics) gives identical metrics with one thread and with two, so a run may
/// resume under another `threads_per_run`.
#[test]
fn results_do_not_depend_on_the_thread_count() {
    let run = |threads: &str| {
        let dir = Dir::new(&format!("threads-{threads}"));
        let a = algo_args(
            &dir.0,
            "mpdp",
            380,
            &[
                "--eval-every",
                "380",
                "--log-every",
                "40",
                "--set",
                "sac={learning_starts=300, updates_per_step=2, batch_size=64}",
                "--set",
                "model_train_freq=40",
            ],
        );
        let out = Command::new(env!("CARGO_BIN_EXE_mpdp"))
            .args(&a)
            .env("RAYON_NUM_THREADS", threads)
            .output()
            .unwrap();
        assert_ok(&out);
        (deterministic_metrics(&run_dir(&dir.0)), dir)
    };
    let ((one, _a), (two, _b)) = (run("1"), run("2"));
    assert!(
        one.iter().any(|m| m.1 == "train/horizon_mean"),
        "the planner ran"
    );
    assert_same(&two, &one, "two threads vs one");
}

#[test]
fn vectorised_collection_steps_several_envs_per_step() {
    let (a, b) = (Dir::new("vec-a"), Dir::new("vec-b"));
    let extra = ["--num-envs", "4", "--eval-every", "200"];
    assert_ok(&mpdp(&args(&a.0, 400, &extra)));
    assert_ok(&mpdp(&args(&b.0, 400, &extra)));
    let dir = run_dir(&a.0);
    assert_eq!(store::read_status(&dir).unwrap().step, 400);
    let metrics = deterministic_metrics(&dir);
    let evals = eval_steps(&metrics);
    assert_eq!(evals, vec![200, 400]);
    assert!(metrics.iter().any(|m| m.1 == "train/critic_loss"));
    assert_same(
        &metrics,
        &deterministic_metrics(&run_dir(&b.0)),
        "num_envs 4, same seed",
    );
}

#[test]
fn a_killed_run_resumes_to_the_same_metrics() {
    let reference = Dir::new("kill-ref");
    assert_ok(&mpdp(&args(&reference.0, 3000, &[])));
    let expected = deterministic_metrics(&run_dir(&reference.0));

    // Kill at a random point after the first checkpoint; retry if the run finished first.
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    for attempt in 0..4 {
        let runs = Dir::new(&format!("kill-{attempt}"));
        let a = args(&runs.0, 3000, &[]);
        let mut child = spawn(&a);
        // After the first checkpoint, a random extra delay of up to 0.2 s.
        let delay = Duration::from_millis(u64::from(seed.wrapping_mul(attempt + 1) % 200));
        wait_for_checkpoint(&runs.0);
        std::thread::sleep(delay);
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let dir = run_dir(&runs.0);
        if store::read_status(&dir).is_some_and(|s| s.state == RunState::Done) {
            continue;
        }
        assert_ok(&mpdp(&a));
        let log = std::fs::read_to_string(dir.join("log.txt")).unwrap();
        assert!(log.contains("resumed from the checkpoint"), "{log}");
        assert_same(
            &deterministic_metrics(&dir),
            &expected,
            &format!("killed after {delay:?}"),
        );
        return;
    }
    panic!("the run always finished before it could be killed");
}

/// A run slower than its `--checkpoint-every` still checkpoints every `--checkpoint-minutes`
/// of wall time, and a run killed after such a checkpoint (at whatever step the clock
/// chose) resumes to the metrics of an uninterrupted run, also under another
/// `--checkpoint-every`: how often a run saves is not part of its id.
#[test]
fn wall_clock_checkpoints_bound_the_work_a_crash_loses() {
    let extra = [
        "--checkpoint-every",
        "1000000",
        "--checkpoint-minutes",
        "0.002",
    ];
    let reference = Dir::new("clock-ref");
    assert_ok(&mpdp(&args(&reference.0, 3000, &extra)));
    let ref_log = std::fs::read_to_string(run_dir(&reference.0).join("log.txt")).unwrap();
    assert!(
        ref_log.matches("checkpoint at step").count() >= 2,
        "checkpoints every 0.12 s of a run of seconds: {ref_log}"
    );

    let runs = Dir::new("clock");
    let a = args(&runs.0, 3000, &extra);
    let mut child = spawn(&a);
    wait_for_checkpoint(&runs.0);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let dir = run_dir(&runs.0);
    let s = store::read_status(&dir).unwrap();
    assert_ne!(
        s.state,
        RunState::Done,
        "killed right after its first checkpoint"
    );
    // Resumed with the default `--checkpoint-every 50`: the same run directory.
    assert_ok(&mpdp(&args(&runs.0, 3000, &[])));
    assert_eq!(run_dir(&runs.0), dir);
    let log = std::fs::read_to_string(dir.join("log.txt")).unwrap();
    assert!(log.contains("resumed from the checkpoint"), "{log}");
    let resolved = std::fs::read_to_string(dir.join("resolved.toml")).unwrap();
    assert!(resolved.contains("checkpoint_every = 50\n"), "{resolved}");
    assert_same(
        &deterministic_metrics(&dir),
        &deterministic_metrics(&run_dir(&reference.0)),
        "killed after a wall-clock checkpoint",
    );
}

/// Regression: resuming loads the Adam states onto burn's default device (they move to their
/// parameters' device at the next step), and in a binary built with a GPU backend that default
/// is the GPU, so every CPU run opened a GPU context when it resumed. The binary now pins burn's
/// default to the device `MPDP_DEVICE` asks for: a `BURN_DEVICE` naming a backend this binary
/// lacks, on which burn panics when asked for its default, must not matter.
#[test]
fn a_resumed_cpu_run_asks_burn_for_no_device_of_its_own_choosing() {
    let runs = Dir::new("burn-default");
    let a = args(&runs.0, 3000, &[]);
    let child = spawn(&a);
    wait_for_checkpoint(&runs.0);
    assert_eq!(sigterm(child), Some(75), "the run ended before the signal");
    let out = Command::new(env!("CARGO_BIN_EXE_mpdp"))
        .args(&a)
        .env("BURN_DEVICE", "cuda")
        .output()
        .expect("spawn mpdp");
    assert_ok(&out);
    let log = std::fs::read_to_string(run_dir(&runs.0).join("log.txt")).unwrap();
    assert!(log.contains("resumed from the checkpoint"), "{log}");
}

#[test]
fn sigterm_checkpoints_and_marks_the_run_preempted() {
    let reference = Dir::new("term-ref");
    assert_ok(&mpdp(&args(&reference.0, 800, &[])));
    let runs = Dir::new("term");
    let a = args(&runs.0, 800, &[]);
    let child = spawn(&a);
    wait_for_checkpoint(&runs.0);
    let code = sigterm(child);
    let dir = run_dir(&runs.0);
    let s = store::read_status(&dir).unwrap();
    if s.state == RunState::Done {
        return; // finished before the signal arrived
    }
    assert_eq!(code, Some(75));
    assert_eq!(s.state, RunState::Preempted);
    assert_ok(&mpdp(&a));
    assert_same(
        &deterministic_metrics(&dir),
        &deterministic_metrics(&run_dir(&reference.0)),
        "after SIGTERM",
    );
}

#[test]
fn divergence_fails_the_run_and_keeps_what_was_written() {
    let runs = Dir::new("nan");
    let out = mpdp(&args(
        &runs.0,
        600,
        &[
            "--set",
            "critic_lr=1e30",
            "--set",
            "actor_lr=1e30",
            "--eval-every",
            "100",
            "--set",
            "learning_starts=200",
        ],
    ));
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("diverged"), "{stderr}");
    let dir = run_dir(&runs.0);
    let s = store::read_status(&dir).unwrap();
    assert_eq!(s.state, RunState::Failed);
    assert!(s.reason.unwrap().contains("diverged at step"));
    // The evaluations before the divergence are on disk.
    let parts: Vec<PathBuf> = std::fs::read_dir(dir.join("metrics"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let rows: Vec<MetricRow> = parts
        .iter()
        .flat_map(|p| read_metrics(p).unwrap())
        .collect();
    let evals: Vec<u64> = rows
        .iter()
        .filter(|r| r.metric == "eval/return_mean")
        .map(|r| r.step)
        .collect();
    assert_eq!(
        evals,
        vec![100],
        "the eval before the first update survives"
    );
}

#[test]
fn bad_run_arguments_are_user_errors() {
    let runs = Dir::new("bad");
    for (extra, needle) in [
        (vec!["--set", "actor_rl=1e-3"], "actor_rl"),
        (vec!["--set", "gamma=2"], "gamma"),
        (vec!["--set", "hidden=[]"], "hidden"),
        (vec!["--set", "batch_size=-1"], "batch_size"),
        (vec!["--set", "noequals"], "KEY=VALUE"),
        (vec!["--stop-at-return", "NaN"], "--stop-at-return"),
        (vec!["--checkpoint-minutes", "-1"], "--checkpoint-minutes"),
        (vec!["--checkpoint-minutes", "inf"], "--checkpoint-minutes"),
        // Regression: a finite interval too long for a Duration panicked (exit 101).
        (
            vec!["--checkpoint-minutes", "1e300"],
            "--checkpoint-minutes must be a number of minutes in 0..=525600",
        ),
        // Regression: the experiment names a directory; a path escaped --runs-dir.
        (
            vec!["--experiment", "../escape"],
            "--experiment: expected a name",
        ),
        (
            vec!["--experiment", "/abs"],
            "--experiment: expected a name",
        ),
        // Regression: the lines after a value's first were read as more keys and dropped.
        (
            vec!["--set", "gamma=0.5\ntau=9"],
            "expected one value after `=`",
        ),
        // Sizes no run could hold are refused before anything runs.
        (
            vec!["--num-envs", "5000"],
            "--num-envs must be at most 1024",
        ),
        (
            vec!["--eval-episodes", "100000"],
            "--eval-episodes must be at most 1024",
        ),
        (vec!["--set", "batch_size=100000000"], "batch_size"),
        (vec!["--set", "hidden=[100000000]"], "hidden"),
    ] {
        let out = mpdp(&args(&runs.0, 100, &extra));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {stderr}");
        assert!(stderr.contains(needle), "{extra:?}: {stderr}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_mpdp"))
        .args(args(&runs.0, 100, &[]))
        .env("MPDP_DEVICE", "tpu")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("MPDP_DEVICE=tpu: expected cpu, wgpu or wgpu:N")
    );
    let mut a = args(&runs.0, 100, &[]);
    let i = a.iter().position(|x| x == "sac").unwrap();
    a[i] = "ppo".into();
    let out = mpdp(&a);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown algo 'ppo'"));
    assert!(
        !runs.0.join("adhoc").exists(),
        "nothing written for bad input"
    );
}

/// Regression: `run-one --plan` took a missing plan file for an internal error (exit 1), and
/// ran a hand-edited line whose run id was made to match (zero steps, an experiment outside
/// the runs directory) without checking it.
#[test]
fn plan_files_are_checked_like_specs() {
    let runs = Dir::new("plan-file");
    let out = mpdp(&[
        "run-one".into(),
        "--plan".into(),
        runs.0.join("nope.jsonl").to_string_lossy().into_owned(),
        "--index".into(),
        "0".into(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("nope.jsonl"), "{stderr}");
    // An OS error is said once, not once per layer.
    assert_eq!(stderr.matches("No such file").count(), 1, "{stderr}");

    let smoke = Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments/smoke.toml");
    let plan = mpdp::spec::load(&smoke, &[]).unwrap();
    type Edit = fn(&mut mpdp::runner::RunConfig);
    let edits: [(&str, Edit); 3] = [
        ("total_steps", |c| c.total_steps = 0),
        ("experiment", |c| c.experiment = "../escape".into()),
        ("eval.episodes", |c| c.eval.episodes = 0),
    ];
    for (field, edit) in edits {
        let mut run = plan.runs[0].clone();
        edit(&mut run.config);
        run.run_id = run.config.run_id();
        let file = runs.0.join("edited.jsonl");
        mpdp::sched::write_plan_file(&file, &[&run]).unwrap();
        let out = mpdp(&[
            "run-one".into(),
            "--plan".into(),
            file.to_string_lossy().into_owned(),
            "--index".into(),
            "0".into(),
            "--runs-dir".into(),
            runs.0.to_string_lossy().into_owned(),
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{field}: {stderr}");
        assert!(stderr.contains(&format!("{field}:")), "{field}: {stderr}");
    }
    let written: Vec<_> = std::fs::read_dir(&runs.0)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(written, ["edited.jsonl"], "nothing but the plan file");
}

/// Regression: a run whose lock another process took over (it was paused past the stale
/// limit, so it was thought dead) went on to write a checkpoint and a `preempted` status over
/// the new owner's run. Now it stops, exits 73 and writes nothing more into the run directory.
#[test]
fn a_run_whose_lock_was_taken_over_stops_without_writing() {
    let runs = Dir::new("taken");
    let a = args(&runs.0, 100_000, &[]);
    let mut child = spawn_env(&a, &[("MPDP_HEARTBEAT_S", "1")]);
    wait_for_checkpoint(&runs.0);
    let dir = run_dir(&runs.0);
    let mut lock: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("lock.json")).unwrap()).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    lock["pid"] = std::process::id().into();
    lock["owner"] = "another scheduler".into();
    lock["claimed"] = now.into();
    lock["heartbeat"] = now.into();
    let fake = serde_json::to_string(&lock).unwrap();
    let tmp = dir.join("lock.json.test");
    std::fs::write(&tmp, &fake).unwrap();
    std::fs::rename(&tmp, dir.join("lock.json")).unwrap();
    // A checkpoint already under way when the lock changed hands may still land.
    std::thread::sleep(Duration::from_millis(500));
    let files = ["status.json", "ckpt/loop.json"];
    let before: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(dir.join(f)).unwrap())
        .collect();

    let start = Instant::now();
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if start.elapsed() > Duration::from_secs(60) {
            child.kill().ok();
            panic!("the run did not notice the takeover");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(code, Some(73));
    for (f, b) in files.iter().zip(&before) {
        assert_eq!(
            &std::fs::read(dir.join(f)).unwrap(),
            b,
            "{f} was written after the takeover"
        );
    }
    assert_eq!(store::read_status(&dir).unwrap().state, RunState::Running);
    assert_eq!(
        std::fs::read_to_string(dir.join("lock.json")).unwrap(),
        fake
    );
    let log = std::fs::read_to_string(dir.join("log.txt")).unwrap();
    assert!(log.contains("another process took the run over"), "{log}");
}

/// Regression: a resumed run's lock said it started at step 0, so `mpdp status` counted the
/// steps made before the resume into the run's rate (an MPDP run learning at 0.6 steps/s was
/// shown at 76 steps/s, with an ETA of minutes for a day of work). The lock now records the
/// step the process resumed from and a rate over its recent heartbeats.
#[test]
fn a_resumed_runs_lock_measures_its_rate_from_the_resume() {
    let runs = Dir::new("rate");
    let a = args(&runs.0, 100_000, &[]);
    let child = spawn(&a);
    wait_for_checkpoint(&runs.0);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(sigterm(child), Some(75));
    let dir = run_dir(&runs.0);
    let resumed_from = store::read_status(&dir).unwrap().step;
    assert!(resumed_from > 0);

    let mut child = spawn_env(&a, &[("MPDP_HEARTBEAT_S", "0.05")]);
    let start = Instant::now();
    let lock = loop {
        let lock = store::lock::read_lock(&dir);
        if let Some(l) = lock.filter(|l| l.step > resumed_from + 20 && l.recent_rate.is_some()) {
            break l;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no heartbeat with a rate"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(lock.start_step, resumed_from, "{lock:?}");
    let rate = lock.rate().unwrap();
    let since_resume = (lock.step - lock.start_step) as f64 / (lock.heartbeat - lock.claimed);
    assert!(rate.is_finite() && rate > 0.0, "{lock:?}");
    assert!(
        rate > 0.25 * since_resume && rate < 4.0 * since_resume,
        "recent {rate} vs since the resume {since_resume}: {lock:?}"
    );
}
