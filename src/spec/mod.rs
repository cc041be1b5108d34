//! Experiment specs: what the user wrote ([`SpecFile`], TOML merged with `--set` overrides
//! through figment) is validated and expanded into a [`Plan`] of fully resolved runs
//! (`expand`). Nothing downstream of the plan reads the TOML.
//!
//! A spec's values come in layers, each a figment provider with its own name, so every value
//! can say where it came from (`mpdp explain`): the spec file, then a sweep point, then
//! `--set` on the command line. Agent parameters have two more layers below the spec: the
//! config struct's defaults and the per-env presets (see [`crate::agent`]).

mod expand;
pub mod reference;

pub use expand::{Devices, Plan, PlannedRun, Slot, Spec, expand};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use figment::value::{Dict, Map};
use figment::{Figment, Metadata, Profile, Provider};
use serde::{Deserialize, Serialize};

/// The spec schema this build reads.
pub const SCHEMA: u32 = 1;

/// A spec file as written (after the `--set` overrides): types checked, unknown keys refused,
/// nothing else validated yet.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpecFile {
    /// Schema version; this build reads [`SCHEMA`].
    pub schema: u32,
    /// Experiment name: runs go to `runs/<name>/`, figures to `plots/<name>/`.
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Every (agent, variant, env) runs once per seed.
    pub seeds: Vec<u64>,
    /// Tasks by name (`Hopper` or `Hopper-v5`), each with its step budget.
    pub envs: BTreeMap<String, EnvEntry>,
    /// Agents by name: `algo = "sac"` or `extends = "OTHER"`, the algorithm's parameters,
    /// and `per_env.<Task>` tables of per-task parameters.
    pub agents: BTreeMap<String, toml::Table>,
    /// Grid sweeps: dotted keys (`agents.MPDP.beta`, `envs.Hopper.steps`) with value lists.
    #[serde(default)]
    pub sweep: toml::Table,
    #[serde(default)]
    pub eval: EvalEntry,
    #[serde(default)]
    pub run: RunEntry,
    #[serde(default)]
    pub devices: DevicesEntry,
    #[serde(default)]
    pub figures: Vec<FigureEntry>,
    #[serde(default)]
    pub report: ReportEntry,
}

/// How results are summarised (`mpdp aggregate`, `mpdp plots`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReportEntry {
    /// A run's final score: the mean of its last this-many evaluations (default 3, so one
    /// lucky evaluation does not make a score).
    pub final_evals: usize,
    /// Bootstrap resamples for IQM confidence intervals (default 2000, rliable's default).
    pub bootstrap: usize,
    /// Confidence level of the intervals (default 0.95).
    pub confidence: f64,
    /// Width of one figure panel in pixels (default 560, so that Figure 1's six panels make
    /// a 1680-pixel-wide PNG); fonts, lines and markers scale with it.
    pub panel_width: u32,
    /// `mpdp plots` also renders, per env and agent, a clip of the final policy of its best
    /// seed (`plots/<name>/videos/`, linked from report.md with its first frame); default
    /// false. Needs `just setup-video`.
    pub videos: bool,
    /// Frames per clip (default 250: two seconds of Hopper).
    pub video_frames: usize,
    /// Width and height of a clip in pixels (default 320).
    pub video_size: u32,
}

impl Default for ReportEntry {
    fn default() -> Self {
        ReportEntry {
            final_evals: 3,
            bootstrap: 2000,
            confidence: 0.95,
            panel_width: 560,
            videos: false,
            video_frames: 250,
            video_size: 320,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvEntry {
    /// Environment steps per run.
    pub steps: u64,
    /// Observation variant: `v5` (Gymnasium's) or `mbpo` (Ant 27, Humanoid 45 dims).
    #[serde(default = "default_variant")]
    pub variant: String,
}

fn default_variant() -> String {
    "v5".into()
}

/// Evaluation protocol (hashed into every run id).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalEntry {
    /// Environment steps between evaluations (and one at the end). Default 1000: the eval
    /// interval of MBPO's and the paper's learning curves.
    pub every: u64,
    /// Deterministic episodes per evaluation, each on its own env. Default 5 (MBPO's eval
    /// protocol evaluates 1 episode; 5 halves the noise of a curve point for little cost).
    pub episodes: usize,
}

impl Default for EvalEntry {
    fn default() -> Self {
        EvalEntry {
            every: 1000,
            episodes: 5,
        }
    }
}

/// How each run trains, logs and saves (hashed into every run id but `checkpoint_every`,
/// which does not change results).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunEntry {
    /// Training envs stepped in parallel per run (default 1, as in the paper).
    pub num_envs: usize,
    /// Environment steps between checkpoints (default 5000: a killed run loses minutes).
    pub checkpoint_every: u64,
    /// Environment steps between training-statistics rows (default 1000).
    pub log_every: u64,
}

impl Default for RunEntry {
    fn default() -> Self {
        RunEntry {
            num_envs: 1,
            checkpoint_every: crate::runner::DEFAULT_CHECKPOINT_EVERY,
            log_every: 1000,
        }
    }
}

/// Compute device of the runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    #[default]
    Cpu,
    Wgpu,
    Cuda,
}

