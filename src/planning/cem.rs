//! The cross-entropy method (PETS's optimiser; docs/algorithms.md, "PETS and POPLIN"): a
//! diagonal Gaussian over solutions, refit to its best samples.
//!
//! ```text
//! μ ← warm start, σ² ← init_variance
//! repeat at most `iterations` times, while max σ² > min_variance:
//!     σ̃² ← min(σ², ((μ − lo)/2)², ((hi − μ)/2)²)          (bounded problems only)
//!     x_i ← μ + σ̃·z_i,  z_i ~ N(0, 1) truncated to [−2, 2],  i = 1 … population
//!     E ← the `elites` samples with the highest return (a NaN return is the worst)
//!     μ ← α·μ + (1 − α)·mean(E),  σ² ← α·σ² + (1 − α)·var(E)
//! return μ
//! ```
//!
//! The solution is the final mean, the smoothed mean of the last elites, not the best sample
//! (returning the best sample cost other ports much of their HalfCheetah return). Many
//! independent problems (one per environment being planned for) are solved together, so that
//! their candidates are evaluated in one batch; each stops on its own.
use rand::Rng;
use rand::RngExt;
use serde::{Deserialize, Serialize};

use crate::config::{Invalid, count_in, limits, positive, positive_counts, unit_interval};

/// CEM's settings; defaults are PETS's (`handful-of-trials` `dmbrl/config/*.py`,
/// `dmbrl/misc/optimizers/cem.py`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CemConfig {
    /// Candidates sampled per iteration (500).
    pub population: usize,
    /// Best candidates the distribution is refit to (50).
    pub elites: usize,
    /// Iterations at most (5).
    pub iterations: usize,
    /// Smoothing: new = α·old + (1 − α)·elite statistic (0.1).
    pub alpha: f64,
    /// A problem stops once its largest variance is at most this (0.001).
    pub min_variance: f64,
    /// The variance every planning call starts from: (ub − lb)²/16 = 0.25 for actions in
    /// [−1, 1] (PETS); POPLIN-P's weight perturbations start at 0.1.
    pub init_variance: f64,
}

impl Default for CemConfig {
    fn default() -> Self {
        CemConfig {
            population: 500,
            elites: 50,
            iterations: 5,
            alpha: 0.1,
            min_variance: 0.001,
            init_variance: 0.25,
        }
    }
}

impl CemConfig {
    pub fn validate(&self) -> Result<(), Invalid> {
        positive_counts(&[
            ("population", self.population),
            ("elites", self.elites),
            ("iterations", self.iterations),
        ])?;
        count_in("population", self.population, limits::ROLLOUT_ROWS)?;
        count_in("iterations", self.iterations, limits::HORIZON)?;
        if self.elites > self.population {
            return Err(Invalid::new(
                "elites",
                format!(
                    "expected at most population ({}), found {}",
                    self.population, self.elites
                ),
            ));
        }
        // α = 1 would never move the distribution.
        unit_interval("alpha", self.alpha)?;
        if self.alpha >= 1.0 {
            return Err(Invalid::new("alpha", "expected a value below 1"));
        }
        crate::config::non_negative("min_variance", self.min_variance)?;
        positive("init_variance", self.init_variance)
    }
}

/// Per-dimension bounds of every problem's solution, `problems × dim` values each.
#[derive(Debug, Clone, Copy)]
pub struct Bounds<'a> {
    pub lo: &'a [f32],
    pub hi: &'a [f32],
}

/// What CEM found for each problem.
#[derive(Debug, Clone, PartialEq)]
pub struct Solution {
    /// The final means, `problems × dim`.
    pub mean: Vec<f32>,
    /// The final variances, `problems × dim`.
    pub variance: Vec<f32>,
    /// Iterations each problem ran.
    pub iterations: Vec<usize>,
    /// The mean return of each problem's last elites.
    pub elite_return: Vec<f64>,
}

/// The candidates of one iteration, handed to the evaluator: `population` samples of each
/// problem in `problems` (in that order), `dim` values each.
pub struct Candidates<'a> {
    pub samples: &'a [f32],
    pub problems: &'a [usize],
    pub dim: usize,
}

