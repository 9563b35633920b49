//! The host side of the plugin contract (log, memory), and the per-store host state.

use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::{ResourceLimiter, Store};
use wasmtime_wasi::p2::pipe::SinkOutputStream;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::chat::SharedModels;
use crate::contract::ludus;
use crate::memory::{EpisodeMemory, MemoryError};
use crate::model::{LogLine, MemoryWrite, Role};

/// How much of a plugin's stderr is kept (for crash messages such as panics).
const STDERR_CAPACITY: usize = 64 * 1024;
/// Log lines a plugin may write in one call before further lines are dropped.
const MAX_LOG_LINES_PER_CALL: usize = 1000;
/// Longest log line kept, in bytes.
const MAX_LOG_LINE: usize = 4096;
/// Model calls a plugin may make in one call into it: the time it waits on
/// them does not count against its deadline, so this is what ends a
/// plugin that calls a model in a loop.
const MAX_MODEL_CALLS_PER_CALL: u32 = 256;

/// Everything a plugin instance's `Store` holds.
pub(crate) struct PluginState {
    pub role: Role,
    wasi: WasiCtx,
    table: ResourceTable,
    pub stderr: StderrTail,
    pub memory_cap: usize,
    pub memory_refused: Option<usize>,
    /// The bytes of all the plugin's linear memories together: the cap is
    /// on the plugin, not on each memory (a component may have many).
    memory_total: usize,
    /// Memory writes and deletes allowed in one call.
    writes_cap: usize,
    /// Memory writes and deletes allowed in the episode (an agent instance
    /// lives one episode), and those made so far.
    episode_writes_cap: u64,
    episode_writes: u64,
    /// A limit the plugin went over inside a call, and which: the call
    /// then ends as a crash naming it.
    pub over_limit: Option<String>,
    pub logs: Vec<LogLine>,
    dropped_logs: usize,
    /// Execution memory: agents only.
    pub memory: Option<EpisodeMemory>,
    pub writes: Vec<MemoryWrite>,
    /// The monotonic clock WASI serves, which a sleep advances at once.
    monotonic: VirtualClock,
    /// The episode's model calls (agents and reward plugins).
    pub models: Option<SharedModels>,
    /// Wall-clock time spent waiting on models in this call, which the
    /// call's deadline does not count (see [`new_store`]).
    pub excused: std::time::Duration,
    /// Whether the plugin called a model since this was last reset.
    pub called_models: bool,
    /// Model calls in the current plugin call (their waiting time is
    /// excused from its deadline, so their number is what bounds it).
    pub calls_this_call: u32,
}

impl PluginState {
    pub fn new(role: Role, seed: u64, memory_cap: usize, memory: Option<EpisodeMemory>) -> Self {
        let stderr = StderrTail::default();
        let monotonic = VirtualClock::new();
        let mut b = WasiCtx::builder();
        // Everything WASI could use to observe the outside world is either
        // absent or served deterministically from the seed.
        b.stdout(SinkOutputStream)
            .stderr(stderr.clone())
            .insecure_random_seed(u128::from(seed) << 64 | u128::from(!seed))
            .secure_random(SeededRng::new(seed ^ 0x5EC0_5EED))
            .insecure_random(SeededRng::new(seed ^ 0x1A5E_C0DE))
            .wall_clock(VirtualClock::new())
            .monotonic_clock(monotonic.clone());
        PluginState {
            role,
            wasi: b.build(),
            table: ResourceTable::new(),
            stderr,
            memory_cap,
            memory_refused: None,
            memory_total: 0,
            writes_cap: usize::MAX,
            episode_writes_cap: u64::MAX,
            episode_writes: 0,
            over_limit: None,
            logs: Vec::new(),
            dropped_logs: 0,
            memory,
            writes: Vec::new(),
            monotonic,
            models: None,
            excused: std::time::Duration::ZERO,
            called_models: false,
            calls_this_call: 0,
        }
    }

    /// With at most `per_call` memory writes and deletes in one call and
    /// `per_episode` in the instance's episode.
    pub fn with_write_caps(mut self, per_call: u64, per_episode: u64) -> Self {
        self.writes_cap = usize::try_from(per_call).unwrap_or(usize::MAX);
        self.episode_writes_cap = per_episode;
        self
    }

