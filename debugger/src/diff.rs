//! Diffs: frame against frame (text as line diffs, element trees by id,
//! vectors per component, images as the changed region, memory as added,
//! removed and changed paths), episode against episode aligned step by step
//! with the first divergence, and run against run.

use std::collections::BTreeMap;

use ludus_arena::model::{Element, Frame, Image, MemoryWrite, Observation, Value as PartValue};
use ludus_arena::store::EpisodeRow;
use serde::Serialize;
use similar::TextDiff;

use crate::DebugError;
use crate::source::FrameSource;
use crate::view::{FrameView, action_label};

/// A rectangle of pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Region {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

/// One element of a tree that changed, and how.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ElementChange {
    pub id: u32,
    /// `field: old -> new`, one per changed field.
    pub fields: Vec<String>,
}

/// One difference between two frames.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "what", rename_all = "snake_case")]
pub enum Change {
    PartAdded {
        part: String,
    },
    PartRemoved {
        part: String,
    },
    /// The part holds another kind of value.
    PartKind {
        part: String,
        a: String,
        b: String,
    },
    Discrete {
        part: String,
        a: u32,
        b: u32,
    },
    /// Components that differ: (index, a, b); lengths when they differ.
    Vector {
        part: String,
        components: Vec<(usize, f32, f32)>,
        len_a: usize,
        len_b: usize,
    },
    /// A unified line diff.
    Text {
        part: String,
        diff: String,
    },
    /// The bounding box of the changed pixels (none when the sizes differ).
    Image {
        part: String,
        region: Option<Region>,
        changed_pixels: u64,
        size_a: (u32, u32, u32),
        size_b: (u32, u32, u32),
    },
    Tree {
        part: String,
        added: Vec<u32>,
        removed: Vec<u32>,
        changed: Vec<ElementChange>,
    },
    Action {
        a: String,
        b: String,
    },
    Reward {
        a: f32,
        b: f32,
    },
    EnvReward {
        a: f32,
        b: f32,
    },
    Flags {
        /// (terminated, truncated)
        a: (bool, bool),
        b: (bool, bool),
    },
    Info {
        a: String,
        b: String,
    },
    Success {
        a: Option<bool>,
        b: Option<bool>,
    },
    Note {
        a: Option<String>,
        b: Option<String>,
    },
    Logs {
        diff: String,
    },
    MemoryWrites {
        a: Vec<MemoryWrite>,
        b: Vec<MemoryWrite>,
    },
    /// A model call that differs (or is only in one frame): its index in
    /// the frame, and unified diffs of its prompt and its answer as text.
    ModelCall {
        call: usize,
        prompt_diff: String,
        response_diff: String,
        only_in: Option<char>,
    },
    Memory {
        added: BTreeMap<String, String>,
        removed: BTreeMap<String, String>,
        /// path -> (old, new)
        changed: BTreeMap<String, (String, String)>,
    },
}

