//! Recordings between stores (`ludus copy FROM TO`): SQLite files and
//! PostgreSQL databases, a run or all of them, in one transaction at the
//! destination (a copy that fails writes nothing).
//!
//! Both stores hold the same tables (`store`'s schema; `pg` creates it in
//! PostgreSQL with PostgreSQL's types) and the same bytes: frames stay
//! the compressed chunks and blocks the recorder wrote, so a copied
//! episode decodes to the same frames and keeps its digest. Ids that are
//! local to a database (episodes, frame blocks) get new ones at the
//! destination, and every reference to them follows.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::pg::{Pg, redact};
use crate::store::StoreError;
use crate::stores::{
    AGENT_MEMORY, Cell, EPISODES, Filter, Ids, MODEL_IMAGES, RUN_AGENT_MEMORY, RUNS, Store,
    TRAIN_METRICS, USER_MEMORY, col, copy_episodes, int, sqlite,
};

/// Where a recording lives: a SQLite file or a PostgreSQL database.
#[derive(Clone, Debug, PartialEq)]
pub enum Location {
    Sqlite(PathBuf),
    Postgres(String),
}

impl Location {
    /// `postgres://...` (or `postgresql://`) is a PostgreSQL database,
    /// anything else a file path.
    pub fn parse(s: &str) -> Location {
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            Location::Postgres(s.to_string())
        } else {
            Location::Sqlite(PathBuf::from(s))
        }
    }
}

impl std::fmt::Display for Location {
    /// The path, or the URL without its password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Sqlite(p) => write!(f, "{}", p.display()),
            Location::Postgres(url) => f.write_str(&redact(url)),
        }
    }
}

/// What a copy did.
#[derive(Debug, Default, PartialEq)]
pub struct Copied {
    pub runs: Vec<String>,
    pub episodes: usize,
    /// Each copied episode's id in the source and its id in the copy.
    pub ids: BTreeMap<i64, i64>,
}

/// Copies `run` (every run with `None`) from `from` to `to`. Fails, having
/// written nothing, when `to` already holds one of the runs.
pub fn copy(from: &Location, to: &Location, run: Option<&str>) -> Result<Copied, StoreError> {
    if from == to {
        return Err(StoreError::Open {
            path: PathBuf::from(to.to_string()),
            message: "copying a recording onto itself".into(),
        });
    }
    let mut source = open(from, false)?;
    let mut dest = open(to, true)?;
    in_one_transaction(dest.as_mut(), |dest| {
        copy_runs(source.as_mut(), dest, run, to, Ids::Fresh)
    })
}

/// Every run of `from` into the new SQLite file `to`, with the same ids
/// (episodes, frame blocks), so that a command reading `from` by episode id
/// reads the copy the same way: how the reading commands open a PostgreSQL
/// database.
pub fn mirror(from: &Location, to: &Path) -> Result<Copied, StoreError> {
    mirror_runs(from, to, None)
}

/// [`mirror`] of one run (every run with `None`).
pub fn mirror_runs(from: &Location, to: &Path, run: Option<&str>) -> Result<Copied, StoreError> {
    if to.exists() {
        return Err(StoreError::Open {
            path: to.to_path_buf(),
            message: "a mirror is made into a new file".into(),
        });
    }
    let mut source = open(from, false)?;
    let dest_at = Location::Sqlite(to.to_path_buf());
    let mut dest = open(&dest_at, true)?;
    in_one_transaction(dest.as_mut(), |dest| {
        copy_runs(source.as_mut(), dest, run, &dest_at, Ids::Keep)
    })
}

/// Sends `run`, added to `mirror` (a [`mirror`] of `to`) since it was made,
/// back to `to`: its episodes get new ids there, and a parent outside the
/// run (an episode of `to` the mirror copied) keeps its id. How a fork or a
/// rerun made on a mirror lands in PostgreSQL.
pub fn write_back(mirror: &Path, to: &Location, run: &str) -> Result<Copied, StoreError> {
    let mut source = open(&Location::Sqlite(mirror.to_path_buf()), false)?;
    let mut dest = open(to, true)?;
    in_one_transaction(dest.as_mut(), |dest| {
        copy_runs(source.as_mut(), dest, Some(run), to, Ids::FreshParentsKept)
    })
}

/// The run an episode of `at` belongs to.
pub fn run_of_episode(at: &Location, episode: i64) -> Result<String, StoreError> {
    let mut store = open(at, false)?;
    let rows = store.select(&EPISODES, &Filter::Eq("id", Cell::Int(episode)))?;
    match rows.first().map(|r| &r[col(&EPISODES, "run_id")]) {
        Some(Cell::Text(run)) => Ok(run.clone()),
        _ => Err(StoreError::NoEpisode(episode)),
    }
}

