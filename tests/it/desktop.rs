//! Integration tests of the simulated desktop (plugins/examples/desktop and its
//! agents): the real `ludus` binary, real wasm plugins, real SQLite files.
//!
//! `LUDUS_UPDATE_SCREENSHOTS=1 cargo test -p ludus --test it docs_screenshots`
//! rewrites docs/desktop/*.png; without it, the test checks them.

use crate::support;

use std::path::Path;

use ludus_arena::Db;
use ludus_arena::model::{Element, Frame, Value};
use support::*;

const TASKS: [&str; 7] = [
    "click-button",
    "checkboxes",
    "type-field",
    "dropdown",
    "slider",
    "workflow",
    "click-random",
];

/// The desktop's background colour (desktop-kit's `ui::DESKTOP`).
const BACKGROUND: [u8; 3] = [0x2d, 0x6a, 0x8f];

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

fn run(
    db: &Path,
    agent: &str,
    env_config: &str,
    episodes: u32,
    seed: u64,
    extra: &[&str],
) -> serde_json::Value {
    let episodes = episodes.to_string();
    let seed = seed.to_string();
    let mut args = vec![
        "--env-config",
        env_config,
        "--episodes",
        &episodes,
        "--seed",
        &seed,
    ];
    args.extend_from_slice(extra);
    run_json(db, "desktop", agent, &args)
}

fn successes(report: &serde_json::Value) -> usize {
    report["episodes"]
        .as_array()
        .expect("episodes")
        .iter()
        .filter(|e| e["success"] == true)
        .count()
}

fn lengths(report: &serde_json::Value) -> Vec<u64> {
    report["episodes"]
        .as_array()
        .expect("episodes")
        .iter()
        .map(|e| e["length"].as_u64().expect("length"))
        .collect()
}

fn frames(db: &Path, report: &serde_json::Value, index: usize) -> Vec<Frame> {
    let id = report["episodes"][index]["id"]
        .as_i64()
        .expect("episode id");
    let db = Db::open(db).expect("open db");
    db.frames(id)
        .expect("frames")
        .into_iter()
        .map(|(f, _)| f)
        .collect()
}

fn screen(frame: &Frame) -> (u32, u32, Vec<u8>) {
    frame
        .observation
        .iter()
        .find_map(|p| match &p.value {
            Value::Image(i) if p.name == "screen" => Some((i.width, i.height, i.pixels.clone())),
            _ => None,
        })
        .expect("a screen part")
}

fn tree(frame: &Frame) -> Vec<Element> {
    frame
        .observation
        .iter()
        .find_map(|p| match &p.value {
            Value::Tree(t) if p.name == "tree" => Some(t.clone()),
            _ => None,
        })
        .expect("a tree part")
}

#[test]
fn the_scripted_agent_solves_every_task_over_many_seeds() {
    let dir = tmp();
    let db = dir.path().join("solve.db");
    for task in TASKS {
        let report = run(&db, "desktop_solver", &format!("task={task}"), 40, 17, &[]);
        assert_eq!(successes(&report), 40, "{task}: {}", report["summary"]);
        assert_eq!(report["summary"]["success_rate"], 1.0);
    }
    // The workflow is long: 15 steps or more, every time.
    let report = run(&db, "desktop_solver", "task=workflow", 20, 3, &[]);
    assert!(
        lengths(&report).iter().all(|&n| n >= 15),
        "{:?}",
        lengths(&report)
    );
    // Rewards are sparse and decayed by the steps used.
    let f = frames(&db, &report, 0);
    let (last, before) = f.split_last().expect("frames");
    assert!(before.iter().all(|f| f.reward == 0.0));
    assert!(last.reward > 0.5 && last.reward < 1.0, "{}", last.reward);
}

