//! Per-case figures and the statistics behind the baseline gate.
//!
//! Success rate: the Newcombe hybrid-score interval (Wilson intervals on each
//! side) on the difference `new - baseline`, with a one-sided two-proportion
//! z-test's p-value alongside. Mean return: a bootstrap percentile interval on
//! the difference of means, from a fixed-seed generator so reports are
//! reproducible. A drop is significant when the interval's upper end is below
//! zero; at one-sided level `alpha` the interval is a two-sided `1 - 2 alpha` one.

use ludus_core::SplitMix64;
use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, Normal};

/// One episode's result, as the suite sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Episode {
    pub id: i64,
    pub index: u64,
    pub seed: u64,
    /// `terminated`, `truncated`, `crashed` or `interrupted`.
    pub outcome: String,
    #[serde(rename = "return")]
    #[serde(with = "ludus_core::json_float")]
    pub return_: f64,
    pub length: u64,
    pub success: bool,
    pub digest: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
    /// Model calls, tokens (prompt and completion) and cost.
    #[serde(default)]
    pub model_calls: u64,
    #[serde(default)]
    pub tokens: u64,
    #[serde(default)]
    pub cost_usd: f64,
}

impl Episode {
    pub fn crashed(&self) -> bool {
        self.outcome == "crashed"
    }
}

/// A case's figures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CaseStats {
    pub episodes: u64,
    pub successes: u64,
    #[serde(with = "ludus_core::json_float")]
    pub success_rate: f64,
    #[serde(with = "ludus_core::json_float")]
    pub mean_return: f64,
    #[serde(with = "ludus_core::json_float")]
    pub mean_length: f64,
    pub p95_length: u64,
    pub crashed: u64,
    #[serde(with = "ludus_core::json_float")]
    pub wall_time_s: f64,
    #[serde(default)]
    pub mean_model_calls: f64,
    #[serde(default)]
    pub mean_tokens: f64,
    #[serde(default)]
    pub cost_usd: f64,
}

impl CaseStats {
    pub fn of(episodes: &[Episode], wall_time_s: f64) -> CaseStats {
        let n = episodes.len() as u64;
        let nf = n.max(1) as f64;
        let successes = episodes.iter().filter(|e| e.success).count() as u64;
        let mut lengths: Vec<u64> = episodes.iter().map(|e| e.length).collect();
        lengths.sort_unstable();
        CaseStats {
            episodes: n,
            successes,
            success_rate: successes as f64 / nf,
            mean_return: episodes.iter().map(|e| e.return_).sum::<f64>() / nf,
            mean_length: lengths.iter().sum::<u64>() as f64 / nf,
            p95_length: percentile_nearest_rank(&lengths, 0.95),
            crashed: episodes.iter().filter(|e| e.crashed()).count() as u64,
            wall_time_s,
            mean_model_calls: episodes.iter().map(|e| e.model_calls).sum::<u64>() as f64 / nf,
            mean_tokens: episodes.iter().map(|e| e.tokens).sum::<u64>() as f64 / nf,
            cost_usd: episodes.iter().map(|e| e.cost_usd).sum(),
        }
    }
}

/// The nearest-rank percentile of sorted values (0 for none).
pub fn percentile_nearest_rank(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The standard normal quantile for a one-sided level `alpha`.
pub fn z_one_sided(alpha: f64) -> f64 {
    Normal::standard().inverse_cdf(1.0 - alpha)
}

/// Wilson score interval for `successes` out of `n` at normal quantile `z`.
pub fn wilson(successes: u64, n: u64, z: f64) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let nf = n as f64;
    let p = successes as f64 / nf;
    let z2 = z * z;
    let denom = 1.0 + z2 / nf;
    let centre = (p + z2 / (2.0 * nf)) / denom;
    let half = z / denom * (p * (1.0 - p) / nf + z2 / (4.0 * nf * nf)).sqrt();
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

/// The change in success rate from a baseline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RateChange {
    #[serde(with = "ludus_core::json_float")]
    pub baseline: f64,
    #[serde(with = "ludus_core::json_float")]
    pub current: f64,
    /// `current - baseline`.
    #[serde(with = "ludus_core::json_float")]
    pub diff: f64,
    /// Newcombe interval on `diff`.
    #[serde(with = "ludus_core::json_float")]
    pub low: f64,
    #[serde(with = "ludus_core::json_float")]
    pub high: f64,
    /// One-sided two-proportion z-test, H1: the rate dropped.
    #[serde(with = "ludus_core::json_float")]
    pub p_value: f64,
    pub significant_drop: bool,
}

/// Newcombe's hybrid score interval on `p_current - p_baseline`, with the
/// one-sided pooled z-test.
pub fn rate_change(
    base_successes: u64,
    base_n: u64,
    successes: u64,
    n: u64,
    alpha: f64,
) -> RateChange {
    let z = z_one_sided(alpha);
    let p1 = successes as f64 / n.max(1) as f64;
    let p2 = base_successes as f64 / base_n.max(1) as f64;
    let (l1, u1) = wilson(successes, n, z);
    let (l2, u2) = wilson(base_successes, base_n, z);
    let diff = p1 - p2;
    let low = diff - ((p1 - l1).powi(2) + (u2 - p2).powi(2)).sqrt();
    let high = diff + ((u1 - p1).powi(2) + (p2 - l2).powi(2)).sqrt();
    let pooled = (base_successes + successes) as f64 / (base_n + n).max(1) as f64;
    let se =
        (pooled * (1.0 - pooled) * (1.0 / n.max(1) as f64 + 1.0 / base_n.max(1) as f64)).sqrt();
    let p_value = if se > 0.0 {
        1.0 - Normal::standard().cdf((p2 - p1) / se)
    } else {
        1.0
    };
    RateChange {
        baseline: p2,
        current: p1,
        diff,
        low,
        high,
        p_value,
        significant_drop: high < 0.0,
    }
}

