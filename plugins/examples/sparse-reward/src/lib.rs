//! Sparse success reward: 1 when the environment reports success
//! (`"success": true` in its info), 0 otherwise.

use ludus_sdk::*;

pub struct SparseReward;

/// Whether an info JSON text says `"success": true`.
pub fn is_success(info: &str) -> bool {
    let compact: String = info.chars().filter(|c| !c.is_whitespace()).collect();
    compact.contains("\"success\":true")
}

impl Reward for SparseReward {
    fn init(_config: &str) -> Result<(Self, RewardInfo), String> {
        let info = RewardInfo {
            name: "sparse-success".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "1 on success, 0 otherwise.".into(),
        };
        Ok((SparseReward, info))
    }

    fn score(&mut self, t: &Transition) -> ScoreResult {
        let success = is_success(&t.info);
        ScoreResult {
            reward: if success { 1.0 } else { 0.0 },
            success: (success || t.terminated || t.truncated).then_some(success),
            note: success.then(|| "success".to_string()),
        }
    }
}

export_reward!(SparseReward);