#[test]
fn element_id_actions_work_only_when_the_env_allows_them() {
    let dir = tmp();
    let db = dir.path().join("ids.db");
    let agent = ["--agent-config", "element_actions=1"];
    for task in ["checkboxes", "workflow", "dropdown"] {
        let on = run(
            &db,
            "desktop_solver",
            &format!("task={task},element_actions=1"),
            15,
            2,
            &agent,
        );
        assert_eq!(successes(&on), 15, "{task}");
    }
    let off = run(&db, "desktop_solver", "task=checkboxes", 10, 2, &agent);
    assert_eq!(successes(&off), 0);
    let f = frames(&db, &off, 0);
    assert!(
        f[0].info.contains("element actions are off"),
        "{}",
        f[0].info
    );
}

#[test]
fn a_random_agent_almost_never_solves_the_workflow() {
    let dir = tmp();
    let db = dir.path().join("random.db");
    let report = run(&db, "random_agent", "task=workflow", 60, 1, &[]);
    assert!(successes(&report) <= 1, "{}", report["summary"]);
    // It does hit the single button of click-random now and then: the baseline
    // a learned pointer policy must beat.
    let report = run(&db, "random_agent", "task=click-random", 200, 1, &[]);
    let rate = report["summary"]["success_rate"].as_f64().expect("rate");
    assert!(rate > 0.0 && rate < 0.3, "{rate}");
}

/// Every element of the tree lies on screen and inside its parent (open lists
/// excepted), and its box holds rendered, non-background pixels of at least
/// two colours; every non-background pixel lies in some element's box or
/// under the cursor.
#[test]
fn the_screenshot_and_the_element_tree_agree() {
    let dir = tmp();
    let db = dir.path().join("agree.db");
    for task in TASKS {
        let report = run(&db, "desktop_solver", &format!("task={task}"), 3, 5, &[]);
        for index in 0..3 {
            for frame in frames(&db, &report, index) {
                let (w, h, px) = screen(&frame);
                assert_eq!(px.len(), (w * h * 3) as usize);
                let nodes = tree(&frame);
                assert!(!nodes.is_empty());
                let at = |x: i32, y: i32| {
                    let k = (y as usize * w as usize + x as usize) * 3;
                    [px[k], px[k + 1], px[k + 2]]
                };
                for n in &nodes {
                    let b = &n.bounds;
                    let (x1, y1) = (b.x + b.width as i32, b.y + b.height as i32);
                    assert!(
                        b.x >= 0 && b.y >= 0 && x1 <= w as i32 && y1 <= h as i32,
                        "{task}: {n:?} off screen"
                    );
                    if let Some(p) = n.parent.and_then(|p| nodes.iter().find(|m| m.id == p))
                        && !matches!(n.role.as_str(), "option" | "menuitem")
                    {
                        let pb = &p.bounds;
                        assert!(
                            b.x >= pb.x
                                && b.y >= pb.y
                                && x1 <= pb.x + pb.width as i32
                                && y1 <= pb.y + pb.height as i32,
                            "{task}: {n:?} outside its parent {p:?}"
                        );
                    }
                    let covered = !matches!(n.role.as_str(), "option" | "menuitem")
                        && nodes.iter().any(|m| {
                            matches!(m.role.as_str(), "option" | "menuitem")
                                && m.bounds.x < x1
                                && b.x < m.bounds.x + m.bounds.width as i32
                                && m.bounds.y < y1
                                && b.y < m.bounds.y + m.bounds.height as i32
                        });
                    let mut colours = std::collections::BTreeSet::new();
                    for y in b.y..y1 {
                        for x in b.x..x1 {
                            colours.insert(at(x, y));
                        }
                    }
                    colours.remove(&BACKGROUND);
                    assert!(
                        covered || colours.len() >= 2,
                        "{task}: {n:?} shows {colours:?}"
                    );
                }
                // No stray drawing outside the tree (the cursor is 6x8 at the last pointer).
                for y in 0..h as i32 {
                    for x in 0..w as i32 {
                        if at(x, y) == BACKGROUND {
                            continue;
                        }
                        let in_box = nodes.iter().any(|n| {
                            let b = &n.bounds;
                            x >= b.x
                                && y >= b.y
                                && x < b.x + b.width as i32
                                && y < b.y + b.height as i32
                        });
                        let near_cursor = cursor_may_be_at(&frame, x, y);
                        assert!(
                            in_box || near_cursor,
                            "{task}: pixel ({x},{y}) drawn outside every box"
                        );
                    }
                }
            }
        }
    }
}

