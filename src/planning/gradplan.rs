//! Differentiable planning through the frozen dynamics ensemble: MPDP's extended policy
//! improvement (the paper's Algorithm 1; docs/algorithms.md, "MPDP: the planning update").
//!
//! From a batch of real start states s_0, step t = 0 … H−1 draws a_t ~ π_t(·|s_t)
//! (reparameterised), asks every member compared (the elites, or all members with
//! [`UMembers::All`](crate::model::step::UMembers::All)) for a Gaussian over [r, Δs], measures their disagreement u_t = Σ_i KL(p_i ‖ p_−i) (the paper's Eq. 8; [`Reduction::Mean`] divides
//! it by K·(1 + obs_dim)), and moves each row on with the prediction of an elite drawn for
//! that row, sampled with reparameterised noise. Each row's return J accumulates
//! γ^t (r_t − α log π_t − β u_t) until the row stops, at the first of:
//!
//! - u_t ≥ u_T (the model is not trusted at (s_t, a_t)): **consistent** variant (default)
//!   adds γ^t (min_j Q_j(s_t, a_t) − α log π_t) and keeps no reward of step t; the
//!   **paper-literal** variant adds γ^{t+1} V(s_{t+1}) instead, as Algorithm 1 does, also
//!   where the untrusted s_{t+1} is terminal (the cut comes first);
//! - s_{t+1} is terminal (the task's termination function): nothing more (both variants;
//!   Algorithm 1 as printed bootstraps γ V from the terminal state instead of its reward);
//! - the last step: consistent values (s_{H−1}, a_{H−1}) with Q (so H = 1 is SAC's policy
//!   improvement exactly) before any model call, so that pair is neither penalised with β u
//!   nor checked against u_T; literal adds γ^H V(s_H) after the last reward.
//!
//! Gradients of −mean J flow into every π_t through actions, model states and u; the model,
//! critics and value network stay fixed.
use burn::prelude::*;

use rand::Rng;

use crate::env::Task;
use crate::model::step::{self, DiffModel, Members, Step};
use crate::model::uncertainty::Reduction;
use crate::nn::{Mlp, PolicyStack, TwinQ, normal_noise, scalar, tensor2, to_vec};

/// How the planning objective stops a row whose (s_t, a_t) is too uncertain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Update {
    /// Value the untrusted pair with min Q − α log π; at H_max likewise (H = 1 is SAC).
    Consistent,
    /// Algorithm 1's V bootstrap (the literal variant of docs/algorithms.md, "MPDP: the
    /// planning update"): γ V(s_{t+1}) at the
    /// cut, γ V(s_H) after the last step. Where Algorithm 1 as printed also bootstraps from a
    /// terminal s_{t+1} of a trusted pair and drops its reward, this keeps the reward and adds
    /// no V there; a cut pair gets γ V(s_{t+1}) whether s_{t+1} is terminal or not.
    Literal,
}

/// One planning update's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlanSpec {
    pub task: Task,
    pub gamma: f64,
    /// Weight of the uncertainty penalty.
    pub beta: f64,
    pub u_reduction: Reduction,
    /// Rows stop where u ≥ this.
    pub u_threshold: f64,
    pub update: Update,
    /// Sample each prediction from the member's Gaussian (else its mean).
    pub sample: bool,
}

/// What the planning update fixes: the model, the critics and (literal variant) V.
pub struct Frozen<'a> {
    pub model: &'a dyn DiffModel,
    pub critic: &'a TwinQ,
    pub value: Option<&'a Mlp>,
}

/// The objective of one batch and what happened in it.
pub struct Plan {
    /// mean J over the batch, with gradients into the policies.
    pub objective: Tensor<1>,
    /// Mean log π_0(a_0|s_0), for the temperature.
    pub log_prob_first: f32,
    pub stats: PlanStats,
}

/// Counts over the rows of one planning batch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PlanStats {
    pub rows: usize,
    /// Rows stopped by u ≥ u_T, by termination, and by reaching H_max.
    pub cut_uncertain: usize,
    pub cut_terminal: usize,
    pub reached_max: usize,
    /// u of every (s_t, a_t) evaluated on a live row, step by step.
    pub uncertainty: Vec<f32>,
    /// Rows live at step t (that draw a_t from π_t), for every t < H_max; 0 after the last
    /// row stopped.
    pub live: Vec<usize>,
}

impl PlanStats {
    /// The mean number of actions planned per row (stop step + 1): every live row plans
    /// one action at each step.
    pub fn horizon_mean(&self) -> f64 {
        self.live.iter().sum::<usize>() as f64 / self.rows.max(1) as f64
    }
}

