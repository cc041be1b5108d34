//! The ensemble against real transitions: fitting it to a replay buffer, and the paper's
//! "model error" (its Figure 3) on the newest transitions.
use rand::Rng;

use super::ensemble::{Ensemble, TrainReport};
use crate::replay::ReplayBuffer;

/// What measuring a model's error needs of it: every member's mean and variance of
/// `[reward, Δobs]` for rows of `[obs, action]` on the host, and which members are the elites.
pub trait Dynamics {
    /// `[member][rows × d_out]` means and variances.
    fn predict(&self, inputs: &[f32]) -> (Vec<Vec<f32>>, Vec<Vec<f32>>);
    fn elites(&self) -> &[usize];
}

impl Dynamics for Ensemble {
    fn predict(&self, inputs: &[f32]) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
        Ensemble::predict(self, inputs)
    }

    fn elites(&self) -> &[usize] {
        &self.elites
    }
}

/// Trains `model` on every transition of `real`: inputs [s, a], targets [r, s' − s].
/// `None` when `interrupted` stopped it; the model and `rng` are then as they were, so the
/// same call can be made again with the same result.
pub fn fit<R: Rng + Clone>(
    model: &mut Ensemble,
    real: &ReplayBuffer,
    rng: &mut R,
    interrupted: &dyn Fn() -> bool,
) -> Option<TrainReport> {
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
    let start = rng.clone();
    let report = model.train(&inputs, &targets, rng, interrupted);
    if report.is_none() {
        *rng = start;
    }
    report
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

/// What a fit reports to the logs: the elites' mean hold-out MSE, the last epoch's training
/// NLL, the epochs run and the wall seconds.
pub fn fit_stats(report: &TrainReport) -> [(&'static str, f64); 4] {
    [
        ("model_holdout_mse", elite_mse(report)),
        ("model_train_nll", report.train_nll),
        ("model_epochs", report.epochs as f64),
        ("model_fit_s", report.seconds),
    ]
}

/// The paper's "model error" (its Figure 3), measured before the model is refit on the newest
/// transitions: the mean L2 distance between the state the elites' mean predicts `k` steps
/// ahead, open loop with the real actions, and the real state `k` steps later. Every chain of
/// `k` linked transitions (one episode: each one's next state is the next one's state, no
/// termination before the last) among the newest `recent` of `real` starts one prediction;
/// `k` = 1 is the one-step error on each of them. `None` when there is no such chain.
pub fn prediction_error(
    model: &impl Dynamics,
    real: &ReplayBuffer,
    recent: usize,
    k: usize,
) -> Option<f64> {
    let (o, a) = (real.obs_dim(), real.act_dim());
    let c = real.columns();
    let rows = real.recent(recent);
    let obs = |i: usize| &c.obs[i * o..(i + 1) * o];
    let linked =
        |i: usize, j: usize| c.terminated[i] == 0.0 && c.next_obs[i * o..(i + 1) * o] == *obs(j);
    let starts: Vec<usize> = (0..(rows.len() + 1).saturating_sub(k))
        .filter(|&p| (0..k - 1).all(|j| linked(rows[p + j], rows[p + j + 1])))
        .collect();
    if k == 0 || starts.is_empty() {
        return None;
    }
    let mut state: Vec<f32> = starts.iter().flat_map(|&p| obs(rows[p]).to_vec()).collect();
    let (elites, d) = (model.elites(), 1 + o);
    for j in 0..k {
        let mut inputs = Vec::with_capacity(starts.len() * (o + a));
        for (n, &p) in starts.iter().enumerate() {
            let i = rows[p + j];
            inputs.extend_from_slice(&state[n * o..(n + 1) * o]);
            inputs.extend_from_slice(&c.act[i * a..(i + 1) * a]);
        }
        let (means, _) = model.predict(&inputs);
        for n in 0..starts.len() {
            for x in 0..o {
                let delta = elites
                    .iter()
                    .map(|&m| f64::from(means[m][n * d + 1 + x]))
                    .sum::<f64>()
                    / elites.len() as f64;
                state[n * o + x] += delta as f32;
            }
        }
    }
    let total: f64 = starts
        .iter()
        .enumerate()
        .map(|(n, &p)| {
            let i = rows[p + k - 1];
            (0..o)
                .map(|x| (f64::from(state[n * o + x]) - f64::from(c.next_obs[i * o + x])).powi(2))
                .sum::<f64>()
                .sqrt()
        })
        .sum();
    Some(total / starts.len() as f64)
}

/// Horizons of the model errors the model-based agents log (`train/model_error`,
/// `train/model_error_5step`).
pub const ERROR_STEPS: [(usize, &str); 2] = [(1, "model_error"), (5, "model_error_5step")];

/// Both model errors of [`ERROR_STEPS`] on the newest `recent` transitions, those defined.
pub fn model_errors(
    model: &impl Dynamics,
    real: &ReplayBuffer,
    recent: usize,
) -> Vec<(&'static str, f64)> {
    ERROR_STEPS
        .iter()
        .filter_map(|&(k, name)| prediction_error(model, real, recent, k).map(|e| (name, e)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every member predicts Δs = (1, 0), reward 0.
    struct Drift(Vec<usize>);

    impl Dynamics for Drift {
        fn predict(&self, inputs: &[f32]) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
            let rows = inputs.len() / 3;
            let one: Vec<f32> = (0..rows).flat_map(|_| [0.0, 1.0, 0.0]).collect();
            (vec![one.clone(); 3], vec![vec![1.0; rows * 3]; 3])
        }

        fn elites(&self) -> &[usize] {
            &self.0
        }
    }

    /// Two interleaved episodes whose states move by (2, 0) each step; the first terminates.
    #[test]
    fn k_step_errors_follow_linked_transitions_only() {
        let mut buf = ReplayBuffer::new(100, 2, 1);
        let mut a = [0.0f64, 0.0];
        let mut b = [100.0f64, 0.0];
        for t in 0..6 {
            if t <= 3 {
                let next = [a[0] + 2.0, a[1]];
                buf.push(&a[..], &[0.5], 1.0, &next, t == 3);
                a = next;
            }
            let next = [b[0] + 2.0, b[1]];
            buf.push(&b[..], &[0.5], 1.0, &next, false);
            b = next;
        }
        let model = Drift(vec![0, 2]);
        // One step: predicted +1, real +2, on every transition.
        assert_eq!(prediction_error(&model, &buf, 100, 1), Some(1.0));
        // Rows alternate between the episodes until the first one ends; then the second's
        // rows are neighbours: two 2-step chains, predicted +2, real +4.
        assert_eq!(prediction_error(&model, &buf, 100, 2), Some(2.0));
        assert_eq!(prediction_error(&model, &buf, 100, 4), None);

        let mut one = ReplayBuffer::new(100, 2, 1);
        let mut s = [0.0f64, 0.0];
        for t in 0..8 {
            let next = [s[0] + 2.0, s[1]];
            // The episode terminates at t = 4 and a new one starts at 10.
            one.push(&s[..], &[0.5], 1.0, &next, t == 4);
            s = if t == 4 { [10.0, 0.0] } else { next };
        }
        // Three steps: predicted +3, real +6; chains start at t = 0, 1, 2 and 5.
        assert_eq!(prediction_error(&model, &one, 100, 3), Some(3.0));
        assert_eq!(prediction_error(&model, &one, 3, 3), Some(3.0));
        assert_eq!(prediction_error(&model, &one, 2, 3), None);
        // Five steps: only the chain from t = 0 (its last transition is the terminal one).
        assert_eq!(
            model_errors(&model, &one, 100),
            vec![("model_error", 1.0), ("model_error_5step", 5.0)]
        );
    }
}
