//! Soft actor-critic: the learner shared by the SAC agent and, later, MBPO, M2AC and MPDP.
//!
//! One update on a batch (s, a, r, s', terminated), as in Haarnoja et al. (SAC v2):
//!   critic:  y = r + γ·(1−terminated)·(min_j Q̄_j(s', ã') − α·log π(ã'|s')),  ã' ~ π(·|s')
//!            L_Q = Σ_j mean (Q_j(s, a) − y)²
//!   actor:   L_π = mean(α·log π(ã|s) − min_j Q_j(s, ã)),  ã ~ π(·|s) (reparameterised)
//!   α:       L_α = −log α · mean(log π(ã|s) + H̄)   with target entropy H̄ = −|A| by default
//!   targets: Q̄ ← τ·Q + (1−τ)·Q̄
use std::path::Path;

use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::off_policy::{OffPolicy, Schedule};
use super::{Agent, AgentError, Invalid, Stats, Transition, Validate, check_common, ckpt};
use crate::nn::{
    self, GaussianPolicy, Temperature, TwinQ, all_finite, normal_noise, scalar, soft_update,
    tensor2,
};
use crate::replay::Batch;

/// SAC hyperparameters. Defaults: the SAC paper's (Haarnoja et al. 2018, `examples/variants.py`:
/// 2×256, Adam 3e-4 for every network, batch 256, γ 0.99, τ 0.005) with SAC v2's automatic
/// temperature (target −|A|, log α starting at 0 as in MBPO's softlearning), CleanRL's log-std
/// range [−5, 2], PyTorch's Adam ε 1e-8, and CleanRL's 5000 uniform-random start steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SacConfig {
    pub hidden: Vec<usize>,
    pub actor_lr: f64,
    pub critic_lr: f64,
    pub alpha_lr: f64,
    pub batch_size: usize,
    pub gamma: f64,
    pub tau: f64,
    pub initial_alpha: f64,
    /// `None`: −|A|.
    pub target_entropy: Option<f64>,
    pub log_std_min: f64,
    pub log_std_max: f64,
    pub adam_epsilon: f64,
    /// Uniform-random actions before the policy acts and updates start.
    pub learning_starts: usize,
    /// Gradient updates per environment step.
    pub updates_per_step: usize,
    pub buffer_size: usize,
}

impl Default for SacConfig {
    fn default() -> Self {
        SacConfig {
            hidden: vec![256, 256],
            actor_lr: 3e-4,
            critic_lr: 3e-4,
            alpha_lr: 3e-4,
            batch_size: 256,
            gamma: 0.99,
            tau: 0.005,
            initial_alpha: 1.0,
            target_entropy: None,
            log_std_min: -5.0,
            log_std_max: 2.0,
            adam_epsilon: 1e-8,
            learning_starts: 5000,
            updates_per_step: 1,
            buffer_size: 1_000_000,
        }
    }
}

impl Validate for SacConfig {
    fn validate(&self) -> Result<(), Invalid> {
        check_common(
            &[
                ("actor_lr", self.actor_lr),
                ("critic_lr", self.critic_lr),
                ("alpha_lr", self.alpha_lr),
                ("initial_alpha", self.initial_alpha),
                ("adam_epsilon", self.adam_epsilon),
            ],
            self.gamma,
            self.tau,
            &self.hidden,
            &[
                ("batch_size", self.batch_size),
                ("buffer_size", self.buffer_size),
                ("updates_per_step", self.updates_per_step),
            ],
        )?;
        if self.log_std_min >= self.log_std_max {
            return Err(Invalid::new(
                "log_std_min",
                format!(
                    "expected a value below log_std_max = {}, found {}",
                    self.log_std_max, self.log_std_min
                ),
            ));
        }
        Ok(())
    }
}

/// Diagnostics of one update.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SacStats {
    pub critic_loss: f32,
    pub actor_loss: f32,
    pub alpha_loss: f32,
    pub alpha: f32,
    /// Mean Q1(s, a) on the batch.
    pub q_mean: f32,
    /// −mean log π(ã|s): the policy's entropy estimate.
    pub entropy: f32,
}

