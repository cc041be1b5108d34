//! One-vs-rest (OvR) uncertainty of an ensemble prediction (M2AC; docs/algorithms.md, "M2AC"): the KL
//! divergence between the predicting member's Gaussian and the moment-matched Gaussian of the
//! other members, summed over output dimensions (reward included).
//!
//! With K members, for the predicting member i and each output dimension:
//! μ₋ᵢ = (Σ_j μ_j − μ_i)/(K−1), σ²₋ᵢ = (Σ_j (σ_j² + μ_j²) − μ_i² − σ_i²)/(K−1) − μ₋ᵢ², and
//! KL(N(μ_i, σ_i²) ‖ N(μ₋ᵢ, σ²₋ᵢ)) = ½ [ln(σ²₋ᵢ/σ_i²) + (σ_i² + (μ_i − μ₋ᵢ)²)/σ²₋ᵢ − 1].

use burn::prelude::*;

/// The OvR uncertainty of one row, on the host in f64: the reference the tensor versions
/// ([`ovr_each`], [`ovr_total`]) are tested against.
///
/// The OvR uncertainty of one row: `means[k]` and `vars[k]` are member k's mean and variance
/// vectors for the row, `i` the predicting member. Computed in f64.
#[cfg(test)]
pub fn ovr(means: &[&[f32]], vars: &[&[f32]], i: usize) -> f64 {
    let k = means.len();
    assert!(k >= 2 && i < k, "OvR needs at least two members");
    let d = means[0].len();
    let rest = (k - 1) as f64;
    let mut u = 0.0;
    for j in 0..d {
        let (mut sum_m, mut sum_second) = (0.0, 0.0);
        for m in 0..k {
            let (mu, var) = (means[m][j] as f64, vars[m][j] as f64);
            sum_m += mu;
            sum_second += var.max(1e-12) + mu * mu;
        }
        let (mu_i, var_i) = (means[i][j] as f64, (vars[i][j] as f64).max(1e-12));
        let mu_r = (sum_m - mu_i) / rest;
        // Floor the mixture variance: float error can make it slightly non-positive when
        // the other members agree exactly.
        let var_r = ((sum_second - mu_i * mu_i - var_i) / rest - mu_r * mu_r).max(1e-12);
        u += 0.5 * ((var_r / var_i).ln() + (var_i + (mu_i - mu_r).powi(2)) / var_r - 1.0);
    }
    u
}

/// OvR uncertainty of every row of a prediction: `means[k]`/`vars[k]` are `[rows × d]` of
/// member k (the members taking part, e.g. the elites), `chosen[r]` the member that predicts
/// row r.
#[cfg(test)]
pub fn ovr_rows(means: &[Vec<f32>], vars: &[Vec<f32>], chosen: &[usize], d: usize) -> Vec<f64> {
    chosen
        .iter()
        .enumerate()
        .map(|(r, &i)| {
            let m: Vec<&[f32]> = means.iter().map(|x| &x[r * d..(r + 1) * d]).collect();
            let v: Vec<&[f32]> = vars.iter().map(|x| &x[r * d..(r + 1) * d]).collect();
            ovr(&m, &v, i)
        })
        .collect()
}

/// Each member's one-vs-rest KL, differentiable: KL(N_i ‖ N_−i) summed over output
/// dimensions, where N_−i is the moment-matched Gaussian of the other members (the
/// uncertainty M2AC masks with, of the member that predicts). Takes `[K, rows, d]` means and
/// log-variances, returns `[K, rows]`.
///
/// KL is invariant to shifting both Gaussians, so the means are centred on their average
/// first; the rest's variance is floored at 1e-12 as in [`ovr`].
pub fn ovr_each(mean: Tensor<3>, logvar: Tensor<3>) -> Tensor<2> {
    let [k, rows, _] = mean.dims();
    ovr_kl(mean, logvar).sum_dim(2).reshape([k, rows])
}

/// The paper's Eq. 8, differentiable: u = Σ_i KL(N_i ‖ N_−i) over the K members (see
/// [`ovr_each`]), summed over output dimensions. Takes `[K, rows, d]` means and
/// log-variances, returns `[rows, 1]`.
pub fn ovr_total(mean: Tensor<3>, logvar: Tensor<3>) -> Tensor<2> {
    let [_, rows, _] = mean.dims();
    ovr_kl(mean, logvar)
        .sum_dim(2)
        .sum_dim(0)
        .reshape([rows, 1])
}

