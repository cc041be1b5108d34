//! The `mpdp` command line: parse, dispatch to [`commands`], print errors, exit code (2 for
//! the user's errors, 1 for failures).
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;
use mpdp::bench;

mod cli;
mod commands;

use cli::{BenchArgs, BenchCommand, Cli, Command, EnvCommand};

/// mimalloc: burn allocates many short-lived buffers per update (fewer page faults than glibc's).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    set_devices(&cli.command);
    match on_rayon_pool(move || run(cli)) {
        Ok(code) => ExitCode::from(code),
        // `mpdp explain SPEC | head`: the reader left; that is not an error.
        Err(err)
            if err.chain().any(|e| {
                e.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {}", message(&err));
            ExitCode::from(if err.chain().any(mpdp::is_usage) {
                2
            } else {
                1
            })
        }
    }
}

/// The error and its causes, `: `-separated, leaving out a cause the message before it
/// already ends with (an error that prints its source, as `path: source` does, would show it
/// twice otherwise).
fn message(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain() {
        let cause = cause.to_string();
        if text.is_empty() {
            text = cause;
        } else if !text.ends_with(&cause) {
            text = format!("{text}: {cause}");
        }
    }
    text
}

/// Sets the process's devices from the command line, before any other thread exists (the rayon
/// pool starts after it), so that nothing reads the environment while it changes:
/// - `mpdp bench --device D` is `MPDP_DEVICE=D`; `--reference-device` places the PyTorch side.
/// - burn puts tensors on its own default device where a caller names none: loading an Adam
///   state does, and the state moves to its parameter's device at the next step. In a binary
///   built with a GPU backend that default is the GPU, so every CPU run resuming from a
///   checkpoint would open a GPU context (on a shared GPU host, one per run). `BURN_DEVICE` pins
///   burn's default to the device `MPDP_DEVICE` asks for; an invalid request is reported later,
///   by the command.
fn set_devices(command: &Command) {
    if let Command::Bench(BenchArgs {
        device,
        reference_device,
        ..
    }) = command
    {
        if let Some(device) = device {
            // SAFETY: single-threaded here (see above).
            unsafe { std::env::set_var(mpdp::nn::DEVICE_ENV_VAR, device) };
        }
        if let Some(reference) = reference_device {
            mpdp::bench::set_reference_device(reference);
        }
    }
    let burn_device = match mpdp::nn::requested_device() {
        Ok(mpdp::nn::Requested::Cpu) => "flex",
        Ok(mpdp::nn::Requested::Wgpu(_)) => "wgpu",
        Err(_) => return,
    };
    // SAFETY: single-threaded here (see above).
    unsafe { std::env::set_var("BURN_DEVICE", burn_device) };
}

/// Runs `work` on a thread of a rayon pool (`RAYON_NUM_THREADS` threads, as the global pool
/// would have). The CPU backend parallelises matmuls and element-wise kernels with rayon;
/// called from outside the pool, every such op hands its work to a pool thread and sleeps
/// until it is done, two context switches per op, thousands of times per update. From a
/// pool thread the same ops run inline (one thread) or split without waking the caller.
fn on_rayon_pool(work: impl FnOnce() -> Result<u8> + Send) -> Result<u8> {
    // Autodiff graphs and MuJoCo want more than a spawned thread's default 2 MiB of stack.
    const STACK: usize = 64 << 20;
    let pool = rayon::ThreadPoolBuilder::new()
        .stack_size(STACK)
        .thread_name(|i| format!("mpdp-{i}"))
        .build()
        .context("starting the thread pool")?;
    pool.install(work)
}

fn run(cli: Cli) -> Result<u8> {
    if matches!(
        cli.command,
        Command::RunOne(_)
            | Command::Eval(_)
            | Command::Bench(BenchArgs {
                which: BenchCommand::Sac(_)
                    | BenchCommand::Ensemble(_)
                    | BenchCommand::Mpdp(_)
                    | BenchCommand::Cem(_),
                ..
            })
            | Command::Run { .. }
    ) {
        mpdp::nn::requested_device()?;
    }
    let out = &mut std::io::stdout().lock();
    match cli.command {
        Command::RunOne(args) => return commands::run_one(&args),
        Command::Eval(args) => commands::eval(&args, out)?,
        Command::Run {
            spec,
            retry_failed,
            from_scratch,
            plots_dir,
            no_plots,
        } => {
            let code = commands::run_spec(&spec, retry_failed, from_scratch)?;
            if !no_plots && code != mpdp::sched::EXIT_PREEMPTED {
                commands::plots_cmd(&spec, &plots_dir)?;
            }
            return Ok(code);
        }
        Command::Aggregate { spec } => commands::aggregate_cmd(&spec)?,
        Command::Plots { spec, plots_dir } => commands::plots_cmd(&spec, &plots_dir)?,
        Command::Plan {
            spec,
            json,
            cost,
            recalibrate,
        } => commands::plan_cmd(&spec, json, cost.then_some(recalibrate))?,
        Command::Explain { spec, run } => commands::explain(&spec, run.as_deref())?,
        Command::Status { spec } => {
            let plan = mpdp::spec::load(&spec.spec, &spec.set)?;
            mpdp::sched::print_status(&plan, &spec.runs_dir, out)?;
        }
        Command::Submit(args) => return commands::submit(&args),
        Command::Env(EnvCommand::List { variant }) => commands::list(variant.parse()?)?,
        Command::Env(EnvCommand::Replay(args)) => commands::replay_cmd(&args)?,
        Command::Bench(BenchArgs {
            which: BenchCommand::Env(cfg),
            ..
        }) => {
            let rows = bench::env::run(&cfg, |task| eprintln!("bench env: {task} ..."))?;
            bench::env::print_report(&rows, out)?;
        }
        Command::Bench(BenchArgs {
            which: BenchCommand::Ensemble(cfg),
            ..
        }) => {
            let result = bench::ensemble::run(&cfg)?;
            bench::ensemble::print_report(&cfg, &result, out)?;
        }
        Command::Bench(BenchArgs {
            which: BenchCommand::Mpdp(cfg),
            ..
        }) => {
            let result = bench::mpdp::run(&cfg)?;
            bench::mpdp::print_report(&cfg, &result, out)?;
        }
        Command::Bench(BenchArgs {
            which: BenchCommand::Cem(cfg),
            ..
        }) => {
            let result = bench::cem::run(&cfg)?;
            bench::cem::print_report(&cfg, &result, out)?;
        }
        Command::Bench(BenchArgs {
            which: BenchCommand::Sac(cfg),
            ..
        }) => {
            let result = bench::sac::run(&cfg)?;
            bench::sac::print_report(&cfg, &result, out)?;
        }
    }
    Ok(0)
}
