//! Branched model rollouts (MBPO; docs/algorithms.md, "MBPO"): from real start states,
//! `horizon` steps with the current policy. Each step is the one model step
//! ([`step::advance`]): every row's prediction comes from an elite drawn at random for that
//! row and step, sampled from its Gaussian; `[reward, Δobs]` becomes the reward and
//! `obs + Δobs`; the task's termination function ends rows. Rows live on the host between
//! steps (the policy acts there and the kept transitions go to a buffer).
use rand::Rng;

use super::step::{self, DiffModel, Members};
use super::uncertainty::ovr_each;
use crate::env::Task;
use crate::nn::{tensor2, to_vec};

/// One model transition (actions in the agent's normalised space).
#[derive(Debug, Clone, Copy)]
pub struct ModelStep<'a> {
    pub obs: &'a [f32],
    pub action: &'a [f32],
    /// The model's reward, less the uncertainty penalty when masking.
    pub reward: f32,
    pub next_obs: &'a [f32],
    pub terminated: bool,
    /// Model step index, from 0.
    pub depth: usize,
    /// One-vs-rest uncertainty of the prediction.
    pub uncertainty: f32,
}

/// M2AC's masking (docs/algorithms.md, "M2AC"): at rollout step h of H keep the ⌊N·w_h⌋ predictions
/// with the lowest OvR uncertainty (N start rows; w_h = (H − h)/(2(H + 1)), 0.5 when H = 1),
/// penalise rewards by `penalty`·u, and (with `stop_uncertain`) continue only kept rows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mask {
    pub penalty: f64,
    pub stop_uncertain: bool,
}

impl Mask {
    pub fn keep_ratio(horizon: usize, depth: usize) -> f64 {
        if horizon <= 1 {
            0.5
        } else {
            (horizon - depth) as f64 / (2.0 * (horizon + 1) as f64)
        }
    }
}

/// What to roll out: the task (its termination function), sizes, horizon, masking.
#[derive(Debug, Clone, Copy)]
pub struct RolloutSpec {
    pub task: Task,
    pub obs_dim: usize,
    pub act_dim: usize,
    pub horizon: usize,
    pub mask: Option<Mask>,
}

/// Counts and uncertainty of a batch of rollouts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RolloutStats {
    pub started: usize,
    /// Predictions made.
    pub transitions: usize,
    /// Predictions passed on (all of them without masking).
    pub kept: usize,
    pub terminated: usize,
    /// OvR uncertainty of every prediction.
    pub uncertainty: Vec<f64>,
}

impl RolloutStats {
    /// Mean number of model steps per start state.
    pub fn mean_length(&self) -> f64 {
        self.transitions as f64 / self.started.max(1) as f64
    }

    pub fn kept_fraction(&self) -> f64 {
        self.kept as f64 / self.transitions.max(1) as f64
    }

    /// Mean, median and 90th percentile of the uncertainty.
    pub fn uncertainty_summary(&self) -> (f64, f64, f64) {
        crate::stats::mean_p50_p90(self.uncertainty.iter().copied())
    }
}

