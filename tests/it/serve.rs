//! `ludus serve`: env plugins over a loopback WebSocket in OpenEnv's
//! protocol, driven by OpenEnv's own Python client (`openenv-core`, in
//! `.venv/openenv`, installed by scripts/setup.sh) and by raw WebSocket
//! frames for what a well-behaved client never sends.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::support::{ludus, plugin, root, run_json};

/// A running `ludus serve`; stopped by SIGTERM (as a user's Ctrl-C or a
/// supervisor would) when dropped or [`Server::stop`]ped.
struct Server {
    child: Option<Child>,
    port: u16,
}

impl Server {
    fn start(args: &[&str]) -> Server {
        Server::start_in(Path::new("."), args)
    }

    /// [`Server::start`] in the folder `dir`.
    fn start_in(dir: &Path, args: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ludus"))
            .current_dir(dir)
            .arg("serve")
            .args(["--port", "0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ludus serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let first = lines.next().and_then(Result::ok).unwrap_or_default();
        let port = first
            .split("http://127.0.0.1:")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {first:?}"));
        // The rest of stdout (the recorded run) is read at the end.
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                println!("serve: {line}");
            }
        });
        Server {
            child: Some(child),
            port,
        }
    }

    /// SIGTERM, and the exit code.
    fn stop(&mut self) -> i32 {
        let Some(mut child) = self.child.take() else {
            return -1;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        child.wait().ok().and_then(|s| s.code()).unwrap_or(-1)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs `code` with OpenEnv's client venv; its stdout.
fn client(code: &str, args: &[&str]) -> String {
    crate::support::python_at(&root().join(".venv/openenv/bin/python"), code, args, None)
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// Several OpenEnv clients at once, each its own seeded session, play the
/// episodes `ludus run` played (same seeds, same actions) and the server
/// records them with the same digests; a client beyond the session limit
/// gets `CAPACITY_REACHED`; a client that vanishes mid-episode leaves it
/// recorded as interrupted; malformed frames get protocol errors and the
/// session goes on; SIGTERM ends the server cleanly.
#[test]
fn openenv_clients_play_recorded_sessions_and_bad_frames_get_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let reference = dir.path().join("ref.db");
    let served = dir.path().join("served.db");
    let run = run_json(
        &reference,
        "cartpole",
        "random_agent",
        &["--episodes", "3", "--seed", "5"],
    );
    let jsonl = dir.path().join("ref.jsonl");
    crate::support::export_jsonl(&reference, &jsonl);
    let mut server = Server::start(&[
        "--env",
        &path(&plugin("cartpole")),
        "--db",
        &path(&served),
        "--max-sessions",
        "3",
    ]);
    let out = client(
        "import sys, json, threading, socket, time\n\
         from openenv.core import GenericEnvClient\n\
         from websockets.sync.client import connect\n\
         port = sys.argv[1]\n\
         url = f'ws://127.0.0.1:{port}'\n\
         episodes = [json.loads(l) for l in open(sys.argv[2])]\n\
         opened = threading.Barrier(len(episodes) + 1)\n\
         checked = threading.Barrier(len(episodes) + 1)\n\
         results = {}\n\
         def play(k, e):\n\
         \x20   with GenericEnvClient(base_url=url).sync() as env:\n\
         \x20       r = env.reset(seed=e['seed'])\n\
         \x20       first = r.observation['state']\n\
         \x20       opened.wait()\n\
         \x20       checked.wait()\n\
         \x20       total = 0.0\n\
         \x20       for f in e['frames']:\n\
         \x20           r = env.step({'Discrete': f['action']['Discrete']})\n\
         \x20           total += r.reward\n\
         \x20       results[k] = (first == e['frames'][0]['observation']['state'], r.done, total == e['return'], env.state()['step_count'])\n\
         threads = [threading.Thread(target=play, args=(k, e)) for k, e in enumerate(episodes)]\n\
         for t in threads: t.start()\n\
         opened.wait()\n\
         # All three sessions are open (and wait): a fourth is turned away.\n\
         try:\n\
         \x20   with GenericEnvClient(base_url=url).sync() as extra:\n\
         \x20       extra.reset(seed=1)\n\
         \x20   print('fourth session accepted')\n\
         except Exception as e:\n\
         \x20   print('fourth', 'CAPACITY_REACHED' in str(e))\n\
         checked.wait()\n\
         for t in threads: t.join()\n\
         print('sessions', sorted(results.items()))\n\
         # Malformed frames, then a valid reset on the same socket.\n\
         with connect(url + '/ws') as ws:\n\
         \x20   codes = []\n\
         \x20   for frame in ['not json', '[1, 2]', '{\"type\": \"jump\"}', '{\"type\": \"state\", \"x\": 1}',\n\
         \x20                 '{\"type\": \"step\"}', '{\"type\": \"step\", \"data\": {\"Discrete\": 0}}',\n\
         \x20                 '{\"type\": \"reset\", \"data\": {\"seed\": -4}}', b'binary']:\n\
         \x20       ws.send(frame)\n\
         \x20       m = json.loads(ws.recv(timeout=10))\n\
         \x20       codes.append(m['data'].get('code'))\n\
         \x20   ws.send(json.dumps({'type': 'reset', 'data': {'seed': 3}}))\n\
         \x20   ok = json.loads(ws.recv(timeout=10))['type']\n\
         \x20   ws.send(json.dumps({'type': 'step', 'data': {'Discrete': 7}}))\n\
         \x20   wrong = json.loads(ws.recv(timeout=10))['data']\n\
         print('errors', codes, ok)\n\
         print('out of range', wrong['code'], wrong['message'])\n\
         # A client that vanishes mid-episode: no close frame, the socket dropped.\n\
         ws = connect(url + '/ws')\n\
         ws.send(json.dumps({'type': 'reset', 'data': {'seed': 11}}))\n\
         ws.recv(timeout=10)\n\
         for _ in range(3):\n\
         \x20   ws.send(json.dumps({'type': 'step', 'data': {'Discrete': 1}}))\n\
         \x20   ws.recv(timeout=10)\n\
         ws.socket.shutdown(socket.SHUT_RDWR)\n\
         ws.socket.close()\n\
         time.sleep(0.5)\n\
         with GenericEnvClient(base_url=url).sync() as env:\n\
         \x20   print('still serving', env.reset(seed=5).done)",
        &[&server.port.to_string(), &path(&jsonl)],
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "fourth True", "{out}");
    assert!(
        lines[1].starts_with("sessions [(0, (True, True, True,"),
        "{out}"
    );
    assert_eq!(lines[1].matches("(True, True, True,").count(), 3, "{out}");
    assert_eq!(
        lines[2],
        "errors ['INVALID_JSON', 'VALIDATION_ERROR', 'UNKNOWN_TYPE', 'VALIDATION_ERROR', \
         'VALIDATION_ERROR', 'EXECUTION_ERROR', 'VALIDATION_ERROR', 'INVALID_JSON'] observation",
        "{out}"
    );
    assert_eq!(
        lines[3], "out of range VALIDATION_ERROR Discrete 7 is outside the env's actions 0..2",
        "{out}"
    );
    assert_eq!(lines[4], "still serving False", "{out}");
    assert_eq!(server.stop(), 0);

    let store = ludus_arena::Db::open_read_only(&served).expect("served db");
    let runs = store.runs().expect("runs");
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].status, "finished");
    let episodes = store.episodes(&runs[0].id).expect("episodes");
    let mut digests: Vec<String> = episodes
        .iter()
        .filter(|e| e.outcome == "terminated" || e.outcome == "truncated")
        .filter_map(|e| e.digest.clone())
        .collect();
    let mut expected: Vec<String> = run["episodes"]
        .as_array()
        .expect("episodes")
        .iter()
        .map(|e| e["digest"].as_str().expect("digest").to_string())
        .collect();
    digests.sort();
    expected.sort();
    assert_eq!(digests, expected, "{episodes:?}");
    // The malformed session's episode, the vanished client's (3 steps) and
    // the last client's are interrupted.
    let outcomes: Vec<&str> = episodes.iter().map(|e| e.outcome.as_str()).collect();
    assert_eq!(
        outcomes.iter().filter(|o| **o == "interrupted").count(),
        3,
        "{outcomes:?}"
    );
    let vanished = episodes
        .iter()
        .find(|e| e.seed == 11)
        .expect("the vanished client's episode");
    assert_eq!(
        (vanished.outcome.as_str(), vanished.length),
        ("interrupted", 3)
    );
    let debug = ludus([
        "debug",
        &path(&served),
        "--episode",
        &vanished.id.to_string(),
        "--break",
        "step == 1",
        "--json",
    ]);
    assert_eq!(debug.code(), 0, "{}", debug.stderr());
}

