//! Neural building blocks on burn, shared by every agent: MLP, tanh-squashed Gaussian policy,
//! deterministic policy, twin Q critics, Polyak target updates, entropy temperature.
//!
//! All randomness (initial weights, policy noise) comes from the caller's seeded RNG, never
//! from burn's process-global one, so runs are reproducible and resumable bit for bit.

mod adam;
mod blocks;
mod policy;
mod simd;
mod swish;

pub use blocks::{
    EnsembleLinear, EnsembleMlp, Mlp, QNet, Temperature, TwinQ, all_finite, layer_sizes,
    soft_update,
};
pub use policy::{
    DeterministicPolicy, GaussianPolicy, PolicySample, PolicyStack, TanhPolicy, actor_loss,
    tanh_policies,
};
pub use swish::{exp_non_positive, swish, swish_in_place};

use burn::prelude::*;

/// Environment variable choosing the compute device: `cpu` (default), `wgpu` (wgpu's default
/// adapter) or `wgpu:N` (the N-th discrete GPU wgpu finds, from 0).
pub const DEVICE_ENV_VAR: &str = "MPDP_DEVICE";

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("{DEVICE_ENV_VAR}={0}: expected cpu, wgpu or wgpu:N (N a GPU index: 0, 1, ...)")]
    Unknown(String),
    #[error(
        "{DEVICE_ENV_VAR}={0}, but this binary was built without the `wgpu` feature (cargo build --features wgpu)"
    )]
    NotBuilt(String),
}

/// A device request the binary cannot serve is the user's to change.
impl crate::config::IsUsage for DeviceError {
    fn is_usage(&self) -> bool {
        true
    }
}

/// The compute device a process is asked to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requested {
    Cpu,
    /// A GPU through wgpu: its default adapter, or the discrete GPU with this index.
    Wgpu(Option<usize>),
}

impl Requested {
    /// Parses a `MPDP_DEVICE` value (empty means the CPU).
    pub fn parse(value: &str) -> Result<Self, DeviceError> {
        let unknown = || DeviceError::Unknown(value.to_string());
        let requested = match value {
            "" | "cpu" => Self::Cpu,
            "wgpu" => Self::Wgpu(None),
            other => match other.strip_prefix("wgpu:") {
                Some(index) if !index.is_empty() && index.bytes().all(|b| b.is_ascii_digit()) => {
                    Self::Wgpu(Some(index.parse().map_err(|_| unknown())?))
                }
                _ => return Err(unknown()),
            },
        };
        if requested != Self::Cpu && !cfg!(feature = "wgpu") {
            return Err(DeviceError::NotBuilt(value.to_string()));
        }
        Ok(requested)
    }

    /// The `MPDP_DEVICE` value that asks for this device.
    pub fn env_value(self) -> String {
        match self {
            Self::Cpu => "cpu".into(),
            Self::Wgpu(None) => "wgpu".into(),
            Self::Wgpu(Some(i)) => format!("wgpu:{i}"),
        }
    }
}

/// The device `MPDP_DEVICE` asks for, checked against the features this binary has.
pub fn requested_device() -> Result<Requested, DeviceError> {
    Requested::parse(&std::env::var(DEVICE_ENV_VAR).unwrap_or_default())
}

/// The compute device: burn's `flex` CPU backend by default, a GPU through wgpu when the
/// `wgpu` feature is on and `MPDP_DEVICE` asks for it. Always with autodiff. Check the request
/// first with [`requested_device`]; an invalid one falls back to the CPU here.
pub fn device() -> Device {
    #[cfg(feature = "wgpu")]
    if let Ok(Requested::Wgpu(index)) = requested_device() {
        let kind = index.map_or(DeviceKind::DefaultDevice, DeviceKind::DiscreteGpu);
        return Device::wgpu(kind).autodiff();
    }
    Device::flex().autodiff()
}