impl SacStats {
    pub fn named(&self) -> [(&'static str, f32); 6] {
        [
            ("critic_loss", self.critic_loss),
            ("actor_loss", self.actor_loss),
            ("alpha_loss", self.alpha_loss),
            ("alpha", self.alpha),
            ("q_mean", self.q_mean),
            ("entropy", self.entropy),
        ]
    }
}

/// Networks, target critic, temperature and their optimisers.
pub struct SacLearner {
    cfg: SacConfig,
    obs_dim: usize,
    act_dim: usize,
    target_entropy: f64,
    device: Device,
    plain: Device,
    actor: GaussianPolicy,
    critic: TwinQ,
    critic_target: TwinQ,
    temperature: Temperature,
    actor_opt: ModuleOptimizer,
    critic_opt: ModuleOptimizer,
    alpha_opt: ModuleOptimizer,
}

impl SacLearner {
    pub fn new<R: Rng>(obs_dim: usize, act_dim: usize, cfg: SacConfig, rng: &mut R) -> Self {
        let device = nn::device();
        let plain = device.clone().without_autodiff();
        let range = (cfg.log_std_min, cfg.log_std_max);
        let actor = GaussianPolicy::new(obs_dim, act_dim, &cfg.hidden, range, rng, &device);
        let critic = TwinQ::new(obs_dim, act_dim, &cfg.hidden, rng, &device);
        let critic_target = critic.valid();
        let temperature = Temperature::new(cfg.initial_alpha, &device);
        SacLearner {
            target_entropy: cfg.target_entropy.unwrap_or(-(act_dim as f64)),
            obs_dim,
            act_dim,
            device,
            plain,
            actor,
            critic,
            critic_target,
            temperature,
            actor_opt: nn::adam(cfg.adam_epsilon),
            critic_opt: nn::adam(cfg.adam_epsilon),
            alpha_opt: nn::adam(cfg.adam_epsilon),
            cfg,
        }
    }

    pub fn config(&self) -> &SacConfig {
        &self.cfg
    }

    /// One SAC update on `batch`; policy noise comes from `rng`.
    pub fn update<R: Rng>(&mut self, batch: &Batch, rng: &mut R) -> SacStats {
        let (n, o, a) = (batch.size, self.obs_dim, self.act_dim);
        let cfg = &self.cfg;
        let alpha = self.temperature.alpha() as f64;

        // Critic target, without gradients.
        let next_obs = tensor2(batch.next_obs.clone(), n, o, &self.plain);
        let next = self.actor.valid().sample(
            next_obs.clone(),
            tensor2(normal_noise(rng, n * a), n, a, &self.plain),
        );
        let next_v =
            self.critic_target.min_q(next_obs, next.action) - next.log_prob.mul_scalar(alpha);
        let reward = tensor2(batch.rew.clone(), n, 1, &self.plain);
        let live: Vec<f32> = batch.terminated.iter().map(|t| 1.0 - t).collect();
        let target = reward + tensor2(live, n, 1, &self.plain) * next_v.mul_scalar(cfg.gamma);
        let target = Tensor::from_inner(target);

        // Critic step.
        let obs = tensor2(batch.obs.clone(), n, o, &self.device);
        let (q1, q2) = self
            .critic
            .forward(obs.clone(), tensor2(batch.act.clone(), n, a, &self.device));
        let q_mean = scalar(q1.clone().inner().mean());
        let critic_loss =
            (q1 - target.clone()).powf_scalar(2.0).mean() + (q2 - target).powf_scalar(2.0).mean();
        let critic_loss_value = scalar(critic_loss.clone().inner());
        let grads = GradientsParams::from_grads(critic_loss.backward(), &self.critic);
        self.critic = self
            .critic_opt
            .step(cfg.critic_lr, self.critic.clone(), grads);

        // Actor step through the updated critic, whose parameters stay fixed here.
        let pi = self.actor.sample(
            obs.clone(),
            tensor2(normal_noise(rng, n * a), n, a, &self.device),
        );
        let log_prob_mean = scalar(pi.log_prob.clone().inner().mean());
        let q_pi = self.critic.clone().no_grad().min_q(obs, pi.action);
        let actor_loss = (pi.log_prob.mul_scalar(alpha) - q_pi).mean();
        let actor_loss_value = scalar(actor_loss.clone().inner());
        let grads = GradientsParams::from_grads(actor_loss.backward(), &self.actor);
        self.actor = self.actor_opt.step(cfg.actor_lr, self.actor.clone(), grads);

        // Temperature step.
        let alpha_loss = self
            .temperature
            .log_alpha()
            .mul_scalar(-(log_prob_mean as f64 + self.target_entropy))
            .sum();
        let alpha_loss_value = scalar(alpha_loss.clone().inner());
        let grads = GradientsParams::from_grads(alpha_loss.backward(), &self.temperature);
        self.temperature = self
            .alpha_opt
            .step(cfg.alpha_lr, self.temperature.clone(), grads);

        self.critic_target = soft_update(&self.critic, self.critic_target.clone(), cfg.tau);

        SacStats {
            critic_loss: critic_loss_value,
            actor_loss: actor_loss_value,
            alpha_loss: alpha_loss_value,
            alpha: alpha as f32,
            q_mean,
            entropy: -log_prob_mean,
        }
    }

