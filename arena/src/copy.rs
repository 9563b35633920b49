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
use crate::store::{Db, Real, StoreError};

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

/// A stored value.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Cell {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Kind {
    Int,
    Real,
    Text,
    Blob,
}

/// A table as the copy sees it: its columns, in the schema's order.
pub(crate) struct Table {
    pub name: &'static str,
    pub columns: &'static [(&'static str, Kind)],
}

use Kind::{Blob, Int, Real as R, Text};

pub(crate) const RUNS: Table = Table {
    name: "runs",
    columns: &[
        ("id", Text),
        ("created_at", Text),
        ("seed", Int),
        ("episodes", Int),
        ("jobs", Int),
        ("spec", Text),
        ("status", Text),
        ("pid", Int),
        ("finished_at", Text),
    ],
};
pub(crate) const EPISODES: Table = Table {
    name: "episodes",
    columns: &[
        ("id", Int),
        ("run_id", Text),
        ("idx", Int),
        ("seed", Int),
        ("outcome", Text),
        ("return", R),
        ("length", Int),
        ("success", Int),
        ("digest", Text),
        ("error", Text),
        ("task", Text),
        ("reset_info", Text),
        ("final_observation", Blob),
        ("parent_episode", Int),
        ("parent_frame", Int),
        ("edits", Text),
    ],
};
pub(crate) const FRAME_CHUNKS: Table = Table {
    name: "frame_chunks",
    columns: &[
        ("episode_id", Int),
        ("chunk", Int),
        ("first_step", Int),
        ("frames", Int),
        ("data", Blob),
        ("timings", Blob),
        ("block", Int),
        ("block_at", Int),
        ("data_len", Int),
        ("timings_len", Int),
    ],
};
pub(crate) const FRAME_BLOCKS: Table = Table {
    name: "frame_blocks",
    columns: &[("id", Int), ("data", Blob)],
};
pub(crate) const MEMORY_WRITES: Table = Table {
    name: "memory_writes",
    columns: &[
        ("episode_id", Int),
        ("seq", Int),
        ("step", Int),
        ("path", Text),
        ("value", Text),
    ],
};
pub(crate) const RUN_AGENT_MEMORY: Table = Table {
    name: "run_agent_memory",
    columns: &[("run_id", Text), ("path", Text), ("value", Text)],
};
pub(crate) const MODEL_CALLS: Table = Table {
    name: "model_calls",
    columns: &[
        ("episode_id", Int),
        ("step", Int),
        ("idx", Int),
        ("role", Text),
        ("endpoint", Text),
        ("outcome", Text),
        ("tokens_in", Int),
        ("tokens_out", Int),
        ("cost_usd", R),
        ("latency_ms", R),
        ("served", Text),
        ("data", Blob),
    ],
};
pub(crate) const MODEL_IMAGES: Table = Table {
    name: "model_images",
    columns: &[
        ("key", Blob),
        ("width", Int),
        ("height", Int),
        ("channels", Int),
        ("data", Blob),
    ],
};
pub(crate) const AGENT_MEMORY: Table = Table {
    name: "agent_memory",
    columns: &[("path", Text), ("value", Text), ("episode_id", Int)],
};
pub(crate) const USER_MEMORY: Table = Table {
    name: "user_memory",
    columns: &[("path", Text), ("value", Text)],
};
pub(crate) const TRAIN_METRICS: Table = Table {
    name: "train_metrics",
    columns: &[
        ("run_id", Text),
        ("update_no", Int),
        ("name", Text),
        ("value", R),
        ("time", R),
    ],
};
pub(crate) const TRAIN_STEPS: Table = Table {
    name: "train_steps",
    columns: &[
        ("episode_id", Int),
        ("step", Int),
        ("version", Int),
        ("log_prob", R),
        ("value", R),
        ("advantage", R),
        ("lag", Int),
    ],
};

/// Which rows of a table.
pub(crate) enum Filter<'a> {
    All,
    Eq(&'static str, Cell),
    In(&'static str, &'a [i64]),
}

/// One side of a copy: the few operations both stores offer.
pub(crate) trait Store {
    fn select(&mut self, table: &Table, filter: &Filter) -> Result<Vec<Vec<Cell>>, StoreError>;
    fn insert(&mut self, table: &Table, rows: &[Vec<Cell>]) -> Result<(), StoreError>;
    /// `n` new ids for rows of `table` (`episodes`, `frame_blocks`).
    fn reserve(&mut self, table: &Table, n: usize) -> Result<Vec<i64>, StoreError>;
    fn begin(&mut self) -> Result<(), StoreError>;
    fn commit(&mut self) -> Result<(), StoreError>;
    fn rollback(&mut self);
}

fn col(table: &Table, name: &str) -> usize {
    table
        .columns
        .iter()
        .position(|(c, _)| *c == name)
        .unwrap_or(usize::MAX)
}

fn int(c: &Cell) -> Option<i64> {
    match c {
        Cell::Int(i) => Some(*i),
        _ => None,
    }
}

