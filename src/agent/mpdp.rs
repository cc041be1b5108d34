//! MPDP (the paper's Algorithm 2; docs/algorithms.md, the MPDP sections): policy evaluation
//! as in SAC on real data, and the extended policy improvement of Algorithm 1 ([`crate::planning::gradplan`])
//! through the dynamics ensemble, with H_max policies of which only π_0 acts.
//!
//! ```text
//! after `learning_starts` uniform-random steps, at every env step:
//!     every `model_train_freq` steps:
//!         model error on the newest real transitions (Figure 3), then train the ensemble on D
//!         u_T ← the `u_quantile` quantile of u(s, a ~ π_0) on the newest real states (or fixed)
//!     G times:
//!         B ← a batch of real transitions from D
//!         Q (and V for the literal update) on B as in SAC
//!         π_0 … π_{H−1} ← one clipped gradient step on −mean J(B)     (Algorithm 1)
//!         α ← SAC's temperature step on log π_0; Q̄ ← Polyak
//! ```
use std::path::Path;

use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::off_policy::OffPolicy;
use super::registry::{Algorithm, Setting, Workload};
use super::sac::{Critics, Entropy, SacConfig, StateValue, act_with, env_actions};
use super::schedule::{self, ModelBased, ModelBasedAgent};
use super::{Agent, AgentError, StatMeans, Stats, Transition};
use crate::ckpt;
use crate::config::{
    Invalid, Validate, count_in, fits, limits, non_negative, positive, positive_counts,
    unit_interval,
};
use crate::env::Task;
use crate::model::step::{DiffModel, FrozenModel, UMembers};
use crate::model::uncertainty::Reduction;
use crate::model::{Ensemble, EnsembleConfig, fit};
use crate::nn::{self, PolicyStack, all_finite, scalar, tensor2};
use crate::planning::gradplan::{self, Frozen, PlanSpec, Update};
use crate::stats::per_step;

/// u_T: a fixed threshold, or `"auto"`: recalibrated after every model fit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Threshold {
    Fixed(f64),
    Auto,
}

impl Serialize for Threshold {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Threshold::Fixed(v) => s.serialize_f64(*v),
            Threshold::Auto => s.serialize_str("auto"),
        }
    }
}

