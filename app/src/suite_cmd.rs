//! `ludus suite run` and `ludus suite baseline`: read the suite file, run its
//! cases through the arena into one database, hand the episodes to
//! `ludus-suite` to judge, print and write the reports, pick the exit code.

use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use ludus_arena::run::{Prepared, Progress, prepare};
use ludus_arena::{Limits, Plugin, PluginKind, PluginSpec, RunSpec};
use ludus_suite::baseline::{self, Baseline};
use ludus_suite::model::{self, Case, PluginRef, Suite, SuiteError};
use ludus_suite::report::{self, Against, CaseResult, SuiteReport};
use ludus_suite::stats::Episode;

use crate::UsageError;
use crate::cli::{SuiteArgs, SuiteBaselineArgs, SuiteCommand, SuiteRunArgs};
use crate::run_cmd::{agent_spec, parse_limits};

pub fn run(args: SuiteArgs) -> Result<ExitCode> {
    match args.command {
        SuiteCommand::Run(a) => run_suite(a),
        SuiteCommand::Baseline(a) => write_baseline(a),
    }
}

fn usage(e: impl std::fmt::Display) -> anyhow::Error {
    UsageError(e.to_string()).into()
}

/// A folder an output file goes into must exist before anything runs.
fn check_parent(flag: &str, path: &Path) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.is_dir()
    {
        return Err(usage(format!(
            "{flag} {}: folder {} does not exist",
            path.display(),
            dir.display()
        )));
    }
    Ok(())
}

/// Reads, parses and filters the suite; checks that every plugin file exists
/// and every limit is valid; loads every plugin. Nothing is written yet.
fn load(
    path: &Path,
    filter: Option<&str>,
    db: &Path,
    jobs: Option<usize>,
) -> Result<(Suite, Vec<(Case, Prepared)>)> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| usage(format!("cannot read suite file {}: {e}", path.display())))?;
    let mut suite = model::parse(&text, path).map_err(usage)?;
    if let Some(p) = filter {
        suite.cases = model::filter(&suite.cases, p).map_err(usage)?;
        if suite.cases.is_empty() {
            return Err(usage(format!(
                "--filter `{p}` matches no case of {}",
                path.display()
            )));
        }
    }
    let jobs = jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if jobs == 0 {
        return Err(usage("--jobs must be at least 1"));
    }
    let mut prepared = Vec::new();
    for case in &suite.cases {
        let plugins = [Some(&case.env), Some(&case.agent), case.reward.as_ref()];
        // A `checkpoint:` agent is loaded and checked when its spec is built.
        let agent_plugin = Some(&case.agent).filter(|a| a.checkpoint().is_none());
        for p in [Some(&case.env), agent_plugin, case.reward.as_ref()]
            .iter()
            .flatten()
        {
            if !p.path.is_file() {
                return Err(usage(SuiteError::at(
                    path,
                    &p.at,
                    format!(
                        "plugin file {} not found (build the plugins first, e.g. scripts/build-plugins.sh)",
                        p.path.display()
                    ),
                )));
            }
        }
        let roles = [
            (Some(&case.env), PluginKind::Env),
            (agent_plugin, PluginKind::Agent),
            (case.reward.as_ref(), PluginKind::Reward),
        ];
        for (p, kind) in roles {
            // Loaded once here to blame the right key; `prepare` loads again
            // from the compile cache.
            if let Some(p) = p
                && let Err(e) = Plugin::load(&p.path, kind, Limits::DEFAULT)
            {
                return Err(usage(SuiteError::at(path, &p.at, e.to_string())));
            }
        }
        for l in &case.limits {
            parse_limits(std::slice::from_ref(&l.item))
                .map_err(|e| usage(SuiteError::at(path, &l.at, e.0)))?;
        }
        let items: Vec<String> = case.limits.iter().map(|l| l.item.clone()).collect();
        let [env_limits, agent_limits, reward_limits] = parse_limits(&items).map_err(usage)?;
        let spec = |p: &PluginRef, limits| PluginSpec {
            path: p.path.clone(),
            config: p.config.clone(),
            limits,
        };
        let run_spec = RunSpec {
            env: spec(&case.env, env_limits),
            agent: agent_spec(&case.agent.path, &case.agent.config, agent_limits)
                .map_err(|e| usage(SuiteError::at(path, &case.agent.at, e.0)))?,
            reward: case.reward.as_ref().map(|r| spec(r, reward_limits)),
            episodes: case.episodes,
            seed: case.seed,
            jobs,
            db: db.to_path_buf(),
            models: {
                let specs: Vec<String> = case.models.iter().map(|m| m.item.clone()).collect();
                crate::run_cmd::model_setup(&specs, &items).map_err(|e| {
                    let at = case.models.first().map_or(&case.at, |m| &m.at);
                    usage(SuiteError::at(path, at, e.0))
                })?
            },
            step_delay: std::time::Duration::ZERO,
        };
        let ready = prepare(run_spec).map_err(|e| {
            let message = e.to_string();
            // Point at the plugin the error is about when it names one.
            let at = plugins
                .iter()
                .flatten()
                .find(|p| {
                    let file = p.checkpoint().unwrap_or_else(|| p.path.clone());
                    message.contains(&file.display().to_string())
                })
                .map_or(&case.at, |p| &p.at);
            usage(SuiteError::at(
                path,
                at,
                format!("case `{}`: {message}", case.name),
            ))
        })?;
        prepared.push((case.clone(), ready));
    }
    Ok((suite, prepared))
}

