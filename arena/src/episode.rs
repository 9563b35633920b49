//! What a step means for its episode, in one place: the flags a frame
//! records (the env's own, plus the contract's truncation at `max-steps`),
//! the return, the length, the success verdict and the outcome.
//! [`crate::Stepper`] (runs, replays, forks, live mode) and the trainer's
//! samplers both account their steps here, so the same actions give the same
//! frames and endings whichever of them played the episode. Pure: no I/O.

use ludus_core::Outcome;
use serde::{Deserialize, Serialize};

/// One episode's result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpisodeReport {
    pub id: i64,
    pub index: u64,
    pub seed: u64,
    pub outcome: Outcome,
    #[serde(rename = "return")]
    #[serde(with = "ludus_core::json_float")]
    pub return_: f64,
    pub length: u64,
    pub success: bool,
    /// A hash over every recorded frame and the episode's ending.
    pub digest: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The episode's model calls, tokens, cost and waiting time.
    #[serde(flatten, default)]
    pub model: crate::model::ModelTotals,
}

/// Whether an env's info JSON says `"success": true`.
pub fn info_says_success(info: &str) -> bool {
    if info.is_empty() {
        return false;
    }
    serde_json::from_str::<serde_json::Value>(info)
        .ok()
        .and_then(|v| v.get("success").and_then(serde_json::Value::as_bool))
        .unwrap_or(false)
}

/// One episode's running account.
#[derive(Debug, Clone)]
pub struct EpisodeTracker {
    max_steps: u32,
    step: u32,
    return_: f64,
    success: Option<bool>,
    outcome: Option<Outcome>,
}

/// What one step recorded, as the frame stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepFlags {
    /// The frame's step index.
    pub step: u32,
    pub terminated: bool,
    /// The env's truncation, or the step limit reached without termination.
    pub truncated: bool,
}

impl StepFlags {
    pub fn ended(self) -> bool {
        self.terminated || self.truncated
    }
}

impl EpisodeTracker {
    /// An episode of an env that declared `max_steps` (0: no limit).
    pub fn new(max_steps: u32) -> EpisodeTracker {
        EpisodeTracker {
            max_steps,
            step: 0,
            return_: 0.0,
            success: None,
            outcome: None,
        }
    }

    /// The flags the next frame records for an env step that reported these.
    pub fn flags(&self, terminated: bool, truncated: bool) -> StepFlags {
        let at_limit = self.max_steps > 0 && self.step + 1 >= self.max_steps;
        StepFlags {
            step: self.step,
            terminated,
            truncated: truncated || (!terminated && at_limit),
        }
    }

    /// Accounts a recorded step: `reward` is the recorded reward, `success`
    /// the reward plugin's verdict at this step (None without one), `info`
    /// the env's info JSON. When the step ends the episode and no verdict was
    /// given, the final info's `"success"` decides.
    pub fn record(&mut self, flags: StepFlags, reward: f32, success: Option<bool>, info: &str) {
        if success.is_some() {
            self.success = success;
        }
        self.return_ += f64::from(reward);
        if flags.ended() && self.success.is_none() {
            self.success = Some(info_says_success(info));
        }
        self.step += 1;
        if flags.ended() {
            self.outcome = Some(if flags.terminated {
                Outcome::Terminated
            } else {
                Outcome::Truncated
            });
        }
    }

    /// Ends the episode otherwise (a crash, an interrupt), unless it ended.
    pub fn end(&mut self, outcome: Outcome) {
        if self.outcome.is_none() {
            self.outcome = Some(outcome);
        }
    }

    /// Steps recorded so far: the next frame's index and the episode's length.
    pub fn step(&self) -> u32 {
        self.step
    }

    pub fn return_(&self) -> f64 {
        self.return_
    }

    /// How the episode ended, once it has.
    pub fn outcome(&self) -> Option<Outcome> {
        self.outcome
    }

    /// Whether the episode succeeded: only an episode the env ended can.
    pub fn success(&self) -> bool {
        matches!(self.outcome, Some(Outcome::Terminated | Outcome::Truncated))
            && self.success.unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_step_limit_truncates_and_success_is_decided_at_the_end() {
        let mut t = EpisodeTracker::new(3);
        let mut infos = vec![r#"{"success":true}"#, "", r#"{"success":true}"#].into_iter();
        for i in 0..3 {
            let f = t.flags(false, false);
            assert_eq!(f.step, i);
            assert_eq!(f.truncated, i == 2, "truncated only at max-steps");
            t.record(f, 1.0, None, infos.next().unwrap());
            // An early "success" in the info does not decide the episode.
            assert_eq!(t.outcome().is_some(), i == 2);
        }
        assert_eq!(t.outcome(), Some(Outcome::Truncated));
        assert!(t.success());
        assert_eq!((t.step(), t.return_()), (3, 3.0));
    }

    #[test]
    fn termination_wins_over_the_limit_and_a_reward_verdict_over_the_info() {
        let mut t = EpisodeTracker::new(1);
        let f = t.flags(true, false);
        assert_eq!((f.terminated, f.truncated), (true, false));
        t.record(f, 0.5, Some(false), r#"{"success":true}"#);
        assert_eq!(t.outcome(), Some(Outcome::Terminated));
        assert!(!t.success());
        let mut u = EpisodeTracker::new(0);
        u.record(u.flags(false, false), 1.0, None, r#"{"success":true}"#);
        assert_eq!(u.outcome(), None, "no limit: the episode goes on");
        u.end(Outcome::Crashed);
        assert!(!u.success(), "a crashed episode never succeeds");
    }
}
