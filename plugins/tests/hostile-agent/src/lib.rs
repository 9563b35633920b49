//! An agent that misbehaves on purpose, for the host's crash-containment tests.
//!
//! Config (`key=value`, comma separated):
//! - `mode`: `none` (default), `loop`, `alloc`, `recurse`, `panic` or `file`.
//! - `at`: the step (from 0) at which to misbehave; default 3.
//!
//! Before step `at` (and in mode `none` always) it acts uniformly at random on the
//! environment's discrete action space (`noop` when there is none).
//!
//! At step `at`:
//! - `loop`: spins forever.
//! - `alloc`: allocates and touches 64 MiB chunks until allocation fails (4 GiB in all).
//! - `recurse`: recurses without bound, 1 KiB of stack per frame. The 1 KiB lives
//!   on Rust's stack in linear memory, so that stack runs out first (about 1 MiB):
//!   the trap is an out-of-bounds memory access.
//! - `stack`: recurses without bound with no locals in linear memory, so the
//!   engine's own call stack runs out first: the trap is a stack overflow.
//! - `panic`: panics.
//! - `file`: tries to read `/etc/passwd` (panics if that works), reads `HOME` and
//!   connects to `127.0.0.1:1`, logs each outcome, then goes on acting normally.
//! - `writes`: writes a million execution-memory paths in one `act`, ignoring
//!   every error, then goes on acting normally.
//! - `trickle`: from step `at` on, writes 5,000 new execution-memory paths in
//!   every `act` (under the per-call limit), ignoring every error.

use std::hint::black_box;

use ludus_sdk::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    None,
    Loop,
    Alloc,
    Recurse,
    Stack,
    Panic,
    File,
    Writes,
    Trickle,
    /// Calls a model in an endless loop.
    ChatLoop,
}

impl Mode {
    fn parse(s: &str) -> Result<Mode, String> {
        Ok(match s {
            "none" => Mode::None,
            "loop" => Mode::Loop,
            "alloc" => Mode::Alloc,
            "recurse" => Mode::Recurse,
            "stack" => Mode::Stack,
            "panic" => Mode::Panic,
            "file" => Mode::File,
            "writes" => Mode::Writes,
            "trickle" => Mode::Trickle,
            "chat-loop" => Mode::ChatLoop,
            other => {
                return Err(format!(
                    "hostile-agent: unknown mode `{other}` (expected loop, alloc, recurse, stack, panic, file, writes, trickle, chat-loop or none)"
                ));
            }
        })
    }
}

pub struct HostileAgent {
    mode: Mode,
    at: u32,
    rng: Rng,
    discrete: Option<u32>,
}

impl Agent for HostileAgent {
    fn init(config: &str) -> Result<(Self, AgentInfo), String> {
        let mut mode = Mode::None;
        let mut at = 3;
        for (key, value) in parse_config(config)? {
            match key.as_str() {
                "mode" => mode = Mode::parse(&value)?,
                "at" => at = parse_value(&key, &value)?,
                other => {
                    return Err(format!(
                        "hostile-agent: unknown config key `{other}` (expected mode, at)"
                    ));
                }
            }
        }
        let info = AgentInfo {
            name: "hostile-agent".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Misbehaves on purpose (tests only)".into(),
        };
        Ok((
            HostileAgent {
                mode,
                at,
                rng: Rng::new(0),
                discrete: None,
            },
            info,
        ))
    }

    fn begin_episode(&mut self, env: &EnvInfo, _task: &str, seed: u64) {
        self.rng = Rng::new(seed);
        self.discrete = env.action_space.discrete;
    }

    fn act(&mut self, _observation: &Observation, context: &StepContext) -> Action {
        if self.mode == Mode::Trickle && context.step >= self.at {
            for i in 0..5_000u32 {
                let _ = memory::write(&format!("/episode/trickle/{}/{i}", context.step), "x");
            }
        }
        if context.step == self.at {
            match self.mode {
                Mode::None | Mode::Trickle => {}
                Mode::Loop => spin(),
                Mode::Alloc => hoard(),
                Mode::Recurse => {
                    let depth = dive(black_box(0));
                    panic!("hostile agent: recursion returned at depth {depth}");
                }
                Mode::Stack => {
                    let depth = plunge(0);
                    panic!("hostile agent: recursion returned ({depth})");
                }
                Mode::Panic => panic!("hostile agent panics on purpose at step {}", self.at),
                Mode::File => probe_sandbox(),
                Mode::Writes => {
                    for i in 0..1_000_000u32 {
                        let _ = memory::write(&format!("/episode/flood/{i}"), "x");
                    }
                }
                Mode::ChatLoop => loop {
                    let request = model::ChatRequest::new(vec![model::Message::user("again")]);
                    let _ = model::chat(&request);
                },
            }
        }
        match self.discrete {
            Some(n) => Action::Discrete(self.rng.below(n.max(1))),
            None => Action::Noop,
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
            panic!(
                "hostile agent: out of memory after {} MiB",
                i * (CHUNK >> 20)
            );
        }
        chunk.resize(CHUNK, 0xA5u8.wrapping_add(i as u8) | 1);
        kept.push(black_box(chunk));
        black_box(&mut kept);
    }
    panic!("hostile agent: allocated 4 GiB without failing");
}

/// Recurses with a 1 KiB local per frame and uses the result after the call, so it
/// cannot become a loop. The base case is never reached in practice.
#[inline(never)]
fn dive(depth: u64) -> u64 {
    if black_box(depth) == u64::MAX {
        return 0;
    }
    let mut frame = [0u8; 1024];
    frame[(depth % 1024) as usize] = depth as u8;
    let frame = black_box(frame);
    let below = dive(black_box(depth + 1));
    below
        .wrapping_add(u64::from(frame[(depth % 1021) as usize]))
        .wrapping_add(1)
}

/// Never equal to a depth reached in practice; read volatile so the compiler
/// cannot see that the recursion below never ends.
static FLOOR: u64 = u64::MAX;

/// Recurses with nothing but wasm locals per frame (no `black_box`, which would
/// put its value in linear memory), using the result after the call.
#[inline(never)]
fn plunge(depth: u64) -> u64 {
    // SAFETY: a plain read of a static.
    if depth == unsafe { std::ptr::read_volatile(&FLOOR) } {
        return 1;
    }
    (plunge(depth + 1) ^ depth).rotate_left(7)
}

/// Tries to reach outside the sandbox: a file, an environment variable, the network.
fn probe_sandbox() {
    match std::fs::read_to_string("/etc/passwd") {
        Ok(_) => panic!("SANDBOX ESCAPED: read /etc/passwd"),
        Err(e) => log::warn(&format!("file access denied: {e}")),
    }
    match std::env::var("HOME") {
        Ok(v) => log::warn(&format!("env var HOME: set to `{v}`")),
        Err(e) => log::warn(&format!("env var HOME: {e}")),
    }
    match std::net::TcpStream::connect("127.0.0.1:1") {
        Ok(_) => log::warn("network: connected to 127.0.0.1:1"),
        Err(e) => log::warn(&format!("network access denied: {e}")),
    }
}

export_agent!(HostileAgent);
