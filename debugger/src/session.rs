//! A debugging session: a cursor on a frame of one episode, breakpoints and
//! watches, and the scans behind continue and reverse-continue.
//!
//! Going back costs what going forward costs: frames are read a chunk at a
//! time from either end, and the memory at any frame is rebuilt directly
//! (not by replaying from the start). A scan reads each chunk once and keeps
//! the memory up to date frame by frame from the frames' own writes.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::Arc;

use cel::common::value::{CowVal, Val};
use cel::context::VariableResolver;
use cel::{Context, Value};
use serde::Serialize;

use crate::DebugError;
use crate::expr::{Expr, ExprError, Uses};
use crate::fork::LiveEpisode;
use crate::source::{FrameSource, Recording};
use crate::view::{FrameView, cel_to_json, frame_vars, memory_cel, start_vars, vars_to_map};
use ludus_arena::model::Action;

/// A breakpoint: an expression that stops continue / reverse-continue at the
/// frames where it holds.
#[derive(Debug)]
pub struct Breakpoint {
    pub id: u32,
    pub expr: Expr,
    pub enabled: bool,
    /// How many times continue or reverse-continue stopped on it.
    pub hits: u64,
    /// The first frame where it could not be evaluated, and why (it counts
    /// as not holding there).
    pub error: Option<(u64, String)>,
}

#[derive(Debug)]
pub struct Watch {
    pub id: u32,
    pub expr: Expr,
}

/// Where a continue stopped, and which breakpoints hold there.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Hit {
    pub frame: u64,
    pub breakpoints: Vec<u32>,
}

/// A watch's value at a frame.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WatchValue {
    pub id: u32,
    pub expr: String,
    #[serde(flatten)]
    pub value: WatchResult,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WatchResult {
    Value(serde_json::Value),
    Error(String),
}

/// Frames per block when scanning backwards.
const BACK_BLOCK: u64 = 4096;

enum Source {
    Fixed(Box<dyn FrameSource>),
    Live(Box<LiveEpisode>),
}

pub struct Session {
    source: Source,
    cursor: u64,
    breakpoints: Vec<Breakpoint>,
    watches: Vec<Watch>,
    next_id: u32,
}

impl Session {
    pub fn new(source: Box<dyn FrameSource>) -> Session {
        Session {
            source: Source::Fixed(source),
            cursor: 0,
            breakpoints: Vec::new(),
            watches: Vec::new(),
            next_id: 1,
        }
    }

    /// Opens a recorded episode.
    pub fn open(db: &Path, episode: i64) -> Result<Session, DebugError> {
        Ok(Session::new(Box::new(Recording::open(db, episode)?)))
    }

    /// A session over a live episode: it grows as [`Session::live_step`] and
    /// [`Session::live_continue`] play it.
    pub fn live(live: LiveEpisode) -> Session {
        Session {
            source: Source::Live(Box::new(live)),
            cursor: 0,
            breakpoints: Vec::new(),
            watches: Vec::new(),
            next_id: 1,
        }
    }

    pub fn source(&self) -> &dyn FrameSource {
        match &self.source {
            Source::Fixed(s) => s.as_ref(),
            Source::Live(l) => l.as_ref(),
        }
    }

    /// The live episode, when this session plays one.
    pub fn live_episode(&mut self) -> Option<&mut LiveEpisode> {
        match &mut self.source {
            Source::Live(l) => Some(l),
            Source::Fixed(_) => None,
        }
    }

    fn live_or_err(&mut self) -> Result<&mut LiveEpisode, DebugError> {
        self.live_episode().ok_or_else(|| {
            DebugError::Invalid("this session shows a recorded episode, not a live one".into())
        })
    }

    /// Plays one frame of the live episode (the env gets `replace` instead
    /// of the agent's action when given) and moves the cursor to it.
    pub fn live_step(&mut self, replace: Option<Action>) -> Result<Option<u64>, DebugError> {
        let played = self.live_or_err()?.step(replace)?;
        if let Some(k) = played {
            self.cursor = k;
        }
        Ok(played)
    }

    /// Plays the live episode until an enabled breakpoint holds on a new
    /// frame (returned, with the cursor on it), the episode ends, or
    /// `max_frames` were played.
    pub fn live_continue(&mut self, max_frames: u64) -> Result<Option<Hit>, DebugError> {
        for _ in 0..max_frames {
            let Some(k) = self.live_step(None)? else {
                return Ok(None);
            };
            if let Some(hit) = self.find(k, k + 1, false)? {
                return Ok(self.stop_at(Some(hit)));
            }
        }
        Ok(None)
    }

