//! The recorder: a thread that owns the database connection while a run goes,
//! encodes frames, hashes them into each episode's digest, compresses them in
//! chunks and commits in batches, so the stepping threads never wait on disk
//! and a killed run keeps every committed frame. Part of the storage layer.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::Path;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use rusqlite::{OptionalExtension, params};

use crate::chat::{ModelCall, ModelTotals};
use crate::codec::{encode_frame, encode_observation, encode_timing, pack_into, postcard_into};
use crate::episode::EpisodeReport;
use crate::model::{Frame, MemoryWrite, Observation, Timing};
use crate::store::{Db, Real, StoreError, now_rfc3339};
use crate::train_store::{ResumePoint, StepStat};
use ludus_core::Outcome;

mod filer;
mod writer;

use filer::{Episode, Filer};
pub use writer::FrameWriter;
use writer::{Msg, SPARE_BATCHES};

/// Frames per compressed chunk.
const CHUNK_FRAMES: u32 = 512;
/// Raw bytes per chunk before it is compressed early (pixel frames).
const CHUNK_BYTES: usize = 1 << 20;
/// Longest time between commits while a run goes: shorter keeps the commit
/// a run waits for at its end short (docs/performance.md).
const COMMIT_EVERY: Duration = Duration::from_millis(50);
const ZSTD_LEVEL: i32 = 1;
/// The level for chunks under [`crate::codec::FAST_BELOW`] bytes: a negative level stores
/// literals without entropy coding, which for a few KiB of floats costs
/// little in size and halves the time.
const ZSTD_FAST_LEVEL: i32 = -1;
/// A chunk with fewer raw bytes (frames and timings) than this is stored in
/// a block shared with other small chunks, not compressed on its own: a
/// random CartPole episode is one chunk of about 1 KiB, and compressing
/// those one by one at level -1 was half of the recorder's instructions
/// (together at level -5, under a third, and the bytes shrink by a quarter).
const BLOCK_BELOW: usize = 8 << 10;
/// Raw bytes at which a block is compressed and closed (blocks are also
/// closed at every commit, so no block spans two).
const BLOCK_BYTES: usize = 32 << 10;
/// The level for blocks.
const BLOCK_LEVEL: i32 = -5;

/// How an episode ended, as the stepping thread reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct EpisodeFinish {
    pub outcome: Outcome,
    pub return_: f64,
    pub length: u64,
    pub success: bool,
    pub error: Option<String>,
    pub task: String,
    pub reset_info: String,
    pub final_observation: Option<Observation>,
    /// Memory writes made by the agent at episode end (stored at step = length).
    pub end_writes: Vec<MemoryWrite>,
}

/// What a run looks like in the `runs` table.
pub struct RunRecord {
    pub id: String,
    pub seed: u64,
    pub episodes: u64,
    pub jobs: u64,
    pub spec: serde_json::Value,
    /// The `/agent` memory the run's episodes start from; `None`: the stored one.
    pub agent_base: Option<BTreeMap<String, String>>,
    /// Whether the finished episodes' `/agent` writes go into the stored
    /// memory when the run ends (not for the debugger's branches).
    pub fold_agent_memory: bool,
    /// For a branch: its parent episode, frame and edits.
    pub branch: Option<BranchOf>,
}

/// Where a branch comes from.
#[derive(Clone, Debug)]
pub struct BranchOf {
    pub parent_episode: i64,
    pub parent_frame: u64,
    /// JSON text describing the edits.
    pub edits: String,
}

/// What the recorder thread returns: the reports, in index order, and the
/// CPU time it used (when the platform says).
type Recorded = (Vec<EpisodeReport>, Option<Duration>);

/// One recorder serves every kind of run: `ludus run`, replays, forks and
/// live mode (whose episodes exist before it starts) and training (whose
/// episodes are made as they start, and which adds per-step rows and
/// metrics). Frames reach it through [`FrameWriter`]s.
pub struct Recorder {
    tx: Sender<Msg>,
    spare: Receiver<Msg>,
    /// The reports, and the CPU time the recorder thread used (when known).
    handle: JoinHandle<Result<Recorded, StoreError>>,
    /// Episode ids, by index (empty for a training run, whose rows come later).
    pub episode_ids: Vec<i64>,
    db_path: std::path::PathBuf,
    run_id: String,
}

