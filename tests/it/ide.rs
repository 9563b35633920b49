//! The IDE: egui_kittest UI tests over real recorded databases (headless,
//! AccessKit queries by label and role), a real window under Xvfb with a
//! screenshot, and the `ludus ide` command's errors.

use crate::support;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;
use ludus::ide::egui::{self, Key, Modifiers};
use ludus::ide::state::{AppState, Command as Cmd, Persisted, Tab};
use ludus::ide::ui::app_ui;
use support::{ludus, plugin, run_json};

/// Records maze episodes with the memory agent (it writes /episode/... every
/// step) and returns the database and the first episode's id.
fn maze_db(dir: &Path) -> (PathBuf, i64, u64) {
    let db = dir.join("maze.db");
    let report = run_json(
        &db,
        "maze",
        "memory_agent",
        &["--episodes", "2", "--seed", "1", "--jobs", "1"],
    );
    let ep = &report["episodes"][0];
    (
        db,
        ep["id"].as_i64().expect("episode id"),
        ep["length"].as_u64().expect("length"),
    )
}

fn harness(state: AppState) -> Harness<'static, AppState> {
    Harness::builder()
        .with_size(egui::vec2(1600.0, 1400.0))
        .with_max_steps(12)
        .build_ui_state(app_ui, state)
}

/// One frame for a click or key to land, then every background job it
/// started reports, then the UI settles.
fn settle(h: &mut Harness<'static, AppState>) {
    h.step();
    h.state_mut().wait_for_workers();
    h.run();
}

fn cursor(h: &Harness<'static, AppState>) -> u64 {
    h.state()
        .debug
        .as_ref()
        .expect("an episode is open")
        .cursor()
}

fn no_errors(h: &Harness<'static, AppState>) {
    let errors = h.state().errors();
    assert!(errors.is_empty(), "unexpected error messages: {errors:?}");
}

#[test]
fn ui_opens_database_steps_breaks_edits_memory_and_forks() {
    let dir = tempfile::tempdir().unwrap();
    let (db, episode, length) = maze_db(dir.path());
    assert!(
        length > 12,
        "the maze episode is too short for this test: {length}"
    );
    let mut h = harness(AppState::new());
    h.run();

    // Open the database by typing its path.
    h.get_by_label("Database").focus();
    h.run();
    h.get_by_label("Database")
        .type_text(&db.display().to_string());
    h.run();
    h.get_by_label("Open database").click_accesskit();
    settle(&mut h);
    no_errors(&h);
    assert_eq!(h.state().runs.list.len(), 1);
    assert_eq!(h.state().runs.episodes.len(), 2);

    // Open the first episode in the debugger.
    h.get_by_label(&format!("Open episode {episode}"))
        .click_accesskit();
    settle(&mut h);
    no_errors(&h);
    assert_eq!(h.state().tab, Tab::Debugger);
    assert_eq!(cursor(&h), 0);
    let rewards = h
        .state()
        .debug
        .as_ref()
        .unwrap()
        .rewards
        .as_ref()
        .map(Vec::len);
    assert_eq!(
        rewards,
        Some(length as usize),
        "the timeline has every frame's reward"
    );

    // Keyboard stepping.
    for _ in 0..3 {
        h.key_press(Key::F10);
        h.run();
    }
    assert_eq!(cursor(&h), 3);
    h.key_press_modifiers(Modifiers::SHIFT, Key::F10);
    h.run();
    assert_eq!(cursor(&h), 2);
    h.get_by_label(&format!("frame 2 of {length}"));
    // Home and End go to the text field while it has the focus; Escape leaves it.
    h.key_press(Key::Escape);
    h.run();
    h.key_press(Key::End);
    h.run();
    assert_eq!(cursor(&h), length - 1);
    h.key_press(Key::Home);
    h.run();
    assert_eq!(cursor(&h), 0);

    // Scrub: a click in the middle of the timeline moves there.
    let timeline = h.get_by_label_contains("Timeline").rect();
    h.get_by_label_contains("Timeline").click();
    h.run();
    let mid = cursor(&h);
    assert!(
        mid.abs_diff(length / 2) <= 1 + length / 50,
        "clicked the middle of a {length}-frame timeline at {timeline:?}, got frame {mid}"
    );
    h.key_press(Key::Home);
    h.run();

    // A bad expression shows its error inline, with a caret.
    h.get_by_label("Breakpoint").focus();
    h.run();
    h.get_by_label("Breakpoint").type_text("step ==");
    h.run();
    h.get_by_label("Add breakpoint").click_accesskit();
    settle(&mut h);
    h.get_by_label_contains("column ");
    assert!(
        h.state()
            .debug
            .as_ref()
            .unwrap()
            .session
            .breakpoints()
            .is_empty(),
        "a bad expression adds no breakpoint"
    );

    // A good one; F5 continues to its hit, Shift+F5 finds nothing before.
    h.get_by_label("Breakpoint").focus();
    h.run();
    // Replace the text: select all, then type.
    h.key_press_modifiers(Modifiers::COMMAND, Key::A);
    h.run();
    h.get_by_label("Breakpoint").type_text("step == 7");
    h.run();
    h.get_by_label("Add breakpoint").click_accesskit();
    settle(&mut h);
    no_errors(&h);
    let d = h.state().debug.as_ref().unwrap();
    assert_eq!(d.session.breakpoints().len(), 1, "{:?}", d.breakpoint_error);
    assert_eq!(d.hits.get("step == 7"), Some(&vec![7]));
    h.key_press(Key::F5);
    h.run();
    assert_eq!(cursor(&h), 7);
    h.get_by_label("breakpoint 1 hit at frame 7");
    h.key_press_modifiers(Modifiers::SHIFT, Key::F5);
    h.run();
    assert_eq!(cursor(&h), 7);
    h.get_by_label("no breakpoint holds before this frame");

    // Edit a memory value in the tree, then fork from this frame.
    let path = "/episode/visited";
    let before = h
        .state()
        .debug
        .as_ref()
        .unwrap()
        .view
        .as_ref()
        .unwrap()
        .memory
        .get(path)
        .cloned();
    assert!(before.is_some(), "the memory agent wrote {path} by frame 7");
    h.get_by_label(&format!("edit {path}")).click_accesskit();
    h.run();
    let value_label = format!("value of {path}");
    h.get_by_label(&value_label).focus();
    h.run();
    h.key_press_modifiers(Modifiers::COMMAND, Key::A);
    h.run();
    h.get_by_label(&format!("value of {path}")).type_text("999");
    h.run();
    h.get_by_label("Set").click_accesskit();
    h.run();
    h.get_by_label(&format!("set {path} = 999"));
    h.get_by_label("Fork here").click_accesskit();
    settle(&mut h);
    no_errors(&h);
    let d = h.state().debug.as_ref().unwrap();
    assert_eq!(d.branches.len(), 1, "one branch of episode {episode}");
    let branch = d.branches[0].0.clone();
    assert_eq!(branch.parent_episode, Some(episode));
    assert_eq!(branch.parent_frame, Some(7));
    assert!(
        branch.edits.as_deref().unwrap_or("").contains("999"),
        "the branch records the edit: {:?}",
        branch.edits
    );
    assert!(
        d.edits.is_empty(),
        "staged edits are cleared after the fork"
    );

    // Open the new branch from the branch tree.
    h.get_by_label(&format!("Open episode {}", branch.id))
        .click_accesskit();
    settle(&mut h);
    no_errors(&h);
    let d = h.state().debug.as_ref().unwrap();
    assert_eq!(d.episode.id, branch.id);
    assert_eq!(d.ancestors.len(), 1);
    assert_eq!(d.ancestors[0].id, episode);
    // Breakpoints carry over to the next episode.
    assert_eq!(d.session.breakpoints().len(), 1);
    h.get_by_label_contains("forked at frame 7");
    h.get_by_label(&format!(
        "Open episode {episode} ({}, return {:.3})",
        d.ancestors[0].outcome, d.ancestors[0].return_
    ));
    // And the parent diff finds where the branch went its own way.
    h.get_by_label(&format!("Compare with episode {episode}"))
        .click_accesskit();
    settle(&mut h);
    no_errors(&h);
    let pd = h.state().debug.as_ref().unwrap().parent_diff.clone();
    let (lines, _) = pd.expect("a diff against the parent");
    assert!(
        lines[0].contains(&format!("episode {episode}")),
        "{lines:?}"
    );
}

