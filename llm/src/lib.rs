//! Model endpoints for ludus: the one crate that speaks HTTP. It sends a
//! plugin's chat request to an OpenAI-compatible `/v1/chat/completions`
//! endpoint (llama.cpp's server, vLLM, SGLang, Ollama, hosted APIs), with
//! bounded retries on 429 and 5xx, a time limit per attempt, and prices for
//! the cost of each call. The arena decides what is sent live and records
//! it (`ludus_arena::chat`); this crate only carries requests.

use std::fmt;
use std::time::{Duration, Instant};

use base64::Engine as _;
use ludus_arena::chat::{
    ChatRequest, ChatResponse, ContentPart, GeneratedToken, LiveAnswer, ModelClient, ModelError,
    ToolCall, observation_image,
};
use ludus_arena::model::{Image, Observation};
use serde_json::{Value, json};

/// Attempts per call: the first and two retries.
const ATTEMPTS: u32 = 3;
/// Longest wait before a retry, whatever the server's `Retry-After` says.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Largest answer read from a server.
const MAX_BODY: u64 = 16 << 20;
/// Longest error text kept from a server's answer.
const MAX_MESSAGE: usize = 500;

/// One named endpoint: `[NAME=]URL[,model=M][,api-key-env=VAR]
/// [,price-in=USD][,price-out=USD][,timeout-s=S]`.
#[derive(Clone, PartialEq)]
pub struct Endpoint {
    pub name: String,
    /// The server's base URL (`http://127.0.0.1:8080` or `.../v1`).
    pub url: String,
    /// The model to ask for (sent as `model`); the server's default when not given.
    pub model: Option<String>,
    /// The environment variable holding the API key (sent as a bearer token).
    pub api_key_env: Option<String>,
    /// US dollars per million prompt and completion tokens.
    pub price_in: f64,
    pub price_out: f64,
    /// Time limit of one attempt.
    pub timeout: Duration,
    key: Option<String>,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key itself.
        f.debug_struct("Endpoint")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("model", &self.model)
            .field("api_key_env", &self.api_key_env)
            .field("price_in", &self.price_in)
            .field("price_out", &self.price_out)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// A `--model` value that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EndpointError {
    #[error(
        "--model {0}: expected [NAME=]URL[,model=M][,api-key-env=VAR][,price-in=USD][,price-out=USD][,timeout-s=S]"
    )]
    Syntax(String),
    #[error("--model {value}: {message}")]
    Bad { value: String, message: String },
    #[error("--model: endpoint `{0}` is given twice")]
    Twice(String),
}

impl Endpoint {
    /// Parses one `--model` value, reading the key from its variable now.
    pub fn parse(value: &str) -> Result<Endpoint, EndpointError> {
        let bad = |message: String| EndpointError::Bad {
            value: value.to_string(),
            message,
        };
        let mut parts = value.split(',');
        let head = parts.next().unwrap_or_default().trim();
        let (name, url) = match head.split_once('=') {
            Some((n, u)) if !n.contains(':') && !n.contains('/') => (n.trim(), u.trim()),
            _ => ("default", head),
        };
        if name.is_empty() || url.is_empty() {
            return Err(EndpointError::Syntax(value.to_string()));
        }
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(bad(format!(
                "the URL `{url}` must start with http:// or https://"
            )));
        }
        let mut e = Endpoint {
            name: name.to_string(),
            url: url.trim_end_matches('/').to_string(),
            model: None,
            api_key_env: None,
            price_in: 0.0,
            price_out: 0.0,
            timeout: Duration::from_secs(120),
            key: None,
        };
        for part in parts {
            let Some((k, v)) = part.split_once('=') else {
                return Err(EndpointError::Syntax(value.to_string()));
            };
            let (k, v) = (k.trim(), v.trim());
            let number = |v: &str| -> Result<f64, EndpointError> {
                v.parse::<f64>()
                    .ok()
                    .filter(|x| x.is_finite() && *x >= 0.0)
                    .ok_or_else(|| bad(format!("{k}={v} is not a non-negative number")))
            };
            match k {
                "model" => e.model = Some(v.to_string()),
                "api-key-env" => {
                    let key = std::env::var(v).map_err(|_| {
                        bad(format!(
                            "api-key-env={v}: the environment variable {v} is not set"
                        ))
                    })?;
                    e.api_key_env = Some(v.to_string());
                    e.key = Some(key);
                }
                "price-in" => e.price_in = number(v)?,
                "price-out" => e.price_out = number(v)?,
                "timeout-s" => {
                    let s = number(v)?;
                    if s <= 0.0 || s > 3600.0 {
                        return Err(bad(format!("timeout-s={v}: give 0 < S <= 3600")));
                    }
                    e.timeout = Duration::from_secs_f64(s);
                }
                _ => return Err(bad(format!("unknown option `{k}`"))),
            }
        }
        Ok(e)
    }

    /// The chat completions URL.
    pub fn chat_url(&self) -> String {
        if self.url.ends_with("/v1") {
            format!("{}/chat/completions", self.url)
        } else {
            format!("{}/v1/chat/completions", self.url)
        }
    }
}

