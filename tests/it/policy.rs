//! The built-in model backend (`--model policy:PATH`): SmolLM2-135M-Instruct
//! read from its GGUF file into the libtorch decoder, against llama.cpp's
//! server on the same weights.

use std::path::Path;

use ludus_arena::chat::{ChatRequest, ContentPart, Message, ModelClient};

use crate::support::models::{LlamaServer, model_file};
use crate::support::{ludus, plugin, run_json};

fn request(system: Option<&str>, user: &str) -> ChatRequest {
    let message = |role: &str, text: &str| Message {
        role: role.into(),
        content: vec![ContentPart::Text(text.into())],
        tool_calls: Vec::new(),
        tool_call_id: None,
    };
    let mut messages: Vec<Message> = system.map(|s| message("system", s)).into_iter().collect();
    messages.push(message("user", user));
    ChatRequest {
        endpoint: "default".into(),
        messages,
        tools: Vec::new(),
        response_format: None,
        temperature: Some(0.0),
        top_p: None,
        max_tokens: Some(20),
        stop: Vec::new(),
        seed: None,
        logprobs: true,
    }
}

fn client(model: &str) -> std::sync::Arc<dyn ModelClient> {
    ludus_trainer::llm::setup(&[model.to_string()], None)
        .expect("model setup")
        .client
        .expect("a client")
}

/// Greedy decoding gives llama.cpp's tokens, with log-probabilities within
/// 0.01 nats, and the same prompt length (so the chat template and the
/// tokenizer agree with llama.cpp's too). The server reads SmolLM2
/// dequantized to F32 (`scripts/dequantize-gguf.py`): on the Q4_1 file
/// llama.cpp also quantizes the activations, which moves log-probabilities
/// by up to about 0.15 nats and flips near ties; the backend dequantizes
/// the same Q4_1 file, so the weights are the same numbers.
#[test]
fn the_built_in_backend_decodes_as_llama_cpp_does() {
    let server = LlamaServer::start("smollm2-135m-f32.gguf", 1);
    let remote = client(&server.url);
    let local = client(&format!(
        "policy:{}",
        model_file("smollm2-135m-instruct.gguf").display()
    ));
    let requests = [
        request(None, "What is 2+2?"),
        request(None, "Name three colours."),
        request(Some("You answer in one word."), "What animal says moo?"),
        request(
            Some("You move through a maze. Answer with up, down, left or right."),
            "Grid:\n#####\n#A..#\n###G#\nWhere do you move?",
        ),
    ];
    for r in &requests {
        let theirs = remote
            .chat(r, &Vec::new(), 0)
            .result
            .expect("llama.cpp answers");
        let ours = local
            .chat(r, &Vec::new(), 0)
            .result
            .expect("the backend answers");
        assert_eq!(ours.prompt_tokens, theirs.prompt_tokens, "prompt of {r:?}");
        let ids = |t: &[ludus_arena::chat::GeneratedToken]| -> Vec<Option<u32>> {
            t.iter().map(|t| t.id).collect()
        };
        assert!(!theirs.tokens.is_empty(), "{theirs:?}");
        assert_eq!(
            ids(&ours.tokens),
            ids(&theirs.tokens),
            "{ours:?}\n{theirs:?}"
        );
        assert_eq!(ours.content, theirs.content);
        for (a, b) in ours.tokens.iter().zip(&theirs.tokens) {
            assert!(
                (a.logprob - b.logprob).abs() < 0.01,
                "token {:?}: {} here, {} in llama.cpp",
                a.text,
                a.logprob,
                b.logprob
            );
        }
    }
}

/// `ludus run` with `--model policy:PATH` plays the LLM maze agent as it
/// plays with the server on the same weights, answer for answer; and
/// sampling at a temperature draws from the episode's seed and the call's
/// index, so the digests do not depend on `--jobs`.
#[test]
fn an_llm_agent_runs_on_the_built_in_backend() {
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = format!(
        "policy:{}",
        model_file("smollm2-135m-instruct.gguf").display()
    );
    let maze = |db: &Path, model: &str, agent: &str, episodes: &str, jobs: &str| {
        run_json(
            db,
            "maze",
            "llm_maze_agent",
            &[
                "--env-config",
                "size=7,doors=0,max_steps=4",
                "--agent-config",
                agent,
                "--episodes",
                episodes,
                "--jobs",
                jobs,
                "--model",
                model,
            ],
        )
    };
    let answers = |db: &Path, report: &serde_json::Value| -> Vec<String> {
        let store = ludus_arena::Db::open_read_only(db).expect("db");
        let mut out = Vec::new();
        for e in report["episodes"].as_array().expect("episodes") {
            let id = e["id"].as_i64().expect("id");
            for (_, c) in store.model_calls(id, 0..=u64::MAX).expect("calls") {
                out.push(match c.result {
                    Ok(r) => r.content,
                    Err(e) => format!("error: {e:?}"),
                });
            }
        }
        out
    };
    let greedy = "max-tokens=8,schema=off";
    let (a, b) = (dir.path().join("local.db"), dir.path().join("server.db"));
    let local = maze(&a, &policy, greedy, "1", "1");
    assert_eq!(local["episodes"][0]["model_calls"], 4, "{local}");
    assert_eq!(local["episodes"][0]["live_calls"], 4, "{local}");
    let server = LlamaServer::start("smollm2-135m-f32.gguf", 1);
    let remote = maze(&b, &server.url, greedy, "1", "1");
    let (ours, theirs) = (answers(&a, &local), answers(&b, &remote));
    assert_eq!(ours.len(), 4);
    assert_eq!(ours, theirs);
    // Sampled: the same digests with one job or two.
    let hot = "max-tokens=6,schema=off,temperature=1.2";
    let (c, d) = (dir.path().join("one.db"), dir.path().join("two.db"));
    let one = maze(&c, &policy, hot, "2", "1");
    let two = maze(&d, &policy, hot, "2", "2");
    let digests = |r: &serde_json::Value| -> Vec<serde_json::Value> {
        let mut v: Vec<(u64, serde_json::Value)> = r["episodes"]
            .as_array()
            .expect("episodes")
            .iter()
            .map(|e| (e["index"].as_u64().unwrap_or(0), e["digest"].clone()))
            .collect();
        v.sort_by_key(|x| x.0);
        v.into_iter().map(|x| x.1).collect()
    };
    assert_eq!(digests(&one), digests(&two));
    // The two episodes sampled differently (their seeds differ).
    let sampled = answers(&c, &one);
    assert!(sampled.iter().any(|s| !ours.contains(s)), "{sampled:?}");
}

