//! The local executor: every run of a plan that is not done, one child process each, as
//! many at once as the spec's device slots allow.
//!
//! Children get the slot's device (`MPDP_DEVICE`, see `device_env`) and the run's
//! thread budget (`RAYON_NUM_THREADS`), write their output to `output.log` in the run
//! directory, and are sent SIGTERM if the scheduler dies (`PR_SET_PDEATHSIG`), so they
//! checkpoint instead of running on unsupervised. A run another process holds is waited
//! for, then counted (or taken over if its holder dies).
use std::collections::VecDeque;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{
    EXIT_BUSY, EXIT_PREEMPTED, RunStatus, SchedError, check_device, fmt_duration, io_err, run_dir,
    status_of, tail, unique_runs,
};
use crate::spec::{DeviceKind, Plan, PlannedRun, Slot};
use crate::store::lock::{heartbeat_every, read_lock};
use crate::store::read_status;

pub struct LocalOptions {
    /// Absolute runs directory.
    pub runs_dir: PathBuf,
    /// The plan file children read (see [`super::write_plan_file`]).
    pub plan_file: PathBuf,
    /// The `mpdp` binary children run.
    pub exe: PathBuf,
    /// Run failed runs again (by default they are listed, not retried).
    pub retry_failed: bool,
    /// With `retry_failed`: start failed runs over instead of resuming them.
    pub from_scratch: bool,
    /// Set by SIGINT/SIGTERM: start nothing more, let running children checkpoint.
    pub stop: Arc<AtomicBool>,
}

/// A run that failed, with the last lines of its logs.
#[derive(Debug, Clone)]
pub struct Failure {
    pub run: PlannedRun,
    pub reason: String,
    pub tail: Vec<String>,
}

#[derive(Debug, Default)]
pub struct Summary {
    pub total: usize,
    /// Done before this call.
    pub skipped: usize,
    /// Finished by this call.
    pub finished: usize,
    /// Finished by another executor while this one waited.
    pub finished_elsewhere: usize,
    pub failed: Vec<Failure>,
    /// Stopped by a signal; they resume on the next call.
    pub preempted: usize,
    pub stopped: bool,
}

struct Active<'a> {
    run: &'a PlannedRun,
    child: Child,
    slot: usize,
    started: Instant,
    bar: ProgressBar,
}

