//! `ludus bench debugger`: records one long episode (the `ticker` test env
//! with the `memory-probe` agent, which logs every step and writes memory
//! every 16 steps), then times what a debugging session does on it: open,
//! jump to random frames with their full memory, scan every frame for a
//! breakpoint, and reverse-continue from the end to the start.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Result;
use ludus_arena::run::{Progress, prepare, splitmix64};
use ludus_arena::{Limits, PluginSpec, RunSpec};
use ludus_debugger::Session;

use crate::UsageError;
use crate::cli::BenchArgs;

const PLUGINS: &str = "plugins/target/wasm32-wasip2/release";
const JUMPS: usize = 200;

#[derive(serde::Serialize)]
struct Figures {
    frames: u64,
    memory_writes_every: u32,
    record_s: f64,
    db_mib: f64,
    open_ms: f64,
    first_jump_ms: f64,
    jump_mean_ms: f64,
    jump_p50_ms: f64,
    jump_max_ms: f64,
    /// `false`: reading and decoding frames, no variables built.
    scan_floor_frames_per_s: f64,
    scan_frames_per_s: f64,
    scan_memory_frames_per_s: f64,
    reverse_continue_ms: f64,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

pub fn run(args: BenchArgs) -> Result<ExitCode> {
    if args.frames == 0 {
        return Err(UsageError("--frames must be at least 1".into()).into());
    }
    let plugins = PathBuf::from(PLUGINS);
    let db = std::env::temp_dir().join(format!("ludus-bench-debugger-{}.db", std::process::id()));
    let cleanup = || {
        for ext in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{ext}", db.display()));
        }
    };
    cleanup();
    let write_every = 16u32;
    let spec = RunSpec {
        env: PluginSpec {
            path: plugins.join("ticker.wasm"),
            config: format!("steps={}", args.frames),
            limits: Limits::DEFAULT,
        },
        agent: PluginSpec {
            path: plugins.join("memory_probe.wasm"),
            config: format!("write_every={write_every}"),
            limits: Limits::DEFAULT,
        }
        .into(),
        reward: None,
        episodes: 1,
        seed: 1,
        jobs: 1,
        db: db.clone(),
        models: Default::default(),
        step_delay: std::time::Duration::ZERO,
    };
    eprintln!("recording one episode of {} frames...", args.frames);
    let t = Instant::now();
    let report = prepare(spec)?.run(&Progress::default())?;
    let record_s = t.elapsed().as_secs_f64();
    let id = report.episodes[0].id;
    let db_bytes: u64 = ["", "-wal"]
        .iter()
        .filter_map(|e| std::fs::metadata(format!("{}{e}", db.display())).ok())
        .map(|m| m.len())
        .sum();

    let t = Instant::now();
    let mut session = Session::open(&db, id)?;
    let open = t.elapsed();
    let n = session.len();

    let mut seed = 7u64;
    let mut pick = || splitmix64(&mut seed) % n;
    let t = Instant::now();
    let v = session.view(pick())?;
    let first_jump = t.elapsed();
    let mut jumps = Vec::with_capacity(JUMPS);
    let mut memory_paths = v.memory.len();
    for _ in 0..JUMPS {
        let k = pick();
        let t = Instant::now();
        let v = session.view(k)?;
        jumps.push(t.elapsed());
        memory_paths = memory_paths.max(v.memory.len());
    }
    jumps.sort();

    let t = Instant::now();
    session.hits("false")?;
    let scan_floor = t.elapsed();
    let t = Instant::now();
    let hits = session.hits("reward > 0.5 && step % 1000 == 0")?;
    let scan = t.elapsed();
    let t = Instant::now();
    let mem_hits = session.hits(r#"memory["/episode/step"] == "160""#)?;
    let scan_memory = t.elapsed();

    session.add_breakpoint("step == 0")?;
    session.last();
    let t = Instant::now();
    let back = session.reverse_continue()?;
    let reverse = t.elapsed();

    let f = Figures {
        frames: n,
        memory_writes_every: write_every,
        record_s,
        db_mib: db_bytes as f64 / f64::from(1u32 << 20),
        open_ms: ms(open),
        first_jump_ms: ms(first_jump),
        jump_mean_ms: ms(jumps.iter().sum::<Duration>()) / JUMPS as f64,
        jump_p50_ms: ms(jumps[JUMPS / 2]),
        jump_max_ms: ms(jumps[JUMPS - 1]),
        scan_floor_frames_per_s: n as f64 / scan_floor.as_secs_f64().max(1e-9),
        scan_frames_per_s: n as f64 / scan.as_secs_f64().max(1e-9),
        scan_memory_frames_per_s: n as f64 / scan_memory.as_secs_f64().max(1e-9),
        reverse_continue_ms: ms(reverse),
    };
    cleanup();
    if args.json {
        println!("{}", serde_json::to_string(&f)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "debugger on one episode of {} frames (recorded in {:.1} s, {:.1} MiB; memory written every {} frames, up to {} paths)",
        f.frames, f.record_s, f.db_mib, write_every, memory_paths
    );
    println!("  open                          {:>10.2} ms", f.open_ms);
    println!(
        "  first jump (cold)             {:>10.2} ms",
        f.first_jump_ms
    );
    println!(
        "  random jump + full memory     {:>10.2} ms mean, {:.2} ms p50, {:.2} ms max ({JUMPS} jumps)",
        f.jump_mean_ms, f.jump_p50_ms, f.jump_max_ms
    );
    println!(
        "  scan `false` (read + decode only)       {:>12.0} frames/s",
        f.scan_floor_frames_per_s
    );
    println!(
        "  scan `reward > 0.5 && step % 1000 == 0`  {:>12.0} frames/s ({} hits)",
        f.scan_frames_per_s,
        hits.len()
    );
    println!(
        "  scan `memory[\"/episode/step\"] == \"160\"` {:>12.0} frames/s ({} hits)",
        f.scan_memory_frames_per_s,
        mem_hits.len()
    );
    println!(
        "  reverse-continue end -> frame {:?}  {:>10.1} ms",
        back.map(|h| h.frame),
        f.reverse_continue_ms
    );
    Ok(ExitCode::SUCCESS)
}