/// Runs every case in order, each with its episodes in parallel.
fn run_cases(suite: &Suite, cases: &[(Case, Prepared)], quiet: bool) -> Result<Vec<Outcome>> {
    let mut out = Vec::new();
    for (i, (case, prepared)) in cases.iter().enumerate() {
        let progress = Progress::default();
        let bar = if quiet {
            ProgressBar::hidden()
        } else {
            ProgressBar::new(case.episodes)
        };
        bar.set_style(
            ProgressStyle::with_template("{spinner} {prefix} {bar:30} {pos}/{len} episodes {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_prefix(format!("[{}/{}] {}", i + 1, cases.len(), case.name));
        let done = AtomicBool::new(false);
        let (report, wall) = std::thread::scope(|scope| {
            let (progress, bar, done) = (&progress, &bar, &done);
            let ticker = std::thread::Builder::new()
                .name("ludus-suite-progress".into())
                .spawn_scoped(scope, move || {
                    while !done.load(Ordering::Relaxed) {
                        bar.set_position(progress.episodes_done.load(Ordering::Relaxed));
                        std::thread::park_timeout(Duration::from_millis(100));
                    }
                });
            let started = Instant::now();
            let r = prepared.run(progress);
            let wall = started.elapsed().as_secs_f64();
            done.store(true, Ordering::Relaxed);
            match ticker {
                Ok(t) => t.thread().unpark(),
                Err(e) => tracing::warn!("no progress display: {e}"),
            }
            r.map(|r| (r, wall))
        })
        .with_context(|| format!("case `{}` of {}", case.name, suite.file.display()))?;
        bar.finish_and_clear();
        let mut episodes: Vec<Episode> = report
            .episodes
            .iter()
            .map(|e| Episode {
                id: e.id,
                index: e.index,
                seed: e.seed,
                outcome: e.outcome.as_str().to_string(),
                return_: e.return_,
                length: e.length,
                success: e.success,
                digest: e.digest.clone(),
                error: e.error.clone(),
                model_calls: e.model.model_calls,
                tokens: e.model.tokens_in + e.model.tokens_out,
                cost_usd: e.model.cost_usd,
            })
            .collect();
        episodes.sort_by_key(|e| e.index);
        out.push(Outcome {
            case: case.clone(),
            episodes,
            wall,
        });
    }
    Ok(out)
}

struct Outcome {
    case: Case,
    episodes: Vec<Episode>,
    wall: f64,
}

fn read_baseline(path: &Path) -> Result<Baseline> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| usage(format!("cannot read baseline {}: {e}", path.display())))?;
    let b: Baseline = serde_json::from_str(&text).map_err(|e| {
        usage(format!(
            "baseline {}: not a baseline file ({e}); write one with `ludus suite baseline SUITE.toml --out FILE`",
            path.display()
        ))
    })?;
    if b.format != baseline::FORMAT {
        return Err(usage(format!(
            "baseline {}: format {} is not the supported {}; write it again with this ludus",
            path.display(),
            b.format,
            baseline::FORMAT
        )));
    }
    Ok(b)
}