    /// Number of frames.
    pub fn len(&self) -> u64 {
        self.source().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    fn last_index(&self) -> u64 {
        self.len().saturating_sub(1)
    }

    /// One frame forward; false at the last frame. (A cursor move, not an
    /// iterator, whatever the name suggests to clippy.)
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> bool {
        if self.cursor < self.last_index() {
            self.cursor += 1;
            true
        } else {
            false
        }
    }

    /// One frame back; false at frame 0.
    pub fn prev(&mut self) -> bool {
        if self.cursor > 0 {
            self.cursor -= 1;
            true
        } else {
            false
        }
    }

    pub fn first(&mut self) {
        self.cursor = 0;
    }

    pub fn last(&mut self) {
        self.cursor = self.last_index();
    }

    pub fn goto(&mut self, frame: u64) -> Result<(), DebugError> {
        if frame >= self.len() {
            return Err(DebugError::Invalid(format!(
                "there is no frame {frame}: the episode has {} frames (0..{})",
                self.len(),
                self.last_index()
            )));
        }
        self.cursor = frame;
        Ok(())
    }

    pub fn add_breakpoint(&mut self, source: &str) -> Result<u32, ExprError> {
        let expr = Expr::compile(source)?;
        let id = self.next_id;
        self.next_id += 1;
        self.breakpoints.push(Breakpoint {
            id,
            expr,
            enabled: true,
            hits: 0,
            error: None,
        });
        Ok(id)
    }

    /// Enables or disables a breakpoint; false when there is none with that id.
    pub fn set_enabled(&mut self, id: u32, enabled: bool) -> bool {
        match self.breakpoints.iter_mut().find(|b| b.id == id) {
            Some(b) => {
                b.enabled = enabled;
                true
            }
            None => false,
        }
    }

    /// Removes a breakpoint or a watch by id.
    pub fn remove(&mut self, id: u32) -> bool {
        let n = self.breakpoints.len() + self.watches.len();
        self.breakpoints.retain(|b| b.id != id);
        self.watches.retain(|w| w.id != id);
        n != self.breakpoints.len() + self.watches.len()
    }

    pub fn breakpoints(&self) -> &[Breakpoint] {
        &self.breakpoints
    }

    pub fn add_watch(&mut self, source: &str) -> Result<u32, ExprError> {
        let expr = Expr::compile(source)?;
        let id = self.next_id;
        self.next_id += 1;
        self.watches.push(Watch { id, expr });
        Ok(id)
    }

    pub fn watches(&self) -> &[Watch] {
        &self.watches
    }

    /// Moves to the next frame after the cursor where an enabled breakpoint
    /// holds. `None` (cursor unchanged) when there is none.
    pub fn continue_forward(&mut self) -> Result<Option<Hit>, DebugError> {
        let lo = self.cursor + 1;
        let hit = self.find(lo, self.len(), false)?;
        Ok(self.stop_at(hit))
    }

    /// Moves to the nearest frame before the cursor where an enabled
    /// breakpoint holds.
    pub fn reverse_continue(&mut self) -> Result<Option<Hit>, DebugError> {
        let mut hi = self.cursor;
        while hi > 0 {
            let lo = hi.saturating_sub(BACK_BLOCK);
            if let Some(hit) = self.find(lo, hi, true)? {
                return Ok(self.stop_at(Some(hit)));
            }
            hi = lo;
        }
        Ok(None)
    }

    fn stop_at(&mut self, hit: Option<Hit>) -> Option<Hit> {
        let hit = hit?;
        self.cursor = hit.frame;
        for b in &mut self.breakpoints {
            if hit.breakpoints.contains(&b.id) {
                b.hits += 1;
            }
        }
        Some(hit)
    }

    /// The first (or, with `last`, the last) frame in `lo..hi` where an
    /// enabled breakpoint holds.
    fn find(&mut self, lo: u64, hi: u64, last: bool) -> Result<Option<Hit>, DebugError> {
        let active: Vec<usize> = (0..self.breakpoints.len())
            .filter(|&i| self.breakpoints[i].enabled)
            .collect();
        if active.is_empty() || lo >= hi {
            return Ok(None);
        }
        let exprs: Vec<&Expr> = active.iter().map(|&i| &self.breakpoints[i].expr).collect();
        let mut found: Option<Hit> = None;
        let mut errors: Vec<(usize, u64, String)> = Vec::new();
        scan(self.source(), lo, hi, &exprs, |k, results| {
            let mut ids = Vec::new();
            for (j, r) in results.iter().enumerate() {
                match r {
                    Ok(true) => ids.push(self.breakpoints[active[j]].id),
                    Ok(false) => {}
                    Err(e) => errors.push((active[j], k, e.clone())),
                }
            }
            if ids.is_empty() {
                return ControlFlow::Continue(());
            }
            found = Some(Hit {
                frame: k,
                breakpoints: ids,
            });
            if last {
                ControlFlow::Continue(())
            } else {
                ControlFlow::Break(())
            }
        })?;
        for (i, k, e) in errors {
            let b = &mut self.breakpoints[i];
            if b.error.as_ref().is_none_or(|(f, _)| k < *f) {
                b.error = Some((k, e));
            }
        }
        Ok(found)
    }

    /// Every frame where `source` holds, in order (no cursor move, no hit counts).
    pub fn hits(&self, source: &str) -> Result<Vec<u64>, DebugError> {
        let expr = Expr::compile(source)?;
        let mut frames = Vec::new();
        scan(self.source(), 0, self.len(), &[&expr], |k, r| {
            if matches!(r[0], Ok(true)) {
                frames.push(k);
            }
            ControlFlow::Continue(())
        })?;
        Ok(frames)
    }

    /// Frame `k` with its memory before and after its writes.
    pub fn view(&self, k: u64) -> Result<FrameView, DebugError> {
        let (first, block) = self.source().block(k)?;
        let Some((frame, timing)) = block.get((k - first) as usize) else {
            return Err(DebugError::Invalid(format!("frame {k} is missing")));
        };
        let memory = self.source().memory_after(k)?;
        let memory_before = if k == 0 {
            self.source().start_memory()
        } else {
            self.source().memory_after(k - 1)?
        };
        Ok(FrameView {
            index: k,
            frame: frame.clone(),
            timing: *timing,
            memory,
            memory_before,
        })
    }

    /// The frame under the cursor.
    pub fn current(&self) -> Result<FrameView, DebugError> {
        self.view(self.cursor)
    }

    /// Evaluates an expression at frame `k`.
    pub fn eval(&self, source: &str, k: u64) -> Result<WatchResult, DebugError> {
        let expr = Expr::compile(source)?;
        Ok(self.eval_all(&[&expr], k)?.remove(0))
    }

    /// Every watch's value at frame `k`.
    pub fn watch_values(&self, k: u64) -> Result<Vec<WatchValue>, DebugError> {
        let exprs: Vec<&Expr> = self.watches.iter().map(|w| &w.expr).collect();
        let values = self.eval_all(&exprs, k)?;
        Ok(self
            .watches
            .iter()
            .zip(values)
            .map(|(w, value)| WatchValue {
                id: w.id,
                expr: w.expr.source().to_string(),
                value,
            })
            .collect())
    }

    fn eval_all(&self, exprs: &[&Expr], k: u64) -> Result<Vec<WatchResult>, DebugError> {
        if exprs.is_empty() {
            return Ok(Vec::new());
        }
        if k >= self.len() {
            return Err(DebugError::Invalid(format!("there is no frame {k}")));
        }
        let uses = exprs.iter().fold(Uses::default(), |u, e| u.union(e.uses));
        let known = if uses.memory {
            self.source().written_paths()?
        } else {
            Arc::new(Vec::new())
        };
        let mem_val = |k: Option<u64>| -> Result<Option<Value>, DebugError> {
            if !uses.memory {
                return Ok(None);
            }
            let m = match k {
                None => self.source().start_memory(),
                Some(k) => self.source().memory_after(k)?,
            };
            Ok(Some(memory_cel(&m, &known)))
        };
        let root = root_context(self.source());
        let mut ctx = root.new_inner_scope();
        let (first, block) = self.source().block(k)?;
        let (frame, timing) = &block[(k - first) as usize];
        for (name, v) in frame_vars(frame, timing, mem_val(Some(k))?, uses) {
            ctx.add_variable_from_value(name, v);
        }
        if uses.prev {
            let prev = if k == 0 {
                start_vars(mem_val(None)?)
            } else {
                let (first, block) = self.source().block(k - 1)?;
                let (frame, timing) = &block[(k - 1 - first) as usize];
                vars_to_map(frame_vars(frame, timing, mem_val(Some(k - 1))?, uses))
            };
            ctx.add_variable_from_value("prev", prev);
        }
        Ok(exprs
            .iter()
            .map(|e| match e.eval(&ctx) {
                Ok(v) => WatchResult::Value(cel_to_json(&v)),
                Err(m) => WatchResult::Error(m),
            })
            .collect())
    }
}

/// The variables every frame of an episode shares, in a root context with
/// CEL's standard library (built once per scan).
fn root_context(source: &dyn FrameSource) -> Context<'static, 'static> {
    let mut root = Context::default();
    let meta = source.meta();
    root.add_variable_from_value("outcome", meta.outcome.as_str());
    root.add_variable_from_value("episode", meta.to_cel());
    root
}

/// Value -> CEL's own representation, which the context hands to expressions.
fn to_val(v: Value) -> Result<Box<dyn Val>, DebugError> {
    Box::<dyn Val>::try_from(v)
        .map_err(|e| DebugError::Invalid(format!("cannot make a CEL value: {e}")))
}

/// One frame's variables, resolved by name as an expression reads them.
#[derive(Default)]
struct FrameScope {
    vars: Vec<(&'static str, Box<dyn Val>)>,
    memory: Option<Box<dyn Val>>,
    prev: Option<Box<dyn Val>>,
}

impl VariableResolver for FrameScope {
    fn resolve<'b>(&'b self, name: &str) -> Option<CowVal<'b, 'b>> {
        let found: Option<&'b dyn Val> = match name {
            "memory" => self.memory.as_deref(),
            "prev" => self.prev.as_deref(),
            _ => self
                .vars
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.as_ref()),
        };
        found.map(CowVal::Borrowed)
    }
}

