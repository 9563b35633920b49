//! A one-step text task, small enough for a tiny model to learn by trial
//! and error: the observation's text part `prompt` is a word drawn from the
//! seed; the agent answers with text; reward 1 and success when the
//! answer's first word, in lower case and without the punctuation around
//! it, is that word, else 0. The episode ends after the answer.
//!
//! Config (`key=value`, comma separated): `words` (`|`-separated, default
//! `up|down|left|right`).

use ludus_sdk::*;

pub struct WordEcho {
    words: Vec<String>,
    word: String,
}

impl Env for WordEcho {
    fn init(config: &str) -> Result<(Self, EnvInfo), String> {
        let mut words: Vec<String> = ["up", "down", "left", "right"].map(String::from).to_vec();
        for (key, value) in parse_config(config)? {
            match key.as_str() {
                "words" => {
                    words = value
                        .split('|')
                        .map(str::trim)
                        .filter(|w| !w.is_empty())
                        .map(String::from)
                        .collect();
                }
                other => return Err(format!("word-echo: unknown config key `{other}` (known: words)")),
            }
        }
        if words.is_empty() || words.len() > 1000 {
            return Err("word-echo: give 1 to 1000 words, separated by `|`".into());
        }
        let info = EnvInfo {
            name: "word-echo".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Answer with the word shown.".into(),
            observation_space: vec![NamedSpace {
                name: "prompt".into(),
                space: PartSpace::Text(256),
            }],
            action_space: ActionSpace {
                discrete: None,
                continuous: None,
                pointer: None,
                text: Some(256),
                keys: None,
                element: false,
            },
            max_steps: 1,
            vector_size: 0,
        };
        Ok((
            WordEcho {
                words,
                word: String::new(),
            },
            info,
        ))
    }

    fn reset(&mut self, seed: u64) -> ResetResult {
        let mut rng = Rng::new(seed);
        self.word = self.words[rng.below(self.words.len() as u32) as usize].clone();
        ResetResult {
            observation: vec![Part {
                name: "prompt".into(),
                value: Value::Text(self.word.clone()),
            }],
            task: "Answer with the word shown.".into(),
            info: "{}".into(),
        }
    }

    fn step(&mut self, action: &Action) -> StepResult {
        let right = matches!(action, Action::TypeText(t) if first_word(t) == self.word.to_lowercase());
        StepResult {
            observation: vec![Part {
                name: "prompt".into(),
                value: Value::Text(String::new()),
            }],
            reward: if right { 1.0 } else { 0.0 },
            terminated: true,
            truncated: false,
            info: success_info(right),
        }
    }
}

/// The first whitespace-separated word, lower-cased, without the
/// punctuation around it.
fn first_word(text: &str) -> String {
    text.split_whitespace()
        .next()
        .unwrap_or_default()
        .trim_matches(|c: char| !c.is_alphanumeric())
        .to_lowercase()
}

export_env!(WordEcho);
