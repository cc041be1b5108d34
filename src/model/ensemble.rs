//! The probabilistic dynamics ensemble shared by MBPO, M2AC, MPDP, PETS and POPLIN: `E`
//! Gaussian MLPs computed together as one batched network (`[E, batch, in]` through batched
//! matmuls), predicting mean and bounded log-variance of `[reward, Δobs]` from `[obs, act]`.
//!
//! Training follows MBPO (docs/algorithms.md, "MBPO"): the input normaliser is refit on every call's
//! training split (σ below 1e-12 replaced by 1, in f64); each member sees its own bootstrap
//! of the training split; a hold-out split (20%, at most 5000 rows) picks when to stop (more
//! than `patience` epochs in which no member improved its hold-out MSE by more than 1%) and
//! which weights each member keeps (its own best epoch); the `elites` members with the
//! lowest hold-out MSE predict. The network and its optimiser carry over between calls.
use std::path::Path;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use burn::tensor::activation::softplus;
use rand::seq::SliceRandom;
use rand::{Rng, RngExt};
use serde::{Deserialize, Serialize};

use crate::ckpt::{self, CkptError};
use crate::config::{
    Invalid, count_in, finite, fits, layers, limits, non_negative, positive_counts,
};
use crate::nn::{EnsembleLinear, swish, to_vec};

/// Ensemble settings; defaults are MBPO's (`mbpo/models/constructor.py`, `bnn.py`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EnsembleConfig {
    /// Members (MBPO: 7).
    pub members: usize,
    /// Members that predict (MBPO: 5).
    pub elites: usize,
    /// Hidden layer widths, swish between them (MBPO: 4 × 200; 400 for Humanoid).
    pub hidden: Vec<usize>,
    /// L2 weight decay per layer, hidden layers then output (MBPO: 2.5e-5, 5e-5, 7.5e-5,
    /// 7.5e-5, 1e-4); the penalty is decay · ½Σw². The last value repeats if there are more
    /// layers.
    pub weight_decay: Vec<f64>,
    pub lr: f64,
    pub batch_size: usize,
    /// Fraction of the data held out (MBPO: 0.2), at most `max_holdout` rows (MBPO: 5000).
    pub holdout_ratio: f64,
    pub max_holdout: usize,
    /// Stop after more than this many epochs without a >`improvement` relative gain by any
    /// member (MBPO: 5 and 1%).
    pub patience: usize,
    pub improvement: f64,
    /// Upper bound on epochs per call (MBPO: none).
    pub max_epochs: Option<usize>,
    /// Initial log-variance bounds (MBPO: −10 and 0.5).
    pub min_logvar: f64,
    pub max_logvar: f64,
    /// Learn the bounds with MBPO's 0.01·(Σmax − Σmin) penalty. Off by default: mbrl-lib found
    /// fixed bounds work better.
    pub learn_logvar_bounds: bool,
}

impl Default for EnsembleConfig {
    fn default() -> Self {
        EnsembleConfig {
            members: 7,
            elites: 5,
            hidden: vec![200; 4],
            weight_decay: vec![2.5e-5, 5e-5, 7.5e-5, 7.5e-5, 1e-4],
            lr: 1e-3,
            batch_size: 256,
            holdout_ratio: 0.2,
            max_holdout: 5000,
            patience: 5,
            improvement: 0.01,
            max_epochs: None,
            min_logvar: -10.0,
            max_logvar: 0.5,
            learn_logvar_bounds: false,
        }
    }
}

