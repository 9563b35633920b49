//! The recorded frame format, in one place: how a [`Frame`] and its
//! [`Timing`] become bytes (postcard, the contract's WIT field order, with
//! the common parts written directly), how those bytes are wrapped in zstd
//! frames, and how they read back, whole or field by field. The store keeps
//! these bytes in chunks and blocks (its schema); the digest of an episode
//! hashes exactly the encoded frames. Pure: no SQLite, no I/O.

use std::ops::Range;

use crate::model::{Action, Frame, ModelCall, Observation, Timing, Value};

/// The version of the frame encoding: postcard of the contract's types in
/// their WIT order. A change to it needs a new version and a reader for the
/// old one (recordings are kept for years); the store's schema version
/// counts table layouts, not this.
pub const FRAME_FORMAT: u32 = 1;

/// Data under this many bytes is stored in a zstd frame uncompressed.
pub(crate) const RAW_BELOW: usize = 256;
/// Data under this many bytes is compressed with the fast compressor
/// (see [`pack_into`]).
pub(crate) const FAST_BELOW: usize = 64 << 10;

/// Whether two recorded values are the same, bit for bit: what the
/// recording would hold for each. Unlike `==`, a NaN equals the same NaN (a
/// recorded episode with a NaN in it is the same as itself), and `0.0` and
/// `-0.0` differ.
pub fn same_bits<T: serde::Serialize + ?Sized>(a: &T, b: &T) -> bool {
    let (mut x, mut y) = (Vec::new(), Vec::new());
    postcard_into(a, &mut x);
    postcard_into(b, &mut y);
    x == y
}

/// [`same_bits`] for frames, through the recorder's own encoder, model
/// calls included (as the digest sees them).
pub fn same_frame(a: &Frame, b: &Frame) -> bool {
    let (mut x, mut y) = (Vec::new(), Vec::new());
    encode_frame(a, &mut x);
    encode_frame(b, &mut y);
    x == y
        && a.model_calls.len() == b.model_calls.len()
        && a.model_calls
            .iter()
            .zip(&b.model_calls)
            .all(|(p, q)| same_call(p, q))
}

/// What the episode digest hashes of a model call: postcard of its role,
/// request and result (its latency, cost and retries vary between plays).
pub fn call_digest_bytes(call: &ModelCall, out: &mut Vec<u8>) {
    postcard_into(&(call.role, &call.request, &call.result), out);
}

/// Whether two model calls are the same for the digest: same role, request
/// and result, bit for bit.
pub fn same_call(a: &ModelCall, b: &ModelCall) -> bool {
    let (mut x, mut y) = (Vec::new(), Vec::new());
    call_digest_bytes(a, &mut x);
    call_digest_bytes(b, &mut y);
    x == y
}

/// A model call as stored in its row: zstd of its postcard encoding (the
/// frame's bytes do not hold its calls; their digest covers them, see
/// [`call_digest_bytes`]).
pub(crate) fn encode_call(call: &ModelCall) -> Vec<u8> {
    let mut raw = Vec::new();
    postcard_into(call, &mut raw);
    zstd_or_raw(&raw, 3)
}

/// `raw` as one zstd frame: compressed at `level`, or stored raw should the
/// compressor fail (either reads back with [`decompress`]).
pub(crate) fn zstd_or_raw(raw: &[u8], level: i32) -> Vec<u8> {
    zstd::bulk::compress(raw, level).unwrap_or_else(|_| {
        let mut out = Vec::new();
        raw_frame(raw, &mut out);
        out
    })
}

/// Reads a model call [`encode_call`] wrote.
pub(crate) fn decode_call(data: &[u8]) -> Result<ModelCall, String> {
    postcard::from_bytes(&decompress(data)?).map_err(|e| e.to_string())
}

/// Takes the pixels of the images a call's request carries out of it, so
/// that each image is stored once however many calls send it: each such
/// part becomes `Image { channels: 0, pixels: KEY }` (no image has 0
/// channels; KEY is [`image_key`]), and the images come back with their
/// keys. Images that refer to the observation hold no pixels and stay.
pub(crate) fn split_images(call: &mut ModelCall) -> Vec<([u8; 32], crate::model::Image)> {
    let mut out = Vec::new();
    for m in &mut call.request.messages {
        for part in &mut m.content {
            if let crate::model::ContentPart::Image(img) = part {
                let key = image_key(img);
                let stored = crate::model::Image {
                    width: img.width,
                    height: img.height,
                    channels: 0,
                    pixels: key.to_vec(),
                };
                out.push((key, std::mem::replace(img, stored)));
            }
        }
    }
    out
}

