//! A model's text side: its tokenizer (the `tokenizers` crate, built from a
//! GGUF file's vocabulary or read from `tokenizer.json`) and its chat
//! template (Jinja, rendered by `minijinja`).

use std::path::Path;

use ludus_arena::chat::{ChatRequest, ContentPart, Message, Tool, ToolCall};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer};

use super::gguf::{Gguf, Meta};

/// Why a model's tokenizer or template could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TextError {
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("chat template: {0}")]
    Template(String),
}

/// The split before byte-level BPE that Llama 3's tokenizer uses (runs of
/// letters, numbers in threes, punctuation, newlines, spaces).
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's: as Llama 3's, with single digits.
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// A model's tokenizer and the ids that end a turn.
pub struct ModelText {
    pub tokenizer: Tokenizer,
    /// Ids that end generation: end of text and end of turn.
    pub stop_ids: Vec<u32>,
    pub bos: Option<String>,
    pub eos: Option<String>,
    pub template: String,
    /// Whether the template expects the BOS token to be added by the
    /// tokenizer rather than written by itself.
    pub add_bos: Option<u32>,
    /// Each token's text on its own, made when first needed.
    pieces: std::sync::OnceLock<Vec<String>>,
}

impl ModelText {
    /// The tokenizer and template stored in a GGUF file (a byte-level BPE
    /// vocabulary, `tokenizer.ggml.model = gpt2`).
    pub fn from_gguf(g: &Gguf) -> Result<ModelText, TextError> {
        let bad = |m: String| TextError::Tokenizer(m);
        let model = g
            .string("tokenizer.ggml.model")
            .map_err(|e| bad(e.to_string()))?;
        if model != "gpt2" {
            return Err(bad(format!(
                "`{model}` vocabularies are not read from GGUF yet (byte-level BPE, `gpt2`, is); give a folder with tokenizer.json"
            )));
        }
        let strings = |key: &str| -> Result<Vec<String>, TextError> {
            g.get(key)
                .ok()
                .and_then(Meta::as_array)
                .ok_or_else(|| bad(format!("metadata `{key}` is missing")))?
                .iter()
                .map(|m| {
                    m.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| bad(format!("`{key}` holds something other than text")))
                })
                .collect()
        };
        let tokens = strings("tokenizer.ggml.tokens")?;
        let merges: Vec<(String, String)> = strings("tokenizer.ggml.merges")?
            .into_iter()
            .filter_map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
            })
            .collect();
        let types: Vec<i64> = g
            .get("tokenizer.ggml.token_type")
            .ok()
            .and_then(Meta::as_array)
            .map(|a| a.iter().map(|m| m.as_i64().unwrap_or(1)).collect())
            .unwrap_or_default();
        let vocab: Vocab = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(|e| bad(e.to_string()))?;
        let mut tokenizer = Tokenizer::new(bpe);
        let pre = g.string("tokenizer.ggml.pre").unwrap_or("default");
        let byte_level =
            |regex: bool| PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, regex));
        let split = |pattern: &str| -> Result<PreTokenizerWrapper, TextError> {
            Ok(PreTokenizerWrapper::Split(
                Split::new(
                    SplitPattern::Regex(pattern.to_string()),
                    SplitDelimiterBehavior::Isolated,
                    false,
                )
                .map_err(|e| bad(e.to_string()))?,
            ))
        };
        let pre_tokenizer = match pre {
            "smollm" => Sequence::new(vec![
                PreTokenizerWrapper::Digits(Digits::new(true)),
                byte_level(true),
            ]),
            "llama-bpe" | "llama3" => Sequence::new(vec![split(LLAMA3_SPLIT)?, byte_level(false)]),
            "qwen2" => Sequence::new(vec![split(QWEN2_SPLIT)?, byte_level(false)]),
            _ => Sequence::new(vec![byte_level(true)]),
        };
        tokenizer.with_pre_tokenizer(Some(pre_tokenizer));
        tokenizer.with_decoder(Some(ByteLevelDecoder::default()));
        // Control and user-defined tokens are matched whole in the text
        // (the template writes `<|im_start|>` as text).
        let special: Vec<AddedToken> = tokens
            .iter()
            .zip(types.iter().chain(std::iter::repeat(&1)))
            .filter(|(_, t)| **t == 3 || **t == 4)
            .map(|(s, _)| AddedToken::from(s.clone(), true))
            .collect();
        tokenizer
            .add_special_tokens(special)
            .map_err(|e| bad(e.to_string()))?;
        let id = |key: &str| g.int(key).ok().and_then(|v| u32::try_from(v).ok());
        let name = |id: Option<u32>| id.and_then(|i| tokens.get(i as usize).cloned());
        let (bos_id, eos_id) = (
            id("tokenizer.ggml.bos_token_id"),
            id("tokenizer.ggml.eos_token_id"),
        );
        let mut stop_ids: Vec<u32> = eos_id.into_iter().collect();
        stop_ids.extend(id("tokenizer.ggml.eot_token_id"));
        for end in ["<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>"] {
            if let Some(i) = tokens.iter().position(|t| t == end) {
                stop_ids.push(i as u32);
            }
        }
        stop_ids.sort_unstable();
        stop_ids.dedup();
        let add_bos = match g.get("tokenizer.ggml.add_bos_token") {
            Ok(Meta::Bool(true)) => bos_id,
            _ => None,
        };
        let template = g
            .string("tokenizer.chat_template")
            .map(str::to_string)
            .unwrap_or_else(|_| CHATML.to_string());
        Ok(ModelText {
            tokenizer,
            stop_ids,
            bos: name(bos_id),
            eos: name(eos_id),
            template,
            add_bos,
            pieces: std::sync::OnceLock::new(),
        })
    }

    /// The tokenizer and template of a Hugging Face folder
    /// (`tokenizer.json`, `tokenizer_config.json`).
    pub fn from_folder(dir: &Path) -> Result<ModelText, TextError> {
        let tokenizer = Tokenizer::from_file(dir.join("tokenizer.json")).map_err(|e| {
            TextError::Tokenizer(format!("{}: {e}", dir.join("tokenizer.json").display()))
        })?;
        let config: serde_json::Value = std::fs::read_to_string(dir.join("tokenizer_config.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        let token = |key: &str| -> Option<String> {
            match &config[key] {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Object(o) => o
                    .get("content")
                    .and_then(|c| c.as_str())
                    .map(str::to_string),
                _ => None,
            }
        };
        let (bos, eos) = (token("bos_token"), token("eos_token"));
        let mut stop_ids: Vec<u32> = eos
            .iter()
            .filter_map(|e| tokenizer.token_to_id(e))
            .collect();
        for end in [
            "<|im_end|>",
            "<|eot_id|>",
            "<|endoftext|>",
            "<|end|>",
            "<end_of_turn>",
        ] {
            stop_ids.extend(tokenizer.token_to_id(end));
        }
        stop_ids.sort_unstable();
        stop_ids.dedup();
        let template = config["chat_template"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| CHATML.to_string());
        let add_bos = match config["add_bos_token"] {
            serde_json::Value::Bool(true) => bos.as_deref().and_then(|b| tokenizer.token_to_id(b)),
            _ => None,
        };
        Ok(ModelText {
            tokenizer,
            stop_ids,
            bos,
            eos,
            template,
            add_bos,
            pieces: std::sync::OnceLock::new(),
        })
    }

    /// Writes `tokenizer.json` and `tokenizer_config.json` (template, BOS
    /// and EOS) to `dir`, as [`ModelText::from_folder`] reads them.
    pub fn save(&self, dir: &Path) -> Result<(), TextError> {
        let bad = |e: String| TextError::Tokenizer(format!("{}: {e}", dir.display()));
        self.tokenizer
            .save(dir.join("tokenizer.json"), false)
            .map_err(|e| bad(e.to_string()))?;
        let config = serde_json::json!({
            "chat_template": self.template,
            "bos_token": self.bos,
            "eos_token": self.eos,
            "add_bos_token": self.add_bos.is_some(),
        });
        std::fs::write(dir.join("tokenizer_config.json"), config.to_string())
            .map_err(|e| bad(e.to_string()))
    }

    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TextError> {
        let enc = self
            .tokenizer
            .encode_fast(text, false)
            .map_err(|e| TextError::Tokenizer(e.to_string()))?;
        let mut ids = Vec::with_capacity(enc.len() + 1);
        ids.extend(self.add_bos);
        ids.extend_from_slice(enc.get_ids());
        Ok(ids)
    }

    pub fn decode(&self, ids: &[u32]) -> String {
        self.tokenizer.decode(ids, false).unwrap_or_default()
    }

    /// Every token's text on its own (`pieces()[id]`), as constrained
    /// decoding tries them.
    pub fn pieces(&self) -> &[String] {
        self.pieces.get_or_init(|| {
            (0..self.tokenizer.get_vocab_size(true) as u32)
                .map(|id| self.decode(&[id]))
                .collect()
        })
    }

    /// The prompt of a chat request as the model's template writes it,
    /// ready for the assistant's answer.
    pub fn prompt(&self, request: &ChatRequest) -> Result<String, TextError> {
        let mut env = minijinja::Environment::new();
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |m: String| -> Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    m,
                ))
            },
        );
        let bad = |e: minijinja::Error| TextError::Template(e.to_string());
        env.add_template("chat", &self.template).map_err(bad)?;
        let own_tools = self.template.contains("tools");
        let mut messages: Vec<serde_json::Value> = request
            .messages
            .iter()
            .map(|m| message_json(m, own_tools))
            .collect();
        if !request.tools.is_empty() && !own_tools {
            // A template that knows no tools: they are described in the
            // system message, with the format `tool_calls` reads.
            let text = tools_prompt(&request.tools);
            match messages.first_mut() {
                Some(first) if first["role"] == "system" => {
                    let content = first["content"].as_str().unwrap_or_default();
                    first["content"] = format!("{content}\n\n{text}").into();
                }
                _ => messages.insert(0, serde_json::json!({"role": "system", "content": text})),
            }
        }
        let tools: Vec<serde_json::Value> = request
            .tools
            .iter()
            .map(|t| {
                serde_json::json!({"type": "function", "function": {
                    "name": t.name,
                    "description": t.description,
                    "parameters": serde_json::from_str::<serde_json::Value>(&t.parameters).unwrap_or_default(),
                }})
            })
            .collect();
        let ctx = minijinja::context! {
            messages => minijinja::value::Serde(&messages),
            tools => if tools.is_empty() { None } else { Some(minijinja::value::Serde(&tools)) },
            add_generation_prompt => true,
            bos_token => self.bos.clone().unwrap_or_default(),
            eos_token => self.eos.clone().unwrap_or_default(),
        };
        env.get_template("chat")
            .and_then(|t| t.render(ctx))
            .map_err(bad)
    }
}

