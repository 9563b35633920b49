//! LLM agents: model calls recorded in every frame, replayed from the
//! recording on fork and re-run, budgeted, and failing cleanly. Against a
//! real llama.cpp server with a real (tiny, random-weight) GGUF model, and
//! against a plain HTTP server that misbehaves on purpose.

use std::path::Path;

use ludus_arena::chat::{ModelCall, ModelError, Served};

use crate::support::models::{Behaviour, FakeServer, LlamaServer, completion};
use crate::support::{ludus, ludus_with_env, plugin, run_json};

const MAZE: &str = "size=7,doors=0,max_steps=8";

/// `ludus run` of the LLM maze agent with `extra` arguments; its JSON.
fn run_llm(db: &Path, episodes: u32, extra: &[&str]) -> serde_json::Value {
    run_llm_in(MAZE, db, episodes, extra)
}

/// [`run_llm`] in a maze of this config.
fn run_llm_in(maze: &str, db: &Path, episodes: u32, extra: &[&str]) -> serde_json::Value {
    let episodes = episodes.to_string();
    let mut args = vec![
        "--env-config",
        maze,
        // The tiny random model cannot follow a JSON schema (llama.cpp
        // refuses the grammar for its vocabulary): it answers free text.
        "--agent-config",
        "max-tokens=12,schema=off",
        "--episodes",
        &episodes,
        "--jobs",
        "1",
    ];
    args.extend_from_slice(extra);
    run_json(db, "maze", "llm_maze_agent", &args)
}

/// Every recorded model call of an episode, with its step.
fn calls(db: &Path, episode: i64) -> Vec<(u64, ModelCall)> {
    let db = ludus_arena::Db::open_read_only(db).expect("open db");
    db.model_calls(episode, 0..=u64::MAX).expect("model calls")
}

fn episode_ids(report: &serde_json::Value) -> Vec<i64> {
    report["episodes"]
        .as_array()
        .expect("episodes")
        .iter()
        .map(|e| e["id"].as_i64().expect("id"))
        .collect()
}

#[test]
fn an_llm_episode_records_its_calls_and_a_fork_replays_them_with_the_server_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("llm.db");
    let mut server = LlamaServer::start("tiny.gguf", 1);
    let url = server.url.clone();
    let report = run_llm(&db, 2, &["--model", &url]);
    let summary = &report["summary"];
    let ep = &report["episodes"][0];
    let length = ep["length"].as_u64().unwrap();
    assert!(length >= 4, "{report}");
    // One call per frame, answered live, with tokens counted.
    assert_eq!(ep["model_calls"].as_u64(), Some(length), "{report}");
    assert!(ep["tokens_in"].as_u64().unwrap() > 0, "{report}");
    assert!(ep["tokens_out"].as_u64().unwrap() > 0, "{report}");
    assert!(summary["model_calls"].as_u64().unwrap() >= length);
    let id = ep["id"].as_i64().unwrap();
    let recorded = calls(&db, id);
    assert_eq!(recorded.len() as u64, length);
    for (i, (step, c)) in recorded.iter().enumerate() {
        assert_eq!(*step, i as u64);
        assert_eq!(c.served, Served::Live);
        assert_eq!(c.request.endpoint, "default");
        let prompt = &c.request.messages[1];
        assert!(
            ludus_arena::chat::message_text(prompt).contains("Grid:"),
            "{prompt:?}"
        );
        assert!(c.result.is_ok(), "{c:?}");
        assert!(c.latency_ms > 0.0);
    }
    // The debugger sees them: a breakpoint on the frame's model calls.
    let hits = ludus([
        "debug",
        &db.display().to_string(),
        "--episode",
        &id.to_string(),
        "--break",
        "model.count == 1 && model.calls[0].tokens_out > 0",
        "--json",
    ])
    .json();
    assert_eq!(
        hits["hits"].as_array().map(Vec::len),
        Some(length as usize),
        "{hits}"
    );

    // With the server gone, a fork replays the prefix from the recording
    // alone: had one request been sent, it would have failed and the
    // replay would not match.
    server.stop();
    let k = length - 1;
    let fork = ludus([
        "fork",
        &db.display().to_string(),
        "--episode",
        &id.to_string(),
        "--frame",
        &k.to_string(),
        "--json",
    ])
    .json();
    let branch = fork["branch"]["id"].as_i64().unwrap();
    let replayed = calls(&db, branch);
    for (step, c) in &replayed {
        if *step < k {
            assert_eq!(c.served, Served::Recording, "frame {step}: {c:?}");
            let original = &recorded[*step as usize].1;
            assert!(ludus_arena::codec::same_call(c, original), "frame {step}");
        } else {
            // After the fork frame there is no endpoint: the call is
            // answered `unknown-endpoint`, and the agent falls back.
            assert!(
                matches!(c.result, Err(ModelError::UnknownEndpoint(_))),
                "{c:?}"
            );
        }
    }
    assert_eq!(
        fork["branch"]["live_calls"].as_u64(),
        Some(0),
        "no call went live: {fork}"
    );
    // The same episode, replayed as a whole with the recorded calls, is
    // identical (rerun of the same build with --model-from-recording).
    let rerun = ludus([
        "rerun",
        &db.display().to_string(),
        "--episode",
        &id.to_string(),
        "--agent",
        &plugin("llm_maze_agent").display().to_string(),
        "--model-from-recording",
        "--json",
    ]);
    rerun.ok();
    let rerun = rerun.json();
    assert_eq!(rerun["diff"]["identical"], true, "{rerun}");
    assert_eq!(rerun["branch"]["live_calls"].as_u64(), Some(0));
    assert_eq!(
        rerun["branch"]["digest"], ep["digest"],
        "the same calls give the same digest"
    );
}

