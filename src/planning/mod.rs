//! Planning through the learned model: MPDP's differentiable planner ([`gradplan`]), which
//! improves a stack of policies by gradient ascent on the model's H-step return. Planners
//! step the model with [`crate::model::step`], the one model step every user shares.

pub mod gradplan;