/// Solves `problems` independent maximisations of dimension `dim`. `init_mean` holds each
/// problem's starting mean (`problems × dim`); `evaluate` returns one return per candidate.
pub fn optimize<R: Rng>(
    cfg: &CemConfig,
    problems: usize,
    dim: usize,
    init_mean: &[f32],
    bounds: Option<Bounds<'_>>,
    rng: &mut R,
    evaluate: &mut dyn FnMut(&Candidates<'_>) -> Vec<f64>,
) -> Solution {
    assert_eq!(init_mean.len(), problems * dim, "one mean per problem");
    let pop = cfg.population;
    let mut mean = init_mean.to_vec();
    let mut var = vec![cfg.init_variance as f32; problems * dim];
    let mut iterations = vec![0; problems];
    let mut elite_return = vec![f64::NAN; problems];
    let mut samples: Vec<f32> = Vec::new();
    let alpha = cfg.alpha as f32;
    for _ in 0..cfg.iterations {
        let active: Vec<usize> = (0..problems)
            .filter(|&p| {
                var[p * dim..(p + 1) * dim]
                    .iter()
                    .any(|&v| f64::from(v) > cfg.min_variance)
            })
            .collect();
        if active.is_empty() {
            break;
        }
        samples.clear();
        samples.reserve(active.len() * pop * dim);
        for &p in &active {
            let (mu, v) = (&mean[p * dim..(p + 1) * dim], &var[p * dim..(p + 1) * dim]);
            let std: Vec<f32> = (0..dim)
                .map(|j| {
                    let capped = match bounds {
                        Some(b) => {
                            let i = p * dim + j;
                            let room = (mu[j] - b.lo[i]).min(b.hi[i] - mu[j]).max(0.0) / 2.0;
                            v[j].min(room * room)
                        }
                        None => v[j],
                    };
                    capped.sqrt()
                })
                .collect();
            for _ in 0..pop {
                samples.extend((0..dim).map(|j| mu[j] + std[j] * truncated_normal(rng)));
            }
        }
        let returns = evaluate(&Candidates {
            samples: &samples,
            problems: &active,
            dim,
        });
        assert_eq!(
            returns.len(),
            active.len() * pop,
            "one return per candidate"
        );
        for (slot, &p) in active.iter().enumerate() {
            let r = &returns[slot * pop..(slot + 1) * pop];
            let elites = best(r, cfg.elites);
            let row = |i: usize| &samples[(slot * pop + i) * dim..(slot * pop + i + 1) * dim];
            let n = elites.len() as f32;
            for j in 0..dim {
                let m = elites.iter().map(|&i| row(i)[j]).sum::<f32>() / n;
                let v = elites.iter().map(|&i| (row(i)[j] - m).powi(2)).sum::<f32>() / n;
                let k = p * dim + j;
                mean[k] = alpha * mean[k] + (1.0 - alpha) * m;
                var[k] = alpha * var[k] + (1.0 - alpha) * v;
            }
            elite_return[p] = elites.iter().map(|&i| r[i]).sum::<f64>() / elites.len() as f64;
            iterations[p] += 1;
        }
    }
    Solution {
        mean,
        variance: var,
        iterations,
        elite_return,
    }
}

/// The indices of the `k` highest returns, best first; NaN ranks below everything.
pub fn best(returns: &[f64], k: usize) -> Vec<usize> {
    let key = |r: f64| if r.is_nan() { f64::NEG_INFINITY } else { r };
    let mut idx: Vec<usize> = (0..returns.len()).collect();
    idx.sort_by(|&a, &b| key(returns[b]).total_cmp(&key(returns[a])).then(a.cmp(&b)));
    idx.truncate(k);
    idx
}

/// A standard normal draw truncated to [−2, 2] (by rejection, as TensorFlow's
/// `truncated_normal`).
pub fn truncated_normal<R: Rng>(rng: &mut R) -> f32 {
    loop {
        let z: f32 = rng.sample(rand_distr::StandardNormal);
        if z.abs() <= 2.0 {
            return z;
        }
    }
}

/// The warm start of the next planning call: `solution` (`horizon` steps of `width` values)
/// shifted one step forward, its last step `fill`.
pub fn shift(solution: &[f32], width: usize, fill: f32) -> Vec<f32> {
    let mut next = solution[width.min(solution.len())..].to_vec();
    next.resize(solution.len(), fill);
    next
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::Xoshiro256PlusPlus;

    use super::*;

    /// A quadratic over a 3-step, 2-wide action sequence: CEM finds its maximiser, inside the
    /// bounds, to within 0.02 per value.
    #[test]
    fn cem_finds_the_maximum_of_a_quadratic() {
        let target = [0.5f32, -0.3, 0.1, 0.8, -0.9, 0.0];
        let cfg = CemConfig {
            population: 400,
            elites: 40,
            iterations: 30,
            alpha: 0.1,
            min_variance: 1e-8,
            init_variance: 0.25,
        };
        let dim = target.len();
        let (lo, hi) = (vec![-1.0; 2 * dim], vec![1.0; 2 * dim]);
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
        // Two problems at once: the second's optimum is the negated target.
        let mut calls = 0;
        let sol = optimize(
            &cfg,
            2,
            dim,
            &vec![0.0; 2 * dim],
            Some(Bounds { lo: &lo, hi: &hi }),
            &mut rng,
            &mut |c| {
                calls += 1;
                c.samples
                    .chunks(c.dim)
                    .enumerate()
                    .map(|(i, x)| {
                        let sign = if c.problems[i / cfg.population] == 0 {
                            1.0
                        } else {
                            -1.0
                        };
                        -x.iter()
                            .zip(target)
                            .map(|(&x, t)| f64::from(x - sign * t).powi(2))
                            .sum::<f64>()
                    })
                    .collect()
            },
        );
        for (p, sign) in [(0usize, 1.0f32), (1, -1.0)] {
            for (j, want) in target.iter().enumerate() {
                let got = sol.mean[p * dim + j];
                assert!(
                    (got - sign * want).abs() < 0.02,
                    "problem {p} value {j}: {got}"
                );
            }
            assert!(sol.elite_return[p] > -0.01, "{:?}", sol.elite_return);
        }
        assert!(calls <= cfg.iterations);
    }

    /// Every sample stays within 2σ of the mean and, with the variance capped by the distance
    /// to the bounds, within the bounds, even with a mean next to a bound.
    #[test]
    fn samples_are_truncated_and_capped_by_the_bounds() {
        let cfg = CemConfig {
            population: 2000,
            elites: 10,
            iterations: 1,
            init_variance: 4.0,
            ..CemConfig::default()
        };
        let mean = [0.95f32, -0.99, 0.0, 0.3];
        let lo = [-1.0f32; 4];
        let hi = [1.0f32; 4];
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(7);
        let mut seen = 0;
        optimize(
            &cfg,
            1,
            4,
            &mean,
            Some(Bounds { lo: &lo, hi: &hi }),
            &mut rng,
            &mut |c| {
                for x in c.samples.chunks(4) {
                    for j in 0..4 {
                        let room = (mean[j] - lo[j]).min(hi[j] - mean[j]) / 2.0;
                        let sigma = 4.0f32.sqrt().min(room);
                        assert!((x[j] - mean[j]).abs() <= 2.0 * sigma + 1e-6, "{x:?}");
                        assert!((lo[j]..=hi[j]).contains(&x[j]), "{x:?}");
                    }
                    seen += 1;
                }
                vec![0.0; c.samples.len() / 4]
            },
        );
        assert_eq!(seen, 2000);
        // Unbounded: only the truncation at 2σ.
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(8);
        let mut widest = 0.0f32;
        optimize(&cfg, 1, 1, &[0.0], None, &mut rng, &mut |c| {
            for &x in c.samples {
                assert!(x.abs() <= 4.0 + 1e-6);
                widest = widest.max(x.abs());
            }
            vec![0.0; c.samples.len()]
        });
        assert!(widest > 3.0, "{widest}");
    }

    /// NaN returns are never elites; a problem whose variance fell below the minimum stops
    /// while the other goes on.
    #[test]
    fn nan_is_worst_and_problems_stop_on_their_own() {
        assert_eq!(best(&[1.0, f64::NAN, 3.0, -2.0], 3), vec![2, 0, 3]);
        let cfg = CemConfig {
            population: 50,
            elites: 5,
            iterations: 10,
            alpha: 0.0,
            min_variance: 1e-3,
            init_variance: 1.0,
        };
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(3);
        let sol = optimize(&cfg, 2, 1, &[0.0, 0.0], None, &mut rng, &mut |c| {
            c.samples
                .iter()
                .enumerate()
                .map(|(i, &x)| match c.problems[i / 50] {
                    // Problem 0: every return the same, so the elites are the first five
                    // samples and the variance only shrinks slowly. Problem 1: a sharp peak.
                    0 => 0.0,
                    _ if x > 0.5 => f64::NAN,
                    _ => -f64::from(x - 0.2).powi(2),
                })
                .collect()
        });
        assert!(
            sol.mean[1] <= 0.5 && (sol.mean[1] - 0.2).abs() < 0.05,
            "{sol:?}"
        );
        assert!(sol.variance[1] <= 1e-3 && sol.iterations[1] < 10, "{sol:?}");
    }

    #[test]
    fn warm_start_shifts_by_one_step() {
        assert_eq!(
            shift(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 2, 0.0),
            vec![3.0, 4.0, 5.0, 6.0, 0.0, 0.0]
        );
    }

    #[test]
    fn bad_settings_name_the_key() {
        let bad = CemConfig {
            elites: 600,
            ..CemConfig::default()
        };
        assert_eq!(bad.validate().unwrap_err().key.as_deref(), Some("elites"));
        let bad = CemConfig {
            alpha: 1.0,
            ..CemConfig::default()
        };
        assert_eq!(bad.validate().unwrap_err().key.as_deref(), Some("alpha"));
        assert!(CemConfig::default().validate().is_ok());
    }
}