    /// Actions in [-1, 1] for `rows` observations (row-major): the mean action when
    /// `deterministic`, else a sample with noise from `rng`.
    pub fn act<R: Rng>(
        &self,
        obs: &[f32],
        rows: usize,
        deterministic: bool,
        rng: &mut R,
    ) -> Vec<f32> {
        let actor = self.actor.valid();
        let obs = tensor2(obs.to_vec(), rows, self.obs_dim, &self.plain);
        let action = if deterministic {
            actor.mean_action(obs)
        } else {
            let eps = tensor2(
                normal_noise(rng, rows * self.act_dim),
                rows,
                self.act_dim,
                &self.plain,
            );
            actor.sample(obs, eps).action
        };
        nn::to_vec(action)
    }
}

impl SacLearner {
    /// Whether every network parameter is finite.
    pub fn parameters_finite(&self) -> bool {
        all_finite(&self.actor) && all_finite(&self.critic) && all_finite(&self.temperature)
    }

    /// Networks and optimiser states into `dir`.
    pub fn save(&self, dir: &Path) -> Result<(), AgentError> {
        ckpt::save_module(dir, "actor", &self.actor)?;
        ckpt::save_module(dir, "critic", &self.critic)?;
        ckpt::save_module(dir, "critic_target", &self.critic_target)?;
        ckpt::save_module(dir, "temperature", &self.temperature)?;
        ckpt::save_optimizer(dir, "actor_opt", &self.actor_opt)?;
        ckpt::save_optimizer(dir, "critic_opt", &self.critic_opt)?;
        ckpt::save_optimizer(dir, "alpha_opt", &self.alpha_opt)
    }

    /// Restores what [`SacLearner::save`] wrote (modules first: optimiser states are keyed
    /// by parameter id).
    pub fn load(&mut self, dir: &Path) -> Result<(), AgentError> {
        self.actor = ckpt::load_module(dir, "actor", &self.actor)?;
        self.critic = ckpt::load_module(dir, "critic", &self.critic)?;
        self.critic_target = ckpt::load_module(dir, "critic_target", &self.critic_target)?;
        self.temperature = ckpt::load_module(dir, "temperature", &self.temperature)?;
        let eps = self.cfg.adam_epsilon;
        self.actor_opt = ckpt::load_optimizer(dir, "actor_opt", eps)?;
        self.critic_opt = ckpt::load_optimizer(dir, "critic_opt", eps)?;
        self.alpha_opt = ckpt::load_optimizer(dir, "alpha_opt", eps)?;
        Ok(())
    }
}

pub(crate) fn f32s(values: &[f64]) -> Vec<f32> {
    values.iter().map(|&v| v as f32).collect()
}

/// The SAC agent (`algo = "sac"`): uniform random actions for `learning_starts` steps, then
/// `updates_per_step` SAC updates per environment step on uniform replay batches.
pub struct Sac {
    learner: SacLearner,
    core: OffPolicy,
}

impl Sac {
    pub fn new(obs_dim: usize, act_dim: usize, cfg: SacConfig, seed: u64) -> Self {
        let schedule = Schedule {
            buffer_size: cfg.buffer_size,
            batch_size: cfg.batch_size,
            learning_starts: cfg.learning_starts,
            updates_per_step: cfg.updates_per_step,
        };
        let mut core = OffPolicy::new(obs_dim, act_dim, schedule, seed);
        Sac {
            learner: SacLearner::new(obs_dim, act_dim, cfg, core.rng()),
            core,
        }
    }
}

impl Agent for Sac {
    fn explore(&mut self, obs: &[f64], rows: usize) -> Vec<f64> {
        if let Some(random) = self.core.random_actions(rows) {
            return random;
        }
        let a = self.learner.act(&f32s(obs), rows, false, self.core.rng());
        a.into_iter().map(f64::from).collect()
    }

    fn exploit(&mut self, obs: &[f64], rows: usize) -> Vec<f64> {
        let a = self.learner.act(&f32s(obs), rows, true, self.core.rng());
        a.into_iter().map(f64::from).collect()
    }

    fn observe(&mut self, t: &Transition<'_>) {
        self.core.observe(t);
    }

    fn learn(&mut self, new_transitions: usize) -> Result<Option<Stats>, AgentError> {
        let learner = &mut self.learner;
        self.core.learn("SAC", new_transitions, |batch, rng| {
            learner.update(batch, rng).named().to_vec()
        })
    }

    fn save(&self, dir: &Path) -> Result<(), AgentError> {
        if !self.learner.parameters_finite() {
            return Err(AgentError::Diverged("SAC parameters are not finite".into()));
        }
        self.learner.save(dir)?;
        self.core.save(dir)
    }

    fn load(&mut self, dir: &Path) -> Result<(), AgentError> {
        self.learner.load(dir)?;
        self.core.load(dir)
    }
}
