//! Component configs: the [`Validate`] trait every config implements, the range checks they
//! share, and the TOML table helpers that parse a config from resolved parameters and name
//! the key at fault when a value is wrong.
//!
//! Parsing and validation happen once, when a spec or a command line is read; every layer
//! below works on the typed, validated config.
use serde::Serialize;
use serde::de::DeserializeOwned;

/// An error that knows whether the user is at fault: bad input (arguments, files, specs,
/// missing setup), which the command line reports with exit code 2, rather than a failure
/// of the work itself (exit code 1).
pub trait IsUsage {
    fn is_usage(&self) -> bool;
}

/// A bad command-line value.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

impl IsUsage for UsageError {
    fn is_usage(&self) -> bool {
        true
    }
}

/// A parameter that failed to parse or validate: which one (if one) and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Invalid {
    pub key: Option<String>,
    pub message: String,
}

impl Invalid {
    pub fn new(key: &str, message: impl Into<String>) -> Self {
        Invalid {
            key: Some(key.to_string()),
            message: message.into(),
        }
    }

    /// The same problem, with its key inside the nested table `prefix`.
    pub fn within(self, prefix: &str) -> Self {
        Invalid {
            key: Some(match self.key {
                Some(k) => format!("{prefix}.{k}"),
                None => prefix.to_string(),
            }),
            message: self.message,
        }
    }

    pub fn whole(message: String) -> Self {
        Invalid { key: None, message }
    }
}

/// A parser's message made fit to show a user: Rust type names (`expected struct
/// EvalEntry`) become what they stand for (`expected a table`), and each line is cut to 200
/// characters (a garbage line in a file must not come back whole).
pub fn readable(message: &str) -> String {
    const LINE: usize = 200;
    let mut out = String::with_capacity(message.len().min(4096));
    for (i, line) in message.lines().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let mut line = line.to_string();
        for (kind, what) in [("struct ", "a table"), ("enum ", "a name")] {
            while let Some(at) = line.find(&format!("expected {kind}")) {
                let start = at + "expected ".len();
                let end = line[start + kind.len()..]
                    .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .map_or(line.len(), |e| start + kind.len() + e);
                line.replace_range(start..end, what);
            }
        }
        match line.char_indices().nth(LINE) {
            Some((cut, _)) => {
                out.push_str(&line[..cut]);
                out.push_str(" [...]");
            }
            None => out.push_str(&line),
        }
    }
    out
}

/// Deserialises a config from a table; errors name the key path (`hidden[0]`).
pub fn from_table<C: DeserializeOwned>(table: toml::Table) -> Result<C, Invalid> {
    serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
        let path = e.path().to_string();
        let message = readable(e.into_inner().message());
        Invalid {
            key: (path != ".").then_some(path),
            message,
        }
    })
}

