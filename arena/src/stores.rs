//! What both stores (a SQLite file, a PostgreSQL database) offer the code
//! that moves recordings between them (`copy`, and `pg`'s job queue): the
//! tables as lists of typed columns, a few operations on them (`Store`),
//! and the one function that moves episodes with everything recorded for
//! them. The SQLite side is here; the PostgreSQL side is `pg::Pg`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::store::{Db, Real, StoreError};

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

pub(crate) fn col(table: &Table, name: &str) -> usize {
    table
        .columns
        .iter()
        .position(|(c, _)| *c == name)
        .unwrap_or(usize::MAX)
}

pub(crate) fn int(c: &Cell) -> Option<i64> {
    match c {
        Cell::Int(i) => Some(*i),
        _ => None,
    }
}

/// What ids copied rows get at the destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ids {
    /// The destination's own new ids; a parent outside the copied episodes
    /// has none there.
    Fresh,
    /// The source's ids (a mirror into a new file).
    Keep,
    /// New ids, but a parent outside the copied episodes keeps its id: the
    /// source is a mirror of the destination, sending back what was added.
    FreshParentsKept,
}

/// Copies episodes (their `episodes` rows as `source` holds them) and
/// everything recorded for them: frames, blocks, memory writes, model calls
/// and training steps, with ids as `ids` says. The old ids and their new
/// ones.
pub(crate) fn copy_episodes(
    source: &mut dyn Store,
    dest: &mut dyn Store,
    episodes: Vec<Vec<Cell>>,
    ids: Ids,
) -> Result<BTreeMap<i64, i64>, StoreError> {
    let keep_ids = ids == Ids::Keep;
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
            r[parent] = match (int(&r[parent]), ids) {
                (Some(p), Ids::FreshParentsKept) if !episode_ids.contains_key(&p) => Cell::Int(p),
                _ => remap(&r[parent]),
            };
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

/// A table's columns, quoted, for SQL in either store.
pub(crate) fn columns(table: &Table) -> String {
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

/// A SQLite recording as a [`Store`]: read only unless `write` (then made
/// if missing).
pub(crate) fn sqlite(path: &Path, write: bool) -> Result<Box<dyn Store>, StoreError> {
    if !write && !path.is_file() {
        return Err(StoreError::Open {
            path: path.to_path_buf(),
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
