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

use crate::codec::{encode_frame, encode_observation, encode_timing, pack_into, postcard_into};
use crate::episode::EpisodeReport;
use crate::model::{Frame, MemoryWrite, Observation, Timing};
use crate::store::{Db, Real, StoreError, now_rfc3339};
use crate::train_store::{ResumePoint, StepStat};
use ludus_core::Outcome;

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

pub(crate) type Msg = Box<Batch>;

/// What one stepping thread sends in one message: the frames of any number of
/// episodes (a CartPole episode is a few dozen frames, so one message carries
/// many), their starts and their endings, in the order they happened.
#[derive(Default)]
pub(crate) struct Batch {
    events: Vec<Event>,
    /// postcard-encoded `Frame`s, back to back: what the digest hashes.
    data: Vec<u8>,
    /// postcard-encoded `Timing`s, back to back (not part of the digest).
    timings: Vec<u8>,
    /// Memory writes with their step.
    writes: Vec<(u64, MemoryWrite)>,
    /// The texts and final observations of the episodes that end in this
    /// batch, back to back (see [`Ended`]).
    ends: Vec<u8>,
    /// Frames in `data`.
    frames: u32,
    /// Training's per-step rows (see [`Event::Stats`]).
    stats: Vec<StepStat>,
}

/// Episodes are named by their index in the run: a run's rows exist before
/// it starts, a training run's are made as its episodes start.
enum Event {
    Start {
        index: u64,
        seed: u64,
    },
    /// Consecutive frames of one episode: the batch's bytes from the end of
    /// the previous `Frames` event up to these ends.
    Frames {
        index: u64,
        frames: u32,
        data_end: usize,
        timings_end: usize,
        writes_end: usize,
    },
    End {
        index: u64,
        ended: Ended,
    },
    /// Training's rows for the steps from `first_step` of one episode: the
    /// batch's `stats` from the end of the previous `Stats` event up to `stats_end`.
    Stats {
        index: u64,
        first_step: u64,
        stats_end: usize,
    },
    /// A training update's metrics.
    Metrics {
        update: u64,
        values: Vec<(String, f64)>,
    },
    /// Answer once everything before it is committed.
    Sync(Sender<()>),
}

/// An episode's ending as it travels in a batch: its numbers, with its
/// texts and final observation copied into the batch's `ends` bytes, so
/// that the recorder thread does not free what the stepping thread
/// allocated (such a free costs both threads cache misses; in alternating
/// `ludus bench` runs, sending the `EpisodeFinish` itself cost recording
/// about half a point more).
struct Ended {
    outcome: Outcome,
    return_: f64,
    length: u64,
    success: bool,
    error: Option<Range<usize>>,
    task: Range<usize>,
    reset_info: Range<usize>,
    /// The final observation, postcard-encoded.
    final_observation: Option<Range<usize>>,
    /// Memory writes at the end (agents with memory only; an empty vector
    /// owns no allocation).
    end_writes: Vec<MemoryWrite>,
}

impl Ended {
    /// Copies `finish`'s texts and final observation into `ends`; `finish`
    /// is dropped here, on the stepping thread.
    fn new(finish: EpisodeFinish, ends: &mut Vec<u8>) -> Ended {
        let error = finish.error.as_deref().map(|e| put(ends, e.as_bytes()));
        let task = put(ends, finish.task.as_bytes());
        let reset_info = put(ends, finish.reset_info.as_bytes());
        let final_observation = finish.final_observation.as_ref().map(|o| {
            let at = ends.len();
            encode_observation(o, ends);
            at..ends.len()
        });
        Ended {
            outcome: finish.outcome,
            return_: finish.return_,
            length: finish.length,
            success: finish.success,
            error,
            task,
            reset_info,
            final_observation,
            end_writes: finish.end_writes,
        }
    }
}

/// Appends `bytes` to `out`; returns where they are.
fn put(out: &mut Vec<u8>, bytes: &[u8]) -> Range<usize> {
    let at = out.len();
    out.extend_from_slice(bytes);
    at..out.len()
}

