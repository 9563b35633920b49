//! The tasks: layouts randomised from the seed, instructions, and success checks.

use crate::font::text_width;
use crate::rng::Rng;
use crate::ui::{Desktop, Event, Input, ROW_H, Rect, Role, TITLE_H, Widget};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskKind {
    ClickButton,
    Checkboxes,
    TypeField,
    Dropdown,
    Slider,
    Workflow,
    ClickRandom,
}

impl TaskKind {
    pub const ALL: [TaskKind; 7] = [
        TaskKind::ClickButton,
        TaskKind::Checkboxes,
        TaskKind::TypeField,
        TaskKind::Dropdown,
        TaskKind::Slider,
        TaskKind::Workflow,
        TaskKind::ClickRandom,
    ];

    pub fn name(self) -> &'static str {
        match self {
            TaskKind::ClickButton => "click-button",
            TaskKind::Checkboxes => "checkboxes",
            TaskKind::TypeField => "type-field",
            TaskKind::Dropdown => "dropdown",
            TaskKind::Slider => "slider",
            TaskKind::Workflow => "workflow",
            TaskKind::ClickRandom => "click-random",
        }
    }

    pub fn parse(s: &str) -> Option<TaskKind> {
        TaskKind::ALL.into_iter().find(|k| k.name() == s)
    }

    /// Default step budget of an episode.
    pub fn max_steps(self) -> u32 {
        match self {
            TaskKind::ClickButton => 10,
            TaskKind::Checkboxes => 20,
            TaskKind::TypeField => 20,
            TaskKind::Dropdown => 15,
            TaskKind::Slider => 15,
            TaskKind::Workflow => 60,
            TaskKind::ClickRandom => 5,
        }
    }

    /// The smallest screen side the task's layouts fit in.
    pub fn min_side(self) -> i32 {
        match self {
            TaskKind::ClickRandom => 32,
            _ => 160,
        }
    }
}

/// What the agent is asked to do; [`Goal::instruction`] and [`Goal::parse`]
/// convert to and from the instruction text, so agents need nothing else.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Goal {
    ClickButton { label: String },
    Checkboxes { names: Vec<String> },
    TypeField { field: String, text: String },
    Dropdown { field: String, option: String },
    Slider { field: String, value: i32 },
    Workflow(Workflow),
    ClickRandom,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workflow {
    /// (field, text) for the form's text fields.
    pub fields: Vec<(String, String)>,
    pub tick: String,
    pub dropdown: String,
    pub option: String,
    /// The menu item that opens the dialog (its menu is not named).
    pub item: String,
    pub filename: String,
    pub format: String,
    pub confirm: String,
}

/// The name of the submit button of the single-form tasks.
pub const SUBMIT: &str = "Submit";
/// The dialog's fields in the workflow.
pub const FILENAME: &str = "Filename";
pub const FORMAT: &str = "Type";
/// The menu that holds the workflow's menu item (menus are shuffled per seed).
pub const EXPORT_MENU: &str = "File";

fn q(s: &str) -> String {
    format!("\"{s}\"")
}

fn join(names: &[String]) -> String {
    names.iter().map(|n| q(n)).collect::<Vec<_>>().join(", ")
}

impl Goal {
    pub fn kind(&self) -> TaskKind {
        match self {
            Goal::ClickButton { .. } => TaskKind::ClickButton,
            Goal::Checkboxes { .. } => TaskKind::Checkboxes,
            Goal::TypeField { .. } => TaskKind::TypeField,
            Goal::Dropdown { .. } => TaskKind::Dropdown,
            Goal::Slider { .. } => TaskKind::Slider,
            Goal::Workflow(_) => TaskKind::Workflow,
            Goal::ClickRandom => TaskKind::ClickRandom,
        }
    }

