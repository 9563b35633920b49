//! Integration tests of the trajectory debugger: real episodes recorded by
//! the real `ludus run` from real plugins, read back and replayed.

use crate::support;

use std::collections::BTreeMap;
use std::path::Path;

use ludus_arena::Db;
use ludus_arena::model::Action;
use ludus_debugger::Session;
use ludus_debugger::fork::LiveEpisode;
use support::*;

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

fn p(name: &str) -> String {
    plugin(name).display().to_string()
}

/// Records one run and returns its episodes' ids.
fn record(db: &Path, env: &str, env_config: &str, agent: &str, extra: &[&str]) -> Vec<i64> {
    let mut args = vec!["--env-config", env_config];
    args.extend_from_slice(extra);
    let report = run_json(db, env, agent, &args);
    report["episodes"]
        .as_array()
        .expect("episodes")
        .iter()
        .map(|e| e["id"].as_i64().expect("id"))
        .collect()
}

fn frames(db: &Path, episode: i64) -> Vec<ludus_arena::model::Frame> {
    Db::open(db)
        .expect("open db")
        .frames(episode)
        .expect("frames")
        .into_iter()
        .map(|(f, _)| f)
        .collect()
}

/// Continues forward from frame 0 and backward from the last frame, and
/// returns the frames each direction stopped at.
fn walk(session: &mut Session) -> (Vec<u64>, Vec<u64>) {
    let mut forward = Vec::new();
    session.first();
    while let Some(hit) = session.continue_forward().expect("continue") {
        forward.push(hit.frame);
    }
    let mut backward = Vec::new();
    session.last();
    while let Some(hit) = session.reverse_continue().expect("reverse-continue") {
        backward.push(hit.frame);
    }
    (forward, backward)
}

#[test]
fn breakpoints_hit_exactly_the_expected_frames_forward_and_backward() {
    let dir = tmp();
    let db = dir.path().join("bp.db");
    let ids = record(
        &db,
        "maze",
        "size=11,doors=1",
        "maze_solver",
        &[
            "--episodes",
            "1",
            "--seed",
            "5",
            "--reward",
            &p("distance_reward"),
        ],
    );
    let recorded = frames(&db, ids[0]);
    let expected: Vec<u64> = recorded
        .iter()
        .filter(|f| f.reward > 0.0)
        .map(|f| u64::from(f.step))
        .collect();
    assert!(
        expected.len() > 2 && expected.len() < recorded.len(),
        "the test needs some frames with reward > 0 and some without: {expected:?}"
    );
    let mut session = Session::open(&db, ids[0]).expect("open session");
    assert_eq!(session.len(), recorded.len() as u64);
    let bp = session.add_breakpoint("reward > 0").expect("breakpoint");
    let (forward, backward) = walk(&mut session);
    // Frame 0 is where the session starts: continue looks after it.
    let after_zero: Vec<u64> = expected.iter().copied().filter(|&k| k > 0).collect();
    assert_eq!(forward, after_zero);
    let last = recorded.len() as u64 - 1;
    let mut before_last: Vec<u64> = expected.iter().copied().filter(|&k| k < last).collect();
    before_last.reverse();
    assert_eq!(backward, before_last);
    let hits = session.breakpoints()[0].hits;
    assert_eq!(hits, (forward.len() + backward.len()) as u64);
    // A disabled breakpoint does not stop; another one still does.
    session.set_enabled(bp, false);
    session
        .add_breakpoint(r#"step > 3 && action.kind == "discrete" && action.value == 0"#)
        .expect("second breakpoint");
    let (forward, _) = walk(&mut session);
    let expected: Vec<u64> = recorded
        .iter()
        .filter(|f| f.step > 3 && f.action == Action::Discrete(0))
        .map(|f| u64::from(f.step))
        .collect();
    assert_eq!(forward, expected);
    assert_eq!(session.breakpoints()[0].hits, hits, "disabled: no new hits");
}

#[test]
fn reverse_continue_crosses_blocks_and_is_as_exact_as_forward() {
    let dir = tmp();
    let db = dir.path().join("long.db");
    let ids = record(
        &db,
        "ticker",
        "steps=10000",
        "memory_probe",
        &["--episodes", "1", "--agent-config", "write_every=50"],
    );
    let mut session = Session::open(&db, ids[0]).expect("open");
    assert_eq!(session.len(), 10_000);
    session
        .add_breakpoint("step % 1000 == 999 || (changed.size() > 0 && step % 4000 == 0)")
        .expect("bp");
    let (forward, backward) = walk(&mut session);
    let mut expected: Vec<u64> = (0..10_000)
        .filter(|k| k % 1000 == 999 || k % 4000 == 0)
        .collect();
    expected.retain(|&k| k > 0);
    assert_eq!(forward, expected);
    let mut rev: Vec<u64> = (0..10_000)
        .filter(|k| k % 1000 == 999 || k % 4000 == 0)
        .filter(|&k| k < 9_999)
        .collect();
    rev.reverse();
    assert_eq!(backward, rev);
    assert_eq!(session.hits("step % 1000 == 999").expect("hits").len(), 10);
}

/// `seen path=value;...` as the memory probe logs it at every act.
fn seen(frame: &ludus_arena::model::Frame) -> BTreeMap<String, String> {
    let line = frame
        .logs
        .iter()
        .find_map(|l| l.message.strip_prefix("seen "))
        .expect("the probe logs what it sees every step");
    line.split(';')
        .filter(|s| !s.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').expect("path=value");
            (k.to_string(), v.to_string())
        })
        .collect()
}

