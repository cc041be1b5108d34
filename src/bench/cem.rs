//! `mpdp bench cem`: one PETS planning call (CEM over action sequences, every candidate scored
//! by trajectory sampling through the ensemble) on our stack and, in the same command, on the
//! plain PyTorch implementation in `bench/reference/cem.py` (on CUDA when ours runs on a GPU).
//! Defaults are PETS's at Hopper sizes: population 500, 50 elites, 5 iterations, 20 particles
//! (TS∞) over the 5 elites of a 7 × 4×200 swish ensemble, horizon 30, Hopper's termination
//! function. Both run every iteration (the minimum-variance stop never fires in 5).
use std::io::Write;

use rand::SeedableRng;
use rand::rngs::Xoshiro256PlusPlus;

use super::{ReferenceError, best_of, run_reference};
use crate::agent::pets::ActionSequences;
use crate::env::Task;
use crate::model::step::{FrozenModel, UMembers};
use crate::model::{Ensemble, EnsembleConfig};
use crate::planning::cem::{Bounds, CemConfig};
use crate::planning::mpc::{self, Mpc};
use crate::planning::particles::{Particles, Propagation};

/// `mpdp bench cem`'s options.
#[derive(Debug, Clone, clap::Args)]
pub struct CemBenchConfig {
    #[arg(long, default_value_t = 11)]
    pub obs_dim: usize,
    #[arg(long, default_value_t = 3)]
    pub act_dim: usize,
    #[arg(long, default_value_t = 200)]
    pub hidden: usize,
    #[arg(long, default_value_t = 500)]
    pub population: usize,
    #[arg(long, default_value_t = 50)]
    pub elites: usize,
    #[arg(long, default_value_t = 5)]
    pub iterations: usize,
    /// Particles per candidate (a multiple of the 5 elites).
    #[arg(long, default_value_t = 20)]
    pub particles: usize,
    #[arg(long, default_value_t = 30)]
    pub horizon: usize,
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    #[command(flatten)]
    pub reference: super::Reference,
}

impl CemBenchConfig {
    /// Member evaluations of one call: population × particles × horizon × iterations.
    pub fn member_evaluations(&self) -> f64 {
        (self.population * self.particles * self.horizon * self.iterations) as f64
    }

    /// Matmul FLOPs of one member evaluation (2 per multiply-add).
    pub fn flops_per_evaluation(&self) -> f64 {
        let sizes = [
            vec![self.obs_dim + self.act_dim],
            vec![self.hidden; 4],
            vec![2 * (1 + self.obs_dim)],
        ]
        .concat();
        sizes.windows(2).map(|w| 2.0 * (w[0] * w[1]) as f64).sum()
    }
}

#[derive(Debug, Clone)]
pub struct CemBenchResult {
    /// Planning calls/s.
    pub ours: f64,
    /// Planning calls/s and the torch version line.
    pub reference: Option<(f64, String)>,
}

pub fn run(cfg: &CemBenchConfig) -> Result<CemBenchResult, ReferenceError> {
    let (o, a) = (cfg.obs_dim, cfg.act_dim);
    let device = crate::nn::device();
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(0);
    let model = EnsembleConfig {
        hidden: vec![cfg.hidden; 4],
        ..EnsembleConfig::default()
    };
    let ensemble = Ensemble::new(model, o + a, 1 + o, &mut rng, &device);
    let frozen = FrozenModel::new(&ensemble, o, UMembers::Elites);
    let cem = CemConfig {
        population: cfg.population,
        elites: cfg.elites,
        iterations: cfg.iterations,
        min_variance: 0.0,
        ..CemConfig::default()
    };
    let plan = Mpc {
        task: Task::Hopper,
        horizon: cfg.horizon,
        particles: Particles {
            count: cfg.particles,
            propagation: Propagation::TsInf,
            action_cost: 0.0,
            sample: true,
        },
        cem: &cem,
    };
    let search = ActionSequences {
        horizon: cfg.horizon,
        act_dim: a,
    };
    let mut obs = vec![0.0f32; o];
    obs[0] = 1.25;
    let dim = cfg.horizon * a;
    let (lo, hi) = (vec![-1.0; dim], vec![1.0; dim]);
    let mut call = || {
        let planned = mpc::plan(
            &plan,
            &frozen,
            &search,
            &obs,
            dim,
            &vec![0.0; dim],
            Some(Bounds { lo: &lo, hi: &hi }),
            &mut rng,
        );
        std::hint::black_box(planned);
    };
    call();
    let ours = 1.0 / best_of(cfg.repeats, call);
    let reference = match cfg.reference.python(super::default_torch_python) {
        Some(python) => {
            let out = run_reference(
                &python,
                "cem.py",
                &[
                    ("--obs", o.to_string()),
                    ("--act", a.to_string()),
                    ("--hidden", cfg.hidden.to_string()),
                    ("--population", cfg.population.to_string()),
                    ("--cem-elites", cfg.elites.to_string()),
                    ("--iterations", cfg.iterations.to_string()),
                    ("--particles", cfg.particles.to_string()),
                    ("--horizon", cfg.horizon.to_string()),
                    ("--repeats", cfg.repeats.max(1).to_string()),
                ],
            )?;
            Some((out.value("plans_per_s")?, out.torch()))
        }
        None => None,
    };
    Ok(CemBenchResult { ours, reference })
}

/// Prints both stacks' planning calls/s with the member evaluations and matmul GFLOP/s they
/// reach, then `ratio=X` (ours / PyTorch).
pub fn print_report(
    cfg: &CemBenchConfig,
    r: &CemBenchResult,
    out: &mut impl Write,
) -> std::io::Result<()> {
    let evals = cfg.member_evaluations();
    let gflop = evals * cfg.flops_per_evaluation() / 1e9;
    writeln!(
        out,
        "cem: one planning call, population {} x {} particles (TS-inf) x horizon {} x {} iterations \
         = {:.2}M member evaluations of 4x{} swish ({gflop:.0} GFLOP of matmul), obs {}, act {}",
        cfg.population,
        cfg.particles,
        cfg.horizon,
        cfg.iterations,
        evals / 1e6,
        cfg.hidden,
        cfg.obs_dim,
        cfg.act_dim
    )?;
    let line = |label: &str, rate: f64, out: &mut dyn Write| {
        writeln!(
            out,
            "  {label}: {rate:>8.3} plans/s  ({:.0} member evaluations/s, {:.1} GFLOP/s)",
            rate * evals,
            rate * gflop
        )
    };
    line(super::ours_label(), r.ours, out)?;
    if let Some((theirs, version)) = &r.reference {
        line(
            &format!("{} ({version})", super::reference_label()),
            *theirs,
            out,
        )?;
        writeln!(out, "  ratio={:.3}", r.ours / theirs)?;
    }
    Ok(())
}
