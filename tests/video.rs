//! `mpdp eval --video`: an episode of each of the six tasks, rendered offscreen (OSMesa, no
//! GPU or display) and encoded as H.264, decodes to as many frames as were rendered, at the
//! size asked for; the frames are not blank, and the scene visibly changes between the first
//! frame and the last. Needs `just setup-video` (Debian's libosmesa6).
use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use common::Dir;

const SIZE: usize = 192;
const FRAMES: usize = 30;

/// A SAC run of 200 steps on `env` (100 of them learning): a policy that acts, not a good one.
fn train(runs: &Path, env: &str) -> PathBuf {
    common::succeed(
        Command::new(env!("CARGO_BIN_EXE_mpdp"))
            .args([
                "run-one",
                "--env",
                env,
                "--algo",
                "sac",
                "--seed",
                "2",
                "--steps",
                "200",
                "--eval-every",
                "200",
                "--eval-episodes",
                "1",
                "--quiet",
                "--set",
                "hidden=[16, 16]",
                "--set",
                "batch_size=16",
                "--set",
                "learning_starts=100",
            ])
            .arg("--runs-dir")
            .arg(runs),
    );
    std::fs::read_dir(runs.join("adhoc"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            std::fs::read_to_string(p.join("resolved.toml"))
                .is_ok_and(|t| t.contains(&format!("env = \"{env}\"")))
        })
        .unwrap()
}

/// The ffmpeg that the venv's imageio-ffmpeg ships.
fn ffmpeg() -> PathBuf {
    let python = mpdp::env::venv_python();
    let out = Command::new(&python)
        .args([
            "-c",
            "import imageio_ffmpeg; print(imageio_ffmpeg.get_ffmpeg_exe())",
        ])
        .output()
        .unwrap_or_else(|e| panic!("{}: {e} (run `just setup`)", python.display()));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// Decodes `video` into RGB frames of `size` × `size`.
fn decode(ffmpeg: &Path, video: &Path, size: usize) -> Vec<Vec<u8>> {
    let out = common::succeed(
        Command::new(ffmpeg)
            .args(["-loglevel", "error", "-i"])
            .arg(video)
            .args(["-f", "rawvideo", "-pix_fmt", "rgb24", "-"]),
    );
    let frame = size * size * 3;
    assert_eq!(out.stdout.len() % frame, 0, "not {size}x{size} RGB frames");
    out.stdout.chunks(frame).map(<[u8]>::to_vec).collect()
}

fn variance(px: &[u8]) -> f64 {
    let n = px.len() as f64;
    let mean = px.iter().map(|&p| f64::from(p)).sum::<f64>() / n;
    px.iter()
        .map(|&p| (f64::from(p) - mean).powi(2))
        .sum::<f64>()
        / n
}

#[test]
fn an_episode_of_every_task_renders_to_a_video_that_decodes_and_moves() {
    let ffmpeg = ffmpeg();
    let dir = Dir::new("tasks");
    for env in [
        "InvertedPendulum",
        "Hopper",
        "Walker2d",
        "HalfCheetah",
        "Ant",
        "Humanoid",
    ] {
        let run = train(&dir.0, env);
        let video = dir.0.join(format!("{env}.mp4"));
        let out = Command::new(env!("CARGO_BIN_EXE_mpdp"))
            .arg("eval")
            .arg(&run)
            .arg("--video")
            .arg(&video)
            .args([
                "--video-frames",
                &FRAMES.to_string(),
                "--video-size",
                &SIZE.to_string(),
            ])
            .arg("--json")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{env}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let rendered = report["video"]["rendered"]["frames"].as_u64().unwrap() as usize;
        let length = report["lengths"][0].as_f64().unwrap() as usize;
        // The reset state and one frame per step, up to the cap.
        assert_eq!(rendered, FRAMES.min(length + 1), "{env}");

        let frames = decode(&ffmpeg, &video, SIZE);
        assert_eq!(frames.len(), rendered, "{env}: decoded frames");
        for (i, f) in frames.iter().enumerate() {
            assert!(variance(f) > 100.0, "{env}: frame {i} is blank");
        }
        // Below the overlay (the return and step, top left): the body and the floor.
        let scene = |f: &Vec<u8>| f[SIZE * 3 * (SIZE * 3 / 10)..].to_vec();
        let (first, last) = (scene(&frames[0]), scene(&frames[frames.len() - 1]));
        let changed = first
            .chunks(3)
            .zip(last.chunks(3))
            .filter(|(a, b)| a.iter().zip(*b).any(|(x, y)| x.abs_diff(*y) > 40))
            .count();
        let share = changed as f64 / (first.len() / 3) as f64;
        assert!(
            share > 0.002,
            "{env}: {share:.4} of the pixels changed from first to last"
        );
    }
}

/// `report.videos = true`: `mpdp run` (then plots) renders a clip per env and agent of the
/// best seed, and report.md shows its first frame linked to it.
#[test]
fn the_report_links_a_clip_of_each_agents_best_seed() {
    let dir = Dir::new("report");
    let out = common::run_spec(
        &dir,
        "experiments/smoke.toml",
        &[
            "report.videos=true",
            "report.video_frames=12",
            "report.video_size=96",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("skipped"), "{stderr}");
    let plots = dir.0.join("plots/smoke");
    let report = std::fs::read_to_string(plots.join("report.md")).unwrap();
    assert!(report.contains("## Videos"), "{report}");
    for env in ["InvertedPendulum", "Hopper"] {
        let link = format!("[![SAC on {env}](videos/SAC-{env}.png)](videos/SAC-{env}.mp4)");
        assert!(report.contains(&link), "{link} not in:\n{report}");
        let frames = decode(&ffmpeg(), &plots.join(format!("videos/SAC-{env}.mp4")), 96);
        assert!(
            !frames.is_empty() && frames.len() <= 12,
            "{env}: {} frames",
            frames.len()
        );
        assert!(plots.join(format!("videos/SAC-{env}.png")).is_file());
    }
}
