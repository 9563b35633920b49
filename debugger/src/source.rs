//! Where a session's frames come from: a recorded episode in a database
//! ([`Recording`], read through `ludus_arena::store`), or frames held in
//! memory ([`Frames`], for live episodes and tests).

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, OnceLock};

use ludus_arena::codec::FrameFields;
use ludus_arena::memory::{MemoryBase, apply_writes};
use ludus_arena::model::{Frame, Timing};
use ludus_arena::store::{ChunkInfo, Db, EpisodeRow, RunRow};

use crate::DebugError;
use crate::view::EpisodeMeta;

/// A block of consecutive frames: the index of its first frame, and the frames.
pub type Block = (u64, Arc<Vec<(Frame, Timing)>>);

/// An episode's frames and memory, by frame index.
pub trait FrameSource: Send {
    /// Number of frames.
    fn len(&self) -> u64;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The block of frames that holds frame `k` (`k < len`).
    fn block(&self, k: u64) -> Result<Block, DebugError>;
    /// The blocks from the one holding frame `k` to the end, in order, for
    /// scans. A recording reads and decodes them ahead on another thread,
    /// decoding only `fields` (the others read as empty); other sources may
    /// hand out whole frames.
    fn blocks_from(
        &self,
        k: u64,
        fields: FrameFields,
    ) -> Box<dyn Iterator<Item = Result<Block, DebugError>> + '_> {
        let _ = fields;
        sequential_blocks(self, k)
    }
    /// The memory the episode started from.
    fn start_memory(&self) -> BTreeMap<String, String>;
    /// The memory after frame `k`'s writes.
    fn memory_after(&self, k: u64) -> Result<BTreeMap<String, String>, DebugError>;
    /// Every path the episode writes or deletes at some frame, sorted.
    fn written_paths(&self) -> Result<Arc<Vec<String>>, DebugError>;
    fn meta(&self) -> EpisodeMeta;
}

/// Blocks read one after the other on the calling thread.
fn sequential_blocks<S: FrameSource + ?Sized>(
    source: &S,
    k: u64,
) -> Box<dyn Iterator<Item = Result<Block, DebugError>> + '_> {
    let mut next = k;
    let len = source.len();
    Box::new(std::iter::from_fn(move || {
        if next >= len {
            return None;
        }
        let b = source.block(next);
        match &b {
            Ok((first, frames)) if !frames.is_empty() => next = first + frames.len() as u64,
            _ => next = len,
        }
        Some(b)
    }))
}

/// `/user` with `/agent` over it: the memory an episode starts from.
pub(crate) fn merged(base: &MemoryBase) -> BTreeMap<String, String> {
    let mut all = BTreeMap::clone(&base.user);
    all.extend(base.agent.iter().map(|(k, v)| (k.clone(), v.clone())));
    all
}

/// A decoded chunk, shared with the scans and views that use it.
type DecodedChunk = Arc<Vec<(Frame, Timing)>>;

/// Decoded chunks kept around, so stepping back and forth stays cheap.
const CACHED_CHUNKS: usize = 8;

/// A recorded episode in a ludus database. Opening reads the episode's row
/// and the index of its chunks, nothing more; frames are decoded a chunk at a
/// time when first needed, and the memory at a frame is rebuilt from the
/// last write of each path up to it (an indexed lookup per path).
pub struct Recording {
    db: Db,
    pub episode: EpisodeRow,
    pub run: RunRow,
    chunks: Vec<ChunkInfo>,
    len: u64,
    base: MemoryBase,
    start: BTreeMap<String, String>,
    paths: OnceLock<Arc<Vec<String>>>,
    cache: RefCell<VecDeque<(u32, DecodedChunk)>>,
}

impl Recording {
    pub fn open(db_path: &Path, episode: i64) -> Result<Recording, DebugError> {
        let db = Db::open_read_only(db_path)?;
        let row = db.episode(episode)?;
        let run = db.run(&row.run_id)?;
        let chunks = db.chunk_index(episode)?;
        let len = chunks.iter().map(|c| u64::from(c.frames)).sum();
        let base = db.episode_base_memory(&row)?;
        let start = merged(&base);
        Ok(Recording {
            db,
            episode: row,
            run,
            chunks,
            len,
            base,
            start,
            paths: OnceLock::new(),
            cache: RefCell::new(VecDeque::new()),
        })
    }

    pub fn base(&self) -> &MemoryBase {
        &self.base
    }

    pub fn db_path(&self) -> &Path {
        self.db.path()
    }
}

impl FrameSource for Recording {
    fn len(&self) -> u64 {
        self.len
    }

