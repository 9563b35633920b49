//! A hermetic harness: real plugins built from plugins/, the real `ludus`
//! binary, a fresh temporary directory per test.
//!
//! Every `ludus` a test runs (through [`command`]) starts in that test's own
//! temporary directory, with its own compile cache there (`LUDUS_CACHE_DIR`)
//! and none of the parent's `LUDUS_*` variables. Python and JavaScript plugins
//! take seconds to compile, so the harness keeps one warm cache of compiled
//! artifacts and hard-links (or copies) it into each test's cache before a
//! run; what a run compiles goes back to it when the test ends. In-process
//! APIs compile into the warm cache itself ([`warm_cache`] sets it once).

pub mod models;

use std::cell::OnceCell;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Builds every plugin once per test process and returns the folder of .wasm files.
pub fn plugins() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    warm_cache();
    DIR.get_or_init(|| {
        let script = root().join("scripts/build-plugins.sh");
        let out = Command::new("bash")
            .arg(&script)
            .output()
            .expect("run build-plugins.sh");
        assert!(
            out.status.success(),
            "building plugins failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        root().join("plugins/target/wasm32-wasip2/release")
    })
}

pub fn plugin(name: &str) -> PathBuf {
    plugins().join(format!("{name}.wasm"))
}

pub struct Run {
    pub args: Vec<String>,
    pub out: Output,
}

impl Run {
    pub fn code(&self) -> i32 {
        self.out.status.code().unwrap_or(-1)
    }
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out.stdout).into_owned()
    }
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.out.stderr).into_owned()
    }
    fn describe(&self) -> String {
        format!(
            "command: ludus {}\nexit: {:?}\nstdout:\n{}\nstderr:\n{}",
            self.args.join(" "),
            self.out.status.code(),
            self.stdout(),
            self.stderr()
        )
    }
    /// Asserts success and returns stdout parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        assert_eq!(self.code(), 0, "{}", self.describe());
        serde_json::from_str(&self.stdout())
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.describe()))
    }
    /// Asserts success.
    pub fn ok(&self) {
        assert_eq!(self.code(), 0, "{}", self.describe());
    }
    /// Asserts the exit code and returns stderr, less the notices that a
    /// plugin is being compiled for the first time (whether they appear
    /// depends on what other tests already put in the compile cache).
    pub fn fails_with(&self, code: i32) -> String {
        assert_eq!(self.code(), code, "{}", self.describe());
        without_compile_notices(&self.stderr())
    }
}

/// `stderr` less the notices that a plugin is being compiled for the first
/// time: whether they appear depends on what other tests already put in the
/// compile cache (a test run alone on a cold cache sees them).
pub fn without_compile_notices(stderr: &str) -> String {
    stderr
        .lines()
        .filter(|l| !(l.starts_with("compiling ") && l.contains(" for the first time")))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// The compile cache shared by the tests of this and later runs: artifacts are
/// named by the plugin's content hash and the engine's configuration, and
/// written whole (rename or link), so sharing them changes no result. The
/// first call also points this process's own plugin loads (in-process tests)
/// at it, so that no test uses the user's `~/.cache/ludus`; every plugin path
/// a test loads comes through this harness, which calls it first.
pub fn warm_cache() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ludus-compile-cache");
        std::fs::create_dir_all(&dir).expect("create the warm compile cache");
        ludus_arena::set_cache_dir(dir.clone());
        dir
    })
}

/// Links (or copies) each artifact of `from` that `to` lacks into `to`.
fn share_artifacts(from: &Path, to: &Path) {
    let Ok(entries) = std::fs::read_dir(from) else {
        return;
    };
    for entry in entries.flatten() {
        let src = entry.path();
        if src.extension().is_none_or(|e| e != "cwasm") {
            continue;
        }
        let dst = to.join(entry.file_name());
        if dst.exists() || std::fs::hard_link(&src, &dst).is_ok() {
            continue;
        }
        // Another file system: copy beside it, then rename, so no reader
        // ever sees half an artifact.
        let tmp = to.join(format!(
            "{}.tmp{}",
            entry.file_name().to_string_lossy(),
            std::process::id()
        ));
        if std::fs::copy(&src, &tmp).is_ok() && std::fs::rename(&tmp, &dst).is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
    }
}

