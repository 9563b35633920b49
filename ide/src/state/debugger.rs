//! The Debugger tab: an episode open in a debugger session, its frame,
//! breakpoints, watches, memory edits, diffs, forks and re-runs.

use super::*;

/// This episode against another one, from the diff panel.
#[derive(Clone, Debug, PartialEq)]
pub struct OtherDiff {
    /// Which episode: `episode 12` or `episode 12 of other.db`.
    pub other: String,
    pub lines: Vec<String>,
    pub first: Option<u64>,
}

/// An episode open in the debugger.
pub struct DebugView {
    pub db: PathBuf,
    pub episode: EpisodeRow,
    /// The episode's run (its spec names the plugins it ran with).
    pub run: RunRow,
    pub session: Session,
    /// The frame under the cursor (read when the cursor moves).
    pub view: Option<FrameView>,
    /// This frame against the previous one, one line per change.
    pub step_changes: Vec<String>,
    pub watch_values: Vec<WatchValue>,
    pub breakpoint_input: String,
    pub breakpoint_error: Option<ExprError>,
    pub watch_input: String,
    pub watch_error: Option<ExprError>,
    /// Memory edits staged for a fork: path to new value (`None`: delete).
    pub edits: BTreeMap<String, Option<String>>,
    /// A replacement action for the fork frame (`discrete:1`, `click:3,4`, ...).
    pub action_input: String,
    /// Answers staged for the fork frame's model calls, by call index.
    pub model_edits: BTreeMap<usize, String>,
    /// The model call whose answer is being edited, and its text.
    pub model_editing: Option<(usize, String)>,
    /// What the last continue did.
    pub status: String,
    /// Rewards of every frame, for the timeline (computed off the UI thread).
    pub rewards: Option<Vec<f32>>,
    /// A sampled training episode's advantage at each step (the model
    /// calls' tokens are coloured by it).
    pub advantages: BTreeMap<u64, f32>,
    /// Frames where each breakpoint holds (by expression), for the timeline.
    pub hits: BTreeMap<String, Vec<u64>>,
    /// The chain of parents, oldest first.
    pub ancestors: Vec<EpisodeRow>,
    /// Branches of this episode (children), and their own children.
    pub branches: Vec<(EpisodeRow, usize)>,
    /// This episode against its parent.
    pub parent_diff: Option<(Vec<String>, Option<u64>)>,
    /// The episode to compare with (an id) and its database (empty: this one).
    pub diff_episode_input: String,
    pub diff_db_input: String,
    /// This episode against the one typed above.
    pub other_diff: Option<OtherDiff>,
    pub diffing: bool,
    /// Path being edited in the memory tree and its text.
    pub editing: Option<(String, String)>,
    pub forking: bool,
}

impl DebugView {
    /// Reads the frame under the cursor, its changes and watch values.
    pub fn read_frame(&mut self) -> Result<(), String> {
        if self.session.is_empty() {
            self.view = None;
            return Ok(());
        }
        let k = self.session.cursor();
        let view = self.session.view(k).map_err(|e| e.to_string())?;
        let prev = if k > 0 {
            self.session.view(k - 1).ok()
        } else {
            None
        };
        self.step_changes = ludus_debugger::diff::diff_step(prev.as_ref(), &view)
            .iter()
            .map(|c| c.summary())
            .collect();
        self.view = Some(view);
        self.refresh_watches();
        Ok(())
    }

    pub fn refresh_watches(&mut self) {
        let k = self.session.cursor();
        self.watch_values = if self.session.is_empty() {
            Vec::new()
        } else {
            self.session.watch_values(k).unwrap_or_default()
        };
    }

    pub fn cursor(&self) -> u64 {
        self.session.cursor()
    }
}

