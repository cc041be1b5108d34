//! What runs cost on this machine, before they run: a short calibration of each distinct
//! agent and task (the random start phase, the first learning call with its model fit, a few
//! steps of steady learning, a few evaluation steps), cached per machine, and a model of a
//! run's wall time built from the agent's [`Workload`]. `mpdp plan --cost` prints it per run
//! and sums it per agent and env; `mpdp status` uses it for its ETA before runs have a rate.
//!
//! The model of a run of T steps that learns from step S, fits its model every F steps and
//! evaluates every V steps with E episodes (README, "What a spec costs"):
//!
//! ```text
//! seconds = S · random_step + (T − S) · learn_step
//!         + Σ_{fits at t = S, S+F, … ≤ T} (fit_extra + t · epochs(t) · fit_row_epoch)
//!         + evaluations · max_episode_steps · eval_step
//! ```
//!
//! where epochs(S) is what the calibration's first fit ran and a later fit, which starts from
//! the last one's weights, runs the agent's `max_epochs` if it caps them, else
//! [`WARM_FIT_SHARE`] of the first fit's epochs. Two parts err high: evaluation episodes count
//! at full length, and a run that stops at `stop_at_return` counts to its last step. One part
//! errs low: costs that grow over a run besides the fits (MBPO's rollouts lengthening with its
//! schedule) count at their size at step S. Checkpoints are left out.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::agent::{self, AgentError, Setting, Workload};
use crate::env::{Env, EnvError};
use crate::runner::{EnvPool, RunConfig};
use crate::spec::{Plan, PlannedRun};

/// Unit costs of one agent on one task, measured on this machine (seconds).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Calibration {
    /// Per transition before learning starts: a uniform random action, the env step, storing
    /// the transition.
    pub random_step_s: f64,
    /// Per transition once learning runs, model fits left out: the agent's action (a planning
    /// call for PETS and POPLIN), the env step, and the learning due (gradient updates).
    pub learn_step_s: f64,
    /// The model fits of a model-based agent.
    pub fit: Option<FitCost>,
    /// Per step of the evaluation episodes, stepped together: the agent's deterministic
    /// actions and the env steps.
    pub eval_step_s: f64,
    /// Wall seconds the calibration took.
    pub seconds: f64,
    /// The share of the machine's CPU time that other processes used while the calibration
    /// ran (Linux `/proc/stat` less this process's own ticks); `None` where unknown. Unit
    /// costs measured on a busy machine run high.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub busy: Option<f64>,
}

/// A calibration during which other work used at least this share of the CPU time is
/// reported as made on a busy machine.
pub const BUSY: f64 = 0.5;

/// CPU clock ticks at one moment: the machine's busy and total ticks over all CPUs
/// (`/proc/stat`) and this process's own (`/proc/self/stat`).
#[derive(Debug, Clone, Copy)]
struct Ticks {
    busy: u64,
    total: u64,
    own: u64,
}

impl Ticks {
    fn now() -> Option<Ticks> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let (busy, total) = machine_ticks(stat.lines().next()?)?;
        let own = own_ticks(&std::fs::read_to_string("/proc/self/stat").ok()?)?;
        Some(Ticks { busy, total, own })
    }

    /// The share of all CPU time since `self` that other processes used.
    fn others_since(self) -> Option<f64> {
        let now = Ticks::now()?;
        let total = now.total.checked_sub(self.total).filter(|&t| t > 0)? as f64;
        let busy = now.busy.saturating_sub(self.busy);
        let own = now.own.saturating_sub(self.own);
        Some(busy.saturating_sub(own) as f64 / total)
    }
}

/// `/proc/stat`'s `cpu` line: (busy, total) ticks over its first eight fields (guest time is
/// already in user time); idle and iowait are the idle part.
fn machine_ticks(line: &str) -> Option<(u64, u64)> {
    let mut fields = line.split_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    let v: Vec<u64> = fields
        .take(8)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    let total: u64 = v.iter().sum();
    let idle = v.get(3)? + v.get(4)?;
    Some((total - idle, total))
}

