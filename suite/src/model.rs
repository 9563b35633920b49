//! The suite file: TOML in, expanded [`Case`]s out.
//!
//! Every error names the file, the line and the key. Paths resolve relative to
//! the suite file's folder (joined with the optional top-level `plugins`
//! folder). Nothing here touches the filesystem: whether a plugin exists is the
//! caller's question, answered with the [`Location`] each path carries.

use std::collections::{BTreeMap, HashSet};
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

/// Where in the suite file a value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    pub line: usize,
    pub key: String,
}

/// A bad suite file: `FILE:LINE: key `KEY`: MESSAGE`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}: key `{key}`: {message}", file.display())]
pub struct SuiteError {
    pub file: PathBuf,
    pub line: usize,
    pub key: String,
    pub message: String,
}

impl SuiteError {
    pub fn at(file: &Path, at: &Location, message: impl Into<String>) -> SuiteError {
        SuiteError {
            file: file.to_path_buf(),
            line: at.line,
            key: at.key.clone(),
            message: message.into(),
        }
    }
}

/// A plugin a case uses: its resolved path and config string.
#[derive(Clone, Debug, PartialEq)]
pub struct PluginRef {
    pub path: PathBuf,
    pub config: String,
    pub at: Location,
}

/// One `[PLUGIN.]KEY=VALUE` limit, in `ludus run --limit` syntax.
#[derive(Clone, Debug, PartialEq)]
pub struct LimitSetting {
    pub item: String,
    pub at: Location,
}