/// Whether (x, y) could be the cursor: it is drawn in black and white.
fn cursor_may_be_at(frame: &Frame, x: i32, y: i32) -> bool {
    let (w, _, px) = screen(frame);
    let k = (y as usize * w as usize + x as usize) * 3;
    matches!(
        [px[k], px[k + 1], px[k + 2]],
        [0x20, 0x20, 0x20] | [0xff, 0xff, 0xff]
    )
}

#[test]
fn the_same_seed_renders_the_same_pixels() {
    let dir = tmp();
    let db = dir.path().join("same.db");
    for task in ["workflow", "slider", "click-random"] {
        let cfg = format!("task={task}");
        let a = run(&db, "desktop_solver", &cfg, 2, 9, &[]);
        let b = run(&db, "desktop_solver", &cfg, 2, 9, &[]);
        let c = run(&db, "desktop_solver", &cfg, 2, 10, &[]);
        assert_eq!(digests(&a), digests(&b));
        let screens = |r| {
            frames(&db, r, 0)
                .iter()
                .map(|f| screen(f).2)
                .collect::<Vec<_>>()
        };
        assert_eq!(screens(&a), screens(&b), "{task}");
        assert_ne!(
            screens(&a)[0],
            screens(&c)[0],
            "{task}: another seed, another layout"
        );
    }
}

#[test]
fn the_memory_agent_gets_faster_on_a_second_run() {
    let dir = tmp();
    let db = dir.path().join("memory.db");
    let first = run(&db, "desktop_memory_agent", "task=workflow", 12, 4, &[]);
    let second = run(&db, "desktop_memory_agent", "task=workflow", 12, 4, &[]);
    assert_eq!(successes(&first), 12);
    assert_eq!(successes(&second), 12);
    let (a, b) = (lengths(&first), lengths(&second));
    assert!(a.iter().zip(&b).all(|(x, y)| y <= x), "{a:?} then {b:?}");
    assert!(
        b.iter().sum::<u64>() < a.iter().sum::<u64>(),
        "{a:?} then {b:?}"
    );
    let memory = Db::open(&db).expect("db").agent_memory().expect("memory");
    assert_eq!(
        memory
            .get("/agent/desktop/workflow/sketch")
            .map(String::as_str),
        Some("Export=File")
    );
    // It also generalises: new seeds, same task, already the short way.
    let third = run(&db, "desktop_memory_agent", "task=workflow", 12, 99, &[]);
    let solver = run(&db, "desktop_solver", "task=workflow", 12, 99, &[]);
    assert_eq!(successes(&third), 12);
    assert!(lengths(&third).iter().sum::<u64>() < lengths(&solver).iter().sum::<u64>());
}

#[test]
fn the_shaped_reward_pays_for_progress() {
    let dir = tmp();
    let db = dir.path().join("shaped.db");
    let reward = plugin("desktop_shaped_reward").display().to_string();
    let report = run(
        &db,
        "desktop_solver",
        "task=workflow",
        5,
        1,
        &["--reward", &reward],
    );
    assert_eq!(successes(&report), 5);
    let f = frames(&db, &report, 0);
    let paid = f[..f.len() - 1].iter().filter(|f| f.reward > 0.0).count();
    assert!(paid >= 8, "{paid} steps paid before the end");
    // The random agent earns only step costs and a little progress.
    let random = run(
        &db,
        "random_agent",
        "task=workflow",
        5,
        1,
        &["--reward", &reward],
    );
    let mean = |r: &serde_json::Value| r["summary"]["mean_return"].as_f64().expect("mean");
    assert!(
        mean(&report) > mean(&random) + 1.0,
        "{} vs {}",
        mean(&report),
        mean(&random)
    );
}

