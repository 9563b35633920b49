//! The ludus IDE: a native egui/eframe app over the arena and debugger
//! libraries. Its state lives in plain structs ([`state::AppState`],
//! [`state::DebugView`]); the UI ([`ui::app_ui`]) emits commands that
//! [`state::AppState::apply`] carries out in one place; runs, forks, scans
//! and diffs run on worker threads ([`worker`]) and report back through a
//! channel, so the UI never blocks on them.

pub mod state;
pub mod ui;
pub mod worker;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc;

pub use eframe::egui;

use state::{AppState, Command, Persisted};

/// `ludus ide [DB]`.
#[derive(clap::Args, Debug, Default)]
pub struct IdeArgs {
    /// A database to open (a file `ludus run --db` wrote).
    pub db: Option<PathBuf>,
    /// Open this episode in the debugger at start.
    #[arg(long)]
    pub episode: Option<i64>,
    /// Take a screenshot of the first frames into this file (binary PPM),
    /// print its path, and exit: for window tests under Xvfb.
    #[arg(long, value_name = "FILE")]
    pub screenshot: Option<PathBuf>,
    /// Do not read or write the saved layout, database and breakpoints.
    #[arg(long)]
    pub no_persist: bool,
    /// Instead of opening a window, measure the app's own CPU time per frame
    /// while scrubbing this episode of DB (UI logic and tessellation; no GPU).
    #[arg(long, value_name = "EPISODE")]
    pub bench_scrub: Option<i64>,
    /// Frames to draw in the benchmark.
    #[arg(long, default_value_t = 600)]
    pub bench_frames: usize,
    /// Print the benchmark's figures as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// What `ludus` prints when there is no display to open a window on.
pub fn no_display_message() -> Option<String> {
    let has = |v: &str| std::env::var_os(v).is_some_and(|s| !s.is_empty());
    if has("DISPLAY") || has("WAYLAND_DISPLAY") || cfg!(not(target_os = "linux")) {
        None
    } else {
        Some(
            "cannot open the IDE: no display (neither DISPLAY nor WAYLAND_DISPLAY is set); \
             run it on a desktop, or under Xvfb with `xvfb-run ludus ide DB`"
                .into(),
        )
    }
}

const STORAGE_KEY: &str = "ludus-ide";

/// Opens the IDE window (or runs the benchmark). Errors are one line for the CLI.
pub fn main(args: IdeArgs) -> anyhow::Result<ExitCode> {
    let mut args = args;
    // A PostgreSQL database is read from a local copy, made before the
    // window opens (so that `--episode` finds its episode).
    let mut source = None;
    if let Some(db) = &args.db
        && ludus_arena::copy::is_postgres(db)
    {
        let url = db.to_string_lossy().into_owned();
        let shown = ludus_arena::pg::redact(&url);
        eprintln!("reading {shown} into a local copy");
        let local = worker::mirror(&url).map_err(UserError)?;
        eprintln!(
            "local copy: {} (forks made in the IDE are saved there; `ludus copy FILE URL` sends them back)",
            local.display()
        );
        args.db = Some(local);
        source = Some(shown);
    }
    if let Some(db) = &args.db
        && !db.is_file()
    {
        anyhow::bail!(UserError(format!(
            "database {}: no such file; record one with `ludus run --db {}`",
            db.display(),
            db.display()
        )));
    }
    if let Some(msg) = no_display_message() {
        anyhow::bail!(UserError(msg));
    }
    let persist = !args.no_persist && args.screenshot.is_none();
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title("ludus")
            .with_inner_size([1280.0, 800.0]),
        persist_window: persist,
        persistence_path: if persist {
            None
        } else {
            Some(std::env::temp_dir().join("ludus-ide-unused.ron"))
        },
        ..Default::default()
    };
    let shot = args.screenshot.clone();
    let (done_tx, done_rx) = mpsc::channel::<Result<PathBuf, String>>();
    eframe::run_native(
        "ludus",
        options,
        Box::new(move |cc| {
            let mut state = AppState::new();
            state.set_ctx(&cc.egui_ctx);
            if persist
                && let Some(storage) = cc.storage
                && let Some(p) = eframe::get_value::<Persisted>(storage, STORAGE_KEY)
            {
                state.restore(p);
            }
            if let Some(db) = &args.db {
                state.apply(Command::OpenDb(db.clone()));
                state.db_source = source.clone();
            }
            if let Some(e) = args.episode {
                state.apply(Command::OpenEpisode(e));
            }
            Ok(Box::new(IdeApp {
                state,
                persist,
                screenshot: shot.map(|path| Screenshot {
                    path,
                    frames: 0,
                    requested: false,
                    tx: done_tx,
                }),
            }))
        }),
    )
    .map_err(|e| anyhow::anyhow!("cannot open the IDE window: {e}"))?;
    if let Some(path) = &args.screenshot {
        return match done_rx.try_recv() {
            Ok(Ok(p)) => {
                println!("screenshot: {}", p.display());
                Ok(ExitCode::SUCCESS)
            }
            Ok(Err(e)) => anyhow::bail!("screenshot {}: {e}", path.display()),
            Err(_) => anyhow::bail!(
                "screenshot {}: the window closed before a frame was captured",
                path.display()
            ),
        };
    }
    Ok(ExitCode::SUCCESS)
}

