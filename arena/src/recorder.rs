//! The recorder: a thread that owns the database connection while a run goes,
//! encodes frames, hashes them into each episode's digest, compresses them in
//! chunks and commits in batches, so the stepping threads never wait on disk
//! and a killed run keeps every committed frame. Part of the storage layer.

use std::collections::BTreeMap;
use std::path::Path;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use rusqlite::params;

use crate::model::{Frame, MemoryWrite, Observation, Timing};
use crate::run::{EpisodeReport, Outcome};
use crate::store::{Db, StoreError, now_rfc3339};

/// Frames per compressed chunk.
const CHUNK_FRAMES: u32 = 512;
/// Raw bytes per chunk before it is compressed early (pixel frames).
const CHUNK_BYTES: usize = 1 << 20;
/// Longest time between commits while a run goes.
const COMMIT_EVERY: Duration = Duration::from_millis(100);
const ZSTD_LEVEL: i32 = 1;

/// How an episode ended, as the stepping thread reports it.
#[derive(Debug)]
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

pub(crate) enum Msg {
    Start {
        episode: i64,
        index: u64,
        seed: u64,
    },
    Frames(Box<FrameBatch>),
    End {
        episode: i64,
        finish: Box<EpisodeFinish>,
    },
}

/// Frames encoded on the stepping thread, sent in batches.
pub(crate) struct FrameBatch {
    episode: i64,
    frames: u32,
    /// postcard-encoded `Frame`s, back to back: what the digest hashes.
    data: Vec<u8>,
    /// postcard-encoded `Timing`s, back to back (not part of the digest).
    timings: Vec<u8>,
    /// Memory writes with their step.
    writes: Vec<(u64, MemoryWrite)>,
}

/// Frames per batch sent from a stepping thread.
const BATCH_FRAMES: u32 = 256;
/// Longest a frame waits on the stepping thread before it is sent.
const BATCH_EVERY: Duration = Duration::from_millis(50);

/// The stepping thread's end of one episode's recording: encodes frames and
/// sends them in batches (by count, size or age, so slow environments still
/// get every frame committed within a commit interval).
pub(crate) struct EpisodeWriter {
    tx: Sender<Msg>,
    batch: FrameBatch,
    since: Instant,
    /// [`crate::engine::ticks`] at `since`: reading the clock per frame
    /// costs a tenth of a CartPole step, reading the tick count nothing.
    since_tick: u64,
    pub alive: bool,
}

/// Epoch ticks in [`BATCH_EVERY`].
const BATCH_EVERY_TICKS: u64 =
    (BATCH_EVERY.as_millis() / crate::engine::EPOCH_TICK.as_millis()) as u64;
/// Frames between two looks at the real clock, for when no ticker runs.
const CLOCK_EVERY_FRAMES: u32 = 32;

impl EpisodeWriter {
    pub fn start(tx: Sender<Msg>, episode: i64, index: u64, seed: u64) -> EpisodeWriter {
        let alive = tx
            .send(Msg::Start {
                episode,
                index,
                seed,
            })
            .is_ok();
        EpisodeWriter {
            tx,
            batch: FrameBatch::new(episode),
            since: Instant::now(),
            since_tick: crate::engine::ticks(),
            alive,
        }
    }

    pub fn push(&mut self, frame: &Frame, timing: Timing) {
        let b = &mut self.batch;
        // postcard into a Vec cannot fail for these plain data types.
        b.data = postcard::to_extend(frame, std::mem::take(&mut b.data)).unwrap_or_default();
        b.timings =
            postcard::to_extend(&timing, std::mem::take(&mut b.timings)).unwrap_or_default();
        for w in &frame.memory_writes {
            b.writes.push((u64::from(frame.step), w.clone()));
        }
        b.frames += 1;
        if b.frames >= BATCH_FRAMES || b.data.len() >= CHUNK_BYTES || self.batch_is_old() {
            self.flush();
        }
    }

    fn batch_is_old(&self) -> bool {
        crate::engine::ticks().wrapping_sub(self.since_tick) >= BATCH_EVERY_TICKS
            || (self.batch.frames.is_multiple_of(CLOCK_EVERY_FRAMES)
                && self.since.elapsed() >= BATCH_EVERY)
    }

