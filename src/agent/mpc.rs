//! What PETS and POPLIN share: the sampling planner as an agent. A [`Proposer`] says what a
//! solution is (PETS: an action sequence; POPLIN: residuals of a policy's actions, or
//! perturbations of its weights) and what is distilled after a model fit; [`MpcAgent`] does
//! the rest:
//!
//! ```text
//! uniform random actions for `learning_starts` steps; then at every env step t:
//!     every `model_train_freq` steps: train the ensemble on all real transitions,
//!                                      then the proposer's distillation (POPLIN)
//!     per env: CEM from the warm start (the last solution shifted one step, fresh at an
//!              episode's start), candidates scored by trajectory sampling; act with the
//!              first action of the final mean (model-predictive control, replanning every step)
//! ```
//!
//! Evaluation plans the same way, with warm starts of its own and an RNG seeded by the run's
//! seed and step, so that an evaluation never moves the training's RNG and `mpdp eval`
//! repeats the last one.
use std::path::Path;

use rand::SeedableRng;
use rand::rngs::Xoshiro256PlusPlus;
use serde::{Deserialize, Serialize};

use super::off_policy::{OffPolicy, Schedule};
use super::registry::{Setting, Workload};
use super::schedule::{self, ModelBased, ModelBasedAgent};
use super::{AgentError, StatMeans, Stats, Transition};
use crate::config::{Invalid, at_most, count_in, fits, limits, non_negative, positive_counts};
use crate::env::Task;
use crate::model::step::{DiffModel, FrozenModel, UMembers};
use crate::model::{Ensemble, EnsembleConfig};
use crate::planning::cem::{Bounds, CemConfig};
use crate::planning::mpc::{self, Mpc, PLAN_STATS, Planned, Search};
use crate::planning::particles::{Particles, Propagation};
use crate::replay::ReplayBuffer;

/// The planner's settings, shared by PETS and POPLIN. Defaults are PETS's
/// (docs/algorithms.md, "PETS and POPLIN") over the ensemble every model-based agent of the
/// paper shares (MBPO's: 7 members, 5 elites predict, 4 × 200 swish).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MpcConfig {
    /// The dynamics ensemble. The particles are spread over its elites.
    pub model: EnsembleConfig,
    /// Uniform random steps before planning starts (PETS: one episode; 1000 on the
    /// locomotion tasks).
    pub learning_starts: usize,
    /// Env steps between model fits (mbrl-lib's PETS: 250; the original trains after every
    /// 1000-step episode).
    pub model_train_freq: usize,
    /// Real transitions kept (1 000 000).
    pub buffer_size: usize,
    /// Planning horizon H (30).
    pub horizon: usize,
    /// Particles per candidate, a multiple of `model.elites` (20).
    pub particles: usize,
    /// Trajectory sampling: `ts_inf` (a particle keeps its member; PETS's default), `ts1`
    /// (members re-drawn every step) or `expectation` (PETS's E: every particle follows the
    /// members' mean prediction, without noise).
    pub propagation: Propagation,
    /// The cross-entropy method (population 500, 50 elites, 5 iterations, α 0.1).
    pub cem: CemConfig,
    /// c in the planning objective's action cost −c·‖a‖² per imagined step (normalised
    /// actions), charged while a particle is alive; 0 (the learned reward alone) by default.
    /// PETS's task costs have such a term (`ac_cost_fn`: 0.01·‖a‖² for cartpole); the
    /// Gymnasium rewards carry their own control costs (docs/algorithms.md, "PETS and POPLIN").
    #[serde(skip_serializing_if = "is_zero")]
    pub action_cost: f64,
    /// Propagate every particle with its member's predicted mean, drawing no noise from the
    /// predicted variance (PETS's `ign_var`, implied by its `E` propagation, which POPLIN's
    /// demo scripts use). Off by default (PETS's default: each prediction is a sample). The
    /// members still disagree, so the particles of a candidate still spread.
    #[serde(skip_serializing_if = "is_false")]
    pub ignore_variance: bool,
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

