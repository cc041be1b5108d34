//! Results you can look at: aggregation across seeds ([`aggregate()`]), the paper's figures
//! ([`figures`]) and a Markdown report, all from what is in runs/ alone.
//!
//! `mpdp aggregate SPEC` writes `runs/<name>/summary.parquet` and `final_scores.parquet`;
//! `mpdp plots SPEC` also draws `plots/<name>/*.svg|png` and `plots/<name>/report.md`.

mod against;
pub mod aggregate;
pub mod figures;
pub mod videos;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use aggregate::{FinalScore, Results};
use figures::Drawn;

use crate::spec::Plan;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("polars: {0}")]
    Polars(#[from] polars::error::PolarsError),
    #[error(
        "refusing to pool the runs of {group} on {env}: their {what} differ ({a} vs {b}); \
         rerun one of them or give them different names"
    )]
    Mixed {
        group: String,
        env: String,
        what: String,
        a: String,
        b: String,
    },
    #[error("font: {0}")]
    Font(String),
    #[error("drawing {0}")]
    Draw(String),
}

impl crate::config::IsUsage for ReportError {
    fn is_usage(&self) -> bool {
        matches!(self, ReportError::Mixed { .. } | ReportError::Font(_))
    }
}

/// What `aggregate` produced and where.
pub struct Aggregated {
    pub results: Results,
    pub summary: Vec<aggregate::SummaryRow>,
    pub finals: Vec<FinalScore>,
    pub summary_path: PathBuf,
    pub finals_path: PathBuf,
}

/// Aggregates the done runs of `plan` into `runs/<name>/summary.parquet` and
/// `runs/<name>/final_scores.parquet`.
pub fn aggregate(plan: &Plan, runs_dir: &Path) -> Result<Aggregated, ReportError> {
    let results = aggregate::load(plan, runs_dir)?;
    let (mut df, summary) = aggregate::summarize(&results)?;
    let finals = aggregate::final_scores(&results);
    let dir = runs_dir.join(&plan.spec.name);
    let summary_path = dir.join("summary.parquet");
    aggregate::write_parquet(&mut df, &summary_path)?;
    let finals_path = dir.join("final_scores.parquet");
    aggregate::write_parquet(&mut aggregate::final_frame(&finals)?, &finals_path)?;
    Ok(Aggregated {
        results,
        summary,
        finals,
        summary_path,
        finals_path,
    })
}

/// What `plots` produced.
pub struct Plotted {
    pub aggregated: Aggregated,
    pub figures: Vec<Drawn>,
    pub warnings: Vec<String>,
    pub report: PathBuf,
}

/// Aggregates, draws every declared figure and writes `report.md` into
/// `plots_dir/<name>/`.
pub fn plots(plan: &Plan, runs_dir: &Path, plots_dir: &Path) -> Result<Plotted, ReportError> {
    let aggregated = aggregate(plan, runs_dir)?;
    let dir = plots_dir.join(&plan.spec.name);
    let (figures, mut warnings) = figures::draw_all(
        &aggregated.results,
        &aggregated.summary,
        &aggregated.finals,
        &dir,
    )?;
    let clips = if plan.spec.report.videos {
        let (clips, why) = videos::render(&aggregated.results, runs_dir, &dir);
        warnings.extend(why);
        clips
    } else {
        Vec::new()
    };
    let report = dir.join("report.md");
    let text = markdown(&aggregated, &figures, &clips, &warnings, plan);
    crate::store::write_atomic(&report, text.as_bytes()).map_err(|e| ReportError::Io {
        path: report.clone(),
        source: e,
    })?;
    Ok(Plotted {
        aggregated,
        figures,
        warnings,
        report,
    })
}

