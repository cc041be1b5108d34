//! The ablation specs end to end at CPU-trial size: `mpdp run experiments/ablation-*.toml`
//! with `--set` overrides that shrink budgets and networks runs every planned run and draws
//! the paper's Figures 2–4 (MPDP's horizon, the model error against β, the final return
//! against β with MBPO as a level) without skipping any.
mod common;
use common::Dir;

const TINY: [&str; 7] = [
    "seeds=[0, 1]",
    "envs.Hopper.steps=400",
    "eval={every=200, episodes=2}",
    "run={checkpoint_every=100, log_every=100}",
    "agents.MPDP.sac={hidden=[16, 16], batch_size=16, learning_starts=200, updates_per_step=1}",
    "agents.MPDP.model={members=3, elites=2, hidden=[16], batch_size=32, max_epochs=3}",
    "agents.MPDP={model_train_freq=100, horizon=3}",
];

fn run_spec(spec: &str, extra: &[&str]) -> (Dir, String) {
    let dir = Dir::new(spec);
    let sets: Vec<&str> = TINY.iter().chain(extra).copied().collect();
    let out = common::run_spec(&dir, &format!("experiments/{spec}.toml"), &sets);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{spec}: {stderr}");
    assert!(!stderr.contains("skipped"), "{spec}: {stderr}");
    (dir, stderr)
}

fn assert_figures(dir: &Dir, spec: &str, stems: &[&str]) {
    for stem in stems {
        for ext in ["svg", "png"] {
            let p = dir.0.join("plots").join(spec).join(format!("{stem}.{ext}"));
            let len = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
            assert!(len > 1000, "{} missing or empty", p.display());
        }
        let svg = dir.0.join("plots").join(spec).join(format!("{stem}.svg"));
        for label in tick_labels(&std::fs::read_to_string(&svg).unwrap()) {
            let digits = label.chars().filter(char::is_ascii_digit).count();
            assert!(
                label.len() <= 6 && digits <= 4,
                "{}: tick label {label:?} is not short and round",
                svg.display()
            );
        }
    }
}

/// The texts of an SVG that are numbers (with k or M): the tick labels.
fn tick_labels(svg: &str) -> Vec<String> {
    svg.split("<text")
        .skip(1)
        .filter_map(|piece| {
            let text = piece.split_once('>')?.1.split("</text>").next()?.trim();
            let body = text.trim_end_matches(['k', 'M']).trim_start_matches('-');
            let number = !body.is_empty() && body.chars().all(|c| c.is_ascii_digit() || c == '.');
            number.then(|| text.to_string())
        })
        .collect()
}

#[test]
fn the_beta_ablation_runs_and_draws_figures_3_and_4() {
    let (dir, _) = run_spec(
        "ablation-beta",
        &[
            "agents.MBPO.sac={hidden=[16, 16], batch_size=16, learning_starts=200, updates_per_step=1}",
            "agents.MBPO.model={members=3, elites=2, hidden=[16], batch_size=32, max_epochs=3}",
            "agents.MBPO={model_train_freq=100, rollout_batch_size=50, epoch_length=100}",
        ],
    );
    assert_figures(
        &dir,
        "ablation-beta",
        &["model_error", "final_vs_param", "learning_curves"],
    );
    let report = std::fs::read_to_string(dir.0.join("plots/ablation-beta/report.md")).unwrap();
    for label in ["MPDP[beta=0.2]", "MPDP[beta=0.5]", "MPDP[beta=0.7]", "MBPO"] {
        assert!(
            report.contains(label),
            "{label} not in the report:\n{report}"
        );
    }
}

#[test]
fn the_horizon_ablation_runs_and_draws_figure_2() {
    let (dir, _) = run_spec("ablation-horizon", &[]);
    assert_figures(&dir, "ablation-horizon", &["horizon", "learning_curves"]);
}
