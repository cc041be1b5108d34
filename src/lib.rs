//! mpdp: MPDP ("Theoretically Guaranteed Policy Improvement Distilled from Model-Based
//! Planning") and its baselines on the MuJoCo tasks, as a declarative experiment pipeline.

pub mod agent;
pub mod bench;
pub mod env;
pub mod model;
pub mod nn;
pub mod replay;
pub mod report;
pub mod runner;
pub mod sched;
pub mod spec;
pub mod store;
