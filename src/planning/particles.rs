//! Trajectory sampling (PETS; docs/algorithms.md, "PETS and POPLIN"): the expected return of
//! candidates from a start state, estimated with `P` particles that each draw their next state
//! from one member's Gaussian ([`step::advance_own`], the shared model step for rows grouped
//! by member).
//!
//! ```text
//! for every candidate c and particle p: s ← s₀(c), G ← 0, alive ← true
//! for t in 0 … H−1:
//!     TS1: shuffle c's particles across the members' slots
//!     a ← the candidate's action at t (a sequence, or a policy of s)
//!     r, s' ← the slot's member's Gaussian at (s, a), sampled (or its mean);
//!             E: the members' mean prediction at (s, a), the same for every slot
//!     G += alive · (r − c·‖a‖²);  alive ← alive ∧ ¬done(s');  s ← s'
//! return of c = mean over its particles of G   (NaN if any prediction was not finite)
//! ```
//!
//! Rows live on the device in member blocks, `[K, n, obs]`: slot `(k, c, j)` belongs to
//! candidate `c` and member `k`, `P/K` slots per candidate and member, so that each member
//! predicts only its own particles. The rewards and the termination flags come back to the
//! host every step; the states stay on the device.
use burn::prelude::*;
use rand::Rng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::env::Task;
use crate::model::step::{self, DiffModel};

/// How particles are assigned to members (PETS's `prop_type`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Propagation {
    /// TS∞: a particle keeps its member for the whole horizon (PETS's default).
    #[default]
    TsInf,
    /// TS1: the particles of a candidate are re-assigned to members at every step.
    Ts1,
    /// E (PETS's `prop_type E`, the propagation of POPLIN's demo scripts): every particle
    /// moves to the mean over the members of their predicted means, with no noise (PETS sets
    /// `ign_var` with it), so a candidate is scored on one deterministic trajectory of the
    /// ensemble's mean.
    Expectation,
}

/// The particles every candidate is evaluated with.
#[derive(Debug, Clone, Copy)]
pub struct Particles {
    /// Particles per candidate, a multiple of the members.
    pub count: usize,
    pub propagation: Propagation,
    /// c in the action cost −c·‖a‖² charged to a living particle at every step.
    pub action_cost: f64,
    /// Draw each prediction from the member's Gaussian (PETS); false: take its mean.
    pub sample: bool,
}

/// Where the candidates' actions come from at every imagined step.
pub trait Actions {
    /// Normalised actions `[K, n, act_dim]` for the particles' states `[K, n, obs_dim]` at
    /// imagined step `t`; slot `(k, j)` belongs to candidate `j / slots_per_member` (see
    /// [`Layout`]).
    fn act(&mut self, t: usize, states: &Tensor<3>, layout: &Layout) -> Tensor<3>;
}

/// The slots of one evaluation.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    /// Members K.
    pub members: usize,
    pub candidates: usize,
    /// Slots per candidate and member: particles / K.
    pub per: usize,
}

impl Layout {
    /// Rows per member block: candidates × per.
    pub fn rows(&self) -> usize {
        self.candidates * self.per
    }

    /// `[K, n, d]` (member blocks) as `[C, K·per, d]` (candidate blocks).
    pub fn by_candidate(&self, t: Tensor<3>) -> Tensor<3> {
        let [k, _, d] = t.dims();
        t.reshape([k, self.candidates, self.per, d])
            .swap_dims(0, 1)
            .reshape([self.candidates, k * self.per, d])
    }

    /// The inverse of [`Layout::by_candidate`].
    pub fn by_member(&self, t: Tensor<3>) -> Tensor<3> {
        let [c, _, d] = t.dims();
        t.reshape([c, self.members, self.per, d])
            .swap_dims(0, 1)
            .reshape([self.members, c * self.per, d])
    }
}

/// Open-loop candidates: `horizon` actions each, row-major `[C, H, act_dim]` on the host.
pub struct Sequences<'a> {
    pub actions: &'a [f32],
    pub horizon: usize,
    pub act_dim: usize,
}

