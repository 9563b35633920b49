//! `ludus copy FROM TO [--run ID]`: recordings between SQLite files and
//! PostgreSQL databases (`ludus_arena::copy`).

use std::process::ExitCode;

use anyhow::Result;
use ludus_arena::StoreError;
use ludus_arena::copy::{Location, copy};

use crate::UsageError;
use crate::cli::CopyArgs;

pub fn run(args: CopyArgs) -> Result<ExitCode> {
    let (from, to) = (Location::parse(&args.from), Location::parse(&args.to));
    match copy(&from, &to, args.run.as_deref()) {
        Ok(copied) => {
            println!(
                "copied {} run(s), {} episode(s) from {from} to {to}",
                copied.runs.len(),
                copied.episodes
            );
            Ok(ExitCode::SUCCESS)
        }
        // Everything a user names or supplies: one line, exit 2.
        Err(
            e @ (StoreError::Open { .. }
            | StoreError::Corrupt { .. }
            | StoreError::NewerSchema { .. }
            | StoreError::NoRun(_)
            | StoreError::NoEpisode(_)),
        ) => Err(UsageError(format!("ludus copy: {e}")).into()),
        Err(e) => Err(anyhow::anyhow!(
            "ludus copy: {e} (nothing was written to {to})"
        )),
    }
}

/// For the commands that read a recording (`debug`, `diff`, `export`): a
/// PostgreSQL `db` is mirrored into a temporary SQLite file, with its ids,
/// and `db` names that file while the returned folder lives.
pub fn readable(db: &mut std::path::PathBuf) -> Result<Option<tempfile::TempDir>> {
    let Location::Postgres(url) = Location::parse(&db.to_string_lossy()) else {
        return Ok(None);
    };
    let dir = tempfile::tempdir()?;
    let local = dir.path().join("mirror.db");
    ludus_arena::copy::mirror(&Location::Postgres(url), &local)
        .map_err(|e| UsageError(e.to_string()))?;
    *db = local;
    Ok(Some(dir))
}
