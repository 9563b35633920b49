//! The IDE's state as plain structs, and the one place where commands from
//! the UI and events from worker threads change it. Nothing here draws, so
//! tests and the benchmark build it without a window.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use ludus_arena::run::Progress;
use ludus_arena::store::{EpisodeRow, RunRow};
use ludus_arena::{Db, RunReport};
use ludus_debugger::fork::{BranchReport, Edits};
use ludus_debugger::session::WatchValue;
use ludus_debugger::{ExprError, FrameView, Session};
use ludus_trainer::train::{TrainSummary, UpdateReport};
use serde::{Deserialize, Serialize};

use super::worker;
pub use super::worker::{CrateEntry, PluginEntry};

/// Something the user asked for; the UI emits these, [`AppState::apply`]
/// carries them out.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    OpenDb(PathBuf),
    Refresh,
    SelectRun(String),
    Sort(SortKey),
    OpenEpisode(i64),
    CloseEpisode,
    Step(Step),
    AddBreakpoint,
    SetBreakpointEnabled(u32, bool),
    RemoveBreakpoint(u32),
    AddWatch,
    /// Stage a memory edit for the next fork (`None` deletes the path).
    EditMemory(String, Option<String>),
    ClearEdits,
    Fork,
    DiffParent,
    /// Compare the open episode with the one typed in the diff panel
    /// (`diff_episode_input`, in `diff_db_input` or this database).
    DiffOther,
    StartRun,
    CancelRun,
    DismissToast(u64),
    SetTab(Tab),
    ScanWorkspace,
    Rerun,
    /// Start training from the training form's config.
    StartTraining,
    /// Ask the training run to stop after the update in progress.
    StopTraining,
    /// Show the recorded curves of a training run of the open database.
    ShowTrainCurves(String),
    /// Re-read the training run's episodes from its database.
    RefreshTrainEpisodes,
    /// Open an episode of the training run in the debugger.
    OpenTrainEpisode(i64),
    /// Put a plugin file into the arena form: kind (`env`, `agent`,
    /// `reward`) and path.
    UsePlugin(String, PathBuf),
}

/// Cursor moves in the debugger.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Next,
    Prev,
    First,
    Last,
    Continue,
    ReverseContinue,
    Goto(u64),
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Tab {
    #[default]
    Runs,
    Arena,
    Training,
    Workspace,
    Debugger,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SortKey {
    #[default]
    Index,
    Outcome,
    Return,
    Length,
    Crashed,
}

/// What a worker thread reports back.
pub enum Event {
    RunProgress,
    RunDone(Result<RunReport, String>),
    Forked(Result<Box<BranchReport>, String>),
    Timeline {
        episode: i64,
        rewards: Result<Vec<f32>, String>,
    },
    Hits {
        episode: i64,
        expr: String,
        frames: Result<Vec<u64>, String>,
    },
    ParentDiff {
        episode: i64,
        lines: Result<(Vec<String>, Option<u64>), String>,
    },
    OtherDiff {
        episode: i64,
        other: String,
        lines: Result<(Vec<String>, Option<u64>), String>,
    },
    Workspace(Vec<PluginEntry>, Vec<CrateEntry>),
    /// One training update (reported while training runs).
    TrainUpdate(Box<UpdateReport>),
    TrainDone(Result<TrainSummary, String>),
    TrainEpisodes {
        run: String,
        episodes: Result<Vec<EpisodeRow>, String>,
    },
    PluginChanged(PathBuf),
}

/// A message in the corner: an error or a notice.
#[derive(Clone, Debug, PartialEq)]
pub struct Toast {
    pub id: u64,
    pub text: String,
    pub error: bool,
}

/// The training form: what `ludus train` would take.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainForm {
    pub config: String,
    pub db: String,
    pub resume: bool,
}

impl Default for TrainForm {
    fn default() -> Self {
        TrainForm {
            config: "configs/ppo-cartpole.toml".into(),
            db: "ludus-train.db".into(),
            resume: false,
        }
    }
}

/// The curves shown in the training panel: a title and the metrics it plots.
pub const TRAIN_PLOTS: &[(&str, &[&str])] = &[
    ("Return", &["return", "return_window"]),
    ("Success rate", &["success_rate"]),
    ("Losses", &["policy_loss", "value_loss"]),
    ("Entropy", &["entropy"]),
    ("KL", &["approx_kl"]),
    ("Env steps/s", &["env_steps_per_s"]),
    ("Staleness", &["policy_lag", "dropped_samples"]),
];

