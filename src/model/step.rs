//! One step of the learned model, the one implementation every user of the model steps
//! with: MBPO's and M2AC's branched rollouts, MPDP's differentiable planner, and the
//! sampling planners. [`FrozenModel::predict`] gives every compared member's Gaussian over
//! `[r, Δs]` for rows of `(s, a)`; [`advance`] picks the member that predicts each row (drawn
//! per row, or fixed per particle), draws from its Gaussian with reparameterised noise, and
//! returns the reward, `s + Δs` and the task's termination of it. Everything is on tensors,
//! so gradients reach the states and actions (the model itself stays fixed); host-side
//! callers pass their rows in and read the results back.
use std::sync::OnceLock;

use burn::prelude::*;
use rand::{Rng, RngExt};

use super::ensemble::{Ensemble, GaussianEnsemble};
use super::host::HostEnsemble;
use super::uncertainty::Reduction;
use crate::env::Task;
use crate::nn::{normal_noise, tensor2, to_vec};

/// A dynamics model the planner can differentiate through: K members' Gaussians over
/// [r, Δs] for rows of (s, a), with gradients into s and a but not into the model.
pub trait DiffModel {
    /// Means and log-variances, `[K, rows, 1 + obs_dim]` each.
    fn predict(&self, obs: Tensor<2>, act: Tensor<2>) -> (Tensor<3>, Tensor<3>);
    /// K: the members u compares.
    fn members(&self) -> usize;
    /// How many of them, first in `predict`'s order, a row's next step may be drawn from.
    fn predicting(&self) -> usize {
        self.members()
    }
    fn obs_dim(&self) -> usize;
    /// Where its tensors live.
    fn device(&self) -> Device;

    /// Each member's Gaussian over `[r, Δs]` for its own rows: `obs` `[K, n, obs_dim]` and
    /// `act` `[K, n, act_dim]`, member k predicting row block k (trajectory sampling, where a
    /// particle is predicted by its member alone). Means and log-variances
    /// `[K, n, 1 + obs_dim]`. This default predicts every row with every member and keeps
    /// each block's own.
    fn predict_own(&self, obs: Tensor<3>, act: Tensor<3>) -> (Tensor<3>, Tensor<3>) {
        let [k, n, o] = obs.dims();
        let a = act.dims()[2];
        let (mean, logvar) = self.predict(obs.reshape([k * n, o]), act.reshape([k * n, a]));
        let d = mean.dims()[2];
        let own = |t: Tensor<3>| {
            Tensor::cat(
                (0..k)
                    .map(|m| t.clone().slice([m..m + 1, m * n..(m + 1) * n, 0..d]))
                    .collect(),
                0,
            )
        };
        (own(mean), own(logvar))
    }

    /// u(s, a) of `rows` pairs given on the host (row-major), on the host.
    fn uncertainty(&self, obs: &[f32], act: &[f32], rows: usize, reduction: Reduction) -> Vec<f32> {
        let device = self.device();
        let a = act.len() / rows.max(1);
        let obs = tensor2(obs.to_vec(), rows, self.obs_dim(), &device);
        let act = tensor2(act.to_vec(), rows, a, &device);
        let (mean, logvar) = self.predict(obs, act);
        to_vec(reduction.apply(mean, logvar).inner())
    }
}

/// Which members' disagreement u measures (docs/algorithms.md, "MPDP: settings the paper
/// leaves open"). A row's next step is drawn
/// from an elite either way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UMembers {
    /// The elites, which also predict (default, as MBPO's rollouts use them).
    #[default]
    Elites,
    /// Every member of the ensemble (MBPO's 7 rather than its 5 elites).
    All,
}

impl UMembers {
    pub fn is_elites(&self) -> bool {
        *self == UMembers::Elites
    }
}

