//! A hermetic harness: real plugins built from plugins/, the real `ludus`
//! binary, a fresh temporary directory per test.

#![allow(dead_code)]

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
        self.stderr()
            .lines()
            .filter(|l| !(l.starts_with("compiling ") && l.contains(" for the first time")))
            .map(|l| format!("{l}\n"))
            .collect()
    }
}

pub fn ludus<I, S>(args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let args: Vec<String> = args
        .into_iter()
        .map(|a| a.as_ref().to_string_lossy().into_owned())
        .collect();
    let out = Command::new(env!("CARGO_BIN_EXE_ludus"))
        .args(&args)
        .env_remove("LUDUS_LOG")
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
    let mut child = Command::new(env!("CARGO_BIN_EXE_ludus"))
        .args(args)
        .env_remove("LUDUS_LOG")
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
    let mut args = vec![
        "train".to_string(),
        config.display().to_string(),
        "--db".into(),
        db.display().to_string(),
        "--json".into(),
        "--device".into(),
        "cpu".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    ludus(&args).json()
}
