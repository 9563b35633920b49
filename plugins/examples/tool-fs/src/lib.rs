//! A tool-using text environment: a small in-memory file system made from
//! the seed, worked through four tools (`ls`, `cat`, `grep`, `write`) that a
//! model calls. The task: find the file that mentions a word and write its
//! path to `/answer.txt`. The episode ends when `/answer.txt` is written
//! (reward 1 and success when it holds the right path) or after
//! `max_steps` (default 12).
//!
//! Observation parts: `result` (text: what the last tool call returned, or
//! why the action was not one) and `files` (text: how many files there
//! are). Actions: `type-text` holding a tool call (see the SDK's `tools`).
//! Config: `files=N` (4..=40, default 8), `max_steps=N`.

use std::collections::BTreeMap;

use ludus_sdk::tools::{Tool, parse_tool_call, tool};
use ludus_sdk::*;

const WORDS: &[&str] = &[
    "apple", "river", "stone", "cloud", "maple", "ember", "harbor", "violet", "copper", "meadow",
    "falcon", "lantern", "orchid", "summit", "timber", "willow", "canyon", "glacier", "saffron",
    "thistle",
];
const DIRS: &[&str] = &["/notes", "/mail", "/projects"];

pub struct ToolFs {
    files: usize,
    max_steps: u32,
    fs: BTreeMap<String, String>,
    target: String,
    word: String,
    steps: u32,
}

impl ToolFs {
    fn generate(&mut self, seed: u64) {
        let mut rng = Rng::new(seed);
        let mut pick = |n: usize| rng.below(n as u32) as usize;
        // The word only the target file mentions, and filler from the rest.
        let word = WORDS[pick(WORDS.len())].to_string();
        let filler: Vec<&str> = WORDS.iter().copied().filter(|w| *w != word).collect();
        let target = pick(self.files);
        self.fs.clear();
        for i in 0..self.files {
            let dir = DIRS[pick(DIRS.len())];
            let path = format!("{dir}/file{i}.txt");
            let mut words: Vec<&str> = (0..6).map(|_| filler[pick(filler.len())]).collect();
            if i == target {
                let at = pick(words.len());
                words.insert(at, &word);
                self.target = path.clone();
            }
            self.fs.insert(path, words.join(" ") + "\n");
        }
        self.word = word;
    }

    fn observation(&self, result: &str) -> Observation {
        vec![
            Part {
                name: "result".into(),
                value: Value::Text(result.into()),
            },
            Part {
                name: "files".into(),
                value: Value::Text(format!("{} files", self.fs.len())),
            },
        ]
    }

    /// Runs one tool call: its result, and the answer when it wrote one.
    fn call(&mut self, name: &str, arguments: &str) -> (String, Option<String>) {
        let args: serde_json::Value = serde_json::from_str(arguments).unwrap_or_default();
        let arg = |k: &str| {
            args.get(k)
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_string()
        };
        match name {
            "ls" => {
                let dir = arg("path");
                let dir = if dir.is_empty() { "/".into() } else { dir };
                let prefix = if dir.ends_with('/') {
                    dir.clone()
                } else {
                    format!("{dir}/")
                };
                let found: Vec<&str> = self
                    .fs
                    .keys()
                    .filter(|p| p.starts_with(&prefix) || dir == "/")
                    .map(String::as_str)
                    .collect();
                if found.is_empty() {
                    (format!("ls: no files under {dir}"), None)
                } else {
                    (found.join("\n"), None)
                }
            }
            "cat" => {
                let path = arg("path");
                match self.fs.get(&path) {
                    Some(text) => (text.clone(), None),
                    None => (format!("cat: {path}: no such file"), None),
                }
            }
            "grep" => {
                let pattern = arg("pattern");
                if pattern.is_empty() {
                    return ("grep: give a pattern".into(), None);
                }
                let hits: Vec<String> = self
                    .fs
                    .iter()
                    .filter(|(_, text)| text.contains(&pattern))
                    .map(|(p, text)| format!("{p}: {}", text.trim()))
                    .collect();
                if hits.is_empty() {
                    (format!("grep: no file mentions {pattern:?}"), None)
                } else {
                    (hits.join("\n"), None)
                }
            }
            "write" => {
                let path = arg("path");
                let content = arg("content");
                if path != "/answer.txt" {
                    return (
                        format!("write: only /answer.txt can be written, not {path:?}"),
                        None,
                    );
                }
                ("wrote /answer.txt".into(), Some(content.trim().to_string()))
            }
            other => (
                format!("no tool named {other:?} (ls, cat, grep, write)"),
                None,
            ),
        }
    }
}