pub fn to_table<T: Serialize>(value: T) -> Result<toml::Table, String> {
    match toml::Value::try_from(value) {
        Ok(toml::Value::Table(t)) => Ok(t),
        Ok(_) => Err("not a table".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// Range checks beyond what the types express.
pub trait Validate {
    fn validate(&self) -> Result<(), Invalid>;
}

/// Merges `over` into `base`: tables key by key (nested configs such as MBPO's `sac` and
/// `model` keep the keys an override does not name), other values replaced.
pub fn merge_tables(base: &mut toml::Table, over: &toml::Table) {
    for (k, v) in over {
        match (base.get_mut(k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge_tables(b, o),
            _ => {
                base.insert(k.clone(), v.clone());
            }
        }
    }
}

/// Range checks shared by the off-policy agents' configs: positive finite rates, γ in [0, 1],
/// τ in (0, 1], hidden layers that fit with `batch_size` rows (at most [`limits::BATCH`]),
/// `updates_per_step` up to [`limits::HORIZON`], positive counts.
pub fn check_common(
    rates: &[(&str, f64)],
    gamma: f64,
    tau: f64,
    hidden: &[usize],
    (batch_size, updates_per_step): (usize, usize),
    counts: &[(&str, usize)],
) -> Result<(), Invalid> {
    for &(name, v) in rates.iter().chain(&[("tau", tau)]) {
        positive(name, v)?;
    }
    unit_interval("gamma", gamma)?;
    if tau > 1.0 {
        return Err(Invalid::new(
            "tau",
            format!("expected a value in (0, 1], found {tau}"),
        ));
    }
    layers("hidden", hidden)?;
    count_in("batch_size", batch_size, limits::BATCH)?;
    count_in("updates_per_step", updates_per_step, limits::HORIZON)?;
    fits("hidden", hidden, 1, batch_size)?;
    positive_counts(counts)
}

/// Upper bounds on the sizes a spec or a command line may ask for. A run that asks for more
/// cannot fit in memory (or finish) on any machine this targets, so the value is refused when
/// the spec is read (exit 2) instead of the run aborting in an allocation. Each is far above
/// every published setting (MBPO, M2AC, PETS, the MPDP paper).
pub mod limits {
    /// Any count (steps, sizes, intervals): a billion.
    pub const COUNT: usize = 1_000_000_000;
    /// Rows of one gradient batch (SAC's 256, the ensemble's 256; a million).
    pub const BATCH: usize = 1 << 20;
    /// Units of one hidden layer (256 to 400 in the papers).
    pub const WIDTH: usize = 1 << 14;
    /// Hidden layers of one network (2 to 4 in the papers).
    pub const LAYERS: usize = 64;
    /// Members of a dynamics ensemble (7 in MBPO, 5 in PETS).
    pub const MEMBERS: usize = 100;
    /// Steps of a model rollout or a planning horizon (MBPO's k_max 25, MPDP's H_max 15).
    pub const HORIZON: usize = 1000;
    /// Start states of one batch of model rollouts (MBPO's 100 000).
    pub const ROLLOUT_ROWS: usize = 10_000_000;
    /// Rows a model buffer may hold (MBPO's Humanoid preset: 30 million).
    pub const MODEL_ROWS: usize = 100_000_000;
    /// Environments one run steps at once (training or evaluation).
    pub const ENVS: usize = 1024;
    /// Agents one spec declares (Figure 1 has seven).
    pub const AGENTS: usize = 1000;
    /// Links of one `extends` chain (an agent, the agent it extends, and so on).
    pub const EXTENDS: usize = 32;
    /// Runs one spec expands into, over its agents, sweep points, envs and seeds (the paper's
    /// experiments are 168: 6 envs × 7 agents × 4 seeds).
    pub const RUNS: usize = 10_000;
    /// Bytes of a name that becomes a file or directory name (file systems take 255).
    pub const NAME: usize = 100;
    /// Weights between the hidden layers of all the copies of a network an agent keeps (an
    /// ensemble's members, MPDP's H_max policies): 10^8 floats, 400 MB before optimiser
    /// states (MBPO's Humanoid ensemble has 3.4 million).
    pub const PARAMS: usize = 100_000_000;
    /// Floats of one layer's activations over a batch (rows × members × width): 2^30, 4 GiB
    /// (MBPO's Humanoid rollouts, 100 000 rows through 7 members of 400 units: 2.8 · 10^8).
    pub const ACTIVATIONS: usize = 1 << 30;
}

/// A name that becomes a directory name (a spec's, an agent's, an experiment's): at most
/// [`limits::NAME`] bytes of letters, digits, '-', '_' or '.', not starting with '.'. The
/// reason when it is not.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.len() > limits::NAME {
        return Err(format!(
            "expected a name of at most {} characters, found one of {}",
            limits::NAME,
            name.len()
        ));
    }
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "expected a name of letters, digits, '-', '_' or '.' (not first), found {name:?}"
        ))
    }
}

