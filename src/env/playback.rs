//! Replaying a fixed action sequence from a given state: the interface peers and the parity
//! test use (`mpdp env replay`).
//!
//! Inputs: `init.json` = `{"qpos": [...], "qvel": [...]}`, and a CSV of actions, one per row,
//! no header. Output: CSV with header `step,reward,terminated,truncated,obs_0,...` and one row
//! per step (`step` counts from 1; flags are 0/1), ending with the step that terminated or
//! truncated the episode, or with the last action. Numbers are printed in their shortest
//! round-trip form, so a peer reads back exactly the values computed.
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{Env, EnvError, MujocoEnv};

/// Initial physics state of a replay.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitState {
    pub qpos: Vec<f64>,
    pub qvel: Vec<f64>,
}

/// Bad replay input, each naming the file and the place.
#[derive(Debug, thiserror::Error)]
pub enum PlaybackError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path}: malformed init state ({message}); expected {{\"qpos\": [...], \"qvel\": [...]}}"
    )]
    InitJson { path: PathBuf, message: String },
    #[error("{path}: {what}[{index}] is {value}; initial states must be finite")]
    InitNotFinite {
        path: PathBuf,
        what: &'static str,
        index: usize,
        value: f64,
    },
    #[error("{path}:{line}: column {column}: '{text}' is not a number")]
    ActionNotNumber {
        path: PathBuf,
        line: usize,
        column: usize,
        text: String,
    },
    #[error("{path}:{line}: column {column}: action value {value} is not finite")]
    ActionNotFinite {
        path: PathBuf,
        line: usize,
        column: usize,
        value: f64,
    },
    #[error("{path}:{line}: {got} action values, {task} takes {expected}")]
    ActionWidth {
        path: PathBuf,
        line: usize,
        task: String,
        expected: usize,
        got: usize,
    },
    #[error("{path}: no actions (one action per row, comma-separated, no header)")]
    NoActions { path: PathBuf },
    #[error("{path}: {source}")]
    State { path: PathBuf, source: EnvError },
    #[error("writing the replay output: {0}")]
    Write(#[from] std::io::Error),
}

/// Every playback error is about its input.
impl crate::config::IsUsage for PlaybackError {
    fn is_usage(&self) -> bool {
        true
    }
}

