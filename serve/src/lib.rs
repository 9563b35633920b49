//! `ludus serve`: an env plugin over the network in OpenEnv's protocol, so
//! trainers that speak it (TRL, verifiers, OpenEnv's own clients) use a
//! sandboxed, seeded, recorded ludus env.
//!
//! One thread per connection. `GET /ws` (and `/mcp`, raw JSON-RPC) upgrade
//! to a WebSocket session with its own env instance ([`protocol::Session`]);
//! `GET /health`, `GET /schema`, `GET /metadata`, `POST /reset` (a fresh
//! env per request) and `POST /mcp` (`tools/list`) are plain HTTP. Sessions
//! are bounded: at most `max_sessions` at once (the next gets OpenEnv's
//! `CAPACITY_REACHED` error and is closed) and each closed after
//! `idle_timeout` without a message. Nothing a client sends stops the
//! server: bad frames get protocol errors, a client that vanishes
//! mid-episode leaves that episode recorded as interrupted.
//!
//! This crate alone listens on a socket (`tungstenite`, `httparse`).

pub mod protocol;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ludus_arena::driven::Recording;
use ludus_arena::{Limits, Plugin, PluginKind};
use serde_json::{Value, json};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tungstenite::{Message, WebSocket};

use protocol::{Reply, Served, Session};