impl Actions for Sequences<'_> {
    fn act(&mut self, t: usize, states: &Tensor<3>, layout: &Layout) -> Tensor<3> {
        let a = self.act_dim;
        let mut out = Vec::with_capacity(layout.members * layout.rows() * a);
        for _ in 0..layout.members {
            for c in 0..layout.candidates {
                let at = &self.actions[(c * self.horizon + t) * a..][..a];
                for _ in 0..layout.per {
                    out.extend_from_slice(at);
                }
            }
        }
        Tensor::from_data(
            TensorData::new(out, [layout.members, layout.rows(), a]),
            &states.device(),
        )
    }
}

/// What an evaluation gave.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// Per candidate: the mean over its particles of the summed rewards until termination.
    pub returns: Vec<f64>,
    /// When asked for: the member that predicted each particle at each step,
    /// `[t][c · P + p]`.
    pub members: Option<Vec<Vec<usize>>>,
}

/// Evaluates `candidates` candidates, candidate `c` from start state `start_of(c)` (rows of
/// `starts`, `obs_dim` wide), over `horizon` imagined steps.
#[allow(clippy::too_many_arguments)]
pub fn evaluate<R: Rng>(
    model: &dyn DiffModel,
    task: Task,
    starts: &[f32],
    start_of: &dyn Fn(usize) -> usize,
    candidates: usize,
    horizon: usize,
    particles: Particles,
    actions: &mut dyn Actions,
    rng: &mut R,
    record: bool,
) -> Evaluation {
    let k = model.predicting();
    assert_eq!(
        k,
        model.members(),
        "every member of the frozen model predicts"
    );
    let o = model.obs_dim();
    let p = particles.count;
    assert!(
        p > 0 && p.is_multiple_of(k),
        "particles must be a multiple of the members"
    );
    let layout = Layout {
        members: k,
        candidates,
        per: p / k,
    };
    let n = layout.rows();
    // The particle in each slot: candidate c's particles are c·P … c·P + P − 1, particle
    // k·per + j starting in slot (k, c, j).
    let slot = |m: usize, c: usize, j: usize| m * n + c * layout.per + j;
    let mut particle_in = vec![0usize; k * n];
    let mut host = Vec::with_capacity(k * n * o);
    for m in 0..k {
        for c in 0..candidates {
            let s = start_of(c);
            for j in 0..layout.per {
                particle_in[slot(m, c, j)] = c * p + m * layout.per + j;
                host.extend_from_slice(&starts[s * o..(s + 1) * o]);
            }
        }
    }
    let device = model.device();
    let mut states = Tensor::<3>::from_data(TensorData::new(host, [k, n, o]), &device);
    let mut returns = vec![0.0f64; candidates * p];
    let mut alive = vec![true; candidates * p];
    let mut members = record.then(Vec::new);
    let mut order: Vec<usize> = (0..p).collect();
    for t in 0..horizon {
        if particles.propagation == Propagation::Ts1 {
            let mut from = vec![0usize; k * n];
            for c in 0..candidates {
                order.shuffle(rng);
                for (to, &src) in order.iter().enumerate() {
                    let at = |q: usize| slot(q / layout.per, c, q % layout.per);
                    from[at(to)] = at(src);
                }
            }
            let idx: Vec<i64> = from.iter().map(|&f| f as i64).collect();
            let idx = Tensor::<1, Int>::from_data(TensorData::new(idx, [k * n]), &device);
            states = states.reshape([k * n, o]).select(0, idx).reshape([k, n, o]);
            particle_in = from.iter().map(|&f| particle_in[f]).collect();
        }
        if let Some(rec) = members.as_mut() {
            let mut at = vec![0usize; candidates * p];
            for (f, &q) in particle_in.iter().enumerate() {
                at[q] = f / n;
            }
            rec.push(at);
        }
        let a = actions.act(t, &states, &layout);
        // Per slot: c·‖a‖², the action cost of its step (none without a cost).
        let cost: Option<Vec<f64>> = (particles.action_cost > 0.0).then(|| {
            let host = crate::nn::to_vec(a.clone());
            host.chunks(host.len() / (k * n))
                .map(|row| {
                    particles.action_cost * row.iter().map(|&v| f64::from(v * v)).sum::<f64>()
                })
                .collect()
        });
        let (mean, logvar) = model.predict_own(states.clone(), a);
        let (mean, sample) = match particles.propagation {
            Propagation::Expectation => (mean.mean_dim(0).repeat_dim(0, k), false),
            _ => (mean, particles.sample),
        };
        let next = step::advance_own(mean, logvar, states, task, sample, rng);
        for (f, &q) in particle_in.iter().enumerate() {
            if !alive[q] {
                continue;
            }
            if !next.finite[f] {
                returns[q] = f64::NAN;
                alive[q] = false;
                continue;
            }
            returns[q] += f64::from(next.reward[f]) - cost.as_ref().map_or(0.0, |c| c[f]);
            if next.terminal[f] {
                alive[q] = false;
            }
        }
        states = next.next;
    }
    let returns = returns
        .chunks(p)
        .map(|g| g.iter().sum::<f64>() / p as f64)
        .collect();
    Evaluation { returns, members }
}

