//! The PostgreSQL job queue from the command line: `ludus worker` plays
//! queued episodes, and `ludus run --db postgres://... --workers` queues a
//! run's episodes and follows them (`ludus_arena::pg`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use ludus_arena::memory::MemoryBase;
use ludus_arena::pg::{Job, NewRun, Pg};
use ludus_arena::run::{Prepared, prepare};
use ludus_arena::{AgentSpec, Limits, PluginSpec, RunSpec};

use crate::UsageError;
use crate::cli::WorkerArgs;

/// Tries of a job that ends in a worker's error before it is `failed`.
const MAX_ATTEMPTS: u64 = 3;

/// The largest file a queued run stores in the database (a value is at
/// most 1 GB there).
const MAX_QUEUED_FILE: u64 = 1_000_000_000;

/// A connection whose failure is the user's to fix (one line, exit 2).
pub fn connect(url: &str, write: bool) -> Result<Pg> {
    Pg::connect(url, write).map_err(|e| UsageError(e.to_string()).into())
}

pub fn worker(args: WorkerArgs) -> Result<ExitCode> {
    if !ludus_arena::copy::is_postgres(Path::new(&args.db)) {
        return Err(UsageError(format!(
            "--db {}: a worker reads its jobs from a PostgreSQL database (postgres://...)",
            args.db
        ))
        .into());
    }
    if !(args.lease_s.is_finite() && args.lease_s >= 1.0) {
        return Err(UsageError("--lease-s must be at least 1 second".into()).into());
    }
    let jobs = args.jobs.max(1);
    // Fails here, once, on a bad URL, a server that is down or a newer schema.
    // A worker may start before any run (a Deployment beside a fresh
    // database): it makes the tables and waits for jobs.
    drop(connect(&args.db, true)?);
    let cache = args
        .cache
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join("ludus-worker-plugins"));
    std::fs::create_dir_all(&cache)
        .with_context(|| format!("cannot make the plugin cache {}", cache.display()))?;
    let lease = Duration::from_secs_f64(args.lease_s);
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".into());
    let played = std::sync::atomic::AtomicU64::new(0);
    let failures: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let models = SharedModels::default();
    std::thread::scope(|scope| {
        for j in 0..jobs {
            let name = format!("{host}-{}-{j}", std::process::id());
            let (url, played, failures) = (&args.db, &played, &failures);
            let local = Local {
                cache: &cache,
                models: &models,
            };
            let until_empty = args.until_empty;
            scope.spawn(move || {
                if let Err(e) = work(url, &name, local, lease, until_empty, played)
                    && let Ok(mut f) = failures.lock()
                {
                    f.push(format!("{e:#}"));
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap_or_default();
    if let Some(first) = failures.first() {
        anyhow::bail!("ludus worker: {first}");
    }
    eprintln!("played {} episode(s)", played.load(Ordering::Relaxed));
    Ok(ExitCode::SUCCESS)
}

/// One worker thread: lease, play, record, until the queue is empty (with
/// `until_empty`) or forever.
fn work(
    url: &str,
    name: &str,
    local: Local,
    lease: Duration,
    until_empty: bool,
    played: &std::sync::atomic::AtomicU64,
) -> Result<()> {
    let mut pg = connect(url, false)?;
    // One heartbeat thread, with its own connection, keeps the lease of
    // whatever job this thread plays.
    let current: Arc<Mutex<Option<Job>>> = Arc::new(Mutex::new(None));
    let stop = Arc::new(AtomicBool::new(false));
    let beat = {
        let (stop, current, url, name) = (
            stop.clone(),
            current.clone(),
            url.to_string(),
            name.to_string(),
        );
        std::thread::spawn(move || -> Result<()> {
            let mut pg = connect(&url, false)?;
            let tick = lease / 3;
            let mut waited = Duration::ZERO;
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(50));
                waited += Duration::from_millis(50);
                if waited >= tick {
                    waited = Duration::ZERO;
                    let job = current.lock().ok().and_then(|j| j.clone());
                    if let Some(job) = job {
                        // A lease that is no longer ours: `complete` says so.
                        pg.heartbeat(&job, &name, lease)?;
                    }
                }
            }
            Ok(())
        })
    };
    let mut runs = RunCache::default();
    let result = (|| -> Result<()> {
        loop {
            let Some(job) = pg.lease(name, lease)? else {
                if until_empty && pg.open_jobs()? == 0 {
                    return Ok(());
                }
                std::thread::sleep(Duration::from_millis(200));
                continue;
            };
            if let Ok(mut c) = current.lock() {
                *c = Some(job.clone());
            }
            // A panic (a model that runs out of GPU memory while loading)
            // gives the job back like any error, instead of ending this
            // thread with its lease still renewed.
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                play(&mut pg, &job, name, local, &mut runs)
            }))
            .unwrap_or_else(|p| {
                runs.run = None;
                let what = ludus_core::panic_message(p.as_ref()).unwrap_or("(no message)");
                Err(anyhow::anyhow!("the worker panicked: {what}"))
            });
            if let Ok(mut c) = current.lock() {
                *c = None;
            }
            match result {
                Ok(true) => {
                    played.fetch_add(1, Ordering::Relaxed);
                }
                Ok(false) => tracing::warn!(
                    "episode {} of run {} was taken over by another worker; dropped this copy",
                    job.index,
                    job.run_id
                ),
                // Queued again, or failed after its last try.
                Err(e) => {
                    let message = format!("{e:#}");
                    tracing::error!("episode {} of run {}: {message}", job.index, job.run_id);
                    pg.fail(&job, name, &message, MAX_ATTEMPTS)?;
                }
            }
        }
    })();
    stop.store(true, Ordering::Relaxed);
    let _ = beat.join();
    result
}

