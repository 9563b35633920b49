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
    if args
        .db
        .as_deref()
        .is_some_and(ludus_arena::copy::is_postgres)
    {
        return Err(UsageError(
            "--db: ludus serve records into a SQLite file (its sessions write as they play); serve with --db FILE, then `ludus copy FILE URL`".into(),
        )
        .into());
    }
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
            println!("recorded run {run}");
            Ok(ExitCode::SUCCESS)
        }
        Ok(None) => Ok(ExitCode::SUCCESS),
        Err(e @ ServeError::Setup(_)) | Err(e @ ServeError::Listen { .. }) => {
            Err(UsageError(e.to_string()).into())
        }
    }
}
