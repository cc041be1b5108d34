//! Metrics in long format (step, wall_s, metric, value), stored as Parquet.
//!
//! While a run goes, rows gathered since the last checkpoint are written with it as
//! `metrics/part-<step>-<n>.parquet`; a resumed run drops parts past its checkpoint (it will
//! produce those rows again). A finished run has everything in `metrics.parquet`.
use std::fs::File;
use std::path::{Path, PathBuf};

use polars::prelude::*;

use super::RunConfig;
use crate::env::EnvInfo;
use crate::store;

/// One metric value.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricRow {
    pub step: u64,
    pub wall_s: f64,
    pub metric: String,
    pub value: f64,
}

#[derive(Debug, Default)]
pub(super) struct Metrics {
    /// Rows already in part files.
    persisted: Vec<MetricRow>,
    /// Rows since the last part.
    pending: Vec<MetricRow>,
    parts: usize,
}

impl Metrics {
    pub fn push(&mut self, step: u64, wall_s: f64, metric: &str, value: f64) {
        self.pending.push(MetricRow {
            step,
            wall_s,
            metric: metric.to_string(),
            value,
        });
    }

    /// Writes the pending rows as a new part file.
    pub fn flush_part(&mut self, run_dir: &Path, step: u64) -> Result<(), String> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let dir = run_dir.join("metrics");
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let path = dir.join(format!("part-{step:012}-{:04}.parquet", self.parts));
        write_parquet(&path, &self.pending)?;
        self.parts += 1;
        self.persisted.append(&mut self.pending);
        Ok(())
    }

    /// Deletes parts written after the checkpoint at `step` and loads the rest.
    pub fn clear_parts(&mut self, run_dir: &Path, step: u64) -> Result<(), String> {
        self.persisted.clear();
        self.pending.clear();
        self.parts = 0;
        for (part_step, path) in part_files(run_dir)? {
            if part_step > step {
                store::fault_point();
                std::fs::remove_file(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            } else {
                self.persisted.extend(read_metrics(&path)?);
                self.parts += 1;
            }
        }
        Ok(())
    }

    /// Writes `metrics.parquet` with every row. The part files stay until the run's `done`
    /// status is written ([`remove_parts`]): until then a crash resumes from them.
    pub fn finish(&mut self, run_dir: &Path) -> Result<(), String> {
        let mut rows = std::mem::take(&mut self.persisted);
        rows.append(&mut self.pending);
        write_parquet(&run_dir.join(store::METRICS_FILE), &rows)?;
        self.persisted = rows;
        Ok(())
    }
}

/// Removes a finished run's part files (its rows are in `metrics.parquet`).
pub fn remove_parts(run_dir: &Path) {
    store::remove_dir(&run_dir.join("metrics"));
}

/// A run's part files in the order they were written, each with the step it was written
/// at (none when there is no `metrics/`).
fn part_files(run_dir: &Path) -> Result<Vec<(u64, PathBuf)>, String> {
    let dir = run_dir.join("metrics");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(Vec::new());
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("part-") && n.ends_with(".parquet"))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let path = dir.join(&name);
            match name.get(5..17).and_then(|d| d.parse().ok()) {
                Some(step) => Ok((step, path)),
                None => Err(format!("{}: unexpected name", path.display())),
            }
        })
        .collect()
}

/// The rows a run has saved so far: `metrics.parquet` once it has finished, else the part
/// files written with its checkpoints (none yet: no rows).
pub fn read_saved_metrics(run_dir: &Path) -> Result<Vec<MetricRow>, String> {
    let whole = run_dir.join(store::METRICS_FILE);
    if whole.is_file() {
        return read_metrics(&whole);
    }
    let mut rows = Vec::new();
    for (_, path) in part_files(run_dir)? {
        rows.extend(read_metrics(&path)?);
    }
    Ok(rows)
}

fn write_parquet(path: &Path, rows: &[MetricRow]) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let mut df = df!(
        "step" => rows.iter().map(|r| r.step).collect::<Vec<u64>>(),
        "wall_s" => rows.iter().map(|r| r.wall_s).collect::<Vec<f64>>(),
        "metric" => rows.iter().map(|r| r.metric.as_str()).collect::<Vec<&str>>(),
        "value" => rows.iter().map(|r| r.value).collect::<Vec<f64>>(),
    )
    .map_err(|e| err(&e))?;
    let tmp = store::tmp_path(path);
    store::fault_point();
    {
        let mut file = File::create(&tmp).map_err(|e| err(&e))?;
        ParquetWriter::new(&mut file)
            .finish(&mut df)
            .map_err(|e| err(&e))?;
        file.sync_all().map_err(|e| err(&e))?;
    }
    store::rename(&tmp, path).map_err(|e| err(&e))
}

/// Whether `metric` measures wall time (`train/steps_per_s`, `time/<phase>_s`,
/// `train/model_fit_s`): the only metrics that differ between a resumed run and an
/// uninterrupted one, or between two runs of the same config.
pub fn measures_time(metric: &str) -> bool {
    metric.starts_with("time/") || metric.ends_with("_s")
}

/// Reads a metrics Parquet file written by a run.
pub fn read_metrics(path: &Path) -> Result<Vec<MetricRow>, String> {
    let err = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let file = File::open(path).map_err(|e| err(&e))?;
    let df = ParquetReader::new(file).finish().map_err(|e| err(&e))?;
    let col = |name: &str| df.column(name).map_err(|e| err(&e));
    let steps = col("step")?.u64().map_err(|e| err(&e))?.clone();
    let walls = col("wall_s")?.f64().map_err(|e| err(&e))?.clone();
    let names = col("metric")?.str().map_err(|e| err(&e))?.clone();
    let values = col("value")?.f64().map_err(|e| err(&e))?.clone();
    Ok(steps
        .iter()
        .zip(walls.iter())
        .zip(names.iter())
        .zip(values.iter())
        .map(|(((s, w), m), v)| MetricRow {
            step: s.unwrap_or(0),
            wall_s: w.unwrap_or(f64::NAN),
            metric: m.unwrap_or("").to_string(),
            value: v.unwrap_or(f64::NAN),
        })
        .collect())
}

/// `provenance.json`: what produced the run's numbers.
pub(super) fn provenance(
    cfg: &RunConfig,
    info: &EnvInfo,
    device: &burn::prelude::Device,
) -> String {
    let (commit, dirty) = store::git_commit();
    let value = serde_json::json!({
        "run_id": cfg.run_id(),
        "mpdp_version": env!("CARGO_PKG_VERSION"),
        "git_commit": commit,
        "git_dirty": dirty,
        "crates": {"burn": "0.22.1", "mujoco-rs": "7.0.0", "polars": "0.55.2"},
        "mujoco_version": mujoco_rs::mujoco_version(),
        "env": {
            "task": info.task.name(),
            "gymnasium_id": info.task.gymnasium_id(),
            "variant": info.variant.name(),
            "xml_sha256": info.xml_sha256,
            "obs_dim": info.obs_dim,
            "act_dim": info.act_dim,
        },
        "backend": format!("{device:?}"),
        "threads": rayon::current_num_threads(),
        "host": store::hostname(),
        "started_unix": store::unix_now(),
    });
    serde_json::to_string_pretty(&value).expect("provenance serialises")
}
