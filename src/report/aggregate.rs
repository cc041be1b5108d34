//! Aggregation: the `done` runs of a plan, checked for what may be pooled, each curve
//! resampled onto a common step grid, and statistics across seeds per (agent/variant, env,
//! metric, step), computed with polars and written to `summary.parquet`.
//!
//! Resampling rule: a run's curve is interpolated linearly between its own points onto the
//! grid; grid points before its first or after its last point are left out (never
//! extrapolated). Eval metrics use the spec's grid (every `eval.every` steps and the last
//! step); other metrics use the union of the steps the group's runs logged.
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use polars::prelude::*;

use super::ReportError;
use crate::runner::{MetricRow, read_metrics, read_saved_metrics};
use crate::sched::{self, RunStatus};
use crate::spec::{Plan, PlannedRun, Spec};
use crate::stats::{self, bootstrap_ci};

/// The eval metric curves and final scores are made of.
pub const RETURN: &str = "eval/return_mean";

/// A finished run and what it logged.
#[derive(Debug, Clone)]
pub struct RunResult {
    pub run: PlannedRun,
    pub provenance: serde_json::Value,
    pub rows: Vec<MetricRow>,
}

impl RunResult {
    /// (step, value) of `metric`, sorted by step (the last value of a repeated step wins).
    pub fn curve(&self, metric: &str) -> Vec<(u64, f64)> {
        curve(&self.rows, metric)
    }

    /// Wall-clock seconds the run took (its last logged row).
    pub fn wall_s(&self) -> f64 {
        self.rows
            .iter()
            .map(|r| r.wall_s)
            .filter(|w| w.is_finite())
            .fold(0.0, f64::max)
    }

    /// The mean of the last `k` evaluations' mean return.
    pub fn final_score(&self, k: usize) -> Option<f64> {
        let curve = self.curve(RETURN);
        let tail: Vec<f64> = curve.iter().rev().take(k).map(|(_, v)| *v).collect();
        (!tail.is_empty()).then(|| stats::mean(&tail))
    }
}

/// (step, value) of `metric` in `rows`, sorted by step (the last value of a repeated step
/// wins), finite values only.
fn curve(rows: &[MetricRow], metric: &str) -> Vec<(u64, f64)> {
    let mut by_step = BTreeMap::new();
    for r in rows.iter().filter(|r| r.metric == metric) {
        by_step.insert(r.step, r.value);
    }
    by_step.into_iter().filter(|(_, v)| v.is_finite()).collect()
}

/// A run left out of the aggregate, and why.
#[derive(Debug, Clone)]
pub struct Ignored {
    pub run: PlannedRun,
    pub why: String,
    /// (step, mean return) of the evaluations it has saved so far (an unfinished run's
    /// checkpointed metrics), for a look at runs in progress.
    pub evals: Vec<(u64, f64)>,
}

impl Ignored {
    fn new(run: &PlannedRun, dir: &Path, why: String) -> Self {
        // Best effort: a run whose saved metrics cannot be read shows no evaluations.
        let rows = read_saved_metrics(dir).unwrap_or_default();
        Ignored {
            run: run.clone(),
            why,
            evals: curve(&rows, RETURN),
        }
    }
}

/// The runs of a plan, read from runs/.
#[derive(Debug, Clone)]
pub struct Results {
    pub spec: Spec,
    pub runs: Vec<RunResult>,
    pub ignored: Vec<Ignored>,
    /// Every group label of the plan, in plan order.
    labels: Vec<String>,
}

impl Results {
    /// How many runs were left out, by kind of reason (`todo`, `failed`, `unreadable`...).
    pub fn ignored_by_reason(&self) -> BTreeMap<&str, usize> {
        let mut why = BTreeMap::new();
        for i in &self.ignored {
            *why.entry(i.why.split(':').next().unwrap_or(""))
                .or_default() += 1;
        }
        why
    }

    /// Group labels (`SAC`, `MPDP[beta=0.2]`) in plan order, whichever runs have finished:
    /// a group's colour and table row stay put as a sweep fills in.
    pub fn labels(&self) -> Vec<String> {
        self.labels.clone()
    }
}

