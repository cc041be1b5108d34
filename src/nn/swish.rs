//! Swish (SiLU, x·σ(x)) as one fused operation with its own backward, for the model
//! ensemble's hidden layers.
//!
//! burn composes `silu` from `sigmoid` and a product: on the `flex` CPU backend that is a
//! scalar `expf` per element, another pass for the product, and in the backward a second
//! `expf` pass (autodiff recomputes the sigmoid) plus three more passes. Swish is most of the
//! elementwise work of an MBPO-style ensemble, so here it is one pass forward, with an
//! exponential the compiler vectorises (AVX-512 or AVX2 when the CPU has them, picked at run
//! time), and one pass backward that computes no exponential: it recovers σ(x) as y/x from
//! the forward's output y, which the next layer keeps alive anyway. Other devices (wgpu) use
//! burn's `silu`.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn::backend::flex::{FlexTensor, Layout};
use burn::backend::ops::{ActivationOps, FloatTensorOps};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Flex, TensorMetadata, backend_extension};
use burn::prelude::*;
use burn::tensor::{Bytes, DType};

/// Swish of `x`: fused on the CPU backend, burn's `silu` elsewhere.
pub fn swish<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if !fused(&x) {
        return burn::tensor::activation::silu(x);
    }
    Tensor::from_dispatch(<burn::backend::Dispatch as SwishBackend>::swish(
        x.into_dispatch(),
    ))
}

/// eˣ for x ≤ 0, in a form the compiler vectorises (see the kernel's notes).
#[inline(always)]
pub fn exp_non_positive(x: f32) -> f32 {
    kernels::exp_non_positive(x)
}

/// x ← x·σ(x) on a host slice, with the fused operation's vectorised kernel.
pub fn swish_in_place(x: &mut [f32]) {
    kernels::swish_in_place(x);
}

/// Whether [`swish`] runs the fused operation on `x`: f32 on the CPU backend.
fn fused<const D: usize>(x: &Tensor<D>) -> bool {
    x.device().without_autodiff() == Device::flex() && x.dtype() == DType::F32
}

/// The fused operation, as a burn backend extension: `flex` computes it directly, autodiff
/// records one node whose backward is [`SwishBackend::swish_backward`].
#[backend_extension(Flex, Autodiff)]
pub trait SwishBackend: Backend {
    /// x·σ(x).
    fn swish(x: FloatTensor<Self>) -> FloatTensor<Self>;
    /// The gradient with respect to x, given the input x, the output y = x·σ(x) and the
    /// upstream gradient g: g·(σ + y·(1 − σ)), with σ = y/x (½ at x = 0) so that no
    /// exponential is computed again.
    fn swish_backward(
        x: FloatTensor<Self>,
        y: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
}

impl SwishBackend for Flex {
    fn swish(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let x = x.to_contiguous();
        let shape = x.shape();
        let n = shape.num_elements();
        let src = &x.storage::<f32>()[x.layout().start_offset()..][..n];
        let mut out = vec![0.0f32; n];
        kernels::swish(src, &mut out);
        FlexTensor::new(
            Bytes::from_elems(out),
            Layout::contiguous(shape),
            DType::F32,
        )
    }

    fn swish_backward(
        x: FloatTensor<Self>,
        y: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let (x, y) = (x.to_contiguous(), y.to_contiguous());
        // The argument is moved into the block and dropped there, so a contiguous gradient
        // keeps a single owner and can be written in place.
        let mut grad = { grad }.to_contiguous();
        let n = x.shape().num_elements();
        assert_eq!(
            n,
            grad.shape().num_elements(),
            "swish_backward: shapes differ"
        );
        assert_eq!(n, y.shape().num_elements(), "swish_backward: shapes differ");
        let src = &x.storage::<f32>()[x.layout().start_offset()..][..n];
        let out_y = &y.storage::<f32>()[y.layout().start_offset()..][..n];
        let offset = grad.layout().start_offset();
        // In place when the gradient buffer is this tensor's alone (the usual case).
        if let Some(g) = grad.try_storage_mut::<f32>() {
            kernels::swish_grad(src, out_y, &mut g[offset..][..n]);
            return grad;
        }
        let mut out = grad.storage::<f32>()[offset..][..n].to_vec();
        kernels::swish_grad(src, out_y, &mut out);
        FlexTensor::new(
            Bytes::from_elems(out),
            Layout::contiguous(grad.shape()),
            DType::F32,
        )
    }
}

/// The autodiff node: keeps the input and the output (shared references, not copies; the
/// next layer keeps the output alive anyway) for the backward.
#[derive(Debug)]
struct SwishNode;

impl<B: Backend + SwishBackend> Backward<B, 1> for SwishNode {
    type State = (FloatTensor<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (x, y) = ops.state;
        unary::<B, _>(ops.parents, ops.node, grads, |grad| {
            B::swish_backward(x, y, grad)
        });
    }
}

impl<B: Backend + SwishBackend, C: CheckpointStrategy> SwishBackend for Autodiff<B, C> {
    fn swish(x: FloatTensor<Self>) -> FloatTensor<Self> {
        match SwishNode
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let input = x.primitive().clone();
                let output = B::swish(x.into_primitive());
                prep.finish((input, output.clone()), output)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::swish(x.into_primitive())),
        }
    }

    fn swish_backward(
        x: FloatTensor<Self>,
        _y: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        // Only reached by differentiating twice, which nothing here does.
        let s = Self::sigmoid(x.clone());
        let one_minus = Self::float_add_scalar(Self::float_neg(s.clone()), 1.0.into());
        let inner = Self::float_add_scalar(Self::float_mul(x, one_minus), 1.0.into());
        Self::float_mul(grad, Self::float_mul(s, inner))
    }
}

