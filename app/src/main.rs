//! `ludus`: the command line and the IDE over the arena, the debugger, the
//! trainer and the suites.

mod build_cmd;
mod cli;
mod copy_cmd;
mod debug_cmd;
mod export_cmd;
mod memory_cmd;
mod new_cmd;
mod run_cmd;
mod serve_cmd;
mod suite_cmd;
mod train_cmd;
mod worker_cmd;

use std::process::ExitCode;

use clap::Parser;

/// mimalloc instead of the system allocator: every step lifts an owned
/// observation out of wasm and frees it, and recording hands buffers from the
/// stepping threads to the recorder thread, where glibc's frees across
/// threads cost the stepping thread time.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// An error the user caused (bad argument, bad plugin, bad file): exit code 2.
/// One type for the binary and the benchmarks it calls.
pub use ludus_bench::UsageError;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LUDUS_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    // Compiling a Python or JavaScript plugin takes seconds: say so once.
    ludus_arena::on_first_compile(|path| {
        let name = path.file_name().unwrap_or(path.as_os_str());
        eprintln!(
            "compiling {} for the first time (a few seconds; cached afterwards)",
            name.to_string_lossy()
        );
    });
    // With no subcommand, `ludus` opens the IDE.
    let command = args
        .command
        .unwrap_or_else(|| cli::Command::Ide(ludus::ide::IdeArgs::default()));
    let result = match command {
        cli::Command::Run(a) => run_cmd::run(a),
        cli::Command::Export(mut a) => (|| {
            let _mirror = copy_cmd::readable(&mut a.db)?;
            export_cmd::export(a)
        })(),
        cli::Command::Serve(a) => serve_cmd::serve(a),
        cli::Command::Copy(a) => copy_cmd::run(a),
        cli::Command::Worker(a) => worker_cmd::worker(a),
        cli::Command::Bench(a) if a.target == cli::BenchTarget::Debugger => {
            ludus_bench::debugger::run(a)
        }
        cli::Command::Bench(a) if a.target == cli::BenchTarget::LlmTrain => {
            ludus_bench::llm_train::run(a)
        }
        cli::Command::Bench(a)
            if matches!(a.target, cli::BenchTarget::Llm | cli::BenchTarget::Backend) =>
        {
            ludus_bench::llm::run(a)
        }
        cli::Command::Bench(a) => ludus_bench::cartpole_cmd::run(a),
        cli::Command::BenchEnv(a) => ludus_bench::env::run(a),
        cli::Command::Memory(a) => memory_cmd::run(a),
        cli::Command::Debug(mut a) => (|| {
            let _mirror = copy_cmd::readable(&mut a.db)?;
            debug_cmd::debug(a)
        })(),
        cli::Command::Diff(mut a) => (|| {
            let _mirror = copy_cmd::readable(&mut a.db)?;
            debug_cmd::diff(a)
        })(),
        cli::Command::Fork(a) => debug_cmd::fork(a),
        cli::Command::Rerun(a) => debug_cmd::rerun(a),
        cli::Command::Suite(a) => suite_cmd::run(a),
        cli::Command::Train(a) => train_cmd::run(a),
        cli::Command::TrainBench(a) => ludus_bench::train::run(a),
        cli::Command::New(a) => new_cmd::run(a),
        cli::Command::Build(a) => build_cmd::run(a),
        cli::Command::BenchLang(a) => {
            ludus_bench::lang::run(a, &|dir| build_cmd::build(dir).map(|(_, wasm)| wasm))
        }
        cli::Command::Ide(a) => match a.bench_scrub {
            // `ludus ide DB --bench-scrub EPISODE`: the benchmark, no window.
            Some(episode) => match a.db.as_deref() {
                Some(db) if !db.is_file() => Err(UsageError(format!(
                    "database {}: no such file; record one with `ludus run --db {}`",
                    db.display(),
                    db.display()
                ))
                .into()),
                Some(db) => ludus_bench::ide_scrub::run(db, episode, a.bench_frames, a.json)
                    .map(|()| ExitCode::SUCCESS),
                None => Err(UsageError(
                    "--bench-scrub needs a database: `ludus ide DB --bench-scrub EPISODE`".into(),
                )
                .into()),
            },
            None => ludus::ide::main(a),
        },
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            // One line: what failed, on what, what to do.
            // A database URL's password never reaches the terminal.
            let line = ludus_arena::pg::redact_all(&one_line(&format!("{e:#}")));
            eprintln!("error: {line}");
            if e.downcast_ref::<UsageError>().is_some()
                || e.downcast_ref::<ludus_trainer::train::TrainError>()
                    .is_some_and(|t| t.is_usage())
                || e.downcast_ref::<ludus::ide::UserError>().is_some()
                || e.downcast_ref::<ludus_arena::RunError>().is_some_and(|r| {
                    !matches!(
                        r,
                        ludus_arena::RunError::Store(ludus_arena::StoreError::Sql(_))
                    )
                })
                || e.downcast_ref::<ludus_arena::StoreError>()
                    .is_some_and(|s| !matches!(s, ludus_arena::StoreError::Sql(_)))
            {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

/// An error as one bounded line: a plugin's message may be megabytes.
fn one_line(message: &str) -> String {
    const MAX: usize = 2000;
    let line = message.replace('\n', " ");
    if line.len() <= MAX {
        return line;
    }
    let mut cut = MAX;
    while !line.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}... ({} more bytes)", &line[..cut], line.len() - cut)
}
