//! An environment built against `ludus:plugin@0.1.1` (its WIT is frozen in
//! `wit/`), straight on wit-bindgen: it exports `env-plugin` and
//! `env-vector@0.1.1` but not `env-vector-reset`, which came with 0.1.2.
//! Later hosts must keep stepping it through `step-vector` and reset it
//! through `reset`.
//!
//! A walk: the observation is one vector part `walk` = [position, seed % 5];
//! action 1 steps right (reward 1), anything else left (reward 0); the
//! episode terminates 3 steps right of the start and truncates after 8.

use std::cell::Cell;

wit_bindgen::generate!({ world: "vector-env", path: "wit" });

use exports::ludus::plugin::env_plugin;
use exports::ludus::plugin::env_vector::{self, Values8, VectorStep};
use ludus::plugin::types::*;

const GOAL: i32 = 3;
const MAX_STEPS: u32 = 8;

thread_local! {
    /// (position, steps, seed)
    static WALK: Cell<(i32, u32, u64)> = const { Cell::new((0, 0, 0)) };
}

fn vector() -> [f32; 2] {
    let (position, _, seed) = WALK.get();
    [position as f32, (seed % 5) as f32]
}

/// Moves and returns (reward, terminated, truncated).
fn walk(right: bool) -> (f32, bool, bool) {
    let (position, steps, seed) = WALK.get();
    let (position, steps) = (position + if right { 1 } else { -1 }, steps + 1);
    WALK.set((position, steps, seed));
    let terminated = position >= GOAL;
    (
        f32::from(u8::from(right)),
        terminated,
        !terminated && steps >= MAX_STEPS,
    )
}

fn observation() -> Observation {
    vec![Part {
        name: "walk".into(),
        value: Value::Vector(vector().to_vec()),
    }]
}

struct LegacyVectorEnv;

impl env_plugin::Guest for LegacyVectorEnv {
    fn init(config: String) -> Result<EnvInfo, String> {
        if !config.trim().is_empty() {
            return Err(format!(
                "legacy-vector-env takes no config (got `{config}`)"
            ));
        }
        Ok(EnvInfo {
            name: "legacy-vector-env".into(),
            version: "0.1.1".into(),
            description: "A walk built against contract 0.1.1.".into(),
            observation_space: vec![NamedSpace {
                name: "walk".into(),
                space: PartSpace::Box(BoxSpace {
                    shape: vec![2],
                    low: vec![-(MAX_STEPS as f32), 0.0],
                    high: vec![GOAL as f32, 4.0],
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
            max_steps: MAX_STEPS,
            vector_size: 2,
        })
    }

    fn reset(seed: u64) -> ResetResult {
        WALK.set((0, 0, seed));
        ResetResult {
            observation: observation(),
            task: "Walk right.".into(),
            info: "{}".into(),
        }
    }

    fn step(action: Action) -> StepResult {
        let (reward, terminated, truncated) = walk(matches!(action, Action::Discrete(1)));
        StepResult {
            observation: observation(),
            reward,
            terminated,
            truncated,
            info: String::new(),
        }
    }

    fn batch_reset(_seeds: Vec<u64>) -> Result<Vec<f32>, String> {
        Err("legacy-vector-env is not batched".into())
    }

    fn batch_step(_actions: Vec<f32>) -> Result<BatchResult, String> {
        Err("legacy-vector-env is not batched".into())
    }
}

impl env_vector::Guest for LegacyVectorEnv {
    fn step_vector(action: Values8) -> Option<VectorStep> {
        let (reward, terminated, truncated) = walk(action.0 == 1.0);
        let [p, s] = vector();
        Some(VectorStep {
            observation: (p, s, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0),
            reward,
            flags: u8::from(terminated) | (u8::from(truncated) << 1),
        })
    }
}

export!(LegacyVectorEnv);
