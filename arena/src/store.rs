//! The recording: one SQLite file (WAL) holding runs, episodes, every frame
//! (in zstd-compressed chunks), execution-memory writes and the agent's
//! persistent memory. This module alone touches SQLite.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::codec::{FrameFields, decode_observation, decode_raw_fields, decompress};
use crate::model::{Frame, Observation, Timing};

pub const SCHEMA_VERSION: i64 = 2;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open database {path}: {message}")]
    Open { path: PathBuf, message: String },
    #[error("database {path} is not a ludus database (or is corrupt): {message}")]
    Corrupt { path: PathBuf, message: String },
    #[error(
        "database {path} was written by a newer ludus (schema {found}, this ludus reads {SCHEMA_VERSION}): upgrade ludus"
    )]
    NewerSchema { path: PathBuf, found: i64 },
    #[error("database error: {0}")]
    Sql(#[source] SqlError),
    #[error("cannot decode recorded frames of episode {episode}: {message}")]
    Decode { episode: i64, message: String },
    #[error("cannot encode frames of episode {episode} for the recording: {message}")]
    Encode { episode: i64, message: String },
    #[error("no episode with id {0} in this database")]
    NoEpisode(i64),
    #[error("no run with id {0} in this database")]
    NoRun(String),
}

/// A failed SQLite call: it shows the driver's message and passes on the
/// driver's own source, without making the driver part of this crate's API.
#[derive(Debug)]
pub struct SqlError(Box<dyn std::error::Error + Send + Sync>);