/// What the recorder thread knows of the run it records.
enum Kind {
    /// Every episode's row exists; `/agent` writes are folded into the
    /// stored memory at the end when `fold_agent_memory`.
    Episodes { fold_agent_memory: bool },
    /// Episode rows are made when they start; episodes in progress at a
    /// resumed checkpoint continue where their recorded frames stop.
    Training { reopen: HashMap<u64, Episode> },
}

fn unix_time() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl Recorder {
    /// Creates the run and its episode rows, snapshots `/agent` memory for the
    /// run, and starts the recording thread.
    pub fn start(db_path: &Path, run: RunRecord, seeds: &[u64]) -> Result<Recorder, StoreError> {
        let db = Db::open(db_path)?;
        let mut spec = run.spec;
        // `/user` as the run saw it, so replays see the same memory later.
        if let Some(obj) = spec.as_object_mut()
            && !obj.contains_key("user_memory")
        {
            let user: serde_json::Map<String, serde_json::Value> = db
                .user_memory()?
                .into_iter()
                .map(|(k, v)| (k, serde_json::Value::String(v)))
                .collect();
            obj.insert("user_memory".into(), serde_json::Value::Object(user));
        }
        let tx = db.conn.unchecked_transaction()?;
        tx.execute(
            "INSERT INTO runs (id, created_at, seed, episodes, jobs, spec, status, pid) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'running', ?7)",
            params![run.id, now_rfc3339(), run.seed as i64, run.episodes as i64, run.jobs as i64, spec.to_string(), std::process::id()],
        )?;
        match &run.agent_base {
            None => {
                tx.execute(
                    "INSERT INTO run_agent_memory (run_id, path, value) SELECT ?1, path, value FROM agent_memory",
                    [&run.id],
                )?;
            }
            Some(base) => {
                let mut ins = tx.prepare(
                    "INSERT INTO run_agent_memory (run_id, path, value) VALUES (?1, ?2, ?3)",
                )?;
                for (path, value) in base {
                    ins.execute(params![run.id, path, value])?;
                }
            }
        }
        let mut episode_ids = Vec::with_capacity(seeds.len());
        {
            let mut ins = tx.prepare(
                "INSERT INTO episodes (run_id, idx, seed, outcome) VALUES (?1, ?2, ?3, 'pending')",
            )?;
            for (i, seed) in seeds.iter().enumerate() {
                ins.execute(params![run.id, i as i64, *seed as i64])?;
                episode_ids.push(tx.last_insert_rowid());
            }
        }
        if let Some(b) = &run.branch {
            tx.execute(
                "UPDATE episodes SET parent_episode = ?2, parent_frame = ?3, edits = ?4 WHERE run_id = ?1",
                params![run.id, b.parent_episode, b.parent_frame as i64, b.edits],
            )?;
        }
        tx.commit()?;
        let ids = episode_ids
            .iter()
            .enumerate()
            .map(|(i, id)| (i as u64, *id))
            .collect();
        let kind = Kind::Episodes {
            fold_agent_memory: run.fold_agent_memory,
        };
        Recorder::spawn(db, db_path, &run.id, kind, ids, episode_ids)
    }

    /// Creates a training run (or, with `resume`, reopens it and removes what
    /// was recorded after the checkpoint) and starts the recording thread.
    /// Its episodes' rows are made as they start ([`FrameWriter::start`]).
    pub fn start_training(
        db_path: &Path,
        run_id: &str,
        seed: u64,
        spec: &serde_json::Value,
        resume: Option<&ResumePoint>,
    ) -> Result<Recorder, StoreError> {
        let db = Db::open(db_path)?;
        crate::train_store::ensure_schema(&db.conn)?;
        let tx = db.conn.unchecked_transaction()?;
        let exists: Option<String> = tx
            .query_row("SELECT id FROM runs WHERE id = ?1", [run_id], |r| r.get(0))
            .optional()?;
        let mut ids = HashMap::new();
        let mut reopen = HashMap::new();
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
                    for table in ["frame_chunks", "train_steps", "memory_writes"] {
                        let step = if table == "frame_chunks" {
                            "first_step"
                        } else {
                            "step"
                        };
                        tx.execute(
                            &format!("DELETE FROM {table} WHERE episode_id = ?1 AND {step} >= ?2"),
                            params![id, steps as i64],
                        )?;
                    }
                    tx.execute(
                        "UPDATE episodes SET outcome = 'running', length = ?2 WHERE id = ?1",
                        params![id, steps as i64],
                    )?;
                    let (seed, chunk, seq): (i64, i64, i64) = tx.query_row(
                        "SELECT seed, \
                         (SELECT COALESCE(MAX(chunk) + 1, 0) FROM frame_chunks WHERE episode_id = ?1), \
                         (SELECT COALESCE(MAX(seq) + 1, 0) FROM memory_writes WHERE episode_id = ?1) \
                         FROM episodes WHERE id = ?1",
                        [id],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                    )?;
                    // The digest goes on from the frames that stay.
                    let mut ep = Episode::new(index, seed as u64, Default::default());
                    crate::store::for_each_raw_chunk(&tx, id, |data, _| {
                        ep.hasher.update(data);
                        Ok(())
                    })?;
                    (ep.chunk, ep.seq) = (chunk.max(0) as u32, seq.max(0) as u64);
                    (ep.first_step, ep.next_step) = (steps, steps);
                    ids.insert(index, id);
                    reopen.insert(index, ep);
                }
                // Blocks that only removed chunks pointed into.
                tx.execute(
                    "DELETE FROM frame_blocks WHERE id NOT IN (SELECT block FROM frame_chunks WHERE block IS NOT NULL)",
                    [],
                )?;
            }
        }
        tx.commit()?;
        Recorder::spawn(
            db,
            db_path,
            run_id,
            Kind::Training { reopen },
            ids,
            Vec::new(),
        )
    }

    fn spawn(
        db: Db,
        db_path: &Path,
        run_id: &str,
        kind: Kind,
        ids: HashMap<u64, i64>,
        episode_ids: Vec<i64>,
    ) -> Result<Recorder, StoreError> {
        // Batches of up to BATCH_FRAMES frames or CHUNK_BYTES of data.
        let (sender, receiver) = crossbeam_channel::bounded(64);
        let (spare_tx, spare) = crossbeam_channel::bounded(SPARE_BATCHES);
        let run = run_id.to_string();
        let handle = std::thread::Builder::new()
            .name("ludus-recorder".into())
            .spawn(move || record(db, &run, kind, ids, receiver, spare_tx))
            .map_err(|e| StoreError::Open {
                path: db_path.to_path_buf(),
                message: format!("cannot start the recorder thread: {e}"),
            })?;
        Ok(Recorder {
            tx: sender,
            spare,
            handle,
            episode_ids,
            db_path: db_path.to_path_buf(),
            run_id: run_id.to_string(),
        })
    }

    /// A writer for one stepping thread. Every writer must be dropped
    /// before [`Recorder::finish`] (which waits for them).
    pub fn writer(&self) -> FrameWriter {
        FrameWriter::new(self.tx.clone(), self.spare.clone())
    }

    /// Waits for everything sent so far to be committed, folds the finished
    /// episodes' `/agent` writes into the stored memory in episode order, marks
    /// the run finished, and returns the episodes' reports in index order.
    pub fn finish(self) -> Result<Vec<EpisodeReport>, StoreError> {
        self.finish_timed().map(|(reports, _)| reports)
    }

    /// [`Recorder::finish`], also returning the CPU time the recorder thread
    /// used (`None` where the platform does not say).
    pub fn finish_timed(self) -> Result<Recorded, StoreError> {
        drop(self.tx);
        match self.handle.join() {
            Ok(r) => r,
            Err(_) => Err(StoreError::Open {
                path: Default::default(),
                message: "the recorder thread panicked".into(),
            }),
        }
    }

    /// For a training run: [`Recorder::finish`], then marks the episodes
    /// still in progress `interrupted` and the run `status`.
    pub fn finish_training(self, status: &str) -> Result<(), StoreError> {
        let (db_path, run_id) = (self.db_path.clone(), self.run_id.clone());
        self.finish()?;
        let db = Db::open(&db_path)?;
        db.conn.execute(
            "UPDATE episodes SET outcome = 'interrupted' WHERE run_id = ?1 AND outcome = 'running'",
            [&run_id],
        )?;
        db.conn.execute(
            "UPDATE runs SET status = ?2, finished_at = ?3, episodes = (SELECT COUNT(*) FROM episodes WHERE run_id = ?1) WHERE id = ?1",
            params![run_id, status, now_rfc3339()],
        )?;
        Ok(())
    }
}

