//! An environment built against `ludus:plugin@0.1.0` (its WIT is frozen in
//! `wit/`), straight on wit-bindgen: it exports `env-plugin@0.1.0` and no
//! `env-vector`. Later hosts must keep loading it and fall back to `step`.
//!
//! A counter: the observation is one vector part `count` = [steps so far,
//! seed % 7]; action 1 adds a reward of 1, anything else 0; the episode
//! terminates after 5 steps.

use std::cell::RefCell;

wit_bindgen::generate!({ world: "env", path: "wit" });

use exports::ludus::plugin::env_plugin::Guest;
use ludus::plugin::types::*;

const LENGTH: u32 = 5;

#[derive(Default)]
struct Counter {
    steps: u32,
    seed: u64,
}

thread_local! {
    static STATE: RefCell<Counter> = RefCell::new(Counter::default());
}

fn observation(c: &Counter) -> Observation {
    vec![Part {
        name: "count".into(),
        value: Value::Vector(vec![c.steps as f32, (c.seed % 7) as f32]),
    }]
}

struct LegacyEnv;

impl Guest for LegacyEnv {
    fn init(config: String) -> Result<EnvInfo, String> {
        if !config.trim().is_empty() {
            return Err(format!("legacy-env takes no config (got `{config}`)"));
        }
        Ok(EnvInfo {
            name: "legacy-env".into(),
            version: "0.1.0".into(),
            description: "A counter built against contract 0.1.0.".into(),
            observation_space: vec![NamedSpace {
                name: "count".into(),
                space: PartSpace::Box(BoxSpace {
                    shape: vec![2],
                    low: vec![0.0, 0.0],
                    high: vec![LENGTH as f32, 6.0],
                }),
            }],
            action_space: ActionSpace {
                discrete: Some(2),
                continuous: None,
                pointer: None,
                text: None,
                keys: None,
                element: false,
            },
            max_steps: 0,
            vector_size: 2,
        })
    }

    fn reset(seed: u64) -> ResetResult {
        STATE.with_borrow_mut(|c| {
            *c = Counter { steps: 0, seed };
            ResetResult {
                observation: observation(c),
                task: "Press 1.".into(),
                info: "{}".into(),
            }
        })
    }

    fn step(action: Action) -> StepResult {
        STATE.with_borrow_mut(|c| {
            c.steps += 1;
            StepResult {
                observation: observation(c),
                reward: if matches!(action, Action::Discrete(1)) {
                    1.0
                } else {
                    0.0
                },
                terminated: c.steps >= LENGTH,
                truncated: false,
                info: String::new(),
            }
        })
    }

    fn batch_reset(_seeds: Vec<u64>) -> Result<Vec<f32>, String> {
        Err("legacy-env is not batched".into())
    }

    fn batch_step(_actions: Vec<f32>) -> Result<BatchResult, String> {
        Err("legacy-env is not batched".into())
    }
}

export!(LegacyEnv);
