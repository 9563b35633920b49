//! PostgreSQL as a recording store, against a real server: the one
//! scripts/test.sh starts (scripts/postgres.sh) and names in
//! `LUDUS_TEST_POSTGRES`. Each test makes a database of its own there.

use std::path::Path;

use ludus_arena::Db;

use crate::support::{ludus, run_json};

/// A fresh, empty database on the test server: its URL.
pub fn database(name: &str) -> String {
    let base = std::env::var("LUDUS_TEST_POSTGRES").unwrap_or_else(|_| {
        panic!(
            "LUDUS_TEST_POSTGRES is not set: run the tests with scripts/test.sh, which starts \
             a PostgreSQL server (scripts/postgres.sh) and names it there"
        )
    });
    let (server, _) = base.rsplit_once('/').expect("a database in the URL");
    let db = format!("{name}_{}", std::process::id());
    let mut admin = postgres::Client::connect(&format!("{server}/postgres"), postgres::NoTls)
        .expect("the test PostgreSQL server");
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {db}"))
        .expect("drop database");
    admin
        .batch_execute(&format!("CREATE DATABASE {db}"))
        .expect("create database");
    format!("{server}/{db}")
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// Everything a run's episodes hold, keyed by (run, index): the row's
/// figures, the parent's (run, index), the decoded frames and the memory
/// writes; and the database's stored agent memory.
fn contents(db: &Path) -> String {
    let db = Db::open_read_only(db).expect("db");
    let mut out = Vec::new();
    let mut runs = db.runs().expect("runs");
    runs.sort_by(|a, b| a.id.cmp(&b.id));
    let mut index = std::collections::BTreeMap::new();
    for r in &runs {
        for e in db.episodes(&r.id).expect("episodes") {
            index.insert(e.id, (r.id.clone(), e.index));
        }
    }
    for r in &runs {
        out.push(format!("run {} {} {} {}", r.id, r.seed, r.status, r.spec));
        for e in db.episodes(&r.id).expect("episodes") {
            let parent = e.parent_episode.and_then(|p| index.get(&p).cloned());
            let frames = db.frames(e.id).expect("frames");
            let frames: Vec<_> = frames.iter().map(|(f, _)| f.clone()).collect();
            let writes: Vec<String> = db
                .memory_writes(e.id)
                .expect("writes")
                .iter()
                .map(|w| format!("{w:?}"))
                .collect();
            out.push(format!(
                "  episode {} seed {} {} return {} length {} digest {:?} parent {parent:?} frame {:?} edits {:?}\n  frames {frames:?}\n  writes {writes:?}",
                e.index, e.seed, e.outcome, e.return_, e.length, e.digest, e.parent_frame, e.edits
            ));
        }
    }
    out.join("\n")
}

/// SQLite -> PostgreSQL -> SQLite keeps every run: the same episodes with
/// the same digests, the same frames and memory writes, forks still
/// pointing at their parents; the copy opens in `ludus debug`.
#[test]
fn a_copy_round_trip_through_postgres_keeps_every_episode() {
    let url = database("round_trip");
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (dir.path().join("a.db"), dir.path().join("b.db"));
    run_json(
        &a,
        "maze",
        "memory_agent",
        &[
            "--env-config",
            "size=9,doors=1",
            "--reward",
            &path(&crate::support::plugin("distance_reward")),
            "--episodes",
            "6",
            "--seed",
            "3",
        ],
    );
    let fork = ludus([
        "fork",
        &path(&a),
        "--episode",
        "1",
        "--frame",
        "2",
        "--set",
        "/user/hint=left",
    ]);
    assert_eq!(fork.code(), 0, "{}", fork.stderr());
    let there = ludus(["copy", &path(&a), &url]);
    assert_eq!(there.code(), 0, "{}", there.stderr());
    assert!(
        !there.stdout().contains("ludus-"),
        "password shown: {}",
        there.stdout()
    );
    // The reading commands read the PostgreSQL database as they read the
    // file (a fresh database gives the episodes the file's ids).
    for args in [
        vec![
            "debug",
            "DB",
            "--episode",
            "2",
            "--break",
            "reward > 0",
            "--watch",
            "step",
            "--json",
        ],
        vec!["diff", "DB", "1", "2", "--json"],
        vec!["diff", "DB", "1", "7", "--json"],
    ] {
        let on = |db: &str| {
            let args: Vec<&str> = args
                .iter()
                .map(|a| if *a == "DB" { db } else { a })
                .collect();
            let out = ludus(&args);
            (out.code(), out.stdout())
        };
        let (file, pg) = (on(&path(&a)), on(&url));
        assert!(!file.1.is_empty(), "{args:?}");
        assert_eq!(file, pg, "{args:?}");
    }
    let back = ludus(["copy", &url, &path(&b)]);
    assert_eq!(back.code(), 0, "{}", back.stderr());
    let (original, copied) = (contents(&a), contents(&b));
    assert!(original.contains("parent Some("), "no fork in {original}");
    assert_eq!(original, copied);
    // One run on its own, into a file that already has others.
    let runs = Db::open_read_only(&a).expect("db").runs().expect("runs");
    let c = dir.path().join("c.db");
    run_json(&c, "cartpole", "random_agent", &["--episodes", "2"]);
    let one = ludus(["copy", &url, &path(&c), "--run", &runs[0].id]);
    assert_eq!(one.code(), 0, "{}", one.stderr());
    assert_eq!(
        Db::open_read_only(&c)
            .expect("db")
            .runs()
            .expect("runs")
            .len(),
        2
    );
    let episode = Db::open_read_only(&b)
        .expect("db")
        .episodes(&runs[0].id)
        .expect("episodes")[0]
        .id;
    let debug = ludus([
        "debug",
        &path(&b),
        "--episode",
        &episode.to_string(),
        "--break",
        "step == 2",
        "--json",
    ]);
    assert_eq!(debug.code(), 0, "{}", debug.stderr());
}

/// A bad URL, a server that is down, a wrong password, a database of a
/// newer schema, a run the destination already holds: one line, exit 2,
/// no password in it, and nothing written.
#[test]
fn bad_postgres_destinations_are_one_line_errors_and_write_nothing() {
    let url = database("bad");
    let dir = tempfile::tempdir().expect("tempdir");
    let a = dir.path().join("a.db");
    run_json(&a, "cartpole", "random_agent", &["--episodes", "3"]);
    assert_eq!(ludus(["copy", &path(&a), &url]).code(), 0);
    let count = || -> i64 {
        let mut c = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
        c.query_one("SELECT COUNT(*) FROM episodes", &[])
            .expect("count")
            .get(0)
    };
    assert_eq!(count(), 3);
    let after = url.split("://").nth(1).expect("url");
    let (userinfo, place) = after.split_once('@').expect("user");
    let (user, password) = userinfo.split_once(':').expect("password");
    let host = place.split('/').next().expect("host");
    let wrong = format!("postgres://{user}:wrong@{host}/postgres");
    let down = format!("postgres://{user}:{password}@127.0.0.1:1/ludus");
    for (to, says) in [
        (wrong.as_str(), "password authentication failed"),
        (down.as_str(), "is the server running"),
        ("postgres://ludus:pw@[broken", "not a PostgreSQL URL"),
        (url.as_str(), "already holds run"),
    ] {
        let out = ludus(["copy", &path(&a), to]);
        assert_eq!(out.code(), 2, "{to}: {}", out.stderr());
        let err = out.stderr();
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains(says), "{err}");
        assert!(!err.contains(password), "the password in {err}");
    }
    // The other commands that take a database: the same lines, exit 2.
    let suite = path(&crate::support::root().join("suites/examples.toml"));
    let config = path(&crate::support::root().join("configs/ppo-cartpole.toml"));
    let baseline = path(&dir.path().join("baseline.json"));
    for to in [wrong.as_str(), down.as_str()] {
        for args in [
            vec!["suite", "run", &suite, "--db", to],
            vec!["suite", "run", &suite, "--db", to, "--workers"],
            vec!["ide", to],
            vec!["debug", to, "--episode", "1"],
            vec!["worker", "--db", to, "--until-empty"],
            vec!["memory", "set", to, "/user/a", "1"],
            vec!["memory", "list", to],
            vec!["train", &config, "--db", to],
            vec!["suite", "baseline", &suite, "--db", to, "--out", &baseline],
            vec![
                "fork",
                to,
                "--episode",
                "1",
                "--frame",
                "0",
                "--action",
                "noop",
            ],
        ] {
            let out = ludus(&args);
            let err = out.stderr();
            assert_eq!(out.code(), 2, "{args:?}: {err}");
            assert!(err.contains("cannot open database"), "{args:?}: {err}");
            assert!(!err.contains(password), "the password in {err}");
        }
    }
    assert_eq!(count(), 3);
    // A database a newer ludus wrote.
    let newer = database("newer");
    assert_eq!(ludus(["copy", &path(&a), &newer]).code(), 0);
    let mut c = postgres::Client::connect(&newer, postgres::NoTls).expect("connect");
    c.batch_execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'; DELETE FROM frame_chunks; DELETE FROM episodes; DELETE FROM runs")
        .expect("update");
    let out = ludus(["copy", &path(&a), &newer]);
    assert_eq!(out.code(), 2);
    assert!(
        out.stderr().contains("newer ludus (schema 99"),
        "{}",
        out.stderr()
    );
    let n: i64 = c
        .query_one("SELECT COUNT(*) FROM runs", &[])
        .expect("count")
        .get(0);
    assert_eq!(n, 0);
}