/// A training run shown in the training panel: live (while `stop` is set)
/// or read back from its database.
pub struct TrainView {
    pub run_id: String,
    pub db: PathBuf,
    /// Updates the config asks for.
    pub updates: u64,
    /// Metric name to (update, value) points.
    pub curves: BTreeMap<String, Vec<egui_plot::PlotPoint>>,
    pub last: Option<UpdateReport>,
    /// Set while the run is in progress; storing true stops it.
    pub stop: Option<Arc<AtomicBool>>,
    pub started: Instant,
    /// What happened last (finished, stopped, failed: ...).
    pub status: String,
    /// The run's recorded episodes (read when asked and when it ends).
    pub episodes: Vec<EpisodeRow>,
}

impl TrainView {
    fn new(run_id: String, db: PathBuf, updates: u64) -> TrainView {
        TrainView {
            run_id,
            db,
            updates,
            curves: BTreeMap::new(),
            last: None,
            stop: None,
            started: Instant::now(),
            status: String::new(),
            episodes: Vec::new(),
        }
    }

    fn push(&mut self, update: u64, name: &str, value: f64) {
        if value.is_finite() {
            self.curves
                .entry(name.to_string())
                .or_default()
                .push(egui_plot::PlotPoint::new(update as f64, value));
        }
    }

    pub fn running(&self) -> bool {
        self.stop.is_some()
    }

    /// Points of one curve so far.
    pub fn points(&self, metric: &str) -> usize {
        self.curves.get(metric).map_or(0, Vec::len)
    }
}

/// This episode against another one, from the diff panel.
#[derive(Clone, Debug, PartialEq)]
pub struct OtherDiff {
    /// Which episode: `episode 12` or `episode 12 of other.db`.
    pub other: String,
    pub lines: Vec<String>,
    pub first: Option<u64>,
}

/// The arena form: what `ludus run` would take.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ArenaForm {
    pub env: String,
    pub agent: String,
    pub reward: String,
    pub env_config: String,
    pub seed: u64,
    pub episodes: u64,
    pub jobs: usize,
    /// Where to record (empty: the open database, else `ludus.db`).
    #[serde(default)]
    pub db: String,
}

impl Default for ArenaForm {
    fn default() -> Self {
        let p = "plugins/target/wasm32-wasip2/release";
        ArenaForm {
            env: format!("{p}/cartpole.wasm"),
            agent: format!("{p}/random_agent.wasm"),
            reward: String::new(),
            env_config: String::new(),
            seed: 0,
            episodes: 10,
            jobs: 2,
            db: String::new(),
        }
    }
}

/// A run in progress.
pub struct RunJob {
    pub progress: Arc<Progress>,
    pub episodes: u64,
    pub started: Instant,
}

impl RunJob {
    pub fn cancelled(&self) -> bool {
        self.progress.cancel.load(Ordering::Relaxed)
    }
}

/// What persists between launches.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Persisted {
    pub db: Option<PathBuf>,
    pub breakpoints: Vec<(String, bool)>,
    pub watches: Vec<String>,
    pub tab: Tab,
    pub show_memory: bool,
    pub show_diff: bool,
    pub arena: Option<ArenaForm>,
    pub workspace: String,
    pub train: Option<TrainForm>,
}

/// An episode open in the debugger.
pub struct DebugView {
    pub db: PathBuf,
    pub episode: EpisodeRow,
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
    /// What the last continue did.
    pub status: String,
    /// Rewards of every frame, for the timeline (computed off the UI thread).
    pub rewards: Option<Vec<f32>>,
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

pub struct AppState {
    pub db_path: Option<PathBuf>,
    db: Option<Db>,
    pub db_input: String,
    pub runs: Vec<RunRow>,
    pub selected_run: Option<String>,
    pub episodes: Vec<EpisodeRow>,
    pub sort: (SortKey, bool),
    pub debug: Option<DebugView>,
    pub toasts: Vec<Toast>,
    next_toast: u64,
    pub tab: Tab,
    pub show_memory: bool,
    pub show_diff: bool,
    pub arena: ArenaForm,
    pub run_job: Option<RunJob>,
    pub last_run: Option<String>,
    pub workspace: String,
    pub plugins: Vec<PluginEntry>,
    pub crates: Vec<CrateEntry>,
    pub train_form: TrainForm,
    pub train: Option<TrainView>,
    /// Plugin files that changed on disk since the episode was opened.
    pub changed_plugins: Vec<PathBuf>,
    watcher: Option<notify::RecommendedWatcher>,
    /// Breakpoints and watches carried from episode to episode (and launch to launch).
    carried_breakpoints: Vec<(String, bool)>,
    carried_watches: Vec<String>,
    tx: Sender<Event>,
    rx: Receiver<Event>,
    /// Worker jobs started and not yet reported.
    pub pending: usize,
    /// Wakes the UI when a worker reports (set by the UI; none in tests).
    waker: Option<Waker>,
}

use eframe::egui;

/// Asks the UI to draw again (a worker reported something).
type Waker = Arc<dyn Fn() + Send + Sync>;

impl Default for AppState {
    fn default() -> Self {
        AppState::new()
    }
}

impl AppState {
    pub fn new() -> AppState {
        let (tx, rx) = crossbeam_channel::unbounded();
        AppState {
            db_path: None,
            db: None,
            db_input: String::new(),
            runs: Vec::new(),
            selected_run: None,
            episodes: Vec::new(),
            sort: (SortKey::Index, false),
            debug: None,
            toasts: Vec::new(),
            next_toast: 1,
            tab: Tab::Runs,
            show_memory: true,
            show_diff: true,
            arena: ArenaForm::default(),
            run_job: None,
            last_run: None,
            workspace: ".".into(),
            plugins: Vec::new(),
            crates: Vec::new(),
            train_form: TrainForm::default(),
            train: None,
            changed_plugins: Vec::new(),
            watcher: None,
            carried_breakpoints: Vec::new(),
            carried_watches: Vec::new(),
            tx,
            rx,
            pending: 0,
            waker: None,
        }
    }