#[test]
fn ui_shows_errors_as_messages_and_keeps_working() {
    let dir = tempfile::tempdir().unwrap();
    let (db, episode, _) = maze_db(dir.path());
    let mut h = harness(AppState::new());
    h.run();
    // A missing file, then a file that is not a database.
    h.state_mut().apply(Cmd::OpenDb(dir.path().join("nope.db")));
    h.run();
    h.get_by_label_contains("error: database");
    let junk = dir.path().join("junk.db");
    std::fs::write(
        &junk,
        b"this is not SQLite, not at all, not even close........",
    )
    .unwrap();
    h.state_mut().apply(Cmd::OpenDb(junk));
    settle(&mut h);
    assert_eq!(h.state().errors().len(), 2, "{:?}", h.state().errors());
    assert!(h.state().db_path.is_none(), "nothing opened");
    // Dismiss one message.
    h.get_by_label("dismiss message 1").click_accesskit();
    h.run();
    assert_eq!(h.state().errors().len(), 1);
    // The app still opens a good database and an episode.
    h.state_mut().apply(Cmd::OpenDb(db));
    h.state_mut().apply(Cmd::OpenEpisode(episode));
    settle(&mut h);
    assert_eq!(h.state().tab, Tab::Debugger);
    // An episode that does not exist, and a bad replacement action.
    h.state_mut().apply(Cmd::OpenEpisode(987_654));
    settle(&mut h);
    h.get_by_label_contains("987654");
    h.get_by_label("Replacement action").focus();
    h.run();
    h.get_by_label("Replacement action").type_text("warp:9");
    h.run();
    h.get_by_label("Fork here").click_accesskit();
    settle(&mut h);
    h.get_by_label_contains("replacement action `warp:9`");
    assert!(h.state().debug.as_ref().unwrap().branches.is_empty());
    // Still the same episode, still stepping.
    h.key_press(Key::F10);
    h.run();
    assert_eq!(cursor(&h), 1);
}

#[test]
fn layout_database_and_breakpoints_persist() {
    let dir = tempfile::tempdir().unwrap();
    let (db, episode, _) = maze_db(dir.path());
    let mut state = AppState::new();
    state.apply(Cmd::OpenDb(db.clone()));
    state.apply(Cmd::OpenEpisode(episode));
    state.wait_for_workers();
    let d = state.debug.as_mut().unwrap();
    d.breakpoint_input = "reward < 0".into();
    state.apply(Cmd::AddBreakpoint);
    let d = state.debug.as_mut().unwrap();
    d.watch_input = "memory[\"/episode/visited\"]".into();
    state.apply(Cmd::AddWatch);
    state.show_diff = false;
    state.wait_for_workers();
    assert!(state.errors().is_empty(), "{:?}", state.errors());
    let saved = serde_json::to_string(&state.persisted()).unwrap();

    let mut again = AppState::new();
    again.restore(serde_json::from_str::<Persisted>(&saved).unwrap());
    // The database is read off the UI thread.
    again.wait_for_workers();
    assert_eq!(again.db_path.as_deref(), Some(db.as_path()));
    assert_eq!(again.runs.list.len(), 1);
    assert!(!again.show_diff);
    again.apply(Cmd::OpenEpisode(episode));
    again.wait_for_workers();
    let d = again.debug.as_ref().unwrap();
    let bps: Vec<&str> = d
        .session
        .breakpoints()
        .iter()
        .map(|b| b.expr.source())
        .collect();
    assert_eq!(bps, ["reward < 0"]);
    assert_eq!(d.watch_values.len(), 1);
    assert!(again.errors().is_empty(), "{:?}", again.errors());
}

