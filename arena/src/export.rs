//! Recordings in the shapes other tools read (`ludus export`): one JSON
//! object per episode (frames, and model calls as chat messages, as SFT
//! pipelines read them), OpenTelemetry spans in OTLP JSON with the GenAI
//! semantic conventions, and flat rows that the command writes as Parquet.
//! Pixels are never copied out: an image part becomes a reference.

use serde_json::{Value, json};

use crate::chat::{ChatRequest, ContentPart, Message};
use crate::model::{Frame, ModelCall, Observation, Timing};
use crate::store::{Db, EpisodeRow, RunRow, StoreError};

/// An observation as JSON: each part by name, an image as its size and a
/// reference (`episode/E/frame/F/NAME`) rather than its pixels.
pub fn observation_json(observation: &Observation, episode: i64, step: u32) -> Value {
    observation_json_with(observation, |name, i| {
        json!({
            "image": {"width": i.width, "height": i.height, "channels": i.channels},
            "ref": format!("episode/{episode}/frame/{step}/{name}"),
        })
    })
}

/// An observation as a JSON object, one key per part; `image` gives each
/// image part's JSON (a reference, the image itself...).
pub fn observation_json_with(
    observation: &Observation,
    image: impl Fn(&str, &crate::model::Image) -> Value,
) -> Value {
    let mut out = serde_json::Map::new();
    for part in observation {
        let v = match &part.value {
            crate::model::Value::Discrete(d) => json!(d),
            crate::model::Value::Vector(v) => {
                json!(v.iter().map(|x| json_f32(*x)).collect::<Vec<_>>())
            }
            crate::model::Value::Text(t) => json!(t),
            crate::model::Value::Image(i) => image(&part.name, i),
            crate::model::Value::Tree(t) => serde_json::to_value(t).unwrap_or(Value::Null),
        };
        out.insert(part.name.clone(), v);
    }
    Value::Object(out)
}

/// A float as JSON: NaN and infinities as the strings ludus records them as.
fn json_f64(x: f64) -> Value {
    match ludus_core::json_float::text(x) {
        Some(t) => json!(t),
        None => json!(x),
    }
}

fn json_f32(x: f32) -> Value {
    json_f64(f64::from(x))
}

/// Tool calls in the OpenAI shape.
fn tool_calls_json(calls: &[crate::chat::ToolCall]) -> Value {
    calls
        .iter()
        .map(|c| {
            json!({"id": c.id, "type": "function",
                   "function": {"name": c.name, "arguments": c.arguments}})
        })
        .collect()
}

/// A chat message in the OpenAI shape (text parts joined; images named).
pub fn message_json(m: &Message) -> Value {
    let content: String = m
        .content
        .iter()
        .map(|p| match p {
            ContentPart::Text(t) => t.clone(),
            ContentPart::Image(i) => format!("[image {}x{}]", i.width, i.height),
            ContentPart::ObservationImage(n) => format!("[observation image {n}]"),
        })
        .collect::<Vec<_>>()
        .join("\n");
    let mut v = json!({"role": m.role, "content": content});
    if !m.tool_calls.is_empty() {
        v["tool_calls"] = tool_calls_json(&m.tool_calls);
    }
    if let Some(id) = &m.tool_call_id {
        v["tool_call_id"] = json!(id);
    }
    v
}

