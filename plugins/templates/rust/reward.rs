//! {{name}}: 1 when the environment reports success (`"success": true` in
//! its info), 0 otherwise.

use ludus_sdk::*;

pub struct SuccessReward;

impl Reward for SuccessReward {
    fn init(config: &str) -> Result<(Self, RewardInfo), String> {
        if let Some((key, _)) = parse_config(config)?.into_iter().next() {
            return Err(format!("{{name}} takes no config (got key `{key}`)"));
        }
        let info = RewardInfo {
            name: "{{name}}".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "1 on success, 0 otherwise.".into(),
        };
        Ok((SuccessReward, info))
    }

    fn score(&mut self, t: &Transition) -> ScoreResult {
        let compact: String = t.info.chars().filter(|c| !c.is_whitespace()).collect();
        let success = compact.contains("\"success\":true");
        ScoreResult {
            reward: if success { 1.0 } else { 0.0 },
            success: (success || t.terminated || t.truncated).then_some(success),
            note: None,
        }
    }
}

export_reward!(SuccessReward);
