//! POPLIN (Wang & Ba 2020; docs/algorithms.md, "PETS and POPLIN"): PETS's planner started from
//! a policy network, and the plans distilled back into the policy. The planner is the shared
//! one ([`super::mpc`]); what differs is what CEM searches over.
//!
//! ```text
//! POPLIN-A (`poplin_a`), CEM over action residuals δ ∈ R^{H·|A|}:
//!     INIT:   a_t = clip(â_t + δ_t), â the policy rolled through the model's mean from s₀
//!     REPLAN: a_t = clip(π(s_t) + δ_t) on every particle's own state s_t
//! POPLIN-P (`poplin_p`), CEM over perturbations δ of the policy's weights θ:
//!     SEP: a_t = π_{θ+δ_t}(s_t), δ ∈ R^{H·|θ|};   UNI: a_t = π_{θ+δ}(s_t), δ ∈ R^{|θ|}
//! act: the first action of CEM's final mean; warm start: the last solution shifted (SEP and
//!      the residuals) or kept (UNI)
//! after every model fit, distil:
//!     BC:  π ← behaviour cloning on the (state, planned action) pairs of the real steps
//!     AVG: θ ← θ + mean of the first-step perturbations the planner chose since the last fit
//!     then restart the warm starts at zero (the plans were relative to the old policy)
//! ```
use std::path::Path;

use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use rand::rngs::Xoshiro256PlusPlus;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use super::mpc::{MpcAgent, MpcConfig, Prepared, Proposer};
use super::registry::{Algorithm, Setting, Workload};
use super::{Agent, AgentError, Stats};
use crate::ckpt;
use crate::config::{
    Invalid, Validate, count_in, fits, layers, limits, non_negative, positive_counts,
};
use crate::model::Ensemble;
use crate::model::step::DiffModel;
use crate::nn::{TanhPolicy, scalar, tanh_policies, tensor2, to_vec};
use crate::planning::cem::CemConfig;
use crate::planning::mpc::Search;
use crate::planning::particles::{Actions, Layout, Sequences};
use crate::replay::ReplayBuffer;

/// POPLIN-A's search: residuals of the policy's actions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionVariant {
    /// The policy, rolled through the model once, proposes the sequence CEM starts around
    /// (POPLIN-A-INIT; the paper's demo).
    #[default]
    Init,
    /// The policy is queried again on every particle's state at every step (POPLIN-A-REPLAN).
    Replan,
}

/// POPLIN-P's search: perturbations of the policy's weights.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamVariant {
    /// A perturbation per planning step (POPLIN-P-SEP; the paper's demo).
    #[default]
    Sep,
    /// One perturbation for the whole horizon (POPLIN-P-UNI).
    Uni,
}

/// How POPLIN-P's plans reach the policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Distill {
    /// θ moves by the mean of the chosen first-step perturbations (POPLIN's AVG-R; the demo).
    #[default]
    Avg,
    /// Behaviour cloning on the planned actions, as POPLIN-A.
    Bc,
}

/// The policy network and its behaviour cloning; defaults are POPLIN's
/// (`policy_network/*.py`: shape [64, 64], 100 epochs, lr 3e-3, minibatch 64, weight decay
/// 1e-5).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// Hidden layer widths, tanh between them and on the output.
    pub hidden: Vec<usize>,
    pub lr: f64,
    /// Passes over the planned pairs per distillation.
    pub epochs: usize,
    pub batch_size: usize,
    /// L2 penalty decay · ½Σw² on the weights.
    pub weight_decay: f64,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            hidden: vec![64, 64],
            lr: 3e-3,
            epochs: 100,
            batch_size: 64,
            weight_decay: 1e-5,
        }
    }
}

impl PolicyConfig {
    fn validate(&self) -> Result<(), Invalid> {
        layers("hidden", &self.hidden)?;
        positive_counts(&[("epochs", self.epochs), ("batch_size", self.batch_size)])?;
        count_in("epochs", self.epochs, limits::HORIZON)?;
        count_in("batch_size", self.batch_size, limits::BATCH)?;
        fits("hidden", &self.hidden, 1, self.batch_size)?;
        crate::config::positive("lr", self.lr)?;
        non_negative("weight_decay", self.weight_decay)
    }
}