/// Puts back the images [`split_images`] took out, from `lookup` (by key).
pub(crate) fn join_images(
    call: &mut ModelCall,
    mut lookup: impl FnMut(&[u8]) -> Result<Option<crate::model::Image>, String>,
) -> Result<(), String> {
    for m in &mut call.request.messages {
        for part in &mut m.content {
            if let crate::model::ContentPart::Image(img) = part
                && img.channels == 0
                && img.pixels.len() == 32
            {
                *img = lookup(&img.pixels)?.ok_or_else(|| {
                    "a model call's image is missing from the recording".to_string()
                })?;
            }
        }
    }
    Ok(())
}

/// An image's key: blake3 of its size, channels and pixels.
pub(crate) fn image_key(img: &crate::model::Image) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(&img.width.to_le_bytes());
    h.update(&img.height.to_le_bytes());
    h.update(&img.channels.to_le_bytes());
    h.update(&img.pixels);
    *h.finalize().as_bytes()
}

/// Appends `timing` postcard-encoded (three LEB128 integers).
#[inline]
pub(crate) fn encode_timing(timing: &Timing, out: &mut Vec<u8>) {
    for ns in [timing.act_ns, timing.step_ns, timing.score_ns] {
        varint(out, ns);
    }
}

/// Appends `frame` postcard-encoded, byte for byte what `postcard` writes
/// (the digest hashes these bytes), with the common parts (vector and
/// discrete values and actions, empty logs and writes) written directly:
/// serde's generic path costs a twentieth of a CartPole step.
pub(crate) fn encode_frame(frame: &Frame, out: &mut Vec<u8>) {
    varint(out, u64::from(frame.step));
    encode_observation(&frame.observation, out);
    match &frame.action {
        Action::Discrete(a) => {
            out.push(0);
            varint(out, u64::from(*a));
        }
        Action::Continuous(v) => {
            out.push(1);
            floats(out, v);
        }
        other => postcard_into(other, out),
    }
    out.extend_from_slice(&frame.env_reward.to_le_bytes());
    out.extend_from_slice(&frame.reward.to_le_bytes());
    out.push(u8::from(frame.terminated));
    out.push(u8::from(frame.truncated));
    string(out, &frame.info);
    match frame.success {
        None => out.push(0),
        Some(b) => out.extend_from_slice(&[1, u8::from(b)]),
    }
    match &frame.note {
        None => out.push(0),
        Some(n) => {
            out.push(1);
            string(out, n);
        }
    }
    if frame.logs.is_empty() {
        out.push(0);
    } else {
        postcard_into(&frame.logs, out);
    }
    if frame.memory_writes.is_empty() {
        out.push(0);
    } else {
        postcard_into(&frame.memory_writes, out);
    }
}

/// Appends `observation` postcard-encoded, the common parts written directly
/// (see [`encode_frame`]).
pub(crate) fn encode_observation(observation: &Observation, out: &mut Vec<u8>) {
    varint(out, observation.len() as u64);
    for part in observation {
        string(out, &part.name);
        match &part.value {
            Value::Discrete(d) => {
                out.push(0);
                varint(out, u64::from(*d));
            }
            Value::Vector(v) => {
                out.push(1);
                floats(out, v);
            }
            other => postcard_into(other, out),
        }
    }
}

pub(crate) fn postcard_into<T: serde::Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) {
    let at = out.len();
    // postcard into a Vec cannot fail for these plain data types; should it,
    // the value is left out rather than the buffer lost.
    match postcard::to_extend(value, std::mem::take(out)) {
        Ok(v) => *out = v,
        Err(_) => out.truncate(at),
    }
}