/// A run's model access from `--model` values (none: no live endpoint) and
/// an optional cap on its spending.
pub fn setup(
    models: &[String],
    cost_cap_usd: Option<f64>,
) -> Result<ludus_arena::chat::ModelSetup, EndpointError> {
    let client = HttpModels::from_args(models)?;
    Ok(ludus_arena::chat::ModelSetup {
        client: client.map(|c| std::sync::Arc::new(c) as std::sync::Arc<dyn ModelClient>),
        cost_cap_usd,
        ..Default::default()
    })
}

/// The endpoints of a run, as a [`ModelClient`].
pub struct HttpModels {
    endpoints: Vec<Endpoint>,
    agent: ureq::Agent,
}

impl fmt::Debug for HttpModels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpModels")
            .field("endpoints", &self.endpoints)
            .finish()
    }
}

impl HttpModels {
    /// The client for the given `--model` values; `None` when there are none.
    pub fn from_args(values: &[String]) -> Result<Option<HttpModels>, EndpointError> {
        if values.is_empty() {
            return Ok(None);
        }
        let mut endpoints: Vec<Endpoint> = Vec::new();
        for v in values {
            let e = Endpoint::parse(v)?;
            if endpoints.iter().any(|x| x.name == e.name) {
                return Err(EndpointError::Twice(e.name));
            }
            endpoints.push(e);
        }
        Ok(Some(HttpModels::new(endpoints)))
    }

    pub fn new(endpoints: Vec<Endpoint>) -> HttpModels {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_idle_connections_per_host(256)
            .build()
            .into();
        HttpModels { endpoints, agent }
    }

    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    fn endpoint(&self, name: &str) -> Option<&Endpoint> {
        self.endpoints.iter().find(|e| e.name == name)
    }

    /// One attempt: the answer, or why not and whether to try again.
    fn attempt(&self, e: &Endpoint, body: &Value) -> Attempt {
        let mut req = self
            .agent
            .post(e.chat_url())
            .config()
            .timeout_global(Some(e.timeout))
            .build()
            .header("Content-Type", "application/json");
        if let Some(key) = &e.key {
            req = req.header("Authorization", &format!("Bearer {key}"));
        }
        let mut resp = match req.send_json(body) {
            Ok(r) => r,
            Err(ureq::Error::Timeout(_)) => {
                return Attempt::Final(ModelError::Timeout(format!(
                    "endpoint `{}` gave no answer within {:.0} s (raise it with timeout-s=S in --model)",
                    e.name,
                    e.timeout.as_secs_f64()
                )));
            }
            Err(err) => {
                return Attempt::Retry {
                    why: format!("cannot reach {}: {}", e.url, clip(&err.to_string())),
                    wait: None,
                };
            }
        };
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(|s| Duration::from_secs_f64(s).min(MAX_BACKOFF));
        let text = match resp
            .body_mut()
            .with_config()
            .limit(MAX_BODY)
            .read_to_string()
        {
            Ok(t) => t,
            Err(ureq::Error::Timeout(_)) => {
                return Attempt::Final(ModelError::Timeout(format!(
                    "endpoint `{}` did not finish its answer within {:.0} s",
                    e.name,
                    e.timeout.as_secs_f64()
                )));
            }
            Err(err) => {
                return Attempt::Retry {
                    why: format!(
                        "HTTP {status}, unreadable answer: {}",
                        clip(&err.to_string())
                    ),
                    wait: retry_after,
                };
            }
        };
        if status == 429 || status >= 500 {
            return Attempt::Retry {
                why: format!("HTTP {status}: {}", server_message(&text)),
                wait: retry_after,
            };
        }
        if !(200..300).contains(&status) {
            return Attempt::Final(ModelError::BadRequest(format!(
                "endpoint `{}` refused the request (HTTP {status}): {}",
                e.name,
                server_message(&text)
            )));
        }
        match parse_response(&text) {
            Ok(r) => Attempt::Done(r),
            Err(why) => Attempt::Final(ModelError::Unavailable(format!(
                "endpoint `{}` answered something that is not a chat completion: {why}",
                e.name
            ))),
        }
    }
}

