//! Aggregation and figures on real pipeline output: a small sweep runs, then `mpdp plots`;
//! summary.parquet is checked against an independent computation on the raw metrics, every
//! declared figure must exist as a valid SVG and PNG, and missing or partial data (failed
//! runs, runs not run, unreadable metrics, absent metrics, nothing done at all) never
//! crashes aggregation or plotting.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use mpdp::runner::read_metrics;
use mpdp::sched;
use mpdp::spec;
use polars::prelude::*;

mod common;
use common::Dir;

const SPEC: &str = r#"
schema = 1
name = "report"
description = "Two SAC variants and DDPG on two tasks"
seeds = [0, 1, 2]

[envs.InvertedPendulum]
steps = 300

[envs.Hopper]
steps = 300

[eval]
every = 100
episodes = 2

[run]
checkpoint_every = 100
log_every = 100

[agents.SAC]
algo = "sac"
hidden = [32, 32]
batch_size = 32
learning_starts = 100

[sweep.agents.SAC]
gamma = [0.9, 0.99]

[agents.DDPG]
algo = "ddpg"
hidden = [32, 32]
batch_size = 32
learning_starts = 100

# Diverges on Hopper: those runs fail and are left out.
[agents.DDPG.per_env.Hopper]
critic_lr = 1e30
actor_lr = 1e30

[report]
final_evals = 2
bootstrap = 500

[[figures]]
kind = "learning_curves"
references = [{ label = "a reference", value = 50.0 }]

[[figures]]
kind = "metric"
metric = "train/critic_loss"
agents = ["SAC"]

[[figures]]
kind = "final_vs_param"
param = "gamma"

[[figures]]
kind = "horizon"
"#;

/// Seed → (final score, last evaluation) of one agent on one env.
type BySeed = BTreeMap<u64, (f64, f64)>;

fn mpdp(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mpdp"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("spawn mpdp")
}

/// (step, eval/return_mean) of a finished run, from its own metrics file.
fn evals(run_dir: &Path) -> Vec<(u64, f64)> {
    read_metrics(&run_dir.join("metrics.parquet"))
        .unwrap()
        .into_iter()
        .filter(|r| r.metric == "eval/return_mean")
        .map(|r| (r.step, r.value))
        .collect()
}

fn col_f64(df: &DataFrame, name: &str) -> Vec<f64> {
    df.column(name)
        .unwrap()
        .f64()
        .unwrap()
        .iter()
        .map(|v| v.unwrap())
        .collect()
}

fn col_str(df: &DataFrame, name: &str) -> Vec<String> {
    df.column(name)
        .unwrap()
        .str()
        .unwrap()
        .iter()
        .map(|v| v.unwrap().to_string())
        .collect()
}

/// The test's own statistics: population std; IQM as scipy's trim_mean(x, 0.25).
fn independent(xs: &[f64]) -> (f64, f64, f64, f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let std = (xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n).sqrt();
    let mut sorted = xs.to_vec();
    sorted.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let k = xs.len() / 4;
    let mid = &sorted[k..xs.len() - k];
    let iqm = mid.iter().sum::<f64>() / mid.len() as f64;
    (mean, std, sorted[0], *sorted.last().unwrap(), iqm)
}

fn assert_svg(path: &Path) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        text.contains("<svg") && text.trim_end().ends_with("</svg>"),
        "{}",
        path.display()
    );
    assert!(
        text.len() > 3000,
        "{} is only {} bytes",
        path.display(),
        text.len()
    );
}

fn assert_png(path: &Path) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{}", path.display());
    assert!(
        bytes.len() > 10_000,
        "{} is only {} bytes",
        path.display(),
        bytes.len()
    );
    // IHDR: width and height, big-endian, at bytes 16..24.
    let w = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    let h = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
    assert!(w >= 400 && h >= 300, "{}: {w}x{h}", path.display());
}

