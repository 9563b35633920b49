//! `ludus bench llm --model URL`: LLM agents against a running model server.
//!
//! - Host overhead per model call: episodes of the LLM maze agent recorded
//!   with `--jobs 1`, each frame's `act` time against the same request
//!   bodies sent again over a plain socket (no ludus code in the way),
//!   alternating, rounds' medians.
//! - Replay: a recorded 50-frame episode played again from its recording
//!   (`ludus_debugger::fork::verify`, no endpoint at all) against its live run.
//! - Episodes/s with 1, 8 and 32 jobs against the same server.
//! - Success rates of the LLM maze agent (on `--real-model`) and of the
//!   random agent on the same seeds.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ludus_arena::run::{Progress, RunReport, prepare};
use ludus_arena::{Limits, PluginSpec, RunSpec};

use crate::UsageError;
use crate::cli::BenchArgs;

const PLUGINS: &str = "plugins/target/wasm32-wasip2/release";

#[derive(serde::Serialize, Default)]
struct Figures {
    calls: u64,
    /// Median over rounds of (recorded `act` time - plain request time) per call.
    overhead_ms_per_call: f64,
    /// The same as a share of a plain call.
    overhead_share: f64,
    plain_ms_per_call: f64,
    replay_frames: u64,
    live_s: f64,
    replay_s: f64,
    replay_speedup: f64,
    /// Against `--model`: (jobs, episodes/s, ratio to jobs 1).
    episodes_per_s: Vec<(usize, f64, f64)>,
    /// Against a server that answers every call after 200 ms and does no
    /// work: (jobs, episodes/s, ratio to jobs 1).
    episodes_per_s_200ms: Vec<(usize, f64, f64)>,
    desktop_llm_success_rate: f64,
    desktop_random_success_rate: f64,
    llm_success_rate: f64,
    random_success_rate: f64,
    success_episodes: u64,
}

struct Db(PathBuf);

impl Db {
    fn new(name: &str) -> Db {
        let p =
            std::env::temp_dir().join(format!("ludus-bench-llm-{name}-{}.db", std::process::id()));
        let db = Db(p);
        db.clean();
        db
    }
    fn clean(&self) {
        for ext in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{ext}", self.0.display()));
        }
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        self.clean();
    }
}

fn maze_run(
    db: &Path,
    agent: &str,
    agent_config: &str,
    maze: &str,
    episodes: u64,
    jobs: usize,
    model: Option<&str>,
) -> Result<RunReport> {
    let plugins = PathBuf::from(PLUGINS);
    let models: Vec<String> = model.into_iter().map(str::to_string).collect();
    let spec = RunSpec {
        env: PluginSpec {
            path: plugins.join("maze.wasm"),
            config: maze.into(),
            limits: Limits::DEFAULT,
        },
        agent: PluginSpec {
            path: plugins.join(agent),
            config: agent_config.into(),
            limits: Limits::DEFAULT,
        }
        .into(),
        reward: None,
        episodes,
        seed: 1,
        jobs,
        db: db.to_path_buf(),
        models: ludus_trainer::llm::setup(&models, None).map_err(UsageError)?,
        step_delay: std::time::Duration::ZERO,
    };
    Ok(prepare(spec)?.run(&Progress::default())?)
}

