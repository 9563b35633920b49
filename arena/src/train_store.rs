//! What a training run records besides its episodes' frames: its metrics
//! as they are produced (`train_metrics`) and, per step, the behaviour
//! policy's log-probability and value, the advantage the learner computed
//! and the policy lag (`train_steps`). The recorder ([`crate::recorder`])
//! writes them with the frames, through the same writer and commit; this
//! module holds their tables, types and readers. Part of the storage layer.

use rusqlite::Connection;
use serde::{Deserialize, Serialize};

use crate::store::{Db, Real, StoreError};

const TRAIN_SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS train_metrics (
    run_id TEXT NOT NULL,
    update_no INTEGER NOT NULL,
    name TEXT NOT NULL,
    value REAL NOT NULL,
    -- seconds since the Unix epoch
    time REAL NOT NULL,
    PRIMARY KEY (run_id, update_no, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS train_steps (
    episode_id INTEGER NOT NULL,
    step INTEGER NOT NULL,
    -- the policy version that chose the action
    version INTEGER NOT NULL,
    log_prob REAL NOT NULL,
    value REAL NOT NULL,
    -- NULL when the learner dropped the step (older than the lag bound)
    advantage REAL,
    -- learner version minus `version` when the step was trained on
    lag INTEGER NOT NULL,
    PRIMARY KEY (episode_id, step)
) WITHOUT ROWID;
"#;

/// Per-step training data recorded next to a frame.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepStat {
    pub version: u64,
    pub log_prob: f32,
    pub value: f32,
    /// `None` when the step was dropped for being older than the lag bound.
    pub advantage: Option<f32>,
    pub lag: u64,
}

/// Where a resumed run picks up: rows recorded after the checkpoint are removed.
#[derive(Clone, Debug, Default)]
pub struct ResumePoint {
    /// The last update whose metrics stay.
    pub update: u64,
    /// Episodes with this index or higher are removed.
    pub next_episode: u64,
    /// Episodes in progress at the checkpoint: (index, steps that stay).
    pub open: Vec<(u64, u64)>,
}

/// A stored metric.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricRow {
    pub update: u64,
    pub name: String,
    pub value: f64,
    pub time: f64,
}

/// A stored per-step record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredStep {
    pub step: u64,
    pub stat: StepStat,
}

pub(crate) fn ensure_schema(conn: &Connection) -> Result<(), StoreError> {
    conn.execute_batch(TRAIN_SCHEMA)?;
    Ok(())
}

impl Db {
    /// Every metric of a training run, by update then name.
    pub fn train_metrics(&self, run_id: &str) -> Result<Vec<MetricRow>, StoreError> {
        ensure_schema(&self.conn)?;
        let mut stmt = self.conn.prepare(
            "SELECT update_no, name, value, time FROM train_metrics WHERE run_id = ?1 ORDER BY update_no, name",
        )?;
        let rows = stmt.query_map([run_id], |r| {
            Ok(MetricRow {
                update: r.get::<_, i64>(0)? as u64,
                name: r.get(1)?,
                value: r.get::<_, Real>(2)?.0,
                time: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The per-step training records of an episode, in step order.
    pub fn train_steps(&self, episode: i64) -> Result<Vec<StoredStep>, StoreError> {
        ensure_schema(&self.conn)?;
        let mut stmt = self.conn.prepare(
            "SELECT step, version, log_prob, value, advantage, lag FROM train_steps WHERE episode_id = ?1 ORDER BY step",
        )?;
        let rows = stmt.query_map([episode], |r| {
            Ok(StoredStep {
                step: r.get::<_, i64>(0)? as u64,
                stat: StepStat {
                    version: r.get::<_, i64>(1)? as u64,
                    log_prob: r.get::<_, Real>(2)?.0 as f32,
                    value: r.get::<_, Real>(3)?.0 as f32,
                    advantage: r.get::<_, Option<Real>>(4)?.map(|a| a.0 as f32),
                    lag: r.get::<_, i64>(5)? as u64,
                },
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}