/// POPLIN-A's settings: the planner's (PETS's defaults), the variant and the policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PoplinAConfig {
    pub planner: MpcConfig,
    pub variant: ActionVariant,
    pub policy: PolicyConfig,
}

impl Default for PoplinAConfig {
    fn default() -> Self {
        PoplinAConfig {
            planner: MpcConfig::default(),
            variant: ActionVariant::Init,
            policy: PolicyConfig::default(),
        }
    }
}

impl Validate for PoplinAConfig {
    fn validate(&self) -> Result<(), Invalid> {
        self.planner.validate().map_err(|e| e.within("planner"))?;
        self.policy.validate().map_err(|e| e.within("policy"))
    }
}

/// POPLIN-P's settings: the planner's with the perturbations' initial variance 0.1, the
/// variant, the distillation and a [32] policy (the demo's `policy_network_shape`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PoplinPConfig {
    pub planner: MpcConfig,
    pub variant: ParamVariant,
    pub distill: Distill,
    pub policy: PolicyConfig,
}

impl Default for PoplinPConfig {
    fn default() -> Self {
        PoplinPConfig {
            planner: MpcConfig {
                cem: CemConfig {
                    init_variance: 0.1,
                    ..CemConfig::default()
                },
                ..MpcConfig::default()
            },
            variant: ParamVariant::Sep,
            distill: Distill::Avg,
            policy: PolicyConfig {
                hidden: vec![32],
                ..PolicyConfig::default()
            },
        }
    }
}

impl Validate for PoplinPConfig {
    fn validate(&self) -> Result<(), Invalid> {
        self.planner.validate().map_err(|e| e.within("planner"))?;
        self.policy.validate().map_err(|e| e.within("policy"))
    }
}

/// The policy network with its input standardisation (the model's, refit with it) and its
/// behaviour cloning.
struct Policy {
    net: TanhPolicy,
    opt: ModuleOptimizer,
    cfg: PolicyConfig,
    state: PolicyState,
    device: Device,
}

/// The policy's saved host state.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PolicyState {
    /// Input mean and standard deviation.
    mean: Vec<f32>,
    std: Vec<f32>,
    /// POPLIN-P's AVG: the sum of the chosen first-step perturbations since the last fit,
    /// and how many were added.
    chosen: Vec<f32>,
    chosen_count: usize,
    /// Real transitions planned so far (behaviour cloning's data: the newest of them).
    planned: usize,
}

impl Policy {
    fn new(
        cfg: PolicyConfig,
        obs_dim: usize,
        act_dim: usize,
        rng: &mut Xoshiro256PlusPlus,
        device: &Device,
    ) -> Self {
        Policy {
            net: TanhPolicy::new(obs_dim, act_dim, &cfg.hidden, rng, device),
            opt: crate::nn::adam(1e-8),
            cfg,
            state: PolicyState {
                mean: vec![0.0; obs_dim],
                std: vec![1.0; obs_dim],
                chosen: Vec::new(),
                chosen_count: 0,
                planned: 0,
            },
            device: device.clone(),
        }
    }

    fn obs_dim(&self) -> usize {
        self.state.mean.len()
    }

    /// Standardised inputs `[.., obs_dim]` (any rank).
    fn standardise<const D: usize>(&self, obs: Tensor<D>) -> Tensor<D> {
        let o = self.obs_dim();
        let device = obs.device();
        let row = |v: &[f32]| {
            let mut shape = [1usize; D];
            shape[D - 1] = o;
            Tensor::<D>::from_data(TensorData::new(v.to_vec(), shape), &device)
        };
        (obs - row(&self.state.mean)) / row(&self.state.std)
    }

    /// The policy on states, with gradients into its weights (behaviour cloning).
    fn forward(&self, obs: Tensor<2>) -> Tensor<2> {
        self.net.forward(self.standardise(obs))
    }

