//! Learned dynamics: the probabilistic ensemble ([`ensemble`]), fitting it to real
//! transitions ([`fit`]), its one-vs-rest uncertainty ([`uncertainty`]), the one model step
//! every user shares ([`step`]) and branched rollouts on the host ([`rollout`]).

pub mod ensemble;
pub mod fit;
pub mod host;
pub mod rollout;
pub mod step;
pub mod uncertainty;

pub use ensemble::{Ensemble, EnsembleConfig, TrainReport};