/// What a worker's threads share: the plugin cache folder, and the model
/// endpoints of the run they last played.
#[derive(Clone, Copy)]
struct Local<'a> {
    cache: &'a Path,
    models: &'a SharedModels,
}

/// The model endpoints of the runs a worker plays, opened once for all its
/// threads and kept while runs (or a suite's cases) name the same ones: a
/// built-in model is loaded once per process, and its calls from
/// concurrent episodes are batched together, as in one `ludus run`. Keyed
/// by the runs' recorded endpoints (files by hash, options).
#[derive(Default)]
struct SharedModels(Mutex<Option<(String, ludus_arena::chat::ModelSetup)>>);

/// The last run a worker thread played, loaded and checked once: its
/// episodes arrive one job at a time.
#[derive(Default)]
struct RunCache {
    run: Option<(String, Prepared, MemoryBase)>,
}

/// The bytes a role's recorded hash names, fetched from the database into
/// the cache (once): their path there.
fn fetch(
    pg: &mut Pg,
    p: &serde_json::Value,
    role: &str,
    cache: &Path,
    extension: &str,
) -> Result<PathBuf> {
    let hash = p["hash"]
        .as_str()
        .context("the run's spec has no plugin hash")?;
    if hash.is_empty() || !hash.chars().all(|c| c.is_ascii_hexdigit()) {
        anyhow::bail!("the run's {role} plugin hash {hash:?} is not a hash");
    }
    let path = cache.join(format!("{hash}.{extension}"));
    if !path.is_file() {
        let bytes = pg.plugin(hash)?;
        let partial = cache.join(format!("{hash}.{}.part", std::process::id()));
        std::fs::write(&partial, bytes)?;
        std::fs::rename(&partial, &path)?;
    }
    Ok(path)
}

/// The recorded agent: a plugin, or a trained policy (`checkpoint:`) whose
/// file the run stored by hash like a plugin's bytes.
fn agent(pg: &mut Pg, spec: &serde_json::Value, cache: &Path) -> Result<AgentSpec> {
    let p = &spec["agent"];
    if p["native"].as_bool() != Some(true) {
        return Ok(AgentSpec::Plugin(
            plugin(pg, spec, "agent", cache)?.context("the run has no agent plugin")?,
        ));
    }
    let source = p["path"].as_str().unwrap_or("");
    if ludus_trainer::agent::checkpoint_path(source).is_none() {
        anyhow::bail!("the run's agent {source:?} is a native agent workers cannot rebuild");
    }
    let path = fetch(pg, p, "agent", cache, "safetensors")?;
    let factory = ludus_trainer::agent::open(&path, p["config"].as_str().unwrap_or(""))?;
    Ok(AgentSpec::Native(factory))
}