impl AppState {
    /// Carries out this tab's commands.
    pub(super) fn apply_debugger(&mut self, cmd: Command) -> Result<(), String> {
        match cmd {
            Command::OpenEpisode(id) => self.open_episode(id)?,
            Command::CloseEpisode => {
                self.carry_breakpoints();
                self.debug = None;
                self.tab = Tab::Runs;
            }
            Command::Step(step) => self.step(step)?,
            Command::AddBreakpoint => {
                let d = self.debug.as_mut().ok_or("no episode is open")?;
                let text = d.breakpoint_input.trim().to_string();
                match d.session.add_breakpoint(&text) {
                    Ok(_) => {
                        d.breakpoint_error = None;
                        d.breakpoint_input.clear();
                        self.scan_hits(&text);
                    }
                    Err(e) => d.breakpoint_error = Some(e),
                }
            }
            Command::SetBreakpointEnabled(id, on) => {
                let d = self.debug.as_mut().ok_or("no episode is open")?;
                d.session.set_enabled(id, on);
            }
            Command::RemoveBreakpoint(id) => {
                let d = self.debug.as_mut().ok_or("no episode is open")?;
                if let Some(b) = d.session.breakpoints().iter().find(|b| b.id == id) {
                    let src = b.expr.source().to_string();
                    d.hits.remove(&src);
                }
                d.session.remove(id);
                d.refresh_watches();
            }
            Command::AddWatch => {
                let d = self.debug.as_mut().ok_or("no episode is open")?;
                let text = d.watch_input.trim().to_string();
                match d.session.add_watch(&text) {
                    Ok(_) => {
                        d.watch_error = None;
                        d.watch_input.clear();
                        d.refresh_watches();
                    }
                    Err(e) => d.watch_error = Some(e),
                }
            }
            Command::EditMemory(path, value) => {
                let d = self.debug.as_mut().ok_or("no episode is open")?;
                let edits = Edits {
                    set: value.iter().map(|v| (path.clone(), v.clone())).collect(),
                    delete: if value.is_none() {
                        vec![path.clone()]
                    } else {
                        Vec::new()
                    },
                    action: None,
                    model_responses: Vec::new(),
                };
                edits.validate().map_err(|e| e.to_string())?;
                d.edits.insert(path, value);
                d.editing = None;
            }
            Command::EditModelResponse(call, text) => {
                let d = self.debug.as_mut().ok_or("no episode is open")?;
                match text {
                    Some(t) => d.model_edits.insert(call, t),
                    None => d.model_edits.remove(&call),
                };
                d.model_editing = None;
            }
            Command::ClearEdits => {
                if let Some(d) = &mut self.debug {
                    d.edits.clear();
                    d.action_input.clear();
                    d.model_edits.clear();
                }
            }
            Command::Fork => self.fork()?,
            Command::DiffParent => {
                let d = self.debug.as_ref().ok_or("no episode is open")?;
                let parent = d
                    .episode
                    .parent_episode
                    .ok_or("this episode has no parent to compare with")?;
                let (db, id) = (d.db.clone(), d.episode.id);
                self.spawn("ludus-ide-diff", move |tx| {
                    let lines = worker::diff_against(&db, parent, id);
                    let _ = tx.send(Event::ParentDiff { episode: id, lines });
                });
            }
            Command::Rerun => self.rerun()?,
            Command::DiffOther => self.diff_other()?,
            _ => {}
        }
        Ok(())
    }

