//! `mpdp plan --cost`: calibrations made once per agent and task, cached per machine, summed
//! per agent and env; and `mpdp status`'s ETA from them before anything runs.
mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{Dir, succeed};

/// SAC and a small MBPO on InvertedPendulum, two seeds each: two calibrations.
const SPEC: &str = r#"
schema = 1
name = "cost"
seeds = [0, 1]

[envs.InvertedPendulum]
steps = 2000

[eval]
every = 500
episodes = 2

[agents.SAC]
algo = "sac"
hidden = [32, 32]
batch_size = 32
learning_starts = 100

[agents.MBPO]
algo = "mbpo"
steps = 1000
model_train_freq = 50
rollout_batch_size = 20
model = { members = 3, elites = 2, hidden = [32, 32], weight_decay = [0.0, 0.0, 0.0] }
sac = { hidden = [32, 32], batch_size = 32, learning_starts = 100, updates_per_step = 2 }

[devices]
runs_per_device = 2
"#;

fn mpdp(dir: &Dir, cache: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mpdp"));
    c.args(args)
        .arg("--runs-dir")
        .arg(dir.0.join("runs"))
        .env("MPDP_CACHE_DIR", cache);
    c
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The estimate column of each run row (`run_id agent env seed steps estimate status`).
fn estimates(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .skip(1)
        .take_while(|l| !l.contains(" runs: "))
        .map(|l| l.split_whitespace().nth(5).unwrap().to_string())
        .collect()
}

#[test]
fn plan_cost_calibrates_once_per_agent_and_task_and_then_reads_the_cache() {
    let d = Dir::new("cost");
    let spec = d.file("cost.toml", SPEC);
    let cache = d.0.join("cache");

    let first = succeed(&mut mpdp(&d, &cache, &["plan", &spec, "--cost"]));
    let (out, err) = text(&first);
    assert!(err.contains("calibrating SAC on InvertedPendulum"), "{err}");
    assert!(
        err.contains("calibrating MBPO on InvertedPendulum"),
        "{err}"
    );
    assert!(
        err.contains("model fit"),
        "MBPO's calibration measures its fit: {err}"
    );
    assert!(err.contains("calibrations: 2 made, 0 from"), "{err}");
    let est = estimates(&out);
    assert_eq!(est.len(), 4, "{out}");
    // Seeds of one agent share a calibration and have the same steps: the same estimate.
    assert_eq!(est[0], est[1], "{out}");
    assert_eq!(est[2], est[3], "{out}");
    for line in ["agent", "MBPO", "SAC"] {
        assert!(
            out.lines()
                .skip_while(|l| !l.starts_with("estimated compute"))
                .any(|l| l.starts_with(line)),
            "{line}: {out}"
        );
    }
    assert!(
        out.contains("total: ") && out.contains("core-hours"),
        "{out}"
    );
    let cached: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(cache.join("calibration.json")).unwrap())
            .unwrap();
    let machines = cached["machines"].as_object().unwrap();
    assert_eq!(machines.len(), 1);
    assert_eq!(
        machines.values().next().unwrap().as_object().unwrap().len(),
        2
    );

    // Again: nothing is calibrated, and the estimates are the cached ones.
    let again = succeed(&mut mpdp(&d, &cache, &["plan", &spec, "--cost"]));
    let (out2, err2) = text(&again);
    assert!(!err2.contains("calibrating"), "{err2}");
    assert!(err2.contains("calibrations: 0 made, 2 from"), "{err2}");
    assert_eq!(estimates(&out2), est);

    // Another seed list and step budget reuse the calibrations.
    let more = succeed(&mut mpdp(
        &d,
        &cache,
        &[
            "plan",
            &spec,
            "--cost",
            "--set",
            "seeds=[5]",
            "--set",
            "envs.InvertedPendulum.steps=4000",
        ],
    ));
    assert!(!text(&more).1.contains("calibrating"), "{}", text(&more).1);

    // `status` before anything ran: an ETA from the calibrations; without them, none.
    let status = succeed(&mut mpdp(&d, &cache, &["status", &spec]));
    let (out, _) = text(&status);
    assert!(
        out.contains("nothing is running; estimated from this machine's calibrations"),
        "{out}"
    );
    let empty = d.0.join("empty-cache");
    let status = succeed(&mut mpdp(&d, &empty, &["status", &spec]));
    let (out, _) = text(&status);
    assert!(
        out.contains("ETA unknown: nothing is running (`mpdp plan --cost`"),
        "{out}"
    );

    // The report holds each agent's measured wall time per 10k steps against the cached
    // prediction (the calibrations ignore the step budget), and shows "–" without one.
    let short = [
        "--set",
        "envs.InvertedPendulum.steps=300",
        "--set",
        "agents.MBPO.steps=300",
    ];
    let mut run = vec!["run", spec.as_str(), "--no-plots"];
    run.extend(short);
    succeed(&mut mpdp(&d, &cache, &run));
    let row = |report: &str, agent: &str| -> Vec<String> {
        let line = report
            .lines()
            .find(|l| l.starts_with(&format!("| {agent} | InvertedPendulum | 2 |")))
            .unwrap_or_else(|| panic!("no compute row for {agent} in:\n{report}"));
        line.split('|').map(|c| c.trim().to_string()).collect()
    };
    for (cache, predicted) in [(&cache, true), (&empty, false)] {
        let mut plots = vec!["plots", spec.as_str()];
        plots.extend(short);
        let mut cmd = mpdp(&d, cache, &plots);
        cmd.arg("--plots-dir").arg(d.0.join("plots"));
        succeed(&mut cmd);
        let report = std::fs::read_to_string(d.0.join("plots/cost/report.md")).unwrap();
        for agent in ["SAC", "MBPO"] {
            let cells = row(&report, agent);
            assert!(
                cells[4].contains('(') && cells[4].contains('–'),
                "{cells:?}"
            );
            assert_eq!(cells[5] != "–", predicted, "{cells:?}");
            if predicted {
                assert!(cells[5].ends_with('s'), "{cells:?}");
            }
        }
    }
}

/// A cache that cannot be read costs a recalibration and a warning, never the command.
#[test]
fn a_corrupt_cache_is_recalibrated_with_a_warning() {
    let d = Dir::new("corrupt");
    let spec = d.file("cost.toml", SPEC);
    let cache = d.0.join("cache");
    std::fs::create_dir_all(&cache).unwrap();
    std::fs::write(cache.join("calibration.json"), "{\"machines\": 3").unwrap();
    let out = succeed(&mut mpdp(&d, &cache, &["plan", &spec, "--cost"]));
    let (_, err) = text(&out);
    assert!(err.contains("warning: calibration cache not read"), "{err}");
    assert!(err.contains("calibrations: 2 made"), "{err}");
    let text = std::fs::read_to_string(cache.join("calibration.json")).unwrap();
    serde_json::from_str::<serde_json::Value>(&text).expect("the cache is whole again");
}

#[test]
fn recalibrate_needs_cost_and_cost_excludes_json() {
    let d = Dir::new("flags");
    let spec = d.file("cost.toml", SPEC);
    let cache = d.0.join("cache");
    for args in [
        vec!["plan", spec.as_str(), "--recalibrate"],
        vec!["plan", spec.as_str(), "--cost", "--json"],
    ] {
        let out = mpdp(&d, &cache, &args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
    assert!(!cache.exists(), "nothing was calibrated");
}
