//! `ludus build PATH`: builds a plugin project in Rust, Python or JavaScript
//! into a WebAssembly component and prints the .wasm path.
//!
//! The kind of project is read from its manifest: `Cargo.toml` (cargo, target
//! wasm32-wasip2), `pyproject.toml` with a `[tool.ludus]` table
//! (componentize-py), `package.json` with a `"ludus"` object (componentize-js).
//! The contract (WIT) and the Python and JavaScript SDKs are embedded in this
//! binary and written into the project's `build/` folder, so a project outside
//! a ludus checkout builds with the same contract the host speaks.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;

use crate::UsageError;

/// The contract, as the host was built with it.
pub const WIT: &str = include_str!("../../plugins/wit/ludus.wit");
/// The Python SDK (one module).
pub const PY_SDK: &str = include_str!("../../plugins/sdk-python/ludus_sdk.py");
/// The JavaScript SDK: the core module, the agent's memory module, and the
/// model module (agents and reward plugins).
pub const JS_SDK: &str = include_str!("../../plugins/sdk-js/src/ludus-sdk.js");
pub const JS_MEMORY: &str = include_str!("../../plugins/sdk-js/src/memory.js");
pub const JS_MODEL: &str = include_str!("../../plugins/sdk-js/src/model.js");

/// The componentize-py and componentize-js versions the SDKs are tested with.
pub const COMPONENTIZE_PY_VERSION: &str = "0.25.1";
pub const COMPONENTIZE_JS_VERSION: &str = "0.23.0";

#[derive(Args, Debug)]
pub struct BuildArgs {
    /// The plugin project: a folder with Cargo.toml, pyproject.toml
    /// (`[tool.ludus]`) or package.json (`"ludus"`).
    #[arg(default_value = ".")]
    pub path: PathBuf,
    /// Print nothing but the .wasm path (no timing line on stderr).
    #[arg(long, short)]
    pub quiet: bool,
}

/// The language of a plugin project.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    Rust,
    Python,
    Js,
}

impl Lang {
    pub fn name(self) -> &'static str {
        match self {
            Lang::Rust => "Rust",
            Lang::Python => "Python",
            Lang::Js => "JavaScript",
        }
    }
}

pub fn run(args: BuildArgs) -> Result<ExitCode> {
    let start = Instant::now();
    let (lang, wasm) = build(&args.path)?;
    if !args.quiet {
        eprintln!(
            "built {} plugin in {:.1} s",
            lang.name(),
            start.elapsed().as_secs_f64()
        );
    }
    println!("{}", wasm.display());
    Ok(ExitCode::SUCCESS)
}

/// Builds the project at `dir` and returns its language and the component's path.
pub fn build(dir: &Path) -> Result<(Lang, PathBuf)> {
    if !dir.is_dir() {
        return Err(UsageError(format!(
            "cannot build {}: not a folder (give the plugin project's folder)",
            dir.display()
        ))
        .into());
    }
    let dir = dir
        .canonicalize()
        .with_context(|| format!("cannot build {}", dir.display()))?;
    let wasm = if dir.join("Cargo.toml").is_file() {
        (Lang::Rust, build_rust(&dir)?)
    } else if dir.join("pyproject.toml").is_file() {
        (Lang::Python, build_python(&dir)?)
    } else if dir.join("package.json").is_file() {
        (Lang::Js, build_js(&dir)?)
    } else {
        return Err(UsageError(format!(
            "cannot build {}: no Cargo.toml, pyproject.toml or package.json there (create a plugin project with `ludus new env|agent|reward NAME --lang rust|python|js`)",
            dir.display()
        ))
        .into());
    };
    check_component(&wasm.1)?;
    Ok(wasm)
}

const WORLDS: [&str; 3] = ["env", "agent", "reward"];

fn check_world(manifest: &Path, world: &str) -> Result<()> {
    if WORLDS.contains(&world) {
        Ok(())
    } else {
        Err(UsageError(format!(
            "{}: unknown world `{world}` (one of env, agent, reward)",
            manifest.display()
        ))
        .into())
    }
}

/// The output's file name: the project's name with `-` as `_`, as cargo names it.
fn artifact_name(name: &str) -> String {
    name.replace('-', "_")
}

fn check_component(wasm: &Path) -> Result<()> {
    let bytes = std::fs::read(wasm)
        .with_context(|| format!("the build wrote no component at {}", wasm.display()))?;
    if bytes.len() >= 8 && &bytes[..4] == b"\0asm" && bytes[6..8] == [0, 0] {
        return Err(UsageError(format!(
            "{} is a core module, not a component: build for --target wasm32-wasip2 and do not override RUSTFLAGS' linker",
            wasm.display()
        ))
        .into());
    }
    Ok(())
}