    /// The policy on states, as a constant (planning).
    fn forward_fixed(&self, obs: Tensor<2>) -> Tensor<2> {
        self.net.clone().no_grad().forward(self.standardise(obs))
    }

    /// The policy's actions for `rows` states on the host.
    fn act(&self, obs: &[f32], rows: usize) -> Vec<f32> {
        let x = tensor2(obs.to_vec(), rows, self.obs_dim(), &self.device);
        to_vec(self.forward_fixed(x).inner())
    }

    /// Takes the model's input standardisation (its state part).
    fn standardise_as(&mut self, model: &Ensemble) {
        let o = self.obs_dim();
        self.state.mean = model.norm.mean[..o].iter().map(|&x| x as f32).collect();
        self.state.std = model.norm.std[..o].iter().map(|&x| x as f32).collect();
    }

    /// Behaviour cloning onto the planned actions of the real transitions planned so far
    /// (the newest ones): `epochs` shuffled passes of minibatch Adam on the mean squared
    /// error plus the weight decay. Returns the last epoch's mean loss.
    fn clone_plans(
        &mut self,
        real: &ReplayBuffer,
        rng: &mut Xoshiro256PlusPlus,
    ) -> Result<Option<f64>, AgentError> {
        let rows = real.recent(self.state.planned);
        if rows.is_empty() {
            return Ok(None);
        }
        let (o, a) = (real.obs_dim(), real.act_dim());
        let cols = real.columns();
        let mut order = rows;
        let mut last = 0.0;
        for _ in 0..self.cfg.epochs {
            order.shuffle(rng);
            let (mut sum, mut batches) = (0.0, 0);
            for chunk in order.chunks(self.cfg.batch_size) {
                let n = chunk.len();
                let obs: Vec<f32> = chunk
                    .iter()
                    .flat_map(|&i| cols.obs[i * o..(i + 1) * o].iter().copied())
                    .collect();
                let act: Vec<f32> = chunk
                    .iter()
                    .flat_map(|&i| cols.act[i * a..(i + 1) * a].iter().copied())
                    .collect();
                let pred = self.forward(tensor2(obs, n, o, &self.device));
                let target = tensor2(act, n, a, &self.device);
                let mse = (pred - target).powf_scalar(2.0).mean();
                sum += f64::from(scalar(mse.clone().inner()));
                batches += 1;
                let decay = self
                    .net
                    .weights_sq()
                    .mul_scalar(0.5 * self.cfg.weight_decay);
                let grads = GradientsParams::from_grads((mse + decay).backward(), &self.net);
                self.net = self.opt.step(self.cfg.lr, self.net.clone(), grads);
            }
            last = sum / batches.max(1) as f64;
            if !last.is_finite() {
                return Err(AgentError::Diverged(format!(
                    "POPLIN distill_loss = {last}"
                )));
            }
        }
        Ok(Some(last))
    }

    fn save(&self, dir: &Path) -> Result<(), AgentError> {
        ckpt::save_module(dir, "poplin_policy", &self.net)?;
        ckpt::save_optimizer(dir, "poplin_policy_adam", &self.opt)?;
        Ok(ckpt::write_json(dir, "poplin.json", &self.state)?)
    }

    fn load(&mut self, dir: &Path) -> Result<(), AgentError> {
        self.net = ckpt::load_module(dir, "poplin_policy", &self.net)?;
        self.opt = ckpt::load_optimizer(dir, "poplin_policy_adam", 1e-8)?;
        self.state = ckpt::read_json(dir, "poplin.json")?;
        Ok(())
    }
}

/// POPLIN-A's proposer.
struct Residuals {
    variant: ActionVariant,
    policy: Policy,
    horizon: usize,
    act_dim: usize,
}

/// Residual candidates: δ added to proposals fixed per state (INIT) or to the policy's
/// action on each particle (REPLAN), clipped to the action bounds.
struct ResidualSearch<'a> {
    owner: &'a Residuals,
    /// INIT: the proposed sequence of each state, `rows × H × |A|`.
    proposals: Option<Vec<f32>>,
}

