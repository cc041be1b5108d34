//! MLP, twin Q critics, entropy temperature and Polyak averaging.
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::nn::Linear;
use burn::prelude::*;
use burn::tensor::activation::relu;
use rand::{Rng, RngExt};

/// A linear layer initialised as PyTorch's `nn.Linear`: weight and bias ~ U(±1/√fan_in),
/// drawn from `rng`.
pub(crate) fn linear<R: Rng>(d_in: usize, d_out: usize, rng: &mut R, device: &Device) -> Linear {
    let bound = 1.0 / (d_in as f32).sqrt();
    let mut draw =
        |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-bound..bound)).collect() };
    let weight = draw(d_in * d_out);
    let bias = draw(d_out);
    Linear {
        weight: Param::from_data(TensorData::new(weight, [d_in, d_out]), device),
        bias: Some(Param::from_data(TensorData::new(bias, [d_out]), device)),
    }
}

/// Fully connected network with ReLU between layers and a linear output.
#[derive(Module, Debug)]
pub struct Mlp {
    layers: Vec<Linear>,
}

impl Mlp {
    /// `sizes` = [input, hidden..., output].
    pub fn new<R: Rng>(sizes: &[usize], rng: &mut R, device: &Device) -> Self {
        assert!(sizes.len() >= 2, "an MLP needs input and output sizes");
        let layers = sizes
            .windows(2)
            .map(|w| linear(w[0], w[1], rng, device))
            .collect();
        Mlp { layers }
    }

    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        relu_between(&self.layers, x, Linear::forward)
    }
}

/// Applies `layers` in turn with ReLU between them (not after the last).
fn relu_between<L, const D: usize>(
    layers: &[L],
    x: Tensor<D>,
    forward: impl Fn(&L, Tensor<D>) -> Tensor<D>,
) -> Tensor<D> {
    let last = layers.len() - 1;
    layers.iter().enumerate().fold(x, |h, (i, layer)| {
        let h = forward(layer, h);
        if i < last { relu(h) } else { h }
    })
}

/// Layer sizes `[input, hidden..., output]`.
pub fn layer_sizes(input: usize, hidden: &[usize], output: usize) -> Vec<usize> {
    std::iter::once(input)
        .chain(hidden.iter().copied())
        .chain(std::iter::once(output))
        .collect()
}

/// A Q network Q(s, a) = f([s, a]).
#[derive(Module, Debug)]
pub struct QNet {
    net: Mlp,
}

impl QNet {
    pub fn new<R: Rng>(
        obs_dim: usize,
        act_dim: usize,
        hidden: &[usize],
        rng: &mut R,
        device: &Device,
    ) -> Self {
        let sizes = layer_sizes(obs_dim + act_dim, hidden, 1);
        QNet {
            net: Mlp::new(&sizes, rng, device),
        }
    }

    /// Q values `[batch, 1]`.
    pub fn forward(&self, obs: Tensor<2>, act: Tensor<2>) -> Tensor<2> {
        self.net.forward(Tensor::cat(vec![obs, act], 1))
    }
}

/// `E` independent linear layers applied together as one batched matmul:
/// `[E, batch, in] → [E, batch, out]`. Each member is initialised as PyTorch's `nn.Linear`.
#[derive(Module, Debug)]
pub struct EnsembleLinear {
    weight: Param<Tensor<3>>,
    bias: Param<Tensor<3>>,
}

impl EnsembleLinear {
    pub fn new<R: Rng>(
        members: usize,
        d_in: usize,
        d_out: usize,
        rng: &mut R,
        device: &Device,
    ) -> Self {
        let bound = 1.0 / (d_in as f32).sqrt();
        let mut draw =
            |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-bound..bound)).collect() };
        let weight = draw(members * d_in * d_out);
        let bias = draw(members * d_out);
        EnsembleLinear {
            weight: Param::from_data(TensorData::new(weight, [members, d_in, d_out]), device),
            bias: Param::from_data(TensorData::new(bias, [members, 1, d_out]), device),
        }
    }

    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        x.matmul(self.weight.val()) + self.bias.val()
    }

    /// The weights, `[E, in, out]`.
    pub fn weight(&self) -> Tensor<3> {
        self.weight.val()
    }

    /// The biases, `[E, 1, out]`.
    pub fn bias(&self) -> Tensor<3> {
        self.bias.val()
    }
}

/// `E` MLPs of the same shape evaluated together (ReLU between layers, linear output).
#[derive(Module, Debug)]
pub struct EnsembleMlp {
    layers: Vec<EnsembleLinear>,
}

impl EnsembleMlp {
    /// `sizes` = [input, hidden..., output].
    pub fn new<R: Rng>(members: usize, sizes: &[usize], rng: &mut R, device: &Device) -> Self {
        assert!(sizes.len() >= 2, "an MLP needs input and output sizes");
        let layers = sizes
            .windows(2)
            .map(|w| EnsembleLinear::new(members, w[0], w[1], rng, device))
            .collect();
        EnsembleMlp { layers }
    }

    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        relu_between(&self.layers, x, EnsembleLinear::forward)
    }
}

/// Two independent Q networks (clipped double-Q), evaluated as one 2-member ensemble.
#[derive(Module, Debug)]
pub struct TwinQ {
    net: EnsembleMlp,
}

impl TwinQ {
    pub fn new<R: Rng>(
        obs_dim: usize,
        act_dim: usize,
        hidden: &[usize],
        rng: &mut R,
        device: &Device,
    ) -> Self {
        let sizes = layer_sizes(obs_dim + act_dim, hidden, 1);
        TwinQ {
            net: EnsembleMlp::new(2, &sizes, rng, device),
        }
    }