#[test]
fn summary_matches_an_independent_computation_and_every_figure_is_drawn() {
    let d = Dir::new("sweep");
    std::fs::write(d.0.join("spec.toml"), SPEC).unwrap();
    let out = mpdp(&d.0, &["run", "spec.toml"]);
    let err = String::from_utf8_lossy(&out.stderr);
    // DDPG on Hopper diverges: the sweep reports failures but plots the rest.
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("report plots/report/report.md"), "{err}");

    let plan = spec::load(&d.0.join("spec.toml"), &[]).unwrap();
    assert_eq!(plan.runs.len(), (2 + 1) * 2 * 3);
    let runs_dir = d.0.join("runs");
    // Independent: eval/return_mean per (group, env, step) straight from each run's file.
    let mut values: BTreeMap<(String, String, u64), Vec<f64>> = BTreeMap::new();
    let mut finals: BTreeMap<(String, String), Vec<f64>> = BTreeMap::new();
    // (group, env) → seed → (score, last eval), for the per-seed tables.
    let mut per_seed: BTreeMap<(String, String), BySeed> = BTreeMap::new();
    for run in &plan.runs {
        let dir = sched::run_dir(&runs_dir, run);
        if sched::status_of(&dir) != sched::RunStatus::Done {
            assert!(
                run.agent == "DDPG" && run.env == "Hopper",
                "{} did not finish",
                run.run_id
            );
            continue;
        }
        let evals = evals(&dir);
        assert_eq!(
            evals.iter().map(|e| e.0).collect::<Vec<_>>(),
            [100, 200, 300]
        );
        for (step, v) in &evals {
            values
                .entry((run.label(), run.env.clone(), *step))
                .or_default()
                .push(*v);
        }
        let last: Vec<f64> = evals.iter().rev().take(2).map(|e| e.1).collect();
        let score = last.iter().sum::<f64>() / 2.0;
        finals
            .entry((run.label(), run.env.clone()))
            .or_default()
            .push(score);
        per_seed
            .entry((run.label(), run.env.clone()))
            .or_default()
            .insert(run.seed, (score, last[0]));
    }
    let file = std::fs::File::open(runs_dir.join("report/summary.parquet")).unwrap();
    let df = ParquetReader::new(file).finish().unwrap();
    let (groups, envs, metrics) = (
        col_str(&df, "group"),
        col_str(&df, "env"),
        col_str(&df, "metric"),
    );
    let steps: Vec<u64> = df
        .column("step")
        .unwrap()
        .u64()
        .unwrap()
        .iter()
        .map(|v| v.unwrap())
        .collect();
    let seeds: Vec<u32> = df
        .column("seeds")
        .unwrap()
        .u32()
        .unwrap()
        .iter()
        .map(|v| v.unwrap())
        .collect();
    let (mean, std, min, max, iqm) = (
        col_f64(&df, "mean"),
        col_f64(&df, "std"),
        col_f64(&df, "min"),
        col_f64(&df, "max"),
        col_f64(&df, "iqm"),
    );
    let (lo, hi) = (col_f64(&df, "iqm_lo"), col_f64(&df, "iqm_hi"));
    let mut checked = 0;
    for i in 0..df.height() {
        if metrics[i] != "eval/return_mean" {
            continue;
        }
        let xs = &values[&(groups[i].clone(), envs[i].clone(), steps[i])];
        let (m, s, a, b, q) = independent(xs);
        assert_eq!(seeds[i] as usize, xs.len());
        for (got, want, what) in [
            (mean[i], m, "mean"),
            (std[i], s, "std"),
            (min[i], a, "min"),
            (max[i], b, "max"),
            (iqm[i], q, "iqm"),
        ] {
            assert!(
                (got - want).abs() <= 1e-9 * want.abs().max(1.0),
                "{what} of {} {} {}: {got} vs {want}",
                groups[i],
                envs[i],
                steps[i]
            );
        }
        assert!(
            lo[i] <= iqm[i] + 1e-9
                && iqm[i] <= hi[i] + 1e-9
                && lo[i] >= a - 1e-9
                && hi[i] <= b + 1e-9
        );
        checked += 1;
    }
    // SAC x 2 variants x 2 envs + DDPG on InvertedPendulum, 3 grid steps each.
    assert_eq!(checked, (2 * 2 + 1) * 3);
    assert_eq!(checked, values.len());

    let file = std::fs::File::open(runs_dir.join("report/final_scores.parquet")).unwrap();
    let fdf = ParquetReader::new(file).finish().unwrap();
    let (fg, fe, fm) = (
        col_str(&fdf, "group"),
        col_str(&fdf, "env"),
        col_f64(&fdf, "mean"),
    );
    assert_eq!(fdf.height(), finals.len());
    for i in 0..fdf.height() {
        let (m, ..) = independent(&finals[&(fg[i].clone(), fe[i].clone())]);
        assert!(
            (fm[i] - m).abs() < 1e-9,
            "final score of {} {}",
            fg[i],
            fe[i]
        );
    }

    let plots = d.0.join("plots/report");
    for stem in ["learning_curves", "train_critic_loss", "final_vs_param"] {
        assert_svg(&plots.join(format!("{stem}.svg")));
        assert_png(&plots.join(format!("{stem}.png")));
    }
    // MPDP's horizon metric is absent: skipped with a warning, no file.
    assert!(!plots.join("horizon.png").exists());
    assert!(err.contains("warning: figure horizon skipped"), "{err}");
    let report = std::fs::read_to_string(plots.join("report.md")).unwrap();
    assert!(
        report.contains("18 runs planned; 15 done and aggregated, 3 left out"),
        "{report}"
    );
    assert!(report.contains("| SAC[gamma=0.99] |"), "{report}");
    assert!(
        report.contains("![Learning curves](learning_curves.png)"),
        "{report}"
    );
    assert!(report.contains("diverged"), "{report}");
    // The best mean per env is in bold (ties: each of them).
    let (scores, rest) = report.split_once("### ").unwrap();
    let bold = scores.matches("**").count() / 2;
    assert!((2..=5).contains(&bold), "{report}");
    // Per seed: one table per env, every cell from the run's own evaluations, the best score
    // of each seed in bold.
    for env in ["InvertedPendulum", "Hopper"] {
        let table = rest
            .split_once(&format!("{env}, per seed"))
            .unwrap_or_else(|| panic!("no per-seed table for {env}: {report}"))
            .1
            .split("\n\n")
            .nth(2)
            .unwrap();
        assert!(
            table.starts_with("| agent | seed 0 | seed 1 | seed 2 |"),
            "{table}"
        );
        let rows: Vec<(&String, &BySeed)> = per_seed
            .iter()
            .filter(|((_, e), _)| e == env)
            .map(|((g, _), v)| (g, v))
            .collect();
        assert_eq!(table.lines().count(), 2 + rows.len(), "{table}");
        for (group, by_seed) in &rows {
            let cells: Vec<String> = (0..3u64)
                .map(|seed| {
                    let (score, last) = by_seed[&seed];
                    let best = rows
                        .iter()
                        .map(|(_, v)| v[&seed].0)
                        .fold(f64::NEG_INFINITY, f64::max);
                    if score == best {
                        format!("**{score:.1}** [{last:.1}]")
                    } else {
                        format!("{score:.1} [{last:.1}]")
                    }
                })
                .collect();
            let line = format!("| {group} | {} |", cells.join(" | "));
            assert!(table.contains(&line), "{line} in\n{table}");
        }
    }
}