struct ResidualActions<'a> {
    search: &'a ResidualSearch<'a>,
    solutions: &'a [f32],
    /// INIT: the candidates' clipped sequences.
    sequences: Option<Vec<f32>>,
}

impl Actions for ResidualActions<'_> {
    fn act(&mut self, t: usize, states: &Tensor<3>, layout: &Layout) -> Tensor<3> {
        let owner = self.search.owner;
        let (h, a) = (owner.horizon, owner.act_dim);
        if let Some(seq) = &self.sequences {
            return Sequences {
                actions: seq,
                horizon: h,
                act_dim: a,
            }
            .act(t, states, layout);
        }
        // REPLAN: π on every particle's state, plus the slot's candidate's δ_t.
        let [k, n, o] = states.dims();
        let pi = owner
            .policy
            .forward_fixed(states.clone().reshape([k * n, o]));
        let mut delta = Vec::with_capacity(k * n * a);
        for _ in 0..k {
            for c in 0..layout.candidates {
                let d = &self.solutions[(c * h + t) * a..][..a];
                for _ in 0..layout.per {
                    delta.extend_from_slice(d);
                }
            }
        }
        let delta = tensor2(delta, k * n, a, &states.device());
        (pi + delta).clamp(-1.0, 1.0).reshape([k, n, a])
    }
}

impl Search for ResidualSearch<'_> {
    fn actions<'a>(&'a self, solutions: &'a [f32], problems: &'a [usize]) -> Box<dyn Actions + 'a> {
        let (h, a) = (self.owner.horizon, self.owner.act_dim);
        let sequences = self.proposals.as_ref().map(|prop| {
            solutions
                .chunks(h * a)
                .zip(problems)
                .flat_map(|(d, &p)| {
                    let base = &prop[p * h * a..(p + 1) * h * a];
                    d.iter()
                        .zip(base)
                        .map(|(x, b)| (x + b).clamp(-1.0, 1.0))
                        .collect::<Vec<f32>>()
                })
                .collect()
        });
        Box::new(ResidualActions {
            search: self,
            solutions,
            sequences,
        })
    }
}

impl Residuals {
    /// The policy rolled `horizon` steps through the mean of the model's members from each
    /// state: `rows × H × |A|`.
    fn propose(&self, model: &dyn DiffModel, obs: &[f32], rows: usize) -> Vec<f32> {
        let (h, a, o) = (self.horizon, self.act_dim, model.obs_dim());
        let device = model.device();
        let mut s = tensor2(obs.to_vec(), rows, o, &device);
        let mut out = vec![0.0f32; rows * h * a];
        for t in 0..h {
            let act = self.policy.forward_fixed(s.clone());
            let host = to_vec(act.clone().inner());
            for r in 0..rows {
                out[(r * h + t) * a..][..a].copy_from_slice(&host[r * a..(r + 1) * a]);
            }
            if t + 1 < h {
                let (mean, _) = model.predict(s.clone(), act);
                let [_, _, d] = mean.dims();
                let delta = mean.mean_dim(0).reshape([rows, d]).slice([0..rows, 1..d]);
                s = s + delta;
            }
        }
        out
    }
}

impl Proposer for Residuals {
    const NAME: &'static str = "POPLIN-A";

    fn shape(&self) -> (usize, usize) {
        (self.act_dim, self.horizon)
    }

    fn search<'a>(&'a self, model: &'a dyn DiffModel, obs: &[f32], rows: usize) -> Prepared<'a> {
        let n = rows * self.dim();
        match self.variant {
            ActionVariant::Init => {
                let prop = self.propose(model, obs, rows);
                let lo = prop.iter().map(|&p| -1.0 - p).collect();
                let hi = prop.iter().map(|&p| 1.0 - p).collect();
                let search = ResidualSearch {
                    owner: self,
                    proposals: Some(prop),
                };
                (Box::new(search), Some((lo, hi)))
            }
            ActionVariant::Replan => {
                let search = ResidualSearch {
                    owner: self,
                    proposals: None,
                };
                (Box::new(search), Some((vec![-1.0; n], vec![1.0; n])))
            }
        }
    }