fn record(
    db: Db,
    run_id: &str,
    kind: Kind,
    ids: HashMap<u64, i64>,
    rx: Receiver<Msg>,
    spare: Sender<Msg>,
) -> Result<Recorded, StoreError> {
    let (fold_agent_memory, reopen) = match kind {
        Kind::Episodes { fold_agent_memory } => (fold_agent_memory, None),
        Kind::Training { reopen } => (false, Some(reopen)),
    };
    let training = reopen.is_some();
    let mut filer = Filer::new(ids, reopen)?;
    let mut last_commit = Instant::now();
    loop {
        let msg = match rx.recv_timeout(COMMIT_EVERY) {
            Ok(m) => Some(m),
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => None,
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
        };
        if let Some(mut batch) = msg {
            filer.take_batch(&mut batch);
            batch.clear();
            // A full pool just drops the batch.
            let _ = spare.try_send(batch);
        }
        let syncing = !filer.acks.is_empty();
        if syncing
            || !filer.ops.is_empty()
                && (filer.pack.blobs.len() >= 8 << 20 || last_commit.elapsed() >= COMMIT_EVERY)
        {
            // Also seal partial chunks so a kill loses at most one commit interval.
            filer.seal_partial_chunks();
            filer.commit(&db, run_id)?;
            last_commit = Instant::now();
            for ack in filer.acks.drain(..) {
                let _ = ack.send(());
            }
        }
    }
    filer.seal_partial_chunks();
    filer.commit(&db, run_id)?;
    // Episodes stay `pending` until they end; if the process dies first,
    // `Db::open` marks them `interrupted`.
    let tx = db.conn.unchecked_transaction()?;
    if fold_agent_memory {
        let mut upsert = tx.prepare(
            "INSERT INTO agent_memory (path, value, episode_id) VALUES (?1, ?2, ?3) ON CONFLICT(path) DO UPDATE SET value = ?2, episode_id = ?3",
        )?;
        let mut delete = tx.prepare("DELETE FROM agent_memory WHERE path = ?1")?;
        for (index, writes) in &filer.finished_writes {
            let episode = filer.id(*index)?;
            for w in writes {
                match &w.value {
                    Some(v) => upsert.execute(params![w.path, v, episode])?,
                    None => delete.execute([&w.path])?,
                };
            }
        }
    }
    if !training {
        tx.execute(
            "UPDATE runs SET status = 'finished', finished_at = ?2 WHERE id = ?1",
            params![run_id, now_rfc3339()],
        )?;
    }
    tx.commit()?;
    let mut reports = std::mem::take(&mut filer.reports);
    for r in &mut reports {
        r.id = filer.id(r.index)?;
    }
    reports.sort_by_key(|r| r.index);
    Ok((reports, crate::stopwatch::thread_cpu_time()))
}