/// `policy:PATH,device=cuda` serves the model on the GPU, where there is
/// one: the greedy answers are the CPU's, and the run records the device.
/// Where there is none, the run is refused with one line naming the option.
#[test]
fn the_built_in_backend_runs_on_cuda_where_there_is_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = model_file("smollm2-135m-instruct.gguf");
    let maze = |db: &Path, device: &str| {
        ludus([
            "run",
            "--env",
            &plugin("maze").display().to_string(),
            "--agent",
            &plugin("llm_maze_agent").display().to_string(),
            "--env-config",
            "size=7,doors=0,max_steps=4",
            "--agent-config",
            "max-tokens=8,schema=off",
            "--model",
            &format!("policy:{},device={device}", model.display()),
            "--db",
            &db.display().to_string(),
            "--json",
        ])
    };
    let gpu = dir.path().join("gpu.db");
    if !ludus_trainer::cuda_available() {
        let refused = maze(&gpu, "cuda");
        assert_eq!(refused.code(), 2, "{}", refused.stderr());
        let err = crate::support::without_compile_notices(&refused.stderr());
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(
            err.contains("device=cuda") && err.contains("no CUDA device"),
            "{err}"
        );
        eprintln!(
            "SKIPPED the_built_in_backend_runs_on_cuda_where_there_is_one: no CUDA device on this machine (checked the refusal)"
        );
        return;
    }
    let answers = |db: &Path, run: &crate::support::Run| {
        assert_eq!(run.code(), 0, "{}", run.stderr());
        let store = ludus_arena::Db::open_read_only(db).expect("db");
        let id = run.json()["episodes"][0]["id"].as_i64().expect("id");
        let calls = store.model_calls(id, 0..=u64::MAX).expect("calls");
        assert_eq!(calls.len(), 4);
        let spec = store.runs().expect("runs")[0].spec.clone();
        let texts: Vec<String> = calls
            .into_iter()
            .map(|(_, c)| c.result.expect("answered").content)
            .collect();
        (texts, spec["models"][0]["device"].clone())
    };
    let cpu = dir.path().join("cpu.db");
    let (on_gpu, device) = answers(&gpu, &maze(&gpu, "cuda"));
    let (on_cpu, _) = answers(&cpu, &maze(&cpu, "cpu"));
    assert_eq!(device, "cuda:0");
    // In f32, over four short greedy answers, a near tie that the GPU's
    // summation order breaks the other way is unlikely (the backend
    // already gives llama.cpp's greedy tokens, another implementation's).
    assert_eq!(on_gpu, on_cpu);
}

