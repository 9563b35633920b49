//! What a plugin's values may not do to ludus: fail a run, lose what was
//! recorded, or make an episode differ from itself.

use crate::support::*;

/// NaN rewards and observations are data: the run succeeds, every episode
/// and frame is kept, the return reads back as NaN (`"NaN"` in JSON), and
/// the episode equals itself when diffed, re-run and forked.
#[test]
fn nan_rewards_and_observations_are_recorded_not_fatal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("nan.db");
    let report = run_json(
        &db,
        "hostile_env",
        "random_agent",
        &[
            "--env-config",
            "mode=nan,at=2,max_steps=6",
            "--episodes",
            "8",
            "--jobs",
            "2",
        ],
    );
    let episodes = report["episodes"].as_array().expect("episodes");
    assert_eq!(episodes.len(), 8, "{report}");
    for e in episodes {
        assert_eq!(e["outcome"], "terminated", "{e}");
        assert_eq!(e["return"], "NaN", "{e}");
    }
    let store = ludus_arena::Db::open(&db).expect("open");
    let run = &store.runs().expect("runs")[0];
    let rows = store.episodes(&run.id).expect("episodes");
    assert_eq!(rows.len(), 8);
    let first = &rows[0];
    assert!(first.return_.is_nan(), "{first:?}");
    let frames = store.frames(first.id).expect("frames");
    assert_eq!(frames.len(), 6);
    assert!(frames[3].0.reward.is_nan());
    let id = first.id.to_string();
    let dbs = db.display().to_string();
    // The same episode, diffed with itself: no difference (exit 0).
    ludus(["diff", &dbs, &id, &id]).ok();
    // Re-run with the same plugins, and a fork after the NaNs began: the
    // replay matches the recording frame for frame.
    let env = plugin("hostile_env").display().to_string();
    ludus(["rerun", &dbs, "--episode", &id, "--env", &env]).ok();
    let fork = ludus(["fork", &dbs, "--episode", &id, "--frame", "4", "--json"]).json();
    assert_eq!(fork["parent"], first.id, "{fork}");
}

/// An observation box with infinite bounds (Gymnasium's unbounded `Box`)
/// is a valid description: the run starts and records.
#[test]
fn infinite_bounds_are_a_valid_space() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("inf.db");
    let report = run_json(
        &db,
        "hostile_env",
        "random_agent",
        &["--env-config", "bounds=inf,max_steps=5", "--episodes", "2"],
    );
    assert_eq!(
        report["episodes"].as_array().map(Vec::len),
        Some(2),
        "{report}"
    );
}

/// A recording that lost a table is reported as damaged, naming the table,
/// by the commands that read it and by those that would write to it; none
/// of them recreates the table (which made the loss look like an empty
/// recording) or writes anything else.
#[test]
fn a_damaged_recording_is_reported_and_left_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("damaged.db");
    run_json(&db, "cartpole", "random_agent", &["--episodes", "2"]);
    {
        let conn = rusqlite::Connection::open(&db).expect("sqlite");
        conn.execute_batch("DROP TABLE episodes").expect("drop");
    }
    let before = std::fs::read(&db).expect("read");
    let dbs = db.display().to_string();
    for args in [
        vec!["debug", &dbs, "--episode", "1", "--break", "true"],
        vec!["diff", &dbs, "1", "2"],
        vec!["memory", "list", &dbs],
    ] {
        let run = ludus(&args);
        assert_ne!(run.code(), 0, "{args:?}");
        let err = run.stderr();
        assert!(
            err.contains("damaged") && err.contains("`episodes`"),
            "{args:?}: {err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
    let run = ludus([
        "run",
        "--env",
        &plugin("cartpole").display().to_string(),
        "--agent",
        &plugin("random_agent").display().to_string(),
        "--db",
        &dbs,
    ]);
    assert_ne!(run.code(), 0);
    assert!(run.stderr().contains("damaged"), "{}", run.stderr());
    assert_eq!(std::fs::read(&db).expect("read"), before, "nothing written");
}

/// A plugin's sleep does not hold a worker: time is virtual, so a 30 s
/// sleep is over at once (the plugin's clock moved on), and an endless
/// chain of sleeps ends at the call's deadline as a crash.
#[test]
fn sleeping_plugins_do_not_hold_the_host() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("sleep.db");
    let started = std::time::Instant::now();
    let report = run_json(
        &db,
        "hostile_env",
        "random_agent",
        &[
            "--env-config",
            "mode=sleep,at=1,max_steps=4",
            "--episodes",
            "2",
        ],
    );
    for e in report["episodes"].as_array().expect("episodes") {
        assert_eq!(e["outcome"], "terminated", "{e}");
    }
    let report = run_json(
        &db,
        "hostile_env",
        "random_agent",
        &[
            "--env-config",
            "mode=sleep_forever,at=1",
            "--episodes",
            "1",
            "--limit",
            "timeout-ms=2000",
        ],
    );
    let e = &report["episodes"][0];
    assert_eq!(e["outcome"], "crashed", "{e}");
    let error = e["error"].as_str().unwrap_or_default();
    assert!(error.contains("step"), "{error}");
    // Two 30 s sleeps and an endless one, well under their sum.
    assert!(
        started.elapsed() < std::time::Duration::from_secs(40),
        "{:?}",
        started.elapsed()
    );
}

