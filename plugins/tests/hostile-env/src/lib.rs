//! An environment that misbehaves on purpose inside `step`, for the host's
//! crash-containment tests.
//!
//! Config (`key=value`, comma separated):
//! - `mode`: `none` (default), `loop`, `panic`, `alloc`, `nan` (from
//!   step `at` on, the reward and the observation are NaN), `sleep` (sleeps
//!   30 s through WASI's clock) or `sleep_forever` (sleeps an hour at a
//!   time, endlessly), `shout` (prints 1 MiB to stderr, then goes on),
//!   `bad_image` (from step `at` on, the observation also holds an 8x8 grey
//!   image part `screen` with 60 bytes instead of 64), `huge` (at step `at`
//!   the observation also holds a text part `dump` of `mb` MiB).
//! - `bounds`: `finite` (default) or `inf`: the observation box's bounds are
//!   -inf and inf, as Gymnasium's unbounded `Box` declares them.
//! - `at`: the step (from 0) whose `step` call misbehaves; default 3.
//! - `max_steps`: episode length; default 20.
//! - `mb`: the size of `huge`'s text part in MiB; default 200.
//!
//! Otherwise trivial: observation one vector part `state` = [step], discrete(2)
//! actions, reward 1 per step, terminated when the step count reaches `max_steps`.

use std::hint::black_box;

use ludus_sdk::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    None,
    Loop,
    Panic,
    Alloc,
    Nan,
    Sleep,
    SleepForever,
    Shout,
    BadImage,
    Huge,
}

impl Mode {
    fn parse(s: &str) -> Result<Mode, String> {
        Ok(match s {
            "none" => Mode::None,
            "loop" => Mode::Loop,
            "panic" => Mode::Panic,
            "alloc" => Mode::Alloc,
            "nan" => Mode::Nan,
            "sleep" => Mode::Sleep,
            "sleep_forever" => Mode::SleepForever,
            "shout" => Mode::Shout,
            "bad_image" => Mode::BadImage,
            "huge" => Mode::Huge,
            other => {
                return Err(format!(
                    "hostile-env: unknown mode `{other}` (expected loop, panic, alloc, nan, sleep, sleep_forever, shout, bad_image, huge or none)"
                ));
            }
        })
    }
}

pub struct HostileEnv {
    mode: Mode,
    at: u32,
    max_steps: u32,
    mb: usize,
    step: u32,
}

impl Env for HostileEnv {
    fn init(config: &str) -> Result<(Self, EnvInfo), String> {
        let mut mode = Mode::None;
        let mut at = 3;
        let mut max_steps = 20;
        let mut unbounded = false;
        let mut mb = 200;
        for (key, value) in parse_config(config)? {
            match key.as_str() {
                "mode" => mode = Mode::parse(&value)?,
                "at" => at = parse_value(&key, &value)?,
                "max_steps" => max_steps = parse_value(&key, &value)?,
                "bounds" => unbounded = value == "inf",
                "mb" => mb = parse_value(&key, &value)?,
                other => {
                    return Err(format!(
                        "hostile-env: unknown config key `{other}` (expected mode, at, max_steps, bounds, mb)"
                    ));
                }
            }
        }
        let info = EnvInfo {
            name: "hostile-env".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Misbehaves on purpose (tests only)".into(),
            observation_space: vec![NamedSpace {
                name: "state".into(),
                space: PartSpace::Box(BoxSpace {
                    shape: vec![1],
                    low: vec![if unbounded { f32::NEG_INFINITY } else { 0.0 }],
                    high: vec![if unbounded {
                        f32::INFINITY
                    } else {
                        max_steps as f32
                    }],
                }),
            }],
            action_space: ActionSpace {
                discrete: Some(2),
                continuous: None,
                pointer: None,
                text: None,
                keys: None,
                element: false,
            },
            max_steps,
            vector_size: 1,
        };
        Ok((
            HostileEnv {
                mode,
                at,
                max_steps,
                mb,
                step: 0,
            },
            info,
        ))
    }

    fn reset(&mut self, _seed: u64) -> ResetResult {
        self.step = 0;
        ResetResult {
            observation: vector_observation("state", vec![0.0]),
            task: String::new(),
            info: "{}".into(),
        }
    }

    fn step(&mut self, _action: &Action) -> StepResult {
        if self.step == self.at {
            match self.mode {
                Mode::None | Mode::Nan | Mode::BadImage | Mode::Huge => {}
                Mode::Loop => spin(),
                Mode::Panic => panic!("hostile env panics on purpose at step {}", self.at),
                Mode::Alloc => hoard(),
                Mode::Sleep => std::thread::sleep(std::time::Duration::from_secs(30)),
                Mode::Shout => {
                    for i in 0..16_384 {
                        eprintln!("{i:06} {}", "x".repeat(56));
                    }
                }
                Mode::SleepForever => loop {
                    std::thread::sleep(std::time::Duration::from_secs(3600));
                },
            }
        }
        let nan = self.mode == Mode::Nan && self.step >= self.at;
        let bad_image = self.mode == Mode::BadImage && self.step >= self.at;
        let huge = self.mode == Mode::Huge && self.step == self.at;
        self.step += 1;
        let mut observation =
            vector_observation("state", vec![if nan { f32::NAN } else { self.step as f32 }]);
        if bad_image {
            observation.push(Part {
                name: "screen".into(),
                value: Value::Image(Image {
                    width: 8,
                    height: 8,
                    channels: 1,
                    pixels: vec![0; 60],
                }),
            });
        }
        if huge {
            observation.push(Part {
                name: "dump".into(),
                value: Value::Text("x".repeat(self.mb << 20)),
            });
        }
        StepResult {
            observation,
            reward: if nan { f32::NAN } else { 1.0 },
            terminated: self.step >= self.max_steps,
            truncated: false,
            info: "{}".into(),
        }
    }
}

/// Loops forever; `black_box` keeps the compiler from removing the loop.
fn spin() -> ! {
    let mut i = 0u64;
    loop {
        i = black_box(i.wrapping_add(1));
    }
}

/// Allocates 64 MiB chunks filled with nonzero bytes and keeps them all, until
/// allocation fails (which it must well before 4 GiB on wasm32).
fn hoard() -> ! {
    const CHUNK: usize = 64 << 20;
    const CHUNKS: usize = 64; // 4 GiB in all
    let mut kept: Vec<Vec<u8>> = Vec::new();
    for i in 0..CHUNKS {
        let mut chunk = Vec::new();
        if chunk.try_reserve_exact(CHUNK).is_err() {
            panic!("hostile env: out of memory after {} MiB", i * (CHUNK >> 20));
        }
        chunk.resize(CHUNK, 0xA5u8.wrapping_add(i as u8) | 1);
        kept.push(black_box(chunk));
        black_box(&mut kept);
    }
    panic!("hostile env: allocated 4 GiB without failing");
}

export_env!(HostileEnv);