impl std::fmt::Display for SqlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for SqlError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> StoreError {
        StoreError::Sql(SqlError(Box::new(e)))
    }
}

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    created_at TEXT NOT NULL,
    seed INTEGER NOT NULL,
    episodes INTEGER NOT NULL,
    jobs INTEGER NOT NULL,
    spec TEXT NOT NULL,
    status TEXT NOT NULL,
    pid INTEGER NOT NULL,
    finished_at TEXT
);
CREATE TABLE IF NOT EXISTS episodes (
    id INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL REFERENCES runs(id),
    idx INTEGER NOT NULL,
    seed INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    return REAL NOT NULL DEFAULT 0,
    length INTEGER NOT NULL DEFAULT 0,
    success INTEGER NOT NULL DEFAULT 0,
    digest TEXT,
    error TEXT,
    task TEXT,
    reset_info TEXT,
    final_observation BLOB,
    parent_episode INTEGER,
    parent_frame INTEGER,
    edits TEXT,
    UNIQUE (run_id, idx)
);
CREATE TABLE IF NOT EXISTS frame_chunks (
    episode_id INTEGER NOT NULL,
    chunk INTEGER NOT NULL,
    first_step INTEGER NOT NULL,
    frames INTEGER NOT NULL,
    -- zstd(postcard Frame records back to back)
    data BLOB NOT NULL,
    -- zstd(postcard Timing records back to back)
    timings BLOB NOT NULL,
    -- A small chunk lives in a shared block instead (data and timings are
    -- then empty): its frames at block_at, data_len bytes, its timings right
    -- after them, timings_len bytes, in the block's decompressed bytes.
    block INTEGER,
    block_at INTEGER,
    data_len INTEGER,
    timings_len INTEGER,
    PRIMARY KEY (episode_id, chunk)
) WITHOUT ROWID;
-- zstd(the raw bytes of several small chunks, back to back): one zstd call
-- and one row for many short episodes instead of one each.
CREATE TABLE IF NOT EXISTS frame_blocks (id INTEGER PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS memory_writes (
    episode_id INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    step INTEGER NOT NULL,
    path TEXT NOT NULL,
    value TEXT,
    PRIMARY KEY (episode_id, seq)
) WITHOUT ROWID;
-- Memory at any frame is rebuilt from the last write of each path up to it.
CREATE INDEX IF NOT EXISTS memory_writes_by_path ON memory_writes (episode_id, path, step, seq);
CREATE TABLE IF NOT EXISTS run_agent_memory (
    run_id TEXT NOT NULL,
    path TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (run_id, path)
) WITHOUT ROWID;
-- Model calls, by the frame they were made in: the frame's bytes do not
-- hold them (the episode digest covers them). `data` is zstd(postcard) of
-- the whole call; the other columns are for queries.
CREATE TABLE IF NOT EXISTS model_calls (
    episode_id INTEGER NOT NULL,
    step INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    role TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    outcome TEXT NOT NULL,
    tokens_in INTEGER NOT NULL,
    tokens_out INTEGER NOT NULL,
    cost_usd REAL NOT NULL,
    latency_ms REAL NOT NULL,
    served TEXT NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (episode_id, step, idx)
) WITHOUT ROWID;
-- The images model calls carried as pixels, once each, by blake3 of their
-- size and pixels (a call's row keeps the key in place of the pixels).
CREATE TABLE IF NOT EXISTS model_images (
    key BLOB PRIMARY KEY,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    channels INTEGER NOT NULL,
    data BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS agent_memory (path TEXT PRIMARY KEY, value TEXT NOT NULL, episode_id INTEGER);
CREATE TABLE IF NOT EXISTS user_memory (path TEXT PRIMARY KEY, value TEXT NOT NULL);
"#;

/// The tables every ludus database has had since its first schema: one
/// that lacks any of them lost recorded data.
const CORE_TABLES: &[&str] = &["meta", "runs", "episodes", "frame_chunks"];
/// Tables added later: an older file lacks them and gains them when opened.
const LATER_TABLES: &[&str] = &[
    "frame_blocks",
    "memory_writes",
    "run_agent_memory",
    "agent_memory",
    "user_memory",
];

/// The file's tables, after checking that a ludus database holds all of
/// [`CORE_TABLES`] (an empty file is a new database and passes).
fn check_tables(conn: &Connection, path: &Path) -> Result<Vec<String>, StoreError> {
    let corrupt = |message: String| StoreError::Corrupt {
        path: path.to_path_buf(),
        message,
    };
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        .and_then(|mut st| {
            st.query_map([], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<String>>>()
        })
        .map_err(|e| corrupt(e.to_string()))?;
    if tables.is_empty() {
        return Ok(tables);
    }
    let missing: Vec<&str> = CORE_TABLES
        .iter()
        .copied()
        .filter(|t| !tables.iter().any(|x| x == t))
        .collect();
    if missing.len() == CORE_TABLES.len() {
        return Err(corrupt(format!(
            "it holds tables ({}) but none of a ludus recording's",
            tables.join(", ")
        )));
    }
    if !missing.is_empty() {
        return Err(corrupt(format!(
            "damaged: table{} `{}` missing; nothing was written to it (restore the file from a copy, or record into another --db)",
            if missing.len() > 1 { "s" } else { "" },
            missing.join("`, `")
        )));
    }
    Ok(tables)
}

/// A float in a REAL column, NaN included. SQLite has no NaN: binding one
/// stores NULL, which the schema refuses, so one NaN return used to fail the
/// commit of every episode beside it. NaN is stored as the text `NaN`
/// (SQLite keeps text that is not a number as text, even in a REAL
/// column); infinities are REAL values already.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Real(pub f64);

impl rusqlite::ToSql for Real {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, Value};
        Ok(if self.0.is_nan() {
            ToSqlOutput::Borrowed(rusqlite::types::ValueRef::Text(b"NaN"))
        } else {
            ToSqlOutput::Owned(Value::Real(self.0))
        })
    }
}

impl rusqlite::types::FromSql for Real {
    fn column_result(v: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Real> {
        use rusqlite::types::{FromSqlError, ValueRef};
        match v {
            ValueRef::Real(f) => Ok(Real(f)),
            ValueRef::Integer(i) => Ok(Real(i as f64)),
            ValueRef::Text(t) if t.eq_ignore_ascii_case(b"nan") => Ok(Real(f64::NAN)),
            ValueRef::Text(t) => std::str::from_utf8(t)
                .ok()
                .and_then(|t| t.trim().parse::<f64>().ok())
                .map(Real)
                .ok_or(FromSqlError::InvalidType),
            ValueRef::Null | ValueRef::Blob(_) => Err(FromSqlError::InvalidType),
        }
    }
}

/// A recorded run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunRow {
    pub id: String,
    pub created_at: String,
    pub seed: u64,
    pub episodes: u64,
    pub jobs: u64,
    /// The run's spec: plugins with paths, hashes and configs, and limits (JSON).
    pub spec: serde_json::Value,
    pub status: String,
}

/// A recorded episode (without its frames).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EpisodeRow {
    pub id: i64,
    pub run_id: String,
    pub index: u64,
    pub seed: u64,
    pub outcome: String,
    #[serde(rename = "return")]
    #[serde(with = "ludus_core::json_float")]
    pub return_: f64,
    pub length: u64,
    pub success: bool,
    pub digest: Option<String>,
    pub error: Option<String>,
    pub task: Option<String>,
    pub parent_episode: Option<i64>,
    pub parent_frame: Option<i64>,
    /// The environment's info at reset (JSON text).
    pub reset_info: Option<String>,
    /// For a branch: the edits made at `parent_frame` (JSON text).
    pub edits: Option<String>,
}

/// Where one compressed chunk of an episode's frames sits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkInfo {
    pub chunk: u32,
    pub first_step: u64,
    pub frames: u32,
}

