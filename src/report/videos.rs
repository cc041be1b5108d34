//! `report.videos = true`: per env and agent (or variant), a short clip of the final policy
//! of its best seed (the highest final score), rendered as `mpdp eval --video` does, into
//! `plots/<name>/videos/`, with its first frame as a PNG for the report to show.
use std::collections::BTreeMap;
use std::path::Path;

use super::aggregate::{Results, RunResult};
use crate::runner::{self, EvalRequest, Rendered, VideoRequest};

/// One rendered clip; paths relative to the report's directory.
pub struct Clip {
    pub group: String,
    pub env: String,
    pub seed: u64,
    pub score: f64,
    pub video: String,
    pub thumbnail: String,
    pub rendered: Rendered,
    /// The clip's episode: its return over the frames shown, and its full length.
    pub episode_return: f64,
    pub episode_length: f64,
}

/// A file-name-safe stem: letters, digits, `-` and `_`; others become `_`.
fn stem(group: &str, env: &str) -> String {
    format!("{group}-{env}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Renders the clips into `dir/videos/`. A clip that cannot be made (no checkpoint, no
/// renderer) is a warning, never an error: the rest of the report stands.
pub fn render(results: &Results, runs_dir: &Path, dir: &Path) -> (Vec<Clip>, Vec<String>) {
    let cfg = &results.spec.report;
    let mut best: BTreeMap<(String, String), (&RunResult, f64)> = BTreeMap::new();
    for r in &results.runs {
        let Some(score) = r.final_score(cfg.final_evals) else {
            continue;
        };
        let key = (r.run.label(), r.run.env.clone());
        if best.get(&key).is_none_or(|(_, s)| score > *s) {
            best.insert(key, (r, score));
        }
    }
    let out = dir.join("videos");
    if let Err(e) = std::fs::create_dir_all(&out) {
        return (Vec::new(), vec![format!("videos: {}: {e}", out.display())]);
    }
    let device = crate::nn::device();
    let (mut clips, mut warnings) = (Vec::new(), Vec::new());
    for ((group, env), (run, score)) in best {
        let name = stem(&group, &env);
        let run_dir = runs_dir.join(&results.spec.name).join(&run.run.run_id);
        let req = EvalRequest {
            episodes: Some(1),
            record: Some(0),
            ..EvalRequest::default()
        };
        let video = VideoRequest {
            path: out.join(format!("{name}.mp4")),
            thumbnail: Some(out.join(format!("{name}.png"))),
            max_frames: Some(cfg.video_frames),
            size: cfg.video_size,
            python: crate::env::venv_python(),
            script: crate::env::python_script("render.py"),
        };
        let made = runner::evaluate_run(&run_dir, &req, &device)
            .map_err(|e| e.to_string())
            .and_then(|e| {
                let rendered = runner::render_video(&e, &video).map_err(|x| x.to_string())?;
                Ok((e, rendered))
            });
        match made {
            Ok((e, rendered)) => {
                let shown = rendered.frames.saturating_sub(1);
                let rec = e.recording.as_ref();
                clips.push(Clip {
                    group,
                    env,
                    seed: run.run.seed,
                    score,
                    video: format!("videos/{name}.mp4"),
                    thumbnail: format!("videos/{name}.png"),
                    episode_return: rec.map_or(0.0, |r| r.returns[shown.min(r.returns.len() - 1)]),
                    episode_length: e.lengths[0],
                    rendered,
                });
            }
            Err(why) => warnings.push(format!("video of {group} on {env} skipped: {why}")),
        }
    }
    (clips, warnings)
}

/// Where the clips of `clips` go in the report, per env.
pub fn section(s: &mut String, clips: &[Clip]) {
    use std::fmt::Write as _;
    if clips.is_empty() {
        return;
    }
    let _ = writeln!(s, "## Videos\n");
    let _ = writeln!(
        s,
        "Per env and agent, the final policy of the seed with the best final score, on the \
         first episode of its last evaluation (the same env seed); up to {} frames of {}×{} \
         (the first frame shown; click for the clip).\n",
        clips.iter().map(|c| c.rendered.frames).max().unwrap_or(0),
        clips[0].rendered.width,
        clips[0].rendered.height
    );
    let mut envs: Vec<&str> = clips.iter().map(|c| c.env.as_str()).collect();
    envs.dedup();
    for env in envs {
        let _ = writeln!(s, "### {env}\n");
        let _ = writeln!(s, "| agent | seed | score | episode | clip |");
        let _ = writeln!(s, "|---|---|---|---|---|");
        for c in clips.iter().filter(|c| c.env == env) {
            let _ = writeln!(
                s,
                "| {} | {} | {:.1} | return {:.1} after {} of {} steps | [![{} on {}]({})]({}) |",
                c.group,
                c.seed,
                c.score,
                c.episode_return,
                c.rendered.frames.saturating_sub(1),
                c.episode_length,
                c.group,
                c.env,
                c.thumbnail,
                c.video
            );
        }
        let _ = writeln!(s);
    }
}