impl EnsembleConfig {
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.members < 2 {
            return Err(Invalid::new("members", "expected at least 2"));
        }
        count_in("members", self.members, limits::MEMBERS)?;
        if self.elites == 0 || self.elites > self.members {
            return Err(Invalid::new(
                "elites",
                format!(
                    "expected 1..={} (members), found {}",
                    self.members, self.elites
                ),
            ));
        }
        layers("hidden", &self.hidden)?;
        if self.weight_decay.is_empty() {
            return Err(Invalid::new("weight_decay", "expected one or more values"));
        }
        for &d in &self.weight_decay {
            non_negative("weight_decay", d)?;
        }
        non_negative("improvement", self.improvement)?;
        if let Some(n) = self.max_epochs {
            positive_counts(&[("max_epochs", n)])?;
        }
        finite("min_logvar", self.min_logvar)?;
        finite("max_logvar", self.max_logvar)?;
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(Invalid::new("lr", "expected a positive finite number"));
        }
        if !(0.0..1.0).contains(&self.holdout_ratio) {
            return Err(Invalid::new("holdout_ratio", "expected a value in [0, 1)"));
        }
        count_in("batch_size", self.batch_size, limits::BATCH)?;
        let rows = self.batch_size.saturating_mul(self.members);
        fits("hidden", &self.hidden, self.members, rows)?;
        if self.min_logvar >= self.max_logvar {
            return Err(Invalid::new(
                "min_logvar",
                "expected a value below max_logvar",
            ));
        }
        Ok(())
    }

    /// What the one-vs-rest uncertainty (M2AC's masks, MPDP's u) adds: each elite is compared
    /// with the moment-matched rest, so there must be at least 2 elites.
    pub fn validate_for_uncertainty(&self) -> Result<(), Invalid> {
        self.validate()?;
        if self.elites < 2 {
            return Err(Invalid::new(
                "elites",
                format!(
                    "expected at least 2 for the one-vs-rest uncertainty, found {}",
                    self.elites
                ),
            ));
        }
        Ok(())
    }
}

/// The batched network: hidden layers with swish, an output layer giving mean and raw
/// log-variance, and the log-variance bounds.
#[derive(Module, Debug)]
pub struct GaussianEnsemble {
    layers: Vec<EnsembleLinear>,
    max_logvar: Param<Tensor<3>>,
    min_logvar: Param<Tensor<3>>,
}

impl GaussianEnsemble {
    pub fn new<R: Rng>(
        cfg: &EnsembleConfig,
        d_in: usize,
        d_out: usize,
        rng: &mut R,
        device: &Device,
    ) -> Self {
        let sizes: Vec<usize> = std::iter::once(d_in)
            .chain(cfg.hidden.iter().copied())
            .chain(std::iter::once(2 * d_out))
            .collect();
        let layers = sizes
            .windows(2)
            .map(|w| EnsembleLinear::new(cfg.members, w[0], w[1], rng, device))
            .collect();
        let bound = |v: f64| {
            let t = Tensor::<3>::from_data(
                TensorData::new(vec![v as f32; d_out], [1, 1, d_out]),
                device,
            );
            let p = Param::from_tensor(t);
            if cfg.learn_logvar_bounds {
                p
            } else {
                p.set_require_grad(false)
            }
        };
        GaussianEnsemble {
            layers,
            max_logvar: bound(cfg.max_logvar),
            min_logvar: bound(cfg.min_logvar),
        }
    }

    /// Mean and bounded log-variance, each `[E, batch, d_out]`, of normalised inputs
    /// `[E, batch, d_in]`.
    pub fn forward(&self, x: Tensor<3>) -> (Tensor<3>, Tensor<3>) {
        let last = self.layers.len() - 1;
        let h = self.layers.iter().enumerate().fold(x, |h, (i, layer)| {
            let h = layer.forward(h);
            if i < last { swish(h) } else { h }
        });
        let [e, b, two_d] = h.dims();
        let d = two_d / 2;
        let mean = h.clone().slice([0..e, 0..b, 0..d]);
        let raw = h.slice([0..e, 0..b, d..two_d]);
        let (max, min) = (self.max_logvar.val(), self.min_logvar.val());
        let lv = max.clone() - softplus(max - raw, 1.0);
        let lv = min.clone() + softplus(lv - min, 1.0);
        (mean, lv)
    }

