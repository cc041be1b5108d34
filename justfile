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

# Run every run of a spec not done yet (rerun to resume), then draw its figures and report,
# e.g. `just run experiments/quick.toml`.
run SPEC *ARGS: build
    {{bin}} run {{SPEC}} {{ARGS}}

# Every run of a spec with its id and status; nothing is run.
plan SPEC *ARGS: build
    {{bin}} plan {{SPEC}} {{ARGS}}

# The resolved config of every run of a spec and where each value came from.
explain SPEC *ARGS: build
    {{bin}} explain {{SPEC}} {{ARGS}}

# Aggregate a spec's done runs (runs/<name>/summary.parquet) and print final scores.
aggregate SPEC *ARGS: build
    {{bin}} aggregate {{SPEC}} {{ARGS}}

# Figures (SVG, PNG) and report.md in plots/<name>/, from what is in runs/ alone.
plots SPEC *ARGS: build
    {{bin}} plots {{SPEC}} {{ARGS}}

# Progress of a spec's runs: counts, running and failed runs, ETA.
status SPEC *ARGS: build
    {{bin}} status {{SPEC}} {{ARGS}}

# Submit the runs not done to Slurm as one job array, e.g. `just submit SPEC --partition gpu`.
submit SPEC *ARGS: build
    {{bin}} submit {{SPEC}} --executor slurm {{ARGS}}

# OSMesa for `mpdp eval --video` and `report.videos` (Debian's libosmesa6; needs root).
setup-video:
    @if ldconfig -p | grep libOSMesa.so >/dev/null; then echo "setup-video: libOSMesa is installed"; \
     else { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends libosmesa6; } || { echo "setup-video: install Debian's libosmesa6 (apt-get install libosmesa6, as root)" >&2; exit 1; }; fi

# Evaluate a run's saved policy, e.g. `just eval runs/adhoc/1c38f18c1315 --video hopper.mp4`.
eval RUN_DIR *ARGS: build
    {{bin}} eval {{RUN_DIR}} {{ARGS}}

# Tests build with the wgpu backend in, so that the CPU suite and the GPU checks share one build
# (the GPU checks are ignored unless asked for: `just test-wgpu`).
test_features := "--features wgpu"

# The test suite CI runs: unit, integration and Gymnasium parity tests.
test: setup
    # The library's own tests load Adam states, which burn puts on its default device; the binary
    # pins that to the device it runs on (src/main.rs), the tests pin it to the CPU here.
    BURN_DEVICE=flex cargo test --locked {{test_features}}

# Mesa's software Vulkan (lavapipe, Debian's mesa-vulkan-drivers; needs root): a Vulkan device
# on the CPU, so `just test-wgpu` runs where there is no GPU. For correctness only: it is slow.
setup-wgpu:
    @if ls /usr/share/vulkan/icd.d/lvp_icd.*.json >/dev/null 2>&1; then echo "setup-wgpu: lavapipe is installed"; \
     else { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends mesa-vulkan-drivers; } || { echo "setup-wgpu: install Debian's mesa-vulkan-drivers (apt-get install mesa-vulkan-drivers, as root)" >&2; exit 1; }; fi

# The GPU path against the CPU (`--features wgpu`, on any Vulkan device; lavapipe without a GPU):
# every algorithm, the swish fallback, a checkpoint moved between devices, the benchmarks.
test-wgpu: setup
    XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}" cargo test --locked {{test_features}} --test wgpu -- --ignored --test-threads=1 --nocapture

# Formatting and lints (warnings are errors).
lint: setup
    cargo fmt --all -- --check
    cargo clippy --locked --all-targets {{test_features}} -- -D warnings

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

# A single-node Slurm cluster on this machine (Debian, root): what `just test-slurm` needs.
slurm-local *ARGS:
    @scripts/slurm-local {{ARGS}}

# The Slurm executor against a real cluster (`just slurm-local start` first; CI does both).
test-slurm: setup
    cargo test --locked {{test_features}} --test slurm -- --ignored --test-threads=1

# Ensemble training step and inference throughput: ours vs plain PyTorch on CPU, `ratio=X` each.
bench-ensemble *ARGS: build bench-setup
    {{bin}} bench ensemble {{ARGS}}

# One MPDP update (H 5, batch 256, Hopper sizes) against a PyTorch CPU implementation.
bench-mpdp *ARGS: build bench-setup
    {{bin}} bench mpdp {{ARGS}}

# One PETS planning call (CEM 500 x 20 particles x horizon 30 x 5 iterations, Hopper sizes)
# against a PyTorch CPU implementation.
bench-cem *ARGS: build bench-setup
    {{bin}} bench cem {{ARGS}}

# Opt-in learning checks on real tasks (minutes to hours): SAC, DDPG, MBPO, MPDP, PETS and POPLIN-P
# on InvertedPendulum, SAC on Hopper, PETS against SAC on HalfCheetah.
test-learning: setup
    cargo test --release --locked --test learning -- --ignored --nocapture --test-threads=1