/// Runs every run of `plan` that is not done.
pub fn run(plan: &Plan, opts: &LocalOptions) -> Result<Summary, SchedError> {
    check_device(plan.spec.devices.kind)?;
    let runs = unique_runs(plan);
    let mut summary = Summary {
        total: runs.len(),
        ..Summary::default()
    };
    let mut queue = VecDeque::new();
    // Failed runs to start over (--retry-failed --from-scratch).
    let mut restart = std::collections::HashSet::new();
    for run in runs {
        match status_of(&run_dir(&opts.runs_dir, run)) {
            RunStatus::Done => {
                // A crash as it finished may have left a temporary file behind, and nothing
                // writes here again to clear it (`store::tmp_path`).
                crate::store::remove_abandoned_tmp(&run_dir(&opts.runs_dir, run));
                summary.skipped += 1;
            }
            RunStatus::Failed(reason) if !opts.retry_failed => summary.failed.push(Failure {
                run: run.clone(),
                reason: format!(
                    "{reason} (failed before; --retry-failed resumes it, with --from-scratch \
                     starts it over)"
                ),
                tail: tail(&run_dir(&opts.runs_dir, run), 5),
            }),
            RunStatus::Failed(_) => {
                if opts.from_scratch {
                    restart.insert(run.run_id.clone());
                }
                queue.push_back(run);
            }
            _ => queue.push_back(run),
        }
    }
    let slots = &plan.spec.devices.slots;
    let mut free = vec![true; slots.len()];
    let mut active: Vec<Active> = Vec::new();
    let mut waiting: Vec<(&PlannedRun, Instant)> = Vec::new();
    let ui = Ui::new(queue.len() as u64);
    ui.say(&format!(
        "{}: {} runs, {} done already, {} to run, {} at a time",
        plan.spec.name,
        summary.total,
        summary.skipped,
        queue.len(),
        slots.len()
    ));
    let mut signalled = false;
    let mut last_poll = Instant::now() - Duration::from_secs(1);
    loop {
        let stopping = opts.stop.load(Ordering::SeqCst);
        if stopping && !signalled {
            // Children in our process group got a terminal's SIGINT already; a SIGTERM sent
            // to us alone is passed on.
            for a in &active {
                // SAFETY: sending SIGTERM to a child we spawned and have not reaped.
                unsafe { libc::kill(a.child.id() as i32, libc::SIGTERM) };
            }
            signalled = true;
            summary.stopped = true;
        }
        while let Some(slot) = free.iter().position(|f| *f && !stopping) {
            let Some(run) = queue.pop_front() else {
                break;
            };
            let dir = run_dir(&opts.runs_dir, run);
            match status_of(&dir) {
                RunStatus::Running(holder) => {
                    ui.say(&format!(
                        "waiting for {} (held by {} on {})",
                        describe(run),
                        holder.owner,
                        holder.host
                    ));
                    waiting.push((run, Instant::now() + heartbeat_every()));
                    continue;
                }
                // Another executor finished it since the plan was read: no child is needed.
                RunStatus::Done => {
                    finished_elsewhere(&mut summary, &ui, run);
                    continue;
                }
                _ => {}
            }
            let scratch = restart.contains(&run.run_id);
            let child = spawn(run, &dir, slots[slot], plan, opts, scratch)?;
            free[slot] = false;
            if ui.plain {
                ui.say(&format!("start   {}", describe(run)));
            }
            let bar = ui.run_bar(run);
            active.push(Active {
                run,
                child,
                slot,
                started: Instant::now(),
                bar,
            });
        }
        let mut i = 0;
        while i < active.len() {
            let exit = active[i]
                .child
                .try_wait()
                .map_err(|e| SchedError::Usage(format!("waiting for a run: {e}")))?;
            let Some(exit) = exit else {
                i += 1;
                continue;
            };
            let a = active.swap_remove(i);
            free[a.slot] = true;
            a.bar.finish_and_clear();
            ui.multi.remove(&a.bar);
            let dir = run_dir(&opts.runs_dir, a.run);
            let took = fmt_duration(a.started.elapsed().as_secs_f64());
            match exit.code() {
                // The run finished between our status check and the child's: the child
                // found it done and exited 0 without writing anything.
                Some(0) if !finished_by(&dir, a.child.id()) => {
                    finished_elsewhere(&mut summary, &ui, a.run);
                }
                Some(0) => {
                    summary.finished += 1;
                    ui.overall.inc(1);
                    let eval = crate::runner::read_metrics(&dir.join("metrics.parquet"))
                        .ok()
                        .and_then(|rows| {
                            rows.iter()
                                .rev()
                                .find(|r| r.metric == "eval/return_mean")
                                .map(|r| format!(", eval return {:.1}", r.value))
                        })
                        .unwrap_or_default();
                    ui.say(&format!("done    {} in {took}{eval}", describe(a.run)));
                }
                Some(code) if code == i32::from(EXIT_BUSY) => {
                    waiting.push((a.run, Instant::now() + heartbeat_every()));
                }
                Some(code) if code == i32::from(EXIT_PREEMPTED) => {
                    if opts.stop.load(Ordering::SeqCst) {
                        summary.preempted += 1;
                        ui.say(&format!("stopped {} (checkpointed)", describe(a.run)));
                    } else {
                        ui.say(&format!(
                            "requeued {} (stopped by a signal)",
                            describe(a.run)
                        ));
                        queue.push_back(a.run);
                    }
                }
                code => {
                    let reason = match read_status(&dir).and_then(|s| s.reason) {
                        Some(r) => r,
                        None => match (code, exit.signal()) {
                            (Some(c), _) => format!("exit code {c}"),
                            (None, Some(s)) => format!("killed by signal {s}"),
                            _ => "ended abnormally".into(),
                        },
                    };
                    if opts.stop.load(Ordering::SeqCst) && exit.signal().is_some() {
                        summary.preempted += 1;
                    } else {
                        ui.overall.inc(1);
                        ui.say(&format!(
                            "FAILED  {} after {took}: {reason}",
                            describe(a.run)
                        ));
                        summary.failed.push(Failure {
                            run: a.run.clone(),
                            reason,
                            tail: tail(&dir, 5),
                        });
                    }
                }
            }
        }
        let now = Instant::now();
        let mut j = 0;
        while j < waiting.len() {
            let (run, at) = waiting[j];
            if now < at && !opts.stop.load(Ordering::SeqCst) {
                j += 1;
                continue;
            }
            waiting.swap_remove(j);
            match status_of(&run_dir(&opts.runs_dir, run)) {
                RunStatus::Done => finished_elsewhere(&mut summary, &ui, run),
                RunStatus::Running(_) if !opts.stop.load(Ordering::SeqCst) => {
                    waiting.push((run, now + heartbeat_every()));
                }
                _ if opts.stop.load(Ordering::SeqCst) => {}
                _ => queue.push_back(run),
            }
        }
        if last_poll.elapsed() >= Duration::from_millis(500) {
            last_poll = Instant::now();
            for a in &active {
                if let Some(l) = read_lock(&run_dir(&opts.runs_dir, a.run)) {
                    a.bar.set_position(l.step);
                    if let Some(e) = l.last_eval {
                        a.bar.set_message(format!("eval {e:.1}"));
                    }
                }
            }
            ui.overall.set_message(format!(
                "{} running, {} waiting, {} failed",
                active.len(),
                waiting.len(),
                summary.failed.len()
            ));
        }
        let stopping = opts.stop.load(Ordering::SeqCst);
        if active.is_empty() && (stopping || (queue.is_empty() && waiting.is_empty())) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    ui.overall.finish_and_clear();
    Ok(summary)
}

/// Whether the process `pid` of this host wrote the run's final status.
fn finished_by(dir: &Path, pid: u32) -> bool {
    read_status(dir).is_some_and(|s| s.pid == pid && s.host == crate::store::hostname())
}

/// Counts and reports `run` as finished by another executor.
fn finished_elsewhere(summary: &mut Summary, ui: &Ui, run: &PlannedRun) {
    summary.finished_elsewhere += 1;
    ui.overall.inc(1);
    ui.say(&format!("done    {} (by another executor)", describe(run)));
}

fn describe(run: &PlannedRun) -> String {
    format!(
        "{} {} seed {} ({})",
        run.label(),
        run.env,
        run.seed,
        run.run_id
    )
}

fn spawn(
    run: &PlannedRun,
    dir: &Path,
    slot: Slot,
    plan: &Plan,
    opts: &LocalOptions,
    from_scratch: bool,
) -> Result<Child, SchedError> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let out_path = dir.join("output.log");
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&out_path)
        .map_err(io_err(&out_path))?;
    let err = out.try_clone().map_err(io_err(&out_path))?;
    let devices = &plan.spec.devices;
    let threads = devices.threads_per_run.to_string();
    let mut cmd = Command::new(&opts.exe);
    cmd.arg("run-one")
        .arg("--plan")
        .arg(&opts.plan_file)
        .args(["--run-id", &run.run_id])
        .arg("--runs-dir")
        .arg(&opts.runs_dir)
        .args(["--quiet", "--owner"])
        .arg(format!("mpdp run (pid {})", std::process::id()))
        .args(from_scratch.then_some("--from-scratch"))
        .env("RAYON_NUM_THREADS", &threads)
        .env("OMP_NUM_THREADS", &threads)
        .envs(device_env(devices.kind, slot))
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    end_with_parent(&mut cmd);
    cmd.spawn().map_err(io_err(&opts.exe))
}

