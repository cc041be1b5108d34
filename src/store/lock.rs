//! Claiming a run: `lock.json` in the run directory, created exclusively, holding who runs it
//! and a heartbeat with its progress. Two executors over one runs/ never run a run twice;
//! the lock of a process that died is taken over (at once on the same host, when its pid is
//! gone; elsewhere when its heartbeat is older than [`stale_after`]).
//!
//! Heartbeats rather than `flock`: advisory locks are unreliable on NFS and Lustre, where
//! runs/ of a cluster usually lives.
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{hostname, unix_now, write_file_atomic};

/// The lock file is written outside the fault-injection count (see `super::fault_point`).
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_file_atomic(path, bytes, || {})
}

/// Seconds between heartbeats (env `MPDP_HEARTBEAT_S`, default 5).
pub fn heartbeat_every() -> Duration {
    secs_from_env("MPDP_HEARTBEAT_S", 5.0)
}

/// A lock whose heartbeat is older than this is stale (env `MPDP_STALE_S`, default 60).
pub fn stale_after() -> Duration {
    secs_from_env("MPDP_STALE_S", 60.0)
}

fn secs_from_env(var: &str, default: f64) -> Duration {
    let secs = std::env::var(var)
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .unwrap_or(default);
    Duration::from_secs_f64(secs)
}

/// Live progress of a run, shared between its loop and its heartbeat.
#[derive(Debug, Default)]
pub struct Live {
    pub step: AtomicU64,
    /// The step this process started from (a resumed run's checkpoint step).
    pub start_step: AtomicU64,
    /// Bits of the last eval return (`f64::NAN` bits before the first).
    pub last_eval: AtomicU64,
}

impl Live {
    pub fn new(step: u64) -> Self {
        Live {
            step: AtomicU64::new(step),
            start_step: AtomicU64::new(step),
            last_eval: AtomicU64::new(f64::NAN.to_bits()),
        }
    }

    /// The run (re)starts at `step`: a resume from a checkpoint, once the claim is held.
    pub fn start_at(&self, step: u64) {
        self.start_step.store(step, Ordering::Relaxed);
        self.step.store(step, Ordering::Relaxed);
    }

    pub fn set_eval(&self, value: f64) {
        self.last_eval.store(value.to_bits(), Ordering::Relaxed);
    }
}

/// `lock.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LockInfo {
    pub host: String,
    pub pid: u32,
    /// Who started the process: `mpdp run (pid N)`, `slurm 1234_5`, `run-one`.
    pub owner: String,
    /// Seconds since the Unix epoch.
    pub claimed: f64,
    pub heartbeat: f64,
    /// Step this process started from (a resumed run's checkpoint step) and now.
    pub start_step: u64,
    pub step: u64,
    pub total_steps: u64,
    pub last_eval: Option<f64>,
    /// Steps per second over the last [`RATE_WINDOW_S`] seconds (absent until two
    /// heartbeats apart have seen progress; older lock files lack it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recent_rate: Option<f64>,
}

/// The span over which a lock's `recent_rate` is measured: long enough to average over a
/// model fit or an evaluation, short enough to follow a run from its fast random warm-up into
/// its slower learning phase.
pub const RATE_WINDOW_S: f64 = 600.0;

/// Progress samples (time, step) of the last [`RATE_WINDOW_S`] seconds, plus one older anchor.
#[derive(Debug, Default)]
pub struct RateWindow {
    samples: std::collections::VecDeque<(f64, u64)>,
}

impl RateWindow {
    pub fn push(&mut self, t: f64, step: u64) {
        self.samples.push_back((t, step));
        while self.samples.len() > 2 && t - self.samples[1].0 >= RATE_WINDOW_S {
            self.samples.pop_front();
        }
    }

    pub fn clear(&mut self) {
        self.samples.clear();
    }

    /// Steps per second between the oldest and newest sample.
    pub fn rate(&self) -> Option<f64> {
        let (&(t0, s0), &(t1, s1)) = (self.samples.front()?, self.samples.back()?);
        (t1 - t0 > 1.0 && s1 > s0).then(|| (s1 - s0) as f64 / (t1 - t0))
    }
}

