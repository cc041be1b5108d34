//! Model-predictive control with CEM (PETS, POPLIN): one planning call optimises a solution
//! per state with [`cem::optimize`], scoring candidates by trajectory sampling
//! ([`particles::evaluate`]), and returns the final means. What a solution is (an action
//! sequence, action residuals, policy-weight perturbations) is the [`Search`]'s business.
use std::time::Instant;

use rand::rngs::Xoshiro256PlusPlus;
use rand::{Rng, SeedableRng};

use super::cem::{self, Bounds, CemConfig, Solution};
use super::particles::{self, Actions, Particles};
use crate::env::Task;
use crate::model::step::DiffModel;

/// A planner's search space: how candidate solutions act in the model.
pub trait Search {
    /// The actions of candidates `solutions` (`dim` values each); candidate `i` plans for
    /// the state `problems[i]`.
    fn actions<'a>(&'a self, solutions: &'a [f32], problems: &'a [usize]) -> Box<dyn Actions + 'a>;
}

impl<S: Search + ?Sized> Search for &S {
    fn actions<'a>(&'a self, solutions: &'a [f32], problems: &'a [usize]) -> Box<dyn Actions + 'a> {
        (**self).actions(solutions, problems)
    }
}

/// The settings of one planning call.
#[derive(Debug, Clone, Copy)]
pub struct Mpc<'a> {
    pub task: Task,
    pub horizon: usize,
    pub particles: Particles,
    pub cem: &'a CemConfig,
}

/// The names of [`Planned::stats`] (logged as `train/<name>`).
pub const PLAN_STATS: [&str; 4] = ["plan_return", "cem_std", "cem_iterations", "plan_s"];

/// What a planning call found.
#[derive(Debug, Clone)]
pub struct Planned {
    pub solution: Solution,
    /// The particle return of each state's final mean (the chosen solution).
    pub chosen_return: Vec<f64>,
    /// Wall time of the call.
    pub seconds: f64,
}

impl Planned {
    /// The planning statistics of a call, averaged over its states, in the order of
    /// [`PLAN_STATS`]: the return of the chosen solutions, CEM's final standard deviation, its
    /// iterations, and the wall time per state.
    pub fn stats(&self) -> [f64; PLAN_STATS.len()] {
        let rows = self.chosen_return.len().max(1) as f64;
        let dim = self.solution.mean.len() as f64 / rows;
        let std = self
            .solution
            .variance
            .iter()
            .map(|&v| f64::from(v).sqrt())
            .sum::<f64>()
            / (rows * dim).max(1.0);
        [
            crate::stats::mean(&self.chosen_return),
            std,
            self.solution.iterations.iter().sum::<usize>() as f64 / rows,
            self.seconds / rows,
        ]
    }
}

/// Plans for every row of `obs` (`rows × obs_dim`): CEM from the warm starts `warm`
/// (`rows × dim`), candidates scored by the particles' mean return through `model`.
#[allow(clippy::too_many_arguments)]
pub fn plan<R: Rng>(
    mpc: &Mpc<'_>,
    model: &dyn DiffModel,
    search: &dyn Search,
    obs: &[f32],
    dim: usize,
    warm: &[f32],
    bounds: Option<Bounds<'_>>,
    rng: &mut R,
) -> Planned {
    let t0 = Instant::now();
    let rows = warm.len() / dim.max(1);
    let pop = mpc.cem.population;
    let score = |solutions: &[f32], problems: &[usize], rng: &mut Xoshiro256PlusPlus| -> Vec<f64> {
        let n = solutions.len() / dim;
        let mut actions = search.actions(solutions, problems);
        particles::evaluate(
            model,
            mpc.task,
            obs,
            &|c| problems[c],
            n,
            mpc.horizon,
            mpc.particles,
            actions.as_mut(),
            rng,
            false,
        )
        .returns
    };
    let mut inner = Xoshiro256PlusPlus::seed_from_u64(rng.next_u64());
    let solution = cem::optimize(mpc.cem, rows, dim, warm, bounds, rng, &mut |c| {
        let problems: Vec<usize> = c
            .problems
            .iter()
            .flat_map(|&p| std::iter::repeat_n(p, pop))
            .collect();
        score(c.samples, &problems, &mut inner)
    });
    let all: Vec<usize> = (0..rows).collect();
    let chosen_return = score(&solution.mean, &all, &mut inner);
    Planned {
        solution,
        chosen_return,
        seconds: t0.elapsed().as_secs_f64(),
    }
}
