//! An LLM judge: a reward plugin that passes the env's reward through on
//! every step but the last, and at the episode's end asks a model (the
//! `judge` endpoint unless configured otherwise) whether the final state
//! accomplishes the task, as `{"success": bool, "score": 0..1, "reason":
//! text}`. The score is the last step's reward, the verdict its success,
//! the reason its note. When the judge cannot answer, the env's reward and
//! success stand and the note says why.
//!
//! Config: `task` (what the episode was to accomplish; default: judge from
//! the observation alone), `endpoint` (`judge`), `max-tokens` (64).

use ludus_sdk::model::{ChatRequest, Message, chat};
use ludus_sdk::*;

pub struct LlmJudge {
    task: String,
    endpoint: String,
    max_tokens: u32,
}

/// The observation's text-like parts, for a prompt.
fn describe(observation: &Observation) -> String {
    let mut s = String::new();
    for p in observation {
        match &p.value {
            Value::Text(t) => s.push_str(&format!("{}:\n{t}\n", p.name)),
            Value::Discrete(d) => s.push_str(&format!("{}: {d}\n", p.name)),
            Value::Vector(v) => s.push_str(&format!("{}: {v:?}\n", p.name)),
            Value::Image(i) => {
                s.push_str(&format!("{}: an image {}x{}\n", p.name, i.width, i.height))
            }
            Value::Tree(t) => s.push_str(&format!("{}: {} elements\n", p.name, t.len())),
        }
    }
    s
}

impl Reward for LlmJudge {
    fn init(config: &str) -> Result<(Self, RewardInfo), String> {
        let mut j = LlmJudge {
            task: String::new(),
            endpoint: "judge".into(),
            max_tokens: 64,
        };
        for (k, v) in parse_config(config)? {
            match k.as_str() {
                "task" => j.task = v,
                "endpoint" => j.endpoint = v,
                "max-tokens" => j.max_tokens = parse_value(&k, &v)?,
                other => {
                    return Err(format!(
                        "unknown config key `{other}` (task, endpoint, max-tokens)"
                    ));
                }
            }
        }
        let info = RewardInfo {
            name: "llm-judge".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Asks a language model whether the final state accomplishes the task."
                .into(),
        };
        Ok((j, info))
    }

    fn score(&mut self, t: &Transition) -> ScoreResult {
        if !(t.terminated || t.truncated) {
            return ScoreResult {
                reward: t.env_reward,
                success: None,
                note: None,
            };
        }
        let task = if self.task.is_empty() {
            "(not given: judge from the final state)"
        } else {
            &self.task
        };
        let mut r = ChatRequest::new(vec![
            Message::system(
                "You judge whether an agent accomplished its task. Answer with JSON: \
                 {\"success\": true or false, \"score\": a number from 0 to 1, \"reason\": one sentence}.",
            ),
            Message::user(format!(
                "Task: {task}\nFinal state:\n{}\nEnvironment info: {}",
                describe(&t.next),
                t.info
            )),
        ]);
        r.endpoint = self.endpoint.clone();
        r.temperature = Some(0.0);
        r.max_tokens = Some(self.max_tokens);
        r.response_format = Some(
            r#"{"type":"object","properties":{"success":{"type":"boolean"},"score":{"type":"number"},"reason":{"type":"string"}},"required":["success","score"]}"#.into(),
        );
        let fallback = |why: String| ScoreResult {
            reward: t.env_reward,
            success: None,
            note: Some(why),
        };
        let answer = match chat(&r) {
            Ok(a) => a,
            Err(e) => return fallback(format!("the judge did not answer: {}", e.message())),
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(answer.content.trim()) else {
            return fallback(format!(
                "the judge's answer is not JSON: {:?}",
                answer.content
            ));
        };
        let score = v
            .get("score")
            .and_then(|s| s.as_f64())
            .unwrap_or(0.0)
            .clamp(0.0, 1.0);
        ScoreResult {
            reward: score as f32,
            success: v.get("success").and_then(|s| s.as_bool()),
            note: v.get("reason").and_then(|s| s.as_str()).map(str::to_string),
        }
    }
}

export_reward!(LlmJudge);