impl Batch {
    /// An empty batch with room for as much as `like` holds, so that a
    /// batch made while every other is in flight fills without growing step
    /// by step (each growth copies, and touches fresh pages, on the stepping
    /// thread).
    fn sized_like(like: &Batch) -> Batch {
        Batch {
            events: Vec::with_capacity(like.events.capacity()),
            data: Vec::with_capacity(like.data.capacity()),
            timings: Vec::with_capacity(like.timings.capacity()),
            writes: Vec::new(),
            ends: Vec::with_capacity(like.ends.capacity()),
            frames: 0,
            stats: Vec::new(),
        }
    }

    fn clear(&mut self) {
        self.events.clear();
        self.data.clear();
        self.timings.clear();
        self.writes.clear();
        self.ends.clear();
        self.frames = 0;
        self.stats.clear();
    }
}

/// Frames per batch sent from a stepping thread. The queue holds 64
/// batches: with small frames that is about 260k frames, more than a
/// stepping thread makes while the recorder is busy with a commit. With 256
/// frames per batch the queue filled during commits and the stepping
/// thread waited, which made recording several times as costly.
/// Big frames are bounded by [`CHUNK_BYTES`] per batch instead.
const BATCH_FRAMES: u32 = 4096;
/// Longest a frame waits on the stepping thread before it is sent.
const BATCH_EVERY: Duration = Duration::from_millis(50);
/// Emptied batches kept for reuse (their buffers keep their capacity).
const SPARE_BATCHES: usize = 64;

/// A stepping thread's end of the recording: encodes frames and sends them,
/// with the starts and endings of episodes, in batches (by count, size or
/// age, so slow environments still get every frame committed within a
/// commit interval). One writer serves every episode its thread plays;
/// dropping it sends what it holds.
pub struct FrameWriter {
    tx: Sender<Msg>,
    /// Batches the recorder has emptied, to refill without allocating.
    spare: Receiver<Msg>,
    batch: Msg,
    since: Instant,
    /// [`crate::engine::ticks`] at `since`: reading the clock per frame
    /// costs a tenth of a CartPole step, reading the tick count nothing.
    since_tick: u64,
    /// Frames pushed since the clock was last read.
    unclocked: u32,
    /// Whether [`own_ahead`] can be used on this CPU.
    own_ahead: bool,
    pub alive: bool,
}

