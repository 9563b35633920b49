//! Integration tests of the arena foundation: real plugins compiled from
//! plugins/, the real `ludus` binary, real SQLite files.

use crate::support;

use std::time::{Duration, Instant};

use ludus_arena::Db;
use support::*;

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

#[test]
fn same_seed_same_digests_across_runs_and_jobs() {
    let dir = tmp();
    let db = dir.path().join("det.db");
    let with_jobs = |j: &str| {
        run_json(
            &db,
            "maze",
            "maze_solver",
            &[
                "--episodes",
                "12",
                "--seed",
                "7",
                "--env-config",
                "size=11,doors=2",
                "--jobs",
                j,
            ],
        )
    };
    let a = with_jobs("1");
    let b = with_jobs("1");
    let c = with_jobs("4");
    assert_eq!(digests(&a), digests(&b), "same seed twice");
    assert_eq!(digests(&a), digests(&c), "--jobs 1 vs --jobs 4");
    assert_eq!(digests(&a).len(), 12);
    // A different seed gives different episodes.
    let d = run_json(
        &db,
        "maze",
        "maze_solver",
        &[
            "--episodes",
            "12",
            "--seed",
            "8",
            "--env-config",
            "size=11,doors=2",
        ],
    );
    assert_ne!(digests(&a), digests(&d));
    // CartPole with the random agent and a reward plugin, too.
    let cp = |j: &str| {
        run_json(
            &db,
            "cartpole",
            "random_agent",
            &[
                "--episodes",
                "16",
                "--seed",
                "3",
                "--jobs",
                j,
                "--reward",
                &plugin("sparse_reward").display().to_string(),
            ],
        )
    };
    assert_eq!(digests(&cp("1")), digests(&cp("3")));
}

#[test]
fn json_report_has_the_documented_fields() {
    let dir = tmp();
    let db = dir.path().join("r.db");
    let r = run_json(
        &db,
        "cartpole",
        "random_agent",
        &["--episodes", "5", "--seed", "1", "--jobs", "2"],
    );
    assert!(r["run_id"].as_str().is_some_and(|s| !s.is_empty()));
    let eps = r["episodes"].as_array().unwrap();
    assert_eq!(eps.len(), 5);
    for (i, e) in eps.iter().enumerate() {
        assert_eq!(e["index"], i);
        for field in ["id", "seed", "outcome", "return", "length", "digest"] {
            assert!(!e[field].is_null(), "episode field {field} missing: {e}");
        }
        assert_eq!(e["outcome"], "terminated");
    }
    // Random CartPole returns average about 22 in Gymnasium; ours must be close.
    let s = &r["summary"];
    let mean = s["mean_return"].as_f64().unwrap();
    assert!((8.0..60.0).contains(&mean), "mean return {mean}");
    // Everything is in the database: every frame, decodable, matching the report.
    let db = Db::open(&db).unwrap();
    for e in eps {
        let id = e["id"].as_i64().unwrap();
        let frames = db.frames(id).unwrap();
        assert_eq!(frames.len() as u64, e["length"].as_u64().unwrap());
        let total: f64 = frames.iter().map(|(f, _)| f64::from(f.reward)).sum();
        assert_eq!(total, e["return"].as_f64().unwrap());
        assert!(frames.last().unwrap().0.terminated);
        assert!(
            frames
                .iter()
                .enumerate()
                .all(|(k, (f, _))| f.step as usize == k)
        );
        assert!(db.final_observation(id).unwrap().is_some());
    }
    let runs = db.runs().unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].status, "finished");
    assert_eq!(runs[0].spec["env"]["hash"].as_str().map(str::len), Some(64));
}

#[test]
fn human_summary_table() {
    let dir = tmp();
    let db = dir.path().join("t.db");
    let r = ludus([
        "run",
        "--env",
        &plugin("cartpole").display().to_string(),
        "--agent",
        &plugin("random_agent").display().to_string(),
        "--episodes",
        "3",
        "--db",
        &db.display().to_string(),
    ]);
    assert_eq!(r.code(), 0, "{}", r.stderr());
    let out = r.stdout();
    for row in [
        "episodes",
        "success rate",
        "mean return",
        "min return",
        "max return",
        "mean length",
        "crashed",
        "env steps/s",
    ] {
        assert!(out.contains(row), "summary lacks `{row}`:\n{out}");
    }
}