/// An agent flooding its memory in one call ends its episode as a crash
/// naming the limit and how to raise it; the other episodes and the
/// database stay small.
#[test]
fn a_memory_write_flood_crashes_its_episode_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("flood.db");
    let report = run_json(
        &db,
        "cartpole",
        "hostile_agent",
        &["--agent-config", "mode=writes,at=2", "--episodes", "3"],
    );
    for e in report["episodes"].as_array().expect("episodes") {
        assert_eq!(e["outcome"], "crashed", "{e}");
        let error = e["error"].as_str().unwrap_or_default();
        assert!(
            error.contains("memory write limit") && error.contains("--limit agent.memory-writes"),
            "{error}"
        );
    }
    let size = std::fs::metadata(&db).expect("db").len();
    assert!(size < 8 << 20, "the database grew to {size} bytes");
}

/// Writes under the per-call limit still add up: the episode's total is
/// bounded too, and the episode that goes over it ends as `crashed`.
#[test]
fn memory_writes_are_bounded_per_episode() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("trickle.db");
    let report = run_json(
        &db,
        "hostile_env",
        "hostile_agent",
        &[
            "--env-config",
            "max_steps=50",
            "--agent-config",
            "mode=trickle,at=2",
            "--limit",
            "agent.episode-memory-writes=20000",
            "--episodes",
            "2",
        ],
    );
    for e in report["episodes"].as_array().expect("episodes") {
        assert_eq!(e["outcome"], "crashed", "{e}");
        let error = e["error"].as_str().unwrap_or_default();
        assert!(
            error.contains("in one episode")
                && error.contains("--limit agent.episode-memory-writes"),
            "{error}"
        );
        // Four acts of 5,000 writes fit; the fifth goes over.
        assert_eq!(e["length"], 6, "{e}");
    }
}

/// An observation bigger than a call may hand the host is the env's crash,
/// naming the part and its size when it arrived, and the limit either way.
#[test]
fn an_oversized_observation_names_its_part_and_the_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("huge.db");
    let crash = |mb: &str| {
        let report = run_json(
            &db,
            "hostile_env",
            "random_agent",
            &[
                "--env-config",
                &format!("mode=huge,at=1,mb={mb}"),
                "--limit",
                "env.transfer-mb=16",
                "--episodes",
                "1",
            ],
        );
        let e = &report["episodes"][0];
        assert_eq!(e["outcome"], "crashed", "{e}");
        assert_eq!(e["length"], 1, "{e}");
        e["error"].as_str().unwrap_or_default().to_string()
    };
    let error = crash("20");
    assert!(
        error.contains("`dump` 20.0 MiB")
            && error.contains("transfer limit of 16.0 MiB")
            && error.contains("--limit env.transfer-mb=N"),
        "{error}"
    );
    let error = crash("40");
    assert!(
        error.contains("crashed in `step`")
            && error.contains("more than 32 MiB in one call")
            && error.contains("--limit env.transfer-mb=N")
            && !error.contains("fuel"),
        "{error}"
    );
    // Raised, the same observation is recorded.
    let report = run_json(
        &db,
        "hostile_env",
        "random_agent",
        &[
            "--env-config",
            "mode=huge,at=1,mb=20,max_steps=3",
            "--limit",
            "env.transfer-mb=64",
            "--episodes",
            "1",
        ],
    );
    assert_eq!(report["episodes"][0]["outcome"], "terminated", "{report}");
}

/// Absurd counts from the command line are refused at once (exit 2), not
/// allocated.
#[test]
fn absurd_episode_counts_are_usage_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("many.db").display().to_string();
    let run = ludus([
        "run",
        "--env",
        &plugin("cartpole").display().to_string(),
        "--agent",
        &plugin("random_agent").display().to_string(),
        "--episodes",
        "1000000000",
        "--db",
        &db,
    ]);
    let err = run.fails_with(2);
    assert!(err.contains("at most 1000000"), "{err}");
}

/// A plugin that prints more to stderr than the host keeps goes on: the
/// host keeps the tail instead of failing the print.
#[test]
fn a_loud_plugin_is_not_stopped_by_its_own_output() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("loud.db");
    let report = run_json(
        &db,
        "hostile_env",
        "random_agent",
        &[
            "--env-config",
            "mode=shout,at=1,max_steps=4",
            "--episodes",
            "1",
        ],
    );
    assert_eq!(report["episodes"][0]["outcome"], "terminated", "{report}");
}