/// A message as chat templates read it: `role`, `content` text, and an
/// assistant's `tool_calls` or a tool's `tool_call_id`.
/// What a model whose template knows no tools is told about them.
fn tools_prompt(tools: &[Tool]) -> String {
    let mut text = String::from(
        "You may call these functions. To call one, answer with \
         <tool_call>{\"name\": NAME, \"arguments\": {ARGUMENTS}}</tool_call>.\nFunctions:",
    );
    for t in tools {
        let params = serde_json::from_str::<serde_json::Value>(&t.parameters).unwrap_or_default();
        let line =
            serde_json::json!({"name": t.name, "description": t.description, "parameters": params});
        text.push('\n');
        text.push_str(&line.to_string());
    }
    text
}

/// The tool calls in a model's answer, in the model's own format:
/// `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` blocks (the
/// Hermes and Qwen format, and what [`tools_prompt`] asks for), or an answer
/// that is one such JSON object (Llama 3's; `parameters` is read as
/// `arguments`). Only the request's tools count. Returns the text left
/// outside the calls and the calls, numbered `call_0`, `call_1`, ...
pub fn tool_calls(text: &str, tools: &[Tool]) -> (String, Vec<ToolCall>) {
    let call = |json: &str, calls: &mut Vec<ToolCall>| -> bool {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(json.trim()) else {
            return false;
        };
        let Some(name) = v["name"]
            .as_str()
            .filter(|n| tools.iter().any(|t| t.name == *n))
        else {
            return false;
        };
        let args = match v.get("arguments").or_else(|| v.get("parameters")) {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(a) => a.to_string(),
            None => "{}".into(),
        };
        calls.push(ToolCall {
            id: format!("call_{}", calls.len()),
            name: name.to_string(),
            arguments: args,
        });
        true
    };
    let mut calls = Vec::new();
    if tools.is_empty() {
        return (text.to_string(), calls);
    }
    let (mut rest, mut left) = (text, String::new());
    while let Some(open) = rest.find("<tool_call>") {
        let body = &rest[open + "<tool_call>".len()..];
        let (json, after) = match body.find("</tool_call>") {
            Some(close) => (&body[..close], &body[close + "</tool_call>".len()..]),
            // An answer cut off after its last call's JSON.
            None => (body, ""),
        };
        if call(json, &mut calls) {
            left.push_str(&rest[..open]);
        } else {
            // Not a call: the block stays text, tags and all.
            left.push_str(&rest[..rest.len() - after.len()]);
        }
        rest = after;
    }
    left.push_str(rest);
    if calls.is_empty() && call(text, &mut calls) {
        left.clear();
    }
    (left.trim().to_string(), calls)
}

