//! `ludus train` end to end: the real binary, the real wasm CartPole and maze,
//! real SQLite files and checkpoints.

use crate::support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use ludus_arena::Db;
use ludus_arena::model::Action;
use ludus_trainer::checkpoint;
use ludus_trainer::policy::Policy;
use support::*;

/// A copy of an example config in `dir`, with the plugin path made absolute and
/// `key = value` lines replaced (or appended when the key is absent).
fn config(dir: &Path, example: &str, edits: &[(&str, &str)]) -> PathBuf {
    let text = std::fs::read_to_string(root().join("configs").join(format!("{example}.toml")))
        .expect("example config");
    let plugins = plugins().display().to_string();
    let mut lines: Vec<String> = text
        .lines()
        .map(|l| l.replace("../plugins/target/wasm32-wasip2/release", &plugins))
        .collect();
    for (key, value) in edits {
        let new = format!("{key} = {value}");
        match lines
            .iter_mut()
            .find(|l| l.trim_start().starts_with(&format!("{key} =")))
        {
            Some(l) => *l = new,
            None => lines.push(new),
        }
    }
    let path = dir.join(format!("{example}.toml"));
    std::fs::write(&path, lines.join("\n")).expect("write config");
    path
}

/// Metric values by update for one name.
fn metric(db: &Path, run: &str, name: &str) -> Vec<(u64, f64)> {
    Db::open(db)
        .expect("open db")
        .train_metrics(run)
        .expect("metrics")
        .into_iter()
        .filter(|m| m.name == name)
        .map(|m| (m.update, m.value))
        .collect()
}

fn returns(db: &Path, run: &str) -> Vec<f64> {
    Db::open(db)
        .expect("open db")
        .episodes(run)
        .expect("episodes")
        .into_iter()
        .filter(|e| e.outcome == "terminated" || e.outcome == "truncated")
        .map(|e| e.return_)
        .collect()
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

#[test]
fn ppo_reaches_475_on_cartpole_within_a_ci_budget() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("t.db");
    let cfg = config(dir.path(), "ppo-cartpole", &[]);
    let out = train_json(&cfg, &db, &[]);
    assert_eq!(out["reached_target"], true, "{out}");
    assert!(out["mean_return"].as_f64().expect("mean") >= 475.0, "{out}");
    // The same figure is in the database, as the last update's window mean.
    let window = metric(&db, "ppo-cartpole", "return_window");
    let last = window.last().expect("metrics recorded").1;
    assert!(last >= 475.0, "{window:?}");
    // Every metric is finite.
    let all = Db::open(&db)
        .unwrap()
        .train_metrics("ppo-cartpole")
        .unwrap();
    assert!(all.iter().all(|m| m.value.is_finite()), "non-finite metric");
    assert!(Path::new(out["checkpoint"].as_str().unwrap()).exists());
}

#[test]
fn every_example_trains_without_nan_and_improves() {
    for (example, edits) in [
        (
            "ppo-cartpole",
            vec![("updates", "40"), ("mean_return", "1000")],
        ),
        ("ppo-maze", vec![("updates", "40")]),
        ("grpo-maze", vec![("updates", "40")]),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("t.db");
        let cfg = config(dir.path(), example, &edits);
        let out = train_json(&cfg, &db, &[]);
        assert_eq!(out["updates"], 40, "{example}: {out}");
        let all = Db::open(&db).unwrap().train_metrics(example).unwrap();
        for m in &all {
            assert!(
                m.value.is_finite(),
                "{example}: metric {} at update {} is {}",
                m.name,
                m.update,
                m.value
            );
        }
        let r = returns(&db, example);
        let k = (r.len() / 5).max(1);
        let (first, last) = (mean(&r[..k]), mean(&r[r.len() - k..]));
        assert!(
            last > first * 1.3,
            "{example}: mean return of the first {k} episodes {first:.3}, of the last {k} {last:.3}"
        );
    }
}

