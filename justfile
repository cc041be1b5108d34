# mpdp: thin recipes over the `mpdp` binary. `just --list` shows them.
set shell := ["bash", "-euo", "pipefail", "-c"]

# Build outputs live outside the work tree so every checkout on this machine reuses them.
export CARGO_TARGET_DIR := env_var_or_default("CARGO_TARGET_DIR", env_var("HOME") / ".cache/mpdp/target")

bin := CARGO_TARGET_DIR / "release/mpdp"

default:
    @just --list

# Fetch MuJoCo's runtime, Gymnasium's task XMLs and the Python peer venv into .deps/ (idempotent).
setup:
    @scripts/setup

# Release build of the mpdp binary.
build: setup
    cargo build --release --locked

# Run an experiment spec, e.g. `just run experiments/quick.toml`.
run SPEC: build
    {{bin}} run {{SPEC}}

# The test suite CI runs: unit, integration and Gymnasium parity tests.
test: setup
    cargo test --locked

# Formatting and lints (warnings are errors).
lint: setup
    cargo fmt --all -- --check
    cargo clippy --locked --all-targets -- -D warnings

# Environment throughput: env.step vs raw mj_step x frame skip vs Gymnasium in Python.
bench-env *ARGS: build
    {{bin}} bench env {{ARGS}}

# Any mpdp subcommand on the release build, e.g. `just mpdp env list`.
mpdp *ARGS: build
    {{bin}} {{ARGS}}

# PyTorch (CPU) in .deps/bench-venv for the reference side of `mpdp bench sac` (a few GB).
bench-setup:
    @scripts/bench-setup

# SAC update throughput: ours vs plain PyTorch on CPU, `ratio=X` last.
bench-sac *ARGS: build bench-setup
    {{bin}} bench sac {{ARGS}}

# Opt-in learning checks on real tasks (minutes): SAC and DDPG on InvertedPendulum, SAC on Hopper.
test-learning: setup
    cargo test --release --locked --test learning -- --ignored --nocapture --test-threads=1