#[test]
fn a_changed_prompt_is_a_divergence_at_its_frame_and_only_changed_calls_go_live() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("llm.db");
    let server = LlamaServer::start("tiny.gguf", 1);
    let report = run_llm(&db, 1, &["--model", &server.url]);
    let id = episode_ids(&report)[0];
    let length = report["episodes"][0]["length"].as_u64().unwrap();
    assert!(length > 4, "{report}");
    // The rebuilt agent adds a sentence to its prompt from step 3 on.
    let v2 = plugin("llm_maze_agent_v2").display().to_string();
    let rerun = ludus([
        "rerun",
        &db.display().to_string(),
        "--episode",
        &id.to_string(),
        "--agent",
        &v2,
        "--model-from-recording",
        "--model",
        &server.url,
        "--json",
    ]);
    let out: serde_json::Value = serde_json::from_str(&rerun.stdout()).expect("json");
    let branch = out["branch"]["id"].as_i64().unwrap();
    let replayed = calls(&db, branch);
    for (step, c) in &replayed {
        let expected = if *step < 3 {
            Served::Recording
        } else {
            Served::Live
        };
        assert_eq!(c.served, expected, "frame {step}");
    }
    assert_eq!(
        out["branch"]["live_calls"].as_u64(),
        Some(replayed.len() as u64 - 3),
        "{out}"
    );
    let div = &out["diff"]["first_divergence"];
    assert_eq!(div["frame"].as_u64(), Some(3), "{out}");
    let summaries: Vec<String> = div["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.to_string())
        .collect();
    assert!(
        summaries
            .iter()
            .any(|c| c.contains("ModelCall") || c.contains("model_call")),
        "{summaries:?}"
    );
    // A plain fork of the recording with the new build reports the
    // divergence at frame 3, call 0, naming the prompt that changed.
    assert!(rerun.stdout().contains("prompt_diff"), "{}", rerun.stdout());
    assert!(rerun.stdout().contains("walls never move"));
}

