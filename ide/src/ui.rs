//! Drawing. Every function here reads the state and pushes [`Command`]s;
//! [`app_ui`] applies them after the frame is laid out, in one place.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;

use eframe::egui::{
    self, Align2, Color32, CornerRadius, Key, Modifiers, RichText, Sense, Stroke, TextEdit, Ui,
    WidgetInfo, pos2, vec2,
};
use ludus_arena::model::{Action, PointerKind, Value};
use ludus_debugger::session::WatchResult;

use super::state::{
    AppState, Command, DebugView, LLM_TRAIN_PLOTS, SortKey, Step, TRAIN_PLOTS, Tab, TrainView,
};

const CHANGED: Color32 = Color32::from_rgb(230, 180, 40);
const EDITED: Color32 = Color32::from_rgb(90, 170, 255);

/// The whole app, one frame.
pub fn app_ui(ui: &mut Ui, state: &mut AppState) {
    state.set_ctx(ui.ctx());
    state.poll();
    let mut cmds = Vec::new();
    keys(ui, state, &mut cmds);
    egui::Panel::top("ludus_tabs").show(ui, |ui| tabs_ui(ui, state, &mut cmds));
    egui::Panel::bottom("ludus_status").show(ui, |ui| status_ui(ui, state));
    egui::CentralPanel::default().show(ui, |ui| match state.tab {
        Tab::Runs => runs_ui(ui, state, &mut cmds),
        Tab::Arena => arena_ui(ui, state, &mut cmds),
        Tab::Training => training_ui(ui, state, &mut cmds),
        Tab::Workspace => workspace_ui(ui, state, &mut cmds),
        Tab::Debugger => match &mut state.debug {
            Some(d) => debugger_ui(
                ui,
                d,
                state.show_memory,
                state.show_diff,
                !state.workspace.changed_plugins.is_empty(),
                &mut cmds,
            ),
            None => {
                ui.label("Open an episode from the Runs tab to debug it.");
            }
        },
    });
    toasts_ui(ui.ctx(), state, &mut cmds);
    for c in cmds {
        state.apply(c);
    }
    if state.arena.job.is_some() || state.training.view.as_ref().is_some_and(TrainView::running) {
        ui.ctx()
            .request_repaint_after(std::time::Duration::from_millis(200));
    }
}

/// Debugger keys: F10 step, Shift+F10 step back, F5 continue, Shift+F5
/// reverse-continue, Home/End first/last frame.
fn keys(ui: &mut Ui, state: &AppState, cmds: &mut Vec<Command>) {
    if state.tab != Tab::Debugger || state.debug.is_none() {
        return;
    }
    let typing = ui.ctx().egui_wants_keyboard_input();
    ui.input_mut(|i| {
        let mut on = |m: Modifiers, k: Key, s: Step| {
            if i.consume_key(m, k) {
                cmds.push(Command::Step(s));
            }
        };
        on(Modifiers::SHIFT, Key::F10, Step::Prev);
        on(Modifiers::NONE, Key::F10, Step::Next);
        on(Modifiers::SHIFT, Key::F5, Step::ReverseContinue);
        on(Modifiers::NONE, Key::F5, Step::Continue);
        if !typing {
            on(Modifiers::NONE, Key::Home, Step::First);
            on(Modifiers::NONE, Key::End, Step::Last);
        }
    });
}

fn labelled_text(ui: &mut Ui, label: &str, text: &mut String, width: f32) -> egui::Response {
    ui.horizontal(|ui| {
        let l = ui.label(label);
        ui.add(TextEdit::singleline(text).desired_width(width))
            .labelled_by(l.id)
    })
    .inner
}

fn tabs_ui(ui: &mut Ui, state: &mut AppState, cmds: &mut Vec<Command>) {
    ui.horizontal(|ui| {
        ui.strong("ludus");
        for (t, name) in [
            (Tab::Runs, "Runs"),
            (Tab::Arena, "Arena"),
            (Tab::Training, "Training"),
            (Tab::Workspace, "Workspace"),
            (Tab::Debugger, "Debugger"),
        ] {
            if ui.selectable_label(state.tab == t, name).clicked() {
                cmds.push(Command::SetTab(t));
            }
        }
        ui.separator();
        let r = labelled_text(ui, "Database", &mut state.db_input, 260.0);
        let enter = r.lost_focus() && ui.input(|i| i.key_pressed(Key::Enter));
        if ui.button("Open database").clicked() || enter {
            cmds.push(Command::OpenDb(state.db_input.trim().into()));
        }
        if state.db_path.is_some() && ui.button("Refresh").clicked() {
            cmds.push(Command::Refresh);
        }
        ui.separator();
        ui.checkbox(&mut state.show_memory, "Memory tree");
        ui.checkbox(&mut state.show_diff, "Diff panel");
    });
}

fn status_ui(ui: &mut Ui, state: &AppState) {
    ui.horizontal(|ui| {
        match &state.db_path {
            Some(p) => match &state.db_source {
                Some(url) => ui.label(format!(
                    "{url} ({} runs), read from a local copy: {} (forks are saved in the copy)",
                    state.runs.list.len(),
                    p.display()
                )),
                None => ui.label(format!("{} ({} runs)", p.display(), state.runs.list.len())),
            },
            None => ui.label("no database open"),
        };
        if let Some(job) = &state.arena.job {
            let done = job.progress.episodes_done.load(Ordering::Relaxed);
            let steps = job.progress.steps.load(Ordering::Relaxed);
            let secs = job.started.elapsed().as_secs_f64().max(1e-3);
            ui.separator();
            ui.label(format!(
                "running: {done}/{} episodes, {steps} steps, {:.0} steps/s",
                job.episodes,
                steps as f64 / secs
            ));
        }
        if let Some(t) = state.training.view.as_ref().filter(|t| t.running()) {
            ui.separator();
            ui.label(match &t.last {
                Some(r) => format!("training `{}`: update {}/{}", t.run_id, r.update, r.updates),
                None => format!("training `{}`: starting", t.run_id),
            });
        }
        if state.pending > 0 {
            ui.separator();
            ui.spinner();
            ui.label(format!("{} background jobs", state.pending));
        }
    });
}

fn toasts_ui(ctx: &egui::Context, state: &AppState, cmds: &mut Vec<Command>) {
    if state.toasts.is_empty() {
        return;
    }
    egui::Area::new(egui::Id::unique("ludus_toasts"))
        .anchor(Align2::RIGHT_BOTTOM, vec2(-12.0, -36.0))
        .show(ctx, |ui| {
            ui.set_max_width(460.0);
            for t in &state.toasts {
                egui::Frame::popup(ui.style()).show(ui, |ui| {
                    ui.horizontal_wrapped(|ui| {
                        let text = if t.error {
                            RichText::new(format!("error: {}", t.text))
                                .color(ui.visuals().error_fg_color)
                        } else {
                            RichText::new(&t.text)
                        };
                        ui.label(text);
                        let b = ui.small_button("x");
                        b.widget_info(|| {
                            WidgetInfo::labeled(
                                egui::Role::Button,
                                true,
                                format!("dismiss message {}", t.id),
                            )
                        });
                        if b.clicked() {
                            cmds.push(Command::DismissToast(t.id));
                        }
                    });
                });
            }
        });
}