fn is_false(v: &bool) -> bool {
    !*v
}

impl Default for MpcConfig {
    fn default() -> Self {
        MpcConfig {
            model: EnsembleConfig {
                // PETS trains 5 epochs per fit (`NN_TRAIN_CFG`); the hold-out rule may stop
                // it sooner.
                max_epochs: Some(5),
                ..EnsembleConfig::default()
            },
            learning_starts: 1000,
            model_train_freq: 250,
            buffer_size: 1_000_000,
            horizon: 30,
            particles: 20,
            propagation: Propagation::TsInf,
            cem: CemConfig::default(),
            action_cost: 0.0,
            ignore_variance: false,
        }
    }
}

impl MpcConfig {
    pub fn validate(&self) -> Result<(), Invalid> {
        self.model.validate().map_err(|e| e.within("model"))?;
        self.cem.validate().map_err(|e| e.within("cem"))?;
        non_negative("action_cost", self.action_cost)?;
        positive_counts(&[
            ("model_train_freq", self.model_train_freq),
            ("buffer_size", self.buffer_size),
            ("horizon", self.horizon),
            ("particles", self.particles),
        ])?;
        count_in("buffer_size", self.buffer_size, limits::COUNT)?;
        count_in("horizon", self.horizon, limits::HORIZON)?;
        at_most("learning_starts", self.learning_starts, limits::COUNT)?;
        if !self.particles.is_multiple_of(self.model.elites) {
            return Err(Invalid::new(
                "particles",
                format!(
                    "expected a multiple of model.elites ({}), the members particles are spread \
                     over; found {}",
                    self.model.elites, self.particles
                ),
            ));
        }
        // One CEM iteration pushes population × particles rows through the model at once.
        let rows = self.cem.population.saturating_mul(self.particles);
        count_in("particles", rows, limits::ROLLOUT_ROWS).map_err(|_| {
            Invalid::new(
                "particles",
                format!(
                    "cem.population × particles = {} × {} rows per model step, above {}",
                    self.cem.population,
                    self.particles,
                    limits::ROLLOUT_ROWS
                ),
            )
        })?;
        fits("particles", &self.model.hidden, 1, rows)
    }

    /// When a planner with these settings learns.
    pub(crate) fn workload(&self) -> Workload {
        self.schedule().workload(&self.model)
    }

    fn schedule(&self) -> ModelBased {
        ModelBased {
            learning_starts: self.learning_starts,
            model_train_freq: self.model_train_freq,
            updates_per_step: 0,
        }
    }
}

/// A planning call's search and, for bounded solutions, their lower and upper bounds.
pub(crate) type Prepared<'a> = (Box<dyn Search + 'a>, Option<(Vec<f32>, Vec<f32>)>);

