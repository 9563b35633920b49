//! Judging cases (thresholds and the baseline gate) and rendering the result
//! as text, Markdown and JUnit XML. Pure: strings in, strings out.

use std::fmt::Write as _;
use std::time::Duration;

use quick_junit::{NonSuccessKind, Property, TestCase, TestCaseStatus, TestSuite};
use serde::Serialize;

use crate::baseline::{BaselineCase, Comparison, compare};
use crate::model::{Case, Expect};
use crate::stats::{CaseStats, Episode};

/// One expectation checked against a figure.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Check {
    pub what: &'static str,
    /// `>=` or `<=`.
    pub op: &'static str,
    pub limit: f64,
    pub actual: f64,
    pub ok: bool,
}

impl Check {
    fn min(what: &'static str, limit: f64, actual: f64) -> Check {
        Check {
            what,
            op: ">=",
            limit,
            actual,
            ok: actual >= limit,
        }
    }

    fn max(what: &'static str, limit: f64, actual: f64) -> Check {
        Check {
            what,
            op: "<=",
            limit,
            actual,
            ok: actual <= limit,
        }
    }

    fn fmt_value(&self, v: f64) -> String {
        match self.what {
            "success rate" => pct(v),
            "crashed episodes" | "p95 length" => format!("{v:.0}"),
            "wall time" => format!("{v:.2}s"),
            "mean return" => format!("{v:.3}"),
            "cost (USD)" => format!("${v:.4}"),
            _ => format!("{v:.1}"),
        }
    }

    /// `success rate 45.0% < 90.0% required`.
    pub fn describe(&self) -> String {
        let op = match (self.ok, self.op) {
            (true, o) => o,
            (false, ">=") => "<",
            (false, _) => ">",
        };
        let word = if self.op == ">=" {
            "required"
        } else {
            "allowed"
        };
        format!(
            "{} {} {op} {} {word}",
            self.what,
            self.fmt_value(self.actual),
            self.fmt_value(self.limit)
        )
    }
}

fn pct(v: f64) -> String {
    format!("{:.1}%", v * 100.0)
}

