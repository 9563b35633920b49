//! ARCHITECTURE.md's invariants that are cheap to check from the sources:
//! which crate alone depends on wasmtime, SQLite, libtorch, egui and the
//! benchmarks, and that no two modules of a crate import each other.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_path_buf()
}

/// The workspace's crates: (folder, package name).
const CRATES: &[(&str, &str)] = &[
    ("core", "ludus-core"),
    ("arena", "ludus-arena"),
    ("llm", "ludus-llm"),
    ("debugger", "ludus-debugger"),
    ("suite", "ludus-suite"),
    ("trainer", "ludus-trainer"),
    ("ide", "ludus-ide"),
    ("bench", "ludus-bench"),
    ("app", "ludus"),
    ("python", "ludus-python"),
    ("serve", "ludus-serve"),
];

/// The names of a crate's normal (not dev) dependencies.
fn dependencies(dir: &str) -> BTreeSet<String> {
    let path = root().join(dir).join("Cargo.toml");
    let text = std::fs::read_to_string(&path).expect("Cargo.toml");
    let manifest: toml::Table = text.parse().expect("a valid Cargo.toml");
    let mut names = BTreeSet::new();
    for key in ["dependencies", "build-dependencies"] {
        if let Some(deps) = manifest.get(key).and_then(|d| d.as_table()) {
            names.extend(deps.keys().cloned());
        }
    }
    names
}

#[test]
fn heavy_dependencies_stay_in_their_one_crate() {
    // (dependency, the only crate that may name it)
    let owners = [
        ("wasmtime", "arena"),
        ("wasmtime-wasi", "arena"),
        ("rusqlite", "arena"),
        ("tch", "trainer"),
        ("eframe", "ide"),
        ("egui_plot", "ide"),
        ("ureq", "llm"),
        ("parquet", "app"),
        ("arrow-array", "app"),
        ("pyo3", "python"),
        ("tungstenite", "serve"),
        ("postgres", "arena"),
        ("httparse", "serve"),
    ];
    let mut wrong = Vec::new();
    for (dir, _) in CRATES {
        let deps = dependencies(dir);
        for (dep, owner) in owners {
            if deps.contains(dep) && *dir != owner {
                wrong.push(format!("{dir} depends on {dep} (only {owner} may)"));
            }
        }
    }
    // No library depends on the benchmarks.
    for (dir, _) in CRATES {
        if *dir != "app" && dependencies(dir).contains("ludus-bench") {
            wrong.push(format!("{dir} depends on ludus-bench"));
        }
    }
    // The shared crate stays light.
    let core: BTreeSet<String> = dependencies("core");
    let allowed: BTreeSet<String> = ["serde", "thiserror"].map(String::from).into();
    if !core.is_subset(&allowed) {
        wrong.push(format!(
            "core depends on {core:?}; only serde and thiserror"
        ));
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// A crate's source files as module paths (`run`, `ide::state`) with their text.
fn modules(dir: &str) -> BTreeMap<String, String> {
    fn walk(src: &Path, at: &Path, out: &mut BTreeMap<String, String>) {
        let Ok(entries) = std::fs::read_dir(at) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() {
                walk(src, &path, out);
                continue;
            }
            if path.extension().and_then(|x| x.to_str()) != Some("rs") {
                continue;
            }
            let rel = path.strip_prefix(src).expect("under src");
            let mut parts: Vec<String> = rel
                .with_extension("")
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if matches!(
                parts.last().map(String::as_str),
                Some("mod" | "lib" | "main")
            ) {
                parts.pop();
            }
            let text = std::fs::read_to_string(&path).expect("source");
            out.insert(parts.join("::"), text);
        }
    }
    let src = root().join(dir).join("src");
    let mut out = BTreeMap::new();
    walk(&src, &src, &mut out);
    out
}

/// The modules `text` (module `me`) refers to in code (not comments), among `known`.
fn references(me: &str, text: &str, known: &BTreeSet<String>) -> BTreeSet<String> {
    // Code only: not comments, and not the test module (tests may use any
    // module's helpers).
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    };
    let code: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .map(|l| format!("{l}\n"))
        .collect();
    let text = code.as_str();
    let mut out = BTreeSet::new();
    let parent: Vec<&str> = me.split("::").filter(|s| !s.is_empty()).collect();
    for (prefix, base) in [
        ("crate::", Vec::new()),
        ("super::", parent[..parent.len().saturating_sub(1)].to_vec()),
    ] {
        for (i, _) in text.match_indices(prefix) {
            // Only a path's start: not `foo::crate::` or `super::super::`.
            let before = text[..i].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let rest = &text[i + prefix.len()..];
            let path: Vec<&str> = rest
                .split("::")
                .map(|seg| {
                    seg.split(|c: char| !(c.is_alphanumeric() || c == '_'))
                        .next()
                        .unwrap_or_default()
                })
                .take_while(|seg| !seg.is_empty())
                .collect();
            let mut full = base.clone();
            full.extend(path);
            // The longest prefix that is a module of its own file.
            while !full.is_empty() && !known.contains(&full.join("::")) {
                full.pop();
            }
            let target = full.join("::");
            let nested = |a: &str, b: &str| a.is_empty() || b.starts_with(&format!("{a}::"));
            if !target.is_empty() && target != me && !nested(&target, me) && !nested(me, &target) {
                out.insert(target);
            }
        }
    }
    out
}

#[test]
fn no_two_modules_of_a_crate_import_each_other() {
    let mut cycles = Vec::new();
    for (dir, _) in CRATES {
        let files = modules(dir);
        let known: BTreeSet<String> = files.keys().cloned().collect();
        let graph: BTreeMap<String, BTreeSet<String>> = files
            .iter()
            .map(|(m, text)| (m.clone(), references(m, text, &known)))
            .collect();
        // A cycle shows as a module reachable from one it reaches.
        for (from, tos) in &graph {
            for to in tos {
                let mut seen = BTreeSet::new();
                let mut stack = vec![to.clone()];
                while let Some(m) = stack.pop() {
                    if !seen.insert(m.clone()) {
                        continue;
                    }
                    if &m == from {
                        cycles.push(format!("{dir}: {from} -> {to} -> ... -> {from}"));
                        break;
                    }
                    stack.extend(graph.get(&m).into_iter().flatten().cloned());
                }
            }
        }
    }
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

/// The check itself sees a cycle when there is one.
#[test]
fn the_cycle_check_sees_a_cycle() {
    let known: BTreeSet<String> = ["a", "b", "c"].map(String::from).into();
    assert_eq!(
        references(
            "a",
            "use crate::b::Thing;\nfn f() { super::c::g() }",
            &known
        ),
        ["b", "c"].map(String::from).into()
    );
    assert!(references("a", "use foo::crate::b;\n/// [`crate::c`]", &known).is_empty());
}