enum Attempt {
    Done(ChatResponse),
    Final(ModelError),
    Retry { why: String, wait: Option<Duration> },
}

impl ModelClient for HttpModels {
    fn has_endpoint(&self, name: &str) -> bool {
        self.endpoint(name).is_some()
    }

    fn chat(&self, request: &ChatRequest, images: &Observation, _seed: u64) -> LiveAnswer {
        let started = Instant::now();
        let done = |result, attempts| LiveAnswer {
            result,
            attempts,
            latency_ms: started.elapsed().as_secs_f64() * 1e3,
        };
        let Some(e) = self.endpoint(&request.endpoint) else {
            let err = ModelError::UnknownEndpoint(format!(
                "no model endpoint `{}` in this run",
                request.endpoint
            ));
            return done(Err(err), Vec::new());
        };
        let body = match request_body(request, e.model.as_deref(), images) {
            Ok(b) => b,
            Err(why) => return done(Err(ModelError::BadRequest(why)), Vec::new()),
        };
        let mut attempts = Vec::new();
        let mut backoff = Duration::from_millis(200);
        for n in 1..=ATTEMPTS {
            match self.attempt(e, &body) {
                Attempt::Done(r) => return done(Ok(r), attempts),
                Attempt::Final(err) => return done(Err(err), attempts),
                Attempt::Retry { why, wait } => {
                    if n == ATTEMPTS {
                        let err = ModelError::Unavailable(format!(
                            "endpoint `{}` failed {ATTEMPTS} times; last: {why}",
                            e.name
                        ));
                        attempts.push(why);
                        return done(Err(err), attempts);
                    }
                    let wait = wait.unwrap_or(backoff).min(MAX_BACKOFF);
                    tracing::debug!(endpoint = %e.name, "retrying in {wait:?}: {why}");
                    attempts.push(format!("{why}; retried after {} ms", wait.as_millis()));
                    std::thread::sleep(wait);
                    backoff *= 2;
                }
            }
        }
        done(
            Err(ModelError::Unavailable("no attempt was made".into())),
            attempts,
        )
    }

    fn prices(&self, endpoint: &str) -> (f64, f64) {
        self.endpoint(endpoint)
            .map_or((0.0, 0.0), |e| (e.price_in, e.price_out))
    }

    fn describe(&self) -> Value {
        Value::Array(
            self.endpoints
                .iter()
                .map(|e| {
                    json!({
                        "name": e.name, "url": e.url, "model": e.model,
                        "api_key_env": e.api_key_env,
                        "price_in": e.price_in, "price_out": e.price_out,
                        "timeout_s": e.timeout.as_secs_f64(),
                    })
                })
                .collect(),
        )
    }
}

