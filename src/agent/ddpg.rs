//! DDPG (`algo = "ddpg"`) with CleanRL's settings (`ddpg_continuous_action.py`):
//!   critic:  y = r + γ·(1−terminated)·Q̄(s', μ̄(s')),  L_Q = mean (Q(s, a) − y)²   every step
//!   actor:   L_μ = −mean Q(s, μ(s))                                              every `policy_frequency` steps
//!   targets: μ̄ ← τ·μ + (1−τ)·μ̄,  Q̄ ← τ·Q + (1−τ)·Q̄                             with the actor
//!   acting:  a = clip(μ(s) + N(0, σ²), −1, 1) in normalised action space (σ = 0.1 × action scale)
use std::path::Path;

use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::off_policy::{NoExtra, OffPolicy, Schedule};
use super::registry::{Algorithm, Setting, Workload};
use super::sac::f32s;
use super::{Agent, AgentError, Stats, Transition};
use crate::ckpt;
use crate::config::{Invalid, Validate, at_most, check_common, limits, non_negative};
use crate::nn::{
    self, DeterministicPolicy, QNet, all_finite, normal_noise, scalar, soft_update, tensor2,
};
use crate::replay::Batch;

/// DDPG hyperparameters; defaults are CleanRL's `ddpg_continuous_action.py` (the MPDP paper
/// does not say which DDPG it ran).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DdpgConfig {
    pub hidden: Vec<usize>,
    pub actor_lr: f64,
    pub critic_lr: f64,
    pub batch_size: usize,
    pub gamma: f64,
    pub tau: f64,
    /// Std of the Gaussian exploration noise, in normalised action units.
    pub exploration_noise: f64,
    /// Actor and target updates happen every this many critic updates.
    pub policy_frequency: usize,
    pub adam_epsilon: f64,
    pub learning_starts: usize,
    pub updates_per_step: usize,
    pub buffer_size: usize,
}

impl Default for DdpgConfig {
    fn default() -> Self {
        DdpgConfig {
            hidden: vec![256, 256],
            actor_lr: 3e-4,
            critic_lr: 3e-4,
            batch_size: 256,
            gamma: 0.99,
            tau: 0.005,
            exploration_noise: 0.1,
            policy_frequency: 2,
            adam_epsilon: 1e-8,
            learning_starts: 25_000,
            updates_per_step: 1,
            buffer_size: 1_000_000,
        }
    }
}

impl Validate for DdpgConfig {
    fn validate(&self) -> Result<(), Invalid> {
        check_common(
            &[
                ("actor_lr", self.actor_lr),
                ("critic_lr", self.critic_lr),
                ("adam_epsilon", self.adam_epsilon),
            ],
            self.gamma,
            self.tau,
            &self.hidden,
            (self.batch_size, self.updates_per_step),
            &[
                ("buffer_size", self.buffer_size),
                ("policy_frequency", self.policy_frequency),
            ],
        )?;
        at_most("learning_starts", self.learning_starts, limits::COUNT)?;
        non_negative("exploration_noise", self.exploration_noise)
    }
}

/// Networks, targets and optimisers of DDPG.
struct DdpgLearner {
    cfg: DdpgConfig,
    obs_dim: usize,
    act_dim: usize,
    device: Device,
    plain: Device,
    actor: DeterministicPolicy,
    actor_target: DeterministicPolicy,
    critic: QNet,
    critic_target: QNet,
    actor_opt: ModuleOptimizer,
    critic_opt: ModuleOptimizer,
    /// Critic updates so far (the actor follows every `policy_frequency`).
    updates: usize,
}

impl DdpgLearner {
    fn actions(&self, obs: &[f64], rows: usize) -> Vec<f32> {
        let obs = tensor2(f32s(obs), rows, self.obs_dim, &self.plain);
        nn::to_vec(self.actor.valid().forward(obs))
    }

    /// One critic update, and an actor + target update when due.
    fn update(&mut self, b: &Batch) -> Vec<(&'static str, f32)> {
        let (n, o, a) = (b.size, self.obs_dim, self.act_dim);
        let next_obs = tensor2(b.next_obs.clone(), n, o, &self.plain);
        let next_q = self
            .critic_target
            .forward(next_obs.clone(), self.actor_target.forward(next_obs));
        let live: Vec<f32> = b.terminated.iter().map(|t| 1.0 - t).collect();
        let target = tensor2(b.rew.clone(), n, 1, &self.plain)
            + tensor2(live, n, 1, &self.plain) * next_q.mul_scalar(self.cfg.gamma);
        let target = Tensor::from_inner(target);
        let obs = tensor2(b.obs.clone(), n, o, &self.device);
        let q = self
            .critic
            .forward(obs.clone(), tensor2(b.act.clone(), n, a, &self.device));
        let q_mean = scalar(q.clone().inner().mean());
        let critic_loss = (q - target).powf_scalar(2.0).mean();
        let mut stats = vec![
            ("critic_loss", scalar(critic_loss.clone().inner())),
            ("q_mean", q_mean),
        ];
        let grads = GradientsParams::from_grads(critic_loss.backward(), &self.critic);
        self.critic = self
            .critic_opt
            .step(self.cfg.critic_lr, self.critic.clone(), grads);
        self.updates += 1;
        if !self.updates.is_multiple_of(self.cfg.policy_frequency) {
            return stats;
        }
        let actor_loss = self
            .critic
            .clone()
            .no_grad()
            .forward(obs.clone(), self.actor.forward(obs))
            .mean()
            .neg();
        stats.push(("actor_loss", scalar(actor_loss.clone().inner())));
        let grads = GradientsParams::from_grads(actor_loss.backward(), &self.actor);
        self.actor = self
            .actor_opt
            .step(self.cfg.actor_lr, self.actor.clone(), grads);
        self.actor_target = soft_update(&self.actor, self.actor_target.clone(), self.cfg.tau);
        self.critic_target = soft_update(&self.critic, self.critic_target.clone(), self.cfg.tau);
        stats
    }
}

