//! Validation and expansion: a [`Source`] becomes a [`Plan`], agents × variants × envs ×
//! seeds, every run fully resolved, with where each of its values came from.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{
    DeviceKind, FigureEntry, FigureKind, ReportEntry, Source, SpecError, SpecFile, insert_dotted,
};
use crate::agent::{self, AgentError};
use crate::config::limits;
use crate::env::{ObsVariant, Task};
use crate::runner::{EvalConfig, RunConfig};

/// The validated spec, apart from its runs.
#[derive(Debug, Clone)]
pub struct Spec {
    pub name: String,
    pub description: String,
    pub path: PathBuf,
    /// Agent names, sorted.
    pub agents: Vec<String>,
    /// Tasks in the paper's order.
    pub envs: Vec<Task>,
    pub devices: Devices,
    pub figures: Vec<FigureEntry>,
    pub report: ReportEntry,
}

/// Device slots: how many runs execute at once and where.
#[derive(Debug, Clone, PartialEq)]
pub struct Devices {
    pub kind: DeviceKind,
    pub threads_per_run: usize,
    pub slots: Vec<Slot>,
}

/// One place a run can execute: the CPU, or one GPU.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Slot {
    pub gpu: Option<usize>,
}

/// Every run of a spec.
#[derive(Debug, Clone)]
pub struct Plan {
    pub spec: Spec,
    pub runs: Vec<PlannedRun>,
}

/// One run: its group (agent, sweep variant, env, seed) and its resolved config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlannedRun {
    pub run_id: String,
    pub agent: String,
    /// Sweep point, e.g. `beta=0.2`; empty without sweeps.
    pub variant: String,
    pub env: String,
    pub seed: u64,
    pub config: RunConfig,
    /// Where each value of `config` came from (`mpdp explain`), by field path.
    #[serde(skip)]
    pub sources: BTreeMap<String, String>,
}

impl PlannedRun {
    /// `MPDP` or `MPDP[beta=0.2]`.
    pub fn label(&self) -> String {
        if self.variant.is_empty() {
            self.agent.clone()
        } else {
            format!("{}[{}]", self.agent, self.variant)
        }
    }
}

/// What all runs of one (sweep point of a) spec share.
struct Common {
    name: String,
    seeds: Vec<u64>,
    envs: Vec<EnvPlan>,
    eval: EvalConfig,
    num_envs: usize,
    checkpoint_every: u64,
    log_every: u64,
}

struct EnvPlan {
    /// The key as written (`Hopper-v5`), for key paths in messages.
    key: String,
    task: Task,
    obs: ObsVariant,
    steps: u64,
}

/// An agent with `extends` resolved: its algo and its parameters, each with the spec key
/// that set it.
struct AgentDef {
    algo: String,
    algo_key: String,
    params: BTreeMap<String, (toml::Value, String)>,
    per_env: BTreeMap<Task, BTreeMap<String, (toml::Value, String)>>,
    /// The agent's own budget and seeds (`steps`, `seeds` in its table), over the spec's,
    /// each with the key that set it.
    steps: Option<(u64, String)>,
    seeds: Option<(Vec<u64>, String)>,
    /// The agent's own evaluation episodes (`eval_episodes`), over `eval.episodes`.
    eval_episodes: Option<(usize, String)>,
}

/// One grid axis of `[sweep]`.
struct Axis {
    key: String,
    values: Vec<toml::Value>,
    /// `Some(agent)` for `agents.<agent>.*` keys (only that agent's runs multiply).
    agent: Option<String>,
}

impl Axis {
    /// The key as variant names spell it: an agent's key without `agents.NAME.`.
    fn short_key(&self) -> &str {
        match &self.agent {
            Some(agent) => self.key[format!("agents.{agent}.").len()..].as_ref(),
            None => &self.key,
        }
    }
}