/// Runs a build tool, failing with its output when it fails.
fn run_tool(mut cmd: Command, what: &str) -> Result<std::process::Output> {
    let out = cmd.output().with_context(|| format!("cannot run {what}"))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let text: Vec<&str> = stderr
            .lines()
            .chain(stdout.lines())
            .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('{'))
            .collect();
        let tail = &text[text.len().saturating_sub(12)..];
        return Err(UsageError(format!("{what} failed: {}", tail.join(" | "))).into());
    }
    Ok(out)
}

// ------------------------------------------------------------------ Rust

fn build_rust(dir: &Path) -> Result<PathBuf> {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(dir).args([
        "build",
        "--release",
        "--target",
        "wasm32-wasip2",
        "--message-format=json-render-diagnostics",
    ]);
    let out = match cmd.output() {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(UsageError(
                "cannot build a Rust plugin: cargo not found (install Rust with rustup, then `rustup target add wasm32-wasip2`)".into(),
            )
            .into());
        }
        Err(e) => return Err(anyhow::anyhow!("cannot run cargo: {e}")),
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        if stderr.contains("wasm32-wasip2") && stderr.contains("target may not be installed") {
            return Err(UsageError(
                "cargo cannot build for wasm32-wasip2: install the target with `rustup target add wasm32-wasip2`".into(),
            )
            .into());
        }
        let lines: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with("error") || l.contains("-->"))
            .collect();
        let tail = &lines[lines.len().saturating_sub(12)..];
        return Err(UsageError(format!(
            "cargo build of {} failed: {}",
            dir.display(),
            tail.join(" | ")
        ))
        .into());
    }
    // The cdylib's .wasm, as cargo reports it.
    let mut found = None;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact" {
            continue;
        }
        let cdylib = msg["target"]["kind"]
            .as_array()
            .is_some_and(|k| k.iter().any(|k| k == "cdylib"));
        let Some(files) = msg["filenames"].as_array() else {
            continue;
        };
        if !cdylib {
            continue;
        }
        for f in files.iter().filter_map(|f| f.as_str()) {
            if f.ends_with(".wasm") {
                found = Some(PathBuf::from(f));
            }
        }
    }
    found.ok_or_else(|| {
        UsageError(format!(
            "cargo built {} but no .wasm came out: a plugin crate needs `crate-type = [\"cdylib\"]` under [lib]",
            dir.display()
        ))
        .into()
    })
}

// ------------------------------------------------------------------ Python

#[derive(serde::Deserialize)]
struct PyProject {
    project: Option<PyProjectMeta>,
    tool: Option<PyTool>,
}

#[derive(serde::Deserialize)]
struct PyProjectMeta {
    name: Option<String>,
}