#[test]
fn resume_after_a_kill_continues_with_identical_metrics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let edits = [("updates", "40"), ("mean_return", "100000"), ("every", "4")];
    let cfg = config(dir.path(), "ppo-cartpole", &edits);
    // A: uninterrupted.
    let a = dir.path().join("a.db");
    train_json(&cfg, &a, &[]);
    // B: killed (SIGKILL) once the checkpoint at update 8 is written, then resumed.
    let b = dir.path().join("b.db");
    let mut child = support::command()
        .args([
            "train",
            &cfg.display().to_string(),
            "--db",
            &b.display().to_string(),
        ])
        .args(["--device", "cpu"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn ludus train");
    let stdout = child.stdout.take().expect("stdout");
    let mut seen = false;
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("read progress");
        if line.starts_with("checkpoint update 8:") {
            seen = true;
            break;
        }
    }
    assert!(seen, "no checkpoint at update 8 announced");
    child.kill().expect("kill");
    let _ = child.wait();
    // The kill landed mid-run: the run is marked interrupted, its latest
    // checkpoint is short of the end.
    let runs = Db::open(&b).unwrap().runs().unwrap();
    assert_eq!(runs[0].status, "interrupted");
    let ck_dir = dir.path().join("b-ppo-cartpole-checkpoints");
    let killed_at = checkpoint::load(&ck_dir.join("latest.safetensors"))
        .unwrap()
        .meta
        .update;
    assert!((8..40).contains(&killed_at), "checkpoint at {killed_at}");
    let out = train_json(&cfg, &b, &["--resume"]);
    assert_eq!(out["updates"], 40, "{out}");
    for name in [
        "return",
        "episode_length",
        "policy_loss",
        "value_loss",
        "entropy",
        "approx_kl",
        "clip_fraction",
        "samples",
    ] {
        let ma = metric(&a, "ppo-cartpole", name);
        let mb = metric(&b, "ppo-cartpole", name);
        assert!(
            ma.iter().any(|m| m.0 > killed_at),
            "{name}: no metrics after update {killed_at}"
        );
        assert_eq!(ma, mb, "metric {name} differs after resuming");
    }
    // The recorded episodes agree too, frame digests included.
    let eps = |db: &Path| -> Vec<(u64, u64, String, u64, Option<String>)> {
        Db::open(db)
            .unwrap()
            .episodes("ppo-cartpole")
            .unwrap()
            .into_iter()
            .map(|e| (e.index, e.seed, e.outcome, e.length, e.digest))
            .collect()
    };
    assert_eq!(eps(&a), eps(&b));
}

#[test]
fn policy_lag_bound_is_respected_in_async_mode() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("t.db");
    let cfg = config(
        dir.path(),
        "ppo-cartpole",
        &[
            ("mode", "\"async\""),
            ("updates", "15"),
            ("mean_return", "100000"),
            ("max_policy_lag", "1"),
            ("batch_steps", "128"),
        ],
    );
    train_json(&cfg, &db, &[]);
    let store = Db::open(&db).unwrap();
    let mut lags = Vec::new();
    for e in store.episodes("ppo-cartpole").unwrap() {
        for s in store.train_steps(e.id).unwrap() {
            lags.push(s.stat.lag);
            // A step is trained on (has an advantage) exactly when within the bound.
            assert_eq!(s.stat.advantage.is_some(), s.stat.lag <= 1, "{s:?}");
        }
    }
    assert!(!lags.is_empty());
    assert!(
        lags.iter().any(|&l| l >= 1),
        "decoupled sampling never lagged: nothing was tested"
    );
    for (update, max) in metric(&db, "ppo-cartpole", "policy_lag_max") {
        assert!(max <= 1.0, "update {update}: lag {max}");
    }
    // Every update trains on at least a batch of fresh steps (stale ones ride
    // along to be recorded, as dropped), and batches stay near `batch_steps`
    // however fast the samplers are.
    for (update, samples) in metric(&db, "ppo-cartpole", "samples") {
        assert!(
            (128.0..=4.0 * 128.0).contains(&samples),
            "update {update}: trained on {samples} steps"
        );
    }
}