    fn block(&self, k: u64) -> Result<Block, DebugError> {
        let i = self
            .chunks
            .partition_point(|c| c.first_step + u64::from(c.frames) <= k);
        let Some(info) = self.chunks.get(i) else {
            return Err(DebugError::Invalid(format!(
                "frame {k} is past the end of episode {} ({} frames)",
                self.episode.id, self.len
            )));
        };
        if let Some((_, frames)) = self.cache.borrow().iter().find(|(c, _)| *c == info.chunk) {
            return Ok((info.first_step, frames.clone()));
        }
        let frames = Arc::new(self.db.chunk_frames(self.episode.id, info.chunk)?);
        let mut cache = self.cache.borrow_mut();
        if cache.len() >= CACHED_CHUNKS {
            cache.pop_front();
        }
        cache.push_back((info.chunk, frames.clone()));
        Ok((info.first_step, frames))
    }

    fn blocks_from(
        &self,
        k: u64,
        fields: FrameFields,
    ) -> Box<dyn Iterator<Item = Result<Block, DebugError>> + '_> {
        // Reading and decoding chunks costs more than evaluating most
        // breakpoints: a second connection does it ahead, on another core,
        // and skips what the breakpoints do not read.
        let i = self
            .chunks
            .partition_point(|c| c.first_step + u64::from(c.frames) <= k);
        let chunks: Vec<ChunkInfo> = self.chunks.get(i..).unwrap_or_default().to_vec();
        let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Block, DebugError>>(4);
        let path = self.db.path().to_path_buf();
        let episode = self.episode.id;
        let spawned = std::thread::Builder::new()
            .name("ludus-scan-reader".into())
            .spawn(move || {
                let db = match Db::open_read_only(&path) {
                    Ok(db) => db,
                    Err(e) => {
                        let _ = tx.send(Err(e.into()));
                        return;
                    }
                };
                for c in chunks {
                    let block = db
                        .chunk_frames_with(episode, c.chunk, fields)
                        .map(|frames| (c.first_step, Arc::new(frames)))
                        .map_err(DebugError::from);
                    // The scan stopped (a hit): stop reading.
                    if tx.send(block).is_err() {
                        return;
                    }
                }
            });
        match spawned {
            Ok(_) => Box::new(rx.into_iter()),
            Err(e) => {
                tracing::debug!("no read-ahead thread ({e}); scanning on one thread");
                sequential_blocks(self, k)
            }
        }
    }

    fn start_memory(&self) -> BTreeMap<String, String> {
        self.start.clone()
    }

    fn memory_after(&self, k: u64) -> Result<BTreeMap<String, String>, DebugError> {
        let paths = self.written_paths()?;
        let writes = self.db.last_writes(self.episode.id, &paths, k)?;
        let mut memory = self.start.clone();
        apply_writes(
            &mut memory,
            writes.iter().map(|(p, v)| (p.as_str(), v.as_deref())),
        );
        Ok(memory)
    }

    fn written_paths(&self) -> Result<Arc<Vec<String>>, DebugError> {
        if let Some(p) = self.paths.get() {
            return Ok(p.clone());
        }
        let paths = Arc::new(self.db.written_paths(self.episode.id)?);
        Ok(self.paths.get_or_init(|| paths).clone())
    }

    fn meta(&self) -> EpisodeMeta {
        let e = &self.episode;
        EpisodeMeta {
            id: e.id,
            outcome: e.outcome.clone(),
            length: e.length,
            return_: e.return_,
            success: e.success,
            seed: e.seed,
        }
    }
}

/// Frames held in memory: a live episode as it is played, or frames from
/// anywhere else.
pub struct Frames {
    pub frames: Vec<(Frame, Timing)>,
    pub start: BTreeMap<String, String>,
    pub meta: EpisodeMeta,
}

/// Frames per block handed out by [`Frames`].
const BLOCK: u64 = 512;

impl FrameSource for Frames {
    fn len(&self) -> u64 {
        self.frames.len() as u64
    }

    fn block(&self, k: u64) -> Result<Block, DebugError> {
        if k >= self.len() {
            return Err(DebugError::Invalid(format!(
                "frame {k} is past the end ({} frames)",
                self.len()
            )));
        }
        let first = k / BLOCK * BLOCK;
        let end = (first + BLOCK).min(self.len());
        Ok((
            first,
            Arc::new(self.frames[first as usize..end as usize].to_vec()),
        ))
    }

    fn start_memory(&self) -> BTreeMap<String, String> {
        self.start.clone()
    }

    fn memory_after(&self, k: u64) -> Result<BTreeMap<String, String>, DebugError> {
        let mut memory = self.start.clone();
        for (f, _) in self.frames.iter().take(k as usize + 1) {
            apply_writes(
                &mut memory,
                f.memory_writes
                    .iter()
                    .map(|w| (w.path.as_str(), w.value.as_deref())),
            );
        }
        Ok(memory)
    }

    fn written_paths(&self) -> Result<Arc<Vec<String>>, DebugError> {
        let mut paths: Vec<String> = self
            .frames
            .iter()
            .flat_map(|(f, _)| f.memory_writes.iter().map(|w| w.path.clone()))
            .collect();
        paths.sort();
        paths.dedup();
        Ok(Arc::new(paths))
    }

    fn meta(&self) -> EpisodeMeta {
        self.meta.clone()
    }
}
