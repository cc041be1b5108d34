//! Learned dynamics: the probabilistic ensemble ([`ensemble`]) and its one-vs-rest
//! uncertainty ([`uncertainty`]), shared by the model-based agents.

pub mod ensemble;
pub mod uncertainty;

pub use ensemble::{Ensemble, EnsembleConfig, TrainReport};