fn read_text(path: &Path) -> Result<String, PlaybackError> {
    std::fs::read_to_string(path).map_err(|source| PlaybackError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads and checks `init.json`.
pub fn read_init(path: &Path) -> Result<InitState, PlaybackError> {
    let init: InitState =
        serde_json::from_str(&read_text(path)?).map_err(|e| PlaybackError::InitJson {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    for (what, values) in [("qpos", &init.qpos), ("qvel", &init.qvel)] {
        if let Some((index, &value)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(PlaybackError::InitNotFinite {
                path: path.to_path_buf(),
                what,
                index,
                value,
            });
        }
    }
    Ok(init)
}

/// Reads the actions CSV, checking every row has `act_dim` finite numbers. Blank lines are
/// skipped; line numbers in errors are 1-based lines of the file.
pub fn read_actions(
    path: &Path,
    task: &str,
    act_dim: usize,
) -> Result<Vec<Vec<f64>>, PlaybackError> {
    let text = read_text(path)?;
    let mut actions = Vec::new();
    for (i, row) in text.lines().enumerate() {
        let line = i + 1;
        if row.trim().is_empty() {
            continue;
        }
        let mut action = Vec::with_capacity(act_dim);
        for (c, field) in row.split(',').enumerate() {
            let field = field.trim();
            let value: f64 = field.parse().map_err(|_| PlaybackError::ActionNotNumber {
                path: path.to_path_buf(),
                line,
                column: c + 1,
                text: field.to_string(),
            })?;
            if !value.is_finite() {
                return Err(PlaybackError::ActionNotFinite {
                    path: path.to_path_buf(),
                    line,
                    column: c + 1,
                    value,
                });
            }
            action.push(value);
        }
        if action.len() != act_dim {
            return Err(PlaybackError::ActionWidth {
                path: path.to_path_buf(),
                line,
                task: task.to_string(),
                expected: act_dim,
                got: action.len(),
            });
        }
        actions.push(action);
    }
    if actions.is_empty() {
        return Err(PlaybackError::NoActions {
            path: path.to_path_buf(),
        });
    }
    Ok(actions)
}

/// Sets the initial state (`init`, read from `init_path`, or a seeded reset when `None`),
/// replays `actions` and writes the CSV to `out`. Returns the number of steps taken.
pub fn play(
    env: &mut MujocoEnv,
    init: Option<(&InitState, &Path)>,
    seed: u64,
    actions: &[Vec<f64>],
    out: &mut impl Write,
) -> Result<usize, PlaybackError> {
    match init {
        Some((state, path)) => {
            env.reset_to_state(&state.qpos, &state.qvel)
                .map_err(|source| PlaybackError::State {
                    path: path.to_path_buf(),
                    source,
                })?;
        }
        None => {
            env.reset(Some(seed));
        }
    }
    write!(out, "step,reward,terminated,truncated")?;
    for i in 0..env.info().obs_dim {
        write!(out, ",obs_{i}")?;
    }
    writeln!(out)?;
    let mut steps = 0;
    for action in actions {
        let step = env.step(action);
        steps += 1;
        write!(
            out,
            "{steps},{},{},{}",
            Num(step.reward),
            u8::from(step.terminated),
            u8::from(step.truncated)
        )?;
        for &v in env.obs() {
            write!(out, ",{}", Num(v))?;
        }
        writeln!(out)?;
        if step.done() {
            break;
        }
    }
    out.flush()?;
    Ok(steps)
}

/// Shortest round-trip decimal form, with an exponent for very large or small magnitudes
/// (as Python's `repr`), so every value reads back exactly.
struct Num(f64);

impl std::fmt::Display for Num {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let a = self.0.abs();
        if a == 0.0 || !a.is_finite() || (1e-5..1e16).contains(&a) {
            write!(f, "{}", self.0)
        } else {
            write!(f, "{:e}", self.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Num;

    #[test]
    fn numbers_round_trip() {
        for v in [
            0.0,
            -0.0,
            1.0,
            -2.5e-7,
            1e-5,
            123456.789,
            3.0e20,
            f64::MIN_POSITIVE,
            0.1 + 0.2,
        ] {
            let text = Num(v).to_string();
            assert_eq!(
                text.parse::<f64>().unwrap().to_bits(),
                v.to_bits(),
                "{text}"
            );
            assert!(text.len() < 30, "{text}");
        }
    }
}

#[cfg(test)]
mod init_tests {
    use rand::rngs::Xoshiro256PlusPlus;
    use rand::{Rng, SeedableRng};

    use super::read_init;

    /// Regression: serde_json's default float parser may be one ulp off, which made replays
    /// drift from Gymnasium's after a few dozen contact-rich steps. Initial states must be
    /// read bit-exactly.
    #[test]
    fn init_state_floats_are_read_exactly() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(0);
        let values: Vec<f64> = (0..20_000)
            .map(|_| f64::from_bits(rng.next_u64()))
            .filter(|v| v.is_finite())
            .collect();
        let text: Vec<String> = values.iter().map(|v| format!("{v:e}")).collect();
        let path =
            std::env::temp_dir().join(format!("mpdp-init-exact-{}.json", std::process::id()));
        std::fs::write(
            &path,
            format!("{{\"qpos\": [{}], \"qvel\": []}}", text.join(",")),
        )
        .unwrap();
        let init = read_init(&path).unwrap();
        std::fs::remove_file(&path).ok();
        for (read, written) in init.qpos.iter().zip(&values) {
            assert_eq!(
                read.to_bits(),
                written.to_bits(),
                "{written:e} read as {read:e}"
            );
        }
    }
}
