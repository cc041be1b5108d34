//! The spec's `[[figures]]`, drawn with plotters as SVG and PNG in one house style: DejaVu
//! Sans, the Okabe-Ito colour-blind-safe palette with a fixed colour per agent, ±1 std bands,
//! dashed reference levels, the legend in its own strip below the panels, env steps in k/M.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::ReportError;
use super::aggregate::{FinalScore, RETURN, Results, SummaryRow};
use crate::spec::{FigureEntry, FigureKind, ReferenceEntry, Spec};

/// Metric of Figure 2: MPDP's mean realised horizon per update batch.
pub const HORIZON: &str = "train/horizon_mean";
/// Metric of Figure 3: the model's prediction error on recent real transitions.
pub const MODEL_ERROR: &str = "train/model_error";

const FONT: &str = "sans-serif";
const PANEL: (u32, u32) = (480, 340);
const TITLE_H: u32 = 40;
const LEGEND_ROW_H: u32 = 28;

/// Okabe & Ito (2008), "Color Universal Design": distinguishable with any colour vision.
const PALETTE: [RGBColor; 8] = [
    RGBColor(0, 114, 178),   // blue
    RGBColor(213, 94, 0),    // vermillion
    RGBColor(0, 158, 115),   // bluish green
    RGBColor(230, 159, 0),   // orange
    RGBColor(204, 121, 167), // reddish purple
    RGBColor(86, 180, 233),  // sky blue
    RGBColor(0, 0, 0),       // black
    RGBColor(240, 228, 66),  // yellow
];

/// Fixed colours of the paper's agents, the same in every figure of every spec.
fn known_colour(agent: &str) -> Option<RGBColor> {
    let i = match agent.to_ascii_uppercase().as_str() {
        "SAC" => 0,
        "MPDP" => 1,
        "DDPG" => 2,
        "MBPO" => 3,
        "M2AC" => 4,
        "PETS" => 5,
        "POPLIN" => 6,
        _ => return None,
    };
    Some(PALETTE[i])
}

/// Colours for every group label of a spec: the paper's agents keep theirs; other labels
/// take the unused palette colours in order.
pub fn colours(labels: &[String]) -> BTreeMap<String, RGBColor> {
    let mut out = BTreeMap::new();
    let mut used = BTreeSet::new();
    for l in labels {
        if let Some(c) = known_colour(l) {
            used.insert(c.rgb());
            out.insert(l.clone(), c);
        }
    }
    let mut free = PALETTE.iter().filter(|c| !used.contains(&c.rgb())).cycle();
    for l in labels {
        if !out.contains_key(l) {
            let c = *free.next().expect("the palette is not empty");
            out.insert(l.clone(), c);
        }
    }
    out
}

/// Registers DejaVu Sans for text (`MPDP_FONT` overrides the file `just setup` fetches).
pub fn register_font() -> Result<(), ReportError> {
    static DONE: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    DONE.get_or_init(|| {
        let path = std::env::var_os("MPDP_FONT")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("MPDP_SETUP_FONTS_DIR")).join("DejaVuSans.ttf"));
        let bytes = std::fs::read(&path).map_err(|e| {
            format!(
                "{}: {e} (run `just setup`, or set MPDP_FONT)",
                path.display()
            )
        })?;
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font(FONT, FontStyle::Normal, bytes)
            .map_err(|_| format!("{}: not a TrueType font", path.display()))
    })
    .clone()
    .map_err(ReportError::Font)
}

#[derive(Clone)]
struct Curve {
    label: String,
    colour: RGBColor,
    /// Style index: picks the dash pattern and marker ([`Mark`]), the same for a label in
    /// every figure of a spec.
    mark: usize,
    /// (x, mean, std)
    points: Vec<(f64, f64, f64)>,
}

#[derive(Default, Clone)]
struct Panel {
    title: String,
    curves: Vec<Curve>,
    /// Curves drawn as points with error bars (final return vs a parameter).
    points: bool,
    /// Dashed horizontal levels: label, value, colour.
    refs: Vec<(String, f64, RGBColor)>,
    /// Published curves: dashed, with a light ±std band.
    ref_curves: Vec<RefCurve>,
}

#[derive(Clone)]
struct RefCurve {
    label: String,
    colour: RGBColor,
    /// (step, mean, std if known)
    points: Vec<(f64, f64, Option<f64>)>,
}

struct Figure {
    title: String,
    x_desc: String,
    y_desc: String,
    /// Format x values as env steps (k/M).
    steps: bool,
    panels: Vec<Panel>,
    /// Pixels of one panel's width (`report.panel_width`).
    panel_width: u32,
}

/// The files a figure entry writes: `<stem>.svg` and `<stem>.png`.
pub struct Drawn {
    pub stem: String,
    pub title: String,
    pub svg: PathBuf,
    pub png: PathBuf,
    /// Where its published reference curves come from ([`reference_sources`]).
    pub sources: Vec<String>,
}