#[test]
fn budgets_stop_model_calls_at_exactly_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let server = FakeServer::start(Behaviour::Answer(completion(r#"{"move":"right"}"#, 40, 5)));
    let db = dir.path().join("calls.db");
    let report = run_llm(
        &db,
        2,
        &["--model", &server.url, "--limit", "agent.model-calls=3"],
    );
    for ep in report["episodes"].as_array().unwrap() {
        let length = ep["length"].as_u64().unwrap();
        assert_eq!(ep["model_calls"].as_u64(), Some(length), "{ep}");
        assert_eq!(ep["budget_refusals"].as_u64(), Some(length - 3), "{ep}");
        assert_eq!(ep["tokens_in"].as_u64(), Some(3 * 40), "{ep}");
        let recorded = calls(&db, ep["id"].as_i64().unwrap());
        for (step, c) in &recorded {
            if *step < 3 {
                assert!(c.result.is_ok());
            } else {
                let Err(ModelError::BudgetExceeded(m)) = &c.result else {
                    panic!("frame {step}: {c:?}")
                };
                assert!(m.contains("--limit agent.model-calls"), "{m}");
            }
        }
    }
    assert_eq!(server.requests().len(), 6, "3 calls in each of 2 episodes");
    // Tokens: each call uses 45; with 100 allowed the third call is the
    // last (90 used before it), the fourth is refused (135 >= 100).
    let db = dir.path().join("tokens.db");
    let report = run_llm(
        &db,
        1,
        &["--model", &server.url, "--limit", "agent.tokens=100"],
    );
    let ep = &report["episodes"][0];
    assert_eq!(ep["tokens_in"].as_u64(), Some(3 * 40), "{ep}");
    assert_eq!(ep["tokens_out"].as_u64(), Some(3 * 5), "{ep}");
    // The run's cost: 45 tokens at $1e6 per million is $45 a call; the
    // cap of $100 lets three calls through.
    let db = dir.path().join("cost.db");
    let priced = format!("{},price-in=1000000,price-out=1000000", server.url);
    let report = run_llm(&db, 1, &["--model", &priced, "--limit", "run.cost-usd=100"]);
    let s = &report["summary"];
    assert_eq!(s["cost_usd"].as_f64(), Some(135.0), "{report}");
    assert!(s["budget_refusals"].as_u64().unwrap() >= 1, "{report}");
}

#[test]
fn a_failing_server_gives_the_plugin_an_error_and_the_episode_an_ending() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (Behaviour::Status(500), "unavailable", "HTTP 500"),
        (
            Behaviour::Status(400),
            "bad-request",
            "status 400 on purpose",
        ),
        (Behaviour::Garbage, "unavailable", "not a chat completion"),
        (Behaviour::Hang, "timeout", "no answer within"),
    ];
    for (i, (behaviour, kind, says)) in cases.into_iter().enumerate() {
        let server = FakeServer::start(behaviour);
        let db = dir.path().join(format!("{i}.db"));
        let url = format!("{},timeout-s=1", server.url);
        let started = std::time::Instant::now();
        let report = run_llm_in("size=7,doors=0,max_steps=2", &db, 1, &["--model", &url]);
        let ep = &report["episodes"][0];
        assert_eq!(ep["outcome"], "truncated", "{kind}: {report}");
        let recorded = calls(&db, ep["id"].as_i64().unwrap());
        assert_eq!(recorded.len(), 2, "{kind}");
        let c = &recorded[0].1;
        assert_eq!(c.error_kind(), Some(kind), "{c:?}");
        let message = ludus_arena::chat::error_message(c.result.as_ref().unwrap_err());
        assert!(message.contains(says), "{kind}: {message}");
        if kind == "unavailable" && says == "HTTP 500" {
            // Three attempts, the retries recorded.
            assert_eq!(c.attempts.len(), 3, "{c:?}");
            assert_eq!(server.requests().len(), 6);
        }
        if kind == "timeout" {
            assert!(
                started.elapsed().as_secs() < 30,
                "a hung server held the run"
            );
        }
    }
    // A server that is not there at all.
    let db = dir.path().join("down.db");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let report = run_llm_in("size=7,doors=0,max_steps=1", &db, 1, &["--model", &url]);
    let ep = &report["episodes"][0];
    let c = &calls(&db, ep["id"].as_i64().unwrap())[0].1;
    assert_eq!(c.error_kind(), Some("unavailable"), "{c:?}");
}