impl DeviceKind {
    pub fn name(self) -> &'static str {
        match self {
            DeviceKind::Cpu => "cpu",
            DeviceKind::Wgpu => "wgpu",
            DeviceKind::Cuda => "cuda",
        }
    }
}

/// Where runs execute (not part of run ids: devices don't change what a run means).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DevicesEntry {
    /// `cpu` (default), `wgpu` or `cuda`.
    pub kind: DeviceKind,
    /// Runs at once per device. CPU: default cores / threads_per_run. GPU: default 1.
    pub runs_per_device: Option<usize>,
    /// Threads per run (its rayon pool: parallel envs, eval episodes). Default 1: small MLP
    /// updates gain little from more threads and many runs share a machine.
    pub threads_per_run: Option<usize>,
    /// GPU indices to use: `MPDP_DEVICE=wgpu:N` (wgpu's N-th discrete GPU) or
    /// `CUDA_VISIBLE_DEVICES` of each run. Default: wgpu's default adapter, CUDA's GPU 0.
    pub gpus: Vec<usize>,
}

/// A figure the report draws (see `mpdp aggregate`/`plots`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FigureEntry {
    /// `learning_curves` (Figure 1), `horizon` (Figure 2), `model_error` (Figure 3),
    /// `final_vs_param` (Figure 4) or `metric` (any logged metric vs steps).
    pub kind: FigureKind,
    /// File name stem (default: the kind).
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub title: Option<String>,
    /// The metric to draw (`metric` figures).
    #[serde(default)]
    pub metric: Option<String>,
    /// Agents to include (default: all).
    #[serde(default)]
    pub agents: Vec<String>,
    /// Envs to include (default: all).
    #[serde(default)]
    pub envs: Vec<String>,
    /// The swept parameter on the x axis (`final_vs_param` figures), e.g. `beta`.
    #[serde(default)]
    pub param: Option<String>,
    /// References: dashed levels, or published curves (dashed, with a light ±std band).
    #[serde(default)]
    pub references: Vec<ReferenceEntry>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FigureKind {
    LearningCurves,
    Horizon,
    ModelError,
    FinalVsParam,
    Metric,
}

/// A reference drawn on a figure: a dashed level (`value`) or a published curve (`file`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReferenceEntry {
    pub label: String,
    /// A level, the same at every step.
    #[serde(default)]
    pub value: Option<f64>,
    /// A curve: a CSV file ([`reference`]), relative to the spec's directory.
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// The env panel it belongs to (default: every panel).
    #[serde(default)]
    pub env: Option<String>,
    /// The spec's agents the report holds against a curve, step by step (default: those whose
    /// name starts with the label's first word: `SAC` and `SAC-tianshou` for
    /// "SAC (Tianshou, 10 seeds)").
    #[serde(default)]
    pub agents: Vec<String>,
    /// The curve in `file`, read and checked when the spec is loaded.
    #[serde(skip)]
    pub curve: Option<reference::ReferenceCurve>,
}

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    Syntax { path: PathBuf, message: String },
    /// A value that doesn't fit: where it came from (the spec file, `--set`, a sweep
    /// point), its key path, and what was expected.
    #[error("{origin}: {}{message}", if key.is_empty() { String::new() } else { format!("{key}: ") })]
    Invalid {
        origin: String,
        key: String,
        message: String,
    },
}

/// A spec that cannot be read or is wrong is always the user's to fix.
impl crate::config::IsUsage for SpecError {
    fn is_usage(&self) -> bool {
        true
    }
}

/// One named layer of values (the spec file, a sweep point, the `--set` overrides).
struct Layer {
    name: String,
    table: toml::Table,
}

impl Provider for Layer {
    fn metadata(&self) -> Metadata {
        Metadata::named(self.name.clone())
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        figment::providers::Serialized::defaults(&self.table).data()
    }
}