/// Evaluates `exprs` on frames `lo..hi` in order, handing each frame's
/// results to `on` until it breaks. Reads each chunk once; the memory is
/// rebuilt once at `lo` and then kept up to date from the frames' writes.
pub(crate) fn scan(
    source: &dyn FrameSource,
    lo: u64,
    hi: u64,
    exprs: &[&Expr],
    mut on: impl FnMut(u64, &[Result<bool, String>]) -> ControlFlow<()>,
) -> Result<(), DebugError> {
    let hi = hi.min(source.len());
    if lo >= hi {
        return Ok(());
    }
    let uses = exprs.iter().fold(Uses::default(), |u, e| u.union(e.uses));
    let root = root_context(source);
    let known = if uses.memory {
        source.written_paths()?
    } else {
        Arc::new(Vec::new())
    };
    let mut memory: BTreeMap<String, String> = if !uses.memory {
        BTreeMap::new()
    } else if lo == 0 {
        source.start_memory()
    } else {
        source.memory_after(lo - 1)?
    };
    let mut mem_val: Option<Value> = uses.memory.then(|| memory_cel(&memory, &known));
    // The memory and `prev` as CEL holds them, converted once per change
    // rather than copied into every frame's context.
    let mut mem_cel: Option<Box<dyn Val>> = mem_val.clone().map(to_val).transpose()?;
    let mut prev: Option<Box<dyn Val>> = None;
    if uses.prev {
        prev = Some(to_val(if lo == 0 {
            start_vars(mem_val.clone())
        } else {
            let (first, block) = source.block(lo - 1)?;
            let (f, t) = &block[(lo - 1 - first) as usize];
            vars_to_map(frame_vars(f, t, mem_val.clone(), uses))
        })?);
    }
    let mut results: Vec<Result<bool, String>> = Vec::with_capacity(exprs.len());
    let mut scope = FrameScope::default();
    let mut k = lo;
    for block in source.blocks_from(lo, uses.fields()) {
        let (first, block) = block?;
        if k >= hi {
            break;
        }
        if k < first || block.is_empty() {
            return Err(DebugError::Invalid(format!(
                "the recording has no frame {k} (a block starts at {first})"
            )));
        }
        let end = (first + block.len() as u64).min(hi);
        for (frame, timing) in &block[(k - first) as usize..(end - first) as usize] {
            if uses.memory && !frame.memory_writes.is_empty() {
                ludus_arena::memory::apply_writes(
                    &mut memory,
                    frame
                        .memory_writes
                        .iter()
                        .map(|w| (w.path.as_str(), w.value.as_deref())),
                );
                mem_val = Some(memory_cel(&memory, &known));
                mem_cel = mem_val.clone().map(to_val).transpose()?;
            }
            // `memory` goes in apart (see `mem_cel`); `changed` still comes
            // from the frame.
            let vars = frame_vars(frame, timing, uses.memory.then_some(Value::Null), uses);
            let next_prev = if uses.prev {
                let mut all = vars.clone();
                if let Some(m) = &mem_val {
                    all.retain(|(n, _)| *n != "memory");
                    all.push(("memory", m.clone()));
                }
                Some(to_val(vars_to_map(all))?)
            } else {
                None
            };
            scope.vars.clear();
            for (name, v) in vars {
                if name != "memory" {
                    scope.vars.push((name, to_val(v)?));
                }
            }
            scope.memory = mem_cel.take();
            scope.prev = prev.take();
            // A child scope for this frame only (the context is covariant
            // in what it borrows, so it may borrow `scope` this long).
            let mut ctx = Context::new_inner_scope(&root);
            ctx.set_variable_resolver(&scope);
            results.clear();
            results.extend(exprs.iter().map(|e| e.holds(&ctx)));
            drop(ctx);
            mem_cel = scope.memory.take();
            prev = next_prev;
            if on(k, &results).is_break() {
                return Ok(());
            }
            k += 1;
        }
    }
    Ok(())
}
