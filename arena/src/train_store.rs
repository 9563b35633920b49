//! What a training run records: its metrics as they are produced
//! (`train_metrics`), every sampled episode (an `episodes` row and its frames in
//! `frame_chunks`, the same format `ludus run` writes, so the debugger reads
//! them alike) and, per step, the behaviour policy's log-probability and value,
//! the advantage the learner computed and the policy lag (`train_steps`).
//! A thread owns the connection and commits in batches, so the trainer never
//! waits on disk. Part of the storage layer: only this module, `store` and
//! `recorder` open SQLite.

use std::collections::HashMap;
use std::path::Path;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::model::{Frame, Observation, Timing};
use crate::store::{Db, StoreError, now_rfc3339};

const TRAIN_SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS train_metrics (
    run_id TEXT NOT NULL,
    update_no INTEGER NOT NULL,
    name TEXT NOT NULL,
    value REAL NOT NULL,
    -- seconds since the Unix epoch
    time REAL NOT NULL,
    PRIMARY KEY (run_id, update_no, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS train_steps (
    episode_id INTEGER NOT NULL,
    step INTEGER NOT NULL,
    -- the policy version that chose the action
    version INTEGER NOT NULL,
    log_prob REAL NOT NULL,
    value REAL NOT NULL,
    -- NULL when the learner dropped the step (older than the lag bound)
    advantage REAL,
    -- learner version minus `version` when the step was trained on
    lag INTEGER NOT NULL,
    PRIMARY KEY (episode_id, step)
) WITHOUT ROWID;
"#;

/// Longest time between commits.
const COMMIT_EVERY: Duration = Duration::from_millis(200);

/// Per-step training data recorded next to a frame.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepStat {
    pub version: u64,
    pub log_prob: f32,
    pub value: f32,
    /// `None` when the step was dropped for being older than the lag bound.
    pub advantage: Option<f32>,
    pub lag: u64,
}

/// How a sampled episode ended.
#[derive(Clone, Debug, PartialEq)]
pub struct EpisodeEndRecord {
    /// `terminated`, `truncated` or `crashed`.
    pub outcome: ludus_core::Outcome,
    pub return_: f64,
    pub length: u64,
    pub success: bool,
    pub error: Option<String>,
    pub final_observation: Option<Observation>,
}

/// A contiguous piece of one sampled episode.
#[derive(Clone, Debug)]
pub struct SegmentRecord {
    /// The episode's index within the training run (unique, assigned by the trainer).
    pub episode_index: u64,
    pub seed: u64,
    pub task: String,
    pub first_step: u64,
    pub frames: Vec<Frame>,
    /// Wall-clock nanoseconds the env spent in each frame's step.
    pub step_ns: Vec<u64>,
    pub stats: Vec<StepStat>,
    pub end: Option<EpisodeEndRecord>,
}

/// Where a resumed run picks up: rows recorded after the checkpoint are removed.
#[derive(Clone, Debug, Default)]
pub struct ResumePoint {
    /// The last update whose metrics stay.
    pub update: u64,
    /// Episodes with this index or higher are removed.
    pub next_episode: u64,
    /// Episodes in progress at the checkpoint: (index, steps that stay).
    pub open: Vec<(u64, u64)>,
}

pub enum TrainMsg {
    Metrics {
        update: u64,
        values: Vec<(String, f64)>,
    },
    Segment(Box<SegmentRecord>),
    /// Commit everything before this message, then answer on the channel.
    Flush(Sender<()>),
}

/// A stored metric.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricRow {
    pub update: u64,
    pub name: String,
    pub value: f64,
    pub time: f64,
}

/// A stored per-step record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredStep {
    pub step: u64,
    pub stat: StepStat,
}

/// The training run's recorder thread.
pub struct TrainRecorder {
    tx: Option<Sender<TrainMsg>>,
    handle: Option<JoinHandle<Result<(), StoreError>>>,
}

fn ensure_schema(conn: &Connection) -> Result<(), StoreError> {
    conn.execute_batch(TRAIN_SCHEMA)?;
    Ok(())
}

