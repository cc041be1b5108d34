//! One run, end to end: interaction loop, evaluation, metrics, checkpoints and resume.
//!
//! `run_one` is idempotent: a run whose status is `done` returns at once; a run with a
//! checkpoint continues from it bit for bit (on CPU); otherwise it starts. SIGTERM/SIGINT
//! (through the `stop` flag) finish the current step, checkpoint and mark the run
//! `preempted`; a model fit in progress gives up at its next epoch and is redone on resume,
//! so a stop is prompt even when a fit takes minutes. NaN/inf in a loss or a parameter marks
//! it `failed` with the reason. Nothing written before is lost either way: metric chunks are
//! written with every checkpoint.

mod eval;
mod metrics;
mod pool;

pub use eval::{
    EvalError, EvalRequest, Evaluation, Recording, Rendered, VideoRequest, evaluate_run,
    render_video, write_trace,
};
pub use metrics::{MetricRow, measures_time, read_metrics, read_saved_metrics};
pub use pool::EnvPool;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::agent::{self, Agent, AgentError};
use crate::env::{EnvError, EnvSnapshot, ObsVariant, Task};
use crate::store::lock::{Claim, Live, Lock, LockInfo};
use crate::store::{self, RunLog, RunState, Status};
use metrics::Metrics;

/// Evaluation protocol: `episodes` deterministic episodes on separate envs every `every`
/// environment steps (and at the end).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalConfig {
    pub every: u64,
    pub episodes: usize,
    /// Ends the run (done) at the first evaluation whose mean return reaches this: a
    /// "solves within N steps" check needs no more steps after that. Absent: run every step.
    /// Absent leaves the run id as it was without the field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_at_return: Option<f64>,
}

/// The fully resolved configuration of one run. Its canonical form hashes to the run id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    pub experiment: String,
    pub env: String,
    /// Observation variant (`v5` or `mbpo`).
    pub obs: String,
    pub seed: u64,
    /// Environment steps (summed over the `num_envs` training envs).
    pub total_steps: u64,
    pub num_envs: usize,
    pub eval: EvalConfig,
    pub checkpoint_every: u64,
    /// Training statistics are logged every this many steps.
    pub log_every: u64,
    pub algo: String,
    /// Every agent parameter, resolved (defaults < env preset < user).
    pub agent: toml::Table,
}

/// Default environment steps between checkpoints, and the value every run id is computed
/// with: how often a run saves does not change its results (resume-equality tests), so a
/// run keeps its id, and with it its finished results, when `checkpoint_every` changes.
pub const DEFAULT_CHECKPOINT_EVERY: u64 = 5000;

impl RunConfig {
    /// Short hash of the canonical resolved config (keys sorted; formatting and key order of
    /// the input do not matter), `checkpoint_every` left out.
    pub fn run_id(&self) -> String {
        let canonical = serde_json::to_string(
            &serde_json::to_value(self.identity()).expect("config serialises"),
        )
        .expect("json serialises");
        let digest = Sha256::digest(canonical.as_bytes());
        digest.iter().take(6).map(|b| format!("{b:02x}")).collect()
    }

    /// What makes two configs the same run: all but `checkpoint_every`.
    fn identity(&self) -> RunConfig {
        RunConfig {
            checkpoint_every: DEFAULT_CHECKPOINT_EVERY,
            ..self.clone()
        }
    }

    /// Whether `other` is the same run as this (it may checkpoint at another interval).
    pub fn same_run(&self, other: &RunConfig) -> bool {
        self.identity() == other.identity()
    }

    pub fn task(&self) -> Result<Task, EnvError> {
        self.env.parse()
    }

    pub fn obs_variant(&self) -> Result<ObsVariant, EnvError> {
        self.obs.parse()
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("run config serialises to TOML")
    }

