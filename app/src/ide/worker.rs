//! Work that runs off the UI thread: each function opens what it needs
//! itself (recordings are not shared between threads) and returns a result
//! the state turns into an event.

use std::path::{Path, PathBuf};

use ludus_arena::{Limits, Plugin, PluginKind};
use ludus_debugger::source::{FrameSource, Recording};
use ludus_debugger::{Session, diff};

use super::state::PluginEntry;

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
    let a = Recording::open(db, parent).map_err(|e| e.to_string())?;
    let b = Recording::open(db, episode).map_err(|e| e.to_string())?;
    let d = diff::diff_episodes(&a, &b).map_err(|e| e.to_string())?;
    let mut lines = vec![format!(
        "episode {parent} ({}, return {:.3}, {} frames) vs episode {episode} ({}, return {:.3}, {} frames)",
        d.a.outcome, d.a.return_, d.a.frames, d.b.outcome, d.b.return_, d.b.frames
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
    collect_wasm(dir, 0, &mut files);
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

fn collect_wasm(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
    if depth > 6 || out.len() > 200 {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if p.is_dir() {
            if !(name.starts_with('.')
                || name == "deps"
                || name == "build"
                || name == "incremental")
            {
                collect_wasm(&p, depth + 1, out);
            }
        } else if name.ends_with(".wasm") {
            out.push(p);
        }
    }
}
