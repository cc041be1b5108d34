//! Branched model rollouts (MBPO; docs/algorithms.md, "MBPO"): from real start states, `horizon` steps
//! with the current policy; at every step each row's prediction comes from an elite member
//! drawn at random for that row and step, sampled from its Gaussian; `[reward, Δobs]` becomes
//! the reward and `obs + Δobs`; the env's termination function ends rows.
use rand::{Rng, RngExt};

use super::ensemble::Ensemble;
use crate::env::Task;

/// What a rollout needs of a dynamics model: every member's mean and variance of
/// `[reward, Δobs]` for rows of `[obs, action]`, and which members may predict.
pub trait Dynamics {
    /// `[member][rows × d_out]` means and variances.
    fn predict(&self, inputs: &[f32]) -> (Vec<Vec<f32>>, Vec<Vec<f32>>);
    fn elites(&self) -> &[usize];
}

impl Dynamics for Ensemble {
    fn predict(&self, inputs: &[f32]) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
        Ensemble::predict(self, inputs)
    }

    fn elites(&self) -> &[usize] {
        &self.elites
    }
}

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

/// Row `r` (`d` wide) of every member's array.
fn row_of<'a>(members: &[&'a [f32]], r: usize, d: usize) -> Vec<&'a [f32]> {
    members.iter().map(|a| &a[r * d..(r + 1) * d]).collect()
}

/// Rolls `spec.horizon` steps from each row of `start` (`rows × obs_dim`). `policy` maps
/// rows of observations to rows of normalised actions; `sink` receives every transition that
/// is kept.
pub fn branched<R: Rng>(
    model: &impl Dynamics,
    spec: &RolloutSpec,
    start: &[f32],
    policy: &mut dyn FnMut(&[f32], usize) -> Vec<f32>,
    rng: &mut R,
    sink: &mut dyn FnMut(&ModelStep<'_>),
) -> RolloutStats {
    let (obs_dim, act_dim) = (spec.obs_dim, spec.act_dim);
    let d_out = 1 + obs_dim;
    let mut obs = start.to_vec();
    let mut stats = RolloutStats {
        started: start.len() / obs_dim,
        ..RolloutStats::default()
    };
    let elites = model.elites().to_vec();
    for depth in 0..spec.horizon {
        let rows = obs.len() / obs_dim;
        if rows == 0 {
            break;
        }
        let actions = policy(&obs, rows);
        let mut inputs = Vec::with_capacity(rows * (obs_dim + act_dim));
        for r in 0..rows {
            inputs.extend_from_slice(&obs[r * obs_dim..(r + 1) * obs_dim]);
            inputs.extend_from_slice(&actions[r * act_dim..(r + 1) * act_dim]);
        }
        let (means, vars) = model.predict(&inputs);
        let (em, ev): (Vec<&[f32]>, Vec<&[f32]>) = elites
            .iter()
            .map(|&k| (&means[k][..], &vars[k][..]))
            .unzip();
        // Every row: the elite that predicts it, its sample, termination and uncertainty.
        let mut next = vec![0f32; rows * obs_dim];
        let mut reward = vec![0f32; rows];
        let mut terminated = vec![false; rows];
        let mut u = vec![0f64; rows];
        for r in 0..rows {
            let e = rng.random_range(0..elites.len());
            let (m, v) = (
                &em[e][r * d_out..(r + 1) * d_out],
                &ev[e][r * d_out..(r + 1) * d_out],
            );
            let mut draw = |j: usize| -> f32 {
                let z: f32 = rng.sample(rand_distr::StandardNormal);
                m[j] + v[j].max(0.0).sqrt() * z
            };
            reward[r] = draw(0);
            let o = &obs[r * obs_dim..(r + 1) * obs_dim];
            let n = &mut next[r * obs_dim..(r + 1) * obs_dim];
            for j in 0..obs_dim {
                n[j] = o[j] + draw(1 + j);
            }
            terminated[r] = spec.task.is_terminal(n);
            if elites.len() >= 2 {
                u[r] = super::uncertainty::ovr(&row_of(&em, r, d_out), &row_of(&ev, r, d_out), e);
            }
        }
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
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::Xoshiro256PlusPlus;

    /// Deterministic linear dynamics: reward 1, Δobs = action · `gain` on every dimension,
    /// one gain per member, zero variance.
    struct Linear {
        gains: Vec<f32>,
        elites: Vec<usize>,
        obs_dim: usize,
    }

    impl Dynamics for Linear {
        fn predict(&self, inputs: &[f32]) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
            let w = self.obs_dim + 1;
            let rows = inputs.len() / w;
            let means = self
                .gains
                .iter()
                .map(|g| {
                    (0..rows)
                        .flat_map(|r| {
                            let a = inputs[r * w + self.obs_dim];
                            std::iter::once(1.0).chain(std::iter::repeat_n(a * g, self.obs_dim))
                        })
                        .collect()
                })
                .collect();
            let vars = vec![vec![0.0; rows * w]; self.gains.len()];
            (means, vars)
        }

        fn elites(&self) -> &[usize] {
            &self.elites
        }
    }

    #[test]
    fn rows_stop_at_termination_and_elites_are_drawn_per_row() {
        // InvertedPendulum ends when |angle| = |obs[1]| > 0.2. With action 1 and gain 0.09
        // the angle goes 0.09, 0.18 (alive), 0.27 (terminal): three steps per row.
        let model = Linear {
            gains: vec![0.09, 0.09, 7.0],
            elites: vec![0, 1],
            obs_dim: 4,
        };
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
            // Member 2 (gain 7) is not an elite and never predicts.
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
        let model = Linear {
            gains: vec![0.01, 0.02],
            elites: vec![0, 1],
            obs_dim: 4,
        };
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
            gains: vec![0.0, 0.01, 0.02],
            elites: vec![0, 1, 2],
            obs_dim: 4,
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
            &Sigma(model),
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

    /// [`Linear`] with an exact reward and unit variance on Δobs.
    struct Sigma(Linear);

    impl Dynamics for Sigma {
        fn predict(&self, inputs: &[f32]) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
            let (m, v) = self.0.predict(inputs);
            let d = self.0.obs_dim + 1;
            let var = |n: usize| (0..n).map(|i| if i % d == 0 { 0.0 } else { 1.0 }).collect();
            (m, v.into_iter().map(|x| var(x.len())).collect())
        }

        fn elites(&self) -> &[usize] {
            self.0.elites()
        }
    }
}
