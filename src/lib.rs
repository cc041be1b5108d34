//! mpdp: MPDP ("Theoretically Guaranteed Policy Improvement Distilled from Model-Based
//! Planning") and its baselines on the MuJoCo tasks, as a declarative experiment pipeline.
//!
//! Layers, each importing only from those before it (`tests/architecture.rs` keeps it so):
//! foundations (`config`, `stats`, `store`, `env`, `nn`, `ckpt`) → `replay` → `model` →
//! `planning` → `agent` → `runner` → `spec` → `sched` → `report` → `bench` → the CLI.

pub mod agent;
pub mod bench;
pub mod ckpt;
pub mod config;
pub mod env;
pub mod model;
pub mod nn;
pub mod planning;
pub mod replay;
pub mod report;
pub mod runner;
pub mod sched;
pub mod spec;
pub mod stats;
pub mod store;

/// Whether `e` (one link of an error chain) is the user's to fix: bad arguments, files,
/// specs or setup, which the command line reports with exit code 2. Each error type says
/// so itself ([`config::IsUsage`]).
pub fn is_usage(e: &(dyn std::error::Error + 'static)) -> bool {
    use config::IsUsage;
    macro_rules! ask {
        ($($t:ty),* $(,)?) => {
            $(if let Some(e) = e.downcast_ref::<$t>() {
                return e.is_usage();
            })*
        };
    }
    ask!(
        config::UsageError,
        env::EnvError,
        env::AssetError,
        env::playback::PlaybackError,
        nn::DeviceError,
        agent::AgentError,
        runner::RunError,
        runner::EvalError,
        spec::SpecError,
        sched::SchedError,
        sched::cost::CostError,
        report::ReportError,
    );
    false
}