/// Slice kernels, written so the compiler vectorises them: branch-free, no library calls.
mod kernels {
    use crate::nn::simd::dispatch;

    /// y = x·σ(x).
    pub fn swish(x: &[f32], y: &mut [f32]) {
        dispatch!(swish_body(x: &[f32], y: &mut [f32]));
    }

    /// x ← x·σ(x), in place.
    pub fn swish_in_place(x: &mut [f32]) {
        dispatch!(swish_in_place_body(x: &mut [f32]));
    }

    /// g ← g·(σ + y·(1 − σ)) for y = x·σ(x), σ recovered as y/x.
    pub fn swish_grad(x: &[f32], y: &[f32], g: &mut [f32]) {
        dispatch!(swish_grad_body(x: &[f32], y: &[f32], g: &mut [f32]));
    }

    #[inline(always)]
    fn swish_in_place_body(x: &mut [f32]) {
        for x in x.iter_mut() {
            *x *= sigmoid(*x);
        }
    }

    #[inline(always)]
    fn swish_body(x: &[f32], y: &mut [f32]) {
        for (y, &x) in y.iter_mut().zip(x) {
            *y = x * sigmoid(x);
        }
    }

    /// σ = y/x is within an ulp or two of the forward's σ(x) (y is x·σ(x) rounded once),
    /// without a second exponential; at x = 0 it is ½.
    #[inline(always)]
    fn swish_grad_body(x: &[f32], y: &[f32], g: &mut [f32]) {
        for ((g, &x), &y) in g.iter_mut().zip(x).zip(y) {
            let s = if x == 0.0 { 0.5 } else { y / x };
            *g *= s + y * (1.0 - s);
        }
    }

    /// σ(x) from e^−|x| ∈ (0, 1], which never overflows.
    #[inline(always)]
    pub fn sigmoid(x: f32) -> f32 {
        let e = exp_non_positive(-x.abs());
        let r = 1.0 / (1.0 + e);
        if x >= 0.0 { r } else { e * r }
    }