#[test]
fn ide_command_rejects_bad_input_with_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.db");
    let err = ludus(["ide".as_ref(), missing.as_os_str()]).fails_with(2);
    assert!(
        err.contains("missing.db") && err.contains("ludus run"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let (db, episode, _) = maze_db(dir.path());
    let err = ludus(["ide", &db.display().to_string(), "--bench-scrub", "424242"]).fails_with(2);
    assert!(err.contains("424242"), "{err}");
    // The benchmark itself, briefly.
    let out = ludus([
        "ide",
        &db.display().to_string(),
        "--bench-scrub",
        &episode.to_string(),
        "--bench-frames",
        "20",
        "--json",
    ])
    .json();
    let passes = out["passes"].as_array().expect("passes");
    assert_eq!(passes.len(), 3);
    for p in passes {
        assert_eq!(p["frames"], 20);
        assert!(p["mean_ms"].as_f64().unwrap() > 0.0);
    }
    // No display: a clear message, exit 2.
    let out = support::command()
        .args(["ide", &db.display().to_string()])
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no display"), "{err}");
}

/// Starts Xvfb on a free display (it writes the number to a pipe when ready).
struct Xvfb {
    child: std::process::Child,
    display: String,
}

impl Xvfb {
    fn start() -> Xvfb {
        let mut child = Command::new("Xvfb")
            .args(["-displayfd", "1", "-screen", "0", "1280x800x24", "-nolisten", "tcp"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start Xvfb ({e}): run scripts/setup.sh to install xvfb and a software Vulkan driver")
            });
        let mut out = child.stdout.take().unwrap();
        let mut number = String::new();
        let mut byte = [0u8; 1];
        while out.read(&mut byte).unwrap_or(0) == 1 && byte[0] != b'\n' {
            number.push(byte[0] as char);
        }
        assert!(
            !number.trim().is_empty(),
            "Xvfb did not report a display number"
        );
        Xvfb {
            child,
            display: format!(":{}", number.trim()),
        }
    }
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn real_window_under_xvfb_renders_a_screenshot() {
    let dir = tempfile::tempdir().unwrap();
    let (db, episode, _) = maze_db(dir.path());
    let shot = window_screenshot(&db.display().to_string(), episode, dir.path(), "screenshot");
    let bytes = std::fs::read(&shot).expect("the screenshot file");
    let (w, h, pixels) = parse_ppm(&bytes);
    assert!(w >= 640 && h >= 400, "window size {w}x{h}");
    let mut colors = std::collections::BTreeSet::new();
    for p in pixels.chunks(3) {
        colors.insert((p[0], p[1], p[2]));
        if colors.len() > 64 {
            break;
        }
    }
    assert!(
        colors.len() > 8,
        "the screenshot is blank: {} distinct colours",
        colors.len()
    );
    println!("IDE screenshot: {}", shot.display());
}

/// `ludus ide DB --episode ID --screenshot` in a real window under Xvfb,
/// with `dir` as its data and cache folders; the screenshot's path.
fn window_screenshot(db: &str, episode: i64, dir: &Path, name: &str) -> PathBuf {
    let x = Xvfb::start();
    let shot_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ide-window");
    std::fs::create_dir_all(&shot_dir).unwrap();
    let shot = shot_dir.join(format!("{name}.ppm"));
    let _ = std::fs::remove_file(&shot);
    let mut child = support::command()
        .args([
            "ide".to_string(),
            db.to_string(),
            "--episode".into(),
            episode.to_string(),
            "--screenshot".into(),
            shot.display().to_string(),
        ])
        .env("DISPLAY", &x.display)
        .env_remove("WAYLAND_DISPLAY")
        .env("XDG_DATA_HOME", dir)
        .env("XDG_CACHE_HOME", dir)
        .env("XDG_RUNTIME_DIR", dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A watchdog, so that a hung window fails the test instead of hanging it.
    let pid = child.id();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if done_rx
            .recv_timeout(std::time::Duration::from_secs(180))
            .is_err()
        {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
    });
    let mut stdout = String::new();
    let mut stderr = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    let _ = done_tx.send(());
    watchdog.join().unwrap();
    assert!(
        status.success(),
        "ludus ide --screenshot failed ({status}):\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("screenshot: "), "{stdout}");
    shot
}

/// The IDE reads a PostgreSQL database as it reads SQLite: `ludus ide URL
/// --episode ID` opens a local copy of it (saying where) and draws the same
/// window, pixel for pixel, but for the lines that name the database.
#[test]
fn a_postgres_database_draws_the_same_window_as_its_sqlite_file() {
    let dir = tempfile::tempdir().unwrap();
    let (db, episode, _) = maze_db(dir.path());
    let url = crate::scale::database("ide");
    let copied = ludus(["copy", &db.display().to_string(), &url]);
    assert_eq!(copied.code(), 0, "{}", copied.stderr());
    let sqlite = window_screenshot(&db.display().to_string(), episode, dir.path(), "sqlite");
    let postgres = window_screenshot(&url, episode, dir.path(), "postgres");
    let mirrors = dir.path().join("ludus/mirrors");
    let kept = std::fs::read_dir(&mirrors).map_or(0, |d| {
        d.flatten()
            .filter(|f| f.path().extension().is_some_and(|x| x == "db"))
            .count()
    });
    assert_eq!(kept, 1, "one local copy in {}", mirrors.display());
    let (a, b) = (
        std::fs::read(&sqlite).unwrap(),
        std::fs::read(&postgres).unwrap(),
    );
    let ((w, h, a), (w2, h2, b)) = (parse_ppm(&a), parse_ppm(&b));
    assert_eq!((w, h), (w2, h2));
    // Pixels that differ: the top bar (the Database box) and the status
    // line name the database; between them, at most the side panel's edge
    // (a line two pixels wide, drawn in another shade) may differ.
    let differs = |x: usize, y: usize| {
        let i = (y * w + x) * 3;
        a[i..i + 3] != b[i..i + 3]
    };
    let columns: std::collections::BTreeSet<usize> = (40..h - 40)
        .flat_map(|y| (0..w).filter(move |x| differs(*x, y)))
        .collect();
    let span = columns
        .last()
        .zip(columns.first())
        .map_or(0, |(l, f)| l - f + 1);
    assert!(
        span <= 3,
        "the windows differ between the bars in columns {:?}...; screenshots: {} {}",
        columns.iter().take(10).collect::<Vec<_>>(),
        sqlite.display(),
        postgres.display()
    );
    assert!(
        (h - 40..h).any(|y| (0..w).any(|x| differs(x, y))),
        "the status line names the PostgreSQL database"
    );
}

fn parse_ppm(bytes: &[u8]) -> (usize, usize, &[u8]) {
    let mut fields = Vec::new();
    let mut i = 0;
    while fields.len() < 4 {
        while bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let start = i;
        while !bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        fields.push(String::from_utf8_lossy(&bytes[start..i]).into_owned());
    }
    assert_eq!(fields[0], "P6");
    let w: usize = fields[1].parse().unwrap();
    let h: usize = fields[2].parse().unwrap();
    let data = &bytes[i + 1..];
    assert_eq!(data.len(), w * h * 3, "PPM size");
    (w, h, data)
}

#[test]
fn ticker_rich_frames_render_images_text_trees_and_vectors() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ticker.db");
    let report = ludus([
        "run",
        "--env",
        &plugin("ticker").display().to_string(),
        "--env-config",
        "steps=300,rich=1",
        "--agent",
        &plugin("random_agent").display().to_string(),
        "--episodes",
        "1",
        "--db",
        &db.display().to_string(),
        "--json",
    ])
    .json();
    let episode = report["episodes"][0]["id"].as_i64().unwrap();
    let mut state = AppState::new();
    state.apply(Cmd::OpenDb(db));
    state.apply(Cmd::OpenEpisode(episode));
    state.wait_for_workers();
    let mut h = harness(state);
    h.run();
    h.key_press(Key::F10);
    h.run();
    h.get_by_label("observation `screen`");
    h.get_by_label("8x8x1");
    assert!(
        h.query_all_by_label_contains("tick 1\nphase 1")
            .next()
            .is_some()
    );
    h.get_by_label_contains("#1 counter \"node1\" = \"1\"");
    assert!(h.query_all_by_label("1.0000").next().is_some());
    assert_eq!(ludus::ide::ui::textures_kept(&h.ctx), 2);
    no_errors(&h);
}

#[test]
fn rebuilt_plugin_is_noticed_and_the_episode_reruns_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let env = dir.path().join("cartpole.wasm");
    let agent = dir.path().join("agent.wasm");
    std::fs::copy(plugin("cartpole"), &env).unwrap();
    std::fs::copy(plugin("random_agent"), &agent).unwrap();
    let db = dir.path().join("hot.db");
    let report = ludus([
        "run",
        "--env",
        &env.display().to_string(),
        "--agent",
        &agent.display().to_string(),
        "--episodes",
        "1",
        "--seed",
        "3",
        "--db",
        &db.display().to_string(),
        "--json",
    ])
    .json();
    let episode = report["episodes"][0]["id"].as_i64().unwrap();
    let mut state = AppState::new();
    state.apply(Cmd::OpenDb(db));
    state.apply(Cmd::OpenEpisode(episode));
    state.wait_for_workers();
    // "Rebuild" the agent: another build lands on the same path.
    std::fs::write(
        &agent,
        std::fs::read(plugin("mirrored_random_agent")).unwrap(),
    )
    .unwrap();
    assert!(
        state.wait_for_plugin_change(std::time::Duration::from_secs(30)),
        "no change reported for {}",
        agent.display()
    );
    assert_eq!(state.workspace.changed_plugins, vec![agent.clone()]);
    let mut h = harness(state);
    h.run();
    h.get_by_label("Re-run with the new build")
        .click_accesskit();
    settle(&mut h);
    no_errors(&h);
    let d = h.state().debug.as_ref().unwrap();
    assert_eq!(d.branches.len(), 1, "the re-run is recorded as a branch");
    assert_eq!(d.branches[0].0.parent_episode, Some(episode));
}

/// Replaces the text of the field labelled `label` by `text`, as a user
/// would: focus, select all, type.
fn set_text(h: &mut Harness<'static, AppState>, label: &str, text: &str) {
    h.get_by_label(label).focus();
    h.run();
    h.key_press_modifiers(Modifiers::COMMAND, Key::A);
    h.run();
    h.key_press(Key::Backspace);
    h.run();
    if !text.is_empty() {
        h.get_by_label(label).type_text(text);
        h.run();
    }
    assert_eq!(h.get_by_label(label).value().unwrap_or_default(), text);
}

#[test]
fn arena_tab_runs_shows_progress_and_cancels_keeping_recorded_episodes() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("arena.db");
    let mut h = harness(AppState::new());
    h.run();
    h.get_by_label("Arena").click_accesskit();
    h.run();
    // The ticker never ends by itself: 100 million steps per episode, so the
    // run is still going when it is cancelled.
    set_text(
        &mut h,
        "Environment (.wasm)",
        &plugin("ticker").display().to_string(),
    );
    set_text(&mut h, "Environment config", "steps=100000000");
    set_text(
        &mut h,
        "Agent (.wasm)",
        &plugin("random_agent").display().to_string(),
    );
    set_text(
        &mut h,
        "Run database (empty: the open one)",
        &db.display().to_string(),
    );
    h.state_mut().arena.form.episodes = 3;
    h.state_mut().arena.form.jobs = 1;
    h.run();
    h.get_by_label("Start run").click_accesskit();
    h.step();
    no_errors(&h);
    assert!(h.state().arena.job.is_some(), "the run started");
    // Progress: the run reports steps while it goes.
    let advanced =
        h.state_mut()
            .wait_until(std::time::Duration::from_secs(60), |s| {
                s.arena.job.as_ref().is_some_and(|j| {
                    j.progress.steps.load(std::sync::atomic::Ordering::Relaxed) > 2000
                })
            });
    assert!(
        advanced,
        "the run made no progress: {:?}",
        h.state().errors()
    );
    h.step();
    h.get_by_label_contains("running: 0/3 episodes");
    assert_eq!(
        h.query_all_by_label_contains("0/3 episodes, ").count(),
        2,
        "the status bar and the progress bar both show the run's progress"
    );
    // Cancel it.
    h.get_by_label("Cancel run").click_accesskit();
    h.step();
    h.state_mut().wait_for_workers();
    h.run();
    no_errors(&h);
    assert!(h.state().arena.job.is_none(), "the run ended");
    h.get_by_label_contains("cancelled: 3 episodes recorded, 3 of them interrupted");
    // Every episode is recorded; the one that ran keeps its frames, readable.
    assert_eq!(h.state().db_path.as_deref(), Some(db.as_path()));
    assert_eq!(h.state().tab, Tab::Runs);
    let episodes = h.state().runs.episodes.clone();
    assert_eq!(episodes.len(), 3);
    assert!(
        episodes.iter().all(|e| e.outcome == "interrupted"),
        "{episodes:?}"
    );
    let first = episodes.iter().max_by_key(|e| e.length).unwrap().clone();
    assert!(first.length > 2000, "{first:?}");
    assert!(
        first.digest.is_some(),
        "an interrupted episode is sealed with a digest"
    );
    h.get_by_label(&format!("Open episode {}", first.id))
        .click_accesskit();
    settle(&mut h);
    no_errors(&h);
    assert_eq!(
        h.state().debug.as_ref().unwrap().session.len(),
        first.length
    );
    h.key_press(Key::End);
    h.run();
    assert_eq!(cursor(&h), first.length - 1);
    let last = first.length - 1;
    h.get_by_label(&format!("Frame {last} (step {last})"));
    no_errors(&h);
}

