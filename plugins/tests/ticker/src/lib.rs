//! The ticker: a test environment that never ends by itself (it is truncated
//! after `steps=N` steps, default 100), for long recorded episodes. Each
//! observation has a vector part `t` = [step, step mod 4, 0, 1], a text part
//! `msg`, and with `rich=1` also an 8x8 grey image with one lit pixel that
//! moves every step and a two-node element tree whose value counts steps.
//! Action: discrete(4); reward 1 when the action equals step mod 4.

use ludus_sdk::*;

pub struct Ticker {
    step: u32,
    rich: bool,
    steps: u32,
}

impl Ticker {
    fn observation(&self) -> Observation {
        let s = self.step;
        let mut parts = vec![
            Part {
                name: "t".into(),
                value: Value::Vector(vec![s as f32, (s % 4) as f32, 0.0, 1.0]),
            },
            Part {
                name: "msg".into(),
                value: Value::Text(format!("tick {s}\nphase {}\nend", s % 4)),
            },
        ];
        if self.rich {
            let mut pixels = vec![0u8; 64];
            pixels[(s % 64) as usize] = 255;
            parts.push(Part {
                name: "screen".into(),
                value: Value::Image(Image {
                    width: 8,
                    height: 8,
                    channels: 1,
                    pixels,
                }),
            });
            let node = |id: u32, parent: Option<u32>, role: &str, value: String| Element {
                id,
                parent,
                role: role.into(),
                name: format!("node{id}"),
                value,
                bounds: Rect {
                    x: 0,
                    y: 0,
                    width: 8,
                    height: 8,
                },
                focused: id == 1 && s.is_multiple_of(2),
                checked: None,
                disabled: false,
            };
            parts.push(Part {
                name: "tree".into(),
                value: Value::Tree(vec![
                    node(0, None, "window", String::new()),
                    node(1, Some(0), "counter", s.to_string()),
                ]),
            });
        }
        parts
    }
}

impl Env for Ticker {
    fn init(config: &str) -> Result<(Self, EnvInfo), String> {
        let (mut steps, mut rich) = (100u32, false);
        for (k, v) in parse_config(config)? {
            match k.as_str() {
                "steps" => steps = parse_value(&k, &v)?,
                "rich" => rich = parse_value::<u32>(&k, &v)? != 0,
                _ => {
                    return Err(format!(
                        "ticker: unknown config key `{k}` (known: steps, rich)"
                    ));
                }
            }
        }
        let mut observation_space = vec![
            NamedSpace {
                name: "t".into(),
                space: PartSpace::Box(BoxSpace {
                    shape: vec![4],
                    low: vec![0.0; 4],
                    high: vec![f32::MAX; 4],
                }),
            },
            NamedSpace {
                name: "msg".into(),
                space: PartSpace::Text(64),
            },
        ];
        if rich {
            observation_space.push(NamedSpace {
                name: "screen".into(),
                space: PartSpace::Image(ImageSpace {
                    width: 8,
                    height: 8,
                    channels: 1,
                }),
            });
            observation_space.push(NamedSpace {
                name: "tree".into(),
                space: PartSpace::Tree,
            });
        }
        let info = EnvInfo {
            name: "ticker".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Counts steps; never ends by itself (tests).".into(),
            observation_space,
            action_space: ActionSpace {
                discrete: Some(4),
                continuous: None,
                pointer: None,
                text: None,
                keys: None,
                element: false,
            },
            max_steps: steps,
            vector_size: 0,
        };
        Ok((
            Ticker {
                step: 0,
                rich,
                steps,
            },
            info,
        ))
    }

    fn reset(&mut self, _seed: u64) -> ResetResult {
        self.step = 0;
        ResetResult {
            observation: self.observation(),
            task: "press the phase".into(),
            info: "{}".into(),
        }
    }

    fn step(&mut self, action: &Action) -> StepResult {
        let hit = matches!(action, Action::Discrete(a) if *a == self.step % 4);
        self.step += 1;
        StepResult {
            observation: self.observation(),
            reward: if hit { 1.0 } else { 0.0 },
            terminated: false,
            truncated: self.step >= self.steps,
            info: format!("{{\"tick\":{},\"hit\":{hit}}}", self.step),
        }
    }
}

export_env!(Ticker);