/// A tiny word-level model in `dir/tiny` and a GRPO config for
/// `word-echo` through `llm-text-agent`; `ludus train` on `device`. Returns
/// (model folder, train db, summary, success rate per update).
fn train_word_echo(
    dir: &Path,
    device: &str,
    kl_coef: f64,
) -> (
    std::path::PathBuf,
    std::path::PathBuf,
    serde_json::Value,
    Vec<f64>,
) {
    let (model, config) = word_echo_config(dir, kl_coef, "updates = 150\nmean_return = 0.9");
    let db = dir.join("train.db");
    let out = ludus_train(&config, &db, device);
    let summary = out.json();
    let curve: Vec<f64> = out
        .stderr()
        .lines()
        .filter_map(|l| {
            l.split("success ")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect();
    assert!(!curve.is_empty(), "{}", out.stderr());
    (model, db, summary, curve)
}

/// `ludus train CONFIG --db DB --device DEVICE --json`.
pub(crate) fn ludus_train(config: &Path, db: &Path, device: &str) -> crate::support::Run {
    ludus([
        "train",
        &config.display().to_string(),
        "--db",
        &db.display().to_string(),
        "--device",
        device,
        "--json",
    ])
}

/// The success rate of 40 greedy word-echo episodes answered by the model
/// in `model` (through `policy:`), and the run's report.
fn greedy_echo_rate(dir: &Path, model: &str) -> (f64, serde_json::Value) {
    let run = run_json(
        &dir.join("after.db"),
        "word_echo",
        "llm_text_agent",
        &[
            "--agent-config",
            "max-tokens=1,temperature=0",
            "--model",
            &format!("policy:{model}"),
            "--episodes",
            "40",
        ],
    );
    let rate = run["summary"]["success_rate"].as_f64().expect("rate");
    (rate, run)
}

/// The tiny model in `dir/tiny` and the config `dir/echo.toml`, with
/// `stop` lines in its `[stop]` table and a checkpoint every 4 updates.
pub(crate) fn word_echo_config(
    dir: &Path,
    kl_coef: f64,
    stop: &str,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let model = dir.join("tiny");
    ludus_trainer::llm::tiny::write(
        &model,
        &ludus_trainer::llm::tiny::TinySpec {
            words: ["up", "down", "left", "right"].map(String::from).to_vec(),
            dim: 32,
            layers: 2,
            heads: 2,
            seed: 3,
        },
    )
    .expect("tiny model");
    let config = dir.join("echo.toml");
    std::fs::write(
        &config,
        format!(
            r#"
name = "echo"
seed = 11
[env]
plugin = "{env}"
[sampling]
mode = "sync"
samplers = 1
envs_per_sampler = 32
rollout_steps = 1
batch_steps = 1
max_policy_lag = 0
[algorithm]
advantage = "group"
policy_loss = "grpo"
gamma = 1.0
group_size = 8
value_loss = false
kl_coef = {kl_coef}
epochs = 1
minibatches = 1
[policy]
kind = "llm"
model = "{model}"
agent = "{agent}"
agent_config = "max-tokens=1,temperature=1"
[optimizer]
kind = "adam"
lr = 0.003
schedule = "constant"
max_grad_norm = 1.0
[stop]
{stop}
window = 64
[checkpoint]
every = 4
"#,
            env = plugin("word_echo").display(),
            model = model.display(),
            agent = plugin("llm_text_agent").display(),
        ),
    )
    .expect("config");
    (model, config)
}

/// GRPO trains a tiny random model through a real wasm agent: the
/// `word-echo` env shows one of four words, `llm-text-agent` asks the model
/// (one token, sampled) and answers with it. A random model is right about a
/// quarter of the time; trained, nine times in ten. The trained model is
/// saved as a folder that `--model policy:DIR` runs.
#[test]
fn grpo_trains_the_model_an_llm_agent_calls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (model, db, summary, curve) = train_word_echo(dir.path(), "cpu", 0.0);
    assert!(curve[0] < 0.6, "a random model already succeeds: {curve:?}");
    assert_eq!(summary["reached_target"], true, "{summary}\n{curve:?}");
    // Every sampled episode is recorded with its calls' tokens, their
    // log-probabilities and the policy version; those of the first update
    // (version 0, sampled at lag 0) are what the initial model gives them.
    let store = ludus_arena::Db::open_read_only(&db).expect("train db");
    let episodes = store.episodes("echo").expect("episodes");
    assert!(episodes.len() >= 32, "{}", episodes.len());
    let initial = ludus_trainer::llm::PolicyModel::open(&model, tch::Device::Cpu).expect("model");
    let mut checked = 0;
    for e in episodes.iter().filter(|e| e.index < 32) {
        for (_, call) in store.model_calls(e.id, 0..=u64::MAX).expect("calls") {
            let answer = call.result.expect("answered");
            assert_eq!(answer.model, "tiny@v0");
            let prompt = initial.text.prompt(&call.request).expect("prompt");
            let prompt = initial.text.encode(&prompt).expect("tokens");
            let ids: Vec<u32> = answer.tokens.iter().map(|t| t.id.expect("id")).collect();
            assert!(!ids.is_empty());
            let again: Vec<f32> = tch::no_grad(|| {
                Vec::try_from(&initial.llama.logprobs_of(&prompt, &ids)).expect("values")
            });
            for (t, lp) in answer.tokens.iter().zip(again) {
                assert!(
                    (t.logprob - lp).abs() < 1e-4,
                    "{} recorded, {lp} recomputed",
                    t.logprob
                );
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 32);
    // The trained model answers greedily through the built-in backend.
    let trained = summary["checkpoint"].as_str().expect("checkpoint");
    let (rate, run) = greedy_echo_rate(dir.path(), trained);
    assert!(rate >= 0.9, "{run}");
}

/// With a (small) KL penalty against the frozen initial model, the model
/// still learns.
#[test]
fn a_kl_penalty_to_the_initial_model_still_lets_it_learn() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, _, summary, curve) = train_word_echo(dir.path(), "cpu", 0.01);
    assert_eq!(summary["reached_target"], true, "{summary}\n{curve:?}");
}

/// The same training on CUDA, wherever there is a GPU.
#[test]
fn grpo_trains_on_cuda_where_there_is_one() {
    if !ludus_trainer::cuda_available() {
        eprintln!("SKIPPED grpo_trains_on_cuda_where_there_is_one: no CUDA device on this machine");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, _, summary, curve) = train_word_echo(dir.path(), "cuda", 0.0);
    assert!(
        summary["device"]
            .as_str()
            .unwrap_or_default()
            .to_lowercase()
            .starts_with("cuda"),
        "{summary}"
    );
    assert_eq!(summary["reached_target"], true, "{summary}\n{curve:?}");
}

/// An LLM run killed (SIGKILL) after a checkpoint and resumed records the
/// metrics and episodes an uninterrupted run records.
#[test]
fn an_llm_run_resumes_exactly_after_a_kill() {
    resumes_exactly_after_a_kill(|t| t);
}

/// The same with LoRA adapters: a resumed run reads the weights as loaded
/// and the adapters and their optimizer state from the checkpoint.
#[test]
fn an_llm_run_with_lora_resumes_exactly_after_a_kill() {
    resumes_exactly_after_a_kill(|t| {
        t.replace("[optimizer]", "[policy.lora]\nrank = 4\n[optimizer]")
    });
}

/// The metrics that measure time: they differ from run to run.
const TIMED: &[&str] = &[
    "generation_tokens_per_s",
    "trained_tokens_per_s",
    "sampling_share",
    "learner_share",
    "gpu_memory_mib",
];

fn resumes_exactly_after_a_kill(edit: impl Fn(String) -> String) {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, config) = word_echo_config(dir.path(), 0.0, "updates = 12");
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(&config, edit(text)).expect("config");
    let cfg = config.display().to_string();
    let train = |db: &Path, extra: &[&str]| {
        let db = db.display().to_string();
        let mut args = vec!["train", cfg.as_str(), "--db", db.as_str()];
        args.extend_from_slice(&["--device", "cpu", "--json"]);
        args.extend_from_slice(extra);
        ludus(&args).json()
    };
    let a = dir.path().join("a.db");
    train(&a, &[]);
    let b = dir.path().join("b.db");
    let mut child = crate::support::command()
        .args([
            "train",
            &cfg,
            "--db",
            &b.display().to_string(),
            "--device",
            "cpu",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn ludus train");
    let stdout = child.stdout.take().expect("stdout");
    let seen = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .any(|l| l.starts_with("checkpoint update 4:"));
    assert!(seen, "no checkpoint at update 4 announced");
    child.kill().expect("kill");
    let _ = child.wait();
    let out = train(&b, &["--resume"]);
    assert_eq!(out["updates"], 12, "{out}");
    let metrics = |db: &Path| {
        let mut m: Vec<(u64, String, String)> = ludus_arena::Db::open_read_only(db)
            .expect("db")
            .train_metrics("echo")
            .expect("metrics")
            .into_iter()
            .filter(|m| !TIMED.contains(&m.name.as_str()))
            .map(|m| (m.update, m.name, format!("{:.6}", m.value)))
            .collect();
        m.sort();
        m
    };
    let (ma, mb) = (metrics(&a), metrics(&b));
    assert!(ma.iter().any(|m| m.0 > 8), "{ma:?}");
    assert_eq!(ma, mb);
    let episodes = |db: &Path| -> Vec<(u64, u64, Option<String>)> {
        ludus_arena::Db::open_read_only(db)
            .expect("db")
            .episodes("echo")
            .expect("episodes")
            .into_iter()
            .map(|e| (e.index, e.seed, e.digest))
            .collect()
    };
    assert_eq!(episodes(&a), episodes(&b));
}

/// A GRPO config in `dir/smol.toml` that trains SmolLM2-135M on word-echo
/// (two words) through the text agent: `episodes` per update in groups of
/// 4, `algorithm` and `policy` lines added to those tables.
fn smol_config(
    dir: &Path,
    episodes: usize,
    algorithm: &str,
    policy: &str,
    updates: u64,
) -> std::path::PathBuf {
    let config = dir.join("smol.toml");
    std::fs::write(
        &config,
        format!(
            r#"
name = "smol"
seed = 1
[env]
plugin = "{env}"
config = "words=apple|river"
[sampling]
mode = "sync"
samplers = 1
envs_per_sampler = {episodes}
rollout_steps = 1
batch_steps = 1
max_policy_lag = 0
[algorithm]
advantage = "group"
policy_loss = "grpo"
gamma = 1.0
group_size = 4
value_loss = false
epochs = 1
minibatches = 1
{algorithm}
[policy]
kind = "llm"
model = "{model}"
agent = "{agent}"
agent_config = "max-tokens=2,temperature=1"
{policy}
[optimizer]
kind = "adam"
lr = 0.00001
schedule = "constant"
[stop]
updates = {updates}
"#,
            env = plugin("word_echo").display(),
            model = model_file("smollm2-135m-instruct.gguf").display(),
            agent = plugin("llm_text_agent").display(),
        ),
    )
    .expect("config");
    config
}

/// A GGUF model trains too (its weights are views of the dequantized
/// buffers): one update of SmolLM2-135M through the text agent, saved as a
/// folder that `--model policy:DIR` answers from.
#[test]
fn a_gguf_model_trains_and_its_checkpoint_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = smol_config(dir.path(), 4, "", "", 1);
    let db = dir.path().join("smol.db");
    let summary = ludus_train(&config, &db, "cpu").json();
    assert_eq!(summary["episodes"], 4, "{summary}");
    let trained = summary["checkpoint"].as_str().expect("checkpoint");
    let run = run_json(
        &dir.path().join("after.db"),
        "word_echo",
        "llm_text_agent",
        &[
            "--agent-config",
            "max-tokens=2,temperature=0",
            "--model",
            &format!("policy:{trained}"),
            "--episodes",
            "1",
        ],
    );
    assert_eq!(run["episodes"][0]["live_calls"], 1, "{run}");
    assert_eq!(run["episodes"][0]["outcome"], "terminated", "{run}");
}

/// Concurrent calls to one model share its decoding steps, and each gets
/// the same tokens, bit for bit the same log-probabilities, as when it is
/// answered alone: a sequence's numbers do not depend on the others in its
/// batch (sampled at temperature 1, so a changed bit would show).
#[test]
fn batched_calls_answer_as_they_do_alone() {
    use ludus_trainer::llm::engine::Engine;
    use std::sync::{Arc, Barrier, Mutex};
    let mut model = ludus_trainer::llm::PolicyModel::open(
        &model_file("smollm2-135m-instruct.gguf"),
        tch::Device::Cpu,
    )
    .expect("model");
    model.batch = 4;
    let engine = Arc::new(Engine::start(Arc::new(Mutex::new(model))));
    let questions = [
        "What is 2+2?",
        "Name a colour.",
        "Say hello.",
        "What animal says moo?",
        "Count to three.",
        "Where is Paris?",
    ];
    let ask = |i: usize| {
        let mut r = request(None, questions[i]);
        r.temperature = Some(1.0);
        r.max_tokens = Some(6);
        let (answer, g) = engine.answer(&r, 100 + i as u64).expect("answered");
        (
            answer.content,
            g.ids,
            g.logprobs.iter().map(|l| l.to_bits()).collect::<Vec<_>>(),
        )
    };
    let alone: Vec<_> = (0..questions.len()).map(ask).collect();
    assert_eq!(engine.widest_step(), 1);
    let barrier = Barrier::new(questions.len());
    let together: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..questions.len())
            .map(|i| {
                let (ask, barrier) = (&ask, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    ask(i)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    assert!(engine.widest_step() > 1, "the calls were never batched");
    assert!(engine.widest_step() <= 4);
    assert_eq!(alone, together);
}

/// A response format constrains the built-in backend: SmolLM2, greedy or
/// sampled hot, writes only documents the schema accepts and ends its turn
/// when one is complete; the same hot call without the schema does not.
#[test]
fn a_json_schema_constrains_the_answers() {
    let schema = r#"{"type":"object","properties":{"move":{"type":"string","enum":["up","right","down","left"]}},"required":["move"]}"#;
    let local = client(&format!(
        "policy:{}",
        model_file("smollm2-135m-instruct.gguf").display()
    ));
    let ask = |temperature: f32, seed: u64, format: Option<&str>| {
        let mut r = request(
            Some("You move through a maze."),
            "Grid:\n#####\n#A..#\n###G#\nWhere do you move? Answer in JSON.",
        );
        r.temperature = Some(temperature);
        r.max_tokens = Some(24);
        r.response_format = format.map(str::to_string);
        local.chat(&r, &Vec::new(), seed).result.expect("answered")
    };
    let fits = |content: &str| {
        serde_json::from_str::<serde_json::Value>(content)
            .ok()
            .and_then(|v| v["move"].as_str().map(str::to_string))
            .is_some_and(|m| ["up", "right", "down", "left"].contains(&m.as_str()))
    };
    for (temperature, seed) in [(0.0, 0), (1.0, 1), (1.5, 2), (1.5, 3)] {
        let a = ask(temperature, seed, Some(schema));
        assert!(fits(&a.content), "{a:?}");
        assert_eq!(a.finish_reason, "stop", "{a:?}");
    }
    let free = ask(1.5, 2, None);
    assert!(!fits(&free.content), "{free:?}");
    // A schema that is not one is the call's error, not the run's.
    let mut r = request(None, "hi");
    r.response_format = Some("{\"type\": 7}".into());
    let err = local.chat(&r, &Vec::new(), 0).result.expect_err("refused");
    assert!(format!("{err:?}").contains("not a JSON schema"), "{err:?}");
}

/// `ludus train` of the word-echo config with `edit` applied to it; the
/// summary and every update's metrics by name.
fn train_edited(
    dir: &Path,
    stop: &str,
    edit: impl Fn(String) -> String,
) -> (
    serde_json::Value,
    Vec<std::collections::BTreeMap<String, f64>>,
) {
    train_edited_model(dir, stop, edit, |_| {})
}

/// [`train_edited`], with `model` applied to the tiny model's folder first.
fn train_edited_model(
    dir: &Path,
    stop: &str,
    edit: impl Fn(String) -> String,
    model: impl Fn(&Path),
) -> (
    serde_json::Value,
    Vec<std::collections::BTreeMap<String, f64>>,
) {
    let (tiny, config) = word_echo_config(dir, 0.0, stop);
    model(&tiny);
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(&config, edit(text)).expect("config");
    let db = dir.join("train.db");
    let out = ludus_train(&config, &db, "cpu");
    let summary = out.json();
    let run = summary["run_id"].as_str().expect("run id").to_string();
    let store = ludus_arena::Db::open_read_only(&db).expect("db");
    let mut updates: Vec<std::collections::BTreeMap<String, f64>> = Vec::new();
    for row in store.train_metrics(&run).expect("metrics") {
        let u = row.update as usize;
        if updates.len() < u {
            updates.resize(u, Default::default());
        }
        updates[u - 1].insert(row.name, row.value);
    }
    (summary, updates)
}

/// REINFORCE (each episode's return, normalised over the update, times its
/// answer's log-probability) trains the model as GRPO does.
#[test]
fn reinforce_trains_the_model_an_llm_agent_calls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (summary, updates) = train_edited(dir.path(), "updates = 150\nmean_return = 0.9", |t| {
        t.replace("advantage = \"group\"", "advantage = \"monte-carlo\"")
            .replace("policy_loss = \"grpo\"", "policy_loss = \"reinforce\"")
    });
    let curve: Vec<f64> = updates.iter().map(|u| u["success_rate"]).collect();
    assert!(curve[0] < 0.6, "{curve:?}");
    assert_eq!(summary["reached_target"], true, "{summary}\n{curve:?}");
}

/// Gradient accumulation: the update's episodes in micro-batches of 3 give
/// the loss and gradient of one pass over all of them.
#[test]
fn micro_batches_add_up_to_the_whole_batch() {
    let whole = tempfile::tempdir().expect("tempdir");
    let parts = tempfile::tempdir().expect("tempdir");
    let (_, a) = train_edited(whole.path(), "updates = 1", |t| t);
    let (_, b) = train_edited(parts.path(), "updates = 1", |t| {
        t.replace("[policy]\n", "[policy]\nmicro_batch = 3\n")
    });
    for name in ["policy_loss", "grad_norm", "approx_kl"] {
        let (x, y) = (a[0][name], b[0][name]);
        assert!(
            (x - y).abs() <= 1e-5 * x.abs().max(1.0),
            "{name}: {x} in one pass, {y} in micro-batches"
        );
    }
    assert!(a[0]["grad_norm"] > 0.0, "{:?}", a[0]);
    assert_eq!(a[0]["success_rate"], b[0]["success_rate"]);
}

/// LoRA: rank-4 adapters on every projection learn the task (to a success
/// rate of 0.7 within 200 updates; 0.03 at first) while the
/// model's own weights stay as they were; the checkpoint holds the merged
/// model (which `--model policy:DIR` runs) and the adapters on their own.
/// The tiny model's logits are all near zero (small random embeddings,
/// unit output norm), which only weights the adapters leave alone could
/// widen, so its output norm is widened first.
#[test]
fn lora_adapters_learn_and_leave_the_weights_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let widen = |tiny: &Path| {
        let file = tiny.join("model.safetensors");
        let weights: Vec<(String, tch::Tensor)> = tch::Tensor::read_safetensors(&file)
            .expect("weights")
            .into_iter()
            .map(|(n, t)| {
                let t = if n == "model.norm.weight" { t * 4.0 } else { t };
                (n, t)
            })
            .collect();
        tch::Tensor::write_safetensors(&weights, &file).expect("write");
    };
    let (summary, updates) = train_edited_model(
        dir.path(),
        "updates = 200\nmean_return = 0.7",
        |t| {
            t.replace(
            "[optimizer]",
            "[policy.lora]\nrank = 4\ntargets = [\"q_proj\", \"k_proj\", \"v_proj\", \"o_proj\", \"gate_proj\", \"up_proj\", \"down_proj\"]\n[optimizer]",
        )
        .replace("lr = 0.003", "lr = 0.01")
        },
        widen,
    );
    let curve: Vec<f64> = updates.iter().map(|u| u["success_rate"]).collect();
    assert!(curve[0] < 0.6, "{curve:?}");
    assert_eq!(summary["reached_target"], true, "{summary}\n{curve:?}");
    let ck = std::path::PathBuf::from(summary["checkpoint"].as_str().expect("checkpoint"));
    let saved = tch::Tensor::read_safetensors(ck.join("model.safetensors")).expect("weights");
    let initial = tch::Tensor::read_safetensors(dir.path().join("tiny/model.safetensors"))
        .expect("initial weights");
    let get = |v: &[(String, tch::Tensor)], n: &str| {
        v.iter()
            .find(|(k, _)| k == n)
            .map(|(_, t)| t.shallow_clone())
            .expect(n)
    };
    // Untouched: the embeddings and the norms; merged: the projections.
    for n in [
        "model.embed_tokens.weight",
        "model.layers.0.input_layernorm.weight",
    ] {
        assert!(get(&saved, n).equal(&get(&initial, n)), "{n} changed");
    }
    let q = "model.layers.0.self_attn.q_proj.weight";
    assert!(
        !get(&saved, q).equal(&get(&initial, q)),
        "{q} has no adapter merged"
    );
    let adapters =
        tch::Tensor::read_safetensors(ck.join("adapter_model.safetensors")).expect("adapters");
    assert_eq!(
        adapters.len(),
        2 * 7 * 2,
        "A and B for 7 targets in 2 layers"
    );
    let (rate, run) = greedy_echo_rate(dir.path(), &ck.display().to_string());
    assert!(rate >= 0.7, "{run}");
}

/// Tools reach a model whose chat template knows none (SmolLM2's): they
/// are described in the system message with the `<tool_call>` format the
/// backend reads back (the reading itself is unit-tested in `llm::text`).
#[test]
fn tools_are_described_to_a_model_whose_template_has_none() {
    let local = client(&format!(
        "policy:{}",
        model_file("smollm2-135m-instruct.gguf").display()
    ));
    let model = ludus_trainer::llm::PolicyModel::open(
        &model_file("smollm2-135m-instruct.gguf"),
        tch::Device::Cpu,
    )
    .expect("model");
    assert!(!model.text.template.contains("tools"));
    let mut r = request(Some("You manage files."), "Read the file notes.txt.");
    r.max_tokens = Some(4);
    let plain = local.chat(&r, &Vec::new(), 0).result.expect("answered");
    r.tools = vec![ludus_arena::chat::Tool {
        name: "read_file".into(),
        description: "Reads a file and returns its text.".into(),
        parameters:
            r#"{"type":"object","properties":{"path":{"type":"string"}},"required":["path"]}"#
                .into(),
    }];
    let with_tools = local.chat(&r, &Vec::new(), 0).result.expect("answered");
    assert!(
        with_tools.prompt_tokens > plain.prompt_tokens + 40,
        "{} tokens with the tool, {} without",
        with_tools.prompt_tokens,
        plain.prompt_tokens
    );
}

/// Async mode: a thread samples the next update's episodes with the
/// behaviour policy it holds while the learner trains, and the learner
/// publishes its weights to it after each update; batches arrive a policy
/// version late (lag 1), their tokens weighted by truncated importance
/// ratios, and the model still learns.
#[test]
fn async_llm_training_samples_while_the_learner_trains() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (summary, updates) = train_edited(dir.path(), "updates = 200\nmean_return = 0.9", |t| {
        t.replace("mode = \"sync\"", "mode = \"async\"")
            .replace("max_policy_lag = 0", "max_policy_lag = 2")
    });
    let curve: Vec<f64> = updates.iter().map(|u| u["success_rate"]).collect();
    let lags: Vec<f64> = updates.iter().map(|u| u["policy_lag"]).collect();
    assert!(curve[0] < 0.6, "{curve:?}");
    assert_eq!(summary["reached_target"], true, "{summary}\n{curve:?}");
    assert_eq!(lags[0], 0.0, "{lags:?}");
    // Later batches were sampled while the learner trained on the one
    // before: a lag of one. (A sampling thread held off the CPU from its
    // send until after the learner's next update starts its next batch at
    // lag 0; on a loaded machine that happens now and then.)
    let behind = lags.iter().skip(1).filter(|l| **l >= 1.0).count();
    assert!(behind * 4 >= (lags.len() - 1) * 3, "{lags:?}");
    assert!(lags.iter().all(|l| *l <= 2.0), "{lags:?}");
}

