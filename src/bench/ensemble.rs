//! `mpdp bench ensemble`: the dynamics ensemble's two hot paths on our stack and, in the same
//! command, on the plain PyTorch implementation in `bench/reference/ensemble.py`: one
//! training step (E members × 4 hidden layers, batch B per member) and inference of every
//! member on R rows. Hopper sizes by default. The reference runs on CUDA when ours runs on a
//! GPU, on the CPU otherwise.
use std::io::Write;

use burn::prelude::*;
use rand::SeedableRng;
use rand::rngs::Xoshiro256PlusPlus;

use super::{ReferenceError, best_of, run_reference};
use crate::model::{Ensemble, EnsembleConfig};
use crate::nn::{normal_noise, to_vec};

/// `mpdp bench ensemble`'s options.
#[derive(Debug, Clone, clap::Args)]
pub struct EnsembleBenchConfig {
    #[arg(long, default_value_t = 7)]
    pub members: usize,
    #[arg(long, default_value_t = 200)]
    pub hidden: usize,
    /// Model input width (obs + act).
    #[arg(long, default_value_t = 14)]
    pub d_in: usize,
    /// Model output width (1 + obs).
    #[arg(long, default_value_t = 12)]
    pub d_out: usize,
    /// Rows per member per training step.
    #[arg(long, default_value_t = 256)]
    pub batch: usize,
    /// Training steps per measurement.
    #[arg(long, default_value_t = 50)]
    pub steps: usize,
    /// Inference rows.
    #[arg(long, default_value_t = 100_000)]
    pub rows: usize,
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    #[command(flatten)]
    pub reference: super::Reference,
}

#[derive(Debug, Clone)]
pub struct EnsembleBenchResult {
    pub ours: (f64, f64),
    /// (train steps/s, inference rows/s) and the torch version line.
    pub reference: Option<(f64, f64, String)>,
}

pub fn run(cfg: &EnsembleBenchConfig) -> Result<EnsembleBenchResult, ReferenceError> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(0);
    let device = crate::nn::device();
    let model = EnsembleConfig {
        members: cfg.members,
        elites: cfg.members.min(5),
        hidden: vec![cfg.hidden; 4],
        batch_size: cfg.batch,
        ..EnsembleConfig::default()
    };
    let mut ens = Ensemble::new(model, cfg.d_in, cfg.d_out, &mut rng, &device);
    let (e, b) = (cfg.members, cfg.batch);
    let batches: Vec<(Vec<f32>, Vec<f32>)> = (0..8)
        .map(|_| {
            (
                normal_noise(&mut rng, e * b * cfg.d_in),
                normal_noise(&mut rng, e * b * cfg.d_out),
            )
        })
        .collect();
    let tensors = |i: usize| {
        let (x, y) = &batches[i % batches.len()];
        (
            Tensor::<3>::from_data(TensorData::new(x.clone(), [e, b, cfg.d_in]), &device),
            Tensor::<3>::from_data(TensorData::new(y.clone(), [e, b, cfg.d_out]), &device),
        )
    };
    for i in 0..5 {
        let (x, y) = tensors(i);
        ens.step(x, y);
    }
    let secs = best_of(cfg.repeats, || {
        for i in 0..cfg.steps {
            let (x, y) = tensors(i);
            ens.step(x, y);
        }
    });
    let train = cfg.steps as f64 / secs;

    let rows = normal_noise(&mut rng, cfg.rows * cfg.d_in);
    let net = ens.net.clone().no_grad();
    let secs = best_of(cfg.repeats, || {
        let mut all = Vec::with_capacity(e * rows.len());
        for _ in 0..e {
            all.extend_from_slice(&rows);
        }
        let x = Tensor::<3>::from_data(TensorData::new(all, [e, cfg.rows, cfg.d_in]), &device);
        let (mean, lv) = net.forward(x);
        let (m, v) = (to_vec(mean), to_vec(lv.exp()));
        std::hint::black_box((m, v));
    });
    let infer = cfg.rows as f64 / secs;
    let reference = match cfg.reference.python(super::default_torch_python) {
        Some(python) => Some(reference(&python, cfg)?),
        None => None,
    };
    Ok(EnsembleBenchResult {
        ours: (train, infer),
        reference,
    })
}

fn reference(
    python: &std::path::Path,
    cfg: &EnsembleBenchConfig,
) -> Result<(f64, f64, String), ReferenceError> {
    let out = run_reference(
        python,
        "ensemble.py",
        &[
            ("--members", cfg.members.to_string()),
            ("--hidden", cfg.hidden.to_string()),
            ("--d-in", cfg.d_in.to_string()),
            ("--d-out", cfg.d_out.to_string()),
            ("--batch", cfg.batch.to_string()),
            ("--steps", cfg.steps.to_string()),
            ("--rows", cfg.rows.to_string()),
            ("--repeats", cfg.repeats.max(1).to_string()),
        ],
    )?;
    Ok((
        out.value("train_steps_per_s")?,
        out.value("infer_rows_per_s")?,
        out.torch(),
    ))
}

/// Prints both stacks per workload, each followed by its `ratio=X` line (ours / PyTorch).
pub fn print_report(
    cfg: &EnsembleBenchConfig,
    r: &EnsembleBenchResult,
    out: &mut impl Write,
) -> std::io::Result<()> {
    writeln!(
        out,
        "ensemble: {} members x 4x{} swish, in {}, out {}",
        cfg.members, cfg.hidden, cfg.d_in, cfg.d_out
    )?;
    let rows = [
        (
            format!("train step (batch {} per member)", cfg.batch),
            "steps/s",
            r.ours.0,
            r.reference.as_ref().map(|x| x.0),
        ),
        (
            format!("inference ({} rows, all members)", cfg.rows),
            "rows/s",
            r.ours.1,
            r.reference.as_ref().map(|x| x.1),
        ),
    ];
    for (name, unit, ours, theirs) in rows {
        writeln!(out, "{name}")?;
        writeln!(out, "  {}: {ours:>12.1} {unit}", super::ours_label())?;
        if let (Some(theirs), Some((_, _, version))) = (theirs, &r.reference) {
            let theirs_label = super::reference_label();
            writeln!(out, "  {theirs_label} ({version}): {theirs:>12.1} {unit}")?;
            writeln!(out, "  ratio={:.3}", ours / theirs)?;
        }
    }
    Ok(())
}
