//! The Workspace tab: plugin files and crates in a folder, and the watch
//! on the open episode's plugin files.

use super::*;

/// The Workspace tab: the folder scanned, what it holds, and the plugin
/// files of the open episode that changed on disk.
pub struct WorkspaceTab {
    pub folder: String,
    pub plugins: Vec<PluginEntry>,
    pub crates: Vec<CrateEntry>,
    /// Plugin files that changed on disk since the episode was opened.
    pub changed_plugins: Vec<PathBuf>,
    watcher: Option<notify::RecommendedWatcher>,
}

impl Default for WorkspaceTab {
    fn default() -> Self {
        WorkspaceTab {
            folder: ".".into(),
            plugins: Vec::new(),
            crates: Vec::new(),
            changed_plugins: Vec::new(),
            watcher: None,
        }
    }
}

impl AppState {
    /// Carries out this tab's commands.
    pub(super) fn apply_workspace(&mut self, cmd: Command) -> Result<(), String> {
        if cmd != Command::ScanWorkspace {
            return Ok(());
        }
        let dir = PathBuf::from(self.workspace.folder.trim());
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
        Ok(())
    }

    /// Applies what this tab's workers reported.
    pub(super) fn on_workspace_event(&mut self, e: Event) {
        match e {
            Event::Workspace(p, c) => {
                self.workspace.plugins = p;
                self.workspace.crates = c;
            }
            Event::PluginChanged(path) if !self.workspace.changed_plugins.contains(&path) => {
                self.toast(
                    format!(
                        "{} changed on disk: re-run the episode with the new build from the debugger",
                        path.display()
                    ),
                    false,
                );
                self.workspace.changed_plugins.push(path);
            }
            _ => {}
        }
    }

    /// Watches the plugin files of the open episode's run; a change offers a re-run.
    pub(super) fn watch_episode_plugins(&mut self) {
        use notify::Watcher;
        let Some(d) = &self.debug else { return };
        let run = &d.run;
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
                self.workspace.watcher = Some(w);
            }
            Err(e) => tracing::info!("no file watcher: {e}"),
        }
    }
}
