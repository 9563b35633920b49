//! `ludus new env|agent|reward NAME --lang rust|python|js`: writes a plugin
//! project that builds with `ludus build NAME` and runs in `ludus run` as it is.
//! The templates (plugins/templates/) and the Rust SDK are embedded in the
//! binary, so the project does not depend on a ludus checkout.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};

use crate::UsageError;
use crate::build_cmd::{JS_MEMORY, JS_MODEL, JS_SDK, WIT};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    Env,
    Agent,
    Reward,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum NewLang {
    Rust,
    Python,
    Js,
}

#[derive(Args, Debug)]
pub struct NewArgs {
    /// What the plugin is.
    #[arg(value_enum)]
    pub kind: Kind,
    /// The project's name (lowercase letters, digits and `-`); also its folder.
    pub name: String,
    /// The language to write it in.
    #[arg(long, value_enum, default_value_t = NewLang::Rust)]
    pub lang: NewLang,
    /// The folder to create the project in.
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
}

const RUST_CARGO: &str = include_str!("../../plugins/templates/rust/Cargo.toml");
const RUST_ENV: &str = include_str!("../../plugins/templates/rust/env.rs");
const RUST_AGENT: &str = include_str!("../../plugins/templates/rust/agent.rs");
const RUST_REWARD: &str = include_str!("../../plugins/templates/rust/reward.rs");
const RUST_SDK_CARGO: &str = include_str!("../../plugins/templates/rust/sdk-Cargo.toml");
/// The Rust SDK's sources, vendored into Rust projects.
const RUST_SDK: [(&str, &str); 10] = [
    ("src/lib.rs", include_str!("../../plugins/sdk/src/lib.rs")),
    (
        "src/agent.rs",
        include_str!("../../plugins/sdk/src/agent.rs"),
    ),
    ("src/env.rs", include_str!("../../plugins/sdk/src/env.rs")),
    ("src/log.rs", include_str!("../../plugins/sdk/src/log.rs")),
    (
        "src/memory.rs",
        include_str!("../../plugins/sdk/src/memory.rs"),
    ),
    (
        "src/reward.rs",
        include_str!("../../plugins/sdk/src/reward.rs"),
    ),
    ("src/util.rs", include_str!("../../plugins/sdk/src/util.rs")),
    (
        "src/model.rs",
        include_str!("../../plugins/sdk/src/model.rs"),
    ),
    (
        "src/tools.rs",
        include_str!("../../plugins/sdk/src/tools.rs"),
    ),
    ("README.md", include_str!("../../plugins/sdk/README.md")),
];
const PY_PROJECT: &str = include_str!("../../plugins/templates/python/pyproject.toml");
const PY_ENV: &str = include_str!("../../plugins/templates/python/env.py");
const PY_AGENT: &str = include_str!("../../plugins/templates/python/agent.py");
const PY_REWARD: &str = include_str!("../../plugins/templates/python/reward.py");
const JS_PACKAGE: &str = include_str!("../../plugins/templates/js/package.json");
const JS_ENV: &str = include_str!("../../plugins/templates/js/env.js");
const JS_AGENT: &str = include_str!("../../plugins/templates/js/agent.js");
const JS_REWARD: &str = include_str!("../../plugins/templates/js/reward.js");

fn world(kind: Kind) -> &'static str {
    match kind {
        Kind::Env => "env",
        Kind::Agent => "agent",
        Kind::Reward => "reward",
    }
}

fn check_name(name: &str) -> Result<()> {
    let ok = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(UsageError(format!(
            "invalid plugin name `{name}`: use lowercase letters, digits and `-`, starting with a letter (e.g. `my-env`)"
        ))
        .into())
    }
}

fn fill(template: &str, name: &str, kind: Kind) -> String {
    template
        .replace("{{name}}", name)
        .replace("{{crate}}", &name.replace('-', "_"))
        .replace("{{world}}", world(kind))
}

