//! The subcommands: each reads its input, calls the library and prints what it did.
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::{Context, Result};
use mpdp::agent;
use mpdp::config::{UsageError, limits};
use mpdp::env::playback;
use mpdp::env::{self, Env, ObsVariant, Task};
use mpdp::runner::{self, EvalConfig, RunConfig, RunOptions, RunOutcome};
use mpdp::sched::{self, EXIT_BUSY, EXIT_PREEMPTED};
use mpdp::spec::{self, Plan};

use crate::cli::{EvalArgs, ReplayArgs, RunOneArgs, SpecArgs, SubmitArgs};

/// Sets `stop` on SIGTERM, SIGINT and SIGUSR1 (Slurm's warning before a time limit).
fn stop_flag() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGUSR1,
    ] {
        signal_hook::flag::register(signal, stop.clone()).context("installing signal handlers")?;
    }
    Ok(stop)
}

/// The run's config: from a plan file, or from the ad-hoc flags.
fn run_one_config(args: &RunOneArgs) -> Result<RunConfig> {
    if let Some(path) = &args.plan {
        // The file is the user's to name: a missing or unreadable one is theirs to fix.
        let runs = sched::read_plan_file(path).map_err(|e| UsageError(e.to_string()))?;
        let run = match (&args.run_id, args.index) {
            (Some(id), _) => runs
                .iter()
                .find(|r| &r.run_id == id)
                .ok_or_else(|| UsageError(format!("{}: no run with id {id}", path.display())))?,
            (None, Some(i)) => runs.get(i).ok_or_else(|| {
                UsageError(format!(
                    "{}: --index {i}, but the plan has {} runs",
                    path.display(),
                    runs.len()
                ))
            })?,
            (None, None) => {
                return Err(UsageError("--plan needs --run-id or --index".into()).into());
            }
        };
        if run.config.run_id() != run.run_id {
            return Err(UsageError(format!(
                "{}: run {} was edited (its config hashes to {})",
                path.display(),
                run.run_id,
                run.config.run_id()
            ))
            .into());
        }
        run.config
            .check()
            .map_err(|m| UsageError(format!("{}: run {}: {m}", path.display(), run.run_id)))?;
        return Ok(run.config.clone());
    }
    let (Some(env), Some(algo), Some(steps)) = (&args.env, &args.algo, args.steps) else {
        return Err(
            UsageError("--env, --algo and --steps are needed without --plan".into()).into(),
        );
    };
    let task: Task = env.parse()?;
    let variant: ObsVariant = args.variant.parse()?;
    mpdp::config::check_name(&args.experiment)
        .map_err(|m| UsageError(format!("--experiment: {m}")))?;
    for (name, v, max) in [
        ("--steps", steps, limits::COUNT),
        ("--eval-every", args.eval_every, limits::COUNT),
        ("--log-every", args.log_every, limits::COUNT),
        ("--num-envs", args.num_envs as u64, limits::ENVS),
        ("--eval-episodes", args.eval_episodes as u64, limits::ENVS),
    ] {
        if v == 0 {
            return Err(UsageError(format!("{name} must be positive")).into());
        }
        if v > max as u64 {
            return Err(UsageError(format!("{name} must be at most {max}, found {v}")).into());
        }
    }
    if args.checkpoint_every > limits::COUNT as u64 {
        return Err(UsageError(format!(
            "--checkpoint-every must be at most {} (0: only by wall time)",
            limits::COUNT
        ))
        .into());
    }
    if let Some(r) = args.stop_at_return.filter(|r| !r.is_finite()) {
        return Err(UsageError(format!(
            "--stop-at-return must be a finite return, found {r}"
        ))
        .into());
    }
    let overrides = mpdp::spec::sets_table(&args.set)?;
    let agent = agent::resolve_params(algo, task, &overrides)?;
    Ok(RunConfig {
        experiment: args.experiment.clone(),
        env: task.name().to_string(),
        obs: variant.name().to_string(),
        seed: args.seed,
        total_steps: steps,
        num_envs: args.num_envs,
        eval: EvalConfig {
            every: args.eval_every,
            episodes: args.eval_episodes,
            stop_at_return: args.stop_at_return,
        },
        checkpoint_every: args.checkpoint_every,
        log_every: args.log_every,
        algo: algo.clone(),
        agent,
    })
}