/// Asks for exclusive ownership of the cache line `distance` bytes past the
/// end of `buf` (when within its capacity), so that the stores of the next
/// frames find it ready. A batch's buffers were last read by the recorder
/// on another core; x86 commits stores in order, so each line the stepping
/// thread wrote cold held up every later store (the environment's too)
/// until the other core gave it up. Measured in alternating `ludus bench`
/// runs: docs/performance.md.
#[inline]
#[allow(clippy::ptr_arg)] // the capacity is the point
fn own_ahead(buf: &Vec<u8>, distance: usize) {
    let ahead = buf.len().saturating_add(distance);
    if ahead >= buf.capacity() {
        return;
    }
    let line = buf.as_ptr().wrapping_add(ahead);
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHW only hints the cache (it cannot fault, even on a
    // bad address), and `own_ahead_supported` checked the CPU has it.
    unsafe {
        std::arch::asm!("prefetchw [{0}]", in(reg) line, options(nostack, preserves_flags, readonly));
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: PRFM only hints the cache and cannot fault.
    unsafe {
        std::arch::asm!("prfm pstl1keep, [{0}]", in(reg) line, options(nostack, preserves_flags, readonly));
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let _ = line;
}

/// Whether this CPU has a prefetch-for-write instruction [`own_ahead`] uses.
fn own_ahead_supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::__cpuid;
        // CPUID leaf 0x8000_0001, ECX bit 8: PRFCHW (PREFETCHW).
        #[allow(unused_unsafe)]
        // SAFETY: CPUID exists on every x86-64 CPU.
        let (max, ecx) = unsafe { (__cpuid(0x8000_0000).eax, __cpuid(0x8000_0001).ecx) };
        max >= 0x8000_0001 && ecx & (1 << 8) != 0
    }
    #[cfg(target_arch = "aarch64")]
    {
        true
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

/// Epoch ticks in [`BATCH_EVERY`].
const BATCH_EVERY_TICKS: u64 =
    (BATCH_EVERY.as_millis() / crate::engine::EPOCH_TICK.as_millis()) as u64;
/// Frames between two looks at the real clock, for when no ticker runs.
const CLOCK_EVERY_FRAMES: u32 = 32;

impl FrameWriter {
    /// Marks the start of the run's episode number `index`; its frames
    /// follow with [`FrameWriter::push`]. In a training run this makes the
    /// episode's row.
    pub fn start(&mut self, index: u64, seed: u64) {
        self.touch();
        self.batch.events.push(Event::Start { index, seed });
    }

    /// Records the next frame of episode `index`.
    pub fn push(&mut self, index: u64, frame: &Frame, timing: Timing) {
        self.touch();
        let b = &mut *self.batch;
        encode_frame(frame, &mut b.data);
        encode_timing(&timing, &mut b.timings);
        for w in &frame.memory_writes {
            b.writes.push((u64::from(frame.step), w.clone()));
        }
        b.frames += 1;
        let (data_end, timings_end, writes_end) = (b.data.len(), b.timings.len(), b.writes.len());
        match b.events.last_mut() {
            Some(Event::Frames {
                index: e,
                frames,
                data_end: d,
                timings_end: t,
                writes_end: w,
            }) if *e == index => {
                *frames += 1;
                (*d, *t, *w) = (data_end, timings_end, writes_end);
            }
            _ => b.events.push(Event::Frames {
                index,
                frames: 1,
                data_end,
                timings_end,
                writes_end,
            }),
        }
        self.unclocked += 1;
        if self.own_ahead {
            own_ahead(&b.data, 512);
            own_ahead(&b.timings, 256);
        }
        if b.frames >= BATCH_FRAMES || b.data.len() >= CHUNK_BYTES || self.batch_is_old() {
            self.flush();
        }
    }

    /// Records the ending of episode `index`.
    pub fn end(&mut self, index: u64, finish: EpisodeFinish) {
        self.touch();
        let ended = Ended::new(finish, &mut self.batch.ends);
        self.batch.events.push(Event::End { index, ended });
        self.unclocked = CLOCK_EVERY_FRAMES;
        if self.batch.events.len() >= BATCH_FRAMES as usize || self.batch_is_old() {
            self.flush();
        }
    }

    /// Records training's per-step rows for episode `index`'s steps from
    /// `first_step` (a training run only: the rows go to `train_steps`).
    pub fn step_stats(&mut self, index: u64, first_step: u64, stats: &[StepStat]) {
        self.touch();
        let b = &mut *self.batch;
        b.stats.extend_from_slice(stats);
        b.events.push(Event::Stats {
            index,
            first_step,
            stats_end: b.stats.len(),
        });
    }

    /// Records a training update's metrics (a training run only).
    pub fn metrics(&mut self, update: u64, values: Vec<(String, f64)>) {
        self.touch();
        self.batch.events.push(Event::Metrics { update, values });
    }

    /// Sends what the writer holds and waits until the recorder has
    /// committed it and everything sent before; false when the recorder
    /// has stopped (its error comes back from [`Recorder::finish`]).
    pub fn sync(&mut self) -> bool {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.touch();
        self.batch.events.push(Event::Sync(tx));
        self.flush();
        self.alive && rx.recv().is_ok()
    }

    /// A batch's age counts from its first event.
    fn touch(&mut self) {
        if self.batch.events.is_empty() {
            self.since = Instant::now();
            self.since_tick = crate::engine::ticks();
            self.unclocked = 0;
        }
    }

    fn batch_is_old(&mut self) -> bool {
        if crate::engine::ticks().wrapping_sub(self.since_tick) >= BATCH_EVERY_TICKS {
            return true;
        }
        if self.unclocked >= CLOCK_EVERY_FRAMES {
            self.unclocked = 0;
            return self.since.elapsed() >= BATCH_EVERY;
        }
        false
    }

    /// Sends what the writer holds.
    pub fn flush(&mut self) {
        if !self.batch.events.is_empty() {
            let next = match self.spare.try_recv() {
                Ok(b) => b,
                Err(_) => Box::new(Batch::sized_like(&self.batch)),
            };
            let batch = std::mem::replace(&mut self.batch, next);
            self.alive &= self.tx.send(batch).is_ok();
        }
    }
}

impl Drop for FrameWriter {
    fn drop(&mut self) {
        self.flush();
    }
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

impl Episode {
    fn new(index: u64, seed: u64, (buf, timings): (Vec<u8>, Vec<u8>)) -> Episode {
        Episode {
            index,
            seed,
            hasher: blake3::Hasher::new(),
            buf,
            timings,
            buf_frames: 0,
            first_step: 0,
            next_step: 0,
            chunk: 0,
            seq: 0,
            agent_writes: Vec::new(),
        }
    }
}

/// A row to write at the next commit. Episodes are named by index; the
/// commit finds their ids (a training episode's row is made by its `Open`).
enum Op {
    Open {
        index: u64,
        seed: u64,
    },
    Chunk {
        index: u64,
        chunk: u32,
        first_step: u64,
        frames: u32,
        place: Place,
    },
    Write {
        index: u64,
        seq: u64,
        step: u64,
        write: MemoryWrite,
    },
    End {
        index: u64,
        row: EndRow,
        digest: String,
        final_observation: Option<Range<usize>>,
    },
    Stats {
        index: u64,
        first_step: u64,
        stats: Vec<StepStat>,
    },
    Metrics {
        update: u64,
        values: Vec<(String, f64)>,
        time: f64,
    },
}

/// Where a sealed chunk's bytes are.
enum Place {
    /// Compressed on its own: its frames and timings in [`Packer::blobs`].
    Own {
        data: Range<usize>,
        timings: Range<usize>,
    },
    /// In the commit's block number `slot` (see [`Packer::blocks`]), raw at
    /// `at`: `data_len` bytes of frames, then `timings_len` of timings.
    Block {
        slot: usize,
        at: usize,
        data_len: usize,
        timings_len: usize,
    },
}

/// What an episode's row gets when it ends.
struct EndRow {
    outcome: Outcome,
    return_: f64,
    length: u64,
    success: bool,
    error: Option<String>,
    task: String,
    reset_info: String,
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
        FrameWriter {
            tx: self.tx.clone(),
            spare: self.spare.clone(),
            batch: Box::default(),
            since: Instant::now(),
            since_tick: crate::engine::ticks(),
            unclocked: 0,
            own_ahead: own_ahead_supported(),
            alive: true,
        }
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

/// The recorder thread's state between commits.
struct Filer {
    /// Episodes in progress, by index.
    episodes: BTreeMap<u64, Episode>,
    /// Episode ids by index, as far as known.
    ids: HashMap<u64, i64>,
    /// A resumed training run's episodes that go on (their frames arrive
    /// without a start); `None` for other runs.
    reopen: Option<HashMap<u64, Episode>>,
    /// What the next commit writes.
    ops: Vec<Op>,
    /// The compressed bytes of `ops`.
    pack: Packer,
    /// Reports of the episodes that ended (ids filled in at the end).
    reports: Vec<EpisodeReport>,
    /// The `/agent` writes of finished episodes, by index.
    finished_writes: BTreeMap<u64, Vec<MemoryWrite>>,
    /// Buffers of ended episodes, for the next ones.
    free_bufs: Vec<(Vec<u8>, Vec<u8>)>,
    scratch: Vec<u8>,
    /// Writers waiting for the next commit.
    acks: Vec<Sender<()>>,
}

/// The compressed bytes of the next commit, and the block being filled.
struct Packer {
    /// Compressed chunks, blocks and final observations, back to back (one
    /// allocation per commit interval, not one per chunk).
    blobs: Vec<u8>,
    /// The closed blocks of this commit, by slot: where each is in `blobs`.
    blocks: Vec<Range<usize>>,
    /// The raw bytes of the open block (slot `blocks.len()`).
    block_raw: Vec<u8>,
    /// One compression context per level for the whole run: creating one per
    /// chunk costs more than compressing a small chunk.
    fast: zstd::bulk::Compressor<'static>,
    strong: zstd::bulk::Compressor<'static>,
    block: zstd::bulk::Compressor<'static>,
}

impl Filer {
    fn new(
        ids: HashMap<u64, i64>,
        reopen: Option<HashMap<u64, Episode>>,
    ) -> Result<Filer, StoreError> {
        let zstd = |level| {
            zstd::bulk::Compressor::new(level).map_err(|e| StoreError::Open {
                path: Default::default(),
                message: format!("zstd: {e}"),
            })
        };
        Ok(Filer {
            episodes: BTreeMap::new(),
            ids,
            reopen,
            ops: Vec::new(),
            pack: Packer {
                blobs: Vec::new(),
                blocks: Vec::new(),
                block_raw: Vec::new(),
                fast: zstd(ZSTD_FAST_LEVEL)?,
                strong: zstd(ZSTD_LEVEL)?,
                block: zstd(BLOCK_LEVEL)?,
            },
            reports: Vec::new(),
            finished_writes: BTreeMap::new(),
            free_bufs: Vec::new(),
            scratch: Vec::new(),
            acks: Vec::new(),
        })
    }

    /// The id of episode `index`, once its row exists.
    fn id(&self, index: u64) -> Result<i64, StoreError> {
        self.ids
            .get(&index)
            .copied()
            .ok_or_else(|| StoreError::Open {
                path: Default::default(),
                message: format!(
                    "the recorder got frames of episode {index}, which was never started"
                ),
            })
    }

    /// Files one stepping thread's batch: hashes and buffers frames, seals
    /// full chunks, and turns endings into digests and episode updates.
    fn take_batch(&mut self, batch: &mut Batch) {
        let (mut data_at, mut timings_at, mut writes_at, mut stats_at) = (0, 0, 0, 0);
        let mut writes = std::mem::take(&mut batch.writes).into_iter();
        let ends = &batch.ends;
        for event in batch.events.drain(..) {
            match event {
                Event::Start { index, seed } => {
                    let bufs = self.free_bufs.pop().unwrap_or_default();
                    self.episodes.insert(index, Episode::new(index, seed, bufs));
                    if self.reopen.is_some() {
                        self.ops.push(Op::Open { index, seed });
                    }
                }
                Event::Frames {
                    index,
                    frames,
                    data_end,
                    timings_end,
                    writes_end,
                } => {
                    let data = &batch.data[data_at..data_end];
                    let timings = &batch.timings[timings_at..timings_end];
                    let these = writes.by_ref().take(writes_end - writes_at);
                    (data_at, timings_at, writes_at) = (data_end, timings_end, writes_end);
                    if !self.episodes.contains_key(&index)
                        && let Some(ep) = self.reopen.as_mut().and_then(|r| r.remove(&index))
                    {
                        self.episodes.insert(index, ep);
                    }
                    let Some(ep) = self.episodes.get_mut(&index) else {
                        these.for_each(drop);
                        continue;
                    };
                    ep.hasher.update(data);
                    ep.buf.extend_from_slice(data);
                    ep.timings.extend_from_slice(timings);
                    ep.buf_frames += frames;
                    ep.next_step += u64::from(frames);
                    for (step, w) in these {
                        if w.path.starts_with("/agent/") {
                            ep.agent_writes.push(w.clone());
                        }
                        self.ops.push(Op::Write {
                            index,
                            seq: ep.seq,
                            step,
                            write: w,
                        });
                        ep.seq += 1;
                    }
                    if ep.buf_frames >= CHUNK_FRAMES || ep.buf.len() >= CHUNK_BYTES {
                        let op = self.pack.seal(ep);
                        self.ops.push(op);
                    }
                }
                Event::End { index, ended } => self.end(index, ended, ends),
                Event::Stats {
                    index,
                    first_step,
                    stats_end,
                } => {
                    let stats = batch.stats[stats_at..stats_end].to_vec();
                    stats_at = stats_end;
                    self.ops.push(Op::Stats {
                        index,
                        first_step,
                        stats,
                    });
                }
                Event::Metrics { update, values } => self.ops.push(Op::Metrics {
                    update,
                    values,
                    time: unix_time(),
                }),
                Event::Sync(ack) => self.acks.push(ack),
            }
        }
    }

    /// Files an episode's ending; `ends` holds its texts and final observation.
    fn end(&mut self, index: u64, ended: Ended, ends: &[u8]) {
        let Some(mut ep) = self.episodes.remove(&index) else {
            return;
        };
        if ep.buf_frames > 0 {
            let op = self.pack.seal(&mut ep);
            self.ops.push(op);
        }
        for w in &ended.end_writes {
            if w.path.starts_with("/agent/") {
                ep.agent_writes.push(w.clone());
            }
            self.ops.push(Op::Write {
                index,
                seq: ep.seq,
                step: ended.length,
                write: w.clone(),
            });
            ep.seq += 1;
        }
        let text = |r: &Range<usize>| String::from_utf8_lossy(&ends[r.clone()]).into_owned();
        let error = ended.error.as_ref().map(text);
        // The episode's ending is part of its digest too.
        self.scratch.clear();
        ending_digest_bytes(&ended, error.as_deref(), ends, &mut self.scratch);
        ep.hasher.update(&self.scratch);
        let digest = ep.hasher.finalize().to_hex()[..32].to_string();
        if matches!(ended.outcome, Outcome::Terminated | Outcome::Truncated) {
            self.finished_writes
                .insert(ep.index, std::mem::take(&mut ep.agent_writes));
        }
        self.reports.push(EpisodeReport {
            // Filled in when the recording ends (a training episode's row
            // may not exist yet).
            id: 0,
            index: ep.index,
            seed: ep.seed,
            outcome: ended.outcome,
            return_: ended.return_,
            length: ended.length,
            success: ended.success,
            digest: digest.clone(),
            error: error.clone(),
        });
        let final_observation = ended.final_observation.as_ref().map(|r| {
            let pack = &mut self.pack;
            pack_into(
                &ends[r.clone()],
                &mut pack.blobs,
                &mut pack.fast,
                &mut pack.strong,
            )
        });
        self.ops.push(Op::End {
            index,
            row: EndRow {
                outcome: ended.outcome,
                return_: ended.return_,
                length: ended.length,
                success: ended.success,
                error,
                task: text(&ended.task),
                reset_info: text(&ended.reset_info),
            },
            digest,
            final_observation,
        });
        ep.buf.clear();
        ep.timings.clear();
        if self.free_bufs.len() < 64 {
            self.free_bufs.push((ep.buf, ep.timings));
        }
    }

    /// Seals every episode's unsealed frames, so a commit holds all frames received.
    fn seal_partial_chunks(&mut self) {
        for ep in self.episodes.values_mut() {
            if ep.buf_frames > 0 {
                let op = self.pack.seal(ep);
                self.ops.push(op);
            }
        }
        self.pack.close_block();
    }

    fn commit(&mut self, db: &Db, run_id: &str) -> Result<(), StoreError> {
        if self.ops.is_empty() {
            return Ok(());
        }
        let blobs = &self.pack.blobs;
        let ids = &mut self.ids;
        let tx = db.conn.unchecked_transaction()?;
        {
            let mut block_ids = Vec::with_capacity(self.pack.blocks.len());
            let mut block = tx.prepare_cached("INSERT INTO frame_blocks (data) VALUES (?1)")?;
            for r in self.pack.blocks.drain(..) {
                block.execute([&blobs[r]])?;
                block_ids.push(tx.last_insert_rowid());
            }
            let mut chunk = tx.prepare_cached(
                "INSERT INTO frame_chunks (episode_id, chunk, first_step, frames, data, timings) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            let mut block_chunk = tx.prepare_cached(
                "INSERT INTO frame_chunks (episode_id, chunk, first_step, frames, data, timings, block, block_at, data_len, timings_len) VALUES (?1, ?2, ?3, ?4, X'', X'', ?5, ?6, ?7, ?8)",
            )?;
            let mut write = tx.prepare_cached(
                "INSERT INTO memory_writes (episode_id, seq, step, path, value) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            let mut end = tx.prepare_cached(
                "UPDATE episodes SET outcome = ?2, return = ?3, length = ?4, success = ?5, digest = ?6, error = ?7, task = ?8, reset_info = ?9, final_observation = ?10 WHERE id = ?1",
            )?;
            let missing = |index: u64| StoreError::Open {
                path: db.path().to_path_buf(),
                message: format!(
                    "the recorder got frames of episode {index}, which was never started"
                ),
            };
            for op in self.ops.drain(..) {
                let index = match &op {
                    Op::Metrics { .. } => None,
                    Op::Open { index, .. }
                    | Op::Chunk { index, .. }
                    | Op::Write { index, .. }
                    | Op::End { index, .. }
                    | Op::Stats { index, .. } => Some(*index),
                };
                let episode = match (&op, index) {
                    (Op::Open { .. }, _) | (_, None) => 0,
                    (_, Some(i)) => *ids.get(&i).ok_or_else(|| missing(i))?,
                };
                match op {
                    Op::Open { index, seed } => {
                        let existing: Option<i64> = tx
                            .prepare_cached(
                                "SELECT id FROM episodes WHERE run_id = ?1 AND idx = ?2",
                            )?
                            .query_row(params![run_id, index as i64], |r| r.get(0))
                            .optional()?;
                        let id = match existing {
                            Some(id) => id,
                            None => {
                                tx.prepare_cached(
                                    "INSERT INTO episodes (run_id, idx, seed, outcome) VALUES (?1, ?2, ?3, 'running')",
                                )?
                                .execute(params![run_id, index as i64, seed as i64])?;
                                tx.last_insert_rowid()
                            }
                        };
                        ids.insert(index, id);
                    }
                    Op::Chunk {
                        chunk: c,
                        first_step,
                        frames,
                        place: Place::Own { data, timings },
                        ..
                    } => {
                        chunk.execute(params![
                            episode,
                            c,
                            first_step as i64,
                            frames,
                            &blobs[data],
                            &blobs[timings]
                        ])?;
                    }
                    Op::Chunk {
                        chunk: c,
                        first_step,
                        frames,
                        place:
                            Place::Block {
                                slot,
                                at,
                                data_len,
                                timings_len,
                            },
                        ..
                    } => {
                        // Blocks close before a commit, so every slot has a row.
                        let block = block_ids.get(slot).copied();
                        block_chunk.execute(params![
                            episode,
                            c,
                            first_step as i64,
                            frames,
                            block,
                            at as i64,
                            data_len as i64,
                            timings_len as i64
                        ])?;
                    }
                    Op::Write {
                        seq,
                        step,
                        write: w,
                        ..
                    } => {
                        write.execute(params![
                            episode,
                            seq as i64,
                            step as i64,
                            w.path,
                            w.value
                        ])?;
                    }
                    Op::End {
                        row,
                        digest,
                        final_observation,
                        ..
                    } => {
                        end.execute(params![
                            episode,
                            row.outcome.as_str(),
                            Real(row.return_),
                            row.length as i64,
                            row.success,
                            digest,
                            row.error,
                            row.task,
                            row.reset_info,
                            final_observation.map(|r| &blobs[r])
                        ])?;
                    }
                    Op::Stats {
                        first_step, stats, ..
                    } => {
                        let mut ins = tx.prepare_cached(
                            "INSERT OR REPLACE INTO train_steps (episode_id, step, version, log_prob, value, advantage, lag) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                        )?;
                        for (i, s) in stats.iter().enumerate() {
                            ins.execute(params![
                                episode,
                                (first_step + i as u64) as i64,
                                s.version as i64,
                                Real(f64::from(s.log_prob)),
                                Real(f64::from(s.value)),
                                s.advantage.map(|a| Real(f64::from(a))),
                                s.lag as i64
                            ])?;
                        }
                    }
                    Op::Metrics {
                        update,
                        values,
                        time,
                    } => {
                        let mut ins = tx.prepare_cached(
                            "INSERT OR REPLACE INTO train_metrics (run_id, update_no, name, value, time) VALUES (?1, ?2, ?3, ?4, ?5)",
                        )?;
                        for (name, value) in values {
                            ins.execute(params![run_id, update as i64, name, Real(value), time])?;
                        }
                    }
                }
            }
        }
        tx.commit()?;
        self.pack.blobs.clear();
        Ok(())
    }
}

/// Appends what an episode's ending adds to its digest: the postcard
/// encoding of (outcome, return bits, length, success, error, final
/// observation, end writes), the final observation taken as the bytes the
/// stepping thread encoded.
fn ending_digest_bytes(ended: &Ended, error: Option<&str>, ends: &[u8], out: &mut Vec<u8>) {
    postcard_into(
        &(
            ended.outcome.as_str(),
            ended.return_.to_bits(),
            ended.length,
            ended.success,
            error,
        ),
        out,
    );
    // postcard writes an option as 0, or 1 and the value.
    match &ended.final_observation {
        None => out.push(0),
        Some(r) => {
            out.push(1);
            out.extend_from_slice(&ends[r.clone()]);
        }
    }
    postcard_into(&ended.end_writes, out);
}

impl Packer {
    /// Seals `ep`'s buffered frames as its next chunk: into the open block
    /// when they are few bytes, compressed on their own otherwise.
    fn seal(&mut self, ep: &mut Episode) -> Op {
        let place = if ep.buf.len() + ep.timings.len() < BLOCK_BELOW {
            let at = self.block_raw.len();
            self.block_raw.extend_from_slice(&ep.buf);
            self.block_raw.extend_from_slice(&ep.timings);
            let place = Place::Block {
                slot: self.blocks.len(),
                at,
                data_len: ep.buf.len(),
                timings_len: ep.timings.len(),
            };
            if self.block_raw.len() >= BLOCK_BYTES {
                self.close_block();
            }
            place
        } else {
            Place::Own {
                data: pack_into(&ep.buf, &mut self.blobs, &mut self.fast, &mut self.strong),
                timings: pack_into(
                    &ep.timings,
                    &mut self.blobs,
                    &mut self.fast,
                    &mut self.strong,
                ),
            }
        };
        let op = Op::Chunk {
            index: ep.index,
            chunk: ep.chunk,
            first_step: ep.first_step,
            frames: ep.buf_frames,
            place,
        };
        ep.chunk += 1;
        ep.buf.clear();
        ep.timings.clear();
        ep.buf_frames = 0;
        ep.first_step = ep.next_step;
        op
    }

    /// Compresses the open block into `blobs` as the next slot.
    fn close_block(&mut self) {
        if self.block_raw.is_empty() {
            return;
        }
        let r = pack_into(
            &self.block_raw,
            &mut self.blobs,
            &mut self.block,
            &mut self.strong,
        );
        self.blocks.push(r);
        self.block_raw.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
                        outcome: Outcome::Truncated,
                        return_: 1.0,
                        length: u64::from(length),
                        success: true,
                        error: None,
                        task: String::new(),
                        reset_info: "{}".into(),
                        final_observation: None,
                        end_writes: Vec::new(),
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