impl Env for ToolFs {
    fn init(config: &str) -> Result<(Self, EnvInfo), String> {
        let (mut files, mut max_steps) = (8usize, 12u32);
        for (k, v) in parse_config(config)? {
            match k.as_str() {
                "files" => files = parse_value(&k, &v)?,
                "max_steps" => max_steps = parse_value(&k, &v)?,
                _ => {
                    return Err(format!(
                        "tool-fs: unknown config key `{k}` (known: files, max_steps)"
                    ));
                }
            }
        }
        if !(4..=40).contains(&files) {
            return Err(format!("tool-fs: files={files} is out of 4..=40"));
        }
        let info = EnvInfo {
            name: "tool-fs".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description:
                "Find the file that mentions a word, through ls, cat, grep and write tools.".into(),
            observation_space: vec![
                NamedSpace {
                    name: "result".into(),
                    space: PartSpace::Text(16 * 1024),
                },
                NamedSpace {
                    name: "files".into(),
                    space: PartSpace::Text(64),
                },
            ],
            action_space: ActionSpace {
                discrete: None,
                continuous: None,
                pointer: None,
                text: Some(4096),
                keys: None,
                element: false,
            },
            max_steps,
            vector_size: 0,
        };
        let env = ToolFs {
            files,
            max_steps,
            fs: BTreeMap::new(),
            target: String::new(),
            word: String::new(),
            steps: 0,
        };
        Ok((env, info))
    }

    fn tools(&self) -> Vec<Tool> {
        let path =
            r#"{"type":"object","properties":{"path":{"type":"string"}},"required":["path"]}"#;
        vec![
            tool(
                "ls",
                "List the files under a directory (`/` for all).",
                path,
            ),
            tool("cat", "Show a file's text.", path),
            tool(
                "grep",
                "List the files whose text contains a pattern, with their text.",
                r#"{"type":"object","properties":{"pattern":{"type":"string"}},"required":["pattern"]}"#,
            ),
            tool(
                "write",
                "Write the answer: path /answer.txt, content the path of the file you found.",
                r#"{"type":"object","properties":{"path":{"type":"string"},"content":{"type":"string"}},"required":["path","content"]}"#,
            ),
        ]
    }

    fn reset(&mut self, seed: u64) -> ResetResult {
        self.generate(seed);
        self.steps = 0;
        ResetResult {
            observation: self.observation("(no tool called yet)"),
            task: format!(
                "Find the file that mentions the word \"{}\" and write its path to /answer.txt.",
                self.word
            ),
            info: "{}".into(),
        }
    }

    fn step(&mut self, action: &Action) -> StepResult {
        self.steps += 1;
        let (result, answer) = match parse_tool_call(action) {
            Some(call) => self.call(&call.name, &call.arguments),
            None => ("act with a tool call (ls, cat, grep, write)".into(), None),
        };
        let success = answer.as_deref() == Some(self.target.as_str());
        let terminated = answer.is_some();
        let truncated = !terminated && self.steps >= self.max_steps;
        StepResult {
            observation: self.observation(&result),
            reward: if success { 1.0 } else { 0.0 },
            terminated,
            truncated,
            info: if terminated {
                format!(
                    r#"{{"success":{success},"answer_was":{}}}"#,
                    serde_json::json!(self.target)
                )
            } else {
                "{}".into()
            },
        }
    }
}

export_env!(ToolFs);
