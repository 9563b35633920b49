//! Integration tests of `ludus suite`: the example suite over real plugins
//! built from plugins/, a deliberately weakened agent, a quality-neutral
//! tie-break change, baselines, malformed suite files, and the reports parsed
//! back.

use crate::support;

use std::path::{Path, PathBuf};

use ludus_arena::Db;
use quick_junit::{NonSuccessKind, TestCaseStatus};
use support::*;

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

fn example_suite() -> PathBuf {
    plugins();
    root().join("suites/examples.toml")
}

/// The example suite written into `dir`, its plugin folder made absolute and
/// each `(from, to)` replacement applied to the text.
fn suite_variant(dir: &Path, name: &str, replacements: &[(&str, &str)]) -> PathBuf {
    let mut text = std::fs::read_to_string(example_suite()).expect("example suite");
    let line = text
        .lines()
        .find(|l| l.starts_with("plugins = "))
        .expect("plugins line")
        .to_string();
    text = text.replace(
        &line,
        &format!("plugins = {:?}", plugins().display().to_string()),
    );
    for (from, to) in replacements {
        assert!(text.contains(from), "the example suite has no `{from}`");
        text = text.replace(from, to);
    }
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write suite");
    path
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

const MAZE_9: &str = "maze/solver/maze/size=9,doors=1,max_steps=60/distance";
const MAZE_11: &str = "maze/solver/maze/size=11,doors=2,max_steps=100/distance";
const CARTPOLE: &str = "cartpole/random";

fn case<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no case {name} in {report}"))
}

fn baseline(dir: &Path, suite: &Path) -> PathBuf {
    let out = dir.join("baseline.json");
    let r = ludus([
        "suite",
        "baseline",
        &s(suite),
        "--out",
        &s(&out),
        "--db",
        &s(&dir.join("baseline.db")),
        "--jobs",
        "2",
    ]);
    r.fails_with(0);
    assert!(r.stdout().contains("baseline of 3 cases written to"));
    out
}

/// Every `(path, attributes)` of the elements in an XML document, the path
/// being the element names from the root.
fn xml_elements(xml: &str) -> Vec<(String, Vec<(String, String)>)> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut stack: Vec<String> = Vec::new();
    let mut out = Vec::new();
    loop {
        let event = reader.read_event().expect("well-formed XML");
        let (e, empty) = match event {
            Event::Start(e) => (e, false),
            Event::Empty(e) => (e, true),
            Event::End(_) => {
                stack.pop();
                continue;
            }
            Event::Eof => break,
            _ => continue,
        };
        let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
        stack.push(name);
        let attrs = e
            .attributes()
            .map(|a| {
                let a = a.expect("attribute");
                (
                    String::from_utf8_lossy(a.key.as_ref()).into_owned(),
                    a.normalized_value(quick_xml::XmlVersion::Implicit1_0)
                        .expect("attribute value")
                        .into_owned(),
                )
            })
            .collect();
        out.push((stack.join("/"), attrs));
        if empty {
            stack.pop();
        }
    }
    assert!(stack.is_empty(), "unclosed elements: {stack:?}");
    out
}

fn attr<'a>(attrs: &'a [(String, String)], key: &str) -> &'a str {
    attrs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no attribute {key} in {attrs:?}"))
}