/// Validates `source` and expands it into every run.
pub fn expand(source: &Source) -> Result<Plan, SpecError> {
    let file = source.extract()?;
    let common = check_common(&file, source)?;
    if file.agents.len() > limits::AGENTS {
        return Err(source.invalid(
            "agents",
            format!(
                "{} agents; a spec may declare at most {}",
                file.agents.len(),
                limits::AGENTS
            ),
        ));
    }
    let mut defs = BTreeMap::new();
    for name in file.agents.keys() {
        check_name(source, &format!("agents.{name}"), name)?;
        if name.contains('.') {
            // `agents.A.B.gamma` in sweeps and `--set` could not tell the name from a key.
            return Err(source.invalid(
                &format!("agents.{name}"),
                format!("an agent name may not contain '.', found {name:?}"),
            ));
        }
        defs.insert(name, resolve_agent(name, &file, source, &mut Vec::new())?);
    }
    let spec = Spec {
        name: common.name.clone(),
        description: file.description.clone(),
        path: source.path.clone(),
        agents: file.agents.keys().cloned().collect(),
        envs: common.envs.iter().map(|e| e.task).collect(),
        devices: check_devices(&file, source)?,
        figures: check_figures(&file, source)?,
        report: check_report(&file, source)?,
    };
    let axes = sweep_axes(&file, source)?;
    check_figure_params(&spec.figures, &axes, source)?;
    // Count the runs before making any: a spec of millions is refused, not built.
    let mut total = 0usize;
    for (name, def) in &defs {
        let points = axes
            .iter()
            .filter(|a| a.agent.as_ref().is_none_or(|n| n == *name))
            .fold(1usize, |n, a| n.saturating_mul(a.values.len()));
        let seeds = def
            .seeds
            .as_ref()
            .map_or(common.seeds.len(), |(s, _)| s.len());
        total = total.saturating_add(points.saturating_mul(common.envs.len() * seeds));
    }
    if total > limits::RUNS {
        let at = if axes.is_empty() { "seeds" } else { "sweep" };
        return Err(source.invalid(
            at,
            format!(
                "the spec expands to {total} runs (agents × sweep points × envs × seeds); \
                 a spec may plan at most {}: split it into several specs",
                limits::RUNS
            ),
        ));
    }
    let mut runs = Vec::new();
    for name in file.agents.keys() {
        let mine: Vec<&Axis> = axes
            .iter()
            .filter(|a| a.agent.as_ref().is_none_or(|n| n == name))
            .collect();
        for point in grid(&mine) {
            let (variant, src) = if point.is_empty() {
                (String::new(), source.clone())
            } else {
                let variant = variant_name(&point);
                let mut layer = toml::Table::new();
                for (axis, value) in &point {
                    insert_dotted(&mut layer, &axis.key, (*value).clone())
                        .map_err(|m| source.invalid(&format!("sweep.{}", axis.key), m))?;
                }
                let name = format!("{} [sweep point {variant}]", source.path.display());
                let src = source.with_layer(name, layer);
                (variant, src)
            };
            let file = src.extract()?;
            let common = check_common(&file, &src)?;
            let def = resolve_agent(name, &file, &src, &mut Vec::new())?;
            let seeds = def.seeds.as_ref().map_or(&common.seeds, |(s, _)| s);
            for env in &common.envs {
                for &seed in seeds {
                    runs.push(plan_run(&src, &common, name, &variant, &def, env, seed)?);
                }
            }
        }
    }
    check_figure_metrics(&spec.figures, &runs, source)?;
    let mut seen: BTreeMap<&str, &PlannedRun> = BTreeMap::new();
    for run in &runs {
        if let Some(other) = seen.insert(&run.run_id, run) {
            // Two points of one sweep: the sweep is what to change, not the agent.
            let at = if run.variant.is_empty() {
                format!("agents.{}", run.agent)
            } else {
                "sweep".to_string()
            };
            return Err(source.invalid(
                &at,
                format!(
                    "{} resolves to the same run as {} on {} seed {} (id {}): give it different \
                     parameters or remove one",
                    run.label(),
                    other.label(),
                    run.env,
                    run.seed,
                    run.run_id
                ),
            ));
        }
    }
    Ok(Plan { spec, runs })
}

