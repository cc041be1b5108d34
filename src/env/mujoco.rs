//! The six tasks on MuJoCo, following Gymnasium 1.4.0's `*_v5.py` and `mujoco_env.py`.
//!
//! Step order, as Gymnasium's `MujocoEnv.do_simulation`: remember the forward position, set
//! `ctrl` (MuJoCo clamps it to `ctrlrange`; no clipping here, as in Gymnasium), `mj_step`
//! frame-skip times, then `mj_rnePostConstraint` so `cfrc_ext` holds this step's contact
//! forces (for the tasks that read them). Reset: `mj_resetData`, set qpos/qvel, `mj_forward` (so `cfrc_ext` is zero in the
//! first observation, as in Gymnasium).
use std::collections::HashSet;
use std::sync::{Arc, Mutex, Once};

use mujoco_rs::prelude::{MjData, MjLogMessage, MjModel, MjtLogLevel, set_log_handler};
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use rand_distr::StandardNormal;

use super::assets::{asset_path, xml_sha256};
use super::{Env, EnvError, EnvInfo, MAX_EPISODE_STEPS, ObsVariant, ResetNoise, Step, Task};

/// `mjSTATE_INTEGRATION`: every input of `mj_step`, warm start included.
const INTEGRATION_STATE: u32 = 16383;

/// A serialisable copy of an env mid-episode (see [`MujocoEnv::snapshot`]).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EnvSnapshot {
    task: String,
    physics: Vec<f64>,
    obs: Vec<f64>,
    position: f64,
    elapsed: usize,
    rng: Xoshiro256PlusPlus,
}

/// One MuJoCo task instance: model, simulation state, episode counter and reset RNG.
pub struct MujocoEnv {
    info: EnvInfo,
    model: Arc<MjModel>,
    data: MjData<Arc<MjModel>>,
    obs: Vec<f64>,
    elapsed: usize,
    rng: Xoshiro256PlusPlus,
    /// The forward position after the last step or reset: the next step's "before" value,
    /// exactly what Gymnasium reads from `data` before stepping.
    position: f64,
    /// Body masses and their sum, for Humanoid's centre of mass.
    body_mass: Vec<f64>,
    total_mass: f64,
}

