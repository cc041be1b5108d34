//! The report's "Against the published curves": every published curve a learning-curve figure
//! draws, step by step, beside the mean ± std of the agents it is held against, with the
//! steps where ours falls below the published band (mean − std) marked.
use std::fmt::Write as _;

use super::aggregate::{RETURN, SummaryRow, interpolate};
use super::figures::{env_filter, label_word, references_on, wanted};
use crate::spec::{FigureEntry, FigureKind, ReferenceEntry, Spec};

/// At most this many rows per table; longer curves are read at round steps.
const MAX_ROWS: usize = 12;

/// The agents `r` is held against: those it names, else those whose name is the label's
/// first word or starts with it followed by `-`, `_` or a space (case-insensitive).
fn agents_of<'a>(r: &ReferenceEntry, fig: &'a FigureEntry, spec: &'a Spec) -> Vec<&'a str> {
    let word = label_word(&r.label).to_lowercase();
    wanted(&fig.agents, spec.agents.iter())
        .into_iter()
        .map(String::as_str)
        .filter(|a| {
            if !r.agents.is_empty() {
                return r.agents.iter().any(|x| x == a);
            }
            let a = a.to_lowercase();
            !word.is_empty()
                && a.strip_prefix(&word)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with(['-', '_', ' ']))
        })
        .collect()
}

/// The spacing of the rows: the smallest 1, 2 or 5 × 10^k that leaves at most [`MAX_ROWS`]
/// multiples of it in `lo..=hi`.
fn spacing(lo: f64, hi: f64) -> f64 {
    let mut unit = 1.0;
    loop {
        for m in [1.0, 2.0, 5.0] {
            let d = m * unit;
            let rows = (hi / d).floor() - ((lo - 1e-9) / d).ceil() + 1.0;
            if rows <= MAX_ROWS as f64 {
                return d;
            }
        }
        unit *= 10.0;
    }
}

/// A published curve's point: (step, mean, std if given).
type Point = (f64, f64, Option<f64>);

/// At most [`MAX_ROWS`] of `points`: all of them when they are few, else those at round steps
/// ([`spacing`]), else (a curve whose steps are not round) every k-th.
fn thin(points: Vec<&Point>, lo: f64, hi: f64) -> Vec<&Point> {
    if points.len() <= MAX_ROWS {
        return points;
    }
    let d = spacing(lo, hi);
    let round: Vec<_> = points
        .iter()
        .copied()
        .filter(|p| (p.0 / d - (p.0 / d).round()).abs() < 1e-9)
        .collect();
    if !round.is_empty() {
        return round;
    }
    let k = points.len().div_ceil(MAX_ROWS);
    points.into_iter().step_by(k).collect()
}

/// One group's return curve: (step, mean), (step, std), (step, seeds).
struct Curve {
    group: String,
    mean: Vec<(u64, f64)>,
    std: Vec<(u64, f64)>,
    seeds: Vec<(u64, u32)>,
}

impl Curve {
    /// Mean, std and seeds at `step` (interpolated between evaluations); None outside the
    /// curve.
    fn at(&self, step: u64) -> Option<(f64, f64, u32)> {
        let mean = interpolate(&self.mean, step)?;
        let std = interpolate(&self.std, step)?;
        let i = self.seeds.partition_point(|(s, _)| *s <= step);
        Some((mean, std, self.seeds[i.saturating_sub(1)].1))
    }
}

fn curves(summary: &[SummaryRow], env: &str, agents: &[&str]) -> Vec<Curve> {
    let mut out: Vec<Curve> = Vec::new();
    for row in summary {
        if row.metric != RETURN || row.env != env || !agents.contains(&row.agent.as_str()) {
            continue;
        }
        let i = match out.iter().position(|c| c.group == row.group) {
            Some(i) => i,
            None => {
                out.push(Curve {
                    group: row.group.clone(),
                    mean: Vec::new(),
                    std: Vec::new(),
                    seeds: Vec::new(),
                });
                out.len() - 1
            }
        };
        let c = &mut out[i];
        c.mean.push((row.step, row.mean));
        c.std.push((row.step, row.std));
        c.seeds.push((row.step, row.seeds));
    }
    for c in &mut out {
        c.mean.sort_by_key(|p| p.0);
        c.std.sort_by_key(|p| p.0);
        c.seeds.sort_by_key(|p| p.0);
    }
    out
}

