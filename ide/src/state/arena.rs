//! The Arena tab: the run form and the run in progress.

use super::*;

/// The Arena tab: the run form, the run in progress and the last run's id.
#[derive(Default)]
pub struct ArenaTab {
    pub form: ArenaForm,
    pub job: Option<RunJob>,
    pub last_run: Option<String>,
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
    /// Model endpoints, one `--model` value per line
    /// (`[NAME=]URL[,model=M][,api-key-env=VAR]...`).
    #[serde(default)]
    pub models: String,
}

impl ArenaForm {
    /// The form's model endpoints, one per non-empty line.
    pub fn model_lines(&self) -> Vec<String> {
        self.models
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    }
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
            models: String::new(),
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

impl AppState {
    /// Carries out this tab's commands.
    pub(super) fn apply_arena(&mut self, cmd: Command) -> Result<(), String> {
        match cmd {
            Command::StartRun => self.start_run()?,
            Command::CancelRun => {
                if let Some(job) = &self.arena.job {
                    job.progress.cancel.store(true, Ordering::Relaxed);
                }
            }
            Command::UsePlugin(kind, path) => {
                let slot = match kind.as_str() {
                    "env" => &mut self.arena.form.env,
                    "agent" => &mut self.arena.form.agent,
                    "reward" => &mut self.arena.form.reward,
                    _ => {
                        return Err(format!(
                            "{}: not an env, agent or reward plugin",
                            path.display()
                        ));
                    }
                };
                *slot = path.display().to_string();
            }
            _ => {}
        }
        Ok(())
    }

    /// Applies what this tab's workers reported.
    pub(super) fn on_arena_event(&mut self, e: Event) {
        match e {
            Event::RunProgress => {}
            Event::RunDone(r) => {
                let cancelled = self.arena.job.take().is_some_and(|j| j.cancelled());
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
                        self.arena.last_run = Some(report.run_id.clone());
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
            _ => {}
        }
    }

    pub(super) fn start_run(&mut self) -> Result<(), String> {
        if self.arena.job.is_some() {
            return Err("a run is already in progress: cancel it or wait".into());
        }
        let a = &self.arena.form;
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
            models: ludus_trainer::llm::setup(&a.model_lines(), None)?,
            step_delay: std::time::Duration::ZERO,
        };
        let progress = Arc::new(Progress::default());
        self.arena.job = Some(RunJob {
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
            self.arena.job = None;
        }
        Ok(())
    }
}