fn runs_ui(ui: &mut Ui, state: &mut AppState, cmds: &mut Vec<Command>) {
    if state.db_path.is_none() {
        ui.label("Open a database (a file `ludus run --db` wrote) with the field above.");
        return;
    }
    egui::Panel::left("ludus_runs")
        .resizable(true)
        .default_size(300.0)
        .show(ui, |ui| {
            ui.heading("Runs");
            egui::ScrollArea::vertical().show(ui, |ui| {
                for r in state.runs.list.iter().rev() {
                    let env = r.spec["env"]["name"]
                        .as_str()
                        .or_else(|| r.spec["env"]["path"].as_str())
                        .unwrap_or("?");
                    let agent = r.spec["agent"]["name"]
                        .as_str()
                        .or_else(|| r.spec["agent"]["path"].as_str())
                        .unwrap_or("?");
                    let text = format!(
                        "run {}: {} episodes, {}\n{} / {}",
                        short(&r.id),
                        r.episodes,
                        r.status,
                        file_name(env),
                        file_name(agent)
                    );
                    if ui
                        .selectable_label(state.runs.selected.as_deref() == Some(&r.id), text)
                        .clicked()
                    {
                        cmds.push(Command::SelectRun(r.id.clone()));
                    }
                }
            });
        });
    let Some(run) = &state.runs.selected else {
        ui.label("Pick a run.");
        return;
    };
    ui.horizontal(|ui| {
        ui.heading(format!("Episodes of run {}", short(run)));
        let is_train = state
            .runs
            .list
            .iter()
            .any(|r| &r.id == run && r.spec["kind"] == "train");
        if is_train && ui.button("Show training curves").clicked() {
            cmds.push(Command::ShowTrainCurves(run.clone()));
        }
    });
    let row_h = ui.text_style_height(&egui::TextStyle::Body) + 6.0;
    let arrow = |k: SortKey| {
        if state.runs.sort.0 == k {
            if state.runs.sort.1 { " v" } else { " ^" }
        } else {
            ""
        }
    };
    ui.horizontal(|ui| {
        ui.label("Sort by:");
        for (k, name) in [
            (SortKey::Index, "index"),
            (SortKey::Outcome, "outcome"),
            (SortKey::Return, "return"),
            (SortKey::Length, "length"),
            (SortKey::Crashed, "crashed"),
        ] {
            if ui.button(format!("{name}{}", arrow(k))).clicked() {
                cmds.push(Command::Sort(k));
            }
        }
    });
    egui::ScrollArea::vertical().auto_shrink(false).show_rows(
        ui,
        row_h,
        state.runs.episodes.len(),
        |ui, range| {
            egui::Grid::new("ludus_episodes")
                .striped(true)
                .num_columns(7)
                .show(ui, |ui| {
                    for e in &state.runs.episodes[range] {
                        if ui.button(format!("Open episode {}", e.id)).clicked() {
                            cmds.push(Command::OpenEpisode(e.id));
                        }
                        ui.label(format!("#{}", e.index));
                        let outcome = if e.outcome == "crashed" {
                            RichText::new(&e.outcome).color(ui.visuals().error_fg_color)
                        } else {
                            RichText::new(&e.outcome)
                        };
                        ui.label(outcome);
                        ui.label(format!("return {:.3}", e.return_));
                        ui.label(format!("{} steps", e.length));
                        ui.label(if e.success { "success" } else { "" });
                        ui.label(match e.parent_episode {
                            Some(p) => format!("branch of {p} at {}", e.parent_frame.unwrap_or(0)),
                            None => e.error.clone().unwrap_or_default(),
                        });
                        ui.end_row();
                    }
                });
        },
    );
}

fn arena_ui(ui: &mut Ui, state: &mut AppState, cmds: &mut Vec<Command>) {
    ui.heading("Start a run");
    let a = &mut state.arena.form;
    labelled_text(ui, "Environment (.wasm)", &mut a.env, 420.0);
    labelled_text(ui, "Environment config", &mut a.env_config, 420.0);
    labelled_text(ui, "Agent (.wasm)", &mut a.agent, 420.0);
    labelled_text(ui, "Reward (.wasm, optional)", &mut a.reward, 420.0);
    ui.horizontal(|ui| {
        let l = ui.label("Seed");
        ui.add(egui::DragValue::new(&mut a.seed)).labelled_by(l.id);
        let l = ui.label("Episodes");
        ui.add(egui::DragValue::new(&mut a.episodes).range(1..=1_000_000))
            .labelled_by(l.id);
        let l = ui.label("Jobs");
        ui.add(egui::DragValue::new(&mut a.jobs).range(1..=256))
            .labelled_by(l.id);
    });
    labelled_text(ui, "Run database (empty: the open one)", &mut a.db, 420.0);
    ui.horizontal(|ui| {
        let l = ui.label("Model endpoints (one per line: [NAME=]URL[,model=M][,api-key-env=VAR])");
        ui.add(
            egui::TextEdit::multiline(&mut a.models)
                .desired_rows(2)
                .desired_width(420.0),
        )
        .labelled_by(l.id);
    });
    ui.label(match (a.db.trim(), &state.db_path) {
        ("", Some(p)) => format!("records into {}", p.display()),
        ("", None) => "records into ludus.db (no database open)".into(),
        (d, _) => format!("records into {d}"),
    });
    ui.horizontal(|ui| {
        if state.arena.job.is_none() {
            if ui.button("Start run").clicked() {
                cmds.push(Command::StartRun);
            }
        } else {
            if ui.button("Cancel run").clicked() {
                cmds.push(Command::CancelRun);
            }
            if let Some(job) = &state.arena.job {
                let done = job.progress.episodes_done.load(Ordering::Relaxed);
                let steps = job.progress.steps.load(Ordering::Relaxed);
                ui.add(
                    egui::ProgressBar::new(done as f32 / job.episodes.max(1) as f32)
                        .text(format!("{done}/{} episodes, {steps} steps", job.episodes)),
                );
                if job.cancelled() {
                    ui.label("cancelling: running episodes end as interrupted");
                }
            }
        }
    });
    if let Some(r) = &state.arena.last_run {
        ui.label(format!("last run: {r} (see the Runs tab)"));
    }
}

