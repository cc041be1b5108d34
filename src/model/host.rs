//! The ensemble's forward pass on the host, for the sampling planners on the CPU: each member
//! on its own rows (trajectory sampling), in blocks of rows small enough to stay in cache,
//! with the bias added by the GEMM itself and swish applied in place by the vectorised
//! kernel. Through burn the same pass writes each hidden layer of the whole batch to memory
//! three times (product, bias, swish), and the elementwise passes cost as much as the
//! matmuls (`mpdp bench cem`). Inference only: no gradients.
use rayon::prelude::*;

use crate::nn::{exp_non_positive, swish_in_place};

/// Rows per block: a 200-wide hidden layer of 128 rows is 100 KB.
const BLOCK: usize = 128;

/// One layer of every member: weights `[K, in, out]` and biases `[K, out]`, row-major.
struct Layer {
    weight: Vec<f32>,
    bias: Vec<f32>,
    d_in: usize,
    d_out: usize,
}

/// K members' Gaussians over `[r, Δs]`, with the input standardisation and the
/// log-variance bounds, as host arrays.
pub struct HostEnsemble {
    layers: Vec<Layer>,
    in_mean: Vec<f32>,
    in_std: Vec<f32>,
    max_logvar: Vec<f32>,
    min_logvar: Vec<f32>,
    members: usize,
}

impl HostEnsemble {
    /// `layers`: per layer, weights `[K, in, out]` and biases `[K, out]`; `bounds`: the
    /// log-variance bounds (max, min), one per output.
    pub fn new(
        members: usize,
        layers: Vec<(Vec<f32>, Vec<f32>)>,
        in_mean: Vec<f32>,
        in_std: Vec<f32>,
        bounds: (Vec<f32>, Vec<f32>),
    ) -> Self {
        let mut d_in = in_mean.len();
        let layers = layers
            .into_iter()
            .map(|(weight, bias)| {
                let d_out = bias.len() / members;
                assert_eq!(weight.len(), members * d_in * d_out, "weights [K, in, out]");
                let layer = Layer {
                    weight,
                    bias,
                    d_in,
                    d_out,
                };
                d_in = d_out;
                layer
            })
            .collect();
        HostEnsemble {
            layers,
            in_mean,
            in_std,
            max_logvar: bounds.0,
            min_logvar: bounds.1,
            members,
        }
    }

    /// Width of the output: 1 + obs_dim.
    pub fn d_out(&self) -> usize {
        self.max_logvar.len()
    }

    /// Member k on its own `n` rows of `x` (`[K, n, d_in]`, unstandardised, row-major):
    /// means and bounded log-variances, `[K, n, d_out]` each.
    pub fn predict_own(&self, x: &[f32], n: usize) -> (Vec<f32>, Vec<f32>) {
        let (k, d_in, d) = (self.members, self.in_mean.len(), self.d_out());
        assert_eq!(x.len(), k * n * d_in, "inputs [K, n, d_in]");
        let mut mean = vec![0.0f32; k * n * d];
        let mut logvar = vec![0.0f32; k * n * d];
        let blocks = n.div_ceil(BLOCK);
        let jobs: Vec<(usize, usize)> = (0..k)
            .flat_map(|m| (0..blocks).map(move |b| (m, b)))
            .collect();
        let results: Vec<(usize, usize, Vec<f32>)> = jobs
            .into_par_iter()
            .map(|(m, b)| {
                let (r0, r1) = (b * BLOCK, ((b + 1) * BLOCK).min(n));
                let rows = &x[(m * n + r0) * d_in..(m * n + r1) * d_in];
                (m, r0, self.block(m, rows, r1 - r0))
            })
            .collect();
        for (m, r0, out) in results {
            let rows = out.len() / (2 * d);
            for r in 0..rows {
                let at = (m * n + r0 + r) * d;
                let o = &out[r * 2 * d..(r + 1) * 2 * d];
                mean[at..at + d].copy_from_slice(&o[..d]);
                for j in 0..d {
                    let (hi, lo) = (self.max_logvar[j], self.min_logvar[j]);
                    let lv = hi - softplus(hi - o[d + j]);
                    logvar[at + j] = lo + softplus(lv - lo);
                }
            }
        }
        (mean, logvar)
    }