/// A case's expectations; `None` is not checked.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Expect {
    pub success_rate_min: Option<f64>,
    pub mean_return_min: Option<f64>,
    pub mean_length_max: Option<f64>,
    pub p95_length_max: Option<f64>,
    /// Crashed episodes allowed (default 0: no crashed episodes).
    pub crashed_max: u64,
    pub wall_time_max_s: Option<f64>,
    /// Mean tokens (prompt and completion) per episode.
    pub max_mean_tokens: Option<f64>,
    /// The case's whole spending on model calls, in US dollars.
    pub max_cost_usd: Option<f64>,
    pub max_mean_model_calls: Option<f64>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Case {
    pub name: String,
    pub at: Location,
    pub env: PluginRef,
    pub agent: PluginRef,
    pub reward: Option<PluginRef>,
    pub episodes: u64,
    pub seed: u64,
    /// Suite-wide limits first, then the case's own (later ones win).
    pub limits: Vec<LimitSetting>,
    /// Model endpoints, in `ludus run --model` syntax.
    pub models: Vec<LimitSetting>,
    pub expect: Expect,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Suite {
    pub file: PathBuf,
    pub name: String,
    /// One-sided significance level of the baseline gate.
    pub alpha: f64,
    /// Bootstrap resamples for the mean-return interval.
    pub resamples: u64,
    pub cases: Vec<Case>,
}

pub const DEFAULT_ALPHA: f64 = 0.05;
pub const DEFAULT_EPISODES: u64 = 20;
pub const DEFAULT_RESAMPLES: u64 = 2000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileToml {
    name: Option<String>,
    plugins: Option<String>,
    alpha: Option<Spanned<f64>>,
    seed: Option<u64>,
    episodes: Option<Spanned<u64>>,
    resamples: Option<Spanned<u64>>,
    #[serde(default)]
    limits: BTreeMap<String, Spanned<toml::Value>>,
    /// Model endpoints: `"[NAME=]URL,..."`, `{ url, name, model,
    /// api_key_env, price_in, price_out, timeout_s }`, or a list of these.
    model: Option<Spanned<toml::Value>>,
    #[serde(default)]
    expect: ExpectToml,
    #[serde(default)]
    case: Vec<CaseToml>,
    #[serde(default)]
    matrix: Vec<MatrixToml>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct ExpectToml {
    success_rate_min: Option<Spanned<f64>>,
    mean_return_min: Option<f64>,
    mean_length_max: Option<f64>,
    p95_length_max: Option<f64>,
    crashed_max: Option<u64>,
    wall_time_max_s: Option<Spanned<f64>>,
    max_mean_tokens: Option<f64>,
    max_cost_usd: Option<f64>,
    max_mean_model_calls: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseToml {
    name: Spanned<String>,
    env: Spanned<String>,
    agent: Spanned<String>,
    reward: Option<Spanned<String>>,
    #[serde(default)]
    env_config: String,
    #[serde(default)]
    agent_config: String,
    #[serde(default)]
    reward_config: String,
    episodes: Option<Spanned<u64>>,
    seed: Option<u64>,
    #[serde(default)]
    limits: BTreeMap<String, Spanned<toml::Value>>,
    /// Model endpoints: `"[NAME=]URL,..."`, `{ url, name, model,
    /// api_key_env, price_in, price_out, timeout_s }`, or a list of these.
    model: Option<Spanned<toml::Value>>,
    #[serde(default)]
    expect: ExpectToml,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MatrixToml {
    name: Spanned<String>,
    agents: Spanned<Vec<Spanned<toml::Value>>>,
    envs: Spanned<Vec<Spanned<toml::Value>>>,
    #[serde(default)]
    rewards: Vec<Spanned<toml::Value>>,
    #[serde(default)]
    env_configs: Vec<String>,
    episodes: Option<Spanned<u64>>,
    seed: Option<u64>,
    #[serde(default)]
    limits: BTreeMap<String, Spanned<toml::Value>>,
    /// Model endpoints: `"[NAME=]URL,..."`, `{ url, name, model,
    /// api_key_env, price_in, price_out, timeout_s }`, or a list of these.
    model: Option<Spanned<toml::Value>>,
    #[serde(default)]
    expect: ExpectToml,
}

/// One entry of a matrix axis: a path string, or `{ path, config, label }`.
struct AxisEntry {
    label: String,
    path: String,
    config: String,
    at: Location,
}

struct Ctx<'a> {
    file: &'a Path,
    text: &'a str,
    /// Where plugin paths resolve: the file's folder, joined with `plugins`.
    dir: PathBuf,
    /// The file's folder, where `checkpoint:` paths resolve.
    base: PathBuf,
}

impl Ctx<'_> {
    fn loc(&self, span: Range<usize>, key: &str) -> Location {
        Location {
            line: line_of(self.text, span.start),
            key: key.to_string(),
        }
    }

    fn err(&self, span: Range<usize>, key: &str, message: impl Into<String>) -> SuiteError {
        SuiteError::at(self.file, &self.loc(span, key), message)
    }

    fn plugin(
        &self,
        path: &Spanned<String>,
        config: &str,
        key: &str,
    ) -> Result<PluginRef, SuiteError> {
        checkpoint_only_agents(self, path.get_ref(), path.span(), key)?;
        Ok(PluginRef {
            path: self.resolve(path.get_ref()),
            config: config.to_string(),
            at: self.loc(path.span(), key),
        })
    }
}

/// The prefix of a trained policy (a `ludus train` checkpoint) where an agent
/// path goes: `checkpoint:PATH`.
pub const CHECKPOINT: &str = "checkpoint:";

impl Ctx<'_> {
    /// A path from the file: a plugin relative to `dir`; a `checkpoint:PATH`
    /// keeps its prefix, with PATH relative to the file's own folder.
    fn resolve(&self, path: &str) -> PathBuf {
        match path.strip_prefix(CHECKPOINT) {
            Some(p) => PathBuf::from(format!("{CHECKPOINT}{}", self.base.join(p).display())),
            None => self.dir.join(path),
        }
    }
}

impl PluginRef {
    /// The checkpoint file of a `checkpoint:PATH` agent.
    pub fn checkpoint(&self) -> Option<PathBuf> {
        self.path
            .to_str()
            .and_then(|p| p.strip_prefix(CHECKPOINT))
            .map(PathBuf::from)
    }
}

/// Trained policies act; they are not envs or rewards.
fn checkpoint_only_agents(
    cx: &Ctx,
    path: &str,
    span: Range<usize>,
    key: &str,
) -> Result<(), SuiteError> {
    if path.starts_with(CHECKPOINT) && !matches!(key, "agent" | "agents") {
        return Err(cx.err(
            span,
            key,
            format!(
                "`{path}`: a checkpoint (a trained policy) can only be an agent; give a .wasm path"
            ),
        ));
    }
    Ok(())
}

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The key a serde error is about: named in the message (unknown or missing
/// field), or else the key written before the `=` that precedes the span.
fn key_of(text: &str, message: &str, span: Option<Range<usize>>) -> String {
    for marker in ["unknown field `", "missing field `", "duplicate key `"] {
        if let Some(rest) = message.split(marker).nth(1)
            && let Some(key) = rest.split('`').next()
        {
            return key.to_string();
        }
    }
    let Some(span) = span else {
        return "?".into();
    };
    let start = span.start.min(text.len());
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let before = &text[line_start..start];
    match before.rfind('=') {
        Some(eq) => {
            let key = before[..eq].trim_end();
            let from = key
                .rfind(|c: char| c == '{' || c == ',' || c.is_whitespace())
                .map_or(0, |i| i + 1);
            key[from..].trim_matches('"').to_string()
        }
        None => {
            // A header such as `[[case]]` or a value alone on its line.
            let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
            text[line_start..line_end]
                .trim()
                .trim_matches(|c| c == '[' || c == ']')
                .to_string()
        }
    }
}

/// Parses and expands a suite file. `file` is used to name the file in
/// errors and to resolve relative paths; it is not read.
pub fn parse(text: &str, file: &Path) -> Result<Suite, SuiteError> {
    let raw: FileToml = toml::from_str(text).map_err(|e| {
        let span = e.span();
        let message = e.message().trim().replace('\n', " ");
        SuiteError {
            file: file.to_path_buf(),
            line: span.clone().map_or(1, |s| line_of(text, s.start)),
            key: key_of(text, &message, span),
            message,
        }
    })?;
    let base = file.parent().map(Path::to_path_buf).unwrap_or_default();
    let dir = match &raw.plugins {
        Some(p) => base.join(p),
        None => base.clone(),
    };
    let cx = Ctx {
        file,
        text,
        dir,
        base,
    };
    let alpha = match &raw.alpha {
        Some(a) => {
            let v = *a.get_ref();
            if !(v > 0.0 && v < 0.5) {
                return Err(cx.err(
                    a.span(),
                    "alpha",
                    format!("significance level must be within (0, 0.5), got {v}"),
                ));
            }
            v
        }
        None => DEFAULT_ALPHA,
    };
    let resamples = match &raw.resamples {
        Some(r) if *r.get_ref() < 100 => {
            return Err(cx.err(
                r.span(),
                "resamples",
                format!("need at least 100 bootstrap resamples, got {}", r.get_ref()),
            ));
        }
        Some(r) if *r.get_ref() > MAX_RESAMPLES => {
            return Err(cx.err(
                r.span(),
                "resamples",
                format!(
                    "at most {MAX_RESAMPLES} bootstrap resamples, got {} (more changes the interval by less than its noise)",
                    r.get_ref()
                ),
            ));
        }
        Some(r) => *r.get_ref(),
        None => DEFAULT_RESAMPLES,
    };
    let default_episodes = episodes(&cx, raw.episodes.as_ref(), DEFAULT_EPISODES)?;
    let default_seed = raw.seed.unwrap_or(0);
    let suite_limits = limits(&cx, &raw.limits)?;
    let suite_models = models(&cx, raw.model.as_ref())?;
    let suite_expect = &raw.expect;

    let mut cases = Vec::new();
    for c in &raw.case {
        let mut lims = suite_limits.clone();
        lims.extend(limits(&cx, &c.limits)?);
        cases.push(Case {
            name: c.name.get_ref().clone(),
            at: cx.loc(c.name.span(), "name"),
            env: cx.plugin(&c.env, &c.env_config, "env")?,
            agent: cx.plugin(&c.agent, &c.agent_config, "agent")?,
            reward: c
                .reward
                .as_ref()
                .map(|r| cx.plugin(r, &c.reward_config, "reward"))
                .transpose()?,
            episodes: episodes(&cx, c.episodes.as_ref(), default_episodes)?,
            seed: c.seed.unwrap_or(default_seed),
            limits: lims,
            models: match &c.model {
                Some(m) => models(&cx, Some(m))?,
                None => suite_models.clone(),
            },
            expect: expect(&cx, suite_expect, &c.expect)?,
        });
    }
    for m in &raw.matrix {
        let agents = axis(&cx, m.agents.get_ref(), "agents")?;
        let envs = axis(&cx, m.envs.get_ref(), "envs")?;
        let rewards = axis(&cx, &m.rewards, "rewards")?;
        if agents.is_empty() {
            return Err(cx.err(
                m.agents.span(),
                "agents",
                "a matrix needs at least one agent",
            ));
        }
        if envs.is_empty() {
            return Err(cx.err(m.envs.span(), "envs", "a matrix needs at least one env"));
        }
        let mut lims = suite_limits.clone();
        lims.extend(limits(&cx, &m.limits)?);
        let ex = expect(&cx, suite_expect, &m.expect)?;
        let matrix_models = match &m.model {
            Some(v) => models(&cx, Some(v))?,
            None => suite_models.clone(),
        };
        let eps = episodes(&cx, m.episodes.as_ref(), default_episodes)?;
        let env_configs: Vec<Option<&String>> = if m.env_configs.is_empty() {
            vec![None]
        } else {
            m.env_configs.iter().map(Some).collect()
        };
        let reward_slots: Vec<Option<&AxisEntry>> = if rewards.is_empty() {
            vec![None]
        } else {
            rewards.iter().map(Some).collect()
        };
        let expands = [
            agents.len(),
            envs.len(),
            env_configs.len(),
            reward_slots.len(),
        ]
        .into_iter()
        .try_fold(1usize, usize::checked_mul)
        .and_then(|n| n.checked_add(cases.len()));
        if expands.is_none_or(|n| n > MAX_CASES) {
            return Err(cx.err(
                m.name.span(),
                "matrix",
                format!(
                    "the suite would have more than {MAX_CASES} cases ({} agents x {} envs x {} env configs x {} rewards in this matrix); split it into several suites",
                    agents.len(),
                    envs.len(),
                    env_configs.len(),
                    reward_slots.len()
                ),
            ));
        }
        for a in &agents {
            for e in &envs {
                for ec in &env_configs {
                    for r in &reward_slots {
                        let mut name = format!("{}/{}/{}", m.name.get_ref(), a.label, e.label);
                        if let Some(ec) = ec {
                            name.push('/');
                            name.push_str(ec);
                        }
                        if let Some(r) = r {
                            name.push('/');
                            name.push_str(&r.label);
                        }
                        let plugin = |x: &AxisEntry, config: &str| PluginRef {
                            path: cx.resolve(&x.path),
                            config: config.to_string(),
                            at: x.at.clone(),
                        };
                        cases.push(Case {
                            name,
                            at: cx.loc(m.name.span(), "name"),
                            env: plugin(e, ec.map_or(e.config.as_str(), String::as_str)),
                            agent: plugin(a, &a.config),
                            reward: r.map(|r| plugin(r, &r.config)),
                            episodes: eps,
                            seed: m.seed.unwrap_or(default_seed),
                            limits: lims.clone(),
                            models: matrix_models.clone(),
                            expect: ex.clone(),
                        });
                    }
                }
            }
        }
    }
    if cases.is_empty() {
        return Err(SuiteError {
            file: file.to_path_buf(),
            line: 1,
            key: "case".into(),
            message: "the suite has no cases: add a [[case]] or a [[matrix]] table".into(),
        });
    }
    let mut seen = HashSet::new();
    for c in &cases {
        if !seen.insert(c.name.as_str()) {
            return Err(SuiteError::at(
                file,
                &c.at,
                format!(
                    "two cases are named `{}`: case names must be unique",
                    c.name
                ),
            ));
        }
    }
    let name = raw.name.clone().unwrap_or_else(|| {
        file.file_stem()
            .map_or("suite".into(), |s| s.to_string_lossy().into_owned())
    });
    Ok(Suite {
        file: file.to_path_buf(),
        name,
        alpha,
        resamples,
        cases,
    })
}

/// The most episodes a case may ask for (as `ludus run` allows in one run).
pub const MAX_EPISODES: u64 = 1_000_000;
/// The most cases a suite may expand to, its matrices included.
pub const MAX_CASES: usize = 10_000;
/// The most bootstrap resamples: the bootstrap keeps one mean per resample.
pub const MAX_RESAMPLES: u64 = 1_000_000;

fn episodes(cx: &Ctx, v: Option<&Spanned<u64>>, default: u64) -> Result<u64, SuiteError> {
    match v {
        Some(e) if *e.get_ref() == 0 => Err(cx.err(e.span(), "episodes", "must be at least 1")),
        Some(e) if *e.get_ref() > MAX_EPISODES => Err(cx.err(
            e.span(),
            "episodes",
            format!("at most {MAX_EPISODES} per case, got {}", e.get_ref()),
        )),
        Some(e) => Ok(*e.get_ref()),
        None => Ok(default),
    }
}

fn limits(
    cx: &Ctx,
    table: &BTreeMap<String, Spanned<toml::Value>>,
) -> Result<Vec<LimitSetting>, SuiteError> {
    let mut out = Vec::new();
    for (key, value) in table {
        let text = match value.get_ref() {
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::String(s) => s.clone(),
            other => {
                return Err(cx.err(
                    value.span(),
                    key,
                    format!("a limit is a number, got {}", other.type_str()),
                ));
            }
        };
        out.push(LimitSetting {
            item: format!("{key}={text}"),
            at: cx.loc(value.span(), key),
        });
    }
    Ok(out)
}

/// A `model` value as `--model` strings.
fn models(cx: &Ctx, value: Option<&Spanned<toml::Value>>) -> Result<Vec<LimitSetting>, SuiteError> {
    let Some(value) = value else {
        return Ok(Vec::new());
    };
    let at = cx.loc(value.span(), "model");
    let bad = |m: String| cx.err(value.span(), "model", m);
    let one = |v: &toml::Value| -> Result<String, SuiteError> {
        match v {
            toml::Value::String(s) => Ok(s.clone()),
            toml::Value::Table(t) => {
                let mut url = String::new();
                let mut name = None;
                let mut opts = Vec::new();
                for (k, v) in t {
                    let text = match v {
                        toml::Value::String(s) => s.clone(),
                        toml::Value::Integer(i) => i.to_string(),
                        toml::Value::Float(f) => f.to_string(),
                        other => {
                            return Err(bad(format!(
                                "model.{k}: expected text or a number, got {}",
                                other.type_str()
                            )));
                        }
                    };
                    match k.as_str() {
                        "url" => url = text,
                        "name" => name = Some(text),
                        "model" | "api_key_env" | "price_in" | "price_out" | "timeout_s" => {
                            opts.push(format!("{}={text}", k.replace('_', "-")))
                        }
                        other => {
                            return Err(bad(format!(
                                "unknown model key `{other}` (url, name, model, api_key_env, price_in, price_out, timeout_s)"
                            )));
                        }
                    }
                }
                if url.is_empty() {
                    return Err(bad("a model table needs `url`".into()));
                }
                let mut spec = match name {
                    Some(n) => format!("{n}={url}"),
                    None => url,
                };
                for o in opts {
                    spec.push(',');
                    spec.push_str(&o);
                }
                Ok(spec)
            }
            other => Err(bad(format!(
                "`model` is a URL, a table or a list of them, got {}",
                other.type_str()
            ))),
        }
    };
    let specs = match value.get_ref() {
        toml::Value::Array(items) => items.iter().map(one).collect::<Result<Vec<_>, _>>()?,
        v => vec![one(v)?],
    };
    Ok(specs
        .into_iter()
        .map(|item| LimitSetting {
            item,
            at: at.clone(),
        })
        .collect())
}

fn expect(cx: &Ctx, suite: &ExpectToml, case: &ExpectToml) -> Result<Expect, SuiteError> {
    for e in [suite, case] {
        if let Some(s) = &e.success_rate_min
            && !(0.0..=1.0).contains(s.get_ref())
        {
            return Err(cx.err(
                s.span(),
                "success_rate_min",
                format!("a rate is within 0..=1, got {}", s.get_ref()),
            ));
        }
        if let Some(w) = &e.wall_time_max_s
            && *w.get_ref() <= 0.0
        {
            return Err(cx.err(
                w.span(),
                "wall_time_max_s",
                format!("a time budget must be positive, got {}", w.get_ref()),
            ));
        }
    }
    let pick = |f: fn(&ExpectToml) -> Option<f64>| f(case).or(f(suite));
    Ok(Expect {
        success_rate_min: pick(|e| e.success_rate_min.as_ref().map(|s| *s.get_ref())),
        mean_return_min: pick(|e| e.mean_return_min),
        mean_length_max: pick(|e| e.mean_length_max),
        p95_length_max: pick(|e| e.p95_length_max),
        crashed_max: case.crashed_max.or(suite.crashed_max).unwrap_or(0),
        wall_time_max_s: pick(|e| e.wall_time_max_s.as_ref().map(|s| *s.get_ref())),
        max_mean_tokens: pick(|e| e.max_mean_tokens),
        max_cost_usd: pick(|e| e.max_cost_usd),
        max_mean_model_calls: pick(|e| e.max_mean_model_calls),
    })
}

fn axis(
    cx: &Ctx,
    entries: &[Spanned<toml::Value>],
    key: &str,
) -> Result<Vec<AxisEntry>, SuiteError> {
    let mut out = Vec::new();
    for entry in entries {
        let at = cx.loc(entry.span(), key);
        let label_of = |path: &str| {
            let path = path.strip_prefix(CHECKPOINT).unwrap_or(path);
            Path::new(path)
                .file_stem()
                .map_or(path.to_string(), |s| s.to_string_lossy().into_owned())
        };
        match entry.get_ref() {
            toml::Value::String(path) => {
                checkpoint_only_agents(cx, path, entry.span(), key)?;
                out.push(AxisEntry {
                    label: label_of(path),
                    path: path.clone(),
                    config: String::new(),
                    at,
                })
            }
            toml::Value::Table(t) => {
                let mut path = None;
                let mut config = String::new();
                let mut label = None;
                for (k, v) in t {
                    let text = v.as_str().ok_or_else(|| {
                        SuiteError::at(
                            cx.file,
                            &Location {
                                line: at.line,
                                key: k.clone(),
                            },
                            format!("expected a string, got {}", v.type_str()),
                        )
                    })?;
                    match k.as_str() {
                        "path" => path = Some(text.to_string()),
                        "config" => config = text.to_string(),
                        "label" => label = Some(text.to_string()),
                        _ => {
                            return Err(SuiteError::at(
                                cx.file,
                                &Location {
                                    line: at.line,
                                    key: k.clone(),
                                },
                                format!(
                                    "unknown field `{k}`, expected `path`, `config` or `label`"
                                ),
                            ));
                        }
                    }
                }
                if let Some(p) = &path {
                    checkpoint_only_agents(cx, p, entry.span(), key)?;
                }
                let Some(path) = path else {
                    return Err(SuiteError::at(
                        cx.file,
                        &at,
                        "an entry needs a `path` (or is a plain path string)",
                    ));
                };
                out.push(AxisEntry {
                    label: label.unwrap_or_else(|| label_of(&path)),
                    path,
                    config,
                    at,
                });
            }
            other => {
                return Err(SuiteError::at(
                    cx.file,
                    &at,
                    format!(
                        "expected a path string or a {{ path, config, label }} table, got {}",
                        other.type_str()
                    ),
                ));
            }
        }
    }
    Ok(out)
}

/// The cases whose name matches `pattern`: a glob (`*`, `?`, `[..]`) when it
/// has one, else a substring.
pub fn filter(cases: &[Case], pattern: &str) -> Result<Vec<Case>, String> {
    if pattern.contains(['*', '?', '[']) {
        let glob = glob::Pattern::new(pattern)
            .map_err(|e| format!("--filter `{pattern}`: not a valid glob: {e}"))?;
        Ok(cases
            .iter()
            .filter(|c| glob.matches(&c.name))
            .cloned()
            .collect())
    } else {
        Ok(cases
            .iter()
            .filter(|c| c.name.contains(pattern))
            .cloned()
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUITE: &str = r#"
name = "demo"
plugins = "wasm"
seed = 3
episodes = 10
limits = { fuel = 1000000 }

[expect]
success_rate_min = 0.5

[[case]]
name = "cartpole"
env = "cartpole.wasm"
agent = "random_agent.wasm"
reward = "sparse_reward.wasm"
episodes = 30
limits = { "agent.memory-mb" = 64 }
expect = { mean_return_min = 10, success_rate_min = 0 }

[[matrix]]
name = "maze"
agents = ["maze_solver.wasm", { path = "memory_agent.wasm", label = "memory" }]
envs = ["maze.wasm"]
env_configs = ["size=9", "size=11,doors=2"]
seed = 5
"#;

    fn parse_ok(text: &str) -> Suite {
        parse(text, Path::new("suites/demo.toml")).unwrap_or_else(|e| panic!("{e}"))
    }

    fn parse_err(text: &str) -> String {
        match parse(text, Path::new("suites/demo.toml")) {
            Ok(_) => panic!("parsed"),
            Err(e) => e.to_string(),
        }
    }

    /// A matrix is checked before it expands: a few kilobytes of axes
    /// cannot ask for a billion cases.
    #[test]
    fn a_matrix_that_expands_too_far_is_refused_before_expanding() {
        let axis = |n: usize| {
            let items: Vec<String> = (0..n).map(|i| format!("\"p{i}.wasm\"")).collect();
            format!("[{}]", items.join(", "))
        };
        let configs: Vec<String> = (0..1000).map(|i| format!("\"c={i}\"")).collect();
        let text = format!(
            "[[matrix]]\nname = \"big\"\nagents = {}\nenvs = {}\nenv_configs = [{}]\n",
            axis(1000),
            axis(1000),
            configs.join(", ")
        );
        let err = parse_err(&text);
        assert!(
            err.contains("more than 10000 cases") && err.contains("1000 agents x 1000 envs"),
            "{err}"
        );
        assert!(
            parse_ok(&format!(
                "[[matrix]]\nname = \"ok\"\nagents = {}\nenvs = {}\n",
                axis(100),
                axis(100)
            ))
            .cases
            .len()
                == 10_000
        );
    }

    #[test]
    fn cases_and_matrix_expand_with_defaults() {
        let s = parse_ok(SUITE);
        assert_eq!(s.name, "demo");
        assert_eq!(s.alpha, DEFAULT_ALPHA);
        let names: Vec<&str> = s.cases.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "cartpole",
                "maze/maze_solver/maze/size=9",
                "maze/maze_solver/maze/size=11,doors=2",
                "maze/memory/maze/size=9",
                "maze/memory/maze/size=11,doors=2",
            ]
        );
        let c = &s.cases[0];
        assert_eq!(c.env.path, Path::new("suites/wasm/cartpole.wasm"));
        assert_eq!(c.episodes, 30);
        assert_eq!(c.seed, 3);
        assert_eq!(c.expect.success_rate_min, Some(0.0));
        assert_eq!(c.expect.mean_return_min, Some(10.0));
        assert_eq!(c.expect.crashed_max, 0);
        let items: Vec<&str> = c.limits.iter().map(|l| l.item.as_str()).collect();
        assert_eq!(items, ["fuel=1000000", "agent.memory-mb=64"]);
        assert_eq!(c.limits[1].at.line, 17);
        assert_eq!(
            c.agent.at,
            Location {
                line: 14,
                key: "agent".into()
            }
        );
        let m = &s.cases[2];
        assert_eq!(m.env.config, "size=11,doors=2");
        assert_eq!(m.episodes, 10);
        assert_eq!(m.seed, 5);
        assert_eq!(m.expect.success_rate_min, Some(0.5));
        assert_eq!(m.agent.at.line, 22);
        assert_eq!(
            s.cases[3].agent.path,
            Path::new("suites/wasm/memory_agent.wasm")
        );
    }

    #[test]
    fn checkpoint_agents_resolve_relative_to_the_suite_file() {
        let text = SUITE
            .replace("\"random_agent.wasm\"", "\"checkpoint:runs/c.safetensors\"")
            .replace(
                "\"maze_solver.wasm\"",
                "{ path = \"checkpoint:m.safetensors\", config = \"sample\" }",
            );
        let s = parse_ok(&text);
        let c = &s.cases[0].agent;
        assert_eq!(c.path, Path::new("checkpoint:suites/runs/c.safetensors"));
        assert_eq!(
            c.checkpoint().as_deref(),
            Some(Path::new("suites/runs/c.safetensors"))
        );
        let m = &s.cases[1];
        assert_eq!(m.name, "maze/m/maze/size=9");
        assert_eq!(
            m.agent.checkpoint().as_deref(),
            Some(Path::new("suites/m.safetensors"))
        );
        assert_eq!(m.agent.config, "sample");
        assert_eq!(s.cases[0].env.checkpoint(), None);
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let unknown = SUITE.replace("episodes = 30", "episodez = 30");
        assert!(
            parse_err(&unknown).starts_with("suites/demo.toml:16: key `episodez`: unknown field"),
            "{}",
            parse_err(&unknown)
        );
        let bad_type = SUITE.replace("episodes = 30", "episodes = \"many\"");
        let e = parse_err(&bad_type);
        assert!(
            e.starts_with("suites/demo.toml:16: key `episodes`: invalid type"),
            "{e}"
        );
        let bad_rate = SUITE.replace("success_rate_min = 0.5", "success_rate_min = 1.5");
        assert_eq!(
            parse_err(&bad_rate),
            "suites/demo.toml:9: key `success_rate_min`: a rate is within 0..=1, got 1.5"
        );
        let inline = SUITE.replace("mean_return_min = 10", "mean_return_min = \"x\"");
        let e = parse_err(&inline);
        assert!(
            e.starts_with("suites/demo.toml:18: key `mean_return_min`:"),
            "{e}"
        );
        let axis = SUITE.replace("label = \"memory\"", "lable = \"memory\"");
        let e = parse_err(&axis);
        assert!(
            e.starts_with("suites/demo.toml:22: key `lable`: unknown field"),
            "{e}"
        );
        let syntax = SUITE.replace("seed = 5", "seed = = 5");
        let e = parse_err(&syntax);
        assert!(e.starts_with("suites/demo.toml:25: key `seed`:"), "{e}");
        let zero = SUITE.replace("episodes = 10", "episodes = 0");
        assert_eq!(
            parse_err(&zero),
            "suites/demo.toml:5: key `episodes`: must be at least 1"
        );
        let missing = SUITE.replace("env = \"cartpole.wasm\"\n", "");
        let e = parse_err(&missing);
        assert!(e.contains("key `env`: missing field"), "{e}");
        let dup = format!("{SUITE}\n[[case]]\nname = \"cartpole\"\nenv = \"a\"\nagent = \"b\"\n");
        let e = parse_err(&dup);
        assert!(
            e.starts_with("suites/demo.toml:28: key `name`: two cases"),
            "{e}"
        );
        assert!(parse_err("name = \"x\"\n").contains("no cases"));
        let env_ckpt = SUITE.replace("\"cartpole.wasm\"", "\"checkpoint:run1/step100\"");
        let e = parse_err(&env_ckpt);
        assert!(e.starts_with("suites/demo.toml:13: key `env`: `checkpoint:run1/step100`: a checkpoint (a trained policy) can only be an agent"), "{e}");
    }

    #[test]
    fn filter_by_substring_or_glob() {
        let s = parse_ok(SUITE);
        let names = |p: &str| -> Vec<String> {
            filter(&s.cases, p)
                .unwrap()
                .into_iter()
                .map(|c| c.name)
                .collect()
        };
        assert_eq!(names("cart"), ["cartpole"]);
        assert_eq!(names("maze/*/maze/size=9").len(), 2);
        assert_eq!(names("nothing"), Vec::<String>::new());
        assert!(filter(&s.cases, "[").is_err());
    }
}