/// `/proc/self/stat`: user + system ticks (fields 14 and 15; the command name before them
/// may hold spaces and parentheses, so fields are counted after its last `)`).
fn own_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// What a model fit costs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FitCost {
    /// Seconds per transition fitted on and epoch.
    pub row_epoch_s: f64,
    /// The epochs the calibration's fit ran (on `learning_starts` transitions).
    pub epochs: f64,
    /// Seconds of the learning call that fits besides the fit itself and the learning of an
    /// ordinary step: the model errors, MBPO's rollouts, POPLIN's distillation.
    pub extra_s: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum CostError {
    #[error("calibrating {what}: {source}")]
    Env { what: String, source: EnvError },
    #[error("calibrating {what}: {source}")]
    Agent { what: String, source: AgentError },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl crate::config::IsUsage for CostError {
    fn is_usage(&self) -> bool {
        match self {
            CostError::Env { source, .. } => source.is_usage(),
            CostError::Agent { source, .. } => source.is_usage(),
            CostError::Io { .. } => false,
        }
    }
}

/// The run's workload, from its resolved agent parameters.
pub fn workload(cfg: &RunConfig) -> Result<Workload, AgentError> {
    let entry = agent::registry::find(&cfg.algo)?;
    (entry.workload)(&cfg.agent).map_err(|e| AgentError::Params {
        algo: cfg.algo.clone(),
        key: e.key,
        message: e.message,
    })
}

/// Predicted wall seconds of `cfg`'s steps `from..to` (env steps) with unit costs `cal`.
pub fn seconds(cal: &Calibration, w: &Workload, cfg: &RunConfig, from: u64, to: u64) -> f64 {
    let to = to.min(cfg.total_steps);
    if to <= from {
        return 0.0;
    }
    cumulative(cal, w, cfg, to) - cumulative(cal, w, cfg, from)
}

/// Predicted wall seconds of `cfg`'s first `step` env steps.
fn cumulative(cal: &Calibration, w: &Workload, cfg: &RunConfig, step: u64) -> f64 {
    let starts = w.learning_starts.max(1) as u64;
    let mut s = step.min(starts - 1) as f64 * cal.random_step_s
        + step.saturating_sub(starts - 1) as f64 * cal.learn_step_s;
    if let (Some(fits), Some(cost)) = (w.model, cal.fit)
        && step >= starts
    {
        // Fits at t = S + i·F for i < k, each on the t transitions gathered by then: the
        // first as calibrated, the later ones from the last one's weights.
        let freq = fits.train_freq.max(1) as u64;
        let k = ((step - starts) / freq + 1) as f64;
        let later_rows = (k - 1.0) * starts as f64 + freq as f64 * k * (k - 1.0) / 2.0;
        let later_epochs = fits
            .max_epochs
            .map_or(cost.epochs * WARM_FIT_SHARE, |m| m as f64);
        s += k * cost.extra_s
            + (starts as f64 * cost.epochs + later_rows * later_epochs) * cost.row_epoch_s;
    }
    s + evaluations(cfg, step) as f64 * crate::env::MAX_EPISODE_STEPS as f64 * cal.eval_step_s
}

/// The epochs of a fit that starts from the last fit's weights and that only the hold-out rule
/// ends, as a share of the first fit's (from random weights). Measured with MBPO's ensemble on
/// Hopper: in an MBPO run (seed 0, our defaults) a first fit on 5000 transitions ran 194
/// epochs and the fits at 5250, 5500 and 5750 ran 84, 121 and 138; on a DDPG run's transitions,
/// 209 epochs on the first 5000, then 20 on 5250. The mean share is 0.47. How the share moves
/// with more data is not measured: a fit from those weights on 20 000 transitions ran more
/// than 200 epochs.
pub const WARM_FIT_SHARE: f64 = 0.5;

/// Evaluations in a run's first `step` env steps: one every `eval.every` steps and one at the
/// end.
fn evaluations(cfg: &RunConfig, step: u64) -> u64 {
    let every = cfg.eval.every.max(1);
    let mut n = step / every;
    if step >= cfg.total_steps && !cfg.total_steps.is_multiple_of(every) {
        n += 1;
    }
    n
}

/// The calibration's identity: what of a run config sets its unit costs (the algorithm and
/// its parameters, the task, the training envs, the evaluation episodes), hashed as run ids
/// are.
pub fn calibration_key(cfg: &RunConfig) -> String {
    RunConfig {
        experiment: String::new(),
        seed: 0,
        total_steps: 0,
        eval: crate::runner::EvalConfig {
            every: 0,
            stop_at_return: None,
            ..cfg.eval.clone()
        },
        checkpoint_every: 0,
        log_every: 0,
        ..cfg.clone()
    }
    .run_id()
}

/// Seconds each part of the calibration runs for at least (it also takes at least
/// [`MIN_CALLS`] calls and stops at [`MAX_CALLS`]).
const PART_S: f64 = 1.0;
const MIN_CALLS: usize = 3;
const MAX_CALLS: usize = 200;

/// Measures `cfg`'s unit costs on this machine, on burn's `device`: the agent is built and
/// trained from scratch as the run would be, through its random start phase, its first
/// learning call (with its first model fit), then at least [`PART_S`] seconds of steady
/// learning and of evaluation steps. Writes nothing.
pub fn calibrate(
    cfg: &RunConfig,
    device: &burn::prelude::Device,
) -> Result<Calibration, CostError> {
    let what = format!("{} on {}", cfg.algo, cfg.env);
    let env_err = |source| CostError::Env {
        what: what.clone(),
        source,
    };
    let agent_err = |source| CostError::Agent {
        what: what.clone(),
        source,
    };
    let started = Instant::now();
    let ticks = Ticks::now();
    let task = cfg.task().map_err(env_err)?;
    let variant = cfg.obs_variant().map_err(env_err)?;
    let w = workload(cfg).map_err(agent_err)?;
    let n = cfg.num_envs.max(1);
    let mut train = EnvPool::new(task, variant, n).map_err(env_err)?;
    train.reset_all(cfg.seed, 0);
    let info = train.info().clone();
    let setting = Setting {
        task,
        obs_dim: info.obs_dim,
        act_dim: info.act_dim,
        seed: cfg.seed,
        device,
    };
    let mut agent = agent::make(&cfg.algo, &cfg.agent, &setting).map_err(agent_err)?;
    let never = || false;

    // The random start phase, up to the first call that learns.
    let t = Instant::now();
    let mut transitions = 0usize;
    let ((random_s, random_transitions), (first_call_s, first_stats)) = loop {
        train.explore_step(agent.as_mut());
        transitions += n;
        let before = t.elapsed().as_secs_f64();
        let call = Instant::now();
        let stats = agent.learn(n, &never).map_err(agent_err)?;
        let call_s = call.elapsed().as_secs_f64();
        if stats.is_some() || transitions >= w.learning_starts.max(1) {
            break ((before, transitions), (call_s, stats.unwrap_or_default()));
        }
    };
    let random_step_s = random_s / random_transitions.max(1) as f64;

    // Steady learning: explore, step, learn; calls that fit are set apart.
    let (mut steady_s, mut steady_transitions, mut calls) = (0.0, 0usize, 0usize);
    let t = Instant::now();
    while calls < MAX_CALLS && (calls < MIN_CALLS || t.elapsed().as_secs_f64() < PART_S) {
        let step = Instant::now();
        train.explore_step(agent.as_mut());
        let stats = agent.learn(n, &never).map_err(agent_err)?;
        calls += 1;
        if stats
            .as_ref()
            .is_none_or(|s| stat(s, "model_fit_s").is_none())
        {
            steady_s += step.elapsed().as_secs_f64();
            steady_transitions += n;
        }
    }
    let learn_step_s = steady_s / steady_transitions.max(1) as f64;
    let fit = stat(&first_stats, "model_fit_s").map(|fit_s| {
        let epochs = stat(&first_stats, "model_epochs").unwrap_or(1.0).max(1.0);
        // The first call also did the learning of an ordinary step, less its action and env
        // step (measured in the random phase).
        let ordinary = (learn_step_s - random_step_s).max(0.0) * n as f64;
        FitCost {
            row_epoch_s: fit_s / (transitions as f64 * epochs),
            epochs,
            extra_s: (first_call_s - fit_s - ordinary).max(0.0),
        }
    });

    // Evaluation steps: the eval episodes stepped together, each restarted when it ends.
    // On the first evaluation's episodes.
    let mut eval = EnvPool::new(task, variant, cfg.eval.episodes.max(1)).map_err(env_err)?;
    eval.reset_all(cfg.seed, 1);
    let envs: Vec<usize> = (0..eval.envs().len()).collect();
    let (mut eval_s, mut calls) = (0.0, 0usize);
    while calls < MAX_CALLS && (calls < MIN_CALLS || eval_s < PART_S) {
        let step = Instant::now();
        let obs = eval.observations();
        let actions = agent.exploit_envs(&obs, &envs, calls == 0);
        for (i, step) in eval.step(&actions).iter().enumerate() {
            if step.done() {
                eval.envs_mut()[i].reset(None);
            }
        }
        eval_s += step.elapsed().as_secs_f64();
        calls += 1;
    }
    Ok(Calibration {
        random_step_s,
        learn_step_s,
        fit,
        eval_step_s: eval_s / calls as f64,
        seconds: started.elapsed().as_secs_f64(),
        busy: ticks.and_then(Ticks::others_since),
    })
}

fn stat(stats: &[(&'static str, f64)], name: &str) -> Option<f64> {
    stats.iter().find(|(n, _)| *n == name).map(|&(_, v)| v)
}

/// What identifies this machine's calibrations: the host, its CPU, the threads a run gets,
/// the compute device and the mpdp version.
pub fn machine(threads: usize) -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    format!(
        "{} | {cpu} | {} threads | {} | mpdp {}",
        crate::store::hostname(),
        threads,
        std::env::var("MPDP_DEVICE").unwrap_or_else(|_| "cpu".into()),
        env!("CARGO_PKG_VERSION")
    )
}

/// Calibrations kept across commands: `<cache dir>/calibration.json`, where the cache dir is
/// `MPDP_CACHE_DIR`, else `$XDG_CACHE_HOME/mpdp`, else `~/.cache/mpdp`. Entries are per
/// machine ([`machine`]) and calibration key ([`calibration_key`]). An unreadable cache is
/// treated as empty (and said so): it only ever costs a recalibration.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cache {
    /// machine → key → calibration.
    pub machines: BTreeMap<String, BTreeMap<String, Calibration>>,
    #[serde(skip)]
    pub path: PathBuf,
    /// Why the file on disk was not used, if it was not.
    #[serde(skip)]
    pub problem: Option<String>,
}

impl Cache {
    pub fn default_path() -> PathBuf {
        let dir = std::env::var_os("MPDP_CACHE_DIR")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("mpdp")))
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/mpdp")))
            .unwrap_or_else(|| PathBuf::from(".mpdp-cache"));
        dir.join("calibration.json")
    }

    pub fn load(path: &Path) -> Cache {
        let (mut cache, problem) = match std::fs::read_to_string(path) {
            Ok(text) => match serde_json::from_str::<Cache>(&text) {
                Ok(c) => (c, None),
                Err(e) => (Cache::default(), Some(format!("{}: {e}", path.display()))),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (Cache::default(), None),
            Err(e) => (Cache::default(), Some(format!("{}: {e}", path.display()))),
        };
        cache.path = path.to_path_buf();
        cache.problem = problem;
        cache
    }

    pub fn get(&self, machine: &str, key: &str) -> Option<Calibration> {
        self.machines.get(machine)?.get(key).copied()
    }

    pub fn insert(&mut self, machine: &str, key: &str, cal: Calibration) {
        self.machines
            .entry(machine.to_string())
            .or_default()
            .insert(key.to_string(), cal);
    }

    /// Writes the cache (to a temporary file renamed over it: a crash leaves the old one).
    pub fn save(&self) -> Result<(), CostError> {
        let io = |source| CostError::Io {
            path: self.path.clone(),
            source,
        };
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let tmp = self
            .path
            .with_extension(format!("tmp.{}", std::process::id()));
        let text = serde_json::to_string_pretty(self).expect("calibrations serialise");
        std::fs::write(&tmp, text).map_err(io)?;
        std::fs::rename(&tmp, &self.path).map_err(io)
    }
}