/// Draws every figure of the spec into `dir`. Figures without data are skipped with a
/// warning (returned), never an error.
pub fn draw_all(
    results: &Results,
    summary: &[SummaryRow],
    finals: &[FinalScore],
    dir: &Path,
) -> Result<(Vec<Drawn>, Vec<String>), ReportError> {
    register_font()?;
    std::fs::create_dir_all(dir).map_err(|e| ReportError::Io {
        path: dir.to_path_buf(),
        source: e,
    })?;
    let colours = colours(&results.labels());
    let mut drawn = Vec::new();
    let mut warnings = Vec::new();
    let mut stems = BTreeSet::new();
    for (i, entry) in results.spec.figures.iter().enumerate() {
        // A metric figure is named after its metric (train/live_t5 → train_live_t5).
        let base = entry
            .name
            .clone()
            .unwrap_or_else(|| match (&entry.kind, &entry.metric) {
                (FigureKind::Metric, Some(m)) => m
                    .chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() || c == '-' {
                            c
                        } else {
                            '_'
                        }
                    })
                    .collect(),
                _ => kind_name(entry.kind).to_string(),
            });
        let stem = if stems.insert(base.clone()) {
            base
        } else {
            format!("{base}-{i}")
        };
        stems.insert(stem.clone());
        let fig = match entry.kind {
            FigureKind::FinalVsParam => final_vs_param(results, entry, finals, &colours),
            _ => curves(results, entry, summary, &colours),
        };
        let fig = match fig {
            Ok(f) => f,
            Err(why) => {
                warnings.push(format!("figure {stem} skipped: {why}"));
                continue;
            }
        };
        let (svg, png) = (
            dir.join(format!("{stem}.svg")),
            dir.join(format!("{stem}.png")),
        );
        let size = size(&fig);
        let legend = legend(&fig);
        {
            let root = SVGBackend::new(&svg, size).into_drawing_area();
            draw(&root, &fig, &legend).map_err(|e| ReportError::Draw(format!("{stem}: {e}")))?;
            root.present()
                .map_err(|e| ReportError::Draw(format!("{stem}: {e}")))?;
        }
        {
            let root = BitMapBackend::new(&png, size).into_drawing_area();
            draw(&root, &fig, &legend).map_err(|e| ReportError::Draw(format!("{stem}: {e}")))?;
            root.present()
                .map_err(|e| ReportError::Draw(format!("{stem}: {e}")))?;
        }
        drawn.push(Drawn {
            stem,
            title: fig.title.clone(),
            svg,
            png,
            sources: reference_sources(entry),
        });
    }
    Ok((drawn, warnings))
}

fn kind_name(kind: FigureKind) -> &'static str {
    match kind {
        FigureKind::LearningCurves => "learning_curves",
        FigureKind::Horizon => "horizon",
        FigureKind::ModelError => "model_error",
        FigureKind::FinalVsParam => "final_vs_param",
        FigureKind::Metric => "metric",
    }
}

/// `filter`, or everything in `all` when it is empty.
pub(super) fn wanted<'a>(
    filter: &'a [String],
    all: impl Iterator<Item = &'a String>,
) -> Vec<&'a String> {
    if filter.is_empty() {
        all.collect()
    } else {
        filter.iter().collect()
    }
}

/// The envs of `spec` that `entry` draws, by name, in the spec's order.
pub(super) fn env_filter(entry: &FigureEntry, spec: &Spec) -> Vec<String> {
    spec.envs
        .iter()
        .map(|t| t.name().to_string())
        .filter(|e| {
            entry.envs.is_empty()
                || entry
                    .envs
                    .iter()
                    .any(|f| f.parse::<crate::env::Task>().is_ok_and(|t| t.name() == e))
        })
        .collect()
}

const REF_GREY: RGBColor = RGBColor(90, 90, 90);

/// The references of `entry` that belong on `env`'s panel.
pub(super) fn references_on<'a>(
    entry: &'a FigureEntry,
    env: &'a str,
) -> impl Iterator<Item = &'a ReferenceEntry> + 'a {
    entry.references.iter().filter(move |r| {
        r.env
            .as_ref()
            .is_none_or(|e| e.parse::<crate::env::Task>().is_ok_and(|t| t.name() == env))
    })
}

/// A reference's colour: that of the paper's agent its label starts with ("MBPO (published)"
/// in MBPO's orange), else grey.
fn reference_colour(label: &str) -> RGBColor {
    known_colour(label_word(label)).unwrap_or(REF_GREY)
}

/// The agent a reference's label names: its first alphanumeric word (`SAC` for
/// "SAC (Tianshou, 10 seeds)"); empty when it has none.
pub(super) fn label_word(label: &str) -> &str {
    label
        .split(|c: char| !c.is_ascii_alphanumeric())
        .find(|w| !w.is_empty())
        .unwrap_or("")
}

/// The dashed levels of `entry` on `env`'s panel.
fn references(entry: &FigureEntry, env: &str) -> Vec<(String, f64, RGBColor)> {
    references_on(entry, env)
        .filter_map(|r| Some((r.label.clone(), r.value?, REF_GREY)))
        .collect()
}

/// The published curves of `entry` on `env`'s panel.
fn reference_curves(entry: &FigureEntry, env: &str) -> Vec<RefCurve> {
    references_on(entry, env)
        .filter_map(|r| {
            let curve = r.curve.as_ref()?;
            Some(RefCurve {
                label: r.label.clone(),
                colour: reference_colour(&r.label),
                points: curve.points.clone(),
            })
        })
        .collect()
}

/// Where the references of `entry` come from, one line each, for the report.
pub fn reference_sources(entry: &FigureEntry) -> Vec<String> {
    entry
        .references
        .iter()
        .filter_map(|r| {
            let c = r.curve.as_ref()?;
            Some(format!(
                "**{}** (`{}`): {}",
                r.label,
                c.path.display(),
                c.source.join(" ")
            ))
        })
        .collect()
}

