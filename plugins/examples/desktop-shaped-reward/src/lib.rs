//! A shaped reward for the desktop env, as an alternative to its sparse one:
//! each step earns `scale` times the change of the env's `progress` (the
//! fraction of the goal that holds, from its info), minus a small `step_cost`;
//! a success adds the env's own success reward. Config: `scale=0.5`,
//! `step_cost=0.01`.

use ludus_sdk::*;

pub struct ShapedReward {
    scale: f32,
    step_cost: f32,
    last: f32,
}

/// The number after `"key":` in a flat JSON object.
fn number(info: &str, key: &str) -> Option<f32> {
    let start = info.find(&format!("\"{key}\":"))? + key.len() + 3;
    let rest = &info[start..];
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    rest[..end].trim().parse().ok()
}

fn success(info: &str) -> bool {
    info.replace(' ', "").contains("\"success\":true")
}

impl Reward for ShapedReward {
    fn init(config: &str) -> Result<(Self, RewardInfo), String> {
        let (mut scale, mut step_cost) = (0.5f32, 0.01f32);
        for (k, v) in parse_config(config)? {
            match k.as_str() {
                "scale" => scale = parse_value(&k, &v)?,
                "step_cost" => step_cost = parse_value(&k, &v)?,
                _ => {
                    return Err(format!(
                        "desktop-shaped-reward: unknown config key `{k}` (known: scale, step_cost)"
                    ));
                }
            }
        }
        let info = RewardInfo {
            name: "desktop-shaped".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: format!(
                "{scale} x progress gained - {step_cost} per step, plus the success reward."
            ),
        };
        Ok((
            ShapedReward {
                scale,
                step_cost,
                last: 0.0,
            },
            info,
        ))
    }

    fn score(&mut self, t: &Transition) -> ScoreResult {
        if t.step == 0 {
            self.last = 0.0;
        }
        let progress = number(&t.info, "progress").unwrap_or(self.last);
        let gained = progress - self.last;
        self.last = progress;
        let ok = success(&t.info);
        let reward = self.scale * gained - self.step_cost + if ok { t.env_reward } else { 0.0 };
        ScoreResult {
            reward,
            success: (ok || t.terminated || t.truncated).then_some(ok),
            note: (gained != 0.0).then(|| format!("progress {progress:.2}")),
        }
    }
}

export_reward!(ShapedReward);