/// One table per env: each agent's score per seed and, in brackets, its last evaluation, the
/// best score of each seed in bold; agents compared on the same seeds (same start states, the
/// same random warm-up where they share it) read off one column.
fn per_seed(s: &mut String, r: &aggregate::Results, envs: &[String], final_evals: usize) {
    for env in envs {
        let runs: Vec<&aggregate::RunResult> =
            r.runs.iter().filter(|x| &x.run.env == env).collect();
        let seeds: BTreeSet<u64> = runs.iter().map(|x| x.run.seed).collect();
        // (group, seed) → (score, last eval).
        let mut cell: BTreeMap<(String, u64), (f64, f64)> = BTreeMap::new();
        for x in &runs {
            if let (Some(score), Some(&(_, last))) = (
                x.final_score(final_evals),
                x.curve(aggregate::RETURN).last(),
            ) {
                cell.insert((x.run.label(), x.run.seed), (score, last));
            }
        }
        let best = |seed: u64| {
            cell.iter()
                .filter(|((_, sd), _)| *sd == seed)
                .map(|(_, v)| v.0)
                .fold(f64::NEG_INFINITY, f64::max)
        };
        let _ = writeln!(s, "### {env}, per seed\n");
        let _ = writeln!(
            s,
            "Score per seed [last evaluation]; the best score of each seed in bold.\n"
        );
        let head: Vec<String> = seeds.iter().map(|x| format!("seed {x}")).collect();
        let _ = writeln!(s, "| agent | {} |", head.join(" | "));
        let _ = writeln!(s, "|---|{}", "---|".repeat(seeds.len()));
        for g in r.labels() {
            if !cell.keys().any(|(cg, _)| *cg == g) {
                continue;
            }
            let cells: Vec<String> = seeds
                .iter()
                .map(|&seed| match cell.get(&(g.clone(), seed)) {
                    None => "–".to_string(),
                    Some(&(score, last)) if score == best(seed) => {
                        format!("**{score:.1}** [{last:.1}]")
                    }
                    Some(&(score, last)) => format!("{score:.1} [{last:.1}]"),
                })
                .collect();
            let _ = writeln!(s, "| {g} | {} |", cells.join(" | "));
        }
        let _ = writeln!(s);
    }
}

/// The mean of each quarter of a curve's logged span (first to last logged step, split into
/// four equal step ranges); None for a quarter with no point.
fn quarter_means(curve: &[(u64, f64)]) -> [Option<f64>; 4] {
    let (Some(&(lo, _)), Some(&(hi, _))) = (curve.first(), curve.last()) else {
        return [None; 4];
    };
    let span = (hi - lo).max(1) as f64;
    let mut sums = [(0.0, 0usize); 4];
    for &(step, v) in curve {
        let q = ((4.0 * (step - lo) as f64 / span) as usize).min(3);
        sums[q].0 += v;
        sums[q].1 += 1;
    }
    sums.map(|(sum, n)| (n > 0).then(|| sum / n as f64))
}

/// One run's curve of a metric: (agent label, seed, (step, value) points).
type SeedCurve = (String, u64, Vec<(u64, f64)>);

/// Whether the planning horizon rises over training (the paper's Figure 2), per run of an
/// agent that logs it: its mean horizon in each quarter of training and the change from the
/// first quarter to the last. `runs` are (agent label, seed, horizon curve).
fn horizon_by_quarter(s: &mut String, env: &str, runs: &[SeedCurve]) {
    if runs.is_empty() {
        return;
    }
    let _ = writeln!(s, "### {env}, mean horizon by quarter of training\n");
    let _ = writeln!(
        s,
        "`{}` averaged over each quarter of the steps it was logged at; the last column is \
         the last quarter minus the first.\n",
        figures::HORIZON
    );
    let _ = writeln!(s, "| agent | seed | Q1 | Q2 | Q3 | Q4 | Q4 − Q1 |");
    let _ = writeln!(s, "|---|---|---|---|---|---|---|");
    let fmt = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.2}"));
    for (label, seed, curve) in runs {
        let q = quarter_means(curve);
        let rise = q[3].zip(q[0]).map(|(last, first)| last - first);
        let _ = writeln!(
            s,
            "| {label} | {seed} | {} | {} |",
            q.map(fmt).join(" | "),
            rise.map_or("–".to_string(), |d| format!("{d:+.2}"))
        );
    }
    let _ = writeln!(s);
}