#[test]
fn sync_mode_steps_in_lockstep_and_reproduces_on_a_slow_env() {
    // With a random step latency, which env is ready first depends on the
    // clock; sync mode steps every env together, so a run is still a function
    // of its config and seed.
    let dir = tempfile::tempdir().expect("tempdir");
    let env = format!(
        "{:?}\nstep_delay_ms = [0, 3]",
        plugin("cartpole").display().to_string()
    );
    let cfg = config(
        dir.path(),
        "ppo-cartpole",
        &[
            ("updates", "3"),
            ("mean_return", "100000"),
            ("rollout_steps", "8"),
            ("record", "false"),
            ("plugin", &env),
        ],
    );
    let text = std::fs::read_to_string(&cfg).unwrap();
    assert!(text.contains("step_delay_ms = [0, 3]"), "{text}");
    let runs: Vec<Vec<(u64, f64)>> = (0..2)
        .map(|i| {
            let db = dir.path().join(format!("t{i}.db"));
            let out = train_json(&cfg, &db, &[]);
            assert_eq!(out["updates"], 3, "{out}");
            let busy = out["env_busy_seconds"].as_f64().unwrap();
            assert!(busy > 0.0, "the step delay was not applied: {out}");
            let mut m = metric(&db, "ppo-cartpole", "policy_loss");
            m.extend(metric(&db, "ppo-cartpole", "approx_kl"));
            m
        })
        .collect();
    assert_eq!(runs[0], runs[1]);
}

#[test]
fn recorded_log_probs_match_a_recomputation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("t.db");
    let cfg = config(
        dir.path(),
        "ppo-cartpole",
        &[
            ("updates", "3"),
            ("mean_return", "100000"),
            ("every", "1"),
            ("keep_all", "true"),
        ],
    );
    let out = train_json(&cfg, &db, &[]);
    let ck_dir = Path::new(out["checkpoint"].as_str().unwrap())
        .parent()
        .unwrap()
        .to_path_buf();
    let policies: Vec<Policy> = (0..3)
        .map(|v| {
            let ck = checkpoint::load(&ck_dir.join(format!("update-{v}.safetensors")))
                .expect("checkpoint");
            let values: Vec<Vec<f32>> = ck.params.into_iter().map(|p| p.1).collect();
            Policy::on_cpu(ck.meta.spec, &values)
        })
        .collect();
    let store = Db::open(&db).unwrap();
    let mut checked = 0;
    for e in store.episodes("ppo-cartpole").unwrap() {
        let frames = store.frames(e.id).unwrap();
        let steps = store.train_steps(e.id).unwrap();
        assert_eq!(frames.len(), steps.len(), "episode {}", e.id);
        for ((frame, _), step) in frames.iter().zip(&steps) {
            assert_eq!(u64::from(frame.step), step.step);
            let policy = &policies[step.stat.version as usize];
            let mut features = Vec::new();
            policy.spec.features(&frame.observation, &mut features);
            let Action::Discrete(a) = frame.action else {
                panic!(
                    "CartPole takes discrete actions, recorded {:?}",
                    frame.action
                )
            };
            let lp = policy.log_probs_of(&features, &[a as f32])[0];
            assert!(
                (lp - step.stat.log_prob).abs() < 1e-4,
                "episode {} step {}: recorded {} recomputed {lp}",
                e.id,
                step.step,
                step.stat.log_prob
            );
            checked += 1;
        }
    }
    assert!(checked >= 3 * 256, "only {checked} steps checked");
}

