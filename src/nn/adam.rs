//! Adam (Kingma & Ba, 2015) as burn computes it, fused into one pass over each parameter on
//! the CPU.
//!
//! burn's `Adam` runs one tensor operation per term of the update, each reading its operands
//! and most of them writing a freshly allocated tensor: about ten passes over every parameter
//! per step (a profile of an MPDP run on Hopper found a sixth of its samples there).
//! [`FusedAdam`] reads the parameter, its gradient and both moments
//! once, updates them in place, and performs the same IEEE operations on every element in the
//! same order. Its state is burn's `AdamState`, so checkpoints written by either optimiser load
//! into the other. Off the CPU (wgpu) it is burn's `Adam` itself.
//!
//! One deliberate difference: a moment whose magnitude falls below f32's smallest normal
//! number (2⁻¹²⁶ ≈ 1.2e-38) is stored as zero. Parameters that stop receiving gradient (MPDP's
//! later policies when no row reaches them, dead units) see their moments decay geometrically,
//! and the second moment (β₂ = 0.999) spends some 16 000 steps among the subnormal numbers,
//! where every multiplication takes a microcode assist on x86: in an MPDP run on Hopper a
//! quarter of the policies' moments were subnormal and the Adam step took 30% of the run.
//! Flushed, a first moment gives an update of exactly zero where burn's is at most 1.2e-29
//! (for ε ≥ 1e-8 and a learning rate up to 1), far under any parameter's rounding unit, and a
//! second moment's square root, at most 1.1e-19, is under half a rounding unit of ε (for
//! ε ≥ 1e-8), so the denominator is the same float. So the
//! parameters stay burn's bit for bit in practice, and exactly so whenever no moment leaves
//! the normal range; tests hold it to both.

use burn::optim::{
    Adam, AdamConfig, AdamState, AdaptiveMomentumState, LearningRate, ModuleOptimizer, Optimizer,
};
use burn::prelude::*;
use burn::tensor::{DType, TensorData};

/// The first moment's decay (PyTorch's and burn's default).
const BETA_1: f32 = 0.9;
/// The second moment's decay (PyTorch's and burn's default).
const BETA_2: f32 = 0.999;

/// Adam with β (0.9, 0.999), the given ε, no weight decay and no gradient clipping of its own.
#[derive(Clone)]
pub struct FusedAdam {
    epsilon: f32,
    /// burn's Adam with the same settings, for tensors off the CPU.
    tensor_ops: Adam,
}

impl FusedAdam {
    fn new(epsilon: f32) -> Self {
        let tensor_ops = AdamConfig::new()
            .with_beta_1(BETA_1)
            .with_beta_2(BETA_2)
            .with_epsilon(epsilon)
            .build();
        Self {
            epsilon,
            tensor_ops,
        }
    }

    /// The module optimiser that steps every parameter of a module with this Adam.
    pub fn module_optimizer(epsilon: f32) -> ModuleOptimizer {
        ModuleOptimizer::from(Self::new(epsilon))
    }
}

/// Whether the step runs fused: f32 parameters and gradients on the CPU backend.
fn fused<const D: usize>(tensor: &Tensor<D>, grad: &Tensor<D>) -> bool {
    tensor.device().without_autodiff() == Device::flex()
        && tensor.dtype() == DType::F32
        && grad.dtype() == DType::F32
}

fn slice_mut(data: &mut TensorData) -> &mut [f32] {
    data.as_mut_slice::<f32>().expect("an f32 tensor")
}

