//! A run's saved policy, evaluated again (`mpdp eval RUN_DIR`): the agent is rebuilt from the
//! run's resolved config, loads a checkpoint (the newest, `ckpt/`, which a finished run writes
//! at its last step, or one named), and runs deterministic episodes through its own `exploit`
//! on fresh envs stepped together.
//!
//! By default the episodes are the run's last evaluation again: as many, on the same env
//! seeds, so a finished run's final `eval/return_mean` is reproduced exactly (on the device it
//! ran on). `seed` asks for other episodes instead.
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{EnvPool, LoopState, mix};
use crate::agent::AgentError;
use crate::env::{Env, EnvError, Task};

/// What to evaluate and how.
#[derive(Debug, Clone, Default)]
pub struct EvalRequest {
    /// The checkpoint directory (holding `agent/` and `loop.json`); default `RUN_DIR/ckpt`.
    pub checkpoint: Option<PathBuf>,
    /// Episodes; default the run's `eval.episodes`.
    pub episodes: Option<usize>,
    /// Env seeds from this seed instead of the run's last evaluation's.
    pub seed: Option<u64>,
    /// Keep the joint positions (qpos) and observations of episode `record` at every step,
    /// the initial state first (for rendering and traces).
    pub record: Option<usize>,
}

/// The outcome: one return and length per episode.
#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    pub run_id: String,
    pub algo: String,
    pub env: String,
    /// The checkpoint evaluated and the env step it was written at.
    pub checkpoint: PathBuf,
    pub step: u64,
    /// Each episode's env seed.
    pub seeds: Vec<u64>,
    pub returns: Vec<f64>,
    pub lengths: Vec<f64>,
    pub return_mean: f64,
    pub return_std: f64,
    /// The episode `record` asked for.
    #[serde(skip)]
    pub recording: Option<Recording>,
}