/// A small PPO CartPole config (the shipped one with few epochs and an
/// update budget it never reaches, so it runs until stopped).
fn tiny_ppo_config(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(support::root().join("configs/ppo-cartpole.toml"))
        .expect("configs/ppo-cartpole.toml");
    let text = text
        .replace(
            "plugin = \"../plugins/target/wasm32-wasip2/release/cartpole.wasm\"",
            &format!("plugin = {:?}", plugin("cartpole").display().to_string()),
        )
        .replace("updates = 600", "updates = 100000")
        .replace("epochs = 20", "epochs = 2")
        .replace("name = \"ppo-cartpole\"", "name = \"tiny-ppo\"");
    assert!(
        text.contains("updates = 100000") && text.contains("tiny-ppo"),
        "{text}"
    );
    let path = dir.join("tiny-ppo.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The IDE with training started from `config` into `db` in its Training
/// tab.
fn start_training(config: &Path, db: &Path) -> Harness<'static, AppState> {
    let mut h = harness(AppState::new());
    h.run();
    h.get_by_label("Training").click_accesskit();
    h.run();
    set_text(
        &mut h,
        "Training config (.toml)",
        &config.display().to_string(),
    );
    set_text(&mut h, "Training database", &db.display().to_string());
    h.get_by_label("Start training").click_accesskit();
    h.step();
    no_errors(&h);
    h
}

/// Clicks Stop, waits for the run to end after its update and checks that
/// it says so; the last update.
fn stop_training(h: &mut Harness<'static, AppState>) -> u64 {
    h.get_by_label("Stop training").click_accesskit();
    h.step();
    h.state_mut().wait_for_workers();
    h.run();
    no_errors(h);
    let t = h
        .state()
        .training
        .view
        .as_ref()
        .expect("the training view stays");
    assert!(!t.running());
    assert!(t.status.starts_with("stopped after "), "{}", t.status);
    let last = t.last.as_ref().expect("updates were reported").update;
    assert!((3..100_000).contains(&last), "{last}");
    last
}

/// Waits (two minutes at most) until the training panel's `metric` has
/// three points.
fn wait_for_points(h: &mut Harness<'static, AppState>, metric: &str) {
    let grew = h
        .state_mut()
        .wait_until(std::time::Duration::from_secs(120), |s| {
            s.training
                .view
                .as_ref()
                .is_some_and(|t| t.points(metric) >= 3)
                || !s.errors().is_empty()
        });
    no_errors(h);
    assert!(grew, "no {metric} points after two minutes");
    h.step();
}

#[test]
fn training_panel_plots_live_curves_stops_and_opens_an_episode() {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny_ppo_config(dir.path());
    let db = dir.path().join("train.db");
    let mut h = start_training(&config, &db);
    assert!(
        h.state()
            .training
            .view
            .as_ref()
            .is_some_and(|t| t.running())
    );
    // Curve points appear as updates come in.
    wait_for_points(&mut h, "policy_loss");
    h.get_by_label_contains("policy_loss: ");
    h.get_by_label_contains("entropy: ");
    h.get_by_label_contains("env_steps_per_s: ");
    assert!(
        h.query_all_by_label_contains(" points, last ").count() >= 5,
        "every plotted metric says how many points it has"
    );
    h.get_by_label_contains("training `tiny-ppo`: update ");
    // Stop it.
    let last = stop_training(&mut h);
    let t = h.state().training.view.as_ref().expect("the training view");
    assert_eq!(
        t.points("policy_loss") as u64,
        last,
        "one point per update, none lost"
    );
    let status = t.status.clone();
    h.get_by_label(&status);
    h.get_by_label(&format!("training `tiny-ppo`: {status}"));
    // The run is recorded as stopped, with a checkpoint to resume from.
    let store = ludus_arena::Db::open(&db).unwrap();
    let runs = store.runs().unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].status, "stopped");
    assert_eq!(
        store
            .train_metrics("tiny-ppo")
            .unwrap()
            .iter()
            .filter(|m| m.name == "policy_loss")
            .count() as u64,
        last
    );
    assert!(
        dir.path()
            .join("train-tiny-ppo-checkpoints/latest.safetensors")
            .is_file()
    );
    // Its sampled episodes, opened in the debugger.
    let t = h.state().training.view.as_ref().unwrap();
    // The newest first, as the list shows them.
    let ep = t
        .episodes
        .iter()
        .rev()
        .find(|e| e.outcome == "terminated" && e.length > 2)
        .expect("a finished sampled episode")
        .clone();
    h.get_by_label(&format!("Open episode {} in the debugger", ep.id))
        .click_accesskit();
    settle(&mut h);
    no_errors(&h);
    assert_eq!(h.state().tab, Tab::Debugger);
    let d = h.state().debug.as_ref().unwrap();
    assert_eq!(d.episode.id, ep.id);
    assert_eq!(d.session.len(), ep.length);
    assert_eq!(h.state().db_path.as_deref(), Some(db.as_path()));
    h.key_press(Key::F10);
    h.run();
    assert_eq!(cursor(&h), 1);
    // Recorded curves read back from the database, from the Runs tab.
    h.state_mut().apply(Cmd::SetTab(Tab::Runs));
    h.run();
    h.get_by_label("Show training curves").click_accesskit();
    settle(&mut h);
    no_errors(&h);
    assert_eq!(h.state().tab, Tab::Training);
    let t = h.state().training.view.as_ref().unwrap();
    assert_eq!(t.points("policy_loss") as u64, last);
    assert!(t.status.contains("stopped"), "{}", t.status);
}

