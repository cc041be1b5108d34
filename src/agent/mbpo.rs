//! MBPO (Janner et al. 2019; docs/algorithms.md, "MBPO"): SAC trained mostly on short branched
//! rollouts of a learned dynamics ensemble. M2AC (Pan et al. 2020; "M2AC" there) is the same loop with
//! its rollouts masked by one-vs-rest uncertainty ([`M2acConfig`]).
//!
//! ```text
//! after `learning_starts` uniform-random steps, at every env step t:
//!     every `model_train_freq` steps:
//!         train the ensemble on all real transitions (warm start)
//!         k ← rollout length of the current epoch (schedule [a, b, k_min, k_max])
//!         resize the model buffer to retain_epochs · k · rollout_batch · epoch/freq
//!         k-step rollouts of the current policy from `rollout_batch` real states → model buffer
//!     G SAC updates, each on real_ratio real and (1 − real_ratio) model transitions
//! ```
use std::path::Path;

use rand::rngs::Xoshiro256PlusPlus;
use rand::{Rng, RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

use super::off_policy::OffPolicy;
use super::registry::{Algorithm, Setting, Workload};
use super::sac::{SacConfig, SacLearner};
use super::schedule::{self, ModelBased, ModelBasedAgent};
use super::{Agent, AgentError, StatMeans, Stats, Transition};
use crate::ckpt::CkptError;
use crate::config::{
    Invalid, Validate, count_in, fits, limits, non_negative, positive_counts, unit_interval,
};
use crate::env::Task;
use crate::model::fit;
use crate::model::rollout::{self, Mask, ModelStep, RolloutSpec};
use crate::model::step::{FrozenModel, UMembers};
use crate::model::{Ensemble, EnsembleConfig};
use crate::replay::{Batch, ReplayBuffer};

/// MBPO's settings. Defaults are MBPO's (`examples/config/*`, `mbpo/algorithms/mbpo.py`);
/// per-task values are presets (`presets.toml`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MbpoConfig {
    /// The SAC learner: `updates_per_step` is MBPO's G (default 20), `learning_starts` its
    /// random start phase (5000), `batch_size` the mixed batch (256).
    pub sac: SacConfig,
    /// The dynamics ensemble (7 members, 5 elites, 4 × 200 swish).
    pub model: EnsembleConfig,
    /// Env steps between model trainings and rollouts (250).
    pub model_train_freq: usize,
    /// Real start states per rollout batch (100 000).
    pub rollout_batch_size: usize,
    /// `[a, b, k_min, k_max]`: k = k_min up to epoch a, then linear to k_max at epoch b.
    pub rollout_schedule: [usize; 4],
    /// Env steps per epoch (1000; 250 for InvertedPendulum).
    pub epoch_length: usize,
    /// Epochs of model rollouts the model buffer keeps (1).
    pub retain_epochs: usize,
    /// Fraction of each SAC batch drawn from real transitions (0.05).
    pub real_ratio: f64,
    /// M2AC's uncertainty masking of rollouts (none in MBPO).
    pub mask: Option<MaskConfig>,
}

/// M2AC's masking (docs/algorithms.md, "M2AC"): keep the ⌊N·w_h⌋ lowest-uncertainty predictions at
/// rollout step h, w_h = (H − h)/(2(H + 1)), and penalise rewards by `penalty`·u.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MaskConfig {
    /// Reward penalty per unit of OvR uncertainty (the M2AC fork's `rew_penalty_coeff`, 1e-3).
    pub penalty: f64,
    /// Continue only kept rows (the paper's masked rollouts; the fork's default is off).
    pub stop_uncertain: bool,
}

impl Default for MaskConfig {
    fn default() -> Self {
        MaskConfig {
            penalty: 1e-3,
            stop_uncertain: true,
        }
    }
}

/// M2AC's settings: MBPO's, with masking on, a 10-step rollout horizon (1 on
/// InvertedPendulum, a preset), real ratio 0.1 (the M2AC fork's default).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct M2acConfig(pub MbpoConfig);

impl Default for M2acConfig {
    fn default() -> Self {
        M2acConfig(MbpoConfig {
            rollout_schedule: [0, 0, 10, 10],
            real_ratio: 0.1,
            mask: Some(MaskConfig::default()),
            ..MbpoConfig::default()
        })
    }
}

impl Validate for M2acConfig {
    fn validate(&self) -> Result<(), Invalid> {
        if self.0.mask.is_none() {
            return Err(Invalid::new("mask", "M2AC needs its mask table"));
        }
        self.0.validate()
    }
}