#[test]
fn cuda_trains_on_the_gpu_where_there_is_one() {
    if !ludus_trainer::cuda_available() {
        eprintln!(
            "SKIPPED cuda_trains_on_the_gpu_where_there_is_one: no CUDA device on this machine"
        );
        // Asking for CUDA here is a usage error, not a silent fallback.
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = config(dir.path(), "ppo-cartpole", &[("updates", "2")]);
        let db = dir.path().join("t.db");
        let err = ludus([
            "train",
            &cfg.display().to_string(),
            "--db",
            &db.display().to_string(),
            "--device",
            "cuda",
        ])
        .fails_with(2);
        assert!(err.contains("no CUDA device"), "{err}");
        assert!(!db.exists(), "nothing is written on a usage error");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("t.db");
    let cfg = config(dir.path(), "ppo-cartpole", &[]);
    let out = train_json_on("cuda", &cfg, &db, &[]);
    assert!(out["device"].as_str().unwrap().starts_with("cuda"), "{out}");
    assert_eq!(out["reached_target"], true, "{out}");
    let gpu = metric(&db, "ppo-cartpole", "gpu_share");
    assert!(gpu.iter().all(|g| g.1 > 0.0), "{gpu:?}");
    eprintln!(
        "cuda: PPO CartPole reached {} in {} updates, {} env steps, {:.1} s",
        out["mean_return"],
        out["updates"],
        out["env_steps"],
        out["seconds"].as_f64().unwrap()
    );
}

#[test]
fn bad_configs_fail_with_one_line_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("t.db");
    let cfg = config(dir.path(), "ppo-cartpole", &[("epocs", "3")]);
    // Appended at the end, `epocs` lands in [checkpoint].
    let err = ludus([
        "train",
        &cfg.display().to_string(),
        "--db",
        &db.display().to_string(),
    ])
    .fails_with(2);
    assert!(err.contains("epocs"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let cfg = config(dir.path(), "ppo-cartpole", &[("policy_loss", "\"ppo3\"")]);
    let err = ludus([
        "train",
        &cfg.display().to_string(),
        "--db",
        &db.display().to_string(),
    ])
    .fails_with(2);
    assert!(err.contains("ppo3"), "{err}");
    let missing = dir.path().join("missing.toml");
    let err = ludus([
        "train",
        &missing.display().to_string(),
        "--db",
        &db.display().to_string(),
    ])
    .fails_with(2);
    assert!(err.contains("missing.toml"), "{err}");
    let cfg = config(dir.path(), "ppo-cartpole", &[("plugin", "\"nope.wasm\"")]);
    let err = ludus([
        "train",
        &cfg.display().to_string(),
        "--db",
        &db.display().to_string(),
    ])
    .fails_with(2);
    assert!(err.contains("nope.wasm"), "{err}");
    assert!(!db.exists(), "nothing is written on a usage error");
}

#[test]
fn a_crashing_env_is_an_episode_outcome_not_a_failure() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("t.db");
    let plugin = format!(
        "\"{}\"\nconfig = \"mode=panic,at=3\"",
        plugin("hostile_env").display()
    );
    let cfg = config(
        dir.path(),
        "ppo-cartpole",
        &[
            ("plugin", &plugin),
            ("updates", "3"),
            ("mean_return", "100000"),
        ],
    );
    let out = train_json(&cfg, &db, &[]);
    assert_eq!(out["updates"], 3, "{out}");
    let eps = Db::open(&db).unwrap().episodes("ppo-cartpole").unwrap();
    let crashed: Vec<_> = eps.iter().filter(|e| e.outcome == "crashed").collect();
    assert!(!crashed.is_empty(), "no crashed episodes");
    for e in crashed {
        assert_eq!(e.length, 4, "the 4th step crashes");
        let err = e.error.as_deref().unwrap_or_default();
        assert!(
            err.contains("hostile_env.wasm") && err.contains("step"),
            "{err}"
        );
    }
}

#[test]
fn async_resume_continues_from_the_checkpoint_with_fresh_episodes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("t.db");
    let first = config(dir.path(), "ppo-maze", &[("updates", "6"), ("every", "3")]);
    train_json(&first, &db, &[]);
    let before = Db::open(&db).unwrap().episodes("ppo-maze").unwrap().len();
    // The same run, extended: it resumes from update 6.
    let longer = config(dir.path(), "ppo-maze", &[("updates", "10"), ("every", "3")]);
    let out = train_json(&longer, &db, &["--resume"]);
    assert_eq!(out["updates"], 10, "{out}");
    let updates: Vec<u64> = metric(&db, "ppo-maze", "policy_loss")
        .iter()
        .map(|m| m.0)
        .collect();
    assert_eq!(updates, (1..=10).collect::<Vec<_>>());
    let eps = Db::open(&db).unwrap().episodes("ppo-maze").unwrap();
    assert!(eps.len() > before, "no new episodes after resuming");
    let mut seen = std::collections::HashSet::new();
    assert!(
        eps.iter().all(|e| seen.insert(e.index)),
        "episode indices repeat"
    );
}