#[test]
fn diff_against_an_episode_of_another_database_jumps_to_the_first_divergence() {
    let dir = tempfile::tempdir().unwrap();
    let (db, episode, _) = maze_db(dir.path());
    // A second database: a copy, where the episode is forked at frame 7
    // with another action.
    let other = dir.path().join("other.db");
    std::fs::copy(&db, &other).unwrap();
    let mut s = AppState::new();
    s.apply(Cmd::OpenDb(other.clone()));
    s.apply(Cmd::OpenEpisode(episode));
    s.wait_for_workers();
    s.apply(Cmd::Step(ludus::ide::state::Step::Goto(7)));
    let d = s.debug.as_mut().unwrap();
    let ludus_arena::model::Action::Discrete(a) = d.view.as_ref().unwrap().frame.action else {
        panic!("the maze takes discrete actions");
    };
    d.action_input = format!("discrete:{}", (a + 1) % 4);
    s.apply(Cmd::Fork);
    s.wait_for_workers();
    assert!(s.errors().is_empty(), "{:?}", s.errors());
    let branch = s.debug.as_ref().unwrap().branches[0].0.id;
    drop(s);
    // What the debugger library finds, for the UI to agree with.
    let expected = {
        use ludus_debugger::source::Recording;
        let a = Recording::open(&db, episode).unwrap();
        let b = Recording::open(&other, branch).unwrap();
        ludus_debugger::diff::diff_episodes(&a, &b).unwrap()
    };
    let first = expected
        .first_divergence
        .as_ref()
        .expect("the branch diverges")
        .frame;
    assert!(first >= 7, "frames before the fork are replayed: {first}");

    let mut state = AppState::new();
    state.apply(Cmd::OpenDb(db.clone()));
    state.apply(Cmd::OpenEpisode(episode));
    state.wait_for_workers();
    let mut h = harness(state);
    h.run();
    // Against the branch in the other database.
    set_text(&mut h, "Compare with episode", &branch.to_string());
    set_text(
        &mut h,
        "of database (empty: this one)",
        &other.display().to_string(),
    );
    h.get_by_label("Compare").click_accesskit();
    settle(&mut h);
    no_errors(&h);
    h.get_by_label_contains(&format!("first divergence at frame {first}:"));
    let jump = format!(
        "Jump to first divergence with episode {branch} of {} (frame {first})",
        other.display()
    );
    h.get_by_label(&jump).click_accesskit();
    h.run();
    assert_eq!(cursor(&h), first);
    // Against another episode of the same database (another seed).
    let second = h
        .state()
        .runs
        .episodes
        .iter()
        .find(|e| e.id != episode)
        .unwrap()
        .id;
    set_text(&mut h, "Compare with episode", &second.to_string());
    set_text(&mut h, "of database (empty: this one)", "");
    h.get_by_label("Compare").click_accesskit();
    settle(&mut h);
    no_errors(&h);
    let o = h
        .state()
        .debug
        .as_ref()
        .unwrap()
        .other_diff
        .clone()
        .unwrap();
    assert_eq!(o.other, format!("episode {second}"));
    assert!(
        o.lines[0].starts_with(&format!("episode {episode} (")),
        "{:?}",
        o.lines
    );
    // A bad id is a message, not a crash.
    set_text(&mut h, "Compare with episode", "twelve");
    h.get_by_label("Compare").click_accesskit();
    h.run();
    h.get_by_label_contains("`twelve`: not an episode id");
}