/// One table: the reference's points in the agents' range (at round steps when there are
/// many), published mean ± std beside each group's.
fn table(s: &mut String, r: &ReferenceEntry, env: &str, groups: &[Curve]) {
    let Some(curve) = &r.curve else { return };
    let hi = groups
        .iter()
        .filter_map(|g| g.mean.last().map(|p| p.0))
        .max()
        .unwrap_or(0) as f64;
    let lo = groups
        .iter()
        .filter_map(|g| g.mean.first().map(|p| p.0))
        .min()
        .unwrap_or(0) as f64;
    let points: Vec<&Point> = curve
        .points
        .iter()
        .filter(|p| p.0 >= lo && p.0 <= hi)
        .collect();
    let points = thin(points, lo, hi);
    let _ = writeln!(s, "### {} on {env}\n", r.label);
    if points.is_empty() {
        let _ = writeln!(
            s,
            "No step of `{}` falls in the finished runs' range ({lo:.0}–{hi:.0}).\n",
            curve.path.display()
        );
        return;
    }
    let names: Vec<&str> = groups.iter().map(|g| g.group.as_str()).collect();
    let _ = writeln!(s, "| step | published | {} |", names.join(" | "));
    let _ = writeln!(s, "|---|---|{}", "---|".repeat(groups.len()));
    for &&(step, mean, std) in &points {
        let published = match std {
            Some(sd) => format!("{mean:.1} ± {sd:.1}"),
            None => format!("{mean:.1}"),
        };
        let floor = std.map(|sd| mean - sd);
        let cells: Vec<String> = groups
            .iter()
            .map(|g| match g.at(step.round() as u64) {
                None => "–".into(),
                Some((m, sd, n)) => {
                    let below = if floor.is_some_and(|f| m < f) {
                        " ↓"
                    } else {
                        ""
                    };
                    format!("{m:.1} ± {sd:.1} (n={n}){below}")
                }
            })
            .collect();
        let _ = writeln!(s, "| {step:.0} | {published} | {} |", cells.join(" | "));
    }
    let _ = writeln!(s);
}

/// The section, or nothing when no learning-curve figure draws a published curve.
pub fn section(s: &mut String, spec: &Spec, summary: &[SummaryRow]) {
    let mut body = String::new();
    for fig in &spec.figures {
        if fig.kind != FigureKind::LearningCurves {
            continue;
        }
        for env in env_filter(fig, spec) {
            for r in references_on(fig, &env).filter(|r| r.curve.is_some()) {
                let agents = agents_of(r, fig, spec);
                let groups = curves(summary, &env, &agents);
                if groups.is_empty() {
                    let _ = writeln!(
                        body,
                        "### {} on {env}\n\nNo finished run of {} to hold against it yet.\n",
                        r.label,
                        if agents.is_empty() {
                            "a matching agent".to_string()
                        } else {
                            agents.join(", ")
                        }
                    );
                    continue;
                }
                table(&mut body, r, &env, &groups);
            }
        }
    }
    if body.is_empty() {
        return;
    }
    let _ = writeln!(s, "## Against the published curves\n");
    let _ = writeln!(
        s,
        "Each published curve a learning-curve figure draws, at its own steps (at round steps \
         when it has more than {MAX_ROWS} in range), beside the mean ± std over seeds of the \
         agents held against it (`agents` on the reference; by default those named like the \
         label's first word), interpolated between evaluations where a step falls between \
         them. ↓: below the published mean minus one std.\n"
    );
    s.push_str(&body);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_pick_agents_by_their_first_word() {
        assert_eq!(label_word("SAC (Tianshou, 10 seeds)"), "SAC");
        assert_eq!(label_word("MBPO"), "MBPO");
        assert_eq!(label_word("(x) y"), "x");
    }

    #[test]
    fn long_curves_are_read_at_round_steps() {
        assert_eq!(spacing(1000.0, 100_000.0), 10_000.0);
        assert_eq!(spacing(6000.0, 60_000.0), 5000.0);
        assert_eq!(spacing(1000.0, 12_000.0), 1000.0);
        assert_eq!(spacing(0.0, 30.0), 5.0);
    }

    #[test]
    fn many_points_are_thinned_to_round_steps_or_every_kth() {
        let curve =
            |steps: &[f64]| -> Vec<Point> { steps.iter().map(|&s| (s, 1.0, None)).collect() };
        let every_1k = curve(&(1..=60).map(|k| k as f64 * 1000.0).collect::<Vec<_>>());
        let kept = thin(every_1k.iter().collect(), 1000.0, 60_000.0);
        let steps: Vec<f64> = kept.iter().map(|p| p.0).collect();
        assert_eq!(
            steps,
            (1..=12).map(|k| k as f64 * 5000.0).collect::<Vec<_>>()
        );
        let odd = curve(
            &(0..30)
                .map(|k| 1234.5 + k as f64 * 777.0)
                .collect::<Vec<_>>(),
        );
        let kept = thin(odd.iter().collect(), 1000.0, 30_000.0);
        assert_eq!(kept.len(), 10);
        assert_eq!(kept[0].0, 1234.5);
        let few = curve(&[10_000.0, 20_000.0]);
        assert_eq!(thin(few.iter().collect(), 0.0, 1e5).len(), 2);
    }

    #[test]
    fn a_curve_is_read_between_its_evaluations() {
        let c = Curve {
            group: "SAC".into(),
            mean: vec![(1000, 10.0), (2000, 30.0)],
            std: vec![(1000, 2.0), (2000, 4.0)],
            seeds: vec![(1000, 3), (2000, 2)],
        };
        assert_eq!(c.at(1500), Some((20.0, 3.0, 3)));
        assert_eq!(c.at(2000), Some((30.0, 4.0, 2)));
        assert_eq!(c.at(2500), None);
        assert_eq!(c.at(500), None);
    }
}
