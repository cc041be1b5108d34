//! `mpdp bench sac`: SAC updates per second (batch 256, Hopper sizes by default) on our stack
//! and, in the same command, on the plain PyTorch implementation in
//! `bench/reference/sac_update.py` (on CUDA when ours runs on a GPU).
use std::io::Write;

use rand::SeedableRng;
use rand::rngs::Xoshiro256PlusPlus;

use super::{ReferenceError, run_reference};
use crate::agent::sac::{SacConfig, SacLearner};
use crate::nn::normal_noise;
use crate::replay::Batch;

/// `mpdp bench sac`'s options.
#[derive(Debug, Clone, clap::Args)]
pub struct SacBenchConfig {
    #[arg(long, default_value_t = 11)]
    pub obs_dim: usize,
    #[arg(long, default_value_t = 3)]
    pub act_dim: usize,
    #[arg(long, default_value_t = 256)]
    pub batch: usize,
    /// Updates per measurement.
    #[arg(long, default_value_t = 200)]
    pub updates: usize,
    /// Measurements per implementation (the best counts).
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    #[command(flatten)]
    pub reference: super::Reference,
}

#[derive(Debug, Clone)]
pub struct SacBenchResult {
    pub ours_updates_per_s: f64,
    pub reference_updates_per_s: Option<f64>,
    pub reference_version: Option<String>,
}

/// Random batches, drawn once before timing (as the reference does).
fn batches(cfg: &SacBenchConfig, rng: &mut Xoshiro256PlusPlus) -> Vec<Batch> {
    let (b, o, a) = (cfg.batch, cfg.obs_dim, cfg.act_dim);
    (0..16)
        .map(|i| Batch {
            size: b,
            obs: normal_noise(rng, b * o),
            act: normal_noise(rng, b * a).iter().map(|v| v.tanh()).collect(),
            rew: normal_noise(rng, b),
            next_obs: normal_noise(rng, b * o),
            terminated: (0..b)
                .map(|j| if (i * b + j) % 100 == 0 { 1.0 } else { 0.0 })
                .collect(),
        })
        .collect()
}

pub fn run(cfg: &SacBenchConfig) -> Result<SacBenchResult, ReferenceError> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(0);
    let data = batches(cfg, &mut rng);
    let sac = SacConfig {
        batch_size: cfg.batch,
        ..SacConfig::default()
    };
    let device = crate::nn::device();
    let mut learner = SacLearner::new(cfg.obs_dim, cfg.act_dim, sac, &mut rng, &device);
    for i in 0..20 {
        learner.update(&data[i % data.len()], &mut rng);
    }
    let best = super::best_of(cfg.repeats, || {
        for i in 0..cfg.updates {
            learner.update(&data[i % data.len()], &mut rng);
        }
    });
    let (reference_updates_per_s, reference_version) =
        match cfg.reference.python(super::default_torch_python) {
            Some(python) => {
                let (rate, version) = reference(&python, cfg)?;
                (Some(rate), Some(version))
            }
            None => (None, None),
        };
    Ok(SacBenchResult {
        ours_updates_per_s: cfg.updates as f64 / best,
        reference_updates_per_s,
        reference_version,
    })
}

fn reference(
    python: &std::path::Path,
    cfg: &SacBenchConfig,
) -> Result<(f64, String), ReferenceError> {
    let out = run_reference(
        python,
        "sac_update.py",
        &[
            ("--obs-dim", cfg.obs_dim.to_string()),
            ("--act-dim", cfg.act_dim.to_string()),
            ("--batch", cfg.batch.to_string()),
            ("--updates", cfg.updates.to_string()),
            ("--repeats", cfg.repeats.max(1).to_string()),
        ],
    )?;
    Ok((out.value("updates_per_s")?, out.torch()))
}

/// Prints both rates and, last, `ratio=X` (ours / PyTorch, higher is better).
pub fn print_report(
    cfg: &SacBenchConfig,
    r: &SacBenchResult,
    out: &mut impl Write,
) -> std::io::Result<()> {
    writeln!(
        out,
        "SAC update: batch {}, obs {}, act {}, 2x256 actor and twin critics, auto-alpha",
        cfg.batch, cfg.obs_dim, cfg.act_dim
    )?;
    writeln!(
        out,
        "{}: {:>8.1} updates/s",
        super::ours_label(),
        r.ours_updates_per_s
    )?;
    if let (Some(theirs), Some(version)) = (r.reference_updates_per_s, &r.reference_version) {
        let theirs_label = super::reference_label();
        writeln!(out, "{theirs_label} ({version}): {theirs:>8.1} updates/s")?;
        writeln!(out, "ratio={:.3}", r.ours_updates_per_s / theirs)?;
    }
    Ok(())
}
