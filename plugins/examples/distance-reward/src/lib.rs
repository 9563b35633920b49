//! Shaped distance reward: the environment's reward plus `scale` times the
//! decrease in Manhattan distance between the `position` and `goal` parts.
//! Config: `scale=0.1`.

use ludus_sdk::*;

pub struct DistanceReward {
    scale: f32,
}

fn distance(observation: &[Part]) -> Option<f32> {
    let p = vector_part(observation, "position")?;
    let g = vector_part(observation, "goal")?;
    Some(p.iter().zip(g).map(|(a, b)| (a - b).abs()).sum())
}

impl Reward for DistanceReward {
    fn init(config: &str) -> Result<(Self, RewardInfo), String> {
        let mut scale = 0.1;
        for (k, v) in parse_config(config)? {
            match k.as_str() {
                "scale" => scale = parse_value(&k, &v)?,
                _ => {
                    return Err(format!(
                        "distance-reward: unknown config key `{k}` (known: scale)"
                    ));
                }
            }
        }
        let info = RewardInfo {
            name: "distance".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: format!("Env reward + {scale} x progress towards the goal."),
        };
        Ok((DistanceReward { scale }, info))
    }

    fn score(&mut self, t: &Transition) -> ScoreResult {
        let progress = match (distance(&t.previous), distance(&t.next)) {
            (Some(a), Some(b)) => a - b,
            _ => 0.0,
        };
        let compact: String = t.info.chars().filter(|c| !c.is_whitespace()).collect();
        let success = compact.contains("\"success\":true");
        ScoreResult {
            reward: t.env_reward + self.scale * progress,
            success: (success || t.terminated || t.truncated).then_some(success),
            note: None,
        }
    }
}

export_reward!(DistanceReward);