/// A server that answers every chat request with the same move after
/// `delay`, each connection on its own thread: a stand-in for a model
/// server whose time is all waiting. Returns its URL.
fn delayed_server(delay: Duration) -> Result<String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let url = format!("http://{}", listener.local_addr()?);
    let body = serde_json::json!({
        "model": "delayed",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": "{\"move\":\"right\"}"}}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 6},
    })
    .to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            let body = body.clone();
            std::thread::spawn(move || {
                let Ok(read) = stream.try_clone() else { return };
                let mut r = BufReader::new(read);
                let mut w = stream;
                loop {
                    let mut length = 0usize;
                    loop {
                        let mut line = String::new();
                        match r.read_line(&mut line) {
                            Ok(0) | Err(_) => return,
                            Ok(_) => {}
                        }
                        if line == "\r\n" {
                            break;
                        }
                        if let Some((k, v)) = line.split_once(':')
                            && k.eq_ignore_ascii_case("content-length")
                        {
                            length = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut req = vec![0; length];
                    if r.read_exact(&mut req).is_err() {
                        return;
                    }
                    std::thread::sleep(delay);
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if w.write_all(reply.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    Ok(url)
}

/// One POST over a fresh socket, read to the end of its body.
fn plain_post(url: &str, path: &str, body: &[u8]) -> Result<Duration> {
    let host = url
        .strip_prefix("http://")
        .context("the plain client speaks http:// only")?
        .trim_end_matches('/');
    let t = Instant::now();
    let mut s = TcpStream::connect(host)?;
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    s.write_all(body)?;
    let mut r = BufReader::new(s);
    let mut length = None;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            bail!("the server closed the connection");
        }
        if line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse::<usize>().ok();
        }
    }
    let mut rest = Vec::new();
    match length {
        Some(n) => {
            rest.resize(n, 0);
            r.read_exact(&mut rest)?;
        }
        None => {
            r.read_to_end(&mut rest)?;
        }
    }
    Ok(t.elapsed())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

pub fn run(args: BenchArgs) -> Result<ExitCode> {
    let Some(url) = args.model.clone() else {
        return Err(UsageError(
            "bench llm needs --model URL (start one with scripts/model-server.sh models/tiny.gguf --slots 32)".into(),
        )
        .into());
    };
    let config = args.agent_config.as_str();
    let mut f = Figures::default();

    if args.target == crate::cli::BenchTarget::Backend {
        return backend(&args, &url);
    }
    // 1. Overhead per call.
    let (mut overheads, mut plains) = (Vec::new(), Vec::new());
    for round in 0..args.rounds.max(1) {
        let db = Db::new("overhead");
        let report = maze_run(
            &db.0,
            "llm_maze_agent.wasm",
            config,
            "size=9,doors=0,max_steps=20",
            2,
            1,
            Some(&url),
        )?;
        let store = ludus_arena::Db::open_read_only(&db.0)?;
        let (mut act_ns, mut bodies) = (0u64, Vec::new());
        for e in &report.episodes {
            for (frame, timing) in store.frames(e.id)? {
                for c in &frame.model_calls {
                    let body = ludus_llm::request_body(&c.request, None, &frame.observation)
                        .map_err(anyhow::Error::msg)?;
                    bodies.push(serde_json::to_vec(&body)?);
                }
                if !frame.model_calls.is_empty() {
                    act_ns += timing.act_ns;
                }
            }
        }
        let mut plain = Duration::ZERO;
        for b in &bodies {
            plain += plain_post(&url, "/v1/chat/completions", b)?;
        }
        let n = bodies.len().max(1) as f64;
        let act_ms = act_ns as f64 / 1e6 / n;
        let plain_ms = plain.as_secs_f64() * 1e3 / n;
        eprintln!(
            "round {round}: {} calls, recorded act {act_ms:.3} ms/call, plain {plain_ms:.3} ms/call",
            bodies.len()
        );
        f.calls += bodies.len() as u64;
        overheads.push(act_ms - plain_ms);
        plains.push(plain_ms);
    }
    f.overhead_ms_per_call = median(overheads);
    f.plain_ms_per_call = median(plains);
    f.overhead_share = f.overhead_ms_per_call / f.plain_ms_per_call;

    // 2. Replay against live: one episode of 50 frames, on the real model.
    let real_url = args.real_model.clone().unwrap_or_else(|| url.clone());
    let db = Db::new("replay");
    let t = Instant::now();
    let report = maze_run(
        &db.0,
        "llm_maze_agent.wasm",
        "",
        "size=15,doors=0,max_steps=50",
        1,
        1,
        Some(&real_url),
    )?;
    f.live_s = t.elapsed().as_secs_f64();
    let id = report.episodes[0].id;
    f.replay_frames = report.episodes[0].length;
    let t = Instant::now();
    // No endpoint is given: a request would fail, and the replay with it.
    let mismatch = ludus_debugger::fork::verify(&db.0, id, None)?;
    f.replay_s = t.elapsed().as_secs_f64();
    if let Some(m) = mismatch {
        bail!("the replay did not reproduce the recording: {m}");
    }
    f.replay_speedup = f.live_s / f.replay_s.max(1e-9);
    eprintln!(
        "replay: {} frames live {:.2} s, from the recording {:.4} s",
        f.replay_frames, f.live_s, f.replay_s
    );

    // 3. Episodes/s by jobs.
    let mut base = 0.0;
    for jobs in [1usize, 8, 32] {
        let db = Db::new("jobs");
        let t = Instant::now();
        maze_run(
            &db.0,
            "llm_maze_agent.wasm",
            config,
            "size=9,doors=0,max_steps=4",
            args.episodes,
            jobs,
            Some(&url),
        )?;
        let eps = args.episodes as f64 / t.elapsed().as_secs_f64();
        if jobs == 1 {
            base = eps;
        }
        eprintln!("jobs {jobs}: {eps:.2} episodes/s");
        f.episodes_per_s.push((jobs, eps, eps / base));
    }

    // 3b. The same against a server whose 200 ms per call are all waiting.
    let slow = delayed_server(Duration::from_millis(200))?;
    let mut base = 0.0;
    for jobs in [1usize, 8, 32, 64] {
        let episodes = (2 * jobs as u64).max(8);
        let db = Db::new("jobs200");
        let t = Instant::now();
        maze_run(
            &db.0,
            "llm_maze_agent.wasm",
            "",
            "size=9,doors=0,max_steps=4",
            episodes,
            jobs,
            Some(&slow),
        )?;
        let eps = episodes as f64 / t.elapsed().as_secs_f64();
        if jobs == 1 {
            base = eps;
        }
        eprintln!("200 ms server, jobs {jobs}: {eps:.2} episodes/s");
        f.episodes_per_s_200ms.push((jobs, eps, eps / base));
    }

    // 4. Success rates on the same seeds, the LLM agent on the real model.
    let maze = "size=7,doors=0,max_steps=20";
    let db = Db::new("success");
    let n = args.success_episodes;
    let llm = maze_run(
        &db.0,
        "llm_maze_agent.wasm",
        "",
        maze,
        n,
        1,
        Some(&real_url),
    )?;
    let random = maze_run(&db.0, "random_agent.wasm", "", maze, n, 1, None)?;
    f.llm_success_rate = llm.summary().success_rate;
    f.random_success_rate = random.summary().success_rate;
    f.success_episodes = n;
    let desktop = |agent: &str, model: Option<&str>| -> Result<f64> {
        let plugins = PathBuf::from(PLUGINS);
        let models: Vec<String> = model.into_iter().map(str::to_string).collect();
        let spec = RunSpec {
            env: PluginSpec {
                path: plugins.join("desktop.wasm"),
                config: "task=click-button,max_steps=5,element_actions=1".into(),
                limits: Limits::DEFAULT,
            },
            agent: PluginSpec {
                path: plugins.join(agent),
                config: String::new(),
                limits: Limits::DEFAULT,
            }
            .into(),
            reward: None,
            episodes: n,
            seed: 1,
            jobs: 1,
            db: db.0.clone(),
            models: ludus_trainer::llm::setup(&models, None).map_err(UsageError)?,
            step_delay: std::time::Duration::ZERO,
        };
        Ok(prepare(spec)?
            .run(&Progress::default())?
            .summary()
            .success_rate)
    };
    f.desktop_llm_success_rate = desktop("llm_desktop_agent.wasm", Some(&real_url))?;
    f.desktop_random_success_rate = desktop("random_agent.wasm", None)?;

    if args.json {
        println!("{}", serde_json::to_string(&f)?);
    } else {
        println!("model calls measured      {}", f.calls);
        println!("plain call                {:.3} ms", f.plain_ms_per_call);
        println!(
            "host overhead per call    {:.3} ms ({:.2}% of a call)",
            f.overhead_ms_per_call,
            f.overhead_share * 100.0
        );
        println!(
            "replay {} frames          live {:.2} s, recorded {:.4} s: x{:.0}",
            f.replay_frames, f.live_s, f.replay_s, f.replay_speedup
        );
        for (jobs, eps, ratio) in &f.episodes_per_s {
            println!("jobs {jobs:<3}                  {eps:.2} episodes/s (x{ratio:.2})");
        }
        for (jobs, eps, ratio) in &f.episodes_per_s_200ms {
            println!("200 ms server, jobs {jobs:<3}   {eps:.2} episodes/s (x{ratio:.2})");
        }
        println!(
            "desktop success rate      LLM {:.1}%, random {:.1}%",
            f.desktop_llm_success_rate * 100.0,
            f.desktop_random_success_rate * 100.0
        );
        println!(
            "success rate              LLM {:.1}%, random {:.1}% ({} episodes each)",
            f.llm_success_rate * 100.0,
            f.random_success_rate * 100.0,
            f.success_episodes
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `ludus bench backend --model policy:PATH[,dtype=bf16] [--real-model URL]`: generated
/// tokens per second of wall time, with 1, 8 and 32 episodes of the LLM
/// maze agent at once (as many jobs), the model answering one call at a
/// time (`batch=1`) and batched (`batch=N`); with `--real-model`, the same
/// episodes against that server.
fn backend(args: &BenchArgs, model: &str) -> Result<ExitCode> {
    let Some(path) = model.strip_prefix("policy:") else {
        return Err(UsageError("bench backend needs --model policy:PATH".into()).into());
    };
    // The model's own options (`dtype=`) are kept; `batch=` is the bench's.
    let mut parts = path.split(',');
    let file = parts.next().unwrap_or(path);
    let options: String = parts
        .filter(|p| !p.trim().starts_with("batch="))
        .map(|p| format!(",{p}"))
        .collect();
    let path = format!("{file}{options}");
    let config = args.backend_agent_config.as_str();
    let tokens_per_s = |url: &str, n: usize| -> Result<(f64, u64)> {
        let db = Db::new("backend");
        let t = Instant::now();
        let report = maze_run(
            &db.0,
            "llm_maze_agent.wasm",
            config,
            "size=7,doors=0,max_steps=4",
            n as u64,
            n,
            Some(url),
        )?;
        let tokens: u64 = report.episodes.iter().map(|e| e.model.tokens_out).sum();
        Ok((tokens as f64 / t.elapsed().as_secs_f64(), tokens))
    };
    let mut rows = Vec::new();
    for n in [1usize, 8, 32] {
        let (one, t1) = tokens_per_s(&format!("policy:{path},batch=1"), n)?;
        eprintln!("{n} episodes, batch 1: {one:.1} tokens/s ({t1} tokens)");
        let (batched, tb) = tokens_per_s(&format!("policy:{path},batch={n}"), n)?;
        eprintln!("{n} episodes, batch {n}: {batched:.1} tokens/s ({tb} tokens)");
        let server = match &args.real_model {
            Some(url) => {
                let (s, ts) = tokens_per_s(url, n)?;
                eprintln!("{n} episodes, {url}: {s:.1} tokens/s ({ts} tokens)");
                Some(s)
            }
            None => None,
        };
        rows.push(serde_json::json!({
            "episodes": n, "one_at_a_time": one, "batched": batched,
            "ratio": batched / one, "server": server,
        }));
    }
    if args.json {
        println!("{}", serde_json::Value::from(rows));
    } else {
        for r in &rows {
            println!(
                "{:>2} episodes   one at a time {:>7.1} tokens/s   batched {:>7.1} tokens/s (x{:.2}){}",
                r["episodes"],
                r["one_at_a_time"].as_f64().unwrap_or(0.0),
                r["batched"].as_f64().unwrap_or(0.0),
                r["ratio"].as_f64().unwrap_or(0.0),
                r["server"]
                    .as_f64()
                    .map(|s| format!("   server {s:.1} tokens/s"))
                    .unwrap_or_default()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
