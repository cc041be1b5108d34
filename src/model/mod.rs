//! Learned dynamics: the probabilistic ensemble ([`ensemble`]) and its one-vs-rest
//! uncertainty ([`uncertainty`]) and branched rollouts ([`rollout`]), shared by the
//! model-based agents.

pub mod ensemble;
pub mod rollout;
pub mod uncertainty;

pub use ensemble::{Ensemble, EnsembleConfig, TrainReport};