/// The recorded plugin a role names, fetched into the cache by its hash.
fn plugin(
    pg: &mut Pg,
    spec: &serde_json::Value,
    role: &str,
    cache: &Path,
) -> Result<Option<PluginSpec>> {
    let p = &spec[role];
    if p.is_null() {
        return Ok(None);
    }
    let path = fetch(pg, p, role, cache, "wasm")?;
    let limits: Limits = match p.get("limits") {
        Some(l) if !l.is_null() => serde_json::from_value(l.clone())?,
        _ => Limits::DEFAULT,
    };
    Ok(Some(PluginSpec {
        path,
        config: p["config"].as_str().unwrap_or("").to_string(),
        limits,
    }))
}

/// Plays `job` into a scratch SQLite file and records it in PostgreSQL
/// with the job's completion; false when the job was no longer ours.
fn play(pg: &mut Pg, job: &Job, name: &str, local: Local, runs: &mut RunCache) -> Result<bool> {
    let scratch = tempfile::tempdir()?;
    let db = scratch.path().join("episode.db");
    if runs.run.as_ref().is_none_or(|(id, _, _)| *id != job.run_id) {
        runs.run = None;
        let prepared = load(pg, &job.run_id, local)?;
        let memory = pg.run_memory(&job.run_id)?;
        runs.run = Some((job.run_id.clone(), prepared, memory));
    }
    let Some((_, prepared, memory)) = runs.run.as_mut() else {
        anyhow::bail!("run {} is not loaded", job.run_id);
    };
    prepared.spec.db = db.clone();
    prepared.run_one(&job.run_id, job.seed, memory.clone())?;
    Ok(pg.complete(job, name, &db)?)
}

/// The `--model` arguments that rebuild a run's recorded model endpoints
/// (`models` in its spec), or why a worker cannot: a server by its URL, a
/// built-in model (`policy:`) from where `place` puts its files.
fn endpoint_args(
    described: &serde_json::Value,
    place: &mut dyn FnMut(&serde_json::Value) -> Result<PathBuf, String>,
) -> Result<Vec<String>, String> {
    let Some(list) = described.as_array() else {
        return Ok(Vec::new());
    };
    list.iter()
        .map(|e| {
            let name = e["name"].as_str().unwrap_or("default");
            let url = e["url"].as_str().unwrap_or("");
            if url.starts_with("policy:") {
                let mut arg = format!("{name}=policy:{}", place(e)?.display());
                if let Some(b) = e["batch"].as_u64() {
                    arg.push_str(&format!(",batch={b}"));
                }
                if e["dtype"].as_str() == Some("bf16") {
                    arg.push_str(",dtype=bf16");
                }
                if e["device"].as_str().is_some_and(|d| d.starts_with("cuda")) {
                    arg.push_str(",device=cuda");
                }
                return Ok(arg);
            }
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(format!(
                    "model endpoint `{name}` ({url}) cannot be rebuilt by a worker: give workers a model server (http://...) or a built-in model (policy:PATH)"
                ));
            }
            let mut arg = format!("{name}={url}");
            if let Some(m) = e["model"].as_str() {
                arg.push_str(&format!(",model={m}"));
            }
            if let Some(v) = e["api_key_env"].as_str() {
                arg.push_str(&format!(",api-key-env={v}"));
            }
            for (key, field) in [("price-in", "price_in"), ("price-out", "price_out"), ("timeout-s", "timeout_s")] {
                if let Some(x) = e[field].as_f64() {
                    arg.push_str(&format!(",{key}={x}"));
                }
            }
            Ok(arg)
        })
        .collect()
}