impl<'de> Deserialize<'de> for Threshold {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Threshold;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a number or \"auto\"")
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Threshold, E> {
                Ok(Threshold::Fixed(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Threshold, E> {
                Ok(Threshold::Fixed(v as f64))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Threshold, E> {
                Ok(Threshold::Fixed(v as f64))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Threshold, E> {
                match v {
                    "auto" => Ok(Threshold::Auto),
                    other => Err(E::invalid_value(serde::de::Unexpected::Str(other), &self)),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// How MPDP's later policies start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyInit {
    /// Random weights of their own, drawn like π_0's.
    #[default]
    Fresh,
    /// π_0's initial weights.
    Copy,
}

impl PolicyInit {
    pub fn is_fresh(&self) -> bool {
        *self == PolicyInit::Fresh
    }
}

/// MPDP's settings. The paper gives β and the structure; the rest are the project's
/// choices (docs/algorithms.md, "MPDP: settings the paper leaves open": SAC's networks and rates, MBPO's ensemble, schedule and G); per-task values
/// (H_max, G, target entropy) are presets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MpdpConfig {
    /// Networks and rates of every π_t, Q, V and α; `updates_per_step` is G (20),
    /// `batch_size` the real batch B (256), `learning_starts` the random phase (5000).
    pub sac: SacConfig,
    /// The dynamics ensemble (MBPO's: 7 members, 5 elites, 4 × 200 swish).
    pub model: EnsembleConfig,
    /// Env steps between model fits (250: the paper's Figure 3 measures every 250).
    pub model_train_freq: usize,
    /// H_max: planning steps and policies (15; a preset per task).
    pub horizon: usize,
    /// Weight of the OvR penalty β (0.5; the paper studies 0.2, 0.5, 0.7).
    pub beta: f64,
    /// u as Eq. 8's "sum" over members and output dimensions, or their "mean" (default: the
    /// sum's scale grows with K·(1 + |S|), and with β = 0.5 it outweighed InvertedPendulum's
    /// reward of 1 per step many times over early in training, where the policy collapsed).
    pub u_reduction: Reduction,
    /// The members u compares: "elites" (default; they also predict) or "all" (the option
    /// docs/algorithms.md describes). Left out of the resolved config at its default, so that runs from
    /// before the option keep their ids.
    #[serde(skip_serializing_if = "UMembers::is_elites")]
    pub u_members: UMembers,
    /// How π_1 … π_{H−1} start: "fresh" random weights (default), or a "copy" of π_0's
    /// (then the later policies do not value π_0 under near-random continuations early on).
    /// Left out of the resolved config at its default, so that earlier runs keep their ids.
    #[serde(skip_serializing_if = "PolicyInit::is_fresh")]
    pub policy_init: PolicyInit,
    /// u_T: a number, or "auto" (the `u_quantile` quantile of u on real states).
    pub u_threshold: Threshold,
    /// Quantile of u(s, a ~ π_0) over the newest `u_window` real states that "auto" uses.
    pub u_quantile: f64,
    pub u_window: usize,
    /// Bounds on the "auto" u_T: the quantile is clamped to [u_min, u_max]
    /// (docs/algorithms.md). None by default: u's scale depends on the task. A cap keeps u_T from loosening
    /// when the agent reaches states the model has not seen, where the quantile jumps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub u_min: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub u_max: Option<f64>,
    /// "consistent" (default) or "literal" (Algorithm 1's V bootstrap at the cut and after
    /// H_max); see `planning::gradplan::Update`.
    pub update: Update,
    /// Global gradient-norm clip of the joint policy step (10).
    pub grad_clip: f64,
    /// Sample model predictions (true) or use the member's mean.
    pub model_noise: bool,
    /// Measure the β·u term's share of the policy gradient (`penalty_grad_share`) on every
    /// n-th update (20; 0: never). Each measurement plans the batch a second time, so it
    /// costs about one update; training is the same either way. Left out of the resolved
    /// config at its default, so that earlier runs keep their ids.
    #[serde(skip_serializing_if = "is_default_share_every")]
    pub penalty_share_every: usize,
}

const PENALTY_SHARE_EVERY: usize = 20;

fn is_default_share_every(n: &usize) -> bool {
    *n == PENALTY_SHARE_EVERY
}

impl Default for MpdpConfig {
    fn default() -> Self {
        MpdpConfig {
            sac: SacConfig::model_based(),
            model: EnsembleConfig::default(),
            model_train_freq: 250,
            horizon: 15,
            beta: 0.5,
            u_reduction: Reduction::Mean,
            u_members: UMembers::Elites,
            policy_init: PolicyInit::Fresh,
            u_threshold: Threshold::Auto,
            u_quantile: 0.9,
            u_window: 1000,
            u_min: None,
            u_max: None,
            update: Update::Consistent,
            grad_clip: 10.0,
            model_noise: true,
            penalty_share_every: PENALTY_SHARE_EVERY,
        }
    }
}

impl Validate for MpdpConfig {
    fn validate(&self) -> Result<(), Invalid> {
        self.sac.validate().map_err(|e| e.within("sac"))?;
        match self.u_members {
            UMembers::Elites => self.model.validate_for_uncertainty(),
            UMembers::All => self.model.validate(),
        }
        .map_err(|e| e.within("model"))?;
        positive_counts(&[
            ("model_train_freq", self.model_train_freq),
            ("horizon", self.horizon),
            ("u_window", self.u_window),
        ])?;
        count_in("horizon", self.horizon, limits::HORIZON)?;
        if self.penalty_share_every > 0 {
            count_in(
                "penalty_share_every",
                self.penalty_share_every,
                limits::COUNT,
            )?;
        }
        fits(
            "horizon",
            &self.sac.hidden,
            self.horizon,
            self.sac.batch_size,
        )?;
        // Every planning step sends the real batch through the members u is taken over.
        let members = match self.u_members {
            UMembers::Elites => self.model.elites,
            UMembers::All => self.model.members,
        };
        fits(
            "sac.batch_size",
            &self.model.hidden,
            members,
            self.sac.batch_size.saturating_mul(members),
        )?;
        non_negative("beta", self.beta)?;
        if let Threshold::Fixed(v) = self.u_threshold {
            non_negative("u_threshold", v)?;
        }
        for (key, bound) in [("u_min", self.u_min), ("u_max", self.u_max)] {
            let Some(v) = bound else { continue };
            non_negative(key, v)?;
            if self.u_threshold != Threshold::Auto {
                return Err(Invalid::new(
                    key,
                    "bounds the \"auto\" u_threshold only; u_threshold is a number here",
                ));
            }
        }
        if let (Some(lo), Some(hi)) = (self.u_min, self.u_max)
            && lo > hi
        {
            return Err(Invalid::new(
                "u_min",
                format!("expected a value <= u_max ({hi}), found {lo}"),
            ));
        }
        positive("grad_clip", self.grad_clip)?;
        unit_interval("u_quantile", self.u_quantile)
    }
}

/// The current u_T and the count of policy updates, saved with the checkpoint beside the
/// shared counters.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Extra {
    u_threshold: f64,
    /// Absent from checkpoints written before it was counted.
    #[serde(default)]
    updates: u64,
}

/// The MPDP agent (`algo = "mpdp"`).
pub struct Mpdp {
    cfg: MpdpConfig,
    task: Task,
    obs_dim: usize,
    device: Device,
    policies: PolicyStack,
    policy_opt: ModuleOptimizer,
    critics: Critics,
    value: StateValue,
    entropy: Entropy,
    model: Ensemble,
    /// The elites (then, with `u_members = "all"`, the other members) as fixed functions,
    /// rebuilt after every fit.
    frozen: FrozenModel,
    core: OffPolicy<Extra>,
    /// The names of the per-step statistics, `(grad_norm_t{t}, live_t{t})` for each t.
    step_stats: Vec<(&'static str, &'static str)>,
}

impl Mpdp {
    /// π_0's actions for the env loop: its mean when `deterministic`, else a sample.
    fn act(&mut self, obs: &[f64], rows: usize, deterministic: bool) -> Vec<f64> {
        let plain = self.device.clone().without_autodiff();
        let first = self.policies.first();
        env_actions(first, obs, rows, deterministic, self.core.rng(), &plain)
    }

    pub fn new(cfg: MpdpConfig, s: &Setting<'_>) -> Self {
        let (obs_dim, act_dim, device) = (s.obs_dim, s.act_dim, s.device);
        let extra = Extra {
            u_threshold: match cfg.u_threshold {
                Threshold::Fixed(v) => v,
                // Set by the first fit, before any update.
                Threshold::Auto => f64::MAX,
            },
            updates: 0,
        };
        let sac = &cfg.sac;
        let mut core = OffPolicy::new(obs_dim, act_dim, sac.schedule(), s.seed, extra);
        let rng = core.rng();
        let (hidden, log_std) = (&sac.hidden, sac.log_std_range());
        // Every policy's weights are drawn either way, so the draws after them do not move.
        let mut policies =
            PolicyStack::new(cfg.horizon, obs_dim, act_dim, hidden, log_std, rng, device);
        if cfg.policy_init == PolicyInit::Copy {
            policies.copy_first();
        }
        let critics = Critics::new(obs_dim, act_dim, sac, rng, device);
        let value = StateValue::new(obs_dim, sac, rng, device);
        let d = (obs_dim + act_dim, 1 + obs_dim);
        let model = Ensemble::new(cfg.model.clone(), d.0, d.1, rng, device);
        Mpdp {
            frozen: FrozenModel::new(&model, obs_dim, cfg.u_members),
            policy_opt: nn::adam(sac.adam_epsilon),
            entropy: Entropy::new(act_dim, sac, device),
            core,
            step_stats: (0..cfg.horizon)
                .map(|t| (per_step("grad_norm_t", t), per_step("live_t", t)))
                .collect(),
            task: s.task,
            obs_dim,
            device: device.clone(),
            policies,
            critics,
            value,
            model,
            cfg,
        }
    }

    /// The `u_quantile` quantile of u(s, a) over the newest `u_window` real states with
    /// actions drawn from π_0, clamped to [`u_min`, `u_max`] where given.
    fn calibrated_threshold(&mut self) -> f64 {
        let o = self.obs_dim;
        let (real, rng) = self.core.replay_and_rng();
        let obs_all = real.columns().obs;
        let rows = real.recent(self.cfg.u_window);
        let mut obs = Vec::with_capacity(rows.len() * o);
        for &i in &rows {
            obs.extend_from_slice(&obs_all[i * o..(i + 1) * o]);
        }
        let plain = self.device.clone().without_autodiff();
        let first = self.policies.first();
        let act = act_with(first, &obs, rows.len(), false, rng, &plain);
        auto_threshold(&self.frozen, &obs, &act, rows.len(), &self.cfg)
    }
}

/// u_T "auto": the `u_quantile` quantile (linear interpolation, numpy's default) of u over
/// the `rows` pairs `(obs, act)`, clamped to [`u_min`, `u_max`] where given.
fn auto_threshold(
    model: &dyn DiffModel,
    obs: &[f32],
    act: &[f32],
    rows: usize,
    cfg: &MpdpConfig,
) -> f64 {
    let mut u: Vec<f64> = model
        .uncertainty(obs, act, rows, cfg.u_reduction)
        .into_iter()
        .map(f64::from)
        .collect();
    u.sort_by(f64::total_cmp);
    let q = crate::stats::percentile(&u, cfg.u_quantile);
    let q = cfg.u_min.map_or(q, |lo| q.max(lo));
    cfg.u_max.map_or(q, |hi| q.min(hi))
}

impl ModelBasedAgent for Mpdp {
    const NAME: &'static str = "MPDP";

    fn schedule(&self) -> ModelBased {
        self.cfg.sac.model_schedule(self.cfg.model_train_freq)
    }

    fn transitions(&self) -> usize {
        self.core.transitions()
    }

    /// Algorithm 2, lines 2–3: the model error on transitions the model has not seen, the
    /// fit on D, and u_T for the new model.
    fn fit_model(
        &mut self,
        at: usize,
        interrupted: &dyn Fn() -> bool,
    ) -> Result<Stats, AgentError> {
        let schedule = self.schedule();
        let (real, rng) = self.core.replay_and_rng();
        let (error, report) =
            schedule.measure_then_fit(&mut self.model, real, at, rng, interrupted)?;
        self.frozen = FrozenModel::new(&self.model, self.obs_dim, self.cfg.u_members);
        if self.cfg.u_threshold == Threshold::Auto {
            self.core.extra_mut().u_threshold = self.calibrated_threshold();
        }
        let mut out: Stats = error;
        out.extend(fit::fit_stats(&report));
        out.push(("u_threshold", self.core.extra().u_threshold));
        Ok(out)
    }

    /// Algorithm 2, lines 4–7, on one batch of real transitions.
    fn update(&mut self, stats: &mut StatMeans) -> Result<(), AgentError> {
        let cfg = &self.cfg;
        let extra = self.core.extra_mut();
        let u_threshold = extra.u_threshold;
        let every = cfg.penalty_share_every as u64;
        let measure_share = every > 0 && cfg.beta != 0.0 && extra.updates.is_multiple_of(every);
        extra.updates += 1;
        let (batch, rng) = self.core.sample();
        let (n, o, a) = (batch.size, self.obs_dim, batch.act.len() / batch.size);
        let alpha = self.entropy.alpha();

        // Policy evaluation on B, as in SAC.
        let target =
            self.critics
                .td_target(self.policies.first(), batch, alpha, cfg.sac.gamma, rng);
        let obs = tensor2(batch.obs.clone(), n, o, &self.device);
        let act = tensor2(batch.act.clone(), n, a, &self.device);
        let (critic_loss, q_mean) = self.critics.regress(obs.clone(), act, target);
        let start = obs.clone();
        let literal = cfg.update == Update::Literal;
        if literal {
            let critic = self.critics.frozen();
            let (loss, v_mean) =
                self.value
                    .regress(obs, self.policies.first(), &critic, alpha, rng);
            stats.add("MPDP", "value_loss", f64::from(loss))?;
            stats.add("MPDP", "v_mean", f64::from(v_mean))?;
        }

        // Extended policy improvement (Algorithm 1).
        let spec = PlanSpec {
            task: self.task,
            gamma: cfg.sac.gamma,
            beta: cfg.beta,
            u_reduction: cfg.u_reduction,
            u_threshold,
            update: cfg.update,
            sample: cfg.model_noise,
        };
        let critic = self.critics.frozen();
        let value = literal.then(|| self.value.frozen());
        let frozen = Frozen {
            model: &self.frozen,
            critic: &critic,
            value: value.as_ref(),
        };
        // J is linear in β: the gradient at β = 0 on the same draws (a copy of the RNG)
        // leaves the β·u term's own, g_u = g − g_0.
        let probe = measure_share.then(|| {
            let no_penalty = PlanSpec { beta: 0.0, ..spec };
            let plan = gradplan::plan(
                &self.policies,
                &frozen,
                &no_penalty,
                alpha,
                start.clone(),
                &mut rng.clone(),
            );
            GradientsParams::from_grads(plan.objective.neg().backward(), &self.policies)
        });
        let plan = gradplan::plan(&self.policies, &frozen, &spec, alpha, start, rng);
        let objective = scalar(plan.objective.clone().inner());
        let loss = plan.objective.neg();
        let mut grads = GradientsParams::from_grads(loss.backward(), &self.policies);
        let steps = &self.policies.steps;
        let squares = nn::GradSums::of(&grads, &grads, steps);
        let grad_norm = squares.norm();
        if let Some(g0) = probe {
            // ⟨g_u, g⟩ / ‖g‖² with g_u = g − g_0: the part of the step (clipped or not)
            // that the penalty contributes along its direction.
            let g_sq = squares.total();
            let cross = nn::GradSums::of(&g0, &grads, steps).total();
            let share = if g_sq > 0.0 {
                (g_sq - cross) / g_sq
            } else {
                0.0
            };
            stats.add("MPDP", "penalty_grad_share", share)?;
        }
        nn::clip_grad_norm(&mut grads, &self.policies, grad_norm, cfg.grad_clip);
        self.policies = self
            .policy_opt
            .step(cfg.sac.actor_lr, self.policies.clone(), grads);
        let alpha_loss = self.entropy.update(plan.log_prob_first);
        self.critics.update_target();

        let p = &plan.stats;
        let rows = p.rows.max(1) as f64;
        let (u_mean, u_p50, u_p90) =
            crate::stats::mean_p50_p90(p.uncertainty.iter().map(|&u| f64::from(u)));
        for (name, v) in [
            ("critic_loss", f64::from(critic_loss)),
            ("q_mean", f64::from(q_mean)),
            ("objective", f64::from(objective)),
            ("grad_norm", grad_norm),
            ("alpha", alpha),
            ("alpha_loss", f64::from(alpha_loss)),
            ("entropy", -f64::from(plan.log_prob_first)),
            ("horizon_mean", p.horizon_mean()),
            ("cut_uncertain_fraction", p.cut_uncertain as f64 / rows),
            ("cut_terminal_fraction", p.cut_terminal as f64 / rows),
            ("reached_max_fraction", p.reached_max as f64 / rows),
        ] {
            stats.add("MPDP", name, v)?;
        }
        let per_step = p.live.iter().zip(squares.norms()).zip(&self.step_stats);
        for ((&live, norm), &(norm_name, live_name)) in per_step {
            stats.add("MPDP", norm_name, norm)?;
            stats.add("MPDP", live_name, live as f64 / rows)?;
        }
        if !p.uncertainty.is_empty() {
            stats.add("MPDP", "uncertainty_mean", u_mean)?;
            stats.add("MPDP", "uncertainty_p50", u_p50)?;
            stats.add("MPDP", "uncertainty_p90", u_p90)?;
        }
        Ok(())
    }
}

impl Algorithm for Mpdp {
    type Config = MpdpConfig;
    fn build(cfg: MpdpConfig, setting: &Setting<'_>) -> Box<dyn Agent> {
        Box::new(Mpdp::new(cfg, setting))
    }
    fn workload(cfg: &MpdpConfig) -> Workload {
        cfg.sac
            .model_schedule(cfg.model_train_freq)
            .workload(&cfg.model)
    }
}

impl Agent for Mpdp {
    fn explore(&mut self, obs: &[f64], rows: usize) -> Vec<f64> {
        if let Some(random) = self.core.random_actions(rows) {
            return random;
        }
        self.act(obs, rows, false)
    }

    fn exploit(&mut self, obs: &[f64], rows: usize) -> Vec<f64> {
        self.act(obs, rows, true)
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
        if !(all_finite(&self.policies) && all_finite(&self.critics.net)) {
            return Err(AgentError::Diverged(
                "MPDP parameters are not finite".into(),
            ));
        }
        ckpt::save_module(dir, "policies", &self.policies)?;
        ckpt::save_optimizer(dir, "policies_opt", &self.policy_opt)?;
        self.critics.save(dir)?;
        self.value.save(dir)?;
        self.entropy.save(dir)?;
        self.model.save(dir)?;
        Ok(self.core.save(dir)?)
    }

    fn load(&mut self, dir: &Path) -> Result<(), AgentError> {
        let eps = self.cfg.sac.adam_epsilon;
        self.policies = ckpt::load_module(dir, "policies", &self.policies)?;
        self.policy_opt = ckpt::load_optimizer(dir, "policies_opt", eps)?;
        self.critics.load(dir, eps)?;
        self.value.load(dir, eps)?;
        self.entropy.load(dir, eps)?;
        self.model.load(dir)?;
        self.frozen = FrozenModel::new(&self.model, self.obs_dim, self.cfg.u_members);
        Ok(self.core.load(dir)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// u compares each elite with the rest: one elite is refused before anything runs, unless
    /// u compares every member.
    #[test]
    fn the_uncertainty_needs_two_elites() {
        assert!(MpdpConfig::default().validate().is_ok());
        let one = MpdpConfig {
            model: EnsembleConfig {
                elites: 1,
                ..EnsembleConfig::default()
            },
            ..MpdpConfig::default()
        };
        let err = one.validate().unwrap_err();
        assert_eq!(err.key.as_deref(), Some("model.elites"));
        assert!(err.message.contains("at least 2"), "{}", err.message);
        // u over every member has a rest to compare with whatever the elites.
        let all = MpdpConfig {
            u_members: UMembers::All,
            ..one
        };
        assert!(all.validate().is_ok());
    }

    /// Two members whose means differ by s_0 on one output, unit variances: Eq. 8's u is
    /// KL(N_0 ‖ N_1) + KL(N_1 ‖ N_0) = s_0², so states with s_0 = √i give u = i exactly.
    struct Gap;

    impl DiffModel for Gap {
        fn predict(&self, obs: Tensor<2>, _act: Tensor<2>) -> (Tensor<3>, Tensor<3>) {
            let [rows, o] = obs.dims();
            let half = obs.clone().slice([0..rows, 0..1]).mul_scalar(0.5);
            let pad = Tensor::<2>::zeros([rows, o], &obs.device());
            let member = |t: Tensor<2>| Tensor::cat(vec![t, pad.clone()], 1);
            let mean = Tensor::stack::<3>(vec![member(half.clone()), member(half.neg())], 0);
            let logvar = Tensor::<3>::zeros([2, rows, 1 + o], &obs.device());
            (mean, logvar)
        }

        fn members(&self) -> usize {
            2
        }

        fn obs_dim(&self) -> usize {
            2
        }

        fn device(&self) -> Device {
            nn::device()
        }
    }

    /// u_T "auto" with known answers: the 0.9 quantile of u = 1 … 100 is 90.1 (numpy's
    /// linear interpolation), a tenth of that per member and output with the mean reduction
    /// (K · (1 + |S|) = 6), and the clamps bound it from both sides.
    #[test]
    fn the_auto_threshold_is_the_quantile_of_u_clamped() {
        let rows = 100;
        // Shuffled, so that sorting is part of what is checked.
        let obs: Vec<f32> = (1..=rows)
            .map(|i| ((i * 37) % rows + 1) as f32)
            .flat_map(|u| [u.sqrt(), 0.0])
            .collect();
        let act = vec![0.0f32; rows];
        let cfg = |reduction, lo, hi| MpdpConfig {
            u_reduction: reduction,
            u_quantile: 0.9,
            u_min: lo,
            u_max: hi,
            ..MpdpConfig::default()
        };
        let at = |c: MpdpConfig| auto_threshold(&Gap, &obs, &act, rows, &c);
        let close = |a: f64, b: f64| (a - b).abs() < 1e-3 * b;
        let sum = at(cfg(Reduction::Sum, None, None));
        assert!(close(sum, 90.1), "{sum}");
        let mean = at(cfg(Reduction::Mean, None, None));
        assert!(close(mean, 90.1 / 6.0), "{mean}");
        assert_eq!(at(cfg(Reduction::Sum, None, Some(50.0))), 50.0);
        assert_eq!(at(cfg(Reduction::Sum, Some(95.0), None)), 95.0);
        let median = at(MpdpConfig {
            u_quantile: 0.5,
            ..cfg(Reduction::Sum, None, None)
        });
        assert!(close(median, 50.5), "{median}");
    }

    /// `policy_init = "copy"`: π_1 … π_{H−1} act exactly as π_0 at the start, through
    /// parameters of their own (a step on one leaves the others); "fresh" policies differ.
    #[test]
    fn copied_policies_start_as_pi_0_with_parameters_of_their_own() {
        use burn::module::{Module, ModuleVisitor, Param};
        use rand::SeedableRng;
        let device = nn::device();
        let setting = Setting {
            task: Task::Hopper,
            obs_dim: 11,
            act_dim: 3,
            seed: 1,
            device: &device,
        };
        let cfg = |init| MpdpConfig {
            horizon: 3,
            policy_init: init,
            sac: SacConfig {
                hidden: vec![16, 16],
                ..MpdpConfig::default().sac
            },
            ..MpdpConfig::default()
        };
        let obs = tensor2(
            crate::nn::normal_noise(&mut rand::rngs::Xoshiro256PlusPlus::seed_from_u64(2), 22),
            2,
            11,
            &device,
        );
        let acts = |agent: &Mpdp| -> Vec<Vec<f32>> {
            agent
                .policies
                .steps
                .iter()
                .map(|p| crate::nn::to_vec(p.valid().mean_action(obs.clone().inner())))
                .collect()
        };
        struct Ids(Vec<burn::module::ParamId>);
        impl ModuleVisitor for Ids {
            fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
                self.0.push(p.id);
            }
        }
        let ids = |m: &crate::nn::GaussianPolicy| {
            let mut v = Ids(Vec::new());
            m.visit(&mut v);
            v.0
        };
        let copy = Mpdp::new(cfg(PolicyInit::Copy), &setting);
        let a = acts(&copy);
        assert_eq!(a[0], a[1]);
        assert_eq!(a[0], a[2]);
        let (i0, i1) = (ids(&copy.policies.steps[0]), ids(&copy.policies.steps[1]));
        assert!(
            i0.iter().all(|id| !i1.contains(id)),
            "π_1 shares parameters with π_0"
        );
        let fresh = Mpdp::new(cfg(PolicyInit::Fresh), &setting);
        let f = acts(&fresh);
        assert_ne!(f[0], f[1]);
        // π_0 itself is the same either way: the copies draw no weights of their own.
        assert_eq!(f[0], a[0]);
        // The default stays out of the resolved config (run ids of earlier runs hold).
        let table = crate::config::to_table(MpdpConfig::default()).unwrap();
        assert!(!table.contains_key("policy_init"));
    }
}
