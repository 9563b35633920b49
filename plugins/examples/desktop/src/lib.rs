//! A simulated desktop for GUI agents, as a ludus env plugin.
//!
//! Each episode lays out one task (buttons, checkboxes, text fields, dropdowns,
//! sliders, menus, a dialog) randomised from the seed. Observation parts:
//! `instruction` (text), `screen` (RGB image rendered here: widgets, 3x5 bitmap
//! text, focus and hover states, the cursor) and `tree` (the element tree).
//! Actions: pointer (move, click, double-click, drag, scroll), type-text, key,
//! and element ids when `element_actions=1`. Reward is sparse: on success,
//! 1 - 0.5 * steps / max_steps; 0 otherwise. Info carries `progress` (the
//! fraction of the goal that holds) for shaped reward plugins.
//!
//! Config: `task=click-button|checkboxes|type-field|dropdown|slider|workflow|click-random`,
//! `width=160`, `height=160`, `max_steps=N`, `element_actions=0|1`.
//! The logic lives in the `desktop-kit` crate.

use desktop_kit::{Input, Node, Outcome, Task, TaskKind, success_reward};
use ludus_sdk::*;

pub struct DesktopEnv {
    kind: TaskKind,
    width: i32,
    height: i32,
    max_steps: u32,
    element_actions: bool,
    task: Option<Task>,
    steps: u32,
}

const KEYS: &[&str] = &[
    "Tab",
    "Enter",
    "Escape",
    "Backspace",
    "Space",
    "ArrowLeft",
    "ArrowRight",
    "ArrowUp",
    "ArrowDown",
];

fn element(n: Node) -> Element {
    Element {
        id: n.id,
        parent: n.parent,
        role: n.role,
        name: n.name,
        value: n.value,
        bounds: ludus_sdk::Rect {
            x: n.bounds.x,
            y: n.bounds.y,
            width: n.bounds.w.max(0) as u32,
            height: n.bounds.h.max(0) as u32,
        },
        focused: n.focused,
        checked: n.checked,
        disabled: n.disabled,
    }
}

impl DesktopEnv {
    fn observation(&self, task: &Task) -> Observation {
        let mut pixels = Vec::new();
        task.desktop.render(&mut pixels);
        vec![
            Part {
                name: "instruction".into(),
                value: Value::Text(task.instruction()),
            },
            Part {
                name: "screen".into(),
                value: Value::Image(Image {
                    width: self.width as u32,
                    height: self.height as u32,
                    channels: 3,
                    pixels,
                }),
            },
            Part {
                name: "tree".into(),
                value: Value::Tree(task.desktop.tree().into_iter().map(element).collect()),
            },
        ]
    }

    /// The desktop's input for a contract action, or why it is ignored.
    fn input(&self, action: &Action) -> Result<Input, &'static str> {
        Ok(match action {
            Action::Pointer(p) => {
                let (x, y) = (p.x, p.y);
                match (p.kind, p.button) {
                    (PointerKind::Move, _) => Input::Move { x, y },
                    (PointerKind::Scroll, _) => Input::Scroll {
                        x,
                        y,
                        dx: p.dx,
                        dy: p.dy,
                    },
                    (_, MouseButton::Middle | MouseButton::Right) => Input::Move { x, y },
                    (PointerKind::Click, _) => Input::Click { x, y },
                    (PointerKind::DoubleClick, _) => Input::DoubleClick { x, y },
                    (PointerKind::Drag, _) => Input::Drag {
                        x,
                        y,
                        to_x: p.to_x,
                        to_y: p.to_y,
                    },
                }
            }
            Action::TypeText(t) => Input::Type(t.clone()),
            Action::Key(k) => Input::Key {
                key: k.key.clone(),
                shift: k.shift,
            },
            Action::Element(id) if self.element_actions => Input::Element(*id),
            Action::Element(_) => return Err("element actions are off (config element_actions=1)"),
            Action::Noop => Input::Noop,
            Action::Discrete(_) | Action::Continuous(_) => {
                return Err("the desktop takes pointer, type-text and key actions");
            }
        })
    }
}