/// Members of a trained ensemble (the elites first) with its input normaliser, as constants
/// on the autodiff device.
pub struct FrozenModel {
    net: GaussianEnsemble,
    /// The same members on the host, for [`DiffModel::predict_own`] on the CPU device
    /// ([`super::host`]); copied there at its first call, so the users that never call it
    /// (MBPO's rollouts, MPDP) copy nothing.
    host: OnceLock<HostEnsemble>,
    on_cpu: bool,
    mean: Tensor<2>,
    std: Tensor<2>,
    members: usize,
    predicting: usize,
    obs_dim: usize,
}

impl FrozenModel {
    /// The current elites of `model` (and, for [`UMembers::All`], the other members after
    /// them), whose inputs are `[obs, act]` with `obs_dim` first.
    pub fn new(model: &Ensemble, obs_dim: usize, members: UMembers) -> Self {
        let (d_in, _) = model.dims();
        let device = model.device();
        let row = |v: &[f64]| {
            let v: Vec<f32> = v.iter().map(|&x| x as f32).collect();
            tensor2(v, 1, d_in, device)
        };
        let mut order = model.elites.clone();
        if members == UMembers::All {
            order.extend((0..model.cfg.members).filter(|m| !model.elites.contains(m)));
        }
        let net = model.net.members(&order);
        let on_cpu = device.clone().without_autodiff() == Device::flex();
        FrozenModel {
            host: OnceLock::new(),
            on_cpu,
            net,
            mean: row(&model.norm.mean),
            std: row(&model.norm.std),
            members: order.len(),
            predicting: model.elites.len(),
            obs_dim,
        }
    }
}

impl DiffModel for FrozenModel {
    fn members(&self) -> usize {
        self.members
    }

    fn predicting(&self) -> usize {
        self.predicting
    }

    fn obs_dim(&self) -> usize {
        self.obs_dim
    }

    fn device(&self) -> Device {
        self.mean.device()
    }

    fn predict(&self, obs: Tensor<2>, act: Tensor<2>) -> (Tensor<3>, Tensor<3>) {
        let x = (Tensor::cat(vec![obs, act], 1) - self.mean.clone()) / self.std.clone();
        let [rows, d] = x.dims();
        // Materialised copies: batched matmul on broadcast inputs is slow.
        let x = x
            .unsqueeze_dim::<3>(0)
            .repeat_dim(0, self.members)
            .reshape([self.members, rows, d]);
        self.net.forward(x)
    }

    /// Each member on its own rows only: no copies of the input, a K-th of the work of
    /// [`DiffModel::predict`].
    fn predict_own(&self, obs: Tensor<3>, act: Tensor<3>) -> (Tensor<3>, Tensor<3>) {
        let device = obs.device();
        let x = Tensor::cat(vec![obs, act], 2);
        if self.on_cpu {
            let host = self.host.get_or_init(|| {
                self.net.to_host(
                    to_vec(self.mean.clone().inner()),
                    to_vec(self.std.clone().inner()),
                )
            });
            let [k, n, _] = x.dims();
            let (mean, logvar) = host.predict_own(&to_vec(x.inner()), n);
            let d = host.d_out();
            let t = |v: Vec<f32>| Tensor::<3>::from_data(TensorData::new(v, [k, n, d]), &device);
            return (t(mean), t(logvar));
        }
        let x =
            (x - self.mean.clone().unsqueeze_dim::<3>(0)) / self.std.clone().unsqueeze_dim::<3>(0);
        self.net.forward(x)
    }
}

/// Which member predicts each row of a step.
#[derive(Debug, Clone, Copy)]
pub enum Members<'a> {
    /// One drawn uniformly from the first `n` members (the predicting ones) for every row at
    /// every step (MBPO's rollouts, MPDP, trajectory sampling TS1).
    Drawn(usize),
    /// The given member for each row (a particle that keeps its member: TS∞).
    Fixed(&'a [usize]),
}

/// What one model step gave.
pub struct Step {
    /// `[rows, 1]`.
    pub reward: Tensor<2>,
    /// `s + Δs`, `[rows, obs_dim]`.
    pub next: Tensor<2>,
    /// `next` on the host, row-major.
    pub next_host: Vec<f32>,
    /// The task's termination function on each row of `next`.
    pub terminal: Vec<bool>,
    /// The member that predicted each row (an index into the compared members).
    pub members: Vec<usize>,
}

