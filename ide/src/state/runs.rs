//! The Runs tab: the open database, its runs and the selected run's episodes.

use super::*;

/// What the Runs tab shows: the open database's runs and the selected
/// run's episodes, sorted.
#[derive(Debug)]
pub struct RunsTab {
    pub list: Vec<RunRow>,
    pub selected: Option<String>,
    pub episodes: Vec<EpisodeRow>,
    /// The column and whether it is descending.
    pub sort: (SortKey, bool),
}

impl Default for RunsTab {
    fn default() -> Self {
        RunsTab {
            list: Vec::new(),
            selected: None,
            episodes: Vec::new(),
            sort: (SortKey::Index, false),
        }
    }
}

impl AppState {
    /// Carries out this tab's commands.
    pub(super) fn apply_runs(&mut self, cmd: Command) -> Result<(), String> {
        match cmd {
            Command::OpenDb(path) => self.open_db(&path)?,
            Command::Refresh => self.read_db(self.runs.selected.clone()),
            Command::SelectRun(run) => {
                if self.db_path.is_none() {
                    return Err("no database is open".into());
                }
                self.runs.episodes.clear();
                self.runs.selected = Some(run.clone());
                self.read_db(Some(run));
            }
            Command::Sort(key) => {
                self.runs.sort = if self.runs.sort.0 == key {
                    (key, !self.runs.sort.1)
                } else {
                    (key, key != SortKey::Index && key != SortKey::Outcome)
                };
                self.sort_episodes();
            }
            _ => {}
        }
        Ok(())
    }

    pub(super) fn open_db(&mut self, path: &Path) -> Result<(), String> {
        // A PostgreSQL database is read from a local copy, made off the UI
        // thread; the copy opens when it is made.
        if ludus_arena::copy::is_postgres(path) {
            let url = path.to_string_lossy().into_owned();
            self.db_input = ludus_arena::pg::redact(&url);
            self.spawn("ludus-ide-mirror", move |tx| {
                let local = worker::mirror(&url);
                let _ = tx.send(Event::Mirrored { url, local });
            });
            return Ok(());
        }
        self.db_source = None;
        if !path.is_file() {
            return Err(format!(
                "database {}: no such file; record one with `ludus run --db {}`",
                path.display(),
                path.display()
            ));
        }
        self.carry_breakpoints();
        self.debug = None;
        self.db_path = Some(path.to_path_buf());
        self.db_input = path.display().to_string();
        self.runs.list.clear();
        self.runs.episodes.clear();
        self.runs.selected = None;
        self.tab = Tab::Runs;
        self.read_db(None);
        Ok(())
    }

    /// Reads the open database's runs and the episodes of `run` (the first
    /// run's when `None`) off the UI thread.
    fn read_db(&mut self, run: Option<String>) {
        let Some(path) = self.db_path.clone() else {
            return;
        };
        self.spawn("ludus-ide-db", move |tx| {
            let read = worker::read_db(&path, run);
            let _ = tx.send(Event::DbRead { db: path, read });
        });
    }

    /// Applies what a database read found.
    pub(super) fn on_runs_event(&mut self, e: Event) {
        if let Event::Mirrored { url, local } = e {
            match local {
                Ok(local) => {
                    if let Err(e) = self.open_db(&local) {
                        self.toast(e, true);
                    } else {
                        self.db_source = Some(ludus_arena::pg::redact(&url));
                    }
                }
                Err(e) => self.toast(e, true),
            }
            return;
        }
        let Event::DbRead { db, read } = e else {
            return;
        };
        // A database opened since then wins.
        if self.db_path.as_ref() != Some(&db) {
            return;
        }
        match read {
            Ok(read) => {
                self.runs.list = read.runs;
                if let Some((run, episodes)) = read.episodes
                    && self.runs.selected.as_ref().is_none_or(|s| *s == run)
                {
                    self.runs.selected = Some(run);
                    self.runs.episodes = episodes;
                    self.sort_episodes();
                }
            }
            Err(e) => {
                // A file that never opened leaves no database open.
                if self.runs.list.is_empty() {
                    self.db_path = None;
                }
                self.toast(e, true);
            }
        }
    }

    pub(super) fn sort_episodes(&mut self) {
        let (key, desc) = self.runs.sort;
        self.runs.episodes.sort_by(|a, b| {
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
}
