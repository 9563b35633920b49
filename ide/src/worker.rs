//! Work that runs off the UI thread: each function opens what it needs
//! itself (recordings are not shared between threads) and returns a result
//! the state turns into an event.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ludus_arena::store::{EpisodeRow, RunRow};
use ludus_arena::train_store::MetricRow;
use ludus_arena::{Db, Limits, Plugin, PluginKind};
use ludus_debugger::source::{FrameSource, Recording};
use ludus_debugger::{Session, diff};

/// A plugin file found in the workspace folder.
#[derive(Clone, Debug, PartialEq)]
pub struct PluginEntry {
    pub path: PathBuf,
    pub kind: String,
    pub contract: String,
    pub description: String,
}

/// A plugin's source crate found in the workspace folder: a `Cargo.toml`
/// depending on `ludus-sdk` with one of the features `env`, `agent`, `reward`.
#[derive(Clone, Debug, PartialEq)]
pub struct CrateEntry {
    pub dir: PathBuf,
    pub name: String,
    pub kind: String,
    /// `ludus:plugin@VERSION` from the SDK's WIT, or the SDK's version.
    pub contract: String,
    pub description: String,
    /// Its build, when `scripts/build-plugins.sh` (or cargo) made one.
    pub wasm: Option<PathBuf>,
}

/// The recorded reward of every frame of an episode, for the timeline.
pub fn rewards(db: &Path, episode: i64) -> Result<Vec<f32>, String> {
    let rec = Recording::open(db, episode).map_err(|e| e.to_string())?;
    let len = rec.len();
    let mut out = Vec::with_capacity(len as usize);
    let mut k = 0;
    while k < len {
        let (first, block) = rec.block(k).map_err(|e| e.to_string())?;
        let skip = (k - first) as usize;
        out.extend(block.iter().skip(skip).map(|(f, _)| f.reward));
        k = first + block.len() as u64;
        if block.len() <= skip {
            break;
        }
    }
    Ok(out)
}

/// Every frame where a breakpoint expression holds.
pub fn hits(db: &Path, episode: i64, expr: &str) -> Result<Vec<u64>, String> {
    let session = Session::open(db, episode).map_err(|e| e.to_string())?;
    session.hits(expr).map_err(|e| e.to_string())
}

/// `episode` against `parent`: one line per difference at the first
/// divergence, and that frame.
pub fn diff_against(
    db: &Path,
    parent: i64,
    episode: i64,
) -> Result<(Vec<String>, Option<u64>), String> {
    diff_episodes(db, parent, db, episode)
}

/// Episode `a` of `db_a` against episode `b` of `db_b`, step-aligned: a
/// summary, one line per difference at the first divergence, and that frame.
pub fn diff_episodes(
    db_a: &Path,
    a: i64,
    db_b: &Path,
    b: i64,
) -> Result<(Vec<String>, Option<u64>), String> {
    let open = |db: &Path, id: i64| {
        Recording::open(db, id).map_err(|e| format!("episode {id} in {}: {e}", db.display()))
    };
    let (ra, rb) = (open(db_a, a)?, open(db_b, b)?);
    let d = diff::diff_episodes(&ra, &rb).map_err(|e| e.to_string())?;
    let name = |db: &Path, id: i64| {
        if db_a == db_b {
            format!("episode {id}")
        } else {
            format!("episode {id} of {}", db.display())
        }
    };
    let mut lines = vec![format!(
        "{} ({}, return {:.3}, {} frames) vs {} ({}, return {:.3}, {} frames)",
        name(db_a, a),
        d.a.outcome,
        d.a.return_,
        d.a.frames,
        name(db_b, b),
        d.b.outcome,
        d.b.return_,
        d.b.frames
    )];
    if d.identical {
        lines.push("identical".into());
    }
    lines.push(format!(
        "{} of {} compared frames differ",
        d.differing, d.compared
    ));
    let first = d.first_divergence.as_ref().map(|div| div.frame);
    if let Some(div) = &d.first_divergence {
        lines.push(format!("first divergence at frame {}:", div.frame));
        lines.extend(div.changes.iter().map(|c| format!("  {}", c.summary())));
    }
    lines.extend(d.ending.iter().cloned());
    Ok((lines, first))
}