/// How many of a left-out run's latest evaluations the report shows.
const SHOWN_EVALS: usize = 5;

/// A left-out run's latest evaluations, `step: return` (oldest first; "–" for none).
fn evals_so_far(evals: &[(u64, f64)]) -> String {
    if evals.is_empty() {
        return "–".into();
    }
    let from = evals.len().saturating_sub(SHOWN_EVALS);
    let shown: Vec<String> = evals[from..]
        .iter()
        .map(|(step, v)| format!("{step}: {v:.1}"))
        .collect();
    let more = if from > 0 { "…, " } else { "" };
    format!("{more}{}", shown.join(", "))
}

/// Per agent and env, the finished runs' wall time per 10k env steps (mean, and the range
/// over runs) beside what `mpdp plan --cost` predicts for them on this machine from its cached
/// calibrations ("–" where none is cached): the estimate held against what it estimates.
fn compute_table(s: &mut String, r: &aggregate::Results, plan: &Plan) {
    use crate::sched::cost;
    if r.runs.is_empty() {
        return;
    }
    let costed = cost::from_cache(plan, &cost::Cache::load(&cost::Cache::default_path()));
    // (label, env) → (measured, predicted), seconds per 10k steps, in plan order.
    type Group = ((String, String), (Vec<f64>, Vec<f64>));
    let mut groups: Vec<Group> = Vec::new();
    for x in &r.runs {
        let steps = x.run.config.total_steps.max(1) as f64;
        let key = (x.run.label(), x.run.env.clone());
        let i = match groups.iter().position(|(k, _)| *k == key) {
            Some(i) => i,
            None => {
                groups.push((key, Default::default()));
                groups.len() - 1
            }
        };
        let (measured, predicted) = &mut groups[i].1;
        measured.push(x.wall_s() / steps * 1e4);
        if let Some(p) = costed.remaining(&x.run.config, 0) {
            predicted.push(p / steps * 1e4);
        }
    }
    let _ = writeln!(
        s,
        "Wall time per 10k env steps, evaluations included: measured over the finished runs \
         (mean, and min–max), and predicted by `mpdp plan --cost` on this machine ({}) from \
         its cached calibrations, which count every evaluation episode at full length.\n",
        crate::store::hostname()
    );
    let _ = writeln!(s, "| agent | env | runs | measured | predicted |");
    let _ = writeln!(s, "|---|---|---|---|---|");
    let fmt = crate::sched::fmt_duration;
    for ((label, env), (measured, predicted)) in &groups {
        let lo = measured.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = measured.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let pred = if predicted.is_empty() {
            "–".to_string()
        } else {
            fmt(crate::stats::mean(predicted))
        };
        let _ = writeln!(
            s,
            "| {label} | {env} | {} | {} ({}–{}) | {pred} |",
            measured.len(),
            fmt(crate::stats::mean(measured)),
            fmt(lo),
            fmt(hi)
        );
    }
    let _ = writeln!(s);
}