/// Moves the rows `s` `[rows, obs_dim]` on with a prediction `(mean, logvar)` of `K`
/// members `[K, rows, 1 + obs_dim]` ([`FrozenModel::predict`]): each row takes the member
/// `members` names, and,
/// when `sample`, a draw `mean + exp(½·logvar)·ε` with ε standard normal from `rng` (else the
/// mean). The member of every row is drawn first, then the noise, row by row.
pub fn advance<R: Rng>(
    mean: Tensor<3>,
    logvar: Tensor<3>,
    s: &Tensor<2>,
    members: Members<'_>,
    sample: bool,
    task: Task,
    rng: &mut R,
) -> Step {
    let [k, rows, d] = mean.dims();
    let o = d - 1;
    let device = s.device();
    let members: Vec<usize> = match members {
        Members::Drawn(n) => (0..rows).map(|_| rng.random_range(0..n)).collect(),
        Members::Fixed(m) => m.to_vec(),
    };
    let mut pick = vec![0.0f32; k * rows];
    for (r, &m) in members.iter().enumerate() {
        pick[m * rows + r] = 1.0;
    }
    let pick = Tensor::<3>::from_data(TensorData::new(pick, [k, rows, 1]), &device);
    let chosen = |t: Tensor<3>| (t * pick.clone()).sum_dim(0).reshape([rows, d]);
    let mut y = chosen(mean);
    if sample {
        let noise = tensor2(normal_noise(rng, rows * d), rows, d, &device);
        y = y + chosen(logvar).mul_scalar(0.5).exp() * noise;
    }
    let reward = y.clone().slice([0..rows, 0..1]);
    let next = s.clone() + y.slice([0..rows, 1..d]);
    let next_host = to_vec(next.clone().inner());
    let terminal = (0..rows)
        .map(|r| task.is_terminal(&next_host[r * o..(r + 1) * o]))
        .collect();
    Step {
        reward,
        next,
        next_host,
        terminal,
        members,
    }
}

/// What one model step of member-grouped rows gave ([`advance_own`]).
pub struct OwnStep {
    /// The sampled rewards, `K · n` on the host (row block k first).
    pub reward: Vec<f32>,
    /// `s + Δs`, `[K, n, obs_dim]`.
    pub next: Tensor<3>,
    /// The task's termination function on each row of `next`.
    pub terminal: Vec<bool>,
    /// Whether every value of the row's prediction is finite.
    pub finite: Vec<bool>,
}

/// [`advance`] for rows grouped by member ([`FrozenModel::predict_own`]): every row draws
/// `mean + exp(½·logvar)·ε` from its own member's Gaussian, ε standard normal from `rng`
/// (row block by row block), or takes the mean when `sample` is false (drawing nothing from
/// `rng`), and moves on to `s + Δs`.
pub fn advance_own<R: Rng>(
    mean: Tensor<3>,
    logvar: Tensor<3>,
    s: Tensor<3>,
    task: Task,
    sample: bool,
    rng: &mut R,
) -> OwnStep {
    let [k, n, d] = mean.dims();
    let o = d - 1;
    let device = s.device();
    let y = if sample {
        let noise = Tensor::<3>::from_data(
            TensorData::new(normal_noise(rng, k * n * d), [k, n, d]),
            &device,
        );
        mean + logvar.mul_scalar(0.5).exp() * noise
    } else {
        mean
    };
    let reward = to_vec(y.clone().slice([0..k, 0..n, 0..1]).inner());
    let next = s + y.slice([0..k, 0..n, 1..d]);
    let host = to_vec(next.clone().inner());
    let finite: Vec<bool> = (0..k * n)
        .map(|r| reward[r].is_finite() && host[r * o..(r + 1) * o].iter().all(|v| v.is_finite()))
        .collect();
    let terminal = (0..k * n)
        .map(|r| task.is_terminal(&host[r * o..(r + 1) * o]))
        .collect();
    OwnStep {
        reward,
        next,
        terminal,
        finite,
    }
}