/// A run queued in PostgreSQL and played by `ludus worker` processes: one
/// worker is SIGKILLed while it holds a job; three more finish the run. Every
/// episode is recorded exactly once (none twice, none lost), the killed
/// worker's job went to another worker after its lease ran out, nothing it
/// half-wrote is visible, and the digests are those of a local SQLite run
/// with the same seed and plugins.
#[test]
fn queued_episodes_survive_a_killed_worker_and_match_a_local_run() {
    use std::process::Stdio;
    let url = database("queue");
    let dir = tempfile::tempdir().expect("tempdir");
    let p = |name: &str| path(&crate::support::plugin(name));
    let reward = p("distance_reward");
    let extra = [
        "--env-config",
        "size=15,doors=2,max_steps=400",
        "--reward",
        &reward,
        "--episodes",
        "8",
        "--seed",
        "21",
    ];
    let local = run_json(&dir.path().join("local.db"), "maze", "random_agent", &extra);
    let queue = crate::support::command()
        .args(["run", "--env", &p("maze"), "--agent", &p("random_agent")])
        .args(extra)
        // A slow env (the workers wait too): the same frames and digests.
        .args(["--env-step-delay-ms", "1"])
        .args(["--db", &url, "--workers", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ludus run --workers");
    let mut sql = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
    let wait_for = |sql: &mut postgres::Client, what: &str, query: &str| {
        for _ in 0..600 {
            let n: i64 = sql
                .query_opt(query, &[])
                .ok()
                .flatten()
                .map_or(0, |r| r.get(0));
            if n > 0 {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("timed out waiting for {what}");
    };
    wait_for(
        &mut sql,
        "the queue",
        "SELECT COUNT(*) FROM information_schema.tables WHERE table_name = 'jobs'",
    );
    wait_for(&mut sql, "the jobs", "SELECT COUNT(*) FROM jobs");
    let mut doomed = crate::support::command()
        .args(["worker", "--db", &url, "--lease-s", "2"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("worker");
    wait_for(
        &mut sql,
        "a lease",
        "SELECT COUNT(*) FROM jobs WHERE state = 'leased'",
    );
    doomed.kill().expect("SIGKILL");
    let _ = doomed.wait();
    let held: Vec<i64> = sql
        .query("SELECT idx FROM jobs WHERE state = 'leased'", &[])
        .expect("leases")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(held.len(), 1, "the killed worker held one job");
    let workers: Vec<_> = (0..3)
        .map(|_| {
            crate::support::command()
                .args(["worker", "--db", &url, "--lease-s", "2", "--until-empty"])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("worker")
        })
        .collect();
    for w in workers {
        let out = w.wait_with_output().expect("worker");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = queue.wait_with_output().expect("ludus run --workers");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("the queued run's JSON");
    assert_eq!(
        crate::support::digests(&report),
        crate::support::digests(&local)
    );
    let per_index: Vec<(i64, i64)> = sql
        .query(
            "SELECT idx, COUNT(*) FROM episodes GROUP BY idx ORDER BY idx",
            &[],
        )
        .expect("episodes")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(per_index, (0..8).map(|i| (i, 1)).collect::<Vec<_>>());
    let retried: i64 = sql
        .query_one("SELECT attempts FROM jobs WHERE idx = $1", &[&held[0]])
        .expect("attempts")
        .get(0);
    assert!(
        retried >= 2,
        "the killed worker's job was tried {retried} time(s)"
    );
    let orphans: i64 = sql
        .query_one(
            "SELECT COUNT(*) FROM frame_chunks WHERE episode_id NOT IN (SELECT id FROM episodes)",
            &[],
        )
        .expect("orphans")
        .get(0);
    assert_eq!(orphans, 0);
    let (status, delay): (String, Option<f64>) = sql
        .query_one(
            "SELECT status, (spec::json->>'step_delay_ms')::float8 FROM runs",
            &[],
        )
        .map(|r| (r.get(0), r.get(1)))
        .expect("run");
    assert_eq!((status.as_str(), delay), ("finished", Some(1.0)));
}

/// A job whose plugin cannot be played (its bytes in the database no
/// longer match the run's hash) fails on every try instead of going round
/// forever: the workers give it up after three tries, and the queued run
/// ends with one line naming the episode and the reason, exit 1.
#[test]
fn a_job_that_fails_every_try_ends_the_run_with_its_reason() {
    use std::process::Stdio;
    let url = database("poison");
    let dir = tempfile::tempdir().expect("tempdir");
    let p = |name: &str| path(&crate::support::plugin(name));
    let queue = crate::support::command()
        .args([
            "run",
            "--env",
            &p("cartpole"),
            "--agent",
            &p("random_agent"),
        ])
        .args(["--episodes", "2", "--db", &url, "--workers", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ludus run --workers");
    let mut sql = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
    let mut queued = false;
    for _ in 0..1000 {
        queued = sql
            .query_opt("SELECT COUNT(*) FROM jobs", &[])
            .ok()
            .flatten()
            .is_some_and(|r| r.get::<_, i64>(0) == 2);
        if queued {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(queued, "the run was not queued");
    // Another module's bytes under the env's hash.
    let other = std::fs::read(crate::support::plugin("maze")).expect("maze");
    let env_hash: String = sql
        .query_one("SELECT spec::json->'env'->>'hash' FROM runs", &[])
        .expect("spec")
        .get(0);
    sql.execute(
        "UPDATE plugins SET bytes = $1 WHERE hash = $2",
        &[&other, &env_hash],
    )
    .expect("tamper");
    let cache = dir.path().join("cache");
    let worker = crate::support::command()
        .args(["worker", "--db", &url, "--until-empty", "--cache"])
        .arg(&cache)
        .stderr(Stdio::piped())
        .output()
        .expect("worker");
    assert!(
        worker.status.success(),
        "{}",
        String::from_utf8_lossy(&worker.stderr)
    );
    let out = queue.wait_with_output().expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = crate::support::without_compile_notices(&String::from_utf8_lossy(&out.stderr));
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("2 episode(s) failed") && err.contains("do not match the hash"),
        "{err}"
    );
    let attempts: Vec<i64> = sql
        .query("SELECT attempts FROM jobs ORDER BY idx", &[])
        .expect("jobs")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(attempts, vec![3, 3]);
    let status: String = sql
        .query_one("SELECT status FROM runs", &[])
        .expect("run")
        .get(0);
    assert_eq!(status, "failed");
}

/// A suite judges a PostgreSQL-hosted run as it judges SQLite: the same
/// cases, verdicts and episode digests from `ludus suite run --db
/// postgres://... --workers` (cases queued for two worker processes), from
/// the same command without `--workers` (played here, copied there), and
/// into a SQLite file; the report's episode ids are the database's own.
/// An LLM case's model (built in) travels with its queued run, and its
/// token gate judges the calls the workers recorded.
#[test]
fn a_suite_on_workers_judges_as_it_does_on_sqlite() {
    use std::process::Stdio;
    let dir = tempfile::tempdir().expect("tempdir");
    let tiny = dir.path().join("tiny");
    crate::support::tiny_model(&tiny, 3);
    let suite = dir.path().join("suite.toml");
    std::fs::write(
        &suite,
        format!(
            "name = \"scale\"\nplugins = {:?}\nseed = 5\n\n\
             [[case]]\nname = \"cartpole/random\"\nenv = \"cartpole.wasm\"\nagent = \"random_agent.wasm\"\nepisodes = 12\n\
             expect = {{ mean_return_min = 12.0 }}\n\n\
             [[case]]\nname = \"maze/solver\"\nenv = \"maze.wasm\"\nenv_config = \"size=9,doors=1,max_steps=60\"\n\
             agent = \"maze_solver.wasm\"\nreward = \"distance_reward.wasm\"\nepisodes = 6\n\
             expect = {{ success_rate_min = 1.0 }}\n\n\
             [[case]]\nname = \"maze/random-fails\"\nenv = \"maze.wasm\"\nenv_config = \"size=9,doors=1,max_steps=30\"\n\
             agent = \"random_agent.wasm\"\nepisodes = 4\nexpect = {{ success_rate_min = 1.0 }}\n\n\
             [[case]]\nname = \"maze/llm-tokens\"\nenv = \"maze.wasm\"\nenv_config = \"size=7,doors=0,max_steps=3\"\n\
             agent = \"llm_maze_agent.wasm\"\nagent_config = \"max-tokens=8,schema=off\"\nmodel = {:?}\nepisodes = 2\n\
             expect = {{ max_mean_tokens = 1.0 }}\n",
            path(crate::support::plugins()),
            format!("policy:{}", path(&tiny))
        ),
    )
    .expect("suite file");
    let suite = path(&suite);
    // What a report says of each case: verdict, failures, episode digests.
    let verdicts = |report: &serde_json::Value| -> Vec<String> {
        report["cases"]
            .as_array()
            .expect("cases")
            .iter()
            .map(|c| {
                let digests: Vec<&str> = c["episodes"]
                    .as_array()
                    .expect("episodes")
                    .iter()
                    .map(|e| e["digest"].as_str().expect("digest"))
                    .collect();
                format!(
                    "{} {} {} {:?}",
                    c["name"], c["passed"], c["failures"], digests
                )
            })
            .collect()
    };
    let local_db = dir.path().join("local.db");
    let local = ludus([
        "suite",
        "run",
        &suite,
        "--db",
        &path(&local_db),
        "--json",
        "--jobs",
        "2",
    ]);
    assert_eq!(
        local.code(),
        1,
        "two cases fail on purpose: {}",
        local.stderr()
    );
    let local: serde_json::Value = serde_json::from_str(&local.stdout()).expect("JSON report");
    // The LLM case fails on its tokens, which workers count too.
    assert!(
        verdicts(&local)[3].contains("mean tokens"),
        "{:?}",
        verdicts(&local)
    );

    // Through the queue, with two workers that wait for jobs.
    let url = database("suite_queue");
    let workers: Vec<_> = (0..2)
        .map(|_| {
            crate::support::command()
                .args(["worker", "--db", &url, "--lease-s", "5"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("worker")
        })
        .collect();
    let queued = ludus(["suite", "run", &suite, "--db", &url, "--workers", "--json"]);
    for mut w in workers {
        let _ = w.kill();
        let _ = w.wait();
    }
    assert_eq!(queued.code(), 1, "{}", queued.stderr());
    let queued: serde_json::Value = serde_json::from_str(&queued.stdout())
        .unwrap_or_else(|e| panic!("no JSON report ({e}): {}", queued.stderr()));
    assert_eq!(verdicts(&queued), verdicts(&local));
    assert!(
        !queued["db"].as_str().expect("db").contains(&url),
        "the report names the database without its password"
    );

    // Played here, copied there.
    let url2 = database("suite_copy");
    let copied = ludus([
        "suite", "run", &suite, "--db", &url2, "--json", "--jobs", "2",
    ]);
    assert_eq!(copied.code(), 1, "{}", copied.stderr());
    let copied: serde_json::Value = serde_json::from_str(&copied.stdout())
        .unwrap_or_else(|e| panic!("no JSON report ({e}): {}", copied.stderr()));
    assert_eq!(verdicts(&copied), verdicts(&local));

    // The ids in each report are those of its database.
    for (url, report) in [(&url, &queued), (&url2, &copied)] {
        let mut sql = postgres::Client::connect(url, postgres::NoTls).expect("connect");
        for case in report["cases"].as_array().expect("cases") {
            for e in case["episodes"].as_array().expect("episodes") {
                let digest: Option<String> = sql
                    .query_one(
                        "SELECT digest FROM episodes WHERE id = $1",
                        &[&e["id"].as_i64().expect("id")],
                    )
                    .expect("the report's episode id")
                    .get(0);
                assert_eq!(digest.as_deref(), e["digest"].as_str());
            }
        }
    }

    // `--workers` needs a database that holds a queue.
    let refused = ludus([
        "suite",
        "run",
        &suite,
        "--db",
        &path(&local_db),
        "--workers",
    ]);
    assert_eq!(refused.code(), 2, "{}", refused.stderr());
    assert!(
        refused
            .stderr()
            .contains("--workers needs a PostgreSQL --db")
    );
}

/// `ludus fork` and `ludus rerun` on a PostgreSQL database: the branch is
/// played from a local copy of the episode's run and recorded back there,
/// with its parent pointing at the PostgreSQL episode and the same digest
/// as the same fork of a SQLite recording; a fork of that fork works too.
#[test]
fn forks_and_reruns_of_a_postgres_episode_land_in_postgres() {
    let dir = tempfile::tempdir().expect("tempdir");
    let local = dir.path().join("local.db");
    let extra = ["--episodes", "2", "--seed", "1", "--jobs", "1"];
    let a = run_json(&local, "maze", "memory_agent", &extra);
    let url = database("forks");
    let p = |name: &str| path(&crate::support::plugin(name));
    let b = ludus(
        [
            vec!["run", "--env", &p("maze"), "--agent", &p("memory_agent")],
            extra.to_vec(),
            vec!["--db", &url, "--json"],
        ]
        .concat(),
    )
    .json();
    assert_eq!(crate::support::digests(&a), crate::support::digests(&b));
    let id = |report: &serde_json::Value| report["episodes"][0]["id"].as_i64().expect("id");
    let fork = |db: &str, episode: i64, edit: &[&str]| {
        ludus(
            [
                vec!["fork", db, "--episode"],
                vec![&episode.to_string()],
                edit.to_vec(),
                vec!["--json"],
            ]
            .concat(),
        )
        .json()
    };
    let edit = ["--frame", "3", "--set", "/episode/mode=fork"];
    let on_sqlite = fork(&path(&local), id(&a), &edit);
    let on_pg = fork(&url, id(&b), &edit);
    let digest =
        |r: &serde_json::Value| r["branch"]["digest"].as_str().expect("digest").to_string();
    assert_eq!(digest(&on_pg), digest(&on_sqlite));
    let branch = on_pg["branch"]["id"].as_i64().expect("branch id");
    let mut sql = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
    let (parent, stored): (Option<i64>, Option<String>) = sql
        .query_one(
            "SELECT parent_episode, digest FROM episodes WHERE id = $1",
            &[&branch],
        )
        .map(|r| (r.get(0), r.get(1)))
        .expect("the branch in PostgreSQL");
    assert_eq!(parent, Some(id(&b)));
    assert_eq!(stored.as_deref(), Some(digest(&on_pg).as_str()));
    // A fork of the fork, and a rerun with the same agent build.
    let edit = ["--frame", "5", "--action", "discrete:1"];
    let again = fork(&url, branch, &edit);
    let again_sqlite = fork(
        &path(&local),
        on_sqlite["branch"]["id"].as_i64().expect("id"),
        &edit,
    );
    assert_eq!(digest(&again), digest(&again_sqlite));
    let rerun = ludus([
        "rerun",
        &url,
        "--episode",
        &branch.to_string(),
        "--agent",
        &p("memory_agent"),
        "--json",
    ]);
    assert_eq!(rerun.code(), 0, "{}", rerun.stderr());
    let rerun: serde_json::Value = serde_json::from_str(&rerun.stdout()).expect("JSON");
    assert_eq!(digest(&rerun), digest(&on_pg));
    let episodes: i64 = sql
        .query_one("SELECT COUNT(*) FROM episodes", &[])
        .expect("count")
        .get(0);
    assert_eq!(episodes, 5, "two recorded, two forks, one rerun");
    let missing = ludus([
        "fork",
        &url,
        "--episode",
        "999",
        "--frame",
        "1",
        "--action",
        "noop",
    ]);
    assert_eq!(missing.code(), 2, "{}", missing.stderr());
    assert!(
        missing.stderr().contains("no episode 999"),
        "{}",
        missing.stderr()
    );
}

/// Training, stored memory and suite baselines on a PostgreSQL `--db`:
/// `ludus train` records its metrics and sampled episodes there (trained
/// here, copied when it ends) and keeps its checkpoints in the current
/// folder, and the trained policy plays a queued run on a worker, which
/// fetches its checkpoint by hash; `ludus memory` sets, lists and deletes
/// /user values there; a baseline is recorded there. `--resume` on
/// PostgreSQL is one line, exit 2.
#[test]
fn training_memory_and_baselines_on_postgres() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = database("train");
    let text = std::fs::read_to_string(crate::support::root().join("configs/ppo-cartpole.toml"))
        .expect("config")
        .replace(
            "plugin = \"../plugins/target/wasm32-wasip2/release/cartpole.wasm\"",
            &format!("plugin = {:?}", path(&crate::support::plugin("cartpole"))),
        )
        .replace("updates = 600", "updates = 2")
        .replace("epochs = 20", "epochs = 1");
    assert!(text.contains("updates = 2"), "{text}");
    let config = dir.path().join("ppo.toml");
    std::fs::write(&config, text).expect("config");
    let summary = ludus([
        "train",
        &path(&config),
        "--db",
        &url,
        "--json",
        "--device",
        "cpu",
    ])
    .json();
    let run = summary["run_id"].as_str().expect("run id");
    assert!(
        !summary["db"].as_str().expect("db").contains(&url),
        "{summary}"
    );
    let checkpoint = Path::new(summary["checkpoint"].as_str().expect("checkpoint"));
    assert!(checkpoint.exists(), "{}", checkpoint.display());
    let mut sql = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
    let metrics: i64 = sql
        .query_one(
            "SELECT COUNT(DISTINCT update_no) FROM train_metrics WHERE run_id = $1",
            &[&run],
        )
        .expect("metrics")
        .get(0);
    assert_eq!(metrics, 2, "one row set per update");
    // The trained policy plays a queued run: its checkpoint travels by hash.
    let agent = format!("checkpoint:{}", checkpoint.display());
    let args = |db: &str| {
        let mut a = vec![
            "run".to_string(),
            "--env".into(),
            path(&crate::support::plugin("cartpole")),
            "--agent".into(),
            agent.clone(),
            "--episodes".into(),
            "4".into(),
            "--seed".into(),
            "3".into(),
            "--db".into(),
            db.to_string(),
            "--json".into(),
        ];
        if db.starts_with("postgres") {
            a.push("--workers".into());
        }
        a
    };
    let local = ludus(args(&path(&dir.path().join("policy.db")))).json();
    let cache = dir.path().join("worker-cache");
    let mut worker = crate::support::command()
        .args(["worker", "--db", &url, "--cache", &path(&cache)])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("worker");
    let queued = ludus(args(&url));
    let _ = worker.kill();
    let _ = worker.wait();
    assert_eq!(
        crate::support::digests(&queued.json()),
        crate::support::digests(&local)
    );
    let fetched = std::fs::read_dir(&cache)
        .expect("the worker's cache")
        .flatten()
        .filter(|f| f.path().extension().is_some_and(|x| x == "safetensors"))
        .count();
    assert_eq!(fetched, 1, "the worker fetched the checkpoint by hash");
    let resume = ludus(["train", &path(&config), "--db", &url, "--resume"]).fails_with(2);
    assert_eq!(resume.trim().lines().count(), 1, "{resume}");

    assert_eq!(
        ludus(["memory", "set", &url, "/user/goal", "north"]).code(),
        0
    );
    let listed = ludus(["memory", "list", &url, "/user"]);
    assert_eq!(
        listed.stdout().trim(),
        "/user/goal = north",
        "{}",
        listed.stderr()
    );
    assert_eq!(ludus(["memory", "delete", &url, "/user/goal"]).code(), 0);
    assert_eq!(ludus(["memory", "list", &url, "/user"]).stdout().trim(), "");

    let suite = dir.path().join("suite.toml");
    std::fs::write(
        &suite,
        format!(
            "name = \"b\"\nplugins = {:?}\nseed = 2\n\n[[case]]\nname = \"cartpole\"\nenv = \"cartpole.wasm\"\nagent = \"random_agent.wasm\"\nepisodes = 5\n",
            path(crate::support::plugins())
        ),
    )
    .expect("suite");
    let out = dir.path().join("baseline.json");
    let baseline = ludus([
        "suite",
        "baseline",
        &path(&suite),
        "--db",
        &url,
        "--out",
        &path(&out),
    ]);
    assert_eq!(baseline.code(), 0, "{}", baseline.stderr());
    assert!(out.is_file());
    let recorded: i64 = sql
        .query_one(
            "SELECT COUNT(*) FROM episodes WHERE run_id NOT IN (SELECT run_id FROM train_metrics)",
            &[],
        )
        .expect("episodes")
        .get(0);
    assert!(
        recorded >= 5,
        "the baseline's episodes are in PostgreSQL ({recorded})"
    );
}

/// A queued run's memory works as a local run's: its episodes start from
/// the database's stored memory as it was when the run was queued, and the
/// `/agent` writes of its finished episodes are folded into that memory when
/// it ends. The memory agent remembers each maze it solved; a second run of
/// the same mazes replays them, in PostgreSQL through workers as in SQLite.
#[test]
fn a_queued_run_starts_from_the_stored_memory_and_folds_its_writes() {
    use std::process::Stdio;
    let dir = tempfile::tempdir().expect("tempdir");
    let local = dir.path().join("local.db");
    let url = database("memory");
    let p = |name: &str| path(&crate::support::plugin(name));
    let extra = ["--episodes", "3", "--seed", "11", "--jobs", "1"];
    let stored = |db: &str| ludus(["memory", "list", db, "/agent"]).stdout();
    let worker = || {
        crate::support::command()
            .args(["worker", "--db", &url])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("worker")
    };
    let mut w = worker();
    for round in 0..2 {
        let a = run_json(&local, "maze", "memory_agent", &extra);
        let b = ludus(
            [
                vec!["run", "--env", &p("maze"), "--agent", &p("memory_agent")],
                extra.to_vec(),
                vec!["--db", &url, "--workers", "--json"],
            ]
            .concat(),
        )
        .json();
        assert_eq!(
            crate::support::digests(&b),
            crate::support::digests(&a),
            "round {round}"
        );
        let remembered = stored(&path(&local));
        assert!(remembered.contains("/agent/maze/"), "{remembered}");
        assert_eq!(stored(&url), remembered, "round {round}");
    }
    let _ = w.kill();
    let _ = w.wait();
}

/// An LLM agent's queued run: workers call the model server the run names
/// (rebuilt from its recorded endpoints) and record every call, with the
/// digests of the same run played locally; a built-in model (`policy:`)
/// travels with the run and gives the local run's digests too.
#[test]
fn a_queued_llm_run_calls_the_model_server_from_its_workers() {
    use crate::support::models::{LlamaServer, model_file};
    let dir = tempfile::tempdir().expect("tempdir");
    let server = LlamaServer::start("tiny.gguf", 2);
    let url = database("llm");
    let p = |name: &str| path(&crate::support::plugin(name));
    let args = |db: &str, model: &str| -> Vec<String> {
        let mut a: Vec<String> = [
            "run",
            "--env",
            &p("maze"),
            "--agent",
            &p("llm_maze_agent"),
            "--env-config",
            "size=7,doors=0,max_steps=4",
            "--agent-config",
            "max-tokens=12,schema=off",
            "--episodes",
            "3",
            "--seed",
            "5",
            "--jobs",
            "1",
            "--model",
            model,
            "--db",
            db,
            "--json",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if db.starts_with("postgres") {
            a.push("--workers".into());
        }
        a
    };
    // The run played here and on two worker threads: the same digests.
    let local_and_queued = |model: &str, local_db: &str| {
        let local = ludus(args(&path(&dir.path().join(local_db)), model));
        assert_eq!(local.code(), 0, "{}", local.stderr());
        let mut worker = crate::support::command()
            .args(["worker", "--db", &url, "--jobs", "2"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("worker");
        let queued = ludus(args(&url, model));
        let _ = worker.kill();
        let _ = worker.wait();
        assert_eq!(queued.code(), 0, "{model}: {}", queued.stderr());
        let local = local.json();
        assert_eq!(
            crate::support::digests(&queued.json()),
            crate::support::digests(&local),
            "{model}"
        );
        local
    };
    let local = local_and_queued(&server.url, "local.db");
    let mut sql = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
    let calls: i64 = sql
        .query_one("SELECT COUNT(*) FROM model_calls", &[])
        .expect("calls")
        .get(0);
    let expected: i64 = local["episodes"]
        .as_array()
        .expect("episodes")
        .iter()
        .map(|e| e["model_calls"].as_i64().expect("calls"))
        .sum();
    assert!(expected > 0);
    assert_eq!(calls, expected, "every call recorded once");
    // A built-in model travels with the run, its files by hash, as a GGUF
    // file or a folder (a checkpoint's optimizer state beside the weights
    // stays home: it is not even readable here). Workers load it once per
    // process and record the digests of the same run played locally.
    let folder = dir.path().join("tiny-words");
    crate::support::tiny_model(&folder, 3);
    std::fs::write(folder.join("trainer-state.safetensors"), "not weights").expect("write");
    let models = [
        format!(
            "policy:{},batch=4",
            path(&model_file("smollm2-135m-instruct.gguf"))
        ),
        format!("policy:{}", path(&folder)),
    ];
    for (i, model) in models.iter().enumerate() {
        local_and_queued(model, &format!("policy-{i}.db"));
    }
    let stray: i64 = sql
        .query_one(
            "SELECT COUNT(*) FROM plugins WHERE bytes = $1",
            &[&b"not weights".as_slice()],
        )
        .expect("plugins")
        .get(0);
    assert_eq!(stray, 0, "the optimizer state was queued");
}

/// A queued run ends without the process that queued it: killed once its
/// jobs are queued, the run is still finished, and its memory folded, by
/// the worker that records its last episode.
#[test]
fn the_worker_that_records_the_last_episode_ends_the_run() {
    use std::process::Stdio;
    let url = database("orphan");
    let p = |name: &str| path(&crate::support::plugin(name));
    let mut launcher = crate::support::command()
        .args(["run", "--env", &p("maze"), "--agent", &p("memory_agent")])
        .args(["--episodes", "3", "--seed", "11", "--db", &url, "--workers"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("ludus run --workers");
    let mut sql = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
    let mut queued = 0;
    for _ in 0..1000 {
        queued = sql
            .query_opt("SELECT COUNT(*) FROM jobs", &[])
            .ok()
            .flatten()
            .map_or(0, |r| r.get::<_, i64>(0));
        if queued == 3 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(queued, 3, "the run was queued");
    launcher.kill().expect("SIGKILL");
    let _ = launcher.wait();
    let worker = ludus(["worker", "--db", &url, "--until-empty"]);
    assert_eq!(worker.code(), 0, "{}", worker.stderr());
    let status: String = sql
        .query_one("SELECT status FROM runs", &[])
        .expect("run")
        .get(0);
    assert_eq!(status, "finished");
    let remembered: i64 = sql
        .query_one(
            "SELECT COUNT(*) FROM agent_memory WHERE path LIKE '/agent/maze/%'",
            &[],
        )
        .expect("memory")
        .get(0);
    assert!(remembered > 0, "the run's /agent writes were folded");
}

/// Workers and runs that start at once on a fresh database make its tables
/// once between them: every one of them connects (none sees a table
/// another is still making and tries to make it again).
#[test]
fn many_first_connections_at_once_make_the_schema_once() {
    for round in 0..3 {
        let url = database(&format!("schema{round}"));
        let barrier = std::sync::Barrier::new(8);
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    scope.spawn(|| {
                        barrier.wait();
                        ludus_arena::pg::Pg::connect(&url, true).map(drop)
                    })
                })
                .collect();
            for h in handles {
                let result = h.join().expect("thread");
                assert!(result.is_ok(), "round {round}: {:?}", result.err());
            }
        });
    }
}