#[test]
fn bad_config_is_a_one_line_error() {
    let env = plugin("desktop").display().to_string();
    let agent = plugin("desktop_solver").display().to_string();
    let dir = tmp();
    let db = dir.path().join("bad.db").display().to_string();
    for (config, says) in [
        ("task=nope", "unknown task `nope`"),
        ("task=workflow,width=100", "needs width and height"),
        ("colour=red", "unknown config key `colour`"),
    ] {
        let r = ludus([
            "run",
            "--env",
            &env,
            "--agent",
            &agent,
            "--db",
            &db,
            "--env-config",
            config,
        ]);
        let err = r.fails_with(2);
        assert!(err.contains(says), "{config}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        let r = ludus([
            "bench-env",
            "--env",
            &env,
            "--env-config",
            config,
            "--seconds",
            "0.1",
        ]);
        assert!(r.fails_with(2).contains(says));
    }
    let r = ludus(["bench-env", "--env", "missing.wasm"]);
    assert!(r.fails_with(2).contains("missing.wasm"));
}

#[test]
fn bench_env_measures_steps_with_screenshots() {
    let env = plugin("desktop").display().to_string();
    let r = ludus([
        "bench-env",
        "--env",
        &env,
        "--env-config",
        "task=workflow",
        "--seconds",
        "0.3",
        "--json",
    ]);
    let j = r.json();
    assert!(j["steps"].as_u64().expect("steps") > 100, "{j}");
    assert!(j["episodes"].as_u64().expect("episodes") >= 1);
    assert_eq!(j["image_bytes"], 160 * 160 * 3);
    assert!(j["tree_elements"].as_u64().expect("elements") > 10);
    assert!(j["steps_per_sec"].as_f64().expect("rate") > 0.0);
}

/// The screenshots in docs/desktop are what the env renders: the scripted
/// agent's episode of seed 1 of each task, two thirds of the way through.
#[test]
fn docs_screenshots_match_the_env() {
    let dir = tmp();
    let db = dir.path().join("docs.db");
    let out = root().join("docs/desktop");
    let update = std::env::var_os("LUDUS_UPDATE_SCREENSHOTS").is_some();
    for task in TASKS {
        let report = run(&db, "desktop_solver", &format!("task={task}"), 1, 1, &[]);
        let f = frames(&db, &report, 0);
        let (w, h, px) = screen(&f[f.len() * 2 / 3]);
        let path = out.join(format!("{task}.png"));
        if update {
            std::fs::create_dir_all(&out).expect("docs/desktop");
            let file = std::fs::File::create(&path).expect("create png");
            let mut enc = png::Encoder::new(std::io::BufWriter::new(file), w, h);
            enc.set_color(png::ColorType::Rgb);
            enc.set_depth(png::BitDepth::Eight);
            enc.write_header()
                .expect("png header")
                .write_image_data(&px)
                .expect("png data");
            continue;
        }
        let file = std::fs::File::open(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (run with LUDUS_UPDATE_SCREENSHOTS=1)",
                path.display()
            )
        });
        let mut reader = png::Decoder::new(std::io::BufReader::new(file))
            .read_info()
            .expect("png");
        let mut buf = vec![0; reader.output_buffer_size().expect("size")];
        let info = reader.next_frame(&mut buf).expect("png frame");
        assert_eq!((info.width, info.height), (w, h));
        assert_eq!(
            &buf[..info.buffer_size()],
            &px[..],
            "{} is stale: run with LUDUS_UPDATE_SCREENSHOTS=1",
            path.display()
        );
    }
}