/// What a copy did.
#[derive(Debug, Default, PartialEq)]
pub struct Copied {
    pub runs: Vec<String>,
    pub episodes: usize,
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
    dest.begin()?;
    match copy_runs(source.as_mut(), dest.as_mut(), run, to, false) {
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

/// Every run of `from` into the new SQLite file `to`, with the same ids
/// (episodes, frame blocks), so that a command reading `from` by episode id
/// reads the copy the same way: how the reading commands open a PostgreSQL
/// database.
pub fn mirror(from: &Location, to: &Path) -> Result<Copied, StoreError> {
    if to.exists() {
        return Err(StoreError::Open {
            path: to.to_path_buf(),
            message: "a mirror is made into a new file".into(),
        });
    }
    let mut source = open(from, false)?;
    let dest_at = Location::Sqlite(to.to_path_buf());
    let mut dest = open(&dest_at, true)?;
    dest.begin()?;
    match copy_runs(source.as_mut(), dest.as_mut(), None, &dest_at, true) {
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
        Location::Sqlite(path) => {
            if !write && !path.is_file() {
                return Err(StoreError::Open {
                    path: path.clone(),
                    message: "no such file".into(),
                });
            }
            let db = if write {
                Db::open(path)?
            } else {
                Db::open_read_only(path)?
            };
            Ok(Box::new(SqliteStore(db)))
        }
        Location::Postgres(url) => Ok(Box::new(Pg::connect(url, write)?)),
    }
}

fn copy_runs(
    source: &mut dyn Store,
    dest: &mut dyn Store,
    run: Option<&str>,
    to: &Location,
    keep_ids: bool,
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
    let episode_ids = copy_episodes(source, dest, episodes, keep_ids)?;
    let copied = Copied {
        runs: run_ids.clone(),
        episodes: episode_ids.len(),
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

/// Copies episodes (their `episodes` rows as `source` holds them) and
/// everything recorded for them: frames, blocks, memory writes, model calls
/// and training steps, with new ids at `dest` (a parent outside the copied
/// episodes has none there). The old ids and their new ones.
pub(crate) fn copy_episodes(
    source: &mut dyn Store,
    dest: &mut dyn Store,
    episodes: Vec<Vec<Cell>>,
    keep_ids: bool,
) -> Result<BTreeMap<i64, i64>, StoreError> {
    let fresh = if keep_ids {
        episodes.iter().filter_map(|r| int(&r[0])).collect()
    } else {
        dest.reserve(&EPISODES, episodes.len())?
    };
    let episode_ids: BTreeMap<i64, i64> = episodes
        .iter()
        .filter_map(|r| int(&r[0]))
        .zip(fresh)
        .collect();
    let remap = |c: &Cell| match int(c).and_then(|i| episode_ids.get(&i)) {
        Some(new) => Cell::Int(*new),
        None => Cell::Null,
    };
    let parent = col(&EPISODES, "parent_episode");
    let rows: Vec<Vec<Cell>> = episodes
        .into_iter()
        .map(|mut r| {
            r[0] = remap(&r[0]);
            r[parent] = remap(&r[parent]);
            r
        })
        .collect();
    dest.insert(&EPISODES, &rows)?;
    let old_ids: Vec<i64> = episode_ids.keys().copied().collect();
    // Frame chunks, and the blocks they point into.
    let chunks = source.select(&FRAME_CHUNKS, &Filter::In("episode_id", &old_ids))?;
    let block = col(&FRAME_CHUNKS, "block");
    let blocks: BTreeSet<i64> = chunks.iter().filter_map(|r| int(&r[block])).collect();
    let blocks: Vec<i64> = blocks.into_iter().collect();
    let mut block_rows = source.select(&FRAME_BLOCKS, &Filter::In("id", &blocks))?;
    let fresh = if keep_ids {
        block_rows.iter().filter_map(|r| int(&r[0])).collect()
    } else {
        dest.reserve(&FRAME_BLOCKS, block_rows.len())?
    };
    let mut block_ids = BTreeMap::new();
    for (r, new) in block_rows.iter_mut().zip(fresh) {
        if let Some(old) = int(&r[0]) {
            block_ids.insert(old, new);
            r[0] = Cell::Int(new);
        }
    }
    dest.insert(&FRAME_BLOCKS, &block_rows)?;
    let chunks: Vec<Vec<Cell>> = chunks
        .into_iter()
        .map(|mut r| {
            r[0] = remap(&r[0]);
            if let Some(old) = int(&r[block]) {
                r[block] = block_ids.get(&old).map_or(Cell::Null, |n| Cell::Int(*n));
            }
            r
        })
        .collect();
    dest.insert(&FRAME_CHUNKS, &chunks)?;
    for table in [&MEMORY_WRITES, &MODEL_CALLS, &TRAIN_STEPS] {
        let rows: Vec<Vec<Cell>> = source
            .select(table, &Filter::In("episode_id", &old_ids))?
            .into_iter()
            .map(|mut r| {
                r[0] = remap(&r[0]);
                r
            })
            .collect();
        dest.insert(table, &rows)?;
    }
    Ok(episode_ids)
}

/// A SQLite recording as one side of a copy.
struct SqliteStore(Db);

impl SqliteStore {
    fn exists(&self, table: &str) -> Result<bool, StoreError> {
        let n: i64 = self.0.conn.query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
            [table],
            |r| r.get(0),
        )?;
        Ok(n > 0)
    }
}

fn columns(table: &Table) -> String {
    table
        .columns
        .iter()
        .map(|(c, _)| format!("\"{c}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Store for SqliteStore {
    fn select(&mut self, table: &Table, filter: &Filter) -> Result<Vec<Vec<Cell>>, StoreError> {
        if !self.exists(table.name)? {
            return Ok(Vec::new());
        }
        let base = format!("SELECT {} FROM {}", columns(table), table.name);
        let read = |row: &rusqlite::Row| -> rusqlite::Result<Vec<Cell>> {
            let mut out = Vec::with_capacity(table.columns.len());
            for (i, (_, kind)) in table.columns.iter().enumerate() {
                use rusqlite::types::ValueRef;
                let v = row.get_ref(i)?;
                out.push(match (v, kind) {
                    (ValueRef::Null, _) => Cell::Null,
                    (_, Kind::Real) => Cell::Real(row.get::<_, Real>(i)?.0),
                    (ValueRef::Integer(n), _) => Cell::Int(n),
                    (ValueRef::Real(f), _) => Cell::Real(f),
                    (ValueRef::Text(t), _) => Cell::Text(String::from_utf8_lossy(t).into_owned()),
                    (ValueRef::Blob(b), _) => Cell::Blob(b.to_vec()),
                });
            }
            Ok(out)
        };
        let mut rows = Vec::new();
        match filter {
            Filter::All => {
                let mut st = self.0.conn.prepare(&base)?;
                for r in st.query_map([], read)? {
                    rows.push(r?);
                }
            }
            Filter::Eq(column, value) => {
                let mut st = self
                    .0
                    .conn
                    .prepare(&format!("{base} WHERE \"{column}\" = ?1"))?;
                let v = sql_value(value);
                for r in st.query_map([v], read)? {
                    rows.push(r?);
                }
            }
            Filter::In(column, ids) => {
                for part in ids.chunks(500) {
                    let list = part
                        .iter()
                        .map(i64::to_string)
                        .collect::<Vec<_>>()
                        .join(", ");
                    let mut st = self
                        .0
                        .conn
                        .prepare(&format!("{base} WHERE \"{column}\" IN ({list})"))?;
                    for r in st.query_map([], read)? {
                        rows.push(r?);
                    }
                }
            }
        }
        Ok(rows)
    }

    fn insert(&mut self, table: &Table, rows: &[Vec<Cell>]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        if !self.exists(table.name)? {
            crate::train_store::ensure_schema(&self.0.conn)?;
        }
        let marks = (1..=table.columns.len())
            .map(|i| format!("?{i}"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut st = self.0.conn.prepare(&format!(
            "INSERT INTO {} ({}) VALUES ({marks})",
            table.name,
            columns(table)
        ))?;
        for r in rows {
            // Floats through `Real`, so a NaN is stored as the store stores it.
            let values: Vec<Box<dyn rusqlite::ToSql>> = r
                .iter()
                .map(|c| -> Box<dyn rusqlite::ToSql> {
                    match c {
                        Cell::Real(f) => Box::new(Real(*f)),
                        other => Box::new(sql_value(other)),
                    }
                })
                .collect();
            st.execute(rusqlite::params_from_iter(values.iter()))?;
        }
        Ok(())
    }

    fn reserve(&mut self, table: &Table, n: usize) -> Result<Vec<i64>, StoreError> {
        // One writer at a time (the copy's transaction): after the largest.
        let max: Option<i64> = if self.exists(table.name)? {
            self.0
                .conn
                .query_row(&format!("SELECT MAX(id) FROM {}", table.name), [], |r| {
                    r.get(0)
                })?
        } else {
            None
        };
        let first = max.unwrap_or(0) + 1;
        Ok((first..first + n as i64).collect())
    }

    fn begin(&mut self) -> Result<(), StoreError> {
        self.0.conn.execute_batch("BEGIN IMMEDIATE")?;
        Ok(())
    }

    fn commit(&mut self) -> Result<(), StoreError> {
        self.0.conn.execute_batch("COMMIT")?;
        Ok(())
    }

    fn rollback(&mut self) {
        let _ = self.0.conn.execute_batch("ROLLBACK");
    }
}

fn sql_value(c: &Cell) -> rusqlite::types::Value {
    use rusqlite::types::Value;
    match c {
        Cell::Null => Value::Null,
        Cell::Int(i) => Value::Integer(*i),
        Cell::Real(f) => Value::Real(*f),
        Cell::Text(t) => Value::Text(t.clone()),
        Cell::Blob(b) => Value::Blob(b.clone()),
    }
}

/// Whether `path` names a PostgreSQL database rather than a file.
pub fn is_postgres(path: &Path) -> bool {
    matches!(
        Location::parse(&path.to_string_lossy()),
        Location::Postgres(_)
    )
}