fn ppo_with_a_value_head(t: String) -> String {
    t.replace("advantage = \"group\"", "advantage = \"gae\"")
        .replace("policy_loss = \"grpo\"", "policy_loss = \"ppo\"")
        .replace("value_loss = false", "value_loss = true")
}

/// PPO with a value head: a linear head on the final hidden state values
/// each generated token, GAE turns the return into per-token advantages,
/// and the value loss trains the head; the model learns as with GRPO.
#[test]
fn ppo_with_a_value_head_trains_the_model() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (summary, updates) = train_edited(
        dir.path(),
        "updates = 150\nmean_return = 0.9",
        ppo_with_a_value_head,
    );
    let curve: Vec<f64> = updates.iter().map(|u| u["success_rate"]).collect();
    assert!(curve[0] < 0.6, "{curve:?}");
    assert_eq!(summary["reached_target"], true, "{summary}\n{curve:?}");
    let values: Vec<f64> = updates.iter().map(|u| u["value_loss"]).collect();
    assert!(values[0] > 0.0, "{values:?}");
}

/// The value head and its optimizer state are in the checkpoint: a run
/// resumes exactly.
#[test]
fn an_llm_run_with_a_value_head_resumes_exactly_after_a_kill() {
    resumes_exactly_after_a_kill(ppo_with_a_value_head);
}