/// Has the kernel send the process `cmd` spawns SIGTERM when the spawning thread ends
/// (`PR_SET_PDEATHSIG` fires on the thread, not the process), so a killed parent leaves no
/// training child behind. A parent already gone by the time the child starts fails the spawn.
pub fn end_with_parent(cmd: &mut Command) -> &mut Command {
    let parent = std::process::id();
    // SAFETY: prctl and getppid are async-signal-safe; they only concern the child.
    unsafe {
        cmd.pre_exec(move || {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            if libc::getppid() as u32 != parent {
                return Err(std::io::Error::other(
                    "the parent ended before the child started",
                ));
            }
            Ok(())
        })
    }
}

/// What a child is told about its slot's device. CUDA picks its GPU from
/// `CUDA_VISIBLE_DEVICES`; wgpu (Vulkan) ignores that variable, so a wgpu slot on a GPU that
/// `devices.gpus` lists names it in `MPDP_DEVICE=wgpu:N`, and one without a listed GPU takes
/// wgpu's default adapter.
fn device_env(kind: DeviceKind, slot: Slot) -> Vec<(&'static str, String)> {
    let device = crate::nn::DEVICE_ENV_VAR;
    match (kind, slot.gpu) {
        (DeviceKind::Cpu, _) => vec![(device, kind.name().into())],
        (DeviceKind::Wgpu, gpu) => vec![(device, crate::nn::Requested::Wgpu(gpu).env_value())],
        (DeviceKind::Cuda, None) => vec![(device, kind.name().into())],
        (DeviceKind::Cuda, Some(gpu)) => vec![
            (device, kind.name().into()),
            ("CUDA_VISIBLE_DEVICES", gpu.to_string()),
        ],
    }
}