/// Every .wasm file under `dir` (skipping build intermediates), described:
/// kind, contract, and the plugin's own description.
pub fn scan_plugins(dir: &Path) -> Vec<PluginEntry> {
    let mut files = Vec::new();
    collect_wasm(dir, &mut files);
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let mut last_err = String::new();
            for kind in [PluginKind::Env, PluginKind::Agent, PluginKind::Reward] {
                match Plugin::load(&path, kind, Limits::DEFAULT) {
                    Ok(p) => {
                        let description = match p.validate("") {
                            Ok(info) => {
                                let name = info["name"].as_str().unwrap_or("").to_string();
                                let desc = info["description"].as_str().unwrap_or("").to_string();
                                format!("{name}: {desc}")
                            }
                            Err(e) => e.to_string(),
                        };
                        return PluginEntry {
                            path,
                            kind: format!("{kind:?}").to_lowercase(),
                            contract: format!("ludus:plugin@{}", ludus_arena::CONTRACT_VERSION),
                            description,
                        };
                    }
                    Err(ludus_arena::LoadError::WrongKind { .. }) => continue,
                    Err(e) => {
                        last_err = e.to_string();
                        break;
                    }
                }
            }
            PluginEntry {
                path,
                kind: "not a ludus plugin".into(),
                contract: String::new(),
                description: last_err,
            }
        })
        .collect()
}

/// Files under `dir` (at most 6 folders down, at most `limit` of them) whose
/// name `keep` accepts, descending into the folders `descend` accepts (given
/// the folder's parent and its name). Hidden folders and `node_modules` are
/// never entered.
fn walk(
    dir: &Path,
    limit: usize,
    descend: &dyn Fn(&Path, &str) -> bool,
    keep: &dyn Fn(&str) -> bool,
    out: &mut Vec<PathBuf>,
) {
    fn go(
        dir: &Path,
        depth: usize,
        limit: usize,
        descend: &dyn Fn(&Path, &str) -> bool,
        keep: &dyn Fn(&str) -> bool,
        out: &mut Vec<PathBuf>,
    ) {
        if depth > 6 || out.len() > limit {
            return;
        }
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if p.is_dir() {
                if !name.starts_with('.') && name != "node_modules" && descend(dir, &name) {
                    go(&p, depth + 1, limit, descend, keep, out);
                }
            } else if keep(&name) {
                out.push(p);
            }
        }
    }
    go(dir, 0, limit, descend, keep, out);
}

/// `.wasm` files under `dir`. Cargo's own folders under target/<profile>/
/// hold copies and build-script output; a plugin project's `build/` is where
/// `ludus build` puts Python and JS components, so it is scanned.
fn collect_wasm(dir: &Path, out: &mut Vec<PathBuf>) {
    let descend = |parent: &Path, name: &str| {
        let in_profile = parent
            .file_name()
            .is_some_and(|d| d == "debug" || d == "release");
        !(name == "deps" || name == "incremental" || (name == "build" && in_profile))
    };
    walk(dir, 200, &descend, &|name| name.ends_with(".wasm"), out);
}

/// Plugin source crates under `dir`: every `Cargo.toml` with a package that
/// depends on `ludus-sdk` with the feature `env`, `agent` or `reward`.
pub fn scan_crates(dir: &Path) -> Vec<CrateEntry> {
    let mut manifests = Vec::new();
    collect_manifests(dir, &mut manifests);
    manifests.sort();
    manifests.iter().filter_map(|m| describe_crate(m)).collect()
}

fn collect_manifests(dir: &Path, out: &mut Vec<PathBuf>) {
    walk(
        dir,
        500,
        &|_, name| name != "target",
        &|name| name == "Cargo.toml",
        out,
    );
}

fn read_toml(path: &Path) -> Option<toml::Table> {
    std::fs::read_to_string(path).ok()?.parse().ok()
}

/// A crate's kind, contract and description, when it is a ludus plugin.
fn describe_crate(manifest: &Path) -> Option<CrateEntry> {
    let doc = read_toml(manifest)?;
    let package = doc.get("package")?.as_table()?;
    let name = package.get("name")?.as_str()?.to_string();
    let dir = manifest.parent()?.to_path_buf();
    let sdk = doc.get("dependencies")?.as_table()?.get("ludus-sdk")?;
    let features: Vec<&str> = sdk
        .get("features")
        .and_then(|f| f.as_array())
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    let kinds: Vec<&str> = ["env", "agent", "reward"]
        .into_iter()
        .filter(|k| features.contains(k))
        .collect();
    let kind = match kinds.as_slice() {
        [k] => k.to_string(),
        [] => "ludus-sdk without a feature (add env, agent or reward)".into(),
        _ => format!("{} (more than one feature: keep one)", kinds.join(", ")),
    };
    let description = match package.get("description") {
        Some(toml::Value::String(d)) => d.clone(),
        Some(toml::Value::Table(t)) if t.get("workspace").is_some() => workspace_root(&dir)
            .and_then(|(_, ws)| {
                ws.get("workspace")?
                    .get("package")?
                    .get("description")?
                    .as_str()
                    .map(String::from)
            })
            .unwrap_or_default(),
        _ => String::new(),
    };
    let contract = sdk_contract(&dir, sdk);
    // Its build, where the plugins' workspace (or the crate) puts it.
    let lib = name.replace('-', "_");
    let target = workspace_root(&dir).map_or(dir.clone(), |(root, _)| root);
    let wasm = [
        target.join(format!("target/wasm32-wasip2/release/{lib}.wasm")),
        dir.join(format!("target/wasm32-wasip2/release/{lib}.wasm")),
    ]
    .into_iter()
    .find(|p| p.is_file());
    Some(CrateEntry {
        dir,
        name,
        kind,
        contract,
        description,
        wasm,
    })
}

