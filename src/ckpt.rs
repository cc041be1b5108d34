//! Checkpoint I/O: JSON state files, module parameters (burnpack records) and Adam states,
//! each error naming the file and keeping its cause.
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::optim::ModuleOptimizer;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A checkpoint file that could not be written or read.
#[derive(Debug, thiserror::Error)]
#[error("checkpoint {}: {source}", path.display())]
pub struct CkptError {
    pub path: PathBuf,
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

impl CkptError {
    pub fn new(path: &Path, source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        CkptError {
            path: path.to_path_buf(),
            source: source.into(),
        }
    }
}

pub fn write_json<T: Serialize>(dir: &Path, name: &str, value: &T) -> Result<(), CkptError> {
    let path = dir.join(name);
    let text = serde_json::to_string(value).map_err(|e| CkptError::new(&path, e))?;
    crate::store::fault_point();
    std::fs::write(&path, text).map_err(|e| CkptError::new(&path, e))
}

pub fn read_json<T: DeserializeOwned>(dir: &Path, name: &str) -> Result<T, CkptError> {
    let path = dir.join(name);
    let text = std::fs::read_to_string(&path).map_err(|e| CkptError::new(&path, e))?;
    serde_json::from_str(&text).map_err(|e| CkptError::new(&path, e))
}

/// Writes a module's parameters to `dir/name` (a burnpack record, parameter ids included).
pub fn save_module<M: Module>(dir: &Path, name: &str, module: &M) -> Result<(), CkptError> {
    let path = dir.join(name);
    crate::store::fault_point();
    module
        .clone()
        .save_file(&path)
        .map_err(|e| CkptError::new(&path, e))
}

/// Loads `dir/name` into a module of the same architecture.
pub fn load_module<M: Module>(dir: &Path, name: &str, module: &M) -> Result<M, CkptError> {
    let path = dir.join(name);
    module
        .clone()
        .try_load_file(&path)
        .map_err(|e| CkptError::new(&path, e))
}

pub fn save_optimizer(dir: &Path, name: &str, opt: &ModuleOptimizer) -> Result<(), CkptError> {
    let path = dir.join(name);
    crate::store::fault_point();
    opt.save(&path).map_err(|e| CkptError::new(&path, e))
}

/// Loads an Adam state saved by [`save_optimizer`]; load the module it optimises first
/// (states are keyed by parameter id).
pub fn load_optimizer(
    dir: &Path,
    name: &str,
    adam_epsilon: f64,
) -> Result<ModuleOptimizer, CkptError> {
    let path = dir.join(name);
    crate::nn::adam(adam_epsilon)
        .load(&path)
        .map_err(|e| CkptError::new(&path, e))
}
