//! Advantage estimators: pure functions over one episode's (or segment's)
//! rewards and values. A segment never spans two episodes, so there are no
//! `done` flags inside; `bootstrap` is the value after the last step (0 when
//! the episode terminated).

/// Generalised advantage estimation. Returns (advantages, value targets).
pub fn gae(
    rewards: &[f32],
    values: &[f32],
    bootstrap: f32,
    gamma: f64,
    lambda: f64,
) -> (Vec<f32>, Vec<f32>) {
    let n = rewards.len();
    let mut adv = vec![0f32; n];
    let mut last = 0f64;
    for t in (0..n).rev() {
        let next = if t + 1 < n { values[t + 1] } else { bootstrap };
        let delta = f64::from(rewards[t]) + gamma * f64::from(next) - f64::from(values[t]);
        last = delta + gamma * lambda * last;
        adv[t] = last as f32;
    }
    let targets = adv.iter().zip(values).map(|(a, v)| a + v).collect();
    (adv, targets)
}

/// Discounted returns-to-go, bootstrapped after the last step.
pub fn returns_to_go(rewards: &[f32], bootstrap: f32, gamma: f64) -> Vec<f32> {
    let mut out = vec![0f32; rewards.len()];
    let mut g = f64::from(bootstrap);
    for t in (0..rewards.len()).rev() {
        g = f64::from(rewards[t]) + gamma * g;
        out[t] = g as f32;
    }
    out
}

/// Group-relative advantages: each episode's return minus the group's mean,
/// over the group's standard deviation (all zero when the group agrees).
pub fn group_relative(returns: &[f64]) -> Vec<f32> {
    let n = returns.len().max(1) as f64;
    let mean = returns.iter().sum::<f64>() / n;
    let var = returns.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / n;
    let std = var.sqrt();
    returns
        .iter()
        .map(|r| ((r - mean) / (std + 1e-6)) as f32)
        .collect()
}

/// Shifts and scales to mean 0, standard deviation 1 (unchanged when constant).
pub fn normalize(values: &mut [f32]) {
    if values.len() < 2 {
        return;
    }
    let n = values.len() as f64;
    let mean = values.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let var = values
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / n;
    let std = var.sqrt();
    if std < 1e-8 {
        values
            .iter_mut()
            .for_each(|v| *v = (f64::from(*v) - mean) as f32);
        return;
    }
    for v in values {
        *v = ((f64::from(*v) - mean) / std) as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &[f32], b: &[f32]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-5)
    }

    #[test]
    fn gae_with_lambda_one_is_monte_carlo_minus_value() {
        let r = [1.0, 0.0, 2.0];
        let v = [0.5, 0.2, 0.1];
        let (adv, targets) = gae(&r, &v, 0.3, 0.9, 1.0);
        let mc = returns_to_go(&r, 0.3, 0.9);
        let expect: Vec<f32> = mc.iter().zip(&v).map(|(g, v)| g - v).collect();
        assert!(close(&adv, &expect), "{adv:?} {expect:?}");
        assert!(close(&targets, &mc));
    }

    #[test]
    fn gae_with_lambda_zero_is_the_td_error() {
        let r = [1.0, 0.0];
        let v = [0.5, 0.2];
        let (adv, _) = gae(&r, &v, 0.0, 0.5, 0.0);
        assert!(close(&adv, &[1.0 + 0.5 * 0.2 - 0.5, 0.0 - 0.2]), "{adv:?}");
    }

    #[test]
    fn returns_discount_back_to_front() {
        assert!(close(
            &returns_to_go(&[1.0, 1.0, 1.0], 0.0, 0.5),
            &[1.75, 1.5, 1.0]
        ));
    }

    #[test]
    fn group_relative_ranks_within_the_group() {
        let a = group_relative(&[1.0, 0.0, 0.0, 1.0]);
        assert!(close(&a, &[1.0, -1.0, -1.0, 1.0]), "{a:?}");
        assert!(group_relative(&[2.0, 2.0]).iter().all(|&x| x == 0.0));
    }

    #[test]
    fn normalize_gives_zero_mean_unit_std() {
        let mut v = vec![1.0, 2.0, 3.0, 4.0];
        normalize(&mut v);
        let mean: f32 = v.iter().sum::<f32>() / 4.0;
        let var: f32 = v.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / 4.0;
        assert!(mean.abs() < 1e-6 && (var - 1.0).abs() < 1e-5);
    }
}