/// Rolls `spec.horizon` steps from each row of `start` (`rows × obs_dim`). `policy` maps
/// rows of observations to rows of normalised actions; `sink` receives every transition that
/// is kept.
pub fn branched<R: Rng>(
    model: &dyn DiffModel,
    spec: &RolloutSpec,
    start: &[f32],
    policy: &mut dyn FnMut(&[f32], usize) -> Vec<f32>,
    rng: &mut R,
    sink: &mut dyn FnMut(&ModelStep<'_>),
) -> RolloutStats {
    let (obs_dim, act_dim) = (spec.obs_dim, spec.act_dim);
    let mut obs = start.to_vec();
    let mut stats = RolloutStats {
        started: start.len() / obs_dim,
        ..RolloutStats::default()
    };
    let device = model.device();
    for depth in 0..spec.horizon {
        let rows = obs.len() / obs_dim;
        if rows == 0 {
            break;
        }
        let actions = policy(&obs, rows);
        let s = tensor2(obs.clone(), rows, obs_dim, &device);
        let a = tensor2(actions.clone(), rows, act_dim, &device);
        let (mean, logvar) = model.predict(s.clone(), a);
        // Every member's one-vs-rest uncertainty, `[K, rows]`, when there is a rest.
        let per_member =
            (model.members() >= 2).then(|| to_vec(ovr_each(mean.clone(), logvar.clone()).inner()));
        let next = step::advance(
            mean,
            logvar,
            &s,
            Members::Drawn(model.predicting()),
            true,
            spec.task,
            rng,
        );
        let reward = to_vec(next.reward.inner());
        let terminated = next.terminal;
        // The uncertainty of the member that predicted each row.
        let u: Vec<f64> = (0..rows)
            .map(|r| {
                per_member
                    .as_ref()
                    .map_or(0.0, |u| f64::from(u[next.members[r] * rows + r]))
            })
            .collect();
        let next = next.next_host;
        let kept: Vec<bool> = match spec.mask {
            None => vec![true; rows],
            Some(_) => {
                let n_keep =
                    ((stats.started as f64 * Mask::keep_ratio(spec.horizon, depth)).floor()
                        as usize)
                        .min(rows);
                let mut order: Vec<usize> = (0..rows).collect();
                order.sort_by(|&a, &b| u[a].total_cmp(&u[b]));
                let mut keep = vec![false; rows];
                for &r in &order[..n_keep] {
                    keep[r] = true;
                }
                keep
            }
        };
        let penalty = spec.mask.map_or(0.0, |m| m.penalty);
        let stop_uncertain = spec.mask.is_some_and(|m| m.stop_uncertain);
        let mut alive = Vec::with_capacity(obs.len());
        for r in 0..rows {
            let n = &next[r * obs_dim..(r + 1) * obs_dim];
            stats.transitions += 1;
            stats.uncertainty.push(u[r]);
            if kept[r] {
                stats.kept += 1;
                sink(&ModelStep {
                    obs: &obs[r * obs_dim..(r + 1) * obs_dim],
                    action: &actions[r * act_dim..(r + 1) * act_dim],
                    reward: if penalty == 0.0 {
                        reward[r]
                    } else {
                        (f64::from(reward[r]) - penalty * u[r]) as f32
                    },
                    next_obs: n,
                    terminated: terminated[r],
                    depth,
                    uncertainty: u[r] as f32,
                });
            }
            if terminated[r] {
                stats.terminated += 1;
            } else if kept[r] || !stop_uncertain {
                alive.extend_from_slice(n);
            }
        }
        obs = alive;
    }
    stats
}

#[cfg(test)]
mod tests {
    use burn::prelude::*;

    use super::*;
    use rand::SeedableRng;
    use rand::rngs::Xoshiro256PlusPlus;

    /// Linear dynamics: reward 1, Δobs = action · `gain` on every dimension, one gain per
    /// member, the first `predicting` of them predicting; log-variance −40 on the reward
    /// (exact, in effect) and `logvar_obs` on Δobs (−40 too unless set).
    struct Linear {
        gains: Vec<f32>,
        predicting: usize,
        obs_dim: usize,
        logvar_obs: f32,
    }

    impl Linear {
        fn new(gains: Vec<f32>, predicting: usize, obs_dim: usize) -> Self {
            Linear {
                gains,
                predicting,
                obs_dim,
                logvar_obs: -40.0,
            }
        }
    }

    impl DiffModel for Linear {
        fn predict(&self, _obs: Tensor<2>, act: Tensor<2>) -> (Tensor<3>, Tensor<3>) {
            let act = to_vec(act.inner());
            let (k, rows, d) = (self.gains.len(), act.len(), self.obs_dim + 1);
            let mut mean = Vec::with_capacity(k * rows * d);
            let mut logvar = Vec::with_capacity(k * rows * d);
            for g in &self.gains {
                for a in &act {
                    mean.push(1.0);
                    mean.extend(std::iter::repeat_n(a * g, self.obs_dim));
                    logvar.push(-40.0);
                    logvar.extend(std::iter::repeat_n(self.logvar_obs, self.obs_dim));
                }
            }
            let t = |v: Vec<f32>| {
                Tensor::<3>::from_data(TensorData::new(v, [k, rows, d]), &self.device())
            };
            (t(mean), t(logvar))
        }

        fn members(&self) -> usize {
            self.gains.len()
        }

        fn predicting(&self) -> usize {
            self.predicting
        }

        fn obs_dim(&self) -> usize {
            self.obs_dim
        }

        fn device(&self) -> Device {
            crate::nn::device()
        }
    }

    #[test]
    fn rows_stop_at_termination_and_elites_are_drawn_per_row() {
        // InvertedPendulum ends when |angle| = |obs[1]| > 0.2. With action 1 and gain 0.09
        // the angle goes 0.09, 0.18 (alive), 0.27 (terminal): three steps per row.
        let model = Linear::new(vec![0.09, 0.09, 7.0], 2, 4);
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(0);
        let start = vec![0.0f32; 4 * 50];
        let mut seen = Vec::new();
        let spec = |horizon| RolloutSpec {
            task: Task::InvertedPendulum,
            obs_dim: 4,
            act_dim: 1,
            horizon,
            mask: None,
        };
        let stats = branched(
            &model,
            &spec(10),
            &start,
            &mut |_, rows| vec![1.0; rows],
            &mut rng,
            &mut |s: &ModelStep<'_>| seen.push((s.depth, s.reward, s.next_obs[1], s.terminated)),
        );
        assert_eq!(
            (
                stats.started,
                stats.transitions,
                stats.kept,
                stats.terminated
            ),
            (50, 150, 150, 50)
        );
        assert_eq!(stats.mean_length(), 3.0);
        for (depth, reward, angle, terminated) in seen {
            assert_eq!(reward, 1.0);
            // Member 2 (gain 7) is compared but does not predict.
            assert!((angle - 0.09 * (depth + 1) as f32).abs() < 1e-6);
            assert_eq!(terminated, depth == 2);
        }
        // Horizon 1: one step each, nothing terminal yet.
        let stats = branched(
            &model,
            &spec(1),
            &start,
            &mut |_, rows| vec![1.0; rows],
            &mut rng,
            &mut |_| {},
        );
        assert_eq!((stats.transitions, stats.terminated), (50, 0));
    }

    #[test]
    fn each_row_draws_its_own_elite() {
        let model = Linear::new(vec![0.01, 0.02], 2, 4);
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
        let mut gains = std::collections::BTreeSet::new();
        let spec = RolloutSpec {
            task: Task::HalfCheetah,
            obs_dim: 4,
            act_dim: 1,
            horizon: 1,
            mask: None,
        };
        branched(
            &model,
            &spec,
            &vec![0.0f32; 4 * 64],
            &mut |_, rows| vec![1.0; rows],
            &mut rng,
            &mut |s| {
                gains.insert((s.next_obs[0] * 1000.0).round() as i32);
            },
        );
        assert_eq!(gains.into_iter().collect::<Vec<_>>(), vec![10, 20]);
    }

    /// Members that disagree more where the action is larger: with masking, the kept
    /// predictions are the lowest-uncertainty ones, rewards carry the penalty, and the kept
    /// counts follow w_h = (H − h)/(2(H + 1)).
    #[test]
    fn masking_keeps_the_least_uncertain_predictions() {
        let model = Linear {
            logvar_obs: 0.0,
            ..Linear::new(vec![0.0, 0.01, 0.02], 3, 4)
        };
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(2);
        // Action r/100 for row r: the members' spread (and u) grows with r.
        let rows = 100;
        let spec = RolloutSpec {
            task: Task::HalfCheetah,
            obs_dim: 4,
            act_dim: 1,
            horizon: 3,
            mask: Some(Mask {
                penalty: 0.5,
                stop_uncertain: true,
            }),
        };
        let mut kept = vec![Vec::new(); 3];
        let stats = branched(
            &model,
            &spec,
            &vec![0.0f32; 4 * rows],
            &mut |obs, n| {
                (0..n)
                    .map(|r| obs[r * 4 + 3].max(0.0) + r as f32 / 100.0)
                    .collect()
            },
            &mut rng,
            &mut |s| kept[s.depth].push((s.action[0], s.reward, s.uncertainty)),
        );
        // w_h for H = 3: 3/8, 2/8, 1/8 of N = 100 start rows.
        assert_eq!(
            kept.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![37, 25, 12]
        );
        assert_eq!(stats.kept, 74);
        // At the first step the 37 kept predictions are the 37 least uncertain of all 100.
        let mut first: Vec<f64> = stats.uncertainty[..rows].to_vec();
        first.sort_by(f64::total_cmp);
        let mut kept_u: Vec<f64> = kept[0].iter().map(|k| f64::from(k.2)).collect();
        kept_u.sort_by(f64::total_cmp);
        for (k, a) in kept_u.iter().zip(&first) {
            assert!((k - a).abs() < 1e-5 * a.max(1.0), "{kept_u:?} vs {first:?}");
        }
        assert!(first[rows - 1] > first[0]);
        for (_, r, u) in &kept[0] {
            assert!((r - (1.0 - 0.5 * u)).abs() < 1e-5);
        }
        assert!((Mask::keep_ratio(1, 0) - 0.5).abs() < 1e-12);
    }

    /// The one model step, as host rollouts take it, against an independent host computation
    /// in f64 on a real (untrained, so disagreeing) ensemble: the same elite per row and the
    /// same noise give the same reward, next state, termination and uncertainty of the
    /// predicting elite (Ensemble::predict normalises on the host, `sqrt(var)` scales the
    /// noise, the f64 one-vs-rest KL).
    #[test]
    fn a_step_equals_the_host_computation() {
        use crate::model::step::{FrozenModel, UMembers};
        use crate::model::uncertainty::ovr;
        use crate::model::{Ensemble, EnsembleConfig};
        use crate::nn::normal_noise;
        use rand::RngExt;

        let (obs_dim, act_dim, rows) = (4, 1, 64);
        let device = crate::nn::device();
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(5);
        let cfg = EnsembleConfig {
            members: 4,
            elites: 3,
            hidden: vec![16, 16],
            ..EnsembleConfig::default()
        };
        let mut ens = Ensemble::new(cfg, obs_dim + act_dim, 1 + obs_dim, &mut rng, &device);
        ens.elites = vec![2, 0, 3];
        let start: Vec<f32> = normal_noise(&mut rng, rows * obs_dim)
            .iter()
            .map(|x| 0.05 * x)
            .collect();
        let actions: Vec<f32> = normal_noise(&mut rng, rows)
            .iter()
            .map(|x| x.tanh())
            .collect();
        let spec = RolloutSpec {
            task: Task::InvertedPendulum,
            obs_dim,
            act_dim,
            horizon: 1,
            mask: None,
        };
        let mut steps = Vec::new();
        let draws = rng.clone();
        branched(
            &FrozenModel::new(&ens, obs_dim, UMembers::Elites),
            &spec,
            &start,
            &mut |_, _| actions.clone(),
            &mut rng,
            &mut |s| steps.push((s.reward, s.next_obs.to_vec(), s.terminated, s.uncertainty)),
        );
        assert_eq!(steps.len(), rows);

        // The reference: the member of every row first, then the noise, row by row.
        let mut draws = draws;
        let members: Vec<usize> = (0..rows).map(|_| draws.random_range(0..3usize)).collect();
        let d = 1 + obs_dim;
        let noise = normal_noise(&mut draws, rows * d);
        let mut inputs = Vec::new();
        for r in 0..rows {
            inputs.extend_from_slice(&start[r * obs_dim..(r + 1) * obs_dim]);
            inputs.push(actions[r]);
        }
        let (means, vars) = ens.predict(&inputs);
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-4 * b.abs().max(1.0);
        for (r, (reward, next, terminated, u)) in steps.iter().enumerate() {
            let k = ens.elites[members[r]];
            let at = |v: &Vec<f32>, j: usize| f64::from(v[r * d + j]);
            let draw =
                |j: usize| at(&means[k], j) + at(&vars[k], j).sqrt() * f64::from(noise[r * d + j]);
            assert!(
                close(f64::from(*reward), draw(0)),
                "row {r}: reward {reward} vs {}",
                draw(0)
            );
            let want: Vec<f64> = (0..obs_dim)
                .map(|j| f64::from(start[r * obs_dim + j]) + draw(1 + j))
                .collect();
            for (g, w) in next.iter().zip(&want) {
                assert!(
                    close(f64::from(*g), *w),
                    "row {r}: next {next:?} vs {want:?}"
                );
            }
            assert_eq!(*terminated, want[1].abs() > 0.2, "row {r}");
            let row = |v: &Vec<Vec<f32>>| -> Vec<Vec<f32>> {
                ens.elites
                    .iter()
                    .map(|&e| v[e][r * d..(r + 1) * d].to_vec())
                    .collect()
            };
            let (m, v) = (row(&means), row(&vars));
            let m: Vec<&[f32]> = m.iter().map(|x| &x[..]).collect();
            let v: Vec<&[f32]> = v.iter().map(|x| &x[..]).collect();
            let want_u = ovr(&m, &v, members[r]);
            assert!(close(f64::from(*u), want_u), "row {r}: u {u} vs {want_u}");
        }
    }
}
