//! Statistics across seeds: mean, population std, interquartile mean, and percentile
//! confidence intervals from a stratified bootstrap (rliable's recipe).
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};

pub fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

/// Population standard deviation (ddof 0, numpy's default and what seed bands usually show).
pub fn std(xs: &[f64]) -> f64 {
    let m = mean(xs);
    (xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / xs.len() as f64).sqrt()
}

/// Interquartile mean: the mean of the values left after cutting `floor(n / 4)` from each end
/// of the sorted values (scipy's `trim_mean(x, 0.25)`, which rliable uses). With fewer than 4
/// values nothing is cut.
pub fn iqm(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let cut = v.len() / 4;
    mean(&v[cut..v.len() - cut])
}

/// What stands for the planning step in the name of a statistic logged once per step
/// (`live_t{t}` declares `live_t0`, `live_t1`, ...).
pub const STEP: &str = "{t}";

/// The name of the per-step statistic `prefix` at step `t` (`per_step("live_t", 3)` is
/// `live_t3`), interned: statistics are named by `&'static str`, and each distinct name is
/// made once per process.
pub fn per_step(prefix: &'static str, t: usize) -> &'static str {
    use std::collections::BTreeMap;
    use std::sync::Mutex;
    static NAMES: Mutex<BTreeMap<(&'static str, usize), &'static str>> =
        Mutex::new(BTreeMap::new());
    let mut names = NAMES.lock().unwrap_or_else(|e| e.into_inner());
    names
        .entry((prefix, t))
        .or_insert_with(|| Box::leak(format!("{prefix}{t}").into_boxed_str()))
}

/// The declared name a logged statistic answers to: `live_t3` to `live_t{t}` (a name ending
/// in `_t` and digits), any other name to itself.
pub fn declared_name(name: &str) -> std::borrow::Cow<'_, str> {
    let stem = name.trim_end_matches(|c: char| c.is_ascii_digit());
    if stem.len() < name.len() && stem.ends_with("_t") {
        format!("{stem}{STEP}").into()
    } else {
        name.into()
    }
}

/// Percentile `q` in [0, 1] of sorted values, with linear interpolation (numpy's default).
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// Mean, median and 90th percentile of `values` (NaNs when there are none): how the agents
/// summarise a distribution such as the OvR uncertainty of their predictions.
pub fn mean_p50_p90(values: impl IntoIterator<Item = f64>) -> (f64, f64, f64) {
    let mut v: Vec<f64> = values.into_iter().collect();
    if v.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    v.sort_by(f64::total_cmp);
    (mean(&v), percentile(&v, 0.5), percentile(&v, 0.9))
}

/// Percentile confidence interval of `stat` at level `confidence` from `reps` bootstrap
/// resamples. Each stratum (one task's runs) is resampled with replacement on its own and
/// the resamples are pooled before `stat` is taken. The RNG is seeded from `seed`, so the
/// interval is the same every time.
pub fn bootstrap_ci(
    strata: &[&[f64]],
    stat: fn(&[f64]) -> f64,
    reps: usize,
    confidence: f64,
    seed: u64,
) -> (f64, f64) {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let total: usize = strata.iter().map(|s| s.len()).sum();
    let mut sample = Vec::with_capacity(total);
    let mut stats: Vec<f64> = (0..reps)
        .map(|_| {
            sample.clear();
            for s in strata {
                for _ in 0..s.len() {
                    sample.push(s[rng.random_range(0..s.len())]);
                }
            }
            stat(&sample)
        })
        .collect();
    stats.sort_by(f64::total_cmp);
    let tail = (1.0 - confidence) / 2.0;
    (percentile(&stats, tail), percentile(&stats, 1.0 - tail))
}

#[cfg(test)]
mod tests {

    #[test]
    fn per_step_names_are_interned_and_map_back_to_their_declaration() {
        let a = per_step("live_t", 12);
        assert_eq!(a, "live_t12");
        assert!(std::ptr::eq(a, per_step("live_t", 12)));
        assert_eq!(declared_name(a), "live_t{t}");
        assert_eq!(declared_name("grad_norm_t0"), "grad_norm_t{t}");
        for fixed in ["model_error_5step", "grad_norm", "live_t", "alpha2"] {
            assert_eq!(declared_name(fixed), fixed);
        }
    }
    use super::*;

    #[test]
    fn iqm_cuts_a_quarter_from_each_end() {
        assert_eq!(iqm(&[1.0, 2.0]), 1.5);
        // n = 4: cut one from each end.
        assert_eq!(iqm(&[100.0, 1.0, 2.0, -50.0]), 1.5);
        // n = 8: cut two from each end (scipy: trim_mean(range(8), 0.25) = 3.5).
        assert_eq!(iqm(&[7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.0]), 3.5);
        assert_eq!(std(&[1.0, 3.0]), 1.0);
        assert_eq!(percentile(&[0.0, 10.0], 0.25), 2.5);
    }

    #[test]
    fn bootstrap_intervals_hold_the_statistic_and_repeat() {
        let xs = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];
        let (lo, hi) = bootstrap_ci(&[&xs], iqm, 2000, 0.95, 7);
        assert!(lo < iqm(&xs) && iqm(&xs) < hi, "{lo} {hi}");
        assert!(lo >= 1.0 && hi <= 8.0);
        assert_eq!((lo, hi), bootstrap_ci(&[&xs], iqm, 2000, 0.95, 7));
        // One value: no spread.
        assert_eq!(bootstrap_ci(&[&[3.0]], iqm, 200, 0.95, 1), (3.0, 3.0));
        // Strata are resampled separately: constant strata give a constant statistic.
        let (a, b) = ([1.0, 1.0], [5.0, 5.0, 5.0, 5.0]);
        let (lo, hi) = bootstrap_ci(&[&a, &b], mean, 500, 0.9, 3);
        assert!((lo - 11.0 / 3.0).abs() < 1e-12 && (hi - 11.0 / 3.0).abs() < 1e-12);
    }
}