    /// The members' weights on the host, for [`super::host::HostEnsemble`], with the input
    /// standardisation `(mean, std)`.
    pub fn to_host(&self, mean: Vec<f32>, std: Vec<f32>) -> super::host::HostEnsemble {
        let members = self.layers[0].weight().dims()[0];
        let layers = self
            .layers
            .iter()
            .map(|l| (to_vec(l.weight().inner()), to_vec(l.bias().inner())))
            .collect();
        let bounds = (
            to_vec(self.max_logvar.val().inner()),
            to_vec(self.min_logvar.val().inner()),
        );
        super::host::HostEnsemble::new(members, layers, mean, std, bounds)
    }

    /// A copy holding only the members `idx` (in that order), as constants: no gradient
    /// reaches these weights, but gradients still flow through them into the inputs.
    pub fn members(&self, idx: &[usize]) -> GaussianEnsemble {
        struct Pick {
            idx: Vec<i64>,
            members: usize,
        }
        impl ModuleMapper for Pick {
            fn map_float<const D: usize>(&mut self, p: Param<Tensor<D>>) -> Param<Tensor<D>> {
                let members = self.members;
                let idx = self.idx.clone();
                p.map(|t| {
                    let t = t.inner();
                    let t = if D == 3 && t.dims()[0] == members {
                        let k = idx.len();
                        let i = Tensor::<1, Int>::from_data(TensorData::new(idx, [k]), &t.device());
                        t.select(0, i)
                    } else {
                        t
                    };
                    Tensor::from_inner(t)
                })
            }
        }
        let members = self.layers[0].weight().dims()[0];
        let mut pick = Pick {
            idx: idx.iter().map(|&i| i as i64).collect(),
            members,
        };
        self.clone().map(&mut pick).no_grad()
    }

    /// Σ_l decay_l · ½ Σ w_l² over the layers' weights.
    fn decay_penalty(&self, decay: &[f64]) -> Tensor<1> {
        self.layers
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let d = decay[i.min(decay.len() - 1)];
                l.weight().powf_scalar(2.0).sum().mul_scalar(0.5 * d)
            })
            .reduce(|a, b| a + b)
            .expect("at least one layer")
    }

    fn bounds_penalty(&self) -> Tensor<1> {
        (self.max_logvar.val().sum() - self.min_logvar.val().sum()).mul_scalar(0.01)
    }
}

/// Input standardisation, fit in f64 on each training split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Normaliser {
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
}

impl Normaliser {
    pub fn identity(dim: usize) -> Self {
        Normaliser {
            mean: vec![0.0; dim],
            std: vec![1.0; dim],
        }
    }

    /// Fits mean and std of the `rows` of `data` (row-major, `dim` wide); a σ below 1e-12
    /// becomes 1 (MBPO's guard: a constant input is left unscaled).
    pub fn fit(data: &[f32], dim: usize, rows: &[usize]) -> Self {
        let n = rows.len().max(1) as f64;
        let mut mean = vec![0.0; dim];
        for &r in rows {
            for (m, &x) in mean.iter_mut().zip(&data[r * dim..(r + 1) * dim]) {
                *m += x as f64;
            }
        }
        mean.iter_mut().for_each(|m| *m /= n);
        let mut var = vec![0.0; dim];
        for &r in rows {
            for ((v, &x), m) in var.iter_mut().zip(&data[r * dim..(r + 1) * dim]).zip(&mean) {
                *v += (x as f64 - m).powi(2);
            }
        }
        let std = var
            .iter()
            .map(|v| {
                let s = (v / n).sqrt();
                if s < 1e-12 { 1.0 } else { s }
            })
            .collect();
        Normaliser { mean, std }
    }

    /// Appends the normalised row `x` to `out`.
    pub fn push(&self, x: &[f32], out: &mut Vec<f32>) {
        out.extend(
            x.iter()
                .zip(self.mean.iter().zip(&self.std))
                .map(|(&v, (m, s))| ((v as f64 - m) / s) as f32),
        );
    }
}

