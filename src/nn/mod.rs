//! Neural building blocks on burn, shared by every agent: MLP, tanh-squashed Gaussian policy,
//! deterministic policy, twin Q critics, Polyak target updates, entropy temperature.
//!
//! All randomness (initial weights, policy noise) comes from the caller's seeded RNG, never
//! from burn's process-global one, so runs are reproducible and resumable bit for bit.

mod blocks;
mod policy;
mod swish;

pub use blocks::{
    EnsembleLinear, EnsembleMlp, Mlp, QNet, Temperature, TwinQ, all_finite, layer_sizes,
    soft_update,
};
pub use policy::{DeterministicPolicy, GaussianPolicy, PolicySample, PolicyStack};
pub use swish::swish;

use burn::prelude::*;

/// Environment variable choosing the compute device: `cpu` (default) or `wgpu`.
pub const DEVICE_ENV_VAR: &str = "MPDP_DEVICE";

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("{DEVICE_ENV_VAR}={0}: expected cpu or wgpu")]
    Unknown(String),
    #[error(
        "{DEVICE_ENV_VAR}=wgpu, but this binary was built without the `wgpu` feature (cargo build --features wgpu)"
    )]
    NotBuilt,
}

/// The device `MPDP_DEVICE` asks for, checked against the features this binary has.
pub fn requested_device() -> Result<&'static str, DeviceError> {
    match std::env::var(DEVICE_ENV_VAR).as_deref() {
        Err(_) | Ok("") | Ok("cpu") => Ok("cpu"),
        Ok("wgpu") if cfg!(feature = "wgpu") => Ok("wgpu"),
        Ok("wgpu") => Err(DeviceError::NotBuilt),
        Ok(other) => Err(DeviceError::Unknown(other.to_string())),
    }
}

/// The compute device: burn's `flex` CPU backend by default, a GPU through wgpu when the
/// `wgpu` feature is on and `MPDP_DEVICE=wgpu`. Always with autodiff. Check the request
/// first with [`requested_device`]; an invalid one falls back to the CPU here.
pub fn device() -> Device {
    #[cfg(feature = "wgpu")]
    if requested_device().ok() == Some("wgpu") {
        return Device::wgpu(DeviceKind::DefaultDevice).autodiff();
    }
    Device::flex().autodiff()
}

/// Adam with PyTorch's defaults (β 0.9, 0.999) and the given ε; one per module.
pub fn adam(epsilon: f64) -> burn::optim::ModuleOptimizer {
    burn::optim::AdamConfig::new()
        .with_epsilon(epsilon as f32)
        .init()
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

/// Scales the gradients of `module`'s parameters so that their global L2 norm is at most
/// `max_norm` (PyTorch's `clip_grad_norm_`); returns the norm before clipping.
pub fn clip_grad_norm<M: burn::module::Module>(
    grads: &mut burn::optim::GradientsParams,
    module: &M,
    max_norm: f64,
) -> f64 {
    use burn::module::{ModuleVisitor, Param};
    use burn::optim::GradientsParams;
    struct Norm<'a>(&'a GradientsParams, f64);
    impl ModuleVisitor for Norm<'_> {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            if let Some(g) = self.0.get::<D>(p.id) {
                self.1 += scalar((g.clone() * g).sum()) as f64;
            }
        }
    }
    struct Scale<'a>(&'a mut GradientsParams, f64);
    impl ModuleVisitor for Scale<'_> {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            if let Some(g) = self.0.remove::<D>(p.id) {
                self.0.register(p.id, g.mul_scalar(self.1));
            }
        }
    }
    let mut n = Norm(grads, 0.0);
    module.visit(&mut n);
    let norm = n.1.sqrt();
    if norm > max_norm {
        module.visit(&mut Scale(grads, max_norm / (norm + 1e-6)));
    }
    norm
}
