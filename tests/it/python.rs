//! The `ludus` Python package (`python/`): wasm envs as Gymnasium envs,
//! driven by the project's Python, with the extension built alongside these
//! tests.

use std::path::Path;

use crate::support::{ludus, plugin, root, run_json};

/// The package as these tests import it: its Python source beside the
/// extension cargo built with them (a dev-dependency of this test binary,
/// so it is never stale and shares the tests' build) and the example envs.
fn package() -> &'static Path {
    static DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let exe = std::env::current_exe().expect("test binary");
        let built = exe.with_file_name("lib_ludus.so");
        // Under the build's own temporary folder, one per test process; the
        // folders of processes that have ended are removed.
        let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
        if let Ok(entries) = std::fs::read_dir(base) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if let Some(pid) = name.strip_prefix("python-package-")
                    && !Path::new("/proc").join(pid).exists()
                {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        let dir = base.join(format!("python-package-{}", std::process::id()));
        let pkg = dir.join("ludus");
        std::fs::create_dir_all(&pkg).expect("package dir");
        std::fs::copy(
            root().join("python/python/ludus/__init__.py"),
            pkg.join("__init__.py"),
        )
        .expect("package source");
        std::fs::copy(&built, pkg.join("_ludus.abi3.so"))
            .unwrap_or_else(|e| panic!("{}: {e}", built.display()));
        // The example envs, where a wheel ships them.
        std::fs::create_dir_all(pkg.join("envs")).expect("envs dir");
        for name in ["cartpole", "maze", "desktop", "tool_fs", "word_echo"] {
            std::fs::copy(plugin(name), pkg.join("envs").join(format!("{name}.wasm")))
                .expect("example env");
        }
        dir
    })
}

/// Runs `code` with the project's Python importing the package, `args`
/// after it; its stdout.
fn python(code: &str, args: &[&str]) -> String {
    crate::support::python(code, args, Some(package()))
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
         print(len(sys.argv) - 1, type(env.unwrapped).__name__, obs.shape, env.action_space)\n\
         for name in ludus.EXAMPLES:\n\
         \x20   with warnings.catch_warnings():\n\
         \x20       warnings.simplefilter('error')\n\
         \x20       check_env(gymnasium.make(f'ludus/{name}-v0').unwrapped, skip_render_check=True)\n\
         print(gymnasium.make('ludus/CartPole-v0').reset(seed=1)[0].tolist() == obs.tolist())\n\
         by_path = gymnasium.make('ludus/Wasm-v0', path=sys.argv[1]).reset(seed=1)[0]\n\
         vec = gymnasium.make_vec('ludus/Wasm-v0', num_envs=2, path=sys.argv[1])\n\
         print(by_path.tolist() == obs.tolist(), vec.reset(seed=1)[0].shape)\n\
         try:\n\
         \x20   ludus.make()\n\
         except TypeError as e:\n\
         \x20   print(e)",
        &args,
    );
    assert_eq!(
        out,
        "5 LudusEnv (4,) Discrete(2)\nTrue\nTrue (2, 4)\ngive the env plugin's path once, as env= or path="
    );
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
    crate::support::export_jsonl(&db, &jsonl);
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

