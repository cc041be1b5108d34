//! Termination functions on predicted observations, for model rollouts.
//!
//! They follow MBPO's `static/*.py` termination functions (docs/algorithms.md,
//! "Termination functions") with two fixes:
//! Hopper checks `|o[1:]| < 100` (MBPO wrote `abs(o[1:] < 100)`, which lets large negative
//! values through; mbrl-lib fixed it the same way), and every task but HalfCheetah treats a
//! non-finite prediction as terminal. Indices hold for both observation variants, since every
//! observation starts with qpos[1:] (planar tasks) or qpos[2:] (Ant, Humanoid).
use super::Task;

impl Task {
    /// Whether a (predicted) next observation ends the episode.
    pub fn is_terminal<T: Copy + Into<f64>>(self, obs: &[T]) -> bool {
        let o = |i: usize| -> f64 { obs[i].into() };
        let finite = || obs.iter().all(|&v| v.into().is_finite());
        match self {
            Task::InvertedPendulum => !finite() || o(1).abs() > 0.2,
            Task::Hopper => {
                let healthy = finite()
                    && obs[1..].iter().all(|&v| v.into().abs() < 100.0)
                    && o(0) > 0.7
                    && o(1).abs() < 0.2;
                !healthy
            }
            Task::Walker2d => {
                let healthy = finite() && 0.8 < o(0) && o(0) < 2.0 && -1.0 < o(1) && o(1) < 1.0;
                !healthy
            }
            Task::HalfCheetah => false,
            Task::Ant => !(finite() && 0.2 <= o(0) && o(0) <= 1.0),
            // The env's strict interval 1.0 < z < 2.0 (MBPO: done if z < 1.0 or z > 2.0).
            Task::Humanoid => !(finite() && 1.0 < o(0) && o(0) < 2.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hopper_obs(z: f64, angle: f64, rest: f64) -> Vec<f64> {
        let mut o = vec![rest; 11];
        o[0] = z;
        o[1] = angle;
        o
    }

    #[test]
    fn hopper_uses_the_fixed_abs_form() {
        assert!(!Task::Hopper.is_terminal(&hopper_obs(1.2, 0.0, 0.0)));
        // Large negative entries end the episode (the original MBPO form let them through).
        assert!(Task::Hopper.is_terminal(&hopper_obs(1.2, 0.0, -150.0)));
        assert!(Task::Hopper.is_terminal(&hopper_obs(1.2, 0.0, 150.0)));
        assert!(Task::Hopper.is_terminal(&hopper_obs(0.7, 0.0, 0.0)));
        assert!(Task::Hopper.is_terminal(&hopper_obs(1.2, 0.2, 0.0)));
        assert!(Task::Hopper.is_terminal(&hopper_obs(1.2, -0.2, 0.0)));
        assert!(Task::Hopper.is_terminal(&hopper_obs(f64::NAN, 0.0, 0.0)));
    }

    #[test]
    fn ranges_of_the_other_tasks() {
        let w = |z: f64, a: f64| [z, a, 0.0];
        assert!(!Task::Walker2d.is_terminal(&w(1.2, 0.5)));
        assert!(Task::Walker2d.is_terminal(&w(0.8, 0.0)));
        assert!(Task::Walker2d.is_terminal(&w(2.0, 0.0)));
        assert!(Task::Walker2d.is_terminal(&w(1.2, -1.0)));
        assert!(Task::Walker2d.is_terminal(&[1.2, 0.0, f64::INFINITY]));

        assert!(!Task::HalfCheetah.is_terminal(&[f64::NAN, 1e9]));

        assert!(!Task::Ant.is_terminal(&[0.2, 0.0]));
        assert!(!Task::Ant.is_terminal(&[1.0, 0.0]));
        assert!(Task::Ant.is_terminal(&[1.01, 0.0]));
        assert!(Task::Ant.is_terminal(&[0.5, f64::NAN]));

        assert!(!Task::Humanoid.is_terminal(&[1.4, 0.0]));
        assert!(Task::Humanoid.is_terminal(&[1.0, 0.0]));
        assert!(Task::Humanoid.is_terminal(&[2.0, 0.0]));

        assert!(!Task::InvertedPendulum.is_terminal(&[0.0, 0.2, 0.0, 0.0]));
        assert!(Task::InvertedPendulum.is_terminal(&[0.0, -0.21, 0.0, 0.0]));
        assert!(Task::InvertedPendulum.is_terminal(&[f64::NAN, 0.0, 0.0, 0.0]));
    }

    #[test]
    fn works_on_f32_predictions() {
        let o: Vec<f32> = vec![1.2, 0.0, -150.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0];
        assert!(Task::Hopper.is_terminal(&o));
        assert!(!Task::Hopper.is_terminal(&o[..2]));
    }
}
