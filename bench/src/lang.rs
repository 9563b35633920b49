//! `ludus bench-lang`: the same CartPole env written in Rust, Python and
//! JavaScript, side by side: load time with an empty compile cache and with a
//! warm one, and steps/s through the wasm boundary (each step's observation
//! copied out to the host). When the project's Python has gymnasium, its own
//! CartPole-v1 is measured in the same run for comparison.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use ludus_arena::model::Action;
use ludus_arena::{Limits, Plugin, PluginKind};
use ludus_core::splitmix64;
use serde::Serialize;

use crate::UsageError;

#[derive(Args, Debug)]
pub struct BenchLangArgs {
    /// The Rust CartPole: a .wasm or a plugin project folder.
    #[arg(long, default_value = "plugins/examples/cartpole")]
    pub rust: PathBuf,
    /// The Python CartPole: a .wasm or a plugin project folder.
    #[arg(long, default_value = "plugins/examples/py-cartpole")]
    pub python: PathBuf,
    /// The JavaScript CartPole: a .wasm or a plugin project folder.
    #[arg(long, default_value = "plugins/examples/js-cartpole")]
    pub js: PathBuf,
    /// Seconds of stepping per language.
    #[arg(long, default_value_t = 2.0)]
    pub seconds: f64,
    /// The Python that runs gymnasium's CartPole (default: the nearest
    /// `.venv/bin/python`, else `python3`).
    #[arg(long)]
    pub gym_python: Option<PathBuf>,
    /// Print one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
pub struct LangFigures {
    pub lang: String,
    pub wasm: String,
    pub wasm_bytes: u64,
    /// Plugin::load with an empty compile cache (compiles with Cranelift).
    pub load_first_ms: f64,
    /// Plugin::load again (the cached artifact).
    pub load_cached_ms: f64,
    /// A fresh instance plus `init`.
    pub instantiate_ms: f64,
    pub steps: u64,
    pub episodes: u64,
    pub steps_per_sec: f64,
    /// Steps/s through the batched interface (`batch-step`, BATCH copies per
    /// call), which each SDK derives in the guest language.
    pub batch_steps_per_sec: f64,
}

/// Copies per `batch-step` call in the batched measurement.
const BATCH: usize = 64;

#[derive(Debug, Serialize)]
pub struct GymFigures {
    /// `gymnasium.make("CartPole-v1")`, with its default wrappers.
    pub make_steps_per_sec: f64,
    /// The bare `CartPoleEnv` class, no wrappers, seeded once (`reset()` at
    /// the end of each episode): gymnasium's fastest one-env loop, the
    /// yardstick for the Python plugin.
    pub raw_steps_per_sec: f64,
    /// The bare class reseeded every episode (`reset(seed=...)`), as every
    /// ludus reset is.
    pub raw_reseed_steps_per_sec: f64,
    /// gymnasium's own numpy-vectorised `CartPoleVectorEnv`, BATCH copies per
    /// call (its autoreset takes one extra step per episode), when this
    /// gymnasium has it.
    pub vector_steps_per_sec: Option<f64>,
    pub version: String,
}

#[derive(Debug, Serialize)]
pub struct LangReport {
    pub seconds: f64,
    pub langs: Vec<LangFigures>,
    pub gymnasium: Option<GymFigures>,
    /// Why gymnasium was not measured, when it was not.
    pub gymnasium_missing: Option<String>,
}

/// `build` turns a plugin project into its .wasm (the binary's `ludus build`).
pub fn run(args: BenchLangArgs, build: &dyn Fn(&Path) -> Result<PathBuf>) -> Result<ExitCode> {
    if !(args.seconds > 0.0 && args.seconds <= 600.0) {
        return Err(UsageError(format!(
            "--seconds must be within (0, 600] (got {})",
            args.seconds
        ))
        .into());
    }
    // An empty compile cache, so the first load of each plugin compiles.
    let cache = std::env::temp_dir().join(format!("ludus-bench-lang-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&cache);
    std::fs::create_dir_all(&cache)
        .with_context(|| format!("cannot create {}", cache.display()))?;
    // SAFETY: set before this command starts any thread of its own (the
    // engine and its ticker start on the first load below).
    unsafe { std::env::set_var("LUDUS_CACHE_DIR", &cache) };
    let mut langs = Vec::new();
    for (lang, path) in [
        ("Rust", &args.rust),
        ("Python", &args.python),
        ("JavaScript", &args.js),
    ] {
        let wasm = wasm_of(path, build)?;
        if !args.json {
            eprintln!("measuring {lang} ({})", wasm.display());
        }
        langs.push(measure(lang, &wasm, args.seconds)?);
    }
    let _ = std::fs::remove_dir_all(&cache);
    let (gymnasium, gymnasium_missing) = match gym(&args) {
        Ok(g) => (Some(g), None),
        Err(why) => (None, Some(why)),
    };
    let report = LangReport {
        seconds: args.seconds,
        langs,
        gymnasium,
        gymnasium_missing,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_table(r: &LangReport) {
    println!(
        "CartPole through ludus, {:.1} s per language and mode (one thread; batched: {BATCH} copies per call)",
        r.seconds
    );
    println!(
        "{:<12} {:>10} {:>14} {:>14} {:>14} {:>12} {:>16}",
        "language",
        "size",
        "load first",
        "load cached",
        "instantiate",
        "steps/s",
        "batched steps/s"
    );
    for l in &r.langs {
        println!(
            "{:<12} {:>8.1}MB {:>11.1} ms {:>11.2} ms {:>11.2} ms {:>12.0} {:>16.0}",
            l.lang,
            l.wasm_bytes as f64 / 1e6,
            l.load_first_ms,
            l.load_cached_ms,
            l.instantiate_ms,
            l.steps_per_sec,
            l.batch_steps_per_sec
        );
    }
    match (&r.gymnasium, &r.gymnasium_missing) {
        (Some(g), _) => {
            println!(
                "gymnasium {} CartPole-v1 (native CPython, same action stream): {:.0} steps/s bare, seeded once; {:.0} bare, reseeded every episode; {:.0} with gymnasium.make's wrappers",
                g.version, g.raw_steps_per_sec, g.raw_reseed_steps_per_sec, g.make_steps_per_sec
            );
            if let Some(v) = g.vector_steps_per_sec {
                println!(
                    "gymnasium CartPoleVectorEnv (numpy, {BATCH} copies per call): {v:.0} steps/s"
                );
            }
            if let Some(py) = r.langs.iter().find(|l| l.lang == "Python") {
                println!(
                    "Python plugin vs bare gymnasium (seeded once): {:.2}x one step per call, {:.2}x batched",
                    py.steps_per_sec / g.raw_steps_per_sec,
                    py.batch_steps_per_sec / g.raw_steps_per_sec
                );
            }
        }
        (None, Some(why)) => println!("gymnasium not measured: {why}"),
        (None, None) => {}
    }
}

/// A .wasm as it is, or a project folder built with `ludus build`.
fn wasm_of(path: &Path, build: &dyn Fn(&Path) -> Result<PathBuf>) -> Result<PathBuf> {
    if path.is_dir() {
        let wasm = build(path)?;
        Ok(wasm)
    } else if path.is_file() {
        Ok(path.to_path_buf())
    } else {
        Err(UsageError(format!(
            "{}: no such plugin or project (give a .wasm or a plugin project folder)",
            path.display()
        ))
        .into())
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn measure(lang: &str, wasm: &Path, seconds: f64) -> Result<LangFigures> {
    let t = Instant::now();
    Plugin::load(wasm, PluginKind::Env, Limits::DEFAULT).map_err(ludus_arena::RunError::Load)?;
    let load_first = t.elapsed();
    let t = Instant::now();
    let plugin = Plugin::load(wasm, PluginKind::Env, Limits::DEFAULT)
        .map_err(ludus_arena::RunError::Load)?;
    let load_cached = t.elapsed();
    let crashed = |c: ludus_arena::plugin::Crash| anyhow::anyhow!("{lang} CartPole crashed: {c}");
    let t = Instant::now();
    let mut env = plugin.env(0).map_err(crashed)?;
    let info = env
        .init("")
        .map_err(crashed)?
        .map_err(|m| UsageError(format!("{} rejected an empty config: {m}", wasm.display())))?;
    let instantiate = t.elapsed();
    let mut seed = 0u64;
    env.reset(seed).map_err(crashed)?;
    let mut rng = 7u64;
    let (mut steps, mut episodes, mut in_episode) = (0u64, 1u64, 0u32);
    let budget = Duration::from_secs_f64(seconds);
    let start = Instant::now();
    while start.elapsed() < budget {
        for _ in 0..256 {
            let action = Action::Discrete((splitmix64(&mut rng) >> 63) as u32);
            let r = env.step(&action).map_err(crashed)?;
            steps += 1;
            in_episode += 1;
            if r.terminated || r.truncated || (info.max_steps > 0 && in_episode >= info.max_steps) {
                seed += 1;
                episodes += 1;
                in_episode = 0;
                env.reset(seed).map_err(crashed)?;
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    // Batched: every copy resets itself in the guest when it ends.
    let seeds: Vec<u64> = (0..BATCH as u64).collect();
    let batch_err = |m: ludus_arena::Refusal| {
        anyhow::anyhow!("{lang} CartPole's batched interface failed: {m}")
    };
    env.batch_reset(&seeds)
        .map_err(crashed)?
        .map_err(batch_err)?;
    let mut actions = vec![0f32; BATCH];
    let mut batch_steps = 0u64;
    let start = Instant::now();
    while start.elapsed() < budget {
        for a in actions.iter_mut() {
            *a = (splitmix64(&mut rng) >> 63) as f32;
        }
        let r = env
            .batch_step(&actions)
            .map_err(crashed)?
            .map_err(batch_err)?;
        if r.rewards.len() != BATCH {
            anyhow::bail!(
                "{lang} CartPole's batch-step returned {} rewards for {BATCH} copies",
                r.rewards.len()
            );
        }
        batch_steps += BATCH as u64;
    }
    let batch_secs = start.elapsed().as_secs_f64();
    Ok(LangFigures {
        lang: lang.to_string(),
        wasm: wasm.display().to_string(),
        wasm_bytes: std::fs::metadata(wasm).map(|m| m.len()).unwrap_or(0),
        load_first_ms: ms(load_first),
        load_cached_ms: ms(load_cached),
        instantiate_ms: ms(instantiate),
        steps,
        episodes,
        steps_per_sec: steps as f64 / secs,
        batch_steps_per_sec: batch_steps as f64 / batch_secs,
    })
}

/// Gymnasium's CartPole-v1 in native CPython, the same action stream and the
/// same seconds, actions drawn before the clock starts. The one-env loops
/// step through 256-action blocks of the stream and reset when an episode
/// ends, like the ludus loop above. The yardstick is gymnasium's leanest
/// loop, the bare class seeded once: reseeding every episode makes gymnasium
/// build a new numpy generator, which a ludus reset (SplitMix64) does not
/// pay for, so it is measured too but not compared against.
const GYM_SCRIPT: &str = r#"
import sys, time
try:
    import gymnasium
    from gymnasium.envs.classic_control.cartpole import CartPoleEnv
except ImportError as e:
    print("missing", e)
    sys.exit(3)
try:
    import numpy as np
    from gymnasium.envs.classic_control.cartpole import CartPoleVectorEnv
except ImportError:
    CartPoleVectorEnv = None
seconds = float(sys.argv[1])
batch = int(sys.argv[2])
state = 7
mask = (1 << 64) - 1
actions = []
for _ in range(1 << 16):
    state = (state + 0x9E3779B97F4A7C15) & mask
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    actions.append((z ^ (z >> 31)) >> 63)
blocks = [actions[i:i + 256] for i in range(0, len(actions), 256)]
def bench(env, reseed):
    env.reset(seed=0)
    step, reset = env.step, env.reset
    steps, seed, k = 0, 0, 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for a in blocks[k % len(blocks)]:
            _, _, terminated, truncated, _ = step(a)
            if terminated or truncated:
                seed += 1
                if reseed:
                    reset(seed=seed)
                else:
                    reset()
        k += 1
        steps += 256
    return steps / (time.perf_counter() - start)
def bench_vector():
    env = CartPoleVectorEnv(num_envs=batch)
    env.reset(seed=0)
    stream = np.array(actions, dtype=np.int64)
    chunks = [stream[i:i + batch] for i in range(0, len(stream) - batch + 1, batch)]
    steps, k = 0, 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(16):
            env.step(chunks[k % len(chunks)])
            k += 1
        steps += 16 * batch
    return steps / (time.perf_counter() - start)
make = bench(gymnasium.make("CartPole-v1"), False)
raw = bench(CartPoleEnv(), False)
raw_reseed = bench(CartPoleEnv(), True)
vector = bench_vector() if CartPoleVectorEnv is not None else float("nan")
print(f"ok {make} {raw} {raw_reseed} {vector} {gymnasium.__version__}")
"#;

fn gym(args: &BenchLangArgs) -> std::result::Result<GymFigures, String> {
    let python = match &args.gym_python {
        Some(p) => p.clone(),
        None => nearest_venv_python().unwrap_or_else(|| PathBuf::from("python3")),
    };
    let out = Command::new(&python)
        .args([
            "-c",
            GYM_SCRIPT,
            &args.seconds.to_string(),
            &BATCH.to_string(),
        ])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let Some(line) = stdout.lines().find(|l| l.starts_with("ok ")) else {
        return Err(format!(
            "{} has no gymnasium (pip install gymnasium==1.4.0, or run scripts/setup.sh): {}",
            python.display(),
            stdout.trim()
        ));
    };
    let f: Vec<&str> = line.split_whitespace().collect();
    let num = |i: usize| f.get(i).and_then(|s| s.parse::<f64>().ok());
    match (num(1), num(2), num(3), num(4), f.get(5)) {
        (Some(make), Some(raw), Some(raw_reseed), Some(vector), Some(v)) => Ok(GymFigures {
            make_steps_per_sec: make,
            raw_steps_per_sec: raw,
            raw_reseed_steps_per_sec: raw_reseed,
            vector_steps_per_sec: vector.is_finite().then_some(vector),
            version: (*v).to_string(),
        }),
        _ => Err(format!(
            "unexpected output from the gymnasium script: {line}"
        )),
    }
}

fn nearest_venv_python() -> Option<PathBuf> {
    let cwd = std::env::current_dir().ok()?;
    cwd.ancestors()
        .map(|d| d.join(".venv/bin/python"))
        .find(|p| p.is_file())
}
