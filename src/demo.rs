//! `mpdp run SPEC` until the experiment pipeline exists: runs a uniform-random policy on the
//! environments a small spec lists and prints episode returns and throughput. It checks, in
//! seconds, that setup worked and that every task steps.
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use serde::Deserialize;

use crate::env::{self, Env, EnvError, ObsVariant, Task};

/// The spec as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDemoSpec {
    schema: u32,
    name: String,
    envs: Vec<String>,
    #[serde(default)]
    variant: Option<String>,
    seeds: Vec<u64>,
    episodes: usize,
}

/// The validated spec.
#[derive(Debug, Clone)]
pub struct DemoSpec {
    pub name: String,
    pub tasks: Vec<Task>,
    pub variant: ObsVariant,
    pub seeds: Vec<u64>,
    pub episodes: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error(transparent)]
    Env(#[from] EnvError),
}

impl DemoSpec {
    pub fn load(path: &Path) -> Result<DemoSpec, DemoError> {
        let invalid = |message: String| DemoError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|source| DemoError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let raw: RawDemoSpec =
            toml::from_str(&text).map_err(|e| invalid(e.to_string().trim().replace('\n', " ")))?;
        if raw.schema != 1 {
            return Err(invalid(format!(
                "schema = {}, this version reads schema = 1",
                raw.schema
            )));
        }
        let tasks = raw
            .envs
            .iter()
            .map(|e| e.parse::<Task>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(format!("envs: {e}")))?;
        let variant = match &raw.variant {
            Some(v) => v.parse().map_err(|e| invalid(format!("variant: {e}")))?,
            None => ObsVariant::V5,
        };
        if tasks.is_empty() || raw.seeds.is_empty() || raw.episodes == 0 {
            return Err(invalid(
                "envs, seeds and episodes must not be empty or zero".into(),
            ));
        }
        Ok(DemoSpec {
            name: raw.name,
            tasks,
            variant,
            seeds: raw.seeds,
            episodes: raw.episodes,
        })
    }
}

/// Runs the spec and prints one line per environment.
pub fn run(spec: &DemoSpec, out: &mut impl Write) -> Result<(), DemoError> {
    let _ = writeln!(
        out,
        "{}: uniform-random policy, {} seed(s) x {} episode(s) per env",
        spec.name,
        spec.seeds.len(),
        spec.episodes
    );
    let _ = writeln!(
        out,
        "{:<17} {:>12} {:>10} {:>10} {:>12}",
        "env", "return", "std", "length", "steps/s"
    );
    for &task in &spec.tasks {
        let mut env = env::make(task, spec.variant)?;
        let (low, high) = (
            env.info().action_low.clone(),
            env.info().action_high.clone(),
        );
        let mut returns = Vec::new();
        let mut steps = 0usize;
        let start = Instant::now();
        for &seed in &spec.seeds {
            let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
            env.reset(Some(seed));
            for _ in 0..spec.episodes {
                let mut ret = 0.0;
                loop {
                    let action: Vec<f64> = low
                        .iter()
                        .zip(&high)
                        .map(|(&l, &h)| rng.random_range(l..h))
                        .collect();
                    let step = env.step(&action);
                    ret += step.reward;
                    steps += 1;
                    if step.done() {
                        break;
                    }
                }
                returns.push(ret);
                env.reset(None);
            }
        }
        let n = returns.len() as f64;
        let mean = returns.iter().sum::<f64>() / n;
        let std = (returns.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / n).sqrt();
        let _ = writeln!(
            out,
            "{:<17} {:>12.2} {:>10.2} {:>10.1} {:>12.0}",
            task.name(),
            mean,
            std,
            steps as f64 / n,
            steps as f64 / start.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