/// A test's own folder: where its `ludus` runs start, and their compile cache.
/// One per test thread, removed when the test ends.
struct TestDir(tempfile::TempDir);

impl TestDir {
    fn cache(&self) -> PathBuf {
        self.0.path().join("compile-cache")
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        share_artifacts(&self.cache(), warm_cache());
    }
}

thread_local! {
    static TEST_DIR: OnceCell<TestDir> = const { OnceCell::new() };
}

/// The `ludus` binary as every test runs it: in the test's own temporary
/// directory, with its own compile cache seeded from [`warm_cache`], and
/// without the parent's `LUDUS_*` variables (a test sets what it needs).
pub fn command() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ludus"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("LUDUS_") {
            cmd.env_remove(name);
        }
    }
    TEST_DIR.with(|cell| {
        let dir = cell.get_or_init(|| TestDir(tempfile::tempdir().expect("test dir")));
        let cache = dir.cache();
        std::fs::create_dir_all(&cache).expect("test compile cache");
        share_artifacts(warm_cache(), &cache);
        cmd.current_dir(dir.0.path()).env("LUDUS_CACHE_DIR", &cache);
    });
    cmd
}

pub fn ludus<I, S>(args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    ludus_with_env(args, &[])
}

/// [`ludus`] with these environment variables set.
pub fn ludus_with_env<I, S>(args: I, vars: &[(&str, &str)]) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let args: Vec<String> = args
        .into_iter()
        .map(|a| a.as_ref().to_string_lossy().into_owned())
        .collect();
    let out = command()
        .args(&args)
        .envs(vars.iter().copied())
        .output()
        .expect("run ludus");
    Run { args, out }
}

/// Runs `ludus` with `input` on its standard input.
pub fn ludus_with_stdin<I, S>(args: I, input: &str) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    use std::io::Write;
    let mut child = command()
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run ludus");
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input.as_bytes()).expect("write stdin");
    }
    child.wait_with_output().expect("wait for ludus")
}