#[cfg(test)]
pub(crate) mod tests {
    use rand::SeedableRng;
    use rand::rngs::Xoshiro256PlusPlus;

    use super::*;

    /// A known deterministic model of a 1-D point: s' = s + a, r = −(s' − 1)², with two
    /// identical members and a log-variance so low that the model noise is below 1e-6.
    pub(crate) struct Point;

    impl DiffModel for Point {
        fn predict(&self, obs: Tensor<2>, act: Tensor<2>) -> (Tensor<3>, Tensor<3>) {
            let next = obs + act.clone();
            let r = (next.clone() - 1.0).powf_scalar(2.0).neg();
            let mean = Tensor::cat(vec![r, act], 1);
            let logvar = mean.zeros_like().sub_scalar(30.0);
            let two = |t: Tensor<2>| Tensor::stack::<3>(vec![t.clone(), t], 0);
            (two(mean), two(logvar))
        }
        fn members(&self) -> usize {
            2
        }
        fn obs_dim(&self) -> usize {
            1
        }
        fn device(&self) -> Device {
            Device::flex()
        }
    }

    fn members_seen(propagation: Propagation) -> (Vec<Vec<usize>>, Vec<f64>) {
        let (candidates, horizon, p) = (3, 8, 6);
        let actions: Vec<f32> = (0..candidates * horizon)
            .map(|i| 0.1 * (i % 5) as f32 - 0.2)
            .collect();
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(9);
        let e = evaluate(
            &Point,
            Task::HalfCheetah,
            &[0.2, -0.4],
            &|c| c % 2,
            candidates,
            horizon,
            Particles {
                count: p,
                propagation,
                action_cost: 0.0,
                sample: true,
            },
            &mut Sequences {
                actions: &actions,
                horizon,
                act_dim: 1,
            },
            &mut rng,
            true,
        );
        let members = e.members.expect("recorded");
        assert_eq!(members.len(), horizon);
        // Every step, each candidate's particles are spread evenly over the two members.
        for at in &members {
            for c in 0..candidates {
                let on_0 = at[c * p..(c + 1) * p].iter().filter(|&&m| m == 0).count();
                assert_eq!(on_0, p / 2);
            }
        }
        (members, e.returns)
    }

    /// TS∞ keeps every particle on its member for the whole horizon; TS1 re-draws them, and
    /// on a deterministic model both give every particle of a candidate the same return:
    /// the sequence's own.
    #[test]
    fn ts_inf_keeps_members_and_ts1_redraws_them() {
        let (inf, inf_returns) = members_seen(Propagation::TsInf);
        assert!(inf.iter().all(|at| at == &inf[0]), "{inf:?}");
        let (one, one_returns) = members_seen(Propagation::Ts1);
        let changed = (0..one[0].len())
            .filter(|&q| one.iter().any(|at| at[q] != one[0][q]))
            .count();
        assert!(
            changed >= one[0].len() / 2,
            "{changed} of {} moved",
            one[0].len()
        );
        for (a, b) in inf_returns.iter().zip(&one_returns) {
            assert!((a - b).abs() < 1e-4, "{a} vs {b}");
        }
        // Candidate 0 from s = 0.2 with its actions, on the host.
        let (mut s, mut expected) = (0.2f64, 0.0);
        for t in 0..8 {
            s += f64::from(0.1 * (t % 5) as f32 - 0.2);
            expected -= (s - 1.0).powi(2);
        }
        assert!(
            (inf_returns[0] - expected).abs() < 1e-4,
            "{} vs {expected}",
            inf_returns[0]
        );
    }

