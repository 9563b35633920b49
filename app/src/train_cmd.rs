//! `ludus train CONFIG.toml [--db PATH] [--device auto|cpu|cuda] [--resume] [--json]`.

use std::io::Write;
use std::process::ExitCode;

use ludus_trainer::config::Config;
use ludus_trainer::train::{self, TrainOptions, UpdateReport};

use crate::UsageError;
use crate::cli::TrainArgs;

pub fn run(args: TrainArgs) -> anyhow::Result<ExitCode> {
    let mut config = Config::load(&args.config).map_err(|e| UsageError(e.to_string()))?;
    // Into PostgreSQL: trained here into a scratch file (metrics, sampled
    // episodes), copied there when training ends, however it ends.
    let url =
        ludus_arena::copy::is_postgres(&args.db).then(|| args.db.to_string_lossy().into_owned());
    let scratch = match &url {
        Some(_) if args.resume => {
            return Err(UsageError(
                "--resume continues a run recorded in a SQLite --db: train into a file, then `ludus copy FILE URL`".into(),
            )
            .into());
        }
        Some(url) => {
            drop(crate::worker_cmd::connect(url, true)?);
            // Checkpoints go where a file database's would: the current
            // folder, named after the database.
            let name = ludus_arena::pg::database_name(url);
            let dir = config
                .checkpoint
                .dir
                .take()
                .unwrap_or_else(|| format!("{name}-{}-checkpoints", config.name).into());
            config.checkpoint.dir = Some(std::env::current_dir()?.join(dir));
            Some(crate::worker_cmd::scratch_db()?)
        }
        None => None,
    };
    let opts = TrainOptions {
        config,
        db: scratch.as_ref().map_or(args.db.clone(), |(_, p)| p.clone()),
        device: args.device.into(),
        resume: args.resume,
        stop: None,
    };
    let json = args.json;
    let mut print = |r: &UpdateReport| {
        let line = progress_line(r);
        // Progress goes to stdout, unless stdout carries the JSON summary.
        if json {
            eprintln!("{line}");
        } else {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
    };
    let trained = train::train(&opts, &mut print);
    let mut summary = match (&url, &scratch) {
        (Some(url), Some((_, path))) if path.is_file() => {
            use ludus_arena::copy::{Location, copy};
            let copied = copy(
                &Location::Sqlite(path.clone()),
                &Location::Postgres(url.clone()),
                None,
            )
            .map_err(|e| anyhow::anyhow!("recording the training run into PostgreSQL: {e}"));
            let summary = trained?;
            copied?;
            summary
        }
        _ => trained?,
    };
    if let Some(url) = &url {
        summary.db = std::path::PathBuf::from(ludus_arena::pg::redact(url));
    }
    if json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        println!(
            "trained `{}` on {}: {} updates, {} env steps, {} episodes, mean return (last episodes) {}, {:.1} s{}; checkpoint {}; recorded in {}",
            summary.run_id,
            summary.device,
            summary.updates,
            summary.env_steps,
            summary.episodes,
            summary
                .mean_return
                .map_or("-".into(), |r| format!("{r:.2}")),
            summary.seconds,
            if summary.reached_target {
                " (target reached)"
            } else {
                ""
            },
            summary.checkpoint.display(),
            summary.db.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn progress_line(r: &UpdateReport) -> String {
    let f = |name: &str| r.metric(name).map_or("-".into(), |v| format!("{v:.3}"));
    let mut line = format!(
        "update {}/{}  steps {}  return {}  window {}  len {}  pi_loss {}  v_loss {}  entropy {}  kl {}  clip {}  steps/s {:.0}  env_util {}  lag {}",
        r.update,
        r.updates,
        r.env_steps,
        f("return"),
        r.mean_return.map_or("-".into(), |v| format!("{v:.2}")),
        f("episode_length"),
        f("policy_loss"),
        f("value_loss"),
        f("entropy"),
        f("approx_kl"),
        f("clip_fraction"),
        r.metric("env_steps_per_s").unwrap_or(0.0),
        f("env_utilisation"),
        f("policy_lag"),
    );
    // Training a language model: how often it succeeds and what it generates.
    if r.metric("success_rate").is_some() {
        let whole = |name: &str| r.metric(name).map_or("-".into(), |v| format!("{v:.0}"));
        line.push_str(&format!(
            "  success {}  tokens/episode {}  gen_tokens/s {}  trained_tokens/s {}  sampling {}  learner {}",
            f("success_rate"),
            f("tokens_per_episode"),
            whole("generation_tokens_per_s"),
            whole("trained_tokens_per_s"),
            f("sampling_share"),
            f("learner_share"),
        ));
        if let Some(mib) = r.metric("gpu_memory_mib") {
            line.push_str(&format!("  gpu_mem {mib:.0} MiB"));
        }
    }
    if let Some(p) = &r.checkpoint {
        line.push_str(&format!(
            "\ncheckpoint update {}: {}",
            r.update,
            p.display()
        ));
    }
    line
}