#[cfg(test)]
mod tests {
    use super::filer::ending_digest_bytes;
    use super::writer::Ended;
    use super::*;

    /// A normal ending of `length` frames.
    fn finish(length: u64) -> EpisodeFinish {
        EpisodeFinish {
            outcome: Outcome::Truncated,
            return_: 0.0,
            length,
            success: false,
            error: None,
            task: String::new(),
            reset_info: "{}".into(),
            final_observation: None,
            end_writes: Vec::new(),
        }
    }

    /// An image that model calls carry as pixels is stored once, and every
    /// call reads back whole; the digest covers the pixels.
    #[test]
    fn images_in_model_calls_are_stored_once() {
        use crate::model::{ChatRequest, ContentPart, Image, Message, ModelCall, Role, Served};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("images.db");
        let record = RunRecord {
            id: "images".into(),
            seed: 0,
            episodes: 1,
            jobs: 1,
            spec: serde_json::json!({}),
            agent_base: None,
            fold_agent_memory: false,
            branch: None,
        };
        let image = |fill: u8| Image {
            width: 64,
            height: 48,
            channels: 3,
            pixels: vec![fill; 64 * 48 * 3],
        };
        let call = |img: Image| ModelCall {
            role: Role::Agent,
            request: ChatRequest {
                endpoint: "default".into(),
                messages: vec![Message {
                    role: "user".into(),
                    content: vec![ContentPart::Text("look".into()), ContentPart::Image(img)],
                    tool_calls: Vec::new(),
                    tool_call_id: None,
                }],
                tools: Vec::new(),
                response_format: None,
                temperature: None,
                top_p: None,
                max_tokens: None,
                stop: Vec::new(),
                seed: None,
                logprobs: false,
            },
            result: Err(crate::model::ModelError::Timeout("t".into())),
            latency_ms: 1.0,
            cost_usd: 0.0,
            attempts: Vec::new(),
            served: Served::Live,
        };
        let recorder = Recorder::start(&path, record, &[0]).unwrap();
        let id = recorder.episode_ids[0];
        let mut pushed = Vec::new();
        {
            let mut writer = recorder.writer();
            writer.start(0, 0);
            for step in 0..6u32 {
                let mut frame = crate::store::tests::frame(step);
                // The same image in five frames, another in one.
                frame.model_calls = vec![call(image(if step == 3 { 9 } else { 7 }))];
                writer.push(0, &frame, Timing::default());
                pushed.push(frame.model_calls[0].clone());
            }
            writer.end(0, finish(6));
        }
        recorder.finish().unwrap();
        let db = Db::open(&path).unwrap();
        let stored: i64 = db
            .conn
            .query_row("SELECT COUNT(*) FROM model_images", [], |r| r.get(0))
            .unwrap();
        assert_eq!(stored, 2, "two distinct images");
        let back: Vec<ModelCall> = db
            .model_calls(id, 0..=u64::MAX)
            .unwrap()
            .into_iter()
            .map(|(_, c)| c)
            .collect();
        assert_eq!(back, pushed);
    }