/// The files of a new project, relative to its folder.
pub fn files(kind: Kind, lang: NewLang, name: &str) -> Vec<(PathBuf, String)> {
    let f = |t: &str| fill(t, name, kind);
    let mut out: Vec<(PathBuf, String)> = Vec::new();
    let readme = readme(kind, lang, name);
    out.push(("README.md".into(), readme));
    match lang {
        NewLang::Rust => {
            let main = match kind {
                Kind::Env => RUST_ENV,
                Kind::Agent => RUST_AGENT,
                Kind::Reward => RUST_REWARD,
            };
            out.push(("Cargo.toml".into(), f(RUST_CARGO)));
            out.push(("src/lib.rs".into(), f(main)));
            out.push(("ludus-sdk/Cargo.toml".into(), RUST_SDK_CARGO.to_string()));
            for (file, text) in RUST_SDK {
                out.push((Path::new("ludus-sdk").join(file), text.to_string()));
            }
            // The SDK's bindings read the contract from `../wit`.
            out.push(("wit/ludus.wit".into(), WIT.to_string()));
            out.push((".gitignore".into(), "/target\n".into()));
        }
        NewLang::Python => {
            let main = match kind {
                Kind::Env => PY_ENV,
                Kind::Agent => PY_AGENT,
                Kind::Reward => PY_REWARD,
            };
            out.push(("pyproject.toml".into(), f(PY_PROJECT)));
            out.push(("app.py".into(), f(main)));
            out.push((".gitignore".into(), "/build\n__pycache__/\n".into()));
        }
        NewLang::Js => {
            let main = match kind {
                Kind::Env => JS_ENV,
                Kind::Agent => JS_AGENT,
                Kind::Reward => JS_REWARD,
            };
            out.push(("package.json".into(), f(JS_PACKAGE)));
            out.push(("src/plugin.js".into(), f(main)));
            // A copy of the SDK for editors; `ludus build` uses it as it is.
            out.push(("src/ludus/ludus-sdk.js".into(), JS_SDK.to_string()));
            out.push(("src/ludus/memory.js".into(), JS_MEMORY.to_string()));
            out.push(("src/ludus/model.js".into(), JS_MODEL.to_string()));
            out.push((".gitignore".into(), "/build\n/node_modules\n".into()));
        }
    }
    out
}

fn readme(kind: Kind, lang: NewLang, name: &str) -> String {
    let crate_name = name.replace('-', "_");
    let (lang_name, wasm, needs) = match lang {
        NewLang::Rust => (
            "Rust",
            format!("target/wasm32-wasip2/release/{crate_name}.wasm"),
            "Rust with the wasm32-wasip2 target (`rustup target add wasm32-wasip2`). The SDK is vendored in `ludus-sdk/` and the contract in `wit/`.".to_string(),
        ),
        NewLang::Python => (
            "Python",
            format!("build/{crate_name}.wasm"),
            format!(
                "componentize-py (`pip install componentize-py=={}`). The SDK module `ludus_sdk` is supplied by `ludus build`.",
                crate::build_cmd::COMPONENTIZE_PY_VERSION
            ),
        ),
        NewLang::Js => (
            "JavaScript",
            format!("build/{crate_name}.wasm"),
            format!(
                "componentize-js (`npm install @bytecodealliance/componentize-js@{}` in this folder). The SDK is copied in `src/ludus/`.",
                crate::build_cmd::COMPONENTIZE_JS_VERSION
            ),
        ),
    };
    let w = world(kind);
    let run = match kind {
        Kind::Env => format!("ludus run --env {wasm} --agent AGENT.wasm --episodes 10"),
        Kind::Agent => format!("ludus run --env ENV.wasm --agent {wasm} --episodes 10"),
        Kind::Reward => {
            format!("ludus run --env ENV.wasm --agent AGENT.wasm --reward {wasm} --episodes 10")
        }
    };
    format!(
        "# {name}\n\nA ludus {w} plugin in {lang_name}.\n\nBuild (needs {needs}):\n\n```\nludus build .\n```\n\nIt prints the component's path, {wasm}. Run it:\n\n```\n{run}\n```\n"
    )
}

pub fn run(args: NewArgs) -> Result<ExitCode> {
    check_name(&args.name)?;
    if !args.dir.is_dir() {
        return Err(UsageError(format!(
            "cannot create {}: {} is not a folder",
            args.name,
            args.dir.display()
        ))
        .into());
    }
    let root = args.dir.join(&args.name);
    if root.exists() {
        return Err(UsageError(format!(
            "cannot create {}: it already exists (pick another name or remove it)",
            root.display()
        ))
        .into());
    }
    for (rel, text) in files(args.kind, args.lang, &args.name) {
        let path = root.join(&rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    println!("created {}", root.display());
    println!("build it with: ludus build {}", root.display());
    Ok(ExitCode::SUCCESS)
}