/// With `record=`, episodes played from Python are recorded as `ludus run`
/// records them: replaying a recorded run's actions from its seeds gives
/// episodes with the same digests, which `ludus debug` opens; a crash is
/// recorded as a crashed episode with its message.
#[test]
fn python_episodes_are_recorded_as_ludus_run_records_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (reference, played) = (dir.path().join("ref.db"), dir.path().join("py.db"));
    let run = run_json(
        &reference,
        "cartpole",
        "random_agent",
        &["--episodes", "2", "--seed", "9"],
    );
    let jsonl = dir.path().join("ref.jsonl");
    crate::support::export_jsonl(&reference, &jsonl);
    let run_id = python(
        "import sys, json, ludus\n\
         env = ludus.make(env=sys.argv[1], record=sys.argv[3])\n\
         for line in open(sys.argv[2]):\n\
         \x20   e = json.loads(line)\n\
         \x20   env.reset(seed=e['seed'])\n\
         \x20   for f in e['frames']:\n\
         \x20       env.step(f['action']['Discrete'])\n\
         env.close()\n\
         crashing = ludus.make(env=sys.argv[4], config='mode=panic,at=2', record=sys.argv[3])\n\
         crashing.reset(seed=1)\n\
         try:\n\
         \x20   for _ in range(5):\n\
         \x20       crashing.step(crashing.action_space.sample())\n\
         except ludus.PluginCrash:\n\
         \x20   pass\n\
         crashing.close()\n\
         print(env.run_id)",
        &[
            &path(&plugin("cartpole")),
            &path(&jsonl),
            &path(&played),
            &path(&plugin("hostile_env")),
        ],
    );
    let store = ludus_arena::Db::open_read_only(&played).expect("db");
    let episodes = store.episodes(&run_id).expect("episodes");
    let digests: Vec<String> = episodes.iter().filter_map(|e| e.digest.clone()).collect();
    let expected: Vec<String> = run["episodes"]
        .as_array()
        .expect("episodes")
        .iter()
        .map(|e| e["digest"].as_str().expect("digest").to_string())
        .collect();
    assert_eq!(digests, expected);
    let crashed: Vec<_> = store
        .runs()
        .expect("runs")
        .into_iter()
        .filter(|r| r.id != run_id)
        .flat_map(|r| store.episodes(&r.id).expect("episodes"))
        .collect();
    assert_eq!(crashed.len(), 1);
    assert_eq!(crashed[0].outcome, "crashed");
    assert!(
        crashed[0].error.as_deref().unwrap_or("").contains("panic"),
        "{:?}",
        crashed[0]
    );
    let debug = ludus([
        "debug",
        &path(&played),
        "--episode",
        &episodes[1].id.to_string(),
        "--break",
        "step == 3",
        "--json",
    ]);
    assert_eq!(debug.code(), 0, "{}", debug.stderr());
    assert!(debug.stdout().contains("\"hits\""), "{}", debug.stdout());
}

/// Recordings as tables: `ludus.open` lists runs and episodes as Arrow
/// tables (the digests `ludus run` reported) and yields an episode's frames
/// as dicts; `ludus.make_vec` steps copies of a plugin as a Gymnasium
/// vector env.
#[test]
fn recordings_read_as_tables_and_envs_vectorize() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("run.db");
    let run = run_json(
        &db,
        "cartpole",
        "random_agent",
        &["--episodes", "3", "--seed", "2"],
    );
    let out = python(
        "import sys, ludus, gymnasium\n\
         rec = ludus.open(sys.argv[1])\n\
         runs = rec.runs()\n\
         eps = rec.episodes(runs.column('run_id')[0].as_py())\n\
         frames = list(rec.frames(eps.column('episode')[0].as_py()))\n\
         assert len(frames) == eps.column('length')[0].as_py()\n\
         assert list(rec.episodes(as_='pandas')['digest']) == eps.column('digest').to_pylist()\n\
         assert all('observation' in f and 'action' in f for f in frames)\n\
         print(runs.num_rows, ' '.join(eps.column('digest').to_pylist()))\n\
         v = ludus.make_vec(sys.argv[2], num_envs=4)\n\
         assert isinstance(v, gymnasium.vector.VectorEnv)\n\
         obs, _ = v.reset(seed=1)\n\
         ends = 0\n\
         for _ in range(200):\n\
         \x20   obs, r, term, trunc, _ = v.step(v.action_space.sample())\n\
         \x20   ends += int(term.sum() + trunc.sum())\n\
         print(obs.shape, ends > 4)",
        &[&path(&db), &path(&plugin("cartpole"))],
    );
    let digests: Vec<&str> = run["episodes"]
        .as_array()
        .expect("episodes")
        .iter()
        .map(|e| e["digest"].as_str().expect("digest"))
        .collect();
    assert_eq!(out, format!("1 {}\n(4, 4) True", digests.join(" ")));
}

