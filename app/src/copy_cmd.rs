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

/// For the commands that add a branch to a recording (`fork`, `rerun`): a
/// PostgreSQL `db` is mirrored (the run of `episode` only) into a temporary
/// SQLite file, which `db` then names; [`Branching::send_back`] puts the
/// new branch into PostgreSQL.
pub struct Branching {
    _dir: tempfile::TempDir,
    local: std::path::PathBuf,
    url: String,
}

pub fn branching(db: &mut std::path::PathBuf, episode: i64) -> Result<Option<Branching>> {
    let Location::Postgres(url) = Location::parse(&db.to_string_lossy()) else {
        return Ok(None);
    };
    let at = Location::Postgres(url.clone());
    let run = ludus_arena::copy::run_of_episode(&at, episode).map_err(|e| match e {
        StoreError::NoEpisode(_) => UsageError(format!("{at} has no episode {episode}")),
        e => UsageError(e.to_string()),
    })?;
    let dir = tempfile::tempdir()?;
    let local = dir.path().join("mirror.db");
    ludus_arena::copy::mirror_runs(&at, &local, Some(&run))
        .map_err(|e| UsageError(e.to_string()))?;
    *db = local.clone();
    Ok(Some(Branching {
        _dir: dir,
        local,
        url,
    }))
}

impl Branching {
    /// Records the branch (run `run_id`, episode `episode` in the mirror) in
    /// PostgreSQL; the episode's id there.
    pub fn send_back(&self, run_id: &str, episode: i64) -> Result<i64> {
        let to = Location::Postgres(self.url.clone());
        let copied = ludus_arena::copy::write_back(&self.local, &to, run_id)
            .map_err(|e| anyhow::anyhow!("recording the branch into {to}: {e}"))?;
        Ok(copied.ids.get(&episode).copied().unwrap_or(episode))
    }
}