/// One episode, state by state: the joint positions and the observation at every frame (the
/// reset state first, then after each step) and the return so far at each.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Recording {
    pub qpos: Vec<Vec<f64>>,
    pub obs: Vec<Vec<f64>>,
    pub returns: Vec<f64>,
    /// Seconds of simulated time per step.
    pub dt: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("{0}: not a run directory (no resolved.toml in it)")]
    NotARun(PathBuf),
    #[error("{0}")]
    BadConfig(String),
    #[error(
        "{0}: no checkpoint to evaluate (a run writes one every checkpoint_every steps and at its end)"
    )]
    NoCheckpoint(PathBuf),
    #[error("{path}: the checkpoint cannot be read: {message}")]
    Unreadable { path: PathBuf, message: String },
    #[error("--episodes must be in 1..={max}, found {found}")]
    Episodes { found: usize, max: usize },
    #[error("--episode {index}: only {episodes} episodes are run")]
    Record { index: usize, episodes: usize },
    #[error("rendering {path}: {message}")]
    Render { path: PathBuf, message: String },
    #[error("writing the trace {path}: {message}")]
    Trace { path: PathBuf, message: String },
    #[error(transparent)]
    Env(#[from] EnvError),
    #[error(transparent)]
    Agent(#[from] AgentError),
}

/// Every way the run directory or checkpoint named can be wrong is the user's to fix.
impl crate::config::IsUsage for EvalError {
    fn is_usage(&self) -> bool {
        match self {
            EvalError::Env(_) => false,
            EvalError::Agent(e) => crate::config::IsUsage::is_usage(e),
            _ => true,
        }
    }
}

/// Evaluates the policy saved in `run_dir` (see the module's documentation) on `device`.
pub fn evaluate_run(
    run_dir: &Path,
    req: &EvalRequest,
    device: &burn::prelude::Device,
) -> Result<Evaluation, EvalError> {
    let cfg = match super::read_resolved(run_dir) {
        Ok(Some(cfg)) => cfg,
        Ok(None) => return Err(EvalError::NotARun(run_dir.into())),
        Err(e) => return Err(EvalError::BadConfig(e.to_string())),
    };
    // Hand-edited or damaged: refused before anything is built from it.
    cfg.check().map_err(|m| {
        EvalError::BadConfig(format!(
            "{}: {m}",
            run_dir.join(super::RESOLVED_FILE).display()
        ))
    })?;
    let task: Task = cfg.task()?;
    let variant = cfg.obs_variant()?;

    let ckpt = req
        .checkpoint
        .clone()
        .unwrap_or_else(|| run_dir.join("ckpt"));
    if !ckpt.join("loop.json").exists() || !ckpt.join("agent").is_dir() {
        return Err(EvalError::NoCheckpoint(ckpt));
    }
    let unreadable = |message: String| EvalError::Unreadable {
        path: ckpt.clone(),
        message,
    };
    let state: LoopState =
        super::read_json(&ckpt, "loop.json").map_err(|e| unreadable(e.to_string()))?;

    let episodes = req.episodes.unwrap_or(cfg.eval.episodes);
    let max = crate::config::limits::ENVS;
    if !(1..=max).contains(&episodes) {
        return Err(EvalError::Episodes {
            found: episodes,
            max,
        });
    }
    if let Some(index) = req.record.filter(|&i| i >= episodes) {
        return Err(EvalError::Record { index, episodes });
    }
    // The run's last evaluation used stream `evals` (evaluation k of a run uses k + 1).
    let seeds: Vec<u64> = (0..episodes as u64)
        .map(|k| match req.seed {
            Some(s) => mix(s, 0, k),
            None => mix(cfg.seed, state.evals.max(1), k),
        })
        .collect();

    let mut pool = EnvPool::new(task, variant, episodes)?;
    let info = pool.info().clone();
    let mut agent = super::make_agent(&cfg, &info, device)?;
    agent
        .load(&ckpt.join("agent"))
        .map_err(|e| unreadable(e.to_string()))?;
    for (env, &seed) in pool.envs_mut().iter_mut().zip(&seeds) {
        env.reset(Some(seed));
    }
    let mut recording = req.record.map(|i| Recording {
        qpos: vec![pool.envs()[i].qpos().to_vec()],
        obs: vec![pool.envs()[i].obs().to_vec()],
        returns: vec![0.0],
        dt: info.dt,
    });
    let (returns, lengths) = pool.run_episodes_with(
        |obs, envs, first| agent.exploit_envs(obs, envs, first),
        |i, env, step| {
            if let Some(r) = recording.as_mut().filter(|_| req.record == Some(i)) {
                r.qpos.push(env.qpos().to_vec());
                r.obs.push(env.obs().to_vec());
                r.returns
                    .push(r.returns.last().copied().unwrap_or(0.0) + step.reward);
            }
        },
    );
    let (return_mean, return_std) = (crate::stats::mean(&returns), crate::stats::std(&returns));
    Ok(Evaluation {
        run_id: cfg.run_id(),
        algo: cfg.algo.clone(),
        env: task.name().to_string(),
        checkpoint: ckpt,
        step: state.step,
        seeds,
        returns,
        lengths,
        return_mean,
        return_std,
        recording,
    })
}

/// Where and how to render the recorded episode.
#[derive(Debug, Clone)]
pub struct VideoRequest {
    /// The video: `.mp4` (H.264), `.webm` (VP9) or `.gif`.
    pub path: PathBuf,
    /// Also save the first frame here (PNG).
    pub thumbnail: Option<PathBuf>,
    /// At most this many frames (the first ones); all when None.
    pub max_frames: Option<usize>,
    /// Frame width and height in pixels.
    pub size: u32,
    /// The interpreter of the venv `just setup` makes (MuJoCo, imageio-ffmpeg, Pillow).
    pub python: PathBuf,
    /// `python/render.py`.
    pub script: PathBuf,
}

/// What the renderer made.
#[derive(Debug, Clone, serde::Deserialize, Serialize)]
pub struct Rendered {
    pub frames: usize,
    pub width: u32,
    pub height: u32,
    pub seconds: f64,
}

/// Renders `e`'s recorded episode with MuJoCo's offscreen renderer (python/render.py: the
/// task's tracking camera, the return and step drawn in a corner) into `v.path`.
pub fn render_video(e: &Evaluation, v: &VideoRequest) -> Result<Rendered, EvalError> {
    let fail = |message: String| EvalError::Render {
        path: v.path.clone(),
        message,
    };
    let rec = e
        .recording
        .as_ref()
        .ok_or_else(|| fail("no episode was recorded".into()))?;
    if !(16..=4096).contains(&v.size) || v.size % 2 == 1 {
        return Err(fail(format!(
            "the frame size must be an even number of pixels in 16..=4096, found {}",
            v.size
        )));
    }
    let ext = v
        .path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default();
    if !["mp4", "webm", "gif"].contains(&ext.to_ascii_lowercase().as_str()) {
        return Err(fail("expected a .mp4, .webm or .gif file".into()));
    }
    let frames = v
        .max_frames
        .map_or(rec.qpos.len(), |n| n.min(rec.qpos.len()));
    if frames == 0 {
        return Err(fail("no frames to render (--video-frames 0)".into()));
    }
    let task: Task = e
        .env
        .parse()
        .map_err(|_| fail(format!("unknown task {}", e.env)))?;
    let xml = crate::env::asset_path(task.xml_file()).map_err(|x| fail(x.to_string()))?;
    let episode = serde_json::json!({
        "xml": xml,
        "task": e.env,
        "fps": 1.0 / rec.dt,
        "label": format!("{} on {}, trained {} steps", e.algo, e.env, e.step),
        "qpos": &rec.qpos[..frames],
        "returns": &rec.returns[..frames],
    });
    let mut name = v.path.file_name().unwrap_or_default().to_os_string();
    name.push(".episode.json");
    let episode_path = v.path.with_file_name(name);
    crate::store::write_atomic(&episode_path, episode.to_string().as_bytes())
        .map_err(|x| fail(format!("{}: {x}", episode_path.display())))?;
    let mut cmd = std::process::Command::new(&v.python);
    cmd.arg(&v.script).arg(&episode_path).arg(&v.path).args([
        "--width",
        &v.size.to_string(),
        "--height",
        &v.size.to_string(),
    ]);
    if let Some(t) = &v.thumbnail {
        cmd.arg("--thumbnail").arg(t);
    }
    let out = cmd.output();
    let _ = std::fs::remove_file(&episode_path);
    let out = out.map_err(|x| {
        fail(format!(
            "{}: {x} (run `just setup`; MPDP_PYTHON names another interpreter)",
            v.python.display()
        ))
    })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(3).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        let gl = ["OSMesa", "GL", "gl_context", "MUJOCO_GL"]
            .iter()
            .any(|k| stderr.contains(k));
        let hint = if gl {
            " (MuJoCo renders offscreen through OSMesa: Debian's libosmesa6, which \
             `just setup-video` installs)"
        } else {
            ""
        };
        return Err(fail(format!(
            "the renderer failed: {}{hint}",
            tail.join(" / ")
        )));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .map_err(|x| fail(format!("unexpected renderer output ({x}): {stdout}")))
}

/// Writes `e`'s recorded episode as CSV to `path`: one row per state (the reset state is step
/// 0), with the return so far, the joint positions and the observation
/// (`step,return,qpos_0,…,obs_0,…`).
pub fn write_trace(e: &Evaluation, path: &Path) -> Result<usize, EvalError> {
    let fail = |message: String| EvalError::Trace {
        path: path.into(),
        message,
    };
    let rec = e
        .recording
        .as_ref()
        .ok_or_else(|| fail("no episode was recorded".into()))?;
    let width = |rows: &[Vec<f64>]| rows.first().map_or(0, Vec::len);
    let mut csv = String::from("step,return");
    for (prefix, n) in [("qpos", width(&rec.qpos)), ("obs", width(&rec.obs))] {
        for j in 0..n {
            csv.push_str(&format!(",{prefix}_{j}"));
        }
    }
    csv.push('\n');
    for (t, ((q, o), r)) in rec.qpos.iter().zip(&rec.obs).zip(&rec.returns).enumerate() {
        csv.push_str(&format!("{t},{r}"));
        for x in q.iter().chain(o) {
            csv.push_str(&format!(",{x}"));
        }
        csv.push('\n');
    }
    crate::store::write_atomic(path, csv.as_bytes()).map_err(|x| fail(x.to_string()))?;
    Ok(rec.returns.len())
}