/// The random agent's success rate on click-random with a 64x64 screen.
fn random_click_rate(dir: &Path, episodes: u32) -> f64 {
    let report = run_json(
        &dir.join("random.db"),
        "desktop",
        "random_agent",
        &[
            "--env-config",
            "task=click-random,width=64,height=64",
            "--episodes",
            &episodes.to_string(),
            "--seed",
            "1",
        ],
    );
    report["summary"]["success_rate"]
        .as_f64()
        .expect("success rate")
}

#[test]
fn ppo_with_the_cnn_learns_to_click_the_button_from_pixels() {
    let dir = tempfile::tempdir().expect("tempdir");
    let random = random_click_rate(dir.path(), 400);
    let db = dir.path().join("t.db");
    let cfg = config(dir.path(), "ppo-click", &[]);
    let out = train_json(&cfg, &db, &[]);
    assert_eq!(out["updates"], 20, "{out}");
    let curve = metric(&db, "ppo-click", "success_rate");
    assert_eq!(curve.len(), 20, "{curve:?}");
    eprintln!(
        "random agent {random:.3}; ppo-click success rate by update: {}; {:.1} s",
        curve
            .iter()
            .map(|(u, r)| format!("{u}:{r:.3}"))
            .collect::<Vec<_>>()
            .join(" "),
        out["seconds"].as_f64().unwrap_or(0.0)
    );
    // The first update's episodes are the untrained policy's: clicks spread
    // near uniformly over the grid, about as good as the random agent.
    let first = curve[0].1;
    let last = mean(
        &curve[curve.len() - 5..]
            .iter()
            .map(|c| c.1)
            .collect::<Vec<_>>(),
    );
    assert!(first < 0.25, "untrained success rate {first}");
    assert!(
        last >= 0.6 && last >= 4.0 * random && last >= first + 0.4,
        "success rate of the last 5 updates {last:.3}, first update {first:.3}, random agent {random:.3}"
    );
    // The checkpoint loads on the CPU and acts on a real screenshot: a click
    // inside the screen.
    let ck = checkpoint::load(Path::new(out["checkpoint"].as_str().unwrap())).expect("checkpoint");
    assert!(ck.meta.spec.image.is_some(), "{:?}", ck.meta.spec);
    let values: Vec<Vec<f32>> = ck.params.into_iter().map(|p| p.1).collect();
    let policy = Policy::on_cpu(ck.meta.spec, &values);
    let plugin = ludus_arena::Plugin::load(
        &plugin("desktop"),
        ludus_arena::PluginKind::Env,
        ludus_arena::Limits::DEFAULT,
    )
    .expect("desktop plugin");
    let mut env = plugin.env(0).expect("env");
    env.init("task=click-random,width=64,height=64")
        .expect("init")
        .expect("config");
    let obs = env.reset(7).expect("reset").observation;
    let mut features = Vec::new();
    policy.spec.features(&obs, &mut features);
    let sampled = policy.act(&features, 1, &mut ludus_trainer::rng::Rng::new(1));
    match policy.spec.env_action(&sampled[0].action) {
        Action::Pointer(p) => assert!((0..64).contains(&p.x) && (0..64).contains(&p.y), "{p:?}"),
        other => panic!("not a click: {other:?}"),
    }
    // The trained policy as the agent of `ludus run` (greedy: the likeliest
    // cell) on other seeds than training saw: far above the random agent.
    let agent = format!("checkpoint:{}", out["checkpoint"].as_str().unwrap());
    let report = ludus([
        "run",
        "--env",
        &support::plugin("desktop").display().to_string(),
        "--env-config",
        "task=click-random,width=64,height=64",
        "--agent",
        &agent,
        "--episodes",
        "100",
        "--seed",
        "99",
        "--db",
        &dir.path().join("eval.db").display().to_string(),
        "--json",
    ])
    .json();
    let rate = report["summary"]["success_rate"].as_f64().expect("rate");
    eprintln!("checkpoint agent in ludus run: success rate {rate:.2} over 100 episodes");
    assert!(
        rate >= 0.6 && rate >= 4.0 * random,
        "{rate} vs random {random}"
    );
}