    /// The context workers wake when they report (set by the UI each frame).
    pub fn set_ctx(&mut self, ctx: &egui::Context) {
        if self.waker.is_none() {
            let ctx = ctx.clone();
            self.waker = Some(Arc::new(move || ctx.request_repaint()));
        }
    }

    pub fn persisted(&self) -> Persisted {
        let (breakpoints, watches) = match &self.debug {
            Some(d) => (
                d.session
                    .breakpoints()
                    .iter()
                    .map(|b| (b.expr.source().to_string(), b.enabled))
                    .collect(),
                d.session
                    .watches()
                    .iter()
                    .map(|w| w.expr.source().to_string())
                    .collect(),
            ),
            None => (
                self.carried_breakpoints.clone(),
                self.carried_watches.clone(),
            ),
        };
        Persisted {
            db: self.db_path.clone(),
            breakpoints,
            watches,
            tab: self.tab,
            show_memory: self.show_memory,
            show_diff: self.show_diff,
            arena: Some(self.arena.clone()),
            workspace: self.workspace.clone(),
            train: Some(self.train_form.clone()),
        }
    }

    /// Restores what [`AppState::persisted`] saved; the database is reopened
    /// (a message says so when it is gone).
    pub fn restore(&mut self, p: Persisted) {
        self.carried_breakpoints = p.breakpoints;
        self.carried_watches = p.watches;
        self.show_memory = p.show_memory;
        self.show_diff = p.show_diff;
        if let Some(a) = p.arena {
            self.arena = a;
        }
        if !p.workspace.is_empty() {
            self.workspace = p.workspace;
        }
        if let Some(t) = p.train {
            self.train_form = t;
        }
        if let Some(db) = p.db {
            self.apply(Command::OpenDb(db));
        }
        self.tab = if p.tab == Tab::Debugger {
            Tab::Runs
        } else {
            p.tab
        };
    }

    pub fn toast(&mut self, text: impl Into<String>, error: bool) {
        let id = self.next_toast;
        self.next_toast += 1;
        let mut text: String = text.into();
        // A plugin's message may be megabytes; a toast is a line or so.
        if text.len() > 2000 {
            let mut cut = 2000;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            let more = text.len() - cut;
            text.truncate(cut);
            text.push_str(&format!("... ({more} more bytes)"));
        }
        if error {
            tracing::warn!("{text}");
        }
        self.toasts.push(Toast { id, text, error });
        if self.toasts.len() > 6 {
            self.toasts.remove(0);
        }
    }

    pub fn errors(&self) -> Vec<&str> {
        self.toasts
            .iter()
            .filter(|t| t.error)
            .map(|t| t.text.as_str())
            .collect()
    }

    /// Applies every event the workers have reported so far.
    pub fn poll(&mut self) {
        while let Ok(e) = self.rx.try_recv() {
            self.on_event(e);
        }
    }

    /// Blocks until every worker job started so far has reported, applying
    /// their events (tests and the benchmark use this; the UI polls).
    pub fn wait_for_workers(&mut self) {
        while self.pending > 0 {
            match self.rx.recv() {
                Ok(e) => self.on_event(e),
                Err(_) => break,
            }
        }
        self.poll();
    }