    /// Checks a config that did not come from a spec or the command line (a plan file's line,
    /// a run's `resolved.toml`) as those are checked: the names, every count within its
    /// limit, and the agent's parameters through its algorithm's own validation. The reason,
    /// naming the field, when it fails.
    pub fn check(&self) -> Result<(), String> {
        use crate::config::limits;
        crate::config::check_name(&self.experiment).map_err(|m| format!("experiment: {m}"))?;
        let task = self.task().map_err(|e| format!("env: {e}"))?;
        self.obs_variant().map_err(|e| format!("obs: {e}"))?;
        let counts = [
            ("total_steps", self.total_steps, limits::COUNT),
            ("num_envs", self.num_envs as u64, limits::ENVS),
            ("eval.every", self.eval.every, limits::COUNT),
            ("eval.episodes", self.eval.episodes as u64, limits::ENVS),
            ("log_every", self.log_every, limits::COUNT),
        ];
        for (name, v, max) in counts {
            if !(1..=max as u64).contains(&v) {
                return Err(format!("{name}: expected a count in 1..={max}, found {v}"));
            }
        }
        if self.checkpoint_every > limits::COUNT as u64 {
            return Err(format!(
                "checkpoint_every: expected at most {}, found {}",
                limits::COUNT,
                self.checkpoint_every
            ));
        }
        if let Some(r) = self.eval.stop_at_return.filter(|r| !r.is_finite()) {
            return Err(format!(
                "eval.stop_at_return: expected a finite return, found {r}"
            ));
        }
        crate::agent::resolve_params(&self.algo, task, &self.agent)
            .map(|_| ())
            .map_err(|e| format!("agent: {e}"))
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum RunOutcome {
    Done,
    Preempted,
    Failed(String),
    /// Another live process holds the run; nothing was done.
    Busy(LockInfo),
    /// Another process took the run over while this one ran (this one was thought dead);
    /// this one stopped without writing anything more.
    TakenOver,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Env(#[from] EnvError),
    #[error(transparent)]
    Agent(#[from] AgentError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} holds a run with a different configuration; refusing to mix them")]
    ConfigMismatch { path: PathBuf },
    #[error("{path}: {message}")]
    Corrupt { path: PathBuf, message: String },
    #[error("metrics: {0}")]
    Metrics(String),
    #[error("another process took the run over")]
    TakenOver,
    #[error("{0}")]
    Panicked(String),
}

impl crate::config::IsUsage for RunError {
    fn is_usage(&self) -> bool {
        match self {
            RunError::ConfigMismatch { .. } => true,
            RunError::Agent(e) => crate::config::IsUsage::is_usage(e),
            _ => false,
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> RunError + '_ {
    move |source| RunError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Options that do not change results.
#[derive(Clone)]
pub struct RunOptions {
    /// Show a progress bar on stderr (when it is a terminal).
    pub progress: bool,
    /// Set by SIGTERM/SIGINT handlers: checkpoint and stop.
    pub stop: Arc<AtomicBool>,
    /// Who runs it, recorded in the lock (`mpdp run (pid N)`, `slurm 12_3`).
    pub owner: String,
    /// Checkpoint also when this much wall time has passed since the last checkpoint (or
    /// the start): a slow run (hours per `checkpoint_every` steps) loses at most this much
    /// to a crash. Checkpoints do not change results (a resumed run is bit-identical).
    pub checkpoint_interval: Option<Duration>,
    /// Where the agent's tensors live.
    pub device: burn::prelude::Device,
    /// Start over from step 0: the run's checkpoints and saved metrics are discarded (and
    /// the log says so). A finished run is never touched.
    pub from_scratch: bool,
}

/// Counters of the interaction loop, saved with each checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LoopState {
    step: u64,
    evals: u64,
    wall_offset: f64,
    episode_returns: Vec<f64>,
    episode_lengths: Vec<u64>,
    last_eval: Option<f64>,
    /// Sums of training statistics since the last log line, each with how many calls
    /// reported it (some statistics, such as a model's, come only from some calls).
    stats_sum: Vec<(String, f64, u64)>,
    /// The env step `step` is taken but the agent's learning for it is not done (a stop
    /// interrupted it): a resumed run does that first.
    #[serde(default)]
    learn_pending: bool,
}

/// Runs (or resumes, or skips) the run described by `cfg` in `run_dir`.
pub fn run_one(cfg: &RunConfig, run_dir: &Path, opts: &RunOptions) -> Result<RunOutcome, RunError> {
    std::fs::create_dir_all(run_dir).map_err(io_err(run_dir))?;
    let resolved_path = run_dir.join(RESOLVED_FILE);
    if let Some(existing) = read_resolved(run_dir)?
        && !existing.same_run(cfg)
    {
        return Err(RunError::ConfigMismatch {
            path: run_dir.to_path_buf(),
        });
    }
    let done = || store::is_finished(run_dir);
    if done() {
        settle_finished(run_dir, cfg)?;
        return Ok(RunOutcome::Done);
    }
    let live = Arc::new(Live::new(0));
    let lock = match Lock::claim(
        run_dir,
        &opts.owner,
        cfg.total_steps,
        live.clone(),
        opts.stop.clone(),
    )
    .map_err(io_err(run_dir))?
    {
        Claim::Acquired(lock) => lock,
        Claim::Busy(holder) => return Ok(RunOutcome::Busy(holder)),
    };
    // It may have finished between the check and the claim.
    if done() {
        lock.release();
        return Ok(RunOutcome::Done);
    }
    store::write_atomic(&resolved_path, cfg.to_toml().as_bytes())
        .map_err(io_err(&resolved_path))?;
    if opts.from_scratch {
        start_over(run_dir).map_err(io_err(run_dir))?;
    }
    let outcome = match Run::start(cfg, run_dir, opts, live, &lock) {
        // A panic (a bug, whatever the input) fails the run with its message rather than
        // leaving it "running" with no word.
        Ok(run) => std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run.go()))
            .unwrap_or_else(|panic| {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic".into());
                let reason = format!("internal error (a bug, please report it): {what}");
                mark_failed(run_dir, cfg, &reason);
                Err(RunError::Panicked(reason))
            }),
        // Nothing to resume from: the run fails, saying why, rather than staying "running".
        Err(e) => {
            mark_failed(run_dir, cfg, &format!("cannot start or resume: {e}"));
            Err(e)
        }
    };
    lock.release();
    outcome
}

struct Run<'a> {
    cfg: &'a RunConfig,
    dir: &'a Path,
    opts: &'a RunOptions,
    lock: &'a Lock,
    agent: Box<dyn Agent>,
    train: EnvPool,
    eval: EnvPool,
    metrics: Metrics,
    state: LoopState,
    log: RunLog,
    started: Instant,
    rate_mark: (Instant, u64),
    /// When the last checkpoint was written (or the run started or resumed).
    last_checkpoint: Instant,
    live: Arc<Live>,
    /// Wall seconds in each phase of the loop since the last log row: `time/<phase>_s`.
    phase_s: PhaseSeconds,
}

/// Where a run's wall time goes, logged with each training row (env: actions and physics;
/// learn: the agent's updates and model fits; eval; checkpoint).
#[derive(Debug, Default)]
struct PhaseSeconds {
    env: f64,
    learn: f64,
    eval: f64,
    checkpoint: f64,
}

impl PhaseSeconds {
    fn named(&self) -> [(&'static str, f64); 4] {
        [
            ("time/env_s", self.env),
            ("time/learn_s", self.learn),
            ("time/eval_s", self.eval),
            ("time/checkpoint_s", self.checkpoint),
        ]
    }
}

/// Seconds since `t`.
fn since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64()
}

impl<'a> Run<'a> {
    fn start(
        cfg: &'a RunConfig,
        dir: &'a Path,
        opts: &'a RunOptions,
        live: Arc<Live>,
        lock: &'a Lock,
    ) -> Result<Self, RunError> {
        let (task, variant) = (cfg.task()?, cfg.obs_variant()?);
        let train = EnvPool::new(task, variant, cfg.num_envs)?;
        let eval = EnvPool::new(task, variant, cfg.eval.episodes)?;
        let info = train.info().clone();
        let agent = make_agent(cfg, &info, &opts.device)?;
        let provenance = metrics::provenance(cfg, &info, &opts.device);
        let prov_path = dir.join("provenance.json");
        store::write_atomic(&prov_path, provenance.as_bytes()).map_err(io_err(&prov_path))?;
        let mut run = Run {
            cfg,
            dir,
            opts,
            lock,
            agent,
            train,
            eval,
            metrics: Metrics::default(),
            state: LoopState {
                step: 0,
                evals: 0,
                wall_offset: 0.0,
                episode_returns: vec![0.0; cfg.num_envs],
                episode_lengths: vec![0; cfg.num_envs],
                last_eval: None,
                stats_sum: Vec::new(),
                learn_pending: false,
            },
            log: RunLog::open(dir).map_err(io_err(dir))?,
            started: Instant::now(),
            rate_mark: (Instant::now(), 0),
            last_checkpoint: Instant::now(),
            phase_s: PhaseSeconds::default(),
            live,
        };
        recover_checkpoint(dir);
        let prev = dir.join("ckpt.prev");
        if run.ckpt_dir().join("loop.json").exists() {
            let cur = run.ckpt_dir();
            match run.resume(&cur) {
                Ok(()) => {}
                Err(e) if prev.join("loop.json").exists() => {
                    run.log.line(&format!(
                        "the newest checkpoint cannot be read ({e}); resuming from the one \
                         before it (ckpt.prev)"
                    ));
                    run.resume(&prev)?;
                }
                Err(e) => return Err(e),
            }
            run.log.line(&format!(
                "resumed from the checkpoint at step {}",
                run.state.step
            ));
        } else {
            run.train.reset_all(cfg.seed, 0);
            run.metrics.clear_parts(dir, 0).map_err(RunError::Metrics)?;
            run.log.line(&format!(
                "started {} on {} (seed {})",
                cfg.algo, cfg.env, cfg.seed
            ));
        }
        run.rate_mark = (Instant::now(), run.state.step);
        run.live.start_at(run.state.step);
        Ok(run)
    }

    fn ckpt_dir(&self) -> PathBuf {
        self.dir.join("ckpt")
    }

    fn wall(&self) -> f64 {
        self.state.wall_offset + self.started.elapsed().as_secs_f64()
    }

    fn status(&self, state: RunState, reason: Option<String>) -> Result<(), RunError> {
        let s = Status::new(state, self.state.step, self.cfg.total_steps, reason);
        store::write_status(self.dir, &s).map_err(io_err(self.dir))
    }

    fn go(mut self) -> Result<RunOutcome, RunError> {
        self.status(RunState::Running, None)?;
        let bar = progress_bar(self.opts.progress, self.cfg.total_steps, self.state.step);
        let outcome = self.interact(&bar);
        bar.finish_and_clear();
        // Taken over: the run directory is the other process's now; write nothing to it
        // (the log is append-only and says why this process stopped).
        if !self.lock.held() {
            self.log.line(&format!(
                "another process took the run over; stopped at step {} without writing",
                self.state.step
            ));
            return Ok(RunOutcome::TakenOver);
        }
        match outcome {
            Ok(other @ (RunOutcome::Busy(_) | RunOutcome::TakenOver)) => Ok(other),
            Ok(RunOutcome::Done) => {
                // The final policy stays in ckpt/ (`mpdp eval` reads it); a crash after this
                // resumes at the last step and finishes at once.
                self.checkpoint()?;
                // metrics.parquet next: from then on the run counts as finished, and a crash
                // before the status below is repaired by the next `run-one`.
                self.metrics.finish(self.dir).map_err(RunError::Metrics)?;
                self.log.line("done");
                self.status(RunState::Done, None)?;
                metrics::remove_parts(self.dir);
                Ok(RunOutcome::Done)
            }
            Ok(RunOutcome::Preempted) => {
                self.checkpoint()?;
                self.log
                    .line(&format!("preempted at step {}", self.state.step));
                self.status(RunState::Preempted, Some("stopped by a signal".into()))?;
                Ok(RunOutcome::Preempted)
            }
            Ok(RunOutcome::Failed(reason)) | Err(RunError::Agent(AgentError::Diverged(reason))) => {
                let reason = format!("diverged at step {}: {reason}", self.state.step);
                // Keep every metric row gathered so far.
                self.metrics
                    .flush_part(self.dir, self.state.step)
                    .map_err(RunError::Metrics)?;
                self.log.line(&reason);
                self.status(RunState::Failed, Some(reason.clone()))?;
                Ok(RunOutcome::Failed(reason))
            }
            Err(e) => {
                let reason = e.to_string();
                let _ = self.metrics.flush_part(self.dir, self.state.step);
                self.log.line(&format!("failed: {reason}"));
                let _ = self.status(RunState::Failed, Some(reason));
                Err(e)
            }
        }
    }

    fn interact(&mut self, bar: &indicatif::ProgressBar) -> Result<RunOutcome, RunError> {
        let n = self.cfg.num_envs as u64;
        while self.state.step < self.cfg.total_steps || self.state.learn_pending {
            if !self.state.learn_pending {
                if self.opts.stop.load(Ordering::SeqCst) {
                    return Ok(RunOutcome::Preempted);
                }
                let t = Instant::now();
                self.env_step();
                self.phase_s.env += since(t);
            }
            let opts = self.opts;
            let t = Instant::now();
            let learned = self
                .agent
                .learn(self.cfg.num_envs, &|| opts.stop.load(Ordering::SeqCst));
            self.phase_s.learn += since(t);
            match learned {
                Ok(stats) => {
                    self.state.learn_pending = false;
                    if let Some(stats) = stats {
                        self.accumulate(&stats);
                    }
                }
                Err(AgentError::Interrupted) => {
                    self.log.line(&format!(
                        "stop requested while learning at step {}; that learning is redone on resume",
                        self.state.step
                    ));
                    return Ok(RunOutcome::Preempted);
                }
                Err(e) => return Err(e.into()),
            }
            let before = self.state.step - n;
            let crossed = |every: u64, step: u64| every > 0 && step / every > before / every;
            if crossed(self.cfg.log_every, self.state.step) {
                self.log_training();
            }
            if crossed(self.cfg.eval.every, self.state.step)
                || self.state.step >= self.cfg.total_steps
            {
                let t = Instant::now();
                self.evaluate()?;
                self.phase_s.eval += since(t);
                if let (Some(goal), Some(r)) = (self.cfg.eval.stop_at_return, self.state.last_eval)
                    && r >= goal
                {
                    self.log.line(&format!(
                        "eval return {r:.2} reached stop_at_return {goal}; done at step {}",
                        self.state.step
                    ));
                    return Ok(RunOutcome::Done);
                }
            }
            let overdue = self
                .opts
                .checkpoint_interval
                .is_some_and(|d| self.last_checkpoint.elapsed() >= d);
            if (crossed(self.cfg.checkpoint_every, self.state.step) || overdue)
                && self.state.step < self.cfg.total_steps
            {
                let t = Instant::now();
                self.checkpoint()?;
                self.phase_s.checkpoint += since(t);
            }
            bar.set_position(self.state.step);
            self.live.step.store(self.state.step, Ordering::Relaxed);
            if let Some(r) = self.state.last_eval {
                bar.set_message(format!("eval {r:.1}"));
                self.live.set_eval(r);
            }
        }
        Ok(RunOutcome::Done)
    }

    /// One step of every training env with the agent's exploration actions; the transitions
    /// go to the agent and `step` moves on. The agent's learning for it is then pending.
    fn env_step(&mut self) {
        let steps = self.train.explore_step(self.agent.as_mut());
        for (i, step) in steps.iter().enumerate() {
            self.state.episode_returns[i] += step.reward;
            self.state.episode_lengths[i] += 1;
            if step.done() {
                let step_no = self.state.step + i as u64 + 1;
                let wall = self.wall();
                self.metrics.push(
                    step_no,
                    wall,
                    "train/episode_return",
                    self.state.episode_returns[i],
                );
                self.metrics.push(
                    step_no,
                    wall,
                    "train/episode_length",
                    self.state.episode_lengths[i] as f64,
                );
                self.state.episode_returns[i] = 0.0;
                self.state.episode_lengths[i] = 0;
            }
        }
        self.state.step += self.cfg.num_envs as u64;
        self.state.learn_pending = true;
    }

    fn accumulate(&mut self, stats: &[(&'static str, f64)]) {
        for &(name, v) in stats {
            match self.state.stats_sum.iter_mut().find(|(n, ..)| n == name) {
                Some(entry) => {
                    entry.1 += v;
                    entry.2 += 1;
                }
                None => self.state.stats_sum.push((name.to_string(), v, 1)),
            }
        }
    }

    fn log_training(&mut self) {
        let (step, wall) = (self.state.step, self.wall());
        for (name, sum, count) in std::mem::take(&mut self.state.stats_sum) {
            self.metrics
                .push(step, wall, &format!("train/{name}"), sum / count as f64);
        }
        let (mark, mark_step) = self.rate_mark;
        let rate = (step - mark_step) as f64 / mark.elapsed().as_secs_f64().max(1e-9);
        self.metrics.push(step, wall, "train/steps_per_s", rate);
        self.rate_mark = (Instant::now(), step);
        for (name, seconds) in std::mem::take(&mut self.phase_s).named() {
            self.metrics.push(step, wall, name, seconds);
        }
    }

    /// `episodes` deterministic episodes, one per eval env, stepped together.
    fn evaluate(&mut self) -> Result<(), RunError> {
        let index = self.state.evals;
        self.eval.reset_all(self.cfg.seed, index + 1);
        let agent = &mut self.agent;
        let (returns, lengths) = self
            .eval
            .run_episodes(|obs, envs, first| agent.exploit_envs(obs, envs, first));
        let (mean, std) = (crate::stats::mean(&returns), crate::stats::std(&returns));
        let (step, wall) = (self.state.step, self.wall());
        self.metrics.push(step, wall, "eval/return_mean", mean);
        self.metrics.push(step, wall, "eval/return_std", std);
        let length = crate::stats::mean(&lengths);
        self.metrics.push(step, wall, "eval/length_mean", length);
        self.state.evals += 1;
        self.state.last_eval = Some(mean);
        self.log
            .line(&format!("step {step}: eval return {mean:.2} ± {std:.2}"));
        Ok(())
    }

    /// Writes the checkpoint atomically: `ckpt.new/`, then it replaces `ckpt/`.
    fn checkpoint(&mut self) -> Result<(), RunError> {
        if !self.lock.held() {
            return Err(RunError::TakenOver);
        }
        let step = self.state.step;
        self.metrics
            .flush_part(self.dir, step)
            .map_err(RunError::Metrics)?;
        let new = self.dir.join("ckpt.new");
        store::remove_dir(&new);
        let agent_dir = new.join("agent");
        std::fs::create_dir_all(&agent_dir).map_err(io_err(&agent_dir))?;
        self.agent.save(&agent_dir)?;
        let envs: Vec<EnvSnapshot> = self.train.envs().iter().map(|e| e.snapshot()).collect();
        let mut loop_state = self.state.clone();
        loop_state.wall_offset = self.wall();
        for (name, text) in [
            (
                "envs.json",
                serde_json::to_string(&envs).expect("snapshots serialise"),
            ),
            (
                "loop.json",
                serde_json::to_string(&loop_state).expect("loop state serialises"),
            ),
        ] {
            let path = new.join(name);
            store::write_atomic(&path, text.as_bytes()).map_err(io_err(&path))?;
        }
        let (cur, old) = (self.ckpt_dir(), self.dir.join("ckpt.old"));
        if cur.exists() {
            store::rename(&cur, &old).map_err(io_err(&cur))?;
        }
        store::rename(&new, &cur).map_err(io_err(&new))?;
        // The generation before stays as ckpt.prev/: a resume falls back to it when ckpt/
        // cannot be read.
        keep_previous(self.dir);
        self.last_checkpoint = Instant::now();
        self.log.line(&format!("checkpoint at step {step}"));
        Ok(())
    }

    /// Restores the checkpoint in `dir`: envs, agent, loop counters, and the metric parts
    /// written up to its step (later ones are dropped: the run makes them again).
    fn resume(&mut self, dir: &Path) -> Result<(), RunError> {
        let envs: Vec<EnvSnapshot> = read_json(dir, "envs.json")?;
        let state: LoopState = read_json(dir, "loop.json")?;
        for (env, snap) in self.train.envs_mut().iter_mut().zip(&envs) {
            env.restore(snap)?;
        }
        self.agent.load(&dir.join("agent"))?;
        self.metrics
            .clear_parts(self.dir, state.step)
            .map_err(RunError::Metrics)?;
        self.state = state;
        Ok(())
    }
}

/// A run directory's resolved config.
const RESOLVED_FILE: &str = "resolved.toml";

/// The resolved config written in `run_dir`, if it has one.
fn read_resolved(run_dir: &Path) -> Result<Option<RunConfig>, RunError> {
    let path = run_dir.join(RESOLVED_FILE);
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path).map_err(|e| RunError::Corrupt {
        path: path.clone(),
        message: e.to_string(),
    })?;
    toml::from_str(&text)
        .map(Some)
        .map_err(|e| RunError::Corrupt {
            path,
            // "TOML parse error at line L, column C": where it went wrong, then what.
            message: format!(
                "{}: {}",
                e.to_string().lines().next().unwrap_or_default(),
                e.message().trim_end().replace('\n', "; ")
            ),
        })
}

/// `dir/name`, a JSON file of a checkpoint, read as a `T`.
fn read_json<T: serde::de::DeserializeOwned>(dir: &Path, name: &str) -> Result<T, RunError> {
    let path = dir.join(name);
    let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
    serde_json::from_str(&text).map_err(|e| RunError::Corrupt {
        path,
        message: e.to_string(),
    })
}

/// The run's agent, untrained, for the env `info` describes, on `device`.
fn make_agent(
    cfg: &RunConfig,
    info: &crate::env::EnvInfo,
    device: &burn::prelude::Device,
) -> Result<Box<dyn Agent>, AgentError> {
    let setting = agent::Setting {
        task: info.task,
        obs_dim: info.obs_dim,
        act_dim: info.act_dim,
        seed: cfg.seed,
        device,
    };
    agent::make(&cfg.algo, &cfg.agent, &setting)
}

/// Marks the run failed with `reason`, in its status (at the step it last reported) and its
/// log, on a path where the run itself could not say so.
fn mark_failed(run_dir: &Path, cfg: &RunConfig, reason: &str) {
    let step = store::read_status(run_dir).map_or(0, |s| s.step);
    let status = Status::new(
        RunState::Failed,
        step,
        cfg.total_steps,
        Some(reason.to_string()),
    );
    let _ = store::write_status(run_dir, &status);
    if let Ok(mut log) = RunLog::open(run_dir) {
        log.line(reason);
    }
}

/// The step of the run's newest checkpoint (`ckpt/loop.json`), if it has one.
pub fn checkpoint_step(run_dir: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(run_dir.join("ckpt/loop.json")).ok()?;
    let state: serde_json::Value = serde_json::from_str(&text).ok()?;
    state.get("step")?.as_u64()
}

/// Discards what a run saved (checkpoints, metric parts, status) so that it starts over from
/// step 0, saying so in its log.
fn start_over(run_dir: &Path) -> std::io::Result<()> {
    let step = store::read_status(run_dir).map_or(0, |s| s.step);
    for name in ["ckpt", "ckpt.prev", "ckpt.old", "ckpt.new", "metrics"] {
        store::remove_dir(&run_dir.join(name));
    }
    let _ = std::fs::remove_file(store::status_path(run_dir));
    RunLog::open(run_dir)?.line(&format!(
        "starting over from scratch (--from-scratch): discarded the checkpoints and the \
         metrics saved up to step {step}"
    ));
    Ok(())
}

/// Completes a finished run whose finish a crash cut short: a `done` status where
/// `status.json` is missing, unreadable or says otherwise (its step the last step in
/// `metrics.parquet`), and no leftover part files. Its metrics are never touched.
fn settle_finished(run_dir: &Path, cfg: &RunConfig) -> Result<(), RunError> {
    if store::read_status(run_dir).is_some_and(|s| s.state == RunState::Done) {
        // Nothing is written here again to clear what a crash left (`store::tmp_path`).
        store::remove_abandoned_tmp(run_dir);
        metrics::remove_parts(run_dir);
        return Ok(());
    }
    let path = run_dir.join(store::METRICS_FILE);
    let rows = read_metrics(&path).map_err(RunError::Metrics)?;
    let step = rows.iter().map(|r| r.step).max().unwrap_or(0);
    let status = Status::new(RunState::Done, step, cfg.total_steps, None);
    store::write_status(run_dir, &status).map_err(io_err(run_dir))?;
    metrics::remove_parts(run_dir);
    if let Ok(mut log) = RunLog::open(run_dir) {
        log.line("finished before a crash or a damaged status.json lost its done status: repaired");
    }
    Ok(())
}

/// Finishes a checkpoint rotation a crash cut short: `ckpt.old/` (the generation before the
/// newest) becomes `ckpt/` again when the newest never got there, else `ckpt.prev/`.
pub fn recover_checkpoint(run_dir: &Path) {
    let (cur, old) = (run_dir.join("ckpt"), run_dir.join("ckpt.old"));
    if !cur.exists() && old.exists() {
        let _ = store::rename(&old, &cur);
    }
    keep_previous(run_dir);
}

/// Moves `ckpt.old/` to `ckpt.prev/`, replacing the generation there.
fn keep_previous(run_dir: &Path) {
    let (old, prev) = (run_dir.join("ckpt.old"), run_dir.join("ckpt.prev"));
    if old.exists() {
        store::remove_dir(&prev);
        let _ = store::rename(&old, &prev);
    }
}

/// The metrics every run logs, whatever its algorithm (the agent's own statistics come as
/// `train/<name>`, see `agent::Algo::metrics`).
pub const RUN_METRICS: &[&str] = &[
    "eval/return_mean",
    "eval/return_std",
    "eval/length_mean",
    "train/episode_return",
    "train/episode_length",
    "train/steps_per_s",
    "time/env_s",
    "time/learn_s",
    "time/eval_s",
    "time/checkpoint_s",
];

/// A seed for stream `stream`, item `item` of a run seeded `seed` (SplitMix64 finaliser).
pub fn mix(seed: u64, stream: u64, item: u64) -> u64 {
    let mut z = seed
        .wrapping_add(stream.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_add(item.wrapping_mul(0xD1B5_4A32_D192_ED03));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn progress_bar(show: bool, total: u64, at: u64) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:30} {human_pos}/{human_len} steps  {per_sec}  {msg}  ETA {eta}",
        )
        .expect("template"),
    );
    bar.set_position(at);
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A checkpoint written before `learn_pending` existed still loads: nothing is pending.
    #[test]
    fn loop_state_from_an_older_checkpoint_has_no_pending_learning() {
        let old = r#"{"step":16557,"evals":16,"wall_offset":22916.9,"episode_returns":[132.0],
            "episode_lengths":[93],"last_eval":1006.3,"stats_sum":[["alpha",159.1,557]]}"#;
        let state: LoopState = serde_json::from_str(old).unwrap();
        assert_eq!((state.step, state.learn_pending), (16557, false));
        let round: LoopState = serde_json::from_str(
            &serde_json::to_string(&LoopState {
                learn_pending: true,
                ..state
            })
            .unwrap(),
        )
        .unwrap();
        assert!(round.learn_pending);
    }
}
