//! The stepping thread's side of the recorder: [`FrameWriter`] encodes
//! frames and sends them, with episode starts, endings and training rows, in
//! batches the recorder thread hands back emptied.

use super::*;

pub(crate) type Msg = Box<Batch>;

/// What one stepping thread sends in one message: the frames of any number of
/// episodes (a CartPole episode is a few dozen frames, so one message carries
/// many), their starts and their endings, in the order they happened.
#[derive(Default)]
pub(crate) struct Batch {
    pub(super) events: Vec<Event>,
    /// postcard-encoded `Frame`s, back to back: what the digest hashes.
    pub(super) data: Vec<u8>,
    /// postcard-encoded `Timing`s, back to back (not part of the digest).
    pub(super) timings: Vec<u8>,
    /// Memory writes with their step.
    pub(super) writes: Vec<(u64, MemoryWrite)>,
    /// Model calls with their step.
    pub(super) calls: Vec<(u64, ModelCall)>,
    /// The texts and final observations of the episodes that end in this
    /// batch, back to back (see [`Ended`]).
    pub(super) ends: Vec<u8>,
    /// Frames in `data`.
    pub(super) frames: u32,
    /// Training's per-step rows (see [`Event::Stats`]).
    pub(super) stats: Vec<StepStat>,
}

/// Episodes are named by their index in the run: a run's rows exist before
/// it starts, a training run's are made as its episodes start.
pub(super) enum Event {
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
        calls_end: usize,
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
pub(super) struct Ended {
    pub(super) outcome: Outcome,
    pub(super) return_: f64,
    pub(super) length: u64,
    pub(super) success: bool,
    pub(super) error: Option<Range<usize>>,
    pub(super) task: Range<usize>,
    pub(super) reset_info: Range<usize>,
    /// The final observation, postcard-encoded.
    pub(super) final_observation: Option<Range<usize>>,
    /// Memory writes at the end (agents with memory only; an empty vector
    /// owns no allocation).
    pub(super) end_writes: Vec<MemoryWrite>,
}

impl Ended {
    /// Copies `finish`'s texts and final observation into `ends`; `finish`
    /// is dropped here, on the stepping thread.
    pub(super) fn new(finish: EpisodeFinish, ends: &mut Vec<u8>) -> Ended {
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
            calls: Vec::new(),
            ends: Vec::with_capacity(like.ends.capacity()),
            frames: 0,
            stats: Vec::new(),
        }
    }

    pub(super) fn clear(&mut self) {
        self.events.clear();
        self.data.clear();
        self.timings.clear();
        self.writes.clear();
        self.calls.clear();
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
pub(super) const SPARE_BATCHES: usize = 64;

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
    /// A writer sending to the recorder on `tx`, refilling from `spare`.
    pub(super) fn new(tx: Sender<Msg>, spare: Receiver<Msg>) -> FrameWriter {
        FrameWriter {
            tx,
            spare,
            batch: Box::default(),
            since: Instant::now(),
            since_tick: crate::engine::ticks(),
            unclocked: 0,
            own_ahead: own_ahead_supported(),
            alive: true,
        }
    }

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
        for c in &frame.model_calls {
            b.calls.push((u64::from(frame.step), c.clone()));
        }
        b.frames += 1;
        let (data_end, timings_end, writes_end, calls_end) =
            (b.data.len(), b.timings.len(), b.writes.len(), b.calls.len());
        match b.events.last_mut() {
            Some(Event::Frames {
                index: e,
                frames,
                data_end: d,
                timings_end: t,
                writes_end: w,
                calls_end: c,
            }) if *e == index => {
                *frames += 1;
                (*d, *t, *w, *c) = (data_end, timings_end, writes_end, calls_end);
            }
            _ => b.events.push(Event::Frames {
                index,
                frames: 1,
                data_end,
                timings_end,
                writes_end,
                calls_end,
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
