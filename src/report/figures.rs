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
use crate::spec::{FigureEntry, FigureKind};

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

struct Curve {
    label: String,
    colour: RGBColor,
    /// (x, mean, std)
    points: Vec<(f64, f64, f64)>,
}

#[derive(Default)]
struct Panel {
    title: String,
    curves: Vec<Curve>,
    /// Curves drawn as points with error bars (final return vs a parameter).
    points: bool,
    /// Dashed horizontal levels: label, value, colour.
    refs: Vec<(String, f64, RGBColor)>,
}

struct Figure {
    title: String,
    x_desc: String,
    y_desc: String,
    /// Format x values as env steps (k/M).
    steps: bool,
    panels: Vec<Panel>,
}

/// `1500` → `1.5k`, `2000000` → `2M`.
pub fn fmt_steps(x: f64) -> String {
    let trim = |v: f64| {
        let s = format!("{v:.1}");
        s.strip_suffix(".0").map(str::to_string).unwrap_or(s)
    };
    if x.abs() >= 1e6 {
        format!("{}M", trim(x / 1e6))
    } else if x.abs() >= 1e3 {
        format!("{}k", trim(x / 1e3))
    } else {
        trim(x)
    }
}

/// Axis values: whole numbers from 10 up, otherwise up to 3 significant decimals.
pub fn fmt_value(y: f64) -> String {
    if y.abs() >= 10.0 {
        format!("{y:.0}")
    } else {
        let s = format!("{y:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// The files a figure entry writes: `<stem>.svg` and `<stem>.png`.
pub struct Drawn {
    pub stem: String,
    pub title: String,
    pub svg: PathBuf,
    pub png: PathBuf,
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
        let base = entry
            .name
            .clone()
            .unwrap_or_else(|| kind_name(entry.kind).to_string());
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

fn wanted<'a>(filter: &'a [String], all: impl Iterator<Item = &'a String>) -> Vec<&'a String> {
    if filter.is_empty() {
        all.collect()
    } else {
        filter.iter().collect()
    }
}

fn env_filter(entry: &FigureEntry, results: &Results) -> Vec<String> {
    results
        .spec
        .envs
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

fn references(entry: &FigureEntry, env: &str) -> Vec<(String, f64, RGBColor)> {
    entry
        .references
        .iter()
        .filter(|r| {
            r.env
                .as_ref()
                .is_none_or(|e| e.parse::<crate::env::Task>().is_ok_and(|t| t.name() == env))
        })
        .map(|r| (r.label.clone(), r.value, REF_GREY))
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
    };
    for env in env_filter(entry, results) {
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
            .filter_map(|label| {
                let rows = by_group.get(label.as_str())?;
                Some(Curve {
                    label: label.clone(),
                    colour: colours[label],
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
    };
    for env in env_filter(entry, results) {
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
        let curves = swept
            .into_iter()
            .enumerate()
            .map(|(i, ((agent, rest), points))| {
                let (label, colour) = if rest.is_empty() {
                    let colour = known_colour(&agent).or_else(|| colours.get(&agent).copied());
                    (agent, colour.unwrap_or(PALETTE[0]))
                } else {
                    (format!("{agent}[{rest}]"), PALETTE[i % PALETTE.len()])
                };
                Curve {
                    label,
                    colour,
                    points,
                }
            })
            .collect();
        fig.panels.push(Panel {
            title: env.clone(),
            curves,
            points: true,
            refs,
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

/// Legend entries: every curve label once, then every reference level once.
fn legend(fig: &Figure) -> Vec<(String, RGBColor, bool)> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for p in &fig.panels {
        for c in &p.curves {
            if seen.insert(c.label.clone()) {
                out.push((c.label.clone(), c.colour, false));
            }
        }
    }
    for p in &fig.panels {
        for (label, _, colour) in &p.refs {
            if seen.insert(label.clone()) {
                out.push((label.clone(), *colour, true));
            }
        }
    }
    out
}

fn legend_width(label: &str) -> u32 {
    44 + 8 * label.chars().count() as u32 + 24
}

fn legend_rows(entries: &[(String, RGBColor, bool)], width: u32) -> u32 {
    let mut rows = 1;
    let mut x = 16;
    for (label, _, _) in entries {
        let w = legend_width(label);
        if x + w > width && x > 16 {
            rows += 1;
            x = 16;
        }
        x += w;
    }
    rows
}

fn size(fig: &Figure) -> (u32, u32) {
    let (rows, cols) = grid_shape(fig.panels.len());
    let width = PANEL.0 * cols as u32;
    let legend_h = LEGEND_ROW_H * legend_rows(&legend(fig), width) + 12;
    (width, TITLE_H + PANEL.1 * rows as u32 + legend_h)
}

type DrawResult<DB> = Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    fig: &Figure,
    legend: &[(String, RGBColor, bool)],
) -> DrawResult<DB> {
    root.fill(&WHITE)?;
    let (w, h) = root.dim_in_pixel();
    let (title, rest) = root.split_vertically(TITLE_H);
    title.draw_text(
        &fig.title,
        &TextStyle::from((FONT, 22).into_font()).pos(Pos::new(HPos::Center, VPos::Center)),
        (w as i32 / 2, TITLE_H as i32 / 2),
    )?;
    let (rows, cols) = grid_shape(fig.panels.len());
    let (body, foot) = rest.split_vertically(PANEL.1 * rows as u32);
    for (panel, area) in fig.panels.iter().zip(body.split_evenly((rows, cols))) {
        draw_panel(&area, panel, fig)?;
    }
    let _ = h;
    draw_legend(&foot, legend, w)
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

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    panel: &Panel,
    fig: &Figure,
) -> DrawResult<DB> {
    let ((x0, x1), (y0, y1)) = ranges(panel);
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, (FONT, 18))
        .margin(10)
        .margin_right(20)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(x0..x1, y0..y1)?;
    let steps = fig.steps;
    let fmt_x = move |x: &f64| {
        if steps { fmt_steps(*x) } else { format!("{x}") }
    };
    chart
        .configure_mesh()
        .x_desc(&fig.x_desc)
        .y_desc(&fig.y_desc)
        .x_labels(6)
        .y_labels(6)
        .x_label_formatter(&fmt_x)
        .y_label_formatter(&|y| fmt_value(*y))
        .label_style((FONT, 13))
        .axis_desc_style((FONT, 14))
        .light_line_style(TRANSPARENT)
        .bold_line_style(BLACK.mix(0.08))
        .draw()?;
    for c in &panel.curves {
        if panel.points {
            chart.draw_series(LineSeries::new(
                c.points.iter().map(|p| (p.0, p.1)),
                c.colour.stroke_width(1),
            ))?;
            chart.draw_series(c.points.iter().map(|&(x, m, s)| {
                ErrorBar::new_vertical(x, m - s, m, m + s, c.colour.stroke_width(2), 12)
            }))?;
            chart.draw_series(
                c.points
                    .iter()
                    .map(|&(x, m, _)| Circle::new((x, m), 5, c.colour.filled())),
            )?;
            continue;
        }
        let upper = c.points.iter().map(|p| (p.0, p.1 + p.2));
        let lower = c.points.iter().rev().map(|p| (p.0, p.1 - p.2));
        chart.draw_series(std::iter::once(Polygon::new(
            upper.chain(lower).collect::<Vec<_>>(),
            c.colour.mix(0.18).filled(),
        )))?;
        chart.draw_series(LineSeries::new(
            c.points.iter().map(|p| (p.0, p.1)),
            c.colour.stroke_width(2),
        ))?;
        if c.points.len() == 1 {
            let (x, m, _) = c.points[0];
            chart.draw_series(std::iter::once(Circle::new((x, m), 4, c.colour.filled())))?;
        }
    }
    let label_style =
        TextStyle::from((FONT, 12).into_font()).pos(Pos::new(HPos::Right, VPos::Bottom));
    for (label, value, colour) in &panel.refs {
        chart.draw_series(DashedLineSeries::new(
            [(x0, *value), (x1, *value)],
            8,
            5,
            colour.stroke_width(2),
        ))?;
        chart.draw_series(std::iter::once(Text::new(
            label.clone(),
            (x1 - (x1 - x0) * 0.01, *value),
            label_style.clone(),
        )))?;
    }
    Ok(())
}

fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    entries: &[(String, RGBColor, bool)],
    width: u32,
) -> DrawResult<DB> {
    let style = TextStyle::from((FONT, 15).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
    let (mut x, mut y) = (16i32, 6 + LEGEND_ROW_H as i32 / 2);
    for (label, colour, dashed) in entries {
        let w = legend_width(label) as i32;
        if x + w > width as i32 && x > 16 {
            x = 16;
            y += LEGEND_ROW_H as i32;
        }
        if *dashed {
            for k in 0..3 {
                let a = x + k * 12;
                area.draw(&PathElement::new(
                    [(a, y), (a + 7, y)],
                    colour.stroke_width(3),
                ))?;
            }
        } else {
            area.draw(&PathElement::new(
                [(x, y), (x + 34, y)],
                colour.stroke_width(4),
            ))?;
        }
        area.draw_text(label, &style, (x + 44, y))?;
        x += w;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_read_in_k_and_m() {
        assert_eq!(fmt_steps(0.0), "0");
        assert_eq!(fmt_steps(250.0), "250");
        assert_eq!(fmt_steps(1500.0), "1.5k");
        assert_eq!(fmt_steps(20_000.0), "20k");
        assert_eq!(fmt_steps(2_000_000.0), "2M");
        assert_eq!(fmt_value(1000.0), "1000");
        assert_eq!(fmt_value(0.25), "0.25");
        assert_eq!(fmt_value(0.0), "0");
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
}
