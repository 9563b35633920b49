//! The process's one wasmtime `Engine`, its epoch ticker, and the on-disk cache
//! of compiled components.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use wasmtime::component::Component;
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, WasmBacktraceDetails,
};

/// How often the epoch advances: the unit of the wall-clock backstop.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Epoch ticks so far: a clock of [`EPOCH_TICK`] resolution that costs one
/// atomic load to read (the recorder's per-frame "is this batch old?" check).
static TICKS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The ticker's count; it stands still until the engine exists.
pub(crate) fn ticks() -> u64 {
    TICKS.load(std::sync::atomic::Ordering::Relaxed)
}

/// The one engine of this process. Fuel metering (the deterministic compute
/// budget) and epoch interruption (the wall-clock backstop) are always on, NaNs
/// are canonicalised so floats agree everywhere, and async components are off
/// (it makes every call about three times cheaper).
pub(crate) fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let mut config = Config::new();
        config
            .consume_fuel(true)
            .epoch_interruption(true)
            .cranelift_nan_canonicalization(true)
            .wasm_backtrace_details(WasmBacktraceDetails::Enable)
            .concurrency_support(false);
        // `LUDUS_PERFMAP=1` writes /tmp/perf-PID.map, so `perf report` names
        // the plugins' functions (how the figures in the README were found).
        if std::env::var_os("LUDUS_PERFMAP").is_some() {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = match new_engine(config) {
            Ok(e) => e,
            // Only a build without Cranelift could fail here: a packaging bug.
            Err(e) => panic!("cannot create the wasmtime engine: {e}"),
        };
        let ticker = engine.weak();
        let spawned = std::thread::Builder::new()
            .name("ludus-epoch".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(EPOCH_TICK);
                    match ticker.upgrade() {
                        Some(e) => e.increment_epoch(),
                        None => return,
                    }
                    TICKS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("cannot start the epoch ticker, wall-clock deadlines are off: {e}");
        }
        engine
    })
}

/// Whether this process's engine instantiates plugins from a pool of
/// pre-reserved slots (`true`) or maps fresh memory for each (`false`).
pub fn pooling() -> bool {
    engine().pooling_allocator_metrics().is_some()
}

/// The engine with the pooling allocator, unless `LUDUS_POOLING=0` says
/// otherwise or the pool cannot be reserved (an address-space limit, say):
/// then instances are allocated on demand, as correct and slower to create.
///
/// Why pooling: every episode instantiates its plugins afresh. On demand,
/// each instance maps and unmaps its linear memory (a 4 GiB reservation) and
/// faults its pages in; in a run of short episodes the kernel's share of that
/// was half the process's time. The pool reuses warm slots and resets only
/// the pages an instance dirtied.
fn new_engine(mut config: Config) -> wasmtime::Result<Engine> {
    let off = std::env::var("LUDUS_POOLING").is_ok_and(|v| v == "0");
    if !off {
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool_config()));
        match Engine::new(&config) {
            Ok(e) => return Ok(e),
            Err(e) => tracing::warn!(
                "cannot reserve the instance pool, allocating plugin instances on demand: {e:#}"
            ),
        }
    }
    config.allocation_strategy(InstanceAllocationStrategy::OnDemand);
    Engine::new(&config)
}

/// Room for every plugin instance alive at once in one process: a run's
/// jobs x three plugins, a trainer's samplers (128 envs in its largest
/// scenario), the IDE's replays, with plenty to spare. Every limit a plugin
/// meets stays the one `Limits` sets (the memory cap is enforced by the
/// store's limiter, the slots hold up to 4 GiB, all of wasm32): the pool only
/// bounds how many instances exist at once. An instantiation past that
/// fails as the episode's crash, naming the limit.
fn pool_config() -> PoolingAllocationConfig {
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(1000)
        // A Python component instantiates 14-38 core modules, a Rust one a few.
        .total_core_instances(4000)
        .max_core_instances_per_component(256)
        .total_memories(1000)
        .max_memories_per_component(16)
        .max_memory_size(4 << 30)
        .total_tables(2000)
        .max_tables_per_component(64)
        .table_elements(1 << 20)
        .max_core_instance_size(8 << 20)
        .max_component_instance_size(8 << 20)
        // Reset the first 4 MiB of a freed slot's memory instead of handing
        // the pages back and faulting them in again; where the kernel can say
        // which pages were dirtied (PAGEMAP_SCAN, Linux 6.7+), only those.
        // Short episodes dirty few pages, so scanning beats resetting all 4 MiB.
        .linear_memory_keep_resident(4 << 20)
        .table_keep_resident(1 << 20)
        .pagemap_scan(wasmtime::Enabled::Auto);
    pool
}

