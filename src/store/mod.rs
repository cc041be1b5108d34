//! The runs/ directory contract: atomic writes, status files, logs, provenance.
//!
//! A run directory `runs/<experiment>/<run_id>/` holds `resolved.toml` (the fully resolved run
//! config), `provenance.json`, `status.json` (written last, atomically), `metrics.parquet` once
//! done (and `metrics/part-*.parquet` chunks written with each checkpoint while running),
//! `ckpt/` and `log.txt`.
pub mod lock;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Environment variable for fault injection: `MPDP_FAULT_AFTER_WRITES=N` aborts the process
/// (no unwinding, no cleanup, as a kill would) at the N-th write step of the run directory
/// (each file written, each rename, each deletion, counted by [`fault_point`]);
/// `MPDP_FAULT_AFTER_WRITES=panic:N` panics there instead, as a bug would. Tests use it to
/// crash a run at every step of checkpointing and finishing.
pub const FAULT_ENV_VAR: &str = "MPDP_FAULT_AFTER_WRITES";

/// Counts one write step and aborts the process if it is the one `MPDP_FAULT_AFTER_WRITES`
/// names. Costs an atomic increment when the variable is unset.
pub fn fault_point() {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static AT: OnceLock<Option<(bool, u64)>> = OnceLock::new();
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let at = AT.get_or_init(|| {
        let value = std::env::var(FAULT_ENV_VAR).ok()?;
        match value.strip_prefix("panic:") {
            Some(n) => Some((true, n.parse().ok()?)),
            None => Some((false, value.parse().ok()?)),
        }
    });
    let n = COUNT.fetch_add(1, Ordering::SeqCst) + 1;
    match *at {
        Some((true, k)) if k == n => panic!("{FAULT_ENV_VAR}: a panic at write step {n}"),
        Some((false, k)) if k == n => {
            eprintln!("{FAULT_ENV_VAR}={n}: aborting at write step {n}");
            std::process::abort();
        }
        _ => {}
    }
}

/// Writes `bytes` to `path` atomically: a temporary file in the same directory, synced,
/// then renamed over `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_file_atomic(path, bytes, fault_point)
}

/// [`write_atomic`] with `step` called before the file is written and before the rename
/// (the lock's heartbeats, which are not the run's data, pass a no-op).
fn write_file_atomic(path: &Path, bytes: &[u8], step: fn()) -> std::io::Result<()> {
    let tmp = tmp_path(path);
    step();
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    step();
    std::fs::rename(&tmp, path)
}

/// `std::fs::rename`, a counted write step.
pub fn rename(from: &Path, to: &Path) -> std::io::Result<()> {
    fault_point();
    std::fs::rename(from, to)
}

/// Removes a directory and what it holds, if it is there; a counted write step.
pub fn remove_dir(dir: &Path) {
    if dir.exists() {
        fault_point();
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// `dir/.name.<pid>-<n>.tmp` for `dir/name`: unique per process and call, so writers in
/// several processes (two schedulers, a heartbeat and its run) never share a temporary. Every
/// atomic write takes its temporary here, so this is also where the temporaries that killed
/// writers left in `dir` are cleared ([`remove_abandoned_tmp`]).
pub fn tmp_path(path: &Path) -> PathBuf {
    if let Some(dir) = path.parent() {
        remove_abandoned_tmp(dir);
    }
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{}-{n}.tmp", std::process::id()))
}

/// Removes the temporary files that a writer killed between writing and renaming left in
/// `dir` (`.<name>.<pid>-<n>.tmp`, see [`tmp_path`]): those whose writer is no longer a live
/// process on this host, or that are older than a stale lock (a writer on another host, or a
/// reused pid). A live writer's, this process's included, is kept; a file that cannot be
/// removed is left. [`tmp_path`] calls it before every atomic write; a finished run, which
/// nothing writes to, is cleared by whoever finds it finished.
pub fn remove_abandoned_tmp(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(tmp_writer) else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > lock::stale_after());
        if old || !lock::pid_alive(pid) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// The writer's pid in a file name [`tmp_path`] made, `None` for any other name.
fn tmp_writer(name: &str) -> Option<u32> {
    let rest = name.strip_prefix('.')?.strip_suffix(".tmp")?;
    let (_, writer) = rest.rsplit_once('.')?;
    let (pid, n) = writer.split_once('-')?;
    n.parse::<u64>().ok()?;
    pid.parse().ok()
}

/// A finished run's metrics. The runner writes it (atomically) only once the run has
/// finished, before its `done` status: a run that has it is finished whatever `status.json`
/// says, and its rows are never rewritten.
pub const METRICS_FILE: &str = "metrics.parquet";

/// Whether the run in `run_dir` has finished: its status says so, or its metrics file exists
/// (a crash or a damaged `status.json` can leave the second without the first).
pub fn is_finished(run_dir: &Path) -> bool {
    finished_with(run_dir, read_status(run_dir).as_ref())
}

/// [`is_finished`] for a caller that has read the status already.
pub fn finished_with(run_dir: &Path, status: Option<&Status>) -> bool {
    status.is_some_and(|s| s.state == RunState::Done) || run_dir.join(METRICS_FILE).is_file()
}

/// Lifecycle of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    Running,
    Done,
    Failed,
    Preempted,
}

/// `status.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub state: RunState,
    pub step: u64,
    pub total_steps: u64,
    /// Why a run failed or stopped.
    pub reason: Option<String>,
    pub host: String,
    pub pid: u32,
    /// Seconds since the Unix epoch.
    pub updated: f64,
}