impl Change {
    /// One line saying what differs.
    pub fn summary(&self) -> String {
        match self {
            Change::PartAdded { part } => format!("observation part `{part}` added"),
            Change::PartRemoved { part } => format!("observation part `{part}` removed"),
            Change::PartKind { part, a, b } => format!("observation `{part}`: {a} -> {b}"),
            Change::Discrete { part, a, b } => format!("observation `{part}`: {a} -> {b}"),
            Change::Vector {
                part,
                components,
                len_a,
                len_b,
            } => {
                let shown: Vec<String> = components
                    .iter()
                    .take(6)
                    .map(|(i, a, b)| format!("[{i}] {a} -> {b}"))
                    .collect();
                let more = components.len().saturating_sub(6);
                let mut s = format!("observation `{part}`: {}", shown.join(", "));
                if more > 0 {
                    s.push_str(&format!(" (+{more} more)"));
                }
                if len_a != len_b {
                    s.push_str(&format!(" (length {len_a} -> {len_b})"));
                }
                s
            }
            Change::Text { part, diff } => {
                let (minus, plus) = diff.lines().fold((0, 0), |(m, p), l| {
                    if l.starts_with('-') && !l.starts_with("---") {
                        (m + 1, p)
                    } else if l.starts_with('+') && !l.starts_with("+++") {
                        (m, p + 1)
                    } else {
                        (m, p)
                    }
                });
                format!("observation `{part}` text: -{minus} +{plus} lines")
            }
            Change::Image {
                part,
                region,
                changed_pixels,
                size_a,
                size_b,
            } => match region {
                Some(r) => format!(
                    "observation `{part}` image: {changed_pixels} pixels changed in {}x{} at ({}, {})",
                    r.width, r.height, r.x, r.y
                ),
                None => format!(
                    "observation `{part}` image: size {}x{}x{} -> {}x{}x{}",
                    size_a.0, size_a.1, size_a.2, size_b.0, size_b.1, size_b.2
                ),
            },
            Change::Tree {
                part,
                added,
                removed,
                changed,
            } => {
                let mut bits = Vec::new();
                if !added.is_empty() {
                    bits.push(format!("added {added:?}"));
                }
                if !removed.is_empty() {
                    bits.push(format!("removed {removed:?}"));
                }
                for c in changed.iter().take(4) {
                    bits.push(format!("#{} {}", c.id, c.fields.join(", ")));
                }
                format!("observation `{part}` tree: {}", bits.join("; "))
            }
            Change::Action { a, b } => format!("action: {a} -> {b}"),
            Change::Reward { a, b } => format!("reward: {a} -> {b}"),
            Change::EnvReward { a, b } => format!("env reward: {a} -> {b}"),
            Change::Flags { a, b } => {
                format!("terminated/truncated: {}/{} -> {}/{}", a.0, a.1, b.0, b.1)
            }
            Change::Info { a, b } => format!("info: {a} -> {b}"),
            Change::Success { a, b } => format!("success: {a:?} -> {b:?}"),
            Change::Note { a, b } => format!("note: {a:?} -> {b:?}"),
            Change::Logs { diff } => {
                let first = diff
                    .lines()
                    .find(|l| {
                        (l.starts_with('-') || l.starts_with('+'))
                            && !l.starts_with("---")
                            && !l.starts_with("+++")
                    })
                    .unwrap_or("");
                format!("log lines differ: {first}")
            }
            Change::MemoryWrites { a, b } => {
                let show = |w: &[MemoryWrite]| {
                    w.iter()
                        .map(|w| match &w.value {
                            Some(v) => format!("{}={v:?}", w.path),
                            None => format!("delete {}", w.path),
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                format!("memory writes: [{}] -> [{}]", show(a), show(b))
            }
            Change::ModelCall {
                call,
                prompt_diff,
                response_diff,
                only_in,
            } => {
                if let Some(side) = only_in {
                    return format!("model call {call}: only in {side}");
                }
                let first = |d: &str| {
                    d.lines()
                        .find(|l| {
                            (l.starts_with('-') || l.starts_with('+'))
                                && !l.starts_with("---")
                                && !l.starts_with("+++")
                        })
                        .unwrap_or("")
                        .to_string()
                };
                if !prompt_diff.is_empty() {
                    format!("model call {call} prompt differs: {}", first(prompt_diff))
                } else {
                    format!("model call {call} answer differs: {}", first(response_diff))
                }
            }
            Change::Memory {
                added,
                removed,
                changed,
            } => {
                let mut bits = Vec::new();
                for (k, v) in added {
                    bits.push(format!("+{k}={v:?}"));
                }
                for k in removed.keys() {
                    bits.push(format!("-{k}"));
                }
                for (k, (a, b)) in changed {
                    bits.push(format!("{k}: {a:?} -> {b:?}"));
                }
                format!("memory: {}", bits.join(", "))
            }
        }
    }
}

fn kind(v: &PartValue) -> &'static str {
    match v {
        PartValue::Discrete(_) => "discrete",
        PartValue::Vector(_) => "vector",
        PartValue::Image(_) => "image",
        PartValue::Text(_) => "text",
        PartValue::Tree(_) => "tree",
    }
}

/// A unified line diff of two texts ("" when equal).
pub fn text_diff(a: &str, b: &str) -> String {
    if a == b {
        return String::new();
    }
    TextDiff::from_lines(a, b)
        .unified_diff()
        .context_radius(2)
        .to_string()
}

fn image_diff(part: &str, a: &Image, b: &Image) -> Option<Change> {
    let size_a = (a.width, a.height, a.channels);
    let size_b = (b.width, b.height, b.channels);
    if size_a != size_b || a.pixels.len() != b.pixels.len() {
        return Some(Change::Image {
            part: part.into(),
            region: None,
            changed_pixels: 0,
            size_a,
            size_b,
        });
    }
    if a.pixels == b.pixels {
        return None;
    }
    let ch = a.channels.max(1) as usize;
    let w = a.width.max(1) as usize;
    let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0, 0);
    let mut n = 0u64;
    for (i, (pa, pb)) in a.pixels.chunks(ch).zip(b.pixels.chunks(ch)).enumerate() {
        if pa != pb {
            let (x, y) = (i % w, i / w);
            x0 = x0.min(x);
            y0 = y0.min(y);
            x1 = x1.max(x);
            y1 = y1.max(y);
            n += 1;
        }
    }
    Some(Change::Image {
        part: part.into(),
        region: Some(Region {
            x: x0 as u32,
            y: y0 as u32,
            width: (x1 - x0 + 1) as u32,
            height: (y1 - y0 + 1) as u32,
        }),
        changed_pixels: n,
        size_a,
        size_b,
    })
}

fn element_fields(a: &Element, b: &Element) -> Vec<String> {
    let mut f = Vec::new();
    let mut cmp = |name: &str, x: String, y: String| {
        if x != y {
            f.push(format!("{name}: {x} -> {y}"));
        }
    };
    cmp(
        "parent",
        format!("{:?}", a.parent),
        format!("{:?}", b.parent),
    );
    cmp("role", format!("{:?}", a.role), format!("{:?}", b.role));
    cmp("name", format!("{:?}", a.name), format!("{:?}", b.name));
    cmp("value", format!("{:?}", a.value), format!("{:?}", b.value));
    let r = |e: &Element| {
        format!(
            "{},{} {}x{}",
            e.bounds.x, e.bounds.y, e.bounds.width, e.bounds.height
        )
    };
    cmp("bounds", r(a), r(b));
    cmp("focused", a.focused.to_string(), b.focused.to_string());
    cmp(
        "checked",
        format!("{:?}", a.checked),
        format!("{:?}", b.checked),
    );
    cmp("disabled", a.disabled.to_string(), b.disabled.to_string());
    f
}

fn tree_diff(part: &str, a: &[Element], b: &[Element]) -> Option<Change> {
    let by_id =
        |t: &[Element]| -> BTreeMap<u32, Element> { t.iter().map(|e| (e.id, e.clone())).collect() };
    let (ma, mb) = (by_id(a), by_id(b));
    let added: Vec<u32> = mb.keys().filter(|k| !ma.contains_key(k)).copied().collect();
    let removed: Vec<u32> = ma.keys().filter(|k| !mb.contains_key(k)).copied().collect();
    let changed: Vec<ElementChange> = ma
        .iter()
        .filter_map(|(id, ea)| {
            let eb = mb.get(id)?;
            let fields = element_fields(ea, eb);
            (!fields.is_empty()).then_some(ElementChange { id: *id, fields })
        })
        .collect();
    if added.is_empty() && removed.is_empty() && changed.is_empty() {
        return None;
    }
    Some(Change::Tree {
        part: part.into(),
        added,
        removed,
        changed,
    })
}

fn part_diff(part: &str, a: &PartValue, b: &PartValue) -> Option<Change> {
    match (a, b) {
        (PartValue::Discrete(x), PartValue::Discrete(y)) => (x != y).then(|| Change::Discrete {
            part: part.into(),
            a: *x,
            b: *y,
        }),
        (PartValue::Vector(x), PartValue::Vector(y)) => {
            let components: Vec<(usize, f32, f32)> = x
                .iter()
                .zip(y)
                .enumerate()
                .filter(|(_, (p, q))| p.to_bits() != q.to_bits())
                .map(|(i, (p, q))| (i, *p, *q))
                .collect();
            (!components.is_empty() || x.len() != y.len()).then(|| Change::Vector {
                part: part.into(),
                components,
                len_a: x.len(),
                len_b: y.len(),
            })
        }
        (PartValue::Text(x), PartValue::Text(y)) => (x != y).then(|| Change::Text {
            part: part.into(),
            diff: text_diff(x, y),
        }),
        (PartValue::Image(x), PartValue::Image(y)) => image_diff(part, x, y),
        (PartValue::Tree(x), PartValue::Tree(y)) => tree_diff(part, x, y),
        (x, y) => Some(Change::PartKind {
            part: part.into(),
            a: kind(x).into(),
            b: kind(y).into(),
        }),
    }
}

/// Differences between two observations, part by part (matched by name).
pub fn diff_observations(a: &Observation, b: &Observation) -> Vec<Change> {
    let mut out = Vec::new();
    for pa in a {
        match b.iter().find(|pb| pb.name == pa.name) {
            Some(pb) => out.extend(part_diff(&pa.name, &pa.value, &pb.value)),
            None => out.push(Change::PartRemoved {
                part: pa.name.clone(),
            }),
        }
    }
    for pb in b {
        if !a.iter().any(|pa| pa.name == pb.name) {
            out.push(Change::PartAdded {
                part: pb.name.clone(),
            });
        }
    }
    out
}

/// Added, removed and changed paths between two memories.
pub fn diff_memory(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> Option<Change> {
    let mut added = BTreeMap::new();
    let mut removed = BTreeMap::new();
    let mut changed = BTreeMap::new();
    for (k, v) in b {
        match a.get(k) {
            None => {
                added.insert(k.clone(), v.clone());
            }
            Some(old) if old != v => {
                changed.insert(k.clone(), (old.clone(), v.clone()));
            }
            Some(_) => {}
        }
    }
    for (k, v) in a {
        if !b.contains_key(k) {
            removed.insert(k.clone(), v.clone());
        }
    }
    (!added.is_empty() || !removed.is_empty() || !changed.is_empty()).then_some(Change::Memory {
        added,
        removed,
        changed,
    })
}

fn logs_text(f: &Frame) -> String {
    f.logs
        .iter()
        .map(|l| format!("{} {:?}: {}\n", l.role.as_str(), l.level, l.message))
        .collect()
}

/// Everything that differs between two frames at the same step (of two
/// episodes): what the agent saw, did and got, and what it wrote.
pub fn diff_frames(a: &Frame, b: &Frame) -> Vec<Change> {
    let mut out = diff_observations(&a.observation, &b.observation);
    out.extend(outcome_changes(a, b));
    if a.memory_writes != b.memory_writes {
        out.push(Change::MemoryWrites {
            a: a.memory_writes.clone(),
            b: b.memory_writes.clone(),
        });
    }
    out.extend(model_call_changes(&a.model_calls, &b.model_calls));
    out
}

/// The model calls of two frames, call by call: prompts and answers as
/// text diffs.
fn model_call_changes(
    a: &[ludus_arena::chat::ModelCall],
    b: &[ludus_arena::chat::ModelCall],
) -> Vec<Change> {
    let mut out = Vec::new();
    for i in 0..a.len().max(b.len()) {
        match (a.get(i), b.get(i)) {
            (Some(x), Some(y)) if ludus_arena::codec::same_call(x, y) => {}
            (Some(x), Some(y)) => out.push(Change::ModelCall {
                call: i,
                prompt_diff: text_diff(&prompt_text(x), &prompt_text(y)),
                response_diff: text_diff(&answer_text(x), &answer_text(y)),
                only_in: None,
            }),
            (x, _) => out.push(Change::ModelCall {
                call: i,
                prompt_diff: String::new(),
                response_diff: String::new(),
                only_in: Some(if x.is_some() { 'a' } else { 'b' }),
            }),
        }
    }
    out
}

/// A call's request as text: one `role: text` line per message, then the
/// parameters when set.
pub fn prompt_text(c: &ludus_arena::chat::ModelCall) -> String {
    let mut s = String::new();
    for m in &c.request.messages {
        s.push_str(&format!(
            "{}: {}\n",
            m.role,
            ludus_arena::chat::message_text(m)
        ));
    }
    let r = &c.request;
    if let Some(f) = &r.response_format {
        s.push_str(&format!("[response format {f}]\n"));
    }
    for t in &r.tools {
        s.push_str(&format!("[tool {}]\n", t.name));
    }
    s
}

/// A call's answer as text (or its error).
pub fn answer_text(c: &ludus_arena::chat::ModelCall) -> String {
    match &c.result {
        Ok(r) => {
            let mut s = r.content.clone();
            for t in &r.tool_calls {
                s.push_str(&format!("\n[tool call {} {}]", t.name, t.arguments));
            }
            s
        }
        Err(e) => format!(
            "[{}: {}]",
            ludus_arena::chat::error_kind(e),
            ludus_arena::chat::error_message(e)
        ),
    }
}

/// Action, rewards, flags, info, success, note and logs.
fn outcome_changes(a: &Frame, b: &Frame) -> Vec<Change> {
    let mut out = Vec::new();
    if !ludus_arena::codec::same_bits(&a.action, &b.action) {
        out.push(Change::Action {
            a: action_label(&a.action),
            b: action_label(&b.action),
        });
    }
    if a.reward.to_bits() != b.reward.to_bits() {
        out.push(Change::Reward {
            a: a.reward,
            b: b.reward,
        });
    }
    if a.env_reward.to_bits() != b.env_reward.to_bits() {
        out.push(Change::EnvReward {
            a: a.env_reward,
            b: b.env_reward,
        });
    }
    if (a.terminated, a.truncated) != (b.terminated, b.truncated) {
        out.push(Change::Flags {
            a: (a.terminated, a.truncated),
            b: (b.terminated, b.truncated),
        });
    }
    if a.info != b.info {
        out.push(Change::Info {
            a: a.info.clone(),
            b: b.info.clone(),
        });
    }
    if a.success != b.success {
        out.push(Change::Success {
            a: a.success,
            b: b.success,
        });
    }
    if a.note != b.note {
        out.push(Change::Note {
            a: a.note.clone(),
            b: b.note.clone(),
        });
    }
    if a.logs != b.logs {
        out.push(Change::Logs {
            diff: text_diff(&logs_text(a), &logs_text(b)),
        });
    }
    out
}

/// This frame against the previous one: how the observation moved, what
/// changed in action, reward and info, and the memory before and after.
/// Frame 0 is compared with nothing but its starting memory.
pub fn diff_step(prev: Option<&FrameView>, cur: &FrameView) -> Vec<Change> {
    let mut out = Vec::new();
    if let Some(p) = prev {
        out.extend(diff_observations(
            &p.frame.observation,
            &cur.frame.observation,
        ));
        out.extend(outcome_changes(&p.frame, &cur.frame));
    }
    out.extend(diff_memory(&cur.memory_before, &cur.memory));
    out
}

/// How one episode ended, for diffs.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EpisodeSide {
    pub id: i64,
    pub outcome: String,
    pub length: u64,
    #[serde(rename = "return")]
    pub return_: f64,
    pub success: bool,
    pub frames: u64,
}

/// Where two episodes first differ.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Divergence {
    pub frame: u64,
    pub changes: Vec<Change>,
}

