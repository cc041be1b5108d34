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
}