/// Reads every `done` run of `plan`; the others are listed in `ignored` with the reason.
/// Refuses to pool runs of one group and env made with different env XMLs, MuJoCo versions
/// or eval protocols.
pub fn load(plan: &Plan, runs_dir: &Path) -> Result<Results, ReportError> {
    let mut runs = Vec::new();
    let mut ignored = Vec::new();
    for run in sched::unique_runs(plan) {
        let dir = sched::run_dir(runs_dir, run);
        let status = sched::status_of(&dir);
        if status != RunStatus::Done {
            let why = match status {
                RunStatus::Failed(reason) => format!("failed: {reason}"),
                other => other.name().to_string(),
            };
            ignored.push(Ignored::new(run, &dir, why));
            continue;
        }
        let read = read_metrics(&dir.join("metrics.parquet")).and_then(|rows| {
            let text = std::fs::read_to_string(dir.join("provenance.json"))
                .map_err(|e| format!("provenance.json: {e}"))?;
            let provenance =
                serde_json::from_str(&text).map_err(|e| format!("provenance.json: {e}"))?;
            Ok((rows, provenance))
        });
        match read {
            Ok((rows, provenance)) => runs.push(RunResult {
                run: run.clone(),
                provenance,
                rows,
            }),
            Err(why) => ignored.push(Ignored {
                run: run.clone(),
                why: format!("unreadable: {why}"),
                evals: Vec::new(),
            }),
        }
    }
    check_pooling(&runs)?;
    let mut seen = BTreeSet::new();
    let labels = sched::unique_runs(plan)
        .into_iter()
        .map(|r| r.label())
        .filter(|l| seen.insert(l.clone()))
        .collect();
    Ok(Results {
        spec: plan.spec.clone(),
        runs,
        ignored,
        labels,
    })
}

fn check_pooling(runs: &[RunResult]) -> Result<(), ReportError> {
    let mut first: BTreeMap<(String, String), &RunResult> = BTreeMap::new();
    for r in runs {
        let key = (r.run.label(), r.run.env.clone());
        let Some(a) = first.get(&key) else {
            first.insert(key, r);
            continue;
        };
        let facts = |x: &RunResult| {
            [
                (
                    "env XML (sha256)",
                    x.provenance["env"]["xml_sha256"].to_string(),
                ),
                ("MuJoCo version", x.provenance["mujoco_version"].to_string()),
                (
                    "eval protocol",
                    serde_json::to_string(&x.run.config.eval).expect("eval serialises"),
                ),
            ]
        };
        for ((what, va), (_, vb)) in facts(a).into_iter().zip(facts(r)) {
            if va != vb {
                return Err(ReportError::Mixed {
                    group: key.0.clone(),
                    env: key.1.clone(),
                    what: what.to_string(),
                    a: format!("{} (run {})", va, a.run.run_id),
                    b: format!("{} (run {})", vb, r.run.run_id),
                });
            }
        }
    }
    Ok(())
}

/// One row of `summary.parquet`.
#[derive(Debug, Clone, PartialEq)]
pub struct SummaryRow {
    pub group: String,
    pub agent: String,
    pub variant: String,
    pub env: String,
    pub metric: String,
    pub step: u64,
    pub seeds: u32,
    pub mean: f64,
    pub std: f64,
    pub min: f64,
    pub max: f64,
    pub iqm: f64,
    pub iqm_lo: f64,
    pub iqm_hi: f64,
}

/// The spec's step grid of a run: every `eval.every` steps and the last step.
fn eval_grid(run: &PlannedRun) -> Vec<u64> {
    let (every, total) = (run.config.eval.every, run.config.total_steps);
    let mut grid: Vec<u64> = (1..=total / every).map(|i| i * every).collect();
    if grid.last() != Some(&total) {
        grid.push(total);
    }
    grid
}

