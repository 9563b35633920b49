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
                "{:<34} {:<5} {:<7} {:>5.1} s  env steps/s {:>9.0}  learner samples/s {:>9.0}  env utilisation {:>5.1}%",
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
    };
    let slow_ppo = move |c: &mut Config| {
        slow(c);
        c.sampling.envs_per_sampler = 8;
        c.sampling.rollout_steps = 16;
        c.sampling.batch_steps = 256;
        c.sampling.max_policy_lag = 4;
    };
    let slow_grpo = move |c: &mut Config| {
        slow(c);
        c.sampling.max_policy_lag = 4;
    };
    let slow_click = move |c: &mut Config| {
        slow(c);
        c.sampling.max_policy_lag = 4;
    };
    let fast = |c: &mut Config| c.stop.updates = 150;
    let label = format!("slow env {}-{} ms", delay[0], delay[1]);
    for mode in [Mode::Sync, Mode::Async] {
        rows.push(measure(
            PPO_CARTPOLE,
            "cartpole.wasm",
            &format!("PPO CartPole, {label}"),
            mode,
            &slow_ppo,
        )?);
    }
    for mode in [Mode::Sync, Mode::Async] {
        rows.push(measure(
            GRPO_MAZE,
            "maze.wasm",
            &format!("GRPO maze, {label}"),
            mode,
            &slow_grpo,
        )?);
    }
    for mode in [Mode::Sync, Mode::Async] {
        rows.push(measure(
            PPO_CLICK,
            "desktop.wasm",
            &format!("PPO click (CNN), {label}"),
            mode,
            &slow_click,
        )?);
    }
    for mode in [Mode::Sync, Mode::Async] {
        rows.push(measure(
            PPO_CARTPOLE,
            "cartpole.wasm",
            "PPO CartPole, CPU",
            mode,
            &fast,
        )?);
    }
    let _ = std::fs::remove_dir_all(&scratch);
    let ratio = |i: usize, f: fn(&Row) -> f64| f(&rows[i + 1]) / f(&rows[i]).max(1e-12);
    let speedups = serde_json::json!({
        "ppo_cartpole_slow": {
            "env_utilisation": ratio(0, |r| r.env_utilisation),
            "learner_samples_per_s": ratio(0, |r| r.learner_samples_per_s),
        },
        "grpo_maze_slow": {
            "env_utilisation": ratio(2, |r| r.env_utilisation),
            "learner_samples_per_s": ratio(2, |r| r.learner_samples_per_s),
        },
        "ppo_click_cnn_slow": {
            "env_utilisation": ratio(4, |r| r.env_utilisation),
            "learner_samples_per_s": ratio(4, |r| r.learner_samples_per_s),
        },
    });
    if args.json {
        println!(
            "{}",
            serde_json::json!({ "runs": rows, "async_over_sync": speedups })
        );
    } else {
        println!(
            "decoupled over sync, PPO CartPole on the slow env: env utilisation x{:.2}, learner samples/s x{:.2}",
            ratio(0, |r| r.env_utilisation),
            ratio(0, |r| r.learner_samples_per_s)
        );
        println!(
            "decoupled over sync, GRPO maze on the slow env: env utilisation x{:.2}, learner samples/s x{:.2}",
            ratio(2, |r| r.env_utilisation),
            ratio(2, |r| r.learner_samples_per_s)
        );
        println!(
            "decoupled over sync, PPO click (CNN) on the slow env: env utilisation x{:.2}, learner samples/s x{:.2}",
            ratio(4, |r| r.env_utilisation),
            ratio(4, |r| r.learner_samples_per_s)
        );
        println!(
            "PPO CartPole on CPU: {:.0} learner samples/s (sync), {:.0} (async)",
            rows[6].learner_samples_per_s, rows[7].learner_samples_per_s
        );
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