static CACHE_DIR: OnceLock<PathBuf> = OnceLock::new();

/// Sets, once per process and before the first plugin loads, where compiled
/// components are cached; it wins over the environment (tests use it, since
/// setting variables in a multi-threaded process is unsound). False if
/// already set.
pub fn set_cache_dir(dir: PathBuf) -> bool {
    CACHE_DIR.set(dir).is_ok()
}

/// Where compiled components are cached: the folder given to
/// [`set_cache_dir`], else `$LUDUS_CACHE_DIR`, else `$XDG_CACHE_HOME/ludus`,
/// else `~/.cache/ludus`.
pub fn cache_dir() -> Option<PathBuf> {
    if let Some(d) = CACHE_DIR.get() {
        return Some(d.clone());
    }
    if let Some(d) = std::env::var_os("LUDUS_CACHE_DIR") {
        return Some(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return Some(PathBuf::from(d).join("ludus"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache").join("ludus"))
}

/// Called just before a plugin is compiled because the cache has no artifact
/// for it (a Python or JavaScript plugin takes seconds), with the plugin's path.
type CompileNotice = Box<dyn Fn(&Path) + Send + Sync>;

static COMPILE_NOTICE: OnceLock<CompileNotice> = OnceLock::new();

/// Sets, once per process, what to do when a plugin is about to be compiled
/// for the first time (the binary prints a line; libraries stay quiet).
pub fn on_first_compile(notice: impl Fn(&Path) + Send + Sync + 'static) {
    let _ = COMPILE_NOTICE.set(Box::new(notice));
}

/// How a component was obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompileSource {
    Compiled,
    Cache,
}

/// Compiles `bytes`, or loads the artifact this process's engine configuration
/// compiled earlier for the same content hash.
pub(crate) fn compile(
    bytes: &[u8],
    hash: &str,
    path: &Path,
) -> wasmtime::Result<(Component, CompileSource)> {
    let engine = engine();
    let notice = || {
        if let Some(n) = COMPILE_NOTICE.get() {
            n(path);
        }
    };
    let Some(dir) = cache_dir() else {
        notice();
        return Ok((Component::new(engine, bytes)?, CompileSource::Compiled));
    };
    let mut h = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    let file = dir.join(format!("{hash}-{:016x}.cwasm", h.finish()));
    if file.exists() {
        // SAFETY: the cache only holds artifacts this program serialised itself
        // with an engine of the same configuration (the file name carries the
        // engine's compatibility hash and the plugin's content hash).
        match unsafe { Component::deserialize_file(engine, &file) } {
            Ok(c) => return Ok((c, CompileSource::Cache)),
            Err(e) => tracing::warn!(
                "ignoring unreadable cached artifact {}: {e}",
                file.display()
            ),
        }
    }
    tracing::info!("compiling plugin {hash:.12} (first load; later loads use the cache)");
    notice();
    let component = Component::new(engine, bytes)?;
    if let Err(e) = store_artifact(&dir, &file, &component) {
        tracing::warn!("cannot write the compile cache at {}: {e}", dir.display());
    }
    Ok((component, CompileSource::Compiled))
}

fn store_artifact(dir: &Path, file: &Path, component: &Component) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let bytes = component.serialize().map_err(std::io::Error::other)?;
    let tmp = file.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(tmp, file)
}
