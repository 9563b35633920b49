//! The Runs tab: the open database, its runs and the selected run's episodes.

use super::*;

impl AppState {
    /// Carries out this tab's commands.
    pub(super) fn apply_runs(&mut self, cmd: Command) -> Result<(), String> {
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