pub struct Ddpg {
    learner: DdpgLearner,
    core: OffPolicy,
}

impl Ddpg {
    pub fn new(cfg: DdpgConfig, s: &Setting<'_>) -> Self {
        let (obs_dim, act_dim) = (s.obs_dim, s.act_dim);
        let schedule = Schedule {
            buffer_size: cfg.buffer_size,
            batch_size: cfg.batch_size,
            learning_starts: cfg.learning_starts,
            updates_per_step: cfg.updates_per_step,
        };
        let mut core = OffPolicy::new(obs_dim, act_dim, schedule, s.seed, NoExtra {});
        let device = s.device.clone();
        let plain = device.clone().without_autodiff();
        let rng = core.rng();
        let actor = DeterministicPolicy::new(obs_dim, act_dim, &cfg.hidden, rng, &device);
        let critic = QNet::new(obs_dim, act_dim, &cfg.hidden, rng, &device);
        let learner = DdpgLearner {
            obs_dim,
            act_dim,
            actor_target: actor.valid(),
            critic_target: critic.valid(),
            actor,
            critic,
            actor_opt: nn::adam(cfg.adam_epsilon),
            critic_opt: nn::adam(cfg.adam_epsilon),
            updates: 0,
            device,
            plain,
            cfg,
        };
        Ddpg { learner, core }
    }
}

impl Algorithm for Ddpg {
    type Config = DdpgConfig;
    fn build(cfg: DdpgConfig, setting: &Setting<'_>) -> Box<dyn Agent> {
        Box::new(Ddpg::new(cfg, setting))
    }
    fn workload(cfg: &DdpgConfig) -> Workload {
        Workload {
            learning_starts: cfg.learning_starts,
            model: None,
        }
    }
}

impl Agent for Ddpg {
    fn explore(&mut self, obs: &[f64], rows: usize) -> Vec<f64> {
        if let Some(random) = self.core.random_actions(rows) {
            return random;
        }
        let noise = normal_noise(self.core.rng(), rows * self.learner.act_dim);
        let sigma = self.learner.cfg.exploration_noise;
        self.learner
            .actions(obs, rows)
            .into_iter()
            .zip(noise)
            .map(|(a, e)| (a as f64 + sigma * e as f64).clamp(-1.0, 1.0))
            .collect()
    }

    fn exploit(&mut self, obs: &[f64], rows: usize) -> Vec<f64> {
        self.learner
            .actions(obs, rows)
            .into_iter()
            .map(f64::from)
            .collect()
    }

    fn observe(&mut self, t: &Transition<'_>) {
        self.core.observe(t);
    }

    fn learn(
        &mut self,
        new_transitions: usize,
        _interrupted: &dyn Fn() -> bool,
    ) -> Result<Option<Stats>, AgentError> {
        let learner = &mut self.learner;
        self.core
            .learn("DDPG", new_transitions, |batch, _| learner.update(batch))
    }

    fn save(&self, dir: &Path) -> Result<(), AgentError> {
        let l = &self.learner;
        if !(all_finite(&l.actor) && all_finite(&l.critic)) {
            return Err(AgentError::Diverged(
                "DDPG parameters are not finite".into(),
            ));
        }
        ckpt::save_module(dir, "actor", &l.actor)?;
        ckpt::save_module(dir, "actor_target", &l.actor_target)?;
        ckpt::save_module(dir, "critic", &l.critic)?;
        ckpt::save_module(dir, "critic_target", &l.critic_target)?;
        ckpt::save_optimizer(dir, "actor_opt", &l.actor_opt)?;
        ckpt::save_optimizer(dir, "critic_opt", &l.critic_opt)?;
        ckpt::write_json(dir, "ddpg_updates.json", &l.updates)?;
        Ok(self.core.save(dir)?)
    }

    fn load(&mut self, dir: &Path) -> Result<(), AgentError> {
        let l = &mut self.learner;
        l.actor = ckpt::load_module(dir, "actor", &l.actor)?;
        l.actor_target = ckpt::load_module(dir, "actor_target", &l.actor_target)?;
        l.critic = ckpt::load_module(dir, "critic", &l.critic)?;
        l.critic_target = ckpt::load_module(dir, "critic_target", &l.critic_target)?;
        l.actor_opt = ckpt::load_optimizer(dir, "actor_opt", l.cfg.adam_epsilon)?;
        l.critic_opt = ckpt::load_optimizer(dir, "critic_opt", l.cfg.adam_epsilon)?;
        l.updates = ckpt::read_json(dir, "ddpg_updates.json")?;
        Ok(self.core.load(dir)?)
    }
}