fn in_bf16(t: String) -> String {
    t.replace("[policy]\n", "[policy]\ndtype = \"bf16\"\n")
}

fn with_offload(t: String) -> String {
    t.replace("[policy]\n", "[policy]\noffload = true\n")
}

fn with_kl(t: String) -> String {
    t.replace("kl_coef = 0\n", "kl_coef = 0.01\n")
}

/// bf16: the model's weights and activations in bfloat16, the optimizer's
/// f32 master copies beside them, learn the task as f32 does. At lag 0 the
/// learner's log-probabilities of the sampled tokens agree with the
/// recorded ones to bf16's precision (the first update's approximate KL),
/// and the checkpoint answers through `policy:`, in `f32` and in bf16.
#[test]
fn a_bf16_model_learns_the_task() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (summary, updates) = train_edited(dir.path(), "updates = 150\nmean_return = 0.9", in_bf16);
    let curve: Vec<f64> = updates.iter().map(|u| u["success_rate"]).collect();
    assert!(curve[0] < 0.6, "{curve:?}");
    assert_eq!(summary["reached_target"], true, "{summary}\n{curve:?}");
    let kl = updates[0]["approx_kl"];
    assert!(
        kl.abs() < 1e-2,
        "recorded and recomputed log-probabilities differ: {kl}"
    );
    let trained = summary["checkpoint"].as_str().expect("checkpoint");
    let saved = tch::Tensor::read_safetensors(Path::new(trained).join("model.safetensors"))
        .expect("checkpoint weights");
    assert!(
        saved.iter().all(|(_, t)| t.kind() == tch::Kind::BFloat16),
        "{:?}",
        saved.iter().map(|(n, t)| (n, t.kind())).collect::<Vec<_>>()
    );
    let (rate, run) = greedy_echo_rate(dir.path(), trained);
    assert!(rate >= 0.9, "{run}");
    // Served in bf16, as it was trained (`policy:DIR,dtype=bf16`): it
    // answers as well, and the run records the type it was served in.
    let served = dir.path().join("served-bf16");
    std::fs::create_dir_all(&served).expect("dir");
    let (rate, run) = greedy_echo_rate(&served, &format!("{trained},dtype=bf16"));
    assert!(rate >= 0.9, "{run}");
    let db = ludus_arena::Db::open_read_only(&served.join("after.db")).expect("db");
    let runs = db.runs().expect("runs");
    assert_eq!(
        runs[0].spec["models"][0]["dtype"], "bf16",
        "{}",
        runs[0].spec
    );
}