/// The unit costs of a plan's runs: one calibration per distinct [`calibration_key`], shared by
/// the runs that have it.
#[derive(Debug, Default)]
pub struct Costed {
    /// Calibration key → the workload and calibration of the runs that have it.
    by_key: BTreeMap<String, (Workload, Calibration)>,
    /// How many of them were calibrated now (the rest came from the cache).
    pub calibrated: usize,
}

impl Costed {
    /// How many calibrations came from the cache.
    pub fn cached(&self) -> usize {
        self.by_key.len() - self.calibrated
    }

    /// The highest [`Calibration::busy`] among the calibrations used, if any was made on a
    /// machine at least [`BUSY`] busy.
    pub fn busiest(&self) -> Option<f64> {
        self.by_key
            .values()
            .filter_map(|(_, c)| c.busy)
            .filter(|&b| b >= BUSY)
            .reduce(f64::max)
    }

    /// Predicted seconds of `cfg`'s steps from `from` to its end (`None`: not calibrated).
    pub fn remaining(&self, cfg: &RunConfig, from: u64) -> Option<f64> {
        let (w, cal) = self.by_key.get(&calibration_key(cfg))?;
        Some(seconds(cal, w, cfg, from, cfg.total_steps))
    }
}

/// The plan's runs costed from `cache` alone (what `mpdp status` does: it never calibrates).
pub fn from_cache(plan: &Plan, cache: &Cache) -> Costed {
    let machine = machine(plan.spec.devices.threads_per_run);
    let mut costed = Costed::default();
    for run in &plan.runs {
        let key = calibration_key(&run.config);
        if let (Ok(w), Some(cal)) = (workload(&run.config), cache.get(&machine, &key)) {
            costed.by_key.insert(key, (w, cal));
        }
    }
    costed
}