/// The expectations of a case, checked.
pub fn checks(expect: &Expect, s: &CaseStats) -> Vec<Check> {
    let mut out = Vec::new();
    if let Some(v) = expect.success_rate_min {
        out.push(Check::min("success rate", v, s.success_rate));
    }
    if let Some(v) = expect.mean_return_min {
        out.push(Check::min("mean return", v, s.mean_return));
    }
    if let Some(v) = expect.mean_length_max {
        out.push(Check::max("mean length", v, s.mean_length));
    }
    if let Some(v) = expect.p95_length_max {
        out.push(Check::max("p95 length", v, s.p95_length as f64));
    }
    out.push(Check::max(
        "crashed episodes",
        expect.crashed_max as f64,
        s.crashed as f64,
    ));
    if let Some(v) = expect.wall_time_max_s {
        out.push(Check::max("wall time", v, s.wall_time_s));
    }
    if let Some(v) = expect.max_mean_tokens {
        out.push(Check::max("mean tokens", v, s.mean_tokens));
    }
    if let Some(v) = expect.max_cost_usd {
        out.push(Check::max("cost (USD)", v, s.cost_usd));
    }
    if let Some(v) = expect.max_mean_model_calls {
        out.push(Check::max("mean model calls", v, s.mean_model_calls));
    }
    out
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum BaselineStatus {
    /// No `--baseline` was given.
    NotGiven,
    /// The baseline file has no case of this name.
    Missing,
    Compared(Comparison),
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CaseResult {
    pub name: String,
    pub seed: u64,
    pub stats: CaseStats,
    pub checks: Vec<Check>,
    pub baseline: BaselineStatus,
    /// Why the case failed, one line each; empty when it passed.
    pub failures: Vec<String>,
    pub passed: bool,
    /// The worst episodes of a failed case, worst first.
    pub worst: Vec<Episode>,
    /// The commands that open the worst episodes (`ludus debug DB --episode ID`,
    /// then `ludus ide DB`); filled in by [`SuiteReport::new`].
    pub open_commands: Vec<String>,
    pub episodes: Vec<Episode>,
}

/// How many of a failed case's worst episodes a report names.
pub const WORST: usize = 3;

/// What a case is measured against besides its expectations.
#[derive(Clone, Copy, Debug)]
pub enum Against<'a> {
    /// No baseline file was given.
    Nothing,
    /// A baseline file was given but has no case of this name.
    Missing,
    /// The case's baseline, with the gate's one-sided level and bootstrap resamples.
    Baseline {
        case: &'a BaselineCase,
        alpha: f64,
        resamples: u64,
    },
}

/// Judges one case: its episodes in index order against its expectations and
/// its baseline.
pub fn judge(
    case: &Case,
    episodes: Vec<Episode>,
    wall_time_s: f64,
    against: Against,
) -> CaseResult {
    let stats = CaseStats::of(&episodes, wall_time_s);
    let checks = checks(&case.expect, &stats);
    let mut failures: Vec<String> = checks
        .iter()
        .filter(|c| !c.ok)
        .map(Check::describe)
        .collect();
    let baseline = match against {
        Against::Nothing => BaselineStatus::NotGiven,
        Against::Missing => BaselineStatus::Missing,
        Against::Baseline {
            case: b,
            alpha,
            resamples,
        } => BaselineStatus::Compared(compare(b, &episodes, alpha, resamples)),
    };
    if let BaselineStatus::Compared(c) = &baseline {
        if c.success_rate.significant_drop {
            failures.push(format!("regressed: {}", rate_line(c)));
        }
        if c.mean_return.significant_drop {
            failures.push(format!("regressed: {}", return_line(c)));
        }
    }
    let passed = failures.is_empty();
    let worst = if passed {
        Vec::new()
    } else {
        worst_episodes(&episodes, WORST)
    };
    CaseResult {
        name: case.name.clone(),
        seed: case.seed,
        stats,
        checks,
        baseline,
        failures,
        passed,
        worst,
        open_commands: Vec::new(),
        episodes,
    }
}

/// Crashed first, then failed, then the lowest return, then the longest.
pub fn worst_episodes(episodes: &[Episode], n: usize) -> Vec<Episode> {
    let mut v: Vec<&Episode> = episodes.iter().collect();
    v.sort_by(|a, b| {
        b.crashed()
            .cmp(&a.crashed())
            .then(a.success.cmp(&b.success))
            .then(a.return_.total_cmp(&b.return_))
            .then(b.length.cmp(&a.length))
            .then(a.index.cmp(&b.index))
    });
    v.into_iter().take(n).cloned().collect()
}

/// `success rate 100.0% -> 45.0% (-55.0 points, 90% interval -71.2 to -33.9 points, one-sided p = 0.0001)`.
pub fn rate_line(c: &Comparison) -> String {
    let r = &c.success_rate;
    format!(
        "success rate {} -> {} ({:+.1} points, {:.0}% interval {:+.1} to {:+.1} points, one-sided p {})",
        pct(r.baseline),
        pct(r.current),
        r.diff * 100.0,
        c.confidence * 100.0,
        r.low * 100.0,
        r.high * 100.0,
        if r.p_value < 1e-4 {
            "< 0.0001".to_string()
        } else {
            format!("= {:.4}", r.p_value)
        }
    )
}

/// `mean return 1.000 -> 0.550 (-0.450, 90% bootstrap interval -0.612 to -0.291)`.
pub fn return_line(c: &Comparison) -> String {
    let m = &c.mean_return;
    format!(
        "mean return {:.3} -> {:.3} ({:+.3}, {:.0}% bootstrap interval {:+.3} to {:+.3})",
        m.baseline,
        m.current,
        m.diff,
        c.confidence * 100.0,
        m.low,
        m.high
    )
}

/// The baseline verdict in a few words, for tables.
pub fn baseline_summary(b: &BaselineStatus) -> String {
    match b {
        BaselineStatus::NotGiven => "-".into(),
        BaselineStatus::Missing => "not in baseline".into(),
        BaselineStatus::Compared(c) if c.exact => "reproduces the baseline exactly".into(),
        BaselineStatus::Compared(c) if c.regressed => "regressed".into(),
        BaselineStatus::Compared(_) => "no significant change".into(),
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SuiteReport {
    pub suite: String,
    pub file: String,
    pub db: String,
    pub alpha: f64,
    pub passed: usize,
    pub failed: usize,
    pub cases: Vec<CaseResult>,
}

impl SuiteReport {
    pub fn new(suite: &str, file: &str, db: &str, alpha: f64, mut cases: Vec<CaseResult>) -> Self {
        for c in &mut cases {
            c.open_commands = c.worst.iter().map(|e| debug_command(db, e.id)).collect();
            if !c.worst.is_empty() {
                c.open_commands.push(ide_command(db));
            }
        }
        let passed = cases.iter().filter(|c| c.passed).count();
        SuiteReport {
            suite: suite.into(),
            file: file.into(),
            db: db.into(),
            alpha,
            passed,
            failed: cases.len() - passed,
            cases,
        }
    }

    /// 0 when every case passed, 1 when some case failed or regressed.
    pub fn exit_code(&self) -> u8 {
        u8::from(self.failed > 0)
    }
}

/// Quotes a path for a POSIX shell when it needs it.
pub fn shell_quote(s: &str) -> String {
    let safe = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./:=+,@%".contains(c));
    if safe {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

pub fn debug_command(db: &str, episode: i64) -> String {
    format!("ludus debug {} --episode {episode}", shell_quote(db))
}

pub fn ide_command(db: &str) -> String {
    format!("ludus ide {}", shell_quote(db))
}

fn episode_line(e: &Episode) -> String {
    let mut s = format!(
        "episode {} (index {}, seed {}, {}, {}return {:.3}, length {})",
        e.id,
        e.index,
        e.seed,
        e.outcome,
        if e.success { "success, " } else { "" },
        e.return_,
        e.length
    );
    if let Some(err) = &e.error {
        let first: String = err.lines().next().unwrap_or("").chars().take(200).collect();
        let _ = write!(s, ": {first}");
    }
    s
}

/// The baseline lines of a case for text and JUnit.
fn baseline_lines(b: &BaselineStatus, episodes: u64) -> Vec<String> {
    match b {
        BaselineStatus::NotGiven => Vec::new(),
        BaselineStatus::Missing => vec!["baseline: no such case in the baseline file".into()],
        BaselineStatus::Compared(c) if c.exact => vec![format!(
            "baseline: reproduces the baseline exactly ({episodes} episodes, every digest equal)"
        )],
        BaselineStatus::Compared(c) => {
            let verdict = |drop: bool| {
                if drop {
                    "significant drop"
                } else {
                    "no significant drop"
                }
            };
            vec![
                format!(
                    "baseline: {}: {}",
                    rate_line(c),
                    verdict(c.success_rate.significant_drop)
                ),
                format!(
                    "baseline: {}: {}",
                    return_line(c),
                    verdict(c.mean_return.significant_drop)
                ),
            ]
        }
    }
}

/// The figures of a case, one `name value` line each.
fn figure_lines(c: &CaseResult) -> Vec<String> {
    let s = &c.stats;
    let mut lines = vec![
        format!("episodes        {:>10}", s.episodes),
        format!("success rate    {:>10}", pct(s.success_rate)),
        format!("mean return     {:>10.3}", s.mean_return),
        format!("mean length     {:>10.1}", s.mean_length),
        format!("p95 length      {:>10}", s.p95_length),
        format!("crashed         {:>10}", s.crashed),
        format!("wall time       {:>9.2}s", s.wall_time_s),
    ];
    for check in &c.checks {
        lines.push(format!(
            "expect {}: {}",
            if check.ok { "ok  " } else { "FAIL" },
            check.describe()
        ));
    }
    lines.extend(baseline_lines(&c.baseline, s.episodes));
    lines
}

fn open_lines(c: &CaseResult, db: &str) -> Vec<String> {
    let mut lines = Vec::new();
    for e in &c.worst {
        lines.push(episode_line(e));
        lines.push(format!("  {}", debug_command(db, e.id)));
    }
    if !c.worst.is_empty() {
        lines.push(format!("all episodes: {}", ide_command(db)));
    }
    lines
}

/// The report as printed on a terminal: a block per case, then a summary line.
pub fn text(r: &SuiteReport) -> String {
    let mut out = String::new();
    for c in &r.cases {
        let status = if c.passed { "PASS" } else { "FAIL" };
        let _ = writeln!(out, "{status}  {}", c.name);
        for line in figure_lines(c) {
            let _ = writeln!(out, "      {line}");
        }
        for f in &c.failures {
            let _ = writeln!(out, "      failed: {f}");
        }
        if !c.worst.is_empty() {
            let _ = writeln!(out, "      worst episodes:");
            for line in open_lines(c, &r.db) {
                let _ = writeln!(out, "        {line}");
            }
        }
        out.push('\n');
    }
    let _ = writeln!(
        out,
        "suite {}: {} case{}, {} passed, {} failed; recorded in {}",
        r.suite,
        r.cases.len(),
        if r.cases.len() == 1 { "" } else { "s" },
        r.passed,
        r.failed,
        r.db
    );
    out
}

fn md_escape(s: &str) -> String {
    s.replace('|', r"\|").replace('`', "'")
}

/// A summary fit for a pull-request comment.
pub fn markdown(r: &SuiteReport) -> String {
    let mut out = String::new();
    let head = if r.failed == 0 {
        "all passed".to_string()
    } else {
        format!("{} of {} failed", r.failed, r.cases.len())
    };
    let _ = writeln!(out, "## ludus suite `{}`: {head}\n", md_escape(&r.suite));
    let _ = writeln!(
        out,
        "| | case | episodes | success rate | mean return | mean length | p95 length | crashed | wall time | baseline |"
    );
    let _ = writeln!(out, "|---|---|--:|--:|--:|--:|--:|--:|--:|---|");
    for c in &r.cases {
        let s = &c.stats;
        let _ = writeln!(
            out,
            "| {} | `{}` | {} | {} | {:.3} | {:.1} | {} | {} | {:.2}s | {} |",
            if c.passed { "✅" } else { "❌" },
            md_escape(&c.name),
            s.episodes,
            pct(s.success_rate),
            s.mean_return,
            s.mean_length,
            s.p95_length,
            s.crashed,
            s.wall_time_s,
            baseline_summary(&c.baseline)
        );
    }
    for c in r.cases.iter().filter(|c| !c.passed) {
        let _ = writeln!(out, "\n### ❌ `{}`\n", md_escape(&c.name));
        for f in &c.failures {
            let _ = writeln!(out, "- {}", md_escape(f));
        }
        if !c.worst.is_empty() {
            let _ = writeln!(out, "\nWorst episodes:\n");
            for e in &c.worst {
                let _ = writeln!(out, "- {}", md_escape(&episode_line(e)));
            }
            let _ = writeln!(out, "\n```sh");
            for e in &c.worst {
                let _ = writeln!(out, "{}", debug_command(&r.db, e.id));
            }
            let _ = writeln!(out, "{}", ide_command(&r.db));
            let _ = writeln!(out, "```");
        }
    }
    if r.cases
        .iter()
        .any(|c| matches!(c.baseline, BaselineStatus::Compared(_)))
    {
        let _ = writeln!(
            out,
            "\nA case regresses only on a significant drop (one-sided level {}): the Newcombe interval on the success-rate change, or a bootstrap interval on the mean-return change, lies below zero.",
            r.alpha
        );
    }
    out
}

/// JUnit XML: one `testsuite` for the suite, one `testcase` per case; a failed
/// case's `failure` carries the figures.
pub fn junit(r: &SuiteReport) -> Result<String, quick_junit::SerializeError> {
    let mut report = quick_junit::Report::new(format!("ludus suite {}", r.suite));
    let mut ts = TestSuite::new(r.suite.clone());
    let mut total = 0.0;
    for c in &r.cases {
        total += c.stats.wall_time_s;
        let status = if c.passed {
            TestCaseStatus::success()
        } else {
            let mut st = TestCaseStatus::non_success(NonSuccessKind::Failure);
            let regressed = matches!(&c.baseline, BaselineStatus::Compared(b) if b.regressed);
            let below = c.checks.iter().any(|k| !k.ok);
            st.set_type(match (below, regressed) {
                (true, true) => "threshold,regression",
                (false, true) => "regression",
                _ => "threshold",
            });
            st.set_message(c.failures.join("; "));
            let mut body = figure_lines(c).join("\n");
            for line in open_lines(c, &r.db) {
                body.push('\n');
                body.push_str(&line);
            }
            st.set_description(body);
            st
        };
        let mut tc = TestCase::new(c.name.clone(), status);
        tc.set_classname(format!("ludus.suite.{}", r.suite));
        tc.set_time(Duration::from_secs_f64(c.stats.wall_time_s.max(0.0)));
        let s = &c.stats;
        tc.add_properties([
            Property::new("episodes", s.episodes.to_string()),
            Property::new("success_rate", s.success_rate.to_string()),
            Property::new("mean_return", s.mean_return.to_string()),
            Property::new("mean_length", s.mean_length.to_string()),
            Property::new("p95_length", s.p95_length.to_string()),
            Property::new("crashed", s.crashed.to_string()),
            Property::new("baseline", baseline_summary(&c.baseline)),
        ]);
        ts.add_test_case(tc);
    }
    ts.set_time(Duration::from_secs_f64(total.max(0.0)));
    report.add_test_suite(ts);
    report.to_string()
}

/// The per-case part of a baseline file.
pub fn baseline_case(c: &CaseResult) -> BaselineCase {
    BaselineCase::of(c.seed, &c.stats, &c.episodes)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use expect_test::expect;

    use super::*;
    use crate::model::parse;

    fn episodes(successes: &[bool], returns: &[f64], tag: &str) -> Vec<Episode> {
        successes
            .iter()
            .zip(returns)
            .enumerate()
            .map(|(i, (&success, &r))| Episode {
                id: 100 + i as i64,
                index: i as u64,
                seed: 7 * i as u64,
                outcome: if success { "terminated" } else { "truncated" }.into(),
                return_: r,
                length: if success { 10 } else { 40 },
                success,
                digest: format!("{tag}{i}"),
                error: None,
                model_calls: 0,
                tokens: 0,
                cost_usd: 0.0,
            })
            .collect()
    }

    fn against(case: &BaselineCase) -> Against<'_> {
        Against::Baseline {
            case,
            alpha: 0.05,
            resamples: 1000,
        }
    }

    fn report() -> SuiteReport {
        let suite = parse(
            "[[case]]\nname = \"maze\"\nenv = \"m.wasm\"\nagent = \"a.wasm\"\nexpect = { success_rate_min = 0.9 }\n\n[[case]]\nname = \"same\"\nenv = \"m.wasm\"\nagent = \"a.wasm\"\n",
            Path::new("s/ci.toml"),
        )
        .unwrap();
        let good = episodes(&[true; 20], &[1.0; 20], "g");
        let mut bad_success = [true; 20];
        for s in bad_success.iter_mut().step_by(2) {
            *s = false;
        }
        let bad_returns: Vec<f64> = bad_success
            .iter()
            .map(|&s| f64::from(u8::from(s)))
            .collect();
        let bad = episodes(&bad_success, &bad_returns, "b");
        let base = BaselineCase::of(0, &CaseStats::of(&good, 1.0), &good);
        let cases = vec![
            judge(&suite.cases[0], bad, 0.5, against(&base)),
            judge(&suite.cases[1], good, 0.25, against(&base)),
        ];
        SuiteReport::new("ci", "s/ci.toml", "runs/ci db.sqlite", 0.05, cases)
    }

    #[test]
    fn judging_thresholds_and_baseline() {
        let r = report();
        assert_eq!((r.passed, r.failed, r.exit_code()), (1, 1, 1));
        let bad = &r.cases[0];
        assert_eq!(bad.failures.len(), 3, "{:?}", bad.failures);
        assert_eq!(
            bad.worst.iter().map(|e| e.index).collect::<Vec<_>>(),
            [0, 2, 4]
        );
        let BaselineStatus::Compared(c) = &r.cases[1].baseline else {
            panic!("not compared");
        };
        assert!(c.exact && !c.regressed);
    }

    #[test]
    fn text_report() {
        expect![[r#"
            FAIL  maze
                  episodes                20
                  success rate         50.0%
                  mean return          0.500
                  mean length           25.0
                  p95 length              40
                  crashed                  0
                  wall time            0.50s
                  expect FAIL: success rate 50.0% < 90.0% required
                  expect ok  : crashed episodes 0 <= 0 allowed
                  baseline: success rate 100.0% -> 50.0% (-50.0 points, 90% interval -67.3 to -29.0 points, one-sided p = 0.0001): significant drop
                  baseline: mean return 1.000 -> 0.500 (-0.500, 90% bootstrap interval -0.650 to -0.300): significant drop
                  failed: success rate 50.0% < 90.0% required
                  failed: regressed: success rate 100.0% -> 50.0% (-50.0 points, 90% interval -67.3 to -29.0 points, one-sided p = 0.0001)
                  failed: regressed: mean return 1.000 -> 0.500 (-0.500, 90% bootstrap interval -0.650 to -0.300)
                  worst episodes:
                    episode 100 (index 0, seed 0, truncated, return 0.000, length 40)
                      ludus debug 'runs/ci db.sqlite' --episode 100
                    episode 102 (index 2, seed 14, truncated, return 0.000, length 40)
                      ludus debug 'runs/ci db.sqlite' --episode 102
                    episode 104 (index 4, seed 28, truncated, return 0.000, length 40)
                      ludus debug 'runs/ci db.sqlite' --episode 104
                    all episodes: ludus ide 'runs/ci db.sqlite'

            PASS  same
                  episodes                20
                  success rate        100.0%
                  mean return          1.000
                  mean length           10.0
                  p95 length              10
                  crashed                  0
                  wall time            0.25s
                  expect ok  : crashed episodes 0 <= 0 allowed
                  baseline: reproduces the baseline exactly (20 episodes, every digest equal)

            suite ci: 2 cases, 1 passed, 1 failed; recorded in runs/ci db.sqlite
        "#]]
        .assert_eq(&text(&report()));
    }

    #[test]
    fn markdown_report() {
        expect![[r#"
            ## ludus suite `ci`: 1 of 2 failed

            | | case | episodes | success rate | mean return | mean length | p95 length | crashed | wall time | baseline |
            |---|---|--:|--:|--:|--:|--:|--:|--:|---|
            | ❌ | `maze` | 20 | 50.0% | 0.500 | 25.0 | 40 | 0 | 0.50s | regressed |
            | ✅ | `same` | 20 | 100.0% | 1.000 | 10.0 | 10 | 0 | 0.25s | reproduces the baseline exactly |

            ### ❌ `maze`

            - success rate 50.0% < 90.0% required
            - regressed: success rate 100.0% -> 50.0% (-50.0 points, 90% interval -67.3 to -29.0 points, one-sided p = 0.0001)
            - regressed: mean return 1.000 -> 0.500 (-0.500, 90% bootstrap interval -0.650 to -0.300)

            Worst episodes:

            - episode 100 (index 0, seed 0, truncated, return 0.000, length 40)
            - episode 102 (index 2, seed 14, truncated, return 0.000, length 40)
            - episode 104 (index 4, seed 28, truncated, return 0.000, length 40)

            ```sh
            ludus debug 'runs/ci db.sqlite' --episode 100
            ludus debug 'runs/ci db.sqlite' --episode 102
            ludus debug 'runs/ci db.sqlite' --episode 104
            ludus ide 'runs/ci db.sqlite'
            ```

            A case regresses only on a significant drop (one-sided level 0.05): the Newcombe interval on the success-rate change, or a bootstrap interval on the mean-return change, lies below zero.
        "#]].assert_eq(&markdown(&report()));
    }
}