    pub fn instruction(&self) -> String {
        match self {
            Goal::ClickButton { label } => format!("Click the button {}.", q(label)),
            Goal::Checkboxes { names } => {
                format!("Tick exactly {}, then click {}.", join(names), q(SUBMIT))
            }
            Goal::TypeField { field, text } => {
                format!(
                    "Type {} into {}, then click {}.",
                    q(text),
                    q(field),
                    q(SUBMIT)
                )
            }
            Goal::Dropdown { field, option } => {
                format!(
                    "Choose {} in {}, then click {}.",
                    q(option),
                    q(field),
                    q(SUBMIT)
                )
            }
            Goal::Slider { field, value } => {
                format!(
                    "Set {} to {}, then click {}.",
                    q(field),
                    q(&value.to_string()),
                    q(SUBMIT)
                )
            }
            Goal::Workflow(w) => {
                let fields: Vec<String> = w
                    .fields
                    .iter()
                    .map(|(f, t)| format!("{} {}", q(f), q(t)))
                    .collect();
                format!(
                    "Fill in {}; tick {}; choose {} in {}; then use {}, save as {} in {} and click {}.",
                    fields.join(", "),
                    q(&w.tick),
                    q(&w.option),
                    q(&w.dropdown),
                    q(&w.item),
                    q(&w.filename),
                    q(&w.format),
                    q(&w.confirm)
                )
            }
            Goal::ClickRandom => "Click the button.".to_string(),
        }
    }

    /// Reads an instruction written by [`Goal::instruction`].
    pub fn parse(text: &str) -> Option<Goal> {
        let quoted: Vec<String> = text
            .split('"')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect();
        let first = text.split_whitespace().next()?;
        Some(match (first, quoted.as_slice()) {
            ("Click", [label]) => Goal::ClickButton {
                label: label.clone(),
            },
            ("Click", []) => Goal::ClickRandom,
            ("Tick", [names @ .., _submit]) if !names.is_empty() => Goal::Checkboxes {
                names: names.to_vec(),
            },
            ("Type", [text, field, _]) => Goal::TypeField {
                field: field.clone(),
                text: text.clone(),
            },
            ("Choose", [option, field, _]) => Goal::Dropdown {
                field: field.clone(),
                option: option.clone(),
            },
            ("Set", [field, value, _]) => Goal::Slider {
                field: field.clone(),
                value: value.parse().ok()?,
            },
            ("Fill", all) if all.len() >= 7 && (all.len() - 7) % 2 == 0 => {
                let n = all.len() - 7;
                let fields = all[..n]
                    .chunks(2)
                    .map(|c| (c[0].clone(), c[1].clone()))
                    .collect();
                let r = &all[n..];
                Goal::Workflow(Workflow {
                    fields,
                    tick: r[0].clone(),
                    option: r[1].clone(),
                    dropdown: r[2].clone(),
                    item: r[3].clone(),
                    filename: r[4].clone(),
                    format: r[5].clone(),
                    confirm: r[6].clone(),
                })
            }
            _ => return None,
        })
    }
}

const BUTTONS: &[&str] = &[
    "OK", "Cancel", "Save", "Open", "Send", "Next", "Back", "Yes", "No", "Retry", "Apply", "Close",
    "Help", "Print", "Copy", "Undo",
];
const BOXES: &[&str] = &[
    "Red", "Green", "Blue", "Cats", "Dogs", "Fish", "Tea", "Milk", "Jazz", "Rock", "Salt", "Mint",
];
const FIELDS: &[&str] = &[
    "Name", "Email", "City", "Phone", "Title", "Code", "Notes", "Town",
];
const WORDS: &[&str] = &[
    "kiwi", "lemon", "oslo", "ada", "max42", "blue sky", "hello", "rust", "zebra", "piano",
    "delta", "omega", "nova", "pixel", "a@b.io", "k-9",
];
const DROPDOWNS: &[&str] = &["Color", "Size", "Plan", "Theme", "Level"];
const OPTIONS: &[&str] = &[
    "Small", "Medium", "Large", "Basic", "Pro", "Dark", "Light", "Gold", "Low", "High", "Auto",
];
const SLIDERS: &[&str] = &["Volume", "Speed", "Zoom", "Bright"];
const FORMATS: &[&str] = &["PDF", "CSV", "PNG", "TXT"];
const MENUS: &[&str] = &["File", "Edit", "View", "Tools"];
const TICKS: &[&str] = &["Agree", "Terms", "Consent"];