impl Default for MbpoConfig {
    fn default() -> Self {
        MbpoConfig {
            sac: SacConfig::model_based(),
            model: EnsembleConfig::default(),
            model_train_freq: 250,
            rollout_batch_size: 100_000,
            rollout_schedule: [20, 100, 1, 1],
            epoch_length: 1000,
            retain_epochs: 1,
            real_ratio: 0.05,
            mask: None,
        }
    }
}

impl Validate for MbpoConfig {
    fn validate(&self) -> Result<(), Invalid> {
        self.sac.validate().map_err(|e| e.within("sac"))?;
        match self.mask {
            Some(_) => self.model.validate_for_uncertainty(),
            None => self.model.validate(),
        }
        .map_err(|e| e.within("model"))?;
        positive_counts(&[
            ("model_train_freq", self.model_train_freq),
            ("rollout_batch_size", self.rollout_batch_size),
            ("epoch_length", self.epoch_length),
            ("retain_epochs", self.retain_epochs),
        ])?;
        count_in(
            "rollout_batch_size",
            self.rollout_batch_size,
            limits::ROLLOUT_ROWS,
        )?;
        let [a, b, kmin, kmax] = self.rollout_schedule;
        if kmin == 0 || kmax < kmin || b < a || kmax > limits::HORIZON {
            return Err(Invalid::new(
                "rollout_schedule",
                format!(
                    "expected [a, b, k_min, k_max] with a <= b and 1 <= k_min <= k_max <= {}, \
                     found {:?}",
                    limits::HORIZON,
                    self.rollout_schedule
                ),
            ));
        }
        // The model buffer at the longest rollouts: retain_epochs · k_max · rows · fits per
        // epoch, each factor bounded above, their product too.
        let rows = [
            kmax,
            self.rollout_batch_size,
            self.epoch_length / self.model_train_freq,
        ]
        .iter()
        .try_fold(self.retain_epochs, |n, &f| n.checked_mul(f.max(1)));
        if rows.is_none_or(|n| n > limits::MODEL_ROWS) {
            return Err(Invalid::new(
                "retain_epochs",
                format!(
                    "the model buffer would hold retain_epochs · k_max · rollout_batch_size · \
                     (epoch_length / model_train_freq) = {} · {kmax} · {} · {} rows, above {}",
                    self.retain_epochs,
                    self.rollout_batch_size,
                    (self.epoch_length / self.model_train_freq).max(1),
                    limits::MODEL_ROWS
                ),
            ));
        }
        // Rollouts push every start state through every member at once.
        let rows = self.rollout_batch_size.saturating_mul(self.model.members);
        fits("rollout_batch_size", &self.model.hidden, 1, rows)?;
        if let Some(m) = &self.mask {
            non_negative("mask.penalty", m.penalty)?;
        }
        unit_interval("real_ratio", self.real_ratio)
    }
}

impl MbpoConfig {
    /// Rollout length in `epoch` (MBPO's `set_rollout_length`).
    pub fn rollout_length(&self, epoch: usize) -> usize {
        let [a, b, kmin, kmax] = self.rollout_schedule;
        if epoch <= a {
            return kmin;
        }
        let frac = ((epoch - a) as f64 / (b - a).max(1) as f64).min(1.0);
        (kmin as f64 + frac * (kmax - kmin) as f64).floor() as usize
    }

    /// Model buffer capacity for rollout length `k`.
    pub fn model_capacity(&self, k: usize) -> usize {
        let per_epoch = (self.epoch_length / self.model_train_freq).max(1);
        self.retain_epochs * k * self.rollout_batch_size * per_epoch
    }
}

/// MBPO's own counter, saved with the checkpoint beside the shared ones.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Extra {
    rollout_length: usize,
}

/// The MBPO agent (`algo = "mbpo"`).
pub struct Mbpo {
    cfg: MbpoConfig,
    task: Task,
    obs_dim: usize,
    act_dim: usize,
    learner: SacLearner,
    model: Ensemble,
    core: OffPolicy<Extra>,
    /// The model buffer.
    fake: ReplayBuffer,
    batch: Batch,
    part: Batch,
}

