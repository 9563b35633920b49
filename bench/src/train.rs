//! `ludus train-bench`: sync vs decoupled sampling on envs with a slow,
//! variable step latency (env utilisation and learner samples/s), and PPO
//! CartPole samples/s on CPU. The slow-env scenarios span learner costs: an
//! MLP update takes milliseconds next to a round of env steps, a CNN update
//! (PPO from pixels on the desktop's click task) about as long as the round.

use std::process::ExitCode;

use anyhow::Context;
use ludus_trainer::config::{Config, Mode};
use ludus_trainer::train::{self, TrainOptions, TrainSummary};
use serde::Serialize;

use crate::UsageError;
use crate::cli::TrainBenchArgs;

const PPO_CARTPOLE: &str = include_str!("../../configs/ppo-cartpole.toml");
const GRPO_MAZE: &str = include_str!("../../configs/grpo-maze.toml");
const PPO_CLICK: &str = include_str!("../../configs/ppo-click.toml");

#[derive(Serialize)]
struct Row {
    scenario: String,
    mode: &'static str,
    /// Where the learner ran.
    device: String,
    updates: u64,
    seconds: f64,
    env_steps: u64,
    env_steps_per_s: f64,
    learner_samples_per_s: f64,
    env_utilisation: f64,
}

fn row(scenario: &str, mode: Mode, s: &TrainSummary) -> Row {
    Row {
        scenario: scenario.into(),
        mode: match mode {
            Mode::Sync => "sync",
            Mode::Async => "async",
        },
        device: s.device.clone(),
        updates: s.updates,
        seconds: s.seconds,
        env_steps: s.env_steps,
        env_steps_per_s: s.env_steps as f64 / s.seconds,
        learner_samples_per_s: s.samples_trained as f64 / s.seconds,
        env_utilisation: s.env_busy_seconds / (s.envs as f64 * s.seconds),
    }
}

