//! The recorder thread's side: [`Filer`] takes the writers' batches,
//! hashes each episode's frames into its digest, seals them into chunks
//! and blocks, and writes everything of one commit interval in one
//! transaction.

use super::writer::{Batch, Ended, Event};
use super::*;

pub(super) struct Episode {
    pub(super) index: u64,
    pub(super) seed: u64,
    pub(super) hasher: blake3::Hasher,
    pub(super) buf: Vec<u8>,
    pub(super) timings: Vec<u8>,
    pub(super) buf_frames: u32,
    pub(super) first_step: u64,
    pub(super) next_step: u64,
    pub(super) chunk: u32,
    pub(super) seq: u64,
    pub(super) agent_writes: Vec<MemoryWrite>,
    /// The digest of the episode's model calls, when it made any: folded
    /// into the episode's digest at its end, so an episode without calls
    /// digests as it always did.
    pub(super) calls_hasher: Option<blake3::Hasher>,
    pub(super) model: ModelTotals,
    /// The next model call's index within its step, and that step.
    pub(super) call_at: (u64, u32),
}

impl Episode {
    pub(super) fn new(index: u64, seed: u64, (buf, timings): (Vec<u8>, Vec<u8>)) -> Episode {
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
            calls_hasher: None,
            model: ModelTotals::default(),
            call_at: (0, 0),
        }
    }
}

/// A row to write at the next commit. Episodes are named by index; the
/// commit finds their ids (a training episode's row is made by its `Open`).
pub(super) enum Op {
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
    Call {
        index: u64,
        step: u64,
        idx: u32,
        call: Box<ModelCall>,
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
pub(super) enum Place {
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
pub(super) struct EndRow {
    outcome: Outcome,
    return_: f64,
    length: u64,
    success: bool,
    error: Option<String>,
    task: String,
    reset_info: String,
}

/// The recorder thread's state between commits.
pub(super) struct Filer {
    /// Episodes in progress, by index.
    pub(super) episodes: BTreeMap<u64, Episode>,
    /// Episode ids by index, as far as known.
    pub(super) ids: HashMap<u64, i64>,
    /// A resumed training run's episodes that go on (their frames arrive
    /// without a start); `None` for other runs.
    pub(super) reopen: Option<HashMap<u64, Episode>>,
    /// What the next commit writes.
    pub(super) ops: Vec<Op>,
    /// The compressed bytes of `ops`.
    pub(super) pack: Packer,
    /// Reports of the episodes that ended (ids filled in at the end).
    pub(super) reports: Vec<EpisodeReport>,
    /// The `/agent` writes of finished episodes, by index.
    pub(super) finished_writes: BTreeMap<u64, Vec<MemoryWrite>>,
    /// Buffers of ended episodes, for the next ones.
    pub(super) free_bufs: Vec<(Vec<u8>, Vec<u8>)>,
    pub(super) scratch: Vec<u8>,
    /// Writers waiting for the next commit.
    pub(super) acks: Vec<Sender<()>>,
}

/// The compressed bytes of the next commit, and the block being filled.
pub(super) struct Packer {
    /// Compressed chunks, blocks and final observations, back to back (one
    /// allocation per commit interval, not one per chunk).
    pub(super) blobs: Vec<u8>,
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
    pub(super) fn new(
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
    pub(super) fn id(&self, index: u64) -> Result<i64, StoreError> {
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
    pub(super) fn take_batch(&mut self, batch: &mut Batch) {
        let (mut data_at, mut timings_at, mut writes_at, mut stats_at) = (0, 0, 0, 0);
        let mut calls_at = 0;
        let mut writes = std::mem::take(&mut batch.writes).into_iter();
        let mut calls = std::mem::take(&mut batch.calls).into_iter();
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
                    calls_end,
                } => {
                    let data = &batch.data[data_at..data_end];
                    let timings = &batch.timings[timings_at..timings_end];
                    let these = writes.by_ref().take(writes_end - writes_at);
                    let these_calls: Vec<(u64, ModelCall)> =
                        calls.by_ref().take(calls_end - calls_at).collect();
                    (data_at, timings_at, writes_at, calls_at) =
                        (data_end, timings_end, writes_end, calls_end);
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
                    for (step, call) in these_calls {
                        self.scratch.clear();
                        crate::codec::varint(&mut self.scratch, step);
                        crate::codec::call_digest_bytes(&call, &mut self.scratch);
                        ep.calls_hasher
                            .get_or_insert_with(blake3::Hasher::new)
                            .update(&self.scratch);
                        ep.model.add(&call);
                        let idx = if ep.call_at.0 == step {
                            ep.call_at.1
                        } else {
                            0
                        };
                        ep.call_at = (step, idx + 1);
                        self.ops.push(Op::Call {
                            index,
                            step,
                            idx,
                            call: Box::new(call),
                        });
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
        if let Some(calls) = &ep.calls_hasher {
            ep.hasher.update(b"model-calls");
            ep.hasher.update(calls.finalize().as_bytes());
        }
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
            model: ep.model,
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
    pub(super) fn seal_partial_chunks(&mut self) {
        for ep in self.episodes.values_mut() {
            if ep.buf_frames > 0 {
                let op = self.pack.seal(ep);
                self.ops.push(op);
            }
        }
        self.pack.close_block();
    }

    pub(super) fn commit(&mut self, db: &Db, run_id: &str) -> Result<(), StoreError> {
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
            let mut image_row = tx.prepare_cached(
                "INSERT OR IGNORE INTO model_images (key, width, height, channels, data) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            let mut call_row = tx.prepare_cached(
                "INSERT INTO model_calls (episode_id, step, idx, role, endpoint, outcome, tokens_in, tokens_out, cost_usd, latency_ms, served, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
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
                    | Op::Call { index, .. }
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
                    Op::Call {
                        step, idx, call, ..
                    } => {
                        // Each image a request carries as pixels is stored
                        // once, whatever number of calls send it.
                        let mut stored = *call;
                        for (key, img) in crate::codec::split_images(&mut stored) {
                            image_row.execute(params![
                                &key[..],
                                img.width,
                                img.height,
                                img.channels,
                                crate::codec::zstd_or_raw(&img.pixels, 1)
                            ])?;
                        }
                        let call = stored;
                        call_row.execute(params![
                            episode,
                            step as i64,
                            idx,
                            call.role.as_str(),
                            call.request.endpoint,
                            call.error_kind().unwrap_or("ok"),
                            call.tokens_in() as i64,
                            call.tokens_out() as i64,
                            Real(call.cost_usd),
                            Real(call.latency_ms),
                            format!("{:?}", call.served).to_lowercase(),
                            crate::codec::encode_call(&call)
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
pub(super) fn ending_digest_bytes(
    ended: &Ended,
    error: Option<&str>,
    ends: &[u8],
    out: &mut Vec<u8>,
) {
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