fn workspace_ui(ui: &mut Ui, state: &mut AppState, cmds: &mut Vec<Command>) {
    ui.heading("Plugins");
    ui.horizontal(|ui| {
        labelled_text(ui, "Folder", &mut state.workspace.folder, 360.0);
        if ui.button("Scan folder").clicked() {
            cmds.push(Command::ScanWorkspace);
        }
    });
    egui::ScrollArea::vertical().show(ui, |ui| {
        egui::Grid::new("ludus_plugins")
            .striped(true)
            .show(ui, |ui| {
                for p in &state.workspace.plugins {
                    ui.label(p.path.display().to_string());
                    ui.label(&p.kind);
                    ui.label(&p.contract);
                    ui.label(&p.description);
                    let button = match p.kind.as_str() {
                        "env" => Some("Use as environment"),
                        "agent" => Some("Use as agent"),
                        "reward" => Some("Use as reward"),
                        _ => None,
                    };
                    if let Some(b) = button
                        && ui.button(b).clicked()
                    {
                        cmds.push(Command::UsePlugin(p.kind.clone(), p.path.clone()));
                    }
                    ui.end_row();
                }
            });
        ui.separator();
        ui.heading("Plugin crates");
        if state.workspace.crates.is_empty() {
            ui.label("no plugin crate (a Cargo.toml depending on ludus-sdk) in this folder");
        }
        egui::Grid::new("ludus_crates")
            .striped(true)
            .show(ui, |ui| {
                for c in &state.workspace.crates {
                    ui.label(format!("crate {}", c.name));
                    ui.label(&c.kind);
                    ui.label(&c.contract);
                    ui.label(&c.description);
                    ui.label(c.dir.display().to_string());
                    match &c.wasm {
                        Some(w) => {
                            let role = match c.kind.as_str() {
                                "env" => Some("environment"),
                                "agent" => Some("agent"),
                                "reward" => Some("reward"),
                                _ => None,
                            };
                            if let Some(role) = role
                                && ui.button(format!("Use {} as {role}", c.name)).clicked()
                            {
                                cmds.push(Command::UsePlugin(c.kind.clone(), w.clone()));
                            }
                        }
                        None => {
                            ui.label("not built (bash scripts/build-plugins.sh)");
                        }
                    }
                    ui.end_row();
                }
            });
    });
}

fn training_ui(ui: &mut Ui, state: &mut AppState, cmds: &mut Vec<Command>) {
    let running = state.training.view.as_ref().is_some_and(TrainView::running);
    ui.heading("Train a policy");
    let f = &mut state.training.form;
    labelled_text(ui, "Training config (.toml)", &mut f.config, 420.0);
    labelled_text(ui, "Training database", &mut f.db, 420.0);
    ui.horizontal(|ui| {
        ui.checkbox(&mut f.resume, "Resume from the last checkpoint");
        if running {
            let stopping = state
                .training
                .view
                .as_ref()
                .and_then(|t| t.stop.as_ref())
                .is_some_and(|s| s.load(Ordering::Relaxed));
            if stopping {
                ui.spinner();
                ui.label("stopping after the update in progress");
            } else if ui.button("Stop training").clicked() {
                cmds.push(Command::StopTraining);
            }
        } else if ui.button("Start training").clicked() {
            cmds.push(Command::StartTraining);
        }
    });
    let Some(t) = &state.training.view else {
        ui.label("Start a run, or open a database and pick a training run in the Runs tab.");
        return;
    };
    ui.separator();
    ui.label(RichText::new(format!("run `{}` in {}", t.run_id, t.db.display())).strong());
    if !t.status.is_empty() {
        ui.label(&t.status);
    }
    if let Some(r) = &t.last {
        ui.label(format!(
            "update {} of {}, {} env steps, {} episodes, mean return {}",
            r.update,
            r.updates,
            r.env_steps,
            r.episodes,
            r.mean_return.map_or("-".into(), |v| format!("{v:.2}"))
        ));
        if running {
            ui.add(
                egui::ProgressBar::new(r.update as f32 / r.updates.max(1) as f32)
                    .text(format!("{:.0} s", t.started.elapsed().as_secs_f64())),
            );
        }
    }
    egui::Panel::right("ludus_train_episodes")
        .resizable(true)
        .default_size(320.0)
        .show(ui, |ui| train_episodes_ui(ui, t, cmds));
    egui::ScrollArea::vertical()
        .id_salt("ludus_train_plots")
        .show(ui, |ui| {
            let width = ((ui.available_width() - 12.0) / 2.0).max(200.0);
            egui::Grid::new("ludus_train_grid")
                .num_columns(2)
                .show(ui, |ui| {
                    let llm = t.curves.contains_key("tokens_per_episode");
                    let plots = TRAIN_PLOTS
                        .iter()
                        .chain(LLM_TRAIN_PLOTS.iter().filter(|_| llm));
                    for (i, (title, metrics)) in plots.enumerate() {
                        ui.vertical(|ui| {
                            ui.set_width(width);
                            plot_ui(ui, t, title, metrics);
                        });
                        if i % 2 == 1 {
                            ui.end_row();
                        }
                    }
                });
        });
}

/// One plot of the training panel, with a line per metric and, above it, a
/// label per metric saying how many points it has and the last value.
fn plot_ui(ui: &mut Ui, t: &TrainView, title: &str, metrics: &[&str]) {
    ui.label(RichText::new(title).strong());
    for m in metrics {
        let pts = t.curves.get(*m).map_or(&[][..], Vec::as_slice);
        ui.label(match pts.last() {
            Some(p) => format!("{m}: {} points, last {:.4}", pts.len(), p.y),
            None => format!("{m}: no points yet"),
        });
    }
    egui_plot::Plot::new(("ludus_train_plot", title))
        .height(150.0)
        .allow_drag(false)
        .allow_zoom(false)
        .allow_scroll(false)
        .allow_boxed_zoom(false)
        .x_axis_label("update")
        .legend(egui_plot::Legend::default())
        .show(ui, |p| {
            for m in metrics {
                if let Some(pts) = t.curves.get(*m) {
                    p.line(egui_plot::Line::new(
                        *m,
                        egui_plot::PlotPoints::Borrowed(pts),
                    ));
                }
            }
        });
}

fn train_episodes_ui(ui: &mut Ui, t: &TrainView, cmds: &mut Vec<Command>) {
    ui.horizontal(|ui| {
        ui.heading("Sampled episodes");
        if ui.button("Refresh episodes").clicked() {
            cmds.push(Command::RefreshTrainEpisodes);
        }
    });
    if t.episodes.is_empty() {
        ui.label("none read yet (refresh while it trains; read when it ends)");
        return;
    }
    ui.label(format!("{} episodes, newest first", t.episodes.len()));
    let row_h = ui.text_style_height(&egui::TextStyle::Body) + 8.0;
    let n = t.episodes.len();
    egui::ScrollArea::vertical()
        .id_salt("ludus_train_episode_rows")
        .auto_shrink(false)
        .show_rows(ui, row_h, n, |ui, range| {
            for i in range {
                let e = &t.episodes[n - 1 - i];
                ui.horizontal(|ui| {
                    if ui
                        .button(format!("Open episode {} in the debugger", e.id))
                        .clicked()
                    {
                        cmds.push(Command::OpenTrainEpisode(e.id));
                    }
                    ui.label(format!(
                        "#{} {}, return {:.1}, {} steps",
                        e.index, e.outcome, e.return_, e.length
                    ));
                });
            }
        });
}