fn plan_run(
    src: &Source,
    common: &Common,
    name: &str,
    variant: &str,
    def: &AgentDef,
    env: &EnvPlan,
    seed: u64,
) -> Result<PlannedRun, SpecError> {
    // The agent's own parameters, then its per-env ones over them (nested tables such as
    // MBPO's `sac` merge key by key).
    let per_env = def.per_env.get(&env.task);
    let plain = |m: &BTreeMap<String, (toml::Value, String)>| -> toml::Table {
        m.iter().map(|(k, (v, _))| (k.clone(), v.clone())).collect()
    };
    let mut overrides = plain(&def.params);
    if let Some(pe) = per_env {
        crate::config::merge_tables(&mut overrides, &plain(pe));
    }
    // The spec key that set the parameter at `path` (`gamma`, `sac.actor_lr`), if the spec
    // set it: per-env first, then the agent's own (possibly inherited through `extends`).
    let spec_key = |path: &str| -> Option<String> {
        let (top, rest) = path.split_once('.').unwrap_or((path, ""));
        let full = |base: &String| {
            if rest.is_empty() {
                base.clone()
            } else {
                format!("{base}.{rest}")
            }
        };
        [per_env.and_then(|m| m.get(top)), def.params.get(top)]
            .into_iter()
            .flatten()
            .map(|(_, k)| full(k))
            .find(|k| src.origin(k).is_some())
    };
    let params = agent::resolve_params(&def.algo, env.task, &overrides).map_err(|e| match e {
        AgentError::Params { key, message, .. } => {
            let on = env.task.name();
            let path = key.as_deref().map(|k| k.split('[').next().unwrap_or(k));
            let at = path
                .and_then(|p| spec_key(p).or_else(|| spec_key(p.split('.').next().unwrap_or(p))));
            match (at, &key) {
                (Some(at), _) => src.invalid(&at, format!("{message} (on {on})")),
                (None, Some(k)) => src.invalid(
                    &format!("agents.{name}"),
                    format!("{k}: {message} (on {on})"),
                ),
                (None, None) => {
                    src.invalid(&format!("agents.{name}"), format!("{message} (on {on})"))
                }
            }
        }
        other => src.invalid(&format!("agents.{name}"), other.to_string()),
    })?;
    let config = RunConfig {
        experiment: common.name.clone(),
        env: env.task.name().to_string(),
        obs: env.obs.name().to_string(),
        seed,
        total_steps: def.steps.as_ref().map_or(env.steps, |(n, _)| *n),
        num_envs: common.num_envs,
        eval: match &def.eval_episodes {
            Some((episodes, _)) => EvalConfig {
                episodes: *episodes,
                ..common.eval.clone()
            },
            None => common.eval.clone(),
        },
        checkpoint_every: common.checkpoint_every,
        log_every: common.log_every,
        algo: def.algo.clone(),
        agent: params,
    };
    let origin = |key: &str| -> String {
        match src.origin(key) {
            Some(layer) => format!("{layer} ({key})"),
            None => "default".into(),
        }
    };
    let e = &env.key;
    let mut sources = BTreeMap::from([
        ("experiment".to_string(), origin("name")),
        ("env".into(), origin(&format!("envs.{e}"))),
        ("obs".into(), origin(&format!("envs.{e}.variant"))),
        (
            "seed".into(),
            origin(def.seeds.as_ref().map_or("seeds", |(_, k)| k)),
        ),
        (
            "total_steps".into(),
            match &def.steps {
                Some((_, k)) => origin(k),
                None => origin(&format!("envs.{e}.steps")),
            },
        ),
        ("num_envs".into(), origin("run.num_envs")),
        ("eval.every".into(), origin("eval.every")),
        (
            "eval.episodes".into(),
            origin(
                def.eval_episodes
                    .as_ref()
                    .map_or("eval.episodes", |(_, k)| k),
            ),
        ),
        ("checkpoint_every".into(), origin("run.checkpoint_every")),
        ("log_every".into(), origin("run.log_every")),
        ("algo".into(), origin(&def.algo_key)),
    ]);
    let (_, preset) = agent::param_layers(&def.algo, env.task)
        .expect("the algo was checked when the agent was resolved");
    for (path, _) in super::leaves(&config.agent) {
        let from = match spec_key(&path) {
            Some(k) => origin(&k),
            None if table_has(&preset, &path) => {
                format!("preset (presets.toml [{}.{}])", def.algo, env.task.name())
            }
            None => "default".into(),
        };
        sources.insert(format!("agent.{path}"), from);
    }
    Ok(PlannedRun {
        run_id: config.run_id(),
        agent: name.to_string(),
        variant: variant.to_string(),
        env: env.task.name().to_string(),
        seed,
        config,
        sources,
    })
}

/// Whether `table` has a value at the dotted `path`.
fn table_has(table: &toml::Table, path: &str) -> bool {
    let mut t = table;
    let mut parts = path.split('.').peekable();
    while let Some(p) = parts.next() {
        match t.get(p) {
            Some(toml::Value::Table(inner)) if parts.peek().is_some() => t = inner,
            Some(_) => return parts.peek().is_none(),
            None => return false,
        }
    }
    false
}

