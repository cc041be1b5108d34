//! `experiments/paper.toml`, the paper's Figure 1: it plans all seven agents on the six tasks
//! with four seeds, and, shrunk with `--set` to tiny networks and budgets, every agent of it
//! runs end to end from the plan and Figure 1 draws them all.
use std::collections::BTreeSet;
use std::process::Command;

mod common;
use common::{Dir, succeed};

fn spec() -> String {
    format!("{}/experiments/paper.toml", env!("CARGO_MANIFEST_DIR"))
}

/// `mpdp plan experiments/paper.toml --json` with `sets`: one JSON object per run.
fn plan(sets: &[&str]) -> Vec<serde_json::Value> {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mpdp"));
    c.args(["plan", &spec(), "--json"]);
    for s in sets {
        c.args(["--set", s]);
    }
    let out = succeed(&mut c);
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

const SEVEN: [&str; 7] = ["DDPG", "M2AC", "MBPO", "MPDP", "PETS", "POPLIN", "SAC"];

#[test]
fn the_paper_spec_plans_seven_agents_on_six_tasks_with_four_seeds() {
    let runs = plan(&[]);
    assert_eq!(runs.len(), 6 * 7 * 4);
    let field = |k: &str| -> BTreeSet<String> {
        runs.iter()
            .map(|r| {
                r[k].as_str()
                    .map_or_else(|| r[k].to_string(), str::to_string)
            })
            .collect()
    };
    assert_eq!(
        field("agent"),
        SEVEN.iter().map(|s| s.to_string()).collect()
    );
    assert_eq!(field("env").len(), 6);
    assert_eq!(field("seed").len(), 4);
    let algos: BTreeSet<String> = runs
        .iter()
        .map(|r| r["config"]["algo"].as_str().unwrap().to_string())
        .collect();
    for algo in ["pets", "poplin_p", "mpdp", "mbpo", "m2ac", "sac", "ddpg"] {
        assert!(algos.contains(algo), "{algo} not planned: {algos:?}");
    }
}

/// Tiny networks, budgets and planners for every agent of the paper spec.
const TINY: &[&str] = &[
    "seeds=[0]",
    "envs.InvertedPendulum.steps=300",
    "eval={every=150, episodes=2}",
    "run={checkpoint_every=150, log_every=150}",
    "agents.SAC={hidden=[16, 16], batch_size=16, learning_starts=100}",
    "agents.DDPG={hidden=[16, 16], batch_size=16, learning_starts=100}",
    "agents.MBPO={model_train_freq=100, rollout_batch_size=50, epoch_length=100}",
    "agents.MBPO.sac={hidden=[16, 16], batch_size=16, learning_starts=100, updates_per_step=1}",
    "agents.MBPO.model={members=3, elites=2, hidden=[16], batch_size=32, max_epochs=3}",
    "agents.M2AC={model_train_freq=100, rollout_batch_size=50, epoch_length=100}",
    "agents.M2AC.sac={hidden=[16, 16], batch_size=16, learning_starts=100, updates_per_step=1}",
    "agents.M2AC.model={members=3, elites=2, hidden=[16], batch_size=32, max_epochs=3}",
    "agents.MPDP={model_train_freq=100, horizon=3}",
    "agents.MPDP.sac={hidden=[16, 16], batch_size=16, learning_starts=100, updates_per_step=1}",
    "agents.MPDP.model={members=3, elites=2, hidden=[16], batch_size=32, max_epochs=3}",
    "agents.PETS={learning_starts=100, model_train_freq=100, horizon=3, particles=2}",
    "agents.PETS.cem={population=16, elites=4, iterations=2}",
    "agents.PETS.model={members=3, elites=2, hidden=[16], batch_size=32, max_epochs=3}",
    "agents.POPLIN.planner={learning_starts=100, model_train_freq=100, horizon=3, particles=2}",
    "agents.POPLIN.planner.cem={population=16, elites=4, iterations=2}",
    "agents.POPLIN.planner.model={members=3, elites=2, hidden=[16], batch_size=32, max_epochs=3}",
    "agents.POPLIN.policy={hidden=[8], epochs=2}",
];

#[test]
fn every_agent_of_the_paper_runs_end_to_end_and_figure_1_draws_it() {
    let dir = Dir::new("paper");
    let runs = plan(TINY);
    assert_eq!(runs.len(), 6 * 7);
    let plan_file = dir.0.join("plan.jsonl");
    let lines: Vec<String> = runs.iter().map(|r| r.to_string()).collect();
    std::fs::write(&plan_file, lines.join("\n") + "\n").unwrap();
    // Every agent on InvertedPendulum: the cheapest task, the whole pipeline.
    let pendulum: Vec<&serde_json::Value> = runs
        .iter()
        .filter(|r| r["env"] == "InvertedPendulum")
        .collect();
    assert_eq!(pendulum.len(), 7);
    for run in &pendulum {
        let id = run["run_id"].as_str().unwrap();
        succeed(
            Command::new(env!("CARGO_BIN_EXE_mpdp"))
                .args(["run-one", "--quiet", "--plan"])
                .arg(&plan_file)
                .args(["--run-id", id, "--runs-dir"])
                .arg(dir.0.join("runs")),
        );
    }
    let mut c = Command::new(env!("CARGO_BIN_EXE_mpdp"));
    c.args(["plots", &spec()]);
    for s in TINY {
        c.args(["--set", s]);
    }
    succeed(
        c.arg("--runs-dir")
            .arg(dir.0.join("runs"))
            .arg("--plots-dir")
            .arg(dir.0.join("plots")),
    );
    let svg = std::fs::read_to_string(dir.0.join("plots/paper/learning_curves.svg")).unwrap();
    // Legend labels are text elements of their own, each on its own line.
    for agent in SEVEN {
        assert!(
            svg.lines().any(|l| l.trim() == agent),
            "{agent} not in Figure 1"
        );
    }
}