/// Progress display: an overall bar and a line per active run on a terminal, plain event
/// lines otherwise.
struct Ui {
    multi: MultiProgress,
    overall: ProgressBar,
    plain: bool,
}

impl Ui {
    fn new(runs: u64) -> Self {
        use std::io::IsTerminal;
        let plain = !std::io::stderr().is_terminal();
        let multi = MultiProgress::with_draw_target(if plain {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        });
        let overall = multi.add(ProgressBar::new(runs));
        overall.set_style(
            ProgressStyle::with_template("runs {bar:30} {pos}/{len}  {msg}  elapsed {elapsed}")
                .expect("template"),
        );
        Ui {
            multi,
            overall,
            plain,
        }
    }

    fn run_bar(&self, run: &PlannedRun) -> ProgressBar {
        let bar = self.multi.add(ProgressBar::new(run.config.total_steps));
        bar.set_style(
            ProgressStyle::with_template("  {prefix:40} {bar:20} {human_pos}/{human_len}  {msg}")
                .expect("template"),
        );
        bar.set_prefix(format!("{} {} s{}", run.label(), run.env, run.seed));
        bar
    }

    fn say(&self, line: &str) {
        if self.plain {
            eprintln!("{line}");
        } else {
            let _ = self.multi.println(line);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the smoke spec's plan with `child` standing in for `mpdp run-one`: a shell
    /// script body that sees the run's directory as `$dir`.
    fn run_with_child(name: &str, child: &str) -> Summary {
        use std::os::unix::fs::PermissionsExt;
        let root = std::env::temp_dir().join(format!("mpdp-local-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        let spec = Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments/smoke.toml");
        let plan = crate::spec::load(&spec, &[]).unwrap();
        let exe = root.join("child.sh");
        let script = format!(
            "#!/bin/sh\nwhile [ $# -gt 0 ]; do case $1 in --run-id) id=$2;; --runs-dir) runs=$2;; esac; shift; done\ndir=\"$runs/{}/$id\"\n{child}\n",
            plan.spec.name
        );
        std::fs::write(&exe, script).unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        let opts = LocalOptions {
            runs_dir: root.join("runs"),
            plan_file: root.join("plan.toml"),
            exe,
            retry_failed: false,
            from_scratch: false,
            stop: Arc::new(AtomicBool::new(false)),
        };
        let summary = run(&plan, &opts).unwrap();
        std::fs::remove_dir_all(&root).unwrap();
        summary
    }

    fn done_status(pid: &str, host: &str) -> String {
        format!(
            "printf '{{\"state\":\"done\",\"step\":300,\"total_steps\":300,\"reason\":null,\"host\":\"{host}\",\"pid\":%s,\"updated\":0}}' {pid} > \"$dir/status.json\""
        )
    }

    /// Regression: a run another executor finished after this one's status check was found
    /// done by the child, which exited 0, and was counted as finished here.
    #[test]
    fn a_child_that_finds_its_run_done_counts_as_finished_elsewhere() {
        let elsewhere = run_with_child("elsewhere", &done_status("1", "another-host"));
        assert_eq!(
            (elsewhere.finished, elsewhere.finished_elsewhere),
            (0, 4),
            "{elsewhere:?}"
        );
        let here = run_with_child("here", &done_status("$$", &crate::store::hostname()));
        assert_eq!((here.finished, here.finished_elsewhere), (4, 0), "{here:?}");
    }

    fn env(kind: DeviceKind, gpu: Option<usize>) -> Vec<(&'static str, String)> {
        device_env(kind, Slot { gpu })
    }

    /// Regression: a wgpu slot's GPU went only into CUDA_VISIBLE_DEVICES, which wgpu
    /// (Vulkan) ignores, so every wgpu run of a multi-GPU spec shared the default adapter.
    #[test]
    fn each_slot_names_its_device_the_way_its_backend_reads_it() {
        let device = crate::nn::DEVICE_ENV_VAR;
        assert_eq!(env(DeviceKind::Cpu, None), [(device, "cpu".to_string())]);
        assert_eq!(env(DeviceKind::Wgpu, None), [(device, "wgpu".to_string())]);
        assert_eq!(
            env(DeviceKind::Wgpu, Some(2)),
            [(device, "wgpu:2".to_string())]
        );
        assert_eq!(
            env(DeviceKind::Cuda, Some(1)),
            [
                (device, "cuda".to_string()),
                ("CUDA_VISIBLE_DEVICES", "1".to_string())
            ]
        );
    }
}