impl MujocoEnv {
    /// Loads the task's XML. The reset RNG starts from seed 0 until [`Env::reset`] gets a seed.
    pub fn new(task: Task, variant: ObsVariant) -> Result<Self, EnvError> {
        route_mujoco_log();
        let path = asset_path(task.xml_file())?;
        let xml_sha256 = xml_sha256(&path)?;
        let model = MjModel::from_xml(&path).map_err(|e| EnvError::ModelLoad {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        let model = Arc::new(model);
        let data = MjData::new(model.clone());
        let m = model.ffi();
        let (nq, nv, nbody) = (m.nq as usize, m.nv as usize, m.nbody as usize);
        let dt = m.opt.timestep * task.frame_skip() as f64;
        let ctrlrange = model.actuator_ctrlrange();
        let body_mass = model.body_mass().to_vec();
        let obs_dim = task.obs_dim(variant, nq, nv, nbody);
        let info = EnvInfo {
            task,
            variant,
            obs_dim,
            act_dim: ctrlrange.len(),
            action_low: ctrlrange.iter().map(|r| r[0]).collect(),
            action_high: ctrlrange.iter().map(|r| r[1]).collect(),
            max_episode_steps: MAX_EPISODE_STEPS,
            dt,
            xml_sha256,
        };
        let mut env = MujocoEnv {
            info,
            model,
            data,
            obs: vec![0.0; obs_dim],
            elapsed: 0,
            rng: Xoshiro256PlusPlus::seed_from_u64(0),
            position: 0.0,
            total_mass: body_mass.iter().sum(),
            body_mass,
        };
        env.write_obs();
        Ok(env)
    }

    /// Number of generalised coordinates (length of qpos).
    pub fn nq(&self) -> usize {
        self.model.ffi().nq as usize
    }

    /// Number of degrees of freedom (length of qvel).
    pub fn nv(&self) -> usize {
        self.model.ffi().nv as usize
    }

    pub fn qpos(&self) -> &[f64] {
        self.data.qpos()
    }

    pub fn qvel(&self) -> &[f64] {
        self.data.qvel()
    }

    /// Starts an episode from exactly `qpos`, `qvel` (Gymnasium: `reset` then `set_state`).
    pub fn reset_to_state(&mut self, qpos: &[f64], qvel: &[f64]) -> Result<&[f64], EnvError> {
        let task = self.info.task;
        for (what, expected, got) in [
            ("qpos", self.nq(), qpos.len()),
            ("qvel", self.nv(), qvel.len()),
        ] {
            if expected != got {
                return Err(EnvError::StateLength {
                    task,
                    what,
                    expected,
                    got,
                });
            }
        }
        self.data.reset();
        self.data.qpos_mut().copy_from_slice(qpos);
        self.data.qvel_mut().copy_from_slice(qvel);
        self.begin_episode();
        Ok(&self.obs)
    }

    /// Advances the physics `n` MuJoCo steps with the current controls, nothing else: the
    /// raw cost an environment step is compared to in `mpdp bench env`.
    pub fn step_physics(&mut self, n: usize) {
        for _ in 0..n {
            self.data.step();
        }
    }

    /// Sets the controls for the next physics steps (no clipping: MuJoCo clamps to ctrlrange).
    pub fn set_ctrl(&mut self, action: &[f64]) {
        self.data.ctrl_mut().copy_from_slice(action);
    }

    fn begin_episode(&mut self) {
        self.data.forward();
        self.elapsed = 0;
        self.position = self.forward_position();
        self.write_obs();
    }

    /// Everything needed to continue this env bit for bit: MuJoCo's full integration state
    /// (including the solver warm start), the observation, the episode counter and the RNG.
    pub fn snapshot(&self) -> EnvSnapshot {
        EnvSnapshot {
            task: self.info.task.name().to_string(),
            physics: self.data.state(INTEGRATION_STATE).to_vec(),
            obs: self.obs.clone(),
            position: self.position,
            elapsed: self.elapsed,
            rng: self.rng.clone(),
        }
    }

    /// Restores a [`MujocoEnv::snapshot`] of the same task.
    pub fn restore(&mut self, s: &EnvSnapshot) -> Result<(), EnvError> {
        let task = self.info.task;
        if s.task != task.name() || s.obs.len() != self.obs.len() {
            return Err(EnvError::Snapshot(format!(
                "snapshot of {} does not fit {task}",
                s.task
            )));
        }
        self.data
            .set_state(&s.physics, INTEGRATION_STATE)
            .map_err(|e| EnvError::Snapshot(e.to_string()))?;
        self.obs.copy_from_slice(&s.obs);
        self.position = s.position;
        self.elapsed = s.elapsed;
        self.rng = s.rng.clone();
        Ok(())
    }

    /// The position whose change over `dt` is the forward-velocity reward.
    fn forward_position(&self) -> f64 {
        match self.info.task {
            Task::InvertedPendulum => 0.0,
            Task::Hopper | Task::Walker2d | Task::HalfCheetah => self.data.qpos()[0],
            // Ant-v5's main body is body 1, the torso.
            Task::Ant => self.data.xpos()[1][0],
            // Humanoid-v5's mass_center: Σ_b m_b · xipos_b / Σ_b m_b.
            Task::Humanoid => {
                let num: f64 = self
                    .body_mass
                    .iter()
                    .zip(self.data.xipos())
                    .map(|(m, p)| m * p[0])
                    .sum();
                num / self.total_mass
            }
        }
    }

    fn write_obs(&mut self) {
        let d = &self.data;
        let mut w = ObsWriter {
            obs: &mut self.obs,
            len: 0,
        };
        match self.info.task {
            Task::InvertedPendulum => {
                w.put(d.qpos());
                w.put(d.qvel());
            }
            Task::Hopper | Task::Walker2d => {
                w.put(&d.qpos()[1..]);
                w.put_clipped(d.qvel(), -10.0, 10.0);
            }
            Task::HalfCheetah => {
                w.put(&d.qpos()[1..]);
                w.put(d.qvel());
            }
            Task::Ant => {
                w.put(&d.qpos()[2..]);
                w.put(d.qvel());
                if self.info.variant == ObsVariant::V5 {
                    w.put_clipped(d.cfrc_ext()[1..].as_flattened(), -1.0, 1.0);
                }
            }
            Task::Humanoid => {
                w.put(&d.qpos()[2..]);
                w.put(d.qvel());
                if self.info.variant == ObsVariant::V5 {
                    w.put(d.cinert()[1..].as_flattened());
                    w.put(d.cvel()[1..].as_flattened());
                    w.put(&d.qfrc_actuator()[6..]);
                    w.put(d.cfrc_ext()[1..].as_flattened());
                }
            }
        }
        debug_assert_eq!(w.len, self.obs.len());
    }

    /// Reward and `terminated` of the step just taken (Gymnasium v5 `step`/`_get_rew`).
    fn reward_and_termination(&self, x_velocity: f64, action: &[f64]) -> (f64, bool) {
        let d = &self.data;
        let indicator = |b: bool| if b { 1.0 } else { 0.0 };
        match self.info.task {
            Task::InvertedPendulum => {
                let terminated = !all_finite(&self.obs) || self.obs[1].abs() > 0.2;
                (indicator(!terminated), terminated)
            }
            Task::Hopper => {
                let q = d.qpos();
                let (z, angle) = (q[1], q[2]);
                let state_ok = q[2..]
                    .iter()
                    .chain(d.qvel())
                    .all(|&s| -100.0 < s && s < 100.0);
                let healthy =
                    state_ok && 0.7 < z && z < f64::INFINITY && -0.2 < angle && angle < 0.2;
                let reward = (x_velocity + indicator(healthy)) - 1e-3 * sum_sq(action);
                (reward, !healthy)
            }
            Task::Walker2d => {
                let q = d.qpos();
                let (z, angle) = (q[1], q[2]);
                let healthy = 0.8 < z && z < 2.0 && -1.0 < angle && angle < 1.0;
                let reward = (x_velocity + indicator(healthy)) - 1e-3 * sum_sq(action);
                (reward, !healthy)
            }
            Task::HalfCheetah => (x_velocity - 0.1 * sum_sq(action), false),
            Task::Ant => {
                let q = d.qpos();
                let healthy = all_finite(q) && all_finite(d.qvel()) && 0.2 <= q[2] && q[2] <= 1.0;
                let contact: f64 = d
                    .cfrc_ext()
                    .as_flattened()
                    .iter()
                    .map(|f| f.clamp(-1.0, 1.0).powi(2))
                    .sum();
                let costs = 0.5 * sum_sq(action) + 5e-4 * contact;
                ((x_velocity + indicator(healthy)) - costs, !healthy)
            }
            Task::Humanoid => {
                let z = d.qpos()[2];
                let healthy = 1.0 < z && z < 2.0;
                let contact = 5e-7 * sum_sq(d.cfrc_ext().as_flattened());
                // np.clip(cost, -inf, 10): NaN stays NaN.
                let contact = if contact > 10.0 { 10.0 } else { contact };
                // Humanoid-v5 charges the control actually applied, data.ctrl.
                let costs = 0.1 * sum_sq(d.ctrl()) + contact;
                (
                    (1.25 * x_velocity + 5.0 * indicator(healthy)) - costs,
                    !healthy,
                )
            }
        }
    }
}

impl Env for MujocoEnv {
    fn info(&self) -> &EnvInfo {
        &self.info
    }

    fn reset(&mut self, seed: Option<u64>) -> &[f64] {
        if let Some(seed) = seed {
            self.rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        }
        let model = &self.model;
        self.data.reset();
        let (uniform, normal) = match self.info.task.reset_noise() {
            ResetNoise::Uniform(s) => (s, None),
            ResetNoise::UniformNormal(s) => (s, Some(s)),
        };
        for (q, q0) in self.data.qpos_mut().iter_mut().zip(model.qpos0()) {
            *q = q0 + self.rng.random_range(-uniform..uniform);
        }
        for v in self.data.qvel_mut() {
            *v = match normal {
                Some(scale) => scale * self.rng.sample::<f64, _>(StandardNormal),
                None => self.rng.random_range(-uniform..uniform),
            };
        }
        self.begin_episode();
        &self.obs
    }

    fn step(&mut self, action: &[f64]) -> Step {
        assert_eq!(
            action.len(),
            self.info.act_dim,
            "{} takes {} action values",
            self.info.task,
            self.info.act_dim
        );
        let before = self.position;
        self.set_ctrl(action);
        self.step_physics(self.info.task.frame_skip());
        if self.info.task.reads_contact_forces() {
            // Gymnasium calls this on every task; only Ant and Humanoid read its outputs
            // (cacc, cfrc_int, cfrc_ext), and they never feed back into the dynamics.
            self.data.rne_post_constraint();
        }
        self.position = self.forward_position();
        let x_velocity = (self.position - before) / self.info.dt;
        self.write_obs();
        let (reward, terminated) = self.reward_and_termination(x_velocity, action);
        self.elapsed += 1;
        Step {
            reward,
            terminated,
            truncated: self.elapsed >= self.info.max_episode_steps,
        }
    }

    fn obs(&self) -> &[f64] {
        &self.obs
    }
}

/// Appends slices to an observation buffer without allocating.
struct ObsWriter<'a> {
    obs: &'a mut [f64],
    len: usize,
}

impl ObsWriter<'_> {
    fn put(&mut self, values: &[f64]) {
        self.obs[self.len..self.len + values.len()].copy_from_slice(values);
        self.len += values.len();
    }