    /// Short episodes share blocks, a long one's chunks stand alone, and
    /// every frame and timing reads back as it was pushed, whole or chunk by
    /// chunk.
    #[test]
    fn small_chunks_share_blocks_and_read_back_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blocks.db");
        // Lengths 1..=40, then one episode whose frames are too many bytes
        // for a block.
        let lengths: Vec<u32> = (1..=40).chain([CHUNK_FRAMES * 2 + 7]).collect();
        let seeds: Vec<u64> = (0..lengths.len() as u64).collect();
        let record = RunRecord {
            id: "blocks".into(),
            seed: 0,
            episodes: seeds.len() as u64,
            jobs: 1,
            spec: serde_json::json!({}),
            agent_base: None,
            fold_agent_memory: false,
            branch: None,
        };
        let recorder = Recorder::start(&path, record, &seeds).unwrap();
        let ids = recorder.episode_ids.clone();
        let mut pushed: Vec<Vec<(Frame, Timing)>> = Vec::new();
        {
            let mut writer = recorder.writer();
            for (i, &length) in lengths.iter().enumerate() {
                writer.start(i as u64, seeds[i]);
                let mut frames = Vec::new();
                for step in 0..length {
                    let frame = crate::store::tests::frame(step);
                    let timing = Timing {
                        act_ns: u64::from(step) * 3,
                        step_ns: i as u64 + 1,
                        score_ns: 7,
                    };
                    writer.push(i as u64, &frame, timing);
                    frames.push((frame, timing));
                }
                writer.end(
                    i as u64,
                    EpisodeFinish {
                        return_: 1.0,
                        success: true,
                        ..finish(u64::from(length))
                    },
                );
                pushed.push(frames);
            }
        }
        recorder.finish().unwrap();

