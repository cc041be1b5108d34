//! Throughput benchmarks (`mpdp bench ...`). Each measures our implementation and a reference
//! on the same machine in the same command, and prints the ratios.

pub mod ensemble;
pub mod env;
pub mod sac;

use std::path::PathBuf;

/// The Python interpreter of the venv `just setup` creates (Gymnasium, MuJoCo).
pub fn default_python() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".deps/venv/bin/python")
}

/// The Python interpreter of the venv `just bench-setup` creates (PyTorch).
pub fn default_torch_python() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".deps/bench-venv/bin/python")
}

/// A reference script kept in `bench/reference/`.
pub fn reference_script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("bench/reference")
        .join(name)
}