    /// e^x for x ≤ 0: Cody–Waite reduction x = n·ln 2 + r, |r| ≤ ln 2 / 2, a degree-6
    /// polynomial for e^r (Cephes' `expf` coefficients, ~1 ulp), and 2^n from the exponent
    /// bits. Below −87.3 it returns e^−87.3 (~1.2e-38, the smallest normal float) instead
    /// of a subnormal, which σ and swish cannot tell apart from 0.
    #[inline(always)]
    pub fn exp_non_positive(x: f32) -> f32 {
        const LOG2E: f32 = std::f32::consts::LOG2_E;
        const LN2_HI: f32 = 0.693_359_4;
        const LN2_LO: f32 = -2.121_944_4e-4;
        // Adding 1.5·2^23 rounds to the nearest integer without a rounding instruction.
        const ROUND: f32 = 12_582_912.0;
        let x = x.max(-87.3);
        let t = x * LOG2E + ROUND;
        let n = t - ROUND;
        // n, an integer, also sits in t's low mantissa bits: read it from there rather than
        // with `n as i32`, whose saturating conversion does not vectorise.
        let n_int = t.to_bits() as i32 - ROUND.to_bits() as i32;
        let r = x - n * LN2_HI - n * LN2_LO;
        let p = 1.987_569_1e-4;
        let p = p * r + 1.398_199_9e-3;
        let p = p * r + 8.333_452e-3;
        let p = p * r + 4.166_579_6e-2;
        let p = p * r + 1.666_666_5e-1;
        let p = p * r + 0.5;
        let e = p * r * r + r + 1.0;
        // n ∈ [−126, 0]: 2^n is a normal float with biased exponent n + 127.
        let scale = f32::from_bits(((n_int + 127) as u32) << 23);
        e * scale
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::to_vec;
    use burn::tensor::activation::silu;

    fn f64_sigmoid(x: f64) -> f64 {
        1.0 / (1.0 + (-x).exp())
    }

    #[test]
    fn the_exponential_is_within_two_ulp_of_libm() {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x <= 0.0 {
            let (got, want) = (kernels::exp_non_positive(x), x.exp());
            let ulp = (want.to_bits() as i64 - got.to_bits() as i64).abs() as f64;
            worst = worst.max(ulp);
            x += 0.001_37;
        }
        assert!(worst <= 2.0, "worst error {worst} ulp");
        assert_eq!(kernels::exp_non_positive(-1000.0), (-87.3f32).exp());
        assert_eq!(kernels::exp_non_positive(0.0), 1.0);
    }

    #[test]
    fn sigmoid_matches_f64_across_the_range() {
        for i in -20_000..=20_000 {
            let x = i as f32 * 0.005;
            let (got, want) = (kernels::sigmoid(x) as f64, f64_sigmoid(x as f64));
            assert!(
                (got - want).abs() <= 2e-7 * want.max(1e-30) + 1e-37,
                "σ({x}) = {got}, want {want}"
            );
        }
        assert_eq!(kernels::sigmoid(200.0), 1.0);
        assert!(kernels::sigmoid(-200.0) < 1e-37);
    }

    /// The backward's σ = y/x gives the derivative σ + x·σ·(1 − σ) over the whole range, 0
    /// and the clamped tails included, to 2e-6 relative: the rounding of y carries into 1 − σ,
    /// which for 5 < x < 17 is small next to σ, so the error reaches about x·2^−24 there (a
    /// 200-term matmul's own rounding is of that order).
    #[test]
    fn the_gradient_from_the_output_matches_f64_across_the_range() {
        let mut x: Vec<f32> = (-40_000..=40_000).map(|i| i as f32 * 0.0025).collect();
        x.extend([
            -1000.0, -100.0, -87.5, -87.0, 0.0, -0.0, 1e-30, -1e-30, 100.0, 1000.0,
        ]);
        let mut y = vec![0.0f32; x.len()];
        kernels::swish(&x, &mut y);
        let mut g = vec![1.0f32; x.len()];
        kernels::swish_grad(&x, &y, &mut g);
        let mut worst = (0.0f64, 0.0f32);
        for (&x, &got) in x.iter().zip(&g) {
            let s = f64_sigmoid(f64::from(x));
            let want = s + f64::from(x) * s * (1.0 - s);
            let err = (f64::from(got) - want).abs() / want.abs().max(1.0);
            if err > worst.0 {
                worst = (err, x);
            }
        }
        assert!(
            worst.0 <= 2e-6,
            "worst relative error {} at x = {}",
            worst.0,
            worst.1
        );
    }

    /// The fused operation and its gradient against burn's composed `silu` on the same
    /// tensor (odd length, so the vector loops' remainders are covered too).
    #[test]
    fn fused_swish_and_its_gradient_match_burns_silu() {
        let device = Device::flex().autodiff();
        let values: Vec<f32> = (0..1001).map(|i| (i as f32 - 500.0) * 0.023).collect();
        let input = || {
            Tensor::<2>::from_data(TensorData::new(values.clone(), [7, 143]), &device)
                .require_grad()
        };
        let weights = Tensor::<2>::from_data(
            TensorData::new((0..1001).map(|i| (i % 13) as f32 - 6.0).collect(), [7, 143]),
            &device,
        );
        let (a, b) = (input(), input());
        assert!(fused(&a));
        let (ya, yb) = (swish(a.clone()), silu(b.clone()));
        let close = |p: Vec<f32>, q: Vec<f32>, what: &str| {
            for (i, (p, q)) in p.iter().zip(&q).enumerate() {
                assert!(
                    (p - q).abs() <= 1e-6 * q.abs().max(1.0),
                    "{what}[{i}]: {p} vs {q}"
                );
            }
        };
        close(
            to_vec(ya.clone().inner()),
            to_vec(yb.clone().inner()),
            "value",
        );
        let ga = (ya * weights.clone()).sum().backward();
        let gb = (yb * weights).sum().backward();
        close(
            to_vec(a.grad(&ga).unwrap()),
            to_vec(b.grad(&gb).unwrap()),
            "gradient",
        );
    }

    #[test]
    fn without_autodiff_and_on_a_view_it_is_the_same_function() {
        let device = Device::flex();
        let t = Tensor::<2>::from_data(
            TensorData::new((0..60).map(|i| i as f32 * 0.3 - 9.0).collect(), [6, 10]),
            &device,
        );
        // A strided view: a transposed slice.
        let view = t.clone().slice([1..5, 2..9]).transpose();
        assert!(fused(&view));
        let got: Vec<f32> = to_vec(swish(view.clone()));
        let want: Vec<f32> = to_vec(silu(view));
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() <= 1e-6 * w.abs().max(1.0), "{g} vs {w}");
        }
    }
}