    /// Blocks until a watched plugin file is reported changed, or `timeout`
    /// passes; true when one was.
    pub fn wait_for_plugin_change(&mut self, timeout: std::time::Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.changed_plugins.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(e) => self.on_event(e),
                Err(_) => return false,
            }
        }
        true
    }

    /// Blocks, applying events as they come, until `done` holds or
    /// `timeout` passes; true when it held. Tests wait on a run or a
    /// training in progress with this (both report while they work).
    pub fn wait_until(&mut self, timeout: Duration, done: impl Fn(&AppState) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        while !done(self) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(e) => self.on_event(e),
                Err(_) => return done(self),
            }
        }
        true
    }

    /// Before the app closes: cancels the run and stops the training in
    /// progress, and waits up to `timeout` for them to end, so a training
    /// run keeps its last checkpoint and is recorded as stopped rather than
    /// cut off. True when nothing was left running.
    pub fn shutdown(&mut self, timeout: Duration) -> bool {
        if let Some(job) = &self.run_job {
            job.progress.cancel.store(true, Ordering::Relaxed);
        }
        if let Some(stop) = self.train.as_ref().and_then(|t| t.stop.as_ref()) {
            stop.store(true, Ordering::Relaxed);
        }
        self.wait_until(timeout, |s| {
            s.run_job.is_none() && !s.train.as_ref().is_some_and(TrainView::running)
        })
    }

    /// Runs `job` on a named thread; it reports through the channel and
    /// wakes the UI when it is done.
    fn spawn(&mut self, name: &str, job: impl FnOnce(&Sender<Event>) + Send + 'static) -> bool {
        let tx = self.tx.clone();
        let ctx = self.waker.clone();
        let spawned = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                job(&tx);
                if let Some(wake) = ctx {
                    wake();
                }
            });
        match spawned {
            Ok(_) => {
                self.pending += 1;
                true
            }
            Err(e) => {
                self.toast(format!("cannot start a {name} thread: {e}"), true);
                false
            }
        }
    }

    fn on_event(&mut self, e: Event) {
        if !matches!(
            e,
            Event::RunProgress | Event::PluginChanged(_) | Event::TrainUpdate(_)
        ) {
            self.pending = self.pending.saturating_sub(1);
        }
        match e {
            Event::RunProgress => {}
            Event::RunDone(r) => {
                let cancelled = self.run_job.take().is_some_and(|j| j.cancelled());
                match r {
                    Ok(report) => {
                        let s = report.summary();
                        let interrupted = report
                            .episodes
                            .iter()
                            .filter(|e| e.outcome == ludus_arena::Outcome::Interrupted)
                            .count();
                        let text = if cancelled {
                            format!(
                                "run {} cancelled: {} episodes recorded, {interrupted} of them interrupted",
                                report.run_id, s.episodes
                            )
                        } else {
                            format!(
                                "run {} finished: {} episodes, mean return {:.3}, {} crashed",
                                report.run_id, s.episodes, s.mean_return, s.crashed
                            )
                        };
                        self.toast(text, false);
                        self.last_run = Some(report.run_id.clone());
                        if self.db_path.as_deref() != Some(report.db.as_path()) {
                            self.apply(Command::OpenDb(report.db.clone()));
                        } else {
                            self.apply(Command::Refresh);
                        }
                        self.apply(Command::SelectRun(report.run_id));
                        self.tab = Tab::Runs;
                    }
                    Err(e) => self.toast(format!("run failed: {e}"), true),
                }
            }
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
            Event::Workspace(p, c) => {
                self.plugins = p;
                self.crates = c;
            }
            Event::TrainUpdate(r) => {
                if let Some(t) = self.train.as_mut().filter(|t| t.running()) {
                    for (name, value) in &r.metrics {
                        t.push(r.update, name, *value);
                    }
                    t.last = Some(*r);
                }
            }
            Event::TrainEpisodes { run, episodes } => match episodes {
                Ok(e) => {
                    if let Some(t) = self.train.as_mut().filter(|t| t.run_id == run) {
                        t.episodes = e;
                    }
                }
                Err(e) => self.toast(e, true),
            },
            Event::TrainDone(r) => {
                let Some(t) = &mut self.train else { return };
                let stopped = t.stop.take().is_some_and(|s| s.load(Ordering::Relaxed));
                match r {
                    Ok(s) => {
                        t.status = format!(
                            "{} after {} updates, {} env steps, {} episodes in {:.1} s{}; checkpoint {}",
                            if stopped && !s.reached_target && s.updates < t.updates {
                                "stopped"
                            } else {
                                "finished"
                            },
                            s.updates,
                            s.env_steps,
                            s.episodes,
                            s.seconds,
                            if s.reached_target {
                                " (target return reached)"
                            } else {
                                ""
                            },
                            s.checkpoint.display()
                        );
                        let text = format!("training `{}`: {}", s.run_id, t.status);
                        self.toast(text, false);
                        self.apply(Command::RefreshTrainEpisodes);
                        if self.db_path.as_deref() == Some(s.db.as_path()) {
                            self.apply(Command::Refresh);
                        }
                    }
                    Err(mut e) => {
                        if e.contains("--resume") {
                            e.push_str(" (here: tick \"Resume from the last checkpoint\")");
                        }
                        t.status = format!("failed: {e}");
                        self.toast(format!("training failed: {e}"), true);
                    }
                }
            }
            Event::PluginChanged(path) => {
                if !self.changed_plugins.contains(&path) {
                    self.toast(
                        format!(
                            "{} changed on disk: re-run the episode with the new build from the debugger",
                            path.display()
                        ),
                        false,
                    );
                    self.changed_plugins.push(path);
                }
            }
        }
    }

    /// Carries out one command. Failures become messages, never panics.
    pub fn apply(&mut self, cmd: Command) {
        if let Err(e) = self.try_apply(cmd) {
            self.toast(e, true);
        }
    }

    fn try_apply(&mut self, cmd: Command) -> Result<(), String> {
        match cmd {
            Command::OpenDb(path) => self.open_db(&path)?,
            Command::Refresh => {
                if let Some(db) = &self.db {
                    self.runs = db.runs().map_err(|e| e.to_string())?;
                    if let Some(run) = self.selected_run.clone() {
                        self.episodes = db.episodes(&run).map_err(|e| e.to_string())?;
                        self.sort_episodes();
                    }
                }
            }
            Command::SelectRun(run) => {
                let db = self.db.as_ref().ok_or("no database is open")?;
                self.episodes = db.episodes(&run).map_err(|e| e.to_string())?;
                self.selected_run = Some(run);
                self.sort_episodes();
            }
            Command::Sort(key) => {
                self.sort = if self.sort.0 == key {
                    (key, !self.sort.1)
                } else {
                    (key, key != SortKey::Index && key != SortKey::Outcome)
                };
                self.sort_episodes();
            }
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
                };
                edits.validate().map_err(|e| e.to_string())?;
                d.edits.insert(path, value);
                d.editing = None;
            }
            Command::ClearEdits => {
                if let Some(d) = &mut self.debug {
                    d.edits.clear();
                    d.action_input.clear();
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
            Command::StartRun => self.start_run()?,
            Command::CancelRun => {
                if let Some(job) = &self.run_job {
                    job.progress.cancel.store(true, Ordering::Relaxed);
                }
            }
            Command::DismissToast(id) => self.toasts.retain(|t| t.id != id),
            Command::SetTab(t) => self.tab = t,
            Command::ScanWorkspace => {
                let dir = PathBuf::from(self.workspace.trim());
                if !dir.is_dir() {
                    return Err(format!(
                        "workspace {}: not a folder; type the path of a folder holding plugins",
                        dir.display()
                    ));
                }
                self.spawn("ludus-ide-scan", move |tx| {
                    let plugins = worker::scan_plugins(&dir);
                    let crates = worker::scan_crates(&dir);
                    let _ = tx.send(Event::Workspace(plugins, crates));
                });
            }
            Command::Rerun => self.rerun()?,
            Command::DiffOther => self.diff_other()?,
            Command::UsePlugin(kind, path) => {
                let slot = match kind.as_str() {
                    "env" => &mut self.arena.env,
                    "agent" => &mut self.arena.agent,
                    "reward" => &mut self.arena.reward,
                    _ => {
                        return Err(format!(
                            "{}: not an env, agent or reward plugin",
                            path.display()
                        ));
                    }
                };
                *slot = path.display().to_string();
            }
            Command::StartTraining => self.start_training()?,
            Command::StopTraining => {
                if let Some(stop) = self.train.as_ref().and_then(|t| t.stop.as_ref()) {
                    stop.store(true, Ordering::Relaxed);
                }
            }
            Command::ShowTrainCurves(run) => self.show_train_curves(&run)?,
            Command::RefreshTrainEpisodes => {
                // Off the UI thread: the trainer may be committing to it.
                let t = self.train.as_ref().ok_or("no training run is shown")?;
                let (db, run) = (t.db.clone(), t.run_id.clone());
                self.spawn("ludus-ide-train-episodes", move |tx| {
                    let episodes = Db::open(&db)
                        .and_then(|d| d.episodes(&run))
                        .map_err(|e| format!("episodes of training run `{run}`: {e}"));
                    let _ = tx.send(Event::TrainEpisodes { run, episodes });
                });
            }
            Command::OpenTrainEpisode(id) => {
                let t = self.train.as_ref().ok_or("no training run is shown")?;
                let (db, run) = (t.db.clone(), t.run_id.clone());
                if self.db_path.as_deref() != Some(db.as_path()) {
                    self.open_db(&db)?;
                }
                self.try_apply(Command::SelectRun(run))?;
                self.open_episode(id)?;
            }
        }
        Ok(())
    }

    fn open_db(&mut self, path: &Path) -> Result<(), String> {
        if !path.is_file() {
            return Err(format!(
                "database {}: no such file; record one with `ludus run --db {}`",
                path.display(),
                path.display()
            ));
        }
        let db = Db::open(path).map_err(|e| format!("database {}: {e}", path.display()))?;
        let runs = db
            .runs()
            .map_err(|e| format!("database {}: {e}", path.display()))?;
        self.carry_breakpoints();
        self.debug = None;
        self.db = Some(db);
        self.db_path = Some(path.to_path_buf());
        self.db_input = path.display().to_string();
        self.runs = runs;
        self.episodes.clear();
        self.selected_run = None;
        if let Some(first) = self.runs.first().map(|r| r.id.clone()) {
            self.try_apply(Command::SelectRun(first))?;
        }
        self.tab = Tab::Runs;
        Ok(())
    }

    fn sort_episodes(&mut self) {
        let (key, desc) = self.sort;
        self.episodes.sort_by(|a, b| {
            let o = match key {
                SortKey::Index => a.index.cmp(&b.index).then(a.id.cmp(&b.id)),
                SortKey::Outcome => a.outcome.cmp(&b.outcome),
                SortKey::Return => a.return_.total_cmp(&b.return_),
                SortKey::Length => a.length.cmp(&b.length),
                SortKey::Crashed => (a.outcome == "crashed").cmp(&(b.outcome == "crashed")),
            };
            if desc { o.reverse() } else { o }
        });
    }

    fn carry_breakpoints(&mut self) {
        if self.debug.is_some() {
            let p = self.persisted();
            self.carried_breakpoints = p.breakpoints;
            self.carried_watches = p.watches;
        }
    }

    fn open_episode(&mut self, id: i64) -> Result<(), String> {
        let path = self.db_path.clone().ok_or("no database is open")?;
        let db = self.db.as_ref().ok_or("no database is open")?;
        let episode = db.episode(id).map_err(|e| e.to_string())?;
        let mut ancestors = Vec::new();
        let mut parent = episode.parent_episode;
        while let Some(p) = parent {
            let row = db.episode(p).map_err(|e| e.to_string())?;
            parent = row.parent_episode;
            ancestors.insert(0, row);
            if ancestors.len() > 64 {
                break;
            }
        }
        let session = Session::open(&path, id)
            .map_err(|e| format!("episode {id} in {}: {e}", path.display()))?;
        self.carry_breakpoints();
        let mut d = DebugView {
            db: path.clone(),
            episode,
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
            status: String::new(),
            rewards: None,
            hits: BTreeMap::new(),
            ancestors,
            branches: Vec::new(),
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
        self.refresh_branches();
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

    fn scan_hits(&mut self, expr: &str) {
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

    fn refresh_branches(&mut self) {
        let (Some(db), Some(d)) = (&self.db, &mut self.debug) else {
            return;
        };
        let mut out = Vec::new();
        let mut stack: Vec<(i64, usize)> = vec![(d.episode.id, 0)];
        while let Some((id, depth)) = stack.pop() {
            match db.branches(id) {
                Ok(children) => {
                    for c in children.into_iter().rev() {
                        stack.push((c.id, depth + 1));
                        out.push((c, depth));
                    }
                }
                Err(e) => {
                    let msg = format!("branches of episode {id}: {e}");
                    self.toasts.push(Toast {
                        id: self.next_toast,
                        text: msg,
                        error: true,
                    });
                    self.next_toast += 1;
                    break;
                }
            }
            if out.len() > 500 {
                break;
            }
        }
        // Children were pushed in reverse for the stack; show them in id order
        // under their parent.
        d.branches = order_tree(out);
    }

    fn step(&mut self, step: Step) -> Result<(), String> {
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

    fn fork(&mut self) -> Result<(), String> {
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
        d.forking = true;
        self.spawn("ludus-ide-fork", move |tx| {
            let r = ludus_debugger::fork::fork(
                &db,
                id,
                frame,
                &edits,
                Some(&ludus_trainer::agent::resolve),
            )
            .map(Box::new)
            .map_err(|e| e.to_string());
            let _ = tx.send(Event::Forked(r));
        });
        Ok(())
    }

    fn rerun(&mut self) -> Result<(), String> {
        let d = self.debug.as_mut().ok_or("no episode is open")?;
        let run: &RunRow = self
            .runs
            .iter()
            .find(|r| r.id == d.episode.run_id)
            .ok_or("the episode's run is not in this database")?;
        let mut overrides = ludus_arena::replay::Overrides::default();
        for (role, slot) in [
            ("env", &mut overrides.env),
            ("agent", &mut overrides.agent),
            ("reward", &mut overrides.reward),
        ] {
            if let Some(p) = run.spec[role]["path"].as_str().map(PathBuf::from)
                && self.changed_plugins.contains(&p)
            {
                *slot = Some(p);
            }
        }
        let (db, id) = (d.db.clone(), d.episode.id);
        d.forking = true;
        self.changed_plugins.clear();
        self.spawn("ludus-ide-rerun", move |tx| {
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

    fn start_run(&mut self) -> Result<(), String> {
        if self.run_job.is_some() {
            return Err("a run is already in progress: cancel it or wait".into());
        }
        let a = &self.arena;
        let db = match a.db.trim() {
            "" => self
                .db_path
                .clone()
                .unwrap_or_else(|| PathBuf::from("ludus.db")),
            d => PathBuf::from(d),
        };
        let plugin = |p: &str, config: &str| ludus_arena::PluginSpec {
            path: PathBuf::from(p.trim()),
            config: config.to_string(),
            limits: ludus_arena::Limits::DEFAULT,
        };
        for (what, p) in [("environment", &a.env), ("agent", &a.agent)] {
            if p.trim().is_empty() {
                return Err(format!(
                    "pick an {what} plugin (.wasm) before starting a run"
                ));
            }
        }
        let spec = ludus_arena::RunSpec {
            env: plugin(&a.env, &a.env_config),
            agent: plugin(&a.agent, "").into(),
            reward: (!a.reward.trim().is_empty()).then(|| plugin(&a.reward, "")),
            episodes: a.episodes.max(1),
            seed: a.seed,
            jobs: a.jobs.max(1),
            db,
        };
        let progress = Arc::new(Progress::default());
        self.run_job = Some(RunJob {
            progress: progress.clone(),
            episodes: spec.episodes,
            started: Instant::now(),
        });
        // A second thread reports progress a few times a second until the
        // run's thread drops `_running`, so the UI (and a waiting test) see
        // the run advance without polling.
        let (running, ended) = crossbeam_channel::bounded::<()>(0);
        let (tx, ctx) = (self.tx.clone(), self.waker.clone());
        let ticker = std::thread::Builder::new()
            .name("ludus-ide-run-progress".into())
            .spawn(move || {
                while let Err(crossbeam_channel::RecvTimeoutError::Timeout) =
                    ended.recv_timeout(Duration::from_millis(100))
                {
                    if tx.send(Event::RunProgress).is_err() {
                        break;
                    }
                    if let Some(wake) = &ctx {
                        wake();
                    }
                }
            });
        if let Err(e) = ticker {
            tracing::info!("no progress thread for the run: {e}");
        }
        let started = self.spawn("ludus-ide-run", move |tx| {
            let _running = running;
            let r = ludus_arena::run::prepare(spec)
                .and_then(|p| p.run(&progress))
                .map_err(|e| e.to_string());
            let _ = tx.send(Event::RunDone(r));
        });
        if !started {
            self.run_job = None;
        }
        Ok(())
    }

    fn diff_other(&mut self) -> Result<(), String> {
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

    fn start_training(&mut self) -> Result<(), String> {
        if self.train.as_ref().is_some_and(TrainView::running) {
            return Err("a training run is already in progress: stop it or wait".into());
        }
        let f = &self.train_form;
        let path = PathBuf::from(f.config.trim());
        if f.config.trim().is_empty() {
            return Err("pick a training config (.toml, like configs/ppo-cartpole.toml)".into());
        }
        let config = ludus_trainer::config::Config::load(&path).map_err(|e| e.to_string())?;
        let db = match f.db.trim() {
            "" => return Err("pick a database file for the training run".into()),
            d => PathBuf::from(d),
        };
        let mut view = TrainView::new(config.name.clone(), db.clone(), config.stop.updates);
        if f.resume {
            // The curves so far, so the plot continues where the run stopped.
            if let Ok(rows) = Db::open(&db).and_then(|d| d.train_metrics(&config.name)) {
                for r in rows {
                    view.push(r.update, &r.name, r.value);
                }
            }
        }
        let stop = Arc::new(AtomicBool::new(false));
        view.stop = Some(stop.clone());
        view.status = format!("training `{}` into {}", config.name, db.display());
        let opts = ludus_trainer::train::TrainOptions {
            config,
            db,
            device: ludus_trainer::train::DeviceChoice::Auto,
            resume: f.resume,
            stop: Some(stop),
        };
        self.train = Some(view);
        let ctx = self.waker.clone();
        let started = self.spawn("ludus-ide-train", move |tx| {
            let mut report = |r: &UpdateReport| {
                let _ = tx.send(Event::TrainUpdate(Box::new(r.clone())));
                if let Some(wake) = &ctx {
                    wake();
                }
            };
            let r = ludus_trainer::train::train(&opts, &mut report).map_err(|e| e.to_string());
            let _ = tx.send(Event::TrainDone(r));
        });
        if !started && let Some(t) = &mut self.train {
            t.stop = None;
        }
        Ok(())
    }

    /// The recorded curves of a training run of the open database.
    fn show_train_curves(&mut self, run: &str) -> Result<(), String> {
        if self.train.as_ref().is_some_and(TrainView::running) {
            return Err("a training run is in progress: stop it before showing another".into());
        }
        let db = self.db.as_ref().ok_or("no database is open")?;
        let path = self.db_path.clone().ok_or("no database is open")?;
        let row = self
            .runs
            .iter()
            .find(|r| r.id == run)
            .ok_or_else(|| format!("run {run} is not in {}", path.display()))?;
        let updates = row.spec["config"]["stop"]["updates"].as_u64().unwrap_or(0);
        let status = row.status.clone();
        let rows = db.train_metrics(run).map_err(|e| e.to_string())?;
        if rows.is_empty() {
            return Err(format!(
                "run {run} has no training metrics (it is not a `ludus train` run)"
            ));
        }
        let mut view = TrainView::new(run.to_string(), path, updates);
        for r in rows {
            view.push(r.update, &r.name, r.value);
        }
        view.status = format!("recorded run, {status}");
        view.episodes = db.episodes(run).map_err(|e| e.to_string())?;
        self.train = Some(view);
        self.tab = Tab::Training;
        Ok(())
    }

    /// Watches the plugin files of the open episode's run; a change offers a re-run.
    fn watch_episode_plugins(&mut self) {
        use notify::Watcher;
        let Some(d) = &self.debug else { return };
        let Some(run) = self.runs.iter().find(|r| r.id == d.episode.run_id) else {
            return;
        };
        let paths: Vec<PathBuf> = ["env", "agent", "reward"]
            .iter()
            .filter_map(|r| run.spec[r]["path"].as_str().map(PathBuf::from))
            .collect();
        let tx = self.tx.clone();
        let ctx = self.waker.clone();
        let watched = paths.clone();
        let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            let Ok(ev) = res else { return };
            if !(ev.kind.is_modify() || ev.kind.is_create()) {
                return;
            }
            for p in ev.paths {
                if let Some(w) = watched.iter().find(|w| p.ends_with(w) || w.ends_with(&p)) {
                    let _ = tx.send(Event::PluginChanged(w.clone()));
                    if let Some(wake) = &ctx {
                        wake();
                    }
                }
            }
        });
        match watcher {
            Ok(mut w) => {
                for p in &paths {
                    if let Err(e) = w.watch(p, notify::RecursiveMode::NonRecursive) {
                        tracing::info!("cannot watch {}: {e}", p.display());
                    }
                }
                self.watcher = Some(w);
            }
            Err(e) => tracing::info!("no file watcher: {e}"),
        }
    }
}

/// Puts each branch right under its parent, children in id order.
fn order_tree(rows: Vec<(EpisodeRow, usize)>) -> Vec<(EpisodeRow, usize)> {
    let mut by_parent: BTreeMap<Option<i64>, Vec<(EpisodeRow, usize)>> = BTreeMap::new();
    let root_depth_parent = rows
        .iter()
        .find(|(_, d)| *d == 0)
        .and_then(|(r, _)| r.parent_episode);
    for (r, d) in rows {
        by_parent.entry(r.parent_episode).or_default().push((r, d));
    }
    for v in by_parent.values_mut() {
        v.sort_by_key(|(r, _)| r.id);
    }
    let mut out = Vec::new();
    fn walk(
        parent: Option<i64>,
        by_parent: &BTreeMap<Option<i64>, Vec<(EpisodeRow, usize)>>,
        out: &mut Vec<(EpisodeRow, usize)>,
    ) {
        if let Some(children) = by_parent.get(&parent) {
            for (r, d) in children {
                out.push((r.clone(), *d));
                walk(Some(r.id), by_parent, out);
            }
        }
    }
    walk(root_depth_parent, &by_parent, &mut out);
    out
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