/// The change in mean return from a baseline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MeanChange {
    #[serde(with = "ludus_core::json_float")]
    pub baseline: f64,
    #[serde(with = "ludus_core::json_float")]
    pub current: f64,
    #[serde(with = "ludus_core::json_float")]
    pub diff: f64,
    /// Bootstrap percentile interval on `diff`.
    #[serde(with = "ludus_core::json_float")]
    pub low: f64,
    #[serde(with = "ludus_core::json_float")]
    pub high: f64,
    pub significant_drop: bool,
}

pub const BOOTSTRAP_SEED: u64 = 0x6C75_6475_7331;

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// Bootstrap percentile interval on `mean(current) - mean(baseline)`,
/// resampling each side independently.
pub fn mean_change(baseline: &[f64], current: &[f64], alpha: f64, resamples: u64) -> MeanChange {
    let (mb, mc) = (mean(baseline), mean(current));
    let diff = mc - mb;
    if baseline.is_empty() || current.is_empty() {
        return MeanChange {
            baseline: mb,
            current: mc,
            diff,
            low: f64::NEG_INFINITY,
            high: f64::INFINITY,
            significant_drop: false,
        };
    }
    // SplitMix64 from a fixed seed, so the same returns always give the same
    // interval.
    let mut rng = SplitMix64::new(BOOTSTRAP_SEED);
    let mut resample_mean = |v: &[f64]| {
        let mut s = 0.0;
        for _ in 0..v.len() {
            s += v[rng.below_lemire(v.len())];
        }
        s / v.len() as f64
    };
    let b = resamples.max(1) as usize;
    let mut diffs: Vec<f64> = (0..b)
        .map(|_| {
            let c = resample_mean(current);
            c - resample_mean(baseline)
        })
        .collect();
    diffs.sort_by(f64::total_cmp);
    let lo_idx = ((alpha * b as f64).floor() as usize).min(b - 1);
    let hi_idx = (((1.0 - alpha) * b as f64).ceil() as usize).clamp(1, b) - 1;
    let (low, high) = (diffs[lo_idx], diffs[hi_idx]);
    MeanChange {
        baseline: mb,
        current: mc,
        diff,
        low,
        high,
        significant_drop: high < 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wilson_matches_the_textbook() {
        // Newcombe (1998), example: 81/263 at 95% gives 0.2553..0.3662.
        let (l, u) = wilson(81, 263, 1.959_963_985);
        assert!((l - 0.2553).abs() < 1e-4, "{l}");
        assert!((u - 0.3662).abs() < 1e-4, "{u}");
    }

    #[test]
    fn newcombe_matches_the_textbook() {
        // Newcombe (1998) method 10, example (a): 56/70 - 48/80 = 0.2,
        // 95% interval 0.0524..0.3339.
        let c = rate_change(48, 80, 56, 70, 0.025);
        assert!((c.diff - 0.2).abs() < 1e-12);
        assert!((c.low - 0.0524).abs() < 1e-4, "{}", c.low);
        assert!((c.high - 0.3339).abs() < 1e-4, "{}", c.high);
        assert!(!c.significant_drop);
        // The same figures the other way round are a significant drop.
        let d = rate_change(56, 70, 48, 80, 0.025);
        assert!(d.significant_drop);
        assert!(d.p_value < 0.025, "{}", d.p_value);
    }

    #[test]
    fn small_noise_is_not_a_drop_and_a_big_drop_is() {
        assert!(!rate_change(18, 20, 16, 20, 0.05).significant_drop);
        assert!(rate_change(20, 20, 8, 20, 0.05).significant_drop);
        let same = rate_change(20, 20, 20, 20, 0.05);
        assert_eq!(same.p_value, 1.0);
        assert!(!same.significant_drop);
    }

    #[test]
    fn bootstrap_is_reproducible_and_sees_a_shift() {
        let base: Vec<f64> = (0..40).map(|i| f64::from(i % 7)).collect();
        let noisy: Vec<f64> = (0..40).map(|i| f64::from((i * 3) % 7)).collect();
        let a = mean_change(&base, &noisy, 0.05, 2000);
        assert_eq!(a, mean_change(&base, &noisy, 0.05, 2000));
        assert!(a.low < 0.0 && a.high > 0.0, "{a:?}");
        assert!(!a.significant_drop);
        let worse: Vec<f64> = base.iter().map(|x| x - 2.0).collect();
        let b = mean_change(&base, &worse, 0.05, 2000);
        assert!(b.significant_drop, "{b:?}");
        assert!((b.diff + 2.0).abs() < 1e-12);
    }

    #[test]
    fn p95_is_nearest_rank() {
        let v: Vec<u64> = (1..=20).collect();
        assert_eq!(percentile_nearest_rank(&v, 0.95), 19);
        assert_eq!(percentile_nearest_rank(&[5], 0.95), 5);
        assert_eq!(percentile_nearest_rank(&[], 0.95), 0);
    }
}