pub fn run(args: TrainBenchArgs) -> anyhow::Result<ExitCode> {
    let delay = parse_delay(&args.delay_ms)?;
    if args.updates == 0 {
        return Err(UsageError("--updates must be greater than 0".into()).into());
    }
    for p in ["cartpole.wasm", "maze.wasm", "desktop.wasm"] {
        if !args.plugins.join(p).exists() {
            return Err(UsageError(format!(
                "--plugins {}: no {p} there (build the plugins with scripts/build-plugins.sh)",
                args.plugins.display()
            ))
            .into());
        }
    }
    let scratch = std::env::temp_dir().join(format!("ludus-train-bench-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).context("cannot create a scratch folder")?;
    let db = scratch.join("bench.db");
    let mut rows = Vec::new();
    let mut n = 0;
    let mut measure = |base: &str,
                       plugin: &str,
                       scenario: &str,
                       mode: Mode,
                       edit: &dyn Fn(&mut Config)|
     -> anyhow::Result<Row> {
        let mut c = Config::parse(base).map_err(|e| anyhow::anyhow!("built-in config: {e}"))?;
        c.env.plugin = args.plugins.join(plugin);
        c.sampling.mode = mode;
        c.stop.mean_return = None;
        c.checkpoint.every = 0;
        c.checkpoint.dir = Some(scratch.join("checkpoints"));
        n += 1;
        c.name = format!("bench-{n}");
        edit(&mut c);
        let opts = TrainOptions {
            config: c,
            db: db.clone(),
            device: args.device.into(),
            resume: false,
            stop: None,
        };
        let s = train::train(&opts, &mut |_| {})?;
        let r = row(scenario, mode, &s);
        if !args.json {
            eprintln!(
                "{:<46} {:<5} {:<7} {:>5.1} s  env steps/s {:>9.0}  learner samples/s {:>9.0}  env utilisation {:>5.1}%",
                r.scenario,
                r.mode,
                r.device,
                r.seconds,
                r.env_steps_per_s,
                r.learner_samples_per_s,
                100.0 * r.env_utilisation
            );
        }
        Ok(r)
    };
    let updates = args.updates;
    let slow = move |c: &mut Config| {
        c.env.step_delay_ms = Some(delay);
        c.stop.updates = updates;
        c.sampling.max_policy_lag = 4;
    };
    let slow_ppo = move |c: &mut Config| {
        slow(c);
        c.sampling.envs_per_sampler = 8;
        c.sampling.rollout_steps = 16;
        c.sampling.batch_steps = 256;
    };
    // The same GRPO on a 5x5 maze: episodes of 4 to about 100 steps (a
    // random walk finds the exit), the long tail of agent tasks, where a
    // sync round lasts as long as its longest episode.
    let slow_small_maze = move |c: &mut Config| {
        slow(c);
        c.env.config = "size=5,doors=0,max_steps=100".into();
    };
    // Many VMs and a longer tail, the shape of DART-GUI's setting: 128 envs
    // (4 samplers of 32) on the 5x5 maze, episodes of 4 to 200 steps. A sync
    // round waits for the longest of 128 episodes, and each of a sampler's
    // steps for the slowest of its 32 envs.
    let slow_long_tail = move |c: &mut Config| {
        slow(c);
        c.env.config = "size=5,doors=0,max_steps=200".into();
        c.sampling.samplers = 4;
        c.sampling.envs_per_sampler = 32;
        // Four times the envs, four times the batch.
        c.sampling.batch_steps = 2560;
    };
    let fast = |c: &mut Config| c.stop.updates = 150;
    let label = format!("slow env {}-{} ms", delay[0], delay[1]);
    type Edit<'a> = &'a dyn Fn(&mut Config);
    let scenarios: [(&str, &str, &str, String, Edit); 6] = [
        (
            "ppo_cartpole_slow",
            PPO_CARTPOLE,
            "cartpole.wasm",
            format!("PPO CartPole, {label}"),
            &slow_ppo,
        ),
        (
            "grpo_maze_slow",
            GRPO_MAZE,
            "maze.wasm",
            format!("GRPO maze, {label}"),
            &slow,
        ),
        (
            "grpo_small_maze_slow",
            GRPO_MAZE,
            "maze.wasm",
            format!("GRPO 5x5 maze (long tail), {label}"),
            &slow_small_maze,
        ),
        (
            "grpo_long_tail_128_envs_slow",
            GRPO_MAZE,
            "maze.wasm",
            format!("GRPO 5x5 maze, 128 envs, 4-200 steps, {label}"),
            &slow_long_tail,
        ),
        (
            "ppo_click_cnn_slow",
            PPO_CLICK,
            "desktop.wasm",
            format!("PPO click (CNN), {label}"),
            &slow,
        ),
        (
            "ppo_cartpole_cpu",
            PPO_CARTPOLE,
            "cartpole.wasm",
            "PPO CartPole, no delay".into(),
            &fast,
        ),
    ];
    let mut ratios = serde_json::Map::new();
    let mut lines = Vec::new();
    for (key, base, plugin, label, edit) in &scenarios {
        if args.only.as_deref().is_some_and(|o| !key.contains(o)) {
            continue;
        }
        let sync = measure(base, plugin, label, Mode::Sync, *edit)?;
        let decoupled = measure(base, plugin, label, Mode::Async, *edit)?;
        let util = decoupled.env_utilisation / sync.env_utilisation.max(1e-12);
        let samples = decoupled.learner_samples_per_s / sync.learner_samples_per_s.max(1e-12);
        if key.ends_with("_slow") {
            ratios.insert(
                key.to_string(),
                serde_json::json!({ "env_utilisation": util, "learner_samples_per_s": samples }),
            );
            lines.push(format!(
                "decoupled over sync, {label}: env utilisation x{util:.2}, learner samples/s x{samples:.2}"
            ));
        } else {
            lines.push(format!(
                "{label}: {:.0} learner samples/s (sync), {:.0} (async) on {}",
                sync.learner_samples_per_s, decoupled.learner_samples_per_s, sync.device
            ));
        }
        rows.push(sync);
        rows.push(decoupled);
    }
    let _ = std::fs::remove_dir_all(&scratch);
    if rows.is_empty() {
        return Err(UsageError(format!(
            "--only {}: no scenario matches (keys: {})",
            args.only.unwrap_or_default(),
            scenarios.map(|s| s.0).join(", ")
        ))
        .into());
    }
    if args.json {
        println!(
            "{}",
            serde_json::json!({ "runs": rows, "async_over_sync": ratios })
        );
    } else {
        for l in lines {
            println!("{l}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn parse_delay(s: &str) -> anyhow::Result<[f64; 2]> {
    let bad = || {
        UsageError(format!(
            "--delay-ms `{s}`: expected MIN,MAX in milliseconds, e.g. 5,50"
        ))
    };
    let (a, b) = s.split_once(',').ok_or_else(bad)?;
    let (a, b): (f64, f64) = (
        a.trim().parse().map_err(|_| bad())?,
        b.trim().parse().map_err(|_| bad())?,
    );
    if !(a >= 0.0 && b >= a) {
        return Err(bad().into());
    }
    Ok([a, b])
}