    fn flush(&mut self) {
        if self.batch.frames > 0 {
            let episode = self.batch.episode;
            let batch = std::mem::replace(&mut self.batch, FrameBatch::new(episode));
            self.alive &= self.tx.send(Msg::Frames(Box::new(batch))).is_ok();
        }
        self.since = Instant::now();
        self.since_tick = crate::engine::ticks();
    }

    pub fn end(mut self, finish: EpisodeFinish) {
        self.flush();
        let _ = self.tx.send(Msg::End {
            episode: self.batch.episode,
            finish: Box::new(finish),
        });
    }
}

impl FrameBatch {
    fn new(episode: i64) -> FrameBatch {
        FrameBatch {
            episode,
            frames: 0,
            data: Vec::new(),
            timings: Vec::new(),
            writes: Vec::new(),
        }
    }
}

/// What a run looks like in the `runs` table.
pub(crate) struct RunRecord {
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

pub(crate) struct Recorder {
    tx: Sender<Msg>,
    handle: JoinHandle<Result<Vec<EpisodeReport>, StoreError>>,
    /// Episode ids, by index.
    pub episode_ids: Vec<i64>,
}

struct Episode {
    index: u64,
    seed: u64,
    hasher: blake3::Hasher,
    buf: Vec<u8>,
    timings: Vec<u8>,
    buf_frames: u32,
    first_step: u64,
    next_step: u64,
    chunk: u32,
    seq: u64,
    agent_writes: Vec<MemoryWrite>,
}

enum Op {
    Chunk {
        episode: i64,
        chunk: u32,
        first_step: u64,
        frames: u32,
        data: Vec<u8>,
        timings: Vec<u8>,
    },
    Write {
        episode: i64,
        seq: u64,
        step: u64,
        write: MemoryWrite,
    },
    End {
        episode: i64,
        finish: Box<EpisodeFinish>,
        digest: String,
        final_observation: Option<Vec<u8>>,
    },
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
        let (sender, receiver) = crossbeam_channel::bounded(1 << 14);
        let run_id = run.id.clone();
        let fold = run.fold_agent_memory;
        let handle = std::thread::Builder::new()
            .name("ludus-recorder".into())
            .spawn(move || record(db, &run_id, fold, receiver))
            .map_err(|e| StoreError::Open {
                path: db_path.to_path_buf(),
                message: format!("cannot start the recorder thread: {e}"),
            })?;
        Ok(Recorder {
            tx: sender,
            handle,
            episode_ids,
        })
    }

    pub fn sender(&self) -> Sender<Msg> {
        self.tx.clone()
    }

    /// Waits for everything sent so far to be committed, folds the finished
    /// episodes' `/agent` writes into the stored memory in episode order, marks
    /// the run finished, and returns the episodes' reports in index order.
    pub fn finish(self) -> Result<Vec<EpisodeReport>, StoreError> {
        drop(self.tx);
        match self.handle.join() {
            Ok(r) => r,
            Err(_) => Err(StoreError::Open {
                path: Default::default(),
                message: "the recorder thread panicked".into(),
            }),
        }
    }
}