/// Offload keeps the optimizer's state and the frozen reference model in
/// CPU memory; what is trained does not change: the same metrics, bit for
/// bit, in bf16 with a KL penalty. (On the CPU both live in the same memory;
/// what offload saves on a GPU is the next test's.)
#[test]
fn offloaded_state_trains_as_state_kept_beside_the_model() {
    let kept = tempfile::tempdir().expect("tempdir");
    let moved = tempfile::tempdir().expect("tempdir");
    let (_, a) = train_edited(kept.path(), "updates = 8", |t| with_kl(in_bf16(t)));
    let (_, b) = train_edited(moved.path(), "updates = 8", |t| {
        with_offload(with_kl(in_bf16(t)))
    });
    let strip = |u: &[std::collections::BTreeMap<String, f64>]| {
        u.iter()
            .map(|m| {
                let mut m = m.clone();
                m.retain(|name, _| !TIMED.contains(&name.as_str()));
                m
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(&a), strip(&b));
    assert!(a.iter().any(|u| u["kl_reference"] > 0.0), "{a:?}");
}

/// The f32 master copies of bf16 weights are in the checkpoint: a bf16 run
/// with offload and a KL penalty resumes exactly.
#[test]
fn a_bf16_run_with_offload_resumes_exactly_after_a_kill() {
    resumes_exactly_after_a_kill(|t| with_offload(with_kl(in_bf16(t))));
}

/// On a GPU: SmolLM2-135M trains in bf16, and offload lowers the GPU memory
/// the training process holds (the driver's figure after each update,
/// `gpu_memory_mib`) by at least a gigabyte: Adam's two moments and the
/// master copies are 1.6 GB in f32 for 135M weights.
#[test]
fn offload_lowers_gpu_memory_where_there_is_a_gpu() {
    if !ludus_trainer::cuda_available() {
        eprintln!(
            "SKIPPED offload_lowers_gpu_memory_where_there_is_a_gpu: no CUDA device on this machine"
        );
        return;
    }
    let peak = |offload: bool| {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = smol_config(
            dir.path(),
            8,
            "kl_coef = 0.01",
            &format!("dtype = \"bf16\"\noffload = {offload}"),
            3,
        );
        let db = dir.path().join("smol.db");
        let summary = ludus_train(&config, &db, "cuda").json();
        assert_eq!(summary["updates"], 3, "{summary}");
        ludus_arena::Db::open_read_only(&db)
            .expect("db")
            .train_metrics("smol")
            .expect("metrics")
            .into_iter()
            .filter(|m| m.name == "gpu_memory_mib")
            .map(|m| m.value)
            .fold(None, |a: Option<f64>, v| Some(a.map_or(v, |a| a.max(v))))
            .expect("gpu_memory_mib recorded")
    };
    let (kept, offloaded) = (peak(false), peak(true));
    eprintln!("GPU memory held: {kept} MiB with the state kept, {offloaded} MiB offloaded");
    assert!(
        offloaded + 1000.0 < kept,
        "{kept} MiB kept, {offloaded} MiB offloaded"
    );
}

/// A run asked to stop from another thread (the IDE's Stop button) ends
/// after the update in progress, is recorded as stopped, and leaves a
/// checkpoint that `--resume` goes on from; each update reports where its
/// time went (sampling, learning) and the tokens trained per second.
#[test]
fn an_llm_run_stops_when_asked_and_resumes() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, config) = word_echo_config(dir.path(), 0.0, "updates = 12");
    let db = dir.path().join("train.db");
    let stop = Arc::new(AtomicBool::new(false));
    let opts = ludus_trainer::train::TrainOptions {
        config: ludus_trainer::config::Config::load(&config).expect("config"),
        db: db.clone(),
        device: ludus_trainer::train::DeviceChoice::Cpu,
        resume: false,
        stop: Some(stop.clone()),
    };
    let mut reports = Vec::new();
    let summary = ludus_trainer::train::train(&opts, &mut |r| {
        reports.push(r.metrics.clone());
        if r.update == 2 {
            stop.store(true, Ordering::Relaxed);
        }
    })
    .expect("train");
    assert_eq!(summary.updates, 2);
    let run = |db: &Path| {
        ludus_arena::Db::open_read_only(db)
            .expect("db")
            .runs()
            .expect("runs")
            .into_iter()
            .find(|r| r.id == "echo")
            .expect("the run")
    };
    assert_eq!(run(&db).status, "stopped");
    for m in &reports {
        let get = |name: &str| {
            m.iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| *v)
                .unwrap_or_else(|| panic!("no {name} in {m:?}"))
        };
        let (sampling, learning) = (get("sampling_share"), get("learner_share"));
        assert!(sampling > 0.0 && learning >= 0.0, "{m:?}");
        assert!(
            sampling + learning <= 1.0 + 1e-9,
            "sync mode overlaps nothing: {m:?}"
        );
        assert!(get("trained_tokens_per_s") >= 0.0, "{m:?}");
    }
    let resumed = ludus_trainer::train::train(
        &ludus_trainer::train::TrainOptions {
            resume: true,
            stop: None,
            ..opts
        },
        &mut |_| {},
    )
    .expect("resume");
    assert_eq!(resumed.updates, 12);
    assert_eq!(run(&db).status, "finished");
}