fn unix_time() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl TrainRecorder {
    /// Creates the run (or, with `resume`, reopens it and removes what was
    /// recorded after the checkpoint) and starts the recording thread.
    pub fn start(
        db_path: &Path,
        run_id: &str,
        seed: u64,
        spec: &serde_json::Value,
        resume: Option<&ResumePoint>,
    ) -> Result<TrainRecorder, StoreError> {
        let db = Db::open(db_path)?;
        ensure_schema(&db.conn)?;
        let tx = db.conn.unchecked_transaction()?;
        let exists: Option<String> = tx
            .query_row("SELECT id FROM runs WHERE id = ?1", [run_id], |r| r.get(0))
            .optional()?;
        match (exists, resume) {
            (None, _) => {
                tx.execute(
                    "INSERT INTO runs (id, created_at, seed, episodes, jobs, spec, status, pid) VALUES (?1, ?2, ?3, 0, 1, ?4, 'running', ?5)",
                    params![run_id, now_rfc3339(), seed as i64, spec.to_string(), std::process::id()],
                )?;
            }
            (Some(_), None) => {
                return Err(StoreError::Open {
                    path: db_path.to_path_buf(),
                    message: format!(
                        "it already holds a run `{run_id}`: pass --resume to continue it, or use another --db"
                    ),
                });
            }
            (Some(_), Some(point)) => {
                tx.execute(
                    "UPDATE runs SET status = 'running', pid = ?2, finished_at = NULL WHERE id = ?1",
                    params![run_id, std::process::id()],
                )?;
                tx.execute(
                    "DELETE FROM train_metrics WHERE run_id = ?1 AND update_no > ?2",
                    params![run_id, point.update as i64],
                )?;
                let late = "SELECT id FROM episodes WHERE run_id = ?1 AND idx >= ?2";
                for table in ["frame_chunks", "train_steps", "memory_writes"] {
                    tx.execute(
                        &format!("DELETE FROM {table} WHERE episode_id IN ({late})"),
                        params![run_id, point.next_episode as i64],
                    )?;
                }
                tx.execute(
                    "DELETE FROM episodes WHERE run_id = ?1 AND idx >= ?2",
                    params![run_id, point.next_episode as i64],
                )?;
                for &(index, steps) in &point.open {
                    let id: Option<i64> = tx
                        .query_row(
                            "SELECT id FROM episodes WHERE run_id = ?1 AND idx = ?2",
                            params![run_id, index as i64],
                            |r| r.get(0),
                        )
                        .optional()?;
                    let Some(id) = id else { continue };
                    tx.execute(
                        "DELETE FROM frame_chunks WHERE episode_id = ?1 AND first_step >= ?2",
                        params![id, steps as i64],
                    )?;
                    tx.execute(
                        "DELETE FROM train_steps WHERE episode_id = ?1 AND step >= ?2",
                        params![id, steps as i64],
                    )?;
                    tx.execute(
                        "UPDATE episodes SET outcome = 'running', length = ?2 WHERE id = ?1",
                        params![id, steps as i64],
                    )?;
                }
            }
        }
        tx.commit()?;
        let (sender, receiver) = crossbeam_channel::bounded(4096);
        let run = run_id.to_string();
        let handle = std::thread::Builder::new()
            .name("ludus-train-recorder".into())
            .spawn(move || record(db, &run, receiver))
            .map_err(|e| StoreError::Open {
                path: db_path.to_path_buf(),
                message: format!("cannot start the recorder thread: {e}"),
            })?;
        Ok(TrainRecorder {
            tx: Some(sender),
            handle: Some(handle),
        })
    }

    /// Queues a message; returns false when the recorder thread has stopped
    /// (its error comes back from [`TrainRecorder::finish`]).
    pub fn send(&self, msg: TrainMsg) -> bool {
        self.tx.as_ref().is_some_and(|tx| tx.send(msg).is_ok())
    }

    /// Waits until everything sent so far is committed (e.g. before a
    /// checkpoint, so a resumed run finds what the checkpoint counts on).
    pub fn flush(&self) -> bool {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.send(TrainMsg::Flush(tx)) && rx.recv().is_ok()
    }

    /// Commits everything queued.
    pub fn finish(mut self) -> Result<(), StoreError> {
        drop(self.tx.take());
        let result = match self.handle.take().map(JoinHandle::join) {
            Some(Ok(r)) => r,
            _ => Err(StoreError::Open {
                path: Default::default(),
                message: "the train recorder thread panicked".into(),
            }),
        };
        result?;
        Ok(())
    }

    /// Like [`TrainRecorder::finish`], then marks the run with `status` in `db_path`.
    pub fn finish_run(self, db_path: &Path, run_id: &str, status: &str) -> Result<(), StoreError> {
        self.finish()?;
        let db = Db::open(db_path)?;
        // Episodes still in progress when training stopped.
        db.conn.execute(
            "UPDATE episodes SET outcome = 'interrupted' WHERE run_id = ?1 AND outcome = 'running'",
            [run_id],
        )?;
        db.conn.execute(
            "UPDATE runs SET status = ?2, finished_at = ?3, episodes = (SELECT COUNT(*) FROM episodes WHERE run_id = ?1) WHERE id = ?1",
            params![run_id, status, now_rfc3339()],
        )?;
        Ok(())
    }
}