#[test]
fn a_cnn_run_resumes_exactly_from_its_checkpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let full = config(dir.path(), "ppo-click", &[("updates", "4"), ("every", "2")]);
    let a = dir.path().join("a.db");
    train_json(&full, &a, &[]);
    let b = dir.path().join("b.db");
    let half = config(dir.path(), "ppo-click", &[("updates", "2"), ("every", "2")]);
    train_json(&half, &b, &[]);
    let full = config(dir.path(), "ppo-click", &[("updates", "4"), ("every", "2")]);
    let out = train_json(&full, &b, &["--resume"]);
    assert_eq!(out["updates"], 4, "{out}");
    for name in [
        "success_rate",
        "policy_loss",
        "value_loss",
        "entropy",
        "approx_kl",
    ] {
        let (ma, mb) = (metric(&a, "ppo-click", name), metric(&b, "ppo-click", name));
        assert_eq!(ma.len(), 4, "{name}: {ma:?}");
        assert_eq!(ma, mb, "metric {name} differs after resuming");
    }
    // The CNN's parameters are in the checkpoint, by name.
    let ck = checkpoint::load(Path::new(out["checkpoint"].as_str().unwrap())).expect("checkpoint");
    let names: Vec<&str> = ck.params.iter().map(|p| p.0.as_str()).collect();
    for n in ["conv.0.w", "conv.1.b", "pointer.w", "critic.0.w"] {
        assert!(names.contains(&n), "{n} missing from {names:?}");
    }
}