/// `ludus bench llm-train` trains the model in its four setups, each in a
/// process of its own (here two updates each of the tiny model), and
/// reports each; a missing model, setup or plugin folder is a usage error.
#[test]
fn the_llm_training_benchmark_runs_its_four_setups() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = dir.path().join("tiny");
    ludus_trainer::llm::tiny::write(
        &model,
        &ludus_trainer::llm::tiny::TinySpec {
            words: ["apple", "river", "stone", "cloud"]
                .map(String::from)
                .to_vec(),
            dim: 32,
            layers: 2,
            heads: 2,
            seed: 3,
        },
    )
    .expect("tiny model");
    let plugins = crate::support::plugins().display().to_string();
    let model = model.display().to_string();
    let rows = ludus([
        "bench",
        "llm-train",
        "--model",
        &model,
        "--plugins",
        &plugins,
        "--updates",
        "2",
        "--device",
        "cpu",
        "--json",
    ])
    .json();
    let rows = rows.as_array().expect("rows");
    let setups: Vec<&str> = rows.iter().filter_map(|r| r["setup"].as_str()).collect();
    assert_eq!(
        setups,
        ["sync-f32", "sync-bf16", "sync-bf16-offload", "async-bf16"]
    );
    for r in rows {
        assert_eq!(r["updates"], 2, "{r}");
        assert!(r["sampling_share"].as_f64().expect("share") > 0.0, "{r}");
        assert!(
            r["generation_tokens_per_s"].as_f64().expect("tokens") > 0.0,
            "{r}"
        );
        assert!(r["gpu_memory_mib"].is_null(), "{r}");
    }
    let err = ludus(["bench", "llm-train", "--model", &model, "--setup", "fp8"]).fails_with(2);
    assert!(
        err.contains("--setup fp8") && err.contains("sync-bf16-offload"),
        "{err}"
    );
    let err = ludus(["bench", "llm-train", "--model", "no-such.gguf"]).fails_with(2);
    assert!(err.contains("no-such.gguf"), "{err}");
    let err = ludus([
        "bench",
        "llm-train",
        "--model",
        &model,
        "--plugins",
        "nowhere",
    ])
    .fails_with(2);
    assert!(err.contains("--plugins nowhere"), "{err}");
}