/// Linear interpolation of a sorted curve at `x`; `None` outside its range.
pub fn interpolate(curve: &[(u64, f64)], x: u64) -> Option<f64> {
    let i = curve.partition_point(|(s, _)| *s < x);
    let (s1, v1) = *curve.get(i)?;
    if s1 == x {
        return Some(v1);
    }
    let (s0, v0) = *curve.get(i.checked_sub(1)?)?;
    Some(v0 + (v1 - v0) * (x - s0) as f64 / (s1 - s0) as f64)
}

/// Evaluations at the grid step each was due at. An evaluation is due when a call's
/// transitions cross a multiple of `every` (and at the end); with several training envs a
/// call brings several transitions, so the one due at 1000 may run at 1002. Read at their
/// own steps, the first grid step would precede every evaluation and the others would be
/// interpolated between two of them.
fn on_eval_grid(curve: Vec<(u64, f64)>, every: u64, total: u64) -> Vec<(u64, f64)> {
    let due = |s: u64| if s >= total { total } else { s / every * every };
    let snapped: BTreeMap<u64, f64> = curve.into_iter().map(|(s, v)| (due(s), v)).collect();
    snapped.into_iter().collect()
}

/// Metrics aggregated: all but per-episode training rows (logged at irregular steps).
fn aggregated(metric: &str) -> bool {
    !metric.starts_with("train/episode_")
}

/// Resamples every run's curves and computes the statistics across seeds with polars.
pub fn summarize(results: &Results) -> Result<(DataFrame, Vec<SummaryRow>), ReportError> {
    let cfg = &results.spec.report;
    // Long table of resampled values: one row per (run, metric, grid step).
    let mut cols: [Vec<String>; 5] = Default::default();
    let (mut steps, mut seeds, mut values) = (Vec::new(), Vec::new(), Vec::new());
    let mut groups: BTreeMap<(String, String, String), Vec<&RunResult>> = BTreeMap::new();
    for r in &results.runs {
        let metrics: BTreeSet<&str> = r
            .rows
            .iter()
            .map(|m| m.metric.as_str())
            .filter(|m| aggregated(m))
            .collect();
        for m in metrics {
            groups
                .entry((r.run.label(), r.run.env.clone(), m.to_string()))
                .or_default()
                .push(r);
        }
    }
    for ((_, _, metric), runs) in &groups {
        let eval = metric.starts_with("eval/");
        let grid: Vec<u64> = if eval {
            eval_grid(&runs[0].run)
        } else {
            let all: BTreeSet<u64> = runs
                .iter()
                .flat_map(|r| r.curve(metric).into_iter().map(|(s, _)| s))
                .collect();
            all.into_iter().collect()
        };
        for r in runs {
            let curve = r.curve(metric);
            let curve = if eval {
                let c = &r.run.config;
                on_eval_grid(curve, c.eval.every, c.total_steps)
            } else {
                curve
            };
            for &x in &grid {
                if let Some(v) = interpolate(&curve, x) {
                    let run = &r.run;
                    for (c, v) in cols.iter_mut().zip([
                        run.label(),
                        run.agent.clone(),
                        run.variant.clone(),
                        run.env.clone(),
                        metric.clone(),
                    ]) {
                        c.push(v);
                    }
                    steps.push(x);
                    seeds.push(run.seed);
                    values.push(v);
                }
            }
        }
    }
    let [group, agent, variant, env, metric] = cols;
    let long = df!(
        "group" => group,
        "agent" => agent,
        "variant" => variant,
        "env" => env,
        "metric" => metric,
        "step" => steps,
        "seed" => seeds,
        "value" => values,
    )
    .map_err(polars_err)?;
    let keys = ["group", "agent", "variant", "env", "metric", "step"];
    let v = || col("value");
    let mut summary = long
        .lazy()
        .group_by(keys.map(col))
        .agg([
            len().cast(DataType::UInt32).alias("seeds"),
            v().mean().alias("mean"),
            v().std(0).alias("std"),
            v().min().alias("min"),
            v().max().alias("max"),
            v().alias("values"),
        ])
        .sort(keys, SortMultipleOptions::default())
        .collect()
        .map_err(polars_err)?;
    // IQM and its bootstrap interval from each group's values (one stratum: one env).
    let lists = summary
        .column("values")
        .and_then(|c| c.list().cloned())
        .map_err(polars_err)?;
    let (mut iqm, mut lo, mut hi) = (Vec::new(), Vec::new(), Vec::new());
    for (i, list) in lists.series_iter().enumerate() {
        let xs: Vec<f64> = list
            .map(|s| s.f64().map(|c| c.into_no_null_iter().collect()))
            .transpose()
            .map_err(polars_err)?
            .unwrap_or_default();
        let (l, h) = bootstrap_ci(&[&xs], stats::iqm, cfg.bootstrap, cfg.confidence, i as u64);
        iqm.push(stats::iqm(&xs));
        lo.push(l);
        hi.push(h);
    }
    summary = summary
        .drop("values")
        .map_err(polars_err)?
        .hstack(&[
            Column::new("iqm".into(), iqm),
            Column::new("iqm_lo".into(), lo),
            Column::new("iqm_hi".into(), hi),
        ])
        .map_err(polars_err)?;
    let rows = rows_of(&summary)?;
    Ok((summary, rows))
}