/// Learning curves, horizon, model error and generic metric figures: a panel per env, a
/// mean ± std curve per group.
fn curves(
    results: &Results,
    entry: &FigureEntry,
    summary: &[SummaryRow],
    colours: &BTreeMap<String, RGBColor>,
) -> Result<Figure, String> {
    let (metric, title, y_desc) = match entry.kind {
        FigureKind::LearningCurves => (RETURN, "Learning curves", "average return"),
        FigureKind::Horizon => (HORIZON, "Adaptive horizon", "mean horizon (model steps)"),
        FigureKind::ModelError => (MODEL_ERROR, "Model error", "model error (L2)"),
        _ => ("", "", ""),
    };
    let metric = entry.metric.as_deref().unwrap_or(metric);
    let agents = wanted(&entry.agents, results.spec.agents.iter());
    let mut fig = Figure {
        title: entry.title.clone().unwrap_or_else(|| {
            if title.is_empty() {
                metric.to_string()
            } else {
                title.to_string()
            }
        }),
        x_desc: "environment steps".into(),
        y_desc: if y_desc.is_empty() {
            metric.to_string()
        } else {
            y_desc.to_string()
        },
        steps: true,
        panels: Vec::new(),
        panel_width: results.spec.report.panel_width,
    };
    for env in env_filter(entry, &results.spec) {
        let mut by_group: BTreeMap<&str, Vec<&SummaryRow>> = BTreeMap::new();
        for r in summary
            .iter()
            .filter(|r| r.env == env && r.metric == metric && agents.contains(&&r.agent))
        {
            by_group.entry(&r.group).or_default().push(r);
        }
        if by_group.is_empty() {
            continue;
        }
        let curves = results
            .labels()
            .iter()
            .enumerate()
            .filter_map(|(mark, label)| {
                let rows = by_group.get(label.as_str())?;
                Some(Curve {
                    label: label.clone(),
                    colour: colours[label],
                    mark,
                    points: rows
                        .iter()
                        .map(|r| (r.step as f64, r.mean, r.std))
                        .collect(),
                })
            })
            .collect();
        fig.panels.push(Panel {
            title: env.clone(),
            curves,
            points: false,
            refs: references(entry, &env),
            ref_curves: reference_curves(entry, &env),
        });
    }
    if fig.panels.is_empty() {
        return Err(format!("no aggregated data for metric {metric}"));
    }
    Ok(fig)
}

/// The `key=value` pairs of a variant name `beta=0.2,hidden=[64, 64]` (a comma inside a
/// value, as in an array, stays with its value).
fn variant_pairs(variant: &str) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    for piece in variant.split(',') {
        match (piece.split_once('='), pairs.last_mut()) {
            (Some((k, v)), _) => pairs.push((k.to_string(), v.to_string())),
            (None, Some((_, v))) => {
                v.push(',');
                v.push_str(piece);
            }
            (None, None) => {}
        }
    }
    pairs
}

/// The value of `param` in a variant name `beta=0.2,u_threshold=1`, and the variant's other
/// pairs (`u_threshold=1`).
fn split_param(variant: &str, param: &str) -> Option<(f64, String)> {
    let (at, rest): (Vec<_>, Vec<_>) = variant_pairs(variant)
        .into_iter()
        .partition(|(k, _)| k == param);
    let x = at.first()?.1.parse().ok()?;
    let rest: Vec<String> = rest.iter().map(|(k, v)| format!("{k}={v}")).collect();
    Some((x, rest.join(",")))
}

/// (value, mean, std) points by (agent, the variant's other parameters).
type Series = BTreeMap<(String, String), Vec<(f64, f64, f64)>>;

/// Final scores split by `param`: the series of those that set it, keyed by agent and the
/// variant's other parameters (so a spec sweeping two parameters draws one line per value of
/// the other) with (value, mean, std) points in value order, and those that do not set it.
fn by_param<'a>(
    finals: impl Iterator<Item = &'a FinalScore>,
    param: &str,
) -> (Series, Vec<&'a FinalScore>) {
    let mut swept = Series::new();
    let mut unswept = Vec::new();
    for f in finals {
        match split_param(&f.variant, param) {
            Some((x, rest)) => swept
                .entry((f.agent.clone(), rest))
                .or_default()
                .push((x, f.mean, f.std)),
            None => unswept.push(f),
        }
    }
    for points in swept.values_mut() {
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    (swept, unswept)
}

/// Figure 4: final return vs a swept parameter, one panel per env; groups without the
/// parameter (e.g. MBPO) are dashed reference levels.
fn final_vs_param(
    results: &Results,
    entry: &FigureEntry,
    finals: &[FinalScore],
    colours: &BTreeMap<String, RGBColor>,
) -> Result<Figure, String> {
    let param = entry.param.clone().unwrap_or_default();
    let agents = wanted(&entry.agents, results.spec.agents.iter());
    let mut fig = Figure {
        title: entry
            .title
            .clone()
            .unwrap_or_else(|| format!("Final return vs {param}")),
        x_desc: param.clone(),
        y_desc: "final return".into(),
        steps: false,
        panels: Vec::new(),
        panel_width: results.spec.report.panel_width,
    };
    for env in env_filter(entry, &results.spec) {
        let here = finals
            .iter()
            .filter(|f| f.env == env && agents.contains(&&f.agent));
        let (swept, unswept) = by_param(here, &param);
        if swept.is_empty() {
            continue;
        }
        let mut refs: Vec<_> = unswept
            .into_iter()
            .map(|f| {
                let colour = colours.get(&f.group).copied().unwrap_or(REF_GREY);
                (f.group.clone(), f.mean, colour)
            })
            .collect();
        refs.extend(references(entry, &env));
        // A series that keeps a second swept parameter takes a colour that no level on the
        // panel and no other agent of the spec wears.
        let taken: BTreeSet<_> = refs
            .iter()
            .map(|r| r.2.rgb())
            .chain(colours.values().map(|c| c.rgb()))
            .collect();
        let mut spare = PALETTE
            .iter()
            .filter(|c| !taken.contains(&c.rgb()))
            .chain(PALETTE.iter())
            .cycle();
        let curves = swept
            .into_iter()
            .enumerate()
            .map(|(i, ((agent, rest), points))| {
                let (label, colour) = if rest.is_empty() {
                    let colour = known_colour(&agent).or_else(|| colours.get(&agent).copied());
                    (agent, colour.unwrap_or(PALETTE[0]))
                } else {
                    let colour = *spare.next().expect("the palette is not empty");
                    (format!("{agent}[{rest}]"), colour)
                };
                Curve {
                    label,
                    colour,
                    mark: i,
                    points,
                }
            })
            .collect();
        fig.panels.push(Panel {
            title: env.clone(),
            curves,
            points: true,
            refs,
            ref_curves: Vec::new(),
        });
    }
    if fig.panels.is_empty() {
        return Err(format!("no finished runs sweep `{param}`"));
    }
    Ok(fig)
}

fn grid_shape(n: usize) -> (usize, usize) {
    let cols = n.clamp(1, 3);
    (n.div_ceil(cols), cols)
}

/// The layout of a figure in pixels: the house layout (panels of [`PANEL`]) scaled so that a
/// panel is `report.panel_width` pixels wide; fonts, lines and markers scale with it.
#[derive(Debug, Clone, Copy)]
struct Scale(f64);

impl Scale {
    fn of(fig: &Figure) -> Scale {
        Scale(f64::from(fig.panel_width) / f64::from(PANEL.0))
    }

    fn px(self, v: u32) -> u32 {
        (f64::from(v) * self.0).round().max(1.0) as u32
    }

    fn font(self, size: u32) -> FontDesc<'static> {
        (FONT, f64::from(size) * self.0).into_font()
    }
}