/// `make_vec` steps its copies through the contract's batched interface,
/// one call for all: each copy's observations, rewards and flags are those
/// of a single `ludus.make` env stepped with the same seed and actions, and
/// a copy that ends starts its next episode in the same step (Gymnasium's
/// `SAME_STEP` autoreset), from the next seed of its sequence.
#[test]
fn make_vec_steps_each_copy_as_a_single_env_and_resets_in_the_same_step() {
    let out = python(
        "import sys, numpy as np, gymnasium, ludus\n\
         from gymnasium.vector import AutoresetMode\n\
         M = (1 << 64) - 1\n\
         def next_seed(seed):\n\
         \x20   # The SDK's next seed: one splitmix64 draw.\n\
         \x20   z = ((seed ^ 0xA0761D6478BD642F) + 0x9E3779B97F4A7C15) & M\n\
         \x20   z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M\n\
         \x20   z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M\n\
         \x20   return z ^ (z >> 31)\n\
         n = 5\n\
         v = ludus.make_vec(sys.argv[1], num_envs=n)\n\
         assert type(v).__name__ == 'LudusVectorEnv', type(v)\n\
         assert v.metadata['autoreset_mode'] == AutoresetMode.SAME_STEP\n\
         assert v.observation_space.shape == (n, 4) and v.action_space.shape == (n,)\n\
         rng = np.random.default_rng(0)\n\
         actions = rng.integers(0, 2, size=(400, n))\n\
         obs, _ = v.reset(seed=40)\n\
         singles = [ludus.make(sys.argv[1]) for _ in range(n)]\n\
         seeds = [40 + i for i in range(n)]\n\
         for i, e in enumerate(singles):\n\
         \x20   o, _ = e.reset(seed=seeds[i])\n\
         \x20   assert np.array_equal(o, obs[i]), (i, o, obs[i])\n\
         ends = 0\n\
         for t in range(400):\n\
         \x20   obs, rew, term, trunc, info = v.step(actions[t])\n\
         \x20   assert obs.dtype == np.float32 and rew.shape == (n,) and info == {}\n\
         \x20   for i, e in enumerate(singles):\n\
         \x20       o, r, te, tr, _ = e.step(int(actions[t][i]))\n\
         \x20       assert (r, te, tr) == (rew[i], term[i], trunc[i]), (t, i)\n\
         \x20       if te or tr:\n\
         \x20           ends += 1\n\
         \x20           seeds[i] = next_seed(seeds[i])\n\
         \x20           o, _ = e.reset(seed=seeds[i])\n\
         \x20       assert np.array_equal(o, obs[i]), (t, i, o, obs[i])\n\
         print('ends', ends > 20)\n\
         g = gymnasium.make_vec('ludus/CartPole-v0', num_envs=3)\n\
         print(type(g).__name__, g.reset(seed=1)[0].shape)",
        &[&path(&plugin("cartpole"))],
    );
    assert_eq!(out, "ends True\nLudusVectorEnv (3, 4)");
}