/// postcard's unsigned integers: LEB128.
pub(crate) fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn string(out: &mut Vec<u8>, s: &str) {
    varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

fn floats(out: &mut Vec<u8>, v: &[f32]) {
    varint(out, v.len() as u64);
    out.reserve(v.len() * 4);
    for x in v {
        out.extend_from_slice(&x.to_le_bytes());
    }
}

/// Appends `raw` to `blobs` as one zstd frame and returns where it is:
/// stored as it is when it is tiny (compressing a few hundred bytes saves
/// next to nothing and costs more than everything else the recorder does
/// with them), compressed at a fast level when it is small (a short episode's
/// chunk), at the normal level when it is large (pixels). Every zstd decoder
/// reads all three.
pub(crate) fn pack_into(
    raw: &[u8],
    blobs: &mut Vec<u8>,
    fast: &mut zstd::bulk::Compressor<'static>,
    strong: &mut zstd::bulk::Compressor<'static>,
) -> Range<usize> {
    let start = blobs.len();
    if raw.len() < RAW_BELOW {
        raw_frame(raw, blobs);
        return start..blobs.len();
    }
    let zstd = if raw.len() < FAST_BELOW { fast } else { strong };
    blobs.reserve(zstd::zstd_safe::compress_bound(raw.len()));
    let mut out = std::io::Cursor::new(&mut *blobs);
    out.set_position(start as u64);
    match zstd.compress_to_buffer(raw, &mut out) {
        Ok(_) => start..blobs.len(),
        // Compressing into a large enough buffer does not fail; store it
        // raw if it did.
        Err(_) => {
            blobs.truncate(start);
            raw_frame(raw, blobs);
            start..blobs.len()
        }
    }
}

/// Appends `raw` to `out` as a zstd frame of raw (stored) blocks, as zstd
/// itself writes incompressible data, without spending the time to find out.
pub(crate) fn raw_frame(raw: &[u8], out: &mut Vec<u8>) {
    /// The largest block zstd allows.
    const MAX_BLOCK: usize = 128 << 10;
    out.reserve(raw.len() + 16 + 3 * (raw.len() / MAX_BLOCK));
    out.extend_from_slice(&0xFD2F_B528u32.to_le_bytes());
    // Frame header descriptor: an 8-byte content size, a single segment (so
    // no window descriptor), no checksum, no dictionary.
    out.push(0b1110_0000);
    out.extend_from_slice(&(raw.len() as u64).to_le_bytes());
    if raw.is_empty() {
        // One empty last raw block.
        out.extend_from_slice(&[1, 0, 0]);
        return;
    }
    let mut blocks = raw.chunks(MAX_BLOCK).peekable();
    while let Some(block) = blocks.next() {
        // Block header, 3 bytes little-endian: last-block bit, type 0 (raw), size.
        let header = u32::from(blocks.peek().is_none()) | ((block.len() as u32) << 3);
        out.extend_from_slice(&header.to_le_bytes()[..3]);
        out.extend_from_slice(block);
    }
}

/// Appends the frames of one compressed chunk to `out`.
#[cfg(test)]
pub(crate) fn decode_chunk(
    data: &[u8],
    timings: &[u8],
    out: &mut Vec<(Frame, Timing)>,
) -> Result<(), String> {
    decode_chunk_fields(data, timings, FrameFields::ALL, out)
}

/// The parts of a frame a reader needs. Decoding skips the others without
/// allocating (they read as empty: no observation parts, no logs, no memory
/// writes, an empty info), which makes a breakpoint scan over `reward` or
/// `step` several times cheaper than decoding whole frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameFields {
    pub observation: bool,
    pub info: bool,
    pub logs: bool,
    pub memory_writes: bool,
    /// Model calls (kept beside the frames; the store attaches them).
    pub model_calls: bool,
}

impl FrameFields {
    pub const ALL: FrameFields = FrameFields {
        observation: true,
        info: true,
        logs: true,
        memory_writes: true,
        model_calls: true,
    };
}

/// The most bytes one stored blob may decompress to. A damaged or hostile
/// file could otherwise hold a few bytes that expand without end.
const MAX_DECOMPRESSED: u64 = 1 << 30;

/// Decompresses one zstd frame, sized from its header when it says its size,
/// and never to more than [`MAX_DECOMPRESSED`] bytes.
pub(crate) fn decompress(data: &[u8]) -> Result<Vec<u8>, String> {
    decompress_at_most(data, MAX_DECOMPRESSED)
}

fn decompress_at_most(data: &[u8], max: u64) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let too_big = || format!("it decompresses to more than {} MiB", max >> 20);
    match zstd::zstd_safe::get_frame_content_size(data) {
        Ok(Some(size)) if size > max => Err(too_big()),
        Ok(Some(size)) => zstd::bulk::decompress(data, size as usize).map_err(|e| e.to_string()),
        _ => {
            let decoder =
                zstd::stream::read::Decoder::with_buffer(data).map_err(|e| e.to_string())?;
            let mut out = Vec::new();
            decoder
                .take(max + 1)
                .read_to_end(&mut out)
                .map_err(|e| e.to_string())?;
            if out.len() as u64 > max {
                return Err(too_big());
            }
            Ok(out)
        }
    }
}