fn debugger_ui(
    ui: &mut Ui,
    d: &mut DebugView,
    show_memory: bool,
    show_diff: bool,
    can_rerun: bool,
    cmds: &mut Vec<Command>,
) {
    let len = d.session.len();
    let k = d.cursor();
    ui.horizontal(|ui| {
        ui.strong(format!(
            "episode {} ({}, return {:.3}, seed {})",
            d.episode.id, d.episode.outcome, d.episode.return_, d.episode.seed
        ));
        ui.separator();
        for (label, step) in [
            ("First (Home)", Step::First),
            ("Step back (Shift+F10)", Step::Prev),
            ("Step (F10)", Step::Next),
            ("Reverse continue (Shift+F5)", Step::ReverseContinue),
            ("Continue (F5)", Step::Continue),
            ("Last (End)", Step::Last),
        ] {
            if ui.button(label).clicked() {
                cmds.push(Command::Step(step));
            }
        }
        if ui.button("Close episode").clicked() {
            cmds.push(Command::CloseEpisode);
        }
    });
    ui.horizontal(|ui| {
        ui.label(format!("frame {k} of {len}"));
        if !d.status.is_empty() {
            ui.separator();
            ui.label(&d.status);
        }
    });
    timeline_ui(ui, d, cmds);
    egui::Panel::right("ludus_debug_side")
        .resizable(true)
        .default_size(360.0)
        .show(ui, |ui| {
            egui::ScrollArea::vertical().show(ui, |ui| {
                breakpoints_ui(ui, d, cmds);
                ui.separator();
                fork_ui(ui, d, can_rerun, cmds);
                ui.separator();
                branches_ui(ui, d, cmds);
            });
        });
    egui::ScrollArea::vertical()
        .id_salt("ludus_frame_scroll")
        .show(ui, |ui| {
            frame_ui(ui, d);
            model_calls_ui(ui, d, cmds);
            if show_memory {
                ui.separator();
                memory_ui(ui, d, cmds);
            }
            if show_diff {
                ui.separator();
                diff_ui(ui, d, cmds);
            }
        });
}

/// The frame's model calls as a conversation: each message by role, the
/// answer (or the error), tokens, latency, cost and where the answer came
/// from; an answer can be edited for a fork from this frame.
fn model_calls_ui(ui: &mut Ui, d: &mut DebugView, cmds: &mut Vec<Command>) {
    use ludus_arena::chat::{error_kind, error_message, message_text};
    let Some(view) = &d.view else { return };
    let calls = &view.frame.model_calls;
    if calls.is_empty() {
        return;
    }
    ui.separator();
    let (tin, tout, cost, ms) = calls.iter().fold((0, 0, 0.0, 0.0), |a, c| {
        (
            a.0 + c.tokens_in(),
            a.1 + c.tokens_out(),
            a.2 + c.cost_usd,
            a.3 + c.latency_ms,
        )
    });
    ui.label(
        RichText::new(format!(
            "model calls: {} ({tin} tokens in, {tout} out, {ms:.0} ms, ${cost:.4})",
            calls.len()
        ))
        .strong(),
    );
    let mut edit_cmd = None;
    for (i, c) in calls.iter().enumerate() {
        egui::CollapsingHeader::new(format!(
            "call {i}: {} via `{}` ({:?}, {} + {} tokens, {:.0} ms)",
            c.role.as_str(),
            c.request.endpoint,
            c.served,
            c.tokens_in(),
            c.tokens_out(),
            c.latency_ms
        ))
        .id_salt(("ludus_model_call", i))
        .default_open(true)
        .show(ui, |ui| {
            for (j, m) in c.request.messages.iter().enumerate() {
                let colour = match m.role.as_str() {
                    "system" => Color32::from_rgb(150, 150, 150),
                    "user" => Color32::from_rgb(120, 170, 255),
                    "assistant" => Color32::from_rgb(120, 220, 140),
                    _ => Color32::from_rgb(230, 190, 100),
                };
                ui.horizontal_wrapped(|ui| {
                    ui.label(RichText::new(format!("{}:", m.role)).color(colour).strong());
                    ui.monospace(clipped(&message_text(m)));
                });
                // Images inline: the observation's part the call refers to
                // (shared with the frame's own view), or the pixels sent.
                for (p, part) in m.content.iter().enumerate() {
                    match part {
                        ludus_arena::model::ContentPart::ObservationImage(name) => {
                            if let Some(img) =
                                ludus_arena::model::observation_image(&view.frame.observation, name)
                            {
                                thumbnail(ui, (view.index, name.clone()), img, 160.0);
                            }
                        }
                        ludus_arena::model::ContentPart::Image(img) => {
                            thumbnail(ui, (view.index, format!("model/{i}/{j}/{p}")), img, 160.0);
                        }
                        ludus_arena::model::ContentPart::Text(_) => {}
                    }
                }
            }
            match &c.result {
                Ok(r) => {
                    ui.horizontal_wrapped(|ui| {
                        ui.label(
                            RichText::new("answer:")
                                .color(Color32::from_rgb(120, 220, 140))
                                .strong(),
                        );
                        ui.monospace(clipped(&r.content));
                    });
                    for t in &r.tool_calls {
                        ui.monospace(format!("tool call {} {}", t.name, clipped(&t.arguments)));
                    }
                    tokens_ui(
                        ui,
                        &r.tokens,
                        d.advantages.get(&u64::from(view.frame.step)).copied(),
                    );
                    ui.label(format!("finish: {}, model: {}", r.finish_reason, r.model));
                }
                Err(e) => {
                    ui.colored_label(
                        Color32::from_rgb(255, 120, 120),
                        format!("{}: {}", error_kind(e), error_message(e)),
                    );
                }
            }
            for a in &c.attempts {
                ui.small(format!("retry: {a}"));
            }
            match &mut d.model_editing {
                Some((n, text)) if *n == i => {
                    let l = ui.label("Answer for the fork");
                    ui.add(egui::TextEdit::multiline(text).desired_rows(3))
                        .labelled_by(l.id);
                    ui.horizontal(|ui| {
                        if ui.button("Keep this answer").clicked() {
                            edit_cmd = Some(Command::EditModelResponse(i, Some(text.clone())));
                        }
                        if ui.button("Cancel").clicked() {
                            edit_cmd = Some(Command::EditModelResponse(i, None));
                        }
                    });
                }
                _ => {
                    if let Some(t) = d.model_edits.get(&i) {
                        ui.monospace(format!("fork answer: {}", clipped(t)));
                    }
                    if ui.button(format!("Edit answer {i} for a fork")).clicked() {
                        let current = c
                            .result
                            .as_ref()
                            .map(|r| r.content.clone())
                            .unwrap_or_default();
                        d.model_editing = Some((i, current));
                    }
                }
            }
        });
    }
    if let Some(c) = edit_cmd {
        cmds.push(c);
    }
}

/// The most tokens of one answer drawn (the rest are counted).
const MAX_TOKENS_SHOWN: usize = 512;