#[derive(serde::Deserialize)]
struct PyTool {
    ludus: Option<PyLudus>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PyLudus {
    world: String,
    #[serde(default = "default_module")]
    module: String,
}

fn default_module() -> String {
    "app".into()
}

fn build_python(dir: &Path) -> Result<PathBuf> {
    let manifest = dir.join("pyproject.toml");
    let text = std::fs::read_to_string(&manifest)
        .with_context(|| format!("cannot read {}", manifest.display()))?;
    let parsed: PyProject = toml::from_str(&text).map_err(|e| {
        UsageError(format!(
            "{}: {}",
            manifest.display(),
            e.to_string().replace('\n', " ")
        ))
    })?;
    let Some(ludus) = parsed.tool.and_then(|t| t.ludus) else {
        return Err(UsageError(format!(
            "{}: no [tool.ludus] table: add `[tool.ludus]` with `world = \"env\"` (or agent, reward) and `module = \"app\"`",
            manifest.display()
        ))
        .into());
    };
    check_world(&manifest, &ludus.world)?;
    let name = parsed
        .project
        .and_then(|p| p.name)
        .unwrap_or_else(|| dir_name(dir));
    let tool = find_tool(
        dir,
        "LUDUS_COMPONENTIZE_PY",
        &[".venv/bin/componentize-py"],
        "componentize-py",
    )
    .ok_or_else(|| {
        UsageError(format!(
            "cannot build the Python plugin {}: componentize-py not found (install it with `pip install componentize-py=={COMPONENTIZE_PY_VERSION}`, or run scripts/setup.sh in a ludus checkout, or set LUDUS_COMPONENTIZE_PY to its path)",
            dir.display()
        ))
    })?;
    let build = dir.join("build");
    let wit_dir = write_wit(&build)?;
    let sdk_dir = build.join("ludus-sdk-python");
    write_file(&sdk_dir.join("ludus_sdk.py"), PY_SDK)?;
    let out = build.join(format!("{}.wasm", artifact_name(&name)));
    let print = fingerprint(
        dir,
        &[
            PY_SDK,
            WIT,
            &ludus.world,
            &ludus.module,
            &tool.to_string_lossy(),
        ],
    )?;
    if up_to_date(&out, &print) {
        return Ok(out);
    }
    let mut cmd = Command::new(&tool);
    cmd.current_dir(dir)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .arg("-d")
        .arg(&wit_dir)
        .args(["-w", &ludus.world, "componentize", &ludus.module, "-p"])
        .arg(dir)
        .arg("-p")
        .arg(&sdk_dir)
        .arg("-o")
        .arg(&out);
    run_tool(cmd, &format!("componentize-py ({})", tool.display()))?;
    record_fingerprint(&out, &print)?;
    Ok(out)
}

// ------------------------------------------------------------------ JavaScript

fn build_js(dir: &Path) -> Result<PathBuf> {
    let manifest = dir.join("package.json");
    let text = std::fs::read_to_string(&manifest)
        .with_context(|| format!("cannot read {}", manifest.display()))?;
    let parsed: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| UsageError(format!("{}: not JSON: {e}", manifest.display())))?;
    let ludus = &parsed["ludus"];
    let Some(world) = ludus["world"].as_str() else {
        return Err(UsageError(format!(
            "{}: no \"ludus\": {{\"world\": ...}} entry: add `\"ludus\": {{\"world\": \"env\", \"main\": \"src/plugin.js\"}}` (world: env, agent or reward)",
            manifest.display()
        ))
        .into());
    };
    check_world(&manifest, world)?;
    let main = ludus["main"].as_str().unwrap_or("src/plugin.js");
    if Path::new(main).is_absolute() || main.split(['/', '\\']).any(|c| c == "..") {
        return Err(UsageError(format!(
            "{}: \"main\" must be a path inside the project (got `{main}`)",
            manifest.display()
        ))
        .into());
    }
    if !dir.join(main).is_file() {
        return Err(UsageError(format!(
            "{}: the main module {main} does not exist",
            manifest.display()
        ))
        .into());
    }
    let name = parsed["name"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| dir_name(dir));
    let tool = find_tool(
        dir,
        "LUDUS_COMPONENTIZE_JS",
        &[
            "node_modules/.bin/componentize-js",
            "plugins/sdk-js/node_modules/.bin/componentize-js",
        ],
        "componentize-js",
    )
    .ok_or_else(|| {
        UsageError(format!(
            "cannot build the JavaScript plugin {}: componentize-js not found (install it with `npm install @bytecodealliance/componentize-js@{COMPONENTIZE_JS_VERSION}` in the project, or run scripts/setup.sh in a ludus checkout, or set LUDUS_COMPONENTIZE_JS to its path)",
            dir.display()
        ))
    })?;
    let build = dir.join("build");
    let out = build.join(format!("{}.wasm", artifact_name(&name)));
    let print = fingerprint(
        dir,
        &[JS_SDK, JS_MEMORY, WIT, world, main, &tool.to_string_lossy()],
    )?;
    if up_to_date(&out, &print) {
        return Ok(out);
    }
    let wit_dir = write_wit(&build)?;
    // componentize-js only resolves imports inside the folder it runs in, so
    // the sources are staged with the SDK next to the main module (`./ludus/`),
    // unless the project keeps its own copy there.
    let stage = build.join("stage");
    if stage.exists() {
        std::fs::remove_dir_all(&stage)
            .with_context(|| format!("cannot clear {}", stage.display()))?;
    }
    copy_sources(dir, &stage)?;
    let main_dir = Path::new(main).parent().unwrap_or(Path::new(""));
    let sdk = stage.join(main_dir).join("ludus");
    if !sdk.join("ludus-sdk.js").exists() {
        write_file(&sdk.join("ludus-sdk.js"), JS_SDK)?;
    }
    if !sdk.join("memory.js").exists() {
        write_file(&sdk.join("memory.js"), JS_MEMORY)?;
    }
    if !sdk.join("model.js").exists() {
        write_file(&sdk.join("model.js"), JS_MODEL)?;
    }
    let mut cmd = Command::new(&tool);
    cmd.current_dir(&stage)
        .arg(main)
        .arg("--wit")
        .arg(&wit_dir)
        .args(["--world-name", world])
        // StarlingMonkey's default build also imports wasi:http, which the
        // sandbox does not offer.
        .args(["-d", "http", "fetch-event", "-o"])
        .arg(&out);
    run_tool(cmd, &format!("componentize-js ({})", tool.display()))?;
    record_fingerprint(&out, &print)?;
    Ok(out)
}