/// One episode of a task: the desktop, the goal, and the bookkeeping.
#[derive(Clone, Debug)]
pub struct Task {
    pub kind: TaskKind,
    pub goal: Goal,
    pub desktop: Desktop,
    /// The export dialog of the workflow.
    dialog: Option<usize>,
}

/// How an episode ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Running,
    Success,
    Failure,
}

/// Builds rows of labelled controls inside a window, top to bottom.
struct Form {
    x_label: i32,
    x_ctrl: i32,
    y: i32,
    right: i32,
    window: usize,
}

impl Form {
    fn row(&mut self, d: &mut Desktop, rng: &mut Rng, role: Role, name: &str, w: i32) -> usize {
        let h = 11;
        if role != Role::Checkbox && role != Role::Button {
            d.add(Widget::new(
                Role::Label,
                name,
                Rect::new(self.x_label, self.y, text_width(name) + 1, h),
                Some(self.window),
            ));
        }
        let (x, w) = match role {
            Role::Checkbox => (self.x_label, text_width(name) + 11),
            _ => (self.x_ctrl, w.min(self.right - self.x_ctrl)),
        };
        let i = d.add(Widget::new(
            role,
            name,
            Rect::new(x, self.y, w, h),
            Some(self.window),
        ));
        self.y += h + 2 + rng.range(0, 3);
        i
    }
}

fn window(d: &mut Desktop, rng: &mut Rng, title: &str, w: i32, h: i32) -> usize {
    let x = rng.range(0, d.width - w);
    let y = rng.range(0, d.height - h);
    d.add(Widget::new(
        Role::Window,
        title,
        Rect::new(x, y, w, h),
        None,
    ))
}