pub fn run_one(args: &RunOneArgs) -> Result<u8> {
    let cfg = run_one_config(args)?;
    let run_dir = args.runs_dir.join(&cfg.experiment).join(cfg.run_id());
    let minutes = args.checkpoint_minutes;
    // A year at most: far beyond any run, and well inside what a Duration holds.
    const MAX_MINUTES: f64 = 365.0 * 24.0 * 60.0;
    if !(minutes.is_finite() && (0.0..=MAX_MINUTES).contains(&minutes)) {
        return Err(UsageError(format!(
            "--checkpoint-minutes must be a number of minutes in 0..={MAX_MINUTES}, found {minutes}"
        ))
        .into());
    }
    let opts = RunOptions {
        device: mpdp::nn::device(),
        progress: !args.quiet,
        stop: stop_flag()?,
        owner: args.owner.clone(),
        from_scratch: args.from_scratch,
        checkpoint_interval: (minutes > 0.0)
            .then(|| std::time::Duration::from_secs_f64(minutes * 60.0)),
    };
    eprintln!("run {}", run_dir.display());
    match runner::run_one(&cfg, &run_dir, &opts)? {
        RunOutcome::Done => {
            let last = mpdp::store::read_status(&run_dir)
                .map(|s| s.step)
                .unwrap_or(0);
            eprintln!("done ({last} steps): {}", run_dir.display());
            Ok(0)
        }
        RunOutcome::Preempted => {
            eprintln!("preempted; checkpoint saved, rerun the same command to resume");
            Ok(EXIT_PREEMPTED)
        }
        RunOutcome::Failed(reason) => {
            eprintln!("error: run failed: {reason}");
            Ok(1)
        }
        RunOutcome::TakenOver => {
            eprintln!(
                "{}: another process took the run over (this one was thought dead); stopped",
                run_dir.display()
            );
            Ok(EXIT_BUSY)
        }
        RunOutcome::Busy(holder) => {
            eprintln!(
                "{} is held by {} (pid {} on {}, step {}/{}); leaving it to them",
                run_dir.display(),
                holder.owner,
                holder.pid,
                holder.host,
                holder.step,
                holder.total_steps
            );
            Ok(EXIT_BUSY)
        }
    }
}

fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("{}", path.display()))
}

/// Loads the plan and writes it to runs/<experiment>/plans/ for the children.
fn load_for_running(args: &SpecArgs) -> Result<(Plan, PathBuf, PathBuf)> {
    let plan = spec::load(&args.spec, &args.set)?;
    sched::check_device(plan.spec.devices.kind)?;
    let runs_dir = absolute(&args.runs_dir)?;
    let plan_file = sched::plan_path(&runs_dir, &plan);
    sched::write_plan_file(&plan_file, &sched::unique_runs(&plan))?;
    Ok((plan, runs_dir, plan_file))
}

pub fn run_spec(args: &SpecArgs, retry_failed: bool, from_scratch: bool) -> Result<u8> {
    let (plan, runs_dir, plan_file) = load_for_running(args)?;
    let opts = sched::local::LocalOptions {
        runs_dir,
        plan_file,
        exe: std::env::current_exe().context("locating the mpdp binary")?,
        retry_failed,
        from_scratch,
        stop: stop_flag()?,
    };
    let summary = sched::local::run(&plan, &opts)?;
    let mut err = std::io::stderr().lock();
    writeln!(
        err,
        "{}: {} runs: {} done before, {} finished now, {} finished by another executor, {} \
         failed, {} stopped",
        plan.spec.name,
        summary.total,
        summary.skipped,
        summary.finished,
        summary.finished_elsewhere,
        summary.failed.len(),
        summary.preempted
    )?;
    for f in &summary.failed {
        writeln!(
            err,
            "FAILED {} {} seed {} ({}): {}",
            f.run.label(),
            f.run.env,
            f.run.seed,
            f.run.run_id,
            f.reason
        )?;
        for line in &f.tail {
            writeln!(err, "    {line}")?;
        }
    }
    if summary.stopped {
        writeln!(err, "stopped: rerun the same command to resume")?;
        return Ok(EXIT_PREEMPTED);
    }
    Ok(if summary.failed.is_empty() { 0 } else { 1 })
}