#[test]
fn example_suite_passes_and_records_every_case() {
    let dir = tmp();
    let db = dir.path().join("suite.db");
    let junit = dir.path().join("junit.xml");
    let md = dir.path().join("suite.md");
    let r = ludus([
        "suite",
        "run",
        &s(&example_suite()),
        "--db",
        &s(&db),
        "--jobs",
        "2",
        "--junit",
        &s(&junit),
        "--markdown",
        &s(&md),
        "--json",
    ]);
    let report = r.json();
    assert_eq!(report["passed"], 3, "{report}");
    assert_eq!(report["failed"], 0);
    for name in [CARTPOLE, MAZE_9, MAZE_11] {
        let c = case(&report, name);
        assert_eq!(c["passed"], true, "{c}");
        assert_eq!(c["baseline"]["status"], "not_given");
        assert!(c["worst"].as_array().unwrap().is_empty());
    }
    assert_eq!(case(&report, MAZE_9)["stats"]["success_rate"], 1.0);
    assert_eq!(case(&report, CARTPOLE)["stats"]["episodes"], 60);
    // Every case is recorded in the one database, every episode's frames with it.
    let store = Db::open(&db).unwrap();
    assert_eq!(store.runs().unwrap().len(), 3);
    for c in report["cases"].as_array().unwrap() {
        for e in c["episodes"].as_array().unwrap() {
            let frames = store.frames(e["id"].as_i64().unwrap()).unwrap();
            assert_eq!(frames.len() as u64, e["length"].as_u64().unwrap());
        }
    }
    // JUnit: one testsuite, one testcase per case, no failures.
    let xml = std::fs::read_to_string(&junit).unwrap();
    let parsed = quick_junit::Report::deserialize_from_str(&xml).expect("JUnit parses back");
    assert_eq!(parsed.tests, 3);
    assert_eq!(parsed.failures, 0);
    assert_eq!(parsed.test_suites.len(), 1);
    let cases: Vec<&str> = parsed.test_suites[0]
        .test_cases
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(cases, [CARTPOLE, MAZE_9, MAZE_11]);
    assert!(
        parsed.test_suites[0]
            .test_cases
            .iter()
            .all(|c| matches!(c.status, TestCaseStatus::Success { .. }))
    );
    let md = std::fs::read_to_string(&md).unwrap();
    assert!(
        md.starts_with("## ludus suite `examples`: all passed"),
        "{md}"
    );
    assert_eq!(md.matches("| ✅ |").count(), 3, "{md}");
    // The table on a terminal, and --filter.
    let r = ludus([
        "suite",
        "run",
        &s(&example_suite()),
        "--db",
        &s(&db),
        "--filter",
        "maze/*",
    ]);
    r.fails_with(0);
    let out = r.stdout();
    assert!(out.contains(&format!("PASS  {MAZE_9}")), "{out}");
    assert!(!out.contains(CARTPOLE), "{out}");
    assert!(
        out.contains("suite examples: 2 cases, 2 passed, 0 failed"),
        "{out}"
    );
}

