//! Recordings written by the previous release (tests/fixtures/recording-0.1,
//! made with commit f20f1e9's `ludus`) open and read back unchanged, and the
//! same runs recorded today give the same digests.

use std::path::{Path, PathBuf};

use crate::support::{ludus, plugin, root};

fn fixture() -> PathBuf {
    root().join("tests/fixtures/recording-0.1")
}

/// A private copy of the fixture database, so nothing a command does can
/// change the committed file.
fn copy_db(dir: &Path) -> PathBuf {
    let db = dir.join("v1.db");
    std::fs::copy(fixture().join("v1.db"), &db).expect("copy fixture database");
    db
}

fn expected_json(name: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(fixture().join(name)).expect("read expected output");
    serde_json::from_str(&text).expect("expected output is JSON")
}

#[test]
fn every_episode_of_an_old_recording_reads_back_frame_for_frame() {
    let dir = tempfile::tempdir().unwrap();
    let db = copy_db(dir.path());
    let db_s = db.to_str().unwrap();
    for id in 1..=7 {
        let id_s = id.to_string();
        let run = ludus([
            "debug",
            db_s,
            "--episode",
            &id_s,
            "--break",
            "true",
            "--json",
        ]);
        let got = run.json();
        let want = expected_json(&format!("debug-{id}.json"));
        assert_eq!(got, want, "episode {id} reads back differently");
    }
    let memory = ludus(["memory", "list", db_s, "/"]);
    memory.ok();
    let want = std::fs::read_to_string(fixture().join("memory.txt")).unwrap();
    assert_eq!(memory.stdout(), want);
    // Episode 7 is a fork of episode 4 at frame 3 with a memory edit.
    let diff = ludus(["diff", db_s, "4", "7", "--json"]);
    assert_eq!(
        diff.code(),
        1,
        "a branch with an edit differs from its parent"
    );
    let got: serde_json::Value = serde_json::from_str(&diff.stdout()).unwrap();
    assert_eq!(got, expected_json("diff-4-7.json"));
}

#[test]
fn the_old_recordings_runs_record_the_same_digests_today() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("today.db");
    let db_s = db.to_str().unwrap();
    let p = |name: &str| plugin(name).to_str().unwrap().to_owned();
    let runs: [(&str, Vec<String>); 3] = [
        (
            "run1.json",
            vec![
                "--env".into(),
                p("cartpole"),
                "--agent".into(),
                p("random_agent"),
                "--reward".into(),
                p("sparse_reward"),
                "--episodes".into(),
                "3".into(),
                "--seed".into(),
                "7".into(),
            ],
        ),
        (
            "run2.json",
            vec![
                "--env".into(),
                p("maze"),
                "--env-config".into(),
                "size=7,doors=1".into(),
                "--agent".into(),
                p("memory_agent"),
                "--reward".into(),
                p("distance_reward"),
                "--episodes".into(),
                "2".into(),
                "--seed".into(),
                "3".into(),
            ],
        ),
        (
            "run3.json",
            vec![
                "--env".into(),
                p("ticker"),
                "--agent".into(),
                p("memory_probe"),
                "--episodes".into(),
                "1".into(),
                "--seed".into(),
                "5".into(),
            ],
        ),
    ];
    for (expected, args) in runs {
        let mut all = vec!["run".to_owned()];
        all.extend(args);
        all.extend([
            "--jobs".into(),
            "2".into(),
            "--db".into(),
            db_s.into(),
            "--json".into(),
        ]);
        let got = ludus(&all).json();
        let want = expected_json(expected);
        let fields = |v: &serde_json::Value| -> Vec<serde_json::Value> {
            v["episodes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| {
                    serde_json::json!([
                        e["index"],
                        e["seed"],
                        e["outcome"],
                        e["return"],
                        e["length"],
                        e["success"],
                        e["digest"]
                    ])
                })
                .collect()
        };
        assert_eq!(
            fields(&got),
            fields(&want),
            "{expected}: episodes differ from the old release's"
        );
    }
}