fn record(
    db: Db,
    run_id: &str,
    fold_agent_memory: bool,
    rx: Receiver<Msg>,
) -> Result<Vec<EpisodeReport>, StoreError> {
    let mut episodes: BTreeMap<i64, Episode> = BTreeMap::new();
    let mut ops: Vec<Op> = Vec::new();
    let mut pending_bytes = 0usize;
    let mut reports: Vec<EpisodeReport> = Vec::new();
    let mut finished_writes: BTreeMap<u64, (i64, Vec<MemoryWrite>)> = BTreeMap::new();
    let mut last_commit = Instant::now();
    // One compression context for the whole run: creating one per chunk costs
    // more than compressing a small chunk.
    let mut zstd = zstd::bulk::Compressor::new(ZSTD_LEVEL).map_err(|e| StoreError::Open {
        path: Default::default(),
        message: format!("zstd: {e}"),
    })?;
    loop {
        let msg = match rx.recv_timeout(COMMIT_EVERY) {
            Ok(m) => Some(m),
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => None,
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
        };
        match msg {
            Some(Msg::Start {
                episode,
                index,
                seed,
            }) => {
                episodes.insert(
                    episode,
                    Episode {
                        index,
                        seed,
                        hasher: blake3::Hasher::new(),
                        buf: Vec::new(),
                        timings: Vec::new(),
                        buf_frames: 0,
                        first_step: 0,
                        next_step: 0,
                        chunk: 0,
                        seq: 0,
                        agent_writes: Vec::new(),
                    },
                );
            }
            Some(Msg::Frames(batch)) => {
                let episode = batch.episode;
                let Some(ep) = episodes.get_mut(&episode) else {
                    continue;
                };
                ep.hasher.update(&batch.data);
                ep.buf.extend_from_slice(&batch.data);
                ep.timings.extend_from_slice(&batch.timings);
                ep.buf_frames += batch.frames;
                ep.next_step += u64::from(batch.frames);
                for (step, w) in batch.writes {
                    if w.path.starts_with("/agent/") {
                        ep.agent_writes.push(w.clone());
                    }
                    ops.push(Op::Write {
                        episode,
                        seq: ep.seq,
                        step,
                        write: w,
                    });
                    ep.seq += 1;
                }
                if ep.buf_frames >= CHUNK_FRAMES || ep.buf.len() >= CHUNK_BYTES {
                    pending_bytes += ep.buf.len();
                    ops.push(seal_chunk(episode, ep, &mut zstd));
                }
            }
            Some(Msg::End { episode, finish }) => {
                let Some(mut ep) = episodes.remove(&episode) else {
                    continue;
                };
                if ep.buf_frames > 0 {
                    ops.push(seal_chunk(episode, &mut ep, &mut zstd));
                }
                for w in &finish.end_writes {
                    if w.path.starts_with("/agent/") {
                        ep.agent_writes.push(w.clone());
                    }
                    ops.push(Op::Write {
                        episode,
                        seq: ep.seq,
                        step: finish.length,
                        write: w.clone(),
                    });
                    ep.seq += 1;
                }
                // The episode's ending is part of its digest too.
                let tail = postcard::to_allocvec(&(
                    finish.outcome.as_str(),
                    finish.return_.to_bits(),
                    finish.length,
                    finish.success,
                    &finish.error,
                    &finish.final_observation,
                    &finish.end_writes,
                ))
                .unwrap_or_default();
                ep.hasher.update(&tail);
                let digest = ep.hasher.finalize().to_hex()[..32].to_string();
                if matches!(finish.outcome, Outcome::Terminated | Outcome::Truncated) {
                    finished_writes
                        .insert(ep.index, (episode, std::mem::take(&mut ep.agent_writes)));
                }
                reports.push(EpisodeReport {
                    id: episode,
                    index: ep.index,
                    seed: ep.seed,
                    outcome: finish.outcome,
                    return_: finish.return_,
                    length: finish.length,
                    success: finish.success,
                    digest: digest.clone(),
                    error: finish.error.clone(),
                });
                let final_observation = finish
                    .final_observation
                    .as_ref()
                    .and_then(|o| postcard::to_allocvec(o).ok())
                    .and_then(|raw| zstd.compress(&raw).ok());
                ops.push(Op::End {
                    episode,
                    finish,
                    digest,
                    final_observation,
                });
            }
            None => {}
        }
        if !ops.is_empty() && (last_commit.elapsed() >= COMMIT_EVERY || pending_bytes >= 8 << 20) {
            // Also seal partial chunks so a kill loses at most one commit interval.
            seal_partial_chunks(&mut episodes, &mut ops, &mut zstd);
            commit(&db, &mut ops)?;
            pending_bytes = 0;
            last_commit = Instant::now();
        }
    }
    seal_partial_chunks(&mut episodes, &mut ops, &mut zstd);
    commit(&db, &mut ops)?;
    // Episodes stay `pending` until they end; if the process dies first,
    // `Db::open` marks them `interrupted`.
    let tx = db.conn.unchecked_transaction()?;
    if fold_agent_memory {
        let mut writes: Vec<(i64, &MemoryWrite)> = Vec::new();
        for (episode, ws) in finished_writes.values() {
            writes.extend(ws.iter().map(|w| (*episode, w)));
        }
        let mut upsert = tx.prepare(
            "INSERT INTO agent_memory (path, value, episode_id) VALUES (?1, ?2, ?3) ON CONFLICT(path) DO UPDATE SET value = ?2, episode_id = ?3",
        )?;
        let mut delete = tx.prepare("DELETE FROM agent_memory WHERE path = ?1")?;
        for (episode, w) in writes {
            match &w.value {
                Some(v) => upsert.execute(params![w.path, v, episode])?,
                None => delete.execute([&w.path])?,
            };
        }
    }
    tx.execute(
        "UPDATE runs SET status = 'finished', finished_at = ?2 WHERE id = ?1",
        params![run_id, now_rfc3339()],
    )?;
    tx.commit()?;
    reports.sort_by_key(|r| r.index);
    Ok(reports)
}

