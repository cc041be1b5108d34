//! Links the MuJoCo runtime that `just setup` fetched into `.deps/` and records where the
//! Gymnasium task XML files are. See `.cargo/config.toml` for how mujoco-rs finds the library.
use std::path::PathBuf;

const MUJOCO_VERSION: &str = "3.17.0";

fn main() {
    let root =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let lib_dir = root.join(".deps/mujoco/lib");
    let lib = lib_dir.join(format!("libmujoco.so.{MUJOCO_VERSION}"));
    let assets = root.join(".deps/gymnasium/assets");
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed={}", lib.display());
    println!("cargo::rerun-if-changed={}", assets.display());

    if !lib.is_file() || !assets.join("hopper.xml").is_file() {
        println!(
            "cargo::error=MuJoCo {MUJOCO_VERSION} runtime or Gymnasium task XMLs not found in {}: run `just setup`",
            root.join(".deps").display()
        );
        return;
    }
    println!("cargo::rustc-link-search=native={}", lib_dir.display());
    println!("cargo::rustc-link-arg=-Wl,-rpath,{}", lib_dir.display());
    println!(
        "cargo::rustc-env=MPDP_SETUP_ASSETS_DIR={}",
        assets.display()
    );
    // Figures' font (DejaVu Sans); checked when a figure is drawn, not here.
    println!(
        "cargo::rustc-env=MPDP_SETUP_FONTS_DIR={}",
        root.join(".deps/fonts").display()
    );

    // Provenance: the commit this binary was built from, and whether tracked files differed.
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(&root)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let commit = git(&["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let dirty =
        git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    println!("cargo::rustc-env=MPDP_GIT_COMMIT={commit}");
    println!("cargo::rustc-env=MPDP_GIT_DIRTY={dirty}");
    for watched in [".git/HEAD", ".git/index", "src"] {
        if root.join(watched).exists() {
            println!("cargo::rerun-if-changed={}", root.join(watched).display());
        }
    }
}
