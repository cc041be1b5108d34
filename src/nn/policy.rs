//! Policies. Actions live in [-1, 1]^|A|; agents map them affinely onto the env's bounds, so
//! log-probabilities and entropies are those of the normalised actions (as SB3 and MBPO's
//! softlearning do).
use burn::nn::Linear;
use burn::prelude::*;
use burn::tensor::activation::{relu, softplus};
use rand::Rng;

use super::blocks::{Mlp, TwinQ, layer_sizes, linear};

const HALF_LN_2PI: f64 = 0.918_938_533_204_672_7;

/// Tanh-squashed Gaussian policy: u ~ N(μ(s), σ(s)²), a = tanh(u).
///
/// The log-std head is squashed into [log_std_min, log_std_max] with tanh (CleanRL's SAC).
#[derive(Module, Debug)]
pub struct GaussianPolicy {
    trunk: Mlp,
    mean: Linear,
    log_std: Linear,
    log_std_min: f64,
    log_std_max: f64,
}

/// A reparameterised draw: the action and its log-probability `[batch, 1]`.
pub struct PolicySample {
    pub action: Tensor<2>,
    pub log_prob: Tensor<2>,
}

impl GaussianPolicy {
    /// `hidden` = the trunk's layer sizes, e.g. [256, 256].
    pub fn new<R: Rng>(
        obs_dim: usize,
        act_dim: usize,
        hidden: &[usize],
        log_std_range: (f64, f64),
        rng: &mut R,
        device: &Device,
    ) -> Self {
        let sizes: Vec<usize> = std::iter::once(obs_dim)
            .chain(hidden.iter().copied())
            .collect();
        let last = *sizes.last().expect("sizes");
        GaussianPolicy {
            trunk: Mlp::new(&sizes, rng, device),
            mean: linear(last, act_dim, rng, device),
            log_std: linear(last, act_dim, rng, device),
            log_std_min: log_std_range.0,
            log_std_max: log_std_range.1,
        }
    }

    /// Width of the action.
    pub fn act_dim(&self) -> usize {
        self.mean.weight.val().dims()[1]
    }

    fn heads(&self, obs: Tensor<2>) -> (Tensor<2>, Tensor<2>) {
        let h = relu(self.trunk.forward(obs));
        let mean = self.mean.forward(h.clone());
        let squashed = self.log_std.forward(h).tanh();
        let (lo, hi) = (self.log_std_min, self.log_std_max);
        let log_std = (squashed + 1.0).mul_scalar(0.5 * (hi - lo)).add_scalar(lo);
        (mean, log_std)
    }

    /// Reparameterised sample with standard normal noise `eps` `[batch, act_dim]`.
    ///
    /// log π(a|s) = Σ_i [log N(u_i; μ_i, σ_i) − log(1 − tanh²(u_i))], with the exact, stable
    /// form log(1 − tanh²(u)) = 2·(log 2 − u − softplus(−2u)).
    pub fn sample(&self, obs: Tensor<2>, eps: Tensor<2>) -> PolicySample {
        let (mean, log_std) = self.heads(obs);
        let u = mean + log_std.clone().exp() * eps.clone();
        let log_det = (u.clone().neg().add_scalar(std::f64::consts::LN_2)
            - softplus(u.clone().mul_scalar(-2.0), 1.0))
        .mul_scalar(2.0);
        let log_normal = eps.powf_scalar(2.0).mul_scalar(-0.5) - log_std - HALF_LN_2PI;
        PolicySample {
            action: u.tanh(),
            log_prob: (log_normal - log_det).sum_dim(1),
        }
    }

    /// The deterministic action tanh(μ(s)), for evaluation.
    pub fn mean_action(&self, obs: Tensor<2>) -> Tensor<2> {
        self.heads(obs).0.tanh()
    }
}

/// One tanh-Gaussian policy per planning step (MPDP's π_0 … π_{H−1}), optimised as one module.
#[derive(Module, Debug)]
pub struct PolicyStack {
    pub steps: Vec<GaussianPolicy>,
}

impl PolicyStack {
    pub fn new<R: Rng>(
        horizon: usize,
        obs_dim: usize,
        act_dim: usize,
        hidden: &[usize],
        log_std_range: (f64, f64),
        rng: &mut R,
        device: &Device,
    ) -> Self {
        let steps = (0..horizon)
            .map(|_| GaussianPolicy::new(obs_dim, act_dim, hidden, log_std_range, rng, device))
            .collect();
        PolicyStack { steps }
    }

    /// π_0, the policy that acts in the environment.
    pub fn first(&self) -> &GaussianPolicy {
        &self.steps[0]
    }