/// KL(N_i ‖ N_−i) per member, row and output dimension, `[K, rows, d]`.
fn ovr_kl(mean: Tensor<3>, logvar: Tensor<3>) -> Tensor<3> {
    let [k, _, _] = mean.dims();
    let rest = (k - 1) as f64;
    let sq = |t: Tensor<3>| t.clone() * t;
    let centred = mean.clone() - mean.mean_dim(0);
    let var = logvar.clone().exp();
    let second = var.clone() + sq(centred.clone());
    let mu_rest = (centred.clone().sum_dim(0) - centred.clone()).div_scalar(rest);
    let var_rest = ((second.clone().sum_dim(0) - second).div_scalar(rest) - sq(mu_rest.clone()))
        .clamp_min(1e-12);
    (var_rest.clone().log() - logvar + (var + sq(centred - mu_rest)) / var_rest)
        .sub_scalar(1.0)
        .mul_scalar(0.5)
}

/// The u the planner uses: Eq. 8's sum over members and output dimensions, or its mean per
/// member and dimension (the sum / (K · (1 + obs_dim))), whose scale does not grow with the
/// task's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reduction {
    Sum,
    Mean,
}

impl Reduction {
    /// u `[rows, 1]` from `[K, rows, d]` means and log-variances.
    pub fn apply(self, mean: Tensor<3>, logvar: Tensor<3>) -> Tensor<2> {
        let [k, _, d] = mean.dims();
        let u = ovr_total(mean, logvar);
        match self {
            Reduction::Sum => u,
            Reduction::Mean => u.div_scalar((k * d) as f64),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// KL(p ‖ q) of two 1-d densities by numerical integration (midpoint rule on a wide grid).
    fn kl_numeric(p: impl Fn(f64) -> f64, q: impl Fn(f64) -> f64, lo: f64, hi: f64) -> f64 {
        let n = 400_000;
        let h = (hi - lo) / n as f64;
        (0..n)
            .map(|k| {
                let x = lo + (k as f64 + 0.5) * h;
                let (px, qx) = (p(x), q(x));
                if px > 0.0 {
                    px * (px / qx).ln() * h
                } else {
                    0.0
                }
            })
            .sum()
    }

    fn normal(mu: f64, var: f64) -> impl Fn(f64) -> f64 {
        move |x| (-(x - mu).powi(2) / (2.0 * var)).exp() / (2.0 * std::f64::consts::PI * var).sqrt()
    }

    #[test]
    fn ovr_matches_a_numeric_kl_against_the_moment_matched_rest() {
        // Three members, two output dims; member 1 predicts.
        let means = [[0.0f32, 1.0], [0.5, -1.0], [1.5, 0.0]];
        let vars = [[1.0f32, 0.5], [0.25, 2.0], [0.5, 1.0]];
        let m: Vec<&[f32]> = means.iter().map(|x| &x[..]).collect();
        let v: Vec<&[f32]> = vars.iter().map(|x| &x[..]).collect();
        let u = ovr(&m, &v, 1);
        // The rest {0, 2}: moment matching by hand.
        let mut want = 0.0;
        for j in 0..2 {
            let (a, b) = (0usize, 2usize);
            let mu_r = (means[a][j] as f64 + means[b][j] as f64) / 2.0;
            let second = (vars[a][j] as f64
                + (means[a][j] as f64).powi(2)
                + vars[b][j] as f64
                + (means[b][j] as f64).powi(2))
                / 2.0;
            let var_r = second - mu_r * mu_r;
            want += kl_numeric(
                normal(means[1][j] as f64, vars[1][j] as f64),
                normal(mu_r, var_r),
                -30.0,
                30.0,
            );
        }
        assert!((u - want).abs() < 1e-6, "closed form {u} vs numeric {want}");
    }

    #[test]
    fn identical_members_have_zero_uncertainty_and_outliers_more() {
        let same = [0.3f32, -2.0];
        let var = [0.1f32, 0.2];
        let m = vec![&same[..]; 4];
        let v = vec![&var[..]; 4];
        // Mixture of identical Gaussians = the same Gaussian: KL 0.
        assert!(ovr(&m, &v, 2).abs() < 1e-6);
        let far = [3.0f32, 1.0];
        let m2 = vec![&same[..], &same[..], &same[..], &far[..]];
        assert!(ovr(&m2, &v, 3) > ovr(&m2, &v, 0));
        let rows = ovr_rows(
            &[vec![0.0, 0.0], vec![0.0, 1.0]],
            &[vec![1.0, 1.0], vec![1.0, 1.0]],
            &[0, 0],
            1,
        );
        assert!(rows[0].abs() < 1e-9 && rows[1] > 0.0);
    }
}