/// A memory write as stored: the step it happened in (`step == length` for
/// writes made at episode end).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredWrite {
    pub step: u64,
    pub path: String,
    pub value: Option<String>,
}

/// An open database.
pub struct Db {
    pub(crate) conn: Connection,
    path: PathBuf,
    /// Whether the file has the `model_calls` table (a read-only file
    /// recorded before model calls existed has not).
    has_model_calls: bool,
}

pub(crate) fn now_rfc3339() -> String {
    // Seconds since the epoch in UTC, formatted without a date library.
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}Z")
}

fn pid_alive(pid: i64) -> bool {
    if pid == i64::from(std::process::id()) {
        return true;
    }
    if cfg!(target_os = "linux") {
        Path::new(&format!("/proc/{pid}")).exists()
    } else {
        // Without a cheap liveness check, trust the status.
        true
    }
}

impl Db {
    /// Opens (creating if needed) a ludus database, and marks the episodes of
    /// runs whose process died (e.g. SIGKILL) as `interrupted`.
    pub fn open(path: &Path) -> Result<Db, StoreError> {
        let open_err = |e: rusqlite::Error| StoreError::Open {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        let conn = Connection::open(path).map_err(open_err)?;
        let corrupt = |e: rusqlite::Error| StoreError::Corrupt {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(open_err)?;
        // A recording missing what it must hold is damaged: say so, and write
        // nothing (recreating the table would pass its loss off as an empty
        // recording).
        check_tables(&conn, path)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(corrupt)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(corrupt)?;
        conn.execute_batch(SCHEMA).map_err(corrupt)?;
        // Schema 1 had no blocks: its chunks all live in their own rows.
        let has_blocks: bool = conn
            .query_row(
                "SELECT COUNT(*) FROM pragma_table_info('frame_chunks') WHERE name = 'block'",
                [],
                |r| r.get::<_, i64>(0).map(|n| n > 0),
            )
            .map_err(corrupt)?;
        if !has_blocks {
            conn.execute_batch(
                "BEGIN; \
                 ALTER TABLE frame_chunks ADD COLUMN block INTEGER; \
                 ALTER TABLE frame_chunks ADD COLUMN block_at INTEGER; \
                 ALTER TABLE frame_chunks ADD COLUMN data_len INTEGER; \
                 ALTER TABLE frame_chunks ADD COLUMN timings_len INTEGER; \
                 UPDATE meta SET value = '2' WHERE key = 'schema_version' AND value = '1'; \
                 COMMIT;",
            )
            .map_err(corrupt)?;
        }
        let version: Option<String> = conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'schema_version'",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(corrupt)?;
        match version.as_deref().map(str::parse::<i64>) {
            None => {
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema_version', ?1)",
                    [SCHEMA_VERSION.to_string()],
                )
                .map_err(corrupt)?;
            }
            Some(Ok(v)) if v > SCHEMA_VERSION => {
                return Err(StoreError::NewerSchema {
                    path: path.to_path_buf(),
                    found: v,
                });
            }
            Some(Ok(_)) => {}
            Some(Err(_)) => {
                return Err(StoreError::Corrupt {
                    path: path.to_path_buf(),
                    message: "bad schema_version".into(),
                });
            }
        }
        let db = Db {
            conn,
            path: path.to_path_buf(),
            // `SCHEMA` made it if it was missing.
            has_model_calls: true,
        };
        db.mark_interrupted()?;
        Ok(db)
    }

    /// Opens an existing ludus database for reading only: nothing is
    /// created, migrated or marked, and a damaged or missing file is an
    /// error. What the read-only commands (`ludus debug`, `ludus diff`) use.
    /// A file an older ludus wrote, which lacks a later table or column,
    /// is brought up to date by [`Db::open`] instead, as any command would.
    pub fn open_read_only(path: &Path) -> Result<Db, StoreError> {
        use rusqlite::OpenFlags;
        let open_err = |e: rusqlite::Error| StoreError::Open {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        if !path.is_file() {
            return Err(StoreError::Open {
                path: path.to_path_buf(),
                message: "no such file".into(),
            });
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(open_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(open_err)?;
        let tables = check_tables(&conn, path)?;
        let current = LATER_TABLES.iter().all(|t| tables.iter().any(|x| x == t))
            && conn
                .query_row(
                    "SELECT COUNT(*) FROM pragma_table_info('frame_chunks') WHERE name = 'block'",
                    [],
                    |r| r.get::<_, i64>(0),
                )
                .map_err(|e| StoreError::Corrupt {
                    path: path.to_path_buf(),
                    message: e.to_string(),
                })?
                > 0;
        if !current {
            drop(conn);
            return Db::open(path);
        }
        let version: Option<String> = conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'schema_version'",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(open_err)?;
        match version.as_deref().map(str::parse::<i64>) {
            Some(Ok(v)) if v > SCHEMA_VERSION => Err(StoreError::NewerSchema {
                path: path.to_path_buf(),
                found: v,
            }),
            Some(Ok(_)) => Ok(Db {
                conn,
                path: path.to_path_buf(),
                has_model_calls: tables.iter().any(|t| t == "model_calls"),
            }),
            _ => Err(StoreError::Corrupt {
                path: path.to_path_buf(),
                message: "damaged: it has no schema version (table `meta`)".into(),
            }),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn mark_interrupted(&self) -> Result<(), StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, pid FROM runs WHERE status = 'running'")?;
        let dead: Vec<String> = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?
            .filter_map(Result::ok)
            .filter(|(_, pid)| !pid_alive(*pid))
            .map(|(id, _)| id)
            .collect();
        for run in dead {
            let tx = self.conn.unchecked_transaction()?;
            let n = tx.execute(
                "UPDATE episodes SET outcome = 'interrupted' WHERE run_id = ?1 AND outcome IN ('pending', 'running')",
                [&run],
            )?;
            tx.execute(
                "UPDATE runs SET status = 'interrupted', finished_at = ?2 WHERE id = ?1",
                params![run, now_rfc3339()],
            )?;
            tx.commit()?;
            tracing::warn!(
                "run {run} was interrupted (its process is gone): {n} episodes marked interrupted"
            );
        }
        Ok(())
    }

    pub fn runs(&self) -> Result<Vec<RunRow>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT id, created_at, seed, episodes, jobs, spec, status FROM runs ORDER BY created_at, rowid",
        )?;
        let rows = stmt.query_map([], |r| {
            let spec: String = r.get(5)?;
            Ok(RunRow {
                id: r.get(0)?,
                created_at: r.get(1)?,
                seed: r.get::<_, i64>(2)? as u64,
                episodes: r.get::<_, i64>(3)? as u64,
                jobs: r.get::<_, i64>(4)? as u64,
                spec: serde_json::from_str(&spec).unwrap_or(serde_json::Value::Null),
                status: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    const EPISODE_COLUMNS: &'static str = "id, run_id, idx, seed, outcome, return, length, success, digest, error, task, parent_episode, parent_frame, reset_info, edits";

    fn episode_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<EpisodeRow> {
        Ok(EpisodeRow {
            id: r.get(0)?,
            run_id: r.get(1)?,
            index: r.get::<_, i64>(2)? as u64,
            seed: r.get::<_, i64>(3)? as u64,
            outcome: r.get(4)?,
            return_: r.get::<_, Real>(5)?.0,
            length: r.get::<_, i64>(6)? as u64,
            success: r.get::<_, i64>(7)? != 0,
            digest: r.get(8)?,
            error: r.get(9)?,
            task: r.get(10)?,
            parent_episode: r.get(11)?,
            parent_frame: r.get(12)?,
            reset_info: r.get(13)?,
            edits: r.get(14)?,
        })
    }

    pub fn episodes(&self, run_id: &str) -> Result<Vec<EpisodeRow>, StoreError> {
        let sql = format!(
            "SELECT {} FROM episodes WHERE run_id = ?1 ORDER BY idx",
            Self::EPISODE_COLUMNS
        );
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt.query_map([run_id], Self::episode_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn episode(&self, id: i64) -> Result<EpisodeRow, StoreError> {
        let sql = format!(
            "SELECT {} FROM episodes WHERE id = ?1",
            Self::EPISODE_COLUMNS
        );
        self.conn
            .query_row(&sql, [id], Self::episode_row)
            .optional()?
            .ok_or(StoreError::NoEpisode(id))
    }

    pub fn run(&self, id: &str) -> Result<RunRow, StoreError> {
        self.runs()?
            .into_iter()
            .find(|r| r.id == id)
            .ok_or_else(|| StoreError::NoRun(id.to_string()))
    }

    /// Episodes that branch from `episode` (forks and re-runs), oldest first.
    pub fn branches(&self, episode: i64) -> Result<Vec<EpisodeRow>, StoreError> {
        let sql = format!(
            "SELECT {} FROM episodes WHERE parent_episode = ?1 ORDER BY id",
            Self::EPISODE_COLUMNS
        );
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt.query_map([episode], Self::episode_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Replaces the edits recorded for an episode (a branch or a live episode).
    pub fn set_episode_edits(&self, episode: i64, edits: &str) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE episodes SET edits = ?2 WHERE id = ?1",
            params![episode, edits],
        )?;
        Ok(())
    }

    /// Where each chunk of an episode's frames is, in order.
    pub fn chunk_index(&self, episode: i64) -> Result<Vec<ChunkInfo>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT chunk, first_step, frames FROM frame_chunks WHERE episode_id = ?1 ORDER BY chunk",
        )?;
        let rows = stmt.query_map([episode], |r| {
            Ok(ChunkInfo {
                chunk: r.get(0)?,
                first_step: r.get::<_, i64>(1)? as u64,
                frames: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The frames of one chunk, with their timings.
    pub fn chunk_frames(
        &self,
        episode: i64,
        chunk: u32,
    ) -> Result<Vec<(Frame, Timing)>, StoreError> {
        self.chunk_frames_with(episode, chunk, FrameFields::ALL)
    }

    /// The frames of one chunk with only `fields` decoded (the rest empty).
    pub fn chunk_frames_with(
        &self,
        episode: i64,
        chunk: u32,
        fields: FrameFields,
    ) -> Result<Vec<(Frame, Timing)>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {CHUNK_COLUMNS} FROM frame_chunks WHERE episode_id = ?1 AND chunk = ?2"
        ))?;
        let mut out = Vec::new();
        let found = stmt
            .query_row(params![episode, chunk], StoredChunk::from_row)
            .optional()?;
        if let Some(stored) = found {
            let (data, timings) = Blocks::default().raw(&self.conn, episode, stored)?;
            decode_raw_fields(&data, &timings, fields, &mut out)
                .map_err(|message| StoreError::Decode { episode, message })?;
        }
        if fields.model_calls {
            self.attach_model_calls(episode, &mut out)?;
        }
        Ok(out)
    }

    /// Fills in the model calls of `frames` (consecutive frames of `episode`).
    fn attach_model_calls(
        &self,
        episode: i64,
        frames: &mut [(Frame, Timing)],
    ) -> Result<(), StoreError> {
        let (Some(first), Some(last)) = (frames.first(), frames.last()) else {
            return Ok(());
        };
        let (first, last) = (u64::from(first.0.step), u64::from(last.0.step));
        for (step, call) in self.model_calls(episode, first..=last)? {
            if let Some(f) = frames.get_mut(step.saturating_sub(first) as usize)
                && u64::from(f.0.step) == step
            {
                f.0.model_calls.push(call);
            }
        }
        Ok(())
    }

    /// An image a model call carried, by its key.
    fn model_image(&self, key: &[u8]) -> Result<Option<crate::model::Image>, String> {
        let row: Option<(u32, u32, u32, Vec<u8>)> = self
            .conn
            .prepare_cached("SELECT width, height, channels, data FROM model_images WHERE key = ?1")
            .and_then(|mut st| {
                st.query_row([key], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                    .optional()
            })
            .map_err(|e| e.to_string())?;
        let Some((width, height, channels, data)) = row else {
            return Ok(None);
        };
        Ok(Some(crate::model::Image {
            width,
            height,
            channels,
            pixels: crate::codec::decompress(&data)?,
        }))
    }

    /// The model calls of `episode`'s frames in `steps`, in order, with
    /// their frame's step. None in a file recorded before model calls existed.
    pub fn model_calls(
        &self,
        episode: i64,
        steps: std::ops::RangeInclusive<u64>,
    ) -> Result<Vec<(u64, crate::chat::ModelCall)>, StoreError> {
        if !self.has_model_calls {
            return Ok(Vec::new());
        }
        let mut stmt = self.conn.prepare_cached(
            "SELECT step, data FROM model_calls WHERE episode_id = ?1 AND step BETWEEN ?2 AND ?3 ORDER BY step, idx",
        )?;
        let rows = stmt.query_map(
            params![
                episode,
                *steps.start() as i64,
                (*steps.end()).min(i64::MAX as u64) as i64
            ],
            |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, Vec<u8>>(1)?)),
        )?;
        let mut out = Vec::new();
        for row in rows {
            let (step, data) = row?;
            let mut call = crate::codec::decode_call(&data)
                .map_err(|message| StoreError::Decode { episode, message })?;
            crate::codec::join_images(&mut call, |key| self.model_image(key))
                .map_err(|message| StoreError::Decode { episode, message })?;
            out.push((step, call));
        }
        Ok(out)
    }

    /// The memory an episode started from: `/agent` as its run saw it when it
    /// started, and `/user` as it was then (the current `/user` for runs
    /// recorded before snapshots existed).
    pub fn episode_base_memory(
        &self,
        episode: &EpisodeRow,
    ) -> Result<crate::memory::MemoryBase, StoreError> {
        let run = self.run(&episode.run_id)?;
        let user = match run.spec.get("user_memory").and_then(|v| v.as_object()) {
            Some(m) => m
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect(),
            None => self.user_memory()?,
        };
        Ok(crate::memory::MemoryBase {
            agent: std::sync::Arc::new(self.run_agent_memory(&episode.run_id)?),
            user: std::sync::Arc::new(user),
        })
    }

    /// Every path the episode's frames wrote (or deleted), sorted. Walks the
    /// path index one distinct path at a time, so it costs the number of
    /// paths, not of writes.
    pub fn written_paths(&self, episode: i64) -> Result<Vec<String>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "WITH RECURSIVE p(path) AS ( \
                SELECT MIN(path) FROM memory_writes WHERE episode_id = ?1 \
                UNION ALL \
                SELECT (SELECT MIN(path) FROM memory_writes WHERE episode_id = ?1 AND path > p.path) \
                FROM p WHERE p.path IS NOT NULL) \
             SELECT path FROM p WHERE path IS NOT NULL",
        )?;
        let rows = stmt.query_map([episode], |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The last write of each path at or before `through_step` (`None` when
    /// it was deleted), for the given paths: with the base memory, the whole
    /// memory as it was after that frame.
    pub fn last_writes(
        &self,
        episode: i64,
        paths: &[String],
        through_step: u64,
    ) -> Result<Vec<(String, Option<String>)>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT value FROM memory_writes WHERE episode_id = ?1 AND path = ?2 AND step <= ?3 \
             ORDER BY step DESC, seq DESC LIMIT 1",
        )?;
        let mut out = Vec::new();
        for path in paths {
            let found: Option<Option<String>> = stmt
                .query_row(params![episode, path, through_step as i64], |r| r.get(0))
                .optional()?;
            if let Some(value) = found {
                out.push((path.clone(), value));
            }
        }
        Ok(out)
    }

    /// Every recorded frame of an episode, in order, with its timings.
    pub fn frames(&self, episode: i64) -> Result<Vec<(Frame, Timing)>, StoreError> {
        let mut out = Vec::new();
        for_each_raw_chunk(&self.conn, episode, |data, timings| {
            decode_raw_fields(data, timings, FrameFields::ALL, &mut out)
                .map_err(|message| StoreError::Decode { episode, message })
        })?;
        self.attach_model_calls(episode, &mut out)?;
        Ok(out)
    }

    /// The observation after the last frame (none for crashed episodes that
    /// never produced one).
    pub fn final_observation(&self, episode: i64) -> Result<Option<Observation>, StoreError> {
        let blob: Option<Vec<u8>> = self
            .conn
            .query_row(
                "SELECT final_observation FROM episodes WHERE id = ?1",
                [episode],
                |r| r.get(0),
            )
            .optional()?
            .flatten();
        let Some(blob) = blob else { return Ok(None) };
        let bad = |message: String| StoreError::Decode { episode, message };
        let raw = decompress(&blob).map_err(bad)?;
        decode_observation(&raw).map(Some).map_err(bad)
    }

    pub fn memory_writes(&self, episode: i64) -> Result<Vec<StoredWrite>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT step, path, value FROM memory_writes WHERE episode_id = ?1 ORDER BY seq",
        )?;
        let rows = stmt.query_map([episode], |r| {
            Ok(StoredWrite {
                step: r.get::<_, i64>(0)? as u64,
                path: r.get(1)?,
                value: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The stored, persistent `/agent/...` memory.
    pub fn agent_memory(&self) -> Result<BTreeMap<String, String>, StoreError> {
        self.map("SELECT path, value FROM agent_memory", [])
    }

    /// `/agent/...` as a run's episodes saw it when the run started.
    pub fn run_agent_memory(&self, run_id: &str) -> Result<BTreeMap<String, String>, StoreError> {
        self.map(
            "SELECT path, value FROM run_agent_memory WHERE run_id = ?1",
            [run_id],
        )
    }

    /// The user's `/user/...` memory.
    pub fn user_memory(&self) -> Result<BTreeMap<String, String>, StoreError> {
        self.map("SELECT path, value FROM user_memory", [])
    }

    pub fn set_user_memory(&self, path: &str, value: Option<&str>) -> Result<(), StoreError> {
        match value {
            Some(v) => self.conn.execute(
                "INSERT INTO user_memory (path, value) VALUES (?1, ?2) ON CONFLICT(path) DO UPDATE SET value = ?2",
                params![path, v],
            )?,
            None => self.conn.execute("DELETE FROM user_memory WHERE path = ?1", [path])?,
        };
        Ok(())
    }

    fn map<P: rusqlite::Params>(
        &self,
        sql: &str,
        p: P,
    ) -> Result<BTreeMap<String, String>, StoreError> {
        let mut stmt = self.conn.prepare(sql)?;
        let rows = stmt.query_map(p, |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// The columns [`StoredChunk::from_row`] reads, in its order.
pub(crate) const CHUNK_COLUMNS: &str = "data, timings, block, block_at, data_len, timings_len";

/// A chunk as its row stores it: compressed in the row, or raw in a block.
pub(crate) enum StoredChunk {
    Own {
        data: Vec<u8>,
        timings: Vec<u8>,
    },
    InBlock {
        block: i64,
        at: usize,
        data_len: usize,
        timings_len: usize,
    },
}

impl StoredChunk {
    /// Reads [`CHUNK_COLUMNS`].
    pub(crate) fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredChunk> {
        match r.get::<_, Option<i64>>(2)? {
            None => Ok(StoredChunk::Own {
                data: r.get(0)?,
                timings: r.get(1)?,
            }),
            Some(block) => {
                let size = |i: usize| r.get::<_, i64>(i).map(|v| v.max(0) as usize);
                Ok(StoredChunk::InBlock {
                    block,
                    at: size(3)?,
                    data_len: size(4)?,
                    timings_len: size(5)?,
                })
            }
        }
    }
}

/// Decompressed frame blocks, the last one kept: an episode's small chunks
/// sit in one block or in consecutive ones.
#[derive(Default)]
pub(crate) struct Blocks {
    last: Option<(i64, Vec<u8>)>,
}

impl Blocks {
    /// The raw frame bytes and timing bytes of `chunk`, one of `episode`'s.
    pub(crate) fn raw(
        &mut self,
        conn: &Connection,
        episode: i64,
        chunk: StoredChunk,
    ) -> Result<(Vec<u8>, Vec<u8>), StoreError> {
        let bad = |message: String| StoreError::Decode { episode, message };
        match chunk {
            StoredChunk::Own { data, timings } => Ok((
                decompress(&data).map_err(bad)?,
                decompress(&timings).map_err(bad)?,
            )),
            StoredChunk::InBlock {
                block,
                at,
                data_len,
                timings_len,
            } => {
                if self.last.as_ref().map(|(id, _)| *id) != Some(block) {
                    let compressed: Option<Vec<u8>> = conn
                        .prepare_cached("SELECT data FROM frame_blocks WHERE id = ?1")?
                        .query_row([block], |r| r.get(0))
                        .optional()?;
                    let compressed =
                        compressed.ok_or_else(|| bad(format!("frame block {block} is missing")))?;
                    self.last = Some((block, decompress(&compressed).map_err(bad)?));
                }
                let raw = self.last.as_ref().map_or(&[][..], |(_, raw)| &raw[..]);
                let end = at
                    .checked_add(data_len)
                    .and_then(|e| e.checked_add(timings_len))
                    .filter(|&e| e <= raw.len())
                    .ok_or_else(|| {
                        bad(format!(
                            "a chunk runs past the end of frame block {block} ({} bytes)",
                            raw.len()
                        ))
                    })?;
                let (data, timings) = raw[at..end].split_at(data_len);
                Ok((data.to_vec(), timings.to_vec()))
            }
        }
    }
}

/// Calls `f` with the raw frame and timing bytes of each of `episode`'s
/// chunks, in order.
pub(crate) fn for_each_raw_chunk(
    conn: &Connection,
    episode: i64,
    mut f: impl FnMut(&[u8], &[u8]) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {CHUNK_COLUMNS} FROM frame_chunks WHERE episode_id = ?1 ORDER BY chunk"
    ))?;
    let mut rows = stmt.query([episode])?;
    let mut blocks = Blocks::default();
    while let Some(row) = rows.next()? {
        let (data, timings) = blocks.raw(conn, episode, StoredChunk::from_row(row)?)?;
        f(&data, &timings)?;
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::{
        Action, Element, Image, Level, LogLine, MemoryWrite, Part, Rect, Role, Value,
    };

    /// A database written by schema 1 (chunks in their own rows only) opens,
    /// gains the block columns, and reads its frames as before.
    #[test]
    fn a_schema_1_database_opens_and_reads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v1.db");
        let frames = [(frame(0), Timing::default()), (frame(1), Timing::default())];
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE frame_chunks (
                    episode_id INTEGER NOT NULL,
                    chunk INTEGER NOT NULL,
                    first_step INTEGER NOT NULL,
                    frames INTEGER NOT NULL,
                    data BLOB NOT NULL,
                    timings BLOB NOT NULL,
                    PRIMARY KEY (episode_id, chunk)
                ) WITHOUT ROWID;",
            )
            .unwrap();
            let old_schema = SCHEMA
                .split("CREATE TABLE IF NOT EXISTS frame_blocks")
                .next();
            conn.execute_batch(old_schema.unwrap()).unwrap();
            conn.execute_batch(
                "INSERT INTO meta (key, value) VALUES ('schema_version', '1');
                 INSERT INTO runs (id, created_at, seed, episodes, jobs, spec, status, pid)
                     VALUES ('old', 'then', 1, 1, 1, '{}', 'finished', 1);
                 INSERT INTO episodes (id, run_id, idx, seed, outcome) VALUES (5, 'old', 0, 1, 'terminated');",
            )
            .unwrap();
            let mut data = Vec::new();
            let mut timings = Vec::new();
            for (f, t) in &frames {
                data.extend(postcard::to_allocvec(f).unwrap());
                timings.extend(postcard::to_allocvec(t).unwrap());
            }
            conn.execute(
                "INSERT INTO frame_chunks VALUES (5, 0, 0, 2, ?1, ?2)",
                params![
                    zstd::encode_all(&data[..], 1).unwrap(),
                    zstd::encode_all(&timings[..], 1).unwrap()
                ],
            )
            .unwrap();
        }
        let db = Db::open(&path).unwrap();
        assert_eq!(db.frames(5).unwrap(), frames);
        let version: String = db
            .conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'schema_version'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION.to_string());
        drop(db);
        // Opening again finds the columns already there.
        assert_eq!(Db::open(&path).unwrap().frames(5).unwrap(), frames);
    }

    pub(crate) fn frame(step: u32) -> Frame {
        let element = |id: u32| Element {
            id,
            parent: id.checked_sub(1),
            role: "button".into(),
            name: format!("b{id}"),
            value: "ok".into(),
            bounds: Rect {
                x: -3,
                y: 4,
                width: 5,
                height: 6,
            },
            focused: id == 1,
            checked: Some(true),
            disabled: false,
        };
        Frame {
            step,
            observation: vec![
                Part {
                    name: "v".into(),
                    value: Value::Vector(vec![1.5, -2.0, f32::MAX]),
                },
                Part {
                    name: "d".into(),
                    value: Value::Discrete(7),
                },
                Part {
                    name: "img".into(),
                    value: Value::Image(Image {
                        width: 2,
                        height: 2,
                        channels: 1,
                        pixels: vec![0, 255, 3, 4],
                    }),
                },
                Part {
                    name: "txt".into(),
                    value: Value::Text("héllo\nworld".into()),
                },
                Part {
                    name: "tree".into(),
                    value: Value::Tree(vec![element(0), element(1)]),
                },
            ],
            action: Action::TypeText("typed".into()),
            env_reward: 0.25,
            reward: -1.0,
            terminated: step.is_multiple_of(2),
            truncated: false,
            info: r#"{"success":true}"#.into(),
            success: Some(false),
            note: Some("a note".into()),
            logs: vec![LogLine {
                role: Role::Agent,
                level: Level::Warn,
                message: format!("log {step}"),
            }],
            memory_writes: vec![
                MemoryWrite {
                    path: "/episode/a".into(),
                    value: Some("1".into()),
                },
                MemoryWrite {
                    path: "/episode/b".into(),
                    value: None,
                },
            ],
            model_calls: Vec::new(),
        }
    }
}