/// An env's tools are MCP tools: listed over HTTP and in a session, called
/// through JSON-RPC and through OpenEnv's `call_tool` step; and a class
/// written to TRL's `environment_factory` convention (a `reset` returning
/// the task, one method per tool, `get_reward`) solves the tool env
/// through the server. (TRL itself is not installed here: it pins another
/// torch than the project's.)
#[test]
fn env_tools_are_mcp_tools() {
    let mut server = Server::start(&["--env", &path(&plugin("tool_fs"))]);
    let out = client(
        "import sys, json, re, urllib.request\n\
         from openenv.core import GenericEnvClient\n\
         from websockets.sync.client import connect\n\
         port = sys.argv[1]\n\
         url = f'ws://127.0.0.1:{port}'\n\
         req = urllib.request.Request(f'http://127.0.0.1:{port}/mcp', method='POST',\n\
         \x20   data=json.dumps({'jsonrpc': '2.0', 'id': 1, 'method': 'tools/list'}).encode())\n\
         tools = json.load(urllib.request.urlopen(req))['result']['tools']\n\
         print('tools', [t['name'] for t in tools], tools[2]['input_schema']['required'])\n\
         with connect(url + '/ws') as ws:\n\
         \x20   ws.send(json.dumps({'type': 'mcp', 'data': {'jsonrpc': '2.0', 'id': 2, 'method': 'tools/call', 'params': {'name': 'ls', 'arguments': {'path': '/'}}}}))\n\
         \x20   early = json.loads(ws.recv(timeout=10))['data']['error']['code']\n\
         \x20   ws.send(json.dumps({'type': 'reset', 'data': {'seed': 4}}))\n\
         \x20   ws.recv(timeout=10)\n\
         \x20   ws.send(json.dumps({'type': 'mcp', 'data': {'jsonrpc': '2.0', 'id': 3, 'method': 'tools/call', 'params': {'name': 'ls', 'arguments': {'path': '/'}}}}))\n\
         \x20   r = json.loads(ws.recv(timeout=10))['data']\n\
         \x20   ws.send(json.dumps({'type': 'mcp', 'data': {'jsonrpc': '2.0', 'id': 4, 'method': 'tools/call', 'params': {'name': 'rm', 'arguments': {}}}}))\n\
         \x20   unknown = json.loads(ws.recv(timeout=10))['data']['error']['code']\n\
         print('call', early, r['id'], r['result']['content'][0]['text'].count('/') > 1, r['result']['done'], unknown)\n\
         class ToolFsEnv:\n\
         \x20   \"\"\"The tool env as TRL's environment_factory wants it.\"\"\"\n\
         \x20   def __init__(self):\n\
         \x20       self.client = GenericEnvClient(base_url=url).sync()\n\
         \x20       self.client.connect()\n\
         \x20       self.reward = 0.0\n\
         \x20   def reset(self, **kwargs):\n\
         \x20       r = self.client.reset(seed=kwargs.get('seed'))\n\
         \x20       self.reward = 0.0\n\
         \x20       return r.observation['metadata']['task']\n\
         \x20   def _call(self, name, **arguments):\n\
         \x20       r = self.client.step({'type': 'call_tool', 'tool_name': name, 'arguments': arguments})\n\
         \x20       self.reward += r.reward or 0.0\n\
         \x20       return r.observation['result']\n\
         \x20   def grep(self, pattern: str) -> str:\n\
         \x20       \"\"\"List the files whose text contains a pattern.\n\n\
         \x20       Args:\n\
         \x20           pattern: the text to look for\n\
         \x20       \"\"\"\n\
         \x20       return self._call('grep', pattern=pattern)\n\
         \x20   def write(self, path: str, content: str) -> str:\n\
         \x20       \"\"\"Write the answer.\n\n\
         \x20       Args:\n\
         \x20           path: /answer.txt\n\
         \x20           content: the path of the file found\n\
         \x20       \"\"\"\n\
         \x20       return self._call('write', path=path, content=content)\n\
         \x20   def get_reward(self):\n\
         \x20       return self.reward\n\
         env = ToolFsEnv()\n\
         solved = 0\n\
         for seed in range(3):\n\
         \x20   task = env.reset(seed=seed, prompt='find it')\n\
         \x20   word = re.search(r'\"([^\"]+)\"', task).group(1)\n\
         \x20   hit = env.grep(pattern=word).splitlines()[0].split(':')[0]\n\
         \x20   env.write(path='/answer.txt', content=hit)\n\
         \x20   solved += env.get_reward() == 1.0\n\
         env.client.close()\n\
         print('solved', solved)",
        &[&server.port.to_string()],
    );
    assert_eq!(
        out,
        "tools ['ls', 'cat', 'grep', 'write'] ['pattern']\ncall -32603 3 True False -32602\nsolved 3"
    );
    assert_eq!(server.stop(), 0);
}