/// Two episodes compared step by step.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EpisodeDiff {
    pub a: EpisodeSide,
    pub b: EpisodeSide,
    pub identical: bool,
    pub first_divergence: Option<Divergence>,
    /// Frames compared (the shorter episode's length).
    pub compared: u64,
    /// How many of them differ, and where, as ranges `[from, to]`.
    pub differing: u64,
    pub ranges: Vec<(u64, u64)>,
    /// Differences in how they ended.
    pub ending: Vec<String>,
}

fn side(src: &dyn FrameSource) -> EpisodeSide {
    let m = src.meta();
    EpisodeSide {
        id: m.id,
        outcome: m.outcome,
        length: m.length,
        return_: m.return_,
        success: m.success,
        frames: src.len(),
    }
}

/// Compares two episodes frame by frame (timings aside).
pub fn diff_episodes(a: &dyn FrameSource, b: &dyn FrameSource) -> Result<EpisodeDiff, DebugError> {
    let (sa, sb) = (side(a), side(b));
    let compared = a.len().min(b.len());
    let mut first: Option<Divergence> = None;
    let mut differing = 0u64;
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    let mut k = 0u64;
    while k < compared {
        let (fa, ba) = a.block(k)?;
        let (fb, bb) = b.block(k)?;
        let end = (fa + ba.len() as u64)
            .min(fb + bb.len() as u64)
            .min(compared);
        if end <= k {
            break;
        }
        for i in k..end {
            let x = &ba[(i - fa) as usize].0;
            let y = &bb[(i - fb) as usize].0;
            if !ludus_arena::codec::same_frame(x, y) {
                differing += 1;
                match ranges.last_mut() {
                    Some(r) if r.1 + 1 == i => r.1 = i,
                    _ => ranges.push((i, i)),
                }
                if first.is_none() {
                    first = Some(Divergence {
                        frame: i,
                        changes: diff_frames(x, y),
                    });
                }
            }
        }
        k = end;
    }
    let mut ending = Vec::new();
    if sa.outcome != sb.outcome {
        ending.push(format!("outcome: {} -> {}", sa.outcome, sb.outcome));
    }
    if sa.frames != sb.frames {
        ending.push(format!("length: {} -> {}", sa.frames, sb.frames));
    }
    if sa.return_.to_bits() != sb.return_.to_bits() {
        ending.push(format!("return: {} -> {}", sa.return_, sb.return_));
    }
    if sa.success != sb.success {
        ending.push(format!("success: {} -> {}", sa.success, sb.success));
    }
    if first.is_none() && !ending.is_empty() {
        first = Some(Divergence {
            frame: compared,
            changes: Vec::new(),
        });
    }
    Ok(EpisodeDiff {
        identical: first.is_none() && ending.is_empty(),
        a: sa,
        b: sb,
        first_divergence: first,
        compared,
        differing,
        ranges,
        ending,
    })
}

