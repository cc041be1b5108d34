//! Where the task XML files live, and their hashes.
//!
//! `just setup` copies Gymnasium 1.4.0's `envs/mujoco/assets/*.xml` into `.deps/gymnasium/assets`,
//! whose absolute path build.rs compiles in. `MPDP_ASSETS_DIR` overrides it at run time (for a
//! binary moved to another machine, or to try other XMLs; their hash is recorded either way).
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Run-time override of the directory holding the task XML files.
pub const ASSETS_ENV_VAR: &str = "MPDP_ASSETS_DIR";

#[derive(Debug, thiserror::Error)]
pub enum AssetError {
    #[error(
        "task XML {0} not found: run `just setup` (or point {ASSETS_ENV_VAR} at Gymnasium's mujoco/assets)"
    )]
    Missing(PathBuf),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A missing or unreadable task XML: the setup is incomplete.
impl crate::config::IsUsage for AssetError {
    fn is_usage(&self) -> bool {
        true
    }
}

/// The directory holding the task XML files.
pub fn assets_dir() -> PathBuf {
    match std::env::var_os(ASSETS_ENV_VAR) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(env!("MPDP_SETUP_ASSETS_DIR")),
    }
}

/// Run-time override of the Python interpreter of `just setup`'s venv.
pub const PYTHON_ENV_VAR: &str = "MPDP_PYTHON";

/// The interpreter of the venv `just setup` makes (Gymnasium, MuJoCo's Python bindings,
/// imageio-ffmpeg): `MPDP_PYTHON`, else `.deps/venv` of the checkout this binary was built in.
pub fn venv_python() -> PathBuf {
    match std::env::var_os(PYTHON_ENV_VAR) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".deps/venv/bin/python"),
    }
}

/// A script of the checkout's `python/` directory, or, where the checkout is gone (a binary
/// copied to another machine), `python/<name>` under the working directory.
pub fn python_script(name: &str) -> PathBuf {
    let built = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("python")
        .join(name);
    if built.is_file() {
        built
    } else {
        Path::new("python").join(name)
    }
}

/// Path of `file` in [`assets_dir`], checked to exist.
pub(crate) fn asset_path(file: &str) -> Result<PathBuf, AssetError> {
    let path = assets_dir().join(file);
    if path.is_file() {
        Ok(path)
    } else {
        Err(AssetError::Missing(path))
    }
}

/// Hex SHA-256 of a file's bytes.
pub fn xml_sha256(path: &Path) -> Result<String, AssetError> {
    let bytes = std::fs::read(path).map_err(|source| AssetError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}