#[test]
fn workspace_lists_plugin_crates_and_wasm_files() {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path();
    // A plugin crate of the user's, outside the plugins workspace.
    std::fs::create_dir_all(ws.join("my-env/src")).unwrap();
    std::fs::write(
        ws.join("my-env/Cargo.toml"),
        format!(
            "[package]\nname = \"my-env\"\nversion = \"0.1.0\"\nedition = \"2024\"\ndescription = \"A grid my team made.\"\n\n[lib]\ncrate-type = [\"cdylib\"]\n\n[dependencies]\nludus-sdk = {{ path = {:?}, features = [\"env\"] }}\n",
            support::root().join("plugins/sdk").display().to_string()
        ),
    )
    .unwrap();
    // A crate that is not a plugin, and a built plugin file.
    std::fs::create_dir_all(ws.join("tool")).unwrap();
    std::fs::write(
        ws.join("tool/Cargo.toml"),
        "[package]\nname = \"tool\"\nversion = \"0.1.0\"\n\n[dependencies]\nserde = \"1\"\n",
    )
    .unwrap();
    std::fs::copy(plugin("random_agent"), ws.join("agent.wasm")).unwrap();
    // Where `ludus build` puts a Python or JS project's component.
    std::fs::create_dir_all(ws.join("py-agent/build")).unwrap();
    std::fs::copy(
        plugin("random_agent"),
        ws.join("py-agent/build/py_agent.wasm"),
    )
    .unwrap();
    let mut h = harness(AppState::new());
    h.run();
    h.get_by_label("Workspace").click_accesskit();
    h.run();
    set_text(&mut h, "Folder", &ws.display().to_string());
    h.get_by_label("Scan folder").click_accesskit();
    settle(&mut h);
    no_errors(&h);
    h.get_by_label("crate my-env");
    h.get_by_label("A grid my team made.");
    h.get_by_label("not built (bash scripts/build-plugins.sh)");
    assert!(h.query_all_by_label("crate tool").next().is_none());
    let crates = h.state().workspace.crates.clone();
    assert_eq!(crates.len(), 1, "{crates:?}");
    assert_eq!(crates[0].kind, "env");
    assert_eq!(crates[0].contract, "ludus:plugin@0.1.3");
    let plugins = h.state().workspace.plugins.clone();
    assert_eq!(plugins.len(), 2, "{plugins:?}");
    assert!(plugins.iter().all(|p| p.kind == "agent"), "{plugins:?}");

    // The examples: workspace-inherited SDK dependency, built plugins.
    set_text(
        &mut h,
        "Folder",
        &support::root()
            .join("plugins/examples")
            .display()
            .to_string(),
    );
    h.get_by_label("Scan folder").click_accesskit();
    settle(&mut h);
    no_errors(&h);
    let crates = h.state().workspace.crates.clone();
    let cartpole = crates
        .iter()
        .find(|c| c.name == "cartpole")
        .expect("cartpole");
    assert_eq!(cartpole.kind, "env");
    assert_eq!(cartpole.contract, "ludus:plugin@0.1.3");
    assert!(cartpole.description.starts_with("CartPole"), "{cartpole:?}");
    assert_eq!(cartpole.wasm.as_deref(), Some(plugin("cartpole").as_path()));
    assert!(
        crates
            .iter()
            .any(|c| c.name == "random-agent" && c.kind == "agent")
    );
    assert!(
        !crates.iter().any(|c| c.name == "maze-kit"),
        "a library is not a plugin"
    );
    h.get_by_label("Use cartpole as environment")
        .click_accesskit();
    h.run();
    assert_eq!(
        h.state().arena.form.env,
        plugin("cartpole").display().to_string()
    );
}

