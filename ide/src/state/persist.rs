//! What persists between launches, and carrying breakpoints and watches
//! from episode to episode.

use super::*;

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

impl AppState {
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
            arena: Some(self.arena.form.clone()),
            workspace: self.workspace.folder.clone(),
            train: Some(self.training.form.clone()),
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
            self.arena.form = a;
        }
        if !p.workspace.is_empty() {
            self.workspace.folder = p.workspace;
        }
        if let Some(t) = p.train {
            self.training.form = t;
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

    pub(super) fn carry_breakpoints(&mut self) {
        if self.debug.is_some() {
            let p = self.persisted();
            self.carried_breakpoints = p.breakpoints;
            self.carried_watches = p.watches;
        }
    }
}