/// Prints what aggregation used and left out, and the final scores.
fn report_aggregate(agg: &mpdp::report::Aggregated) -> Result<()> {
    let r = &agg.results;
    let mut err = std::io::stderr().lock();
    writeln!(
        err,
        "{}: aggregated {} done runs into {}",
        r.spec.name,
        r.runs.len(),
        agg.summary_path.display()
    )?;
    if !r.ignored.is_empty() {
        let why: Vec<String> = r
            .ignored_by_reason()
            .iter()
            .map(|(k, n)| format!("{n} {k}"))
            .collect();
        writeln!(
            err,
            "  left out {} runs: {}",
            r.ignored.len(),
            why.join(", ")
        )?;
    }
    let mut out = std::io::stdout().lock();
    if !agg.finals.is_empty() {
        writeln!(
            out,
            "final scores (mean of the last {} evals per run):",
            r.spec.report.final_evals
        )?;
    }
    for f in &agg.finals {
        writeln!(
            out,
            "  {:<28} {:<17} {:>9.1} ± {:<8.1} IQM {:.1} [{:.1}, {:.1}]  n={}",
            f.group,
            f.env,
            f.mean,
            f.std,
            f.iqm,
            f.iqm_lo,
            f.iqm_hi,
            f.scores.len()
        )?;
    }
    Ok(())
}

pub fn aggregate_cmd(args: &SpecArgs) -> Result<()> {
    let plan = spec::load(&args.spec, &args.set)?;
    report_aggregate(&mpdp::report::aggregate(&plan, &args.runs_dir)?)
}

pub fn plots_cmd(args: &SpecArgs, plots_dir: &Path) -> Result<()> {
    let plan = spec::load(&args.spec, &args.set)?;
    let p = mpdp::report::plots(&plan, &args.runs_dir, plots_dir)?;
    report_aggregate(&p.aggregated)?;
    let mut err = std::io::stderr().lock();
    for w in &p.warnings {
        writeln!(err, "warning: {w}")?;
    }
    for f in &p.figures {
        writeln!(err, "figure {}", f.png.display())?;
    }
    writeln!(err, "report {}", p.report.display())?;
    Ok(())
}

/// `mpdp plan`; `cost` is `Some(recalibrate)` with `--cost`.
pub fn plan_cmd(args: &SpecArgs, json: bool, cost: Option<bool>) -> Result<()> {
    let plan = spec::load(&args.spec, &args.set)?;
    // What `run` would refuse, `plan` refuses too.
    sched::check_device(plan.spec.devices.kind)?;
    let costed = match cost {
        Some(recalibrate) => Some(estimate(&plan, recalibrate)?),
        None => None,
    };
    let mut out = std::io::stdout().lock();
    if json {
        for run in sched::unique_runs(&plan) {
            writeln!(out, "{}", serde_json::to_string(run)?)?;
        }
        return Ok(());
    }
    let width = plan
        .runs
        .iter()
        .map(|r| r.label().len())
        .max()
        .unwrap_or(5)
        .max(5);
    let est_head = if costed.is_some() { "  estimate" } else { "" };
    writeln!(
        out,
        "{:<12}  {:<width$}  {:<17} {:>5} {:>9}{est_head}  status",
        "run_id", "agent", "env", "seed", "steps"
    )?;
    let mut counts = sched::StatusCounts::default();
    let mut done = vec![0u64; plan.runs.len()];
    for (i, run) in plan.runs.iter().enumerate() {
        let dir = sched::run_dir(&args.runs_dir, run);
        let status = sched::status_of(&dir);
        counts.add(&status);
        let detail = match &status {
            sched::RunStatus::Running(l) => format!(" ({}/{} steps)", l.step, l.total_steps),
            sched::RunStatus::Failed(r) => format!(" ({r})"),
            _ => String::new(),
        };
        let mut est = String::new();
        if let Some(c) = &costed {
            done[i] = sched::steps_of(&dir, &status, run.config.total_steps);
            if let Some(s) = c.remaining(&run.config, 0) {
                est = format!("  {:>8}", sched::fmt_duration(s));
            }
        }
        writeln!(
            out,
            "{:<12}  {:<width$}  {:<17} {:>5} {:>9}{est}  {}{detail}",
            run.run_id,
            run.label(),
            run.env,
            run.seed,
            run.config.total_steps,
            status.name()
        )?;
    }
    writeln!(out, "{} runs: {counts}", plan.runs.len())?;
    if let Some(costed) = &costed {
        print_costs(&plan, costed, &done, &mut out)?;
    }
    Ok(())
}