/// Appends the frames of one stored chunk (its compressed frames and
/// timings, as the `frame_chunks` table holds them) to `out`, decoding only
/// `fields`. Bytes from a file are untrusted: any input gives frames or an
/// error, within bounded memory.
pub fn decode_chunk_fields(
    data: &[u8],
    timings: &[u8],
    fields: FrameFields,
    out: &mut Vec<(Frame, Timing)>,
) -> Result<(), String> {
    decode_raw_fields(&decompress(data)?, &decompress(timings)?, fields, out)
}

/// Reads an observation [`encode_observation`] wrote.
pub(crate) fn decode_observation(raw: &[u8]) -> Result<Observation, String> {
    postcard::from_bytes(raw).map_err(|e| e.to_string())
}

/// Appends the frames of one chunk's raw bytes to `out`, decoding only `fields`.
pub(crate) fn decode_raw_fields(
    raw: &[u8],
    raw_timings: &[u8],
    fields: FrameFields,
    out: &mut Vec<(Frame, Timing)>,
) -> Result<(), String> {
    let (mut rest, mut rest_t) = (raw, raw_timings);
    while !rest.is_empty() {
        let frame = if fields == FrameFields::ALL {
            let (frame, r): (Frame, &[u8]) =
                postcard::take_from_bytes(rest).map_err(|e| e.to_string())?;
            rest = r;
            frame
        } else {
            let mut de = postcard::Deserializer::from_bytes(rest);
            let frame = serde::de::DeserializeSeed::deserialize(skim::Partial(fields), &mut de)
                .map_err(|e| e.to_string())?;
            rest = de.finalize().map_err(|e| e.to_string())?;
            frame
        };
        // Timings are informative: a missing or short record reads as zeros.
        let (timing, rt): (Timing, &[u8]) =
            postcard::take_from_bytes(rest_t).unwrap_or((Timing::default(), &[]));
        out.push((frame, timing));
        rest_t = rt;
    }
    Ok(())
}

/// Decoding a [`Frame`] field by field, skipping the fields a reader does
/// not need. The skimming types mirror the recorded types' postcard layout
/// (the contract's WIT order); `tests::partial_decoding_matches` checks them
/// against whole-frame decoding.
mod skim {
    use std::fmt;
    use std::marker::PhantomData;

    use serde::Deserialize;
    use serde::de::{self, DeserializeSeed, Deserializer, SeqAccess, Visitor};

    use super::FrameFields;
    use crate::model::{Action, Frame, Level, LogLine, MemoryWrite, Observation, Role};

    /// A sequence whose elements are read and dropped.
    pub(super) struct SkipSeq<T>(PhantomData<T>);