impl Env for DesktopEnv {
    fn init(config: &str) -> Result<(Self, EnvInfo), String> {
        let (mut kind, mut width, mut height) = (TaskKind::ClickButton, 160i32, 160i32);
        let (mut max_steps, mut element_actions) = (None, false);
        for (k, v) in parse_config(config)? {
            match k.as_str() {
                "task" => {
                    kind = TaskKind::parse(&v).ok_or_else(|| {
                        let names: Vec<&str> = TaskKind::ALL.iter().map(|t| t.name()).collect();
                        format!("desktop: unknown task `{v}` (known: {})", names.join(", "))
                    })?
                }
                "width" => width = parse_value(&k, &v)?,
                "height" => height = parse_value(&k, &v)?,
                "max_steps" => max_steps = Some(parse_value::<u32>(&k, &v)?),
                "element_actions" => {
                    element_actions = match v.as_str() {
                        "1" | "true" => true,
                        "0" | "false" => false,
                        _ => {
                            return Err(format!(
                                "desktop: element_actions must be 0 or 1 (got `{v}`)"
                            ));
                        }
                    }
                }
                _ => {
                    return Err(format!(
                        "desktop: unknown config key `{k}` (known: task, width, height, max_steps, element_actions)"
                    ));
                }
            }
        }
        let min = kind.min_side();
        if !(min..=1024).contains(&width) || !(min..=1024).contains(&height) {
            return Err(format!(
                "desktop: task {} needs width and height within {min}..=1024 (got {width}x{height})",
                kind.name()
            ));
        }
        let max_steps = max_steps.unwrap_or(kind.max_steps());
        if max_steps == 0 {
            return Err("desktop: max_steps must be at least 1".into());
        }
        let info = EnvInfo {
            name: "desktop".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: format!(
                "Simulated desktop, task {}, {width}x{height} screen.",
                kind.name()
            ),
            observation_space: vec![
                NamedSpace {
                    name: "instruction".into(),
                    space: PartSpace::Text(512),
                },
                NamedSpace {
                    name: "screen".into(),
                    space: PartSpace::Image(ImageSpace {
                        width: width as u32,
                        height: height as u32,
                        channels: 3,
                    }),
                },
                NamedSpace {
                    name: "tree".into(),
                    space: PartSpace::Tree,
                },
            ],
            action_space: ActionSpace {
                discrete: None,
                continuous: None,
                pointer: Some((width as u32, height as u32)),
                text: Some(64),
                keys: Some(KEYS.iter().map(|k| k.to_string()).collect()),
                element: element_actions,
            },
            max_steps,
            vector_size: 0,
        };
        let env = DesktopEnv {
            kind,
            width,
            height,
            max_steps,
            element_actions,
            task: None,
            steps: 0,
        };
        Ok((env, info))
    }

    fn reset(&mut self, seed: u64) -> ResetResult {
        let task = Task::new(self.kind, self.width, self.height, seed);
        self.steps = 0;
        let result = ResetResult {
            observation: self.observation(&task),
            task: task.instruction(),
            info: format!(r#"{{"task":"{}"}}"#, self.kind.name()),
        };
        self.task = Some(task);
        result
    }

    fn step(&mut self, action: &Action) -> StepResult {
        let input = self.input(action);
        let Some(mut task) = self.task.take() else {
            log::error("step before reset");
            return StepResult {
                observation: Vec::new(),
                reward: 0.0,
                terminated: true,
                truncated: false,
                info: "{}".into(),
            };
        };
        self.steps += 1;
        let outcome = match &input {
            Ok(i) => task.step(i),
            Err(_) => Outcome::Running,
        };
        let terminated = outcome != Outcome::Running;
        let success = outcome == Outcome::Success;
        let truncated = !terminated && self.steps >= self.max_steps;
        let mut info = format!(r#"{{"progress":{:.3}"#, task.progress());
        if terminated {
            info.push_str(&format!(r#","success":{success}"#));
        }
        if let Err(why) = input {
            info.push_str(&format!(r#","ignored":"{why}""#));
        }
        info.push('}');
        let result = StepResult {
            observation: self.observation(&task),
            reward: if success {
                success_reward(self.steps, self.max_steps)
            } else {
                0.0
            },
            terminated,
            truncated,
            info,
        };
        self.task = Some(task);
        result
    }
}

export_env!(DesktopEnv);