/// Early stopping across members: who improved this epoch, and when to stop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EarlyStop {
    pub best: Vec<f64>,
    pub epochs_since_update: usize,
    patience: usize,
    improvement: f64,
}

impl EarlyStop {
    pub fn new(members: usize, patience: usize, improvement: f64) -> Self {
        EarlyStop {
            best: vec![f64::INFINITY; members],
            epochs_since_update: 0,
            patience,
            improvement,
        }
    }

    /// Records an epoch's hold-out losses; returns the members that improved on their best
    /// by more than the relative `improvement` (their weights should be kept).
    pub fn update(&mut self, losses: &[f64]) -> Vec<usize> {
        let improved: Vec<usize> = losses
            .iter()
            .zip(&self.best)
            .enumerate()
            .filter(|(_, (l, b))| {
                l.is_finite() && (b.is_infinite() || (*b - *l) / b.abs() > self.improvement)
            })
            .map(|(i, _)| i)
            .collect();
        for &i in &improved {
            self.best[i] = losses[i];
        }
        if improved.is_empty() {
            self.epochs_since_update += 1;
        } else {
            self.epochs_since_update = 0;
        }
        improved
    }

    /// More than `patience` epochs passed without any member improving.
    pub fn done(&self) -> bool {
        self.epochs_since_update > self.patience
    }
}

/// The `k` members with the lowest losses, best first.
pub fn elites(losses: &[f64], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..losses.len()).collect();
    idx.sort_by(|&a, &b| losses[a].total_cmp(&losses[b]));
    idx.truncate(k);
    idx
}

/// Host copies of every parameter (values and shape), in visiting order.
fn host_params<M: Module>(m: &M) -> Vec<(Vec<f32>, Vec<usize>)> {
    struct Collect(Vec<(Vec<f32>, Vec<usize>)>);
    impl ModuleVisitor for Collect {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            let t = p.val();
            let shape = t.dims().to_vec();
            self.0.push((to_vec(t), shape));
        }
    }
    let mut c = Collect(Vec::new());
    m.visit(&mut c);
    c.0
}

/// `m` with its parameters replaced by host values (same order as [`host_params`]).
fn set_params<M: Module>(m: M, values: &[(Vec<f32>, Vec<usize>)]) -> M {
    struct Set<'a>(std::slice::Iter<'a, (Vec<f32>, Vec<usize>)>);
    impl ModuleMapper for Set<'_> {
        fn map_float<const D: usize>(&mut self, p: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let (v, shape) = self.0.next().expect("same module structure");
            p.map(|t| {
                let active = t.is_require_grad();
                let device = t.device();
                let n = Tensor::<D>::from_data(TensorData::new(v.clone(), shape.clone()), &device);
                if active { n.require_grad() } else { n }
            })
        }
    }
    m.map(&mut Set(values.iter()))
}

/// What a training call did.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainReport {
    pub epochs: usize,
    /// Hold-out MSE of each member's kept weights.
    pub holdout_mse: Vec<f64>,
    /// Mean training NLL (per element, incl. the log-variance term) of the last epoch.
    pub train_nll: f64,
    pub elites: Vec<usize>,
    /// Wall seconds the call took.
    pub seconds: f64,
}

/// The ensemble with its normaliser, optimiser and elites.
pub struct Ensemble {
    pub cfg: EnsembleConfig,
    pub net: GaussianEnsemble,
    opt: ModuleOptimizer,
    pub norm: Normaliser,
    pub elites: Vec<usize>,
    d_in: usize,
    d_out: usize,
    device: Device,
}