/// The extended policy improvement objective on start states `start` `[rows, obs_dim]`
/// (constants on the autodiff device). Randomness (policy noise, the member per row, model
/// noise) comes from `rng`.
///
/// Only live rows are carried from step to step: a stopped row costs nothing afterwards,
/// and J's mean over all rows is the sum of the live rows' terms divided by `rows`.
pub fn plan<R: Rng>(
    policies: &PolicyStack,
    frozen: &Frozen<'_>,
    spec: &PlanSpec,
    alpha: f64,
    start: Tensor<2>,
    rng: &mut R,
) -> Plan {
    let model = frozen.model;
    let predicting = model.predicting();
    let [rows, _] = start.dims();
    let device = start.device();
    let horizon = policies.steps.len();
    let literal = spec.update == Update::Literal;

    let mut s = start;
    let mut live = rows;
    let mut discount = 1.0f64;
    let mut total: Option<Tensor<1>> = None;
    // Rows with weight 0 are selected out, not multiplied by 0: a stopped row's terms may be
    // infinite (∞ · 0 is NaN), and then neither J nor its gradient may see them.
    let mut add = |term: Tensor<2>, weights: Vec<f32>| {
        let n = weights.len();
        let off: Vec<bool> = weights.iter().map(|&w| w == 0.0).collect();
        let term = if off.contains(&true) {
            let off = Tensor::<2, Bool>::from_data(TensorData::new(off, [n, 1]), &device);
            term.mask_fill(off, 0.0)
        } else {
            term
        };
        let sum = (term * tensor2(weights, n, 1, &device)).sum();
        total = Some(match total.take() {
            Some(j) => j + sum,
            None => sum,
        })
    };
    let mut stats = PlanStats {
        rows,
        live: vec![0; horizon],
        ..PlanStats::default()
    };
    let mut log_prob_first = 0.0;

    for (t, pi) in policies.steps.iter().enumerate() {
        stats.live[t] = live;
        let a_dim = pi.act_dim();
        let eps = tensor2(normal_noise(rng, live * a_dim), live, a_dim, &device);
        let sample = pi.sample(s.clone(), eps);
        if t == 0 {
            log_prob_first = scalar(sample.log_prob.clone().inner().mean());
        }
        let last = t + 1 == horizon;
        // Weight `scale`·γ^t on the live rows `select` picks, 0 elsewhere.
        let weights = |select: &dyn Fn(usize) -> bool, scale: f64| -> Vec<f32> {
            (0..live)
                .map(|r| {
                    if select(r) {
                        (discount * scale) as f32
                    } else {
                        0.0
                    }
                })
                .collect()
        };
        // min Q − α log π of (s_t, a_t) on the live rows `select` picks.
        let q_value = |select: &dyn Fn(usize) -> bool| {
            let rows = subset(live, select, &device);
            frozen
                .critic
                .min_q(pick(&s, &rows), pick(&sample.action, &rows))
                - pick(&sample.log_prob, &rows).mul_scalar(alpha)
        };
        if last && !literal {
            stats.reached_max += live;
            add(q_value(&|_| true), weights(&|_| true, 1.0));
            break;
        }

        let (mean, logvar) = model.predict(s.clone(), sample.action.clone());
        let u = spec.u_reduction.apply(mean.clone(), logvar.clone());
        let u_host = to_vec(u.clone().inner());
        let cut: Vec<bool> = u_host
            .iter()
            // A NaN u is no reason to trust the model: it cuts like u ≥ u_T.
            .map(|&v| v.is_nan() || f64::from(v) >= spec.u_threshold)
            .collect();
        stats.uncertainty.extend_from_slice(&u_host);

        // One predicting member (an elite) per row, its Gaussian sampled with
        // reparameterised noise.
        let Step {
            reward,
            next,
            terminal,
            ..
        } = step::advance(
            mean,
            logvar,
            &s,
            Members::Drawn(predicting),
            spec.sample,
            spec.task,
            rng,
        );

        // Rows the model trusts here: reward, entropy and penalty of step t.
        let running = reward - sample.log_prob.clone().mul_scalar(alpha) - u.mul_scalar(spec.beta);
        add(running, weights(&|r| !cut[r], 1.0));
        // Rows cut here (their values are computed on those rows alone).
        let n_cut = cut.iter().filter(|&&c| c).count();
        if n_cut > 0 {
            let is_cut = |r: usize| cut[r];
            if literal {
                let v = v_value(frozen, &next, subset(live, &is_cut, &device));
                add(v, vec![(discount * spec.gamma) as f32; n_cut]);
            } else {
                add(q_value(&is_cut), vec![discount as f32; n_cut]);
            }
        }
        // Literal: the bootstrap after the last reward.
        if last {
            let open = |r: usize| !cut[r] && !terminal[r];
            let n = (0..live).filter(|&r| open(r)).count();
            if n > 0 {
                let v = v_value(frozen, &next, subset(live, &open, &device));
                add(v, vec![(discount * spec.gamma) as f32; n]);
            }
        }

        let mut going = Vec::with_capacity(live);
        for r in 0..live {
            if cut[r] {
                stats.cut_uncertain += 1;
            } else if terminal[r] {
                stats.cut_terminal += 1;
            } else if last {
                stats.reached_max += 1;
            } else {
                going.push(r as i64);
            }
        }
        if going.is_empty() {
            break;
        }
        s = if going.len() == live {
            next
        } else {
            let n = going.len();
            let idx = Tensor::<1, Int>::from_data(TensorData::new(going, [n]), &device);
            next.select(0, idx)
        };
        live = s.dims()[0];
        discount *= spec.gamma;
    }
    let total = total.expect("at least one planning step");
    Plan {
        objective: total.div_scalar(rows as f64),
        log_prob_first,
        stats,
    }
}

/// V(s) for the literal variant, on the rows `rows` picks (None: all).
fn v_value(frozen: &Frozen<'_>, s: &Tensor<2>, rows: Option<Tensor<1, Int>>) -> Tensor<2> {
    frozen
        .value
        .expect("the paper-literal update needs the value network")
        .forward(pick(s, &rows))
}

/// The rows of `t` that `rows` indexes (all of them for None).
fn pick(t: &Tensor<2>, rows: &Option<Tensor<1, Int>>) -> Tensor<2> {
    match rows {
        Some(idx) => t.clone().select(0, idx.clone()),
        None => t.clone(),
    }
}

/// The indices of the rows among `live` that `select` picks; None when it picks them all
/// (no gather needed).
fn subset(live: usize, select: &dyn Fn(usize) -> bool, device: &Device) -> Option<Tensor<1, Int>> {
    let rows: Vec<i64> = (0..live).filter(|&r| select(r)).map(|r| r as i64).collect();
    (rows.len() < live).then(|| {
        let n = rows.len();
        Tensor::<1, Int>::from_data(TensorData::new(rows, [n]), device)
    })
}

#[cfg(test)]
mod tests {
    use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
    use burn::optim::GradientsParams;
    use rand::rngs::Xoshiro256PlusPlus;
    use rand::{RngExt, SeedableRng};

    use super::*;
    use crate::model::step::{FrozenModel, UMembers};
    use crate::model::uncertainty::{ovr, ovr_total};
    use crate::model::{Ensemble, EnsembleConfig};

    fn seeded(seed: u64) -> Xoshiro256PlusPlus {
        Xoshiro256PlusPlus::seed_from_u64(seed)
    }

    /// Policies, critic and an (untrained, so disagreeing) ensemble of small sizes.
    struct Setup {
        policies: PolicyStack,
        critic: TwinQ,
        model: FrozenModel,
        start: Tensor<2>,
    }