/// Calibrates what the cache lacks, saying so on stderr.
fn estimate(plan: &Plan, recalibrate: bool) -> Result<sched::cost::Costed> {
    use sched::cost::{Cache, estimate};
    let mut cache = Cache::load(&Cache::default_path());
    if let Some(problem) = &cache.problem {
        eprintln!("warning: calibration cache not read, starting it afresh: {problem}");
    }
    let device = mpdp::nn::device();
    let costed = estimate(
        plan,
        &mut cache,
        recalibrate,
        &device,
        |run, cal| match cal {
            None => eprint!("calibrating {} on {} ...", run.label(), run.env),
            Some(c) => {
                let fit = c.fit.map_or(String::new(), |f| {
                    format!(
                        ", model fit {:.2} µs per transition and epoch ({} epochs)",
                        f.row_epoch_s * 1e6,
                        f.epochs
                    )
                });
                eprintln!(
                    " {:.1} s: {:.2} ms per learning step{fit}, {:.2} ms per eval step",
                    c.seconds,
                    c.learn_step_s * 1e3,
                    c.eval_step_s * 1e3
                );
            }
        },
    )?;
    eprintln!(
        "calibrations: {} made, {} from {}",
        costed.calibrated,
        costed.cached(),
        cache.path.display()
    );
    if let Some(busy) = costed.busiest() {
        eprintln!(
            "warning: other work used up to {:.0}% of the CPU time while some calibrations \
             ran, so their estimates run high: `mpdp plan --cost --recalibrate` on a quiet \
             machine",
            busy * 100.0
        );
    }
    Ok(costed)
}

/// The estimate summed per agent and env, then in all and for what is left (`done[i]`: the
/// steps run `i` has behind it).
fn print_costs(
    plan: &Plan,
    costed: &sched::cost::Costed,
    done: &[u64],
    out: &mut impl Write,
) -> Result<()> {
    let threads = plan.spec.devices.threads_per_run.max(1) as f64;
    // (agent, env) → (runs, steps, seconds), in plan order.
    type Group = ((String, String), (usize, u64, f64));
    let mut groups: Vec<Group> = Vec::new();
    let (mut total, mut left) = (0.0, 0.0);
    for (i, run) in plan.runs.iter().enumerate() {
        let (Some(s), Some(rest)) = (
            costed.remaining(&run.config, 0),
            costed.remaining(&run.config, done[i]),
        ) else {
            continue;
        };
        total += s;
        left += rest;
        let key = (run.label(), run.env.clone());
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, g)) => *g = (g.0 + 1, g.1 + run.config.total_steps, g.2 + s),
            None => groups.push((key, (1, run.config.total_steps, s))),
        }
    }
    let width = groups
        .iter()
        .map(|((a, _), _)| a.len())
        .max()
        .unwrap_or(5)
        .max(5);
    writeln!(
        out,
        "\nestimated compute on this machine ({}, {} thread(s) per run; evaluations counted \
         at full length):",
        mpdp::store::hostname(),
        threads
    )?;
    writeln!(
        out,
        "{:<width$}  {:<17} {:>4}  {:>9}  {:>10}  {:>10}",
        "agent", "env", "runs", "per run", "per 10k", "core-hours"
    )?;
    for ((agent, env), (runs, steps, s)) in &groups {
        writeln!(
            out,
            "{agent:<width$}  {env:<17} {runs:>4}  {:>9}  {:>10}  {:>10.1}",
            sched::fmt_duration(s / *runs as f64),
            sched::fmt_duration(s / (*steps as f64 / 1e4)),
            s * threads / 3600.0
        )?;
    }
    let slots = plan.spec.devices.slots.len().max(1);
    writeln!(
        out,
        "total: {:.1} core-hours; not run yet: {:.1} core-hours, about {} here at {slots} run(s) \
         at a time",
        total * threads / 3600.0,
        left * threads / 3600.0,
        sched::fmt_duration(left / slots as f64)
    )?;
    Ok(())
}