/// A Python PPO (the CleanRL-style `python/examples/ppo_cartpole.py`, torch
/// only) trains CartPole through `ludus.make_vec` to a mean return of 475,
/// its greedy policy then averages 475 over ten recorded episodes, and
/// `ludus debug` opens them.
#[test]
fn a_python_ppo_trains_cartpole_through_make_vec() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("eval.db");
    let script = root().join("python/examples/ppo_cartpole.py");
    let code = format!(
        "import runpy, sys\n\
         sys.argv = [{:?}] + sys.argv[1:]\n\
         try:\n\
         \x20   runpy.run_path(sys.argv[0], run_name='__main__')\n\
         except SystemExit as e:\n\
         \x20   assert e.code in (0, None), f'exit {{e.code}}'",
        path(&script)
    );
    let out = python(&code, &["--record", &path(&db)]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    let number = |line: &str| -> f64 {
        line.split_whitespace()
            .last()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no figure in {line}"))
    };
    assert!(number(lines[0]) >= 475.0, "{out}");
    assert!(number(lines[1]) >= 475.0, "{out}");
    let store = ludus_arena::Db::open_read_only(&db).expect("db");
    let runs = store.runs().expect("runs");
    assert_eq!(runs.len(), 1);
    let episodes = store.episodes(&runs[0].id).expect("episodes");
    assert_eq!(episodes.len(), 10);
    let mean = episodes.iter().map(|e| e.return_).sum::<f64>() / 10.0;
    assert!(mean >= 475.0, "recorded mean return {mean}");
    let debug = ludus([
        "debug",
        &path(&db),
        "--episode",
        &episodes[0].id.to_string(),
        "--break",
        "step == 400",
        "--json",
    ]);
    assert_eq!(debug.code(), 0, "{}", debug.stderr());
    assert!(debug.stdout().contains("\"hits\""), "{}", debug.stdout());
    // Python chose the actions: there is no agent to fork with.
    let fork = ludus([
        "fork",
        &path(&db),
        "--episode",
        &episodes[0].id.to_string(),
        "--frame",
        "2",
    ]);
    let err = fork.fails_with(2);
    assert!(
        err.contains("played from Python") && err.lines().count() == 1,
        "{err}"
    );
}

/// The wheel `scripts/build-wheel.sh` makes installs into a fresh venv with
/// nothing else of this checkout (its dependencies from the wheelhouse
/// scripts/setup.sh filled, no network) and works there: the example envs
/// it ships are registered, pass Gymnasium's checker and vectorize.
#[test]
fn the_wheel_installs_into_a_fresh_venv() {
    // The other tests' copy of the extension, made before the wheel's build
    // writes the library again.
    package();
    let dir = tempfile::tempdir().expect("tempdir");
    let dist = dir.path().join("dist");
    let build = std::process::Command::new("bash")
        .arg(root().join("scripts/build-wheel.sh"))
        .arg(&dist)
        .env("WHEEL_PROFILE", "dev")
        .output()
        .expect("build-wheel.sh");
    assert!(
        build.status.success(),
        "{}",
        String::from_utf8_lossy(&build.stderr)
    );
    let wheel = std::fs::read_dir(&dist)
        .expect("dist")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .expect("a wheel");
    let venv = dir.path().join("venv");
    let made = std::process::Command::new(root().join(".venv/bin/python"))
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .expect("venv");
    assert!(made.success());
    let install = std::process::Command::new(venv.join("bin/python"))
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-index",
            "--find-links",
        ])
        .arg(root().join(".venv/wheelhouse"))
        .arg(&wheel)
        .output()
        .expect("pip");
    assert!(
        install.status.success(),
        "{}",
        String::from_utf8_lossy(&install.stderr)
    );
    let out = std::process::Command::new(venv.join("bin/python"))
        .arg("-c")
        .arg(
            "import sys, warnings, gymnasium, ludus\n\
             from gymnasium.utils.env_checker import check_env\n\
             assert ludus.__file__.startswith(sys.prefix), ludus.__file__\n\
             for name in ludus.EXAMPLES:\n\
             \x20   with warnings.catch_warnings():\n\
             \x20       warnings.simplefilter('error')\n\
             \x20       check_env(gymnasium.make(f'ludus/{name}-v0').unwrapped, skip_render_check=True)\n\
             v = gymnasium.make_vec('ludus/CartPole-v0', num_envs=4)\n\
             obs, _ = v.reset(seed=9)\n\
             print(type(v).__name__, obs.shape, sorted(m for m in sys.modules if m.split('.')[0] in ('pandas', 'pyarrow', 'torch')))",
        )
        .current_dir(dir.path())
        .env_remove("PYTHONPATH")
        .env_remove("LUDUS_PLUGINS")
        .output()
        .expect("python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "LudusVectorEnv (4, 4) []"
    );
}