/// Layer name of `--set` overrides.
pub const CLI_LAYER: &str = "--set";

/// A spec file read and layered with the command line, not yet extracted.
#[derive(Clone)]
pub struct Source {
    pub path: PathBuf,
    figment: Figment,
}

impl Source {
    /// Reads `path` (TOML syntax checked here, with line and column) and layers `sets`
    /// (`a.b.c=value`; a value that isn't TOML is a string) over it.
    pub fn load(path: &Path, sets: &[String]) -> Result<Self, SpecError> {
        let bytes = std::fs::read(path).map_err(|source| SpecError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let text = String::from_utf8(bytes).map_err(|e| {
            let bad = e.utf8_error().valid_up_to();
            let before = &e.as_bytes()[..bad];
            let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
            let column = bad
                - before
                    .iter()
                    .rposition(|&b| b == b'\n')
                    .map_or(0, |i| i + 1)
                + 1;
            SpecError::Syntax {
                path: path.to_path_buf(),
                message: format!(
                    "line {line}, column {column}: not UTF-8 text (byte 0x{:02x}); a spec is a \
                     UTF-8 TOML file",
                    e.as_bytes()[bad]
                ),
            }
        })?;
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| SpecError::Syntax {
                path: path.to_path_buf(),
                message: crate::config::readable(e.to_string().trim_end()),
            })?;
        let overrides = sets_table(sets)?;
        let figment = Figment::new()
            .merge(Layer {
                name: path.display().to_string(),
                table,
            })
            .merge(Layer {
                name: CLI_LAYER.into(),
                table: overrides,
            });
        Ok(Source {
            path: path.to_path_buf(),
            figment,
        })
    }

    /// This source with one more layer on top (a sweep point).
    fn with_layer(&self, name: String, table: toml::Table) -> Source {
        Source {
            path: self.path.clone(),
            figment: self.figment.clone().merge(Layer { name, table }),
        }
    }

    fn extract(&self) -> Result<SpecFile, SpecError> {
        self.figment
            .extract::<SpecFile>()
            .map_err(|e| self.figment_error(e))
    }

    /// Which layer the value at the dotted `key` came from, if it is set at all.
    pub fn origin(&self, key: &str) -> Option<String> {
        self.figment.find_metadata(key).map(|m| m.name.to_string())
    }

    fn figment_error(&self, e: figment::Error) -> SpecError {
        let e = e
            .into_iter()
            .next()
            .expect("an error holds at least one error");
        SpecError::Invalid {
            origin: crate::config::readable(
                &e.metadata
                    .as_ref()
                    .map(|m| m.name.to_string())
                    .unwrap_or_else(|| self.path.display().to_string()),
            ),
            key: e.path.join("."),
            message: crate::config::readable(&e.kind.to_string()),
        }
    }

    /// An error about the value at `key`, naming the layer it came from.
    fn invalid(&self, key: &str, message: impl Into<String>) -> SpecError {
        // The value itself, or the nearest enclosing table that some layer set.
        let mut origin = None;
        let mut k = key;
        while origin.is_none() {
            origin = self.origin(k);
            match k.rfind('.') {
                Some(i) => k = &k[..i],
                None => break,
            }
        }
        SpecError::Invalid {
            origin: crate::config::readable(
                &origin.unwrap_or_else(|| self.path.display().to_string()),
            ),
            key: crate::config::readable(key),
            message: crate::config::readable(&message.into()),
        }
    }
}

/// `--set a.b.c=value` overrides as one table: dotted keys nest, and tables merge key by key
/// (`a.b={x=1}` then `a.b.y=2` keeps x).
pub fn sets_table(sets: &[String]) -> Result<toml::Table, SpecError> {
    let mut table = toml::Table::new();
    for set in sets {
        let (key, value) = parse_set(set)?;
        insert_dotted(&mut table, &key, value).map_err(|message| SpecError::Invalid {
            origin: CLI_LAYER.into(),
            key: key.clone(),
            message,
        })?;
    }
    Ok(table)
}