fn message_json(m: &Message, own_tools: bool) -> serde_json::Value {
    let content: String = m
        .content
        .iter()
        .filter_map(|p| match p {
            ContentPart::Text(t) => Some(t.as_str()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("\n");
    if !own_tools {
        // Earlier calls and their results, written as the model was asked
        // to write them.
        let mut content = content;
        for c in &m.tool_calls {
            let args = serde_json::from_str::<serde_json::Value>(&c.arguments).unwrap_or_default();
            let call = serde_json::json!({"name": c.name, "arguments": args});
            content.push_str(&format!("<tool_call>{call}</tool_call>"));
        }
        return serde_json::json!({"role": m.role, "content": content});
    }
    let mut v = serde_json::json!({"role": m.role, "content": content});
    if !m.tool_calls.is_empty() {
        v["tool_calls"] = m
            .tool_calls
            .iter()
            .map(|c| {
                serde_json::json!({"id": c.id, "type": "function", "function": {
                    "name": c.name,
                    "arguments": serde_json::from_str::<serde_json::Value>(&c.arguments).unwrap_or_default(),
                }})
            })
            .collect();
    }
    if let Some(id) = &m.tool_call_id {
        v["tool_call_id"] = id.clone().into();
    }
    v
}

/// The template used when a model has none: ChatML.
const CHATML: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

#[cfg(test)]
mod tests {
    use super::*;

    fn tool(name: &str) -> Tool {
        Tool {
            name: name.into(),
            description: format!("the {name} tool"),
            parameters: r#"{"type":"object","properties":{"path":{"type":"string"}}}"#.into(),
        }
    }

    #[test]
    fn tool_calls_are_read_in_the_models_formats() {
        let tools = [tool("read"), tool("list")];
        let (text, calls) = tool_calls(
            "Let me look.\n<tool_call>\n{\"name\": \"read\", \"arguments\": {\"path\": \"a.txt\"}}\n</tool_call>",
            &tools,
        );
        assert_eq!(text, "Let me look.");
        assert_eq!(calls.len(), 1);
        assert_eq!(
            (
                calls[0].id.as_str(),
                calls[0].name.as_str(),
                calls[0].arguments.as_str()
            ),
            ("call_0", "read", r#"{"path":"a.txt"}"#)
        );
        // Two calls, one cut off at the end of the answer.
        let (_, calls) = tool_calls(
            "<tool_call>{\"name\":\"list\",\"arguments\":{}}</tool_call><tool_call>{\"name\":\"read\",\"arguments\":{\"path\":\"b\"}}",
            &tools,
        );
        assert_eq!(
            calls.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
            ["list", "read"]
        );
        assert_eq!(calls[1].id, "call_1");
        // Llama 3's bare object, `parameters` for `arguments`.
        let (text, calls) = tool_calls(r#"{"name": "list", "parameters": {"path": "/"}}"#, &tools);
        assert_eq!((text.as_str(), calls.len()), ("", 1));
        assert_eq!(calls[0].arguments, r#"{"path":"/"}"#);
        // Unknown tools, broken JSON and answers without tools stay text.
        for answer in [
            r#"<tool_call>{"name": "delete", "arguments": {}}</tool_call>"#,
            "<tool_call>{\"name\": \"read\",</tool_call>",
            r#"{"move": "up"}"#,
        ] {
            let (text, calls) = tool_calls(answer, &tools);
            assert!(calls.is_empty(), "{answer}");
            assert_eq!(text, answer);
        }
        assert!(tool_calls(r#"{"name": "read"}"#, &[]).1.is_empty());
    }

    #[test]
    fn a_template_without_tools_is_told_about_them() {
        let text = tools_prompt(&[tool("read")]);
        assert!(text.contains("<tool_call>"), "{text}");
        assert!(text.contains(r#""name":"read""#), "{text}");
        let call = Message {
            role: "assistant".into(),
            content: Vec::new(),
            tool_calls: vec![ToolCall {
                id: "call_0".into(),
                name: "read".into(),
                arguments: r#"{"path":"a"}"#.into(),
            }],
            tool_call_id: None,
        };
        let written = message_json(&call, false);
        assert_eq!(
            written["content"],
            r#"<tool_call>{"arguments":{"path":"a"},"name":"read"}</tool_call>"#
        );
        assert!(message_json(&call, true)["tool_calls"].is_array());
    }
}
