//! PETS (Chua et al. 2018; docs/algorithms.md, "PETS and POPLIN"): model-predictive control
//! over open-loop action sequences, optimised by CEM through the probabilistic ensemble with
//! trajectory sampling. The planner is the shared one ([`super::mpc`]); a solution is the
//! action sequence itself.
//!
//! ```text
//! solution = (a_0 … a_{H−1}) ∈ [−1, 1]^{H·|A|};  warm start: the last solution shifted, 0 appended
//! return of a sequence = mean over particles of Σ_t r̂_t until the termination function fires
//! act: a_0 of CEM's final mean
//! ```
use super::Agent;
use super::mpc::{MpcAgent, MpcConfig, Prepared, Proposer};
use super::registry::{Algorithm, Setting, Workload};
use crate::config::{Invalid, Validate};
use crate::model::step::DiffModel;
use crate::planning::mpc::Search;
use crate::planning::particles::{Actions, Sequences};

/// PETS's settings: the planner's ([`MpcConfig`]); per-task values are presets.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct PetsConfig(pub MpcConfig);

impl Validate for PetsConfig {
    fn validate(&self) -> Result<(), Invalid> {
        self.0.validate()
    }
}

/// Open-loop action sequences.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ActionSequences {
    pub horizon: usize,
    pub act_dim: usize,
}

impl Search for ActionSequences {
    fn actions<'a>(
        &'a self,
        solutions: &'a [f32],
        _problems: &'a [usize],
    ) -> Box<dyn Actions + 'a> {
        Box::new(Sequences {
            actions: solutions,
            horizon: self.horizon,
            act_dim: self.act_dim,
        })
    }
}

impl Proposer for ActionSequences {
    const NAME: &'static str = "PETS";

    fn shape(&self) -> (usize, usize) {
        (self.act_dim, self.horizon)
    }

    fn search<'a>(&'a self, _model: &'a dyn DiffModel, _obs: &[f32], rows: usize) -> Prepared<'a> {
        let n = rows * self.dim();
        (Box::new(*self), Some((vec![-1.0; n], vec![1.0; n])))
    }

    fn act(&self, _obs: &[f32], solutions: &[f32], rows: usize) -> Vec<f32> {
        let dim = self.dim();
        (0..rows)
            .flat_map(|r| solutions[r * dim..r * dim + self.act_dim].iter().copied())
            .collect()
    }
}

/// The PETS agent (`algo = "pets"`).
pub struct Pets;

impl Algorithm for Pets {
    type Config = PetsConfig;
    fn build(cfg: PetsConfig, s: &Setting<'_>) -> Box<dyn Agent> {
        let horizon = cfg.0.horizon;
        Box::new(MpcAgent::new(cfg.0, s, |_| ActionSequences {
            horizon,
            act_dim: s.act_dim,
        }))
    }
    fn workload(cfg: &PetsConfig) -> Workload {
        cfg.0.workload()
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::Xoshiro256PlusPlus;

    use super::*;
    use crate::env::Task;
    use crate::planning::cem::{Bounds, CemConfig};
    use crate::planning::mpc::{self, Mpc};
    use crate::planning::particles::tests::Point;
    use crate::planning::particles::{Particles, Propagation};

    /// The best first action for the point at `s0` over `horizon` steps, by a grid search
    /// over whole action sequences on the host.
    fn grid_optimum(s0: f64, horizon: u32) -> f64 {
        let grid: Vec<f64> = (0..=40).map(|i| -1.0 + 0.05 * f64::from(i)).collect();
        let mut best = (f64::NEG_INFINITY, 0.0);
        let n = grid.len().pow(horizon);
        for code in 0..n {
            let (mut s, mut ret, mut c, mut first) = (s0, 0.0, code, 0.0);
            for t in 0..horizon {
                let a = grid[c % grid.len()];
                c /= grid.len();
                if t == 0 {
                    first = a;
                }
                s += a;
                ret -= (s - 1.0).powi(2);
            }
            if ret > best.0 + 1e-12 {
                best = (ret, first);
            }
        }
        best.1
    }

    /// PETS's chosen first action on the known model equals the grid search's optimum, for
    /// start states whose optimum is inside the bounds and at them.
    #[test]
    fn pets_first_action_is_the_optimum_of_a_known_model() {
        let cfg = CemConfig {
            population: 200,
            elites: 20,
            iterations: 15,
            min_variance: 1e-6,
            ..CemConfig::default()
        };
        let mpc = Mpc {
            task: Task::HalfCheetah,
            horizon: 3,
            particles: Particles {
                count: 2,
                propagation: Propagation::TsInf,
                action_cost: 0.0,
                sample: true,
            },
            cem: &cfg,
        };
        let search = ActionSequences {
            horizon: 3,
            act_dim: 1,
        };
        let starts = [0.3f32, -0.6, 0.9];
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(4);
        let (lo, hi) = (vec![-1.0; 9], vec![1.0; 9]);
        let planned = mpc::plan(
            &mpc,
            &Point,
            &search,
            &starts,
            3,
            &[0.0; 9],
            Some(Bounds { lo: &lo, hi: &hi }),
            &mut rng,
        );
        let first = search.act(&starts, &planned.solution.mean, 3);
        for (r, &s0) in starts.iter().enumerate() {
            let expected = grid_optimum(f64::from(s0), 3);
            assert!(
                (f64::from(first[r]) - expected).abs() < 0.03,
                "start {s0}: planned {} vs optimum {expected}",
                first[r]
            );
        }
        // The chosen sequences' returns are those of the optimum: 0 when 1 is reachable in one
        // step, −(0.4 − 1)² from −0.6.
        assert!(
            planned.chosen_return[0] > -1e-3,
            "{:?}",
            planned.chosen_return
        );
        assert!(
            (planned.chosen_return[1] + 0.36).abs() < 1e-2,
            "{:?}",
            planned.chosen_return
        );
    }
}
