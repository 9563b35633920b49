//! Language-model calls: what a plugin's `model.chat` import does in the
//! host, in one place. For every call, [`EpisodeModels`] decides whether it
//! is served from a recording (a replayed prefix, `--model-from-recording`),
//! answered by a user's edit (`ludus fork --model-response`), refused by a
//! budget, or sent live through the run's [`ModelClient`]; and it records
//! the call for the frame it happens in. This crate does no network I/O:
//! the `ludus` binary supplies the client.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

pub use crate::model::{
    ChatRequest, ChatResponse, ContentPart, GeneratedToken, Message, ModelCall, ModelError,
    ModelTotals, Served, Tool, ToolCall, error_kind, error_message, message_text,
    observation_image,
};
use crate::model::{Observation, Role};

/// Sends chat requests to live endpoints (e.g. OpenAI-compatible servers
/// over HTTP). Implementations retry what is worth retrying themselves and
/// bound every call in time.
pub trait ModelClient: Send + Sync + std::fmt::Debug {
    /// Whether the run has an endpoint of this name.
    fn has_endpoint(&self, name: &str) -> bool;
    /// Sends `request` to its endpoint. Images the request refers to in the
    /// observation are given as pixels in `images`, by part name. `seed`
    /// is the call's own, from the episode's seed and the call's index in
    /// the episode: a client that samples itself samples from it, so that
    /// an episode's answers repeat with its seed.
    fn chat(&self, request: &ChatRequest, images: &Observation, seed: u64) -> LiveAnswer;
    /// The endpoint's prices in US dollars per million prompt and
    /// completion tokens (0 when not given).
    fn prices(&self, endpoint: &str) -> (f64, f64);
    /// The endpoints as a run records them: names, URLs and models, never
    /// a key.
    fn describe(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
}

/// Several clients as one: a call goes to the first that has its endpoint.
#[derive(Debug)]
pub struct Clients(pub Vec<Arc<dyn ModelClient>>);

impl Clients {
    fn of(&self, endpoint: &str) -> Option<&Arc<dyn ModelClient>> {
        self.0.iter().find(|c| c.has_endpoint(endpoint))
    }
}

impl ModelClient for Clients {
    fn has_endpoint(&self, name: &str) -> bool {
        self.of(name).is_some()
    }

    fn chat(&self, request: &ChatRequest, images: &Observation, seed: u64) -> LiveAnswer {
        match self.of(&request.endpoint) {
            Some(c) => c.chat(request, images, seed),
            None => LiveAnswer {
                result: Err(ModelError::UnknownEndpoint(format!(
                    "no model endpoint `{}` in this run",
                    request.endpoint
                ))),
                attempts: Vec::new(),
                latency_ms: 0.0,
            },
        }
    }

    fn prices(&self, endpoint: &str) -> (f64, f64) {
        self.of(endpoint).map_or((0.0, 0.0), |c| c.prices(endpoint))
    }

    fn describe(&self) -> serde_json::Value {
        let mut all = Vec::new();
        for c in &self.0 {
            match c.describe() {
                serde_json::Value::Array(items) => all.extend(items),
                serde_json::Value::Null => {}
                other => all.push(other),
            }
        }
        serde_json::Value::Array(all)
    }
}

/// What a live call gave.
#[derive(Clone, Debug)]
pub struct LiveAnswer {
    pub result: Result<ChatResponse, ModelError>,
    /// The failed attempts before the last one (status and wait), one line
    /// each: retries on 429 and 5xx.
    pub attempts: Vec<String>,
    /// Wall-clock time of the call, retries and waits included.
    pub latency_ms: f64,
}

/// The seed a live model call samples from: the `index`-th call (from 0)
/// of the episode played from `episode_seed` with `salt`.
pub fn call_seed(episode_seed: u64, salt: u64, index: u64) -> u64 {
    ludus_core::derived_seed(
        ludus_core::derived_seed(episode_seed, 4) ^ salt,
        1000 + index,
    )
}

/// A run's access to models: the client (none: every call is answered
/// `unknown-endpoint` unless a recording serves it), the run's spending
/// and its cap, and recorded calls to serve again by request
/// (`--model-from-recording`).
#[derive(Clone, Debug, Default)]
pub struct ModelSetup {
    pub client: Option<Arc<dyn ModelClient>>,
    /// `--limit run.cost-usd=X`: the run's whole spending on live calls.
    pub cost_cap_usd: Option<f64>,
    /// Recorded calls, served to any request equal to one of them.
    pub library: Option<Arc<CallLibrary>>,
    /// What the run has spent so far, shared by its episodes.
    pub spent: Arc<Mutex<f64>>,
    /// Mixed into every call's seed: episodes with the same seed and
    /// different salts sample different answers (training's groups).
    pub salt: u64,
}

/// Recorded calls by request: a request equal to a recorded one (same
/// role and request, bit for bit) gets the recorded answer, in the order
/// they were recorded when the same request was made several times.
#[derive(Debug, Default)]
pub struct CallLibrary {
    calls: Mutex<HashMap<Vec<u8>, VecDeque<ModelCall>>>,
}

impl CallLibrary {
    pub fn new(calls: impl IntoIterator<Item = ModelCall>) -> CallLibrary {
        let mut map: HashMap<Vec<u8>, VecDeque<ModelCall>> = HashMap::new();
        for c in calls {
            map.entry(request_key(c.role, &c.request))
                .or_default()
                .push_back(c);
        }
        CallLibrary {
            calls: Mutex::new(map),
        }
    }

