//! Plugins in Python and JavaScript: the example and test plugins built from
//! source with `ludus build` (componentize-py, componentize-js), mixed with
//! Rust plugins in real runs of the real binary; determinism, crash
//! containment, and projects scaffolded by `ludus new` in each language.
//! Needs the tools `scripts/setup.sh` installs.

use crate::support;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use support::*;

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

/// `ludus build DIR`, asserting success; the printed .wasm path.
fn build(dir: &Path) -> PathBuf {
    let r = ludus(["build".as_ref(), dir.as_os_str()]);
    r.ok();
    let wasm = PathBuf::from(r.stdout().trim());
    assert!(wasm.is_file(), "ludus build printed {}", wasm.display());
    wasm
}

struct Built {
    py_cartpole: PathBuf,
    py_reward: PathBuf,
    py_hostile: PathBuf,
    js_agent: PathBuf,
    js_hostile: PathBuf,
}

/// Builds the Python and JavaScript plugins once per test process (two at a
/// time), and the Rust ones.
fn built() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(|| {
        plugins();
        let p = root().join("plugins");
        let dirs = [
            p.join("examples/py-cartpole"),
            p.join("examples/py-balance-reward"),
            p.join("tests/py-hostile-env"),
            p.join("examples/js-balance-agent"),
            p.join("tests/js-hostile-agent"),
        ];
        let mut out: Vec<PathBuf> = Vec::new();
        for pair in dirs.chunks(2) {
            let wasms: Vec<PathBuf> = std::thread::scope(|s| {
                let hs: Vec<_> = pair.iter().map(|d| s.spawn(move || build(d))).collect();
                hs.into_iter()
                    .map(|h| h.join().expect("build thread"))
                    .collect()
            });
            out.extend(wasms);
        }
        let b = Built {
            py_cartpole: out[0].clone(),
            py_reward: out[1].clone(),
            py_hostile: out[2].clone(),
            js_agent: out[3].clone(),
            js_hostile: out[4].clone(),
        };
        // Load each once, so the tests (running in parallel) find them in the
        // compile cache instead of each compiling the same megabytes.
        let dir = tmp();
        let db = dir.path().join("warm.db");
        run_paths(
            &db,
            &b.py_cartpole,
            &b.js_agent,
            &[
                "--episodes",
                "1",
                "--reward",
                &b.py_reward.display().to_string(),
            ],
        );
        run_paths(&db, &b.py_hostile, &b.js_hostile, &["--episodes", "1"]);
        b
    })
}