impl LockInfo {
    /// The holder is gone: its process no longer exists (same host) or its heartbeat is
    /// older than `stale_after`.
    pub fn is_stale(&self, now: f64, stale_after: Duration) -> bool {
        (self.host == hostname() && !pid_alive(self.pid))
            || now - self.heartbeat > stale_after.as_secs_f64()
    }

    /// Steps per second: over the last [`RATE_WINDOW_S`] seconds, else since the claim.
    pub fn rate(&self) -> Option<f64> {
        self.recent_rate.or_else(|| {
            let dt = self.heartbeat - self.claimed;
            (dt > 1.0 && self.step > self.start_step)
                .then(|| (self.step - self.start_step) as f64 / dt)
        })
    }
}

pub(crate) fn pid_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    // SAFETY: kill with signal 0 sends nothing; it only checks that the process exists.
    let rc = unsafe { libc::kill(pid, 0) };
    let exists = rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    exists && !is_zombie(pid)
}

/// Whether `pid` has exited but not been reaped yet (state `Z` in `/proc/<pid>/stat`): a
/// killed child whose parent has not waited for it holds no run.
fn is_zombie(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "pid (comm) S ...": the state follows the last ')', as comm may hold spaces.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .is_some_and(|state| state == "Z")
}

pub fn lock_path(run_dir: &Path) -> PathBuf {
    run_dir.join("lock.json")
}

/// The current holder of `run_dir`'s lock, if any (stale or not).
pub fn read_lock(run_dir: &Path) -> Option<LockInfo> {
    let text = std::fs::read_to_string(lock_path(run_dir)).ok()?;
    serde_json::from_str(&text).ok()
}

/// A live, unexpired holder of `run_dir`'s lock.
pub fn live_lock(run_dir: &Path) -> Option<LockInfo> {
    read_lock(run_dir).filter(|l| !l.is_stale(unix_now(), stale_after()))
}

pub enum Claim {
    Acquired(Lock),
    /// Someone else holds the run.
    Busy(LockInfo),
}

/// A held lock; its heartbeat thread refreshes it until it is dropped or released.
pub struct Lock {
    path: PathBuf,
    info: Arc<Mutex<LockInfo>>,
    quit: Arc<AtomicBool>,
    lost: Arc<AtomicBool>,
    beat: Option<JoinHandle<()>>,
}