        let db = Db::open(&path).unwrap();
        for (id, frames) in ids.iter().zip(&pushed) {
            assert_eq!(db.frames(*id).unwrap(), *frames, "episode {id}");
            let mut by_chunk = Vec::new();
            for c in db.chunk_index(*id).unwrap() {
                let chunk = db.chunk_frames(*id, c.chunk).unwrap();
                assert_eq!(chunk.len(), c.frames as usize);
                by_chunk.extend(chunk);
            }
            assert_eq!(by_chunk, *frames, "episode {id}, chunk by chunk");
        }
        let count = |sql: &str| -> i64 { db.conn.query_row(sql, [], |r| r.get(0)).unwrap() };
        let blocks = count("SELECT COUNT(*) FROM frame_blocks");
        let in_blocks = count("SELECT COUNT(*) FROM frame_chunks WHERE block IS NOT NULL");
        let own = count("SELECT COUNT(*) FROM frame_chunks WHERE block IS NULL");
        assert!(
            blocks >= 1 && in_blocks >= 4 * blocks,
            "{blocks} blocks hold {in_blocks} chunks"
        );
        assert!(own >= 1, "the long episode's frames stand alone ({own})");
    }

    /// A chunk whose block is gone reads as a decoding error naming the
    /// episode, not as missing frames or a panic.
    #[test]
    fn a_missing_block_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gone.db");
        let record = RunRecord {
            id: "gone".into(),
            seed: 0,
            episodes: 1,
            jobs: 1,
            spec: serde_json::json!({}),
            agent_base: None,
            fold_agent_memory: false,
            branch: None,
        };
        let recorder = Recorder::start(&path, record, &[9]).unwrap();
        let id = recorder.episode_ids[0];
        {
            let mut writer = recorder.writer();
            writer.start(0, 9);
            writer.push(0, &crate::store::tests::frame(0), Timing::default());
        }
        recorder.finish().unwrap();
        let db = Db::open(&path).unwrap();
        assert_eq!(db.frames(id).unwrap().len(), 1);
        db.conn.execute("DELETE FROM frame_blocks", []).unwrap();
        let err = db.frames(id).unwrap_err().to_string();
        assert!(
            err.contains(&format!("episode {id}")) && err.contains("missing"),
            "{err}"
        );
    }

    #[test]
    fn an_ending_adds_to_the_digest_exactly_its_postcard_encoding() {
        // Digests recorded before endings travelled as bytes must still match.
        let observation = crate::store::tests::frame(7).observation;
        let finishes = || {
            [
                EpisodeFinish {
                    outcome: Outcome::Crashed,
                    return_: -1.25,
                    length: 7,
                    success: false,
                    error: Some("env trapped in `step`".into()),
                    task: "reach the door".into(),
                    reset_info: "{\"level\":3}".into(),
                    final_observation: Some(observation.clone()),
                    end_writes: vec![MemoryWrite {
                        path: "/agent/route".into(),
                        value: Some("LLUR".into()),
                    }],
                },
                EpisodeFinish {
                    outcome: Outcome::Truncated,
                    return_: 500.0,
                    length: 500,
                    success: true,
                    error: None,
                    task: String::new(),
                    reset_info: String::new(),
                    final_observation: None,
                    end_writes: Vec::new(),
                },
            ]
        };
        for (f, g) in finishes().into_iter().zip(finishes()) {
            let mut ends = b"earlier ending".to_vec();
            let ended = Ended::new(f, &mut ends);
            let error = ended
                .error
                .clone()
                .map(|r| String::from_utf8(ends[r].to_vec()).unwrap());
            assert_eq!(error, g.error);
            assert_eq!(ends[ended.task.clone()], *g.task.as_bytes());
            assert_eq!(ends[ended.reset_info.clone()], *g.reset_info.as_bytes());
            let mut ours = Vec::new();
            ending_digest_bytes(&ended, error.as_deref(), &ends, &mut ours);
            let theirs = postcard::to_allocvec(&(
                g.outcome.as_str(),
                g.return_.to_bits(),
                g.length,
                g.success,
                &g.error,
                &g.final_observation,
                &g.end_writes,
            ))
            .unwrap();
            assert_eq!(ours, theirs, "{:?}", g.outcome);
        }
    }
}
