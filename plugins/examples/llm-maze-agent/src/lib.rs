//! An LLM agent for the maze. Each step it shows the model the grid, the
//! task and what its `/agent` memory says about this maze, and asks for one
//! move in a JSON schema (`{"move": "up" | "right" | "down" | "left"}`).
//! An unusable answer (an error, text that is not the schema, a move into a
//! wall) is replaced by a fallback move and counted in
//! `/episode/fallbacks`. When it reaches the goal it writes the moves it
//! made to `/agent/llm-maze/<layout>`, so the next run starts with them in
//! its prompt.
//!
//! Config: `key=value` pairs separated by commas: `endpoint` (default
//! `default`), `temperature` (0), `max-tokens` (32), `history` (moves of
//! this episode shown, 8), `schema` (`on`; `off` sends no response format,
//! for servers or models that cannot follow one), `plan` (`off`; `on` asks
//! the model for a plan when the episode begins, and shows it in every
//! prompt).

use ludus_sdk::model::{ChatRequest, Message, chat};
use ludus_sdk::*;
use maze_kit::{Grid, LETTERS, fnv1a};

const NAMES: [&str; 4] = ["up", "right", "down", "left"];

pub struct LlmMazeAgent {
    /// A sentence added to the prompt from this step on (a prompt change
    /// for tests of re-runs: see `plugins/tests/llm-maze-agent-v2`).
    pub hint: Option<(u32, String)>,
    step: u32,
    endpoint: String,
    temperature: f32,
    max_tokens: u32,
    history: usize,
    schema: bool,
    plan: Option<String>,
    planning: bool,
    task: String,
    layout: Option<String>,
    moves: Vec<u32>,
    fallbacks: u32,
    came_from: Option<(usize, usize)>,
}

impl LlmMazeAgent {
    fn memory_path(&self) -> Option<String> {
        self.layout.as_ref().map(|l| format!("/agent/llm-maze/{l}"))
    }

    fn prompt(&self, grid_text: &str, keys: &str) -> Vec<Message> {
        let remembered = self
            .memory_path()
            .and_then(|p| memory::read(&p))
            .map(|m| format!("Your memory of this maze: it was solved with the moves {m} (U up, R right, D down, L left) from the start.\n"))
            .unwrap_or_default();
        let recent: String = self
            .moves
            .iter()
            .rev()
            .take(self.history)
            .rev()
            .map(|&m| LETTERS[m as usize])
            .collect();
        let system = "You move an agent @ through a grid maze. # is a wall, G is the goal. \
                      Answer with JSON: {\"move\": \"up\"|\"right\"|\"down\"|\"left\"}.";
        let mut hint = match &self.hint {
            Some((from, h)) if self.step >= *from => format!("{h}\n"),
            _ => String::new(),
        };
        if let Some(p) = &self.plan {
            hint.push_str(&format!("Your plan: {p}\n"));
        }
        let user = format!(
            "Task: {}\n{hint}{remembered}Moves so far this episode: {}\nKeys held: {}\nGrid:\n{grid_text}\nWhich move brings @ closer to G?",
            self.task,
            if recent.is_empty() {
                "none".into()
            } else {
                recent
            },
            if keys.is_empty() { "none" } else { keys },
        );
        vec![Message::system(system), Message::user(user)]
    }

    /// The move the model chose, if it is a usable one.
    fn ask(&self, grid: &Grid, grid_text: &str, keys: &str) -> Option<u32> {
        let mut request = ChatRequest::new(self.prompt(grid_text, keys));
        request.endpoint = self.endpoint.clone();
        request.temperature = Some(self.temperature);
        request.max_tokens = Some(self.max_tokens);
        if self.schema {
            request.response_format = Some(
                r#"{"type":"object","properties":{"move":{"type":"string","enum":["up","right","down","left"]}},"required":["move"]}"#
                    .into(),
            );
        }
        let answer = match chat(&request) {
            Ok(a) => a,
            Err(e) => {
                log::warn(&format!("model call failed: {}", e.message()));
                return None;
            }
        };
        let chosen = parse_move(&answer.content);
        match chosen {
            Some(m) if open(grid, m) => Some(m as u32),
            Some(m) => {
                log::info(&format!("the model chose {} into a wall", NAMES[m]));
                None
            }
            None => {
                log::info(&format!("unusable answer: {:?}", answer.content));
                None
            }
        }
    }

    /// An open neighbour, not the cell just left when there is another.
    fn fallback(&self, grid: &Grid) -> u32 {
        let open_moves: Vec<usize> = (0..4).filter(|&m| open(grid, m)).collect();
        let fresh = open_moves
            .iter()
            .copied()
            .find(|&m| grid.neighbour(grid.agent, m) != self.came_from);
        fresh.or(open_moves.first().copied()).unwrap_or(0) as u32
    }
}