impl Lock {
    /// Claims `run_dir` for this process, taking over a stale lock. The heartbeat carries
    /// `live`'s progress; if the lock is taken from us (we were thought dead), `stop` is set
    /// so the run ends, writing nothing more (see [`Lock::held`]).
    pub fn claim(
        run_dir: &Path,
        owner: &str,
        total_steps: u64,
        live: Arc<Live>,
        stop: Arc<AtomicBool>,
    ) -> std::io::Result<Claim> {
        let path = lock_path(run_dir);
        let now = unix_now();
        let step = live.step.load(Ordering::Relaxed);
        let info = LockInfo {
            host: hostname(),
            pid: std::process::id(),
            owner: owner.to_string(),
            claimed: now,
            heartbeat: now,
            start_step: step,
            step,
            total_steps,
            last_eval: None,
            recent_rate: None,
        };
        for _ in 0..3 {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(file) => {
                    drop(file);
                    write_atomic(&path, &to_json(&info))?;
                    return Ok(Claim::Acquired(Lock::start(path, info, live, stop)));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let bytes = std::fs::read(&path).unwrap_or_default();
                    match serde_json::from_slice::<LockInfo>(&bytes) {
                        Ok(holder) if !holder.is_stale(unix_now(), stale_after()) => {
                            return Ok(Claim::Busy(holder));
                        }
                        Ok(_) => take_over(&path, &bytes)?,
                        // Empty or half-written: a claim in progress, unless it is old.
                        Err(_) => {
                            let age = std::fs::metadata(&path)
                                .and_then(|m| m.modified())
                                .ok()
                                .and_then(|t| t.elapsed().ok())
                                .unwrap_or_default();
                            if age > stale_after() {
                                take_over(&path, &bytes)?;
                            } else {
                                std::thread::sleep(Duration::from_millis(100));
                            }
                        }
                    }
                }
                Err(e) => return Err(e),
            }
        }
        match read_lock(run_dir) {
            Some(holder) => Ok(Claim::Busy(holder)),
            None => Err(std::io::Error::other(format!(
                "{}: could not claim the run",
                path.display()
            ))),
        }
    }

    fn start(path: PathBuf, info: LockInfo, live: Arc<Live>, stop: Arc<AtomicBool>) -> Lock {
        let info = Arc::new(Mutex::new(info));
        let quit = Arc::new(AtomicBool::new(false));
        let lost = Arc::new(AtomicBool::new(false));
        let beat = {
            let (path, info, quit, lost) = (path.clone(), info.clone(), quit.clone(), lost.clone());
            std::thread::spawn(move || {
                let every = heartbeat_every();
                let tick = Duration::from_millis(50).min(every);
                let mut waited = Duration::ZERO;
                let mut window = RateWindow::default();
                while !quit.load(Ordering::Relaxed) {
                    std::thread::sleep(tick);
                    waited += tick;
                    if waited < every {
                        continue;
                    }
                    waited = Duration::ZERO;
                    let mut info = info.lock().expect("lock info");
                    if !still_ours(&path, &info) {
                        lost.store(true, Ordering::SeqCst);
                        stop.store(true, Ordering::SeqCst);
                        return;
                    }
                    info.heartbeat = unix_now();
                    let start = live.start_step.load(Ordering::Relaxed);
                    if start != info.start_step {
                        // Resumed from a checkpoint: measure from there.
                        info.start_step = start;
                        window.clear();
                    }
                    info.step = live.step.load(Ordering::Relaxed);
                    window.push(info.heartbeat, info.step);
                    info.recent_rate = window.rate();
                    let eval = f64::from_bits(live.last_eval.load(Ordering::Relaxed));
                    info.last_eval = eval.is_finite().then_some(eval);
                    // A failed heartbeat write is retried at the next beat.
                    let _ = write_atomic(&path, &to_json(&info));
                }
            })
        };
        Lock {
            path,
            info,
            quit,
            lost,
            beat: Some(beat),
        }
    }

    /// True if another process took the lock over (this one was thought dead).
    pub fn lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    /// Whether the lock file still names this process, checked now (not at the last
    /// heartbeat). Call it right before writing into the run directory: a process whose
    /// lock was taken over must not write anything more there.
    pub fn held(&self) -> bool {
        if self.lost() {
            return false;
        }
        let info = self.info.lock().expect("lock info");
        let ours = still_ours(&self.path, &info);
        if !ours {
            self.lost.store(true, Ordering::SeqCst);
        }
        ours
    }

    /// Stops the heartbeat and removes the lock if it is still ours.
    pub fn release(mut self) {
        self.stop_beat();
    }

    fn stop_beat(&mut self) {
        self.quit.store(true, Ordering::SeqCst);
        if let Some(beat) = self.beat.take() {
            let _ = beat.join();
        }
        let info = self.info.lock().expect("lock info");
        if still_ours(&self.path, &info) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        if self.beat.is_some() {
            self.stop_beat();
        }
    }
}

fn to_json(info: &LockInfo) -> Vec<u8> {
    serde_json::to_vec_pretty(info).expect("lock info serialises")
}

fn still_ours(path: &Path, info: &LockInfo) -> bool {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice::<LockInfo>(&b).ok())
        .is_some_and(|l| l.host == info.host && l.pid == info.pid && l.claimed == info.claimed)
}