    impl<'de, T: Deserialize<'de>> Deserialize<'de> for SkipSeq<T> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V<T>(PhantomData<T>);
            impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
                type Value = SkipSeq<T>;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("a sequence")
                }
                fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                    while seq.next_element::<T>()?.is_some() {}
                    Ok(SkipSeq(PhantomData))
                }
            }
            d.deserialize_seq(V(PhantomData))
        }
    }

    // Strings are skipped as bytes: the same postcard layout, no UTF-8 check.
    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct PartSkim<'a> {
        #[serde(borrow)]
        name: &'a [u8],
        #[serde(borrow)]
        value: ValueSkim<'a>,
    }

    #[derive(Deserialize)]
    #[allow(dead_code)]
    enum ValueSkim<'a> {
        Discrete(u32),
        Vector(SkipSeq<f32>),
        Image(#[serde(borrow)] ImageSkim<'a>),
        Text(&'a [u8]),
        Tree(#[serde(borrow)] SkipSeq<ElementSkim<'a>>),
    }

    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct ImageSkim<'a> {
        width: u32,
        height: u32,
        channels: u32,
        pixels: &'a [u8],
    }

    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct RectSkim {
        x: i32,
        y: i32,
        width: u32,
        height: u32,
    }

    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct ElementSkim<'a> {
        id: u32,
        parent: Option<u32>,
        role: &'a [u8],
        name: &'a [u8],
        value: &'a [u8],
        bounds: RectSkim,
        focused: bool,
        checked: Option<bool>,
        disabled: bool,
    }

    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct LogSkim<'a> {
        role: Role,
        level: Level,
        message: &'a [u8],
    }

    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct WriteSkim<'a> {
        path: &'a [u8],
        #[serde(borrow)]
        value: Option<&'a [u8]>,
    }

    /// The field names of [`Frame`], in its declaration (and encoding) order.
    const FRAME_FIELDS: &[&str] = &[
        "step",
        "observation",
        "action",
        "env_reward",
        "reward",
        "terminated",
        "truncated",
        "info",
        "success",
        "note",
        "logs",
        "memory_writes",
    ];

    /// A [`Frame`] with only some fields decoded.
    pub(super) struct Partial(pub FrameFields);

    impl<'de> DeserializeSeed<'de> for Partial {
        type Value = Frame;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Frame, D::Error> {
            d.deserialize_struct("Frame", FRAME_FIELDS, self)
        }
    }

    fn next<'de, T: Deserialize<'de>, A: SeqAccess<'de>>(
        seq: &mut A,
        field: usize,
    ) -> Result<T, A::Error> {
        seq.next_element::<T>()?
            .ok_or_else(|| de::Error::invalid_length(field, &"a recorded frame"))
    }

    impl<'de> Visitor<'de> for Partial {
        type Value = Frame;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a recorded frame")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Frame, A::Error> {
            let want = self.0;
            let step: u32 = next(&mut seq, 0)?;
            let observation: Observation = if want.observation {
                next(&mut seq, 1)?
            } else {
                next::<SkipSeq<PartSkim<'de>>, _>(&mut seq, 1)?;
                Vec::new()
            };
            let action: Action = next(&mut seq, 2)?;
            let env_reward: f32 = next(&mut seq, 3)?;
            let reward: f32 = next(&mut seq, 4)?;
            let terminated: bool = next(&mut seq, 5)?;
            let truncated: bool = next(&mut seq, 6)?;
            let info: String = if want.info {
                next(&mut seq, 7)?
            } else {
                next::<&'de [u8], _>(&mut seq, 7)?;
                String::new()
            };
            let success: Option<bool> = next(&mut seq, 8)?;
            let note: Option<String> = next(&mut seq, 9)?;
            let logs: Vec<LogLine> = if want.logs {
                next(&mut seq, 10)?
            } else {
                next::<SkipSeq<LogSkim<'de>>, _>(&mut seq, 10)?;
                Vec::new()
            };
            let memory_writes: Vec<MemoryWrite> = if want.memory_writes {
                next(&mut seq, 11)?
            } else {
                next::<SkipSeq<WriteSkim<'de>>, _>(&mut seq, 11)?;
                Vec::new()
            };
            Ok(Frame {
                step,
                observation,
                action,
                env_reward,
                reward,
                terminated,
                truncated,
                info,
                success,
                note,
                logs,
                memory_writes,
                model_calls: Vec::new(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::frame;

    /// A blob that says nothing of its size, or lies about it, cannot
    /// expand past the bound: a few KiB of zstd that would unpack to 8 MiB
    /// are refused under a 1 MiB bound, streamed or sized.
    #[test]
    fn decompression_is_bounded() {
        use std::io::Write;
        let zeros = vec![0u8; 8 << 20];
        // Streamed without a pledged size: no content size in the header.
        let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).expect("encoder");
        enc.write_all(&zeros).expect("write");
        let streamed = enc.finish().expect("finish");
        assert!(streamed.len() < 64 << 10, "{}", streamed.len());
        assert_eq!(
            zstd::zstd_safe::get_frame_content_size(&streamed)
                .ok()
                .flatten(),
            None
        );
        let sized = zstd::bulk::compress(&zeros, 3).expect("compress");
        for blob in [&streamed, &sized] {
            let err = decompress_at_most(blob, 1 << 20).unwrap_err();
            assert!(err.contains("more than 1 MiB"), "{err}");
            assert_eq!(
                decompress_at_most(blob, 8 << 20).expect("fits").len(),
                8 << 20
            );
        }
    }

    #[test]
    fn every_packing_is_a_zstd_frame_of_the_same_bytes() {
        let mut fast = zstd::bulk::Compressor::new(-1).unwrap();
        let mut strong = zstd::bulk::Compressor::new(1).unwrap();
        let mut blobs = b"earlier blob".to_vec();
        let inputs: Vec<Vec<u8>> = vec![
            Vec::new(),
            b"tiny".to_vec(),
            (0..RAW_BELOW + 10).map(|i| (i % 7) as u8).collect(),
            (0..FAST_BELOW * 3).map(|i| (i * 31 % 251) as u8).collect(),
        ];
        for raw in &inputs {
            let r = pack_into(raw, &mut blobs, &mut fast, &mut strong);
            assert_eq!(zstd::decode_all(&blobs[r.clone()]).unwrap(), *raw);
            assert_eq!(decompress(&blobs[r]).unwrap(), *raw);
        }
        // Raw frames of several blocks, and of none.
        for len in [0, 1, (128 << 10) - 1, 128 << 10, (128 << 10) * 2 + 5] {
            let raw: Vec<u8> = (0..len).map(|i| (i % 256) as u8).collect();
            let mut out = Vec::new();
            raw_frame(&raw, &mut out);
            assert_eq!(zstd::decode_all(&out[..]).unwrap(), raw, "{len} bytes");
            assert_eq!(decompress(&out).unwrap(), raw, "{len} bytes");
        }
        assert!(blobs.starts_with(b"earlier blob"));
    }
    #[test]
    fn frames_and_timings_encode_exactly_as_postcard() {
        let mut frames: Vec<Frame> = (0..4).map(frame).collect();
        let mut plain = frame(300);
        plain.observation = vec![crate::model::Part {
            name: "state".into(),
            value: Value::Vector(vec![0.1, -0.2, f32::NAN, 1e30]),
        }];
        plain.action = Action::Discrete(1 << 20);
        plain.success = None;
        plain.note = None;
        plain.logs.clear();
        plain.memory_writes.clear();
        plain.info.clear();
        frames.push(plain.clone());
        plain.action = Action::Continuous(vec![0.5, -1.0]);
        plain.step = u32::MAX;
        plain.success = Some(true);
        plain.observation[0].value = Value::Discrete(u32::MAX);
        frames.push(plain);
        for f in &frames {
            let mut ours = b"prefix".to_vec();
            encode_frame(f, &mut ours);
            let mut theirs = b"prefix".to_vec();
            theirs = postcard::to_extend(f, theirs).unwrap();
            assert_eq!(ours, theirs, "frame at step {}", f.step);
        }
        for t in [
            Timing::default(),
            Timing {
                act_ns: 127,
                step_ns: 128,
                score_ns: u64::MAX,
            },
        ] {
            let mut ours = Vec::new();
            for ns in [t.act_ns, t.step_ns, t.score_ns] {
                varint(&mut ours, ns);
            }
            assert_eq!(ours, postcard::to_allocvec(&t).unwrap());
        }
    }
    #[test]
    fn partial_decoding_matches_whole_frames() {
        let frames: Vec<Frame> = (0..5).map(frame).collect();
        let mut raw = Vec::new();
        let mut raw_t = Vec::new();
        for (i, f) in frames.iter().enumerate() {
            raw = postcard::to_extend(f, raw).unwrap();
            let t = Timing {
                act_ns: i as u64,
                step_ns: 2,
                score_ns: 3,
            };
            raw_t = postcard::to_extend(&t, raw_t).unwrap();
        }
        let data = zstd::bulk::compress(&raw, 1).unwrap();
        let timings = zstd::bulk::compress(&raw_t, 1).unwrap();
        let mut whole = Vec::new();
        decode_chunk(&data, &timings, &mut whole).unwrap();
        assert_eq!(
            whole.iter().map(|(f, _)| f.clone()).collect::<Vec<_>>(),
            frames
        );
        for bits in 0..16u8 {
            let fields = FrameFields {
                observation: bits & 1 != 0,
                info: bits & 2 != 0,
                logs: bits & 4 != 0,
                memory_writes: bits & 8 != 0,
                model_calls: false,
            };
            let mut partial = Vec::new();
            decode_chunk_fields(&data, &timings, fields, &mut partial).unwrap();
            let expected: Vec<(Frame, Timing)> = whole
                .iter()
                .cloned()
                .map(|(mut f, t)| {
                    if !fields.observation {
                        f.observation.clear();
                    }
                    if !fields.info {
                        f.info.clear();
                    }
                    if !fields.logs {
                        f.logs.clear();
                    }
                    if !fields.memory_writes {
                        f.memory_writes.clear();
                    }
                    (f, t)
                })
                .collect();
            assert_eq!(partial, expected, "fields {fields:?}");
        }
        // A cut record is an error, not a short read.
        let cut = zstd::bulk::compress(&raw[..raw.len() - 3], 1).unwrap();
        let skip = FrameFields {
            observation: false,
            ..FrameFields::ALL
        };
        assert!(decode_chunk_fields(&cut, &timings, skip, &mut Vec::new()).is_err());
    }
}