/// What `ludus serve` serves, and how.
pub struct ServeConfig {
    pub env: PathBuf,
    pub env_config: String,
    pub limits: Limits,
    pub host: String,
    pub port: u16,
    /// Record every episode into this database.
    pub db: Option<PathBuf>,
    pub max_sessions: usize,
    pub idle_timeout: Duration,
    /// Seeds of resets that name none derive from this.
    pub seed: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The plugin, its config or the database: the user's to fix.
    #[error("{0}")]
    Setup(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
}

/// The largest request head, HTTP body and WebSocket message accepted.
const MAX_HEAD: usize = 16 << 10;
const MAX_BODY: usize = 1 << 20;
const MAX_MESSAGE: usize = 16 << 20;
/// The time a client has to send a whole HTTP request.
const REQUEST_TIME: Duration = Duration::from_secs(10);
/// Connections beyond the sessions (HTTP requests, upgrades in progress,
/// clients being turned away) the server serves at once.
const SPARE_CONNECTIONS: usize = 64;
/// How often a session looks at the stop flag and its idle time.
const TICK: Duration = Duration::from_millis(200);

struct Shared {
    served: Arc<Served>,
    max_sessions: usize,
    idle_timeout: Duration,
    active: AtomicUsize,
    stop: Arc<AtomicBool>,
}

/// Loads the plugin, opens the recording, listens, calls `ready` with the
/// address, and serves until `stop` is set; then closes every session and
/// finishes the recording. Returns the recorded run's id (with a `db`).
pub fn serve(
    config: ServeConfig,
    stop: Arc<AtomicBool>,
    ready: impl FnOnce(SocketAddr),
) -> Result<Option<String>, ServeError> {
    let path = config.env.display().to_string();
    let plugin = Plugin::load(&config.env, PluginKind::Env, config.limits)
        .map_err(|e| ServeError::Setup(e.to_string()))?;
    let mut probe = plugin
        .env(0)
        .map_err(|c| ServeError::Setup(format!("{path}: {}", c.message)))?;
    let info = match probe.init(&config.env_config) {
        Ok(Ok(info)) => info,
        Ok(Err(refusal)) => {
            return Err(ServeError::Setup(format!(
                "{path} rejected its config: {}",
                refusal.0
            )));
        }
        Err(c) => return Err(ServeError::Setup(format!("{path}: {}", c.message))),
    };
    let tools = probe
        .tools()
        .map_err(|c| ServeError::Setup(format!("{path}: tools: {}", c.message)))?;
    drop(probe);
    let recording = match &config.db {
        None => None,
        Some(db) => {
            let run_id = format!(
                "serve-{}-{}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis())
            );
            let spec = json!({
                "kind": "serve",
                "env": {"path": path, "config": config.env_config},
            });
            Some(
                Recording::start(db, &run_id, &spec)
                    .map_err(|e| ServeError::Setup(format!("{}: {e}", db.display())))?,
            )
        }
    };
    let addr = format!("{}:{}", config.host, config.port);
    let listener = TcpListener::bind(&addr).map_err(|source| ServeError::Listen {
        addr: addr.clone(),
        source,
    })?;
    listener
        .set_nonblocking(true)
        .map_err(|source| ServeError::Listen {
            addr: addr.clone(),
            source,
        })?;
    let local = listener.local_addr().map_err(|source| ServeError::Listen {
        addr: addr.clone(),
        source,
    })?;
    let shared = Arc::new(Shared {
        served: Arc::new(Served {
            plugin,
            config: config.env_config.clone(),
            info,
            tools,
            recording: recording.clone(),
            seed: config.seed,
            resets: AtomicU64::new(0),
        }),
        max_sessions: config.max_sessions,
        idle_timeout: config.idle_timeout,
        active: AtomicUsize::new(0),
        stop: stop.clone(),
    });
    ready(local);
    let mut threads: Vec<std::thread::JoinHandle<()>> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((mut stream, peer)) => {
                threads.retain(|t| !t.is_finished());
                // A thread per connection, up to a bound: past it a client
                // is told to come back, on this thread, without waiting.
                if threads.len() >= shared.max_sessions + SPARE_CONNECTIONS {
                    let _ = stream.set_nonblocking(false);
                    let _ = stream.set_write_timeout(Some(Duration::from_millis(200)));
                    respond(
                        &mut stream,
                        503,
                        &detail("too many connections: try again later"),
                    );
                    continue;
                }
                let shared = shared.clone();
                let spawned = std::thread::Builder::new()
                    .name(format!("session {peer}"))
                    .spawn(move || connection(stream, &shared));
                match spawned {
                    Ok(t) => threads.push(t),
                    Err(e) => tracing::warn!("no thread for {peer}: {e}"),
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => tracing::warn!("accept: {e}"),
        }
    }
    for t in threads {
        let _ = t.join();
    }
    drop(shared);
    match recording {
        Some(r) => {
            let id = r.run_id().to_string();
            r.finish()
                .map_err(|e| ServeError::Setup(format!("recording: {e}")))?;
            Ok(Some(id))
        }
        None => Ok(None),
    }
}

/// A request's method, path (without its query), headers and body.
struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one request; `Err` is the status and message to answer with
/// (`None`: the client went away).
fn read_request(stream: &mut TcpStream) -> Result<Request, Option<(u16, String)>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    // A whole request in this long, however slowly it trickles in.
    let deadline = Instant::now() + REQUEST_TIME;
    let head_len = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > MAX_HEAD {
            return Err(Some((431, "request head too large".into())));
        }
        if Instant::now() > deadline {
            return Err(Some((408, "request too slow".into())));
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return Err(None),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(&buf[..head_len]) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return Err(Some((400, "malformed HTTP request".into()))),
    }
    let method = req.method.unwrap_or("").to_string();
    let path = req
        .path
        .unwrap_or("/")
        .split('?')
        .next()
        .unwrap_or("/")
        .to_string();
    let headers: Vec<(String, String)> = req
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_string(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let length = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.trim().parse::<usize>())
        .transpose()
        .map_err(|_| Some((400, "bad Content-Length".to_string())))?
        .unwrap_or(0);
    if length > MAX_BODY {
        return Err(Some((413, format!("a body is at most {MAX_BODY} bytes"))));
    }
    let mut body = buf[head_len..].to_vec();
    while body.len() < length {
        if Instant::now() > deadline {
            return Err(Some((408, "request too slow".into())));
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return Err(None),
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    body.truncate(length);
    Ok(Request {
        method,
        path,
        headers,
        body,
    })
}

fn respond(stream: &mut TcpStream, status: u16, body: &Value) {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    };
    let text = body.to_string();
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        text.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(text.as_bytes());
    let _ = stream.flush();
}

fn detail(message: &str) -> Value {
    json!({ "detail": message })
}

fn connection(mut stream: TcpStream, shared: &Shared) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = stream.set_nodelay(true);
    let req = match read_request(&mut stream) {
        Ok(r) => r,
        Err(Some((status, message))) => return respond(&mut stream, status, &detail(&message)),
        Err(None) => return,
    };
    let upgrade = req
        .header("upgrade")
        .is_some_and(|u| u.eq_ignore_ascii_case("websocket"));
    let served = &shared.served;
    match (req.method.as_str(), req.path.as_str()) {
        ("GET", "/ws" | "/mcp") if upgrade => websocket(stream, &req, shared),
        ("GET", "/health") => respond(&mut stream, 200, &json!({"status": "healthy"})),
        ("GET", "/metadata") => respond(
            &mut stream,
            200,
            &json!({
                "name": served.info.name,
                "description": served.info.description,
                "readme_content": null,
                "version": served.info.version,
                "author": null,
                "documentation_url": null,
            }),
        ),
        ("GET", "/schema") => respond(&mut stream, 200, &protocol::schema(&served.info)),
        ("POST", "/reset") => {
            // Stateless, as OpenEnv's HTTP reset: a fresh env, not recorded.
            let body = if req.body.is_empty() {
                "{}".to_string()
            } else {
                String::from_utf8_lossy(&req.body).into_owned()
            };
            let message = match serde_json::from_str::<Value>(&body) {
                Ok(data) => json!({"type": "reset", "data": data}).to_string(),
                Err(e) => return respond(&mut stream, 400, &detail(&format!("Invalid JSON: {e}"))),
            };
            let mut session = Session::new(Arc::new(Served {
                plugin: served.plugin.clone(),
                config: served.config.clone(),
                info: served.info.clone(),
                tools: served.tools.clone(),
                recording: None,
                seed: served.seed,
                resets: AtomicU64::new(served.resets.fetch_add(1, Ordering::Relaxed)),
            }));
            match session.handle(&message) {
                Reply::Send(text) => {
                    let v: Value = serde_json::from_str(&text).unwrap_or_default();
                    if v["type"] == "error" {
                        respond(
                            &mut stream,
                            400,
                            &detail(v["data"]["message"].as_str().unwrap_or("")),
                        )
                    } else {
                        respond(&mut stream, 200, &v["data"])
                    }
                }
                Reply::Close => respond(&mut stream, 400, &detail("unexpected close")),
            }
        }
        ("POST", "/step") | ("GET", "/state") => respond(
            &mut stream,
            400,
            &detail(&format!(
                "{} {} has no session to act in: open a WebSocket session at /ws \
                 (reset, step and state are messages there)",
                req.method, req.path
            )),
        ),
        ("POST", "/mcp") => {
            let rpc: Value = match serde_json::from_slice(&req.body) {
                Ok(v) => v,
                Err(e) => {
                    let v = json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32700, "message": format!("Parse error: {e}")}});
                    return respond(&mut stream, 200, &v);
                }
            };
            let id = rpc.get("id").cloned().unwrap_or(Value::Null);
            let v = match rpc.get("method").and_then(Value::as_str) {
                Some("tools/list") => {
                    json!({"jsonrpc": "2.0", "id": id, "result": {"tools": protocol::tools_json(&served.tools)}})
                }
                Some("tools/call") => json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32600,
                    "message": "tools/call acts in an episode: call it in a WebSocket session (/ws or /mcp)"}}),
                Some(other) => {
                    json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": format!("Method not found: {other}")}})
                }
                None => {
                    json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32600, "message": "Invalid Request: no `method`"}})
                }
            };
            respond(&mut stream, 200, &v)
        }
        (
            _,
            "/health" | "/metadata" | "/schema" | "/reset" | "/step" | "/state" | "/mcp" | "/ws",
        ) => respond(&mut stream, 405, &detail("Method Not Allowed")),
        _ => respond(&mut stream, 404, &detail("Not Found")),
    }
}

