//! Helpers shared by the integration tests.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A fresh directory under the system temp dir, named after the test binary, the tag and the
/// process, and removed when dropped.
pub struct Dir(pub PathBuf);

impl Dir {
    #[allow(dead_code)]
    pub fn new(tag: &str) -> Dir {
        let d = std::env::temp_dir().join(format!(
            "mpdp-{}-{tag}-{}",
            env!("CARGO_CRATE_NAME"),
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }

    /// Writes `body` to `name` in the directory and returns its path.
    #[allow(dead_code)]
    pub fn file(&self, name: &str, body: &str) -> String {
        let p = self.0.join(name);
        std::fs::write(&p, body).unwrap();
        p.display().to_string()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}

/// `mpdp run SPEC --set ...` with runs and plots in `dir` (`runs/`, `plots/`).
#[allow(dead_code)]
pub fn run_spec(dir: &Dir, spec: &str, sets: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mpdp"));
    c.args(["run", spec]);
    for set in sets {
        c.args(["--set", set]);
    }
    c.arg("--runs-dir")
        .arg(dir.0.join("runs"))
        .arg("--plots-dir")
        .arg(dir.0.join("plots"))
        .output()
        .expect("spawn mpdp")
}

/// The one run directory under `runs/adhoc/` (where `run-one` puts it).
#[allow(dead_code)]
pub fn only_run(runs: &Path) -> PathBuf {
    std::fs::read_dir(runs.join("adhoc"))
        .unwrap()
        .next()
        .expect("a run directory")
        .unwrap()
        .path()
}

/// Runs `c` and returns its output, failing the test with its stderr unless it succeeded.
#[allow(dead_code)]
pub fn succeed(c: &mut Command) -> Output {
    let out = c.output().expect("spawn");
    assert!(
        out.status.success(),
        "{:?}: {}",
        c.get_program(),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The temporary files of interrupted atomic writes (`*.tmp`) anywhere under `dir`.
#[allow(dead_code)]
pub fn temporary_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(temporary_files(&path));
        } else if path.extension().is_some_and(|e| e == "tmp") {
            found.push(path);
        }
    }
    found
}
