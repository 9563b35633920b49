//! `ludus bench-env`: steps per second of any env plugin through the wasm
//! boundary, whole observations (screenshots included) copied out each step.
//! The actions are seeded pseudo-random pointer moves and clicks; episode
//! resets are timed along with the steps.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::Result;
use ludus_arena::model::{Action, MouseButton, PointerAction, PointerKind, Value};
use ludus_arena::{Limits, Plugin, PluginKind};
use ludus_core::splitmix64;
use serde::Serialize;

use crate::UsageError;
use crate::cli::BenchEnvArgs;

#[derive(Debug, Serialize)]
pub struct EnvBenchReport {
    pub env: String,
    pub env_config: String,
    pub seconds: f64,
    pub steps: u64,
    pub episodes: u64,
    pub steps_per_sec: f64,
    pub ns_per_step: f64,
    /// Bytes of image pixels in one observation.
    pub image_bytes: u64,
    pub tree_elements: u64,
}

pub fn run(args: BenchEnvArgs) -> Result<ExitCode> {
    if !(args.seconds > 0.0 && args.seconds <= 600.0) {
        return Err(UsageError(format!(
            "--seconds must be within (0, 600] (got {})",
            args.seconds
        ))
        .into());
    }
    let plugin = Plugin::load(&args.env, PluginKind::Env, Limits::DEFAULT)
        .map_err(ludus_arena::RunError::Load)?;
    let mut env = plugin
        .env(0)
        .map_err(|c| anyhow::anyhow!("environment {} crashed on start: {c}", args.env.display()))?;
    let info = env
        .init(&args.env_config)
        .map_err(|c| anyhow::anyhow!("environment crashed in init: {c}"))?
        .map_err(|m| {
            UsageError(format!(
                "environment {} rejected its config: {m}",
                args.env.display()
            ))
        })?;
    let (w, h) = info.action_space.pointer.unwrap_or((1, 1));
    let (w, h) = (w.max(1) as u64, h.max(1) as u64);
    let mut rng = 7u64;
    let mut seed = 0u64;
    let reset = env
        .reset(seed)
        .map_err(|c| anyhow::anyhow!("environment crashed in reset: {c}"))?;
    let (mut image_bytes, mut tree_elements) = (0u64, 0u64);
    for part in &reset.observation {
        match &part.value {
            Value::Image(i) => image_bytes += i.pixels.len() as u64,
            Value::Tree(t) => tree_elements += t.len() as u64,
            _ => {}
        }
    }
    let (mut steps, mut episodes, mut in_episode) = (0u64, 1u64, 0u32);
    let start = Instant::now();
    let budget = std::time::Duration::from_secs_f64(args.seconds);
    while start.elapsed() < budget {
        for _ in 0..64 {
            let r = splitmix64(&mut rng);
            let kind = if r & 3 == 0 {
                PointerKind::Click
            } else {
                PointerKind::Move
            };
            let action = Action::Pointer(PointerAction {
                kind,
                button: MouseButton::Left,
                x: ((r >> 8) % w) as i32,
                y: ((r >> 32) % h) as i32,
                to_x: 0,
                to_y: 0,
                dx: 0,
                dy: 0,
            });
            let result = env
                .step(&action)
                .map_err(|c| anyhow::anyhow!("environment crashed in step: {c}"))?;
            steps += 1;
            in_episode += 1;
            let limit = info.max_steps > 0 && in_episode >= info.max_steps;
            if result.terminated || result.truncated || limit {
                seed += 1;
                episodes += 1;
                in_episode = 0;
                env.reset(seed)
                    .map_err(|c| anyhow::anyhow!("environment crashed in reset: {c}"))?;
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let rate = steps as f64 / secs;
    let report = EnvBenchReport {
        env: info.name,
        env_config: args.env_config,
        seconds: secs,
        steps,
        episodes,
        steps_per_sec: rate,
        ns_per_step: 1e9 / rate,
        image_bytes,
        tree_elements,
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "{} [{}]: {:.0} steps/s ({:.1} µs/step) over {} steps, {} episodes, one thread; {} image bytes and {} elements per observation",
            report.env,
            report.env_config,
            report.steps_per_sec,
            report.ns_per_step / 1000.0,
            report.steps,
            report.episodes,
            report.image_bytes,
            report.tree_elements
        );
    }
    Ok(ExitCode::SUCCESS)
}