#[test]
fn closing_the_ide_stops_training_and_the_run_resumes_from_its_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny_ppo_config(dir.path());
    let db = dir.path().join("train.db");
    let mut state = AppState::new();
    state.training.form.config = config.display().to_string();
    state.training.form.db = db.display().to_string();
    state.apply(Cmd::StartTraining);
    let two = |s: &AppState| {
        s.training
            .view
            .as_ref()
            .is_some_and(|t| t.points("policy_loss") >= 2)
    };
    assert!(state.wait_until(std::time::Duration::from_secs(120), two));
    // What the window's close does.
    assert!(state.shutdown(std::time::Duration::from_secs(120)));
    assert!(state.errors().is_empty(), "{:?}", state.errors());
    let stopped_at = state
        .training
        .view
        .as_ref()
        .unwrap()
        .last
        .as_ref()
        .unwrap()
        .update;
    let store = ludus_arena::Db::open(&db).unwrap();
    assert_eq!(store.runs().unwrap()[0].status, "stopped");
    drop(store);
    // Starting it again without resuming is refused with a message; with
    // Resume ticked it continues after the update where it stopped.
    state.apply(Cmd::StartTraining);
    state.wait_for_workers();
    let errors = state.errors().join("\n");
    assert!(errors.contains("resume"), "{errors}");
    state.training.form.resume = true;
    state.apply(Cmd::StartTraining);
    // The curves so far arrive from the training thread before its first update.
    let history = |s: &AppState| {
        s.training
            .view
            .as_ref()
            .is_some_and(|t| t.points("policy_loss") as u64 >= stopped_at)
    };
    assert!(state.wait_until(std::time::Duration::from_secs(60), history));
    let t = state.training.view.as_ref().unwrap();
    assert_eq!(
        t.points("policy_loss") as u64,
        stopped_at,
        "a resumed run shows the curves recorded so far"
    );
    let more = |s: &AppState| {
        s.training
            .view
            .as_ref()
            .and_then(|t| t.last.as_ref())
            .is_some_and(|r| r.update > stopped_at)
    };
    assert!(state.wait_until(std::time::Duration::from_secs(120), more));
    let first_new =
        state.training.view.as_ref().unwrap().curves["policy_loss"][stopped_at as usize].x;
    assert_eq!(first_new as u64, stopped_at + 1);
    assert!(state.shutdown(std::time::Duration::from_secs(120)));
}