/// A run's model endpoints, opened by the first of a worker's threads to
/// need them and shared with the others (other endpoints held before are
/// let go; a thread still playing an earlier run keeps its own until it
/// moves on).
fn run_models(
    pg: &mut Pg,
    described: &serde_json::Value,
    local: Local,
) -> Result<ludus_arena::chat::ModelSetup> {
    let key = described.to_string();
    // A thread that panicked while loading left the slot empty (it is
    // emptied first), so a poisoned lock holds nothing half made.
    let mut slot = local
        .models
        .0
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((k, setup)) = slot.as_ref()
        && *k == key
    {
        return Ok(setup.clone());
    }
    *slot = None;
    let args = endpoint_args(described, &mut |e| place_model(pg, e, local.cache))
        .map_err(|e| anyhow::anyhow!(e))?;
    let setup = ludus_trainer::llm::setup(&args, None).map_err(|e| anyhow::anyhow!(e))?;
    *slot = Some((key, setup.clone()));
    Ok(setup)
}

/// A built-in model's files, as the run recorded them (name and hash),
/// fetched from the database into a folder of the cache named by their
/// hashes, each checked against its hash: the model's path there (the
/// folder, or the GGUF file in it).
fn place_model(pg: &mut Pg, e: &serde_json::Value, cache: &Path) -> Result<PathBuf, String> {
    let name = e["name"].as_str().unwrap_or("default");
    let files = e["files"]
        .as_object()
        .filter(|f| !f.is_empty())
        .ok_or_else(|| format!("model endpoint `{name}` was queued without its files"))?;
    let plain = |f: &str| Path::new(f).file_name().and_then(|n| n.to_str()) == Some(f);
    let listed = serde_json::Value::Object(files.clone()).to_string();
    let mut dir = cache.join(format!(
        "model-{}",
        blake3::hash(listed.as_bytes()).to_hex()
    ));
    let folder = e["folder"].as_bool() == Some(true);
    if folder {
        // Under the folder's own name: answers name the model after it.
        let url = e["url"].as_str().unwrap_or("");
        let own = Path::new(url.strip_prefix("policy:").unwrap_or(url))
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| plain(n))
            .ok_or_else(|| format!("model endpoint `{name}`: {url} names no folder"))?;
        dir = dir.join(own);
    }
    std::fs::create_dir_all(&dir).map_err(|err| format!("{}: {err}", dir.display()))?;
    for (file, hash) in files {
        let hash = hash.as_str().unwrap_or("");
        if !plain(file) {
            return Err(format!(
                "model endpoint `{name}`: {file:?} is not a file name"
            ));
        }
        let dest = dir.join(file);
        let cached = std::fs::read(&dest)
            .map(|b| blake3::hash(&b).to_hex().as_str() == hash)
            .unwrap_or(false);
        if cached {
            continue;
        }
        let bytes = pg.plugin(hash).map_err(|err| err.to_string())?;
        if blake3::hash(&bytes).to_hex().as_str() != hash {
            return Err(format!(
                "model endpoint `{name}`: the bytes of {file} do not match the hash the run recorded ({hash})"
            ));
        }
        // Written aside, then renamed into place: a worker beside this one
        // on the same cache never reads half a file.
        let written = tempfile::NamedTempFile::new_in(&dir).and_then(|mut t| {
            std::io::Write::write_all(&mut t, &bytes)?;
            t.persist(&dest).map_err(|e| e.error)
        });
        written.map_err(|err| format!("{}: {err}", dest.display()))?;
    }
    if folder {
        return Ok(dir);
    }
    match files.keys().next() {
        Some(file) if files.len() == 1 => Ok(dir.join(file)),
        _ => Err(format!(
            "model endpoint `{name}`: a model file must be one file"
        )),
    }
}