/// Copies the project's files (not `build/`, `node_modules/` or hidden ones).
fn copy_sources(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("cannot create {}", to.display()))?;
    for entry in
        std::fs::read_dir(from).with_context(|| format!("cannot read {}", from.display()))?
    {
        let entry = entry?;
        let name = entry.file_name();
        let n = name.to_string_lossy();
        if n.starts_with('.') || n == "build" || n == "node_modules" {
            continue;
        }
        let kind = entry.file_type()?;
        if kind.is_dir() {
            copy_sources(&entry.path(), &to.join(&name))?;
        } else if kind.is_file() {
            std::fs::copy(entry.path(), to.join(&name))
                .with_context(|| format!("cannot copy {}", entry.path().display()))?;
        }
    }
    Ok(())
}

// ------------------------------------------------------------------ helpers

/// A fingerprint of everything a Python or JS build reads: the project's
/// files, the embedded SDK and contract, the tool and its arguments. When it
/// matches the one stored next to the output, the build is skipped (and the
/// output's bytes, hence its compile-cache entry, stay the same).
fn fingerprint(dir: &Path, extra: &[&str]) -> Result<String> {
    use std::hash::{Hash, Hasher};
    let mut files = Vec::new();
    list_sources(dir, dir, &mut files)?;
    files.sort();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    env!("CARGO_PKG_VERSION").hash(&mut h);
    for e in extra {
        e.hash(&mut h);
    }
    for rel in &files {
        rel.hash(&mut h);
        std::fs::read(dir.join(rel))
            .with_context(|| format!("cannot read {}", dir.join(rel).display()))?
            .hash(&mut h);
    }
    Ok(format!("{:016x}", h.finish()))
}

fn list_sources(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name();
        let n = name.to_string_lossy();
        if n.starts_with('.') || n == "build" || n == "node_modules" || n == "__pycache__" {
            continue;
        }
        let kind = entry.file_type()?;
        if kind.is_dir() {
            list_sources(root, &entry.path(), out)?;
        } else if kind.is_file() {
            out.push(
                entry
                    .path()
                    .strip_prefix(root)
                    .unwrap_or(&entry.path())
                    .to_path_buf(),
            );
        }
    }
    Ok(())
}

/// Whether `out` was built from inputs with this fingerprint.
fn up_to_date(out: &Path, print: &str) -> bool {
    out.is_file()
        && std::fs::read_to_string(out.with_extension("fingerprint"))
            .is_ok_and(|t| t.trim() == print)
}

fn record_fingerprint(out: &Path, print: &str) -> Result<()> {
    let file = out.with_extension("fingerprint");
    std::fs::write(&file, print).with_context(|| format!("cannot write {}", file.display()))
}

fn dir_name(dir: &Path) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "plugin".into())
}

fn write_file(path: &Path, text: &str) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    // Leave an identical file alone, so its timestamp does not change.
    if std::fs::read_to_string(path).is_ok_and(|t| t == text) {
        return Ok(());
    }
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

fn write_wit(build: &Path) -> Result<PathBuf> {
    let dir = build.join("ludus-wit");
    write_file(&dir.join("ludus.wit"), WIT)?;
    Ok(dir)
}

/// A build tool: `$ENV_VAR`, else the first of `relative` found in the
/// project's folder or an ancestor (a checkout's `.venv` or `node_modules`), or
/// in an ancestor of this executable's folder, else `name` on PATH.
fn find_tool(project: &Path, env_var: &str, relative: &[&str], name: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env_var) {
        return Some(PathBuf::from(p));
    }
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf));
    let roots = project.ancestors().map(Path::to_path_buf).chain(
        exe_dir
            .iter()
            .flat_map(|d| d.ancestors().map(Path::to_path_buf))
            .collect::<Vec<_>>(),
    );
    for root in roots {
        for rel in relative {
            let candidate = root.join(rel);
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}
