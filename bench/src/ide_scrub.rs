//! `ludus ide DB --bench-scrub EPISODE`: the app's own cost per frame while
//! scrubbing an episode, without a window: each frame moves the cursor (as a
//! drag on the timeline does), lays out the whole UI with the memory tree and
//! diff panel open, and tessellates it. GPU work is excluded by construction.

use std::path::Path;
use std::time::{Duration, Instant};

use ludus_ide::egui;

use ludus_ide::state::{AppState, Command, Step};
use ludus_ide::ui::app_ui;

/// Figures of one pass.
#[derive(Debug, serde::Serialize)]
pub struct Figures {
    pub pass: String,
    pub frames: usize,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub max_ms: f64,
    /// CPU time of the UI thread over the pass, per frame (from the kernel's
    /// per-thread accounting; equals wall time when nothing waits).
    pub cpu_ms_per_frame: Option<f64>,
    /// CPU time of every thread of the process over the pass, per frame
    /// (the UI thread plus the debugger's read-ahead thread).
    pub process_cpu_ms_per_frame: Option<f64>,
}

fn schedstat(path: &std::path::Path) -> Option<Duration> {
    let s = std::fs::read_to_string(path).ok()?;
    let ns: u64 = s.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

fn thread_cpu() -> Option<Duration> {
    schedstat(Path::new("/proc/thread-self/schedstat"))
}

/// Summed over the threads alive now (the process's own figure lags: the
/// kernel folds a thread's time in only when it exits).
fn process_cpu() -> Option<Duration> {
    let mut total = Duration::ZERO;
    for e in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        total += schedstat(&e.path().join("schedstat"))?;
    }
    Some(total)
}

pub fn run(db: &Path, episode: i64, frames: usize, json: bool) -> anyhow::Result<()> {
    let mut state = AppState::new();
    state.apply(Command::OpenDb(db.to_path_buf()));
    state.apply(Command::OpenEpisode(episode));
    state.wait_for_workers();
    if let Some(e) = state.errors().first() {
        anyhow::bail!(crate::UsageError(format!("--bench-scrub: {e}")));
    }
    let Some(len) = state.debug.as_ref().map(|d| d.session.len()) else {
        anyhow::bail!(crate::UsageError(format!(
            "--bench-scrub: episode {episode} did not open"
        )));
    };
    if len == 0 {
        anyhow::bail!(crate::UsageError(format!(
            "--bench-scrub: episode {episode} has no frames"
        )));
    }
    state.show_memory = true;
    state.show_diff = true;
    let ctx = egui::Context::default();
    let frames = frames.max(10);
    let mut t = 0.0;
    let mut frame = |state: &mut AppState, cmd: Option<Command>| -> Duration {
        let start = Instant::now();
        if let Some(c) = cmd {
            state.apply(c);
        }
        t += 1.0 / 60.0;
        let input = egui::RawInput {
            screen_rect: Some(egui::Rect::from_min_size(
                egui::Pos2::ZERO,
                egui::vec2(1600.0, 1000.0),
            )),
            time: Some(t),
            ..Default::default()
        };
        let mut out = ctx.run_ui(input, |ui| app_ui(ui, state));
        // Texture uploads are the renderer's job (excluded here).
        out.textures_delta.clear();
        let meshes = ctx.tessellate(out.shapes, out.pixels_per_point);
        std::hint::black_box(meshes);
        start.elapsed()
    };
    // Warm-up: fonts, first layout.
    for _ in 0..5 {
        frame(&mut state, None);
    }
    let mut results = Vec::new();
    type Pass<'a> = (&'a str, Box<dyn Fn(usize) -> Command>);
    let passes: Vec<Pass> = vec![
        (
            "scrub (a drag across the whole timeline)",
            Box::new(move |i| {
                Command::Step(Step::Goto((i as u64 * len / frames as u64).min(len - 1)))
            }),
        ),
        (
            "random jumps",
            Box::new(move |i| {
                let mut x = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xDEAD_BEEF;
                x ^= x >> 29;
                Command::Step(Step::Goto(x % len))
            }),
        ),
        ("step (F10 held)", Box::new(|_| Command::Step(Step::Next))),
    ];
    for (name, cmd) in passes {
        state.apply(Command::Step(Step::First));
        let cpu0 = thread_cpu();
        let proc0 = process_cpu();
        let mut times: Vec<f64> = (0..frames)
            .map(|i| frame(&mut state, Some(cmd(i))).as_secs_f64() * 1e3)
            .collect();
        let per_frame = |a: Option<Duration>, b: Option<Duration>| match (a, b) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a).as_secs_f64() * 1e3 / frames as f64),
            _ => None,
        };
        let cpu = per_frame(cpu0, thread_cpu());
        let process_cpu_ms = per_frame(proc0, process_cpu());
        times.sort_by(f64::total_cmp);
        let q = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
        results.push(Figures {
            pass: name.to_string(),
            frames,
            mean_ms: times.iter().sum::<f64>() / times.len() as f64,
            p50_ms: q(0.5),
            p95_ms: q(0.95),
            max_ms: q(1.0),
            cpu_ms_per_frame: cpu,
            process_cpu_ms_per_frame: process_cpu_ms,
        });
    }
    if let Some(e) = state.errors().first() {
        anyhow::bail!("--bench-scrub: {e}");
    }
    if json {
        println!(
            "{}",
            serde_json::json!({"episode": episode, "episode_frames": len, "passes": results})
        );
    } else {
        println!(
            "IDE frame cost, episode {episode} ({len} frames), memory tree and diff panel open, 1600x1000 points:"
        );
        for r in &results {
            println!(
                "  {:<42} mean {:>7.3} ms  p50 {:>7.3}  p95 {:>7.3}  max {:>7.3}  UI thread CPU {} ms/frame, all threads {} ms/frame",
                r.pass,
                r.mean_ms,
                r.p50_ms,
                r.p95_ms,
                r.max_ms,
                r.cpu_ms_per_frame
                    .map_or("?".to_string(), |c| format!("{c:.3}")),
                r.process_cpu_ms_per_frame
                    .map_or("?".to_string(), |c| format!("{c:.3}"))
            );
        }
    }
    Ok(())
}