fn check_common(file: &SpecFile, src: &Source) -> Result<Common, SpecError> {
    if file.schema != super::SCHEMA {
        return Err(src.invalid(
            "schema",
            format!(
                "this mpdp reads schema {}, found {}",
                super::SCHEMA,
                file.schema
            ),
        ));
    }
    check_name(src, "name", &file.name)?;
    if file.seeds.is_empty() {
        return Err(src.invalid("seeds", "expected at least one seed, e.g. seeds = [0, 1]"));
    }
    let mut unique = BTreeSet::new();
    if let Some(dup) = file.seeds.iter().find(|s| !unique.insert(**s)) {
        return Err(src.invalid("seeds", format!("seed {dup} is listed twice")));
    }
    if file.envs.is_empty() {
        return Err(src.invalid(
            "envs",
            "expected at least one env, e.g. [envs.Hopper] steps = 100000",
        ));
    }
    if file.agents.is_empty() {
        return Err(src.invalid(
            "agents",
            "expected at least one agent, e.g. [agents.SAC] algo = \"sac\"",
        ));
    }
    let mut envs: Vec<EnvPlan> = Vec::new();
    for (key, entry) in &file.envs {
        let task: Task = key.parse().map_err(|_| {
            src.invalid(
                &format!("envs.{key}"),
                format!("unknown env (known: {})", task_names()),
            )
        })?;
        if let Some(other) = envs.iter().find(|e| e.task == task) {
            return Err(src.invalid(
                &format!("envs.{key}"),
                format!("the same task as envs.{}", other.key),
            ));
        }
        let obs: ObsVariant = entry.variant.parse().map_err(|_| {
            src.invalid(
                &format!("envs.{key}.variant"),
                format!("expected \"v5\" or \"mbpo\", found {:?}", entry.variant),
            )
        })?;
        if entry.steps == 0 || entry.steps > limits::COUNT as u64 {
            return Err(src.invalid(
                &format!("envs.{key}.steps"),
                format!(
                    "expected a number of environment steps in 1..={}, found {}",
                    limits::COUNT,
                    entry.steps
                ),
            ));
        }
        envs.push(EnvPlan {
            key: key.clone(),
            task,
            obs,
            steps: entry.steps,
        });
    }
    envs.sort_by_key(|e| Task::ALL.iter().position(|t| *t == e.task));
    for (key, value, max) in [
        ("eval.every", file.eval.every, limits::COUNT),
        ("eval.episodes", file.eval.episodes as u64, limits::ENVS),
        ("run.num_envs", file.run.num_envs as u64, limits::ENVS),
        (
            "run.checkpoint_every",
            file.run.checkpoint_every,
            limits::COUNT,
        ),
        ("run.log_every", file.run.log_every, limits::COUNT),
    ] {
        if value == 0 {
            return Err(src.invalid(key, "expected a positive number, found 0"));
        }
        if value > max as u64 {
            return Err(src.invalid(key, format!("expected at most {max}, found {value}")));
        }
    }
    Ok(Common {
        name: file.name.clone(),
        seeds: file.seeds.clone(),
        envs,
        eval: EvalConfig {
            every: file.eval.every,
            episodes: file.eval.episodes,
            stop_at_return: None,
        },
        num_envs: file.run.num_envs,
        checkpoint_every: file.run.checkpoint_every,
        log_every: file.run.log_every,
    })
}

fn task_names() -> String {
    Task::ALL.map(|t| t.name()).join(", ")
}

/// Names become directory names and labels: letters, digits, `-`, `_`, `.`; no leading dot;
/// at most [`limits::NAME`] bytes.
fn check_name(src: &Source, key: &str, name: &str) -> Result<(), SpecError> {
    crate::config::check_name(name).map_err(|m| src.invalid(key, m))
}

/// The spec's `[envs]` key that is `task`, however spelled (`Hopper`, `hopper-v5`).
fn spec_env_key(file: &SpecFile, task: Task) -> Option<&String> {
    file.envs
        .keys()
        .find(|e| e.parse::<Task>().is_ok_and(|t| t == task))
}