impl Status {
    pub fn new(state: RunState, step: u64, total_steps: u64, reason: Option<String>) -> Self {
        Status {
            state,
            step,
            total_steps,
            reason,
            host: hostname(),
            pid: std::process::id(),
            updated: unix_now(),
        }
    }
}

pub fn status_path(run_dir: &Path) -> PathBuf {
    run_dir.join("status.json")
}

pub fn read_status(run_dir: &Path) -> Option<Status> {
    let text = std::fs::read_to_string(status_path(run_dir)).ok()?;
    serde_json::from_str(&text).ok()
}

pub fn write_status(run_dir: &Path, status: &Status) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(status).expect("status serialises");
    write_atomic(&status_path(run_dir), text.as_bytes())
}

/// Appends timestamped lines to `log.txt`.
pub struct RunLog {
    file: std::fs::File,
}

impl RunLog {
    pub fn open(run_dir: &Path) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(run_dir.join("log.txt"))?;
        Ok(RunLog { file })
    }

    pub fn line(&mut self, message: &str) {
        // A log line that cannot be written must not stop training.
        let _ = writeln!(self.file, "[{:.3}] {message}", unix_now());
    }
}

pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// Code version the binary was built from (build.rs).
pub fn git_commit() -> (&'static str, bool) {
    (env!("MPDP_GIT_COMMIT"), env!("MPDP_GIT_DIRTY") == "true")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Left by a writer that died (a finished child's pid) or one too old: removed. The
    /// live writers' (this process, the test harness' parent) and other names: kept.
    #[test]
    fn abandoned_temporary_files_are_removed_and_live_ones_kept() {
        let dir = std::env::temp_dir().join(format!("mpdp-tmp-sweep-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let me = std::process::id();
        let parent = std::os::unix::process::parent_id();
        let touch = |name: &str, age_s: u64| {
            let f = std::fs::File::create(dir.join(name)).unwrap();
            let t = std::time::SystemTime::now() - std::time::Duration::from_secs(age_s);
            f.set_modified(t).unwrap();
        };
        let gone = [
            format!(".status.json.{dead}-3.tmp"),
            format!(".lock.json.{parent}-7.tmp"),
        ];
        let kept = [
            format!(".status.json.{me}-0.tmp"),
            format!(".lock.json.{parent}-8.tmp"),
            format!("status.json.{dead}-3.tmp"),
            format!(".status.json.{dead}.tmp"),
            "notes.tmp".to_string(),
        ];
        touch(&gone[0], 0);
        touch(&gone[1], 3600);
        touch(&kept[0], 3600);
        touch(&kept[1], 0);
        for name in &kept[2..] {
            touch(name, 3600);
        }
        remove_abandoned_tmp(&dir);
        for name in &gone {
            assert!(!dir.join(name).exists(), "{name} left");
        }
        for name in &kept {
            assert!(dir.join(name).exists(), "{name} removed");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn atomic_write_replaces_whole_files() {
        let dir = std::env::temp_dir().join(format!("mpdp-store-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("status.json");
        write_atomic(&p, b"first").unwrap();
        write_atomic(&p, b"second").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"second");
        let names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
        let s = Status::new(RunState::Preempted, 5, 10, Some("SIGTERM".into()));
        write_status(&dir, &s).unwrap();
        assert_eq!(read_status(&dir).unwrap(), s);
        std::fs::remove_dir_all(&dir).ok();
    }
}