#[test]
fn pooled_and_on_demand_instances_record_the_same_episodes() {
    // Every episode gets fresh plugin instances; from the pool they come out
    // of reused slots (memory reset, not remapped). Nothing of an earlier
    // episode may show through, crashed ones included: every digest must
    // match a run whose instances are mapped afresh (`LUDUS_POOLING=0`).
    assert!(
        ludus_arena::pooling(),
        "the instance pool could not be reserved here"
    );
    let dir = tmp();
    let run = |name: &str, pooling: &str, plugins: [&str; 3], extra: &[&str]| {
        let db = dir.path().join(format!("{name}-{pooling}.db"));
        let mut args = run_args(&db, &plugin(plugins[0]), &plugin(plugins[1]));
        args.extend(
            [
                "--reward",
                &plugin(plugins[2]).display().to_string(),
                "--json",
            ]
            .map(String::from),
        );
        args.extend(extra.iter().map(|s| s.to_string()));
        let report = ludus_with_env(args, &[("LUDUS_POOLING", pooling)]).json();
        let outcomes: Vec<String> = report["episodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["outcome"].as_str().unwrap().to_string())
            .collect();
        (digests(&report), outcomes)
    };
    let cases: [(&str, [&str; 3], &[&str]); 3] = [
        (
            "maze",
            ["maze", "memory_agent", "distance_reward"],
            &[
                "--episodes",
                "9",
                "--seed",
                "4",
                "--jobs",
                "3",
                "--env-config",
                "size=9,doors=1",
            ],
        ),
        (
            "cartpole",
            ["cartpole", "random_agent", "sparse_reward"],
            &["--episodes", "300", "--seed", "8", "--jobs", "2"],
        ),
        (
            "crashing",
            ["hostile_env", "random_agent", "sparse_reward"],
            &[
                "--episodes",
                "6",
                "--seed",
                "2",
                "--jobs",
                "2",
                "--env-config",
                "mode=panic,at=2",
            ],
        ),
    ];
    for (name, plugins, extra) in cases {
        let pooled = run(name, "1", plugins, extra);
        let fresh = run(name, "0", plugins, extra);
        assert_eq!(pooled, fresh, "{name}");
        if name == "crashing" {
            assert!(pooled.1.iter().all(|o| o == "crashed"), "{:?}", pooled.1);
        }
    }
}

#[test]
fn memory_agent_gets_faster_from_one_run_to_the_next() {
    let dir = tmp();
    let db = dir.path().join("mem.db");
    let args = [
        "--episodes",
        "6",
        "--seed",
        "11",
        "--env-config",
        "size=15,doors=2",
        "--jobs",
        "2",
    ];
    let first = run_json(&db, "maze", "memory_agent", &args);
    let second = run_json(&db, "maze", "memory_agent", &args);
    let solver = run_json(&dir.path().join("solver.db"), "maze", "maze_solver", &args);
    let len = |r: &serde_json::Value| r["summary"]["mean_length"].as_f64().unwrap();
    let rate = |r: &serde_json::Value| r["summary"]["success_rate"].as_f64().unwrap();
    assert_eq!(rate(&first), 1.0);
    assert_eq!(rate(&second), 1.0);
    assert!(
        len(&second) < 0.8 * len(&first),
        "first {} second {}",
        len(&first),
        len(&second)
    );
    // Replaying the remembered path is optimal: as short as the planner's.
    assert_eq!(len(&second), len(&solver));
    // The paths live in /agent memory, recorded per frame and visible in the store.
    let db = Db::open(&db).unwrap();
    let stored = db.agent_memory().unwrap();
    assert_eq!(
        stored
            .keys()
            .filter(|k| k.starts_with("/agent/maze/"))
            .count(),
        6
    );
    let ep = second["episodes"][0]["id"].as_i64().unwrap();
    let writes = db.memory_writes(ep).unwrap();
    assert!(
        writes
            .iter()
            .any(|w| w.path == "/episode/mode" && w.value.as_deref() == Some("replay"))
    );
    let frames = db.frames(ep).unwrap();
    assert!(
        frames[0]
            .0
            .memory_writes
            .iter()
            .any(|w| w.path == "/episode/mode")
    );
    assert!(
        frames[0]
            .0
            .logs
            .iter()
            .any(|l| l.message.contains("replaying a remembered"))
    );
    // The second run's episodes saw /agent as it was at the run's start.
    let runs = db.runs().unwrap();
    assert!(db.run_agent_memory(&runs[0].id).unwrap().is_empty());
    assert_eq!(db.run_agent_memory(&runs[1].id).unwrap().len(), 6);
}

#[test]
fn user_memory_is_read_only_to_the_cli_outside_user() {
    let dir = tmp();
    let db = dir.path().join("u.db");
    run_json(&db, "cartpole", "random_agent", &["--episodes", "1"]);
    let dbs = db.display().to_string();
    assert_eq!(
        ludus(["memory", "set", &dbs, "/user/hint", "go right"]).code(),
        0
    );
    let err = ludus(["memory", "set", &dbs, "/agent/x", "1"]).fails_with(2);
    assert!(err.contains("only /user/"), "{err}");
    let list = ludus(["memory", "list", &dbs]);
    assert!(list.stdout().contains("/user/hint = go right"));
}

fn hostile(mode: &str, extra: &[&str]) -> serde_json::Value {
    let dir = tmp();
    let mut args = vec!["--episodes", "3", "--jobs", "2", "--agent-config"];
    let config = format!("mode={mode},at=3");
    args.push(&config);
    args.extend(extra);
    let r = run_json(&dir.path().join("h.db"), "cartpole", "hostile_agent", &args);
    // Frames before the crash are all recorded.
    let db = Db::open(&dir.path().join("h.db")).unwrap();
    for e in r["episodes"].as_array().unwrap() {
        if e["outcome"] == "crashed" {
            assert_eq!(e["length"], 3, "{e}");
            assert_eq!(db.frames(e["id"].as_i64().unwrap()).unwrap().len(), 3);
        }
    }
    r
}

fn crash_message(r: &serde_json::Value) -> String {
    let e = &r["episodes"][0];
    assert_eq!(e["outcome"], "crashed", "{e}");
    assert_eq!(r["summary"]["crashed"], 3);
    let msg = e["error"].as_str().unwrap().to_string();
    assert!(
        msg.contains("hostile_agent.wasm") && msg.contains("`act`"),
        "{msg}"
    );
    msg
}

#[test]
fn infinite_loop_runs_out_of_fuel_at_the_same_point_every_time() {
    let a = hostile("loop", &["--limit", "agent.fuel=20000000"]);
    let msg = crash_message(&a);
    assert!(msg.contains("compute budget exhausted"), "{msg}");
    let b = hostile("loop", &["--limit", "agent.fuel=20000000"]);
    assert_eq!(digests(&a), digests(&b));
}

#[test]
fn wall_clock_deadline_backstops_a_loop() {
    let started = Instant::now();
    let r = hostile(
        "loop",
        &[
            "--limit",
            "agent.fuel=100000000000",
            "--limit",
            "agent.timeout-ms=200",
        ],
    );
    let msg = crash_message(&r);
    assert!(msg.contains("wall-clock deadline exceeded"), "{msg}");
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
fn huge_allocation_hits_the_memory_cap() {
    let msg = crash_message(&hostile("alloc", &["--limit", "agent.memory-mb=64"]));
    assert!(msg.contains("memory cap exceeded"), "{msg}");
    // The plugin handled the refusal and panicked: the panic is what ended
    // the call, so it comes first.
    let panic = msg.find("panicked at").expect("the panic is reported");
    assert!(
        panic < msg.find("memory cap exceeded").unwrap_or(0),
        "{msg}"
    );
    assert!(msg.contains("out of memory after"), "{msg}");
}

#[test]
fn deep_recursion_traps() {
    let msg = crash_message(&hostile("recurse", &[]));
    assert!(
        msg.contains("wasm backtrace") && msg.contains("dive"),
        "{msg}"
    );
    let msg = crash_message(&hostile("stack", &[]));
    assert!(msg.contains("stack overflow"), "{msg}");
}

#[test]
fn panic_message_reaches_the_report() {
    let msg = crash_message(&hostile("panic", &[]));
    assert!(
        msg.contains("hostile agent panics on purpose at step 3"),
        "{msg}"
    );
    assert!(msg.contains("unreachable"), "{msg}");
}

#[test]
fn sandbox_denies_files_environment_and_network() {
    let dir = tmp();
    let db = dir.path().join("f.db");
    let r = run_json(
        &db,
        "cartpole",
        "hostile_agent",
        &["--episodes", "1", "--agent-config", "mode=file,at=2"],
    );
    let e = &r["episodes"][0];
    assert_ne!(e["outcome"], "crashed", "{e}");
    let frames = Db::open(&db)
        .unwrap()
        .frames(e["id"].as_i64().unwrap())
        .unwrap();
    let logs: Vec<String> = frames[2].0.logs.iter().map(|l| l.message.clone()).collect();
    assert!(
        logs.iter().any(|l| l.starts_with("file access denied")),
        "{logs:?}"
    );
    assert!(
        logs.iter()
            .any(|l| l.contains("env var HOME") && l.contains("not found")),
        "{logs:?}"
    );
    assert!(
        logs.iter().any(|l| l.starts_with("network access denied")),
        "{logs:?}"
    );
}

#[test]
fn crashing_env_is_contained_too() {
    let dir = tmp();
    let r = run_json(
        &dir.path().join("e.db"),
        "hostile_env",
        "random_agent",
        &["--episodes", "2", "--env-config", "mode=panic,at=4"],
    );
    let e = &r["episodes"][0];
    assert_eq!(e["outcome"], "crashed");
    assert!(
        e["error"]
            .as_str()
            .unwrap()
            .contains("env plugin hostile_env.wasm crashed in `step`")
    );
    let ok = run_json(
        &dir.path().join("e.db"),
        "hostile_env",
        "random_agent",
        &["--episodes", "2"],
    );
    assert_eq!(ok["summary"]["crashed"], 0);
}

fn run_args(db: &std::path::Path, env: &std::path::Path, agent: &std::path::Path) -> Vec<String> {
    [
        "run",
        "--env",
        &env.display().to_string(),
        "--agent",
        &agent.display().to_string(),
        "--db",
        &db.display().to_string(),
    ]
    .map(String::from)
    .to_vec()
}

#[test]
fn loading_errors_are_one_clear_line_and_write_nothing() {
    let dir = tmp();
    let db = dir.path().join("never.db");
    let text = dir.path().join("notes.wasm");
    std::fs::write(&text, "this is not wasm").unwrap();
    let cases: Vec<(std::path::PathBuf, std::path::PathBuf, &str)> = vec![
        (
            dir.path().join("missing.wasm"),
            plugin("random_agent"),
            "file not found",
        ),
        (
            text.clone(),
            plugin("random_agent"),
            "not a WebAssembly file",
        ),
        (
            plugin("core_module"),
            plugin("random_agent"),
            "core module, not a component",
        ),
        (
            plugin("random_agent"),
            plugin("random_agent"),
            "it is an agent plugin, expected an env plugin",
        ),
        (
            plugin("cartpole"),
            plugin("maze"),
            "it is an env plugin, expected an agent plugin",
        ),
        (
            plugin("wrong_version"),
            plugin("random_agent"),
            "built for contract ludus:plugin@0.9.0",
        ),
    ];
    for (env, agent, expected) in cases {
        let err = ludus(run_args(&db, &env, &agent)).fails_with(2);
        assert!(err.contains(expected), "expected `{expected}` in: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(err.starts_with("error: "), "{err}");
        assert!(
            !db.exists(),
            "nothing may be written for bad input ({expected})"
        );
    }
    // A config the plugin rejects.
    let mut a = run_args(&db, &plugin("maze"), &plugin("maze_solver"));
    a.extend(["--env-config".into(), "size=12".into()]);
    let err = ludus(&a).fails_with(2);
    assert!(
        err.contains("rejected its config `size=12`") && err.contains("size must be odd"),
        "{err}"
    );
    // Bad arguments.
    let mut a = run_args(&db, &plugin("cartpole"), &plugin("random_agent"));
    a.extend(["--episodes".into(), "0".into()]);
    assert!(ludus(&a).fails_with(2).contains("--episodes"));
    let mut a = run_args(&db, &plugin("cartpole"), &plugin("random_agent"));
    a.extend(["--limit".into(), "agent.speed=3".into()]);
    assert!(ludus(&a).fails_with(2).contains("unknown limit `speed`"));
    assert!(!db.exists());
}

#[test]
fn corrupt_database_is_refused_and_left_alone() {
    let dir = tmp();
    let db = dir.path().join("corrupt.db");
    let junk = vec![0x42u8; 8192];
    std::fs::write(&db, &junk).unwrap();
    let err = ludus(run_args(&db, &plugin("cartpole"), &plugin("random_agent"))).fails_with(2);
    assert!(
        err.contains("corrupt.db") && err.contains("not a ludus database"),
        "{err}"
    );
    assert_eq!(std::fs::read(&db).unwrap(), junk);
}

#[test]
fn sigkill_mid_run_keeps_committed_frames_and_marks_interrupted() {
    let dir = tmp();
    let db = dir.path().join("killed.db");
    let mut child = support::command()
        .args(run_args(&db, &plugin("maze"), &plugin("random_agent")))
        .args([
            "--episodes",
            "100000",
            "--jobs",
            "2",
            "--env-config",
            "size=31,max_steps=100000",
            "--json",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until some frames are committed, then kill without warning.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        std::thread::sleep(Duration::from_millis(200));
        if db.exists() {
            let conn_ok = Db::open(&db).ok().and_then(|d| {
                let runs = d.runs().ok()?;
                let run = runs.first()?;
                let eps = d.episodes(&run.id).ok()?;
                let running = eps.iter().find(|e| e.outcome == "pending")?;
                Some(!d.frames(running.id).ok()?.is_empty())
            });
            if conn_ok == Some(true) {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no frames were committed within 60 s"
        );
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let d = Db::open(&db).unwrap();
    let run = &d.runs().unwrap()[0];
    assert_eq!(run.status, "interrupted");
    let eps = d.episodes(&run.id).unwrap();
    assert!(
        eps.iter()
            .all(|e| e.outcome != "running" && e.outcome != "pending")
    );
    let interrupted: Vec<_> = eps.iter().filter(|e| e.outcome == "interrupted").collect();
    assert!(!interrupted.is_empty());
    // The committed frames of interrupted episodes are intact and decodable.
    let with_frames = interrupted
        .iter()
        .filter(|e| !d.frames(e.id).unwrap().is_empty())
        .count();
    assert!(with_frames >= 1);
    for e in eps
        .iter()
        .filter(|e| e.outcome == "truncated" || e.outcome == "terminated")
    {
        assert_eq!(d.frames(e.id).unwrap().len() as u64, e.length);
    }
}

#[test]
fn second_load_uses_the_compile_cache() {
    let dir = tmp();
    // A private cache folder: the first load compiles, the second does not.
    let cache = dir.path().join("cache");
    let out = |_: ()| {
        support::command()
            .args(run_args(
                &dir.path().join("c.db"),
                &plugin("cartpole"),
                &plugin("random_agent"),
            ))
            .args(["--episodes", "1"])
            .env("LUDUS_CACHE_DIR", &cache)
            .env("LUDUS_LOG", "info")
            .output()
            .unwrap()
    };
    let first = String::from_utf8_lossy(&out(()).stderr).into_owned();
    assert!(
        first.contains("compiled cartpole.wasm for the first time"),
        "{first}"
    );
    let second = String::from_utf8_lossy(&out(()).stderr).into_owned();
    assert!(!second.contains("for the first time"), "{second}");
    assert!(std::fs::read_dir(&cache).unwrap().count() >= 2);
}

#[test]
fn step_vector_matches_step_and_older_plugins_fall_back_to_step() {
    use ludus_arena::model::Action;
    use ludus_arena::{Limits, Plugin, PluginKind};
    // CartPole by the allocation-free fast path (`env-vector-packed`,
    // contract 0.1.2, and `env-vector.step-vector`, 0.1.1, which the SDK
    // still serves for older hosts) against the generic `step` and `reset`,
    // side by side, through terminations, resets and the 500-step truncation.
    let p = Plugin::load(&plugin("cartpole"), PluginKind::Env, Limits::DEFAULT).unwrap();
    let (mut general, mut fast, mut unpacked) =
        (p.env(0).unwrap(), p.env(0).unwrap(), p.env(0).unwrap());
    assert!(fast.has_vector_step());
    general.init("").unwrap().unwrap();
    fast.init("").unwrap().unwrap();
    unpacked.init("").unwrap().unwrap();
    let mut seed = 99u64;
    let mut obs = vector_of(&general.reset(seed).unwrap().observation);
    assert_eq!(obs, vector_of(&fast.reset(seed).unwrap().observation));
    assert_eq!(obs, vector_of(&unpacked.reset(seed).unwrap().observation));
    let (mut ends, mut truncations) = (0, 0);
    for step in 0..3000u64 {
        // Every other episode balances (and reaches 500 steps) but for a
        // random push every seventh step; the others push at random.
        let a = if ends % 2 == 1 || step % 7 == 0 {
            (next_seed(step) >> 63) as u32
        } else {
            u32::from(obs[2] + 0.5 * obs[3] > 0.0)
        };
        let g = general.step(&Action::Discrete(a)).unwrap();
        let f = fast
            .step_vector(&[a as f32])
            .unwrap()
            .expect("cartpole offers step-packed");
        let u = unpacked
            .step_vector_unpacked(&[a as f32])
            .unwrap()
            .expect("cartpole offers step-vector");
        assert_eq!(u, f, "step {step}");
        obs = vector_of(&g.observation);
        assert_eq!(f.observation[..4], obs[..], "step {step}");
        assert_eq!(f.observation[4..], [0.0; 4], "padding, step {step}");
        assert_eq!(
            (f.reward, f.terminated, f.truncated),
            (g.reward, g.terminated, g.truncated),
            "step {step}"
        );
        if g.terminated || g.truncated {
            ends += 1;
            truncations += usize::from(g.truncated);
            seed = next_seed(seed);
            obs = vector_of(&general.reset(seed).unwrap().observation);
            unpacked.reset(seed).unwrap();
            // Mostly by `reset-packed`; every third time by `reset`, which
            // must leave the same state behind.
            if ends % 3 == 0 {
                assert_eq!(vector_of(&fast.reset(seed).unwrap().observation), obs);
            } else {
                let v = fast
                    .reset_vector(seed)
                    .unwrap()
                    .expect("cartpole offers reset-packed");
                assert_eq!(v[..4], obs[..], "reset after step {step}");
                assert_eq!(v[4..], [0.0; 4], "padding, reset after step {step}");
            }
        }
    }
    assert!(ends >= 10, "only {ends} episodes ended");
    assert!(truncations >= 1, "no episode reached its step limit");

    // An SDK env without a vector observation declines; the host steps it
    // through `step`.
    let maze = Plugin::load(&plugin("maze"), PluginKind::Env, Limits::DEFAULT).unwrap();
    let mut m = maze.env(0).unwrap();
    m.init("").unwrap().unwrap();
    m.reset(1).unwrap();
    assert!(m.has_vector_step());
    assert_eq!(m.step_vector(&[0.0]).unwrap(), None);
    assert_eq!(m.reset_vector(2).unwrap(), None);

    // A plugin built against contract 0.1.1 (`env-vector`, no
    // `env-vector-packed`) steps through `step-vector` and resets through
    // `reset`: step 1 walks right, anything else left.
    let walk = Plugin::load(
        &plugin("legacy_vector_env"),
        PluginKind::Env,
        Limits::DEFAULT,
    )
    .unwrap();
    let mut w = walk.env(0).unwrap();
    assert!(w.has_vector_step());
    w.init("").unwrap().unwrap();
    assert_eq!(w.reset_vector(12).unwrap(), None);
    assert_eq!(vector_of(&w.reset(12).unwrap().observation), [0.0, 2.0]);
    let steps: Vec<_> = [1.0, 0.0, 1.0, 1.0, 1.0]
        .iter()
        .map(|a| w.step_vector(&[*a]).unwrap().expect("0.1.1 step-vector"))
        .map(|s| (s.observation[0], s.reward, s.terminated, s.truncated))
        .collect();
    assert_eq!(
        steps,
        [
            (1.0, 1.0, false, false),
            (0.0, 0.0, false, false),
            (1.0, 1.0, false, false),
            (2.0, 1.0, false, false),
            (3.0, 1.0, true, false),
        ]
    );

    // A plugin built against contract 0.1.0 (no `env-vector`) still loads,
    // steps and runs.
    let legacy = Plugin::load(&plugin("legacy_env"), PluginKind::Env, Limits::DEFAULT).unwrap();
    let mut l = legacy.env(0).unwrap();
    assert!(!l.has_vector_step());
    l.init("").unwrap().unwrap();
    assert_eq!(l.reset_vector(3).unwrap(), None);
    l.reset(3).unwrap();
    assert_eq!(l.step_vector(&[1.0]).unwrap(), None);
    let r = l.step(&Action::Discrete(1)).unwrap();
    assert_eq!((vector_of(&r.observation), r.reward), (vec![1.0, 3.0], 1.0));
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("legacy.db");
    let mut args = run_args(&db, &plugin("legacy_env"), &plugin("random_agent"));
    args.extend(["--episodes", "3", "--seed", "5", "--json"].map(String::from));
    let out = ludus(args).json();
    let episodes = out["episodes"].as_array().unwrap();
    assert_eq!(episodes.len(), 3);
    for e in episodes {
        assert_eq!(e["outcome"], "terminated", "{e}");
        assert_eq!(e["length"], 5, "{e}");
    }
}

#[test]
fn bench_prints_every_mode_and_its_ratios() {
    // Rates, not timings: a short run must measure every mode (step-vector
    // included), record real frames, and give ratios that fit its rates.
    let r = ludus([
        "bench",
        "--cartpole",
        &plugin("cartpole").display().to_string(),
        "--seconds",
        "0.2",
        "--batch",
        "64",
        "--rounds",
        "3",
        "--json",
    ])
    .json();
    let rate = |k: &str| {
        let v = r[k].as_f64().unwrap_or_else(|| panic!("{k} missing: {r}"));
        assert!(v > 0.0, "{k}: {r}");
        v
    };
    let native = rate("native_steps_per_sec");
    let single = rate("wasm_single_steps_per_sec");
    let vector = rate("wasm_vector_steps_per_sec");
    let batched = rate("wasm_batched_steps_per_sec");
    let recorded = rate("wasm_recorded_steps_per_sec");
    let close = |k: &str, want: f64| {
        let got = r[k].as_f64().unwrap();
        assert!(
            (got - want).abs() <= 1e-9 * want.abs().max(1.0),
            "{k}: {got} vs {want}"
        );
    };
    close("wasm_vector_vs_single", vector / single);
    close("wasm_vector_vs_native", vector / native);
    close("wasm_batched_vs_single", batched / single);
    close("recorded_vs_unrecorded", recorded / single);
    // Recording is measured in rounds; each round's overhead fits its own
    // rates, the closing commit only adds to it, and the reported figures
    // are the medians of the rounds.
    let rounds = r["rounds"].as_array().unwrap();
    assert_eq!(rounds.len(), 3, "{r}");
    let field = |round: &serde_json::Value, k: &str| {
        round[k]
            .as_f64()
            .unwrap_or_else(|| panic!("{k} missing: {round}"))
    };
    let median = |k: &str| {
        let mut v: Vec<f64> = rounds.iter().map(|round| field(round, k)).collect();
        v.sort_by(f64::total_cmp);
        v[1]
    };
    for round in rounds {
        let unrecorded = field(round, "unrecorded_steps_per_sec");
        let recorded = field(round, "recorded_steps_per_sec");
        assert!(unrecorded > 0.0 && recorded > 0.0, "{round}");
        let overall = field(round, "overhead_percent");
        let want = (unrecorded / recorded - 1.0) * 100.0;
        assert!(
            (overall - want).abs() <= 1e-6 * want.abs().max(1.0),
            "{round}"
        );
        assert!(
            field(round, "steady_overhead_percent") <= overall,
            "{round}"
        );
        assert!(field(round, "closing_commit_ms") >= 0.0, "{round}");
    }
    close("recording_overhead_percent", median("overhead_percent"));
    close(
        "steady_recording_overhead_percent",
        median("steady_overhead_percent"),
    );
    close("closing_commit_ms", median("closing_commit_ms"));
    assert_eq!(r["batch"], 64);
    assert!(r["recorded_frames"].as_u64().unwrap() > 0, "{r}");
    assert!(r["recorded_db_bytes"].as_u64().unwrap() > 0, "{r}");

    let err = ludus(["bench", "--seconds", "0"]).fails_with(2);
    assert!(err.contains("--seconds must be a positive number"), "{err}");
    let err = ludus(["bench", "--rounds", "0"]).fails_with(2);
    assert!(err.contains("--rounds must be at least 1"), "{err}");
    let err = ludus(["bench", "--cartpole", "no-such.wasm"]).fails_with(2);
    assert!(err.contains("no-such.wasm"), "{err}");
}

#[test]
fn batched_cartpole_matches_one_env_per_call() {
    // CartPole's batched fast path (`step_flat`, and `step_flat_pair`: two
    // copies in lock-step in wasm SIMD lanes, the fifth copy alone) must see
    // what single stepping sees, through resets and the 500-step truncation.
    let (ends, truncations) = assert_batched_cartpole_matches_single(
        &plugin("cartpole"),
        &[3, 77, 1234, u64::MAX, 5],
        600,
    );
    assert!(ends >= 10, "only {ends} episodes ended");
    assert!(truncations >= 1, "no episode reached its step limit");
}