/// Regression: with several training envs an evaluation runs a few steps after it is due
/// (at 102 for 100); the summary dropped the first grid step and interpolated the others.
#[test]
fn evaluations_of_several_envs_are_summarised_at_the_steps_they_were_due() {
    let d = Dir::new("num-envs");
    let spec = SPEC.replace("[run]\n", "[run]\nnum_envs = 3\n");
    std::fs::write(d.0.join("spec.toml"), spec).unwrap();
    let sets = ["agents.SAC.gamma=0.9", "envs.Hopper.steps=1", "seeds=[0]"];
    let mut args = vec!["run", "spec.toml", "--no-plots"];
    for s in &sets {
        args.extend(["--set", s]);
    }
    let out = mpdp(&d.0, &args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.code().is_some_and(|c| c <= 1), "{err}");
    let sets: Vec<String> = sets.map(String::from).to_vec();
    let plan = spec::load(&d.0.join("spec.toml"), &sets).unwrap();
    let run = plan
        .runs
        .iter()
        .find(|r| r.agent == "SAC" && r.env == "InvertedPendulum")
        .unwrap();
    let dir = sched::run_dir(&d.0.join("runs"), run);
    let evals = evals(&dir);
    assert_eq!(
        evals.iter().map(|e| e.0).collect::<Vec<_>>(),
        [102, 201, 300]
    );
    let results = mpdp::report::aggregate::load(&plan, &d.0.join("runs")).unwrap();
    let (_, rows) = mpdp::report::aggregate::summarize(&results).unwrap();
    let summarised: Vec<(u64, f64)> = rows
        .iter()
        .filter(|r| r.group == run.label() && r.env == run.env && r.metric == "eval/return_mean")
        .map(|r| (r.step, r.mean))
        .collect();
    let due: Vec<(u64, f64)> = [100, 200, 300]
        .into_iter()
        .zip(evals.iter().map(|e| e.1))
        .collect();
    assert_eq!(summarised, due);
}

