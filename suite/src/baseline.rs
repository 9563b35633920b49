//! Baselines: per-case figures and per-episode results from a trusted build,
//! and the comparison that gates a new build on them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::stats::{CaseStats, Episode, MeanChange, RateChange, mean_change, rate_change};

pub const FORMAT: u32 = 1;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    /// The baseline file's format version.
    pub format: u32,
    pub suite: String,
    pub cases: BTreeMap<String, BaselineCase>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BaselineCase {
    pub seed: u64,
    pub stats: CaseStats,
    /// Per episode, in index order.
    #[serde(with = "ludus_core::json_float::vec")]
    pub returns: Vec<f64>,
    pub successes: Vec<bool>,
    pub digests: Vec<String>,
}

impl BaselineCase {
    pub fn of(seed: u64, stats: &CaseStats, episodes: &[Episode]) -> BaselineCase {
        BaselineCase {
            seed,
            stats: stats.clone(),
            returns: episodes.iter().map(|e| e.return_).collect(),
            successes: episodes.iter().map(|e| e.success).collect(),
            digests: episodes.iter().map(|e| e.digest.clone()).collect(),
        }
    }
}

/// A case measured against its baseline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// Every episode's digest equals the baseline's: the same trajectories.
    pub exact: bool,
    /// The two-sided confidence of the intervals (`1 - 2 alpha`).
    #[serde(with = "ludus_core::json_float")]
    pub confidence: f64,
    pub success_rate: RateChange,
    pub mean_return: MeanChange,
    pub regressed: bool,
}

/// Compares a case's episodes (in index order) with its baseline.
pub fn compare(
    base: &BaselineCase,
    episodes: &[Episode],
    alpha: f64,
    resamples: u64,
) -> Comparison {
    let exact = base.digests.len() == episodes.len()
        && base
            .digests
            .iter()
            .zip(episodes)
            .all(|(d, e)| *d == e.digest);
    let base_successes = base.successes.iter().filter(|&&s| s).count() as u64;
    let successes = episodes.iter().filter(|e| e.success).count() as u64;
    let success_rate = rate_change(
        base_successes,
        base.successes.len() as u64,
        successes,
        episodes.len() as u64,
        alpha,
    );
    let returns: Vec<f64> = episodes.iter().map(|e| e.return_).collect();
    let mean_return = mean_change(&base.returns, &returns, alpha, resamples);
    // Identical trajectories cannot be a regression, whatever the arithmetic says.
    let regressed = !exact && (success_rate.significant_drop || mean_return.significant_drop);
    Comparison {
        exact,
        confidence: 1.0 - 2.0 * alpha,
        success_rate,
        mean_return,
        regressed,
    }
}
