use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;
use mpdp::agent::{self, AgentError};
use mpdp::bench;
use mpdp::demo::{self, DemoError, DemoSpec};
use mpdp::env::replay::{self, ReplayError};
use mpdp::env::{self, AssetError, Env, EnvError, ObsVariant, Task};
use mpdp::runner::{self, EvalConfig, RunConfig, RunError, RunOptions, RunOutcome};

mod cli;

use cli::{BenchCommand, Cli, Command, EnvCommand, ReplayArgs, RunOneArgs};

/// mimalloc: burn allocates many short-lived buffers per update (fewer page faults than glibc's).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit code of a run stopped by SIGTERM/SIGINT after checkpointing (EX_TEMPFAIL): rerun it.
const EXIT_PREEMPTED: u8 = 75;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(exit_code(&err))
        }
    }
}

/// 2 for bad input from the user (arguments, files, specs, missing setup), 1 otherwise.
fn exit_code(err: &anyhow::Error) -> u8 {
    let user = err.chain().any(|e| {
        e.is::<ReplayError>()
            || e.is::<DemoError>()
            || e.is::<AssetError>()
            || e.is::<UsageError>()
            || e.is::<mpdp::nn::DeviceError>()
            || matches!(
                e.downcast_ref::<AgentError>(),
                Some(AgentError::Params { .. } | AgentError::UnknownAlgo(_))
            )
            || matches!(
                e.downcast_ref::<RunError>(),
                Some(RunError::ConfigMismatch { .. } | RunError::Agent(AgentError::Params { .. }))
            )
            || {
                matches!(
                    e.downcast_ref::<EnvError>(),
                    Some(
                        EnvError::UnknownTask(_)
                            | EnvError::UnknownVariant(_)
                            | EnvError::StateLength { .. }
                            | EnvError::Assets(_)
                    )
                )
            }
    });
    if user { 2 } else { 1 }
}

/// A bad command-line value.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct UsageError(String);

fn run(cli: Cli) -> Result<u8> {
    if matches!(
        cli.command,
        Command::RunOne(_) | Command::Bench(BenchCommand::Sac { .. })
    ) {
        mpdp::nn::requested_device()?;
    }
    match cli.command {
        Command::RunOne(args) => return run_one(&args),
        Command::Run { spec } => {
            let spec = DemoSpec::load(&spec)?;
            demo::run(&spec, &mut std::io::stdout().lock())?;
        }
        Command::Env(EnvCommand::List { variant }) => list(variant.parse()?)?,
        Command::Env(EnvCommand::Replay(args)) => replay_cmd(&args)?,
        Command::Bench(BenchCommand::Env {
            steps,
            repeats,
            tasks,
            no_python,
            python,
        }) => {
            let tasks = if tasks.is_empty() {
                Task::ALL.to_vec()
            } else {
                tasks.iter().map(|t| t.parse()).collect::<Result<_, _>>()?
            };
            let cfg = bench::env::EnvBenchConfig {
                tasks,
                steps,
                repeats,
                seed: 0,
                python: (!no_python).then(|| python.unwrap_or_else(bench::default_python)),
            };
            let rows = bench::env::run(&cfg, |task| eprintln!("bench env: {task} ..."))?;
            bench::env::print_report(&rows, &mut std::io::stdout().lock())?;
        }
        Command::Bench(BenchCommand::Sac {
            updates,
            repeats,
            obs_dim,
            act_dim,
            batch,
            no_python,
            python,
        }) => {
            let cfg = bench::sac::SacBenchConfig {
                obs_dim,
                act_dim,
                batch,
                updates,
                repeats,
                python: (!no_python).then(|| python.unwrap_or_else(bench::default_torch_python)),
            };
            let result = bench::sac::run(&cfg)?;
            bench::sac::print_report(&cfg, &result, &mut std::io::stdout().lock())?;
        }
    }
    Ok(0)
}

/// `--set key=value` pairs as a TOML table (a value that is not TOML is taken as a string).
fn parse_sets(sets: &[String]) -> Result<toml::Table, UsageError> {
    let mut table = toml::Table::new();
    for s in sets {
        let (key, value) = s
            .split_once('=')
            .filter(|(k, _)| !k.trim().is_empty())
            .ok_or_else(|| UsageError(format!("--set {s}: expected KEY=VALUE")))?;
        let key = key.trim();
        let parsed: toml::Table = format!("v = {}", value.trim()).parse().unwrap_or_else(|_| {
            toml::Table::from_iter([("v".to_string(), toml::Value::String(value.to_string()))])
        });
        table.insert(key.to_string(), parsed["v"].clone());
    }
    Ok(table)
}

fn run_one(args: &RunOneArgs) -> Result<u8> {
    let task: Task = args.env.parse()?;
    let variant: ObsVariant = args.variant.parse()?;
    for (name, v) in [
        ("--steps", args.steps),
        ("--eval-every", args.eval_every),
        ("--log-every", args.log_every),
    ] {
        if v == 0 {
            return Err(UsageError(format!("{name} must be positive")).into());
        }
    }
    if args.num_envs == 0 || args.eval_episodes == 0 {
        return Err(UsageError("--num-envs and --eval-episodes must be positive".into()).into());
    }
    let overrides = parse_sets(&args.set)?;
    let agent = agent::resolve_params(&args.algo, task, &overrides)?;
    let cfg = RunConfig {
        experiment: args.experiment.clone(),
        env: task.name().to_string(),
        variant: variant.name().to_string(),
        seed: args.seed,
        total_steps: args.steps,
        num_envs: args.num_envs,
        eval: EvalConfig {
            every: args.eval_every,
            episodes: args.eval_episodes,
        },
        checkpoint_every: args.checkpoint_every,
        log_every: args.log_every,
        algo: args.algo.clone(),
        agent,
    };
    let run_dir = args.runs_dir.join(&cfg.experiment).join(cfg.run_id());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, stop.clone()).context("installing signal handlers")?;
    }
    let opts = RunOptions {
        progress: !args.quiet,
        stop,
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
    }
}

fn list(variant: ObsVariant) -> Result<()> {
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

fn replay_cmd(args: &ReplayArgs) -> Result<()> {
    let task: Task = args.env.parse()?;
    let variant: ObsVariant = args.variant.parse()?;
    let mut env = env::make(task, variant)?;
    let init = match &args.init {
        Some(path) => Some((replay::read_init(path)?, path.as_path())),
        None => None,
    };
    let actions = replay::read_actions(&args.actions, task.name(), env.info().act_dim)?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    replay::replay(
        &mut env,
        init.as_ref().map(|(s, p)| (s, *p)),
        args.seed.unwrap_or(0),
        &actions,
        &mut out,
    )
    .context("replay")?;
    Ok(())
}