impl Drop for TrainRecorder {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

struct Open {
    id: i64,
    next_chunk: i64,
}

fn record(db: Db, run_id: &str, rx: Receiver<TrainMsg>) -> Result<(), StoreError> {
    let mut open: HashMap<u64, Open> = HashMap::new();
    let mut zstd = zstd::bulk::Compressor::new(1).map_err(|e| StoreError::Open {
        path: db.path().to_path_buf(),
        message: format!("zstd: {e}"),
    })?;
    // Block for the first message, then take what is queued for up to a commit interval.
    while let Ok(first) = rx.recv() {
        let started = Instant::now();
        let tx = db.conn.unchecked_transaction()?;
        let mut msg = Some(first);
        let mut flushed = None;
        while let Some(m) = msg.take() {
            match m {
                TrainMsg::Flush(ack) => {
                    flushed = Some(ack);
                    break;
                }
                TrainMsg::Metrics { update, values } => {
                    let mut ins = tx.prepare_cached(
                        "INSERT OR REPLACE INTO train_metrics (run_id, update_no, name, value, time) VALUES (?1, ?2, ?3, ?4, ?5)",
                    )?;
                    let t = unix_time();
                    for (name, value) in values {
                        ins.execute(params![run_id, update as i64, name, value, t])?;
                    }
                }
                TrainMsg::Segment(seg) => write_segment(&tx, run_id, &mut open, &mut zstd, *seg)?,
            }
            if started.elapsed() < COMMIT_EVERY {
                msg = rx.try_recv().ok();
            }
        }
        tx.commit()?;
        if let Some(ack) = flushed {
            let _ = ack.send(());
        }
    }
    Ok(())
}

fn write_segment(
    tx: &rusqlite::Transaction<'_>,
    run_id: &str,
    open: &mut HashMap<u64, Open>,
    zstd: &mut zstd::bulk::Compressor<'_>,
    seg: SegmentRecord,
) -> Result<(), StoreError> {
    let ep = match open.get_mut(&seg.episode_index) {
        Some(ep) => ep,
        None => {
            let existing: Option<i64> = tx
                .query_row(
                    "SELECT id FROM episodes WHERE run_id = ?1 AND idx = ?2",
                    params![run_id, seg.episode_index as i64],
                    |r| r.get(0),
                )
                .optional()?;
            let id = match existing {
                Some(id) => id,
                None => {
                    tx.execute(
                        "INSERT INTO episodes (run_id, idx, seed, outcome, task) VALUES (?1, ?2, ?3, 'running', ?4)",
                        params![run_id, seg.episode_index as i64, seg.seed as i64, seg.task],
                    )?;
                    tx.last_insert_rowid()
                }
            };
            let next_chunk: i64 = tx.query_row(
                "SELECT COALESCE(MAX(chunk) + 1, 0) FROM frame_chunks WHERE episode_id = ?1",
                [id],
                |r| r.get(0),
            )?;
            open.entry(seg.episode_index)
                .or_insert(Open { id, next_chunk })
        }
    };
    if !seg.frames.is_empty() {
        let mut data = Vec::new();
        let mut timings = Vec::new();
        let episode = ep.id;
        let failed = |message: String| StoreError::Encode { episode, message };
        for (i, frame) in seg.frames.iter().enumerate() {
            data = postcard::to_extend(frame, data).map_err(|e| failed(e.to_string()))?;
            let timing = Timing {
                step_ns: seg.step_ns.get(i).copied().unwrap_or(0),
                ..Timing::default()
            };
            timings = postcard::to_extend(&timing, timings).map_err(|e| failed(e.to_string()))?;
        }
        // A chunk stored uncompressed would not read back: fail instead.
        let data = zstd
            .compress(&data)
            .map_err(|e| failed(format!("zstd: {e}")))?;
        let timings = zstd
            .compress(&timings)
            .map_err(|e| failed(format!("zstd: {e}")))?;
        tx.prepare_cached(
            "INSERT OR REPLACE INTO frame_chunks (episode_id, chunk, first_step, frames, data, timings) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![
            ep.id,
            ep.next_chunk,
            seg.first_step as i64,
            seg.frames.len() as i64,
            data,
            timings
        ])?;
        ep.next_chunk += 1;
        let mut ins = tx.prepare_cached(
            "INSERT OR REPLACE INTO train_steps (episode_id, step, version, log_prob, value, advantage, lag) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        for (i, s) in seg.stats.iter().enumerate() {
            ins.execute(params![
                ep.id,
                (seg.first_step + i as u64) as i64,
                s.version as i64,
                f64::from(s.log_prob),
                f64::from(s.value),
                s.advantage.map(f64::from),
                s.lag as i64
            ])?;
        }
        tx.execute(
            "UPDATE episodes SET length = ?2 WHERE id = ?1",
            params![ep.id, (seg.first_step + seg.frames.len() as u64) as i64],
        )?;
    }
    if let Some(end) = seg.end {
        let id = ep.id;
        open.remove(&seg.episode_index);
        let digest = digest(tx, id, end.outcome.as_str())?;
        let failed = |message: String| StoreError::Encode {
            episode: id,
            message,
        };
        let final_observation = match end.final_observation.as_ref() {
            Some(o) => {
                let raw = postcard::to_allocvec(o).map_err(|e| failed(e.to_string()))?;
                Some(
                    zstd.compress(&raw)
                        .map_err(|e| failed(format!("zstd: {e}")))?,
                )
            }
            None => None,
        };
        tx.execute(
            "UPDATE episodes SET outcome = ?2, return = ?3, length = ?4, success = ?5, error = ?6, digest = ?7, final_observation = ?8 WHERE id = ?1",
            params![
                id,
                end.outcome.as_str(),
                end.return_,
                end.length as i64,
                end.success,
                end.error,
                digest,
                final_observation
            ],
        )?;
    }
    Ok(())
}