#[test]
fn the_api_key_is_sent_and_never_recorded_or_shown() {
    let dir = tempfile::tempdir().unwrap();
    let server = FakeServer::start(Behaviour::Answer(completion(r#"{"move":"down"}"#, 7, 2)));
    let secret = "sk-test-5ecret-never-show-me";
    let db = dir.path().join("key.db");
    let args: Vec<String> = [
        "run",
        "--env",
        &plugin("maze").display().to_string(),
        "--env-config",
        MAZE,
        "--agent",
        &plugin("llm_maze_agent").display().to_string(),
        "--episodes",
        "1",
        "--db",
        &db.display().to_string(),
        "--model",
        &format!("{},api-key-env=TEST_MODEL_KEY,model=m", server.url),
        "--json",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let run = ludus_with_env(&args, &[("TEST_MODEL_KEY", secret), ("RUST_LOG", "debug")]);
    run.ok();
    let seen = server.requests();
    assert!(!seen.is_empty());
    assert!(
        seen[0]
            .head
            .to_lowercase()
            .contains(&format!("authorization: bearer {secret}").to_lowercase()),
        "{:?}",
        seen[0].head
    );
    let body: serde_json::Value = serde_json::from_str(&seen[0].body).expect("a JSON body");
    assert_eq!(body["model"], "m", "{body}");
    assert!(
        body["response_format"]["json_schema"]["schema"].is_object(),
        "{body}"
    );
    assert!(!run.stdout().contains(secret));
    assert!(!run.stderr().contains(secret));
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "the key is in the database"
        );
    }
    // A variable that is not set is a usage error naming it.
    let mut bad = args.clone();
    let at = bad.iter().position(|a| a.contains("api-key-env")).unwrap();
    bad[at] = format!("{},api-key-env=TEST_MODEL_KEY_UNSET", server.url);
    let err = ludus(&bad).fails_with(2);
    assert!(err.contains("TEST_MODEL_KEY_UNSET is not set"), "{err}");
}

#[test]
fn the_python_and_javascript_sdks_call_models_as_the_rust_sdk_does() {
    let dir = tempfile::tempdir().unwrap();
    let built = ludus([
        "build",
        &crate::support::root()
            .join("plugins/examples/py-llm-maze-agent")
            .display()
            .to_string(),
    ]);
    built.ok();
    let py_agent = built.stdout().trim().to_string();
    let built = ludus([
        "build",
        &crate::support::root()
            .join("plugins/examples/js-llm-maze-agent")
            .display()
            .to_string(),
    ]);
    built.ok();
    let js_agent = built.stdout().trim().to_string();
    let server = FakeServer::start(Behaviour::Answer(completion(r#"{"move":"down"}"#, 30, 4)));
    let mut kinds = Vec::new();
    for (name, agent) in [
        ("rust", plugin("llm_maze_agent").display().to_string()),
        ("python", py_agent),
        ("javascript", js_agent),
    ] {
        let db = dir.path().join(format!("{name}.db"));
        let report = ludus([
            "run",
            "--env",
            &plugin("maze").display().to_string(),
            "--env-config",
            "size=7,doors=0,max_steps=4",
            "--agent",
            &agent,
            "--episodes",
            "1",
            "--db",
            &db.display().to_string(),
            "--model",
            &server.url,
            "--limit",
            "agent.model-calls=2",
            "--json",
        ])
        .json();
        let ep = &report["episodes"][0];
        assert_eq!(ep["model_calls"].as_u64(), Some(4), "{name}: {report}");
        assert_eq!(ep["budget_refusals"].as_u64(), Some(2), "{name}: {report}");
        assert_eq!(ep["tokens_in"].as_u64(), Some(60), "{name}: {report}");
        let recorded = calls(&db, ep["id"].as_i64().unwrap());
        kinds.push(
            recorded
                .iter()
                .map(|(_, c)| c.error_kind().unwrap_or("ok"))
                .collect::<Vec<_>>(),
        );
        // The answer reached the agent: the move it asked for was made.
        let frames = ludus_arena::Db::open_read_only(&db)
            .unwrap()
            .frames(ep["id"].as_i64().unwrap())
            .unwrap();
        assert_eq!(
            frames[0].0.action,
            ludus_arena::model::Action::Discrete(2),
            "{name}"
        );
        if name != "rust" {
            // The agent saw the budget error as `budget-exceeded`.
            let writes: Vec<String> = frames
                .iter()
                .flat_map(|(f, _)| f.memory_writes.iter().map(|w| w.path.clone()))
                .collect();
            assert!(
                writes.contains(&"/episode/model-errors/budget-exceeded".to_string()),
                "{writes:?}"
            );
        }
    }
    assert_eq!(kinds[0], kinds[1]);
    assert_eq!(kinds[0], kinds[2]);
    assert_eq!(server.requests().len(), 6, "two live calls per agent");
}

#[test]
fn an_agent_solves_a_tool_env_through_the_models_tool_calls() {
    use crate::support::models::tool_call_completion;
    // A scripted model: grep for the word the task names, then write the
    // path grep found. It also checks the env's tools reached it.
    let script = |body: &str| -> String {
        let v: serde_json::Value = serde_json::from_str(body).expect("a JSON request");
        let tools: Vec<&str> = v["tools"]
            .as_array()
            .map(|t| {
                t.iter()
                    .filter_map(|t| t["function"]["name"].as_str())
                    .collect()
            })
            .unwrap_or_default();
        if tools != ["ls", "cat", "grep", "write"] {
            return completion(&format!("no tools: {tools:?}"), 1, 1);
        }
        let messages = v["messages"].as_array().expect("messages");
        let last = messages.last().expect("a message");
        match last["role"].as_str() {
            Some("user") => {
                let task = last["content"].as_str().unwrap_or("");
                let word = task.split('"').nth(1).unwrap_or("");
                tool_call_completion("grep", &serde_json::json!({"pattern": word}))
            }
            Some("tool") => {
                let result = last["content"].as_str().unwrap_or("");
                let path = result.split(':').next().unwrap_or("");
                tool_call_completion(
                    "write",
                    &serde_json::json!({"path": "/answer.txt", "content": path}),
                )
            }
            _ => completion("?", 1, 1),
        }
    };
    let server = FakeServer::start(Behaviour::Script(std::sync::Arc::new(script)));
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("tools.db");
    let report = run_json(
        &db,
        "tool_fs",
        "llm_tool_agent",
        &["--episodes", "3", "--model", &server.url],
    );
    for ep in report["episodes"].as_array().unwrap() {
        assert_eq!(ep["success"], true, "{report}");
        assert_eq!(ep["length"].as_u64(), Some(2), "grep, then write: {report}");
        let frames = ludus_arena::Db::open_read_only(&db)
            .unwrap()
            .frames(ep["id"].as_i64().unwrap())
            .unwrap();
        // The tool result came back to the model as a `tool` message.
        let second = &frames[1].0.model_calls[0].request.messages;
        let tool_message = second.last().unwrap();
        assert_eq!(tool_message.role, "tool");
        assert_eq!(tool_message.tool_call_id.as_deref(), Some("call-grep"));
        assert!(
            ludus_arena::chat::message_text(tool_message).contains(".txt: "),
            "{tool_message:?}"
        );
    }
    assert_eq!(report["summary"]["success_rate"].as_f64(), Some(1.0));
    // The random agent, whose text is no tool call, never succeeds.
    let random = run_json(&db, "tool_fs", "random_agent", &["--episodes", "3"]);
    assert_eq!(random["summary"]["success_rate"].as_f64(), Some(0.0));
}

#[test]
fn a_vlm_request_carries_the_screenshot_the_host_took_from_the_observation() {
    let dir = tempfile::tempdir().unwrap();
    let server = FakeServer::start(Behaviour::Answer(completion(
        r#"{"action":"click","element":1}"#,
        20,
        5,
    )));
    let run = |url: &str, config: &str, db: &str| {
        run_json(
            &dir.path().join(db),
            "desktop",
            "llm_desktop_agent",
            &[
                "--env-config",
                "task=click-button,max_steps=2",
                "--agent-config",
                config,
                "--episodes",
                "1",
                "--model",
                url,
            ],
        )
    };
    run(&server.url, "vision=1", "fake.db");
    let seen = server.requests();
    let body: serde_json::Value = serde_json::from_str(&seen[0].body).unwrap();
    let parts = body["messages"][1]["content"]
        .as_array()
        .expect("content parts");
    let url = parts
        .iter()
        .find_map(|p| p["image_url"]["url"].as_str())
        .expect("an image part");
    assert!(
        url.starts_with("data:image/png;base64,iVBOR"),
        "{}",
        &url[..40]
    );
    // The recording stores the reference, not the pixels again.
    let c = &calls(&dir.path().join("fake.db"), 1)[0].1;
    assert!(c.request.messages[1].content.iter().any(
        |p| matches!(p, ludus_arena::model::ContentPart::ObservationImage(n) if n == "screen")
    ));
    // A real llama.cpp server with an image projector takes the image: the
    // prompt costs more tokens with it than without.
    let server = LlamaServer::start_with("tiny.gguf", 1, Some("tiny-mmproj.gguf"));
    let with = run(&server.url, "vision=1,schema=off,max-tokens=4", "vlm.db");
    let without = run(&server.url, "vision=0,schema=off,max-tokens=4", "text.db");
    let tokens = |r: &serde_json::Value| r["episodes"][0]["tokens_in"].as_u64().unwrap();
    assert!(
        tokens(&with) > tokens(&without),
        "with the image {} tokens, without {}",
        tokens(&with),
        tokens(&without)
    );
}

#[test]
fn an_llm_judge_scores_the_final_state_through_its_own_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let judge = FakeServer::start(Behaviour::Answer(completion(
        r#"{"success": true, "score": 0.75, "reason": "the answer file names the right path"}"#,
        80,
        20,
    )));
    let db = dir.path().join("judge.db");
    let report = run_json(
        &db,
        "maze",
        "random_agent",
        &[
            "--env-config",
            "size=7,doors=0,max_steps=3",
            "--reward",
            &plugin("llm_judge").display().to_string(),
            "--reward-config",
            "task=reach G",
            "--episodes",
            "1",
            "--model",
            &format!("judge={}", judge.url),
        ],
    );
    let ep = &report["episodes"][0];
    assert_eq!(ep["success"], true, "{report}");
    assert_eq!(
        ep["model_calls"].as_u64(),
        Some(1),
        "only the final step is judged"
    );
    let recorded = calls(&db, ep["id"].as_i64().unwrap());
    assert_eq!(recorded.len(), 1);
    let (step, c) = &recorded[0];
    assert_eq!(*step, 2);
    assert_eq!(c.role, ludus_arena::model::Role::Reward);
    assert_eq!(c.request.endpoint, "judge");
    let frames = ludus_arena::Db::open_read_only(&db)
        .unwrap()
        .frames(ep["id"].as_i64().unwrap())
        .unwrap();
    assert_eq!(frames[2].0.reward, 0.75);
    assert_eq!(
        frames[2].0.note.as_deref(),
        Some("the answer file names the right path")
    );
}

#[test]
fn suites_gate_on_tokens_cost_and_model_calls() {
    let dir = tempfile::tempdir().unwrap();
    let server = FakeServer::start(Behaviour::Answer(completion(r#"{"move":"up"}"#, 90, 10)));
    let plugins = crate::support::plugins().display().to_string();
    // Each call: 100 tokens at $1 per million in and out: $0.0001.
    let suite = |name: &str, expect: &str| {
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(
            &path,
            format!(
                r#"name = "{name}"
plugins = "{plugins}"
episodes = 2
model = {{ url = "{url}", price_in = 1, price_out = 1 }}

[[case]]
name = "llm-maze"
env = "maze.wasm"
env_config = "size=7,doors=0,max_steps=5"
agent = "llm_maze_agent.wasm"
expect = {{ {expect} }}
"#,
                url = server.url
            ),
        )
        .unwrap();
        path
    };
    let pass = suite(
        "pass",
        "max_mean_tokens = 500, max_cost_usd = 0.01, max_mean_model_calls = 5",
    );
    let db = dir.path().join("s.db").display().to_string();
    let run = ludus([
        "suite",
        "run",
        &pass.display().to_string(),
        "--db",
        &db,
        "--json",
    ]);
    run.ok();
    let fail = suite("fail", "max_mean_tokens = 400, max_cost_usd = 0.0005");
    let out = ludus(["suite", "run", &fail.display().to_string(), "--db", &db]);
    let text = out.stdout();
    assert_eq!(out.code(), 1, "{text}");
    assert!(text.contains("mean tokens 500.0 > 400.0 allowed"), "{text}");
    assert!(
        text.contains("cost (USD) $0.0010 > $0.0005 allowed"),
        "{text}"
    );
    // A bad model value names its line.
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        format!("plugins = \"{plugins}\"\nmodel = 7\n[[case]]\nname = \"x\"\nenv = \"maze.wasm\"\nagent = \"random_agent.wasm\"\n"),
    )
    .unwrap();
    let err = ludus(["suite", "run", &bad.display().to_string(), "--db", &db]).fails_with(2);
    assert!(err.contains("model"), "{err}");
}

#[test]
fn a_fork_with_another_model_answer_replays_the_prefix_and_plays_the_edit() {
    let dir = tempfile::tempdir().unwrap();
    let server = FakeServer::start(Behaviour::Answer(completion(r#"{"move":"right"}"#, 30, 3)));
    let db = dir.path().join("edit.db");
    let report = run_llm(&db, 1, &["--model", &server.url]);
    let id = episode_ids(&report)[0];
    let before = server.requests().len();
    let fork = ludus([
        "fork",
        &db.display().to_string(),
        "--episode",
        &id.to_string(),
        "--frame",
        "2",
        "--model-response",
        r#"0={"move":"down"}"#,
        "--json",
    ])
    .json();
    assert_eq!(
        server.requests().len(),
        before,
        "no request for the prefix or the edit"
    );
    let branch = fork["branch"]["id"].as_i64().unwrap();
    let c = calls(&db, branch);
    assert_eq!(c[0].1.served, Served::Recording);
    assert_eq!(c[2].1.served, Served::Edited);
    assert_eq!(
        c[2].1.result.as_ref().unwrap().content,
        r#"{"move":"down"}"#
    );
    let frames = ludus_arena::Db::open_read_only(&db)
        .unwrap()
        .frames(branch)
        .unwrap();
    // The agent got the edited answer: it moved down, or said why not.
    let f = &frames[2].0;
    assert!(
        f.action == ludus_arena::model::Action::Discrete(2)
            || f.logs
                .iter()
                .any(|l| l.message.contains("chose down into a wall")),
        "{:?} {:?}",
        f.action,
        f.logs
    );
    // The edit is part of the branch's history: the branch replays exactly.
    let verify = ludus([
        "fork",
        &db.display().to_string(),
        "--episode",
        &branch.to_string(),
        "--frame",
        "3",
        "--json",
    ]);
    verify.ok();
}

#[test]
fn an_agent_calling_a_model_in_a_loop_crashes_its_episode_only() {
    let dir = tempfile::tempdir().unwrap();
    let server = FakeServer::start(Behaviour::Answer(completion("again", 5, 1)));
    let report = run_json(
        &dir.path().join("loop.db"),
        "cartpole",
        "hostile_agent",
        &[
            "--agent-config",
            "mode=chat-loop,at=1",
            "--episodes",
            "2",
            "--model",
            &server.url,
        ],
    );
    for e in report["episodes"].as_array().unwrap() {
        assert_eq!(e["outcome"], "crashed", "{e}");
        assert!(
            e["error"]
                .as_str()
                .unwrap_or("")
                .contains("over the model call limit"),
            "{e}"
        );
    }
    // 256 calls went out per episode, then the host stopped the loop.
    assert_eq!(server.requests().len(), 2 * 256);
}

#[test]
fn calls_made_while_an_episode_begins_replay_from_the_recording_too() {
    let dir = tempfile::tempdir().unwrap();
    let server = FakeServer::start(Behaviour::Answer(completion(r#"{"move":"down"}"#, 25, 5)));
    let db = dir.path().join("plan.db");
    let report = run_json(
        &db,
        "maze",
        "llm_maze_agent",
        &[
            "--env-config",
            MAZE,
            "--agent-config",
            "plan=on",
            "--episodes",
            "1",
            "--model",
            &server.url,
        ],
    );
    let ep = &report["episodes"][0];
    let id = ep["id"].as_i64().unwrap();
    let length = ep["length"].as_u64().unwrap();
    assert_eq!(
        ep["model_calls"].as_u64(),
        Some(length + 1),
        "a plan, then one call a frame"
    );
    let recorded = calls(&db, id);
    assert_eq!(recorded[0].0, 0);
    assert_eq!(recorded[1].0, 0, "the plan is recorded with frame 0");
    let plan_prompt = ludus_arena::chat::message_text(&recorded[0].1.request.messages[1]);
    assert!(plan_prompt.contains("how will you search"), "{plan_prompt}");
    let before = server.requests().len();
    let fork = ludus([
        "fork",
        &db.display().to_string(),
        "--episode",
        &id.to_string(),
        "--frame",
        "3",
        "--json",
    ]);
    fork.ok();
    assert_eq!(
        server.requests().len(),
        before,
        "the plan was served from the recording"
    );
}

/// The first move of a shortest path from `@` to `G` in a maze grid.
fn shortest_first_move(grid: &str) -> Option<&'static str> {
    let rows: Vec<&[u8]> = grid
        .lines()
        .map(str::as_bytes)
        .filter(|r| !r.is_empty())
        .collect();
    let find = |c: u8| {
        rows.iter()
            .enumerate()
            .find_map(|(y, r)| r.iter().position(|&x| x == c).map(|x| (x, y)))
    };
    let (start, goal) = (find(b'@')?, find(b'G')?);
    let moves = [
        ("up", 0i32, -1i32),
        ("right", 1, 0),
        ("down", 0, 1),
        ("left", -1, 0),
    ];
    // Breadth-first from the goal: then any neighbour of `@` one step
    // nearer is a first move.
    let mut dist = std::collections::HashMap::from([(goal, 0u32)]);
    let mut queue = std::collections::VecDeque::from([goal]);
    while let Some((x, y)) = queue.pop_front() {
        for (_, dx, dy) in moves {
            let (nx, ny) = ((x as i32 + dx) as usize, (y as i32 + dy) as usize);
            let open = rows
                .get(ny)
                .and_then(|r| r.get(nx))
                .is_some_and(|&c| c != b'#');
            if open && !dist.contains_key(&(nx, ny)) {
                dist.insert((nx, ny), dist[&(x, y)] + 1);
                queue.push_back((nx, ny));
            }
        }
    }
    let here = *dist.get(&start)?;
    moves.iter().find_map(|(name, dx, dy)| {
        let n = (
            (start.0 as i32 + dx) as usize,
            (start.1 as i32 + dy) as usize,
        );
        (dist.get(&n) == Some(&(here - 1))).then_some(*name)
    })
}

#[test]
fn the_maze_agent_remembers_what_worked_and_starts_the_next_run_with_it() {
    // A scripted model that reads the grid in the prompt and answers a
    // shortest path's next move; it also keeps the prompts it saw.
    let script = |body: &str| -> String {
        let v: serde_json::Value = serde_json::from_str(body).expect("a JSON request");
        let prompt = v["messages"][1]["content"].as_str().unwrap_or("");
        let grid = prompt.split("Grid:\n").nth(1).unwrap_or("");
        let grid = grid.split("\n\n").next().unwrap_or("");
        let m = shortest_first_move(grid).unwrap_or("up");
        completion(&format!(r#"{{"move":"{m}"}}"#), 10, 2)
    };
    let server = FakeServer::start(Behaviour::Script(std::sync::Arc::new(script)));
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("remember.db");
    let maze = "size=7,doors=0,max_steps=40";
    let first = run_llm_in(maze, &db, 1, &["--model", &server.url]);
    assert_eq!(first["episodes"][0]["success"], true, "{first}");
    let listing = ludus(["memory", "list", &db.display().to_string(), "/agent"]);
    listing.ok();
    assert!(
        listing.stdout().contains("/agent/llm-maze/"),
        "{}",
        listing.stdout()
    );
    let before = server.requests().len();
    let second = run_llm_in(maze, &db, 1, &["--model", &server.url]);
    assert_eq!(second["episodes"][0]["success"], true, "{second}");
    let prompts = server.requests();
    let first_prompt = &prompts[before].body;
    assert!(
        first_prompt.contains("Your memory of this maze: it was solved with the moves"),
        "{first_prompt}"
    );
}