fn resolve_agent(
    name: &str,
    file: &SpecFile,
    src: &Source,
    stack: &mut Vec<String>,
) -> Result<AgentDef, SpecError> {
    let key = format!("agents.{name}");
    let table = &file.agents[name];
    stack.push(name.to_string());
    let text = |field: &str| -> Result<Option<String>, SpecError> {
        match table.get(field) {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(src.invalid(
                &format!("{key}.{field}"),
                format!("expected a string, found {}", other.type_str()),
            )),
        }
    };
    let mut def = match (text("algo")?, text("extends")?) {
        (Some(_), Some(_)) => {
            return Err(src.invalid(&key, "give `algo` or `extends`, not both"));
        }
        (None, None) => {
            return Err(src.invalid(
                &key,
                "missing `algo` (e.g. algo = \"sac\") or `extends` (another agent's name)",
            ));
        }
        (Some(algo), None) => {
            if agent::registry::find(&algo).is_err() {
                return Err(src.invalid(
                    &format!("{key}.algo"),
                    format!(
                        "unknown algo {algo:?} (known: {})",
                        agent::registry::names().join(", ")
                    ),
                ));
            }
            AgentDef {
                algo,
                algo_key: format!("{key}.algo"),
                params: BTreeMap::new(),
                per_env: BTreeMap::new(),
                steps: None,
                seeds: None,
                eval_episodes: None,
            }
        }
        (None, Some(base)) => {
            if !file.agents.contains_key(&base) {
                return Err(src.invalid(
                    &format!("{key}.extends"),
                    format!(
                        "no agent named {base:?} (agents: {})",
                        file.agents.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
            if let Some(start) = stack.iter().position(|n| *n == base) {
                let mut cycle = stack[start..].to_vec();
                cycle.push(base);
                return Err(src.invalid(
                    &format!("{key}.extends"),
                    format!("extends cycle: {}", cycle.join(" -> ")),
                ));
            }
            if stack.len() >= limits::EXTENDS {
                return Err(src.invalid(
                    &format!("agents.{}.extends", stack[0]),
                    format!(
                        "an extends chain may have at most {} links: {} -> ...",
                        limits::EXTENDS,
                        stack[..3].join(" -> ")
                    ),
                ));
            }
            resolve_agent(&base, file, src, stack)?
        }
    };
    stack.pop();
    for (k, v) in table {
        match k.as_str() {
            "algo" | "extends" => {}
            "steps" => {
                let at = format!("{key}.steps");
                let steps = v
                    .as_integer()
                    .filter(|&n| n > 0 && n as u64 <= limits::COUNT as u64)
                    .ok_or_else(|| {
                        src.invalid(
                            &at,
                            format!(
                                "expected a number of environment steps in 1..={}, found {v}",
                                limits::COUNT
                            ),
                        )
                    })?;
                def.steps = Some((steps as u64, at));
            }
            "eval_episodes" => {
                let at = format!("{key}.eval_episodes");
                let episodes = v
                    .as_integer()
                    .filter(|&n| n > 0 && n as u64 <= limits::ENVS as u64)
                    .ok_or_else(|| {
                        src.invalid(
                            &at,
                            format!(
                                "expected a number of evaluation episodes in 1..={}, found {v}",
                                limits::ENVS
                            ),
                        )
                    })?;
                def.eval_episodes = Some((episodes as usize, at));
            }
            "seeds" => {
                let at = format!("{key}.seeds");
                let bad = || {
                    src.invalid(
                        &at,
                        format!("expected a list of distinct seeds >= 0, e.g. [0, 1], found {v}"),
                    )
                };
                let list = v.as_array().filter(|a| !a.is_empty()).ok_or_else(bad)?;
                let mut seeds = Vec::with_capacity(list.len());
                for x in list {
                    let seed = x.as_integer().filter(|&n| n >= 0).ok_or_else(bad)? as u64;
                    if seeds.contains(&seed) {
                        return Err(bad());
                    }
                    seeds.push(seed);
                }
                def.seeds = Some((seeds, at));
            }
            "per_env" => {
                let envs = v.as_table().ok_or_else(|| {
                    src.invalid(
                        &format!("{key}.per_env"),
                        "expected tables of parameters by env, e.g. [agents.SAC.per_env.Hopper]",
                    )
                })?;
                let mut spelled: BTreeMap<Task, &str> = BTreeMap::new();
                for (env_key, params) in envs {
                    let at = format!("{key}.per_env.{env_key}");
                    let task: Task = env_key.parse().map_err(|_| {
                        src.invalid(&at, format!("unknown env (known: {})", task_names()))
                    })?;
                    // Parameters for an env the spec does not run would never be checked.
                    if spec_env_key(file, task).is_none() {
                        return Err(src
                            .invalid(&at, format!("{env_key:?} is not one of the spec's [envs]")));
                    }
                    if let Some(other) = spelled.insert(task, env_key) {
                        return Err(src.invalid(
                            &at,
                            format!("the same task as {key}.per_env.{other}; merge the two tables"),
                        ));
                    }
                    let params = params
                        .as_table()
                        .ok_or_else(|| src.invalid(&at, "expected a table of parameters"))?;
                    let slot = def.per_env.entry(task).or_default();
                    for (p, value) in params {
                        slot.insert(p.clone(), (value.clone(), format!("{at}.{p}")));
                    }
                }
            }
            _ => {
                def.params
                    .insert(k.clone(), (v.clone(), format!("{key}.{k}")));
            }
        }
    }
    Ok(def)
}

fn check_devices(file: &SpecFile, src: &Source) -> Result<Devices, SpecError> {
    let d = &file.devices;
    let mut listed = BTreeSet::new();
    if let Some(dup) = d.gpus.iter().find(|g| !listed.insert(**g)) {
        return Err(src.invalid(
            "devices.gpus",
            format!("GPU {dup} is listed twice (runs_per_device sets runs per GPU)"),
        ));
    }
    let threads = d.threads_per_run.unwrap_or(1);
    let counts = [
        ("devices.threads_per_run", threads),
        ("devices.runs_per_device", d.runs_per_device.unwrap_or(1)),
        ("devices.gpus", d.gpus.len().max(1)),
    ];
    for (key, n) in counts {
        if !(1..=limits::ENVS).contains(&n) {
            return Err(src.invalid(
                key,
                format!("expected 1..={} (per machine), found {n}", limits::ENVS),
            ));
        }
    }
    let slots = match d.kind {
        DeviceKind::Cpu => {
            if !d.gpus.is_empty() {
                return Err(src.invalid(
                    "devices.gpus",
                    "GPU indices need devices.kind = \"wgpu\" or \"cuda\"",
                ));
            }
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            let n = d.runs_per_device.unwrap_or((cores / threads).max(1));
            vec![Slot { gpu: None }; n]
        }
        DeviceKind::Wgpu | DeviceKind::Cuda => {
            // Without a list: one device, CUDA's GPU 0 or wgpu's default adapter (which need
            // not be a discrete GPU).
            let gpus: Vec<Option<usize>> = match (d.gpus.is_empty(), d.kind) {
                (true, DeviceKind::Wgpu) => vec![None],
                (true, _) => vec![Some(0)],
                (false, _) => d.gpus.iter().map(|&g| Some(g)).collect(),
            };
            let per = d.runs_per_device.unwrap_or(1);
            gpus.iter()
                .flat_map(|&gpu| std::iter::repeat_n(Slot { gpu }, per))
                .collect()
        }
    };
    Ok(Devices {
        kind: d.kind,
        threads_per_run: threads,
        slots,
    })
}

fn check_figures(file: &SpecFile, src: &Source) -> Result<Vec<FigureEntry>, SpecError> {
    let mut figures = file.figures.clone();
    for (i, fig) in figures.iter_mut().enumerate() {
        let at = format!("figures.{i}");
        if let Some(name) = &fig.name {
            // A file name stem inside the spec's plots directory.
            check_name(src, &format!("{at}.name"), name)?;
        }
        let check_env = |key: &str, e: &str| {
            let known = e.parse().is_ok_and(|t| spec_env_key(file, t).is_some());
            if known {
                Ok(())
            } else {
                Err(src.invalid(
                    &format!("{at}.{key}"),
                    format!("{e:?} is not one of the spec's envs"),
                ))
            }
        };
        for (j, r) in fig.references.iter_mut().enumerate() {
            let key = format!("{at}.references.{j}");
            match (r.value, &r.file) {
                (Some(v), None) if !v.is_finite() => {
                    return Err(src.invalid(
                        &format!("{key}.value"),
                        format!("expected a finite value, found {v}"),
                    ));
                }
                (Some(_), None) => {}
                (None, Some(path)) => {
                    let dir = src.path.parent().unwrap_or(Path::new("."));
                    let mut curve = super::reference::read(&dir.join(path))
                        .map_err(|e| src.invalid(&format!("{key}.file"), e))?;
                    // The report names it as the spec does.
                    curve.path = path.clone();
                    r.curve = Some(curve);
                }
                _ => {
                    return Err(src.invalid(
                        &key,
                        "a reference is a level (value = ...) or a curve (file = \"....csv\"): \
                         give exactly one",
                    ));
                }
            }
            if let Some(e) = &r.env {
                check_env("references", e)?;
            }
            for a in &r.agents {
                if !file.agents.contains_key(a) {
                    return Err(
                        src.invalid(&format!("{key}.agents"), format!("no agent named {a:?}"))
                    );
                }
            }
            if !r.agents.is_empty() && r.file.is_none() {
                return Err(src.invalid(
                    &format!("{key}.agents"),
                    "only a curve (file = \"....csv\") is held against agents",
                ));
            }
        }
        for a in &fig.agents {
            if !file.agents.contains_key(a) {
                return Err(src.invalid(&format!("{at}.agents"), format!("no agent named {a:?}")));
            }
        }
        for e in &fig.envs {
            check_env("envs", e)?;
        }
        // A key the figure's kind does not read would be ignored without a word.
        if fig.metric.is_some() && !matches!(fig.kind, FigureKind::Metric) {
            return Err(src.invalid(
                &format!("{at}.metric"),
                "only a `metric` figure reads `metric`",
            ));
        }
        if fig.param.is_some() && !matches!(fig.kind, FigureKind::FinalVsParam) {
            return Err(src.invalid(
                &format!("{at}.param"),
                "only a `final_vs_param` figure reads `param`",
            ));
        }
        match fig.kind {
            FigureKind::Metric if fig.metric.is_none() => {
                return Err(src.invalid(&at, "a `metric` figure needs metric = \"...\""));
            }
            FigureKind::FinalVsParam if fig.param.is_none() => {
                return Err(src.invalid(&at, "a `final_vs_param` figure needs param = \"...\""));
            }
            _ => {}
        }
    }
    Ok(figures)
}

fn check_report(file: &SpecFile, src: &Source) -> Result<ReportEntry, SpecError> {
    let r = &file.report;
    if r.final_evals == 0 || r.final_evals > limits::COUNT {
        return Err(src.invalid(
            "report.final_evals",
            format!(
                "expected a count in 1..={}, found {}",
                limits::COUNT,
                r.final_evals
            ),
        ));
    }
    if r.bootstrap > 1_000_000 {
        return Err(src.invalid(
            "report.bootstrap",
            format!("expected at most 1000000 resamples, found {}", r.bootstrap),
        ));
    }
    if r.bootstrap < 100 {
        return Err(src.invalid(
            "report.bootstrap",
            format!("expected at least 100 resamples, found {}", r.bootstrap),
        ));
    }
    if !(r.confidence > 0.0 && r.confidence < 1.0) {
        return Err(src.invalid(
            "report.confidence",
            format!("expected a level in (0, 1), found {}", r.confidence),
        ));
    }
    if !(200..=4000).contains(&r.panel_width) {
        return Err(src.invalid(
            "report.panel_width",
            format!("expected pixels in 200..=4000, found {}", r.panel_width),
        ));
    }
    if !(1..=100_000).contains(&r.video_frames) {
        return Err(src.invalid(
            "report.video_frames",
            format!("expected frames in 1..=100000, found {}", r.video_frames),
        ));
    }
    if !(16..=4096).contains(&r.video_size) || r.video_size % 2 == 1 {
        return Err(src.invalid(
            "report.video_size",
            format!(
                "expected an even number of pixels in 16..=4096, found {}",
                r.video_size
            ),
        ));
    }
    Ok(r.clone())
}

/// The `[sweep]` table as grid axes. Nested tables and quoted dotted keys both work:
/// `[sweep.agents.MPDP] beta = [...]` is `[sweep] "agents.MPDP.beta" = [...]`.
fn sweep_axes(file: &SpecFile, src: &Source) -> Result<Vec<Axis>, SpecError> {
    let leaves: Vec<(String, toml::Value)> = super::leaves(&file.sweep)
        .into_iter()
        .map(|(k, v)| (k, v.clone()))
        .collect();
    if let Some(path) = empty_table(&file.sweep, "sweep") {
        return Err(src.invalid(
            &path,
            "an empty table sweeps nothing: give its keys lists of values, or remove it",
        ));
    }
    let mut axes: Vec<Axis> = Vec::new();
    for (key, value) in leaves {
        let at = format!("sweep.{key}");
        if axes.iter().any(|a| a.key == key) {
            // `[sweep] "agents.A.gamma"` and `[sweep.agents.A] gamma` name one parameter.
            return Err(src.invalid(&at, "this parameter is swept twice; give it one list"));
        }
        let parts: Vec<&str> = key.split('.').collect();
        let agent = match parts[0] {
            "agents" => {
                let name = parts.get(1).copied().unwrap_or_default();
                if !file.agents.contains_key(name) {
                    return Err(src.invalid(&at, format!("no agent named {name:?}")));
                }
                if parts.len() < 3 || matches!(parts[2], "algo" | "extends") {
                    return Err(src.invalid(
                        &at,
                        "sweep a parameter (agents.NAME.param); declare other algorithms as \
                         separate agents",
                    ));
                }
                Some(name.to_string())
            }
            "envs" => {
                let name = parts.get(1).copied().unwrap_or_default();
                if !file.envs.contains_key(name) {
                    // The same task under the spelling the spec uses is a key to write as such.
                    let spelled = name
                        .parse::<Task>()
                        .ok()
                        .and_then(|t| spec_env_key(file, t));
                    let message = match spelled {
                        Some(key) => format!(
                            "the spec's [envs] spells this env {key:?}: write the sweep key \
                             with that spelling"
                        ),
                        None => format!(
                            "{name:?} is not one of the spec's [envs]; a sweep varies an env's \
                             keys, it adds no env"
                        ),
                    };
                    return Err(src.invalid(&at, message));
                }
                None
            }
            "eval" | "run" => None,
            _ => {
                return Err(src.invalid(
                    &at,
                    "can sweep agents.*, envs.*, eval.* and run.* keys (seeds go in `seeds`)",
                ));
            }
        };
        let values = match value {
            toml::Value::Array(values) if !values.is_empty() => values,
            _ => {
                return Err(src.invalid(
                    &at,
                    "expected a non-empty array of values, e.g. [0.2, 0.5, 0.7]",
                ));
            }
        };
        // Numbers compare by value: 1 and 1.0 are the same point.
        let spelled = |v: &toml::Value| match v {
            toml::Value::Integer(i) => (*i as f64).to_string(),
            toml::Value::Float(f) => f.to_string(),
            other => other.to_string(),
        };
        let mut shown = BTreeSet::new();
        if let Some(dup) = values.iter().find(|v| !shown.insert(spelled(v))) {
            return Err(src.invalid(&at, format!("{dup} is listed twice")));
        }
        // The checkpoint interval is no part of a run: its sweep points would be one run.
        if key == "run.checkpoint_every" && values.len() > 1 {
            return Err(src.invalid(
                &at,
                "the checkpoint interval changes no result and no run id, so its sweep points \
                 would all be the same runs; set it once in [run]",
            ));
        }
        axes.push(Axis { key, values, agent });
    }
    Ok(axes)
}

/// The key path of the first empty table inside `table` (whose own path is `path`), if any.
fn empty_table(table: &toml::Table, path: &str) -> Option<String> {
    table.iter().find_map(|(k, v)| {
        let t = v.as_table()?;
        let path = format!("{path}.{k}");
        if t.is_empty() {
            Some(path)
        } else {
            empty_table(t, &path)
        }
    })
}

/// Every combination of one value per axis (one empty point without axes).
fn grid<'a>(axes: &[&'a Axis]) -> Vec<Vec<(&'a Axis, &'a toml::Value)>> {
    let mut points: Vec<Vec<(&Axis, &toml::Value)>> = vec![Vec::new()];
    for axis in axes {
        points = points
            .into_iter()
            .flat_map(|p| {
                axis.values.iter().map(move |v| {
                    let mut q = p.clone();
                    q.push((*axis, v));
                    q
                })
            })
            .collect();
    }
    points
}

/// A `metric` figure's `metric` must be one a run of the figure's agents logs: one every run
/// logs, or `train/<name>` of a statistic of one of their algorithms.
fn check_figure_metrics(
    figures: &[FigureEntry],
    runs: &[PlannedRun],
    src: &Source,
) -> Result<(), SpecError> {
    for (i, fig) in figures.iter().enumerate() {
        let (FigureKind::Metric, Some(metric)) = (fig.kind, &fig.metric) else {
            continue;
        };
        let mut known: BTreeSet<String> = crate::runner::RUN_METRICS
            .iter()
            .map(|m| m.to_string())
            .collect();
        let mut logged = known.contains(metric);
        for run in runs {
            if fig.agents.is_empty() || fig.agents.contains(&run.agent) {
                let algo = agent::registry::find(&run.config.algo)
                    .expect("the algo was checked when the agent was resolved");
                known.extend(algo.stats().map(|m| format!("train/{m}")));
                logged |= metric
                    .strip_prefix("train/")
                    .is_some_and(|name| algo.logs(name));
            }
        }
        if !logged {
            return Err(src.invalid(
                &format!("figures.{i}.metric"),
                format!(
                    "{metric:?} is not logged by the figure's agents (they log: {}{})",
                    known
                        .iter()
                        .map(String::as_str)
                        .collect::<Vec<_>>()
                        .join(", "),
                    if known.iter().any(|m| m.contains(crate::stats::STEP)) {
                        "; {t} is a planning step: 0, 1, ..."
                    } else {
                        ""
                    }
                ),
            ));
        }
    }
    Ok(())
}

/// A `final_vs_param` figure's `param` must be swept: the key of a sweep axis as variant
/// names spell it (`beta` for `agents.MPDP.beta`, `eval.every` for itself).
fn check_figure_params(
    figures: &[FigureEntry],
    axes: &[Axis],
    src: &Source,
) -> Result<(), SpecError> {
    let swept: Vec<&str> = axes.iter().map(Axis::short_key).collect();
    for (i, fig) in figures.iter().enumerate() {
        if let (FigureKind::FinalVsParam, Some(param)) = (fig.kind, &fig.param)
            && !swept.contains(&param.as_str())
        {
            let known = if swept.is_empty() {
                "the spec sweeps nothing".to_string()
            } else {
                format!("swept: {}", swept.join(", "))
            };
            return Err(src.invalid(
                &format!("figures.{i}.param"),
                format!("{param:?} is not a swept parameter ({known})"),
            ));
        }
    }
    Ok(())
}

/// `beta=0.2,u_threshold=1` (agent keys without their `agents.NAME.` prefix).
fn variant_name(point: &[(&Axis, &toml::Value)]) -> String {
    point
        .iter()
        .map(|(axis, value)| {
            let key = axis.short_key();
            let value = match value {
                toml::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            format!("{key}={value}")
        })
        .collect::<Vec<_>>()
        .join(",")
}