/// blake3 over the episode's encoded frames and its outcome. Computed from
/// what is stored, so an episode that spans a resume gets the same digest.
fn digest(tx: &rusqlite::Transaction<'_>, id: i64, outcome: &str) -> Result<String, StoreError> {
    let mut hasher = blake3::Hasher::new();
    crate::store::for_each_raw_chunk(tx, id, |data, _| {
        hasher.update(data);
        Ok(())
    })?;
    hasher.update(outcome.as_bytes());
    Ok(hasher.finalize().to_hex().to_string())
}

impl Db {
    /// Every metric of a training run, by update then name.
    pub fn train_metrics(&self, run_id: &str) -> Result<Vec<MetricRow>, StoreError> {
        ensure_schema(&self.conn)?;
        let mut stmt = self.conn.prepare(
            "SELECT update_no, name, value, time FROM train_metrics WHERE run_id = ?1 ORDER BY update_no, name",
        )?;
        let rows = stmt.query_map([run_id], |r| {
            Ok(MetricRow {
                update: r.get::<_, i64>(0)? as u64,
                name: r.get(1)?,
                value: r.get(2)?,
                time: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The per-step training records of an episode, in step order.
    pub fn train_steps(&self, episode: i64) -> Result<Vec<StoredStep>, StoreError> {
        ensure_schema(&self.conn)?;
        let mut stmt = self.conn.prepare(
            "SELECT step, version, log_prob, value, advantage, lag FROM train_steps WHERE episode_id = ?1 ORDER BY step",
        )?;
        let rows = stmt.query_map([episode], |r| {
            Ok(StoredStep {
                step: r.get::<_, i64>(0)? as u64,
                stat: StepStat {
                    version: r.get::<_, i64>(1)? as u64,
                    log_prob: r.get::<_, f64>(2)? as f32,
                    value: r.get::<_, f64>(3)? as f32,
                    advantage: r.get::<_, Option<f64>>(4)?.map(|a| a as f32),
                    lag: r.get::<_, i64>(5)? as u64,
                },
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}