    /// Makes every π_t (t ≥ 1) a copy of π_0's weights, as parameters of its own (fresh
    /// parameter ids: each keeps its own gradients and optimiser state).
    pub fn copy_first(&mut self) {
        struct Fresh;
        impl burn::module::ModuleMapper for Fresh {
            fn map_float<const D: usize>(
                &mut self,
                p: burn::module::Param<Tensor<D>>,
            ) -> burn::module::Param<Tensor<D>> {
                let require_grad = p.val().is_require_grad();
                burn::module::Param::from_tensor(p.val().detach()).set_require_grad(require_grad)
            }
        }
        let first = self.steps[0].clone();
        for step in self.steps.iter_mut().skip(1) {
            *step = first.clone().map(&mut Fresh);
        }
    }
}

/// Deterministic policy a = tanh(f(s)) (DDPG's actor).
#[derive(Module, Debug)]
pub struct DeterministicPolicy {
    net: Mlp,
}

impl DeterministicPolicy {
    pub fn new<R: Rng>(
        obs_dim: usize,
        act_dim: usize,
        hidden: &[usize],
        rng: &mut R,
        device: &Device,
    ) -> Self {
        let sizes = layer_sizes(obs_dim, hidden, act_dim);
        DeterministicPolicy {
            net: Mlp::new(&sizes, rng, device),
        }
    }

    pub fn forward(&self, obs: Tensor<2>) -> Tensor<2> {
        self.net.forward(obs).tanh()
    }
}

/// POPLIN's policy network: an MLP with tanh between its layers and on its output, whose
/// parameters can also be read and written as one flat vector θ (each layer's weight
/// `[in, out]` row-major, then its bias), which POPLIN-P perturbs.
#[derive(Module, Debug)]
pub struct TanhPolicy {
    layers: Vec<Linear>,
}

impl TanhPolicy {
    pub fn new<R: Rng>(
        obs_dim: usize,
        act_dim: usize,
        hidden: &[usize],
        rng: &mut R,
        device: &Device,
    ) -> Self {
        let sizes = layer_sizes(obs_dim, hidden, act_dim);
        TanhPolicy {
            layers: sizes
                .windows(2)
                .map(|w| linear(w[0], w[1], rng, device))
                .collect(),
        }
    }

    /// `[input, hidden..., output]`.
    pub fn sizes(&self) -> Vec<usize> {
        let mut sizes = vec![self.layers[0].weight.val().dims()[0]];
        sizes.extend(self.layers.iter().map(|l| l.weight.val().dims()[1]));
        sizes
    }

    pub fn forward(&self, obs: Tensor<2>) -> Tensor<2> {
        self.layers.iter().fold(obs, |h, l| l.forward(h).tanh())
    }

    /// Σw² over the weights (not the biases), for an L2 penalty.
    pub fn weights_sq(&self) -> Tensor<1> {
        self.layers
            .iter()
            .map(|l| l.weight.val().powf_scalar(2.0).sum())
            .reduce(|a, b| a + b)
            .expect("at least one layer")
    }

    /// θ on the host.
    pub fn flat(&self) -> Vec<f32> {
        let mut theta = Vec::new();
        for l in &self.layers {
            theta.extend(super::to_vec(l.weight.val().inner()));
            if let Some(b) = &l.bias {
                theta.extend(super::to_vec(b.val().inner()));
            }
        }
        theta
    }

    /// Sets the parameters to θ (keeping their ids, so an optimiser's state still applies).
    pub fn set_flat(&mut self, theta: &[f32]) {
        let mut at = 0;
        let mut take = |n: usize| {
            let v = theta[at..at + n].to_vec();
            at += n;
            v
        };
        for l in &mut self.layers {
            let [i, o] = l.weight.val().dims();
            let w = take(i * o);
            l.weight = l.weight.clone().map(|t| {
                let grad = t.is_require_grad();
                Tensor::from_data(TensorData::new(w, [i, o]), &t.device()).set_require_grad(grad)
            });
            if let Some(b) = l.bias.take() {
                let v = take(o);
                l.bias = Some(b.map(|t| {
                    let grad = t.is_require_grad();
                    Tensor::from_data(TensorData::new(v, [o]), &t.device()).set_require_grad(grad)
                }));
            }
        }
        assert_eq!(at, theta.len(), "θ has the policy's size");
    }
}

