//! `ludus bench llm-train`: GRPO on the language model an LLM agent calls,
//! the same short run in four setups (sync `f32`, sync `bf16`, sync `bf16`
//! with offload, async `bf16`), each from the model as loaded and in a
//! process of its own: the success
//! rate of the first update and of the last ones, sampled and trained
//! tokens per second, the shares of wall time spent sampling and learning,
//! and the GPU memory the training held (on CUDA).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use ludus_trainer::config::{Config, Dtype, Mode};
use ludus_trainer::train::{self, TrainOptions, UpdateReport};

use crate::UsageError;
use crate::cli::{BenchArgs, LlmTask};

const WORD_ECHO: &str = include_str!("../../configs/llm-word-echo.toml");

/// One setup's figures.
#[derive(serde::Serialize, serde::Deserialize)]
struct Row {
    setup: String,
    device: String,
    updates: u64,
    seconds: f64,
    success_first: f64,
    /// Mean over the last quarter of the updates (at least one).
    success_last: f64,
    generation_tokens_per_s: f64,
    /// Mean over the updates that trained.
    trained_tokens_per_s: f64,
    sampling_share: f64,
    learner_share: f64,
    /// The most the driver reported, on CUDA.
    gpu_memory_mib: Option<f64>,
}

pub fn run(args: BenchArgs) -> Result<ExitCode> {
    let only = match &args.setup {
        Some(key) => Some(SETUPS.iter().find(|s| s.0 == key).ok_or_else(|| {
            UsageError(format!(
                "--setup {key}: no such setup (the setups are {})",
                SETUPS.map(|s| s.0).join(", ")
            ))
        })?),
        None => None,
    };
    let model = args
        .model
        .as_deref()
        .map(|m| m.strip_prefix("policy:").unwrap_or(m))
        .map(|m| m.split(',').next().unwrap_or(m))
        .unwrap_or("models/smollm2-135m-instruct.gguf");
    let model = PathBuf::from(model);
    if !model.exists() {
        return Err(UsageError(format!(
            "--model {}: no such model (give a GGUF file or a Hugging Face folder; scripts/setup.sh puts SmolLM2 in models/)",
            model.display()
        ))
        .into());
    }
    if args.updates == 0 {
        return Err(UsageError("--updates must be greater than 0".into()).into());
    }
    let plugins = &args.plugins;
    let mut base = Config::parse(WORD_ECHO).map_err(|e| anyhow::anyhow!("built-in config: {e}"))?;
    base.policy.model = Some(model.clone());
    match args.task {
        LlmTask::WordEcho => {
            base.env.plugin = plugins.join("word_echo.wasm");
            base.policy.agent = Some(plugins.join("llm_text_agent.wasm"));
        }
        LlmTask::Maze => {
            base.env.plugin = plugins.join("maze.wasm");
            base.env.config = "size=7,doors=0,max_steps=20".into();
            base.policy.agent = Some(plugins.join("llm_maze_agent.wasm"));
            base.policy.agent_config = "max-tokens=32,temperature=1".into();
        }
    }
    for p in [
        &base.env.plugin,
        base.policy.agent.as_ref().unwrap_or(&base.env.plugin),
    ] {
        if !p.exists() {
            return Err(UsageError(format!(
                "--plugins {}: no {} there (build the plugins with scripts/build-plugins.sh)",
                plugins.display(),
                p.file_name().unwrap_or_default().to_string_lossy()
            ))
            .into());
        }
    }
    base.stop.updates = args.updates;
    base.stop.mean_return = None;
    base.checkpoint.every = 0;
    match only {
        Some(setup) => {
            let row = measure(&args, base, setup)?;
            println!("{}", serde_json::to_string(&row)?);
        }
        None => each_in_its_own_process(&args, &model)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// The setups: a key (`--setup`), the mode, the weights' type, offload.
const SETUPS: [(&str, Mode, Dtype, bool); 4] = [
    ("sync-f32", Mode::Sync, Dtype::F32, false),
    ("sync-bf16", Mode::Sync, Dtype::Bf16, false),
    ("sync-bf16-offload", Mode::Sync, Dtype::Bf16, true),
    ("async-bf16", Mode::Async, Dtype::Bf16, false),
];

/// Runs each setup as `ludus bench llm-train --setup KEY` in a process of
/// its own (libtorch keeps the GPU memory a process freed, so one setup's
/// peak would carry over into the next), then prints them all.
fn each_in_its_own_process(args: &BenchArgs, model: &std::path::Path) -> Result<()> {
    use clap::ValueEnum;
    let exe = std::env::current_exe().context("cannot find this program to run a setup")?;
    let name = |v: Option<clap::builder::PossibleValue>| {
        v.map(|v| v.get_name().to_string()).unwrap_or_default()
    };
    let mut rows = Vec::new();
    for (key, ..) in SETUPS {
        let mut cmd = std::process::Command::new(&exe);
        cmd.args(["bench", "llm-train", "--setup", key, "--updates"])
            .arg(args.updates.to_string())
            .arg("--model")
            .arg(model)
            .arg("--plugins")
            .arg(&args.plugins)
            .args(["--task", &name(args.task.to_possible_value())])
            .args(["--device", &name(args.device.to_possible_value())])
            .stderr(std::process::Stdio::inherit());
        let out = cmd
            .output()
            .with_context(|| format!("cannot run setup {key}"))?;
        if !out.status.success() {
            anyhow::bail!("setup {key} failed ({})", out.status);
        }
        let row: Row = serde_json::from_slice(&out.stdout)
            .with_context(|| format!("setup {key} printed no figures"))?;
        if !args.json {
            println!(
                "{:<18} {:<7} {:>3} updates {:>7.1} s  success {:.2} -> {:.2}  sampled {:>7.1} tokens/s  trained {:>8.1} tokens/s  sampling {:>3.0}%  learner {:>3.0}%{}",
                row.setup,
                row.device,
                row.updates,
                row.seconds,
                row.success_first,
                row.success_last,
                row.generation_tokens_per_s,
                row.trained_tokens_per_s,
                100.0 * row.sampling_share,
                100.0 * row.learner_share,
                row.gpu_memory_mib
                    .map(|m| format!("  GPU memory {m:.0} MiB"))
                    .unwrap_or_default()
            );
        }
        rows.push(row);
    }
    if args.json {
        println!("{}", serde_json::to_string(&rows)?);
    }
    Ok(())
}

/// One setup, trained in this process (into a scratch folder it removes).
fn measure(
    args: &BenchArgs,
    mut c: Config,
    &(setup, mode, dtype, offload): &(&str, Mode, Dtype, bool),
) -> Result<Row> {
    let scratch =
        std::env::temp_dir().join(format!("ludus-bench-llm-train-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).context("cannot create a scratch folder")?;
    c.checkpoint.dir = Some(scratch.join("checkpoints"));
    c.name = format!("bench-{setup}");
    c.sampling.mode = mode;
    if mode == Mode::Async {
        c.sampling.max_policy_lag = 1;
    }
    c.policy.dtype = dtype;
    c.policy.offload = offload;
    let opts = TrainOptions {
        config: c,
        db: scratch.join(format!("{setup}.db")),
        device: args.device.into(),
        resume: false,
        stop: None,
    };
    let mut updates: Vec<UpdateReport> = Vec::new();
    let trained = train::train(&opts, &mut |r| {
        // Progress on stderr, also under --json (stdout is the JSON).
        eprintln!(
            "{setup}: update {}/{}  success {:.3}",
            r.update,
            r.updates,
            r.metric("success_rate").unwrap_or(0.0)
        );
        updates.push(r.clone());
    });
    let _ = std::fs::remove_dir_all(&scratch);
    let summary = trained?;
    // The mean of `name` over the updates from `from` on whose value `keep`
    // accepts.
    let mean = |name: &str, from: usize, keep: fn(f64) -> bool| {
        let v: Vec<f64> = updates[from..]
            .iter()
            .filter_map(|u| u.metric(name))
            .filter(|v| keep(*v))
            .collect();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    };
    let any = |_: f64| true;
    let last = updates.len().saturating_sub((updates.len() / 4).max(1));
    let row = Row {
        setup: setup.to_string(),
        device: summary.device.clone(),
        updates: summary.updates,
        seconds: summary.seconds,
        success_first: updates
            .first()
            .and_then(|u| u.metric("success_rate"))
            .unwrap_or(0.0),
        success_last: mean("success_rate", last, any),
        generation_tokens_per_s: mean("generation_tokens_per_s", 0, any),
        // Over the updates that trained (a group with no success,
        // or none with a different result, gives nothing to learn).
        trained_tokens_per_s: mean("trained_tokens_per_s", 0, |v| v > 0.0),
        sampling_share: mean("sampling_share", 0, any),
        learner_share: mean("learner_share", 0, any),
        gpu_memory_mib: updates
            .iter()
            .filter_map(|u| u.metric("gpu_memory_mib"))
            .reduce(f64::max),
    };
    Ok(row)
}
