use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};
use ludus_arena::run::{Progress, prepare};
use ludus_arena::{AgentSpec, Limits, PluginSpec, RunReport, RunSpec};

use crate::UsageError;
use crate::cli::RunArgs;

/// Applies `--limit [PLUGIN.]KEY=VALUE` overrides to the three plugins' limits.
pub fn parse_limits(items: &[String]) -> Result<[Limits; 3], UsageError> {
    let mut limits = [Limits::DEFAULT; 3];
    for item in items {
        let Some((key, value)) = item.split_once('=') else {
            return Err(UsageError(format!(
                "--limit `{item}`: expected [env|agent|reward.]KEY=VALUE"
            )));
        };
        let (targets, key): (Vec<usize>, &str) = match key.split_once('.') {
            // The run's own limits: see `model_setup`.
            Some(("run", "cost-usd")) => {
                cost_cap(std::slice::from_ref(item))?;
                continue;
            }
            Some(("run", k)) => {
                return Err(UsageError(format!(
                    "--limit `{item}`: unknown run limit `{k}` (known: run.cost-usd)"
                )));
            }
            Some(("env", k)) => (vec![0], k),
            Some(("agent", k)) => (vec![1], k),
            Some(("reward", k)) => (vec![2], k),
            Some((p, _)) => {
                return Err(UsageError(format!(
                    "--limit `{item}`: unknown plugin `{p}` (env, agent or reward)"
                )));
            }
            None => (vec![0, 1, 2], key),
        };
        for t in targets {
            limits[t]
                .set(key, value)
                .map_err(|e| UsageError(format!("--limit `{item}`: {e}")))?;
        }
    }
    Ok(limits)
}

/// `--limit run.cost-usd=X`: the run's whole spending on model calls.
pub fn cost_cap(items: &[String]) -> Result<Option<f64>, UsageError> {
    let mut cap = None;
    for item in items {
        if let Some(v) = item.strip_prefix("run.cost-usd=") {
            let x: f64 = v
                .trim()
                .parse()
                .ok()
                .filter(|x: &f64| x.is_finite() && *x >= 0.0)
                .ok_or_else(|| {
                    UsageError(format!(
                        "--limit `{item}`: run.cost-usd needs a non-negative number of US dollars"
                    ))
                })?;
            cap = Some(x);
        }
    }
    Ok(cap)
}

/// The run's model access from `--model` values and `--limit run.cost-usd`.
pub fn model_setup(
    models: &[String],
    limits: &[String],
) -> Result<ludus_arena::chat::ModelSetup, UsageError> {
    ludus_trainer::llm::setup(models, cost_cap(limits)?).map_err(UsageError)
}

/// The agent of `--agent`: a wasm plugin, or a trained policy given as
/// `checkpoint:PATH` (loaded and checked here: a bad one is a usage error).
pub fn agent_spec(agent: &Path, config: &str, limits: Limits) -> Result<AgentSpec, UsageError> {
    if let Some(path) = agent
        .to_str()
        .and_then(ludus_trainer::agent::checkpoint_path)
    {
        let factory = ludus_trainer::agent::open(Path::new(path), config)
            .map_err(|e| UsageError(e.to_string()))?;
        return Ok(AgentSpec::Native(factory));
    }
    Ok(AgentSpec::Plugin(PluginSpec {
        path: agent.to_path_buf(),
        config: config.to_string(),
        limits,
    }))
}

