//! Breakpoint and watch expressions, in CEL (the Common Expression Language).
//!
//! An expression sees one frame through these variables (see
//! [`crate::view`] for their shapes): `step`, `reward`, `env_reward`,
//! `terminated`, `truncated`, `done`, `success`, `note`, `info`, `action`,
//! `observation`, `logs`, `log`, `memory`, `changed`, `timing`, `outcome`,
//! `episode`, and `prev` (the same for the previous frame).

use std::fmt;

pub use cel::Context;
use cel::{Program, Value};

pub(crate) use crate::view::Uses;

/// A compiled expression, with what it reads (so a scan builds only that).
pub struct Expr {
    source: String,
    program: Program,
    pub(crate) uses: Uses,
}

impl fmt::Debug for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Expr").field(&self.source).finish()
    }
}

/// An expression that does not compile: where, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("bad expression `{text}` at column {column}: {message}")]
pub struct ExprError {
    pub text: String,
    /// 1-based column of the problem.
    pub column: usize,
    pub message: String,
}

impl ExprError {
    /// The expression with a caret under the column, for a terminal or a UI.
    pub fn pointer(&self) -> String {
        format!(
            "{}\n{}^",
            self.text,
            " ".repeat(self.column.saturating_sub(1))
        )
    }
}

/// The longest expression accepted, in bytes.
pub const MAX_EXPR_BYTES: usize = 4096;
/// The most operators, brackets and member accesses one expression may
/// hold. CEL's parser and evaluator recurse once per operator, so a chain
/// of tens of thousands overflowed the stack and aborted the process; real
/// breakpoints and watches use a few dozen.
pub const MAX_EXPR_OPERATORS: usize = 256;

/// Operator characters outside string literals, and the byte where the
/// count passed `limit` (if it did).
fn operators(source: &str, limit: usize) -> (usize, Option<usize>) {
    let mut n = 0;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (i, c) in source.char_indices() {
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                }
            }
            None if c == '"' || c == '\'' => quote = Some(c),
            None if "+-*/%<>=!&|?:.[({,".contains(c) => {
                n += 1;
                if n > limit {
                    return (n, Some(i));
                }
            }
            None => {}
        }
    }
    (n, None)
}

