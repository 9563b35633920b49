//! Model servers for the tests: llama.cpp's real server with a real GGUF
//! model (`scripts/model-server.py`, installed by `scripts/setup.sh`), and a
//! plain HTTP server that misbehaves on purpose (errors, garbage, silence)
//! and keeps every request it got.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::root;

/// A GGUF model made or installed by `scripts/setup-models.sh`.
pub fn model_file(name: &str) -> PathBuf {
    let path = root().join("models").join(name);
    assert!(
        path.exists(),
        "{} is missing: run scripts/setup.sh (it makes the test models)",
        path.display()
    );
    path
}

/// llama.cpp's server on a free loopback port, stopped when dropped.
pub struct LlamaServer {
    child: Option<Child>,
    pub url: String,
}

impl LlamaServer {
    /// Starts the server on `model` (a file in `models/`) with one thread
    /// and `slots` parallel slots.
    pub fn start(model: &str, slots: u32) -> LlamaServer {
        LlamaServer::start_with(model, slots, None)
    }

    /// [`LlamaServer::start`] with an image projector (`models/NAME`).
    pub fn start_with(model: &str, slots: u32, mmproj: Option<&str>) -> LlamaServer {
        let python = root().join(".venv/bin/python");
        let mut cmd = Command::new(&python);
        cmd.arg(root().join("scripts/model-server.py"))
            .arg(model_file(model))
            .args([
                "--port",
                "0",
                "--threads",
                "1",
                "--slots",
                &slots.to_string(),
            ]);
        if let Some(m) = mmproj {
            cmd.arg("--mmproj").arg(model_file(m));
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", python.display()));
        let stdout = child.stdout.take().expect("server stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("listening on ") {
                    let _ = tx.send(url.trim().to_string());
                }
            }
        });
        let url = match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                panic!("the model server did not start within 120 s");
            }
        };
        LlamaServer {
            child: Some(child),
            url,
        }
    }

    /// Stops the server and waits until its port refuses connections.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for LlamaServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// How the fake server answers.
#[derive(Clone)]
pub enum Behaviour {
    /// 200 with this body.
    Answer(String),
    /// This status with a JSON error body.
    Status(u16),
    /// 200 with a body that is not JSON.
    Garbage,
    /// Reads the request and never answers.
    Hang,
    /// 200 with what the function makes of the request's body: a scripted
    /// model, for tests of what flows between agents, envs and models.
    Script(Arc<dyn Fn(&str) -> String + Send + Sync>),
}

/// A chat completion whose content is `content`, with these token counts.
pub fn completion(content: &str, prompt_tokens: u32, completion_tokens: u32) -> String {
    serde_json::json!({
        "model": "fake",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": content}}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens},
    })
    .to_string()
}

/// A chat completion that calls one tool.
pub fn tool_call_completion(name: &str, arguments: &serde_json::Value) -> String {
    serde_json::json!({
        "model": "fake",
        "choices": [{"index": 0, "finish_reason": "tool_calls",
                     "message": {"role": "assistant", "content": null, "tool_calls": [
                        {"id": format!("call-{name}"), "type": "function",
                         "function": {"name": name, "arguments": arguments.to_string()}}]}}],
        "usage": {"prompt_tokens": 50, "completion_tokens": 10},
    })
    .to_string()
}

/// A request the fake server got: its head (request line and headers) and body.
#[derive(Clone, Debug)]
pub struct Seen {
    pub head: String,
    pub body: String,
}

/// A plain HTTP/1.1 server on a free loopback port that answers every
/// request the same way and keeps what it got.
pub struct FakeServer {
    pub url: String,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl FakeServer {
    pub fn start(behaviour: Behaviour) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let kept = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let (b, kept) = (behaviour.clone(), kept.clone());
                std::thread::spawn(move || serve(stream, b, kept));
            }
        });
        FakeServer { url, seen }
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().expect("seen").clone()
    }
}

fn serve(stream: TcpStream, behaviour: Behaviour, seen: Arc<Mutex<Vec<Seen>>>) {
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    });
    let mut out = stream;
    loop {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
        let length = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse::<usize>().ok())?
            })
            .unwrap_or(0);
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        seen.lock().expect("seen").push(Seen {
            head,
            body: String::from_utf8_lossy(&body).into_owned(),
        });
        let (status, text) = match &behaviour {
            Behaviour::Answer(t) => (200, t.clone()),
            Behaviour::Status(s) => (
                *s,
                format!(r#"{{"error":{{"message":"status {s} on purpose"}}}}"#),
            ),
            Behaviour::Garbage => (200, "<html>this is not a chat completion".to_string()),
            Behaviour::Script(f) => (200, f(&String::from_utf8_lossy(&body))),
            Behaviour::Hang => {
                std::thread::sleep(Duration::from_secs(600));
                return;
            }
        };
        let reply = format!(
            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{text}",
            text.len()
        );
        if out.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}