/// The OpenAI-style JSON body for `request`.
pub fn request_body(
    request: &ChatRequest,
    model: Option<&str>,
    images: &Observation,
) -> Result<Value, String> {
    let mut messages = Vec::with_capacity(request.messages.len());
    for m in &request.messages {
        let only_text = m.content.iter().all(|p| matches!(p, ContentPart::Text(_)));
        let content = if only_text {
            let text: String = m
                .content
                .iter()
                .map(|p| match p {
                    ContentPart::Text(t) => t.as_str(),
                    _ => "",
                })
                .collect();
            Value::String(text)
        } else {
            let mut parts = Vec::new();
            for p in &m.content {
                parts.push(match p {
                    ContentPart::Text(t) => json!({"type": "text", "text": t}),
                    ContentPart::Image(i) => image_part(i)?,
                    ContentPart::ObservationImage(name) => {
                        let i = observation_image(images, name).ok_or_else(|| {
                            format!("the observation has no image part named `{name}`")
                        })?;
                        image_part(i)?
                    }
                });
            }
            Value::Array(parts)
        };
        let mut msg = json!({"role": m.role, "content": content});
        if !m.tool_calls.is_empty() {
            msg["tool_calls"] = m
                .tool_calls
                .iter()
                .map(|c| {
                    json!({"id": c.id, "type": "function",
                           "function": {"name": c.name, "arguments": c.arguments}})
                })
                .collect();
        }
        if let Some(id) = &m.tool_call_id {
            msg["tool_call_id"] = json!(id);
        }
        messages.push(msg);
    }
    let mut body = json!({
        "model": model.unwrap_or("default"),
        "messages": messages,
    });
    let o = body
        .as_object_mut()
        .ok_or_else(|| "internal: body is not an object".to_string())?;
    if let Some(t) = request.temperature {
        o.insert("temperature".into(), json!(t));
    }
    if let Some(p) = request.top_p {
        o.insert("top_p".into(), json!(p));
    }
    if let Some(n) = request.max_tokens {
        o.insert("max_tokens".into(), json!(n));
    }
    if !request.stop.is_empty() {
        o.insert("stop".into(), json!(request.stop));
    }
    if let Some(s) = request.seed {
        o.insert("seed".into(), json!(s));
    }
    if request.logprobs {
        o.insert("logprobs".into(), json!(true));
    }
    if !request.tools.is_empty() {
        let mut tools = Vec::new();
        for t in &request.tools {
            let params: Value = serde_json::from_str(&t.parameters).map_err(|e| {
                format!(
                    "tool `{}`: its parameters are not a JSON schema: {e}",
                    t.name
                )
            })?;
            tools.push(json!({"type": "function", "function": {
                "name": t.name, "description": t.description, "parameters": params}}));
        }
        o.insert("tools".into(), Value::Array(tools));
    }
    if let Some(schema) = &request.response_format {
        let schema: Value = serde_json::from_str(schema)
            .map_err(|e| format!("the response format is not a JSON schema: {e}"))?;
        o.insert(
            "response_format".into(),
            json!({"type": "json_schema", "json_schema": {"name": "response", "strict": true, "schema": schema}}),
        );
    }
    Ok(body)
}

/// An image as a PNG `data:` URL (what chat requests and `ludus serve`
/// send).
pub fn png_data_url(i: &Image) -> Result<String, String> {
    let color = match i.channels {
        1 => png::ColorType::Grayscale,
        2 => png::ColorType::GrayscaleAlpha,
        3 => png::ColorType::Rgb,
        4 => png::ColorType::Rgba,
        c => return Err(format!("an image with {c} channels cannot be sent")),
    };
    let expected = u64::from(i.width) * u64::from(i.height) * u64::from(i.channels);
    if expected != i.pixels.len() as u64 || i.width == 0 || i.height == 0 {
        return Err(format!(
            "an image of {}x{}x{} needs {expected} bytes, it has {}",
            i.width,
            i.height,
            i.channels,
            i.pixels.len()
        ));
    }
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, i.width, i.height);
        enc.set_color(color);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc.write_header().map_err(|e| e.to_string())?;
        w.write_image_data(&i.pixels).map_err(|e| e.to_string())?;
    }
    let mut url = String::from("data:image/png;base64,");
    base64::engine::general_purpose::STANDARD.encode_string(&out, &mut url);
    Ok(url)
}

/// An image as a PNG `image_url` part.
fn image_part(i: &Image) -> Result<Value, String> {
    let url = png_data_url(i)?;
    Ok(json!({"type": "image_url", "image_url": {"url": url}}))
}

