//! `just setup` may run again while runs are going (after a pull, say): it replaces the MuJoCo
//! runtime by rename, so processes that mapped the old file keep working. Rewriting the file
//! in place crashed them with SIGBUS.
use std::process::Command;

#[test]
fn setup_reruns_under_a_running_run() {
    let runs = std::env::temp_dir().join(format!("mpdp-setup-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&runs);
    let mut child = Command::new(env!("CARGO_BIN_EXE_mpdp"))
        .args([
            "run-one",
            "--env",
            "Hopper",
            "--algo",
            "sac",
            "--steps",
            "200000",
            "--eval-every",
            "200000",
            "--checkpoint-every",
            "1000000",
            "--eval-episodes",
            "1",
            "--quiet",
            "--set",
            "hidden=[16]",
            "--set",
            "batch_size=8",
            "--set",
            "learning_starts=200000",
        ])
        .arg("--runs-dir")
        .arg(&runs)
        .spawn()
        .expect("spawn mpdp");
    // Let it load MuJoCo and start stepping.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let setup = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/setup"))
        .env("MPDP_SETUP_FORCE", "1")
        .output()
        .expect("run scripts/setup");
    assert!(
        setup.status.success(),
        "{}",
        String::from_utf8_lossy(&setup.stderr)
    );
    let status = child.wait().unwrap();
    assert!(status.success(), "the run died while setup ran: {status:?}");
    std::fs::remove_dir_all(&runs).ok();
}