/// Runs every case through the PostgreSQL job queue: all cases are queued
/// at once (workers play them side by side), then each is followed to its
/// end; a case's wall time runs from the queueing to its last episode.
fn run_cases_queued(url: &str, cases: &[(Case, Prepared)], quiet: bool) -> Result<Vec<Outcome>> {
    let mut pg = crate::worker_cmd::connect(url, true)?;
    let started = Instant::now();
    let mut queued = Vec::new();
    for (case, prepared) in cases {
        let run_id = crate::worker_cmd::enqueue(&mut pg, prepared)
            .with_context(|| format!("case `{}`", case.name))?;
        if !quiet {
            eprintln!(
                "queued case `{}` as run {run_id}: {} episode(s)",
                case.name, case.episodes
            );
        }
        queued.push((case, run_id));
    }
    if !quiet {
        eprintln!(
            "waiting for workers (`ludus worker --db URL`) on {}",
            ludus_arena::pg::redact(url)
        );
    }
    let mut out = Vec::new();
    for (case, run_id) in queued {
        crate::worker_cmd::follow(&mut pg, &run_id, false)
            .with_context(|| format!("case `{}`", case.name))?;
        let wall = started.elapsed().as_secs_f64();
        let episodes = pg
            .run_episodes(&run_id)?
            .into_iter()
            .map(|e| Episode {
                id: e.id,
                index: e.index,
                seed: e.seed,
                outcome: e.outcome,
                return_: e.return_,
                length: e.length,
                success: e.success,
                digest: e.digest.unwrap_or_default(),
                error: e.error,
                model_calls: e.model_calls,
                tokens: e.tokens,
                cost_usd: e.cost_usd,
            })
            .collect();
        out.push(Outcome {
            case: case.clone(),
            episodes,
            wall,
        });
    }
    Ok(out)
}

/// Where a suite's cases are recorded: the SQLite `--db`, or for a
/// PostgreSQL one (checked reachable first) a scratch file whose runs are
/// copied there when every case has run.
struct Target {
    url: Option<String>,
    scratch: Option<(tempfile::TempDir, std::path::PathBuf)>,
    local: std::path::PathBuf,
}

impl Target {
    fn new(db: &Path) -> Result<Target> {
        if !ludus_arena::copy::is_postgres(db) {
            check_parent("--db", db)?;
            return Ok(Target {
                url: None,
                scratch: None,
                local: db.to_path_buf(),
            });
        }
        let url = db.to_string_lossy().into_owned();
        drop(crate::worker_cmd::connect(&url, true)?);
        let (dir, local) = crate::worker_cmd::scratch_db()?;
        Ok(Target {
            url: Some(url),
            scratch: Some((dir, local.clone())),
            local,
        })
    }

    /// The database as reports name it (a URL without its password).
    fn shown(&self) -> String {
        match &self.url {
            Some(url) => ludus_arena::pg::redact(url),
            None => self.local.display().to_string(),
        }
    }

    /// Copies the played runs into PostgreSQL, where the episodes get that
    /// database's ids (the ones the reports' `ludus debug` commands name).
    fn send(&self, outcomes: &mut [Outcome]) -> Result<()> {
        let (Some(url), Some((_, path))) = (&self.url, &self.scratch) else {
            return Ok(());
        };
        use ludus_arena::copy::{Location, copy};
        let copied = copy(
            &Location::Sqlite(path.clone()),
            &Location::Postgres(url.clone()),
            None,
        )
        .map_err(|e| anyhow::anyhow!("recording the suite into PostgreSQL: {e}"))?;
        for e in outcomes.iter_mut().flat_map(|o| o.episodes.iter_mut()) {
            if let Some(id) = copied.ids.get(&e.id) {
                e.id = *id;
            }
        }
        Ok(())
    }
}