fn polars_err(e: PolarsError) -> ReportError {
    ReportError::Polars(e)
}

fn rows_of(df: &DataFrame) -> Result<Vec<SummaryRow>, ReportError> {
    let s = |name: &str| -> Result<Vec<String>, ReportError> {
        Ok(df
            .column(name)
            .and_then(|c| c.str().cloned())
            .map_err(polars_err)?
            .iter()
            .map(|v| v.unwrap_or_default().to_string())
            .collect())
    };
    let f = |name: &str| -> Result<Vec<f64>, ReportError> {
        Ok(df
            .column(name)
            .and_then(|c| c.f64().cloned())
            .map_err(polars_err)?
            .iter()
            .map(|v| v.unwrap_or(f64::NAN))
            .collect())
    };
    let steps: Vec<u64> = df
        .column("step")
        .and_then(|c| c.u64().cloned())
        .map_err(polars_err)?
        .into_no_null_iter()
        .collect();
    let seeds: Vec<u32> = df
        .column("seeds")
        .and_then(|c| c.u32().cloned())
        .map_err(polars_err)?
        .into_no_null_iter()
        .collect();
    let (group, agent, variant, env, metric) = (
        s("group")?,
        s("agent")?,
        s("variant")?,
        s("env")?,
        s("metric")?,
    );
    let (mean, std, min, max) = (f("mean")?, f("std")?, f("min")?, f("max")?);
    let (iqm, lo, hi) = (f("iqm")?, f("iqm_lo")?, f("iqm_hi")?);
    Ok((0..df.height())
        .map(|i| SummaryRow {
            group: group[i].clone(),
            agent: agent[i].clone(),
            variant: variant[i].clone(),
            env: env[i].clone(),
            metric: metric[i].clone(),
            step: steps[i],
            seeds: seeds[i],
            mean: mean[i],
            std: std[i],
            min: min[i],
            max: max[i],
            iqm: iqm[i],
            iqm_lo: lo[i],
            iqm_hi: hi[i],
        })
        .collect())
}

/// Final score of one (agent/variant, env): statistics over its runs' final scores.
#[derive(Debug, Clone)]
pub struct FinalScore {
    pub group: String,
    pub agent: String,
    pub variant: String,
    pub env: String,
    /// (seed, score) per run.
    pub scores: Vec<(u64, f64)>,
    pub mean: f64,
    pub std: f64,
    pub iqm: f64,
    pub iqm_lo: f64,
    pub iqm_hi: f64,
}