/// A sampling planner's search space and distillation.
pub(crate) trait Proposer: Send {
    /// The name divergence errors give.
    const NAME: &'static str;
    /// A solution's shape: `steps` blocks of `width` values (one block per planning step, or
    /// a single block for the whole horizon).
    fn shape(&self) -> (usize, usize);
    /// Width of one state's solution.
    fn dim(&self) -> usize {
        let (width, steps) = self.shape();
        width * steps
    }
    /// The warm start at an episode's start: zeros.
    fn fresh(&self) -> Vec<f32> {
        vec![0.0; self.dim()]
    }
    /// The warm start after acting on `solution`: shifted one step, a zero block appended
    /// (PETS's `prev_sol`); a single block is kept as it is.
    fn shift(&self, solution: &[f32]) -> Vec<f32> {
        match self.shape() {
            (_, 1) => solution.to_vec(),
            (width, _) => crate::planning::cem::shift(solution, width, 0.0),
        }
    }
    /// The search for the states `obs` (`rows × obs_dim`), with the bounds of its solutions
    /// (`rows × dim` each), if bounded.
    fn search<'a>(&'a self, model: &'a dyn DiffModel, obs: &[f32], rows: usize) -> Prepared<'a>;
    /// The env actions (`rows × act_dim`) of the chosen solutions.
    fn act(&self, obs: &[f32], solutions: &[f32], rows: usize) -> Vec<f32>;
    /// A training-time plan was made and acted on.
    fn planned(&mut self, obs: &[f32], solutions: &[f32], actions: &[f32]) {
        let _ = (obs, solutions, actions);
    }
    /// Distillation after a model fit; returns the statistics to log. The warm starts are
    /// reset after it when it answers true.
    fn fitted(
        &mut self,
        model: &Ensemble,
        real: &ReplayBuffer,
        rng: &mut Xoshiro256PlusPlus,
    ) -> Result<(Stats, bool), AgentError> {
        let _ = (model, real, rng);
        Ok((Vec::new(), false))
    }
    /// Maps the carried warm starts after [`Proposer::fitted`] asked for a reset.
    fn reset(&self, warm: &[f32]) -> Vec<f32> {
        let _ = warm;
        self.fresh()
    }
    fn save(&self, dir: &Path) -> Result<(), AgentError> {
        let _ = dir;
        Ok(())
    }
    fn load(&mut self, dir: &Path) -> Result<(), AgentError> {
        let _ = dir;
        Ok(())
    }
}

/// What the agent carries from step to step, saved with the checkpoint.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Carried {
    /// The warm start of each training env (empty: a fresh episode).
    warm: Vec<Vec<f32>>,
    /// Sums of the planning statistics since the last [`super::Agent::learn`], and their
    /// count.
    pending: [f64; PLAN_STATS.len()],
    planned: usize,
}

/// The evaluation's own planning state.
struct Evaluating {
    rng: Xoshiro256PlusPlus,
    warm: Vec<Vec<f32>>,
}

/// A sampling-planner agent (PETS, POPLIN).
pub(crate) struct MpcAgent<P: Proposer> {
    cfg: MpcConfig,
    pub(crate) proposer: P,
    task: Task,
    obs_dim: usize,
    seed: u64,
    model: Ensemble,
    core: OffPolicy<Carried>,
    frozen: Option<FrozenModel>,
    eval: Option<Evaluating>,
}

impl<P: Proposer> MpcAgent<P> {
    /// The agent; `proposer` is built from the RNG after the model's initial weights.
    pub fn new(
        cfg: MpcConfig,
        s: &Setting<'_>,
        proposer: impl FnOnce(&mut Xoshiro256PlusPlus) -> P,
    ) -> Self {
        let schedule = Schedule {
            buffer_size: cfg.buffer_size,
            batch_size: 1,
            learning_starts: cfg.learning_starts,
            updates_per_step: 0,
        };
        let mut core = OffPolicy::new(s.obs_dim, s.act_dim, schedule, s.seed, Carried::default());
        let d = (s.obs_dim + s.act_dim, 1 + s.obs_dim);
        let model = Ensemble::new(cfg.model.clone(), d.0, d.1, core.rng(), s.device);
        let proposer = proposer(core.rng());
        MpcAgent {
            cfg,
            proposer,
            task: s.task,
            obs_dim: s.obs_dim,
            seed: s.seed,
            model,
            core,
            frozen: None,
            eval: None,
        }
    }