    /// Counts one memory write or delete; over either cap, the call ends as
    /// a crash naming the limit.
    fn count_write(&mut self) -> Result<(), String> {
        let message = if self.writes.len() >= self.writes_cap {
            format!(
                "over the memory write limit: more than {} writes and deletes in one call (raise it with --limit agent.memory-writes=N)",
                self.writes_cap
            )
        } else if self.episode_writes >= self.episode_writes_cap {
            format!(
                "over the memory write limit: more than {} writes and deletes in one episode (raise it with --limit agent.episode-memory-writes=N)",
                self.episode_writes_cap
            )
        } else {
            self.episode_writes += 1;
            return Ok(());
        };
        self.over_limit.get_or_insert_with(|| message.clone());
        Err(message)
    }

    /// The tail of what the plugin wrote to stderr, trimmed.
    pub fn stderr_text(&self) -> String {
        let bytes = self.stderr.contents();
        String::from_utf8_lossy(&bytes).trim().to_string()
    }

    pub fn take_logs(&mut self) -> Vec<LogLine> {
        if self.dropped_logs > 0 {
            self.logs.push(LogLine {
                role: self.role,
                level: ludus::plugin::log::Level::Warn,
                message: format!(
                    "{} log lines dropped (over {MAX_LOG_LINES_PER_CALL} in one call)",
                    self.dropped_logs
                ),
            });
            self.dropped_logs = 0;
        }
        std::mem::take(&mut self.logs)
    }
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl ResourceLimiter for PluginState {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Called for every memory as it is made (from 0) and as it grows.
        let total = self
            .memory_total
            .saturating_sub(current)
            .saturating_add(desired);
        if total > self.memory_cap {
            self.memory_refused = Some(total);
            return Ok(false);
        }
        self.memory_total = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

impl ludus::plugin::log::Host for PluginState {
    fn log(&mut self, level: ludus::plugin::log::Level, mut message: String) {
        if self.logs.len() >= MAX_LOG_LINES_PER_CALL {
            self.dropped_logs += 1;
            return;
        }
        if message.len() > MAX_LOG_LINE {
            let mut cut = MAX_LOG_LINE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        self.logs.push(LogLine {
            role: self.role,
            level,
            message,
        });
    }
}

impl ludus::plugin::memory::Host for PluginState {
    fn read(&mut self, path: String) -> Option<String> {
        self.memory.as_ref()?.read(&path).map(str::to_string)
    }

    fn write(&mut self, path: String, value: String) -> Result<(), String> {
        self.count_write()?;
        let Some(mem) = self.memory.as_mut() else {
            return Err("no execution memory".into());
        };
        mem.write(&path, value.clone())
            .map_err(|e: MemoryError| e.to_string())?;
        self.writes.push(MemoryWrite {
            path,
            value: Some(value),
        });
        Ok(())
    }

    fn delete(&mut self, path: String) -> Result<(), String> {
        self.count_write()?;
        let Some(mem) = self.memory.as_mut() else {
            return Err("no execution memory".into());
        };
        mem.delete(&path).map_err(|e| e.to_string())?;
        self.writes.push(MemoryWrite { path, value: None });
        Ok(())
    }

    fn list(&mut self, prefix: String) -> Vec<String> {
        self.memory
            .as_ref()
            .map(|m| m.list(&prefix))
            .unwrap_or_default()
    }
}

impl ludus::plugin::types::Host for PluginState {}

impl ludus::plugin::model::Host for PluginState {
    fn chat(
        &mut self,
        request: crate::chat::ChatRequest,
    ) -> Result<crate::chat::ChatResponse, crate::chat::ModelError> {
        let Some(models) = self.models.clone() else {
            return Err(crate::chat::ModelError::UnknownEndpoint(
                "this plugin cannot call models here (an environment, or a run without model access)".into(),
            ));
        };
        self.called_models = true;
        self.calls_this_call += 1;
        if self.calls_this_call > MAX_MODEL_CALLS_PER_CALL {
            let message = format!(
                "over the model call limit: more than {MAX_MODEL_CALLS_PER_CALL} model calls in one call (a loop around `chat`?)"
            );
            self.over_limit.get_or_insert_with(|| message.clone());
            return Err(crate::chat::ModelError::BudgetExceeded(message));
        }
        let started = std::time::Instant::now();
        let answer = match models.lock() {
            Ok(mut m) => m.chat(self.role, request),
            Err(_) => Err(crate::chat::ModelError::Unavailable(
                "the host's model access failed earlier in this episode".into(),
            )),
        };
        self.excused += started.elapsed();
        answer
    }

    fn env_tools(&mut self) -> Vec<crate::model::Tool> {
        self.models
            .as_ref()
            .and_then(|m| m.lock().ok().map(|m| m.env_tools.clone()))
            .unwrap_or_default()
    }
}

/// The linker every plugin is pre-linked with: WASI p2 (served by the sandboxed
/// context above) plus the ludus host interfaces.
pub(crate) fn linker(engine: &wasmtime::Engine) -> wasmtime::Result<Linker<PluginState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    // Sleeping: time is virtual, so a plugin's sleep (a monotonic-clock
    // subscription) is over at once, the clock moved on by its length.
    // WASI's own would sleep for real, beyond the call's deadline, since the
    // guest waits in the host where fuel and epochs do not reach.
    linker.allow_shadowing(true);
    let mut clock = linker.instance(MONOTONIC_CLOCK)?;
    clock.func_wrap(
        "subscribe-duration",
        |mut cx: wasmtime::StoreContextMut<'_, PluginState>, (ns,): (u64,)| {
            let s = cx.data_mut();
            s.monotonic.advance(ns);
            Ok((ready_pollable(&mut s.table)?,))
        },
    )?;
    clock.func_wrap(
        "subscribe-instant",
        |mut cx: wasmtime::StoreContextMut<'_, PluginState>, (when,): (u64,)| {
            let s = cx.data_mut();
            s.monotonic.advance_to(when);
            Ok((ready_pollable(&mut s.table)?,))
        },
    )?;
    linker.allow_shadowing(false);
    ludus::plugin::log::add_to_linker::<PluginState, HasSelf<PluginState>>(&mut linker, |s| s)?;
    ludus::plugin::memory::add_to_linker::<PluginState, HasSelf<PluginState>>(&mut linker, |s| s)?;
    ludus::plugin::model::add_to_linker::<PluginState, HasSelf<PluginState>>(&mut linker, |s| s)?;
    Ok(linker)
}

