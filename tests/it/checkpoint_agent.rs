//! Trained policies as agents (`--agent checkpoint:PATH`): the real binary
//! trains a small CartPole policy once, then runs, replays, forks, re-runs and
//! suites use it like any agent plugin.

use crate::support;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use ludus_arena::model::{Action, EnvInfo, Observation, StepContext};
use ludus_arena::run::{Progress, derived_seed, prepare};
use ludus_arena::{
    AgentSpec, Limits, NativeAgent, NativeAgentFactory, Outcome, PluginSpec, RunError, RunSpec,
};

use support::*;

/// A trained CartPole policy: the final checkpoint and an early one (update 10).
struct Trained {
    latest: PathBuf,
    early: PathBuf,
}

/// Trains PPO on CartPole once per test process (a few seconds on a CPU).
fn trained() -> &'static Trained {
    static TRAINED: OnceLock<Trained> = OnceLock::new();
    TRAINED.get_or_init(|| {
        // Kept for the whole test process, in cargo's scratch folder for
        // integration tests (emptied first).
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("checkpoint-agent");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch folder");
        let text = std::fs::read_to_string(root().join("configs/ppo-cartpole.toml"))
            .expect("example config");
        let plugins = plugins().display().to_string();
        let edits = [
            ("updates", "150"),
            ("mean_return", "250"),
            ("every", "10"),
            ("keep_all", "true"),
            ("record", "false"),
        ];
        let mut lines: Vec<String> = text
            .lines()
            .map(|l| l.replace("../plugins/target/wasm32-wasip2/release", &plugins))
            .collect();
        for (key, value) in edits {
            let line = lines
                .iter_mut()
                .find(|l| l.trim_start().starts_with(&format!("{key} =")));
            match line {
                Some(l) => *l = format!("{key} = {value}"),
                None => lines.push(format!("{key} = {value}")),
            }
        }
        let cfg = dir.join("ppo-cartpole.toml");
        std::fs::write(&cfg, lines.join("\n")).expect("write config");
        let db = dir.join("train.db");
        let out = train_json(&cfg, &db, &[]);
        let latest = PathBuf::from(out["checkpoint"].as_str().expect("checkpoint path"));
        let early = latest
            .parent()
            .expect("checkpoint folder")
            .join("update-10.safetensors");
        assert!(latest.is_file() && early.is_file(), "{out}");
        Trained { latest, early }
    })
}

fn agent(path: &Path) -> String {
    format!("checkpoint:{}", path.display())
}