/// An answer's generated tokens, each on a background that says how it
/// fared: in a sampled training episode, the step's advantage (green
/// reinforced, red discouraged, stronger further from 0); elsewhere the
/// token's probability (green likely, red unlikely). Hovering a token shows
/// its id and log-probability.
fn tokens_ui(ui: &mut Ui, tokens: &[ludus_arena::chat::GeneratedToken], advantage: Option<f32>) {
    if tokens.is_empty() {
        return;
    }
    let legend = match advantage {
        Some(a) if a.is_finite() => format!("tokens, coloured by the step's advantage {a:+.2}:"),
        _ => "tokens, coloured by probability:".to_string(),
    };
    ui.small(legend);
    let shade = |good: f32| {
        // good in [-1, 1]: red through grey to green.
        let g = good.clamp(-1.0, 1.0);
        let (r, gr) = if g >= 0.0 {
            (60.0, 60.0 + 120.0 * g)
        } else {
            (60.0 - 120.0 * g, 60.0)
        };
        Color32::from_rgb(r as u8, gr as u8, 60)
    };
    ui.horizontal_wrapped(|ui| {
        ui.spacing_mut().item_spacing.x = 1.0;
        for t in tokens.iter().take(MAX_TOKENS_SHOWN) {
            let good = match advantage {
                Some(a) if a.is_finite() => a / 2.0,
                _ => 2.0 * t.logprob.exp() - 1.0,
            };
            let text: String = t
                .text
                .chars()
                .take(32)
                .map(|c| match c {
                    ' ' => '\u{00b7}',
                    '\n' => '\u{21b5}',
                    c if c.is_control() => '\u{fffd}',
                    c => c,
                })
                .collect();
            let id = t.id.map_or("-".into(), |i| i.to_string());
            ui.label(
                RichText::new(text)
                    .monospace()
                    .background_color(shade(good))
                    .color(Color32::WHITE),
            )
            .on_hover_text(format!(
                "token {id}, log p {:.3} (p {:.3})",
                t.logprob,
                t.logprob.exp()
            ));
        }
        if tokens.len() > MAX_TOKENS_SHOWN {
            ui.small(format!("... {} more", tokens.len() - MAX_TOKENS_SHOWN));
        }
    });
}

fn timeline_ui(ui: &mut Ui, d: &DebugView, cmds: &mut Vec<Command>) {
    let len = d.session.len().max(1);
    let width = ui.available_width().max(100.0);
    let (rect, resp) = ui.allocate_exact_size(vec2(width, 56.0), Sense::click_and_drag());
    let k = d.cursor();
    resp.widget_info(|| {
        WidgetInfo::slider(true, k as f64, format!("Timeline, frame {k} of {len}"))
    });
    let painter = ui.painter_at(rect);
    painter.rect_filled(rect, CornerRadius::same(2), ui.visuals().extreme_bg_color);
    let cols = rect.width().max(1.0) as usize;
    let x_of = |f: u64| rect.left() + (f as f32 + 0.5) / len as f32 * rect.width();
    // Rewards: per pixel column, the extreme reward of its frames.
    if let Some(rewards) = &d.rewards {
        let (mut lo, mut hi) = (0f32, 0f32);
        for r in rewards {
            lo = lo.min(*r);
            hi = hi.max(*r);
        }
        let span = (hi - lo).max(1e-6);
        let mid_y = rect.bottom() - 8.0 - (0.0 - lo) / span * (rect.height() - 16.0);
        let n = rewards.len();
        let mut col_min = vec![f32::INFINITY; cols];
        let mut col_max = vec![f32::NEG_INFINITY; cols];
        for (i, r) in rewards.iter().enumerate() {
            let c = (i * cols / n.max(1)).min(cols - 1);
            col_min[c] = col_min[c].min(*r);
            col_max[c] = col_max[c].max(*r);
        }
        for c in 0..cols {
            if col_min[c] > col_max[c] {
                continue;
            }
            let x = rect.left() + c as f32 + 0.5;
            let y = |r: f32| rect.bottom() - 8.0 - (r - lo) / span * (rect.height() - 16.0);
            let (a, b) = (y(col_max[c]).min(mid_y), y(col_min[c]).max(mid_y));
            let color = if col_min[c] < 0.0 {
                Color32::from_rgb(220, 90, 80)
            } else {
                Color32::from_rgb(90, 190, 110)
            };
            painter.line_segment(
                [pos2(x, a), pos2(x, b.max(a + 1.0))],
                Stroke::new(1.0, color),
            );
        }
    }
    // Breakpoint hits: a tick per pixel column holding one.
    for frames in d.hits.values() {
        let mut cols_hit = vec![false; cols];
        for f in frames {
            let c = ((*f as usize) * cols / len as usize).min(cols - 1);
            cols_hit[c] = true;
        }
        for (c, hit) in cols_hit.iter().enumerate() {
            if *hit {
                let x = rect.left() + c as f32 + 0.5;
                painter.line_segment(
                    [pos2(x, rect.top()), pos2(x, rect.top() + 8.0)],
                    Stroke::new(1.5, Color32::from_rgb(230, 70, 70)),
                );
            }
        }
    }
    let x = x_of(k);
    painter.line_segment(
        [pos2(x, rect.top()), pos2(x, rect.bottom())],
        Stroke::new(2.0, ui.visuals().strong_text_color()),
    );
    if (resp.dragged() || resp.clicked())
        && let Some(p) = resp.interact_pointer_pos()
    {
        let f = (((p.x - rect.left()) / rect.width()) * len as f32).floor();
        let f = (f.max(0.0) as u64).min(len - 1);
        if f != k {
            cmds.push(Command::Step(Step::Goto(f)));
        }
    }
}

