//! `ludus debug`, `ludus diff`, `ludus fork`, `ludus rerun`: the debugger
//! library on the command line.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use ludus_arena::Db;
use ludus_arena::replay::Overrides;
use ludus_debugger::diff::{EpisodeDiff, RunDiff, diff_episodes, diff_runs, diff_step};
use ludus_debugger::fork::{BranchReport, Edits};
use ludus_debugger::session::{WatchResult, WatchValue};
use ludus_debugger::view::{FrameView, action_label, frame_json, parse_action};
use ludus_debugger::{DebugError, Recording, Session};
use ludus_trainer::agent::resolve;

use crate::UsageError;
use crate::cli::{DebugArgs, DiffArgs, ForkArgs, RerunArgs};

/// User mistakes exit 2; a replay that does not reproduce its recording, or
/// a database error, exits 1.
fn classify(e: DebugError) -> anyhow::Error {
    match e {
        DebugError::Replay(_) | DebugError::Store(ludus_arena::StoreError::Sql(_)) => {
            anyhow::anyhow!("{e}")
        }
        other => UsageError(other.to_string()).into(),
    }
}

fn open_db_checked(path: &Path) -> Result<(), anyhow::Error> {
    if !path.is_file() {
        return Err(UsageError(format!(
            "database {} not found (record one with `ludus run ... --db {}`)",
            path.display(),
            path.display()
        ))
        .into());
    }
    Ok(())
}