/// Final scores (the mean of each run's last `final_evals` evaluations) per group and env.
pub fn final_scores(results: &Results) -> Vec<FinalScore> {
    let cfg = &results.spec.report;
    let mut by: BTreeMap<(String, String), Vec<&RunResult>> = BTreeMap::new();
    for r in &results.runs {
        by.entry((r.run.label(), r.run.env.clone()))
            .or_default()
            .push(r);
    }
    by.into_iter()
        .enumerate()
        .filter_map(|(i, ((group, env), runs))| {
            let scores: Vec<(u64, f64)> = runs
                .iter()
                .filter_map(|r| r.final_score(cfg.final_evals).map(|s| (r.run.seed, s)))
                .collect();
            if scores.is_empty() {
                return None;
            }
            let xs: Vec<f64> = scores.iter().map(|(_, s)| *s).collect();
            let (lo, hi) =
                bootstrap_ci(&[&xs], stats::iqm, cfg.bootstrap, cfg.confidence, i as u64);
            Some(FinalScore {
                agent: runs[0].run.agent.clone(),
                variant: runs[0].run.variant.clone(),
                group,
                env,
                mean: stats::mean(&xs),
                std: stats::std(&xs),
                iqm: stats::iqm(&xs),
                iqm_lo: lo,
                iqm_hi: hi,
                scores,
            })
        })
        .collect()
}

/// Writes a DataFrame as Parquet, atomically.
pub fn write_parquet(df: &mut DataFrame, path: &Path) -> Result<(), ReportError> {
    let io = |e: std::io::Error| ReportError::Io {
        path: path.to_path_buf(),
        source: e,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    let tmp = crate::store::tmp_path(path);
    {
        let mut file = std::fs::File::create(&tmp).map_err(io)?;
        ParquetWriter::new(&mut file)
            .finish(df)
            .map_err(polars_err)?;
    }
    std::fs::rename(&tmp, path).map_err(io)
}

/// Final scores as a table for `final_scores.parquet`.
pub fn final_frame(scores: &[FinalScore]) -> Result<DataFrame, ReportError> {
    let s =
        |f: fn(&FinalScore) -> &str| scores.iter().map(f).map(str::to_string).collect::<Vec<_>>();
    let n = |f: fn(&FinalScore) -> f64| scores.iter().map(f).collect::<Vec<f64>>();
    df!(
        "group" => s(|x| &x.group),
        "agent" => s(|x| &x.agent),
        "variant" => s(|x| &x.variant),
        "env" => s(|x| &x.env),
        "seeds" => scores.iter().map(|x| x.scores.len() as u32).collect::<Vec<u32>>(),
        "mean" => n(|x| x.mean),
        "std" => n(|x| x.std),
        "iqm" => n(|x| x.iqm),
        "iqm_lo" => n(|x| x.iqm_lo),
        "iqm_hi" => n(|x| x.iqm_hi),
    )
    .map_err(polars_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: with 3 training envs the evaluations due at 1000, 2000 and 3000 ran at
    /// 1002, 2001 and 3000; the summary had no value at 1000 and interpolated 2000.
    #[test]
    fn evaluations_count_at_the_step_they_were_due() {
        let ran = vec![(1002, 10.0), (2001, 20.0), (3000, 30.0), (3500, 35.0)];
        let on_grid = on_eval_grid(ran, 1000, 3500);
        assert_eq!(
            on_grid,
            [(1000, 10.0), (2000, 20.0), (3000, 30.0), (3500, 35.0)]
        );
        // The last call may go past the end: its evaluation is the final one.
        let past = on_eval_grid(vec![(1000, 1.0), (2001, 2.0)], 1000, 2000);
        assert_eq!(past, [(1000, 1.0), (2000, 2.0)]);
    }

    #[test]
    fn interpolation_stays_inside_the_curve() {
        let c = [(100, 1.0), (200, 3.0)];
        assert_eq!(interpolate(&c, 100), Some(1.0));
        assert_eq!(interpolate(&c, 150), Some(2.0));
        assert_eq!(interpolate(&c, 200), Some(3.0));
        assert_eq!(interpolate(&c, 50), None);
        assert_eq!(interpolate(&c, 250), None);
        assert_eq!(interpolate(&[], 1), None);
    }
}