/// One legend line: a series (drawn with its colour, dash and marker) or a reference level.
struct LegendEntry {
    label: String,
    colour: RGBColor,
    /// The series' style index ([`Mark`]); None for a dashed reference level.
    mark: Option<usize>,
}

/// Legend entries: every curve label once, then every reference level once.
fn legend(fig: &Figure) -> Vec<LegendEntry> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for p in &fig.panels {
        for c in &p.curves {
            if seen.insert(c.label.clone()) {
                out.push(LegendEntry {
                    label: c.label.clone(),
                    colour: c.colour,
                    mark: Some(c.mark),
                });
            }
        }
    }
    for p in &fig.panels {
        let levels = p.refs.iter().map(|(label, _, colour)| (label, *colour));
        let curves = p.ref_curves.iter().map(|c| (&c.label, c.colour));
        for (label, colour) in levels.chain(curves) {
            if seen.insert(label.clone()) {
                out.push(LegendEntry {
                    label: label.clone(),
                    colour,
                    mark: None,
                });
            }
        }
    }
    out
}

fn legend_width(label: &str) -> u32 {
    52 + 9 * label.chars().count() as u32 + 24
}

fn legend_rows(entries: &[LegendEntry], width: u32) -> u32 {
    let mut rows = 1;
    let mut x = 16;
    for e in entries {
        let w = legend_width(&e.label);
        if x + w > width && x > 16 {
            rows += 1;
            x = 16;
        }
        x += w;
    }
    rows
}

/// The figure's size in house-layout units (before [`Scale`]).
fn layout_size(fig: &Figure) -> (u32, u32) {
    let (rows, cols) = grid_shape(fig.panels.len());
    let width = PANEL.0 * cols as u32;
    let legend_h = LEGEND_ROW_H * legend_rows(&legend(fig), width) + 12;
    (width, TITLE_H + PANEL.1 * rows as u32 + legend_h)
}

fn size(fig: &Figure) -> (u32, u32) {
    let scale = Scale::of(fig);
    let (w, h) = layout_size(fig);
    (scale.px(w), scale.px(h))
}

/// How the series with style index `mark` is told apart beyond its colour: a dash pattern
/// and a marker shape (so that a series drawn under another, or printed in grey, still shows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mark {
    Circle,
    Triangle,
    Square,
    Cross,
}

impl Mark {
    fn of(mark: usize) -> Mark {
        [Mark::Circle, Mark::Triangle, Mark::Square, Mark::Cross][mark % 4]
    }

    /// (dash, gap) in layout units; None: solid.
    fn dash(mark: usize) -> Option<(u32, u32)> {
        [None, Some((10, 6)), Some((3, 4)), Some((18, 5))][mark % 4]
    }
}

/// Round tick values for `[lo, hi]`: the multiples in it of the step m × 10^e (m 1, 2 or 5)
/// whose count comes nearest `target` (the larger step on a tie), computed from integers so
/// that 0.6 is 0.6; and the step's exponent e.
pub fn nice_ticks(lo: f64, hi: f64, target: usize) -> (Vec<f64>, i32) {
    if !(lo.is_finite() && hi.is_finite()) || hi <= lo {
        return (vec![lo], 0);
    }
    let value = |k: i64, m: i64, e: i32| {
        let n = (k * m) as f64;
        if e >= 0 {
            n * 10f64.powi(e)
        } else {
            n / 10f64.powi(-e)
        }
    };
    let e0 = ((hi - lo) / target.max(1) as f64).log10().floor() as i32;
    let mut best: Option<(usize, i64, i32, i64, i64)> = None;
    for e in e0 - 1..=e0 + 1 {
        for m in [1, 2, 5] {
            let step = value(1, m, e);
            let (first, last) = ((lo / step).ceil() as i64, (hi / step).floor() as i64);
            let count = (last - first + 1).max(0) as usize;
            let miss = count.abs_diff(target);
            // Candidates come in increasing step order: `<=` keeps the larger on a tie.
            if best.is_none_or(|b| miss <= b.0) {
                best = Some((miss, m, e, first, last));
            }
        }
    }
    let (_, m, e, first, last) = best.expect("nine candidates");
    ((first..=last).map(|k| value(k, m, e)).collect(), e)
}

/// How an axis writes its ticks: in thousands (k) or millions (M) where the values reach
/// them (env steps from 1000, other values from 100 000), with the decimals the step needs
/// (the same on every tick, except that k and M drop trailing zeros).
#[derive(Debug, Clone, Copy)]
pub struct TickFormat {
    unit: f64,
    suffix: &'static str,
    decimals: usize,
}

impl TickFormat {
    pub fn new(ticks: &[f64], exponent: i32, steps: bool) -> TickFormat {
        let top = ticks.iter().fold(0.0f64, |a, t| a.max(t.abs()));
        let (unit, suffix, shift) = match top {
            t if t >= 1e6 && (steps || t >= 1e7) => (1e6, "M", 6),
            t if t >= 1e3 && (steps || t >= 1e5) => (1e3, "k", 3),
            _ => (1.0, "", 0),
        };
        TickFormat {
            unit,
            suffix,
            decimals: (shift - exponent).max(0) as usize,
        }
    }