impl Mbpo {
    pub fn new(cfg: MbpoConfig, s: &Setting<'_>) -> Self {
        let (obs_dim, act_dim) = (s.obs_dim, s.act_dim);
        let k = cfg.rollout_length(0);
        let extra = Extra { rollout_length: k };
        let mut core = OffPolicy::new(obs_dim, act_dim, cfg.sac.schedule(), s.seed, extra);
        let learner = SacLearner::new(obs_dim, act_dim, cfg.sac.clone(), core.rng(), s.device);
        let d = (obs_dim + act_dim, 1 + obs_dim);
        let model = Ensemble::new(cfg.model.clone(), d.0, d.1, core.rng(), s.device);
        Mbpo {
            fake: ReplayBuffer::new(cfg.model_capacity(k), obs_dim, act_dim),
            core,
            task: s.task,
            obs_dim,
            act_dim,
            learner,
            model,
            cfg,
            batch: Batch::default(),
            part: Batch::default(),
        }
    }

    /// One mixed batch: `real_ratio` of it real, the rest from the model buffer.
    fn sample(&mut self) {
        let size = self.cfg.sac.batch_size;
        let n_real = if self.fake.is_empty() {
            size
        } else {
            ((size as f64 * self.cfg.real_ratio) as usize).max(1)
        };
        let (real, rng) = self.core.replay_and_rng();
        real.sample_into(rng, n_real, &mut self.batch);
        if n_real < size {
            self.fake.sample_into(rng, size - n_real, &mut self.part);
            self.batch.append(&self.part);
        }
    }
}

/// M2AC: MBPO's agent with [`M2acConfig`] (`algo = "m2ac"`).
pub struct M2ac;

impl Algorithm for M2ac {
    type Config = M2acConfig;
    fn build(cfg: M2acConfig, setting: &Setting<'_>) -> Box<dyn Agent> {
        Box::new(Mbpo::new(cfg.0, setting))
    }
    fn workload(cfg: &M2acConfig) -> Workload {
        Mbpo::workload(&cfg.0)
    }
}

impl Algorithm for Mbpo {
    type Config = MbpoConfig;
    fn build(cfg: MbpoConfig, setting: &Setting<'_>) -> Box<dyn Agent> {
        Box::new(Mbpo::new(cfg, setting))
    }
    fn workload(cfg: &MbpoConfig) -> Workload {
        cfg.sac
            .model_schedule(cfg.model_train_freq)
            .workload(&cfg.model)
    }
}

impl ModelBasedAgent for Mbpo {
    const NAME: &'static str = "MBPO";

    fn schedule(&self) -> ModelBased {
        self.cfg.sac.model_schedule(self.cfg.model_train_freq)
    }

    fn transitions(&self) -> usize {
        self.core.transitions()
    }

    /// Trains the model on every real transition, then fills the model buffer with
    /// branched rollouts. Returns the statistics to log.
    fn fit_model(
        &mut self,
        at: usize,
        interrupted: &dyn Fn() -> bool,
    ) -> Result<Stats, AgentError> {
        let schedule = self.schedule();
        let kept = self.core.extra().rollout_length;
        let (real, rng) = self.core.replay_and_rng();
        let (error, report) =
            schedule.measure_then_fit(&mut self.model, real, at, rng, interrupted)?;
        let (o, a) = (self.obs_dim, self.act_dim);
        let obs = real.columns().obs;
        let n = real.len();

        let epoch = at / self.cfg.epoch_length;
        let k = self.cfg.rollout_length(epoch);
        if k != kept || self.fake.capacity() != self.cfg.model_capacity(k) {
            self.fake = self.fake.resized(self.cfg.model_capacity(k));
        }
        let rows = self.cfg.rollout_batch_size;
        let mut start = Vec::with_capacity(rows * o);
        for _ in 0..rows {
            let i = rng.random_range(0..n);
            start.extend_from_slice(&obs[i * o..(i + 1) * o]);
        }
        let mut policy_rng = Xoshiro256PlusPlus::seed_from_u64(rng.next_u64());
        let learner = &self.learner;
        let fake = &mut self.fake;
        let spec = RolloutSpec {
            task: self.task,
            obs_dim: o,
            act_dim: a,
            horizon: k,
            mask: self.cfg.mask.as_ref().map(|m| Mask {
                penalty: m.penalty,
                stop_uncertain: m.stop_uncertain,
            }),
        };
        // The elites predict and are compared (M2AC's u is each elite against the others).
        let model = FrozenModel::new(&self.model, o, UMembers::Elites);
        let stats = rollout::branched(
            &model,
            &spec,
            &start,
            &mut |obs, rows| learner.act(obs, rows, false, &mut policy_rng),
            rng,
            &mut |s: &ModelStep<'_>| {
                let f = |v: &[f32]| -> Vec<f64> { v.iter().map(|&x| f64::from(x)).collect() };
                fake.push(
                    &f(s.obs),
                    &f(s.action),
                    f64::from(s.reward),
                    &f(s.next_obs),
                    s.terminated,
                );
            },
        );
        let (u_mean, u_p50, u_p90) = stats.uncertainty_summary();
        let mut out: Stats = error;
        out.extend([
            ("uncertainty_mean", u_mean),
            ("uncertainty_p50", u_p50),
            ("uncertainty_p90", u_p90),
            ("rollout_kept_fraction", stats.kept_fraction()),
        ]);
        out.extend(fit::fit_stats(&report));
        out.extend([
            ("rollout_length", k as f64),
            ("rollout_mean_length", stats.mean_length()),
            ("model_buffer", self.fake.len() as f64),
        ]);
        self.core.extra_mut().rollout_length = k;
        Ok(out)
    }

    fn update(&mut self, means: &mut StatMeans) -> Result<(), AgentError> {
        self.sample();
        let stats = self.learner.update(&self.batch, self.core.rng());
        for (name, v) in stats.named() {
            means.add(Self::NAME, name, f64::from(v))?;
        }
        Ok(())
    }
}

