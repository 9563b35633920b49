//! How an episode ended.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How an episode ended. Its string form (serde, [`Outcome::as_str`],
/// [`fmt::Display`], [`FromStr`]) is what recordings, reports and suites store,
/// so the four strings never change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The environment ended the episode (e.g. goal reached, pole fell).
    Terminated,
    /// The step limit ended the episode.
    Truncated,
    /// A plugin trapped, ran out of budget or memory, or panicked.
    Crashed,
    /// The run was killed while the episode ran.
    Interrupted,
}

impl Outcome {
    /// Every outcome, in the order above.
    pub const ALL: [Outcome; 4] = [
        Outcome::Terminated,
        Outcome::Truncated,
        Outcome::Crashed,
        Outcome::Interrupted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Terminated => "terminated",
            Outcome::Truncated => "truncated",
            Outcome::Crashed => "crashed",
            Outcome::Interrupted => "interrupted",
        }
    }

    /// The outcome a stored string names, `None` for anything else.
    pub fn parse(s: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.as_str() == s)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that names no [`Outcome`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown outcome {0:?} (expected terminated, truncated, crashed or interrupted)")]
pub struct ParseOutcomeError(pub String);

impl FromStr for Outcome {
    type Err = ParseOutcomeError;

    fn from_str(s: &str) -> Result<Outcome, ParseOutcomeError> {
        Outcome::parse(s).ok_or_else(|| ParseOutcomeError(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_forms_agree_and_round_trip() {
        for o in Outcome::ALL {
            let json = format!("\"{}\"", o.as_str());
            assert_eq!(serde_json::to_string(&o).expect("serializes"), json);
            assert_eq!(serde_json::from_str::<Outcome>(&json).expect("parses"), o);
            assert_eq!(o.to_string(), o.as_str());
            assert_eq!(o.as_str().parse::<Outcome>(), Ok(o));
        }
        assert_eq!(Outcome::parse("Crashed"), None);
        assert!("done".parse::<Outcome>().is_err());
    }
}