/// `report.md`: figures, final-score table (best mean per env in bold), run counts, compute
/// time and provenance.
pub fn markdown(
    agg: &Aggregated,
    figures: &[Drawn],
    clips: &[videos::Clip],
    warnings: &[String],
    plan: &Plan,
) -> String {
    let r = &agg.results;
    let spec = &r.spec;
    let mut s = String::new();
    let _ = writeln!(s, "# {}\n", spec.name);
    if !spec.description.is_empty() {
        let _ = writeln!(s, "{}\n", spec.description);
    }
    let _ = writeln!(
        s,
        "Generated by `mpdp plots {}` from `runs/{}/` (mpdp {}).\n",
        spec.path.display(),
        spec.name,
        env!("CARGO_PKG_VERSION")
    );

    let _ = writeln!(s, "## Runs\n");
    let total = crate::sched::unique_runs(plan).len();
    let compute: f64 = r.runs.iter().map(|x| x.wall_s()).sum();
    let _ = writeln!(
        s,
        "{total} runs planned; {} done and aggregated, {} left out. Compute: {} of run \
         wall-clock time in all.\n",
        r.runs.len(),
        r.ignored.len(),
        crate::sched::fmt_duration(compute)
    );
    let why = r.ignored_by_reason();
    for (k, n) in &why {
        let _ = writeln!(s, "- {n} {k}");
    }
    if !why.is_empty() {
        let _ = writeln!(s);
    }
    compute_table(&mut s, r, plan);

    let _ = writeln!(s, "## Final scores\n");
    let cfg = &spec.report;
    let _ = writeln!(
        s,
        "A run's score is the mean of its last {} evaluations (each the mean return of {} \
         deterministic episodes). Cells: mean ± std over seeds (the population std, ddof 0; \
         n = seeds), then the IQM with \
         its {:.0}% stratified-bootstrap interval ({} resamples). The best mean per env is in \
         bold.\n",
        cfg.final_evals,
        plan.runs.first().map_or(0, |p| p.config.eval.episodes),
        cfg.confidence * 100.0,
        cfg.bootstrap
    );
    let envs: Vec<String> = spec
        .envs
        .iter()
        .map(|t| t.name().to_string())
        .filter(|e| agg.finals.iter().any(|f| &f.env == e))
        .collect();
    if envs.is_empty() {
        let _ = writeln!(s, "No finished run has evaluations yet.\n");
    } else {
        let best: BTreeMap<&str, f64> = envs
            .iter()
            .map(|e| {
                let m = agg
                    .finals
                    .iter()
                    .filter(|f| &f.env == e)
                    .map(|f| f.mean)
                    .fold(f64::NEG_INFINITY, f64::max);
                (e.as_str(), m)
            })
            .collect();
        let _ = writeln!(s, "| agent | {} |", envs.join(" | "));
        let _ = writeln!(s, "|---|{}", "---|".repeat(envs.len()));
        let groups: Vec<String> = r
            .labels()
            .into_iter()
            .filter(|g| agg.finals.iter().any(|f| &f.group == g))
            .collect();
        for g in groups {
            let cells: Vec<String> = envs
                .iter()
                .map(
                    |e| match agg.finals.iter().find(|f| f.group == g && &f.env == e) {
                        None => "–".to_string(),
                        Some(f) => {
                            let main = format!("{:.1} ± {:.1}", f.mean, f.std);
                            let main = if f.mean == best[e.as_str()] {
                                format!("**{main}**")
                            } else {
                                main
                            };
                            format!(
                                "{main} (n={}); IQM {:.1} [{:.1}, {:.1}]",
                                f.scores.len(),
                                f.iqm,
                                f.iqm_lo,
                                f.iqm_hi
                            )
                        }
                    },
                )
                .collect();
            let _ = writeln!(s, "| {g} | {} |", cells.join(" | "));
        }
        let _ = writeln!(s);
        per_seed(&mut s, r, &envs, cfg.final_evals);
        for env in &envs {
            let runs: Vec<SeedCurve> = r
                .runs
                .iter()
                .filter(|x| &x.run.env == env)
                .map(|x| (x.run.label(), x.run.seed, x.curve(figures::HORIZON)))
                .filter(|(.., c)| !c.is_empty())
                .collect();
            horizon_by_quarter(&mut s, env, &runs);
        }
    }

    let _ = writeln!(s, "## Figures\n");
    for f in figures {
        let png = f.png.file_name().unwrap_or_default().to_string_lossy();
        let svg = f.svg.file_name().unwrap_or_default().to_string_lossy();
        let _ = writeln!(
            s,
            "### {}\n\n![{}]({png})\n\n[SVG]({svg})\n",
            f.title, f.title
        );
        if !f.sources.is_empty() {
            let _ = writeln!(s, "References (dashed, with a light ±std band):\n");
            for src in &f.sources {
                let _ = writeln!(s, "- {src}");
            }
            let _ = writeln!(s);
        }
    }
    for w in warnings {
        let _ = writeln!(s, "- {w}");
    }
    if figures.is_empty() && warnings.is_empty() {
        let _ = writeln!(s, "The spec declares no figures.\n");
    }
    against::section(&mut s, spec, &agg.summary);
    if !clips.is_empty() {
        let _ = writeln!(s);
    }
    videos::section(&mut s, clips);

    if !r.ignored.is_empty() {
        let _ = writeln!(s, "\n## Runs left out\n");
        let _ = writeln!(
            s,
            "Evaluations so far: the last {SHOWN_EVALS} a run has saved with its checkpoints, as \
             step: mean return.\n"
        );
        let _ = writeln!(
            s,
            "| run | agent | env | seed | why | evaluations so far |\n|---|---|---|---|---|---|"
        );
        for i in &r.ignored {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} |",
                i.run.run_id,
                i.run.label(),
                i.run.env,
                i.run.seed,
                i.why.replace('|', "/"),
                evals_so_far(&i.evals)
            );
        }
    }

    let _ = writeln!(s, "\n## Provenance\n");
    let set = |f: &dyn Fn(&serde_json::Value) -> String| -> String {
        let v: BTreeSet<String> = r.runs.iter().map(|x| f(&x.provenance)).collect();
        v.into_iter().collect::<Vec<_>>().join(", ")
    };
    let plain = |v: &serde_json::Value| v.as_str().map_or_else(|| v.to_string(), str::to_string);
    let _ = writeln!(
        s,
        "- code: {}",
        set(&|p| {
            let dirty = if p["git_dirty"].as_bool() == Some(true) {
                " (uncommitted changes)"
            } else {
                ""
            };
            format!("{}{dirty}", plain(&p["git_commit"]))
        })
    );
    let _ = writeln!(s, "- mpdp: {}", set(&|p| plain(&p["mpdp_version"])));
    let _ = writeln!(s, "- MuJoCo: {}", set(&|p| plain(&p["mujoco_version"])));
    let _ = writeln!(s, "- backend: {}", set(&|p| plain(&p["backend"])));
    let _ = writeln!(s, "- hosts: {}", set(&|p| plain(&p["host"])));
    let _ = writeln!(
        s,
        "- env XMLs (sha256): {}",
        set(&|p| format!(
            "{} {}",
            plain(&p["env"]["task"]),
            &plain(&p["env"]["xml_sha256"])
                .chars()
                .take(16)
                .collect::<String>()
        ))
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_horizon_table_averages_each_quarter_of_training() {
        // Logged at 6k..=20k every 1k: quarters [6k, 9.5k), [9.5k, 13k), [13k, 16.5k),
        // [16.5k, 20k].
        let curve: Vec<(u64, f64)> = (6..=20).map(|k| (k * 1000, k as f64)).collect();
        let q = quarter_means(&curve);
        assert_eq!(q, [Some(7.5), Some(11.0), Some(14.5), Some(18.5)]);
        assert_eq!(quarter_means(&[]), [None; 4]);
        assert_eq!(quarter_means(&[(5, 2.0)]), [Some(2.0), None, None, None]);
        let mut s = String::new();
        horizon_by_quarter(&mut s, "Hopper", &[("MPDP".into(), 1, curve)]);
        assert!(
            s.contains("| MPDP | 1 | 7.50 | 11.00 | 14.50 | 18.50 | +11.00 |"),
            "{s}"
        );
        let mut none = String::new();
        horizon_by_quarter(&mut none, "Hopper", &[]);
        assert!(none.is_empty());
    }

    #[test]
    fn a_left_out_run_shows_its_latest_evaluations() {
        assert_eq!(evals_so_far(&[]), "–");
        assert_eq!(evals_so_far(&[(1000, 12.345)]), "1000: 12.3");
        let evals: Vec<(u64, f64)> = (1..=7).map(|k| (k * 1000, k as f64)).collect();
        assert_eq!(
            evals_so_far(&evals),
            "…, 3000: 3.0, 4000: 4.0, 5000: 5.0, 6000: 6.0, 7000: 7.0"
        );
    }
}