/// The nearest folder above `dir` (or `dir` itself) whose Cargo.toml has a
/// `[workspace]`, and that manifest.
fn workspace_root(dir: &Path) -> Option<(PathBuf, toml::Table)> {
    let mut d = Some(dir);
    while let Some(p) = d {
        if let Some(doc) = read_toml(&p.join("Cargo.toml"))
            && doc.contains_key("workspace")
        {
            return Some((p.to_path_buf(), doc));
        }
        d = p.parent();
    }
    None
}

/// The contract the crate's SDK implements: the WIT package next to a path
/// dependency's SDK, else the SDK version it asks for.
fn sdk_contract(dir: &Path, dep: &toml::Value) -> String {
    let (base, dep) = match dep.get("workspace").and_then(|w| w.as_bool()) {
        Some(true) => match workspace_root(dir).and_then(|(root, ws)| {
            let d = ws
                .get("workspace")?
                .get("dependencies")?
                .get("ludus-sdk")?
                .clone();
            Some((root, d))
        }) {
            Some(found) => found,
            None => {
                return "unknown (ludus-sdk = { workspace = true } without a workspace entry)"
                    .into();
            }
        },
        _ => (dir.to_path_buf(), dep.clone()),
    };
    if let Some(path) = dep.get("path").and_then(|p| p.as_str()) {
        let wit = base.join(path).join("../wit");
        if let Some(v) = wit_package_version(&wit) {
            return format!("ludus:plugin@{v}");
        }
    }
    let version = dep
        .as_str()
        .or_else(|| dep.get("version").and_then(|v| v.as_str()));
    match version {
        Some(v) => format!("ludus:plugin (ludus-sdk {v})"),
        None => "unknown (cannot find the SDK's WIT)".into(),
    }
}

/// The version in `package ludus:plugin@X;` of the .wit files in `wit`.
fn wit_package_version(wit: &Path) -> Option<String> {
    for e in std::fs::read_dir(wit).ok()?.flatten() {
        let Ok(text) = std::fs::read_to_string(e.path()) else {
            continue;
        };
        for line in text.lines() {
            if let Some(rest) = line.trim().strip_prefix("package ludus:plugin@") {
                return Some(rest.trim_end_matches(';').trim().to_string());
            }
        }
    }
    None
}

/// What the Runs tab shows of a database: its runs, and one run's episodes.
#[derive(Debug)]
pub struct DbRead {
    pub runs: Vec<RunRow>,
    /// The run asked for (the first run when none was) and its episodes.
    pub episodes: Option<(String, Vec<EpisodeRow>)>,
}

/// Reads the runs of `db` and the episodes of `run` (of the first run when
/// `None`).
pub fn read_db(db: &Path, run: Option<String>) -> Result<DbRead, String> {
    let bad = |e: ludus_arena::StoreError| format!("database {}: {e}", db.display());
    let d = Db::open(db).map_err(bad)?;
    let runs = d.runs().map_err(bad)?;
    let episodes = match run.or_else(|| runs.first().map(|r| r.id.clone())) {
        Some(r) => {
            let rows = d.episodes(&r).map_err(bad)?;
            Some((r, rows))
        }
        None => None,
    };
    Ok(DbRead { runs, episodes })
}

/// An episode opened for the debugger.
pub struct OpenedEpisode {
    pub episode: EpisodeRow,
    pub run: RunRow,
    /// Its parents, oldest first.
    pub ancestors: Vec<EpisodeRow>,
    pub session: Session,
    /// Its branches and theirs, each under its parent.
    pub branches: Vec<(EpisodeRow, usize)>,
    /// A sampled training episode's advantage at each step it was trained
    /// with (empty for other episodes).
    pub advantages: BTreeMap<u64, f32>,
}