pub fn run(args: RunArgs) -> Result<ExitCode> {
    let [env_limits, agent_limits, reward_limits] = parse_limits(&args.limits)?;
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if !(args.env_step_delay_ms.is_finite() && (0.0..=3.6e6).contains(&args.env_step_delay_ms)) {
        return Err(UsageError(
            "--env-step-delay-ms must be a number of milliseconds from 0 to 3600000".into(),
        )
        .into());
    }
    let postgres = ludus_arena::copy::is_postgres(&args.db);
    if args.workers && !postgres {
        return Err(UsageError(
            "--workers needs a PostgreSQL --db (postgres://...): the job queue lives there".into(),
        )
        .into());
    }
    if let Some(dir) = args.db.parent().filter(|d| !d.as_os_str().is_empty())
        && !postgres
        && !dir.is_dir()
    {
        return Err(UsageError(format!(
            "--db {}: folder {} does not exist",
            args.db.display(),
            dir.display()
        ))
        .into());
    }
    let spec = RunSpec {
        env: PluginSpec {
            path: args.env.clone(),
            config: args.env_config.clone(),
            limits: env_limits,
        },
        agent: agent_spec(&args.agent, &args.agent_config, agent_limits)?,
        reward: args.reward.as_ref().map(|p| PluginSpec {
            path: p.clone(),
            config: args.reward_config.clone(),
            limits: reward_limits,
        }),
        episodes: args.episodes,
        seed: args.seed,
        jobs,
        db: args.db.clone(),
        models: model_setup(&args.models, &args.limits)?,
        step_delay: Duration::from_secs_f64(args.env_step_delay_ms / 1e3),
    };
    let url = args.db.to_string_lossy().into_owned();
    if postgres && args.workers {
        return crate::worker_cmd::enqueue_and_follow(&url, spec, args.json);
    }
    // Into PostgreSQL without workers: played here into a scratch file,
    // copied there at the end (checked reachable first).
    let scratch = if postgres {
        drop(crate::worker_cmd::connect(&url, true)?);
        Some(crate::worker_cmd::scratch_db()?)
    } else {
        None
    };
    let mut spec = spec;
    if let Some((_, path)) = &scratch {
        spec.db = path.clone();
    }
    let prepared = prepare(spec)?;
    for p in [
        Some(&prepared.env),
        prepared.agent.plugin(),
        prepared.reward.as_ref(),
    ]
    .into_iter()
    .flatten()
    {
        if p.compiled {
            tracing::info!(
                "compiled {} for the first time (cached for later runs)",
                p.name
            );
        }
    }
    let progress = Progress::default();
    let bar = if args.json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(args.episodes)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} episodes {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let done = std::sync::atomic::AtomicBool::new(false);
    let report = std::thread::scope(|scope| {
        let (progress, bar, done_ref) = (&progress, &bar, &done);
        scope.spawn(move || {
            while !done_ref.load(Ordering::Relaxed) {
                bar.set_position(progress.episodes_done.load(Ordering::Relaxed));
                bar.set_message(format!("{} steps", progress.steps.load(Ordering::Relaxed)));
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        let r = prepared.run(progress);
        done.store(true, Ordering::Relaxed);
        r
    })?;
    bar.finish_and_clear();
    let mut report = report;
    if let Some((_, path)) = &scratch {
        use ludus_arena::copy::{Location, copy};
        copy(
            &Location::Sqlite(path.clone()),
            &Location::Postgres(url.clone()),
            Some(&report.run_id),
        )
        .map_err(|e| anyhow::anyhow!("recording the run into PostgreSQL: {e}"))?;
        report.db = PathBuf::from(ludus_arena::pg::redact(&url));
    }
    if args.json {
        println!("{}", serde_json::to_string(&json_report(&report))?);
    } else {
        print_table(&report);
    }
    Ok(ExitCode::SUCCESS)
}

fn json_report(report: &RunReport) -> serde_json::Value {
    serde_json::json!({
        "run_id": report.run_id,
        "db": report.db,
        "summary": report.summary(),
        "episodes": report.episodes,
    })
}

fn print_table(report: &RunReport) {
    let s = report.summary();
    println!("run {} recorded in {}", report.run_id, report.db.display());
    let rows = [
        ("episodes", s.episodes.to_string()),
        ("success rate", format!("{:.1}%", s.success_rate * 100.0)),
        ("mean return", format!("{:.3}", s.mean_return)),
        ("min return", format!("{:.3}", s.min_return)),
        ("max return", format!("{:.3}", s.max_return)),
        ("mean length", format!("{:.1}", s.mean_length)),
        ("crashed", s.crashed.to_string()),
        ("env steps/s", format!("{:.0}", s.env_steps_per_sec)),
    ];
    for (k, v) in rows {
        println!("  {k:<14} {v:>12}");
    }
    if s.model_calls > 0 {
        let rows = [
            ("model calls", s.model_calls.to_string()),
            ("tokens in", s.tokens_in.to_string()),
            ("tokens out", s.tokens_out.to_string()),
            ("cost (USD)", format!("{:.4}", s.cost_usd)),
            ("model time", format!("{:.1} s", s.model_ms / 1e3)),
            ("over budget", s.budget_refusals.to_string()),
        ];
        for (k, v) in rows {
            println!("  {k:<14} {v:>12}");
        }
    }
    for e in report.episodes.iter().filter(|e| e.error.is_some()).take(5) {
        let msg = e.error.as_deref().unwrap_or_default();
        let first: String = msg.chars().take(300).collect();
        println!(
            "  episode {} (index {}) {}: {first}",
            e.id,
            e.index,
            e.outcome.as_str()
        );
    }
}
