//! The IDE's state as plain structs, and the one place where commands from
//! the UI and events from worker threads change it: routed here to the tab
//! they belong to (runs, arena, training, workspace, debugger; persistence
//! apart). Nothing here draws, so tests and the benchmark build it without a
//! window.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use ludus_arena::run::Progress;
use ludus_arena::store::{EpisodeRow, RunRow};
use ludus_arena::train_store::MetricRow;
use ludus_arena::{Db, RunReport};
use ludus_debugger::fork::{BranchReport, Edits};
use ludus_debugger::session::WatchValue;
use ludus_debugger::{ExprError, FrameView, Session};
use ludus_trainer::train::{TrainSummary, UpdateReport};
use serde::{Deserialize, Serialize};

use super::worker;
pub use super::worker::{CrateEntry, PluginEntry};

// One module per tab, each with its own part of the state's behaviour: the
// commands it carries out (`apply_*`) and the worker events it takes
// (`on_*_event`); this module routes them and holds what they share.
mod arena;
mod debugger;
mod persist;
mod runs;
mod training;
mod workspace;

pub use arena::{ArenaForm, ArenaTab, RunJob};
pub use debugger::{DebugView, OtherDiff};
pub use persist::Persisted;
pub use runs::RunsTab;
pub use training::{LLM_TRAIN_PLOTS, TRAIN_PLOTS, TrainForm, TrainView, TrainingTab};
pub use workspace::WorkspaceTab;

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
    /// Stage an answer for model call N of the fork frame (`None` drops it).
    EditModelResponse(usize, Option<String>),
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
    /// A PostgreSQL database copied into a local file to read (the URL as
    /// typed, the file or why not).
    Mirrored {
        url: String,
        local: Result<PathBuf, String>,
    },
    /// The open database's runs and a run's episodes, read off the UI thread.
    DbRead {
        db: PathBuf,
        read: Result<worker::DbRead, String>,
    },
    /// An episode read off the UI thread for the debugger.
    EpisodeOpened {
        db: PathBuf,
        id: i64,
        opened: Result<Box<worker::OpenedEpisode>, String>,
    },
    /// The open episode's branch tree.
    Branches {
        episode: i64,
        branches: Result<Vec<(EpisodeRow, usize)>, String>,
    },
    /// A recorded training run's curves and episodes, to show.
    TrainRecord {
        run: String,
        db: PathBuf,
        updates: u64,
        status: String,
        read: Result<(Vec<MetricRow>, Vec<EpisodeRow>), String>,
    },
    /// The curves a resumed training run had so far (sent by its thread).
    TrainHistory {
        run: String,
        rows: Vec<MetricRow>,
    },
}

/// A message in the corner: an error or a notice.
#[derive(Clone, Debug, PartialEq)]
pub struct Toast {
    pub id: u64,
    pub text: String,
    pub error: bool,
}

pub struct AppState {
    /// The open database (every tab reads it) and the path typed for it.
    pub db_path: Option<PathBuf>,
    pub db_input: String,
    /// Where the open database came from when it is a local copy of a
    /// PostgreSQL database (its URL, password hidden).
    pub db_source: Option<String>,
    pub runs: RunsTab,
    pub arena: ArenaTab,
    pub training: TrainingTab,
    pub workspace: WorkspaceTab,
    /// The Debugger tab: the episode open in it.
    pub debug: Option<DebugView>,
    pub toasts: Vec<Toast>,
    next_toast: u64,
    pub tab: Tab,
    pub show_memory: bool,
    pub show_diff: bool,
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
            db_input: String::new(),
            db_source: None,
            runs: RunsTab::default(),
            arena: ArenaTab::default(),
            training: TrainingTab::default(),
            workspace: WorkspaceTab::default(),
            debug: None,
            toasts: Vec::new(),
            next_toast: 1,
            tab: Tab::Runs,
            show_memory: true,
            show_diff: true,
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
        while self.workspace.changed_plugins.is_empty() {
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
        if let Some(job) = &self.arena.job {
            job.progress.cancel.store(true, Ordering::Relaxed);
        }
        if let Some(stop) = self.training.view.as_ref().and_then(|t| t.stop.as_ref()) {
            stop.store(true, Ordering::Relaxed);
        }
        self.wait_until(timeout, |s| {
            s.arena.job.is_none() && !s.training.view.as_ref().is_some_and(TrainView::running)
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
            Event::RunProgress
                | Event::PluginChanged(_)
                | Event::TrainUpdate(_)
                | Event::TrainHistory { .. }
        ) {
            self.pending = self.pending.saturating_sub(1);
        }
        match e {
            Event::RunProgress | Event::RunDone(_) => self.on_arena_event(e),
            Event::Forked(_)
            | Event::Timeline { .. }
            | Event::Hits { .. }
            | Event::ParentDiff { .. }
            | Event::OtherDiff { .. }
            | Event::EpisodeOpened { .. }
            | Event::Branches { .. } => self.on_debugger_event(e),
            Event::DbRead { .. } | Event::Mirrored { .. } => self.on_runs_event(e),
            Event::Workspace(..) | Event::PluginChanged(_) => self.on_workspace_event(e),
            Event::TrainUpdate(_)
            | Event::TrainDone(_)
            | Event::TrainEpisodes { .. }
            | Event::TrainRecord { .. }
            | Event::TrainHistory { .. } => self.on_training_event(e),
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
            Command::OpenDb(_) | Command::Refresh | Command::SelectRun(_) | Command::Sort(_) => {
                self.apply_runs(cmd)
            }
            Command::OpenEpisode(_)
            | Command::CloseEpisode
            | Command::Step(_)
            | Command::AddBreakpoint
            | Command::SetBreakpointEnabled(..)
            | Command::RemoveBreakpoint(_)
            | Command::AddWatch
            | Command::EditMemory(..)
            | Command::EditModelResponse(..)
            | Command::ClearEdits
            | Command::Fork
            | Command::DiffParent
            | Command::DiffOther
            | Command::Rerun => self.apply_debugger(cmd),
            Command::StartRun | Command::CancelRun | Command::UsePlugin(..) => {
                self.apply_arena(cmd)
            }
            Command::ScanWorkspace => self.apply_workspace(cmd),
            Command::StartTraining
            | Command::StopTraining
            | Command::ShowTrainCurves(_)
            | Command::RefreshTrainEpisodes
            | Command::OpenTrainEpisode(_) => self.apply_training(cmd),
            Command::DismissToast(id) => {
                self.toasts.retain(|t| t.id != id);
                Ok(())
            }
            Command::SetTab(t) => {
                self.tab = t;
                Ok(())
            }
        }
    }
}