/// `ludus memory list` shows exactly what an agent reads back, one entry a
/// line: a newline or a terminal escape in a value is escaped, and a path
/// with one is refused when it is written.
#[test]
fn memory_listings_cannot_be_forged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("mem.db");
    run_json(&db, "cartpole", "random_agent", &["--episodes", "1"]);
    let dbs = db.display().to_string();
    ludus([
        "memory",
        "set",
        &dbs,
        "/user/note",
        "ok\n/user/admin = yes\u{1b}[2J",
    ])
    .ok();
    let bad = ludus(["memory", "set", &dbs, "/user/a\nb", "x"]).fails_with(2);
    assert!(bad.contains("not a memory path"), "{bad}");
    let list = ludus(["memory", "list", &dbs]).stdout();
    assert_eq!(
        list.trim(),
        "/user/note = ok\\n/user/admin = yes\\u{1b}[2J",
        "{list}"
    );
}

/// An episode that never ends stops at the host's frame limit, as a crash
/// naming it; its frames so far are kept.
#[test]
fn an_endless_episode_stops_at_the_frame_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("endless.db");
    let report = run_json(
        &db,
        "ticker",
        "random_agent",
        &[
            "--env-config",
            "steps=1000",
            "--episodes",
            "1",
            "--limit",
            "env.frames=50",
        ],
    );
    let e = &report["episodes"][0];
    assert_eq!(e["outcome"], "crashed", "{e}");
    assert_eq!(e["length"], 50, "{e}");
    let error = e["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("frame limit") && error.contains("--limit env.frames"),
        "{error}"
    );
}

/// An env whose image part does not hold the bytes its size says crashes
/// at that step, naming the part and both sizes; the frames before it stay.
#[test]
fn an_image_that_lies_about_its_size_is_the_envs_crash() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("image.db");
    let report = run_json(
        &db,
        "hostile_env",
        "random_agent",
        &[
            "--env-config",
            "mode=bad_image,at=2,max_steps=6",
            "--episodes",
            "1",
        ],
    );
    let e = &report["episodes"][0];
    assert_eq!(e["outcome"], "crashed", "{e}");
    let error = e["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("`screen`")
            && error.contains("8x8x1")
            && error.contains("64 bytes, but holds 60"),
        "{error}"
    );
    assert!(e["length"].as_u64().is_some_and(|n| n >= 2), "{e}");
}

/// Every input kept under `fuzz/regressions/TARGET/` goes through what that
/// fuzz target calls, the way the target calls it: each gives a value or an
/// error, and none panics, overflows a stack or runs away with memory.
#[test]
fn fuzz_regressions_replay() {
    use ludus_arena::codec::{FrameFields, decode_chunk_fields};
    use ludus_debugger::expr::{Context, Expr};
    let root = root().join("fuzz/regressions");
    let mut replayed = 0;
    for dir in std::fs::read_dir(&root).expect("fuzz/regressions") {
        let dir = dir.expect("entry").path();
        let target = dir
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        for file in std::fs::read_dir(&dir).expect("target folder") {
            let file = file.expect("entry").path();
            let data = std::fs::read(&file).expect("input");
            let text = std::str::from_utf8(&data).ok();
            match target.as_str() {
                "frame_chunk" => {
                    let Some((&mode, rest)) = data.split_first() else {
                        continue;
                    };
                    let blob = if mode & 1 == 0 {
                        rest.to_vec()
                    } else {
                        zstd::bulk::compress(rest, 1).expect("compress")
                    };
                    let fields = if mode & 2 == 0 {
                        FrameFields::ALL
                    } else {
                        FrameFields {
                            observation: false,
                            info: mode & 4 != 0,
                            logs: false,
                            memory_writes: mode & 8 != 0,
                            model_calls: false,
                        }
                    };
                    let timings = zstd::bulk::compress(&[], 1).expect("compress");
                    let _ = decode_chunk_fields(&blob, &timings, fields, &mut Vec::new());
                }
                "suite_file" => {
                    if let Some(t) = text {
                        let _ = ludus_suite::model::parse(t, std::path::Path::new("fuzz.toml"));
                    }
                }
                "train_config" => {
                    if let Some(t) = text {
                        let _ = ludus_trainer::config::Config::parse(t);
                    }
                }
                "cel" => {
                    if let Some(Ok(expr)) = text.map(Expr::compile) {
                        let mut context = Context::default();
                        context.add_variable_from_value("step", 3i64);
                        context.add_variable_from_value("reward", 0.5f64);
                        context.add_variable_from_value("action", "left");
                        let _ = expr.eval(&context);
                    }
                }
                "model_response" => {
                    if let Some(t) = text {
                        let _ = ludus_llm::parse_response(t);
                        let _ = ludus_llm::Endpoint::parse(t);
                    }
                }
                other => panic!("fuzz/regressions/{other}: no such fuzz target"),
            }
            replayed += 1;
        }
    }
    assert!(replayed > 0, "no inputs under {}", root.display());
}