/// Adam with PyTorch's defaults (β 0.9, 0.999) and the given ε; one per module. Fused into
/// one pass per parameter on the CPU (`adam::FusedAdam`), with burn's results bit for bit
/// except that moments below f32's normal range are stored as zero (see `adam`).
pub fn adam(epsilon: f64) -> burn::optim::ModuleOptimizer {
    adam::FusedAdam::module_optimizer(epsilon as f32)
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

/// Scales the gradients of `module`'s parameters, whose global L2 norm is `norm`
/// ([`GradSums::norm`]), so that it is at most `max_norm` (PyTorch's `clip_grad_norm_`).
pub fn clip_grad_norm<M: burn::module::Module>(
    grads: &mut burn::optim::GradientsParams,
    module: &M,
    norm: f64,
    max_norm: f64,
) {
    use burn::module::{ModuleVisitor, Param};
    use burn::optim::GradientsParams;
    struct Scale<'a>(&'a mut GradientsParams, f64);
    impl ModuleVisitor for Scale<'_> {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            if let Some(g) = self.0.remove::<D>(p.id) {
                self.0.register(p.id, g.mul_scalar(self.1));
            }
        }
    }
    if norm > max_norm {
        module.visit(&mut Scale(grads, max_norm / (norm + 1e-6)));
    }
}

/// ⟨a, b⟩ of every parameter of a list of modules (their gradients in `a` and `b`; a
/// parameter missing from either is left out), read back from the device at once.
pub struct GradSums(Vec<Vec<f64>>);

impl GradSums {
    pub fn of<M: burn::module::Module>(
        a: &burn::optim::GradientsParams,
        b: &burn::optim::GradientsParams,
        modules: &[M],
    ) -> GradSums {
        use burn::module::{ModuleVisitor, Param};
        use burn::optim::GradientsParams;
        struct Inner<'a>(&'a GradientsParams, &'a GradientsParams, Vec<Tensor<1>>);
        impl ModuleVisitor for Inner<'_> {
            fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
                if let (Some(x), Some(y)) = (self.0.get::<D>(p.id), self.1.get::<D>(p.id)) {
                    self.2.push((x * y).sum());
                }
            }
        }
        let mut counts = Vec::with_capacity(modules.len());
        let mut sums = Vec::new();
        for m in modules {
            let mut v = Inner(a, b, Vec::new());
            m.visit(&mut v);
            counts.push(v.2.len());
            sums.append(&mut v.2);
        }
        let mut values = if sums.is_empty() {
            Vec::new()
        } else {
            to_vec(Tensor::cat(sums, 0))
        }
        .into_iter()
        .map(f64::from);
        GradSums(
            counts
                .iter()
                .map(|&n| values.by_ref().take(n).collect())
                .collect(),
        )
    }

    /// The sum over each module's parameters.
    pub fn per_module(&self) -> Vec<f64> {
        self.0.iter().map(|m| m.iter().sum()).collect()
    }

    /// The sum over every parameter, in visiting order.
    pub fn total(&self) -> f64 {
        self.0.iter().flatten().sum()
    }

    /// With a = b, each module's gradient norm (NaN where a gradient is not finite).
    pub fn norms(&self) -> Vec<f64> {
        self.per_module().into_iter().map(f64::sqrt).collect()
    }

    /// With a = b, the global gradient norm over all the modules.
    pub fn norm(&self) -> f64 {
        self.total().sqrt()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_requests_parse_strictly() {
        assert_eq!(Requested::parse("").unwrap(), Requested::Cpu);
        assert_eq!(Requested::parse("cpu").unwrap(), Requested::Cpu);
        for bad in [
            "gpu", "wgpu:", "wgpu:x", "wgpu:-1", "wgpu:1:2", "CPU", "cuda",
        ] {
            assert!(
                matches!(Requested::parse(bad), Err(DeviceError::Unknown(_))),
                "{bad}"
            );
        }
        for (value, wanted) in [
            ("wgpu", Requested::Wgpu(None)),
            ("wgpu:0", Requested::Wgpu(Some(0))),
            ("wgpu:12", Requested::Wgpu(Some(12))),
        ] {
            match Requested::parse(value) {
                Ok(r) if cfg!(feature = "wgpu") => {
                    assert_eq!(r, wanted);
                    assert_eq!(r.env_value(), value);
                }
                Err(DeviceError::NotBuilt(v)) if !cfg!(feature = "wgpu") => assert_eq!(v, value),
                other => panic!("{value}: {other:?}"),
            }
        }
    }
}
