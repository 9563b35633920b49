// Shared by `memory-probe` and `memory-probe-v2`; each defines `CHANGE_AT`.
//
// Every `act`:
// 1. logs `seen <path>=<value>;...` with the whole memory it can read, so a
//    test can compare it with the memory the debugger rebuilds for the frame;
// 2. if `/episode/force` or `/user/force` holds a number, takes that action;
//    otherwise a seeded random one;
// 3. every `write_every` steps (config, default 1) writes and deletes a few
//    paths under `/episode` and `/agent`.

use ludus_sdk::*;

pub struct Probe {
    rng: Rng,
    actions: u32,
    write_every: u32,
}

impl Agent for Probe {
    fn init(config: &str) -> Result<(Self, AgentInfo), String> {
        let mut write_every = 1u32;
        for (k, v) in parse_config(config)? {
            match k.as_str() {
                "write_every" => write_every = parse_value::<u32>(&k, &v)?.max(1),
                _ => return Err(format!("memory-probe: unknown config key `{k}` (known: write_every)")),
            }
        }
        let info = AgentInfo {
            name: "memory-probe".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Logs the memory it sees and writes to it every step (tests).".into(),
        };
        Ok((Probe { rng: Rng::new(0), actions: 1, write_every }, info))
    }

    fn begin_episode(&mut self, env: &EnvInfo, _task: &str, seed: u64) {
        self.rng = Rng::new(seed);
        self.actions = env.action_space.discrete.unwrap_or(1).max(1);
    }

    fn act(&mut self, _observation: &Observation, context: &StepContext) -> Action {
        let mut seen = String::from("seen ");
        for path in memory::list("/") {
            let value = memory::read(&path).unwrap_or_default();
            seen.push_str(&format!("{path}={value};"));
        }
        log::info(&seen);
        let forced = memory::read("/episode/force")
            .or_else(|| memory::read("/user/force"))
            .and_then(|v| v.trim().parse::<u32>().ok());
        let mut action = match forced {
            Some(a) => a % self.actions,
            None => self.rng.below(self.actions),
        };
        if CHANGE_AT.is_some_and(|c| context.step >= c) {
            action = (action + 1) % self.actions;
        }
        let step = context.step;
        if step.is_multiple_of(self.write_every) {
            let _ = memory::write("/episode/step", &step.to_string());
            let count = memory::read("/agent/count")
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
            let _ = memory::write("/agent/count", &(count + 1).to_string());
            let slot = self.rng.below(3);
            if self.rng.below(3) == 0 {
                let _ = memory::delete(&format!("/episode/tmp{slot}"));
            } else {
                let _ = memory::write(&format!("/episode/tmp{slot}"), &format!("{step}:{action}"));
            }
        }
        Action::Discrete(action)
    }

    fn end_episode(&mut self, end: &EpisodeEnd) {
        let _ = memory::write("/agent/last_return", &end.return_.to_string());
    }
}

export_agent!(Probe);