    /// Rewards stop at termination: InvertedPendulum's function ends a particle once
    /// |s[1]| > 0.2, and the reward of the step into the terminal state still counts.
    #[test]
    fn rewards_stop_after_termination() {
        struct Tilt;
        impl DiffModel for Tilt {
            // Two-dimensional state; s[1] grows by a each step; reward 1 per step.
            fn predict(&self, obs: Tensor<2>, act: Tensor<2>) -> (Tensor<3>, Tensor<3>) {
                let rows = obs.dims()[0];
                let device = obs.device();
                let one = Tensor::<2>::ones([rows, 1], &device);
                let zero = Tensor::<2>::zeros([rows, 1], &device);
                let mean = Tensor::cat(vec![one, zero, act], 1);
                let logvar = mean.zeros_like().sub_scalar(30.0);
                (mean.unsqueeze_dim(0), logvar.unsqueeze_dim(0))
            }
            fn members(&self) -> usize {
                1
            }
            fn obs_dim(&self) -> usize {
                2
            }
            fn device(&self) -> Device {
                Device::flex()
            }
        }
        let horizon = 5;
        // Candidate 0 tilts by 0.15 a step: terminal after step 2 (|0.3| > 0.2), so 2 rewards.
        // Candidate 1 stays upright: 5 rewards. Candidate 2 tilts by 0.03 a step: upright.
        let actions = [
            vec![0.15f32; horizon],
            vec![0.0; horizon],
            vec![0.03; horizon],
        ]
        .concat();
        let returns = |action_cost: f64| {
            let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
            evaluate(
                &Tilt,
                Task::InvertedPendulum,
                &[0.0, 0.0],
                &|_| 0,
                3,
                horizon,
                Particles {
                    count: 1,
                    propagation: Propagation::TsInf,
                    action_cost,
                    sample: true,
                },
                &mut Sequences {
                    actions: &actions,
                    horizon,
                    act_dim: 1,
                },
                &mut rng,
                false,
            )
            .returns
        };
        let close =
            |got: &[f64], want: [f64; 3]| got.iter().zip(want).all(|(g, w)| (g - w).abs() < 1e-5);
        let free = returns(0.0);
        assert!(close(&free, [2.0, 5.0, 5.0]), "{free:?}");
        // An action cost c·a² is charged at each living step only: 2 steps of 0.15, none,
        // 5 steps of 0.03.
        let charged = returns(0.5);
        let want = [2.0 - 2.0 * 0.5 * 0.0225, 5.0, 5.0 - 5.0 * 0.5 * 0.0009];
        assert!(close(&charged, want), "{charged:?} vs {want:?}");
    }
    /// A one-dimensional model of two members, given by a function.
    struct TwoMembers(fn(Tensor<2>, Tensor<2>) -> (Tensor<3>, Tensor<3>));

    impl DiffModel for TwoMembers {
        fn predict(&self, obs: Tensor<2>, act: Tensor<2>) -> (Tensor<3>, Tensor<3>) {
            (self.0)(obs, act)
        }
        fn members(&self) -> usize {
            2
        }
        fn obs_dim(&self) -> usize {
            1
        }
        fn device(&self) -> Device {
            Device::flex()
        }
    }