    /// Plans for `obs` (`rows` states) from the warm starts `warm`, returning the actions
    /// and the plan; the warm starts move on to the shifted solutions.
    fn plan(
        &mut self,
        obs: &[f32],
        warm: &mut [Vec<f32>],
        rng: &mut Xoshiro256PlusPlus,
    ) -> (Vec<f32>, Planned) {
        let rows = warm.len();
        let dim = self.proposer.dim();
        let start: Vec<f32> = warm
            .iter()
            .flat_map(|w| {
                if w.len() == dim {
                    w.clone()
                } else {
                    self.proposer.fresh()
                }
            })
            .collect();
        let model = self
            .frozen
            .get_or_insert_with(|| FrozenModel::new(&self.model, self.obs_dim, UMembers::Elites));
        let (search, bounds) = self.proposer.search(model, obs, rows);
        let mpc = Mpc {
            task: self.task,
            horizon: self.cfg.horizon,
            particles: Particles {
                count: self.cfg.particles,
                propagation: self.cfg.propagation,
                action_cost: self.cfg.action_cost,
                sample: !self.cfg.ignore_variance,
            },
            cem: &self.cfg.cem,
        };
        let bounds = bounds.as_ref().map(|(lo, hi)| Bounds { lo, hi });
        let planned = mpc::plan(&mpc, model, search.as_ref(), obs, dim, &start, bounds, rng);
        drop(search);
        let solutions = &planned.solution.mean;
        let actions = self.proposer.act(obs, solutions, rows);
        for (r, w) in warm.iter_mut().enumerate() {
            *w = self.proposer.shift(&solutions[r * dim..(r + 1) * dim]);
        }
        (actions, planned)
    }
}

fn narrow(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

fn widen(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| f64::from(x)).collect()
}

impl<P: Proposer> ModelBasedAgent for MpcAgent<P> {
    const NAME: &'static str = P::NAME;

    fn schedule(&self) -> ModelBased {
        self.cfg.schedule()
    }

    fn transitions(&self) -> usize {
        self.core.transitions()
    }

    fn fit_model(
        &mut self,
        at: usize,
        interrupted: &dyn Fn() -> bool,
    ) -> Result<Stats, AgentError> {
        let schedule = self.schedule();
        let (real, rng) = self.core.replay_and_rng();
        let (mut out, report) =
            schedule.measure_then_fit(&mut self.model, real, at, rng, interrupted)?;
        self.frozen = None;
        out.extend(crate::model::fit::fit_stats(&report));
        let (stats, reset) = self.proposer.fitted(&self.model, real, rng)?;
        out.extend(stats);
        if reset {
            let warm = std::mem::take(&mut self.core.extra_mut().warm);
            self.core.extra_mut().warm = warm.iter().map(|w| self.proposer.reset(w)).collect();
        }
        Ok(out)
    }

    fn update(&mut self, _means: &mut StatMeans) -> Result<(), AgentError> {
        Ok(())
    }
}

impl<P: Proposer> super::Agent for MpcAgent<P> {
    fn explore(&mut self, obs: &[f64], rows: usize) -> Vec<f64> {
        if let Some(random) = self.core.random_actions(rows) {
            return random;
        }
        let mut warm = std::mem::take(&mut self.core.extra_mut().warm);
        warm.resize(rows, Vec::new());
        let obs = narrow(obs);
        let mut rng = self.core.rng().clone();
        let (actions, planned) = self.plan(&obs, &mut warm, &mut rng);
        *self.core.rng() = rng;
        self.proposer
            .planned(&obs, &planned.solution.mean, &actions);
        let carried = self.core.extra_mut();
        carried.warm = warm;
        for (sum, v) in carried.pending.iter_mut().zip(planned.stats()) {
            *sum += v;
        }
        carried.planned += 1;
        widen(&actions)
    }

    fn exploit(&mut self, obs: &[f64], rows: usize) -> Vec<f64> {
        let envs: Vec<usize> = (0..rows).collect();
        self.exploit_envs(obs, &envs, true)
    }