    /// Both Q values, each `[batch, 1]`.
    pub fn forward(&self, obs: Tensor<2>, act: Tensor<2>) -> (Tensor<2>, Tensor<2>) {
        let x = Tensor::cat(vec![obs, act], 1);
        let [batch, width] = x.dims();
        // Materialised (not broadcast) copies: batched matmul on expanded inputs is slow.
        let x = x.unsqueeze_dim::<3>(0).repeat_dim(0, 2);
        let q = self.net.forward(x.reshape([2, batch, width]));
        let q1 = q.clone().slice([0..1, 0..batch, 0..1]).reshape([batch, 1]);
        let q2 = q.slice([1..2, 0..batch, 0..1]).reshape([batch, 1]);
        (q1, q2)
    }

    /// min(Q1, Q2), `[batch, 1]`.
    pub fn min_q(&self, obs: Tensor<2>, act: Tensor<2>) -> Tensor<2> {
        let (q1, q2) = self.forward(obs, act);
        q1.min_pair(q2)
    }
}

/// The SAC entropy temperature α, learned as log α.
#[derive(Module, Debug)]
pub struct Temperature {
    log_alpha: Param<Tensor<1>>,
}

impl Temperature {
    pub fn new(initial_alpha: f64, device: &Device) -> Self {
        Temperature {
            log_alpha: Param::from_data(
                TensorData::new(vec![initial_alpha.ln() as f32], [1]),
                device,
            ),
        }
    }

    pub fn log_alpha(&self) -> Tensor<1> {
        self.log_alpha.val()
    }

    /// α = exp(log α), read outside the autodiff graph: a tracked `exp` that no backward pass
    /// consumes would stay in the graph, and with a fixed α those nodes pile up one per
    /// update and slow every later backward pass.
    pub fn alpha(&self) -> f32 {
        self.log_alpha.val().inner().exp().into_scalar::<f32>()
    }
}

/// Polyak averaging: returns `target ← τ·online + (1−τ)·target`, parameter by parameter.
/// Both modules must have the same architecture.
pub fn soft_update<M: Module>(online: &M, target: M, tau: f64) -> M {
    struct Collect(Vec<Tensor<1>>);
    impl ModuleVisitor for Collect {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            let t = p.val().inner();
            let n = t.shape().num_elements();
            self.0.push(t.reshape([n]));
        }
    }
    struct Blend {
        src: std::vec::IntoIter<Tensor<1>>,
        tau: f64,
    }
    impl ModuleMapper for Blend {
        fn map_float<const D: usize>(&mut self, p: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let s = self
                .src
                .next()
                .expect("soft_update: modules differ in structure");
            let tau = self.tau;
            p.map(|t| {
                let s: Tensor<D> = s.reshape(t.shape());
                t.mul_scalar(1.0 - tau) + s.mul_scalar(tau)
            })
        }
    }
    let mut c = Collect(Vec::new());
    online.visit(&mut c);
    target.map(&mut Blend {
        src: c.0.into_iter(),
        tau,
    })
}

/// Whether every parameter of `module` is finite (the divergence guard).
pub fn all_finite<M: Module>(module: &M) -> bool {
    struct Check(bool);
    impl ModuleVisitor for Check {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            if self.0 {
                let t = p.val().inner();
                let n = t.shape().num_elements();
                // NaN or ±inf anywhere makes the sum non-finite.
                self.0 = t.reshape([n]).abs().sum().into_scalar::<f32>().is_finite();
            }
        }
    }
    let mut c = Check(true);
    module.visit(&mut c);
    c.0
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::Xoshiro256PlusPlus;

    use super::*;
    use crate::nn::{normal_noise, tensor2, to_vec};

    /// Each ensemble member is an independent layer: the batched forward equals member-wise
    /// matrix products computed by hand.
    #[test]
    fn ensemble_members_are_independent_layers() {
        let device = Device::flex();
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
        let (e, b, i, o) = (3, 4, 5, 2);
        let layer = EnsembleLinear::new(e, i, o, &mut rng, &device);
        let x = normal_noise(&mut rng, e * b * i);
        let y = to_vec(layer.forward(Tensor::from_data(
            TensorData::new(x.clone(), [e, b, i]),
            &device,
        )));
        let w = to_vec(layer.weight.val());
        let bias = to_vec(layer.bias.val());
        for m in 0..e {
            for r in 0..b {
                for c in 0..o {
                    let dot: f32 = (0..i)
                        .map(|k| x[(m * b + r) * i + k] * w[(m * i + k) * o + c])
                        .sum();
                    let got = y[(m * b + r) * o + c];
                    assert!(
                        (got - dot - bias[m * o + c]).abs() < 1e-5,
                        "member {m} row {r} col {c}"
                    );
                }
            }
        }
    }

    #[test]
    fn twin_q_heads_differ_and_min_is_elementwise() {
        let device = Device::flex();
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(2);
        let q = TwinQ::new(3, 2, &[16, 16], &mut rng, &device);
        let obs = tensor2(normal_noise(&mut rng, 8 * 3), 8, 3, &device);
        let act = tensor2(normal_noise(&mut rng, 8 * 2), 8, 2, &device);
        let (q1, q2) = q.forward(obs.clone(), act.clone());
        let (q1, q2) = (to_vec(q1), to_vec(q2));
        assert_eq!(q1.len(), 8);
        assert_ne!(q1, q2);
        let min = to_vec(q.min_q(obs, act));
        for k in 0..8 {
            assert_eq!(min[k], q1[k].min(q2[k]));
        }
    }
}
