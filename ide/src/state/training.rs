//! The Training tab: the training form, a run's live or recorded curves,
//! and its episodes.

use super::*;

/// The Training tab: the form, and the run shown (live or recorded).
#[derive(Default)]
pub struct TrainingTab {
    pub form: TrainForm,
    pub view: Option<TrainView>,
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

/// The curves added for a language model's training (a run whose metrics
/// include `tokens_per_episode`).
pub const LLM_TRAIN_PLOTS: &[(&str, &[&str])] = &[
    ("Tokens per episode", &["tokens_per_episode"]),
    (
        "Tokens/s",
        &["generation_tokens_per_s", "trained_tokens_per_s"],
    ),
    ("KL to the reference", &["kl_reference"]),
    ("Time shares", &["sampling_share", "learner_share"]),
    ("GPU memory (MiB)", &["gpu_memory_mib"]),
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

impl AppState {
    /// Carries out this tab's commands.
    pub(super) fn apply_training(&mut self, cmd: Command) -> Result<(), String> {
        match cmd {
            Command::StartTraining => self.start_training()?,
            Command::StopTraining => {
                if let Some(stop) = self.training.view.as_ref().and_then(|t| t.stop.as_ref()) {
                    stop.store(true, Ordering::Relaxed);
                }
            }
            Command::ShowTrainCurves(run) => self.show_train_curves(&run)?,
            Command::RefreshTrainEpisodes => {
                // Off the UI thread: the trainer may be committing to it.
                let t = self
                    .training
                    .view
                    .as_ref()
                    .ok_or("no training run is shown")?;
                let (db, run) = (t.db.clone(), t.run_id.clone());
                self.spawn("ludus-ide-train-episodes", move |tx| {
                    let episodes = Db::open(&db)
                        .and_then(|d| d.episodes(&run))
                        .map_err(|e| format!("episodes of training run `{run}`: {e}"));
                    let _ = tx.send(Event::TrainEpisodes { run, episodes });
                });
            }
            Command::OpenTrainEpisode(id) => {
                let t = self
                    .training
                    .view
                    .as_ref()
                    .ok_or("no training run is shown")?;
                let (db, run) = (t.db.clone(), t.run_id.clone());
                if self.db_path.as_deref() != Some(db.as_path()) {
                    self.open_db(&db)?;
                }
                self.try_apply(Command::SelectRun(run))?;
                self.open_episode(id)?;
            }
            _ => {}
        }
        Ok(())
    }

    /// Applies what this tab's workers reported.
    pub(super) fn on_training_event(&mut self, e: Event) {
        match e {
            Event::TrainUpdate(r) => {
                if let Some(t) = self.training.view.as_mut().filter(|t| t.running()) {
                    for (name, value) in &r.metrics {
                        t.push(r.update, name, *value);
                    }
                    t.last = Some(*r);
                }
            }
            Event::TrainRecord {
                run,
                db,
                updates,
                status,
                read,
            } => {
                let shown = read.and_then(|r| self.show_record(run, db, updates, status, r));
                if let Err(e) = shown {
                    self.toast(e, true);
                }
            }
            Event::TrainHistory { run, rows } => {
                if let Some(t) = self.training.view.as_mut().filter(|t| t.run_id == run) {
                    for r in rows {
                        t.push(r.update, &r.name, r.value);
                    }
                    // Live updates may have come first.
                    for points in t.curves.values_mut() {
                        points.sort_by(|a, b| a.x.total_cmp(&b.x));
                    }
                }
            }
            Event::TrainEpisodes { run, episodes } => match episodes {
                Ok(e) => {
                    if let Some(t) = self.training.view.as_mut().filter(|t| t.run_id == run) {
                        t.episodes = e;
                    }
                }
                Err(e) => self.toast(e, true),
            },
            Event::TrainDone(r) => {
                let Some(t) = &mut self.training.view else {
                    return;
                };
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
            _ => {}
        }
    }

    pub(super) fn start_training(&mut self) -> Result<(), String> {
        if self.training.view.as_ref().is_some_and(TrainView::running) {
            return Err("a training run is already in progress: stop it or wait".into());
        }
        let f = &self.training.form;
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
        self.training.view = Some(view);
        let ctx = self.waker.clone();
        let started = self.spawn("ludus-ide-train", move |tx| {
            let mut report = |r: &UpdateReport| {
                let _ = tx.send(Event::TrainUpdate(Box::new(r.clone())));
                if let Some(wake) = &ctx {
                    wake();
                }
            };
            if opts.resume {
                // The curves so far, so the plot continues where the run stopped.
                if let Ok((rows, _)) = worker::training_record(&opts.db, &opts.config.name) {
                    let run = opts.config.name.clone();
                    let _ = tx.send(Event::TrainHistory { run, rows });
                }
            }
            let r = ludus_trainer::train::train(&opts, &mut report).map_err(|e| e.to_string());
            let _ = tx.send(Event::TrainDone(r));
        });
        if !started && let Some(t) = &mut self.training.view {
            t.stop = None;
        }
        Ok(())
    }

    /// The recorded curves of a training run of the open database.
    pub(super) fn show_train_curves(&mut self, run: &str) -> Result<(), String> {
        if self.training.view.as_ref().is_some_and(TrainView::running) {
            return Err("a training run is in progress: stop it before showing another".into());
        }
        let path = self.db_path.clone().ok_or("no database is open")?;
        let row = self
            .runs
            .list
            .iter()
            .find(|r| r.id == run)
            .ok_or_else(|| format!("run {run} is not in {}", path.display()))?;
        let updates = row.spec["config"]["stop"]["updates"].as_u64().unwrap_or(0);
        let status = row.status.clone();
        let run = run.to_string();
        self.spawn("ludus-ide-train-record", move |tx| {
            let read = worker::training_record(&path, &run);
            let _ = tx.send(Event::TrainRecord {
                run,
                db: path,
                updates,
                status,
                read,
            });
        });
        Ok(())
    }

    /// Shows a recorded training run that [`Event::TrainRecord`] brought.
    fn show_record(
        &mut self,
        run: String,
        db: PathBuf,
        updates: u64,
        status: String,
        (metrics, episodes): (Vec<MetricRow>, Vec<EpisodeRow>),
    ) -> Result<(), String> {
        if self.training.view.as_ref().is_some_and(TrainView::running) {
            return Err("a training run is in progress: stop it before showing another".into());
        }
        if metrics.is_empty() {
            return Err(format!(
                "run {run} has no training metrics (it is not a `ludus train` run)"
            ));
        }
        let mut view = TrainView::new(run, db, updates);
        for r in metrics {
            view.push(r.update, &r.name, r.value);
        }
        view.status = format!("recorded run, {status}");
        view.episodes = episodes;
        self.training.view = Some(view);
        self.tab = Tab::Training;
        Ok(())
    }
}