/// A model call as one conversation: the request's messages, then the
/// answer as the assistant's (or the error).
fn call_json(call: &ModelCall, step: u32) -> Value {
    let mut messages: Vec<Value> = call.request.messages.iter().map(message_json).collect();
    let mut v = json!({
        "frame": step,
        "role": call.role,
        "endpoint": call.request.endpoint,
        "served": call.served,
        "latency_ms": call.latency_ms,
        "cost_usd": call.cost_usd,
    });
    match &call.result {
        Ok(r) => {
            let mut answer = json!({"role": "assistant", "content": r.content});
            if !r.tool_calls.is_empty() {
                answer["tool_calls"] = tool_calls_json(&r.tool_calls);
            }
            messages.push(answer);
            v["model"] = json!(r.model);
            v["finish_reason"] = json!(r.finish_reason);
            v["usage"] =
                json!({"prompt_tokens": r.prompt_tokens, "completion_tokens": r.completion_tokens});
        }
        Err(e) => v["error"] = json!(crate::model::error_message(e)),
    }
    v["messages"] = Value::Array(messages);
    if !call.request.tools.is_empty() {
        v["tools"] = call
            .request
            .tools
            .iter()
            .map(|t| {
                json!({"type": "function", "function": {"name": t.name, "description": t.description,
                       "parameters": serde_json::from_str::<Value>(&t.parameters).unwrap_or(Value::Null)}})
            })
            .collect();
    }
    v
}

/// A frame as JSON: observation, action, rewards, ends, info.
pub fn frame_json(f: &Frame, episode: i64) -> Value {
    json!({
        "step": f.step,
        "observation": observation_json(&f.observation, episode, f.step),
        "action": serde_json::to_value(&f.action).unwrap_or(Value::Null),
        "reward": json_f32(f.reward),
        "env_reward": json_f32(f.env_reward),
        "terminated": f.terminated,
        "truncated": f.truncated,
        "info": serde_json::from_str::<Value>(&f.info).unwrap_or_else(|_| json!(f.info)),
    })
}

/// One episode as one JSON object: its record, its frames (observation,
/// action, rewards, ends, info) and its model calls as conversations.
pub fn episode_json(db: &Db, e: &EpisodeRow) -> Result<Value, StoreError> {
    let frames = db.frames(e.id)?;
    let out_frames: Vec<Value> = frames.iter().map(|(f, _)| frame_json(f, e.id)).collect();
    let calls: Vec<Value> = frames
        .iter()
        .flat_map(|(f, _)| f.model_calls.iter().map(|c| call_json(c, f.step)))
        .collect();
    Ok(json!({
        "run_id": e.run_id,
        "episode": e.id,
        "index": e.index,
        "seed": e.seed,
        "outcome": e.outcome,
        "return": json_f64(e.return_),
        "length": e.length,
        "success": e.success,
        "digest": e.digest,
        "task": e.task,
        "frames": out_frames,
        "model_calls": calls,
    }))
}

/// One row per frame, flat, for a columnar table.
#[derive(Clone, Debug, PartialEq)]
pub struct FrameRow {
    pub run_id: String,
    pub episode: i64,
    pub step: u32,
    pub reward: f32,
    pub env_reward: f32,
    pub terminated: bool,
    pub truncated: bool,
    /// JSON texts.
    pub observation: String,
    pub action: String,
    pub info: String,
    pub model_calls: u32,
    pub tokens_in: u64,
    pub tokens_out: u64,
    pub act_ns: u64,
    pub step_ns: u64,
}

/// An episode's frames as [`FrameRow`]s.
pub fn frame_rows(db: &Db, e: &EpisodeRow) -> Result<Vec<FrameRow>, StoreError> {
    Ok(db
        .frames(e.id)?
        .into_iter()
        .map(|(f, t): (Frame, Timing)| FrameRow {
            run_id: e.run_id.clone(),
            episode: e.id,
            step: f.step,
            reward: f.reward,
            env_reward: f.env_reward,
            terminated: f.terminated,
            truncated: f.truncated,
            observation: observation_json(&f.observation, e.id, f.step).to_string(),
            action: serde_json::to_value(&f.action)
                .unwrap_or(Value::Null)
                .to_string(),
            info: f.info.clone(),
            model_calls: f.model_calls.len() as u32,
            tokens_in: f.model_calls.iter().map(ModelCall::tokens_in).sum(),
            tokens_out: f.model_calls.iter().map(ModelCall::tokens_out).sum(),
            act_ns: t.act_ns,
            step_ns: t.step_ns,
        })
        .collect())
}

