//! `ludus serve --env E.wasm [--env-config STR] [--host H] [--port P] [--db PATH]`:
//! an env plugin over the network in OpenEnv's protocol (`ludus_serve`).

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Result;
use ludus_serve::{ServeConfig, ServeError};

use crate::UsageError;
use crate::cli::ServeArgs;
use crate::run_cmd::parse_limits;

pub fn serve(args: ServeArgs) -> Result<ExitCode> {
    if args.max_sessions == 0 {
        return Err(UsageError("--max-sessions must be at least 1".into()).into());
    }
    if !(args.idle_timeout_s.is_finite() && args.idle_timeout_s > 0.0) {
        return Err(
            UsageError("--idle-timeout-s must be a positive number of seconds".into()).into(),
        );
    }
    // Into PostgreSQL: the sessions record into a local file as they play
    // (so a kill loses nothing), copied there when the server stops.
    let mut args = args;
    let postgres = match args.db.as_deref() {
        Some(db) if ludus_arena::copy::is_postgres(db) => {
            let url = db.to_string_lossy().into_owned();
            drop(crate::worker_cmd::connect(&url, true)?);
            let local =
                std::env::current_dir()?.join(format!("ludus-serve-{}.db", std::process::id()));
            args.db = Some(local.clone());
            Some((url, local))
        }
        _ => None,
    };
    let [env_limits, _, _] = parse_limits(&args.limits)?;
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        ctrlc::set_handler(move || stop.store(true, Ordering::Relaxed))
            .map_err(|e| anyhow::anyhow!("cannot handle Ctrl-C: {e}"))?;
    }
    let config = ServeConfig {
        env: args.env,
        env_config: args.env_config,
        limits: env_limits,
        host: args.host,
        port: args.port,
        db: args.db,
        max_sessions: args.max_sessions,
        idle_timeout: Duration::from_secs_f64(args.idle_timeout_s),
        seed: args.seed,
    };
    let served = ludus_serve::serve(config, stop, |addr| {
        println!("listening on http://{addr} (OpenEnv sessions at ws://{addr}/ws)");
    });
    match served {
        Ok(Some(run)) => {
            if let Some((url, local)) = &postgres {
                use ludus_arena::copy::{Location, copy};
                let to = Location::Postgres(url.clone());
                copy(&Location::Sqlite(local.clone()), &to, Some(&run)).map_err(|e| {
                    anyhow::anyhow!(
                        "copying the recording into {to}: {e} (it is kept in {}; `ludus copy` it later)",
                        local.display()
                    )
                })?;
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", local.display()));
                }
                println!("recorded run {run} in {to}");
                return Ok(ExitCode::SUCCESS);
            }
            println!("recorded run {run}");
            Ok(ExitCode::SUCCESS)
        }
        Ok(None) => Ok(ExitCode::SUCCESS),
        Err(e @ ServeError::Setup(_)) | Err(e @ ServeError::Listen { .. }) => {
            Err(UsageError(e.to_string()).into())
        }
    }
}