fn frame_ui(ui: &mut Ui, d: &mut DebugView) {
    let Some(view) = &d.view else {
        ui.label("This episode has no frames.");
        return;
    };
    let f = &view.frame;
    ui.heading(format!("Frame {} (step {})", view.index, f.step));
    egui::Grid::new("ludus_frame_facts").show(ui, |ui| {
        ui.label("action");
        ui.monospace(ludus_debugger::view::action_label(&f.action));
        ui.end_row();
        ui.label("reward");
        ui.monospace(format!("{} (env {})", f.reward, f.env_reward));
        ui.end_row();
        ui.label("flags");
        ui.monospace(format!(
            "terminated {} truncated {} success {:?}",
            f.terminated, f.truncated, f.success
        ));
        ui.end_row();
        if !f.info.is_empty() {
            ui.label("info");
            ui.monospace(clipped(&f.info));
            ui.end_row();
        }
        if let Some(n) = &f.note {
            ui.label("note");
            ui.monospace(clipped(n));
            ui.end_row();
        }
        ui.label("timing");
        ui.monospace(format!(
            "act {} µs, step {} µs, score {} µs",
            view.timing.act_ns / 1000,
            view.timing.step_ns / 1000,
            view.timing.score_ns / 1000
        ));
        ui.end_row();
    });
    for part in &f.observation {
        ui.label(RichText::new(format!("observation `{}`", part.name)).strong());
        match &part.value {
            Value::Discrete(n) => {
                ui.monospace(n.to_string());
            }
            Value::Vector(v) => vector_ui(ui, &part.name, v),
            Value::Text(t) => {
                egui::Frame::group(ui.style()).show(ui, |ui| {
                    ui.monospace(clipped(t));
                });
            }
            Value::Tree(elements) => {
                let depths = tree_depths(elements);
                if elements.len() > MAX_TREE_ROWS {
                    ui.label(format!(
                        "the first {MAX_TREE_ROWS} of {} elements",
                        elements.len()
                    ));
                }
                for (e, depth) in elements.iter().zip(depths).take(MAX_TREE_ROWS) {
                    ui.horizontal(|ui| {
                        ui.add_space(depth as f32 * 14.0);
                        ui.monospace(format!(
                            "#{} {} \"{}\" = \"{}\" at {},{} {}x{}{}{}",
                            e.id,
                            e.role,
                            e.name,
                            e.value,
                            e.bounds.x,
                            e.bounds.y,
                            e.bounds.width,
                            e.bounds.height,
                            if e.focused { " focused" } else { "" },
                            if e.disabled { " disabled" } else { "" }
                        ));
                    });
                }
            }
            Value::Image(img) => {
                let tex = match texture(ui, (view.index, part.name.clone()), img) {
                    Ok(t) => t,
                    Err(why) => {
                        ui.label(format!("image `{}`: {why}", part.name));
                        continue;
                    }
                };
                let w = img.width.max(1) as f32;
                let h = img.height.max(1) as f32;
                let scale = (256.0 / w).min(256.0 / h).max(1.0);
                let (rect, _) = ui.allocate_exact_size(vec2(w * scale, h * scale), Sense::hover());
                let painter = ui.painter_at(rect);
                painter.image(
                    tex.id(),
                    rect,
                    egui::Rect::from_min_max(pos2(0.0, 0.0), pos2(1.0, 1.0)),
                    Color32::WHITE,
                );
                if let Action::Pointer(p) = &f.action {
                    let at = |x: i32, y: i32| {
                        pos2(
                            rect.left() + (x as f32 + 0.5) * scale,
                            rect.top() + (y as f32 + 0.5) * scale,
                        )
                    };
                    let stroke = Stroke::new(2.0, Color32::from_rgb(255, 60, 200));
                    painter.circle_stroke(at(p.x, p.y), 6.0, stroke);
                    if p.kind == PointerKind::Drag {
                        painter.arrow(at(p.x, p.y), at(p.to_x, p.to_y) - at(p.x, p.y), stroke);
                    }
                }
                ui.label(format!("{}x{}x{}", img.width, img.height, img.channels));
            }
        }
    }
    if !f.logs.is_empty() {
        ui.label(RichText::new("logs").strong());
        for l in &f.logs {
            ui.monospace(format!("[{:?} {:?}] {}", l.role, l.level, l.message));
        }
    }
    if !d.watch_values.is_empty() {
        ui.label(RichText::new("watches").strong());
        for w in &d.watch_values {
            let v = match &w.value {
                WatchResult::Value(v) => v.to_string(),
                WatchResult::Error(e) => format!("error: {e}"),
            };
            ui.monospace(format!("{} = {v}", w.expr));
        }
    }
}

/// Elements of a tree drawn per frame; the rest are counted.
const MAX_TREE_ROWS: usize = 500;
/// Deepest indentation drawn.
const MAX_TREE_DEPTH: usize = 32;
/// Bytes of a text part, info or note drawn per frame; the rest are counted.
const MAX_TEXT_BYTES: usize = 64 << 10;

/// Each element's depth (capped), from one map of parents: a tree from a
/// plugin may be huge, deep or cyclic, and must not stall a frame.
fn tree_depths(elements: &[ludus_arena::model::Element]) -> Vec<usize> {
    let parents: std::collections::HashMap<u32, Option<u32>> =
        elements.iter().map(|e| (e.id, e.parent)).collect();
    elements
        .iter()
        .take(MAX_TREE_ROWS)
        .map(|e| {
            let (mut depth, mut parent) = (0, e.parent);
            while let Some(p) = parent
                && depth < MAX_TREE_DEPTH
            {
                depth += 1;
                parent = parents.get(&p).copied().flatten();
            }
            depth
        })
        .collect()
}

/// At most [`MAX_TEXT_BYTES`] of `text`, saying how much was left out.
fn clipped(text: &str) -> std::borrow::Cow<'_, str> {
    if text.len() <= MAX_TEXT_BYTES {
        return text.into();
    }
    let mut cut = MAX_TEXT_BYTES;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!(
        "{}\n... ({} more bytes not shown)",
        &text[..cut],
        text.len() - cut
    )
    .into()
}

fn vector_ui(ui: &mut Ui, name: &str, v: &[f32]) {
    let max = v
        .iter()
        .take(64)
        .filter(|x| x.is_finite())
        .fold(0f32, |m, x| m.max(x.abs()))
        .max(1e-6);
    egui::Grid::new(("ludus_vector", name)).show(ui, |ui| {
        for (i, x) in v.iter().take(64).enumerate() {
            ui.monospace(format!("[{i}]"));
            ui.monospace(format!("{x:.4}"));
            let (rect, _) = ui.allocate_exact_size(vec2(120.0, 10.0), Sense::hover());
            let w = if x.is_nan() {
                0.0
            } else {
                (x.abs() / max).min(1.0) * 60.0
            };
            let mid = rect.center().x;
            let bar = if *x >= 0.0 {
                egui::Rect::from_min_max(pos2(mid, rect.top()), pos2(mid + w, rect.bottom()))
            } else {
                egui::Rect::from_min_max(pos2(mid - w, rect.top()), pos2(mid, rect.bottom()))
            };
            ui.painter()
                .rect_filled(bar, 0.0, Color32::from_rgb(100, 150, 220));
            ui.end_row();
        }
    });
    if v.len() > 64 {
        ui.label(format!("... {} more", v.len() - 64));
    }
}

fn memory_ui(ui: &mut Ui, d: &mut DebugView, cmds: &mut Vec<Command>) {
    ui.heading("Memory");
    let Some(view) = &d.view else { return };
    let changed: BTreeSet<String> = view.changed_paths().into_iter().map(String::from).collect();
    let mut entries: Vec<(String, Option<String>)> = view
        .memory
        .iter()
        .map(|(p, v)| (p.clone(), Some(v.clone())))
        .collect();
    // Paths the frame deleted still show, struck through.
    for p in &changed {
        if !view.memory.contains_key(p) {
            entries.push((p.clone(), None));
        }
    }
    for p in d.edits.keys() {
        if !entries.iter().any(|(q, _)| q == p) {
            entries.push((p.clone(), None));
        }
    }
    entries.sort();
    if entries.is_empty() {
        ui.label("(empty at this frame)");
    }
    ui.label("Values after this frame's writes; changed here in amber, staged edits in blue.");
    memory_tree(ui, d, &entries, 0, &changed, cmds);
}

fn memory_tree(
    ui: &mut Ui,
    d: &mut DebugView,
    entries: &[(String, Option<String>)],
    depth: usize,
    changed: &BTreeSet<String>,
    cmds: &mut Vec<Command>,
) {
    let mut i = 0;
    while i < entries.len() {
        let path = &entries[i].0;
        let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        if segs.len() <= depth + 1 {
            leaf_ui(
                ui,
                d,
                &entries[i],
                segs.last().copied().unwrap_or(""),
                changed,
                cmds,
            );
            i += 1;
            continue;
        }
        let dir = format!("/{}", segs[..=depth].join("/"));
        let prefix = format!("{dir}/");
        let j = i + entries[i..]
            .iter()
            .take_while(|(p, _)| p.starts_with(&prefix))
            .count();
        let any_changed = entries[i..j].iter().any(|(p, _)| changed.contains(p));
        let title = if any_changed {
            RichText::new(format!("{}/", segs[depth])).color(CHANGED)
        } else {
            RichText::new(format!("{}/", segs[depth]))
        };
        egui::CollapsingHeader::new(title)
            .id_salt(("ludus_mem", &dir))
            .default_open(true)
            .show(ui, |ui| {
                memory_tree(ui, d, &entries[i..j], depth + 1, changed, cmds)
            });
        i = j;
    }
}

