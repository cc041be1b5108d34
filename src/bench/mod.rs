//! Throughput benchmarks (`mpdp bench ...`). Each measures our implementation and a reference
//! on the same machine in the same command, and prints the ratios.

pub mod cem;
pub mod ensemble;
pub mod env;
pub mod mpdp;
pub mod sac;

use std::path::{Path, PathBuf};

/// The Python interpreter of the venv `just setup` creates (Gymnasium, MuJoCo).
/// The reference side of a benchmark: which Python runs it, or none.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Reference {
    /// Skip the reference implementation.
    #[arg(long)]
    pub no_python: bool,
    /// Python interpreter for the reference (default: the venv `just setup` creates, with
    /// Gymnasium, for `bench env`; the one `just bench-setup` creates, with PyTorch, for the
    /// others).
    #[arg(long)]
    pub python: Option<PathBuf>,
}

impl Reference {
    /// The interpreter to run the reference with (`default` unless one was given), or None
    /// to skip it.
    pub fn python(&self, default: fn() -> PathBuf) -> Option<PathBuf> {
        (!self.no_python).then(|| self.python.clone().unwrap_or_else(default))
    }
}

pub fn default_python() -> PathBuf {
    crate::env::venv_python()
}

/// The Python interpreter of the venv `just bench-setup` creates (PyTorch).
pub fn default_torch_python() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".deps/bench-venv/bin/python")
}

/// A reference script kept in `bench/reference/`: in the checkout this binary was built from,
/// or, where that is gone (a binary copied to another machine), under the working directory.
pub fn reference_script(name: &str) -> PathBuf {
    let built = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("bench/reference");
    let dir = if built.is_dir() {
        built
    } else {
        PathBuf::from("bench/reference")
    };
    dir.join(name)
}

/// The reference's device when the command line names one (`mpdp bench --reference-device`).
static REFERENCE_DEVICE: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();

/// Runs the PyTorch reference on `device` (`cpu` or `cuda`) instead of [`reference_device`]'s
/// default; the first call counts.
pub fn set_reference_device(device: &str) {
    let device = if device == "cuda" { "cuda" } else { "cpu" };
    let _ = REFERENCE_DEVICE.set(device);
}

/// Where the PyTorch reference runs: as [`set_reference_device`] said, else on CUDA when our side
/// runs on a GPU (`MPDP_DEVICE=wgpu`), so both sides of a ratio use the same kind of device, and
/// on the CPU otherwise.
pub fn reference_device() -> &'static str {
    if let Some(device) = REFERENCE_DEVICE.get() {
        return device;
    }
    match crate::nn::requested_device() {
        Ok(crate::nn::Requested::Wgpu(_)) => "cuda",
        _ => "cpu",
    }
}

/// Waits for the compute device to finish queued work, so a timer stopped after it measures the
/// work and not only its queueing (a no-op on the CPU).
pub fn sync_device() {
    crate::nn::device()
        .sync()
        .expect("the compute device failed while running the benchmark");
}

/// The shortest of `repeats` timings of `f`, in seconds, each between device syncs.
pub fn best_of(repeats: usize, mut f: impl FnMut()) -> f64 {
    (0..repeats.max(1))
        .map(|_| {
            sync_device();
            let start = std::time::Instant::now();
            f();
            sync_device();
            start.elapsed().as_secs_f64()
        })
        .fold(f64::MAX, f64::min)
}

/// Our side's name in the reports: the backend and the kind of device it ran on.
pub fn ours_label() -> &'static str {
    match crate::nn::requested_device() {
        Ok(crate::nn::Requested::Wgpu(_)) => "ours (burn wgpu GPU)",
        _ => "ours (burn flex CPU)",
    }
}

/// The reference's name in the reports.
pub fn reference_label() -> &'static str {
    match reference_device() {
        "cuda" => "PyTorch CUDA",
        _ => "PyTorch CPU",
    }
}

#[derive(Debug, thiserror::Error)]
#[error("running the PyTorch reference ({command}): {message}")]
pub struct ReferenceError {
    command: String,
    message: String,
}

/// What a reference script printed: `key=value` lines, one of them `torch=<version> ...`.
pub struct ReferenceReply {
    command: String,
    stdout: String,
}

impl ReferenceReply {
    /// The number on the `key=` line.
    pub fn value(&self, key: &str) -> Result<f64, ReferenceError> {
        let prefix = format!("{key}=");
        self.stdout
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| ReferenceError {
                command: self.command.clone(),
                message: format!("no {prefix} line in: {}", self.stdout),
            })
    }

    /// The `torch=...` line (version and threads).
    pub fn torch(&self) -> String {
        self.stdout
            .lines()
            .find(|l| l.starts_with("torch="))
            .unwrap_or("torch=?")
            .to_string()
    }
}

/// Runs `bench/reference/<script>` with `python` and `args`, on [`reference_device`].
pub fn run_reference(
    python: &Path,
    script: &str,
    args: &[(&str, String)],
) -> Result<ReferenceReply, ReferenceError> {
    let script = reference_script(script);
    let command = format!("{} {}", python.display(), script.display());
    let fail = |message: String| ReferenceError {
        command: command.clone(),
        message,
    };
    let out = std::process::Command::new(python)
        .arg(&script)
        .args(args.iter().flat_map(|(k, v)| [k.to_string(), v.clone()]))
        .args(["--device", reference_device()])
        .output()
        .map_err(|e| fail(format!("{e}; run `just bench-setup`")))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(fail(stderr.lines().last().unwrap_or("failed").to_string()));
    }
    Ok(ReferenceReply {
        command,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
    })
}