/// Removes the stale lock at `path` if it still holds `observed`. `lock.json.takeover`,
/// created exclusively, makes the check-and-remove one step among competing claimers.
fn take_over(path: &Path, observed: &[u8]) -> std::io::Result<()> {
    let guard = path.with_extension("json.takeover");
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&guard)
    {
        Ok(_) => {
            if std::fs::read(path).is_ok_and(|now| now == observed) {
                let _ = std::fs::remove_file(path);
            }
            std::fs::remove_file(&guard)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            // Another claimer is taking over; a guard left by a crash expires.
            let old = std::fs::metadata(&guard)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > stale_after());
            if old {
                let _ = std::fs::remove_file(&guard);
            }
            std::thread::sleep(Duration::from_millis(100));
            Ok(())
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: a killed child that its parent had not reaped yet (a zombie) counted as
    /// alive, so its run showed `running` under a dead scheduler for a moment.
    #[test]
    fn an_unreaped_child_is_not_alive() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let t = std::time::Instant::now();
        while !is_zombie(pid as i32) {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "the child never exited"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(!pid_alive(pid));
        child.wait().unwrap();
        assert!(pid_alive(std::process::id()));
    }

    fn tmp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("mpdp-lock-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn claim(dir: &Path) -> Claim {
        let stop = Arc::new(AtomicBool::new(false));
        Lock::claim(dir, "test", 10, Arc::new(Live::new(0)), stop).unwrap()
    }

    #[test]
    fn a_held_lock_is_busy_for_others_and_gone_after_release() {
        let dir = tmp("busy");
        let Claim::Acquired(lock) = claim(&dir) else {
            panic!("first claim must succeed")
        };
        assert!(matches!(claim(&dir), Claim::Busy(h) if h.pid == std::process::id()));
        assert!(live_lock(&dir).is_some());
        lock.release();
        assert!(!lock_path(&dir).exists());
        assert!(matches!(claim(&dir), Claim::Acquired(_)));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn locks_of_dead_processes_and_old_heartbeats_are_taken_over() {
        let dir = tmp("stale");
        let dead = LockInfo {
            host: hostname(),
            // Above the kernel's pid_max (2^22): no such process.
            pid: 4_194_305,
            owner: "crashed".into(),
            claimed: unix_now(),
            heartbeat: unix_now(),
            start_step: 0,
            step: 0,
            total_steps: 10,
            last_eval: None,
            recent_rate: None,
        };
        assert!(dead.is_stale(unix_now(), Duration::from_secs(60)));
        std::fs::write(lock_path(&dir), to_json(&dead)).unwrap();
        assert!(live_lock(&dir).is_none());
        assert!(matches!(claim(&dir), Claim::Acquired(_)));

        let elsewhere = LockInfo {
            host: "another-host".into(),
            pid: 1,
            heartbeat: unix_now() - 3600.0,
            ..dead
        };
        assert!(elsewhere.is_stale(unix_now(), Duration::from_secs(60)));
        let fresh = LockInfo {
            heartbeat: unix_now(),
            ..elsewhere
        };
        assert!(!fresh.is_stale(unix_now(), Duration::from_secs(60)));
        std::fs::remove_dir_all(&dir).ok();
    }

    /// The rate follows the last ten minutes: a fast warm-up (1000 steps in 10 s) then 0.5
    /// steps/s reads 0.5 once the warm-up is older than the window, not the average since
    /// the claim.
    #[test]
    fn the_recent_rate_forgets_what_is_older_than_its_window() {
        let mut w = RateWindow::default();
        assert_eq!(w.rate(), None);
        w.push(0.0, 0);
        w.push(10.0, 1000);
        assert_eq!(w.rate(), Some(100.0));
        for k in 1..=300u64 {
            w.push(10.0 + 5.0 * k as f64, 1000 + k * 5 / 2);
        }
        // 1510 s in all (an average of 1.16 steps/s since the first sample): the window
        // holds the last 600 s (and one anchor at most 5 s older).
        let r = w.rate().unwrap();
        assert!((r - 0.5).abs() < 1e-9, "{r}");
        w.clear();
        w.push(2000.0, 5000);
        assert_eq!(w.rate(), None, "no rate from one sample");
    }
}