    /// Applies what this tab's workers reported.
    pub(super) fn on_debugger_event(&mut self, e: Event) {
        match e {
            Event::Forked(r) => {
                if let Some(d) = &mut self.debug {
                    d.forking = false;
                }
                match r {
                    Ok(b) => {
                        let line = match &b.diff.first_divergence {
                            Some(div) => format!("first divergence at frame {}", div.frame),
                            None => "identical to its parent".into(),
                        };
                        self.toast(
                            format!(
                                "branch episode {} from episode {} at frame {}: {}, return {:.3}; {line}",
                                b.branch.id,
                                b.parent,
                                b.frame,
                                b.branch.outcome.as_str(),
                                b.branch.return_
                            ),
                            false,
                        );
                        if let Some(d) = &mut self.debug {
                            d.edits.clear();
                            d.action_input.clear();
                        }
                        self.refresh_branches();
                        self.apply(Command::Refresh);
                    }
                    Err(e) => self.toast(format!("fork failed: {e}"), true),
                }
            }
            Event::Timeline { episode, rewards } => match rewards {
                Ok(r) => {
                    if let Some(d) = self.debug.as_mut().filter(|d| d.episode.id == episode) {
                        d.rewards = Some(r);
                    }
                }
                Err(e) => self.toast(format!("timeline of episode {episode}: {e}"), true),
            },
            Event::Hits {
                episode,
                expr,
                frames,
            } => match frames {
                Ok(f) => {
                    if let Some(d) = self.debug.as_mut().filter(|d| d.episode.id == episode) {
                        d.hits.insert(expr, f);
                    }
                }
                Err(e) => self.toast(format!("breakpoint `{expr}`: {e}"), true),
            },
            Event::ParentDiff { episode, lines } => match lines {
                Ok(l) => {
                    if let Some(d) = self.debug.as_mut().filter(|d| d.episode.id == episode) {
                        d.parent_diff = Some(l);
                    }
                }
                Err(e) => self.toast(format!("diff of episode {episode}: {e}"), true),
            },
            Event::OtherDiff {
                episode,
                other,
                lines,
            } => {
                if let Some(d) = self.debug.as_mut().filter(|d| d.episode.id == episode) {
                    d.diffing = false;
                }
                match lines {
                    Ok((lines, first)) => {
                        if let Some(d) = self.debug.as_mut().filter(|d| d.episode.id == episode) {
                            d.other_diff = Some(OtherDiff {
                                other,
                                lines,
                                first,
                            });
                        }
                    }
                    Err(e) => self.toast(format!("diff with {other}: {e}"), true),
                }
            }
            Event::EpisodeOpened { db, id, opened } => {
                // A database opened since then wins.
                if self.db_path.as_ref() != Some(&db) {
                    return;
                }
                let shown = opened.and_then(|o| self.show_episode(db.clone(), *o));
                if let Err(e) = shown {
                    self.toast(format!("episode {id} in {}: {e}", db.display()), true);
                }
            }
            Event::Branches { episode, branches } => match branches {
                Ok(b) => {
                    if let Some(d) = self.debug.as_mut().filter(|d| d.episode.id == episode) {
                        d.branches = b;
                    }
                }
                Err(e) => self.toast(format!("branches of episode {episode}: {e}"), true),
            },
            _ => {}
        }
    }

    /// Opens episode `id` of the open database in the debugger: read off the
    /// UI thread, shown when [`Event::EpisodeOpened`] arrives.
    pub(super) fn open_episode(&mut self, id: i64) -> Result<(), String> {
        let path = self.db_path.clone().ok_or("no database is open")?;
        self.spawn("ludus-ide-open", move |tx| {
            let opened = worker::open_episode(&path, id).map(Box::new);
            let _ = tx.send(Event::EpisodeOpened {
                db: path,
                id,
                opened,
            });
        });
        Ok(())
    }