    fn take(&self, role: Role, request: &ChatRequest) -> Option<ModelCall> {
        let mut map = self.calls.lock().ok()?;
        let key = request_key(role, request);
        let queue = map.get_mut(&key)?;
        let call = queue.pop_front();
        if queue.is_empty() {
            map.remove(&key);
        }
        call
    }
}

fn request_key(role: Role, request: &ChatRequest) -> Vec<u8> {
    let mut key = Vec::new();
    crate::codec::postcard_into(&(role, request), &mut key);
    key
}

/// Per-role budgets of one episode, from the plugin's limits.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Budget {
    pub tokens: u64,
    pub calls: u64,
}

/// One episode's model calls: shared (behind a mutex) by the agent's and the
/// reward plugin's stores, filled by their `model.chat` calls and drained by
/// the stepper into each frame.
#[derive(Debug)]
pub struct EpisodeModels {
    setup: ModelSetup,
    budgets: [(Role, Budget, Used); 2],
    /// This frame's calls so far.
    calls: Vec<ModelCall>,
    /// Recorded calls of the frame being replayed, to serve in order.
    replay: VecDeque<ModelCall>,
    /// Edited answers for this frame, by the call's index in it.
    edits: HashMap<usize, String>,
    /// The observation the calling plugin sees, for `observation-image` parts.
    observation: Observation,
    /// The first replayed call that did not match, as (call index, what differed).
    pub(crate) mismatch: Option<(usize, String)>,
    /// The tools the episode's environment offers.
    pub(crate) env_tools: Vec<Tool>,
    /// The episode's seed, and the calls made in the episode so far
    /// (served from anywhere): a call's seed comes from both, so that a
    /// fork's live calls get the seeds the original's had.
    seed: u64,
    made: u64,
}

#[derive(Clone, Copy, Debug, Default)]
struct Used {
    tokens: u64,
    calls: u64,
}

pub type SharedModels = Arc<Mutex<EpisodeModels>>;

impl EpisodeModels {
    pub(crate) fn new(
        setup: ModelSetup,
        agent: Budget,
        reward: Budget,
        seed: u64,
    ) -> EpisodeModels {
        EpisodeModels {
            setup,
            budgets: [
                (Role::Agent, agent, Used::default()),
                (Role::Reward, reward, Used::default()),
            ],
            calls: Vec::new(),
            replay: VecDeque::new(),
            edits: HashMap::new(),
            observation: Vec::new(),
            mismatch: None,
            env_tools: Vec::new(),
            seed,
            made: 0,
        }
    }

    /// Recorded calls to serve, in order, during the next frame; those the
    /// frame already made (while the plugins started, for frame 0) are
    /// skipped.
    pub(crate) fn replay_frame(&mut self, calls: Vec<ModelCall>) {
        let made = self.calls.len();
        self.replay = calls.into_iter().skip(made).collect();
    }

    /// Answers for the next frame's calls, by index, instead of any endpoint.
    pub(crate) fn edit_frame(&mut self, edits: HashMap<usize, String>) {
        self.edits = edits;
    }

    /// Lends the observation the calling plugin sees.
    pub(crate) fn set_observation(&mut self, observation: Observation) {
        self.observation = observation;
    }

    pub(crate) fn take_observation(&mut self) -> Observation {
        std::mem::take(&mut self.observation)
    }

    /// The frame's calls, leaving none; and forgets what was left to
    /// replay or edit.
    pub(crate) fn take_calls(&mut self) -> Vec<ModelCall> {
        if !self.replay.is_empty() {
            // A replayed frame whose recorded calls were not all made again.
            self.mismatch.get_or_insert((
                self.calls.len(),
                format!("{} recorded model call(s) were not made", self.replay.len()),
            ));
        }
        self.replay.clear();
        self.edits.clear();
        std::mem::take(&mut self.calls)
    }

    /// One `model.chat` call by a plugin in `role`.
    pub(crate) fn chat(
        &mut self,
        role: Role,
        request: ChatRequest,
    ) -> Result<ChatResponse, ModelError> {
        let index = self.calls.len();
        let call = self.answer(role, request, index);
        self.made += 1;
        let result = call.result.clone();
        if let Ok(r) = &call.result
            && let Some((_, _, used)) = self.budgets.iter_mut().find(|(r0, ..)| *r0 == role)
        {
            used.calls += 1;
            used.tokens += u64::from(r.prompt_tokens) + u64::from(r.completion_tokens);
        }
        self.calls.push(call);
        result
    }