impl Optimizer for FusedAdam {
    type State<const D: usize> = AdamState<D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<AdamState<D>>,
    ) -> (Tensor<D>, Option<AdamState<D>>) {
        if !fused(&tensor, &grad) {
            return self.tensor_ops.step(lr, tensor, grad, state);
        }
        let device = tensor.device();
        let shape = tensor.shape();
        // Moved out without a copy where a tensor is its buffer's only owner, copied otherwise.
        let mut param = tensor.into_data();
        let grad = grad.into_data();
        let grad = grad.as_slice::<f32>().expect("an f32 gradient");
        let (time, moments) = match state {
            Some(s) => {
                let m = s.momentum;
                (
                    m.time + 1,
                    Some((m.moment_1.into_data(), m.moment_2.into_data())),
                )
            }
            None => (1, None),
        };
        // The scalars as burn forms them, in f32.
        let (f1, f2) = (1.0 - BETA_1, 1.0 - BETA_2);
        let t = time as i32;
        let bias2_sqrt = (1.0 - BETA_2.powi(t)).sqrt();
        let step_factor = bias2_sqrt / (1.0 - BETA_1.powi(t));
        let eps = self.epsilon * bias2_sqrt;
        let lr = lr as f32;
        let p = slice_mut(&mut param);
        assert_eq!(grad.len(), p.len(), "a gradient of another shape");
        let (m1, m2) = match moments {
            Some((mut m1, mut m2)) => {
                let (a, b) = (slice_mut(&mut m1), slice_mut(&mut m2));
                assert!(
                    a.len() == p.len() && b.len() == p.len(),
                    "Adam moments of another shape"
                );
                let scalars = Scalars {
                    f1,
                    f2,
                    step_factor,
                    eps,
                    lr,
                };
                adam_step(p, grad, a, b, scalars);
                (m1, m2)
            }
            None => {
                // The first step starts the moments from the gradient alone (burn adds no
                // decayed zero, which would turn a −0 moment into +0).
                let a: Vec<f32> = grad.iter().map(|&g| flush(g * f1)).collect();
                let b: Vec<f32> = grad.iter().map(|&g| flush((g * g) * f2)).collect();
                for ((p, a), b) in p.iter_mut().zip(&a).zip(&b) {
                    *p -= (a * step_factor) / (b.sqrt() + eps) * lr;
                }
                (
                    TensorData::new(a, shape.clone()),
                    TensorData::new(b, shape.clone()),
                )
            }
        };
        let tensor = |data: TensorData| Tensor::<D>::from_data(data, &device);
        let momentum = AdaptiveMomentumState::new(time, tensor(m1), tensor(m2));
        (tensor(param), Some(AdamState::new(momentum)))
    }

    fn to_device<const D: usize>(state: AdamState<D>, device: &Device) -> AdamState<D> {
        Adam::to_device(state, device)
    }
}

/// The per-step scalars of the update, as burn forms them.
#[derive(Clone, Copy)]
struct Scalars {
    f1: f32,
    f2: f32,
    step_factor: f32,
    eps: f32,
    lr: f32,
}

/// One Adam step on a parameter `p` with gradient `g` and moments `a`, `b` (same lengths),
/// compiled for the widest vector unit the CPU has: the loop is bound by its square root and
/// division, which AVX-512 does sixteen at a time where the baseline build does four.
fn adam_step(p: &mut [f32], g: &[f32], a: &mut [f32], b: &mut [f32], s: Scalars) {
    crate::nn::simd::dispatch!(adam_step_body(
        p: &mut [f32],
        g: &[f32],
        a: &mut [f32],
        b: &mut [f32],
        s: Scalars
    ));
}

#[inline(always)]
fn adam_step_body(p: &mut [f32], g: &[f32], a: &mut [f32], b: &mut [f32], s: Scalars) {
    for (((p, &g), a), b) in p.iter_mut().zip(g).zip(a).zip(b) {
        *a = flush(*a * BETA_1 + g * s.f1);
        *b = flush(*b * BETA_2 + (g * g) * s.f2);
        *p -= (*a * s.step_factor) / (b.sqrt() + s.eps) * s.lr;
    }
}