#[test]
fn train_bench_compares_sync_and_decoupled_on_the_long_tail_scenario() {
    // Short latencies and one update keep this quick; the long-tailed episodes
    // still leave a sync loop's envs idle most of the time.
    let plugins = plugins().to_string_lossy().into_owned();
    let out = ludus([
        "train-bench",
        "--plugins",
        &plugins,
        "--only",
        "grpo_long_tail_128_envs_slow",
        "--updates",
        "1",
        "--delay-ms",
        "2,4",
        "--json",
    ])
    .json();
    let runs = out["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 2, "{out}");
    for (r, mode) in runs.iter().zip(["sync", "async"]) {
        assert_eq!(r["mode"], mode, "{out}");
        assert!(r["env_steps"].as_u64().expect("steps") > 0, "{out}");
        let u = r["env_utilisation"].as_f64().expect("utilisation");
        assert!(u > 0.0 && u <= 1.0, "{out}");
    }
    let ratio = &out["async_over_sync"]["grpo_long_tail_128_envs_slow"];
    assert!(
        ratio["env_utilisation"].as_f64().expect("ratio") > 1.5,
        "{out}"
    );
    // An unknown scenario is a usage error naming the keys.
    let bad = ludus(["train-bench", "--plugins", &plugins, "--only", "nope"]).fails_with(2);
    assert!(bad.contains("grpo_long_tail_128_envs_slow"), "{bad}");
}

/// Plays a list of recorded actions, whatever it observes.
#[derive(Debug)]
struct Replayer(Vec<Action>);

struct ReplayAgent(std::vec::IntoIter<Action>);

impl ludus_arena::NativeAgentFactory for Replayer {
    fn source(&self) -> String {
        "test:replayer".into()
    }
    fn hash(&self) -> String {
        String::new()
    }
    fn config(&self) -> String {
        String::new()
    }
    fn check_env(
        &self,
        _: &ludus_arena::model::EnvInfo,
    ) -> Result<(), ludus_arena::NativeAgentError> {
        Ok(())
    }
    fn make(&self) -> Result<Box<dyn ludus_arena::NativeAgent>, ludus_arena::NativeAgentError> {
        Ok(Box::new(ReplayAgent(self.0.clone().into_iter())))
    }
}

impl ludus_arena::NativeAgent for ReplayAgent {
    fn begin_episode(
        &mut self,
        _: &ludus_arena::model::EnvInfo,
        _: &str,
        _: u64,
    ) -> Result<(), ludus_arena::NativeAgentError> {
        Ok(())
    }
    fn act(
        &mut self,
        _: &ludus_arena::model::Observation,
        _: ludus_arena::model::StepContext,
    ) -> Result<Action, ludus_arena::NativeAgentError> {
        self.0
            .next()
            .ok_or_else(|| "no recorded action left".into())
    }
}

/// One step semantics: an episode the trainer sampled, played again through
/// the arena's `Stepper` (what `ludus run`, forks and replays use) with the
/// same seed and the same actions, gives the same frames byte for byte and
/// the same ending. The maze's 12-step limit truncates most of these random
/// episodes, and its info reports success only on the last step.
#[test]
fn a_training_episode_and_a_run_episode_with_the_same_actions_record_the_same_frames_and_digest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("t.db");
    let cfg = config(
        dir.path(),
        "grpo-maze",
        &[
            ("config", "\"size=5,doors=0,max_steps=12\""),
            ("mode", "\"sync\""),
            ("samplers", "1"),
            ("envs_per_sampler", "8"),
            ("rollout_steps", "12"),
            ("updates", "1"),
        ],
    );
    train_json(&cfg, &db, &[]);
    let store = Db::open(&db).expect("open db");
    let episodes: Vec<_> = store
        .episodes("grpo-maze")
        .expect("episodes")
        .into_iter()
        .filter(|e| e.outcome == "terminated" || e.outcome == "truncated")
        .collect();
    assert!(episodes.len() >= 4, "{episodes:?}");
    assert!(
        episodes.iter().any(|e| e.outcome == "truncated"),
        "the step limit truncates some episodes: {episodes:?}"
    );
    assert!(
        episodes.iter().any(|e| e.success),
        "some episodes succeed (their frames carry the verdict): {episodes:?}"
    );
    for e in &episodes {
        let frames: Vec<_> = store
            .frames(e.id)
            .expect("frames")
            .into_iter()
            .map(|(f, _)| f)
            .collect();
        assert_eq!(frames.len() as u64, e.length);
        assert!(frames.len() <= 12, "episode {} ran past max-steps", e.id);
        let actions = frames.iter().map(|f| f.action.clone()).collect();
        let spec = ludus_arena::RunSpec {
            env: ludus_arena::PluginSpec {
                path: plugin("maze"),
                config: "size=5,doors=0,max_steps=12".into(),
                limits: ludus_arena::Limits::DEFAULT,
            },
            agent: ludus_arena::AgentSpec::Native(std::sync::Arc::new(Replayer(actions))),
            reward: None,
            episodes: 1,
            seed: 0,
            jobs: 1,
            db: dir.path().join("unused.db"),
            models: Default::default(),
            step_delay: std::time::Duration::ZERO,
        };
        let prepared = ludus_arena::run::prepare(spec).expect("prepare");
        let Ok(mut stepper) = ludus_arena::Stepper::start(&prepared, e.seed, Default::default())
        else {
            panic!("the env crashed at reset");
        };
        // Recorded as the debugger records a re-run: one episode, same seed.
        let mut recorder = ludus_arena::replay::BranchRecorder::start(
            &dir.path().join("replayed.db"),
            &prepared,
            e.seed,
            &Default::default(),
            None,
        )
        .expect("recorder");
        let mut replayed = Vec::new();
        while let Some((frame, timing)) = stepper.step(None) {
            recorder.push(&frame, timing);
            replayed.push(frame);
        }
        let finish = stepper.finish();
        let report = recorder.end(finish.clone()).expect("recorded");
        let bytes = |f: &ludus_arena::model::Frame| postcard::to_stdvec(f).expect("encode");
        assert_eq!(replayed.len(), frames.len(), "episode {}", e.id);
        for (a, b) in frames.iter().zip(&replayed) {
            assert_eq!(bytes(a), bytes(b), "episode {} frame {}", e.id, a.step);
        }
        assert_eq!(finish.outcome.as_str(), e.outcome, "episode {}", e.id);
        assert_eq!(finish.success, e.success, "episode {}", e.id);
        assert_eq!(finish.return_, e.return_, "episode {}", e.id);
        assert_eq!(
            Some(report.digest),
            e.digest,
            "episode {}: one recorder, one digest",
            e.id
        );
    }
}