    pub fn label(&self, v: f64) -> String {
        let x = v / self.unit;
        if x.abs() < 0.5 * 10f64.powi(-(self.decimals as i32)) {
            return "0".into();
        }
        if self.decimals > 6 {
            return format!("{v:.1e}");
        }
        let digits = format!("{x:.*}", self.decimals);
        if self.suffix.is_empty() {
            return digits;
        }
        // In k and M, 1k rather than 1.0k beside 0.5k.
        let digits = if digits.contains('.') {
            digits.trim_end_matches('0').trim_end_matches('.')
        } else {
            &digits
        };
        format!("{digits}{}", self.suffix)
    }
}

type DrawResult<DB> = Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    fig: &Figure,
    legend: &[LegendEntry],
) -> DrawResult<DB> {
    let scale = Scale::of(fig);
    root.fill(&WHITE)?;
    let (w, _) = root.dim_in_pixel();
    let title_h = scale.px(TITLE_H);
    let (title, rest) = root.split_vertically(title_h);
    title.draw_text(
        &fig.title,
        &TextStyle::from(scale.font(24)).pos(Pos::new(HPos::Center, VPos::Center)),
        (w as i32 / 2, title_h as i32 / 2),
    )?;
    let (rows, cols) = grid_shape(fig.panels.len());
    let (body, foot) = rest.split_vertically(scale.px(PANEL.1) * rows as u32);
    for (panel, area) in fig.panels.iter().zip(body.split_evenly((rows, cols))) {
        draw_panel(&area, panel, fig, scale)?;
    }
    draw_legend(&foot, legend, scale)
}

fn ranges(panel: &Panel) -> ((f64, f64), (f64, f64)) {
    let xs = panel
        .curves
        .iter()
        .flat_map(|c| c.points.iter().map(|p| p.0));
    let (mut x0, mut x1) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
        (a.min(x), b.max(x))
    });
    let ys = panel
        .curves
        .iter()
        .flat_map(|c| c.points.iter().flat_map(|p| [p.1 - p.2, p.1 + p.2]))
        .chain(panel.refs.iter().map(|r| r.1));
    // Room above the top reference level for its label.
    let (mut y0, mut y1) = ys.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), y| {
        (a.min(y), b.max(y))
    });
    // Published curves within the panel's own steps (all of them on a panel of its own).
    let own = x1.is_finite();
    for c in &panel.ref_curves {
        for &(x, m, sd) in &c.points {
            if !own || x <= x1 {
                let sd = sd.unwrap_or(0.0);
                (y0, y1) = (y0.min(m - sd), y1.max(m + sd));
            }
        }
    }
    if !own {
        (x0, x1) = panel
            .ref_curves
            .iter()
            .flat_map(|c| c.points.iter().map(|p| p.0))
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
                (a.min(x), b.max(x))
            });
    }
    if panel.points {
        let pad = ((x1 - x0) * 0.1).max(0.05);
        (x0, x1) = (x0 - pad, x1 + pad);
    } else {
        x0 = x0.min(0.0);
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    let pad = ((y1 - y0) * 0.06).max(1e-6 * y1.abs().max(1.0));
    (y0, y1) = (y0 - pad, y1 + pad);
    ((x0, x1), (y0, y1))
}

/// About this many ticks on each axis of a panel.
const TICKS: usize = 5;

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    panel: &Panel,
    fig: &Figure,
    scale: Scale,
) -> DrawResult<DB> {
    let ((x0, x1), (y0, y1)) = ranges(panel);
    let (x_ticks, x_exp) = nice_ticks(x0, x1, TICKS);
    let (y_ticks, y_exp) = nice_ticks(y0, y1, TICKS);
    let x_format = TickFormat::new(&x_ticks, x_exp, fig.steps);
    let y_format = TickFormat::new(&y_ticks, y_exp, false);
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, scale.font(19))
        .margin(scale.px(10))
        .margin_right(scale.px(24))
        .x_label_area_size(scale.px(50))
        .y_label_area_size(scale.px(72))
        .build_cartesian_2d(
            Ticked {
                range: x0..x1,
                ticks: x_ticks,
            },
            Ticked {
                range: y0..y1,
                ticks: y_ticks,
            },
        )?;
    chart
        .configure_mesh()
        .x_desc(&fig.x_desc)
        .y_desc(&fig.y_desc)
        .x_label_formatter(&|x| x_format.label(*x))
        .y_label_formatter(&|y| y_format.label(*y))
        .label_style(scale.font(15))
        .axis_desc_style(scale.font(16))
        .light_line_style(TRANSPARENT)
        .bold_line_style(BLACK.mix(0.08))
        .draw()?;
    for c in &panel.ref_curves {
        let shown: Vec<(f64, f64, f64)> = c
            .points
            .iter()
            .filter(|p| p.0 >= x0 && p.0 <= x1)
            .map(|&(x, m, sd)| (x, m, sd.unwrap_or(0.0)))
            .collect();
        let upper = shown.iter().map(|p| (p.0, p.1 + p.2));
        let lower = shown.iter().rev().map(|p| (p.0, p.1 - p.2));
        chart.draw_series(std::iter::once(Polygon::new(
            upper.chain(lower).collect::<Vec<_>>(),
            c.colour.mix(0.08).filled(),
        )))?;
        chart.draw_series(DashedLineSeries::new(
            shown.iter().map(|p| (p.0, p.1)),
            scale.px(8),
            scale.px(5),
            c.colour.mix(0.9).stroke_width(scale.px(2)),
        ))?;
    }
    let marker_size = scale.px(5) as i32;
    for c in &panel.curves {
        let line: Vec<(f64, f64)> = c.points.iter().map(|p| (p.0, p.1)).collect();
        if panel.points {
            chart.draw_series(c.points.iter().map(|&(x, m, s)| {
                ErrorBar::new_vertical(
                    x,
                    m - s,
                    m,
                    m + s,
                    c.colour.stroke_width(scale.px(2)),
                    scale.px(12),
                )
            }))?;
        } else {
            let upper = c.points.iter().map(|p| (p.0, p.1 + p.2));
            let lower = c.points.iter().rev().map(|p| (p.0, p.1 - p.2));
            chart.draw_series(std::iter::once(Polygon::new(
                upper.chain(lower).collect::<Vec<_>>(),
                c.colour.mix(0.18).filled(),
            )))?;
        }
        let stroke = c.colour.stroke_width(scale.px(2));
        match Mark::dash(c.mark) {
            None => {
                chart.draw_series(LineSeries::new(line.iter().copied(), stroke))?;
            }
            Some((dash, gap)) => {
                chart.draw_series(DashedLineSeries::new(
                    line.iter().copied(),
                    scale.px(dash),
                    scale.px(gap),
                    stroke,
                ))?;
            }
        }
        // Every point of a final-vs-parameter series; along a curve about eight, offset
        // by the series so that markers of overlapping series do not coincide.
        let stride = if panel.points {
            1
        } else {
            (line.len() / 8).max(1)
        };
        let offset = (c.mark * stride / 4) % stride;
        let at: Vec<(f64, f64)> = line
            .iter()
            .enumerate()
            .filter(|(i, _)| i % stride == offset || line.len() == 1)
            .map(|(_, p)| *p)
            .collect();
        draw_markers(&mut chart, &at, Mark::of(c.mark), c.colour, marker_size)?;
    }
    let label_style = TextStyle::from(scale.font(14)).pos(Pos::new(HPos::Right, VPos::Bottom));
    for (label, value, colour) in &panel.refs {
        chart.draw_series(DashedLineSeries::new(
            [(x0, *value), (x1, *value)],
            scale.px(8),
            scale.px(5),
            colour.stroke_width(scale.px(2)),
        ))?;
        chart.draw_series(std::iter::once(Text::new(
            label.clone(),
            (x1 - (x1 - x0) * 0.01, *value),
            label_style.clone(),
        )))?;
    }
    Ok(())
}