    fn act(&self, obs: &[f32], solutions: &[f32], rows: usize) -> Vec<f32> {
        let pi = self.policy.act(obs, rows);
        let (dim, a) = (self.dim(), self.act_dim);
        let mut out = Vec::with_capacity(rows * a);
        for r in 0..rows {
            for j in 0..a {
                out.push((pi[r * a + j] + solutions[r * dim + j]).clamp(-1.0, 1.0));
            }
        }
        out
    }

    fn planned(&mut self, _obs: &[f32], _solutions: &[f32], actions: &[f32]) {
        self.policy.state.planned += actions.len() / self.act_dim;
    }

    fn fitted(
        &mut self,
        model: &Ensemble,
        real: &ReplayBuffer,
        rng: &mut Xoshiro256PlusPlus,
    ) -> Result<(Stats, bool), AgentError> {
        self.policy.standardise_as(model);
        let loss = self.policy.clone_plans(real, rng)?;
        Ok((
            loss.map(|l| ("distill_loss", l)).into_iter().collect(),
            true,
        ))
    }

    fn save(&self, dir: &Path) -> Result<(), AgentError> {
        self.policy.save(dir)
    }

    fn load(&mut self, dir: &Path) -> Result<(), AgentError> {
        self.policy.load(dir)
    }
}

/// POPLIN-P's proposer.
struct Perturbations {
    variant: ParamVariant,
    distill: Distill,
    policy: Policy,
    horizon: usize,
    act_dim: usize,
    /// |θ|.
    params: usize,
    sizes: Vec<usize>,
}

struct WeightActions<'a> {
    owner: &'a Perturbations,
    theta: Vec<f32>,
    solutions: &'a [f32],
}

impl Perturbations {
    /// The perturbation of candidate `c` at step `t`.
    fn delta<'s>(&self, solutions: &'s [f32], c: usize, t: usize) -> &'s [f32] {
        let w = self.params;
        match self.variant {
            ParamVariant::Sep => &solutions[(c * self.horizon + t) * w..][..w],
            ParamVariant::Uni => &solutions[c * w..(c + 1) * w],
        }
    }

    /// θ + δ of every candidate at step `t`, `C × |θ|`.
    fn thetas(&self, theta: &[f32], solutions: &[f32], candidates: usize, t: usize) -> Vec<f32> {
        let mut out = Vec::with_capacity(candidates * self.params);
        for c in 0..candidates {
            let d = self.delta(solutions, c, t);
            out.extend(theta.iter().zip(d).map(|(x, y)| x + y));
        }
        out
    }
}

impl Actions for WeightActions<'_> {
    fn act(&mut self, t: usize, states: &Tensor<3>, layout: &Layout) -> Tensor<3> {
        let p = self.owner;
        let thetas = p.thetas(&self.theta, self.solutions, layout.candidates, t);
        let x = p.policy.standardise(layout.by_candidate(states.clone()));
        layout.by_member(tanh_policies(&p.sizes, &thetas, x))
    }
}

impl Search for Perturbations {
    fn actions<'a>(
        &'a self,
        solutions: &'a [f32],
        _problems: &'a [usize],
    ) -> Box<dyn Actions + 'a> {
        Box::new(WeightActions {
            owner: self,
            theta: self.policy.net.flat(),
            solutions,
        })
    }
}

impl Proposer for Perturbations {
    const NAME: &'static str = "POPLIN-P";

    fn shape(&self) -> (usize, usize) {
        match self.variant {
            ParamVariant::Sep => (self.params, self.horizon),
            ParamVariant::Uni => (self.params, 1),
        }
    }

    fn search<'a>(&'a self, _model: &'a dyn DiffModel, _obs: &[f32], _rows: usize) -> Prepared<'a> {
        (Box::new(self), None)
    }

