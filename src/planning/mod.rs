//! Planning through the learned model. MPDP's differentiable planner ([`gradplan`]) improves a
//! stack of policies by gradient ascent on the model's H-step return; the sampling planners of
//! PETS and POPLIN ([`mpc`]) search with the cross-entropy method ([`cem`]) and score
//! candidates by trajectory sampling ([`particles`]). Planners step the model with
//! [`crate::model::step`], the one model step every user shares.

pub mod cem;
pub mod gradplan;
pub mod mpc;
pub mod particles;