/// The move in an answer: `{"move": NAME}`, or, when the answer was cut
/// short, the first move name after `"move"`.
fn parse_move(content: &str) -> Option<usize> {
    if let Some(m) = serde_json::from_str::<serde_json::Value>(content)
        .ok()
        .and_then(|v| v.get("move")?.as_str().map(str::to_string))
    {
        return NAMES.iter().position(|n| *n == m);
    }
    let rest = &content[content.find("\"move\"")? + 6..];
    let value = rest.trim_start_matches([' ', ':', '\n', '\t', '"']);
    NAMES.iter().position(|n| value.starts_with(n))
}

/// Whether moving `m` from the agent's cell does not walk into a wall.
fn open(grid: &Grid, m: usize) -> bool {
    grid.neighbour(grid.agent, m)
        .is_some_and(|(x, y)| grid.at(x, y) != b'#')
}

impl Agent for LlmMazeAgent {
    fn init(config: &str) -> Result<(Self, AgentInfo), String> {
        let mut a = LlmMazeAgent {
            hint: None,
            step: 0,
            endpoint: "default".into(),
            temperature: 0.0,
            max_tokens: 32,
            history: 8,
            schema: true,
            plan: None,
            planning: false,
            task: String::new(),
            layout: None,
            moves: Vec::new(),
            fallbacks: 0,
            came_from: None,
        };
        for item in config.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (k, v) = item
                .split_once('=')
                .ok_or_else(|| format!("config `{item}`: expected key=value"))?;
            let bad = |what: &str| format!("config `{item}`: {what}");
            match k.trim() {
                "endpoint" => a.endpoint = v.trim().to_string(),
                "temperature" => {
                    a.temperature = v.trim().parse().map_err(|_| bad("not a number"))?
                }
                "max-tokens" => {
                    a.max_tokens = v.trim().parse().map_err(|_| bad("not a whole number"))?
                }
                "history" => a.history = v.trim().parse().map_err(|_| bad("not a whole number"))?,
                "plan" => {
                    a.planning = match v.trim() {
                        "on" => true,
                        "off" => false,
                        _ => return Err(bad("on or off")),
                    }
                }
                "schema" => {
                    a.schema = match v.trim() {
                        "on" => true,
                        "off" => false,
                        _ => return Err(bad("on or off")),
                    }
                }
                other => {
                    return Err(format!(
                        "unknown config key `{other}` (endpoint, temperature, max-tokens, history, schema)"
                    ));
                }
            }
        }
        let info = AgentInfo {
            name: "llm-maze-agent".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Asks a language model for each maze move; remembers routes that worked."
                .into(),
        };
        Ok((a, info))
    }

    fn begin_episode(&mut self, _env: &EnvInfo, task: &str, _seed: u64) {
        self.task = task.to_string();
        self.plan = None;
        if self.planning {
            let mut r = ChatRequest::new(vec![
                Message::system("You plan how to solve grid mazes."),
                Message::user(format!(
                    "Task: {task}\nIn one sentence: how will you search for the goal?"
                )),
            ]);
            r.endpoint = self.endpoint.clone();
            r.temperature = Some(self.temperature);
            r.max_tokens = Some(self.max_tokens);
            match chat(&r) {
                Ok(a) => self.plan = Some(a.content),
                Err(e) => log::warn(&format!("no plan: {}", e.message())),
            }
        }
        self.layout = None;
        self.moves.clear();
        self.fallbacks = 0;
        self.came_from = None;
    }

    fn act(&mut self, observation: &Observation, context: &StepContext) -> Action {
        self.step = context.step;
        let Some(grid_text) = text_part(observation, "grid") else {
            log::error("no `grid` part in the observation: is this the maze?");
            return Action::Noop;
        };
        let Some(grid) = Grid::parse(grid_text) else {
            log::error("the `grid` part is not a maze grid");
            return Action::Noop;
        };
        if self.layout.is_none() {
            self.layout = Some(format!("{:016x}", fnv1a(grid_text.as_bytes())));
        }
        let keys = text_part(observation, "keys").unwrap_or("");
        let m = match self.ask(&grid, grid_text, keys) {
            Some(m) => m,
            None => {
                self.fallbacks += 1;
                let _ = memory::write("/episode/fallbacks", &self.fallbacks.to_string());
                self.fallback(&grid)
            }
        };
        self.came_from = Some(grid.agent);
        self.moves.push(m);
        Action::Discrete(m)
    }

    fn end_episode(&mut self, end: &EpisodeEnd) {
        if end.success
            && let Some(p) = self.memory_path()
        {
            let route: String = self.moves.iter().map(|&m| LETTERS[m as usize]).collect();
            let _ = memory::write(&p, &route);
        }
    }
}

#[cfg(not(feature = "library"))]
export_agent!(LlmMazeAgent);