fn button(d: &mut Desktop, parent: usize, name: &str, x: i32, y: i32) -> usize {
    let w = text_width(name) + 8;
    d.add(Widget::new(
        Role::Button,
        name,
        Rect::new(x, y, w, 11),
        Some(parent),
    ))
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

impl Task {
    /// Lays out a new episode of `kind` on a `width` x `height` screen.
    pub fn new(kind: TaskKind, width: i32, height: i32, seed: u64) -> Task {
        let mut rng = Rng::new(seed ^ 0x5EED_D35C_7000_0000);
        let mut d = Desktop::new(width, height);
        let mut dialog = None;
        let goal = match kind {
            TaskKind::ClickButton => {
                let n = rng.range(3, 6) as usize;
                let labels = rng.sample(BUTTONS, n);
                let (ww, wh) = (rng.range(110, width - 4), rng.range(80, height - 4));
                let win = window(&mut d, &mut rng, "Buttons", ww, wh);
                let area = d.widgets[win].rect;
                let mut placed: Vec<Rect> = Vec::new();
                for label in &labels {
                    let w = text_width(label) + 8;
                    for _ in 0..200 {
                        let x = rng.range(area.x + 3, area.x + area.w - w - 3);
                        let y = rng.range(area.y + TITLE_H + 3, area.y + area.h - 14);
                        let r = Rect::new(x - 2, y - 2, w + 4, 15);
                        if placed.iter().all(|p| !p.overlaps(&r)) {
                            placed.push(r);
                            button(&mut d, win, label, x, y);
                            break;
                        }
                    }
                }
                // Only buttons that found room count.
                let shown: Vec<&Widget> = d
                    .widgets
                    .iter()
                    .filter(|w| w.role == Role::Button)
                    .collect();
                let label = shown[rng.below(shown.len() as u32) as usize].name.clone();
                Goal::ClickButton { label }
            }
            TaskKind::Checkboxes => {
                let n = rng.range(3, 6) as usize;
                let names = rng.sample(BOXES, n);
                let (win, mut form) =
                    form_window(&mut d, &mut rng, "Options", 0, n as i32 + 1, false);
                for name in &names {
                    form.row(&mut d, &mut rng, Role::Checkbox, name, 0);
                }
                submit(&mut d, &form, win);
                let k = rng.range(1, n as i32 - 1) as usize;
                let mut want = rng.sample(&names, k);
                // In screen order, as a person would list them.
                want.sort_by_key(|w| names.iter().position(|n| n == w));
                Goal::Checkboxes {
                    names: strings(&want),
                }
            }
            TaskKind::TypeField => {
                let n = rng.range(2, 3) as usize;
                let fields = rng.sample(FIELDS, n);
                let (win, mut form) = form_window(&mut d, &mut rng, "Form", 0, n as i32 + 1, false);
                for f in &fields {
                    form.row(&mut d, &mut rng, Role::TextField, f, 100);
                }
                submit(&mut d, &form, win);
                Goal::TypeField {
                    field: rng.pick(&fields).to_string(),
                    text: rng.pick(WORDS).to_string(),
                }
            }
            TaskKind::Dropdown => {
                let name = *rng.pick(DROPDOWNS);
                let k = rng.range(3, 5) as usize;
                let options = strings(&rng.sample(OPTIONS, k));
                let (win, mut form) = form_window(&mut d, &mut rng, "Choose", 0, 2, false);
                let dd = form.row(&mut d, &mut rng, Role::Dropdown, name, 60);
                d.add_items(dd, &options, Role::Option);
                submit(&mut d, &form, win);
                Goal::Dropdown {
                    field: name.to_string(),
                    option: rng.pick(&options).clone(),
                }
            }
            TaskKind::Slider => {
                let name = *rng.pick(SLIDERS);
                let max = *rng.pick(&[10, 20, 50, 100]);
                let (win, mut form) = form_window(&mut d, &mut rng, "Adjust", 0, 2, false);
                let sw = rng.range(60, 100);
                let s = form.row(&mut d, &mut rng, Role::Slider, name, sw);
                d.widgets[s].max = max;
                d.widgets[s].value = rng.range(0, max).to_string();
                submit(&mut d, &form, win);
                let mut value = rng.range(0, max);
                if d.widgets[s].value == value.to_string() {
                    value = (value + max / 2) % (max + 1);
                }
                Goal::Slider {
                    field: name.to_string(),
                    value,
                }
            }
            TaskKind::Workflow => {
                let names = rng.sample(FIELDS, 3);
                let tick = *rng.pick(TICKS);
                let dd_name = *rng.pick(DROPDOWNS);
                let options = strings(&rng.sample(OPTIONS, 3));
                let (win, mut form) = form_window(&mut d, &mut rng, "Report", 0, 5, true);
                // The menu bar across the top of the window, menus in random order.
                let wr = d.widgets[win].rect;
                let bar = d.add(Widget::new(
                    Role::MenuBar,
                    "Menu",
                    Rect::new(wr.x + 1, wr.y + TITLE_H, wr.w - 2, ROW_H),
                    Some(win),
                ));
                let menus = rng.sample(MENUS, MENUS.len());
                let mut mx = wr.x + 2;
                let mut export = None;
                for m in &menus {
                    let w = text_width(m) + 6;
                    let mi = d.add(Widget::new(
                        Role::Menu,
                        m,
                        Rect::new(mx, wr.y + TITLE_H, w, ROW_H - 1),
                        Some(bar),
                    ));
                    mx += w + 1;
                    let items: Vec<String> = match *m {
                        "File" => strings(&["New", "Open", "Export", "Quit"]),
                        "Edit" => strings(&["Undo", "Copy", "Paste"]),
                        "View" => strings(&["Zoom", "Full"]),
                        _ => strings(&["Check", "Options"]),
                    };
                    let first = d.widgets.len();
                    d.add_items(mi, &items, Role::MenuItem);
                    if *m == EXPORT_MENU {
                        export = Some(first + 2);
                    }
                }
                for f in &names {
                    form.row(&mut d, &mut rng, Role::TextField, f, 90);
                }
                form.row(&mut d, &mut rng, Role::Checkbox, tick, 0);
                let dd = form.row(&mut d, &mut rng, Role::Dropdown, dd_name, 60);
                d.add_items(dd, &options, Role::Option);
                if let Some(e) = export {
                    // Exporting needs the box ticked first.
                    d.widgets[e].disabled = true;
                }
                // The export dialog: a second window, hidden until "Export".
                let dw = rng.range(110, 140);
                let dlg = window(&mut d, &mut rng, "Export", dw, 60);
                d.widgets[dlg].visible = false;
                let dr = d.widgets[dlg].rect;
                let mut dform = Form {
                    x_label: dr.x + 4,
                    x_ctrl: dr.x + 4 + text_width(FILENAME) + 4,
                    y: dr.y + TITLE_H + 4,
                    right: dr.x + dr.w - 4,
                    window: dlg,
                };
                dform.row(&mut d, &mut rng, Role::TextField, FILENAME, 70);
                let fmt = dform.row(&mut d, &mut rng, Role::Dropdown, FORMAT, 40);
                d.add_items(fmt, &strings(FORMATS), Role::Option);
                let by = dr.y + dr.h - 14;
                button(&mut d, dlg, "Confirm", dr.x + 4, by);
                button(
                    &mut d,
                    dlg,
                    "Cancel",
                    dr.x + 4 + text_width("Confirm") + 12,
                    by,
                );
                dialog = Some(dlg);
                d.modal = Some(dlg);
                Goal::Workflow(Workflow {
                    fields: names
                        .iter()
                        .map(|f| (f.to_string(), rng.pick(WORDS).to_string()))
                        .collect(),
                    tick: tick.to_string(),
                    dropdown: dd_name.to_string(),
                    option: rng.pick(&options).clone(),
                    item: "Export".to_string(),
                    filename: rng.pick(WORDS).replace(' ', "_"),
                    format: rng.pick(FORMATS).to_string(),
                    confirm: "Confirm".to_string(),
                })
            }
            TaskKind::ClickRandom => {
                let w = rng.range(8, (width / 2).max(8));
                let h = rng.range(8, (height / 3).max(8));
                let x = rng.range(0, width - w);
                let y = rng.range(0, height - h);
                let label = if w >= text_width("OK") + 4 && h >= 7 {
                    "OK"
                } else {
                    ""
                };
                d.add(Widget::new(
                    Role::Button,
                    label,
                    Rect::new(x, y, w, h),
                    None,
                ));
                Goal::ClickRandom
            }
        };
        d.cursor = (rng.range(0, width - 1), rng.range(0, height - 1));
        Task {
            kind,
            goal,
            desktop: d,
            dialog,
        }
    }

    pub fn instruction(&self) -> String {
        self.goal.instruction()
    }

    fn find(&self, role: Role, name: &str) -> Option<usize> {
        self.desktop
            .widgets
            .iter()
            .position(|w| w.role == role && w.name == name)
    }

    fn value_of(&self, role: Role, name: &str) -> Option<&str> {
        self.find(role, name)
            .map(|i| self.desktop.widgets[i].value.as_str())
    }

    fn checked(&self, name: &str) -> bool {
        self.find(Role::Checkbox, name)
            .is_some_and(|i| self.desktop.widgets[i].checked == Some(true))
    }

    /// Applies one input and judges it.
    pub fn step(&mut self, input: &Input) -> Outcome {
        let event = self.desktop.apply(input);
        if let Goal::Workflow(w) = &self.goal {
            // The export item is enabled once the box is ticked.
            let ticked = self.checked(&w.tick);
            if let Some(e) = self.find(Role::MenuItem, &w.item) {
                self.desktop.widgets[e].disabled = !ticked;
            }
        }
        let pressed = |e: Option<Event>| match e {
            Some(Event::Pressed(i)) => Some(self.desktop.widgets[i].name.clone()),
            _ => None,
        };
        let name = pressed(event);
        let submitted =
            name.as_deref() == Some(SUBMIT) || matches!(event, Some(Event::Submitted(_)));
        let judge = |ok: bool| {
            if ok {
                Outcome::Success
            } else {
                Outcome::Failure
            }
        };
        match &self.goal {
            Goal::ClickButton { label } => match name {
                Some(n) => judge(&n == label),
                None => Outcome::Running,
            },
            Goal::ClickRandom => match input {
                Input::Click { .. } | Input::DoubleClick { .. } | Input::Element(_) => {
                    judge(name.is_some())
                }
                _ => Outcome::Running,
            },
            _ if self.kind != TaskKind::Workflow => {
                if submitted {
                    judge(self.progress() >= 1.0)
                } else {
                    Outcome::Running
                }
            }
            Goal::Workflow(w) => {
                let dlg = self.dialog.unwrap_or(0);
                match name.as_deref() {
                    Some(n) if n == w.item => {
                        self.desktop.widgets[dlg].visible = true;
                        self.desktop.focus = None;
                        Outcome::Running
                    }
                    Some("Cancel") => {
                        self.desktop.widgets[dlg].visible = false;
                        self.desktop.focus = None;
                        Outcome::Running
                    }
                    Some(n) if n == w.confirm => judge(self.progress() >= 1.0),
                    _ => Outcome::Running,
                }
            }
            _ => Outcome::Running,
        }
    }

    /// The fraction of the goal's parts that hold now (1.0: ready to submit).
    pub fn progress(&self) -> f32 {
        let parts: Vec<bool> = match &self.goal {
            Goal::ClickButton { .. } | Goal::ClickRandom => vec![false],
            Goal::Checkboxes { names } => self
                .desktop
                .widgets
                .iter()
                .filter(|w| w.role == Role::Checkbox)
                .map(|w| (w.checked == Some(true)) == names.contains(&w.name))
                .collect(),
            Goal::TypeField { field, text } => {
                vec![self.value_of(Role::TextField, field) == Some(text)]
            }
            Goal::Dropdown { field, option } => {
                vec![self.value_of(Role::Dropdown, field) == Some(option)]
            }
            Goal::Slider { field, value } => {
                vec![self.value_of(Role::Slider, field) == Some(&value.to_string())]
            }
            Goal::Workflow(w) => {
                let mut p: Vec<bool> = w
                    .fields
                    .iter()
                    .map(|(f, t)| self.value_of(Role::TextField, f) == Some(t))
                    .collect();
                p.push(self.checked(&w.tick));
                p.push(self.value_of(Role::Dropdown, &w.dropdown) == Some(&w.option));
                p.push(self.dialog.is_some_and(|d| self.desktop.widgets[d].visible));
                p.push(self.value_of(Role::TextField, FILENAME) == Some(&w.filename));
                p.push(self.value_of(Role::Dropdown, FORMAT) == Some(&w.format));
                p
            }
        };
        parts.iter().filter(|&&b| b).count() as f32 / parts.len().max(1) as f32
    }
}

/// A window holding `rows` rows of a form (plus a menu bar if asked).
fn form_window(
    d: &mut Desktop,
    rng: &mut Rng,
    title: &str,
    _pad: i32,
    rows: i32,
    menu: bool,
) -> (usize, Form) {
    let top = TITLE_H + if menu { ROW_H } else { 0 } + 4;
    let h = (top + rows * 16 + 4).min(d.height);
    let w = rng.range(140, d.width.min(200));
    let win = window(d, rng, title, w, h);
    let r = d.widgets[win].rect;
    let x_label = r.x + 4 + rng.range(0, 3);
    let form = Form {
        x_label,
        x_ctrl: x_label + text_width("Bright") + 6 + rng.range(0, 4),
        y: r.y + top,
        right: r.x + r.w - 4,
        window: win,
    };
    (win, form)
}

fn submit(d: &mut Desktop, form: &Form, win: usize) {
    button(d, win, SUBMIT, form.x_ctrl, form.y + 1);
}

/// The reward for a success after `steps` of a `max_steps` budget: 1 for an
/// instant success, falling linearly to 0.5 at the end of the budget.
pub fn success_reward(steps: u32, max_steps: u32) -> f32 {
    1.0 - 0.5 * (steps as f32 / max_steps.max(1) as f32).min(1.0)
}