#[test]
fn weakened_agent_fails_and_names_the_regressed_cases() {
    let dir = tmp();
    let base = baseline(dir.path(), &example_suite());
    let weak = suite_variant(
        dir.path(),
        "weak.toml",
        &[("\"maze_solver.wasm\"", "\"weak_maze_solver.wasm\"")],
    );
    let db = dir.path().join("weak.db");
    let junit = dir.path().join("junit.xml");
    let md = dir.path().join("suite.md");
    let run = |extra: &[&str]| {
        let mut args = vec![
            "suite".to_string(),
            "run".into(),
            s(&weak),
            "--db".into(),
            s(&db),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        ludus(args)
    };
    // Thresholds alone: both maze cases fail, CartPole passes.
    let r = run(&[]);
    r.fails_with(1);
    let out = r.stdout();
    assert!(out.contains(&format!("FAIL  {MAZE_9}")), "{out}");
    assert!(out.contains(&format!("FAIL  {MAZE_11}")), "{out}");
    assert!(out.contains(&format!("PASS  {CARTPOLE}")), "{out}");
    assert!(out.contains("failed: success rate"), "{out}");
    assert!(!out.contains("regressed"), "{out}");
    assert!(
        out.contains("suite examples: 3 cases, 1 passed, 2 failed"),
        "{out}"
    );

    // Against the original agent's baseline: a significant drop, with the interval.
    let r = run(&[
        "--baseline",
        &s(&base),
        "--junit",
        &s(&junit),
        "--markdown",
        &s(&md),
    ]);
    r.fails_with(1);
    let out = r.stdout();
    assert!(out.contains("regressed: success rate 100.0% -> "), "{out}");
    assert!(out.contains("90% interval"), "{out}");
    assert!(out.contains("significant drop"), "{out}");
    let r = run(&["--baseline", &s(&base), "--json"]);
    assert_eq!(r.code(), 1);
    let report: serde_json::Value = serde_json::from_str(&r.stdout()).unwrap();
    let store = Db::open(&db).unwrap();
    for name in [MAZE_9, MAZE_11] {
        let c = case(&report, name);
        assert_eq!(c["passed"], false);
        let cmp = &c["baseline"];
        assert_eq!(cmp["status"], "compared");
        assert_eq!(cmp["regressed"], true, "{cmp}");
        assert_eq!(cmp["exact"], false);
        let rate = &cmp["success_rate"];
        assert_eq!(rate["significant_drop"], true);
        assert!(rate["high"].as_f64().unwrap() < 0.0, "{rate}");
        assert!(rate["p_value"].as_f64().unwrap() < 0.05, "{rate}");
        assert_eq!(cmp["mean_return"]["significant_drop"], true);
        // The worst episodes are real failed episodes of this run, worst first,
        // each with the command that opens it.
        let worst = c["worst"].as_array().unwrap();
        let commands = c["open_commands"].as_array().unwrap();
        assert_eq!(worst.len(), 3);
        assert_eq!(commands.len(), 4);
        assert_eq!(commands[3], format!("ludus ide {}", s(&db)));
        for (e, cmd) in worst.iter().zip(commands) {
            assert_eq!(e["success"], false, "{e}");
            let id = e["id"].as_i64().unwrap();
            assert_eq!(
                store.frames(id).unwrap().len() as u64,
                e["length"].as_u64().unwrap()
            );
            assert_eq!(*cmd, format!("ludus debug {} --episode {id}", s(&db)));
        }
    }
    // The text report of the run before printed the same kind of commands.
    assert_eq!(
        out.matches(&format!("ludus debug {} --episode ", s(&db)))
            .count(),
        6
    );
    assert_eq!(
        out.matches(&format!("all episodes: ludus ide {}", s(&db)))
            .count(),
        2
    );
    assert_eq!(case(&report, CARTPOLE)["baseline"]["exact"], true);

    // JUnit: the two maze cases fail as regressions, carrying the figures.
    let xml = std::fs::read_to_string(&junit).unwrap();
    let parsed = quick_junit::Report::deserialize_from_str(&xml).expect("JUnit parses back");
    assert_eq!((parsed.tests, parsed.failures), (3, 2));
    for tc in &parsed.test_suites[0].test_cases {
        match (&tc.status, tc.name.as_str()) {
            (TestCaseStatus::Success { .. }, CARTPOLE) => {}
            (
                TestCaseStatus::NonSuccess {
                    kind: NonSuccessKind::Failure,
                    message: Some(m),
                    ty: Some(ty),
                    description: Some(d),
                    ..
                },
                MAZE_9 | MAZE_11,
            ) => {
                let (ty, m, d) = (ty.as_str(), m.as_str(), d.as_str());
                assert!(ty.contains("regression"), "{ty}");
                assert!(m.contains("regressed: success rate 100.0% -> "), "{m}");
                assert!(d.contains("success rate"), "{d}");
                assert!(d.contains("mean return"), "{d}");
                assert!(d.contains("ludus debug"), "{d}");
            }
            (status, name) => panic!("{name}: unexpected {status:?}"),
        }
    }
    // The same document element by element.
    let elements = xml_elements(&xml);
    let paths: Vec<&str> = elements.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(paths[0], "testsuites");
    assert_eq!(paths[1], "testsuites/testsuite");
    assert_eq!(
        paths
            .iter()
            .filter(|p| **p == "testsuites/testsuite/testcase")
            .count(),
        3
    );
    let failures: Vec<_> = elements
        .iter()
        .filter(|(p, _)| p == "testsuites/testsuite/testcase/failure")
        .collect();
    assert_eq!(failures.len(), 2);
    for (_, attrs) in failures {
        assert!(attr(attrs, "message").contains("points"), "{attrs:?}");
    }
    let suite_attrs = &elements[1].1;
    assert_eq!(attr(suite_attrs, "tests"), "3");
    assert_eq!(attr(suite_attrs, "failures"), "2");

    let md = std::fs::read_to_string(&md).unwrap();
    assert!(
        md.starts_with("## ludus suite `examples`: 2 of 3 failed"),
        "{md}"
    );
    assert!(md.contains(&format!("### ❌ `{MAZE_9}`")), "{md}");
    assert!(md.contains("```sh\nludus debug "), "{md}");
}

#[test]
fn tie_break_change_does_not_trip_the_statistical_gate() {
    let dir = tmp();
    let base = baseline(dir.path(), &example_suite());
    let mirrored = suite_variant(
        dir.path(),
        "mirrored.toml",
        &[("\"random_agent.wasm\"", "\"mirrored_random_agent.wasm\"")],
    );
    let r = ludus([
        "suite",
        "run",
        &s(&mirrored),
        "--db",
        &s(&dir.path().join("m.db")),
        "--baseline",
        &s(&base),
        "--json",
    ]);
    let report = r.json();
    assert_eq!(report["failed"], 0, "{report}");
    let cmp = &case(&report, CARTPOLE)["baseline"];
    // Other trajectories...
    assert_eq!(cmp["status"], "compared");
    assert_eq!(cmp["exact"], false, "{cmp}");
    let m = &cmp["mean_return"];
    assert_ne!(m["diff"].as_f64().unwrap(), 0.0, "{m}");
    // ...of the same quality: the interval straddles zero.
    assert!(
        m["low"].as_f64().unwrap() < 0.0 && m["high"].as_f64().unwrap() > 0.0,
        "{m}"
    );
    assert_eq!(m["significant_drop"], false);
    assert_eq!(cmp["success_rate"]["significant_drop"], false);
    assert_eq!(cmp["regressed"], false);
    // The untouched cases reproduce exactly.
    assert_eq!(case(&report, MAZE_9)["baseline"]["exact"], true);
}

#[test]
fn unchanged_build_reproduces_the_baseline_exactly() {
    let dir = tmp();
    let base = baseline(dir.path(), &example_suite());
    let md = dir.path().join("suite.md");
    // Another database and another --jobs: still the same episodes.
    let r = ludus([
        "suite",
        "run",
        &s(&example_suite()),
        "--db",
        &s(&dir.path().join("again.db")),
        "--jobs",
        "1",
        "--baseline",
        &s(&base),
        "--markdown",
        &s(&md),
    ]);
    r.fails_with(0);
    let out = r.stdout();
    assert_eq!(
        out.matches("baseline: reproduces the baseline exactly")
            .count(),
        3,
        "{out}"
    );
    let md = std::fs::read_to_string(&md).unwrap();
    assert_eq!(
        md.matches("reproduces the baseline exactly").count(),
        3,
        "{md}"
    );
    // The baseline holds every episode's digest.
    let b: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&base).unwrap()).unwrap();
    assert_eq!(
        b["cases"][CARTPOLE]["digests"].as_array().unwrap().len(),
        60
    );
}