    /// The returns of the open-loop `actions` (`horizon` per candidate, all from s = 0.1, 4
    /// particles) under `model`, and the RNG's next draw afterwards (did it draw noise?).
    fn open_loop(
        model: &TwoMembers,
        actions: &[f32],
        horizon: usize,
        propagation: Propagation,
        sample: bool,
    ) -> (Vec<f64>, u64) {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(3);
        let e = evaluate(
            model,
            Task::HalfCheetah,
            &[0.1],
            &|_| 0,
            actions.len() / horizon,
            horizon,
            Particles {
                count: 4,
                propagation,
                action_cost: 0.0,
                sample,
            },
            &mut Sequences {
                actions,
                horizon,
                act_dim: 1,
            },
            &mut rng,
            false,
        );
        (e.returns, rng.next_u64())
    }

    /// With `sample` off (PETS's `ign_var`) every particle follows its member's mean: on a
    /// model whose predicted variance is 1, the returns are the deterministic ones, computed
    /// here on the host, and no noise is drawn; with `sample` on the same model scatters them.
    #[test]
    fn ignoring_the_variance_follows_the_mean() {
        // Point's mean (s' = s + a, r = −(s' − 1)²) with log-variance 0 everywhere.
        let noisy = TwoMembers(|obs, act| {
            let (mean, _) = Point.predict(obs, act);
            let logvar = mean.zeros_like();
            (mean, logvar)
        });
        let horizon = 4;
        let actions = [0.5f32, 0.25, -0.1, 0.0, -0.3, 0.2, 0.1, 0.4];
        let untouched = Xoshiro256PlusPlus::seed_from_u64(3).next_u64();
        let expected: Vec<f64> = (0..2)
            .map(|c| {
                let (mut s, mut g) = (0.1f64, 0.0);
                for t in 0..horizon {
                    s += f64::from(actions[c * horizon + t]);
                    g -= (s - 1.0).powi(2);
                }
                g
            })
            .collect();
        let (mean, next) = open_loop(&noisy, &actions, horizon, Propagation::TsInf, false);
        for (got, want) in mean.iter().zip(&expected) {
            assert!((got - want).abs() < 1e-5, "{mean:?} vs {expected:?}");
        }
        assert_eq!(next, untouched, "no noise is drawn");
        let (sampled, next) = open_loop(&noisy, &actions, horizon, Propagation::TsInf, true);
        assert_ne!(next, untouched);
        let off = sampled
            .iter()
            .zip(&expected)
            .map(|(g, w)| (g - w).abs())
            .fold(0.0, f64::max);
        assert!(off > 0.1, "{sampled:?} vs {expected:?}");
    }

    /// E scores a candidate on the members' mean: on two members that move the state by a and
    /// by 2a (log-variance 0, so any noise would show), every particle follows s ← s + 1.5·a
    /// and earns the mean of the members' rewards, −½((s + a − 1)² + (s + 2a − 1)²), and no
    /// noise is drawn.
    #[test]
    fn expectation_follows_the_members_mean() {
        let spread = TwoMembers(|obs, act| {
            let member = |m: f64| {
                let delta = act.clone().mul_scalar(m);
                let r = (obs.clone() + delta.clone() - 1.0).powf_scalar(2.0).neg();
                Tensor::cat(vec![r, delta], 1)
            };
            let mean = Tensor::stack::<3>(vec![member(1.0), member(2.0)], 0);
            let logvar = mean.zeros_like();
            (mean, logvar)
        });
        let horizon = 3;
        let actions = [0.2f32, -0.1, 0.3, 0.4, 0.1, -0.2];
        let (returns, next) = open_loop(&spread, &actions, horizon, Propagation::Expectation, true);
        for c in 0..2 {
            let (mut s, mut g) = (0.1f64, 0.0);
            for t in 0..horizon {
                let a = f64::from(actions[c * horizon + t]);
                g -= ((s + a - 1.0).powi(2) + (s + 2.0 * a - 1.0).powi(2)) / 2.0;
                s += 1.5 * a;
            }
            assert!((returns[c] - g).abs() < 1e-5, "{returns:?} vs {g}");
        }
        let untouched = Xoshiro256PlusPlus::seed_from_u64(3).next_u64();
        assert_eq!(next, untouched, "no noise is drawn");
    }
}