fn run_paths(db: &Path, env: &Path, agent: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args: Vec<String> = vec![
        "run".into(),
        "--env".into(),
        env.display().to_string(),
        "--agent".into(),
        agent.display().to_string(),
        "--db".into(),
        db.display().to_string(),
        "--json".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    ludus(&args).json()
}

fn episodes(report: &serde_json::Value) -> &Vec<serde_json::Value> {
    report["episodes"].as_array().expect("episodes")
}

#[test]
fn python_env_with_rust_agent_same_seed_same_digests_across_runs_and_jobs() {
    let b = built();
    let dir = tmp();
    let db = dir.path().join("py.db");
    let agent = plugin("random_agent");
    let with = |seed: &str, jobs: &str| {
        run_paths(
            &db,
            &b.py_cartpole,
            &agent,
            &["--episodes", "6", "--seed", seed, "--jobs", jobs],
        )
    };
    let a = with("5", "1");
    let again = with("5", "1");
    let jobs = with("5", "3");
    assert_eq!(digests(&a), digests(&again), "same seed twice");
    assert_eq!(digests(&a), digests(&jobs), "--jobs 1 vs --jobs 3");
    assert_ne!(digests(&a), digests(&with("6", "2")), "another seed");
    for e in episodes(&a) {
        assert_eq!(e["outcome"], "terminated", "{e}");
        let len = e["length"].as_u64().expect("length");
        // A random agent keeps CartPole up for about 10-60 steps.
        assert!((5..200).contains(&len), "{e}");
        assert_eq!(e["return"].as_f64(), Some(len as f64), "{e}");
    }
}

#[test]
fn python_cartpole_starts_where_the_rust_one_does() {
    // Both draw the initial state from the same SplitMix64 stream, so the
    // first frame's observation is the same in f32.
    let b = built();
    let dir = tmp();
    let db = dir.path().join("same.db");
    let agent = plugin("random_agent");
    let py = run_paths(
        &db,
        &b.py_cartpole,
        &agent,
        &["--episodes", "3", "--seed", "9"],
    );
    let rs = run_paths(
        &db,
        &plugin("cartpole"),
        &agent,
        &["--episodes", "3", "--seed", "9"],
    );
    let lengths = |r: &serde_json::Value| -> Vec<u64> {
        episodes(r)
            .iter()
            .map(|e| e["length"].as_u64().unwrap())
            .collect()
    };
    // f64 physics in both; the observations agree, so the same actions
    // give the same episode lengths.
    assert_eq!(lengths(&py), lengths(&rs));
}

#[test]
fn rust_env_with_js_agent_and_python_reward() {
    let b = built();
    let dir = tmp();
    let reward = b.py_reward.display().to_string();
    // A database per run: the agent keeps a count in `/agent` memory, which
    // persists across the runs of one database.
    let runs = std::sync::atomic::AtomicUsize::new(0);
    let with = |jobs: &str| {
        let n = runs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        run_paths(
            &dir.path().join(format!("mixed-{n}.db")),
            &plugin("cartpole"),
            &b.js_agent,
            &[
                "--episodes",
                "4",
                "--seed",
                "11",
                "--jobs",
                jobs,
                "--reward",
                &reward,
                "--agent-config",
                "epsilon=0.05",
            ],
        )
    };
    let a = with("1");
    let c = with("2");
    assert_eq!(digests(&a), digests(&c), "--jobs 1 vs --jobs 2");
    assert_eq!(digests(&a), digests(&with("1")), "same seed twice");
    let eps = episodes(&a);
    assert_eq!(eps.len(), 4);
    let mean_len: f64 = eps
        .iter()
        .map(|e| e["length"].as_f64().unwrap())
        .sum::<f64>()
        / eps.len() as f64;
    // The JS heuristic balances far longer than random play (about 20 steps).
    assert!(mean_len > 100.0, "mean length {mean_len}: {a}");
    for e in eps {
        assert_ne!(e["outcome"], "crashed", "{e}");
        let (ret, len) = (e["return"].as_f64().unwrap(), e["length"].as_f64().unwrap());
        // The Python reward scores uprightness in [0, 1] per step.
        assert!(
            ret > 0.0 && ret < len,
            "shaped return {ret} over {len} steps: {e}"
        );
    }
    // A config the JS agent rejects is a clear load error, exit 2.
    let bad = ludus([
        "run",
        "--env",
        &plugin("cartpole").display().to_string(),
        "--agent",
        &b.js_agent.display().to_string(),
        "--agent-config",
        "epsilon=2",
        "--db",
        &dir.path().join("bad.db").display().to_string(),
    ]);
    let err = bad.fails_with(2);
    assert!(err.contains("epsilon"), "{err}");
}

#[test]
fn python_exception_crashes_the_episode_with_its_traceback() {
    let b = built();
    let dir = tmp();
    let db = dir.path().join("pyraise.db");
    let r = run_paths(
        &db,
        &b.py_hostile,
        &plugin("random_agent"),
        &["--episodes", "2", "--env-config", "mode=raise"],
    );
    for e in episodes(&r) {
        assert_eq!(e["outcome"], "crashed", "{e}");
        assert_eq!(e["length"], 2, "{e}");
        let msg = e["error"].as_str().expect("error");
        for part in [
            "crashed in `step`",
            "Traceback",
            "check_pressure",
            "RuntimeError: pressure sensor failed at step 3",
        ] {
            assert!(msg.contains(part), "missing `{part}` in: {msg}");
        }
    }
    // The same plugin behaving runs to its end.
    let ok = run_paths(
        &db,
        &b.py_hostile,
        &plugin("random_agent"),
        &["--episodes", "1", "--env-config", "mode=ok"],
    );
    assert_eq!(episodes(&ok)[0]["outcome"], "truncated", "{ok}");
}

#[test]
fn js_error_crashes_the_episode_with_its_stack() {
    let b = built();
    let dir = tmp();
    let db = dir.path().join("jsthrow.db");
    let r = run_paths(
        &db,
        &plugin("cartpole"),
        &b.js_hostile,
        &["--episodes", "2", "--agent-config", "mode=throw"],
    );
    for e in episodes(&r) {
        assert_eq!(e["outcome"], "crashed", "{e}");
        let msg = e["error"].as_str().expect("error");
        for part in [
            "crashed in `act`",
            "TypeError: sensor offline at step 3",
            "readSensor",
        ] {
            assert!(msg.contains(part), "missing `{part}` in: {msg}");
        }
    }
}

#[test]
fn loops_and_memory_bombs_in_python_and_js_are_contained() {
    let b = built();
    let dir = tmp();
    let db = dir.path().join("hostile.db");
    let cases: [(&Path, &Path, &str, &[&str], &str); 4] = [
        (
            &b.py_hostile,
            &plugin("random_agent"),
            "--env-config=mode=loop",
            &["--limit", "env.fuel=300000000"],
            "compute budget exhausted",
        ),
        (
            &b.py_hostile,
            &plugin("random_agent"),
            "--env-config=mode=bomb",
            &["--limit", "env.memory-mb=128"],
            "memory cap exceeded",
        ),
        (
            &plugin("cartpole"),
            &b.js_hostile,
            "--agent-config=mode=loop",
            &["--limit", "agent.fuel=300000000"],
            "compute budget exhausted",
        ),
        (
            &plugin("cartpole"),
            &b.js_hostile,
            "--agent-config=mode=bomb",
            &["--limit", "agent.memory-mb=160"],
            "memory cap exceeded",
        ),
    ];
    for (env, agent, config, limits, expect) in cases {
        let mut extra = vec!["--episodes", "1", config];
        extra.extend_from_slice(limits);
        let r = run_paths(&db, env, agent, &extra);
        let e = &episodes(&r)[0];
        assert_eq!(e["outcome"], "crashed", "{config}: {e}");
        let msg = e["error"].as_str().expect("error");
        assert!(
            msg.contains(expect),
            "{config}: expected `{expect}` in: {msg}"
        );
    }
    // The host is fine afterwards: a normal mixed run in the same database.
    let ok = run_paths(
        &db,
        &plugin("cartpole"),
        &b.js_hostile,
        &["--episodes", "1", "--agent-config", "mode=ok"],
    );
    assert_ne!(episodes(&ok)[0]["outcome"], "crashed", "{ok}");
}

#[test]
fn first_load_says_it_is_compiling_and_later_loads_are_quiet() {
    // The Rust CartPole (the message does not depend on the language, and it
    // compiles in milliseconds instead of seconds).
    plugins();
    let dir = tmp();
    let cache = dir.path().join("cache");
    let run = || {
        support::command()
            .args(["run", "--env"])
            .arg(plugin("cartpole"))
            .arg("--agent")
            .arg(plugin("random_agent"))
            .args(["--episodes", "1", "--json", "--db"])
            .arg(dir.path().join("c.db"))
            .env("LUDUS_CACHE_DIR", &cache)
            .env_remove("LUDUS_LOG")
            .output()
            .expect("run ludus")
    };
    let first = run();
    assert!(first.status.success());
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert!(
        stderr.contains("compiling cartpole.wasm for the first time"),
        "{stderr}"
    );
    let second = run();
    assert!(second.status.success());
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(!stderr.contains("compiling"), "{stderr}");
}

#[test]
fn scaffolded_projects_in_each_language_build_and_run_together() {
    plugins();
    let dir = tmp();
    let d = dir.path().display().to_string();
    for (kind, name, lang) in [
        ("env", "walk-env", "rust"),
        ("agent", "rand-agent", "python"),
        ("reward", "win-reward", "js"),
    ] {
        ludus(["new", kind, name, "--lang", lang, "--dir", &d]).ok();
    }
    // Reuse the locked dependency versions (and so the compiled ones) of the
    // plugins workspace.
    std::fs::copy(
        root().join("plugins/Cargo.lock"),
        dir.path().join("walk-env/Cargo.lock"),
    )
    .expect("copy Cargo.lock");
    let env = build(&dir.path().join("walk-env"));
    let agent = build(&dir.path().join("rand-agent"));
    let reward = build(&dir.path().join("win-reward"));
    let db = dir.path().join("new.db");
    let reward_arg = reward.display().to_string();
    let r = run_paths(
        &db,
        &env,
        &agent,
        &["--episodes", "5", "--seed", "2", "--reward", &reward_arg],
    );
    let eps = episodes(&r);
    assert_eq!(eps.len(), 5);
    for e in eps {
        assert!(
            e["outcome"] == "terminated" || e["outcome"] == "truncated",
            "{e}"
        );
        // The reward plugin's score: 1 when the walk reached the goal.
        let ret = e["return"].as_f64().unwrap();
        assert!(ret == 0.0 || ret == 1.0, "{e}");
    }
    // The Python agent counted its episodes in `/agent` memory (each episode
    // sees the memory as the run started, so each wrote 1).
    let mem = ludus([
        "memory".as_ref(),
        "list".as_ref(),
        db.as_os_str(),
        "/agent".as_ref(),
    ]);
    mem.ok();
    assert!(
        mem.stdout().contains("/agent/episodes = 1"),
        "{}",
        mem.stdout()
    );
}

#[test]
fn new_and_build_reject_bad_input_with_exit_2() {
    let dir = tmp();
    let d = dir.path().display().to_string();
    let err = ludus(["new", "env", "Bad Name", "--dir", &d]).fails_with(2);
    assert!(err.contains("invalid plugin name"), "{err}");
    ludus(["new", "env", "twice", "--lang", "python", "--dir", &d]).ok();
    let err = ludus(["new", "env", "twice", "--lang", "python", "--dir", &d]).fails_with(2);
    assert!(err.contains("already exists"), "{err}");
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let err = ludus(["build".as_ref(), empty.as_os_str()]).fails_with(2);
    assert!(err.contains("ludus new"), "{err}");
    let noworld = dir.path().join("noworld");
    std::fs::create_dir(&noworld).unwrap();
    std::fs::write(noworld.join("pyproject.toml"), "[project]\nname = \"x\"\n").unwrap();
    let err = ludus(["build".as_ref(), noworld.as_os_str()]).fails_with(2);
    assert!(err.contains("[tool.ludus]"), "{err}");
    // A Python error in the plugin's module is a build failure naming it.
    let broken = dir.path().join("twice");
    std::fs::write(
        broken.join("app.py"),
        "import ludus_sdk\nthis is not python\n",
    )
    .unwrap();
    let err = ludus(["build".as_ref(), broken.as_os_str()]).fails_with(2);
    assert!(err.contains("componentize-py"), "{err}");
}

#[test]
fn python_batched_cartpole_matches_one_env_per_call() {
    // The SDK's fast path (`reset_flat`, `step_flat`) must see what single
    // stepping sees.
    let b = built();
    let (ends, truncations) =
        assert_batched_cartpole_matches_single(&b.py_cartpole, &[3, 77, 1234, u64::MAX], 600);
    assert!(ends >= 10, "only {ends} episodes ended");
    assert!(truncations >= 1, "no episode reached its step limit");
}

/// A Python env with both paths and a fault on demand, for the batched
/// interface's tests. Config: `flat=no` opts an instance out of the fast
/// path, `fail=yes` raises at the third step of an episode.
const FLAKY_ENV: &str = r#"
import ludus_sdk as ludus


def overheat(steps):
    raise RuntimeError(f"overheated at step {steps}")


class Flaky(ludus.Env):
    def __init__(self, config):
        cfg = ludus.parse_config(config)
        if cfg.get("flat", "yes") == "no":
            self.reset_flat = self.step_flat = None
        self.fail = cfg.get("fail", "no") == "yes"
        self.position = self.steps = 0

    def info(self):
        return ludus.EnvInfo(
            name="flaky", version="0.1.0", description="Walks; fails on demand.",
            observation_space=[ludus.vector_space("state", [0.0, 0.0], [9.0, 9.0])],
            action_space=ludus.discrete_action_space(3), max_steps=7, vector_size=2,
        )

    def start(self, seed):
        self.position = ludus.Rng(seed).below(5)
        self.steps = 0
        return [float(self.position), 0.0]

    def advance(self, action):
        self.steps += 1
        if self.fail and self.steps == 3:
            overheat(self.steps)
        self.position = max(0, self.position + action - 1)
        return [float(self.position), float(self.steps)], 0.5 * action, self.position >= 6, False

    def reset(self, seed):
        return ludus.ResetResult(ludus.vector_observation("state", self.start(seed)), "", "{}")

    def step(self, action):
        a = action.value if isinstance(action, ludus.ActionDiscrete) else 1
        obs, reward, terminated, truncated = self.advance(a)
        return ludus.StepResult(ludus.vector_observation("state", obs), reward, terminated, truncated, "")

    def reset_flat(self, seed):
        return self.start(seed)

    def step_flat(self, action):
        return self.advance(action)


EnvPlugin = ludus.export_env(Flaky)
"#;

fn flaky_env(dir: &Path) -> PathBuf {
    let project = dir.join("flaky");
    std::fs::create_dir_all(&project).unwrap();
    std::fs::write(
        project.join("pyproject.toml"),
        "[project]\nname = \"flaky\"\n\n[tool.ludus]\nworld = \"env\"\nmodule = \"app\"\n",
    )
    .unwrap();
    std::fs::write(project.join("app.py"), FLAKY_ENV).unwrap();
    build(&project)
}

#[test]
fn python_batched_fast_and_general_paths_agree_and_exceptions_crash_with_the_traceback() {
    use ludus_arena::{Limits, Plugin, PluginKind};
    let dir = tmp();
    let wasm = flaky_env(dir.path());
    let p = Plugin::load(&wasm, PluginKind::Env, Limits::DEFAULT).unwrap();
    let seeds: Vec<u64> = (0..6).collect();
    let stepped = |config: &str| {
        let mut env = p.env(0).unwrap();
        env.init(config).unwrap().unwrap();
        let mut out = vec![env.batch_reset(&seeds).unwrap().unwrap()];
        for step in 0..40usize {
            let actions: Vec<f32> = (0..seeds.len())
                .map(|i| [2.0, 1.0, 2.0, 0.0, -1.0][(step + i) % 5])
                .collect();
            let r = env.batch_step(&actions).unwrap().unwrap();
            out.push(r.observations);
            out.push(r.rewards);
            out.push(r.flags.iter().map(|&f| f32::from(f)).collect());
        }
        out
    };
    let fast = stepped("");
    let general = stepped("flat=no");
    assert_eq!(fast.len(), general.len());
    for (k, (f, g)) in fast.iter().zip(&general).enumerate() {
        // 0: the reset; then observations, rewards and flags per step.
        assert_eq!(f, g, "fast path vs general path, item {k}");
    }
    let flags: Vec<f32> = fast.iter().skip(3).step_by(3).flatten().copied().collect();
    assert!(flags.contains(&1.0), "no copy terminated");
    assert!(flags.contains(&2.0), "no copy was truncated at max_steps");

    // An exception in either path crashes the call with its traceback.
    for (config, frame) in [
        ("fail=yes", "in step_flat /"),
        ("fail=yes,flat=no", "in step /"),
    ] {
        let mut env = p.env(0).unwrap();
        env.init(config).unwrap().unwrap();
        env.batch_reset(&seeds).unwrap().unwrap();
        let actions = vec![1.0; seeds.len()];
        let crash = (0..3)
            .find_map(|_| env.batch_step(&actions).err())
            .unwrap_or_else(|| panic!("{config}: no crash in three steps"));
        let msg = crash.to_string();
        for part in [
            "crashed in `batch-step`",
            "Python exception in `batch-step`",
            "overheat",
            "RuntimeError: overheated at step 3",
            frame,
        ] {
            assert!(msg.contains(part), "{config}: missing `{part}` in: {msg}");
        }
    }
}
