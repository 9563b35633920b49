//! `ludus export`: a recording with model calls (a tiny model served in
//! process) and one without, read back by the tools each format is for:
//! Python's `json`, `pyarrow`, and OpenTelemetry's own protobuf schema.

use std::path::Path;

use crate::support::{ludus, run_json};

/// Runs `code` with the project's Python, the paths `args` after it.
fn python(code: &str, args: &[&Path]) -> String {
    let args: Vec<String> = args.iter().map(|p| p.display().to_string()).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    crate::support::python(code, &args, None)
}

/// A database with an LLM agent's run (word-echo through the tiny model)
/// and a CartPole run. Returns (db, LLM run id, CartPole run id, frames).
fn recording(dir: &Path) -> (std::path::PathBuf, String, String, u64) {
    let model = dir.join("tiny");
    crate::support::tiny_model(&model, 1);
    let db = dir.join("run.db");
    let llm = run_json(
        &db,
        "word_echo",
        "llm_text_agent",
        &[
            "--agent-config",
            "max-tokens=3,temperature=1",
            "--model",
            &format!("policy:{}", model.display()),
            "--episodes",
            "3",
        ],
    );
    let cart = run_json(
        &db,
        "cartpole",
        "random_agent",
        &["--episodes", "2", "--seed", "4"],
    );
    let frames: u64 = [&llm, &cart]
        .iter()
        .flat_map(|r| r["episodes"].as_array().expect("episodes").iter())
        .map(|e| e["length"].as_u64().expect("length"))
        .sum();
    let id = |r: &serde_json::Value| r["run_id"].as_str().expect("run id").to_string();
    (db, id(&llm), id(&cart), frames)
}

#[test]
fn exports_read_back_in_the_tools_they_are_for() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, llm, _cart, frames) = recording(dir.path());
    let export = |format: &str, out: &Path, extra: &[&str]| {
        let mut args = vec![
            "export".to_string(),
            db.display().to_string(),
            "--format".into(),
            format.into(),
            "--out".into(),
            out.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let run = ludus(&args);
        assert_eq!(run.code(), 0, "{}", run.stderr());
    };

    // JSON lines: one episode per line; each model call a conversation
    // ending with the assistant's answer.
    let jsonl = dir.path().join("all.jsonl");
    export("jsonl", &jsonl, &[]);
    let summary = python(
        "import json, sys\n\
         eps = [json.loads(l) for l in open(sys.argv[1])]\n\
         calls = [c for e in eps for c in e['model_calls']]\n\
         assert all(c['messages'][-1]['role'] == 'assistant' for c in calls), calls\n\
         assert all(c['messages'][0]['role'] in ('system', 'user') for c in calls)\n\
         assert all(c['usage']['completion_tokens'] >= 1 for c in calls)\n\
         print(len(eps), sum(len(e['frames']) for e in eps), len(calls))",
        &[&jsonl],
    );
    assert_eq!(summary, format!("5 {frames} 3"));
    // One run only.
    let one = dir.path().join("llm.jsonl");
    export("jsonl", &one, &["--run", &llm]);
    let n = python(
        "import json, sys; print(sum(1 for _ in open(sys.argv[1])))",
        &[&one],
    );
    assert_eq!(n, "3");

    // Parquet: the episodes and frames tables.
    let pq = dir.path().join("tables");
    export("parquet", &pq, &[]);
    let tables = python(
        "import sys, pyarrow.parquet as pq\n\
         e = pq.read_table(sys.argv[1] + '/episodes.parquet')\n\
         f = pq.read_table(sys.argv[1] + '/frames.parquet')\n\
         assert f.column('tokens_out').to_pylist().count(0) == f.num_rows - 3\n\
         print(e.num_rows, f.num_rows, sum(e.column('length').to_pylist()))",
        &[&pq],
    );
    assert_eq!(tables, format!("5 {frames} {frames}"));

    // OTLP JSON, parsed strictly by OpenTelemetry's protobuf schema (an
    // unknown field or a wrong type fails): a chat span per model call with
    // the GenAI attributes, a span per step and one per episode.
    let otel = dir.path().join("trace.json");
    export("otel", &otel, &[]);
    let spans = python(
        "import sys\n\
         from google.protobuf import json_format\n\
         from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest\n\
         req = json_format.Parse(open(sys.argv[1]).read(), ExportTraceServiceRequest())\n\
         spans = [s for r in req.resource_spans for ss in r.scope_spans for s in ss.spans]\n\
         chat = [s for s in spans if s.name.startswith('chat ')]\n\
         for s in chat:\n\
         \x20   a = {kv.key: kv.value for kv in s.attributes}\n\
         \x20   assert a['gen_ai.operation.name'].string_value == 'chat'\n\
         \x20   assert a['gen_ai.provider.name'].string_value == 'ludus'\n\
         \x20   assert a['gen_ai.usage.output_tokens'].int_value >= 1\n\
         \x20   assert a['gen_ai.request.model'].string_value == 'tiny'\n\
         episodes = [s for s in spans if s.name.startswith('episode ')]\n\
         steps = [s for s in spans if s.name.startswith('step ')]\n\
         print(len(chat), len(steps), len(episodes), len({s.trace_id for s in spans}))\n\
         # OTLP's JSON writes ids in hex (protobuf's own mapping would read base64).\n\
         import json, re\n\
         raw = [s for r in json.load(open(sys.argv[1]))['resourceSpans'] for ss in r['scopeSpans'] for s in ss['spans']]\n\
         assert all(re.fullmatch('[0-9a-f]{32}', s['traceId']) and re.fullmatch('[0-9a-f]{16}', s['spanId']) for s in raw)\n\
         assert all(re.fullmatch('[0-9a-f]{16}', s['parentSpanId']) for s in raw if 'parentSpanId' in s)",
        &[&otel],
    );
    assert_eq!(spans, format!("3 {frames} 5 5"));
}

#[test]
fn bad_exports_are_usage_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("x.jsonl");
    let missing = ludus([
        "export",
        "nowhere.db",
        "--format",
        "jsonl",
        "--out",
        &out.display().to_string(),
    ]);
    assert_eq!(missing.code(), 2, "{}", missing.stderr());
    assert!(
        missing.stderr().contains("nowhere.db not found"),
        "{}",
        missing.stderr()
    );
    let db = dir.path().join("run.db");
    run_json(&db, "cartpole", "random_agent", &["--episodes", "1"]);
    let run = ludus([
        "export",
        &db.display().to_string(),
        "--run",
        "nope",
        "--format",
        "otel",
        "--out",
        &out.display().to_string(),
    ]);
    assert_eq!(run.code(), 2, "{}", run.stderr());
    assert!(run.stderr().contains("no run `nope`"), "{}", run.stderr());
    assert!(!out.exists());
}