    fn exploit_envs(&mut self, obs: &[f64], envs: &[usize], first: bool) -> Vec<f64> {
        if first || self.eval.is_none() {
            let step = self.core.transitions() as u64;
            self.eval = Some(Evaluating {
                rng: Xoshiro256PlusPlus::seed_from_u64(
                    self.seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15),
                ),
                warm: Vec::new(),
            });
        }
        let mut eval = self.eval.take().expect("set above");
        let n = envs.iter().max().map_or(0, |&m| m + 1);
        if eval.warm.len() < n {
            eval.warm.resize(n, Vec::new());
        }
        let mut warm: Vec<Vec<f32>> = envs.iter().map(|&e| eval.warm[e].clone()).collect();
        let (actions, _) = self.plan(&narrow(obs), &mut warm, &mut eval.rng);
        for (&e, w) in envs.iter().zip(warm) {
            eval.warm[e] = w;
        }
        self.eval = Some(eval);
        widen(&actions)
    }

    fn restarted(&mut self, rows: &[usize]) {
        let warm = &mut self.core.extra_mut().warm;
        for &r in rows {
            if let Some(w) = warm.get_mut(r) {
                w.clear();
            }
        }
    }

    fn observe(&mut self, t: &Transition<'_>) {
        self.core.observe(t);
    }

    fn learn(
        &mut self,
        new_transitions: usize,
        interrupted: &dyn Fn() -> bool,
    ) -> Result<Option<Stats>, AgentError> {
        let learned = schedule::learn(self, new_transitions, interrupted)?;
        let carried = self.core.extra_mut();
        if carried.planned == 0 {
            return Ok(learned);
        }
        let n = carried.planned as f64;
        let mut out = learned.unwrap_or_default();
        for (name, sum) in PLAN_STATS.into_iter().zip(carried.pending) {
            let v = sum / n;
            if !v.is_finite() {
                return Err(AgentError::Diverged(format!("{} {name} = {v}", P::NAME)));
            }
            out.push((name, v));
        }
        carried.pending = [0.0; PLAN_STATS.len()];
        carried.planned = 0;
        Ok(Some(out))
    }

    fn save(&self, dir: &Path) -> Result<(), AgentError> {
        self.model.save(dir)?;
        self.proposer.save(dir)?;
        Ok(self.core.save(dir)?)
    }

    fn load(&mut self, dir: &Path) -> Result<(), AgentError> {
        self.model.load(dir)?;
        self.proposer.load(dir)?;
        self.frozen = None;
        self.eval = None;
        Ok(self.core.load(dir)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn particles_must_spread_evenly_over_the_elites() {
        assert!(MpcConfig::default().validate().is_ok());
        let bad = MpcConfig {
            particles: 12,
            ..MpcConfig::default()
        };
        let e = bad.validate().unwrap_err();
        assert_eq!(e.key.as_deref(), Some("particles"));
        assert!(
            e.message.contains("multiple of model.elites (5)"),
            "{}",
            e.message
        );
        let bad = MpcConfig {
            cem: CemConfig {
                elites: 0,
                ..CemConfig::default()
            },
            ..MpcConfig::default()
        };
        assert_eq!(
            bad.validate().unwrap_err().key.as_deref(),
            Some("cem.elites")
        );
    }

    /// The action cost and `ignore_variance` stay out of resolved configs at their defaults
    /// (earlier runs keep their ids) and appear when set; the cost refuses NaN and negative
    /// values by name.
    #[test]
    fn the_action_cost_is_optional_and_checked() {
        let table = toml::Table::try_from(MpcConfig::default()).unwrap();
        assert!(!table.contains_key("action_cost"));
        assert!(!table.contains_key("ignore_variance"));
        let mean_only = MpcConfig {
            ignore_variance: true,
            ..MpcConfig::default()
        };
        assert_eq!(
            toml::Table::try_from(mean_only).unwrap()["ignore_variance"].as_bool(),
            Some(true)
        );
        let set = MpcConfig {
            action_cost: 0.01,
            ..MpcConfig::default()
        };
        assert_eq!(
            toml::Table::try_from(set).unwrap()["action_cost"].as_float(),
            Some(0.01)
        );
        for bad in [-0.01, f64::NAN, f64::INFINITY] {
            let cfg = MpcConfig {
                action_cost: bad,
                ..MpcConfig::default()
            };
            assert_eq!(
                cfg.validate().unwrap_err().key.as_deref(),
                Some("action_cost")
            );
        }
    }
}