/// A queued run's plugins, fetched by hash and loaded, with their bytes
/// checked against the hashes the run recorded.
fn load(pg: &mut Pg, run_id: &str, local: Local) -> Result<Prepared> {
    let cache = local.cache;
    let spec = pg.run_spec(run_id)?;
    let env = plugin(pg, &spec, "env", cache)?.context("the run has no env plugin")?;
    let agent = agent(pg, &spec, cache)?;
    let reward = plugin(pg, &spec, "reward", cache)?;
    let run_spec = RunSpec {
        env,
        agent,
        reward,
        episodes: 1,
        seed: spec["seed"].as_u64().unwrap_or(0),
        jobs: 1,
        db: PathBuf::new(),
        models: match spec.get("models") {
            Some(described) => run_models(pg, described, local)?,
            None => Default::default(),
        },
        step_delay: Duration::from_secs_f64(
            spec["step_delay_ms"]
                .as_f64()
                .unwrap_or(0.0)
                .clamp(0.0, 3.6e6)
                / 1e3,
        ),
    };
    let prepared = prepare(run_spec)?;
    // The bytes must be the ones the run recorded (the cache or the
    // database may have been tampered with).
    for (role, loaded) in [
        ("env", Some(prepared.env.hash.clone())),
        ("agent", Some(prepared.agent.hash())),
        ("reward", prepared.reward.as_ref().map(|r| r.hash.clone())),
    ] {
        if let Some(hash) = loaded
            && spec[role]["hash"].as_str() != Some(hash.as_str())
        {
            anyhow::bail!(
                "the {role} plugin's bytes do not match the hash the run recorded ({})",
                spec[role]["hash"].as_str().unwrap_or("none")
            );
        }
    }
    Ok(prepared)
}

