//! `mpdp bench mpdp`: MPDP updates per second (Algorithm 2, lines 4–7: SAC's policy
//! evaluation, the H-step planning objective through the frozen ensemble, the joint clipped
//! policy step, temperature and targets) on our stack and, in the same command, on the plain
//! PyTorch implementation in `bench/reference/mpdp_update.py` (on CUDA when ours runs on a
//! GPU). Hopper sizes, H = 5, batch 256 by default. u_T is infinite and the termination function is HalfCheetah's
//! (none), so every row plans all H steps in both stacks.
use std::io::Write;

use rand::SeedableRng;
use rand::rngs::Xoshiro256PlusPlus;

use super::{ReferenceError, run_reference};
use crate::agent::mpdp::{Mpdp, MpdpConfig, Threshold};
use crate::agent::sac::SacConfig;
use crate::agent::schedule::ModelBasedAgent;
use crate::agent::{Agent, StatMeans, Transition};
use crate::env::Task;
use crate::nn::normal_noise;

/// `mpdp bench mpdp`'s options.
#[derive(Debug, Clone, clap::Args)]
pub struct MpdpBenchConfig {
    #[arg(long, default_value_t = 11)]
    pub obs_dim: usize,
    #[arg(long, default_value_t = 3)]
    pub act_dim: usize,
    /// Planning steps H.
    #[arg(long, default_value_t = 5)]
    pub horizon: usize,
    #[arg(long, default_value_t = 256)]
    pub batch: usize,
    /// Updates per measurement.
    #[arg(long, default_value_t = 20)]
    pub updates: usize,
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    #[command(flatten)]
    pub reference: super::Reference,
}

#[derive(Debug, Clone)]
pub struct MpdpBenchResult {
    pub ours: f64,
    /// Updates/s and the torch version line.
    pub reference: Option<(f64, String)>,
    /// Mean planned horizon of our updates (H when every row runs to the end).
    pub horizon_mean: f64,
}

pub fn run(cfg: &MpdpBenchConfig) -> Result<MpdpBenchResult, ReferenceError> {
    let (o, a) = (cfg.obs_dim, cfg.act_dim);
    let config = MpdpConfig {
        sac: SacConfig {
            batch_size: cfg.batch,
            ..MpdpConfig::default().sac
        },
        horizon: cfg.horizon,
        u_threshold: Threshold::Fixed(f64::MAX),
        ..MpdpConfig::default()
    };
    let device = crate::nn::device();
    let setting = crate::agent::Setting {
        task: Task::HalfCheetah,
        obs_dim: o,
        act_dim: a,
        seed: 0,
        device: &device,
    };
    let mut agent = Mpdp::new(config, &setting);
    // 100k random real transitions, as the reference draws.
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
    let f = |v: Vec<f32>| -> Vec<f64> { v.into_iter().map(f64::from).collect() };
    for _ in 0..100_000 {
        let (obs, next) = (f(normal_noise(&mut rng, o)), f(normal_noise(&mut rng, o)));
        let act: Vec<f64> = f(normal_noise(&mut rng, a))
            .iter()
            .map(|x| x.tanh())
            .collect();
        agent.observe(&Transition {
            obs: &obs,
            action: &act,
            reward: f64::from(normal_noise(&mut rng, 1)[0]),
            next_obs: &next,
            terminated: false,
        });
    }
    let mut stats = StatMeans::default();
    for _ in 0..3 {
        agent.update(&mut stats).expect("finite");
    }
    let secs = super::best_of(cfg.repeats, || {
        for _ in 0..cfg.updates {
            agent.update(&mut stats).expect("finite");
        }
    });
    let horizon_mean = stats
        .finish()
        .and_then(|s| s.into_iter().find(|(n, _)| *n == "horizon_mean"))
        .map_or(f64::NAN, |(_, v)| v);
    let reference = match cfg.reference.python(super::default_torch_python) {
        None => None,
        Some(python) => {
            let out = run_reference(
                &python,
                "mpdp_update.py",
                &[
                    ("--obs", o.to_string()),
                    ("--act", a.to_string()),
                    ("--horizon", cfg.horizon.to_string()),
                    ("--batch", cfg.batch.to_string()),
                    ("--updates", cfg.updates.to_string()),
                    ("--repeats", cfg.repeats.max(1).to_string()),
                ],
            )?;
            Some((out.value("updates_per_s")?, out.torch()))
        }
    };
    Ok(MpdpBenchResult {
        ours: cfg.updates as f64 / secs,
        reference,
        horizon_mean,
    })
}

/// Prints both rates and, last, `ratio=X` (ours / PyTorch, higher is better).
pub fn print_report(
    cfg: &MpdpBenchConfig,
    r: &MpdpBenchResult,
    out: &mut impl Write,
) -> std::io::Result<()> {
    writeln!(
        out,
        "MPDP update: H {}, batch {}, obs {}, act {}, 5 elites of 4x200 swish, {} policies 2x256, twin Q",
        cfg.horizon, cfg.batch, cfg.obs_dim, cfg.act_dim, cfg.horizon
    )?;
    writeln!(
        out,
        "{}: {:>8.2} updates/s (mean planned horizon {:.2})",
        super::ours_label(),
        r.ours,
        r.horizon_mean
    )?;
    if let Some((theirs, version)) = &r.reference {
        let theirs_label = super::reference_label();
        writeln!(out, "{theirs_label} ({version}): {theirs:>8.2} updates/s")?;
        writeln!(out, "ratio={:.3}", r.ours / theirs)?;
    }
    Ok(())
}