/// Hex of 8 bytes from a hash of `parts` (span and trace ids).
fn id_hex(parts: &[u64], bytes: usize) -> String {
    let mut h = parts
        .iter()
        .fold(0x006c_7564_7573_u64, |h, p| ludus_core::derived_seed(h, *p));
    let mut out = String::new();
    while out.len() < bytes * 2 {
        h = ludus_core::derived_seed(h, out.len() as u64);
        out.push_str(&format!("{h:016x}"));
    }
    out.truncate(bytes * 2);
    out
}

fn attr(key: &str, v: Value) -> Value {
    let value = match v {
        Value::String(s) => json!({"stringValue": s}),
        Value::Bool(b) => json!({"boolValue": b}),
        Value::Number(n) if n.is_i64() || n.is_u64() => json!({"intValue": n.to_string()}),
        Value::Number(n) => json!({"doubleValue": n.as_f64().unwrap_or(0.0)}),
        Value::Array(a) => {
            json!({"arrayValue": {"values": a.into_iter().map(|x| attr("", x)["value"].clone()).collect::<Vec<_>>()}})
        }
        other => json!({"stringValue": other.to_string()}),
    };
    json!({"key": key, "value": value})
}

/// The run spec's description of an endpoint.
fn endpoint<'a>(run: &'a RunRow, name: &str) -> Option<&'a Value> {
    run.spec["models"]
        .as_array()
        .and_then(|m| m.iter().find(|e| e["name"] == name))
}

/// The model an endpoint was asked for (its `model=`, or the file a
/// `policy:` endpoint read), else the endpoint's name.
fn model_name(run: &RunRow, name: &str) -> String {
    endpoint(run, name)
        .and_then(|e| e["model"].as_str())
        .filter(|m| !m.is_empty())
        .unwrap_or(name)
        .to_string()
}

/// Who served a model: the provider name GenAI's conventions ask for, from
/// the endpoint's URL in the run's spec.
fn provider(run: &RunRow, name: &str) -> String {
    let url = endpoint(run, name)
        .and_then(|e| e["url"].as_str())
        .unwrap_or_default()
        .to_string();
    if url.starts_with("policy:") {
        "ludus".into()
    } else if url.contains("openai.com") {
        "openai".into()
    } else if url.is_empty() {
        "unknown".into()
    } else {
        // A self-hosted OpenAI-compatible server (llama.cpp, vLLM, ...).
        "openai_compatible".into()
    }
}

