//! Branched model rollouts (MBPO, algorithms.md §C): from real start states, `horizon` steps
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
    pub reward: f32,
    pub next_obs: &'a [f32],
    pub terminated: bool,
    /// Model step index, from 0.
    pub depth: usize,
}

/// Counts of a batch of rollouts.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RolloutStats {
    pub started: usize,
    pub transitions: usize,
    pub terminated: usize,
}

impl RolloutStats {
    /// Mean number of model steps per start state.
    pub fn mean_length(&self) -> f64 {
        self.transitions as f64 / self.started.max(1) as f64
    }
}

/// Rolls `horizon` steps from each row of `start` (`rows × obs_dim`). `policy` maps rows of
/// observations to rows of normalised actions; `sink` receives every transition.
#[allow(clippy::too_many_arguments)]
pub fn branched<R: Rng>(
    model: &impl Dynamics,
    task: Task,
    start: &[f32],
    obs_dim: usize,
    act_dim: usize,
    horizon: usize,
    policy: &mut dyn FnMut(&[f32], usize) -> Vec<f32>,
    rng: &mut R,
    sink: &mut dyn FnMut(&ModelStep<'_>),
) -> RolloutStats {
    let d_out = 1 + obs_dim;
    let mut obs = start.to_vec();
    let mut stats = RolloutStats {
        started: start.len() / obs_dim,
        ..RolloutStats::default()
    };
    let elites = model.elites().to_vec();
    let mut next = vec![0f32; obs_dim];
    for depth in 0..horizon {
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
        let mut alive = Vec::with_capacity(obs.len());
        for r in 0..rows {
            let k = elites[rng.random_range(0..elites.len())];
            let (m, v) = (
                &means[k][r * d_out..(r + 1) * d_out],
                &vars[k][r * d_out..(r + 1) * d_out],
            );
            let mut draw = |j: usize| -> f32 {
                let z: f32 = rng.sample(rand_distr::StandardNormal);
                m[j] + v[j].max(0.0).sqrt() * z
            };
            let reward = draw(0);
            let o = &obs[r * obs_dim..(r + 1) * obs_dim];
            for (j, n) in next.iter_mut().enumerate() {
                *n = o[j] + draw(1 + j);
            }
            let terminated = task.is_terminal(&next);
            sink(&ModelStep {
                obs: o,
                action: &actions[r * act_dim..(r + 1) * act_dim],
                reward,
                next_obs: &next,
                terminated,
                depth,
            });
            stats.transitions += 1;
            if terminated {
                stats.terminated += 1;
            } else {
                alive.extend_from_slice(&next);
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
        let stats = branched(
            &model,
            Task::InvertedPendulum,
            &start,
            4,
            1,
            10,
            &mut |_, rows| vec![1.0; rows],
            &mut rng,
            &mut |s| seen.push((s.depth, s.reward, s.next_obs[1], s.terminated)),
        );
        assert_eq!(
            stats,
            RolloutStats {
                started: 50,
                transitions: 150,
                terminated: 50
            }
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
            Task::InvertedPendulum,
            &start,
            4,
            1,
            1,
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
        branched(
            &model,
            Task::HalfCheetah,
            &vec![0.0f32; 4 * 64],
            4,
            1,
            1,
            &mut |_, rows| vec![1.0; rows],
            &mut rng,
            &mut |s| {
                gains.insert((s.next_obs[0] * 1000.0).round() as i32);
            },
        );
        assert_eq!(gains.into_iter().collect::<Vec<_>>(), vec![10, 20]);
    }
}