    fn put_clipped(&mut self, values: &[f64], lo: f64, hi: f64) {
        for (o, v) in self.obs[self.len..self.len + values.len()]
            .iter_mut()
            .zip(values)
        {
            *o = v.clamp(lo, hi);
        }
        self.len += values.len();
    }
}

fn sum_sq(values: &[f64]) -> f64 {
    values.iter().map(|v| v * v).sum()
}

fn all_finite(values: &[f64]) -> bool {
    values.iter().all(|v| v.is_finite())
}

/// Sends MuJoCo's warnings to stderr, each distinct one once per process, instead of MuJoCo's
/// default of printing every time and appending to `MUJOCO_LOG.TXT` in the working directory.
/// (Gymnasium 1.4.0's half_cheetah.xml, for one, warns on every load that `settotalmass` is
/// deprecated.) Errors still end the process, as MuJoCo's default does.
fn route_mujoco_log() {
    static INSTALL: Once = Once::new();
    static SEEN: Mutex<Option<HashSet<String>>> = Mutex::new(None);
    fn handler(message: &MjLogMessage) {
        if (message.level() as i32) < MjtLogLevel::mjLOG_WARNING as i32 {
            return;
        }
        let subject = message.subject().trim().to_string();
        let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
        if seen
            .get_or_insert_with(HashSet::new)
            .insert(subject.clone())
        {
            eprintln!("mujoco: {subject}");
        }
    }
    // SAFETY: runs once, before this process creates its first MuJoCo model.
    INSTALL.call_once(|| unsafe { set_log_handler(handler) });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::make;

    fn random_action(env: &MujocoEnv, rng: &mut Xoshiro256PlusPlus) -> Vec<f64> {
        let i = env.info();
        i.action_low
            .iter()
            .zip(&i.action_high)
            .map(|(&l, &h)| rng.random_range(l..h))
            .collect()
    }

    #[test]
    fn observation_sizes_match_gymnasium() {
        let expected = [
            (Task::InvertedPendulum, 4, 4, 1),
            (Task::Hopper, 11, 11, 3),
            (Task::Walker2d, 17, 17, 6),
            (Task::HalfCheetah, 17, 17, 6),
            (Task::Ant, 105, 27, 8),
            (Task::Humanoid, 348, 45, 17),
        ];
        for (task, v5, mbpo, act) in expected {
            let env = make(task, ObsVariant::V5).unwrap();
            assert_eq!(env.info().obs_dim, v5, "{task}");
            assert_eq!(env.obs().len(), v5, "{task}");
            assert_eq!(env.info().act_dim, act, "{task}");
            assert_eq!(
                make(task, ObsVariant::Mbpo).unwrap().info().obs_dim,
                mbpo,
                "{task}"
            );
        }
        let humanoid = make(Task::Humanoid, ObsVariant::V5).unwrap();
        assert_eq!(humanoid.info().action_low, vec![-0.4; 17]);
        assert_eq!(
            make(Task::InvertedPendulum, ObsVariant::V5)
                .unwrap()
                .info()
                .action_high,
            vec![3.0]
        );
    }

    #[test]
    fn seeded_resets_are_reproducible_and_within_the_noise() {
        for task in Task::ALL {
            let mut env = make(task, ObsVariant::V5).unwrap();
            let first = env.reset(Some(7)).to_vec();
            let again = env.reset(Some(7)).to_vec();
            let next = env.reset(None).to_vec();
            let other = env.reset(Some(8)).to_vec();
            assert_eq!(first, again, "{task}");
            assert_ne!(first, next, "{task}");
            assert_ne!(first, other, "{task}");
            let scale = match task.reset_noise() {
                ResetNoise::Uniform(s) | ResetNoise::UniformNormal(s) => s,
            };
            for (q, q0) in env.qpos().iter().zip(env.model.qpos0()) {
                assert!((q - q0).abs() <= scale, "{task}: qpos {q} vs qpos0 {q0}");
            }
            if let ResetNoise::Uniform(s) = task.reset_noise() {
                assert!(env.qvel().iter().all(|v| v.abs() <= s), "{task}");
            }
        }
    }

    #[test]
    fn the_time_limit_truncates_at_1000_steps() {
        let mut env = make(Task::HalfCheetah, ObsVariant::V5).unwrap();
        env.reset(Some(0));
        let zero = vec![0.0; 6];
        for i in 1..MAX_EPISODE_STEPS {
            let s = env.step(&zero);
            assert!(!s.terminated && !s.truncated, "step {i}");
        }
        let last = env.step(&zero);
        assert!(last.truncated && !last.terminated);
        env.reset(None);
        assert!(!env.step(&zero).truncated, "reset restarts the step count");
    }

    #[test]
    fn rollout_termination_agrees_with_the_env() {
        // The termination function on observations is what model rollouts use; on real
        // observations it must agree with the env. (Hopper differs only when |qvel| >= 100,
        // which the clipped observation cannot show; random actions never get there.)
        for task in Task::ALL {
            for variant in [ObsVariant::V5, ObsVariant::Mbpo] {
                let mut env = make(task, variant).unwrap();
                let mut rng = Xoshiro256PlusPlus::seed_from_u64(3);
                env.reset(Some(3));
                let (mut steps, mut terminations) = (0, 0);
                while steps < 3000 {
                    let action = random_action(&env, &mut rng);
                    let s = env.step(&action);
                    assert_eq!(
                        task.is_terminal(env.obs()),
                        s.terminated,
                        "{task}/{variant} step {steps}"
                    );
                    steps += 1;
                    terminations += usize::from(s.terminated);
                    if s.done() {
                        env.reset(None);
                    }
                }
                if task != Task::HalfCheetah {
                    assert!(terminations > 0, "{task}: random actions never terminated");
                }
            }
        }
    }

    #[test]
    fn contact_forces_are_filled_after_stepping() {
        // Without mj_rnePostConstraint cfrc_ext stays zero; Ant's observation holds it.
        let mut env = make(Task::Ant, ObsVariant::V5).unwrap();
        env.reset(Some(0));
        assert!(
            env.obs()[27..].iter().all(|&f| f == 0.0),
            "zero right after reset, as Gymnasium"
        );
        for _ in 0..20 {
            env.step(&[0.0; 8]);
        }
        assert!(
            env.obs()[27..].iter().any(|&f| f != 0.0),
            "the legs touch the floor"
        );
    }

    #[test]
    fn reset_to_state_checks_lengths() {
        let mut env = make(Task::Hopper, ObsVariant::V5).unwrap();
        let err = env.reset_to_state(&[0.0; 5], &[0.0; 6]).unwrap_err();
        assert_eq!(err.to_string(), "qpos has 5 values, Hopper expects 6");
        let obs = env
            .reset_to_state(&[0.0, 1.25, 0.0, 0.0, 0.0, 0.0], &[0.0; 6])
            .unwrap();
        assert_eq!(obs[0], 1.25);
    }

    #[test]
    fn a_restored_snapshot_continues_bit_for_bit() {
        for task in Task::ALL {
            let mut env = make(task, ObsVariant::V5).unwrap();
            let mut rng = Xoshiro256PlusPlus::seed_from_u64(5);
            let actions: Vec<Vec<f64>> = (0..60).map(|_| random_action(&env, &mut rng)).collect();
            env.reset(Some(1));
            let run = |env: &mut MujocoEnv, acts: &[Vec<f64>]| -> Vec<(Step, Vec<f64>)> {
                acts.iter()
                    .map(|a| {
                        let s = env.step(a);
                        if s.done() {
                            env.reset(None);
                        }
                        (s, env.obs().to_vec())
                    })
                    .collect()
            };
            run(&mut env, &actions[..30]);
            let snap = env.snapshot();
            let json = serde_json::to_string(&snap).unwrap();
            let expected = run(&mut env, &actions[30..]);
            let mut fresh = make(task, ObsVariant::V5).unwrap();
            fresh
                .restore(&serde_json::from_str(&json).unwrap())
                .unwrap();
            assert_eq!(run(&mut fresh, &actions[30..]), expected, "{task}");
        }
    }

    #[test]
    fn xml_hash_is_the_files_sha256() {
        let env = make(Task::Hopper, ObsVariant::V5).unwrap();
        let path = crate::env::assets_dir().join("hopper.xml");
        assert_eq!(env.info().xml_sha256, xml_sha256(&path).unwrap());
        assert_eq!(env.info().xml_sha256.len(), 64);
    }
}