/// A run's episodes as OpenTelemetry traces in OTLP JSON (an
/// `ExportTraceServiceRequest`): a trace per episode, a span per step and
/// one per model call inside it, with the GenAI semantic conventions'
/// attributes. Recordings keep durations, not clock times: the spans start
/// at `start_unix_nano` and follow one another.
pub fn otlp_json(
    db: &Db,
    run: &RunRow,
    episodes: &[EpisodeRow],
    start_unix_nano: u64,
) -> Result<Value, StoreError> {
    let mut spans = Vec::new();
    let mut clock = start_unix_nano;
    for e in episodes {
        let trace = id_hex(&[e.id as u64, e.seed], 16);
        let root = id_hex(&[e.id as u64, e.seed, 1], 8);
        let episode_start = clock;
        for (f, t) in db.frames(e.id)? {
            let step_id = id_hex(&[e.id as u64, u64::from(f.step), 2], 8);
            let step_start = clock;
            let mut call_clock = step_start;
            for (k, c) in f.model_calls.iter().enumerate() {
                let dur = (c.latency_ms.max(0.0) * 1e6) as u64;
                let mut attrs = vec![
                    attr("gen_ai.operation.name", json!("chat")),
                    attr(
                        "gen_ai.provider.name",
                        json!(provider(run, &c.request.endpoint)),
                    ),
                    attr(
                        "gen_ai.request.model",
                        json!(model_name(run, &c.request.endpoint)),
                    ),
                    attr("ludus.endpoint", json!(c.request.endpoint)),
                    attr(
                        "ludus.served",
                        json!(format!("{:?}", c.served).to_lowercase()),
                    ),
                ];
                attrs.extend(request_attrs(&c.request));
                let status = match &c.result {
                    Ok(r) => {
                        attrs.push(attr("gen_ai.response.model", json!(r.model)));
                        attrs.push(attr("gen_ai.usage.input_tokens", json!(r.prompt_tokens)));
                        attrs.push(attr(
                            "gen_ai.usage.output_tokens",
                            json!(r.completion_tokens),
                        ));
                        attrs.push(attr(
                            "gen_ai.response.finish_reasons",
                            json!([r.finish_reason]),
                        ));
                        json!({"code": 1})
                    }
                    Err(err) => {
                        attrs.push(attr("error.type", json!(crate::model::error_kind(err))));
                        json!({"code": 2, "message": crate::model::error_message(err)})
                    }
                };
                spans.push(json!({
                    "traceId": trace,
                    "spanId": id_hex(&[e.id as u64, u64::from(f.step), 3, k as u64], 8),
                    "parentSpanId": step_id,
                    "name": format!("chat {}", c.request.endpoint),
                    "kind": 3,
                    "startTimeUnixNano": call_clock.to_string(),
                    "endTimeUnixNano": (call_clock + dur).to_string(),
                    "attributes": attrs,
                    "status": status,
                }));
                call_clock += dur;
            }
            let dur = (t.act_ns + t.step_ns).max(call_clock - step_start);
            clock = step_start + dur;
            spans.push(json!({
                "traceId": trace,
                "spanId": step_id,
                "parentSpanId": root,
                "name": format!("step {}", f.step),
                "kind": 1,
                "startTimeUnixNano": step_start.to_string(),
                "endTimeUnixNano": clock.to_string(),
                "attributes": [
                    attr("ludus.step", json!(f.step)),
                    attr("ludus.reward", json!(f64::from(f.reward))),
                    attr("ludus.terminated", json!(f.terminated)),
                    attr("ludus.truncated", json!(f.truncated)),
                    attr("ludus.model_calls", json!(f.model_calls.len())),
                ],
                "status": {"code": 0},
            }));
        }
        spans.push(json!({
            "traceId": trace,
            "spanId": root,
            "name": format!("episode {}", e.index),
            "kind": 1,
            "startTimeUnixNano": episode_start.to_string(),
            "endTimeUnixNano": clock.max(episode_start).to_string(),
            "attributes": [
                attr("ludus.run_id", json!(e.run_id)),
                attr("ludus.episode", json!(e.id)),
                attr("ludus.seed", json!(e.seed.to_string())),
                attr("ludus.outcome", json!(e.outcome)),
                attr("ludus.return", json!(if e.return_.is_finite() { e.return_ } else { 0.0 })),
                attr("ludus.length", json!(e.length)),
                attr("ludus.success", json!(e.success)),
                attr("ludus.digest", json!(e.digest.clone().unwrap_or_default())),
            ],
            "status": {"code": if e.error.is_some() { 2 } else { 0 }},
        }));
        clock += 1_000;
    }
    Ok(json!({"resourceSpans": [{
        "resource": {"attributes": [
            attr("service.name", json!("ludus")),
            attr("ludus.run_id", json!(run.id)),
        ]},
        "scopeSpans": [{"scope": {"name": "ludus", "version": env!("CARGO_PKG_VERSION")}, "spans": spans}],
    }]}))
}

fn request_attrs(r: &ChatRequest) -> Vec<Value> {
    let mut out = Vec::new();
    if let Some(t) = r.temperature {
        out.push(attr("gen_ai.request.temperature", json!(f64::from(t))));
    }
    if let Some(p) = r.top_p {
        out.push(attr("gen_ai.request.top_p", json!(f64::from(p))));
    }
    if let Some(m) = r.max_tokens {
        out.push(attr("gen_ai.request.max_tokens", json!(m)));
    }
    if let Some(s) = r.seed {
        out.push(attr("gen_ai.request.seed", json!(s)));
    }
    out
}
