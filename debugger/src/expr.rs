//! Breakpoint and watch expressions, in CEL (the Common Expression Language).
//!
//! An expression sees one frame through these variables (see
//! [`crate::view`] for their shapes): `step`, `reward`, `env_reward`,
//! `terminated`, `truncated`, `done`, `success`, `note`, `info`, `action`,
//! `observation`, `logs`, `log`, `memory`, `changed`, `timing`, `outcome`,
//! `episode`, and `prev` (the same for the previous frame).

use std::fmt;

use cel::{Context, Program, Value};

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

/// The parts of a frame an expression reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Uses {
    /// Bit i: the plain variable `view::PLAIN[i]` is read.
    pub plain: u32,
    pub memory: bool,
    pub prev: bool,
    pub observation: bool,
    pub logs: bool,
}

impl Uses {
    /// The parts of recorded frames these variables are built from.
    pub fn fields(self) -> ludus_arena::store::FrameFields {
        let info = crate::view::PLAIN.iter().position(|n| *n == "info");
        ludus_arena::store::FrameFields {
            observation: self.observation,
            info: info.is_some_and(|i| self.plain & (1 << i) != 0),
            logs: self.logs,
            memory_writes: self.memory,
        }
    }

    pub fn union(self, o: Uses) -> Uses {
        Uses {
            plain: self.plain | o.plain,
            memory: self.memory || o.memory,
            prev: self.prev || o.prev,
            observation: self.observation || o.observation,
            logs: self.logs || o.logs,
        }
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
