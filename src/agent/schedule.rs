//! When the model-based agents (MBPO, M2AC, MPDP) learn: nothing for `learning_starts`
//! transitions (uniform random actions), then at every env step t a model fit every
//! `model_train_freq` steps (the first at t = learning_starts), followed by
//! `updates_per_step` gradient updates; and what a model fit due does.
//!
//! With several training envs one call brings several transitions; the learning due for each
//! of them runs in order, each fit knowing the step t it is due at.
use rand::{Rng, RngExt};

use super::registry::{ModelFits, Workload};
use super::{AgentError, StatMeans, Stats};
use crate::model::{Ensemble, TrainReport, fit};
use crate::replay::ReplayBuffer;

/// One piece of learning due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Due {
    /// The model fit due at transition count `at`.
    FitModel {
        at: usize,
    },
    Update,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct ModelBased {
    pub learning_starts: usize,
    pub model_train_freq: usize,
    pub updates_per_step: usize,
}

impl ModelBased {
    /// The compute-relevant part of this schedule, with `model`'s epoch cap.
    pub fn workload(&self, model: &crate::model::EnsembleConfig) -> Workload {
        Workload {
            learning_starts: self.learning_starts,
            model: Some(ModelFits {
                train_freq: self.model_train_freq,
                max_epochs: model.max_epochs,
            }),
        }
    }

    /// The learning due for the `new` transitions ending at transition count `transitions`.
    pub fn due(&self, transitions: usize, new: usize) -> Vec<Due> {
        let starts = self.learning_starts.max(1);
        let mut out = Vec::new();
        for t in (transitions + 1 - new.min(transitions + 1)).max(starts)..=transitions {
            if (t - starts).is_multiple_of(self.model_train_freq) {
                out.push(Due::FitModel { at: t });
            }
            out.extend(std::iter::repeat_n(Due::Update, self.updates_per_step));
        }
        out
    }

    /// The model step a [`Due::FitModel`] due at transition count `at` asks for: the model
    /// errors ([`fit::model_errors`]) on the `model_train_freq` newest transitions, which the
    /// model has not seen yet (unless this is the first fit, at `learning_starts`: there is
    /// no model to measure yet, however many transitions the call brought), then the fit on
    /// all of `real`. With several training envs the window ends at the call's newest
    /// transition rather than at `at`: up to `num_envs − 1` transitions off.
    /// [`AgentError::Interrupted`] when `interrupted` stopped the fit; the model and `rng` are
    /// then as they were.
    pub fn measure_then_fit<R: Rng + Clone>(
        &self,
        model: &mut Ensemble,
        real: &ReplayBuffer,
        at: usize,
        rng: &mut R,
        interrupted: &dyn Fn() -> bool,
    ) -> Result<(Stats, TrainReport), AgentError> {
        let errors = if self.fit_before(at) {
            fit::model_errors(&*model, real, self.model_train_freq)
        } else {
            Vec::new()
        };
        let report = fit::fit(model, real, rng, interrupted).ok_or(AgentError::Interrupted)?;
        Ok((errors, report))
    }

    /// Whether a fit due at `at` has a fit before it (the first is at `learning_starts`).
    pub fn fit_before(&self, at: usize) -> bool {
        at > self.learning_starts.max(1)
    }

    /// The interrupt check for the item at `index` of a [`ModelBased::due`] list: a fit may
    /// give up only when it comes first, while nothing of the call has happened yet, so that
    /// the agent can be checkpointed as it was before the call and the call made again.
    pub fn interrupt_at(index: usize, interrupted: &dyn Fn() -> bool) -> &dyn Fn() -> bool {
        fn never() -> bool {
            false
        }
        if index == 0 { interrupted } else { &never }
    }
}

/// A model-based agent as its learning step sees it: a schedule, and what a fit and an
/// update do.
pub(crate) trait ModelBasedAgent {
    /// The name divergence errors give.
    const NAME: &'static str;
    fn schedule(&self) -> ModelBased;
    /// Transitions observed so far.
    fn transitions(&self) -> usize;
    /// What [`Due::FitModel`] due at transition count `at` does, giving up (with the agent as
    /// it was) when `interrupted`.
    fn fit_model(&mut self, at: usize, interrupted: &dyn Fn() -> bool)
    -> Result<Stats, AgentError>;
    /// One [`Due::Update`], adding its statistics to `means`.
    fn update(&mut self, means: &mut StatMeans) -> Result<(), AgentError>;
}

/// [`super::Agent::learn`] of a model-based agent: the learning due for the `new`
/// transitions, in order, with the means of what it reports.
pub(crate) fn learn<A: ModelBasedAgent>(
    agent: &mut A,
    new: usize,
    interrupted: &dyn Fn() -> bool,
) -> Result<Option<Stats>, AgentError> {
    let mut means = StatMeans::default();
    let due = agent.schedule().due(agent.transitions(), new);
    for (i, due) in due.into_iter().enumerate() {
        match due {
            Due::FitModel { at } => {
                for (name, v) in agent.fit_model(at, ModelBased::interrupt_at(i, interrupted))? {
                    means.add(A::NAME, name, v)?;
                }
            }
            Due::Update => agent.update(&mut means)?,
        }
    }
    Ok(means.finish())
}

/// `n` uniform random normalised actions in [-1, 1).
pub(crate) fn uniform_actions<R: Rng>(rng: &mut R, n: usize) -> Vec<f64> {
    (0..n).map(|_| rng.random_range(-1.0..1.0)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fits_start_with_learning_and_recur_every_freq_steps() {
        let s = ModelBased {
            learning_starts: 3,
            model_train_freq: 2,
            updates_per_step: 2,
        };
        // Transitions 1..=2: nothing. 3: fit + 2 updates. 4: 2 updates. 5: fit + 2 updates.
        assert!(s.due(2, 2).is_empty());
        use Due::Update as U;
        let f = |at| Due::FitModel { at };
        assert_eq!(s.due(5, 5), vec![f(3), U, U, U, U, f(5), U, U]);
        // The same, one transition at a time.
        let one: Vec<Due> = (1..=5).flat_map(|t| s.due(t, 1)).collect();
        assert_eq!(one, s.due(5, 5));
        // Three transitions per call (three envs): the first fit is due at 3 within the call
        // that ends at 4, and has no fit before it to measure.
        assert_eq!(s.due(4, 3), vec![f(3), U, U, U, U]);
        assert!(!s.fit_before(3) && s.fit_before(5));
        // Only a fit that starts the call may give up.
        assert!(ModelBased::interrupt_at(0, &|| true)());
        assert!(!ModelBased::interrupt_at(5, &|| true)());
    }
}