pub fn explain(args: &SpecArgs, only: Option<&str>) -> Result<()> {
    let plan = spec::load(&args.spec, &args.set)?;
    let mut out = std::io::stdout().lock();
    let runs: Vec<_> = plan
        .runs
        .iter()
        .filter(|r| only.is_none_or(|p| r.run_id.starts_with(p)))
        .collect();
    if runs.is_empty() {
        return Err(UsageError(format!("no run id starts with {:?}", only.unwrap_or(""))).into());
    }
    for run in runs {
        writeln!(
            out,
            "run {}: {} on {} seed {}",
            run.run_id,
            run.label(),
            run.env,
            run.seed
        )?;
        let table = toml::Table::try_from(&run.config).context("serialising a run config")?;
        let rows: Vec<(String, String)> = spec::leaves(&table)
            .into_iter()
            .map(|(k, v)| (k, v.to_string()))
            .collect();
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        for (key, v) in rows {
            let from = run.sources.get(&key).map_or("", String::as_str);
            writeln!(out, "  {key:<width$} = {v:<24} {from}")?;
        }
    }
    Ok(())
}

pub fn submit(args: &SubmitArgs) -> Result<u8> {
    let crate::cli::Executor::Slurm = args.executor;
    let plan = spec::load(&args.spec.spec, &args.spec.set)?;
    let runs_dir = absolute(&args.spec.runs_dir)?;
    let opts = sched::slurm::SlurmOptions {
        partition: args.partition.clone(),
        account: args.account.clone(),
        time: args.time.clone(),
        mem: args.mem.clone(),
        gpus_per_run: args.gpus_per_run,
        cpus_per_run: args.cpus_per_run,
        max_parallel: args.max_parallel,
        signal_before: args.signal_before,
        extra: args.sbatch_args.clone(),
    };
    let exe = std::env::current_exe().context("locating the mpdp binary")?;
    let sub = sched::slurm::submit(&plan, &runs_dir, &exe, &opts, args.dry_run)?;
    let mut err = std::io::stderr();
    writeln!(
        err,
        "{}: {} runs to do ({} done or running elsewhere); script {}",
        plan.spec.name,
        sub.runs.len(),
        sub.skipped,
        sub.script.display()
    )?;
    let Some(job) = &sub.job_id else {
        if sub.runs.is_empty() {
            writeln!(err, "nothing to submit")?;
        } else {
            writeln!(
                err,
                "dry run: not submitted (sbatch {})",
                sub.script.display()
            )?;
        }
        return Ok(0);
    };
    writeln!(
        err,
        "submitted job array {job} ({} elements)",
        sub.runs.len()
    )?;
    println!("{job}");
    if !args.wait {
        return Ok(0);
    }
    let failed = sched::slurm::wait(job, &sub.runs, &runs_dir, &mut |counts| {
        // Progress lines are best effort: a closed stderr must not stop the wait.
        let _ = writeln!(std::io::stderr(), "job {job}: {counts}");
    })?;
    if failed > 0 {
        writeln!(
            err,
            "job {job} finished with {failed} runs not done (see `mpdp status`)"
        )?;
        return Ok(1);
    }
    writeln!(err, "job {job}: all {} runs done", sub.runs.len())?;
    Ok(0)
}

