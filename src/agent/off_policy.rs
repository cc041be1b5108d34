//! What every off-policy agent shares: the replay buffer of real transitions, the RNG, the
//! transition count, the uniform-random start phase, their checkpoint files, and (for the
//! model-free agents) the loop of updates on sampled batches with its divergence check.
//! The model-based agents keep their own learning schedule ([`super::schedule`]) over the
//! same parts, and their own counters in `X`.
use std::path::Path;

use rand::SeedableRng;
use rand::rngs::Xoshiro256PlusPlus;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::schedule::uniform_actions;
use super::{AgentError, StatMeans, Stats, Transition};
use crate::ckpt::{self, CkptError};
use crate::replay::{Batch, ReplayBuffer};

/// No state beyond the shared counters.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct NoExtra {}

/// Counters, RNG and the agent's own state `X`, saved with the checkpoint
/// (`agent_state.json`, `X`'s fields beside `rng` and `transitions`).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct State<X> {
    rng: Xoshiro256PlusPlus,
    transitions: usize,
    #[serde(flatten)]
    extra: X,
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

pub(crate) struct OffPolicy<X = NoExtra> {
    schedule: Schedule,
    act_dim: usize,
    replay: ReplayBuffer,
    batch: Batch,
    state: State<X>,
}

impl<X: Serialize + DeserializeOwned> OffPolicy<X> {
    /// The parts of an agent seeded with `seed`; its networks take their initial weights
    /// from [`OffPolicy::rng`] next.
    pub fn new(obs_dim: usize, act_dim: usize, schedule: Schedule, seed: u64, extra: X) -> Self {
        OffPolicy {
            replay: ReplayBuffer::new(schedule.buffer_size, obs_dim, act_dim),
            batch: Batch::default(),
            state: State {
                rng: Xoshiro256PlusPlus::seed_from_u64(seed),
                transitions: 0,
                extra,
            },
            schedule,
            act_dim,
        }
    }

    pub fn rng(&mut self) -> &mut Xoshiro256PlusPlus {
        &mut self.state.rng
    }

    /// Transitions observed so far.
    pub fn transitions(&self) -> usize {
        self.state.transitions
    }

    /// The real transitions and the RNG, borrowed together.
    pub fn replay_and_rng(&mut self) -> (&ReplayBuffer, &mut Xoshiro256PlusPlus) {
        (&self.replay, &mut self.state.rng)
    }

    /// The agent's own state.
    pub fn extra(&self) -> &X {
        &self.state.extra
    }

    pub fn extra_mut(&mut self) -> &mut X {
        &mut self.state.extra
    }

    /// A uniform batch of `schedule.batch_size` real transitions, and the RNG.
    pub fn sample(&mut self) -> (&Batch, &mut Xoshiro256PlusPlus) {
        let rng = &mut self.state.rng;
        self.replay
            .sample_into(rng, self.schedule.batch_size, &mut self.batch);
        (&self.batch, rng)
    }

    /// Uniform random normalised actions for `rows` observations during the start phase.
    pub fn random_actions(&mut self, rows: usize) -> Option<Vec<f64>> {
        (self.state.transitions < self.schedule.learning_starts)
            .then(|| uniform_actions(&mut self.state.rng, rows * self.act_dim))
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
            let (batch, rng) = self.sample();
            for (name, v) in update(batch, rng) {
                means.add(algo, name, f64::from(v))?;
            }
        }
        Ok(Some(means.finish().unwrap_or_default()))
    }

    /// Writes `replay.bin` and `agent_state.json` into `dir`.
    pub fn save(&self, dir: &Path) -> Result<(), CkptError> {
        let path = dir.join("replay.bin");
        self.replay
            .save(&path)
            .map_err(|e| CkptError::new(&path, e))?;
        ckpt::write_json(dir, "agent_state.json", &self.state)
    }

    pub fn load(&mut self, dir: &Path) -> Result<(), CkptError> {
        let path = dir.join("replay.bin");
        self.replay = ReplayBuffer::load(&path).map_err(|e| CkptError::new(&path, e))?;
        self.state = ckpt::read_json(dir, "agent_state.json")?;
        Ok(())
    }
}