    fn setup(obs: usize, act: usize, horizon: usize, rows: usize, seed: u64) -> Setup {
        let device = crate::nn::device();
        let mut rng = seeded(seed);
        let policies =
            PolicyStack::new(horizon, obs, act, &[16, 16], (-5.0, 2.0), &mut rng, &device);
        let critic = TwinQ::new(obs, act, &[16, 16], &mut rng, &device);
        let cfg = EnsembleConfig {
            members: 4,
            elites: 3,
            hidden: vec![16, 16],
            ..EnsembleConfig::default()
        };
        let ens = Ensemble::new(cfg, obs + act, 1 + obs, &mut rng, &device);
        let start = tensor2(normal_noise(&mut rng, rows * obs), rows, obs, &device);
        Setup {
            policies,
            critic: critic.no_grad(),
            model: FrozenModel::new(&ens, obs, UMembers::Elites),
            start,
        }
    }

    fn spec(task: Task, beta: f64, u_threshold: f64, update: Update) -> PlanSpec {
        PlanSpec {
            task,
            gamma: 0.9,
            beta,
            u_reduction: Reduction::Sum,
            u_threshold,
            update,
            sample: true,
        }
    }

    /// The gradients of `module`'s parameters, flattened in visiting order.
    fn flat_grads<M: Module>(module: &M, grads: &GradientsParams) -> Vec<f32> {
        struct G<'a>(&'a GradientsParams, Vec<f32>);
        impl ModuleVisitor for G<'_> {
            fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
                let n = p.val().shape().num_elements();
                match self.0.get::<D>(p.id) {
                    Some(g) => self.1.extend(to_vec(g)),
                    None => self.1.extend(std::iter::repeat_n(0.0, n)),
                }
            }
        }
        let mut g = G(grads, Vec::new());
        module.visit(&mut g);
        g.1
    }

    /// `module` with `scale`·v added to its parameters, v a fixed random direction (`seed`).
    fn shifted<M: Module>(module: M, scale: f64, seed: u64) -> M {
        struct S(Xoshiro256PlusPlus, f64);
        impl ModuleMapper for S {
            fn map_float<const D: usize>(&mut self, p: Param<Tensor<D>>) -> Param<Tensor<D>> {
                let (rng, scale) = (&mut self.0, self.1);
                p.map(|t| {
                    let shape = t.shape();
                    let v = normal_noise(rng, shape.num_elements());
                    let v = Tensor::<D>::from_data(TensorData::new(v, shape), &t.device());
                    t + v.mul_scalar(scale)
                })
            }
        }
        module.map(&mut S(seeded(seed), scale))
    }

    /// v of [`shifted`], flattened like [`flat_grads`].
    fn direction<M: Module>(module: &M, seed: u64) -> Vec<f32> {
        let zero = shifted(module.clone(), 0.0, 0);
        let one = shifted(module.clone(), 1.0, seed);
        let (a, b) = (flat_params(&zero), flat_params(&one));
        a.iter().zip(&b).map(|(x, y)| y - x).collect()
    }

    fn flat_params<M: Module>(module: &M) -> Vec<f32> {
        struct P(Vec<f32>);
        impl ModuleVisitor for P {
            fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
                self.0.extend(to_vec(p.val()));
            }
        }
        let mut p = P(Vec::new());
        module.visit(&mut p);
        p.0
    }

    fn dot(a: &[f32], b: &[f32]) -> f64 {
        a.iter()
            .zip(b)
            .map(|(x, y)| f64::from(*x) * f64::from(*y))
            .sum()
    }

    fn objective(
        s: &Setup,
        policies: &PolicyStack,
        spec: &PlanSpec,
        alpha: f64,
        seed: u64,
    ) -> Plan {
        let frozen = Frozen {
            model: &s.model,
            critic: &s.critic,
            value: None,
        };
        plan(
            policies,
            &frozen,
            spec,
            alpha,
            s.start.clone(),
            &mut seeded(seed),
        )
    }

    #[test]
    fn ovr_total_sums_one_vs_rest_over_members() {
        let device = crate::nn::device();
        let mut rng = seeded(3);
        let (k, rows, d) = (4, 3, 2);
        let mean = normal_noise(&mut rng, k * rows * d);
        let logvar: Vec<f32> = normal_noise(&mut rng, k * rows * d)
            .iter()
            .map(|x| 0.5 * x - 1.0)
            .collect();
        let t = |v: Vec<f32>| Tensor::<3>::from_data(TensorData::new(v, [k, rows, d]), &device);
        let u = to_vec(ovr_total(t(mean.clone()), t(logvar.clone())).inner());
        let per = to_vec(
            Reduction::Mean
                .apply(t(mean.clone()), t(logvar.clone()))
                .inner(),
        );
        for (a, b) in u.iter().zip(&per) {
            assert!((a / (k * d) as f32 - b).abs() < 1e-6 * a.abs().max(1.0));
        }
        for r in 0..rows {
            let at = |v: &[f32], m: usize| v[(m * rows + r) * d..(m * rows + r + 1) * d].to_vec();
            let means: Vec<Vec<f32>> = (0..k).map(|m| at(&mean, m)).collect();
            let vars: Vec<Vec<f32>> = (0..k)
                .map(|m| at(&logvar, m).iter().map(|x| x.exp()).collect())
                .collect();
            let m: Vec<&[f32]> = means.iter().map(|x| &x[..]).collect();
            let v: Vec<&[f32]> = vars.iter().map(|x| &x[..]).collect();
            let want: f64 = (0..k).map(|i| ovr(&m, &v, i)).sum();
            assert!(
                (f64::from(u[r]) - want).abs() < 1e-4 * want.max(1.0),
                "row {r}: {} vs {want}",
                u[r]
            );
        }
    }

    /// u over every member compares all K of them while rows still step with an elite: the
    /// elites come first in the same order, and with β = 0 and no cut J is the elites-only J
    /// (the same draws); with β > 0 the larger u lowers it.
    #[test]
    fn u_over_all_members_compares_them_all_and_steps_with_an_elite() {
        let (obs, act, rows) = (3, 2, 16);
        let s = setup(obs, act, 3, rows, 4);
        let device = s.start.device();
        let cfg = EnsembleConfig {
            members: 4,
            elites: 2,
            hidden: vec![16, 16],
            ..EnsembleConfig::default()
        };
        let mut ens = Ensemble::new(cfg, obs + act, 1 + obs, &mut seeded(8), &device);
        ens.elites = vec![3, 1];
        let elites = FrozenModel::new(&ens, obs, UMembers::Elites);
        let all = FrozenModel::new(&ens, obs, UMembers::All);
        assert_eq!((elites.members(), elites.predicting()), (2, 2));
        assert_eq!((all.members(), all.predicting()), (4, 2));

        let a = tensor2(normal_noise(&mut seeded(9), rows * act), rows, act, &device);
        let (m_e, _) = elites.predict(s.start.clone(), a.clone());
        let (m_a, _) = all.predict(s.start.clone(), a);
        let first_two = to_vec(m_a.slice([0..2, 0..rows, 0..1 + obs]).inner());
        for (x, y) in first_two.iter().zip(to_vec(m_e.inner())) {
            assert!((x - y).abs() <= 1e-6 * y.abs().max(1.0), "{x} vs {y}");
        }

        let j = |model: &dyn DiffModel, beta: f64| {
            let frozen = Frozen {
                model,
                critic: &s.critic,
                value: None,
            };
            let sp = spec(Task::HalfCheetah, beta, f64::INFINITY, Update::Consistent);
            let p = plan(
                &s.policies,
                &frozen,
                &sp,
                0.1,
                s.start.clone(),
                &mut seeded(5),
            );
            f64::from(scalar(p.objective.inner()))
        };
        let (e0, a0) = (j(&elites, 0.0), j(&all, 0.0));
        assert!((e0 - a0).abs() <= 1e-5 * e0.abs().max(1.0), "{e0} vs {a0}");
        // Eq. 8's sum over four disagreeing members exceeds the sum over two of them.
        let (e1, a1) = (j(&elites, 0.5), j(&all, 0.5));
        assert!(e1 < e0 && a1 < e1, "{a1} < {e1} < {e0}");
    }

    /// H_max = 1, β = 0, no cut: the planning gradient is SAC's policy gradient.
    #[test]
    fn one_step_planning_is_sacs_policy_improvement() {
        let s = setup(3, 2, 1, 32, 1);
        let alpha = 0.2;
        let spec = spec(Task::HalfCheetah, 0.0, f64::INFINITY, Update::Consistent);
        let p = objective(&s, &s.policies, &spec, alpha, 7);
        let g_plan = GradientsParams::from_grads(p.objective.neg().backward(), &s.policies);
        let pi = &s.policies.steps[0];

        let device = s.start.device();
        let eps = tensor2(normal_noise(&mut seeded(7), 32 * 2), 32, 2, &device);
        let (loss, _) = crate::nn::actor_loss(pi, &s.critic, s.start.clone(), eps, alpha);
        let g_sac = GradientsParams::from_grads(loss.backward(), pi);

        let (a, b) = (flat_grads(pi, &g_plan), flat_grads(pi, &g_sac));
        assert_eq!(a.len(), b.len());
        let scale = b.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        assert!(scale > 1e-4, "a gradient to compare");
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() <= 1e-5 * scale, "{x} vs {y}");
        }
        assert_eq!(p.stats.horizon_mean(), 1.0);
    }

    /// A deterministic linear model of two members: Δs = s·A + a·B, r = s·c + a·d, with
    /// member 0's Δs_0 shifted by +spread·s_0 and member 1's by −spread·s_0, both with
    /// variance e^−2. Their disagreement is u = Σ_i KL(N_i ‖ N_−i) = 4·spread²·s_0²/e^−2
    /// (Reduction::Sum): 0 with no spread, else larger the further s_0 is from 0.
    struct Linear {
        a: Vec<f32>,
        b: Vec<f32>,
        c: Vec<f32>,
        d: Vec<f32>,
        spread: f32,
        /// Member 1's log-variance exceeds member 0's (LOGVAR) by this on every output.
        logvar_gap: f32,
        obs: usize,
        act: usize,
    }

    impl Linear {
        fn new(obs: usize, act: usize, seed: u64) -> Self {
            let mut rng = seeded(seed);
            let mut draw = |n: usize, s: f32| -> Vec<f32> {
                normal_noise(&mut rng, n).iter().map(|x| x * s).collect()
            };
            Linear {
                a: draw(obs * obs, 0.1),
                b: draw(act * obs, 0.3),
                c: draw(obs, 0.5),
                d: draw(act, 0.5),
                spread: 0.0,
                logvar_gap: 0.0,
                obs,
                act,
            }
        }

        const LOGVAR: f64 = -2.0;

        /// `member`'s log-variance (the same on every output).
        fn logvar(&self, member: usize) -> f64 {
            Self::LOGVAR
                + if member == 1 {
                    f64::from(self.logvar_gap)
                } else {
                    0.0
                }
        }

        /// u(s, ·) on the host: Σ_i KL(N_i ‖ N_−i) of the two members over the 1 + obs
        /// outputs; their means differ by 2·spread·s_0 on Δs_0 alone.
        fn uncertainty(&self, s: &[f64]) -> f64 {
            let gap = 2.0 * f64::from(self.spread) * s[0];
            let (v0, v1) = (self.logvar(0).exp(), self.logvar(1).exp());
            let kl = |va: f64, vb: f64, m: f64| 0.5 * ((vb / va).ln() + (va + m * m) / vb - 1.0);
            let per_output = kl(v0, v1, 0.0) + kl(v1, v0, 0.0);
            (1 + self.obs) as f64 * per_output + kl(v0, v1, gap) + kl(v1, v0, gap) - per_output
        }

        /// One step of `member` on the host, in f64: (r, s'). With `noise` (one standard
        /// normal per output, reward first) the draw is mean + exp(½·logvar)·noise.
        fn step(
            &self,
            s: &[f64],
            a: &[f64],
            member: usize,
            noise: Option<&[f64]>,
        ) -> (f64, Vec<f64>) {
            let std = (0.5 * self.logvar(member)).exp();
            let z = |k: usize| noise.map_or(0.0, |n| std * n[k]);
            let (o, n) = (self.obs, self.act);
            let sign = if member == 0 { 1.0 } else { -1.0 };
            let shift = |k: usize| {
                if k == 0 {
                    sign * f64::from(self.spread) * s[0]
                } else {
                    0.0
                }
            };
            let r = (0..o).map(|i| s[i] * f64::from(self.c[i])).sum::<f64>()
                + (0..n).map(|j| a[j] * f64::from(self.d[j])).sum::<f64>()
                + z(0);
            let next = (0..o)
                .map(|k| {
                    s[k] + (0..o)
                        .map(|i| s[i] * f64::from(self.a[i * o + k]))
                        .sum::<f64>()
                        + (0..n)
                            .map(|j| a[j] * f64::from(self.b[j * o + k]))
                            .sum::<f64>()
                        + shift(k)
                        + z(1 + k)
                })
                .collect();
            (r, next)
        }
    }

    impl DiffModel for Linear {
        fn predict(&self, obs: Tensor<2>, act: Tensor<2>) -> (Tensor<3>, Tensor<3>) {
            let device = obs.device();
            let [rows, o] = obs.dims();
            let n = self.act;
            let m = |v: &[f32], r: usize, c: usize| tensor2(v.to_vec(), r, c, &device);
            let delta = obs.clone().matmul(m(&self.a, o, o)) + act.clone().matmul(m(&self.b, n, o));
            let r = obs.clone().matmul(m(&self.c, o, 1)) + act.matmul(m(&self.d, n, 1));
            // [0, spread·s_0, 0, …] added to member 0's [r, Δs] and subtracted from member 1's.
            let mut unit = vec![0.0f32; o * (1 + o)];
            unit[1] = self.spread;
            let shift = obs.matmul(m(&unit, o, 1 + o));
            let mean = Tensor::cat(vec![r, delta], 1);
            let mean = Tensor::stack::<3>(vec![mean.clone() + shift.clone(), mean - shift], 0);
            let logvar =
                |m: usize| Tensor::<2>::zeros([rows, 1 + o], &device).add_scalar(self.logvar(m));
            (mean, Tensor::stack::<3>(vec![logvar(0), logvar(1)], 0))
        }

        fn members(&self) -> usize {
            2
        }

        fn obs_dim(&self) -> usize {
            self.obs
        }

        fn device(&self) -> Device {
            crate::nn::device()
        }
    }

    /// The planner's J through `model` against the host replay of the same draws (`seed`);
    /// returns the plan and what the replay saw.
    fn matches_host(
        s: &Setup,
        model: &Linear,
        spec: &PlanSpec,
        value: Option<&crate::nn::Mlp>,
        alpha: f64,
        seed: u64,
    ) -> (Plan, Seen) {
        let frozen = Frozen {
            model,
            critic: &s.critic,
            value,
        };
        let p = plan(
            &s.policies,
            &frozen,
            spec,
            alpha,
            s.start.clone(),
            &mut seeded(seed),
        );
        let got = f64::from(scalar(p.objective.clone().inner()));
        let (want, seen) = linear_objective_seen(s, model, &s.policies, spec, value, alpha, seed);
        assert!(
            (got - want).abs() < 1e-4 * want.abs().max(1.0),
            "{:?} on {}: {got} vs {want}",
            spec.update,
            spec.task
        );
        (p, seen)
    }

    /// The directional derivative of J along π_`step`'s parameters: autodiff against central
    /// finite differences of the host computation (whose draws are replayed, so J is a
    /// deterministic function of the parameters, model noise included).
    fn gradient_matches(
        s: &Setup,
        model: &Linear,
        spec: &PlanSpec,
        value: Option<&crate::nn::Mlp>,
        step: usize,
        seed: u64,
    ) {
        let alpha = 0.1;
        let (p, _) = matches_host(s, model, spec, value, alpha, seed);
        let grads = GradientsParams::from_grads(p.objective.backward(), &s.policies);
        let pi = &s.policies.steps[step];
        let analytic = dot(&flat_grads(pi, &grads), &direction(pi, 41 + step as u64));
        // Small enough that no row's cut moves (J jumps where one does; at 1e-2 the
        // estimate is 5% off, at 1e-4 it agrees to 1e-4).
        let eps = 1e-4;
        let at = |scale: f64| {
            let mut ps = s.policies.clone();
            ps.steps[step] = shifted(ps.steps[step].clone(), scale, 41 + step as u64);
            linear_objective(s, model, &ps, spec, value, alpha, seed)
        };
        let numeric = (at(eps) - at(-eps)) / (2.0 * eps);
        assert!(
            analytic.abs() > 1e-3,
            "π_{step}: a gradient to compare: {analytic}"
        );
        assert!(
            (analytic - numeric).abs() < 1e-2 * analytic.abs(),
            "{:?} π_{step}: autodiff {analytic} vs finite differences {numeric}",
            spec.update
        );
    }

    /// A threshold that cuts about half the start states of `s` at step 0.
    fn median_threshold(s: &Setup, model: &Linear) -> f64 {
        let start = to_vec(s.start.clone().inner());
        let o = model.obs;
        let mut u: Vec<f64> = start
            .chunks(o)
            .map(|x| model.uncertainty(&x.iter().map(|&v| f64::from(v)).collect::<Vec<_>>()))
            .collect();
        u.sort_by(f64::total_cmp);
        let n = u.len();
        0.5 * (u[n / 2 - 1] + u[n / 2])
    }

    /// Policies and critic over 3-dimensional states (`horizon`, `rows`, `seed` as in
    /// [`setup`]), a value network, the linear `model`, and the median u of the start
    /// states as u_T (about half the rows cut at step 0).
    struct CutCase {
        s: Setup,
        value: crate::nn::Mlp,
        model: Linear,
        threshold: f64,
    }

    fn cut_case(horizon: usize, rows: usize, seed: u64, value_seed: u64, model: Linear) -> CutCase {
        let s = setup(3, 2, horizon, rows, seed);
        let device = s.start.device();
        let value = crate::nn::Mlp::new(&[3, 8, 1], &mut seeded(value_seed), &device).no_grad();
        let threshold = median_threshold(&s, &model);
        CutCase {
            s,
            value,
            model,
            threshold,
        }
    }

    /// With model noise on (every other host check runs on the means) and members whose
    /// variances differ: J equals the host replay in both variants, with rows cut by u at
    /// several steps and ended by termination, and its gradient into π_0 and π_1 matches
    /// finite differences. Noise scaled by exp(logvar) instead of exp(½·logvar), or a
    /// variance taken from another member than the mean, fails here.
    #[test]
    fn model_noise_is_the_predicting_members_and_gradients_hold_at_cuts() {
        let CutCase {
            s,
            value,
            model,
            threshold,
        } = cut_case(
            4,
            32,
            8,
            5,
            Linear {
                spread: 0.2,
                logvar_gap: 1.5,
                ..Linear::new(3, 2, 9)
            },
        );
        for update in [Update::Consistent, Update::Literal] {
            let spec = spec(Task::HalfCheetah, 0.5, threshold, update);
            assert!(spec.sample);
            let (p, _) = matches_host(&s, &model, &spec, Some(&value), 0.1, 14);
            // Cuts beyond step 0: more rows cut than start states above the threshold.
            let at_start = to_vec(s.start.clone().inner())
                .chunks(3)
                .filter(|x| model.uncertainty(&[f64::from(x[0])]) >= threshold)
                .count();
            let st = &p.stats;
            assert!(st.cut_uncertain > at_start, "{at_start} at step 0: {st:?}");
            assert!(st.reached_max > 0, "{st:?}");
            for step in [0, 1] {
                gradient_matches(&s, &model, &spec, Some(&value), step, 14);
            }
        }
    }

    /// The literal update's corner cases, by value: a row that is cut and terminal at the
    /// same step gets γ^{t+1}·V(s_{t+1}) (the cut comes first), and a row that terminates at
    /// the last step gets its reward and no bootstrap.
    #[test]
    fn the_literal_update_values_cut_terminal_rows_and_last_step_terminations() {
        let CutCase {
            s,
            value,
            model,
            threshold,
        } = cut_case(
            3,
            64,
            16,
            6,
            Linear {
                spread: 0.15,
                ..Linear::new(3, 2, 19)
            },
        );
        let spec = PlanSpec {
            sample: false,
            ..spec(Task::InvertedPendulum, 0.3, threshold, Update::Literal)
        };
        let (_, seen) = matches_host(&s, &model, &spec, Some(&value), 0.1, 15);
        assert!(
            seen.cut_and_terminal > 0 && seen.terminal_at_last > 0,
            "{seen:?}"
        );
    }

    /// A cut row whose running terms are infinite (here u overflows) adds nothing to J: it
    /// is masked out, not multiplied by 0 (∞ · 0 would make J NaN), and the gradient stays
    /// finite. A NaN u cuts its row too.
    #[test]
    fn an_infinite_value_in_a_cut_row_leaves_j_finite() {
        let s = setup(3, 2, 3, 16, 8);
        // u's rest variance cancels to its floor, and 4·spread²·s_0² / 1e-12 overflows.
        let model = Linear {
            spread: 1e16,
            ..Linear::new(3, 2, 9)
        };
        let spec = PlanSpec {
            sample: false,
            ..spec(Task::HalfCheetah, 0.5, 1e30, Update::Consistent)
        };
        let frozen = Frozen {
            model: &model,
            critic: &s.critic,
            value: None,
        };
        let p = plan(
            &s.policies,
            &frozen,
            &spec,
            0.1,
            s.start.clone(),
            &mut seeded(3),
        );
        assert!(
            p.stats.uncertainty.iter().any(|u| u.is_infinite()),
            "{:?}",
            p.stats
        );
        assert_eq!(p.stats.cut_uncertain, 16);
        let j = p.objective.clone();
        assert!(scalar(j.inner()).is_finite());
        let grads = GradientsParams::from_grads(p.objective.backward(), &s.policies);
        let g = flat_grads(&s.policies.steps[0], &grads);
        assert!(g.iter().all(|x| x.is_finite()));
    }

    /// What the host computation saw: rows cut and terminal at the same step, and rows
    /// that ended at the last step by termination.
    #[derive(Debug, Default)]
    struct Seen {
        cut_and_terminal: usize,
        terminal_at_last: usize,
        /// Rows live at each step (0 after the last one stopped).
        live: Vec<usize>,
    }

    /// [`linear_objective_seen`] without what it saw.
    fn linear_objective(
        s: &Setup,
        model: &Linear,
        policies: &PolicyStack,
        spec: &PlanSpec,
        value: Option<&crate::nn::Mlp>,
        alpha: f64,
        seed: u64,
    ) -> f64 {
        linear_objective_seen(s, model, policies, spec, value, alpha, seed).0
    }

    /// J of `policies` computed independently on the host: the linear model stepped in f64
    /// row by row, rows ending where u ≥ u_T (valued as `spec.update` says) or where
    /// the task's termination function fires, with the planner's draws replayed (policy
    /// noise, then the member of each live row, then, with `spec.sample`, the model noise
    /// of each). `value` is V for the literal variant.
    fn linear_objective_seen(
        s: &Setup,
        model: &Linear,
        policies: &PolicyStack,
        spec: &PlanSpec,
        value: Option<&crate::nn::Mlp>,
        alpha: f64,
        seed: u64,
    ) -> (f64, Seen) {
        let mut seen = Seen::default();
        let (task, gamma, beta) = (spec.task, spec.gamma, spec.beta);
        let literal = spec.update == Update::Literal;
        // V of host states, batched.
        let v = |states: &[Vec<f64>]| -> Vec<f32> {
            let flat: Vec<f32> = states.iter().flatten().map(|&x| x as f32).collect();
            let t = tensor2(flat, states.len(), model.obs, &s.start.device());
            to_vec(
                value
                    .expect("V for the literal variant")
                    .valid()
                    .forward(t.inner()),
            )
        };
        let device = s.start.device();
        let [rows, o] = s.start.dims();
        let n = model.act;
        let mut rng = seeded(seed);
        let start: Vec<f64> = to_vec(s.start.clone().inner())
            .iter()
            .map(|&x| f64::from(x))
            .collect();
        // (row, state) of the live rows, in order.
        let mut live: Vec<(usize, Vec<f64>)> = (0..rows)
            .map(|r| (r, start[r * o..(r + 1) * o].to_vec()))
            .collect();
        let mut j = vec![0.0f64; rows];
        let h = policies.steps.len();
        for (t, pi) in policies.steps.iter().enumerate() {
            let m = live.len();
            seen.live.push(m);
            let eps = tensor2(normal_noise(&mut rng, m * n), m, n, &device);
            let st: Vec<f32> = live
                .iter()
                .flat_map(|(_, x)| x.iter().map(|&v| v as f32))
                .collect();
            let st = tensor2(st, m, o, &device);
            let sample = pi.valid().sample(st.clone().inner(), eps.inner());
            let lp = to_vec(sample.log_prob.clone());
            let g = gamma.powi(t as i32);
            let q = to_vec(s.critic.valid().min_q(st.inner(), sample.action.clone()));
            let q_term = |i: usize| g * (f64::from(q[i]) - alpha * f64::from(lp[i]));
            let last = t + 1 == h;
            if last && !literal {
                for (i, (r, _)) in live.iter().enumerate() {
                    j[*r] += q_term(i);
                }
                break;
            }
            let members: Vec<usize> = (0..m).map(|_| rng.random_range(0..2usize)).collect();
            let d = 1 + o;
            let noise: Option<Vec<f64>> = spec.sample.then(|| {
                normal_noise(&mut rng, m * d)
                    .iter()
                    .map(|&x| f64::from(x))
                    .collect()
            });
            let act: Vec<f64> = to_vec(sample.action)
                .iter()
                .map(|&x| f64::from(x))
                .collect();
            let mut going = Vec::new();
            // Rows whose value is γ^{t+1} V(s_{t+1}) (literal: cut, or past the last step).
            let mut bootstrap = Vec::new();
            for (i, (r, x)) in live.iter().enumerate() {
                let z = noise.as_ref().map(|z| &z[i * d..(i + 1) * d]);
                let (rew, next) = model.step(x, &act[i * n..(i + 1) * n], members[i], z);
                let u = model.uncertainty(x);
                let next32: Vec<f32> = next.iter().map(|&v| v as f32).collect();
                let terminal = task.is_terminal(&next32);
                if u >= spec.u_threshold {
                    seen.cut_and_terminal += usize::from(terminal);
                    if literal {
                        bootstrap.push((*r, next));
                    } else {
                        j[*r] += q_term(i);
                    }
                    continue;
                }
                j[*r] += g * (rew - alpha * f64::from(lp[i]) - beta * u);
                if terminal {
                    seen.terminal_at_last += usize::from(last);
                    continue;
                }
                if last {
                    bootstrap.push((*r, next));
                } else {
                    going.push((*r, next));
                }
            }
            if !bootstrap.is_empty() {
                let states: Vec<Vec<f64>> = bootstrap.iter().map(|(_, x)| x.clone()).collect();
                for ((r, _), val) in bootstrap.iter().zip(v(&states)) {
                    j[*r] += g * gamma * f64::from(val);
                }
            }
            live = going;
            if live.is_empty() {
                break;
            }
        }
        seen.live.resize(h, 0);
        (j.iter().sum::<f64>() / rows as f64, seen)
    }

    /// Through a hand-built linear model, the planner's J equals an independent host
    /// computation, and its gradient matches finite differences of that computation; also
    /// when rows terminate at different steps (InvertedPendulum's |s_1| > 0.2).
    #[test]
    fn planning_through_a_linear_model_matches_an_independent_computation() {
        for task in [Task::HalfCheetah, Task::InvertedPendulum] {
            let s = setup(3, 2, 4, 16, 4);
            let model = Linear::new(3, 2, 9);
            let alpha = 0.1;
            let spec = PlanSpec {
                sample: false,
                ..spec(task, 0.5, f64::INFINITY, Update::Consistent)
            };
            let (p, _) = matches_host(&s, &model, &spec, None, alpha, 11);
            assert!(p.stats.uncertainty.iter().all(|u| u.abs() < 1e-5));
            if task == Task::HalfCheetah {
                assert_eq!(p.stats.horizon_mean(), 4.0);
            } else {
                let ended = p.stats.cut_terminal;
                assert!(ended > 0 && ended < 16, "{:?}", p.stats);
                assert!(p.stats.horizon_mean() < 4.0);
            }

            // Directional derivative along a random direction of π_1's parameters.
            gradient_matches(&s, &model, &spec, None, 1, 11);
        }
    }

    /// Rows cut by u ≥ u_T at different steps, among rows that run on: J equals the host
    /// computation in both variants (consistent: min Q − α log π of the cut pair; literal:
    /// γ V of the next state), and β·u enters for the rows that go on.
    #[test]
    fn rows_cut_at_different_steps_are_valued_as_the_update_says() {
        // The median u of the start states: about half the rows are cut at once.
        let CutCase {
            s,
            value,
            model,
            threshold,
        } = cut_case(
            4,
            32,
            8,
            5,
            Linear {
                spread: 0.2,
                ..Linear::new(3, 2, 9)
            },
        );
        for update in [Update::Consistent, Update::Literal] {
            let spec = PlanSpec {
                sample: false,
                ..spec(Task::HalfCheetah, 0.5, threshold, update)
            };
            let (p, seen) = matches_host(&s, &model, &spec, Some(&value), 0.1, 12);
            let st = &p.stats;
            assert_eq!(st.live, seen.live, "{update:?}: rows live at each step");
            assert!(
                st.cut_uncertain > 16 && st.cut_uncertain < 32,
                "half at step 0, more later: {st:?}"
            );
            assert!(st.reached_max > 0, "{st:?}");
            assert!(st.horizon_mean() > 1.0 && st.horizon_mean() < 4.0);
        }
    }

    #[test]
    fn a_zero_threshold_cuts_every_row_at_once_and_infinity_none() {
        for update in [Update::Consistent, Update::Literal] {
            let s = setup(11, 3, 4, 64, 5);
            let device = s.start.device();
            let value = crate::nn::Mlp::new(&[11, 8, 1], &mut seeded(2), &device).no_grad();
            let run = |task: Task, u_threshold: f64| {
                let frozen = Frozen {
                    model: &s.model,
                    critic: &s.critic,
                    value: Some(&value),
                };
                let sp = spec(task, 0.5, u_threshold, update);
                plan(
                    &s.policies,
                    &frozen,
                    &sp,
                    0.1,
                    s.start.clone(),
                    &mut seeded(3),
                )
                .stats
            };
            let zero = run(Task::Hopper, 0.0);
            assert_eq!(zero.cut_uncertain, 64, "{update:?}");
            assert_eq!(zero.horizon_mean(), 1.0);

            // No termination in HalfCheetah: every row plans the full horizon.
            let all = run(Task::HalfCheetah, f64::INFINITY);
            assert_eq!((all.cut_uncertain, all.reached_max), (0, 64), "{update:?}");
            assert_eq!(all.horizon_mean(), 4.0);
            // Hopper's termination function stops some rows (the untrained model moves the
            // random start states far), never the threshold.
            let hopper = run(Task::Hopper, f64::INFINITY);
            assert_eq!(hopper.cut_uncertain, 0);
            assert!(hopper.cut_terminal > 0, "{hopper:?}");
            assert_eq!(hopper.cut_terminal + hopper.reached_max, 64);
            assert!(hopper.horizon_mean() < 4.0);
        }
    }

    /// J(β) = J(0) − β·U, and its gradient moves with β as finite differences say.
    #[test]
    fn the_uncertainty_penalty_enters_with_beta() {
        let s = setup(4, 2, 3, 32, 6);
        let at = |beta: f64, policies: &PolicyStack| {
            let sp = spec(Task::HalfCheetah, beta, f64::INFINITY, Update::Consistent);
            objective(&s, policies, &sp, 0.1, 13)
        };
        let value = |p: Plan| f64::from(scalar(p.objective.inner()));
        let plan0 = at(0.0, &s.policies);
        // U = mean over rows of Σ_t γ^t u_t, from the u of every planned pair (step-major;
        // the last step is valued by Q, without a model step).
        let rows = plan0.stats.rows;
        let u_direct: f64 = plan0
            .stats
            .uncertainty
            .chunks(rows)
            .enumerate()
            .map(|(t, u)| 0.9f64.powi(t as i32) * u.iter().map(|&x| f64::from(x)).sum::<f64>())
            .sum::<f64>()
            / rows as f64;
        assert_eq!(plan0.stats.uncertainty.len(), 2 * rows);
        let (j0, j1) = (value(plan0), value(at(1.0, &s.policies)));
        let u = j0 - j1;
        assert!(u > 1e-3, "the untrained members disagree: U = {u}");
        assert!((u - u_direct).abs() < 1e-3 * u_direct, "{u} vs {u_direct}");
        let j07 = value(at(0.7, &s.policies));
        assert!((j07 - (j0 - 0.7 * u)).abs() < 1e-4 * j0.abs().max(1.0));

        let beta = 0.7;
        let p = at(beta, &s.policies);
        let grads = GradientsParams::from_grads(p.objective.backward(), &s.policies);
        let pi1 = &s.policies.steps[1];
        let analytic = dot(&flat_grads(pi1, &grads), &direction(pi1, 31));
        let eps = 1e-2;
        let shifted_j = |scale: f64, beta: f64| {
            let mut ps = s.policies.clone();
            ps.steps[1] = shifted(ps.steps[1].clone(), scale, 31);
            value(at(beta, &ps))
        };
        let numeric = (shifted_j(eps, beta) - shifted_j(-eps, beta)) / (2.0 * eps);
        assert!(
            (analytic - numeric).abs() < 3e-2 * analytic.abs().max(1e-2),
            "autodiff {analytic} vs finite differences {numeric}"
        );
        // The penalty's own directional derivative, scaled by β.
        let du = ((shifted_j(eps, 0.0) - shifted_j(eps, 1.0))
            - (shifted_j(-eps, 0.0) - shifted_j(-eps, 1.0)))
            / (2.0 * eps);
        let d0 = (shifted_j(eps, 0.0) - shifted_j(-eps, 0.0)) / (2.0 * eps);
        assert!(du.abs() > 1e-3, "u depends on π_1: {du}");
        assert!(
            (analytic - (d0 - beta * du)).abs() < 3e-2 * analytic.abs().max(1e-2),
            "{analytic} vs {d0} − β·{du}"
        );
    }

    /// The diagnostics: rows live at each step only fall, from the whole batch, and give the
    /// mean horizon (the host replay checks them step by step); the per-policy gradient
    /// norms and inner products that give the penalty's share agree with the same sums over
    /// the flattened gradients on the host.
    #[test]
    fn live_rows_and_per_policy_gradients_add_up() {
        let s = setup(11, 3, 5, 64, 8);
        let sp = spec(Task::Hopper, 0.5, f64::INFINITY, Update::Consistent);
        let probe = objective(&s, &s.policies, &sp, 0.1, 4);
        let u = median_threshold_of(&probe.stats.uncertainty);
        let sp = PlanSpec {
            u_threshold: u,
            ..sp
        };
        let p = objective(&s, &s.policies, &sp, 0.1, 4);
        let live = p.stats.live.clone();
        assert_eq!(live.len(), 5);
        assert_eq!(live[0], 64);
        assert!(live.windows(2).all(|w| w[1] <= w[0]), "{live:?}");
        assert!(live[4] < 64, "the median threshold cuts rows: {live:?}");
        let stops = p.stats.cut_uncertain + p.stats.cut_terminal + p.stats.reached_max;
        assert_eq!(stops, 64, "every row stops once: {:?}", p.stats);

        let grads = GradientsParams::from_grads(p.objective.neg().backward(), &s.policies);
        let p0 = objective(&s, &s.policies, &PlanSpec { beta: 0.0, ..sp }, 0.1, 4);
        let grads0 = GradientsParams::from_grads(p0.objective.neg().backward(), &s.policies);
        let norms = crate::nn::GradSums::of(&grads, &grads, &s.policies.steps).norms();
        let inner = crate::nn::GradSums::of(&grads0, &grads, &s.policies.steps).per_module();
        for (t, pi) in s.policies.steps.iter().enumerate() {
            let (g, g0) = (flat_grads(pi, &grads), flat_grads(pi, &grads0));
            let want = dot(&g, &g).sqrt();
            assert!(
                (norms[t] - want).abs() <= 1e-5 * want.max(1e-6),
                "π_{t}: {} vs {want}",
                norms[t]
            );
            let want = dot(&g0, &g);
            assert!(
                (inner[t] - want).abs() <= 1e-5 * want.abs().max(1e-6),
                "π_{t}"
            );
        }
        // The penalty's part g − g_0 is not zero, nor the whole step.
        let g_sq: f64 = norms.iter().map(|n| n * n).sum();
        let share = (g_sq - inner.iter().sum::<f64>()) / g_sq;
        assert!(
            share.abs() > 1e-4 && (share - 1.0).abs() > 1e-4,
            "share {share}"
        );
    }

    /// The median of `u`.
    fn median_threshold_of(u: &[f32]) -> f64 {
        let mut v: Vec<f64> = u.iter().map(|&x| f64::from(x)).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    }
}
