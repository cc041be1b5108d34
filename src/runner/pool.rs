//! A pool of environments stepped in parallel on rayon's thread pool: the training envs of a
//! run (`num_envs`) and its evaluation envs (one per eval episode).
use rayon::prelude::*;

use crate::agent::{Agent, Transition};
use crate::env::{self, Env, EnvError, EnvInfo, MujocoEnv, ObsVariant, Step, Task};

pub struct EnvPool {
    envs: Vec<MujocoEnv>,
    info: EnvInfo,
}

impl EnvPool {
    pub fn new(task: Task, variant: ObsVariant, n: usize) -> Result<Self, EnvError> {
        let envs = (0..n.max(1))
            .map(|_| env::make(task, variant))
            .collect::<Result<Vec<_>, _>>()?;
        let info = envs[0].info().clone();
        Ok(EnvPool { envs, info })
    }

    pub fn info(&self) -> &EnvInfo {
        &self.info
    }

    pub fn envs(&self) -> &[MujocoEnv] {
        &self.envs
    }

    pub fn envs_mut(&mut self) -> &mut [MujocoEnv] {
        &mut self.envs
    }

    /// Starts a new episode in every env: env i from seed `mix(seed, stream, i)`.
    pub fn reset_all(&mut self, seed: u64, stream: u64) {
        for (i, env) in self.envs.iter_mut().enumerate() {
            env.reset(Some(super::mix(seed, stream, i as u64)));
        }
    }

    /// The current observations, row-major.
    pub fn observations(&self) -> Vec<f64> {
        self.envs
            .iter()
            .flat_map(|e| e.obs().iter().copied())
            .collect()
    }

    /// Steps every env with its row of normalised actions in [-1, 1].
    pub fn step(&mut self, actions: &[f64]) -> Vec<Step> {
        let info = &self.info;
        let step = |(env, a): (&mut MujocoEnv, &[f64])| env.step(&to_bounds(a, info));
        let rows = actions.chunks(info.act_dim);
        if self.envs.len() == 1 {
            self.envs.iter_mut().zip(rows).map(step).collect()
        } else {
            self.envs
                .par_iter_mut()
                .zip(actions.par_chunks(info.act_dim))
                .map(step)
                .collect()
        }
    }

    /// One training step of every env: the agent's exploration actions, its transitions, and
    /// for each env whose episode ended a reset (its next episode), which the agent is told
    /// of. Returns each env's step.
    pub fn explore_step(&mut self, agent: &mut dyn Agent) -> Vec<Step> {
        let (o, a) = (self.info.obs_dim, self.info.act_dim);
        let obs = self.observations();
        let actions = agent.explore(&obs, self.envs.len());
        let steps = self.step(&actions);
        let mut restarted = Vec::new();
        for (i, step) in steps.iter().enumerate() {
            agent.observe(&Transition {
                obs: &obs[i * o..(i + 1) * o],
                action: &actions[i * a..(i + 1) * a],
                reward: step.reward,
                next_obs: self.envs[i].obs(),
                terminated: step.terminated,
            });
            if step.done() {
                self.envs[i].reset(None);
                restarted.push(i);
            }
        }
        if !restarted.is_empty() {
            agent.restarted(&restarted);
        }
        steps
    }

    /// Runs one episode in every env (already reset) with `policy(obs, envs, first)` →
    /// normalised actions, stepping the unfinished envs together: `envs` are the indices of
    /// the envs still running (the rows of `obs`), `first` is true on the first step. Returns
    /// returns and lengths.
    pub fn run_episodes(
        &mut self,
        policy: impl FnMut(&[f64], &[usize], bool) -> Vec<f64>,
    ) -> (Vec<f64>, Vec<f64>) {
        self.run_episodes_with(policy, |_, _, _| {})
    }

    /// [`EnvPool::run_episodes`], calling `after_step(i, env, step)` after every step of
    /// env i.
    pub fn run_episodes_with(
        &mut self,
        mut policy: impl FnMut(&[f64], &[usize], bool) -> Vec<f64>,
        mut after_step: impl FnMut(usize, &MujocoEnv, &Step),
    ) -> (Vec<f64>, Vec<f64>) {
        let n = self.envs.len();
        let mut returns = vec![0.0; n];
        let mut lengths = vec![0.0; n];
        let mut active: Vec<usize> = (0..n).collect();
        let mut first = true;
        while !active.is_empty() {
            let obs: Vec<f64> = active
                .iter()
                .flat_map(|&i| self.envs[i].obs().iter().copied())
                .collect();
            let actions = policy(&obs, &active, first);
            first = false;
            let info = &self.info;
            let mut running: Vec<&mut MujocoEnv> = self
                .envs
                .iter_mut()
                .enumerate()
                .filter(|(i, _)| active.contains(i))
                .map(|(_, e)| e)
                .collect();
            let steps: Vec<Step> = running
                .par_iter_mut()
                .zip(actions.par_chunks(info.act_dim))
                .map(|(env, a)| env.step(&to_bounds(a, info)))
                .collect();
            for (&i, s) in active.iter().zip(&steps) {
                returns[i] += s.reward;
                lengths[i] += 1.0;
                after_step(i, &self.envs[i], s);
            }
            active = active
                .into_iter()
                .zip(&steps)
                .filter(|(_, s)| !s.done())
                .map(|(i, _)| i)
                .collect();
        }
        (returns, lengths)
    }
}

/// Maps a normalised action in [-1, 1] onto the env's bounds.
fn to_bounds(a: &[f64], info: &EnvInfo) -> Vec<f64> {
    a.iter()
        .zip(info.action_low.iter().zip(&info.action_high))
        .map(|(&x, (&lo, &hi))| lo + (x.clamp(-1.0, 1.0) + 1.0) * 0.5 * (hi - lo))
        .collect()
}