pub(crate) fn new_store(engine: &wasmtime::Engine, state: PluginState) -> Store<PluginState> {
    let mut store = Store::new(engine, state);
    store.limiter(|s| s as &mut dyn ResourceLimiter);
    // The wall-clock deadline counts the plugin's own time: time spent
    // waiting on a model (a host call, where epochs do not reach) is given
    // back when the deadline comes, once.
    store.epoch_deadline_callback(|mut cx| {
        let s = cx.data_mut();
        let excused = std::mem::take(&mut s.excused);
        let ticks =
            (excused.as_millis() as u64).div_ceil(crate::engine::EPOCH_TICK.as_millis() as u64);
        if ticks > 0 {
            Ok(wasmtime::UpdateDeadline::Continue(ticks))
        } else {
            Err(wasmtime::Trap::Interrupt.into())
        }
    });
    store
}

/// SplitMix64 behind WASI's random interfaces.
struct SeededRng(u64);

impl SeededRng {
    fn new(seed: u64) -> Self {
        SeededRng(seed)
    }
}

impl rand_core::TryRng for SeededRng {
    type Error = std::convert::Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        Ok((ludus_core::splitmix64(&mut self.0) >> 32) as u32)
    }
    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        Ok(ludus_core::splitmix64(&mut self.0))
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        for chunk in dst.chunks_mut(8) {
            let v = ludus_core::splitmix64(&mut self.0).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
        Ok(())
    }
}

/// A clock that starts at a fixed instant (2025-01-01T00:00:00Z) and advances
/// one millisecond every time it is read: plugins see time pass, identically on
/// every replay.
/// A plugin's stderr: every write succeeds, and the last
/// [`STDERR_CAPACITY`] bytes are kept for crash messages. (WASI's memory
/// pipe refuses writes past its capacity, so a plugin that printed more
/// than that crashed on the print itself.)
#[derive(Clone, Default)]
pub(crate) struct StderrTail(std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<u8>>>);