/// Opens episode `id` of `db`: its row, its ancestors, a debugger session
/// on it, and its branch tree.
pub fn open_episode(db: &Path, id: i64) -> Result<OpenedEpisode, String> {
    let d = Db::open(db).map_err(|e| e.to_string())?;
    let episode = d.episode(id).map_err(|e| e.to_string())?;
    let run = d.run(&episode.run_id).map_err(|e| e.to_string())?;
    let mut ancestors = Vec::new();
    let mut parent = episode.parent_episode;
    while let Some(p) = parent {
        let row = d.episode(p).map_err(|e| e.to_string())?;
        parent = row.parent_episode;
        ancestors.insert(0, row);
        if ancestors.len() > 64 {
            break;
        }
    }
    let session = Session::open(db, id).map_err(|e| e.to_string())?;
    let branches = branches_of(&d, id)?;
    let advantages = d
        .train_steps(id)
        .map(|steps| {
            steps
                .into_iter()
                .filter_map(|s| Some((s.step, s.stat.advantage?)))
                .collect()
        })
        .unwrap_or_default();
    Ok(OpenedEpisode {
        episode,
        run,
        ancestors,
        session,
        branches,
        advantages,
    })
}

/// The branch tree under episode `id` of `db`.
pub fn branch_tree(db: &Path, id: i64) -> Result<Vec<(EpisodeRow, usize)>, String> {
    let d = Db::open(db).map_err(|e| e.to_string())?;
    branches_of(&d, id)
}

fn branches_of(db: &Db, id: i64) -> Result<Vec<(EpisodeRow, usize)>, String> {
    let mut out = Vec::new();
    let mut stack: Vec<(i64, usize)> = vec![(id, 0)];
    while let Some((id, depth)) = stack.pop() {
        let children = db
            .branches(id)
            .map_err(|e| format!("branches of episode {id}: {e}"))?;
        for c in children.into_iter().rev() {
            stack.push((c.id, depth + 1));
            out.push((c, depth));
        }
        if out.len() > 500 {
            break;
        }
    }
    // Children were pushed in reverse for the stack; show them in id order
    // under their parent.
    Ok(order_tree(out))
}

/// Puts each branch right under its parent, children in id order.
fn order_tree(rows: Vec<(EpisodeRow, usize)>) -> Vec<(EpisodeRow, usize)> {
    let mut by_parent: BTreeMap<Option<i64>, Vec<(EpisodeRow, usize)>> = BTreeMap::new();
    let root_depth_parent = rows
        .iter()
        .find(|(_, d)| *d == 0)
        .and_then(|(r, _)| r.parent_episode);
    for (r, d) in rows {
        by_parent.entry(r.parent_episode).or_default().push((r, d));
    }
    for v in by_parent.values_mut() {
        v.sort_by_key(|(r, _)| r.id);
    }
    let mut out = Vec::new();
    fn walk(
        parent: Option<i64>,
        by_parent: &BTreeMap<Option<i64>, Vec<(EpisodeRow, usize)>>,
        out: &mut Vec<(EpisodeRow, usize)>,
    ) {
        if let Some(children) = by_parent.get(&parent) {
            for (r, d) in children {
                out.push((r.clone(), *d));
                walk(Some(r.id), by_parent, out);
            }
        }
    }
    walk(root_depth_parent, &by_parent, &mut out);
    out
}

/// A training run's recorded metrics and episodes.
pub fn training_record(db: &Path, run: &str) -> Result<(Vec<MetricRow>, Vec<EpisodeRow>), String> {
    let d = Db::open(db).map_err(|e| format!("database {}: {e}", db.display()))?;
    let metrics = d.train_metrics(run).map_err(|e| e.to_string())?;
    let episodes = d.episodes(run).map_err(|e| e.to_string())?;
    Ok((metrics, episodes))
}

/// Copies every run of the PostgreSQL database at `url` into a new local
/// SQLite file, with the same ids, and returns the file: how the IDE reads
/// such a database. The copy is kept (in the user's cache folder), since
/// forks made in the IDE are written into it; `ludus copy FILE URL` sends
/// them back.
pub fn mirror(url: &str) -> Result<PathBuf, String> {
    use ludus_arena::copy::Location;
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("ludus")
        .join("mirrors");
    std::fs::create_dir_all(&base).map_err(|e| {
        format!(
            "cannot make the folder {} for a local copy: {e}",
            base.display()
        )
    })?;
    let name = ludus_arena::pg::database_name(url);
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let local = base.join(format!("{name}-{stamp}-{}.db", std::process::id()));
    ludus_arena::copy::mirror(&Location::Postgres(url.to_string()), &local)
        .map_err(|e| e.to_string())?;
    Ok(local)
}