#[test]
fn malformed_suites_exit_2_naming_file_line_and_key() {
    let dir = tmp();
    let db = dir.path().join("never.db");
    let check = |name: &str, replacements: &[(&str, &str)], line: usize, key: &str, what: &str| {
        let suite = suite_variant(dir.path(), name, replacements);
        let r = ludus(["suite", "run", &s(&suite), "--db", &s(&db)]);
        let err = r.fails_with(2);
        let want = format!("error: {}:{line}: key `{key}`: ", s(&suite));
        assert!(err.starts_with(&want), "want `{want}...`, got: {err}");
        assert!(err.contains(what), "want `{what}` in: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
        assert!(r.stdout().is_empty());
        assert!(!db.exists(), "nothing is written for a bad suite");
    };
    check(
        "unknown.toml",
        &[("episodes = 60", "episode = 60")],
        17,
        "episode",
        "unknown field",
    );
    check(
        "type.toml",
        &[("episodes = 60", "episodes = \"many\"")],
        17,
        "episodes",
        "invalid type",
    );
    check(
        "range.toml",
        &[("success_rate_min = 1.0", "success_rate_min = 100")],
        29,
        "success_rate_min",
        "within 0..=1",
    );
    check(
        "plugin.toml",
        &[("\"random_agent.wasm\"", "\"no_such_agent.wasm\"")],
        16,
        "agent",
        "no_such_agent.wasm not found",
    );
    check(
        "limit.toml",
        &[(
            "episodes = 60",
            "episodes = 60\nlimits = { \"agent.fuel\" = \"lots\" }",
        )],
        18,
        "agent.fuel",
        "fuel",
    );
    check(
        "kind.toml",
        &[("\"random_agent.wasm\"", "\"cartpole.wasm\"")],
        16,
        "agent",
        "it is an env plugin, expected an agent plugin",
    );
    check(
        "syntax.toml",
        &[("alpha = 0.05", "alpha = = 0.05")],
        10,
        "alpha",
        "",
    );
    // The suite, the baseline and the filter are checked before anything runs.
    let missing = ludus(["suite", "run", "no/such/suite.toml", "--db", &s(&db)]);
    assert!(
        missing
            .fails_with(2)
            .contains("cannot read suite file no/such/suite.toml")
    );
    let junk = dir.path().join("junk.json");
    std::fs::write(&junk, "{}").unwrap();
    let r = ludus([
        "suite",
        "run",
        &s(&example_suite()),
        "--db",
        &s(&db),
        "--baseline",
        &s(&junk),
    ]);
    assert!(r.fails_with(2).contains("not a baseline file"));
    let r = ludus([
        "suite",
        "run",
        &s(&example_suite()),
        "--db",
        &s(&db),
        "--filter",
        "nothing-matches",
    ]);
    assert!(r.fails_with(2).contains("matches no case"));
    assert!(!db.exists());
}

#[test]
fn crashed_episodes_fail_the_case_and_lead_the_worst() {
    let dir = tmp();
    let suite = dir.path().join("crash.toml");
    let write = |crashed_max: u64| {
        std::fs::write(
            &suite,
            format!(
                "plugins = {:?}\nseed = 4\n\n[[case]]\nname = \"panics\"\nenv = \"cartpole.wasm\"\nagent = \"hostile_agent.wasm\"\nagent_config = \"mode=panic,at=2\"\nepisodes = 4\nexpect = {{ crashed_max = {crashed_max} }}\n",
                s(plugins())
            ),
        )
        .unwrap();
    };
    let db = dir.path().join("crash.db");
    write(0);
    let r = ludus(["suite", "run", &s(&suite), "--db", &s(&db), "--json"]);
    assert_eq!(r.code(), 1, "{}", r.stderr());
    let report: serde_json::Value = serde_json::from_str(&r.stdout()).unwrap();
    let c = case(&report, "panics");
    assert_eq!(c["stats"]["crashed"], 4);
    assert_eq!(
        c["failures"][0], "crashed episodes 4 > 0 allowed",
        "{}",
        c["failures"]
    );
    for e in c["worst"].as_array().unwrap() {
        assert_eq!(e["outcome"], "crashed");
        assert!(e["error"].as_str().unwrap().contains("panic"), "{e}");
    }
    // Allowing them makes the same case pass.
    write(4);
    ludus(["suite", "run", &s(&suite), "--db", &s(&db)]).fails_with(0);
}