/// `ludus run` on CartPole with `agent` (a plugin name or `checkpoint:PATH`).
fn run_args(db: &Path, agent: &str, extra: &[&str]) -> Vec<String> {
    let agent = if agent.starts_with("checkpoint:") {
        agent.to_string()
    } else {
        plugin(agent).display().to_string()
    };
    let mut args: Vec<String> = vec![
        "run".into(),
        "--env".into(),
        plugin("cartpole").display().to_string(),
        "--agent".into(),
        agent,
        "--db".into(),
        db.display().to_string(),
        "--json".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn mean_return(report: &serde_json::Value) -> f64 {
    report["summary"]["mean_return"]
        .as_f64()
        .expect("mean return")
}

fn first_episode(report: &serde_json::Value) -> i64 {
    report["episodes"][0]["id"].as_i64().expect("episode id")
}

#[test]
fn a_trained_policy_beats_the_random_agent_and_reproduces_across_jobs() {
    let t = trained();
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("r.db");
    let ck = agent(&t.latest);
    let common = ["--episodes", "12", "--seed", "5"];
    let random = ludus(run_args(&db, "random_agent", &common)).json();
    let j1 = ludus(run_args(
        &db,
        &ck,
        &[&common[..], &["--jobs", "1"]].concat(),
    ))
    .json();
    assert_eq!(j1["summary"]["crashed"], 0, "{j1}");
    let (r, p) = (mean_return(&random), mean_return(&j1));
    assert!(
        p > 100.0 && p > 4.0 * r,
        "the policy's mean return {p:.1} is not well above the random agent's {r:.1}"
    );
    // The same seed gives the same episodes, on one thread or three, in
    // another database.
    let j3 = ludus(run_args(
        &db,
        &ck,
        &[&common[..], &["--jobs", "3"]].concat(),
    ))
    .json();
    let other = dir.path().join("other.db");
    let again = ludus(run_args(
        &other,
        &ck,
        &[&common[..], &["--jobs", "2"]].concat(),
    ))
    .json();
    assert_eq!(digests(&j1), digests(&j3));
    assert_eq!(digests(&j1), digests(&again));
    // Sampling draws from the episode's RNG: reproducible across jobs too,
    // and other trajectories than greedy.
    let sample = |jobs: &str| {
        let extra = [&common[..], &["--jobs", jobs, "--agent-config", "sample"]].concat();
        ludus(run_args(&db, &ck, &extra)).json()
    };
    let (s1, s3) = (sample("1"), sample("3"));
    assert_eq!(digests(&s1), digests(&s3));
    assert_ne!(digests(&s1), digests(&j1));
    // The recording names the checkpoint and its hash.
    let runs = ludus_arena::Db::open(&db)
        .expect("db")
        .runs()
        .expect("runs");
    let run = runs
        .iter()
        .find(|r| r.id == j1["run_id"].as_str().unwrap())
        .expect("run");
    let recorded = &run.spec["agent"];
    assert_eq!(recorded["path"], ck.as_str(), "{recorded}");
    assert_eq!(recorded["native"], true, "{recorded}");
    let bytes = std::fs::read(&t.latest).expect("checkpoint");
    assert_eq!(
        recorded["hash"],
        blake3::hash(&bytes).to_hex().as_str(),
        "{recorded}"
    );
}

#[test]
fn debug_fork_and_rerun_replay_a_checkpoint_episode() {
    let t = trained();
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("d.db");
    let dbs = db.display().to_string();
    let report = ludus(run_args(
        &db,
        &agent(&t.latest),
        &["--episodes", "2", "--seed", "9"],
    ))
    .json();
    let id = first_episode(&report);
    let length = report["episodes"][0]["length"].as_u64().expect("length");
    assert!(length > 20, "{report}");
    // The debugger reads the frames.
    let dbg = ludus([
        "debug",
        &dbs,
        "--episode",
        &id.to_string(),
        "--break",
        "step == 12",
        "--json",
    ])
    .json();
    assert_eq!(dbg["frames"].as_u64(), Some(length), "{dbg}");
    assert_eq!(dbg["hits"][0]["frame"], 12, "{dbg}");
    // A fork replays the prefix (checked frame by frame) and replaces the
    // action at frame 12 with the other one: the branch diverges there.
    let other = match dbg["hits"][0]["view"]["action"].as_str() {
        Some("discrete(0)") => "discrete:1",
        _ => "discrete:0",
    };
    let fork = ludus([
        "fork",
        &dbs,
        "--episode",
        &id.to_string(),
        "--frame",
        "12",
        "--action",
        other,
        "--json",
    ])
    .json();
    assert_eq!(fork["parent"], id, "{fork}");
    assert_eq!(fork["changed_plugins"], serde_json::json!([]), "{fork}");
    let first = fork["diff"]["first_divergence"]["frame"].as_u64();
    assert!(first.is_some_and(|f| f >= 12), "{fork}");
    // A branch of the checkpoint run replays exactly too.
    let branch = fork["branch"]["id"].as_i64().expect("branch id");
    let again = ludus([
        "fork",
        &dbs,
        "--episode",
        &branch.to_string(),
        "--frame",
        "14",
        "--json",
    ])
    .json();
    assert_eq!(again["parent"], branch, "{again}");
    // Re-running with the same checkpoint reproduces the recording (exit 0);
    // with the early checkpoint it differs (exit 1) and says the agent changed.
    let same = ludus([
        "rerun",
        &dbs,
        "--episode",
        &id.to_string(),
        "--agent",
        &agent(&t.latest),
        "--json",
    ])
    .json();
    assert_eq!(same["diff"]["identical"], true, "{same}");
    let early = ludus([
        "rerun",
        &dbs,
        "--episode",
        &id.to_string(),
        "--agent",
        &agent(&t.early),
        "--json",
    ]);
    assert_eq!(early.code(), 1, "{}\n{}", early.stdout(), early.stderr());
    let early: serde_json::Value = serde_json::from_str(&early.stdout()).expect("json");
    assert_eq!(early["diff"]["identical"], false, "{early}");
    assert_eq!(early["changed_plugins"][0]["role"], "agent", "{early}");
}

#[test]
fn a_changed_checkpoint_file_is_detected_on_replay() {
    let t = trained();
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("c.db");
    let dbs = db.display().to_string();
    let copy = dir.path().join("policy.safetensors");
    std::fs::copy(&t.latest, &copy).expect("copy");
    let report = ludus(run_args(
        &db,
        &agent(&copy),
        &["--episodes", "1", "--seed", "4"],
    ))
    .json();
    let id = first_episode(&report).to_string();
    // Retrained in place: the recording no longer replays, and says why.
    let last = report["episodes"][0]["length"].as_u64().expect("length") - 1;
    std::fs::copy(&t.early, &copy).expect("overwrite");
    let err = ludus(["fork", &dbs, "--episode", &id, "--frame", &last.to_string()]).fails_with(1);
    assert!(err.contains("changed since the recording"), "{err}");
    assert!(err.contains("policy.safetensors"), "{err}");
    // Gone: a one-line usage error.
    std::fs::remove_file(&copy).expect("remove");
    let err = ludus(["fork", &dbs, "--episode", &id, "--frame", "3"]).fails_with(2);
    assert!(
        err.contains("policy.safetensors") && err.contains("not found"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[test]
fn a_suite_case_can_use_a_checkpoint_agent() {
    let t = trained();
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::copy(&t.latest, dir.path().join("policy.safetensors")).expect("copy");
    let suite = dir.path().join("s.toml");
    std::fs::write(
        &suite,
        format!(
            r#"name = "policies"
seed = 2
episodes = 8

[[case]]
name = "trained"
env = "{env}"
agent = "checkpoint:policy.safetensors"
expect = {{ mean_return_min = 100 }}

[[matrix]]
name = "modes"
agents = [{{ path = "checkpoint:policy.safetensors", config = "sample", label = "sampled" }}]
envs = ["{env}"]
"#,
            env = plugin("cartpole").display()
        ),
    )
    .expect("suite");
    let db = dir.path().join("s.db");
    let out = ludus([
        "suite",
        "run",
        &suite.display().to_string(),
        "--db",
        &db.display().to_string(),
        "--json",
    ])
    .json();
    assert_eq!(out["passed"], 2, "{out}");
    assert_eq!(out["cases"][1]["name"], "modes/sampled/cartpole", "{out}");
    // A missing checkpoint is the suite's usage error, at the agent's line.
    std::fs::write(
        &suite,
        std::fs::read_to_string(&suite).unwrap().replace(
            "\"checkpoint:policy.safetensors\"\n",
            "\"checkpoint:nope.safetensors\"\n",
        ),
    )
    .unwrap();
    let err = ludus([
        "suite",
        "run",
        &suite.display().to_string(),
        "--db",
        &dir.path().join("bad.db").display().to_string(),
    ])
    .fails_with(2);
    assert!(err.contains("s.toml:8: key `agent`"), "{err}");
    assert!(err.contains("nope.safetensors"), "{err}");
    assert!(!dir.path().join("bad.db").exists());
}

#[test]
fn bad_checkpoints_are_one_line_usage_errors_and_write_nothing() {
    let t = trained();
    let dir = tempfile::tempdir().expect("tempdir");
    let corrupt = dir.path().join("corrupt.safetensors");
    std::fs::write(&corrupt, b"not a checkpoint at all").expect("write");
    let mut truncated = std::fs::read(&t.latest).expect("read");
    truncated.truncate(truncated.len() / 2);
    let half = dir.path().join("half.safetensors");
    std::fs::write(&half, truncated).expect("write");
    let cases: Vec<(String, &str, Vec<&str>, &str)> = vec![
        (
            agent(&dir.path().join("missing.safetensors")),
            "cartpole",
            vec![],
            "not found",
        ),
        (agent(&corrupt), "cartpole", vec![], "not a readable"),
        (agent(&half), "cartpole", vec![], "not a readable"),
        // Trained on CartPole, asked to play the maze.
        (agent(&t.latest), "maze", vec![], "trained for another env"),
        (
            agent(&t.latest),
            "cartpole",
            vec!["--agent-config", "best"],
            "`greedy` (the default) or `sample`",
        ),
    ];
    for (ck, env, extra, expected) in cases {
        let db = dir.path().join("x.db");
        let mut args = vec![
            "run".to_string(),
            "--env".into(),
            plugin(env).display().to_string(),
            "--agent".into(),
            ck.clone(),
            "--db".into(),
            db.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let err = ludus(&args).fails_with(2);
        assert!(err.contains(expected), "{ck} on {env}: {err}");
        assert!(err.starts_with("error: "), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(!db.exists(), "{ck}: a database was written");
    }
}

#[test]
fn a_policy_that_outputs_nan_crashes_its_episodes_not_the_run() {
    let t = trained();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut ck = ludus_trainer::checkpoint::load(&t.latest).expect("checkpoint");
    for (_, values) in &mut ck.params {
        values.fill(f32::NAN);
    }
    let nan = dir.path().join("nan.safetensors");
    ludus_trainer::checkpoint::save(&nan, &ck).expect("save");
    let db = dir.path().join("n.db");
    let report = ludus(run_args(
        &db,
        &agent(&nan),
        &["--episodes", "3", "--jobs", "2"],
    ))
    .json();
    assert_eq!(report["summary"]["crashed"], 3, "{report}");
    for e in report["episodes"].as_array().expect("episodes") {
        assert_eq!(e["outcome"], "crashed", "{e}");
        let err = e["error"].as_str().unwrap_or_default();
        assert!(
            err.contains("nan.safetensors") && err.contains("act") && err.contains("not finite"),
            "{err}"
        );
    }
}

/// A native agent from outside the trainer: pushes right until `fail_at`,
/// then fails (`Err`) or panics, when the seed it is given (derived from the
/// episode's) is odd.
#[derive(Debug)]
struct Flaky {
    fail_at: u32,
    panic: bool,
}

struct FlakyEpisode {
    fail_at: u32,
    panic: bool,
    odd: bool,
}

impl NativeAgentFactory for Flaky {
    fn source(&self) -> String {
        format!("flaky:{}", if self.panic { "panic" } else { "err" })
    }
    fn hash(&self) -> String {
        "0".repeat(64)
    }
    fn config(&self) -> String {
        String::new()
    }
    fn check_env(&self, env: &EnvInfo) -> Result<(), ludus_arena::NativeAgentError> {
        match env.name.as_str() {
            "maze" => Err("flaky agents do not do mazes".into()),
            _ => Ok(()),
        }
    }
    fn make(&self) -> Result<Box<dyn NativeAgent>, ludus_arena::NativeAgentError> {
        Ok(Box::new(FlakyEpisode {
            fail_at: self.fail_at,
            panic: self.panic,
            odd: false,
        }))
    }
}

impl NativeAgent for FlakyEpisode {
    fn begin_episode(
        &mut self,
        _env: &EnvInfo,
        _task: &str,
        seed: u64,
    ) -> Result<(), ludus_arena::NativeAgentError> {
        self.odd = seed % 2 == 1;
        Ok(())
    }
    fn act(
        &mut self,
        _obs: &Observation,
        context: StepContext,
    ) -> Result<Action, ludus_arena::NativeAgentError> {
        if self.odd && context.step == self.fail_at {
            if self.panic {
                panic!("flaky agent gave up at step {}", context.step);
            }
            return Err(format!("no action at step {}", context.step).into());
        }
        Ok(Action::Discrete(context.step % 2))
    }
}

fn flaky_spec(db: &Path, env: &str, panic: bool) -> RunSpec {
    RunSpec {
        env: PluginSpec {
            path: plugin(env),
            config: String::new(),
            limits: Limits::DEFAULT,
        },
        agent: AgentSpec::Native(Arc::new(Flaky { fail_at: 3, panic })),
        reward: None,
        episodes: 8,
        seed: 11,
        jobs: 3,
        db: db.to_path_buf(),
        models: Default::default(),
        step_delay: std::time::Duration::ZERO,
    }
}

#[test]
fn a_native_agent_that_fails_or_panics_crashes_its_episode_not_the_host() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("f.db");
    for (panic, expected) in [
        (false, "agent flaky:err failed in act: no action at step 3"),
        (
            true,
            "agent flaky:panic panicked in act: flaky agent gave up at step 3",
        ),
    ] {
        let prepared = prepare(flaky_spec(&db, "cartpole", panic)).expect("prepare");
        let report = prepared.run(&Progress::default()).expect("run");
        let mut crashed = 0;
        for e in &report.episodes {
            if derived_seed(e.seed, 3) % 2 == 1 {
                crashed += 1;
                assert_eq!(e.outcome, Outcome::Crashed, "{e:?}");
                assert_eq!(e.length, 3, "{e:?}");
                assert_eq!(e.error.as_deref(), Some(expected), "{e:?}");
            } else {
                assert_ne!(e.outcome, Outcome::Crashed, "{e:?}");
            }
        }
        assert!(crashed > 0 && crashed < 8, "{crashed} crashed");
    }
    // The env check comes before anything is written.
    let maze_db = dir.path().join("maze.db");
    let err = prepare(flaky_spec(&maze_db, "maze", false))
        .err()
        .expect("a maze is refused");
    assert!(
        matches!(&err, RunError::Spec(m) if m == "flaky agents do not do mazes"),
        "{err}"
    );
    assert!(!maze_db.exists());
    // Replaying needs a resolver: without one, a clear error; with one, the
    // crashed episode replays exactly, crash included.
    let run = ludus_arena::Db::open(&db)
        .expect("db")
        .runs()
        .expect("runs");
    let id = ludus_arena::Db::open(&db)
        .expect("db")
        .episodes(&run[0].id)
        .expect("episodes")
        .iter()
        .find(|e| e.outcome == "crashed")
        .expect("a crashed episode")
        .id;
    let err = ludus_debugger::fork::verify(&db, id, None).expect_err("no resolver");
    assert!(err.to_string().contains("flaky:"), "{err}");
    let resolver = |source: &str, _config: &str| -> Result<Arc<dyn NativeAgentFactory>, String> {
        let panic = match source {
            "flaky:err" => false,
            "flaky:panic" => true,
            other => return Err(format!("unknown agent {other}")),
        };
        Ok(Arc::new(Flaky { fail_at: 3, panic }))
    };
    let mismatch = ludus_debugger::fork::verify(&db, id, Some(&resolver)).expect("verify");
    assert!(mismatch.is_none(), "{mismatch:?}");
}