impl Expr {
    pub fn compile(source: &str) -> Result<Expr, ExprError> {
        let trimmed = source.trim();
        if trimmed.is_empty() {
            return Err(ExprError {
                text: source.to_string(),
                column: 1,
                message: "empty expression".into(),
            });
        }
        // Bounded before parsing; the text kept for the message is bounded too.
        let shown = |s: &str| -> String {
            match s.char_indices().nth(80) {
                Some((i, _)) => format!("{}...", &s[..i]),
                None => s.to_string(),
            }
        };
        if source.len() > MAX_EXPR_BYTES {
            return Err(ExprError {
                text: shown(source),
                column: 1,
                message: format!(
                    "the expression is {} bytes; at most {MAX_EXPR_BYTES} are accepted",
                    source.len()
                ),
            });
        }
        if let (_, Some(at)) = operators(source, MAX_EXPR_OPERATORS) {
            return Err(ExprError {
                text: shown(source),
                column: source[..at].chars().count() + 1,
                message: format!(
                    "more than {MAX_EXPR_OPERATORS} operators; split it into several breakpoints or watches"
                ),
            });
        }
        let program = Program::compile(source).map_err(|errors| {
            let first = errors.errors.first();
            let (line, col) = first.map_or((1, 0), |e| e.pos);
            // CEL gives 1-based (line, column); report the column over the
            // whole (usually one-line) expression.
            let offset: usize = source
                .split('\n')
                .take((line.max(1) - 1) as usize)
                .map(|l| l.chars().count() + 1)
                .sum();
            ExprError {
                text: source.to_string(),
                column: offset + col.max(1) as usize,
                message: first.map_or_else(|| "cannot parse".to_string(), |e| e.msg.clone()),
            }
        })?;
        let refs = program.references();
        let prev = refs.has_variable("prev");
        // `prev` is read as a whole, so it needs every variable.
        let plain = crate::view::PLAIN
            .iter()
            .enumerate()
            .filter(|(_, name)| prev || refs.has_variable(name))
            .fold(0u32, |bits, (i, _)| bits | 1 << i);
        let uses = Uses {
            plain,
            memory: refs.has_variable("memory")
                || refs.has_variable("changed")
                || (prev && (source.contains("memory") || source.contains("changed"))),
            prev,
            observation: refs.has_variable("observation")
                || (prev && source.contains("observation")),
            logs: refs.has_variable("logs")
                || refs.has_variable("log")
                || (prev && source.contains("log")),
            model: refs.has_variable("model") || (prev && source.contains("model")),
        };
        Ok(Expr {
            source: source.to_string(),
            program,
            uses,
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluates against a context holding a frame's variables.
    pub fn eval(&self, context: &Context) -> Result<Value, String> {
        self.program.execute(context).map_err(|e| e.to_string())
    }

    /// Whether the expression holds: `true` only for the boolean true; an
    /// evaluation error (a missing key, say) counts as not holding.
    pub fn holds(&self, context: &Context) -> Result<bool, String> {
        match self.eval(context)? {
            Value::Bool(b) => Ok(b),
            other => Err(format!(
                "`{}` gives {}, not a boolean",
                self.source,
                crate::view::cel_to_json(&other)
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The largest expression the bounds let through compiles and
    /// evaluates on a thread with a default 2 MiB stack (the IDE's and the
    /// scans' workers); anything larger is refused before parsing.
    #[test]
    fn expressions_are_bounded_before_parsing() {
        let chain = |ops: usize| format!("1{}", "+1".repeat(ops));
        let widest = chain(MAX_EXPR_OPERATORS);
        let value = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || {
                let e = Expr::compile(&widest).expect("compiles");
                e.eval(&Context::default()).expect("evaluates")
            })
            .expect("thread")
            .join()
            .expect("no stack overflow");
        assert_eq!(value, Value::Int(MAX_EXPR_OPERATORS as i64 + 1));
        let e = Expr::compile(&chain(MAX_EXPR_OPERATORS + 1)).unwrap_err();
        assert!(e.message.contains("more than 256 operators"), "{e}");
        assert!(e.text.len() < 100, "the message is bounded: {e}");
        // 40 KB and 1 MB chains: refused by size, at once.
        for ops in [20_000, 500_000] {
            let e = Expr::compile(&chain(ops)).unwrap_err();
            assert!(e.message.contains("at most 4096"), "{e}");
        }
        // Operators inside string literals do not count.
        let path = format!("memory[\"{}\"] == 'a+b'", "/x".repeat(400));
        assert!(Expr::compile(&path).is_ok());
        assert_eq!(operators(r#""a+b" + 'c\'+d'"#, 10).0, 1);
    }

    /// Whatever opens a nesting, repeated up to the size bound, is refused
    /// or fails to parse, on a 2 MiB stack, without overflowing it.
    #[test]
    fn deep_nesting_cannot_overflow_the_stack() {
        for opener in ["{", "(", "[", "!", "-", "{1:", "[1,", "a.", "f("] {
            let text = opener.repeat(MAX_EXPR_BYTES / opener.len());
            let ok = std::thread::Builder::new()
                .stack_size(2 << 20)
                .spawn(move || {
                    if let Ok(e) = Expr::compile(&text) {
                        let _ = e.eval(&Context::default());
                    }
                })
                .expect("thread")
                .join();
            assert!(ok.is_ok(), "`{opener}` x many overflowed the stack");
        }
    }

    #[test]
    fn errors_point_at_the_column() {
        let e = Expr::compile("reward < ").unwrap_err();
        assert!(e.column >= 9, "{e:?}");
        let e = Expr::compile("step > 40 && action.kind = \"click\"").unwrap_err();
        assert_eq!(e.column, 26, "{e:?}\n{}", e.pointer());
        assert!(e.to_string().contains("column 26"));
        assert_eq!(Expr::compile("a\n  = 2").unwrap_err().column, 5);
    }

    #[test]
    fn knows_what_it_reads() {
        let e =
            Expr::compile(r#"memory["/episode/plan"] != prev.memory["/episode/plan"]"#).unwrap();
        assert!(e.uses.memory && e.uses.prev && !e.uses.observation);
        let e = Expr::compile("reward < 0").unwrap();
        assert_eq!(
            (e.uses.memory, e.uses.prev, e.uses.observation, e.uses.logs),
            (false, false, false, false)
        );
        assert_eq!(e.uses.plain, 1 << 1, "only `reward`");
    }
}
