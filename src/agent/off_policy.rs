//! What every off-policy agent shares: the replay buffer, the RNG, the transition count, the
//! uniform-random start phase, and the loop of updates on sampled batches with its divergence
//! check.
use std::path::Path;

use rand::SeedableRng;
use rand::rngs::Xoshiro256PlusPlus;
use serde::{Deserialize, Serialize};

use super::{AgentError, StatMeans, Stats, Transition, ckpt};
use crate::replay::{Batch, ReplayBuffer};

/// Counters and RNG, saved with the checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct State {
    rng: Xoshiro256PlusPlus,
    transitions: usize,
}

/// The schedule an off-policy agent trains on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Schedule {
    pub buffer_size: usize,
    pub batch_size: usize,
    /// Uniform-random actions, and no updates, for this many transitions.
    pub learning_starts: usize,
    pub updates_per_step: usize,
}

pub(crate) struct OffPolicy {
    schedule: Schedule,
    act_dim: usize,
    replay: ReplayBuffer,
    batch: Batch,
    state: State,
}

impl OffPolicy {
    pub fn new(obs_dim: usize, act_dim: usize, schedule: Schedule, seed: u64) -> Self {
        OffPolicy {
            replay: ReplayBuffer::new(schedule.buffer_size, obs_dim, act_dim),
            batch: Batch::default(),
            state: State {
                rng: Xoshiro256PlusPlus::seed_from_u64(seed),
                transitions: 0,
            },
            schedule,
            act_dim,
        }
    }

    pub fn rng(&mut self) -> &mut Xoshiro256PlusPlus {
        &mut self.state.rng
    }

    /// Uniform random normalised actions for `rows` observations during the start phase.
    pub fn random_actions(&mut self, rows: usize) -> Option<Vec<f64>> {
        (self.state.transitions < self.schedule.learning_starts)
            .then(|| super::schedule::uniform_actions(&mut self.state.rng, rows * self.act_dim))
    }

    pub fn observe(&mut self, t: &Transition<'_>) {
        self.replay
            .push(t.obs, t.action, t.reward, t.next_obs, t.terminated);
        self.state.transitions += 1;
    }

    /// The updates due after `new_transitions` transitions, each on a fresh uniform batch.
    /// `update` returns named statistics (a name may be missing from some updates); the
    /// result is the mean of each over the updates that reported it. A non-finite statistic
    /// stops with [`AgentError::Diverged`].
    pub fn learn(
        &mut self,
        algo: &str,
        new_transitions: usize,
        mut update: impl FnMut(&Batch, &mut Xoshiro256PlusPlus) -> Vec<(&'static str, f32)>,
    ) -> Result<Option<Stats>, AgentError> {
        if self.state.transitions < self.schedule.learning_starts.max(1) {
            return Ok(None);
        }
        let mut means = StatMeans::default();
        for _ in 0..self.schedule.updates_per_step * new_transitions {
            let rng = &mut self.state.rng;
            self.replay
                .sample_into(rng, self.schedule.batch_size, &mut self.batch);
            for (name, v) in update(&self.batch, rng) {
                means.add(algo, name, f64::from(v))?;
            }
        }
        Ok(Some(means.finish().unwrap_or_default()))
    }

    pub fn save(&self, dir: &Path) -> Result<(), AgentError> {
        let path = dir.join("replay.bin");
        self.replay
            .save(&path)
            .map_err(|e| AgentError::checkpoint(&path, e))?;
        ckpt::write_json(dir, "agent_state.json", &self.state)
    }

    pub fn load(&mut self, dir: &Path) -> Result<(), AgentError> {
        let path = dir.join("replay.bin");
        self.replay = ReplayBuffer::load(&path).map_err(|e| AgentError::checkpoint(&path, e))?;
        self.state = ckpt::read_json(dir, "agent_state.json")?;
        Ok(())
    }
}