    fn act(&self, obs: &[f32], solutions: &[f32], rows: usize) -> Vec<f32> {
        let theta = self.policy.net.flat();
        let thetas = self.thetas(&theta, solutions, rows, 0);
        let o = self.sizes[0];
        let x = Tensor::<3>::from_data(
            TensorData::new(obs.to_vec(), [rows, 1, o]),
            &self.policy.device,
        );
        let x = self.policy.standardise(x);
        to_vec(tanh_policies(&self.sizes, &thetas, x).inner())
    }

    fn planned(&mut self, _obs: &[f32], solutions: &[f32], actions: &[f32]) {
        let rows = actions.len() / self.act_dim;
        self.policy.state.planned += rows;
        self.policy.state.chosen.resize(self.params, 0.0);
        for r in 0..rows {
            let d = self.delta(solutions, r, 0);
            for (s, x) in self.policy.state.chosen.iter_mut().zip(d) {
                *s += x;
            }
        }
        self.policy.state.chosen_count += rows;
    }

    fn fitted(
        &mut self,
        model: &Ensemble,
        real: &ReplayBuffer,
        rng: &mut Xoshiro256PlusPlus,
    ) -> Result<(Stats, bool), AgentError> {
        self.policy.standardise_as(model);
        let mut out = Stats::new();
        match self.distill {
            Distill::Avg => {
                let state = &mut self.policy.state;
                if state.chosen_count > 0 {
                    let n = state.chosen_count as f32;
                    let step: Vec<f32> = state.chosen.iter().map(|s| s / n).collect();
                    let norm = step
                        .iter()
                        .map(|x| f64::from(*x).powi(2))
                        .sum::<f64>()
                        .sqrt();
                    let theta: Vec<f32> = self
                        .policy
                        .net
                        .flat()
                        .iter()
                        .zip(&step)
                        .map(|(t, s)| t + s)
                        .collect();
                    self.policy.net.set_flat(&theta);
                    out.push(("distill_step", norm));
                }
                self.policy.state.chosen = vec![0.0; self.params];
                self.policy.state.chosen_count = 0;
            }
            Distill::Bc => {
                if let Some(l) = self.policy.clone_plans(real, rng)? {
                    out.push(("distill_loss", l));
                }
            }
        }
        Ok((out, true))
    }

    fn save(&self, dir: &Path) -> Result<(), AgentError> {
        self.policy.save(dir)
    }

    fn load(&mut self, dir: &Path) -> Result<(), AgentError> {
        self.policy.load(dir)
    }
}

/// The POPLIN-A agent (`algo = "poplin_a"`).
pub struct PoplinA;

impl Algorithm for PoplinA {
    type Config = PoplinAConfig;
    fn build(cfg: PoplinAConfig, s: &Setting<'_>) -> Box<dyn Agent> {
        let horizon = cfg.planner.horizon;
        Box::new(MpcAgent::new(cfg.planner, s, |rng| Residuals {
            variant: cfg.variant,
            policy: Policy::new(cfg.policy, s.obs_dim, s.act_dim, rng, s.device),
            horizon,
            act_dim: s.act_dim,
        }))
    }
    fn workload(cfg: &PoplinAConfig) -> Workload {
        cfg.planner.workload()
    }
}

/// The POPLIN-P agent (`algo = "poplin_p"`).
pub struct PoplinP;

impl Algorithm for PoplinP {
    type Config = PoplinPConfig;
    fn build(cfg: PoplinPConfig, s: &Setting<'_>) -> Box<dyn Agent> {
        let horizon = cfg.planner.horizon;
        Box::new(MpcAgent::new(cfg.planner, s, |rng| {
            let policy = Policy::new(cfg.policy, s.obs_dim, s.act_dim, rng, s.device);
            let sizes = policy.net.sizes();
            let params = policy.net.flat().len();
            Perturbations {
                variant: cfg.variant,
                distill: cfg.distill,
                policy,
                horizon,
                act_dim: s.act_dim,
                params,
                sizes,
            }
        }))
    }
    fn workload(cfg: &PoplinPConfig) -> Workload {
        cfg.planner.workload()
    }
}