/// A silent session is closed after `--idle-timeout-s`; HTTP health,
/// metadata, schema and stateless reset answer; connections past the
/// server's bound (sessions and 64 more) are turned away at once with 503
/// and the server serves again when they go; bad setups are one-line
/// errors with exit 2.
#[test]
fn idle_sessions_close_and_bad_setups_are_usage_errors() {
    let mut server = Server::start(&[
        "--env",
        &path(&plugin("cartpole")),
        "--idle-timeout-s",
        "0.5",
        "--max-sessions",
        "1",
    ]);
    let out = client(
        "import sys, json, time, urllib.request\n\
         from websockets.sync.client import connect\n\
         base = f'127.0.0.1:{sys.argv[1]}'\n\
         get = lambda p: json.load(urllib.request.urlopen(f'http://{base}{p}'))\n\
         print(get('/health')['status'], get('/metadata')['name'], sorted(get('/schema')))\n\
         req = urllib.request.Request(f'http://{base}/reset', method='POST', data=b'{\"seed\": 3}')\n\
         print(len(json.load(urllib.request.urlopen(req))['observation']['state']))\n\
         with connect(f'ws://{base}/ws') as ws:\n\
         \x20   started = time.time()\n\
         \x20   m = json.loads(ws.recv(timeout=10))\n\
         \x20   print(m['data']['code'], 0.4 < time.time() - started < 5)\n\
         import socket, urllib.error\n\
         idle = [socket.create_connection(('127.0.0.1', int(sys.argv[1]))) for _ in range(70)]\n\
         time.sleep(0.5)\n\
         try:\n\
         \x20   urllib.request.urlopen(f'http://{base}/health', timeout=5)\n\
         \x20   print('served past the bound')\n\
         except urllib.error.HTTPError as e:\n\
         \x20   print(e.code)\n\
         for s in idle: s.close()\n\
         time.sleep(0.5)\n\
         print(get('/health')['status'])",
        &[&server.port.to_string()],
    );
    assert_eq!(
        out,
        "healthy cartpole ['action', 'observation', 'state']\n4\nSESSION_ERROR True\n503\nhealthy"
    );
    assert_eq!(server.stop(), 0);

    let missing = ludus(["serve", "--env", "/nonexistent/env.wasm", "--port", "0"]);
    assert_eq!(missing.code(), 2);
    assert_eq!(
        missing.stderr().trim().lines().count(),
        1,
        "{}",
        missing.stderr()
    );
    let bad = ludus([
        "serve",
        "--env",
        &path(&plugin("cartpole")),
        "--port",
        "0",
        "--max-sessions",
        "0",
    ]);
    assert_eq!(bad.code(), 2);
    assert!(bad.stderr().contains("--max-sessions"), "{}", bad.stderr());
}