fn run_suite(args: SuiteRunArgs) -> Result<ExitCode> {
    if args.workers && !ludus_arena::copy::is_postgres(&args.db) {
        return Err(usage(
            "--workers needs a PostgreSQL --db (postgres://...): the job queue lives there",
        ));
    }
    if let Some(p) = &args.junit {
        check_parent("--junit", p)?;
    }
    if let Some(p) = &args.markdown {
        check_parent("--markdown", p)?;
    }
    let base = args.baseline.as_deref().map(read_baseline).transpose()?;
    let target = Target::new(&args.db)?;
    let (suite, cases) = load(
        &args.suite,
        args.filter.as_deref(),
        &target.local,
        args.jobs,
    )?;
    if let Some(b) = &base
        && b.suite != suite.name
    {
        tracing::warn!(
            "baseline was written for suite `{}`, this is suite `{}`",
            b.suite,
            suite.name
        );
    }
    let outcomes = match (&target.url, args.workers) {
        (Some(url), true) => run_cases_queued(url, &cases, args.json)?,
        _ => {
            let mut outcomes = run_cases(&suite, &cases, args.json)?;
            target.send(&mut outcomes)?;
            outcomes
        }
    };
    let shown_db = target.shown();
    let results: Vec<CaseResult> = outcomes
        .into_iter()
        .map(|o| {
            let against = match base.as_ref().map(|b| b.cases.get(&o.case.name)) {
                None => Against::Nothing,
                Some(None) => Against::Missing,
                Some(Some(case)) => Against::Baseline {
                    case,
                    alpha: suite.alpha,
                    resamples: suite.resamples,
                },
            };
            report::judge(&o.case, o.episodes, o.wall, against)
        })
        .collect();
    let r = SuiteReport::new(
        &suite.name,
        &suite.file.display().to_string(),
        &shown_db,
        suite.alpha,
        results,
    );
    if args.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        print!("{}", report::text(&r));
    }
    if let Some(p) = &args.junit {
        let xml = report::junit(&r).context("rendering the JUnit report")?;
        std::fs::write(p, xml).with_context(|| format!("writing {}", p.display()))?;
    }
    if let Some(p) = &args.markdown {
        std::fs::write(p, report::markdown(&r))
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(ExitCode::from(r.exit_code()))
}

fn write_baseline(args: SuiteBaselineArgs) -> Result<ExitCode> {
    check_parent("--out", &args.out)?;
    let target = Target::new(&args.db)?;
    let (suite, cases) = load(
        &args.suite,
        args.filter.as_deref(),
        &target.local,
        args.jobs,
    )?;
    let mut outcomes = run_cases(&suite, &cases, false)?;
    target.send(&mut outcomes)?;
    let mut b = Baseline {
        format: baseline::FORMAT,
        suite: suite.name.clone(),
        cases: Default::default(),
    };
    let mut results = Vec::new();
    for o in outcomes {
        let r = report::judge(&o.case, o.episodes, o.wall, Against::Nothing);
        b.cases.insert(r.name.clone(), report::baseline_case(&r));
        results.push(r);
    }
    let r = SuiteReport::new(
        &suite.name,
        &suite.file.display().to_string(),
        &target.shown(),
        suite.alpha,
        results,
    );
    print!("{}", report::text(&r));
    let json = serde_json::to_string_pretty(&b)?;
    std::fs::write(&args.out, json).with_context(|| format!("writing {}", args.out.display()))?;
    println!(
        "baseline of {} cases written to {}",
        b.cases.len(),
        args.out.display()
    );
    if r.failed > 0 {
        tracing::warn!(
            "{} case(s) of the baseline fall short of their expectations",
            r.failed
        );
    }
    Ok(ExitCode::SUCCESS)
}