impl Ensemble {
    pub fn new<R: Rng>(
        cfg: EnsembleConfig,
        d_in: usize,
        d_out: usize,
        rng: &mut R,
        device: &Device,
    ) -> Self {
        let net = GaussianEnsemble::new(&cfg, d_in, d_out, rng, device);
        Ensemble {
            elites: (0..cfg.elites).collect(),
            opt: crate::nn::adam(1e-8),
            norm: Normaliser::identity(d_in),
            net,
            cfg,
            d_in,
            d_out,
            device: device.clone(),
        }
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn dims(&self) -> (usize, usize) {
        (self.d_in, self.d_out)
    }

    /// Normalised `[E, rows, d_in]` tensor with every member seeing `rows` of `inputs`.
    fn shared_input(&self, inputs: &[f32], rows: &[usize]) -> Tensor<3> {
        let e = self.cfg.members;
        let mut one = Vec::with_capacity(rows.len() * self.d_in);
        for &r in rows {
            self.norm
                .push(&inputs[r * self.d_in..(r + 1) * self.d_in], &mut one);
        }
        let mut all = Vec::with_capacity(e * one.len());
        for _ in 0..e {
            all.extend_from_slice(&one);
        }
        Tensor::from_data(
            TensorData::new(all, [e, rows.len(), self.d_in]),
            &self.device,
        )
    }

    /// Per-member MSE of the means on `rows`.
    fn mse(&self, inputs: &[f32], targets: &[f32], rows: &[usize]) -> Vec<f64> {
        let e = self.cfg.members;
        let x = self.shared_input(inputs, rows);
        let mut y = Vec::with_capacity(e * rows.len() * self.d_out);
        for _ in 0..e {
            for &r in rows {
                y.extend_from_slice(&targets[r * self.d_out..(r + 1) * self.d_out]);
            }
        }
        let y = Tensor::<3>::from_data(
            TensorData::new(y, [e, rows.len(), self.d_out]),
            &self.device,
        );
        let (mean, _) = self.net.clone().no_grad().forward(x);
        let se = (mean - y)
            .powf_scalar(2.0)
            .mean_dim(2)
            .mean_dim(1)
            .reshape([e]);
        to_vec(se).into_iter().map(f64::from).collect()
    }

    /// Trains on all `n` rows of `inputs` (`n × d_in`) and `targets` (`n × d_out`).
    ///
    /// `interrupted` is asked before every epoch. Once it answers true the call gives up:
    /// the network, optimiser, normaliser and elites are put back as they were, and it returns
    /// `None` (only `rng` has moved on). A fit on a large buffer takes minutes, so this is
    /// what lets a stop signal end a run promptly.
    pub fn train<R: Rng>(
        &mut self,
        inputs: &[f32],
        targets: &[f32],
        rng: &mut R,
        interrupted: &dyn Fn() -> bool,
    ) -> Option<TrainReport> {
        let (e, cfg) = (self.cfg.members, self.cfg.clone());
        let started = std::time::Instant::now();
        // Cheap: burn tensors are shared handles, and an update writes new ones.
        let before = (
            self.net.clone(),
            self.opt.clone(),
            self.norm.clone(),
            self.elites.clone(),
        );
        let n = inputs.len() / self.d_in;
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(rng);
        let n_hold = ((n as f64 * cfg.holdout_ratio) as usize)
            .min(cfg.max_holdout)
            .min(n.saturating_sub(1));
        let (hold, train) = order.split_at(n_hold);
        self.norm = Normaliser::fit(inputs, self.d_in, train);
        let mut boot: Vec<Vec<usize>> = (0..e)
            .map(|_| {
                (0..train.len())
                    .map(|_| train[rng.random_range(0..train.len())])
                    .collect()
            })
            .collect();
        let mut stop = EarlyStop::new(e, cfg.patience, cfg.improvement);
        let mut best = host_params(&self.net);
        let member_len = |shape: &[usize]| shape[1..].iter().product::<usize>();
        let mut epochs = 0;
        let mut train_nll: f64;
        let batches = train.len().div_ceil(cfg.batch_size);
        loop {
            if interrupted() {
                (self.net, self.opt, self.norm, self.elites) = before;
                return None;
            }
            epochs += 1;
            let (mut nll_sum, mut nll_n) = (0.0, 0usize);
            for b in boot.iter_mut() {
                b.shuffle(rng);
            }
            for k in 0..batches {
                let lo = k * cfg.batch_size;
                let hi = (lo + cfg.batch_size).min(train.len());
                let bs = hi - lo;
                let mut x = Vec::with_capacity(e * bs * self.d_in);
                let mut y = Vec::with_capacity(e * bs * self.d_out);
                for member in &boot {
                    for &r in &member[lo..hi] {
                        self.norm
                            .push(&inputs[r * self.d_in..(r + 1) * self.d_in], &mut x);
                        y.extend_from_slice(&targets[r * self.d_out..(r + 1) * self.d_out]);
                    }
                }
                let x =
                    Tensor::<3>::from_data(TensorData::new(x, [e, bs, self.d_in]), &self.device);
                let y =
                    Tensor::<3>::from_data(TensorData::new(y, [e, bs, self.d_out]), &self.device);
                nll_sum += self.step(x, y);
                nll_n += 1;
            }
            train_nll = nll_sum / nll_n.max(1) as f64;
            let losses = if hold.is_empty() {
                self.mse(inputs, targets, train)
            } else {
                self.mse(inputs, targets, hold)
            };
            let improved = stop.update(&losses);
            if !improved.is_empty() {
                let now = host_params(&self.net);
                for (b, (c, shape)) in best.iter_mut().zip(&now) {
                    if shape.first() != Some(&e) {
                        b.0.clone_from(c);
                        continue;
                    }
                    let len = member_len(shape);
                    for &i in &improved {
                        b.0[i * len..(i + 1) * len].copy_from_slice(&c[i * len..(i + 1) * len]);
                    }
                }
            }
            if stop.done() || cfg.max_epochs.is_some_and(|m| epochs >= m) {
                break;
            }
        }
        self.net = set_params(self.net.clone(), &best);
        self.elites = elites(&stop.best, cfg.elites);
        Some(TrainReport {
            epochs,
            holdout_mse: stop.best.clone(),
            train_nll,
            elites: self.elites.clone(),
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    /// One gradient step on normalised inputs `x` `[E, batch, d_in]` and targets `y`
    /// `[E, batch, d_out]`: the members' summed Gaussian NLL, the weight decay and (when
    /// learned) the log-variance bound penalty. Returns the mean NLL per element.
    pub fn step(&mut self, x: Tensor<3>, y: Tensor<3>) -> f64 {
        let (e, cfg) = (self.cfg.members, &self.cfg);
        let (mean, lv) = self.net.forward(x);
        let nll = ((mean - y).powf_scalar(2.0) * lv.clone().neg().exp() + lv).mean();
        let value = crate::nn::scalar(nll.clone().inner()) as f64;
        let mut loss = nll.mul_scalar(e as f64) + self.net.decay_penalty(&cfg.weight_decay);
        if cfg.learn_logvar_bounds {
            loss = loss + self.net.bounds_penalty();
        }
        let grads = GradientsParams::from_grads(loss.backward(), &self.net);
        self.net = self.opt.step(cfg.lr, self.net.clone(), grads);
        value
    }

    /// Every member's mean and variance for `rows` inputs (`rows × d_in`, unnormalised), on
    /// the host: `[E][rows × d_out]` each.
    pub fn predict(&self, inputs: &[f32]) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
        let rows = inputs.len() / self.d_in;
        let all: Vec<usize> = (0..rows).collect();
        let x = self.shared_input(inputs, &all);
        let (mean, lv) = self.net.clone().no_grad().forward(x);
        let split = |t: Tensor<3>| -> Vec<Vec<f32>> {
            to_vec(t)
                .chunks(rows * self.d_out)
                .map(|c| c.to_vec())
                .collect()
        };
        (split(mean), split(lv.exp()))
    }

    pub fn save(&self, dir: &Path) -> Result<(), CkptError> {
        ckpt::save_module(dir, "ensemble", &self.net)?;
        ckpt::save_optimizer(dir, "ensemble_adam", &self.opt)?;
        ckpt::write_json(dir, "ensemble.json", &(&self.norm, &self.elites))
    }

    pub fn load(&mut self, dir: &Path) -> Result<(), CkptError> {
        self.net = ckpt::load_module(dir, "ensemble", &self.net)?;
        self.opt = ckpt::load_optimizer(dir, "ensemble_adam", 1e-8)?;
        (self.norm, self.elites) = ckpt::read_json(dir, "ensemble.json")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::Xoshiro256PlusPlus;

    /// Regression: NaN and infinite fit settings passed validation (`improvement = nan`
    /// never stops early; `max_logvar = inf` unbounds the variance).
    #[test]
    fn non_finite_fit_settings_are_refused_by_name() {
        let key = |f: fn(&mut EnsembleConfig)| {
            let mut c = EnsembleConfig::default();
            f(&mut c);
            c.validate()
                .map(|_| ())
                .map_err(|e| e.key.unwrap_or_default())
        };
        assert_eq!(key(|_| {}), Ok(()));
        assert_eq!(key(|c| c.improvement = f64::NAN), Err("improvement".into()));
        assert_eq!(key(|c| c.improvement = -5.0), Err("improvement".into()));
        assert_eq!(key(|c| c.min_logvar = f64::NAN), Err("min_logvar".into()));
        assert_eq!(
            key(|c| c.max_logvar = f64::INFINITY),
            Err("max_logvar".into())
        );
        assert_eq!(
            key(|c| c.weight_decay = vec![f64::INFINITY]),
            Err("weight_decay".into())
        );
        assert_eq!(key(|c| c.max_epochs = Some(0)), Err("max_epochs".into()));
    }

    #[test]
    fn early_stopping_counts_epochs_without_a_one_percent_gain() {
        let mut s = EarlyStop::new(2, 2, 0.01);
        assert_eq!(s.update(&[1.0, 2.0]), vec![0, 1]);
        // 0.995 is only 0.5% better than 1.0: not an improvement; member 1 improves 10%.
        assert_eq!(s.update(&[0.995, 1.8]), vec![1]);
        assert_eq!(s.best, vec![1.0, 1.8]);
        assert_eq!(s.update(&[0.999, 1.79]), Vec::<usize>::new());
        assert_eq!(s.update(&[0.999, 1.79]), Vec::<usize>::new());
        // Two epochs without a gain: not more than patience = 2 yet.
        assert!(!s.done());
        assert_eq!(s.update(&[1.2, 1.9]), Vec::<usize>::new());
        assert!(s.done());
        // A NaN loss never counts as a gain.
        let mut t = EarlyStop::new(1, 0, 0.01);
        assert!(t.update(&[f64::NAN]).is_empty());
    }

    #[test]
    fn elites_are_the_lowest_losses_best_first() {
        assert_eq!(elites(&[0.5, 0.1, 0.9, 0.3, 0.2], 3), vec![1, 4, 3]);
        assert_eq!(elites(&[2.0, 1.0], 5), vec![1, 0]);
    }

    #[test]
    fn the_normaliser_guards_constant_inputs() {
        let data = [1.0f32, 5.0, 3.0, 5.0];
        let n = Normaliser::fit(&data, 2, &[0, 1]);
        assert_eq!(n.mean, vec![2.0, 5.0]);
        assert_eq!(n.std, vec![1.0, 1.0]);
        let mut out = Vec::new();
        n.push(&[4.0, 6.0], &mut out);
        assert_eq!(out, vec![2.0, 1.0]);
    }

    /// A fit that is interrupted puts everything back: the same fit made again gives what an
    /// uninterrupted fit gives (weights, optimiser moments, normaliser, elites).
    #[test]
    fn an_interrupted_fit_leaves_the_ensemble_as_it_was() {
        let device = crate::nn::device();
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(9);
        let cfg = EnsembleConfig {
            members: 3,
            elites: 2,
            hidden: vec![16],
            batch_size: 32,
            max_epochs: Some(12),
            ..EnsembleConfig::default()
        };
        let x: Vec<f32> = (0..400).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        let y: Vec<f32> = x.iter().map(|v| 3.0 * v).collect();
        let fresh = || {
            let mut init = Xoshiro256PlusPlus::seed_from_u64(1);
            Ensemble::new(cfg.clone(), 2, 2, &mut init, &device)
        };
        let (mut whole, mut cut) = (fresh(), fresh());
        // Two fits each, so the second starts from the first's optimiser state.
        for _ in 0..2 {
            whole.train(&x, &y, &mut rng.clone(), &|| false).unwrap();
            let asked = std::cell::Cell::new(0);
            let stop_in_epoch_4 = || {
                asked.set(asked.get() + 1);
                asked.get() > 3
            };
            assert!(
                cut.train(&x, &y, &mut rng.clone(), &stop_in_epoch_4)
                    .is_none()
            );
            assert_eq!(asked.get(), 4);
            cut.train(&x, &y, &mut rng.clone(), &|| false).unwrap();
            assert_eq!(cut.predict(&[0.3, -0.2]), whole.predict(&[0.3, -0.2]));
            assert_eq!((&cut.elites, &cut.norm), (&whole.elites, &whole.norm));
            rng.next_u64();
        }
    }

    /// y = [x0 + 2 x1, sin(x0)] + small noise: a small ensemble fits it, stops early on its
    /// own, keeps every member's best weights, and round-trips through a checkpoint.
    #[test]
    fn an_ensemble_learns_a_smooth_function_and_survives_a_checkpoint() {
        let device = crate::nn::device();
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(5);
        let cfg = EnsembleConfig {
            members: 3,
            elites: 2,
            hidden: vec![32, 32],
            batch_size: 64,
            max_epochs: Some(60),
            ..EnsembleConfig::default()
        };
        let n = 1200;
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for _ in 0..n {
            let (a, b) = (
                rng.random_range(-2.0f32..2.0),
                rng.random_range(-2.0f32..2.0),
            );
            x.extend([a, b]);
            let noise: f32 = rng.random_range(-0.05..0.05);
            y.extend([a + 2.0 * b + noise, a.sin() + noise]);
        }
        let mut ens = Ensemble::new(cfg, 2, 2, &mut rng, &device);
        let before = ens.mse(&x, &y, &(0..n).collect::<Vec<_>>());
        let report = ens.train(&x, &y, &mut rng, &|| false).unwrap();
        assert_eq!(report.elites.len(), 2);
        let after = ens.mse(&x, &y, &(0..n).collect::<Vec<_>>());
        let var_y = 5.0 * 4.0 / 3.0;
        assert!(before.iter().all(|m| *m > 0.3 * var_y), "{before:?}");
        for (i, m) in after.iter().enumerate() {
            assert!(
                *m < 0.05,
                "member {i}: mse {m} after {} epochs",
                report.epochs
            );
        }
        // The kept weights are the best epoch's: their hold-out MSE is what was recorded.
        assert!(report.holdout_mse.iter().all(|m| *m < 0.05), "{report:?}");
        let (mean, var) = ens.predict(&[1.0, 0.5]);
        assert_eq!((mean.len(), mean[0].len()), (3, 2));
        assert!((mean[report.elites[0]][0] - 2.0).abs() < 0.2, "{mean:?}");
        assert!(
            var.iter().flatten().all(|v| *v > 0.0 && *v < 1.0),
            "{var:?}"
        );

        let dir = std::env::temp_dir().join(format!("mpdp-ensemble-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        ens.save(&dir).unwrap();
        let mut other = Ensemble::new(ens.cfg.clone(), 2, 2, &mut rng, &device);
        other.load(&dir).unwrap();
        assert_eq!(other.predict(&[1.0, 0.5]), ens.predict(&[1.0, 0.5]));
        assert_eq!(other.elites, ens.elites);
        assert_eq!(other.norm, ens.norm);
        std::fs::remove_dir_all(&dir).ok();
    }
}