#[test]
fn memory_at_every_frame_is_what_the_agent_saw() {
    let dir = tmp();
    let db = dir.path().join("mem.db");
    let dbs = db.display().to_string();
    // Two runs: the second starts from the /agent memory the first left,
    // and from a /user value set in between.
    record(
        &db,
        "ticker",
        "steps=200",
        "memory_probe",
        &["--episodes", "1"],
    );
    ludus(["memory", "set", &dbs, "/user/hint", "go left"]).ok();
    let ids = record(
        &db,
        "ticker",
        "steps=200",
        "memory_probe",
        &["--episodes", "2", "--jobs", "2"],
    );
    // Changing /user after the run must not change what the debugger shows.
    ludus(["memory", "set", &dbs, "/user/hint", "changed later"]).ok();
    for id in ids {
        let session = Session::open(&db, id).expect("open");
        let recorded = frames(&db, id);
        assert_eq!(recorded.len(), 200);
        let mut checked = 0;
        for (k, f) in recorded.iter().enumerate() {
            let view = session.view(k as u64).expect("view");
            assert_eq!(view.memory_before, seen(f), "episode {id} frame {k}");
            assert_eq!(view.memory_before["/user/hint"], "go left");
            checked += 1;
        }
        assert_eq!(checked, 200);
        assert!(
            session
                .view(0)
                .unwrap()
                .memory_before
                .contains_key("/agent/count"),
            "the second run starts from the first run's /agent memory"
        );
        // A memory breakpoint across the first write of a path: the frames
        // whose writes change /episode/tmp1.
        let expected: Vec<u64> = (0..200u64)
            .filter(|&k| {
                let v = session.view(k).unwrap();
                v.memory.get("/episode/tmp1") != v.memory_before.get("/episode/tmp1")
            })
            .collect();
        assert!(expected.len() > 5, "{expected:?}");
        let hits = session
            .hits(r#"memory["/episode/tmp1"] != prev.memory["/episode/tmp1"]"#)
            .expect("hits");
        assert_eq!(hits, expected);
    }
}

#[test]
fn fork_with_edited_memory_changes_behaviour_from_k_and_keeps_the_prefix() {
    let dir = tmp();
    let db = dir.path().join("fork.db");
    let dbs = db.display().to_string();
    let ids = record(
        &db,
        "ticker",
        "steps=60",
        "memory_probe",
        &["--episodes", "1", "--seed", "9"],
    );
    let parent = ids[0];
    let out = ludus([
        "fork",
        &dbs,
        "--episode",
        &parent.to_string(),
        "--frame",
        "20",
        "--set",
        "/episode/force=2",
        "--json",
    ])
    .json();
    let branch = out["branch"]["id"].as_i64().expect("branch id");
    assert_ne!(branch, parent);
    assert_eq!(out["diff"]["first_divergence"]["frame"], 20, "{out:#}");
    let a = frames(&db, parent);
    let b = frames(&db, branch);
    assert_eq!(a.len(), b.len());
    assert_eq!(a[..20], b[..20], "frames before the fork are identical");
    assert!(b[20..].iter().all(|f| f.action == Action::Discrete(2)));
    assert!(
        a[20..].iter().any(|f| f.action != Action::Discrete(2)),
        "the parent acted otherwise"
    );
    assert!(
        b[20]
            .memory_writes
            .iter()
            .any(|w| w.path == "/episode/force"),
        "the edit is recorded with the fork frame"
    );
    let row = Db::open(&db).unwrap().episode(branch).unwrap();
    assert_eq!(
        (row.parent_episode, row.parent_frame),
        (Some(parent), Some(20))
    );
    assert!(row.edits.unwrap_or_default().contains("/episode/force"));

    // Diffs: the branch against its parent, and each against itself.
    let d = ludus(["diff", &dbs, &parent.to_string(), &branch.to_string()]);
    assert_eq!(d.code(), 1, "{}", d.stdout());
    assert!(
        d.stdout().contains("first divergence at frame 20"),
        "{}",
        d.stdout()
    );
    for id in [parent, branch] {
        let same = ludus(["diff", &dbs, &id.to_string(), &id.to_string()]);
        assert_eq!(same.code(), 0, "{}", same.stdout());
        assert!(same.stdout().contains("identical"));
    }

    // An action replacement at frame 5 of the branch: a branch of a branch.
    let out2 = ludus([
        "fork",
        &dbs,
        "--episode",
        &branch.to_string(),
        "--frame",
        "30",
        "--action",
        "discrete:3",
        "--json",
    ])
    .json();
    let grandchild = out2["branch"]["id"].as_i64().unwrap();
    let c = frames(&db, grandchild);
    assert_eq!(c[30].action, Action::Discrete(3));
    assert_eq!(b[..30], c[..30]);
    // Branches replay exactly: their own edits and their ancestors' are kept.
    for id in [branch, grandchild] {
        assert!(
            ludus_debugger::fork::verify(&db, id, None)
                .unwrap()
                .is_none(),
            "episode {id}"
        );
    }
    let tree = Db::open(&db).unwrap();
    assert_eq!(
        tree.branches(parent)
            .unwrap()
            .iter()
            .map(|e| e.id)
            .collect::<Vec<_>>(),
        vec![branch]
    );
    assert_eq!(
        tree.branches(branch)
            .unwrap()
            .iter()
            .map(|e| e.id)
            .collect::<Vec<_>>(),
        vec![grandchild]
    );
    // The stored /agent memory is not changed by debugging.
    let before = tree.agent_memory().unwrap();
    drop(tree);
    ludus([
        "fork",
        &dbs,
        "--episode",
        &parent.to_string(),
        "--frame",
        "10",
        "--set",
        "/agent/count=999",
        "--json",
    ])
    .json();
    assert_eq!(Db::open(&db).unwrap().agent_memory().unwrap(), before);
}

#[test]
fn replay_detects_a_changed_plugin_at_the_right_frame() {
    let dir = tmp();
    let db = dir.path().join("changed.db");
    let dbs = db.display().to_string();
    let agent = dir.path().join("agent.wasm");
    std::fs::copy(plugin("memory_probe"), &agent).unwrap();
    let report = ludus([
        "run",
        "--env",
        &p("ticker"),
        "--agent",
        &agent.display().to_string(),
        "--env-config",
        "steps=40",
        "--episodes",
        "1",
        "--db",
        &dbs,
        "--json",
    ])
    .json();
    let id = report["episodes"][0]["id"].as_i64().unwrap().to_string();
    // The replay of an unchanged recording reproduces it.
    assert!(
        ludus_debugger::fork::verify(&db, id.parse().unwrap(), None)
            .unwrap()
            .is_none()
    );
    // A new build of the agent that acts otherwise from step 7.
    std::fs::copy(plugin("memory_probe_v2"), &agent).unwrap();
    let runs_before = Db::open(&db).unwrap().runs().unwrap().len();
    let bad = ludus([
        "fork",
        &dbs,
        "--episode",
        &id,
        "--frame",
        "20",
        "--set",
        "/episode/x=1",
    ]);
    let err = bad.fails_with(1);
    assert!(err.contains("at frame 7"), "{err}");
    assert!(err.contains("changed since the recording"), "{err}");
    assert!(err.contains("action: discrete"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert_eq!(
        Db::open(&db).unwrap().runs().unwrap().len(),
        runs_before,
        "nothing written"
    );
    let m = ludus_debugger::fork::verify(&db, id.parse().unwrap(), None)
        .unwrap()
        .expect("a mismatch");
    assert_eq!(m.frame, 7);
    // Forking before the change still works.
    ludus(["fork", &dbs, "--episode", &id, "--frame", "5", "--json"]).json();
    // "What did my change change": re-run with the new build, diff.
    std::fs::copy(plugin("memory_probe"), &agent).unwrap();
    let rerun = ludus([
        "rerun",
        &dbs,
        "--episode",
        &id,
        "--agent",
        &p("memory_probe_v2"),
        "--json",
    ]);
    assert_eq!(rerun.code(), 1, "{}", rerun.stderr());
    let r: serde_json::Value = serde_json::from_str(&rerun.stdout()).unwrap();
    assert_eq!(r["diff"]["first_divergence"]["frame"], 7);
    assert_eq!(
        r["diff"]["first_divergence"]["changes"][0]["what"],
        "action"
    );
    assert_eq!(r["changed_plugins"][0]["role"], "agent");
    // The same build reproduces the recording exactly.
    let same = ludus([
        "rerun",
        &dbs,
        "--episode",
        &id,
        "--agent",
        &p("memory_probe"),
        "--json",
    ]);
    assert_eq!(same.code(), 0, "{}", same.stdout());
}

#[test]
fn run_diffs_and_diffs_across_databases() {
    let dir = tmp();
    let a = dir.path().join("a.db");
    let b = dir.path().join("b.db");
    let run = |db: &Path, seed: &str| {
        run_json(
            db,
            "cartpole",
            "random_agent",
            &["--episodes", "6", "--seed", seed],
        )["run_id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let r1 = run(&a, "1");
    let r2 = run(&a, "1");
    let r3 = run(&a, "2");
    let ad = a.display().to_string();
    assert_eq!(ludus(["diff", &ad, &r1, &r2, "--runs"]).code(), 0);
    let changed = ludus(["diff", &ad, &r1, &r3, "--runs", "--json"]);
    assert_eq!(changed.code(), 1);
    let d: serde_json::Value = serde_json::from_str(&changed.stdout()).unwrap();
    assert_eq!(d["episodes"], 6);
    assert!(d["changed"].as_array().unwrap().len() >= 5);
    // The same episode recorded in two databases is identical.
    run(&b, "1");
    let ea = Db::open(&a).unwrap().episodes(&r1).unwrap()[0].id;
    let eb = Db::open(&b).unwrap().runs().unwrap()[0].id.clone();
    let eb = Db::open(&b).unwrap().episodes(&eb).unwrap()[0].id;
    let other = format!("{}:{eb}", b.display());
    let cross = ludus(["diff", &ad, &ea.to_string(), &other]);
    assert_eq!(cross.code(), 0, "{}", cross.stdout());
}

#[test]
fn ludus_debug_prints_hits_and_watches_and_rejects_bad_expressions() {
    let dir = tmp();
    let db = dir.path().join("cli.db");
    let dbs = db.display().to_string();
    let ids = record(
        &db,
        "ticker",
        "steps=50",
        "memory_probe",
        &["--episodes", "1"],
    );
    let id = ids[0].to_string();
    let out = ludus([
        "debug",
        &dbs,
        "--episode",
        &id,
        "--break",
        "step % 10 == 0",
        "--watch",
        "reward",
        "--watch",
        r#"memory["/episode/step"]"#,
        "--json",
    ])
    .json();
    let frames: Vec<i64> = out["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["frame"].as_i64().unwrap())
        .collect();
    assert_eq!(frames, vec![0, 10, 20, 30, 40]);
    let w = &out["hits"][1]["watches"];
    assert_eq!(w[1]["value"], "10", "{w:#}");
    // Text output names the hits too.
    let text = ludus(["debug", &dbs, "--episode", &id, "--break", "step == 42"]);
    assert_eq!(text.code(), 0);
    assert!(text.stdout().contains("frame 42"), "{}", text.stdout());
    // Bad expressions: exit 2, one line, the column.
    let bad = ludus([
        "debug",
        &dbs,
        "--episode",
        &id,
        "--break",
        r#"step > 3 && action.kind = "click""#,
    ]);
    let err = bad.fails_with(2);
    assert!(err.contains("column 25"), "{err}");
    assert_eq!(err.trim().lines().count(), 1);
    // No such episode, no such database.
    assert!(
        ludus(["debug", &dbs, "--episode", "999", "--break", "true"])
            .fails_with(2)
            .contains("999")
    );
    let missing = dir.path().join("nope.db").display().to_string();
    assert!(
        ludus(["debug", &missing, "--episode", "1", "--break", "true"])
            .fails_with(2)
            .contains("not found")
    );
}

#[test]
fn interactive_prompt_steps_breaks_and_forks() {
    let dir = tmp();
    let db = dir.path().join("prompt.db");
    let dbs = db.display().to_string();
    let ids = record(
        &db,
        "ticker",
        "steps=30,rich=1",
        "memory_probe",
        &["--episodes", "1"],
    );
    let script = "n\nn 3\nb\nbreak step == 20\nwatch memory[\"/episode/step\"]\nc\nmem /episode\ndiff\nprint\nset /episode/force 1\nfork\nbreak reward <\nq\n";
    let out = ludus_with_stdin(["debug", &dbs, "--episode", &ids[0].to_string()], script);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("frame 1 (step 1)"), "{text}");
    assert!(text.contains("frame 4 (step 4)"), "{text}");
    assert!(text.contains("frame 3 (step 3)"), "{text}");
    assert!(text.contains("hit breakpoint [1]"), "{text}");
    assert!(text.contains("frame 20 (step 20)"), "{text}");
    assert!(
        text.contains("observation `screen` image: 2 pixels changed"),
        "{text}"
    );
    assert!(text.contains("observation `tree` tree: #1"), "{text}");
    assert!(text.contains("branch episode"), "{text}");
    assert!(text.contains("first divergence at frame 20"), "{text}");
    assert!(text.contains("column"), "{text}");
}

#[test]
fn live_mode_pauses_at_breakpoints_and_continues_after_an_edit() {
    let dir = tmp();
    let db = dir.path().join("live.db");
    let spec = ludus_arena::RunSpec {
        env: ludus_arena::PluginSpec {
            path: plugin("ticker"),
            config: "steps=40".into(),
            limits: ludus_arena::Limits::DEFAULT,
        },
        agent: ludus_arena::PluginSpec {
            path: plugin("memory_probe"),
            config: String::new(),
            limits: ludus_arena::Limits::DEFAULT,
        }
        .into(),
        reward: None,
        episodes: 1,
        seed: 3,
        jobs: 1,
        db: db.clone(),
        models: Default::default(),
        step_delay: std::time::Duration::ZERO,
    };
    let prepared = ludus_arena::run::prepare(spec).expect("prepare");
    let live = LiveEpisode::start(&prepared, 77, Default::default(), Some(&db)).expect("live");
    let mut session = Session::live(live);
    session.add_breakpoint("step == 10").unwrap();
    let hit = session
        .live_continue(1000)
        .unwrap()
        .expect("pauses at the breakpoint");
    assert_eq!(hit.frame, 10);
    assert_eq!(session.len(), 11, "nothing played past the breakpoint");
    // Going back over what was played works as in a recording.
    session.goto(3).unwrap();
    assert_eq!(session.current().unwrap().frame.step, 3);
    session
        .live_episode()
        .unwrap()
        .edit_memory("/episode/force", Some("1"))
        .unwrap();
    assert_eq!(
        session.live_step(Some(Action::Discrete(3))).unwrap(),
        Some(11)
    );
    assert!(
        session.live_continue(1000).unwrap().is_none(),
        "runs to the end"
    );
    assert_eq!(session.len(), 40);
    let view = session.view(11).unwrap();
    assert_eq!(view.frame.action, Action::Discrete(3));
    assert_eq!(view.memory["/episode/force"], "1");
    for k in 12..40 {
        assert_eq!(session.view(k).unwrap().frame.action, Action::Discrete(1));
    }
    let report = session
        .live_episode()
        .unwrap()
        .report()
        .cloned()
        .expect("recorded");
    assert_eq!(report.length, 40);
    let stored = frames(&db, report.id);
    assert_eq!(stored.len(), 40);
    assert_eq!(stored[11].action, Action::Discrete(3));
    // The edits were recorded with the episode, so it replays exactly.
    assert!(
        ludus_debugger::fork::verify(&db, report.id, None)
            .unwrap()
            .is_none()
    );
}
