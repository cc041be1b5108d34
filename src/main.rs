use std::io::Write;
use std::process::ExitCode;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::{Context, Result};
use clap::Parser;

use mpdp::bench;
use mpdp::demo::{self, DemoError, DemoSpec};
use mpdp::env::replay::{self, ReplayError};
use mpdp::env::{self, AssetError, Env, EnvError, ObsVariant, Task};

mod cli;

use cli::{BenchCommand, Cli, Command, EnvCommand, ReplayArgs};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(exit_code(&err))
        }
    }
}

/// 2 for bad input from the user (arguments, files, specs, missing setup), 1 otherwise.
fn exit_code(err: &anyhow::Error) -> u8 {
    let user = err.chain().any(|e| {
        e.is::<ReplayError>() || e.is::<DemoError>() || e.is::<AssetError>() || {
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

fn run(cli: Cli) -> Result<()> {
    match cli.command {
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
    Ok(())
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