/// `a.b=value` → (`a.b`, value): TOML if it parses as a TOML value, a string otherwise.
fn parse_set(set: &str) -> Result<(String, toml::Value), SpecError> {
    let bad = |message: &str| SpecError::Invalid {
        origin: CLI_LAYER.into(),
        key: clip(set, 80),
        message: message.to_string(),
    };
    let (key, value) = set
        .split_once('=')
        .ok_or_else(|| bad("expected KEY=VALUE, e.g. agents.SAC.actor_lr=1e-3"))?;
    let key = key.trim();
    if key.is_empty() || key.split('.').any(|s| s.trim().is_empty()) {
        return Err(bad("expected a dotted key, e.g. agents.SAC.actor_lr"));
    }
    let value = value.trim();
    let parsed = match format!("v = {value}").parse::<toml::Table>() {
        // A value with a newline could hide more keys after it (`0.9\nseeds=[5]`).
        Ok(t) if t.len() > 1 => {
            return Err(bad(
                "expected one value after `=`, found more keys on the lines after it",
            ));
        }
        Ok(mut t) => t.remove("v"),
        Err(_) => None,
    };
    let parsed = parsed.unwrap_or_else(|| toml::Value::String(value.to_string()));
    Ok((key.to_string(), parsed))
}

/// `s`, cut to at most `max` characters with "…" where it was cut (for echoing user input).
pub fn clip(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// Sets `table[a][b][c] = value` for the dotted key `a.b.c`, creating tables on the way.
fn insert_dotted(table: &mut toml::Table, key: &str, value: toml::Value) -> Result<(), String> {
    let mut parts: Vec<&str> = key.split('.').map(str::trim).collect();
    let last = parts.pop().expect("split yields at least one part");
    let mut t = table;
    for (i, part) in parts.iter().enumerate() {
        let entry = t
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        t = entry.as_table_mut().ok_or_else(|| {
            format!(
                "{} is set to a value, so it can't hold {key}",
                parts[..=i].join(".")
            )
        })?;
    }
    // Tables merge key by key, as the layers do, so the order of `--set`s with disjoint keys
    // does not matter (`a.b={x=1}` then `a={y=2}` keeps a.b.x).
    match (t.get_mut(last), value) {
        (Some(toml::Value::Table(old)), toml::Value::Table(new)) => {
            crate::config::merge_tables(old, &new)
        }
        (_, value) => {
            t.insert(last.to_string(), value);
        }
    }
    Ok(())
}

/// The non-table values of `table` with their dotted paths (`gamma`, `sac.actor_lr`), in key
/// order. Arrays are values, not descended into.
pub fn leaves(table: &toml::Table) -> Vec<(String, &toml::Value)> {
    fn walk<'a>(prefix: &str, table: &'a toml::Table, out: &mut Vec<(String, &'a toml::Value)>) {
        for (k, v) in table {
            let path = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            match v {
                toml::Value::Table(t) => walk(&path, t, out),
                other => out.push((path, other)),
            }
        }
    }
    let mut out = Vec::new();
    walk("", table, &mut out);
    out
}

/// Loads, validates and expands the spec at `path` with `--set` overrides into a plan.
pub fn load(path: &Path, sets: &[String]) -> Result<Plan, SpecError> {
    expand(&Source::load(path, sets)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_values_parse_as_toml_or_strings() {
        let (k, v) = parse_set("agents.SAC.actor_lr=1e-3").unwrap();
        assert_eq!(k, "agents.SAC.actor_lr");
        assert_eq!(v, toml::Value::Float(1e-3));
        assert_eq!(
            parse_set("a.b=[1, 2]").unwrap().1.as_array().unwrap().len(),
            2
        );
        assert_eq!(parse_set("name=quick").unwrap().1.as_str(), Some("quick"));
        assert!(parse_set("novalue").is_err());
        assert!(parse_set("a..b=1").is_err());
        let mut t = toml::Table::new();
        insert_dotted(&mut t, "a.b", toml::Value::Integer(1)).unwrap();
        assert!(insert_dotted(&mut t, "a.b.c", toml::Value::Integer(2)).is_err());
    }

    /// Regression: a later `--set` of a whole table dropped what an earlier one had set
    /// inside it (`agents.X.sac={...}` then `agents.X={...}` lost the sac table).
    #[test]
    fn sets_of_tables_merge_in_either_order() {
        let sets = [
            "agents.M.sac={hidden=[16], batch_size=16}",
            "agents.M={horizon=3}",
            "agents.M.sac.batch_size=32",
        ];
        let mut t = toml::Table::new();
        for set in sets {
            let (k, v) = parse_set(set).unwrap();
            insert_dotted(&mut t, &k, v).unwrap();
        }
        let m = t["agents"]["M"].as_table().unwrap();
        assert_eq!(m["horizon"].as_integer(), Some(3));
        assert_eq!(m["sac"]["batch_size"].as_integer(), Some(32));
        assert_eq!(m["sac"]["hidden"].as_array().map(|a| a.len()), Some(1));
    }
}