/// Zero for a magnitude below f32's smallest normal number, else `x`: a select, which runs at
/// full speed on subnormal input where arithmetic does not.
#[inline(always)]
fn flush(x: f32) -> f32 {
    if x.abs() < f32::MIN_POSITIVE { 0.0 } else { x }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::Mlp;
    use burn::module::{Module, ModuleVisitor, Param};
    use burn::optim::GradientsParams;
    use rand::SeedableRng;

    /// Every float parameter of `m`, as bit patterns.
    fn all_bits(m: &Mlp) -> Vec<Vec<u32>> {
        struct Bits(Vec<Vec<u32>>);
        impl ModuleVisitor for Bits {
            fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
                let v = crate::nn::to_vec(p.val());
                self.0.push(v.iter().map(|x| x.to_bits()).collect());
            }
        }
        let mut b = Bits(Vec::new());
        m.visit(&mut b);
        b.0
    }

    /// Gradients of `m` on a loss chosen so that they span many magnitudes, with exact zeros
    /// (a dead input column) and signs of both kinds.
    fn grads(m: &Mlp, device: &Device, scale: f32, step: usize) -> GradientsParams {
        let rows = 5;
        let x: Vec<f32> = (0..rows * 4)
            .map(|i| {
                if i % 4 == 3 {
                    0.0
                } else {
                    ((i * 7 + step * 3) % 11) as f32 * 0.3 - 1.4
                }
            })
            .collect();
        let x = crate::nn::tensor2(x, rows, 4, device);
        let y = m.forward(x);
        let loss = (y.clone() * y).sum().mul_scalar(scale);
        GradientsParams::from_grads(loss.backward(), m)
    }

    /// burn's Adam and the fused one stepped from the same weights over `steps` gradients,
    /// scaled by `scale(step)`: the weights agree bit for bit after every step. Returns both
    /// networks and burn's optimiser.
    fn in_lockstep(
        seed: u64,
        steps: usize,
        scale: impl Fn(usize) -> f32,
    ) -> (Mlp, Mlp, ModuleOptimizer) {
        let device = Device::flex().autodiff();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let start = Mlp::new(&[4, 16, 8, 3], &mut rng, &device);
        let (mut a, mut b) = (start.clone(), start);
        let mut burn_adam = AdamConfig::new()
            .with_beta_1(BETA_1)
            .with_beta_2(BETA_2)
            .with_epsilon(1e-8)
            .init();
        let mut fused_adam = FusedAdam::module_optimizer(1e-8);
        for step in 0..steps {
            let (ga, gb) = (
                grads(&a, &device, scale(step), step),
                grads(&b, &device, scale(step), step),
            );
            a = burn_adam.step(3e-4, a, ga);
            b = fused_adam.step(3e-4, b, gb);
            assert_eq!(
                all_bits(&a),
                all_bits(&b),
                "weights differ after step {step}"
            );
        }
        (a, b, burn_adam)
    }

    /// Twenty steps of both optimisers from the same weights and gradients, with the gradient
    /// scale swept over ten orders of magnitude: every weight agrees bit for bit, and a state
    /// saved by burn's Adam continues identically in the fused one.
    #[test]
    fn the_fused_steps_are_burns_bit_for_bit() {
        let (a, b, mut burn_adam) = in_lockstep(3, 20, |step| 10f32.powi(step as i32 % 10 - 5));
        // The states hold the same moments: written by one, read by the other, the next step
        // agrees too.
        let device = Device::flex().autodiff();
        let record = burn_adam.to_record();
        let mut resumed = FusedAdam::module_optimizer(1e-8).load_record(record);
        let (ga, gb) = (grads(&a, &device, 0.5, 20), grads(&b, &device, 0.5, 20));
        let next_burn = burn_adam.step(3e-4, a, ga);
        let next_fused = resumed.step(3e-4, b, gb);
        assert_eq!(all_bits(&next_burn), all_bits(&next_fused));
    }

    /// Gradients of 1e-14 to 1e-20 for 20 steps and then none for 480 take burn's moments into
    /// the subnormal range (the second at once, the first as it decays): the weights stay
    /// burn's bit for bit.
    #[test]
    fn tiny_gradients_leave_the_weights_burns_bit_for_bit() {
        in_lockstep(11, 500, |step| {
            if step < 20 {
                10f32.powi(-(step as i32 % 4) * 2 - 14)
            } else {
                0.0
            }
        });
    }

    /// burn's update on slices, in burn's order of operations and without the flush.
    fn reference_step(p: &mut [f32], g: &[f32], a: &mut [f32], b: &mut [f32], s: Scalars) {
        for i in 0..p.len() {
            a[i] = a[i] * BETA_1 + g[i] * s.f1;
            b[i] = b[i] * BETA_2 + (g[i] * g[i]) * s.f2;
            p[i] -= (a[i] * s.step_factor) / (b[i].sqrt() + s.eps) * s.lr;
        }
    }

    /// Moments on both sides of the smallest normal number, subnormal ones as a checkpoint of
    /// burn's Adam may hold, and gradients down to 1e-30, stepped 300 times (the first with
    /// these gradients, then none): each moment is the reference's where that is normal or
    /// zero and zero where it is subnormal, none is ever subnormal, and the parameters are the
    /// reference's bit for bit.
    #[test]
    fn moments_below_the_normal_range_are_stored_as_zero() {
        let min = f32::MIN_POSITIVE;
        let starts = [
            1e-3,
            1.3 * min,
            min,
            0.5 * min,
            1e-45,
            0.0,
            -2.0 * min,
            3e-20,
        ];
        let grads = [1e-3, 1e-20, 0.0, -1e-30, 2e-19, 0.0, 5e-38, -1e-21];
        let n = starts.len() * grads.len();
        let mut p: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin() * 0.5).collect();
        let mut a: Vec<f32> = (0..n).map(|i| starts[i % starts.len()]).collect();
        let mut b: Vec<f32> = (0..n)
            .map(|i| starts[(i / 3) % starts.len()].abs())
            .collect();
        let (mut rp, mut ra, mut rb) = (p.clone(), a.clone(), b.clone());
        let mut flushed = [0usize; 2];
        for step in 1..=300 {
            let g: Vec<f32> = if step == 1 {
                (0..n).map(|i| grads[i / starts.len()]).collect()
            } else {
                vec![0.0; n]
            };
            let bias2_sqrt = (1.0 - BETA_2.powi(step)).sqrt();
            let s = Scalars {
                f1: 1.0 - BETA_1,
                f2: 1.0 - BETA_2,
                step_factor: bias2_sqrt / (1.0 - BETA_1.powi(step)),
                eps: 1e-8 * bias2_sqrt,
                lr: 3e-4,
            };
            adam_step(&mut p, &g, &mut a, &mut b, s);
            reference_step(&mut rp, &g, &mut ra, &mut rb, s);
            for (k, (ours, theirs)) in [(&a, &ra), (&b, &rb)].into_iter().enumerate() {
                for (i, (&x, &r)) in ours.iter().zip(theirs.iter()).enumerate() {
                    assert!(!x.is_subnormal(), "moment {k} of {i} subnormal at {step}");
                    if r.is_subnormal() {
                        assert_eq!(x, 0.0, "moment {k} of {i} at {step}");
                        flushed[k] += 1;
                    } else {
                        assert_eq!(x.to_bits(), r.to_bits(), "moment {k} of {i} at {step}");
                    }
                }
            }
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&p), bits(&rp), "parameters differ at step {step}");
        }
        assert!(
            flushed[0] > 0 && flushed[1] > 0,
            "nothing flushed: {flushed:?}"
        );
    }

    /// A parameter whose buffer another tensor shares (a target network's copy) is copied,
    /// not written through: the other tensor keeps its values.
    #[test]
    fn a_shared_parameter_is_left_as_it_was() {
        let device = Device::flex().autodiff();
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let m = Mlp::new(&[4, 8, 2], &mut rng, &device);
        let before = all_bits(&m);
        let held = m.clone();
        let g = grads(&m, &device, 1.0, 0);
        let stepped = FusedAdam::module_optimizer(1e-8).step(1e-2, m, g);
        assert_eq!(all_bits(&held), before);
        assert_ne!(all_bits(&stepped), before);
    }
}