    /// Member `m`'s network on `rows` rows: the last layer's output `[rows, 2·d_out]`.
    fn block(&self, m: usize, x: &[f32], rows: usize) -> Vec<f32> {
        let d_in = self.in_mean.len();
        let mut h: Vec<f32> = x
            .chunks(d_in)
            .flat_map(|row| {
                row.iter()
                    .zip(self.in_mean.iter().zip(&self.in_std))
                    .map(|(v, (mu, sd))| (v - mu) / sd)
            })
            .collect();
        let last = self.layers.len() - 1;
        for (i, l) in self.layers.iter().enumerate() {
            let bias = &l.bias[m * l.d_out..(m + 1) * l.d_out];
            let mut out = Vec::with_capacity(rows * l.d_out);
            for _ in 0..rows {
                out.extend_from_slice(bias);
            }
            let w = &l.weight[m * l.d_in * l.d_out..(m + 1) * l.d_in * l.d_out];
            // SAFETY: out is rows × d_out, h rows × d_in and w d_in × d_out, all row-major
            // and contiguous; the strides below say exactly that.
            unsafe {
                gemm::gemm(
                    rows,
                    l.d_out,
                    l.d_in,
                    out.as_mut_ptr(),
                    1,
                    l.d_out as isize,
                    true,
                    h.as_ptr(),
                    1,
                    l.d_in as isize,
                    w.as_ptr(),
                    1,
                    l.d_out as isize,
                    1.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
            if i < last {
                swish_in_place(&mut out);
            }
            h = out;
        }
        h
    }
}

/// log(1 + eˣ) = max(x, 0) + ln(1 + e^−|x|), without overflow and without library calls (so
/// that it vectorises): ln(1 + e) for e ∈ (0, 1] as 2·atanh(z), z = e/(2 + e) ≤ 1/3, by its
/// odd series to z¹³ (the next term is below 2⁻²⁴ relative).
#[inline(always)]
fn softplus(x: f32) -> f32 {
    let e = exp_non_positive(-x.abs());
    let z = e / (2.0 + e);
    let z2 = z * z;
    let series = 1.0
        + z2 * (1.0 / 3.0
            + z2 * (1.0 / 5.0
                + z2 * (1.0 / 7.0 + z2 * (1.0 / 9.0 + z2 * (1.0 / 11.0 + z2 / 13.0)))));
    x.max(0.0) + 2.0 * z * series
}

#[cfg(test)]
mod tests {
    use burn::prelude::*;

    #[test]
    fn softplus_matches_libm() {
        for i in -4000..=4000 {
            let x = i as f32 * 0.01;
            let want = f64::from(x).exp().ln_1p();
            let got = f64::from(super::softplus(x));
            assert!(
                (got - want).abs() <= 3e-7 * want.max(1e-3),
                "{x}: {got} vs {want}"
            );
        }
        assert_eq!(super::softplus(200.0), 200.0);
        assert!(super::softplus(-200.0) < 1e-30);
    }
    use rand::SeedableRng;
    use rand::rngs::Xoshiro256PlusPlus;

    use crate::model::step::{DiffModel, FrozenModel, UMembers};
    use crate::model::{Ensemble, EnsembleConfig};
    use crate::nn::{normal_noise, to_vec};

    /// The host pass (blocks, fused bias and swish) gives what the tensor pass gives, rows
    /// past a block boundary and a ragged last block included.
    #[test]
    fn the_host_pass_matches_the_tensor_pass() {
        let device = Device::flex().autodiff();
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(5);
        let cfg = EnsembleConfig {
            members: 4,
            elites: 3,
            hidden: vec![24, 24],
            ..EnsembleConfig::default()
        };
        let (o, a) = (5, 2);
        let mut model = Ensemble::new(cfg, o + a, 1 + o, &mut rng, &device);
        model.norm.mean = (0..o + a).map(|i| 0.1 * i as f64).collect();
        model.norm.std = (0..o + a).map(|i| 0.5 + 0.2 * i as f64).collect();
        let frozen = FrozenModel::new(&model, o, UMembers::Elites);
        let (k, n) = (3, 300);
        let obs = Tensor::<3>::from_data(
            TensorData::new(normal_noise(&mut rng, k * n * o), [k, n, o]),
            &device,
        );
        let act = Tensor::<3>::from_data(
            TensorData::new(normal_noise(&mut rng, k * n * a), [k, n, a]),
            &device,
        );
        /// The tensor pass: every member on every row, each block's own kept.
        struct Tensors<'a>(&'a FrozenModel);
        impl DiffModel for Tensors<'_> {
            fn predict(&self, obs: Tensor<2>, act: Tensor<2>) -> (Tensor<3>, Tensor<3>) {
                self.0.predict(obs, act)
            }
            fn members(&self) -> usize {
                self.0.members()
            }
            fn obs_dim(&self) -> usize {
                self.0.obs_dim()
            }
            fn device(&self) -> Device {
                self.0.device()
            }
        }
        let (m1, v1) = frozen.predict_own(obs.clone(), act.clone());
        let (m2, v2) = Tensors(&frozen).predict_own(obs, act);
        for (x, y) in [(m1, m2), (v1, v2)] {
            let (x, y) = (to_vec(x.inner()), to_vec(y.inner()));
            assert_eq!(x.len(), k * n * (1 + o));
            for (p, q) in x.iter().zip(&y) {
                assert!((p - q).abs() <= 1e-4 * (1.0 + q.abs()), "{p} vs {q}");
            }
        }
    }
}