/// The plan's runs costed, calibrating (on a pool of the spec's `threads_per_run` threads)
/// what `cache` lacks, or everything with `recalibrate`, and saving each new calibration to
/// the cache as soon as it is made. `progress` hears of each calibration before and after.
pub fn estimate(
    plan: &Plan,
    cache: &mut Cache,
    recalibrate: bool,
    device: &burn::prelude::Device,
    mut progress: impl FnMut(&PlannedRun, Option<&Calibration>),
) -> Result<Costed, CostError> {
    let threads = plan.spec.devices.threads_per_run.max(1);
    let machine = machine(threads);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("a rayon pool builds");
    let mut costed = Costed::default();
    for run in &plan.runs {
        let key = calibration_key(&run.config);
        if costed.by_key.contains_key(&key) {
            continue;
        }
        let w = workload(&run.config).map_err(|source| CostError::Agent {
            what: format!("{} on {}", run.config.algo, run.env),
            source,
        })?;
        let cal = match cache.get(&machine, &key).filter(|_| !recalibrate) {
            Some(cal) => cal,
            None => {
                progress(run, None);
                let cal = pool.install(|| calibrate(&run.config, device))?;
                progress(run, Some(&cal));
                cache.insert(&machine, &key, cal);
                cache.save()?;
                costed.calibrated += 1;
                cal
            }
        };
        costed.by_key.insert(key, (w, cal));
    }
    Ok(costed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::registry::ModelFits;

    fn config(total: u64, every: u64) -> RunConfig {
        RunConfig {
            experiment: "x".into(),
            env: "Hopper".into(),
            obs: "v5".into(),
            seed: 0,
            total_steps: total,
            num_envs: 1,
            eval: crate::runner::EvalConfig {
                every,
                episodes: 10,
                stop_at_return: None,
            },
            checkpoint_every: 5000,
            log_every: 1000,
            algo: "mbpo".into(),
            agent: toml::Table::new(),
        }
    }

    const CAL: Calibration = Calibration {
        random_step_s: 1e-4,
        learn_step_s: 0.05,
        fit: Some(FitCost {
            row_epoch_s: 1e-5,
            epochs: 20.0,
            extra_s: 2.0,
        }),
        eval_step_s: 1e-3,
        seconds: 0.0,
        busy: None,
    };

    /// A calibration made on a busy machine is reported, one made on a quiet or unknown one
    /// is not; and a cached calibration written before `busy` existed still reads.
    #[test]
    fn calibrations_on_a_busy_machine_are_reported() {
        let w = Workload {
            learning_starts: 1000,
            model: None,
        };
        let costed = |busy: &[Option<f64>]| Costed {
            by_key: busy
                .iter()
                .enumerate()
                .map(|(i, &busy)| (i.to_string(), (w, Calibration { busy, ..CAL })))
                .collect(),
            calibrated: 0,
        };
        assert_eq!(costed(&[None, Some(0.3)]).busiest(), None);
        assert_eq!(
            costed(&[None, Some(0.3), Some(1.7), Some(0.9)]).busiest(),
            Some(1.7)
        );
        let old =
            "random_step_s = 0.0001\nlearn_step_s = 0.05\neval_step_s = 0.001\nseconds = 3.0\n";
        let read: Calibration = toml::from_str(old).unwrap();
        assert_eq!(read.busy, None);
        assert!(!toml::to_string(&read).unwrap().contains("busy"));
        // Ticks: a command name with spaces and parentheses, and a machine line.
        let own = "42 (a (b) c) R 1 2 3 4 5 6 7 8 9 10 170 30 0 0 20 0 1 0 5 6 7";
        assert_eq!(own_ticks(own), Some(200));
        let cpu = "cpu  100 5 20 800 50 3 2 7 0 0";
        assert_eq!(machine_ticks(cpu), Some((137, 987)));
        // This process's own work is not counted as other work.
        let start = Ticks::now().expect("Linux says its ticks");
        let spin = std::time::Instant::now();
        let mut x = 0u64;
        while spin.elapsed().as_millis() < 300 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let others = start.others_since().expect("ticks moved");
        assert!((0.0..=1.0).contains(&others), "{others}");
    }

    /// The model against a hand count: 10 000 steps, learning from 1000, a fit every 250
    /// steps (37 fits, at 1000, 1250, …, 10 000), 3 evaluations (every 4000 and the last).
    #[test]
    fn a_run_costs_its_phases_summed() {
        let w = Workload {
            learning_starts: 1000,
            model: Some(ModelFits {
                train_freq: 250,
                max_epochs: None,
            }),
        };
        let cfg = config(10_000, 4000);
        let random = 999.0 * 1e-4;
        let learn = 9001.0 * 0.05;
        let later_rows: f64 = (1..37).map(|i| 1000.0 + 250.0 * i as f64).sum();
        let fits = 37.0 * 2.0 + (1000.0 * 20.0 + later_rows * 20.0 * WARM_FIT_SHARE) * 1e-5;
        let evals = 3.0 * 1000.0 * 1e-3;
        let want = random + learn + fits + evals;
        let got = seconds(&CAL, &w, &cfg, 0, 10_000);
        assert!((got - want).abs() < 1e-9 * want, "{got} vs {want}");
        // Split anywhere, the parts add up; past the end nothing more is counted.
        let split = seconds(&CAL, &w, &cfg, 0, 6123) + seconds(&CAL, &w, &cfg, 6123, 20_000);
        assert!((split - want).abs() < 1e-9 * want, "{split} vs {want}");
        // An epoch cap sets the later fits' epochs.
        let capped = Workload {
            model: Some(ModelFits {
                train_freq: 250,
                max_epochs: Some(5),
            }),
            ..w
        };
        let want_capped = want - later_rows * (20.0 * WARM_FIT_SHARE - 5.0) * 1e-5;
        let got = seconds(&CAL, &capped, &cfg, 0, 10_000);
        assert!(
            (got - want_capped).abs() < 1e-9 * want,
            "{got} vs {want_capped}"
        );
    }

    #[test]
    fn a_model_free_run_has_no_fits_and_ends_with_an_evaluation() {
        let w = Workload {
            learning_starts: 100,
            model: None,
        };
        let cfg = config(1000, 300);
        let want = 99.0 * 1e-4 + 901.0 * 0.05 + 4.0 * 1000.0 * 1e-3;
        let got = seconds(&CAL, &w, &cfg, 0, 1000);
        assert!((got - want).abs() < 1e-12, "{got} vs {want}");
        assert_eq!(evaluations(&cfg, 999), 3);
        assert_eq!(evaluations(&config(900, 300), 900), 3);
    }

    #[test]
    fn the_key_ignores_seed_steps_and_experiment_but_not_the_agent() {
        let a = config(1000, 300);
        let mut b = config(5000, 100);
        b.seed = 7;
        b.experiment = "other".into();
        assert_eq!(calibration_key(&a), calibration_key(&b));
        b.agent.insert("beta".into(), toml::Value::Float(0.3));
        assert_ne!(calibration_key(&a), calibration_key(&b));
        b = config(1000, 300);
        b.eval.episodes = 3;
        assert_ne!(calibration_key(&a), calibration_key(&b));
    }

    /// Regression guard for the cache: an unreadable file is an empty cache with the problem
    /// said, and a saved cache reads back.
    #[test]
    fn the_cache_round_trips_and_survives_a_corrupt_file() {
        let dir = std::env::temp_dir().join(format!("mpdp-cost-{}", std::process::id()));
        let path = dir.join("calibration.json");
        let mut cache = Cache::load(&path);
        assert!(cache.problem.is_none() && cache.machines.is_empty());
        cache.insert("m", "k", CAL);
        cache.save().unwrap();
        assert_eq!(Cache::load(&path).get("m", "k"), Some(CAL));
        assert_eq!(Cache::load(&path).get("other", "k"), None);
        std::fs::write(&path, "{ not json").unwrap();
        let broken = Cache::load(&path);
        assert!(broken.machines.is_empty());
        assert!(broken.problem.unwrap().contains("calibration.json"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
