//! The Runs tab: the open database, its runs and the selected run's episodes.

use super::*;

impl AppState {
    /// Carries out this tab's commands.
    pub(super) fn apply_runs(&mut self, cmd: Command) -> Result<(), String> {
        match cmd {
            Command::OpenDb(path) => self.open_db(&path)?,
            Command::Refresh => self.read_db(self.selected_run.clone()),
            Command::SelectRun(run) => {
                if self.db_path.is_none() {
                    return Err("no database is open".into());
                }
                self.episodes.clear();
                self.selected_run = Some(run.clone());
                self.read_db(Some(run));
            }
            Command::Sort(key) => {
                self.sort = if self.sort.0 == key {
                    (key, !self.sort.1)
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
        self.runs.clear();
        self.episodes.clear();
        self.selected_run = None;
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
        let Event::DbRead { db, read } = e else {
            return;
        };
        // A database opened since then wins.
        if self.db_path.as_ref() != Some(&db) {
            return;
        }
        match read {
            Ok(read) => {
                self.runs = read.runs;
                if let Some((run, episodes)) = read.episodes
                    && self.selected_run.as_ref().is_none_or(|s| *s == run)
                {
                    self.selected_run = Some(run);
                    self.episodes = episodes;
                    self.sort_episodes();
                }
            }
            Err(e) => {
                // A file that never opened leaves no database open.
                if self.runs.is_empty() {
                    self.db_path = None;
                }
                self.toast(e, true);
            }
        }
    }

    pub(super) fn sort_episodes(&mut self) {
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
}
