//! The recording: one SQLite file (WAL) holding runs, episodes, every frame
//! (in zstd-compressed chunks), execution-memory writes and the agent's
//! persistent memory. This module alone touches SQLite.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::model::{Frame, Observation, Timing};

pub const SCHEMA_VERSION: i64 = 1;

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
    Sql(#[from] rusqlite::Error),
    #[error("cannot decode recorded frames of episode {episode}: {message}")]
    Decode { episode: i64, message: String },
    #[error("no episode with id {0} in this database")]
    NoEpisode(i64),
    #[error("no run with id {0} in this database")]
    NoRun(String),
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
    PRIMARY KEY (episode_id, chunk)
) WITHOUT ROWID;
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
CREATE TABLE IF NOT EXISTS agent_memory (path TEXT PRIMARY KEY, value TEXT NOT NULL, episode_id INTEGER);
CREATE TABLE IF NOT EXISTS user_memory (path TEXT PRIMARY KEY, value TEXT NOT NULL);
"#;

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
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(corrupt)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(corrupt)?;
        conn.execute_batch(SCHEMA).map_err(corrupt)?;
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
        };
        db.mark_interrupted()?;
        Ok(db)
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
            return_: r.get(5)?,
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
        let mut stmt = self.conn.prepare_cached(
            "SELECT data, timings FROM frame_chunks WHERE episode_id = ?1 AND chunk = ?2",
        )?;
        let mut out = Vec::new();
        let found = stmt
            .query_row(params![episode, chunk], |r| {
                Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?))
            })
            .optional()?;
        if let Some((data, timings)) = found {
            decode_chunk(&data, &timings, &mut out)
                .map_err(|message| StoreError::Decode { episode, message })?;
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
        let mut stmt = self.conn.prepare(
            "SELECT data, timings FROM frame_chunks WHERE episode_id = ?1 ORDER BY chunk",
        )?;
        let mut rows = stmt.query([episode])?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let data: Vec<u8> = row.get(0)?;
            let timings: Vec<u8> = row.get(1)?;
            decode_chunk(&data, &timings, &mut out)
                .map_err(|message| StoreError::Decode { episode, message })?;
        }
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
        let raw = zstd::decode_all(&blob[..]).map_err(|e| StoreError::Decode {
            episode,
            message: e.to_string(),
        })?;
        postcard::from_bytes(&raw)
            .map(Some)
            .map_err(|e| StoreError::Decode {
                episode,
                message: e.to_string(),
            })
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

/// Appends the frames of one compressed chunk to `out`.
pub(crate) fn decode_chunk(
    data: &[u8],
    timings: &[u8],
    out: &mut Vec<(Frame, Timing)>,
) -> Result<(), String> {
    let raw = zstd::decode_all(data).map_err(|e| e.to_string())?;
    let raw_timings = zstd::decode_all(timings).map_err(|e| e.to_string())?;
    let (mut rest, mut rest_t) = (&raw[..], &raw_timings[..]);
    while !rest.is_empty() {
        let (frame, r): (Frame, &[u8]) =
            postcard::take_from_bytes(rest).map_err(|e| e.to_string())?;
        // Timings are informative: a missing or short record reads as zeros.
        let (timing, rt): (Timing, &[u8]) =
            postcard::take_from_bytes(rest_t).unwrap_or((Timing::default(), &[]));
        out.push((frame, timing));
        rest = r;
        rest_t = rt;
    }
    Ok(())
}