    fn answer(&mut self, role: Role, request: ChatRequest, index: usize) -> ModelCall {
        let call = |request, result, served| ModelCall {
            role,
            request,
            result,
            latency_ms: 0.0,
            cost_usd: 0.0,
            attempts: Vec::new(),
            served,
        };
        // A replayed frame: the recorded call, when the plugin asked for
        // exactly what it asked then.
        if let Some(recorded) = self.replay.pop_front() {
            if recorded.role == role && crate::codec::same_bits(&recorded.request, &request) {
                return call(request, recorded.result, Served::Recording);
            }
            let what = request_difference(&recorded.request, &request);
            self.mismatch.get_or_insert((index, what));
            // The rest of the frame's recorded calls no longer line up.
            self.replay.clear();
        }
        if let Some(text) = self.edits.remove(&index) {
            let response = ChatResponse {
                content: text,
                tool_calls: Vec::new(),
                finish_reason: "stop".into(),
                prompt_tokens: 0,
                completion_tokens: 0,
                model: "edited".into(),
                tokens: Vec::new(),
            };
            return call(request, Ok(response), Served::Edited);
        }
        if let Some(refusal) = self.over_budget(role) {
            return call(request, Err(refusal), Served::Refused);
        }
        if let Some(lib) = &self.setup.library
            && let Some(recorded) = lib.take(role, &request)
        {
            return call(request, recorded.result, Served::Recording);
        }
        let Some(client) = self.setup.client.clone() else {
            let e = ModelError::UnknownEndpoint(format!(
                "no model endpoint `{}`: this run has none (give one with --model [NAME=]URL)",
                request.endpoint
            ));
            return call(request, Err(e), Served::Refused);
        };
        if !client.has_endpoint(&request.endpoint) {
            let e = ModelError::UnknownEndpoint(format!(
                "no model endpoint `{}` in this run (give it with --model {}=URL)",
                request.endpoint, request.endpoint
            ));
            return call(request, Err(e), Served::Refused);
        }
        let seed = call_seed(self.seed, self.setup.salt, self.made);
        let answer = client.chat(&request, &self.observation, seed);
        let (price_in, price_out) = client.prices(&request.endpoint);
        let cost = answer.result.as_ref().map_or(0.0, |r| {
            (f64::from(r.prompt_tokens) * price_in + f64::from(r.completion_tokens) * price_out)
                / 1e6
        });
        if let Ok(mut spent) = self.setup.spent.lock() {
            *spent += cost;
        }
        ModelCall {
            role,
            request,
            result: answer.result,
            latency_ms: answer.latency_ms,
            cost_usd: cost,
            attempts: answer.attempts,
            served: Served::Live,
        }
    }

    fn over_budget(&self, role: Role) -> Option<ModelError> {
        let (_, budget, used) = self.budgets.iter().find(|(r, ..)| *r == role)?;
        let r = role.as_str();
        if used.calls >= budget.calls {
            return Some(ModelError::BudgetExceeded(format!(
                "the episode's {} model calls for the {r} are spent (raise it with --limit {r}.model-calls=N)",
                budget.calls
            )));
        }
        if used.tokens >= budget.tokens {
            return Some(ModelError::BudgetExceeded(format!(
                "the episode's {} tokens for the {r} are spent ({} used; raise it with --limit {r}.tokens=N)",
                budget.tokens, used.tokens
            )));
        }
        if let Some(cap) = self.setup.cost_cap_usd {
            let spent = self.setup.spent.lock().map_or(0.0, |s| *s);
            if spent >= cap {
                return Some(ModelError::BudgetExceeded(format!(
                    "the run's ${cap} for model calls is spent (${spent:.4}; raise it with --limit run.cost-usd=X)"
                )));
            }
        }
        None
    }
}

/// Says how a replayed request differs from the recorded one, in one line.
fn request_difference(recorded: &ChatRequest, now: &ChatRequest) -> String {
    if recorded.endpoint != now.endpoint {
        return format!(
            "endpoint `{}` instead of `{}`",
            now.endpoint, recorded.endpoint
        );
    }
    if recorded.messages.len() != now.messages.len() {
        return format!(
            "{} messages instead of {}",
            now.messages.len(),
            recorded.messages.len()
        );
    }
    for (i, (a, b)) in recorded.messages.iter().zip(&now.messages).enumerate() {
        if !crate::codec::same_bits(a, b) {
            let (ta, tb) = (message_text(a), message_text(b));
            return format!(
                "message {i} ({}) differs: {:?} instead of {:?}",
                b.role,
                clip(&tb, 120),
                clip(&ta, 120)
            );
        }
    }
    "the request's parameters differ (tools, response format or sampling)".into()
}

fn clip(s: &str, n: usize) -> String {
    if s.len() <= n {
        return s.to_string();
    }
    let mut cut = n;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", &s[..cut])
}