/// Reads an OpenAI-style chat completion.
pub fn parse_response(text: &str) -> Result<ChatResponse, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON ({e})"))?;
    let choice = v
        .get("choices")
        .and_then(|c| c.get(0))
        .ok_or("no `choices[0]`")?;
    let message = choice.get("message").ok_or("no `choices[0].message`")?;
    let content = match message.get("content") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            return Err(format!(
                "`content` is not text: {}",
                clip(&other.to_string())
            ));
        }
    };
    let mut tool_calls = Vec::new();
    if let Some(calls) = message.get("tool_calls").and_then(Value::as_array) {
        for c in calls {
            let f = c.get("function").ok_or("a tool call without `function`")?;
            let arguments = match f.get("arguments") {
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
                None => "{}".into(),
            };
            tool_calls.push(ToolCall {
                id: c
                    .get("id")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                name: f
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or("a tool call without a name")?
                    .to_string(),
                arguments,
            });
        }
    }
    let count = |k: &str| -> u32 {
        v.get("usage")
            .and_then(|u| u.get(k))
            .and_then(Value::as_u64)
            .map_or(0, |n| n.min(u64::from(u32::MAX)) as u32)
    };
    let mut tokens = Vec::new();
    if let Some(items) = choice
        .get("logprobs")
        .and_then(|l| l.get("content"))
        .and_then(Value::as_array)
    {
        for t in items {
            tokens.push(GeneratedToken {
                id: t
                    .get("id")
                    .and_then(Value::as_u64)
                    .and_then(|n| u32::try_from(n).ok()),
                text: t
                    .get("token")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                logprob: t.get("logprob").and_then(Value::as_f64).unwrap_or(f64::NAN) as f32,
            });
        }
    }
    Ok(ChatResponse {
        content,
        tool_calls,
        finish_reason: choice
            .get("finish_reason")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        prompt_tokens: count("prompt_tokens"),
        completion_tokens: count("completion_tokens"),
        model: v
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        tokens,
    })
}

/// A server's error message, from its JSON error body when it has one.
fn server_message(text: &str) -> String {
    let from_json = serde_json::from_str::<Value>(text).ok().and_then(|v| {
        let e = v.get("error")?;
        e.get("message")
            .and_then(Value::as_str)
            .map(str::to_string)
            .or_else(|| e.as_str().map(str::to_string))
    });
    clip(&from_json.unwrap_or_else(|| text.trim().to_string()))
}

fn clip(s: &str) -> String {
    let line = s.lines().next().unwrap_or_default();
    if line.len() <= MAX_MESSAGE {
        return line.to_string();
    }
    let mut cut = MAX_MESSAGE;
    while !line.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", &line[..cut])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_as_documented() {
        let e = Endpoint::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!(
            (e.name.as_str(), e.url.as_str()),
            ("default", "http://127.0.0.1:8080")
        );
        assert_eq!(e.chat_url(), "http://127.0.0.1:8080/v1/chat/completions");
        let e = Endpoint::parse(
            "judge=https://api.example.com/v1/,model=m1,price-in=0.5,price-out=1.5",
        )
        .unwrap();
        assert_eq!(e.name, "judge");
        assert_eq!(e.chat_url(), "https://api.example.com/v1/chat/completions");
        assert_eq!(e.model.as_deref(), Some("m1"));
        assert_eq!((e.price_in, e.price_out), (0.5, 1.5));
        assert!(Endpoint::parse("ftp://x").is_err());
        assert!(Endpoint::parse("http://x,price-in=-1").is_err());
        assert!(Endpoint::parse("http://x,colour=blue").is_err());
        assert!(Endpoint::parse("http://x,api-key-env=LUDUS_SURELY_UNSET_VAR").is_err());
        let twice = HttpModels::from_args(&["http://a".into(), "default=http://b".into()]);
        assert_eq!(twice.err(), Some(EndpointError::Twice("default".into())));
    }

    #[test]
    fn answers_parse_and_garbage_is_an_error() {
        let r = parse_response(
            r#"{"model":"m","choices":[{"message":{"role":"assistant","content":"hi",
            "tool_calls":[{"id":"c1","type":"function","function":{"name":"ls","arguments":"{\"p\":1}"}}]},
            "finish_reason":"tool_calls","logprobs":{"content":[{"id":7,"token":"hi","logprob":-0.5}]}}],
            "usage":{"prompt_tokens":12,"completion_tokens":3}}"#,
        )
        .unwrap();
        assert_eq!(r.content, "hi");
        assert_eq!(r.tool_calls[0].name, "ls");
        assert_eq!((r.prompt_tokens, r.completion_tokens), (12, 3));
        assert_eq!(r.tokens[0].id, Some(7));
        assert_eq!(r.finish_reason, "tool_calls");
        assert!(parse_response("<html>").is_err());
        assert!(parse_response(r#"{"choices":[]}"#).is_err());
    }
}