impl StderrTail {
    fn push(&self, bytes: &[u8]) {
        let Ok(mut tail) = self.0.lock() else { return };
        let keep = bytes.len().min(STDERR_CAPACITY);
        let len = tail.len();
        let over = (len + keep).saturating_sub(STDERR_CAPACITY);
        tail.drain(..over.min(len));
        tail.extend(&bytes[bytes.len() - keep..]);
    }

    /// The bytes kept.
    pub fn contents(&self) -> Vec<u8> {
        self.0
            .lock()
            .map(|t| t.iter().copied().collect())
            .unwrap_or_default()
    }
}

impl wasmtime_wasi::p2::OutputStream for StderrTail {
    fn write(&mut self, bytes: bytes::Bytes) -> wasmtime_wasi::p2::StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }
    fn flush(&mut self) -> wasmtime_wasi::p2::StreamResult<()> {
        Ok(())
    }
    fn check_write(&mut self) -> wasmtime_wasi::p2::StreamResult<usize> {
        Ok(STDERR_CAPACITY)
    }
}

impl wasmtime_wasi::p2::Pollable for StderrTail {
    fn ready<'a, 'f>(&'a mut self) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + 'f>>
    where
        'a: 'f,
        Self: 'f,
    {
        Box::pin(std::future::ready(()))
    }
}

impl tokio::io::AsyncWrite for StderrTail {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.push(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

impl wasmtime_wasi::cli::IsTerminal for StderrTail {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl wasmtime_wasi::cli::StdoutStream for StderrTail {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
    fn p2_stream(&self) -> Box<dyn wasmtime_wasi::p2::OutputStream> {
        Box::new(self.clone())
    }
}

/// The WASI monotonic clock's interface, at the version wasmtime-wasi serves.
const MONOTONIC_CLOCK: &str = "wasi:clocks/monotonic-clock@0.2.12";

/// A pollable that is ready at once.
struct Ready;

impl wasmtime_wasi::p2::Pollable for Ready {
    fn ready<'a, 'f>(&'a mut self) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + 'f>>
    where
        'a: 'f,
        Self: 'f,
    {
        Box::pin(std::future::ready(()))
    }
}

fn ready_pollable(
    table: &mut ResourceTable,
) -> wasmtime::Result<wasmtime::component::Resource<wasmtime_wasi::p2::DynPollable>> {
    let r = table.push(Ready)?;
    wasmtime_wasi::p2::subscribe(table, r)
}

/// Virtual time: each reading moves it on by a millisecond, a sleep by its
/// length. Shared between the clock WASI serves and the host's sleep.
#[derive(Clone)]
struct VirtualClock(std::sync::Arc<std::sync::atomic::AtomicU64>);

const EPOCH_2025_NS: u64 = 1_735_689_600 * 1_000_000_000;

impl VirtualClock {
    fn new() -> Self {
        VirtualClock(Default::default())
    }
    /// Moves the clock on by `ns`.
    fn advance(&self, ns: u64) {
        self.0.fetch_add(ns, std::sync::atomic::Ordering::Relaxed);
    }
    /// Moves the clock on to `when`, if it is not past it already.
    fn advance_to(&self, when: u64) {
        self.0.fetch_max(when, std::sync::atomic::Ordering::Relaxed);
    }
    fn tick(&self) -> u64 {
        self.0
            .fetch_add(1_000_000, std::sync::atomic::Ordering::Relaxed)
    }
}

impl wasmtime_wasi::HostWallClock for VirtualClock {
    fn resolution(&self) -> std::time::Duration {
        std::time::Duration::from_millis(1)
    }
    fn now(&self) -> std::time::Duration {
        std::time::Duration::from_nanos(EPOCH_2025_NS + self.tick())
    }
}

impl wasmtime_wasi::HostMonotonicClock for VirtualClock {
    fn resolution(&self) -> u64 {
        1_000_000
    }
    fn now(&self) -> u64 {
        self.tick()
    }
}