/// One episode index in two runs.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EpisodePair {
    pub index: u64,
    pub a: Option<i64>,
    pub b: Option<i64>,
    /// What changed: `outcome a -> b`, `return a -> b`, `length a -> b`, `frames differ`.
    pub changes: Vec<String>,
}

/// Two runs compared episode by episode (matched by index).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunDiff {
    pub episodes: usize,
    pub same: usize,
    pub changed: Vec<EpisodePair>,
    pub outcome_changes: BTreeMap<String, usize>,
    pub mean_return_a: f64,
    pub mean_return_b: f64,
}

pub fn diff_runs(a: &[EpisodeRow], b: &[EpisodeRow]) -> RunDiff {
    let ma: BTreeMap<u64, &EpisodeRow> = a.iter().map(|e| (e.index, e)).collect();
    let mb: BTreeMap<u64, &EpisodeRow> = b.iter().map(|e| (e.index, e)).collect();
    let mut indices: Vec<u64> = ma.keys().chain(mb.keys()).copied().collect();
    indices.sort_unstable();
    indices.dedup();
    let mut changed = Vec::new();
    let mut outcome_changes: BTreeMap<String, usize> = BTreeMap::new();
    for i in &indices {
        let (x, y) = (ma.get(i), mb.get(i));
        let mut changes = Vec::new();
        match (x, y) {
            (Some(x), Some(y)) => {
                if x.outcome != y.outcome {
                    changes.push(format!("outcome {} -> {}", x.outcome, y.outcome));
                    *outcome_changes
                        .entry(format!("{} -> {}", x.outcome, y.outcome))
                        .or_default() += 1;
                }
                if x.return_.to_bits() != y.return_.to_bits() {
                    changes.push(format!("return {} -> {}", x.return_, y.return_));
                }
                if x.length != y.length {
                    changes.push(format!("length {} -> {}", x.length, y.length));
                }
                if x.digest != y.digest && changes.is_empty() {
                    changes.push("frames differ".into());
                }
            }
            (Some(_), None) => changes.push("only in the first run".into()),
            (None, Some(_)) => changes.push("only in the second run".into()),
            (None, None) => {}
        }
        if !changes.is_empty() {
            changed.push(EpisodePair {
                index: *i,
                a: x.map(|e| e.id),
                b: y.map(|e| e.id),
                changes,
            });
        }
    }
    let mean = |rows: &[EpisodeRow]| {
        rows.iter().map(|e| e.return_).sum::<f64>() / rows.len().max(1) as f64
    };
    RunDiff {
        episodes: indices.len(),
        same: indices.len() - changed.len(),
        changed,
        outcome_changes,
        mean_return_a: mean(a),
        mean_return_b: mean(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ludus_arena::model::{Part, Rect};

    fn img(lit: &[usize]) -> PartValue {
        let mut pixels = vec![0u8; 64];
        for &i in lit {
            pixels[i] = 255;
        }
        PartValue::Image(Image {
            width: 8,
            height: 8,
            channels: 1,
            pixels,
        })
    }

    #[test]
    fn image_region_is_the_changed_box() {
        let a = vec![Part {
            name: "s".into(),
            value: img(&[9]),
        }];
        let b = vec![Part {
            name: "s".into(),
            value: img(&[9, 8 * 3 + 5, 8 * 5 + 2]),
        }];
        let d = diff_observations(&a, &b);
        assert_eq!(
            d,
            vec![Change::Image {
                part: "s".into(),
                region: Some(Region {
                    x: 2,
                    y: 3,
                    width: 4,
                    height: 3
                }),
                changed_pixels: 2,
                size_a: (8, 8, 1),
                size_b: (8, 8, 1),
            }]
        );
    }

    #[test]
    fn trees_diff_by_id_and_text_by_line() {
        let el = |id: u32, value: &str| Element {
            id,
            parent: None,
            role: "button".into(),
            name: format!("b{id}"),
            value: value.into(),
            bounds: Rect {
                x: 0,
                y: 0,
                width: 1,
                height: 1,
            },
            focused: false,
            checked: None,
            disabled: false,
        };
        let a = vec![
            Part {
                name: "tree".into(),
                value: PartValue::Tree(vec![el(1, "x"), el(2, "y")]),
            },
            Part {
                name: "msg".into(),
                value: PartValue::Text("a\nb\nc\n".into()),
            },
        ];
        let b = vec![
            Part {
                name: "tree".into(),
                value: PartValue::Tree(vec![el(1, "z"), el(3, "y")]),
            },
            Part {
                name: "msg".into(),
                value: PartValue::Text("a\nB\nc\n".into()),
            },
        ];
        let d = diff_observations(&a, &b);
        assert_eq!(d.len(), 2, "{d:?}");
        let Change::Tree {
            added,
            removed,
            changed,
            ..
        } = &d[0]
        else {
            panic!("{d:?}")
        };
        assert_eq!((added.as_slice(), removed.as_slice()), (&[3][..], &[2][..]));
        assert_eq!(changed[0].fields, vec![r#"value: "x" -> "z""#.to_string()]);
        let Change::Text { diff, .. } = &d[1] else {
            panic!("{d:?}")
        };
        assert!(diff.contains("-b\n") && diff.contains("+B\n"), "{diff}");
    }

    #[test]
    fn memory_diff_names_added_removed_changed() {
        let a = BTreeMap::from([
            ("/a".to_string(), "1".to_string()),
            ("/b".to_string(), "2".to_string()),
        ]);
        let b = BTreeMap::from([
            ("/a".to_string(), "9".to_string()),
            ("/c".to_string(), "3".to_string()),
        ]);
        let Some(Change::Memory {
            added,
            removed,
            changed,
        }) = diff_memory(&a, &b)
        else {
            panic!()
        };
        assert_eq!(added.keys().collect::<Vec<_>>(), vec!["/c"]);
        assert_eq!(removed.keys().collect::<Vec<_>>(), vec!["/b"]);
        assert_eq!(changed["/a"], ("1".to_string(), "9".to_string()));
        assert!(diff_memory(&a, &a).is_none());
    }
}
