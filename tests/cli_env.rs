//! `mpdp env ...` as a user runs it: output formats, and bad input answered with one line
//! naming the problem and exit code 2.
use std::path::Path;
use std::process::{Command, Output};

mod common;
use common::Dir;

fn mpdp(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mpdp"))
        .args(args)
        .output()
        .expect("spawn mpdp")
}

/// Asserts exit code 2 and a single stderr line containing every `needle`.
fn assert_user_error(out: &Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "one line expected, got: {stderr}"
    );
    for n in needles {
        assert!(stderr.contains(n), "'{n}' not in: {stderr}");
    }
    assert!(out.stdout.is_empty(), "nothing on stdout on error");
}

const HOPPER_INIT: &str =
    r#"{"qpos": [0.0, 1.25, 0.0, 0.0, 0.0, 0.0], "qvel": [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]}"#;

#[test]
fn replay_prints_the_documented_csv() {
    let d = Dir::new("ok");
    let init = d.file("init.json", HOPPER_INIT);
    let acts = d.file("a.csv", "0.1,0.2,0.3\n\n-0.5,0.5,0\n");
    let out = mpdp(&[
        "env",
        "replay",
        "--env",
        "Hopper",
        "--init",
        &init,
        "--actions",
        &acts,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let header: Vec<String> = ["step", "reward", "terminated", "truncated"]
        .iter()
        .map(|s| s.to_string())
        .chain((0..11).map(|i| format!("obs_{i}")))
        .collect();
    assert_eq!(lines[0], header.join(","));
    assert_eq!(lines.len(), 3, "two actions, two rows");
    let row: Vec<&str> = lines[1].split(',').collect();
    assert_eq!(row.len(), 15);
    assert_eq!(&row[..1], ["1"]);
    assert_eq!(&row[2..4], ["0", "0"]);
    // Hopper standing still: about the healthy reward.
    let reward: f64 = row[1].parse().unwrap();
    assert!((reward - 1.0).abs() < 0.1, "{reward}");
}

#[test]
fn replay_stops_after_the_terminating_step() {
    let d = Dir::new("term");
    // The pole starts beyond the 0.2 rad limit: the first step terminates.
    let init = d.file("init.json", r#"{"qpos": [0.0, 0.5], "qvel": [0.0, 0.0]}"#);
    let acts = d.file("a.csv", "0\n0\n0\n");
    let out = mpdp(&[
        "env",
        "replay",
        "--env",
        "InvertedPendulum-v5",
        "--init",
        &init,
        "--actions",
        &acts,
    ]);
    let text = String::from_utf8(out.stdout).unwrap();
    let rows: Vec<&str> = text.lines().skip(1).collect();
    assert_eq!(rows.len(), 1, "{text}");
    assert!(rows[0].starts_with("1,0,1,0,"), "{}", rows[0]);
}

#[test]
fn replay_variant_selects_mbpo_observations() {
    let d = Dir::new("variant");
    let acts = d.file("a.csv", &"0,0,0,0,0,0,0,0\n".repeat(2));
    let out = mpdp(&[
        "env",
        "replay",
        "--env",
        "ant",
        "--seed",
        "4",
        "--variant",
        "mbpo",
        "--actions",
        &acts,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.lines().next().unwrap().ends_with(",obs_26"));
}

#[test]
fn unknown_env_is_a_user_error() {
    let d = Dir::new("env");
    let acts = d.file("a.csv", "0\n");
    assert_user_error(
        &mpdp(&["env", "replay", "--env", "Hoper", "--actions", &acts]),
        &["unknown environment 'Hoper'", "Hopper"],
    );
}

#[test]
fn unknown_variant_is_a_user_error() {
    let d = Dir::new("var");
    let acts = d.file("a.csv", "0\n");
    assert_user_error(
        &mpdp(&[
            "env",
            "replay",
            "--env",
            "Ant",
            "--variant",
            "v4",
            "--actions",
            &acts,
        ]),
        &["unknown observation variant 'v4'"],
    );
}

#[test]
fn wrong_action_width_names_the_line() {
    let d = Dir::new("width");
    let init = d.file("init.json", HOPPER_INIT);
    let acts = d.file("a.csv", "0,0,0\n0,0\n");
    let out = mpdp(&[
        "env",
        "replay",
        "--env",
        "Hopper",
        "--init",
        &init,
        "--actions",
        &acts,
    ]);
    assert_user_error(&out, &["a.csv:2", "2 action values, Hopper takes 3"]);
}

#[test]
fn nan_action_is_rejected() {
    let d = Dir::new("nan");
    let init = d.file("init.json", HOPPER_INIT);
    let acts = d.file("a.csv", "0,0,0\n0,NaN,0\n");
    let out = mpdp(&[
        "env",
        "replay",
        "--env",
        "Hopper",
        "--init",
        &init,
        "--actions",
        &acts,
    ]);
    assert_user_error(&out, &["a.csv:2", "column 2", "not finite"]);
}

#[test]
fn malformed_csv_names_the_field() {
    let d = Dir::new("csv");
    let init = d.file("init.json", HOPPER_INIT);
    let acts = d.file("a.csv", "0;0;0\n");
    let out = mpdp(&[
        "env",
        "replay",
        "--env",
        "Hopper",
        "--init",
        &init,
        "--actions",
        &acts,
    ]);
    assert_user_error(&out, &["a.csv:1", "'0;0;0' is not a number"]);
}

#[test]
fn empty_actions_file_is_rejected() {
    let d = Dir::new("empty");
    let acts = d.file("a.csv", "\n");
    assert_user_error(
        &mpdp(&["env", "replay", "--env", "Hopper", "--actions", &acts]),
        &["no actions"],
    );
}

#[test]
fn malformed_json_is_rejected() {
    let d = Dir::new("json");
    let acts = d.file("a.csv", "0,0,0\n");
    for (body, needle) in [
        (
            r#"{"qpos": [0, 1.25, 0, 0, 0, 0], "qvel": [0, 0"#,
            "malformed init state",
        ),
        (r#"{"qpos": [0, 1.25, 0, 0, 0, 0]}"#, "missing field `qvel`"),
        (
            r#"{"qpos": [0, 1.25, 0, 0, 0, 0], "qvel": [0, 0, 0, 0, 0, 0], "time": 1}"#,
            "unknown field `time`",
        ),
        (
            r#"{"qpos": [0, "a", 0, 0, 0, 0], "qvel": [0, 0, 0, 0, 0, 0]}"#,
            "malformed init state",
        ),
    ] {
        let init = d.file("init.json", body);
        let out = mpdp(&[
            "env",
            "replay",
            "--env",
            "Hopper",
            "--init",
            &init,
            "--actions",
            &acts,
        ]);
        assert_user_error(&out, &["init.json", needle]);
    }
}

#[test]
fn wrong_state_length_is_rejected() {
    let d = Dir::new("len");
    let acts = d.file("a.csv", "0,0,0\n");
    let init = d.file(
        "init.json",
        r#"{"qpos": [0, 1.25, 0], "qvel": [0, 0, 0, 0, 0, 0]}"#,
    );
    let out = mpdp(&[
        "env",
        "replay",
        "--env",
        "Hopper",
        "--init",
        &init,
        "--actions",
        &acts,
    ]);
    assert_user_error(&out, &["init.json", "qpos has 3 values, Hopper expects 6"]);
}

#[test]
fn missing_files_are_named() {
    let missing = Path::new("/nonexistent/mpdp/a.csv").display().to_string();
    assert_user_error(
        &mpdp(&["env", "replay", "--env", "Hopper", "--actions", &missing]),
        &["cannot read", "a.csv"],
    );
}

#[test]
fn env_list_shows_every_task() {
    let out = mpdp(&["env", "list"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for (task, obs, act) in [
        ("InvertedPendulum", "4", "1"),
        ("Hopper", "11", "3"),
        ("Walker2d", "17", "6"),
        ("HalfCheetah", "17", "6"),
        ("Ant", "105", "8"),
        ("Humanoid", "348", "17"),
    ] {
        let line = text
            .lines()
            .find(|l| l.starts_with(task))
            .unwrap_or_else(|| panic!("{task} missing"));
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(&cols[1..3], [obs, act], "{line}");
    }
    assert!(text.contains("[-0.4, 0.4]"));
}