/// `ludus run ... --json` with the given plugins and extra arguments.
pub fn run_json(db: &Path, env: &str, agent: &str, extra: &[&str]) -> serde_json::Value {
    let mut args: Vec<String> = vec![
        "run".into(),
        "--env".into(),
        plugin(env).display().to_string(),
        "--agent".into(),
        plugin(agent).display().to_string(),
        "--db".into(),
        db.display().to_string(),
        "--json".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    ludus(&args).json()
}

/// `ludus export DB --format jsonl --out OUT`, asserted to succeed.
pub fn export_jsonl(db: &Path, out: &Path) {
    let export = ludus([
        "export",
        &db.display().to_string(),
        "--format",
        "jsonl",
        "--out",
        &out.display().to_string(),
    ]);
    assert_eq!(export.code(), 0, "{}", export.stderr());
}

pub fn digests(report: &serde_json::Value) -> Vec<String> {
    report["episodes"]
        .as_array()
        .expect("episodes")
        .iter()
        .map(|e| e["digest"].as_str().expect("digest").to_string())
        .collect()
}

/// `ludus train CONFIG --db DB --json --device cpu [extra...]`, which must
/// succeed; its JSON summary.
pub fn train_json(config: &Path, db: &Path, extra: &[&str]) -> serde_json::Value {
    train_json_on("cpu", config, db, extra)
}

/// [`train_json`] on another device (`cuda`, `auto`).
pub fn train_json_on(device: &str, config: &Path, db: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "train".to_string(),
        config.display().to_string(),
        "--db".into(),
        db.display().to_string(),
        "--json".into(),
        "--device".into(),
        device.into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    ludus(&args).json()
}

/// SplitMix64 once: the seed a batched copy's next episode starts from, as
/// every SDK derives it (`next_seed`).
pub fn next_seed(seed: u64) -> u64 {
    let mut z = (seed ^ 0xA076_1D64_78BD_642F).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The first part of an observation, which must be a vector.
pub fn vector_of(observation: &[ludus_arena::model::Part]) -> Vec<f32> {
    match &observation[0].value {
        ludus_arena::model::Value::Vector(v) => v.clone(),
        other => panic!("not a vector: {other:?}"),
    }
}

/// Steps a CartPole env plugin's copies (one per seed) through the batched
/// interface and, beside them, one instance per copy one step per call, for
/// `steps` steps, asserting the two agree: observations bit for bit, rewards
/// and flags, and a copy that ends restarts from `next_seed` of its seed.
/// Copies 0 and 1 push at random (short episodes); the others balance the
/// pole, with now and then an out-of-range action value (read as action 0).
/// Returns (episodes ended, episodes truncated).
pub fn assert_batched_cartpole_matches_single(
    path: &Path,
    seeds: &[u64],
    steps: u64,
) -> (usize, usize) {
    use ludus_arena::model::Action;
    use ludus_arena::{Limits, Plugin, PluginKind};
    let p = Plugin::load(path, PluginKind::Env, Limits::DEFAULT).unwrap();
    let mut batch = p.env(0).unwrap();
    batch.init("").unwrap().unwrap();
    let first = batch.batch_reset(seeds).unwrap().unwrap();
    let mut singles: Vec<_> = seeds
        .iter()
        .map(|&s| {
            let mut e = p.env(0).unwrap();
            e.init("").unwrap().unwrap();
            let r = e.reset(s).unwrap();
            (e, s, vector_of(&r.observation))
        })
        .collect();
    let flat: Vec<f32> = singles.iter().flat_map(|(_, _, o)| o.clone()).collect();
    assert_eq!(first, flat);
    let (mut ends, mut truncations) = (0, 0);
    for step in 0..steps {
        let actions: Vec<f32> = singles
            .iter()
            .enumerate()
            .map(|(i, (_, _, o))| match (i, step % 13) {
                (0 | 1, _) => (next_seed(step * 4 + i as u64) >> 63) as f32,
                (_, 0) => -3.0,
                _ => f32::from(o[2] + 0.5 * o[3] > 0.0),
            })
            .collect();
        let r = batch.batch_step(&actions).unwrap().unwrap();
        assert_eq!(r.observations.len(), 4 * seeds.len());
        for (i, (env, seed, obs)) in singles.iter_mut().enumerate() {
            let s = env
                .step(&Action::Discrete(actions[i].max(0.0) as u32))
                .unwrap();
            let flags = u8::from(s.terminated) | (u8::from(s.truncated) << 1);
            assert_eq!(r.flags[i], flags, "copy {i} step {step}");
            assert_eq!(r.rewards[i], s.reward, "copy {i} step {step}");
            *obs = if flags != 0 {
                ends += 1;
                truncations += usize::from(s.truncated);
                *seed = next_seed(*seed);
                vector_of(&env.reset(*seed).unwrap().observation)
            } else {
                vector_of(&s.observation)
            };
            assert_eq!(
                r.observations[i * 4..i * 4 + 4],
                obs[..],
                "copy {i} step {step}"
            );
        }
    }
    (ends, truncations)
}

/// Runs `code` with the project's Python (`.venv`), `args` after it and
/// `pythonpath` first on its module path; asserts success, returns stdout.
pub fn python(code: &str, args: &[&str], pythonpath: Option<&Path>) -> String {
    python_at(&root().join(".venv/bin/python"), code, args, pythonpath)
}

/// [`python`] with another interpreter (a venv of its own).
pub fn python_at(
    interpreter: &Path,
    code: &str,
    args: &[&str],
    pythonpath: Option<&Path>,
) -> String {
    assert!(
        interpreter.exists(),
        "{} missing: run scripts/setup.sh and scripts/setup-tests.sh",
        interpreter.display()
    );
    let mut cmd = Command::new(interpreter);
    if let Some(p) = pythonpath {
        cmd.env("PYTHONPATH", p);
    }
    let out = cmd.arg("-c").arg(code).args(args).output().expect("python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A tiny word-level model with random weights from `seed` (the maze's
/// four moves as its words) in the folder `dir`: quick to load and to
/// answer with.
pub fn tiny_model(dir: &Path, seed: u64) {
    ludus_trainer::llm::tiny::write(
        dir,
        &ludus_trainer::llm::tiny::TinySpec {
            words: ["up", "down", "left", "right"].map(String::from).to_vec(),
            dim: 16,
            layers: 1,
            heads: 2,
            seed,
        },
    )
    .expect("tiny model");
}