/// `copies` networks of hidden layers `sizes` over batches of `rows` (times `copies` when
/// they run side by side, as an ensemble's members do) stay within [`limits::PARAMS`] and
/// [`limits::ACTIVATIONS`]; `name` is the key blamed.
pub fn fits(name: &str, sizes: &[usize], copies: usize, rows: usize) -> Result<(), Invalid> {
    // The weights between hidden layers (Σ h_i · h_{i+1}) and the widest layer.
    let weights: usize = sizes.windows(2).map(|w| w[0].saturating_mul(w[1])).sum();
    let widest = sizes.iter().copied().max().unwrap_or(0);
    let params = weights.saturating_mul(copies);
    if params > limits::PARAMS {
        return Err(Invalid::new(
            name,
            format!(
                "{copies} network(s) of hidden layers {sizes:?} hold {params} weights, above {}",
                limits::PARAMS
            ),
        ));
    }
    let floats = rows.saturating_mul(widest);
    if floats > limits::ACTIVATIONS {
        return Err(Invalid::new(
            name,
            format!(
                "a batch of {rows} rows through layers of {widest} units is {floats} floats per \
                 layer, above {}",
                limits::ACTIVATIONS
            ),
        ));
    }
    Ok(())
}

/// A count in 1..=`max`.
pub fn count_in(name: &str, v: usize, max: usize) -> Result<(), Invalid> {
    if v == 0 {
        return Err(Invalid::new(name, "expected a positive count, found 0"));
    }
    if v <= max {
        Ok(())
    } else {
        Err(Invalid::new(
            name,
            format!("expected a count in 1..={max}, found {v}"),
        ))
    }
}

/// Hidden layer sizes: one to [`limits::LAYERS`] layers of 1 to [`limits::WIDTH`] units.
pub fn layers(name: &str, sizes: &[usize]) -> Result<(), Invalid> {
    let ok = (1..=limits::LAYERS).contains(&sizes.len())
        && sizes.iter().all(|w| (1..=limits::WIDTH).contains(w));
    if ok {
        Ok(())
    } else {
        Err(Invalid::new(
            name,
            format!(
                "expected 1 to {} layer sizes, each in 1..={}, found {sizes:?}",
                limits::LAYERS,
                limits::WIDTH
            ),
        ))
    }
}

/// Every count is at least 1 (and at most [`limits::COUNT`]).
pub fn positive_counts(counts: &[(&str, usize)]) -> Result<(), Invalid> {
    for &(name, v) in counts {
        count_in(name, v, limits::COUNT)?;
    }
    Ok(())
}

/// A count that may be zero, at most `max` (a random phase of `learning_starts` steps).
pub fn at_most(name: &str, v: usize, max: usize) -> Result<(), Invalid> {
    if v <= max {
        Ok(())
    } else {
        Err(Invalid::new(
            name,
            format!("expected a count in 0..={max}, found {v}"),
        ))
    }
}

/// A finite number.
pub fn finite(name: &str, v: f64) -> Result<(), Invalid> {
    if v.is_finite() {
        Ok(())
    } else {
        Err(Invalid::new(
            name,
            format!("expected a finite number, found {v}"),
        ))
    }
}

/// A positive finite number.
pub fn positive(name: &str, v: f64) -> Result<(), Invalid> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(Invalid::new(
            name,
            format!("expected a positive finite number, found {v}"),
        ))
    }
}

/// A finite number >= 0.
pub fn non_negative(name: &str, v: f64) -> Result<(), Invalid> {
    if v.is_finite() && v >= 0.0 {
        Ok(())
    } else {
        Err(Invalid::new(
            name,
            format!("expected a finite value >= 0, found {v}"),
        ))
    }
}

/// A number in [0, 1].
pub fn unit_interval(name: &str, v: f64) -> Result<(), Invalid> {
    if (0.0..=1.0).contains(&v) {
        Ok(())
    } else {
        Err(Invalid::new(
            name,
            format!("expected a value in [0, 1], found {v}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: messages showed Rust type names ("expected struct EvalEntry") and echoed a
    /// 5 MB garbage line back whole.
    #[test]
    fn messages_name_no_types_and_stay_short() {
        assert_eq!(
            readable("invalid type: integer `3`, expected struct EvalEntry"),
            "invalid type: integer `3`, expected a table"
        );
        assert_eq!(
            readable("expected enum FigureKind or struct X"),
            "expected a name or struct X"
        );
        let long = format!("TOML parse error\n{}\nend", "x".repeat(5_000_000));
        let short = readable(&long);
        assert!(short.len() < 300, "{}", short.len());
        assert!(short.starts_with("TOML parse error\nxxx") && short.ends_with("[...]\nend"));
    }
}
