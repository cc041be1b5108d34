//! Agents and their learners.

pub mod sac;