    /// Shows an episode the worker opened: its session, with the carried
    /// breakpoints and watches, at frame 0.
    fn show_episode(&mut self, path: PathBuf, opened: worker::OpenedEpisode) -> Result<(), String> {
        let worker::OpenedEpisode {
            episode,
            run,
            ancestors,
            session,
            branches,
            advantages,
        } = opened;
        let id = episode.id;
        self.carry_breakpoints();
        let mut d = DebugView {
            db: path.clone(),
            episode,
            run,
            session,
            view: None,
            step_changes: Vec::new(),
            watch_values: Vec::new(),
            breakpoint_input: String::new(),
            breakpoint_error: None,
            watch_input: String::new(),
            watch_error: None,
            edits: BTreeMap::new(),
            action_input: String::new(),
            model_edits: BTreeMap::new(),
            model_editing: None,
            status: String::new(),
            rewards: None,
            advantages,
            hits: BTreeMap::new(),
            ancestors,
            branches,
            parent_diff: None,
            diff_episode_input: String::new(),
            diff_db_input: String::new(),
            other_diff: None,
            diffing: false,
            editing: None,
            forking: false,
        };
        let mut exprs = Vec::new();
        for (src, on) in &self.carried_breakpoints {
            if let Ok(bid) = d.session.add_breakpoint(src) {
                d.session.set_enabled(bid, *on);
                exprs.push(src.clone());
            }
        }
        for w in &self.carried_watches {
            let _ = d.session.add_watch(w);
        }
        d.read_frame()?;
        self.debug = Some(d);
        self.tab = Tab::Debugger;
        self.spawn("ludus-ide-timeline", move |tx| {
            let rewards = worker::rewards(&path, id);
            let _ = tx.send(Event::Timeline {
                episode: id,
                rewards,
            });
        });
        for e in exprs {
            self.scan_hits(&e);
        }
        self.watch_episode_plugins();
        Ok(())
    }

    pub(super) fn scan_hits(&mut self, expr: &str) {
        let Some(d) = &self.debug else { return };
        let (db, id, expr) = (d.db.clone(), d.episode.id, expr.to_string());
        self.spawn("ludus-ide-hits", move |tx| {
            let frames = worker::hits(&db, id, &expr);
            let _ = tx.send(Event::Hits {
                episode: id,
                expr,
                frames,
            });
        });
    }

    /// Reads the open episode's branch tree off the UI thread.
    pub(super) fn refresh_branches(&mut self) {
        let Some(d) = &self.debug else { return };
        let (db, episode) = (d.db.clone(), d.episode.id);
        self.spawn("ludus-ide-branches", move |tx| {
            let branches = worker::branch_tree(&db, episode);
            let _ = tx.send(Event::Branches { episode, branches });
        });
    }

    pub(super) fn step(&mut self, step: Step) -> Result<(), String> {
        let d = self.debug.as_mut().ok_or("no episode is open")?;
        let before = d.session.cursor();
        match step {
            Step::Next => {
                d.session.next();
            }
            Step::Prev => {
                d.session.prev();
            }
            Step::First => d.session.first(),
            Step::Last => d.session.last(),
            Step::Goto(k) => d.session.goto(k).map_err(|e| e.to_string())?,
            Step::Continue | Step::ReverseContinue => {
                if !d.session.breakpoints().iter().any(|b| b.enabled) {
                    d.status = "no enabled breakpoint: add one below".into();
                    return Ok(());
                }
                let hit = if step == Step::Continue {
                    d.session.continue_forward()
                } else {
                    d.session.reverse_continue()
                }
                .map_err(|e| e.to_string())?;
                d.status = match hit {
                    Some(h) => format!(
                        "breakpoint {} hit at frame {}",
                        h.breakpoints
                            .iter()
                            .map(|b| b.to_string())
                            .collect::<Vec<_>>()
                            .join(", "),
                        h.frame
                    ),
                    None if step == Step::Continue => "no breakpoint holds after this frame".into(),
                    None => "no breakpoint holds before this frame".into(),
                };
            }
        }
        if d.session.cursor() != before || d.view.is_none() {
            d.read_frame()?;
        }
        Ok(())
    }

