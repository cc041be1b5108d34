//! Learned dynamics: the probabilistic ensemble ([`ensemble`]), fitting it to real
//! transitions ([`fit`]), its one-vs-rest uncertainty ([`uncertainty`]), branched rollouts
//! ([`rollout`]) and differentiable planning through it ([`gradplan`]), shared by the
//! model-based agents.

pub mod ensemble;
pub mod fit;
pub mod gradplan;
pub mod rollout;
pub mod uncertainty;

pub use ensemble::{Ensemble, EnsembleConfig, TrainReport};
