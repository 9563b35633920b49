//! The `ludus` Python package (`python/`, built into `.venv` by
//! `scripts/setup.sh`): wasm envs as Gymnasium envs, driven by the
//! project's Python.

use std::path::Path;
use std::process::Command;

use crate::support::{ludus, plugin, root, run_json};

/// Runs `code` with the project's Python, `args` after it; its stdout.
fn python(code: &str, args: &[&str]) -> String {
    let out = Command::new(root().join(".venv/bin/python"))
        .arg("-c")
        .arg(code)
        .args(args)
        .output()
        .expect("python");
    assert!(
        out.status.success(),
        "{}\n(the package is built by scripts/setup.sh)",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// Every example env passes Gymnasium's own checker (spaces, seeding,
/// observations inside their spaces, the step API), and registration
/// makes any plugin a `gymnasium.make` id.
#[test]
fn every_example_env_passes_gymnasiums_checker() {
    let envs = ["cartpole", "maze", "word_echo", "tool_fs", "desktop"];
    let paths: Vec<String> = envs.iter().map(|e| path(&plugin(e))).collect();
    let args: Vec<&str> = paths.iter().map(String::as_str).collect();
    let out = python(
        "import sys, warnings, gymnasium, ludus\n\
         from gymnasium.utils.env_checker import check_env\n\
         for p in sys.argv[1:]:\n\
         \x20   with warnings.catch_warnings():\n\
         \x20       warnings.simplefilter('error')\n\
         \x20       check_env(ludus.make(env=p), skip_render_check=True)\n\
         env = gymnasium.make('ludus/Wasm-v0', env=sys.argv[1])\n\
         obs, info = env.reset(seed=1)\n\
         print(len(sys.argv) - 1, type(env.unwrapped).__name__, obs.shape, env.action_space)",
        &args,
    );
    assert_eq!(out, "5 LudusEnv (4,) Discrete(2)");
}

/// The same seed gives the observations `ludus run` records: episodes of a
/// recorded run, reset in Python with their seeds and stepped with their
/// recorded actions, give the recorded frames.
#[test]
fn python_episodes_match_ludus_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("run.db");
    run_json(
        &db,
        "cartpole",
        "random_agent",
        &["--episodes", "2", "--seed", "9"],
    );
    let jsonl = dir.path().join("run.jsonl");
    let export = ludus([
        "export",
        &path(&db),
        "--format",
        "jsonl",
        "--out",
        &path(&jsonl),
    ]);
    assert_eq!(export.code(), 0, "{}", export.stderr());
    let out = python(
        "import sys, json, numpy as np, ludus\n\
         env = ludus.make(env=sys.argv[1])\n\
         checked = 0\n\
         for line in open(sys.argv[2]):\n\
         \x20   e = json.loads(line)\n\
         \x20   obs, _ = env.reset(seed=e['seed'])\n\
         \x20   for f in e['frames']:\n\
         \x20       assert np.array_equal(obs, np.array(f['observation']['state'], dtype=np.float32)), (obs, f)\n\
         \x20       obs, reward, terminated, truncated, _ = env.step(f['action']['Discrete'])\n\
         \x20       assert reward == f['reward'] and terminated == f['terminated'] and truncated == f['truncated']\n\
         \x20       checked += 1\n\
         print(checked)",
        &[&path(&plugin("cartpole")), &path(&jsonl)],
    );
    let frames: u64 = out.parse().expect("count");
    assert!(frames > 10, "{out}");
}

/// A plugin that crashes raises `ludus.PluginCrash` with its message; the
/// env then needs a reset, and a bad config is a `ValueError`.
#[test]
fn a_crashing_plugin_raises_a_python_exception() {
    let out = python(
        "import sys, ludus\n\
         env = ludus.make(env=sys.argv[1], config='mode=panic,at=2')\n\
         env.reset(seed=1)\n\
         try:\n\
         \x20   for _ in range(5):\n\
         \x20       env.step(env.action_space.sample())\n\
         \x20   print('no crash')\n\
         except ludus.PluginCrash as e:\n\
         \x20   print('crash', 'panic' in str(e).lower())\n\
         try:\n\
         \x20   env.step(0)\n\
         except ValueError as e:\n\
         \x20   print('then', 'reset' in str(e))\n\
         try:\n\
         \x20   ludus.make(env=sys.argv[1], config='mode=nonsense')\n\
         except ValueError as e:\n\
         \x20   print('config', 'unknown mode' in str(e))",
        &[&path(&plugin("hostile_env"))],
    );
    assert_eq!(out, "crash True\nthen True\nconfig True");
}