#[test]
fn partial_and_missing_data_never_crash_aggregation_or_plots() {
    let d = Dir::new("partial");
    std::fs::write(d.0.join("spec.toml"), SPEC).unwrap();
    // Nothing run yet: no crash, every figure skipped, a report that says so.
    let out = mpdp(&d.0, &["plots", "spec.toml"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("left out 18 runs: 18 todo"), "{err}");
    let report = std::fs::read_to_string(d.0.join("plots/report/report.md")).unwrap();
    assert!(
        report.contains("No finished run has evaluations yet."),
        "{report}"
    );

    // Only InvertedPendulum, then damage two finished runs.
    let out = mpdp(
        &d.0,
        &[
            "run",
            "spec.toml",
            "--no-plots",
            "--set",
            "envs.Hopper.steps=1",
        ],
    );
    assert!(out.status.success() || out.status.code() == Some(1));
    let plan = spec::load(&d.0.join("spec.toml"), &["envs.Hopper.steps=1".into()]).unwrap();
    let done: Vec<PathBuf> = plan
        .runs
        .iter()
        .map(|r| sched::run_dir(&d.0.join("runs"), r))
        .filter(|p| sched::status_of(p) == sched::RunStatus::Done)
        .collect();
    assert!(done.len() >= 2);
    std::fs::write(done[0].join("metrics.parquet"), b"not parquet").unwrap();
    std::fs::remove_file(done[1].join("status.json")).unwrap();
    let out = mpdp(
        &d.0,
        &["plots", "spec.toml", "--set", "envs.Hopper.steps=1"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("1 unreadable"), "{err}");
    // A run without its status.json but with its metrics.parquet has finished (the file is
    // written only then): it is aggregated, not left out as to do.
    assert!(!err.contains("todo"), "{err}");
    assert!(err.contains("aggregated 17 done runs"), "{err}");
    assert_png(&d.0.join("plots/report/learning_curves.png"));

    // Regression: groups were listed finished runs first, so a group's colour and table row
    // moved as a sweep filled in. With none of the first group's runs done, the order is
    // still the plan's.
    let in_plan: Vec<String> = plan.runs.iter().fold(Vec::new(), |mut ls, r| {
        if !ls.contains(&r.label()) {
            ls.push(r.label());
        }
        ls
    });
    for r in plan.runs.iter().filter(|r| r.label() == in_plan[0]) {
        let dir = sched::run_dir(&d.0.join("runs"), r);
        for file in ["status.json", "metrics.parquet"] {
            let _ = std::fs::remove_file(dir.join(file));
        }
    }
    let results = mpdp::report::aggregate::load(&plan, &d.0.join("runs")).unwrap();
    assert!(results.runs.iter().all(|r| r.run.label() != in_plan[0]));
    assert!(!results.runs.is_empty());
    assert_eq!(results.labels(), in_plan);
}

#[test]
fn runs_with_different_env_files_are_not_pooled() {
    let d = Dir::new("mixed");
    std::fs::write(d.0.join("spec.toml"), SPEC).unwrap();
    let sets = ["--set", "envs.Hopper.steps=1", "--set", "seeds=[0, 1]"];
    let mut args = vec!["run", "spec.toml", "--no-plots"];
    args.extend(sets);
    mpdp(&d.0, &args);
    let plan = spec::load(
        &d.0.join("spec.toml"),
        &["envs.Hopper.steps=1".into(), "seeds=[0, 1]".into()],
    )
    .unwrap();
    let run = plan
        .runs
        .iter()
        .find(|r| r.agent == "DDPG" && r.env == "InvertedPendulum" && r.seed == 1)
        .unwrap();
    let prov = sched::run_dir(&d.0.join("runs"), run).join("provenance.json");
    let text = std::fs::read_to_string(&prov).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["env"]["xml_sha256"] = "0000".into();
    std::fs::write(&prov, v.to_string()).unwrap();
    let mut args = vec!["aggregate", "spec.toml"];
    args.extend(sets);
    let out = mpdp(&d.0, &args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(
            "refusing to pool the runs of DDPG on InvertedPendulum: their env XML (sha256) differ"
        ),
        "{err}"
    );
}

/// A published curve on a figure: the SVG has its dashed series (many short dashes in the
/// reference's colour) and its band, and report.md names its source under the figure. The
/// reference spells its env as a Gymnasium id in lower case, which the spec accepts.
/// Regression: the comparison table matched the env by its spelling and found no run.
#[test]
fn a_reference_curve_is_drawn_dashed_and_its_source_is_named() {
    let dir = Dir::new("reference");
    let references = format!(
        "figures=[{{ kind = \"learning_curves\", references = [{{ label = \"SAC (published)\", \
         file = \"{}\", env = \"hopper-v5\" }}] }}]",
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("experiments/references/sac-hopper-tianshou.csv")
            .display()
    );
    let out = common::run_spec(
        &dir,
        "experiments/smoke.toml",
        &[
            &references,
            "envs.Hopper.steps=20000",
            "agents.SAC.learning_starts=19900",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let svg = std::fs::read_to_string(dir.0.join("plots/smoke/learning_curves.svg")).unwrap();
    // SAC's blue at 0.9 opacity: the reference's dashes over 10k–20k (our own curve is opaque).
    let dashes = svg
        .lines()
        .filter(|l| l.starts_with("<polyline") && l.contains("stroke=\"#0072B2\""))
        .filter(|l| l.contains("opacity=\"0.9\""))
        .count();
    assert!(dashes >= 10, "{dashes} dashes of the reference in:\n{svg}");
    assert!(svg.contains("SAC (published)"), "no legend entry");
    let report = std::fs::read_to_string(dir.0.join("plots/smoke/report.md")).unwrap();
    assert!(
        report.contains("**SAC (published)**") && report.contains("thu-ml/tianshou"),
        "{report}"
    );
    // Held against SAC (named like the label's first word) at the reference's steps in the
    // runs' range, 10k and 15k and 20k: SAC learned only from 19,900, so it is far below the
    // published band (↓) where it has been evaluated, and has no evaluation past 20k.
    let held = report
        .split("## Against the published curves")
        .nth(1)
        .unwrap_or_else(|| panic!("no comparison section in:\n{report}"));
    assert!(held.contains("### SAC (published) on Hopper"), "{held}");
    for step in [
        "10000 | 47.5 ± 36.1",
        "15000 | 275.8 ± 59.5",
        "20000 | 282.1 ± 46.6",
    ] {
        let row = held
            .lines()
            .find(|l| l.starts_with(&format!("| {step} |")))
            .unwrap_or_else(|| panic!("no row {step} in:\n{held}"));
        assert!(row.contains("(n=2)"), "{row}");
    }
    let row = held.lines().find(|l| l.starts_with("| 20000 |")).unwrap();
    assert!(row.ends_with("(n=2) ↓ |"), "{row}");
    assert!(!held.contains("| 25000 |"), "{held}");
}