fn leaf_ui(
    ui: &mut Ui,
    d: &mut DebugView,
    (path, value): &(String, Option<String>),
    name: &str,
    changed: &BTreeSet<String>,
    cmds: &mut Vec<Command>,
) {
    ui.horizontal(|ui| {
        let mut label = RichText::new(name).monospace();
        if changed.contains(path) {
            label = label.color(CHANGED).strong();
        }
        ui.label(label);
        let shown = match value {
            Some(v) if v.len() > 120 => format!("{}...", &v[..v.floor_char_boundary(120)]),
            Some(v) => v.clone(),
            None => "(unset)".into(),
        };
        ui.monospace(format!("= {shown}"));
        if let Some(edit) = d.edits.get(path) {
            let t = match edit {
                Some(v) => format!("-> {v} at fork"),
                None => "-> deleted at fork".into(),
            };
            ui.label(RichText::new(t).color(EDITED));
        }
        let editing_this = d.editing.as_ref().is_some_and(|(p, _)| p == path);
        if editing_this {
            if let Some((_, text)) = &mut d.editing {
                let l = ui.label(format!("value of {path}"));
                let r = ui
                    .add(TextEdit::singleline(text).desired_width(180.0))
                    .labelled_by(l.id);
                let enter = r.lost_focus() && ui.input(|i| i.key_pressed(Key::Enter));
                if ui.button("Set").clicked() || enter {
                    cmds.push(Command::EditMemory(path.clone(), Some(text.clone())));
                }
                if ui.button("Delete").clicked() {
                    cmds.push(Command::EditMemory(path.clone(), None));
                }
            }
            if ui.button("Cancel").clicked() {
                d.editing = None;
            }
        } else {
            let b = ui.small_button("edit");
            b.widget_info(|| WidgetInfo::labeled(egui::Role::Button, true, format!("edit {path}")));
            if b.clicked() {
                let current = d
                    .edits
                    .get(path)
                    .cloned()
                    .flatten()
                    .or_else(|| value.clone())
                    .unwrap_or_default();
                d.editing = Some((path.clone(), current));
            }
        }
    });
}

fn diff_ui(ui: &mut Ui, d: &mut DebugView, cmds: &mut Vec<Command>) {
    ui.heading("Diff");
    ui.label(RichText::new("this frame vs the previous one").strong());
    if d.step_changes.is_empty() {
        ui.label("(no change)");
    }
    for c in d.step_changes.iter().take(50) {
        ui.monospace(c);
    }
    if let Some(parent) = d.episode.parent_episode {
        ui.label(RichText::new(format!("this episode vs its parent {parent}")).strong());
        match &d.parent_diff {
            None => {
                if ui
                    .button(format!("Compare with episode {parent}"))
                    .clicked()
                {
                    cmds.push(Command::DiffParent);
                }
            }
            Some((lines, first)) => {
                if let Some(f) = first
                    && ui
                        .button(format!("Jump to first divergence (frame {f})"))
                        .clicked()
                {
                    cmds.push(Command::Step(Step::Goto(*f)));
                }
                for l in lines.iter().take(60) {
                    ui.monospace(l);
                }
            }
        }
    }
    ui.label(RichText::new("this episode vs another one").strong());
    ui.horizontal(|ui| {
        let r = labelled_text(ui, "Compare with episode", &mut d.diff_episode_input, 80.0);
        let enter = r.lost_focus() && ui.input(|i| i.key_pressed(Key::Enter));
        labelled_text(
            ui,
            "of database (empty: this one)",
            &mut d.diff_db_input,
            220.0,
        );
        let b = ui.add_enabled(!d.diffing, egui::Button::new("Compare"));
        if b.clicked() || enter {
            cmds.push(Command::DiffOther);
        }
        if d.diffing {
            ui.spinner();
        }
    });
    if let Some(o) = &d.other_diff {
        match o.first {
            Some(f) => {
                if ui
                    .button(format!(
                        "Jump to first divergence with {} (frame {f})",
                        o.other
                    ))
                    .clicked()
                {
                    cmds.push(Command::Step(Step::Goto(f)));
                }
            }
            None => {
                ui.label(format!("no divergence with {}", o.other));
            }
        }
        for l in o.lines.iter().take(60) {
            ui.monospace(l);
        }
    }
}

fn breakpoints_ui(ui: &mut Ui, d: &mut DebugView, cmds: &mut Vec<Command>) {
    ui.heading("Breakpoints");
    type Row = (u32, String, bool, u64, Option<(u64, String)>);
    let bps: Vec<Row> = d
        .session
        .breakpoints()
        .iter()
        .map(|b| {
            (
                b.id,
                b.expr.source().to_string(),
                b.enabled,
                b.hits,
                b.error.clone(),
            )
        })
        .collect();
    for (id, src, enabled, hits, error) in bps {
        ui.horizontal(|ui| {
            let mut on = enabled;
            if ui.checkbox(&mut on, format!("{id}: {src}")).changed() {
                cmds.push(Command::SetBreakpointEnabled(id, on));
            }
            let n = d.hits.get(&src).map(|h| h.len());
            ui.label(match n {
                Some(n) => format!("{n} frames"),
                None => "...".into(),
            });
            let _ = hits;
            let b = ui.small_button("x");
            b.widget_info(|| {
                WidgetInfo::labeled(egui::Role::Button, true, format!("remove breakpoint {id}"))
            });
            if b.clicked() {
                cmds.push(Command::RemoveBreakpoint(id));
            }
        });
        if let Some((frame, e)) = error {
            ui.label(
                RichText::new(format!("  cannot evaluate at frame {frame}: {e}"))
                    .color(ui.visuals().warn_fg_color),
            );
        }
    }
    let r = labelled_text(ui, "Breakpoint", &mut d.breakpoint_input, 220.0);
    let enter = r.lost_focus() && ui.input(|i| i.key_pressed(Key::Enter));
    if ui.button("Add breakpoint").clicked() || enter {
        cmds.push(Command::AddBreakpoint);
    }
    if let Some(e) = &d.breakpoint_error {
        expr_error_ui(ui, e);
    }
    ui.heading("Watches");
    let r = labelled_text(ui, "Watch", &mut d.watch_input, 220.0);
    let enter = r.lost_focus() && ui.input(|i| i.key_pressed(Key::Enter));
    if ui.button("Add watch").clicked() || enter {
        cmds.push(Command::AddWatch);
    }
    if let Some(e) = &d.watch_error {
        expr_error_ui(ui, e);
    }
    for w in &d.watch_values {
        let v = match &w.value {
            WatchResult::Value(v) => v.to_string(),
            WatchResult::Error(e) => format!("error: {e}"),
        };
        ui.monospace(format!("{} = {v}", w.expr));
    }
}

