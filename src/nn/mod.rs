//! Neural building blocks on burn, shared by every agent: MLP, tanh-squashed Gaussian policy,
//! deterministic policy, twin Q critics, Polyak target updates, entropy temperature.
//!
//! All randomness (initial weights, policy noise) comes from the caller's seeded RNG, never
//! from burn's process-global one, so runs are reproducible and resumable bit for bit.

mod blocks;
mod policy;

pub use blocks::{
    EnsembleLinear, EnsembleMlp, Mlp, QNet, Temperature, TwinQ, all_finite, soft_update,
};
pub use policy::{DeterministicPolicy, GaussianPolicy, PolicySample};

use burn::prelude::*;

/// The compute device: burn's `flex` CPU backend by default, a GPU through wgpu when the
/// `wgpu` feature is on and `MPDP_DEVICE=wgpu`. Always with autodiff.
pub fn device() -> Device {
    #[cfg(feature = "wgpu")]
    if std::env::var("MPDP_DEVICE").as_deref() == Ok("wgpu") {
        return Device::wgpu(DeviceKind::DefaultDevice).autodiff();
    }
    Device::flex().autodiff()
}

/// A `[rows, cols]` float tensor from row-major `f32` values.
pub fn tensor2(values: Vec<f32>, rows: usize, cols: usize, device: &Device) -> Tensor<2> {
    Tensor::from_data(TensorData::new(values, [rows, cols]), device)
}

/// Reads a tensor back as `f32` values.
pub fn to_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.try_into_vec_as::<f32>().expect("float tensor")
}

/// The scalar in a one-element tensor.
pub fn scalar<const D: usize>(t: Tensor<D>) -> f32 {
    t.into_scalar::<f32>()
}

/// `n` standard normal draws from `rng`, as `f32`.
pub fn normal_noise<R: rand::Rng>(rng: &mut R, n: usize) -> Vec<f32> {
    use rand::RngExt;
    (0..n)
        .map(|_| rng.sample::<f32, _>(rand_distr::StandardNormal))
        .collect()
}
