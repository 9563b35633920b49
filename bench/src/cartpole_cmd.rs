use std::process::ExitCode;

use crate::cartpole::{BenchError, BenchReport, run_bench};
use anyhow::Result;

use crate::UsageError;
use crate::cli::BenchArgs;

pub fn run(args: BenchArgs) -> Result<ExitCode> {
    let report =
        run_bench(&args.cartpole, args.seconds, args.batch, args.rounds).map_err(|e| match e {
            // Wrapped as a run's load error so `main` prints it as one and exits 2.
            BenchError::Load(e) => anyhow::Error::from(ludus_arena::RunError::Load(e)),
            BenchError::Store(e) => anyhow::Error::from(ludus_arena::RunError::Store(e)),
            BenchError::Invalid(m) => anyhow::Error::from(UsageError(m)),
            e @ BenchError::Crash(_) => anyhow::Error::from(e),
        })?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_table(&report);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_table(r: &BenchReport) {
    let batched = format!("wasm, batched ({})", r.batch);
    let mut rows: Vec<(&str, f64)> = vec![
        ("native Rust", r.native_steps_per_sec),
        ("wasm, one env per call", r.wasm_single_steps_per_sec),
    ];
    if let Some(v) = r.wasm_vector_steps_per_sec {
        rows.push(("wasm, one env, fast path", v));
    }
    rows.push((&batched, r.wasm_batched_steps_per_sec));
    rows.push(("wasm, one env, recorded", r.wasm_recorded_steps_per_sec));
    println!("CartPole, one thread, {} s per mode", r.seconds);
    println!(
        "{:<26} {:>15} {:>10} {:>10}",
        "mode", "steps/s", "ns/step", "vs native"
    );
    for (name, rate) in rows {
        let vs = if r.native_steps_per_sec > 0.0 {
            rate / r.native_steps_per_sec
        } else {
            0.0
        };
        println!(
            "{name:<26} {:>15} {:>10.1} {:>10.4}",
            thousands(rate),
            BenchReport::ns_per_step(rate),
            vs
        );
    }
    println!();
    println!(
        "recorded / unrecorded: {:.3} over {} rounds ({} frames, {} episodes, {:.1} MiB)",
        r.recorded_vs_unrecorded,
        r.rounds.len(),
        r.recorded_frames,
        r.recorded_episodes,
        r.recorded_db_bytes as f64 / f64::from(1u32 << 20)
    );
    let each = |f: fn(&crate::cartpole::RoundReport) -> f64| {
        r.rounds
            .iter()
            .map(|x| format!("{:.1}", f(x)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "recording adds:        {:.1}% time per step, median of the rounds ({})",
        r.recording_overhead_percent,
        each(|x| x.overhead_percent)
    );
    println!(
        "                       {:.1}% up to the last step ({}), then {:.0} ms for the closing commit",
        r.steady_recording_overhead_percent,
        each(|x| x.steady_overhead_percent),
        r.closing_commit_ms
    );
    if let (Some(u), Some(st), Some(rec), Some(pct)) = (
        r.wasm_single_cpu_ns_per_step,
        r.recorded_stepping_cpu_ns_per_step,
        r.recorder_cpu_ns_per_frame,
        r.stepping_cpu_overhead_percent,
    ) {
        println!(
            "CPU per step:          unrecorded {u:.0} ns; recorded {st:.0} ns on the stepping thread (+{pct:.1}%) and {rec:.0} ns on the recorder thread"
        );
    }
    if let Some(v) = r.wasm_vector_vs_single {
        println!("fast path / step:      {v:.3}");
    }
    println!("batched / native:      {:.3}", r.wasm_batched_vs_native);
    println!("batched / one per call: {:.3}", r.wasm_batched_vs_single);
}

/// 12345678.9 -> "12,345,679".
fn thousands(x: f64) -> String {
    let digits = format!("{:.0}", x.max(0.0));
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}