pub fn list(variant: ObsVariant) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<17} {:>7} {:>7} {:>16}  {:<8}  xml sha256",
        "task", "obs", "act", "action bounds", "dt"
    )?;
    for task in Task::ALL {
        let env = env::make(task, variant)?;
        let i = env.info();
        let uniform = i.action_low.iter().all(|&l| l == i.action_low[0])
            && i.action_high.iter().all(|&h| h == i.action_high[0]);
        let bounds = if uniform {
            format!("[{}, {}]", i.action_low[0], i.action_high[0])
        } else {
            "per-dim".into()
        };
        writeln!(
            out,
            "{:<17} {:>7} {:>7} {:>16}  {:<8}  {}",
            task.name(),
            i.obs_dim,
            i.act_dim,
            bounds,
            i.dt,
            &i.xml_sha256[..16]
        )?;
    }
    Ok(())
}

pub fn replay_cmd(args: &ReplayArgs) -> Result<()> {
    let task: Task = args.env.parse()?;
    let variant: ObsVariant = args.variant.parse()?;
    let mut env = env::make(task, variant)?;
    let init = match &args.init {
        Some(path) => Some((playback::read_init(path)?, path.as_path())),
        None => None,
    };
    let actions = playback::read_actions(&args.actions, task.name(), env.info().act_dim)?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    playback::play(
        &mut env,
        init.as_ref().map(|(s, p)| (s, *p)),
        args.seed.unwrap_or(0),
        &actions,
        &mut out,
    )
    .context("replay")?;
    Ok(())
}

/// `mpdp eval RUN_DIR`: returns per episode, then their mean ± std (or one JSON object).
pub fn eval(args: &EvalArgs, out: &mut impl Write) -> Result<()> {
    let req = runner::EvalRequest {
        checkpoint: args.checkpoint.clone(),
        episodes: args.episodes,
        seed: args.seed,
        record: (args.video.is_some() || args.trace.is_some()).then_some(args.episode),
    };
    let e = runner::evaluate_run(&args.run_dir, &req, &mpdp::nn::device())?;
    let rendered = match &args.video {
        Some(path) => {
            let video = runner::VideoRequest {
                path: path.clone(),
                thumbnail: None,
                max_frames: args.video_frames,
                size: args.video_size,
                python: env::venv_python(),
                script: env::python_script("render.py"),
            };
            Some(runner::render_video(&e, &video)?)
        }
        None => None,
    };
    if let Some(path) = &args.trace {
        let rows = runner::write_trace(&e, path)?;
        if !args.json {
            writeln!(
                out,
                "trace {}: episode {}, {rows} states",
                path.display(),
                args.episode
            )?;
        }
    }
    if args.json {
        let mut v = serde_json::to_value(&e)?;
        if let (Some(r), Some(path)) = (&rendered, &args.video) {
            v["video"] = serde_json::json!({ "path": path, "rendered": r });
        }
        writeln!(out, "{v}")?;
        return Ok(());
    }
    if let (Some(r), Some(path)) = (&rendered, &args.video) {
        writeln!(
            out,
            "video {}: episode {}, {} frames of {}x{} in {:.1} s ({:.1} frames/s)",
            path.display(),
            args.episode,
            r.frames,
            r.width,
            r.height,
            r.seconds,
            r.frames as f64 / r.seconds.max(1e-9)
        )?;
    }
    writeln!(
        out,
        "{} {} on {}: checkpoint {} (step {})",
        e.run_id,
        e.algo,
        e.env,
        e.checkpoint.display(),
        e.step
    )?;
    writeln!(out, "episode  seed                  return   length")?;
    for (i, ((seed, r), len)) in e.seeds.iter().zip(&e.returns).zip(&e.lengths).enumerate() {
        writeln!(out, "{i:>7}  {seed:<20}  {r:>9.2}  {len:>7}")?;
    }
    let n = e.lengths.len() as f64;
    writeln!(
        out,
        "return {:.2} ± {:.2} over {} episodes (mean length {:.1})",
        e.return_mean,
        e.return_std,
        e.returns.len(),
        e.lengths.iter().sum::<f64>() / n
    )?;
    Ok(())
}