fn expr_error_ui(ui: &mut Ui, e: &ludus_debugger::ExprError) {
    let color = ui.visuals().error_fg_color;
    ui.label(RichText::new(e.pointer()).monospace().color(color));
    ui.label(RichText::new(format!("column {}: {}", e.column, e.message)).color(color));
}

fn fork_ui(ui: &mut Ui, d: &mut DebugView, can_rerun: bool, cmds: &mut Vec<Command>) {
    ui.heading("Fork");
    ui.label(format!(
        "Replays to frame {}, applies the edits, plays a new branch to its end.",
        d.cursor()
    ));
    for (p, v) in &d.edits {
        ui.monospace(match v {
            Some(v) => format!("set {p} = {v}"),
            None => format!("delete {p}"),
        });
    }
    for (i, t) in &d.model_edits {
        ui.monospace(format!("model call {i} answers {}", clipped(t)));
    }
    labelled_text(ui, "Replacement action", &mut d.action_input, 160.0);
    ui.horizontal(|ui| {
        let b = ui.add_enabled(!d.forking, egui::Button::new("Fork here"));
        if b.clicked() {
            cmds.push(Command::Fork);
        }
        if (!d.edits.is_empty() || !d.action_input.is_empty() || !d.model_edits.is_empty())
            && ui.button("Clear edits").clicked()
        {
            cmds.push(Command::ClearEdits);
        }
        if d.forking {
            ui.spinner();
        }
    });
    if can_rerun && ui.button("Re-run with the new build").clicked() {
        cmds.push(Command::Rerun);
    }
}

fn branches_ui(ui: &mut Ui, d: &DebugView, cmds: &mut Vec<Command>) {
    ui.heading("Branch tree");
    for a in &d.ancestors {
        if ui
            .button(format!(
                "Open episode {} ({}, return {:.3})",
                a.id, a.outcome, a.return_
            ))
            .clicked()
        {
            cmds.push(Command::OpenEpisode(a.id));
        }
    }
    ui.label(
        RichText::new(format!(
            "episode {} (open){}",
            d.episode.id,
            d.episode
                .parent_frame
                .map(|f| format!(", forked at frame {f}"))
                .unwrap_or_default()
        ))
        .strong(),
    );
    if d.branches.is_empty() {
        ui.label("no branches yet");
    }
    for (b, depth) in &d.branches {
        ui.horizontal(|ui| {
            ui.add_space(14.0 * (*depth as f32 + 1.0));
            if ui
                .button(format!("Open episode {}", b.id))
                .on_hover_text(b.edits.clone().unwrap_or_default())
                .clicked()
            {
                cmds.push(Command::OpenEpisode(b.id));
            }
            ui.label(format!(
                "at frame {}: {}, return {:.3}",
                b.parent_frame.unwrap_or(0),
                b.outcome,
                b.return_
            ));
        });
    }
}

fn short(id: &str) -> &str {
    &id[..id.len().min(8)]
}

fn file_name(p: &str) -> &str {
    p.rsplit('/').next().unwrap_or(p)
}

/// Textures of the image parts shown lately, by (frame, part): the UI's own,
/// kept in egui's memory rather than in the state.
#[derive(Clone, Default)]
struct Textures(Vec<((u64, String), egui::TextureHandle)>);

impl Textures {
    /// How many are kept.
    const KEEP: usize = 8;

    fn id() -> egui::Id {
        egui::Id::unique("ludus-frame-textures")
    }

    fn get(&self, key: &(u64, String)) -> Option<egui::TextureHandle> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, t)| t.clone())
    }

    fn insert(&mut self, key: (u64, String), texture: egui::TextureHandle) {
        if self.0.len() >= Self::KEEP {
            drop(self.0.remove(0));
        }
        self.0.push((key, texture));
    }
}

/// The texture of an image shown for frame `key.0` under the name
/// `key.1`, from the UI's cache or made now.
fn texture(
    ui: &Ui,
    key: (u64, String),
    img: &ludus_arena::model::Image,
) -> Result<egui::TextureHandle, String> {
    let cached = ui.data(|m| m.get_temp::<Textures>(Textures::id()));
    if let Some(t) = cached.and_then(|t| t.get(&key)) {
        return Ok(t);
    }
    let max_side = ui.ctx().input(|i| i.max_texture_side);
    let ci = image_of(img, max_side)?;
    let t = ui.ctx().load_texture(
        format!("frame/{}", key.1),
        ci,
        egui::TextureOptions::NEAREST,
    );
    ui.data_mut(|m| {
        m.get_temp_mut_or_default::<Textures>(Textures::id())
            .insert(key, t.clone())
    });
    Ok(t)
}

/// An image drawn at most `side` points on its longer side.
fn thumbnail(ui: &mut Ui, key: (u64, String), img: &ludus_arena::model::Image, side: f32) {
    match texture(ui, key, img) {
        Ok(t) => {
            let (w, h) = (img.width.max(1) as f32, img.height.max(1) as f32);
            let scale = (side / w).min(side / h);
            ui.add(egui::Image::new(&t).fit_to_exact_size(vec2(w * scale, h * scale)));
        }
        Err(why) => {
            ui.label(format!("image: {why}"));
        }
    }
}

/// How many image textures the UI keeps (for tests: it loads each frame's
/// images once).
pub fn textures_kept(ctx: &egui::Context) -> usize {
    ctx.data(|m| m.get_temp::<Textures>(Textures::id()))
        .map_or(0, |t| t.0.len())
}

/// A recorded image as egui can show it, or why it cannot be shown: its
/// pixel bytes must match its declared size and channels exactly, and each
/// side must fit the GPU's largest texture. Recorded data comes from plugins,
/// so nothing here may panic.
fn image_of(img: &ludus_arena::model::Image, max_side: usize) -> Result<egui::ColorImage, String> {
    let (w, h) = (img.width as usize, img.height as usize);
    let declared = format!("{}x{}x{}", img.width, img.height, img.channels);
    if w == 0 || h == 0 {
        return Err(format!("{declared} is empty"));
    }
    if w > max_side || h > max_side {
        return Err(format!(
            "{declared} is larger than the largest texture this GPU draws ({max_side} a side)"
        ));
    }
    let n = w * h;
    let want = n.checked_mul(img.channels as usize);
    if want != Some(img.pixels.len()) {
        return Err(format!(
            "{declared} needs {} bytes but holds {}",
            want.map_or_else(|| "too many".to_string(), |b| b.to_string()),
            img.pixels.len()
        ));
    }
    let size = [w, h];
    Ok(match img.channels {
        1 => egui::ColorImage::from_gray(size, &img.pixels),
        3 => egui::ColorImage::from_rgb(size, &img.pixels),
        4 => egui::ColorImage::from_rgba_unmultiplied(size, &img.pixels),
        c => return Err(format!("{declared}: {c} channels (1, 3 or 4 can be shown)")),
    })
}
