//! The ensemble against real transitions: fitting it to a replay buffer, and the paper's
//! "model error" (its Figure 3) on the newest transitions.
use rand::Rng;

use super::ensemble::{Ensemble, TrainReport};
use crate::replay::ReplayBuffer;

/// Trains `model` on every transition of `real`: inputs [s, a], targets [r, s' − s].
pub fn fit<R: Rng>(model: &mut Ensemble, real: &ReplayBuffer, rng: &mut R) -> TrainReport {
    let c = real.columns();
    let (o, a) = (real.obs_dim(), real.act_dim());
    let n = c.rew.len();
    let mut inputs = Vec::with_capacity(n * (o + a));
    let mut targets = Vec::with_capacity(n * (1 + o));
    for i in 0..n {
        inputs.extend_from_slice(&c.obs[i * o..(i + 1) * o]);
        inputs.extend_from_slice(&c.act[i * a..(i + 1) * a]);
        targets.push(c.rew[i]);
        targets.extend((0..o).map(|j| c.next_obs[i * o + j] - c.obs[i * o + j]));
    }
    model.train(&inputs, &targets, rng)
}

/// Mean hold-out MSE of the elites in a training report.
pub fn elite_mse(report: &TrainReport) -> f64 {
    report
        .elites
        .iter()
        .map(|&i| report.holdout_mse[i])
        .sum::<f64>()
        / report.elites.len().max(1) as f64
}

/// The mean L2 distance between the elites' mean predicted next state and the real one on
/// the newest `recent` transitions of `real` (measured before the model is refit on them).
pub fn next_state_error(model: &Ensemble, real: &ReplayBuffer, recent: usize) -> f64 {
    let (o, a) = (real.obs_dim(), real.act_dim());
    let c = real.columns();
    let rows = real.recent(recent);
    let mut inputs = Vec::with_capacity(rows.len() * (o + a));
    for &i in &rows {
        inputs.extend_from_slice(&c.obs[i * o..(i + 1) * o]);
        inputs.extend_from_slice(&c.act[i * a..(i + 1) * a]);
    }
    let (means, _) = model.predict(&inputs);
    let elites = &model.elites;
    let d = 1 + o;
    let mut total = 0.0;
    for (r, &i) in rows.iter().enumerate() {
        let mut sq = 0.0;
        for j in 0..o {
            let delta = elites
                .iter()
                .map(|&k| f64::from(means[k][r * d + 1 + j]))
                .sum::<f64>()
                / elites.len() as f64;
            let err = f64::from(c.obs[i * o + j]) + delta - f64::from(c.next_obs[i * o + j]);
            sq += err * err;
        }
        total += sq.sqrt();
    }
    total / rows.len().max(1) as f64
}