impl Agent for Mbpo {
    fn explore(&mut self, obs: &[f64], rows: usize) -> Vec<f64> {
        if let Some(random) = self.core.random_actions(rows) {
            return random;
        }
        self.learner.env_actions(obs, rows, false, self.core.rng())
    }

    fn exploit(&mut self, obs: &[f64], rows: usize) -> Vec<f64> {
        self.learner.env_actions(obs, rows, true, self.core.rng())
    }

    fn observe(&mut self, t: &Transition<'_>) {
        self.core.observe(t);
    }

    fn learn(
        &mut self,
        new_transitions: usize,
        interrupted: &dyn Fn() -> bool,
    ) -> Result<Option<Stats>, AgentError> {
        schedule::learn(self, new_transitions, interrupted)
    }

    fn save(&self, dir: &Path) -> Result<(), AgentError> {
        if !self.learner.parameters_finite() {
            return Err(AgentError::Diverged(
                "MBPO parameters are not finite".into(),
            ));
        }
        self.learner.save(dir)?;
        self.model.save(dir)?;
        let path = dir.join("model_replay.bin");
        self.fake
            .save(&path)
            .map_err(|e| CkptError::new(&path, e))?;
        Ok(self.core.save(dir)?)
    }

    fn load(&mut self, dir: &Path) -> Result<(), AgentError> {
        self.learner.load(dir)?;
        self.model.load(dir)?;
        let path = dir.join("model_replay.bin");
        self.fake = ReplayBuffer::load(&path).map_err(|e| CkptError::new(&path, e))?;
        Ok(self.core.load(dir)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollout_length_follows_mbpos_schedule() {
        let cfg = MbpoConfig {
            rollout_schedule: [20, 100, 1, 15],
            ..MbpoConfig::default()
        };
        assert_eq!(cfg.rollout_length(0), 1);
        assert_eq!(cfg.rollout_length(20), 1);
        assert_eq!(cfg.rollout_length(60), 8);
        assert_eq!(cfg.rollout_length(100), 15);
        assert_eq!(cfg.rollout_length(500), 15);
        // 1 epoch x k x 100k rows x 4 trainings per epoch.
        assert_eq!(cfg.model_capacity(15), 6_000_000);
        assert!(MbpoConfig::default().validate().is_ok());
        let bad = MbpoConfig {
            rollout_schedule: [20, 100, 5, 1],
            ..MbpoConfig::default()
        };
        assert_eq!(
            bad.validate().unwrap_err().key.as_deref(),
            Some("rollout_schedule")
        );
    }

    /// One elite is a valid MBPO ensemble, but M2AC's one-vs-rest masks need a rest.
    #[test]
    fn masked_rollouts_need_two_elites() {
        let model = EnsembleConfig {
            elites: 1,
            ..EnsembleConfig::default()
        };
        let mbpo = MbpoConfig {
            model: model.clone(),
            ..MbpoConfig::default()
        };
        assert!(mbpo.validate().is_ok());
        let masked = MbpoConfig {
            mask: Some(MaskConfig::default()),
            ..mbpo
        };
        let err = masked.validate().unwrap_err();
        assert_eq!(err.key.as_deref(), Some("model.elites"));
        assert!(err.message.contains("at least 2"), "{}", err.message);
    }
}