/// `ludus serve --db postgres://...`: the sessions record into a local file
/// as they play, and the run lands in PostgreSQL when the server stops
/// (the local file is then removed).
#[test]
fn a_served_recording_lands_in_postgres_when_the_server_stops() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = crate::scale::database("serve");
    let mut server = Server::start_in(
        dir.path(),
        &["--env", &path(&plugin("cartpole")), "--db", &url],
    );
    let out = client(
        "import sys\n\
         from openenv.core import GenericEnvClient\n\
         with GenericEnvClient(base_url=f'ws://127.0.0.1:{sys.argv[1]}').sync() as env:\n\
         \x20   r = env.reset(seed=5)\n\
         \x20   steps = 0\n\
         \x20   while not r.done:\n\
         \x20       r = env.step({'Discrete': 0})\n\
         \x20       steps += 1\n\
         print(steps)\n",
        &[&server.port.to_string()],
    );
    let steps: i64 = out.trim().parse().expect("steps");
    assert_eq!(server.stop(), 0);
    let mut sql = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
    let (episodes, length): (i64, i64) = sql
        .query_one(
            "SELECT COUNT(*), COALESCE(MAX(length), 0) FROM episodes",
            &[],
        )
        .map(|r| (r.get(0), r.get(1)))
        .expect("episodes");
    assert_eq!((episodes, length), (1, steps));
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .expect("dir")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "the local recording was removed: {left:?}");
}