/// Runs `f` on `dest` in one transaction: committed when it succeeds,
/// rolled back (nothing written) when it fails.
fn in_one_transaction(
    dest: &mut dyn Store,
    f: impl FnOnce(&mut dyn Store) -> Result<Copied, StoreError>,
) -> Result<Copied, StoreError> {
    dest.begin()?;
    match f(dest) {
        Ok(copied) => {
            dest.commit()?;
            Ok(copied)
        }
        Err(e) => {
            dest.rollback();
            Err(e)
        }
    }
}

/// Opens a store: a SQLite file (which must exist to be read), or a
/// PostgreSQL database (whose schema is created when `write`).
pub(crate) fn open(at: &Location, write: bool) -> Result<Box<dyn Store>, StoreError> {
    match at {
        Location::Sqlite(path) => sqlite(path, write),
        Location::Postgres(url) => Ok(Box::new(Pg::connect(url, write)?)),
    }
}

fn copy_runs(
    source: &mut dyn Store,
    dest: &mut dyn Store,
    run: Option<&str>,
    to: &Location,
    ids: Ids,
) -> Result<Copied, StoreError> {
    let runs = match run {
        Some(id) => {
            let rows = source.select(&RUNS, &Filter::Eq("id", Cell::Text(id.to_string())))?;
            if rows.is_empty() {
                return Err(StoreError::NoRun(id.to_string()));
            }
            rows
        }
        None => source.select(&RUNS, &Filter::All)?,
    };
    let run_ids: Vec<String> = runs
        .iter()
        .filter_map(|r| match &r[0] {
            Cell::Text(t) => Some(t.clone()),
            _ => None,
        })
        .collect();
    for id in &run_ids {
        let there = dest.select(&RUNS, &Filter::Eq("id", Cell::Text(id.clone())))?;
        if !there.is_empty() {
            return Err(StoreError::Open {
                path: PathBuf::from(to.to_string()),
                message: format!("it already holds run {id}: copy into another database"),
            });
        }
    }
    let mut episodes: Vec<Vec<Cell>> = Vec::new();
    for id in &run_ids {
        episodes.extend(source.select(&EPISODES, &Filter::Eq("run_id", Cell::Text(id.clone())))?);
    }
    dest.insert(&RUNS, &runs)?;
    let episode_ids = copy_episodes(source, dest, episodes, ids)?;
    let copied = Copied {
        runs: run_ids.clone(),
        episodes: episode_ids.len(),
        ids: episode_ids.clone(),
    };
    // Per-run tables.
    for id in &run_ids {
        for table in [&RUN_AGENT_MEMORY, &TRAIN_METRICS] {
            let rows = source.select(table, &Filter::Eq("run_id", Cell::Text(id.clone())))?;
            dest.insert(table, &rows)?;
        }
    }
    // Images model calls carried, once each by key.
    let have: BTreeSet<Vec<u8>> = dest
        .select(&MODEL_IMAGES, &Filter::All)?
        .into_iter()
        .filter_map(|r| match r.into_iter().next() {
            Some(Cell::Blob(k)) => Some(k),
            _ => None,
        })
        .collect();
    let images: Vec<Vec<Cell>> = source
        .select(&MODEL_IMAGES, &Filter::All)?
        .into_iter()
        .filter(|r| !matches!(&r[0], Cell::Blob(k) if have.contains(k)))
        .collect();
    dest.insert(&MODEL_IMAGES, &images)?;
    // The stored memory belongs to the whole database: it goes with a copy
    // of every run, where the destination has none of it yet.
    let remap = |c: &Cell| match int(c).and_then(|i| episode_ids.get(&i)) {
        Some(new) => Cell::Int(*new),
        None => Cell::Null,
    };
    if run.is_none() {
        for table in [&AGENT_MEMORY, &USER_MEMORY] {
            let have: BTreeSet<String> = dest
                .select(table, &Filter::All)?
                .into_iter()
                .filter_map(|r| match r.into_iter().next() {
                    Some(Cell::Text(p)) => Some(p),
                    _ => None,
                })
                .collect();
            let rows: Vec<Vec<Cell>> = source
                .select(table, &Filter::All)?
                .into_iter()
                .filter(|r| !matches!(&r[0], Cell::Text(p) if have.contains(p)))
                .map(|mut r| {
                    if let Some(e) = r.get_mut(2) {
                        *e = remap(e);
                    }
                    r
                })
                .collect();
            dest.insert(table, &rows)?;
        }
    }
    Ok(copied)
}

/// Whether `path` names a PostgreSQL database rather than a file.
pub fn is_postgres(path: &Path) -> bool {
    matches!(
        Location::parse(&path.to_string_lossy()),
        Location::Postgres(_)
    )
}