    pub(super) fn fork(&mut self) -> Result<(), String> {
        let d = self.debug.as_mut().ok_or("no episode is open")?;
        if d.forking {
            return Err("a fork is already running".into());
        }
        let action = match d.action_input.trim() {
            "" => None,
            s => Some(
                ludus_debugger::view::parse_action(s)
                    .map_err(|e| format!("replacement action `{s}`: {e}"))?,
            ),
        };
        let mut edits = Edits {
            action,
            model_responses: d.model_edits.iter().map(|(k, v)| (*k, v.clone())).collect(),
            ..Edits::default()
        };
        for (p, v) in &d.edits {
            match v {
                Some(v) => edits.set.push((p.clone(), v.clone())),
                None => edits.delete.push(p.clone()),
            }
        }
        edits.validate().map_err(|e| e.to_string())?;
        let (db, id, frame) = (d.db.clone(), d.episode.id, d.session.cursor());
        // Calls after the fork frame go to the arena form's endpoints.
        let models = ludus_trainer::llm::setup(&self.arena.form.model_lines(), None)?;
        let d = self.debug.as_mut().ok_or("no episode is open")?;
        d.forking = true;
        self.spawn("ludus-ide-fork", move |tx| {
            let r = ludus_debugger::fork::fork_with_models(
                &db,
                id,
                frame,
                &edits,
                Some(&ludus_trainer::agent::resolve),
                models,
            )
            .map(Box::new)
            .map_err(|e| e.to_string());
            let _ = tx.send(Event::Forked(r));
        });
        Ok(())
    }

    pub(super) fn rerun(&mut self) -> Result<(), String> {
        // Model calls whose request changed go to the arena form's endpoints;
        // the others are served from the recording.
        let models = ludus_trainer::llm::setup(&self.arena.form.model_lines(), None)?;
        let d = self.debug.as_mut().ok_or("no episode is open")?;
        let run = &d.run;
        let mut overrides = ludus_arena::replay::Overrides {
            models,
            ..Default::default()
        };
        for (role, slot) in [
            ("env", &mut overrides.env),
            ("agent", &mut overrides.agent),
            ("reward", &mut overrides.reward),
        ] {
            if let Some(p) = run.spec[role]["path"].as_str().map(PathBuf::from)
                && self.workspace.changed_plugins.contains(&p)
            {
                *slot = Some(p);
            }
        }
        let (db, id) = (d.db.clone(), d.episode.id);
        d.forking = true;
        self.workspace.changed_plugins.clear();
        self.spawn("ludus-ide-rerun", move |tx| {
            // As `ludus rerun --model-from-recording`: only changed
            // requests cost a model call.
            let mut overrides = overrides;
            if let Ok(calls) = ludus_arena::Db::open_read_only(&db)
                .and_then(|store| store.model_calls(id, 0..=u64::MAX))
                && !calls.is_empty()
            {
                overrides.models.library = Some(std::sync::Arc::new(
                    ludus_arena::chat::CallLibrary::new(calls.into_iter().map(|(_, c)| c)),
                ));
            }
            let r = ludus_debugger::fork::rerun(
                &db,
                id,
                &overrides,
                Some(&ludus_trainer::agent::resolve),
            )
            .map(Box::new)
            .map_err(|e| e.to_string());
            let _ = tx.send(Event::Forked(r));
        });
        Ok(())
    }

    pub(super) fn diff_other(&mut self) -> Result<(), String> {
        let d = self.debug.as_mut().ok_or("no episode is open")?;
        if d.diffing {
            return Err("a diff is already running".into());
        }
        let text = d.diff_episode_input.trim();
        let other: i64 = text.parse().map_err(|_| {
            format!("episode to compare with `{text}`: not an episode id; type the number from the Runs tab")
        })?;
        let (db, id) = (d.db.clone(), d.episode.id);
        let other_db = match d.diff_db_input.trim() {
            "" => db.clone(),
            p => PathBuf::from(p),
        };
        if !other_db.is_file() {
            return Err(format!(
                "database {}: no such file; type the path of a database holding episode {other}",
                other_db.display()
            ));
        }
        let label = if other_db == db {
            format!("episode {other}")
        } else {
            format!("episode {other} of {}", other_db.display())
        };
        d.diffing = true;
        d.other_diff = None;
        self.spawn("ludus-ide-diff", move |tx| {
            let lines = worker::diff_episodes(&db, id, &other_db, other);
            let _ = tx.send(Event::OtherDiff {
                episode: id,
                other: label,
                lines,
            });
        });
        Ok(())
    }
}
