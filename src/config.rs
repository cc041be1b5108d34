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

/// Deserialises a config from a table; errors name the key path (`hidden[0]`).
pub fn from_table<C: DeserializeOwned>(table: toml::Table) -> Result<C, Invalid> {
    serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
        let path = e.path().to_string();
        let message = e.into_inner().message().to_string();
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
/// τ in (0, 1], at least one positive hidden layer size, positive counts.
pub fn check_common(
    rates: &[(&str, f64)],
    gamma: f64,
    tau: f64,
    hidden: &[usize],
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
    if hidden.is_empty() || hidden.contains(&0) {
        return Err(Invalid::new(
            "hidden",
            format!("expected one or more positive layer sizes, found {hidden:?}"),
        ));
    }
    positive_counts(counts)
}

/// Every count is at least 1.
pub fn positive_counts(counts: &[(&str, usize)]) -> Result<(), Invalid> {
    match counts.iter().find(|(_, v)| *v == 0) {
        Some((name, _)) => Err(Invalid::new(name, "expected a positive count, found 0")),
        None => Ok(()),
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
