//! Parity with Gymnasium itself: from the same initial states and actions, `mpdp env replay`
//! and Gymnasium's `*-v5` envs (tests/peers/gym_replay.py, in the venv `just setup` creates)
//! produce the same observations, rewards and flags to 1e-9, for all six tasks and both
//! observation variants, from several random initial states, for 1000 steps or until
//! termination.
use std::path::{Path, PathBuf};
use std::process::Command;

use mpdp::env::{self, Env, ObsVariant, Task};
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};

const TOLERANCE: f64 = 1e-9;
const STEPS: usize = 1000;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn python() -> PathBuf {
    let python = root().join(".deps/venv/bin/python");
    assert!(
        python.is_file(),
        "{} not found: run `just setup`",
        python.display()
    );
    python
}

struct Table {
    header: String,
    rows: Vec<Vec<f64>>,
}

fn run_csv(cmd: &mut Command) -> Table {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    let header = lines.next().expect("header").to_string();
    let rows = lines
        .map(|l| {
            l.split(',')
                .map(|v| {
                    v.parse::<f64>()
                        .unwrap_or_else(|_| panic!("bad number {v}"))
                })
                .collect()
        })
        .collect();
    Table { header, rows }
}

/// Writes init.json and actions.csv for one case; returns their paths.
fn write_case(
    dir: &Path,
    tag: &str,
    qpos: &[f64],
    qvel: &[f64],
    actions: &[Vec<f64>],
) -> (PathBuf, PathBuf) {
    let init = dir.join(format!("{tag}-init.json"));
    let fmt = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:e}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    std::fs::write(
        &init,
        format!("{{\"qpos\": [{}], \"qvel\": [{}]}}", fmt(qpos), fmt(qvel)),
    )
    .unwrap();
    let acts = dir.join(format!("{tag}-actions.csv"));
    let body: String = actions.iter().map(|a| fmt(a) + "\n").collect();
    std::fs::write(&acts, body).unwrap();
    (init, acts)
}

fn parity(task: Task, variant: ObsVariant) {
    let dir = std::env::temp_dir().join(format!(
        "mpdp-parity-{}-{task}-{variant}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let mut env = env::make(task, variant).unwrap();
    let (low, high) = (
        env.info().action_low.clone(),
        env.info().action_high.clone(),
    );
    // Initial states from the task's own noisy reset, with extra velocity for the last one;
    // actions over the full range, and over a narrow one (longer episodes before falling).
    for (seed, amplitude, extra_vel) in [(1u64, 1.0, 0.0), (2, 0.2, 0.0), (3, 0.05, 0.3)] {
        env.reset(Some(seed));
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed + 100);
        let qpos = env.qpos().to_vec();
        let qvel: Vec<f64> = env
            .qvel()
            .iter()
            .map(|v| v + extra_vel * rng.random_range(-1.0..1.0))
            .collect();
        let actions: Vec<Vec<f64>> = (0..STEPS)
            .map(|_| {
                low.iter()
                    .zip(&high)
                    .map(|(&l, &h)| amplitude * rng.random_range(l..h))
                    .collect()
            })
            .collect();
        let tag = format!("{task}-{variant}-{seed}");
        let (init, acts) = write_case(&dir, &tag, &qpos, &qvel, &actions);

        let ours = run_csv(
            Command::new(env!("CARGO_BIN_EXE_mpdp"))
                .args([
                    "env",
                    "replay",
                    "--env",
                    task.name(),
                    "--variant",
                    variant.name(),
                ])
                .arg("--init")
                .arg(&init)
                .arg("--actions")
                .arg(&acts),
        );
        let theirs = run_csv(
            Command::new(python())
                .current_dir(&dir) // MuJoCo's Python warnings land in MUJOCO_LOG.TXT in the cwd
                .arg(root().join("tests/peers/gym_replay.py"))
                .args(["--env", &task.gymnasium_id(), "--variant", variant.name()])
                .arg("--init")
                .arg(&init)
                .arg("--actions")
                .arg(&acts),
        );
        assert_eq!(ours.header, theirs.header, "{tag}: headers differ");
        assert_eq!(
            ours.rows.len(),
            theirs.rows.len(),
            "{tag}: episode lengths differ"
        );
        let mut worst = 0.0f64;
        for (step, (a, b)) in ours.rows.iter().zip(&theirs.rows).enumerate() {
            assert_eq!(a.len(), b.len(), "{tag}: row {step} widths differ");
            for (col, (x, y)) in a.iter().zip(b).enumerate() {
                let diff = (x - y).abs();
                assert!(
                    diff <= TOLERANCE || (x.is_nan() && y.is_nan()),
                    "{tag}: step {} column {col}: ours {x} vs Gymnasium {y}",
                    step + 1
                );
                worst = worst.max(diff);
            }
        }
        let last = ours.rows.last().unwrap();
        println!(
            "{tag}: {} steps, terminated={} truncated={}, max |diff| = {worst:e}",
            ours.rows.len(),
            last[2],
            last[3]
        );
        assert!(
            ours.rows.len() == STEPS || last[2] == 1.0,
            "{tag}: replay ended early"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn inverted_pendulum_matches_gymnasium() {
    parity(Task::InvertedPendulum, ObsVariant::V5);
}

#[test]
fn hopper_matches_gymnasium() {
    parity(Task::Hopper, ObsVariant::V5);
}

#[test]
fn walker2d_matches_gymnasium() {
    parity(Task::Walker2d, ObsVariant::V5);
}

#[test]
fn half_cheetah_matches_gymnasium() {
    parity(Task::HalfCheetah, ObsVariant::V5);
}

#[test]
fn ant_matches_gymnasium() {
    parity(Task::Ant, ObsVariant::V5);
}

#[test]
fn humanoid_matches_gymnasium() {
    parity(Task::Humanoid, ObsVariant::V5);
}

#[test]
fn ant_mbpo_variant_matches_gymnasium() {
    parity(Task::Ant, ObsVariant::Mbpo);
}

#[test]
fn humanoid_mbpo_variant_matches_gymnasium() {
    parity(Task::Humanoid, ObsVariant::Mbpo);
}
