//! Specs: every malformed spec in tests/specs/bad gets its own message and exit code 2 with
//! nothing written; plans expand sweeps and `extends` with stable ids; `explain` names where
//! each value came from.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use mpdp::spec;

fn mpdp(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mpdp"))
        .args(args)
        .output()
        .expect("spawn mpdp")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn tmp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mpdp-spec-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn every_malformed_spec_gets_its_message_and_exit_2_and_touches_nothing() {
    let dir = repo("tests/specs/bad");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert!(files.len() >= 20, "the corpus has {} specs", files.len());
    let runs = tmp("bad-runs");
    let mut failures = Vec::new();
    for file in &files {
        // Lossy: one of the specs is not UTF-8 on purpose.
        let text = String::from_utf8_lossy(&std::fs::read(file).unwrap()).into_owned();
        let expects: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# expect: "))
            .collect();
        assert!(
            !expects.is_empty(),
            "{} has no `# expect:` line",
            file.display()
        );
        for cmd in ["plan", "run", "explain", "status"] {
            let out = mpdp(&[
                cmd,
                file.to_str().unwrap(),
                "--runs-dir",
                runs.to_str().unwrap(),
            ]);
            let err = stderr(&out);
            let name = file.file_name().unwrap().to_str().unwrap();
            let missing: Vec<&&str> = expects.iter().filter(|e| !err.contains(**e)).collect();
            if out.status.code() != Some(2) || !err.contains(name) || !missing.is_empty() {
                failures.push(format!(
                    "{cmd} {name}: exit {:?}, missing {missing:?} in:\n{err}",
                    out.status.code()
                ));
            }
        }
    }
    assert!(!runs.exists(), "a malformed spec wrote {}", runs.display());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn bad_overrides_and_missing_files_are_user_errors() {
    let smoke = repo("experiments/smoke.toml");
    let smoke = smoke.to_str().unwrap();
    let long_set = "x".repeat(100_000);
    for (args, expect) in [
        (
            vec!["plan", smoke, "--set", "agents.SAC.gamma"],
            "--set: agents.SAC.gamma: expected KEY=VALUE",
        ),
        (
            vec!["plan", smoke, "--set", "agents.SAC.gamma=2"],
            "--set: agents.SAC.gamma: expected a value in [0, 1]",
        ),
        (
            vec!["plan", smoke, "--set", "eval.episode=3"],
            "--set: eval.episode: unknown field",
        ),
        (
            vec!["plan", smoke, "--set", "seeds=[]"],
            "--set: seeds: expected at least one seed",
        ),
        (
            vec!["plan", "no/such/spec.toml"],
            "no/such/spec.toml: No such file",
        ),
        // Regression: `run` refused a device kind this build cannot serve, `plan` did not.
        (
            vec!["plan", smoke, "--set", "devices.kind=\"cuda\""],
            "devices.kind = \"cuda\": this build has no CUDA backend",
        ),
        // Regression: the lines after a value's first were read as more keys and dropped.
        (
            vec!["plan", smoke, "--set", "agents.SAC.gamma=0.9\nseeds=[5]"],
            "expected one value after `=`, found more keys",
        ),
        // Regression: a malformed override was echoed whole, however long.
        (
            vec!["plan", smoke, "--set", long_set.as_str()],
            "--set: xxxxxxxxxx",
        ),
    ] {
        let out = mpdp(&args);
        let err = stderr(&out);
        let shown = spec::clip(&err, 300);
        assert_eq!(out.status.code(), Some(2), "{shown}");
        assert!(err.contains(expect), "{shown}");
        assert!(err.len() < 1000, "a {}-byte message: {shown}", err.len());
    }
}

/// Regression: a spec of 100 000 agents chained by `extends` overflowed the stack, and one
/// of a billion sweep points ran out of memory before anything was checked.
#[test]
fn specs_too_large_to_plan_are_refused_up_front() {
    let dir = tmp("too-large");
    let mut text = String::from(
        "schema = 1\nname = \"big\"\nseeds = [0]\n[envs.InvertedPendulum]\nsteps = 300\n",
    );
    for i in 0..1001 {
        text.push_str(&format!("[agents.A{i}]\nalgo = \"sac\"\n"));
    }
    let many = write(&dir, "many.toml", &text);
    let out = mpdp(&["plan", many.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("1001 agents; a spec may declare at most 1000"),
        "{}",
        stderr(&out)
    );
}

const SWEEP: &str = r#"
schema = 1
name = "sweep"
seeds = [0, 1]

[envs.Hopper]
steps = 1000

[envs.InvertedPendulum]
steps = 500

[agents.SAC]
algo = "sac"
hidden = [64, 64]

[agents.SAC-fast]
extends = "SAC"
actor_lr = 1e-3

[agents.SAC-fast.per_env.Hopper]
batch_size = 128

[agents.DDPG]
algo = "ddpg"

[sweep.agents.SAC]
gamma = [0.95, 0.99]
tau = [0.005, 0.01]
"#;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn sweeps_multiply_only_their_agent_and_extends_inherits() {
    let dir = tmp("sweep");
    let path = write(&dir, "sweep.toml", SWEEP);
    let plan = spec::load(&path, &[]).unwrap();
    // SAC: 2 x 2 sweep points; SAC-fast and DDPG: one each; x 2 envs x 2 seeds.
    assert_eq!(plan.runs.len(), (4 + 1 + 1) * 2 * 2);
    let labels: std::collections::BTreeSet<String> = plan.runs.iter().map(|r| r.label()).collect();
    assert_eq!(
        labels.into_iter().collect::<Vec<_>>(),
        [
            "DDPG",
            "SAC-fast",
            "SAC[gamma=0.95,tau=0.005]",
            "SAC[gamma=0.95,tau=0.01]",
            "SAC[gamma=0.99,tau=0.005]",
            "SAC[gamma=0.99,tau=0.01]",
        ]
    );
    // Envs in the paper's order, whatever the spec's.
    assert_eq!(plan.runs[0].env, "InvertedPendulum");
    let get = |label: &str, env: &str, key: &str| {
        plan.runs
            .iter()
            .find(|r| r.label() == label && r.env == env)
            .unwrap()
            .config
            .agent[key]
            .clone()
    };
    assert_eq!(
        get("SAC[gamma=0.95,tau=0.01]", "Hopper", "gamma").as_float(),
        Some(0.95)
    );
    assert_eq!(
        get("SAC[gamma=0.95,tau=0.01]", "Hopper", "tau").as_float(),
        Some(0.01)
    );
    // extends: the base's parameters (not its sweep), plus its own, plus per-env ones.
    assert_eq!(
        get("SAC-fast", "Hopper", "hidden")
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(get("SAC-fast", "Hopper", "gamma").as_float(), Some(0.99));
    assert_eq!(get("SAC-fast", "Hopper", "actor_lr").as_float(), Some(1e-3));
    assert_eq!(
        get("SAC-fast", "Hopper", "batch_size").as_integer(),
        Some(128)
    );
    assert_eq!(
        get("SAC-fast", "InvertedPendulum", "batch_size").as_integer(),
        Some(256)
    );
    // The preset applies below the spec: InvertedPendulum starts learning at 1000 steps.
    assert_eq!(
        get("DDPG", "InvertedPendulum", "learning_starts").as_integer(),
        Some(1000)
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// An agent's own `steps` and `seeds` replace the spec's for its runs only, are inherited
/// through `extends`, and `explain` names where they came from.
#[test]
fn an_agent_may_have_its_own_budget_and_seeds() {
    let dir = tmp("budget");
    let path = write(
        &dir,
        "budget.toml",
        r#"
schema = 1
name = "budget"
seeds = [0, 1, 2]

[envs.Hopper]
steps = 1000

[envs.InvertedPendulum]
steps = 500

[agents.SAC]
algo = "sac"

[agents.MBPO]
algo = "mbpo"
steps = 600
seeds = [4, 5]

[agents.M2AC]
extends = "MBPO"
real_ratio = 0.1
"#,
    );
    let plan = spec::load(&path, &[]).unwrap();
    let runs = |agent: &str| -> Vec<(String, u64, u64)> {
        plan.runs
            .iter()
            .filter(|r| r.agent == agent)
            .map(|r| (r.env.clone(), r.seed, r.config.total_steps))
            .collect()
    };
    assert_eq!(runs("SAC").len(), 6);
    assert!(
        runs("SAC")
            .iter()
            .all(|(env, _, steps)| *steps == if env == "Hopper" { 1000 } else { 500 })
    );
    for agent in ["MBPO", "M2AC"] {
        let mine = runs(agent);
        assert_eq!(mine.len(), 4, "{agent}: {mine:?}");
        assert!(
            mine.iter()
                .all(|(_, seed, steps)| [4, 5].contains(seed) && *steps == 600)
        );
    }
    let mbpo = plan.runs.iter().find(|r| r.agent == "MBPO").unwrap();
    assert!(
        mbpo.sources["total_steps"].contains("agents.MBPO.steps"),
        "{:?}",
        mbpo.sources
    );
    assert!(mbpo.sources["seed"].contains("agents.MBPO.seeds"));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn run_ids_ignore_comments_key_order_and_spelling_of_defaults() {
    let dir = tmp("ids");
    let a = write(&dir, "a.toml", SWEEP);
    // Same spec: tables reordered, comments added, a default spelled out, env as its id.
    let reordered = format!(
        "# a comment\n{}\n[devices]\nthreads_per_run = 1\n[eval]\nepisodes = 5 # the default\n",
        SWEEP
            .replace(
                "[envs.Hopper]\nsteps = 1000",
                "[envs.Hopper-v5]\nsteps = 1000"
            )
            .replace("seeds = [0, 1]\n", "")
            .replace("schema = 1\n", "schema = 1\nseeds = [0, 1]\n")
    );
    let b = write(&dir, "b.toml", &reordered);
    let ids = |p: &Path, set: &[&str]| -> Vec<String> {
        let set: Vec<String> = set.iter().map(|s| s.to_string()).collect();
        let mut v: Vec<String> = spec::load(p, &set)
            .unwrap()
            .runs
            .into_iter()
            .map(|r| r.run_id)
            .collect();
        v.sort();
        v
    };
    assert_eq!(ids(&a, &[]), ids(&b, &[]));
    // A change that matters changes the id.
    let c = spec::load(&a, &["envs.Hopper.steps=2000".into()]).unwrap();
    let changed: Vec<String> = c
        .runs
        .iter()
        .filter(|r| r.env == "Hopper")
        .map(|r| r.run_id.clone())
        .collect();
    assert!(changed.iter().all(|id| !ids(&a, &[]).contains(id)));
    // How often runs checkpoint does not change results, so it keeps the ids; how often
    // they log does.
    assert_eq!(ids(&a, &["run.checkpoint_every=100"]), ids(&a, &[]));
    let logged = ids(&a, &["run.log_every=100"]);
    assert!(logged.iter().all(|id| !ids(&a, &[]).contains(id)));
    std::fs::remove_dir_all(&dir).ok();
}

/// The ids of `experiments/mbpo-hopper.toml`'s runs, as its finished results carry them: a
/// new parameter whose default keeps the old behaviour (such as MPDP's `u_members`) keeps
/// them, spelled out or not; setting it to something else changes MPDP's alone.
#[test]
fn run_ids_of_finished_results_survive_new_parameters_at_their_defaults() {
    let spec = Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments/mbpo-hopper.toml");
    let ids = |set: &[&str]| -> Vec<(String, u64, String)> {
        let set: Vec<String> = set.iter().map(|s| s.to_string()).collect();
        spec::load(&spec, &set)
            .unwrap()
            .runs
            .into_iter()
            .map(|r| (r.label(), r.seed, r.run_id))
            .collect()
    };
    let now = ids(&[]);
    let mpdp: Vec<&str> = now
        .iter()
        .filter(|r| r.0 == "MPDP")
        .map(|r| r.2.as_str())
        .collect();
    assert_eq!(mpdp, ["1011040c26c0", "c0b3ae714d76", "c3c5d076f825"]);
    assert_eq!(ids(&["agents.MPDP.u_members=\"elites\""]), now);
    for (was, is) in now.iter().zip(ids(&["agents.MPDP.u_members=\"all\""])) {
        assert_eq!(was.2 == is.2, was.0 != "MPDP", "{was:?} {is:?}");
    }
}

#[test]
fn explain_names_default_preset_spec_sweep_and_cli() {
    let dir = tmp("explain");
    let path = write(&dir, "sweep.toml", SWEEP);
    let out = mpdp(&[
        "explain",
        path.to_str().unwrap(),
        "--set",
        "agents.DDPG.tau=0.01",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    let line = |run: &str, key: &str| -> String {
        let block = text
            .split("run ")
            .find(|b| b.contains(run))
            .unwrap_or_else(|| panic!("no run {run} in\n{text}"));
        block
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{key} ")))
            .unwrap_or_else(|| panic!("no {key} in\n{block}"))
            .to_string()
    };
    let file = path.display().to_string();
    let ddpg_ip = "DDPG on InvertedPendulum seed 0";
    assert!(line(ddpg_ip, "agent.tau").ends_with("--set (agents.DDPG.tau)"));
    assert!(
        line(ddpg_ip, "agent.learning_starts")
            .ends_with("preset (presets.toml [ddpg.InvertedPendulum])")
    );
    assert!(line(ddpg_ip, "agent.gamma").ends_with("default"));
    assert!(
        line(ddpg_ip, "total_steps").ends_with(&format!("{file} (envs.InvertedPendulum.steps)"))
    );
    let fast = "SAC-fast on Hopper seed 1";
    assert!(line(fast, "agent.hidden").ends_with(&format!("{file} (agents.SAC.hidden)")));
    assert!(line(fast, "agent.batch_size").ends_with(&format!(
        "{file} (agents.SAC-fast.per_env.Hopper.batch_size)"
    )));
    let swept = "SAC[gamma=0.95,tau=0.01] on Hopper seed 0";
    assert!(
        line(swept, "agent.gamma").ends_with(&format!(
            "{file} [sweep point gamma=0.95,tau=0.01] (agents.SAC.gamma)"
        )),
        "{}",
        line(swept, "agent.gamma")
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn plan_lists_runs_with_status_and_json_round_trips() {
    let out = mpdp(&[
        "plan",
        repo("experiments/smoke.toml").to_str().unwrap(),
        "--runs-dir",
        "/nonexistent-runs",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("4 runs: 4 todo"), "{text}");
    let out = mpdp(&[
        "plan",
        repo("experiments/smoke.toml").to_str().unwrap(),
        "--json",
    ]);
    let runs: Vec<spec::PlannedRun> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(runs.len(), 4);
    assert!(runs.iter().all(|r| r.config.run_id() == r.run_id));
}

#[test]
fn the_shipped_specs_plan() {
    for entry in std::fs::read_dir(repo("experiments")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let plan = spec::load(&path, &[]).unwrap_or_else(|e| panic!("{e}"));
            assert!(!plan.runs.is_empty(), "{}", path.display());
        }
    }
}

#[test]
fn the_readme_spec_example_is_valid() {
    let readme = std::fs::read_to_string(repo("README.md")).unwrap();
    let start = readme
        .find("```toml\nschema = 1")
        .expect("README has a spec example")
        + 8;
    let end = start + readme[start..].find("```").unwrap();
    let dir = tmp("readme");
    let path = write(&dir, "example.toml", &readme[start..end]);
    let plan = spec::load(&path, &[]).unwrap_or_else(|e| panic!("{e}"));
    // SAC: 4 sweep points and SAC-fast, on 2 envs x 4 seeds; DDPG on its own 2 seeds.
    assert_eq!(plan.runs.len(), 5 * 2 * 4 + 2 * 2);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn nested_agent_parameters_merge_key_by_key_and_explain_names_their_sources() {
    let dir = tmp("nested");
    let path = write(
        &dir,
        "mbpo.toml",
        r#"
schema = 1
name = "nested"
seeds = [0]

[envs.InvertedPendulum]
steps = 5000

[agents.MBPO]
algo = "mbpo"
sac = { actor_lr = 1e-3 }
model = { members = 5, elites = 3 }
"#,
    );
    let plan = spec::load(&path, &[]).unwrap();
    let agent = &plan.runs[0].config.agent;
    // The spec's sac table, the preset's sac table and the defaults merge key by key.
    assert_eq!(agent["sac"]["actor_lr"].as_float(), Some(1e-3));
    assert_eq!(agent["sac"]["updates_per_step"].as_integer(), Some(10));
    assert_eq!(agent["sac"]["critic_lr"].as_float(), Some(3e-4));
    assert_eq!(agent["model"]["elites"].as_integer(), Some(3));
    assert_eq!(agent["model"]["hidden"].as_array().unwrap().len(), 4);
    let s = &plan.runs[0].sources;
    let file = path.display().to_string();
    assert_eq!(
        s["agent.sac.actor_lr"],
        format!("{file} (agents.MBPO.sac.actor_lr)")
    );
    assert_eq!(
        s["agent.sac.updates_per_step"],
        "preset (presets.toml [mbpo.InvertedPendulum])"
    );
    assert_eq!(s["agent.sac.critic_lr"], "default");
    assert_eq!(
        s["agent.model.members"],
        format!("{file} (agents.MBPO.model.members)")
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// GPU slots: wgpu without `devices.gpus` takes one slot on wgpu's default adapter (which
/// need not be a discrete GPU); listed GPUs give `runs_per_device` slots each.
#[test]
fn gpu_slots_follow_the_listed_gpus() {
    let dir = tmp("gpu-slots");
    let path = write(
        &dir,
        "gpu.toml",
        "schema = 1\nname = \"gpu\"\nseeds = [0]\n[envs.InvertedPendulum]\nsteps = 100\n\
         [agents.SAC]\nalgo = \"sac\"\n[devices]\nkind = \"wgpu\"\n",
    );
    let slots = |sets: &[&str]| -> Vec<Option<usize>> {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        let plan = spec::load(&path, &sets).unwrap_or_else(|e| panic!("{e}"));
        plan.spec.devices.slots.iter().map(|s| s.gpu).collect()
    };
    assert_eq!(slots(&[]), [None]);
    assert_eq!(slots(&["devices.runs_per_device=2"]), [None, None]);
    assert_eq!(
        slots(&["devices.gpus=[0, 3]", "devices.runs_per_device=2"]),
        [Some(0), Some(0), Some(3), Some(3)]
    );
    assert_eq!(slots(&["devices.kind=\"cuda\""]), [Some(0)]);
    std::fs::remove_dir_all(&dir).ok();
}