#[test]
fn model_calls_show_as_a_conversation_and_an_edited_answer_forks() {
    use crate::support::models::{Behaviour, FakeServer, completion};
    let dir = tempfile::tempdir().unwrap();
    let server = FakeServer::start(Behaviour::Answer(completion(r#"{"move":"right"}"#, 33, 4)));
    let db = dir.path().join("llm.db");
    let report = run_json(
        &db,
        "maze",
        "llm_maze_agent",
        &[
            "--env-config",
            "size=7,doors=0,max_steps=6",
            "--episodes",
            "1",
            "--model",
            &server.url,
        ],
    );
    let episode = report["episodes"][0]["id"].as_i64().unwrap();
    let mut state = AppState::new();
    state.apply(Cmd::OpenDb(db.clone()));
    state.apply(Cmd::OpenEpisode(episode));
    state.wait_for_workers();
    let mut h = harness(state);
    h.run();
    no_errors(&h);
    for _ in 0..2 {
        h.key_press(Key::F10);
        h.run();
    }
    assert_eq!(cursor(&h), 2);
    // The frame's call as a conversation, with its totals.
    h.get_by_label_contains("model calls: 1 (33 tokens in, 4 out, ");
    h.get_by_label_contains("call 0: agent via `default`");
    h.get_by_label_contains("Grid:");
    h.get_by_label(r#"{"move":"right"}"#);
    // Edit the answer, then fork from this frame.
    h.get_by_label("Edit answer 0 for a fork").click_accesskit();
    h.run();
    h.get_by_label("Answer for the fork").focus();
    h.run();
    h.key_press_modifiers(Modifiers::COMMAND, Key::A);
    h.run();
    h.get_by_label("Answer for the fork")
        .type_text(r#"{"move":"down"}"#);
    h.run();
    h.get_by_label("Keep this answer").click_accesskit();
    h.run();
    h.get_by_label(r#"model call 0 answers {"move":"down"}"#);
    let requests = server.requests().len();
    h.get_by_label("Fork here").click_accesskit();
    settle(&mut h);
    no_errors(&h);
    assert_eq!(
        server.requests().len(),
        requests,
        "the prefix and the edit need no server"
    );
    let d = h.state().debug.as_ref().unwrap();
    assert_eq!(d.branches.len(), 1);
    let branch = d.branches[0].0.id;
    let store = ludus_arena::Db::open_read_only(&db).unwrap();
    let calls = store.model_calls(branch, 2..=2).unwrap();
    assert_eq!(calls[0].1.served, ludus_arena::chat::Served::Edited);
    assert_eq!(
        calls[0].1.result.as_ref().unwrap().content,
        r#"{"move":"down"}"#
    );
}

#[test]
fn a_vlm_call_draws_its_screenshot_inline() {
    use crate::support::models::{Behaviour, FakeServer, completion};
    let dir = tempfile::tempdir().unwrap();
    let server = FakeServer::start(Behaviour::Answer(completion(
        r#"{"action":"click","element":1}"#,
        40,
        6,
    )));
    let db = dir.path().join("vlm.db");
    let report = run_json(
        &db,
        "desktop",
        "llm_desktop_agent",
        &[
            "--env-config",
            "task=click-button,max_steps=2",
            "--agent-config",
            "vision=1",
            "--episodes",
            "1",
            "--model",
            &server.url,
        ],
    );
    let episode = report["episodes"][0]["id"].as_i64().unwrap();
    let mut state = AppState::new();
    state.apply(Cmd::OpenDb(db.clone()));
    state.apply(Cmd::OpenEpisode(episode));
    state.wait_for_workers();
    let mut h = harness(state);
    h.run();
    no_errors(&h);
    h.get_by_label_contains("call 0: agent via `default`");
    h.get_by_label_contains("[observation image screen]");
    // The frame's screenshot and the call's reference to it share one texture.
    assert_eq!(ludus::ide::ui::textures_kept(&h.ctx), 1);
}

/// A sampled training episode of an LLM policy shows each answer's tokens,
/// coloured by the advantage its step was trained with.
#[test]
fn an_llm_training_episode_shows_its_tokens_by_advantage() {
    let dir = tempfile::tempdir().unwrap();
    let (_, config) = crate::policy::word_echo_config(dir.path(), 0.0, "updates = 2");
    let db = dir.path().join("train.db");
    crate::policy::ludus_train(&config, &db, "cpu").json();
    let store = ludus_arena::Db::open_read_only(&db).unwrap();
    let episode = store.episodes("echo").unwrap()[0].id;
    let advantage = store.train_steps(episode).unwrap()[0]
        .stat
        .advantage
        .expect("an advantage");
    let answer = store.model_calls(episode, 0..=0).unwrap()[0]
        .1
        .result
        .clone()
        .expect("an answer");
    let mut state = AppState::new();
    state.apply(Cmd::OpenDb(db.clone()));
    state.apply(Cmd::OpenEpisode(episode));
    state.wait_for_workers();
    let mut h = harness(state);
    h.run();
    no_errors(&h);
    h.get_by_label_contains(&format!(
        "tokens, coloured by the step's advantage {advantage:+.2}"
    ));
    // The legend is drawn only above an answer's tokens.
    assert!(!answer.tokens.is_empty());
}

/// A language model's training in the training panel: the usual curves plus
/// tokens per episode, sampled and trained tokens/s, the KL to the frozen
/// reference and where the time went; Stop ends it after the update in
/// progress, with one point per update.
#[test]
fn training_panel_plots_an_llm_policys_curves_and_stops_it() {
    let dir = tempfile::tempdir().unwrap();
    let (_, config) = crate::policy::word_echo_config(dir.path(), 0.01, "updates = 100000");
    let db = dir.path().join("train.db");
    let mut h = start_training(&config, &db);
    wait_for_points(&mut h, "tokens_per_episode");
    for metric in [
        "success_rate",
        "approx_kl",
        "tokens_per_episode",
        "generation_tokens_per_s",
        "trained_tokens_per_s",
        "kl_reference",
        "sampling_share",
        "learner_share",
    ] {
        h.get_by_label_contains(&format!("{metric}: "));
    }
    let last = stop_training(&mut h);
    let t = h.state().training.view.as_ref().expect("the training view");
    assert_eq!(t.points("tokens_per_episode") as u64, last);
}