/// A mistake of the user's (bad path, no display): exit code 2.
#[derive(Debug)]
pub struct UserError(pub String);

impl std::fmt::Display for UserError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UserError {}

struct Screenshot {
    path: PathBuf,
    frames: u32,
    requested: bool,
    tx: mpsc::Sender<Result<PathBuf, String>>,
}

/// Frames drawn before the screenshot is taken (layout settles in a few).
const SCREENSHOT_AFTER: u32 = 5;

struct IdeApp {
    state: AppState,
    persist: bool,
    screenshot: Option<Screenshot>,
}

impl eframe::App for IdeApp {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        ui::app_ui(ui, &mut self.state);
        if let Some(s) = &mut self.screenshot {
            s.frames += 1;
            let ctx = ui.ctx().clone();
            // After the first frames and once what was asked at start (the
            // database, the episode) has been read off the UI thread.
            let settled = self.state.pending == 0 || s.frames >= 20 * SCREENSHOT_AFTER;
            if s.frames >= SCREENSHOT_AFTER && settled && !s.requested {
                s.requested = true;
                let (path, tx, c2) = (s.path.clone(), s.tx.clone(), ctx.clone());
                ctx.request_screenshot(move |image| {
                    let r = write_ppm(&path, &image).map(|()| path.clone());
                    let _ = tx.send(r);
                    c2.send_viewport_cmd(egui::ViewportCommand::Close);
                    c2.request_repaint();
                });
            }
            ctx.request_repaint();
        }
    }

    fn on_exit(&mut self) {
        if !self.state.shutdown(std::time::Duration::from_secs(30)) {
            tracing::warn!("closing with a run or training still in progress");
        }
    }

    fn save(&mut self, storage: &mut dyn eframe::Storage) {
        if self.persist {
            eframe::set_value(storage, STORAGE_KEY, &self.state.persisted());
        }
    }
}

/// Writes an image as binary PPM (P6): no image library needed to write it,
/// and every viewer reads it.
pub fn write_ppm(path: &Path, image: &egui::ColorImage) -> Result<(), String> {
    let [w, h] = image.size;
    let mut out = format!("P6\n{w} {h}\n255\n").into_bytes();
    out.reserve(w * h * 3);
    for p in &image.pixels {
        let [r, g, b, _] = p.to_srgba_unmultiplied();
        out.extend_from_slice(&[r, g, b]);
    }
    std::fs::write(path, out).map_err(|e| e.to_string())
}