/// Counts a session while it lives.
struct Slot<'a>(&'a AtomicUsize);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn websocket(mut stream: TcpStream, req: &Request, shared: &Shared) {
    let Some(key) = req.header("sec-websocket-key") else {
        return respond(
            &mut stream,
            400,
            &detail("a WebSocket upgrade needs Sec-WebSocket-Key"),
        );
    };
    let accept = tungstenite::handshake::derive_accept_key(key.trim().as_bytes());
    let head = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    if stream.write_all(head.as_bytes()).is_err() {
        return;
    }
    let _ = stream.set_read_timeout(Some(TICK));
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE));
    let mut ws = WebSocket::from_raw_socket(stream, Role::Server, Some(config));
    let rpc = req.path == "/mcp";
    let taken = shared.active.fetch_add(1, Ordering::SeqCst);
    let _slot = Slot(&shared.active);
    if taken >= shared.max_sessions {
        let message = json!({"type": "error", "data": {
            "message": format!(
                "Server at capacity: {}/{} sessions active. Cannot accept new connections.",
                taken, shared.max_sessions
            ),
            "code": "CAPACITY_REACHED",
            "active_sessions": taken,
            "max_sessions": shared.max_sessions,
        }});
        // The error now, and again in answer to the client's first
        // message (a client that sends before it reads would otherwise find
        // the socket closed and not why); the close frame's reason says it
        // too.
        let _ = ws.send(Message::text(message.to_string()));
        let until = Instant::now() + Duration::from_secs(2);
        while Instant::now() < until {
            match ws.read() {
                Ok(Message::Text(_)) | Ok(Message::Binary(_)) => {
                    let _ = ws.send(Message::text(message.to_string()));
                    break;
                }
                Ok(Message::Close(_)) => break,
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => break,
            }
        }
        let reason = format!(
            "CAPACITY_REACHED: {taken}/{} sessions active",
            shared.max_sessions
        );
        let _ = ws.close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: reason.into(),
        }));
        let _ = ws.flush();
        return;
    }
    let mut session = Session::new(shared.served.clone());
    let mut last = Instant::now();
    loop {
        if shared.stop.load(Ordering::Relaxed) {
            let _ = ws.send(Message::text(protocol::error(
                "SESSION_ERROR",
                "the server is shutting down",
            )));
            let _ = ws.close(None);
            let _ = ws.flush();
            break;
        }
        match ws.read() {
            Ok(Message::Text(text)) => {
                last = Instant::now();
                let reply = if rpc {
                    Reply::Send(session.handle_rpc(text.as_str()))
                } else {
                    session.handle(text.as_str())
                };
                match reply {
                    Reply::Send(out) => {
                        if ws.send(Message::text(out)).is_err() {
                            break;
                        }
                    }
                    Reply::Close => {
                        let _ = ws.close(None);
                        let _ = ws.flush();
                        break;
                    }
                }
            }
            Ok(Message::Binary(_)) => {
                last = Instant::now();
                let out = protocol::error("INVALID_JSON", "Invalid JSON: send text frames");
                if ws.send(Message::text(out)).is_err() {
                    break;
                }
            }
            Ok(Message::Close(_)) => {
                let _ = ws.flush();
                break;
            }
            Ok(_) => {
                let _ = ws.flush();
            }
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if last.elapsed() >= shared.idle_timeout {
                    let _ = ws.send(Message::text(protocol::error(
                        "SESSION_ERROR",
                        &format!(
                            "idle for {} s: session closed",
                            shared.idle_timeout.as_secs_f64()
                        ),
                    )));
                    let _ = ws.close(None);
                    let _ = ws.flush();
                    break;
                }
                let _ = ws.flush();
            }
            // The client vanished or broke the WebSocket protocol.
            Err(e) => {
                tracing::debug!("session ends: {e}");
                break;
            }
        }
    }
    // The env (and an episode in progress, recorded as interrupted) goes
    // with the session.
    drop(session);
}