pub fn debug(args: DebugArgs) -> Result<ExitCode> {
    open_db_checked(&args.db)?;
    let mut session = Session::open(&args.db, args.episode).map_err(classify)?;
    for b in &args.breaks {
        session
            .add_breakpoint(b)
            .map_err(|e| classify(DebugError::Expr(e)))?;
    }
    for w in &args.watches {
        session
            .add_watch(w)
            .map_err(|e| classify(DebugError::Expr(e)))?;
    }
    if args.breaks.is_empty() && !args.json {
        return interactive(&args.db, session);
    }
    let mut hits = Vec::new();
    // Frame 0 counts too: start just before it.
    let mut next = first_hit(&mut session).map_err(classify)?;
    while let Some(hit) = next {
        if hits.len() >= args.max_hits {
            break;
        }
        let view = session.view(hit.frame).map_err(classify)?;
        let watches = session.watch_values(hit.frame).map_err(classify)?;
        if !args.json {
            println!(
                "hit breakpoint {} at {}",
                hit.breakpoints
                    .iter()
                    .map(|b| b.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                summary(&view)
            );
            print_watches(&watches);
        }
        hits.push(serde_json::json!({
            "frame": hit.frame,
            "breakpoints": hit.breakpoints,
            "view": frame_json(&view),
            "watches": watches,
        }));
        next = session.continue_forward().map_err(classify)?;
    }
    let breakpoints: Vec<serde_json::Value> = session
        .breakpoints()
        .iter()
        .map(|b| {
            serde_json::json!({
                "id": b.id, "expr": b.expr.source(), "hits": b.hits,
                "error": b.error.as_ref().map(|(f, e)| format!("frame {f}: {e}")),
            })
        })
        .collect();
    if args.json {
        let meta = session.source().meta();
        println!(
            "{}",
            serde_json::json!({
                "episode": meta,
                "frames": session.len(),
                "hits": hits,
                "breakpoints": breakpoints,
            })
        );
    } else {
        for b in session.breakpoints() {
            print!("breakpoint {} `{}`: {} hits", b.id, b.expr.source(), b.hits);
            if let Some((f, e)) = &b.error {
                print!(" (could not evaluate from frame {f}: {e})");
            }
            println!();
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The first hit at or after frame 0.
fn first_hit(session: &mut Session) -> Result<Option<ludus_debugger::Hit>, DebugError> {
    if session.is_empty() {
        return Ok(None);
    }
    session.first();
    let at_zero: Vec<u32> = session
        .breakpoints()
        .iter()
        .filter(|b| b.enabled)
        .filter_map(|b| {
            matches!(
                session.eval(b.expr.source(), 0),
                Ok(WatchResult::Value(serde_json::Value::Bool(true)))
            )
            .then_some(b.id)
        })
        .collect();
    if !at_zero.is_empty() {
        return Ok(Some(ludus_debugger::Hit {
            frame: 0,
            breakpoints: at_zero,
        }));
    }
    session.continue_forward()
}

/// One line about a frame.
fn summary(v: &FrameView) -> String {
    let f = &v.frame;
    let mut s = format!(
        "frame {} (step {}): action {}, reward {}",
        v.index,
        f.step,
        action_label(&f.action),
        f.reward
    );
    if f.env_reward.to_bits() != f.reward.to_bits() {
        s.push_str(&format!(" (env {})", f.env_reward));
    }
    if f.terminated {
        s.push_str(", terminated");
    }
    if f.truncated {
        s.push_str(", truncated");
    }
    if !f.info.is_empty() && f.info != "{}" {
        s.push_str(&format!(", info {}", f.info));
    }
    let changed = v.changed_paths();
    if !changed.is_empty() {
        s.push_str(&format!(", wrote {}", changed.join(" ")));
    }
    s
}

fn print_watches(watches: &[WatchValue]) {
    for w in watches {
        match &w.value {
            WatchResult::Value(v) => println!("  watch {} `{}` = {v}", w.id, w.expr),
            WatchResult::Error(e) => println!("  watch {} `{}`: error: {e}", w.id, w.expr),
        }
    }
}

fn print_frame(v: &FrameView) {
    println!("{}", summary(v));
    let j = frame_json(v);
    if let Some(parts) = j["observation"].as_object() {
        for (name, value) in parts {
            let text = value.to_string();
            let short: String = text.chars().take(200).collect();
            println!("  observation {name}: {short}");
        }
    }
    for l in &v.frame.logs {
        let msg: String = l.message.chars().take(200).collect();
        println!("  log {} {:?}: {msg}", l.role.as_str(), l.level);
    }
    for w in &v.frame.memory_writes {
        match &w.value {
            Some(val) => println!("  write {} = {val:?}", w.path),
            None => println!("  delete {}", w.path),
        }
    }
    println!(
        "  timing: act {} us, step {} us, score {} us",
        v.timing.act_ns / 1000,
        v.timing.step_ns / 1000,
        v.timing.score_ns / 1000
    );
}

const HELP: &str = "\
commands:
  n, next [N]          step forward (N frames)
  b, back [N]          step back
  c, continue          run forward to the next breakpoint hit
  rc, reverse-continue run back to the previous breakpoint hit
  g, goto N            go to frame N          first / last
  break EXPR           add a breakpoint (CEL)  watch EXPR   add a watch
  delete ID / enable ID / disable ID
  info                 list breakpoints and watches
  p, print [EXPR]      print the frame, or evaluate EXPR at it
  mem [PREFIX]         the memory after this frame
  diff                 this frame against the previous one
  set PATH VALUE       queue a memory edit for a fork at this frame
  unset PATH           queue a memory delete for a fork at this frame
  action SPEC          queue an action replacement (discrete:1, click:10,20, ...)
  fork                 fork at this frame with the queued edits
  q, quit";

/// A gdb-like prompt over the session, reading commands from stdin.
fn interactive(db: &Path, mut session: Session) -> Result<ExitCode> {
    let stdin = std::io::stdin();
    let tty = stdin.is_terminal();
    let mut edits = Edits::default();
    let show = |s: &Session| match s.current() {
        Ok(v) => {
            println!("{}", summary(&v));
            if let Ok(w) = s.watch_values(s.cursor()) {
                print_watches(&w);
            }
        }
        Err(e) => println!("error: {e}"),
    };
    println!(
        "episode {}: {} frames; `help` lists commands",
        session.source().meta().id,
        session.len()
    );
    if !session.is_empty() {
        show(&session);
    }
    loop {
        if tty {
            print!("(ludus) ");
            let _ = std::io::stdout().flush();
        }
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 {
            break;
        }
        let line = line.trim();
        let (cmd, rest) = line.split_once(' ').unwrap_or((line, ""));
        let rest = rest.trim();
        let count = || rest.parse::<u64>().unwrap_or(1).max(1);
        match cmd {
            "" => continue,
            "q" | "quit" | "exit" => break,
            "help" | "h" => println!("{HELP}"),
            "n" | "next" | "s" | "step" => {
                for _ in 0..count() {
                    session.next();
                }
                show(&session);
            }
            "b" | "back" => {
                for _ in 0..count() {
                    session.prev();
                }
                show(&session);
            }
            "first" => {
                session.first();
                show(&session);
            }
            "last" => {
                session.last();
                show(&session);
            }
            "g" | "goto" => match rest.parse::<u64>() {
                Ok(k) => match session.goto(k) {
                    Ok(()) => show(&session),
                    Err(e) => println!("error: {e}"),
                },
                Err(_) => println!("error: goto takes a frame number"),
            },
            "c" | "continue" | "rc" | "reverse-continue" => {
                let r = if cmd.starts_with('r') {
                    session.reverse_continue()
                } else {
                    session.continue_forward()
                };
                match r {
                    Ok(Some(hit)) => {
                        println!("hit breakpoint {:?}", hit.breakpoints);
                        show(&session);
                    }
                    Ok(None) => println!("no breakpoint hit (still at frame {})", session.cursor()),
                    Err(e) => println!("error: {e}"),
                }
            }
            "break" | "watch" => {
                let r = if cmd == "break" {
                    session.add_breakpoint(rest)
                } else {
                    session.add_watch(rest)
                };
                match r {
                    Ok(id) => println!("{cmd} {id}: {rest}"),
                    Err(e) => println!("error: {e}\n  {}", e.pointer().replace('\n', "\n  ")),
                }
            }
            "delete" | "enable" | "disable" => {
                let Ok(id) = rest.parse::<u32>() else {
                    println!("error: {cmd} takes an id");
                    continue;
                };
                let ok = match cmd {
                    "delete" => session.remove(id),
                    c => session.set_enabled(id, c == "enable"),
                };
                if !ok {
                    println!("error: no breakpoint or watch {id}");
                }
            }
            "info" => {
                for b in session.breakpoints() {
                    println!(
                        "breakpoint {} [{}] `{}`: {} hits",
                        b.id,
                        if b.enabled { "on" } else { "off" },
                        b.expr.source(),
                        b.hits
                    );
                }
                for w in session.watches() {
                    println!("watch {} `{}`", w.id, w.expr.source());
                }
            }
            "p" | "print" => {
                if rest.is_empty() {
                    match session.current() {
                        Ok(v) => print_frame(&v),
                        Err(e) => println!("error: {e}"),
                    }
                } else {
                    match session.eval(rest, session.cursor()) {
                        Ok(WatchResult::Value(v)) => println!("{v}"),
                        Ok(WatchResult::Error(e)) => println!("error: {e}"),
                        Err(DebugError::Expr(e)) => {
                            println!("error: {e}\n  {}", e.pointer().replace('\n', "\n  "))
                        }
                        Err(e) => println!("error: {e}"),
                    }
                }
            }
            "mem" => match session.current() {
                Ok(v) => {
                    let changed = v.changed_paths();
                    for (k, val) in v.memory.iter().filter(|(k, _)| k.starts_with(rest)) {
                        let mark = if changed.contains(&k.as_str()) {
                            "*"
                        } else {
                            " "
                        };
                        println!("{mark} {k} = {val:?}");
                    }
                }
                Err(e) => println!("error: {e}"),
            },
            "diff" => {
                let k = session.cursor();
                let prev = if k > 0 {
                    session.view(k - 1).ok()
                } else {
                    None
                };
                match session.view(k) {
                    Ok(cur) => {
                        let changes = diff_step(prev.as_ref(), &cur);
                        if changes.is_empty() {
                            println!("no change from the previous frame");
                        }
                        for c in changes {
                            println!("  {}", c.summary());
                        }
                    }
                    Err(e) => println!("error: {e}"),
                }
            }
            "set" => match rest.split_once(' ') {
                Some((p, v)) => {
                    edits.set.push((p.to_string(), v.to_string()));
                    println!("queued: set {p} = {v:?} (fork to apply)");
                }
                None => println!("error: set takes PATH VALUE"),
            },
            "unset" => {
                edits.delete.push(rest.to_string());
                println!("queued: delete {rest} (fork to apply)");
            }
            "action" => match parse_action(rest) {
                Ok(a) => {
                    println!("queued: action {} (fork to apply)", action_label(&a));
                    edits.action = Some(a);
                }
                Err(e) => println!("error: {e}"),
            },
            "fork" => {
                let episode = session.source().meta().id;
                match ludus_debugger::fork::fork(
                    db,
                    episode,
                    session.cursor(),
                    &edits,
                    Some(&resolve),
                ) {
                    Ok(r) => {
                        print_branch(&r);
                        edits = Edits::default();
                    }
                    Err(e) => println!("error: {e}"),
                }
            }
            other => println!("unknown command `{other}`; `help` lists commands"),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `ID` or `OTHER.db:ID`.
fn locate<'a>(default_db: &'a Path, spec: &'a str) -> (PathBuf, &'a str) {
    match spec.rsplit_once(':') {
        Some((db, id)) if !db.is_empty() => (PathBuf::from(db), id),
        _ => (default_db.to_path_buf(), spec),
    }
}

pub fn diff(args: DiffArgs) -> Result<ExitCode> {
    let (db_a, a) = locate(&args.db, &args.a);
    let (db_b, b) = locate(&args.db, &args.b);
    open_db_checked(&db_a)?;
    open_db_checked(&db_b)?;
    if args.runs {
        let rows = |db: &Path, run: &str| -> Result<Vec<ludus_arena::store::EpisodeRow>> {
            let d = Db::open_read_only(db)?;
            d.run(run)?;
            Ok(d.episodes(run)?)
        };
        let d = diff_runs(&rows(&db_a, a)?, &rows(&db_b, b)?);
        if args.json {
            println!("{}", serde_json::to_string(&d)?);
        } else {
            print_run_diff(a, b, &d);
        }
        return Ok(if d.changed.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    }
    let id = |s: &str| -> Result<i64> {
        s.parse::<i64>().map_err(|_| {
            UsageError(format!(
                "`{s}` is not an episode id (use --runs to compare runs)"
            ))
            .into()
        })
    };
    let ra = Recording::open(&db_a, id(a)?).map_err(classify)?;
    let rb = Recording::open(&db_b, id(b)?).map_err(classify)?;
    let d = diff_episodes(&ra, &rb).map_err(classify)?;
    if args.json {
        println!("{}", serde_json::to_string(&d)?);
    } else {
        print_episode_diff(&d);
    }
    Ok(if d.identical {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn print_episode_diff(d: &EpisodeDiff) {
    let side = |s: &ludus_debugger::diff::EpisodeSide| {
        format!(
            "episode {}: {}, return {}, {} frames{}",
            s.id,
            s.outcome,
            s.return_,
            s.frames,
            if s.success { ", success" } else { "" }
        )
    };
    println!("a: {}", side(&d.a));
    println!("b: {}", side(&d.b));
    if d.identical {
        println!(
            "identical: every frame and the ending agree ({} frames)",
            d.compared
        );
        return;
    }
    if let Some(div) = &d.first_divergence {
        println!("first divergence at frame {}:", div.frame);
        for c in &div.changes {
            println!("  {}", c.summary());
        }
    }
    let ranges: Vec<String> = d
        .ranges
        .iter()
        .take(10)
        .map(|(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect();
    println!(
        "step-aligned: {} of {} compared frames differ{}",
        d.differing,
        d.compared,
        if ranges.is_empty() {
            String::new()
        } else {
            format!(" (frames {})", ranges.join(", "))
        }
    );
    if !d.ending.is_empty() {
        println!("ending: {}", d.ending.join("; "));
    }
}

fn print_run_diff(a: &str, b: &str, d: &RunDiff) {
    println!(
        "runs {a} and {b}: {} episodes, {} unchanged, {} changed; mean return {:.3} -> {:.3}",
        d.episodes,
        d.same,
        d.changed.len(),
        d.mean_return_a,
        d.mean_return_b
    );
    for (change, n) in &d.outcome_changes {
        println!("  {n} episodes {change}");
    }
    for e in d.changed.iter().take(20) {
        println!(
            "  index {} (episodes {} / {}): {}",
            e.index,
            e.a.map_or("-".into(), |x| x.to_string()),
            e.b.map_or("-".into(), |x| x.to_string()),
            e.changes.join(", ")
        );
    }
}

fn print_branch(r: &BranchReport) {
    let b = &r.branch;
    println!(
        "branch episode {} (run {}) from episode {} at frame {}",
        b.id, r.run_id, r.parent, r.frame
    );
    for c in &r.changed_plugins {
        println!("  note: {c}");
    }
    println!(
        "  parent: {}, return {}, {} frames",
        r.diff.a.outcome, r.diff.a.return_, r.diff.a.frames
    );
    println!(
        "  branch: {}, return {}, {} frames{}",
        b.outcome.as_str(),
        b.return_,
        b.length,
        b.error
            .as_ref()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default()
    );
    match &r.diff.first_divergence {
        Some(div) => {
            println!("  first divergence at frame {}:", div.frame);
            for c in div.changes.iter().take(6) {
                println!("    {}", c.summary());
            }
        }
        None => println!("  identical to its parent"),
    }
}

pub fn fork(args: ForkArgs) -> Result<ExitCode> {
    let mut args = args;
    let postgres = crate::copy_cmd::branching(&mut args.db, args.episode)?;
    open_db_checked(&args.db)?;
    let mut edits = Edits::default();
    for s in &args.set {
        let Some((p, v)) = s.split_once('=') else {
            return Err(UsageError(format!("--set `{s}`: expected PATH=VALUE")).into());
        };
        edits.set.push((p.to_string(), v.to_string()));
    }
    edits.delete = args.delete.clone();
    if let Some(a) = &args.action {
        edits.action = Some(parse_action(a).map_err(UsageError)?);
    }
    for r in &args.model_responses {
        let Some((call, text)) = r.split_once('=') else {
            return Err(UsageError(format!("--model-response `{r}`: expected CALL=TEXT")).into());
        };
        let call: usize = call.trim().parse().map_err(|_| {
            UsageError(format!(
                "--model-response `{r}`: CALL is the call's index in the frame (0, 1, ...)"
            ))
        })?;
        edits.model_responses.push((call, text.to_string()));
    }
    let models = crate::run_cmd::model_setup(&args.models, &[])?;
    let r = ludus_debugger::fork::fork_with_models(
        &args.db,
        args.episode,
        args.frame,
        &edits,
        Some(&resolve),
        models,
    )
    .map_err(classify)?;
    let mut r = r;
    if let Some(pg) = &postgres {
        r.branch.id = pg.send_back(&r.run_id, r.branch.id)?;
    }
    if args.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        print_branch(&r);
    }
    Ok(ExitCode::SUCCESS)
}

pub fn rerun(args: RerunArgs) -> Result<ExitCode> {
    let mut args = args;
    let postgres = crate::copy_cmd::branching(&mut args.db, args.episode)?;
    open_db_checked(&args.db)?;
    // `--agent checkpoint:PATH` replays with another trained policy.
    let native_agent = args
        .agent
        .as_ref()
        .and_then(|a| a.to_str())
        .filter(|a| ludus_trainer::agent::checkpoint_path(a).is_some())
        .map(str::to_string);
    let overrides = Overrides {
        env: args.env.clone(),
        agent: args.agent.clone().filter(|_| native_agent.is_none()),
        reward: args.reward.clone(),
        native_agent,
        models: crate::run_cmd::model_setup(&args.models, &[])?,
    };
    if overrides.env.is_none()
        && overrides.agent.is_none()
        && overrides.reward.is_none()
        && overrides.native_agent.is_none()
        && args.models.is_empty()
    {
        return Err(UsageError(
            "rerun needs a new build of at least one plugin (--env, --agent or --reward) or another model (--model)".into(),
        )
        .into());
    }
    let mut overrides = overrides;
    if args.model_from_recording {
        let db = ludus_arena::Db::open_read_only(&args.db)?;
        let calls = db.model_calls(args.episode, 0..=u64::MAX)?;
        overrides.models.library = Some(std::sync::Arc::new(ludus_arena::chat::CallLibrary::new(
            calls.into_iter().map(|(_, c)| c),
        )));
    }
    let mut r = ludus_debugger::fork::rerun(&args.db, args.episode, &overrides, Some(&resolve))
        .map_err(classify)?;
    if let Some(pg) = &postgres {
        r.branch.id = pg.send_back(&r.run_id, r.branch.id)?;
    }
    if args.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        print_branch(&r);
    }
    Ok(if r.diff.identical {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