/// The policies θ_c of `C` candidates (`thetas`, `C × |θ|` on the host, laid out as
/// [`TanhPolicy::flat`] for layer sizes `sizes`) on their own rows `obs` `[C, rows, in]`:
/// `[C, rows, out]`, as batched matmuls.
pub fn tanh_policies(sizes: &[usize], thetas: &[f32], obs: Tensor<3>) -> Tensor<3> {
    let c = obs.dims()[0];
    let device = obs.device();
    let n: usize = sizes.windows(2).map(|w| w[0] * w[1] + w[1]).sum();
    assert_eq!(thetas.len(), c * n, "one θ per candidate");
    let mut offset = 0;
    let mut h = obs;
    for w in sizes.windows(2) {
        let (i, o) = (w[0], w[1]);
        let mut weight = Vec::with_capacity(c * i * o);
        let mut bias = Vec::with_capacity(c * o);
        for k in 0..c {
            let theta = &thetas[k * n + offset..];
            weight.extend_from_slice(&theta[..i * o]);
            bias.extend_from_slice(&theta[i * o..i * o + o]);
        }
        offset += i * o + o;
        let weight = Tensor::<3>::from_data(TensorData::new(weight, [c, i, o]), &device);
        let bias = Tensor::<3>::from_data(TensorData::new(bias, [c, 1, o]), &device);
        h = (h.matmul(weight) + bias).tanh();
    }
    h
}

/// SAC's policy loss on states `obs` with noise `eps`: mean(α·log π(ã|s) − min_j Q_j(s, ã)),
/// ã = the reparameterised sample. Returns the loss and the sample's log-probabilities.
pub fn actor_loss(
    actor: &GaussianPolicy,
    critic: &TwinQ,
    obs: Tensor<2>,
    eps: Tensor<2>,
    alpha: f64,
) -> (Tensor<1>, Tensor<2>) {
    let pi = actor.sample(obs.clone(), eps);
    let q_pi = critic.min_q(obs, pi.action);
    (
        (pi.log_prob.clone().mul_scalar(alpha) - q_pi).mean(),
        pi.log_prob,
    )
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::Xoshiro256PlusPlus;

    use super::*;
    use crate::nn::{normal_noise, tensor2, to_vec};

    /// θ round-trips through the module, and the batched forward of several θ equals each
    /// policy's own forward.
    #[test]
    fn tanh_policies_match_their_flat_parameters() {
        let device = Device::flex();
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(2);
        let mut a = TanhPolicy::new(3, 2, &[5], &mut rng, &device);
        let b = TanhPolicy::new(3, 2, &[5], &mut rng, &device);
        let obs: Vec<f32> = normal_noise(&mut rng, 4 * 3);
        let thetas = [a.flat(), b.flat()].concat();
        assert_eq!(a.flat().len(), 3 * 5 + 5 + 5 * 2 + 2);
        let x = Tensor::<3>::from_data(
            TensorData::new([obs.clone(), obs.clone()].concat(), [2, 4, 3]),
            &device,
        );
        let both = to_vec(tanh_policies(&a.sizes(), &thetas, x));
        let own = |p: &TanhPolicy| to_vec(p.forward(tensor2(obs.clone(), 4, 3, &device)));
        let expected = [own(&a), own(&b)].concat();
        for (x, y) in both.iter().zip(&expected) {
            assert!((x - y).abs() < 1e-6, "{x} vs {y}");
        }
        a.set_flat(&b.flat());
        assert_eq!(own(&a), own(&b));
    }

    /// The log-probability against a direct f64 computation of the change of variables.
    #[test]
    fn tanh_gaussian_log_prob_is_exact() {
        let device = Device::flex();
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(0);
        let policy = GaussianPolicy::new(3, 2, &[8, 8], (-5.0, 2.0), &mut rng, &device);
        let obs: Vec<f32> = normal_noise(&mut rng, 4 * 3);
        let eps: Vec<f32> = normal_noise(&mut rng, 4 * 2);
        let (mean, log_std) = policy.heads(tensor2(obs.clone(), 4, 3, &device));
        let (mean, log_std) = (to_vec(mean), to_vec(log_std));
        let s = policy.sample(
            tensor2(obs, 4, 3, &device),
            tensor2(eps.clone(), 4, 2, &device),
        );
        let (action, log_prob) = (to_vec(s.action), to_vec(s.log_prob));
        for (row, &lp) in log_prob.iter().enumerate() {
            let mut expected = 0.0f64;
            for j in 0..2 {
                let k = row * 2 + j;
                assert!((-5.0..=2.0).contains(&log_std[k]));
                let (mu, ls, e) = (mean[k] as f64, log_std[k] as f64, eps[k] as f64);
                let u = mu + ls.exp() * e;
                let normal = -0.5 * ((u - mu) / ls.exp()).powi(2)
                    - ls
                    - 0.5 * (2.0 * std::f64::consts::PI).ln();
                expected += normal - (1.0 - u.tanh().powi(2)).ln();
                assert!((action[k] as f64 - u.tanh()).abs() < 1e-6);
            }
            assert!((lp as f64 - expected).abs() < 1e-4, "{lp} vs {expected}");
        }
    }
}