/// `ludus run --db postgres://... --workers`: queues the run's episodes
/// and follows them until workers have recorded every one; the report as
/// JSON (`--json`) or a line per episode.
pub fn enqueue_and_follow(url: &str, spec: RunSpec, json: bool) -> Result<ExitCode> {
    let mut pg = connect(url, true)?;
    let prepared = prepare(spec)?;
    let run_id = enqueue(&mut pg, &prepared)?;
    if !json {
        eprintln!(
            "queued run {run_id}: {} episode(s) in {}; start workers with `ludus worker --db URL`",
            prepared.spec.episodes,
            ludus_arena::pg::redact(url)
        );
    }
    follow(&mut pg, &run_id, !json)?;
    let episodes = pg.run_episodes(&run_id)?;
    if json {
        let rows: Vec<serde_json::Value> = episodes
            .iter()
            .map(|e| {
                serde_json::json!({
                    "id": e.id, "index": e.index, "seed": e.seed, "outcome": e.outcome,
                    "return": ludus_core::json_float::text(e.return_).map_or(serde_json::json!(e.return_), serde_json::Value::from),
                    "length": e.length, "success": e.success, "digest": e.digest,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({"run_id": run_id, "db": ludus_arena::pg::redact(url), "episodes": rows})
        );
    } else {
        println!("run {run_id} recorded in {}", ludus_arena::pg::redact(url));
        for e in &episodes {
            println!(
                "  episode {:>4}  {:<11} return {:>10.3}  length {:>6}",
                e.index, e.outcome, e.return_, e.length
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Queues a prepared run's episodes as jobs, with its plugins' bytes; the
/// run's id. What workers cannot rebuild is refused here, before anything
/// is written.
pub fn enqueue(pg: &mut Pg, prepared: &Prepared) -> Result<String> {
    let mut stored = Vec::new();
    if prepared.agent.plugin().is_none() {
        // A trained policy travels like a plugin: its file, by hash.
        let source = prepared.agent.name();
        let Some(path) = ludus_trainer::agent::checkpoint_path(&source) else {
            return Err(UsageError(format!(
                "a queued run's agent must be a plugin or a checkpoint: workers cannot rebuild {source}"
            ))
            .into());
        };
        let bytes = std::fs::read(path).with_context(|| format!("cannot read {path}"))?;
        let hash = blake3::hash(&bytes).to_hex().to_string();
        if hash != prepared.agent.hash() {
            anyhow::bail!("{path} changed while the run was being queued; queue it again");
        }
        stored.push((hash, bytes));
    }
    if let Some(client) = &prepared.spec.models.client {
        // Workers call the same servers (each needs the API key's variable)
        // and load the same built-in models (their files travel below).
        endpoint_args(&client.describe(), &mut |_| Ok(PathBuf::new())).map_err(UsageError)?;
        if prepared.spec.models.cost_cap_usd.is_some() {
            return Err(UsageError(
                "--limit run.cost-usd caps what one process spends: a queued run's workers cannot share it yet; run it without --workers".into(),
            )
            .into());
        }
    }
    if prepared.spec.models.library.is_some() {
        return Err(
            UsageError("a queued run cannot answer model calls from a recording".into()).into(),
        );
    }
    let mut plugins = stored;
    for p in [
        Some(&prepared.env),
        prepared.agent.plugin(),
        prepared.reward.as_ref(),
    ]
    .into_iter()
    .flatten()
    {
        let bytes =
            std::fs::read(&p.path).with_context(|| format!("cannot read {}", p.path.display()))?;
        plugins.push((p.hash.clone(), bytes));
    }
    let (seed, episodes) = (prepared.spec.seed, prepared.spec.episodes);
    let mut recorded = prepared.spec_json();
    // A built-in model travels like a plugin: its files, by hash.
    if let Some(models) = recorded.get_mut("models").and_then(|m| m.as_array_mut()) {
        for e in models {
            let Some(path) = e["url"].as_str().and_then(|u| u.strip_prefix("policy:")) else {
                continue;
            };
            let path = PathBuf::from(path);
            let files = ludus_trainer::llm::PolicyModel::files(&path)
                .map_err(|err| UsageError(err.to_string()))?;
            let mut listed = serde_json::Map::new();
            for (name, file) in files {
                let size = std::fs::metadata(&file)
                    .with_context(|| format!("cannot read {}", file.display()))?
                    .len();
                if size > MAX_QUEUED_FILE {
                    return Err(UsageError(format!(
                        "--model policy:{}: {name} is {} MB, and a queued model's files must each be under 1 GB (PostgreSQL's limit on one value): serve the model over HTTP (scripts/model-server.sh) and give the run its URL",
                        path.display(),
                        size / 1_000_000
                    ))
                    .into());
                }
                let bytes = std::fs::read(&file)
                    .with_context(|| format!("cannot read {}", file.display()))?;
                let hash = blake3::hash(&bytes).to_hex().to_string();
                listed.insert(name, hash.clone().into());
                plugins.push((hash, bytes));
            }
            e["files"] = listed.into();
            e["folder"] = path.is_dir().into();
        }
    }
    if let Some(o) = recorded.as_object_mut() {
        o.insert("seed".into(), seed.into());
        o.insert("queue".into(), true.into());
    }
    let run_id = ludus_arena::new_run_id();
    pg.enqueue(&NewRun {
        id: run_id.clone(),
        seed,
        jobs: prepared.spec.jobs as u64,
        spec: recorded,
        seeds: (0..episodes)
            .map(|i| ludus_core::episode_seed(seed, i))
            .collect(),
        plugins,
    })?;
    Ok(run_id)
}

/// Waits until workers have recorded (or given up on) every episode of a
/// queued run, then marks it finished; an error when some episode failed
/// on every try. With `verbose`, a line each time the count moves.
pub fn follow(pg: &mut Pg, run_id: &str, verbose: bool) -> Result<()> {
    let mut last = u64::MAX;
    let mut moved = std::time::Instant::now();
    let mut hinted = false;
    loop {
        let (done, failed, all) = pg.progress(run_id)?;
        if done != last {
            if verbose {
                eprintln!("{done}/{all} episodes recorded");
            }
            last = done;
            moved = std::time::Instant::now();
        } else if verbose && !hinted && moved.elapsed() > Duration::from_secs(60) {
            eprintln!(
                "no episode recorded for a minute: are workers running? (`ludus worker --db URL`)"
            );
            hinted = true;
        }
        if done + failed == all {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let failures = pg.failures(run_id)?;
    if let Some((index, error)) = failures.first() {
        pg.finish_run(run_id, "failed")?;
        anyhow::bail!(
            "run {run_id}: {} episode(s) failed on every try of the workers (episode {index}: {error})",
            failures.len()
        );
    }
    pg.finish_run(run_id, "finished")?;
    Ok(())
}

/// `ludus run --db postgres://...` without `--workers`: the run is played
/// here into a scratch file and copied into PostgreSQL when it ends.
pub fn scratch_db() -> Result<(tempfile::TempDir, PathBuf)> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("run.db");
    Ok((dir, path))
}