/// A linear axis over `range` whose ticks are exactly `ticks` ([`nice_ticks`]); labels come
/// from the chart's formatter.
struct Ticked {
    range: std::ops::Range<f64>,
    ticks: Vec<f64>,
}

impl plotters::coord::ranged1d::Ranged for Ticked {
    type ValueType = f64;
    type FormatOption = plotters::coord::ranged1d::DefaultFormatting;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let (lo, hi) = (self.range.start, self.range.end);
        let f = (value - lo) / (hi - lo);
        limit.0 + (f * f64::from(limit.1 - limit.0)).round() as i32
    }

    fn key_points<Hint: plotters::coord::ranged1d::KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.range.clone()
    }
}

type Chart<'a, DB> = ChartContext<'a, DB, Cartesian2d<Ticked, Ticked>>;

fn draw_markers<DB: DrawingBackend>(
    chart: &mut Chart<'_, DB>,
    at: &[(f64, f64)],
    mark: Mark,
    colour: RGBColor,
    size: i32,
) -> DrawResult<DB> {
    let fill = colour.filled();
    let line = colour.stroke_width((size / 2).max(1) as u32);
    let points = at.iter().copied();
    match mark {
        Mark::Circle => {
            chart.draw_series(points.map(|p| Circle::new(p, size, fill)))?;
        }
        Mark::Triangle => {
            chart.draw_series(points.map(|p| TriangleMarker::new(p, size + 1, fill)))?;
        }
        Mark::Square => {
            chart.draw_series(points.map(|p| {
                EmptyElement::at(p) + Rectangle::new([(-size, -size), (size, size)], fill)
            }))?;
        }
        Mark::Cross => {
            chart.draw_series(points.map(|p| Cross::new(p, size, line)))?;
        }
    }
    Ok(())
}

/// The same marker in pixel coordinates (the legend).
fn draw_marker_at<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    p: (i32, i32),
    mark: Mark,
    colour: RGBColor,
    size: i32,
) -> DrawResult<DB> {
    let fill = colour.filled();
    match mark {
        Mark::Circle => area.draw(&Circle::new(p, size, fill)),
        Mark::Triangle => area.draw(&TriangleMarker::new(p, size + 1, fill)),
        Mark::Square => area.draw(&Rectangle::new(
            [(p.0 - size, p.1 - size), (p.0 + size, p.1 + size)],
            fill,
        )),
        Mark::Cross => area.draw(&Cross::new(
            p,
            size,
            colour.stroke_width((size / 2).max(1) as u32),
        )),
    }
}

fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    entries: &[LegendEntry],
    scale: Scale,
) -> DrawResult<DB> {
    let style = TextStyle::from(scale.font(16)).pos(Pos::new(HPos::Left, VPos::Center));
    let (width, _) = area.dim_in_pixel();
    let px = |v: u32| scale.px(v) as i32;
    let (mut x, mut y) = (px(16), px(6 + LEGEND_ROW_H / 2));
    for e in entries {
        let w = px(legend_width(&e.label));
        if x + w > width as i32 && x > px(16) {
            x = px(16);
            y += px(LEGEND_ROW_H);
        }
        let (x_end, stroke) = (x + px(42), e.colour.stroke_width(scale.px(3)));
        match e.mark.map(|m| (m, Mark::dash(m))) {
            // A reference level: three short dashes.
            None => {
                for k in 0..3 {
                    let a = x + k * px(15);
                    area.draw(&PathElement::new([(a, y), (a + px(9), y)], stroke))?;
                }
            }
            Some((mark, dash)) => {
                match dash {
                    None => area.draw(&PathElement::new([(x, y), (x_end, y)], stroke))?,
                    Some((d, g)) => {
                        let mut a = x;
                        while a < x_end {
                            let b = (a + px(d)).min(x_end);
                            area.draw(&PathElement::new([(a, y), (b, y)], stroke))?;
                            a = b + px(g);
                        }
                    }
                }
                let m = Mark::of(mark);
                draw_marker_at(area, ((x + x_end) / 2, y), m, e.colour, px(5))?;
            }
        }
        area.draw_text(&e.label, &style, (x + px(52), y))?;
        x += w;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(lo: f64, hi: f64, steps: bool) -> Vec<String> {
        let (ticks, e) = nice_ticks(lo, hi, TICKS);
        let format = TickFormat::new(&ticks, e, steps);
        ticks.iter().map(|&t| format.label(t)).collect()
    }

    /// Regression: plotters' own ticks on a β axis read `0.2300000000000000004` and
    /// `0.600000000000000001`.
    #[test]
    fn ticks_are_round_and_read_in_k_and_m() {
        assert_eq!(
            labels(0.15, 0.75, false),
            ["0.2", "0.3", "0.4", "0.5", "0.6", "0.7"]
        );
        assert_eq!(
            labels(0.0, 20_000.0, true),
            ["0", "5k", "10k", "15k", "20k"]
        );
        assert_eq!(labels(0.0, 3000.0, true), ["0", "1k", "2k", "3k"]);
        assert_eq!(
            labels(0.0, 2500.0, true),
            ["0", "0.5k", "1k", "1.5k", "2k", "2.5k"]
        );
        assert_eq!(
            labels(0.0, 2_000_000.0, true),
            ["0", "0.5M", "1M", "1.5M", "2M"]
        );
        assert_eq!(
            labels(-120.0, 1130.0, false),
            ["0", "200", "400", "600", "800", "1000"]
        );
        assert_eq!(
            labels(0.0, 250.0, true),
            ["0", "50", "100", "150", "200", "250"]
        );
        assert_eq!(labels(0.00012, 0.00049, false)[0], "0.0002");
        assert_eq!(labels(1.2e-8, 4.9e-8, false)[0], "2.0e-8");
        assert_eq!(
            labels(-0.03, 0.012, false),
            ["-0.03", "-0.02", "-0.01", "0", "0.01"]
        );
        assert_eq!(labels(0.0, 300_000.0, false), ["0", "100k", "200k", "300k"]);
        for (lo, hi) in [
            (0.2, 0.7),
            (1e-3, 7.3e4),
            (-5.0, 5.0),
            (3.0, 3.0001),
            (0.0, 1e9),
        ] {
            let (ticks, _) = nice_ticks(lo, hi, TICKS);
            assert!((2..=12).contains(&ticks.len()), "{lo}..{hi}: {ticks:?}");
            assert!(
                ticks.iter().all(|t| (lo..=hi).contains(t)),
                "{lo}..{hi}: {ticks:?}"
            );
            for l in labels(lo, hi, false) {
                assert!(l.len() <= 7, "{lo}..{hi}: {l}");
            }
        }
        assert_eq!(
            split_param("beta=0.2,u_threshold=1", "beta"),
            Some((0.2, "u_threshold=1".into()))
        );
        assert_eq!(split_param("beta=0.2", "gamma"), None);
        assert_eq!(
            split_param("hidden=[64, 64],beta=0.7", "beta"),
            Some((0.7, "hidden=[64, 64]".into()))
        );
    }

    fn score(agent: &str, variant: &str, mean: f64) -> FinalScore {
        FinalScore {
            group: format!("{agent}[{variant}]"),
            agent: agent.into(),
            variant: variant.into(),
            env: "Hopper".into(),
            scores: Vec::new(),
            mean,
            std: 1.0,
            iqm: mean,
            iqm_lo: mean,
            iqm_hi: mean,
        }
    }

    /// Regression: with two swept parameters, every MPDP variant went into one series
    /// "MPDP" with two points at each beta, drawn as one zig-zag line.
    #[test]
    fn a_second_swept_parameter_gives_one_series_per_value() {
        let finals = [
            score("MPDP", "beta=0.5,u_threshold=2", 4.0),
            score("MPDP", "beta=0.2,u_threshold=1", 1.0),
            score("MPDP", "beta=0.5,u_threshold=1", 2.0),
            score("MPDP", "beta=0.2,u_threshold=2", 3.0),
            score("MPDP", "hidden=[64, 64],beta=0.7", 5.0),
            score("MBPO", "", 9.0),
        ];
        let (swept, unswept) = by_param(finals.iter(), "beta");
        let series: Vec<_> = swept.into_iter().collect();
        let key = |rest: &str| ("MPDP".to_string(), rest.to_string());
        assert_eq!(
            series,
            [
                (key("hidden=[64, 64]"), vec![(0.7, 5.0, 1.0)]),
                (key("u_threshold=1"), vec![(0.2, 1.0, 1.0), (0.5, 2.0, 1.0)]),
                (key("u_threshold=2"), vec![(0.2, 3.0, 1.0), (0.5, 4.0, 1.0)]),
            ]
        );
        assert_eq!(unswept.len(), 1);
        assert_eq!(unswept[0].agent, "MBPO");
        let (one, _) = by_param(finals[..2].iter(), "u_threshold");
        assert_eq!(one.len(), 2, "beta values keep their own series: {one:?}");
    }

    #[test]
    fn paper_agents_keep_their_colours_and_others_get_the_rest() {
        let labels: Vec<String> = ["MPDP[beta=0.2]", "SAC", "custom", "MPDP"]
            .map(String::from)
            .to_vec();
        let c = colours(&labels);
        assert_eq!(c["SAC"], PALETTE[0]);
        assert_eq!(c["MPDP"], PALETTE[1]);
        let others: BTreeSet<_> = [c["MPDP[beta=0.2]"].rgb(), c["custom"].rgb()].into();
        assert_eq!(others.len(), 2);
        assert!(!others.contains(&PALETTE[0].rgb()) && !others.contains(&PALETTE[1].rgb()));
    }

    /// The text elements of an SVG: (x, y, font size, text).
    fn svg_texts(svg: &str) -> Vec<(f64, f64, f64, String)> {
        let attr = |tag: &str, name: &str| -> f64 {
            let key = format!(" {name}=\"");
            let at = tag.find(&key).map(|i| i + key.len()).expect(name);
            tag[at..]
                .split('"')
                .next()
                .unwrap()
                .trim_end_matches("px")
                .parse()
                .unwrap()
        };
        svg.split("<text")
            .skip(1)
            .map(|piece| {
                let (tag, rest) = piece.split_once('>').unwrap();
                let text = rest.split("</text>").next().unwrap().trim().to_string();
                (attr(tag, "x"), attr(tag, "y"), attr(tag, "font-size"), text)
            })
            .collect()
    }

    fn is_tick(text: &str) -> bool {
        let body = text.trim_end_matches(['k', 'M']).trim_start_matches('-');
        !body.is_empty() && body.chars().all(|c| c.is_ascii_digit() || c == '.')
    }

    fn curve(label: &str, mark: usize, points: Vec<(f64, f64, f64)>) -> Curve {
        Curve {
            label: label.into(),
            colour: PALETTE[mark],
            mark,
            points,
        }
    }

    /// Every figure kind (curves over env steps: learning curves, horizon, model error,
    /// metrics; points over a swept value: final vs parameter) with swept values 0.2, 0.5,
    /// 0.7 and awkward ranges: the tick labels are short, round, and do not overlap.
    #[test]
    fn tick_labels_are_short_round_and_apart_in_every_figure_kind() {
        register_font().unwrap();
        let steps: Vec<f64> = (0..=40).map(|i| f64::from(i) * 250.0).collect();
        let along = |f: &dyn Fn(f64) -> f64| -> Vec<(f64, f64, f64)> {
            steps.iter().map(|&x| (x, f(x), 0.1 * f(x).abs())).collect()
        };
        let swept = |base: f64| {
            vec![
                (0.2, base, 30.0),
                (0.5, base + 120.0, 50.0),
                (0.7, base - 40.0, 20.0),
            ]
        };
        let figure = |points: bool, panels: Vec<Panel>| Figure {
            title: "t".into(),
            x_desc: "x".into(),
            y_desc: "y".into(),
            steps: !points,
            panels,
            panel_width: 560,
        };
        let panel = |points: bool, curves: Vec<Curve>| Panel {
            title: "Hopper".into(),
            curves,
            points,
            refs: vec![("MBPO".into(), 1033.3, REF_GREY)],
            ref_curves: vec![RefCurve {
                label: "SAC (published)".into(),
                colour: reference_colour("SAC (published)"),
                points: vec![
                    (0.0, 47.5, Some(36.1)),
                    (5000.0, 275.8, None),
                    (9e9, 1e9, None),
                ],
            }],
        };
        let figures = [
            figure(
                false,
                vec![panel(
                    false,
                    vec![
                        curve("SAC", 0, along(&|x| x / 9.7)),
                        curve("MPDP", 1, along(&|x| x / 9.1 + 3.0)),
                    ],
                )],
            ),
            figure(
                false,
                vec![panel(
                    false,
                    vec![curve("MPDP", 1, along(&|x| 1.0 + x / 2.3e3))],
                )],
            ),
            figure(
                false,
                vec![panel(
                    false,
                    vec![curve("MBPO", 3, along(&|x| 0.0371 + 1e-6 * x))],
                )],
            ),
            figure(
                true,
                vec![
                    panel(true, vec![curve("MPDP", 1, swept(830.0))]),
                    panel(true, vec![curve("MPDP", 1, swept(0.23))]),
                ],
            ),
        ];
        for fig in &figures {
            let mut svg = String::new();
            {
                let root = SVGBackend::with_string(&mut svg, size(fig)).into_drawing_area();
                draw(&root, fig, &legend(fig)).unwrap();
                root.present().unwrap();
            }
            let ticks: Vec<_> = svg_texts(&svg)
                .into_iter()
                .filter(|t| is_tick(&t.3))
                .collect();
            assert!(
                ticks.len() >= 6,
                "{ticks:?} {}",
                &svg[..svg.len().min(3000)]
            );
            for (_, _, _, text) in &ticks {
                let digits = text.chars().filter(char::is_ascii_digit).count();
                assert!(
                    text.len() <= 6 && digits <= 4,
                    "not short and round: {text}"
                );
            }
            // x labels share a baseline, y labels a right edge: neighbours must not touch.
            let mut rows: BTreeMap<i64, Vec<(f64, f64, String)>> = BTreeMap::new();
            let mut cols: BTreeMap<i64, Vec<(f64, f64)>> = BTreeMap::new();
            for (x, y, size, text) in &ticks {
                rows.entry(*y as i64)
                    .or_default()
                    .push((*x, *size, text.clone()));
                cols.entry(*x as i64).or_default().push((*y, *size));
            }
            for row in rows.values_mut().filter(|r| r.len() > 2) {
                row.sort_by(|a, b| a.0.total_cmp(&b.0));
                for w in row.windows(2) {
                    let width = |t: &(f64, f64, String)| 0.6 * t.1 * t.2.len() as f64;
                    let room = 0.5 * (width(&w[0]) + width(&w[1]));
                    assert!(w[1].0 - w[0].0 > room, "x labels overlap: {w:?}");
                }
            }
            for col in cols.values_mut().filter(|c| c.len() > 2) {
                col.sort_by(|a, b| a.0.total_cmp(&b.0));
                for w in col.windows(2) {
                    assert!(w[1].0 - w[0].0 > w[0].1, "y labels overlap: {w:?}");
                }
            }
        }
        assert_eq!(size(&figure(false, vec![panel(false, vec![]); 6])).0, 1680);
    }
}