/// Seals every episode's unsealed frames, so a commit holds all frames received.
fn seal_partial_chunks(
    episodes: &mut BTreeMap<i64, Episode>,
    ops: &mut Vec<Op>,
    zstd: &mut zstd::bulk::Compressor<'_>,
) {
    for (&id, ep) in episodes.iter_mut() {
        if ep.buf_frames > 0 {
            ops.push(seal_chunk(id, ep, zstd));
        }
    }
}

fn seal_chunk(episode: i64, ep: &mut Episode, zstd: &mut zstd::bulk::Compressor<'_>) -> Op {
    // Compressing an in-memory buffer does not fail; keep the data raw if it did.
    let pack =
        |z: &mut zstd::bulk::Compressor<'_>, b: &[u8]| z.compress(b).unwrap_or_else(|_| b.to_vec());
    let data = pack(zstd, &ep.buf);
    let timings = pack(zstd, &ep.timings);
    let op = Op::Chunk {
        episode,
        chunk: ep.chunk,
        first_step: ep.first_step,
        frames: ep.buf_frames,
        data,
        timings,
    };
    ep.chunk += 1;
    ep.buf.clear();
    ep.timings.clear();
    ep.buf_frames = 0;
    ep.first_step = ep.next_step;
    op
}

fn commit(db: &Db, ops: &mut Vec<Op>) -> Result<(), StoreError> {
    if ops.is_empty() {
        return Ok(());
    }
    let tx = db.conn.unchecked_transaction()?;
    {
        let mut chunk = tx.prepare_cached(
            "INSERT INTO frame_chunks (episode_id, chunk, first_step, frames, data, timings) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        let mut write = tx.prepare_cached(
            "INSERT INTO memory_writes (episode_id, seq, step, path, value) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        let mut end = tx.prepare_cached(
            "UPDATE episodes SET outcome = ?2, return = ?3, length = ?4, success = ?5, digest = ?6, error = ?7, task = ?8, reset_info = ?9, final_observation = ?10 WHERE id = ?1",
        )?;
        for op in ops.drain(..) {
            match op {
                Op::Chunk {
                    episode,
                    chunk: c,
                    first_step,
                    frames,
                    data,
                    timings,
                } => {
                    chunk.execute(params![
                        episode,
                        c,
                        first_step as i64,
                        frames,
                        data,
                        timings
                    ])?;
                }
                Op::Write {
                    episode,
                    seq,
                    step,
                    write: w,
                } => {
                    write.execute(params![episode, seq as i64, step as i64, w.path, w.value])?;
                }
                Op::End {
                    episode,
                    finish,
                    digest,
                    final_observation: final_obs,
                } => {
                    end.execute(params![
                        episode,
                        finish.outcome.as_str(),
                        finish.return_,
                        finish.length as i64,
                        finish.success,
                        digest,
                        finish.error,
                        finish.task,
                        finish.reset_info,
                        final_obs
                    ])?;
                }
            }
        }
    }
    tx.commit()?;
    Ok(())
}
