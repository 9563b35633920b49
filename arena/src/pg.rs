//! A recording in PostgreSQL: the SQLite store's tables with PostgreSQL's
//! types, created (and their version checked) on first use. This module
//! alone touches PostgreSQL. A connection string's password is never
//! printed or recorded: errors name the database by [`redact`]ed URL.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use postgres::types::ToSql;
use postgres::{Client, NoTls};

use crate::store::{SCHEMA_VERSION, StoreError};
use crate::stores::{
    Cell, EPISODES, Filter, Ids, Kind, Store, Table, columns, copy_episodes, sqlite,
};

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    created_at TEXT NOT NULL,
    seed BIGINT NOT NULL,
    episodes BIGINT NOT NULL,
    jobs BIGINT NOT NULL,
    spec TEXT NOT NULL,
    status TEXT NOT NULL,
    pid BIGINT NOT NULL,
    finished_at TEXT
);
CREATE TABLE IF NOT EXISTS episodes (
    id BIGINT PRIMARY KEY,
    run_id TEXT NOT NULL REFERENCES runs(id),
    idx BIGINT NOT NULL,
    seed BIGINT NOT NULL,
    outcome TEXT NOT NULL,
    "return" DOUBLE PRECISION NOT NULL DEFAULT 0,
    length BIGINT NOT NULL DEFAULT 0,
    success BIGINT NOT NULL DEFAULT 0,
    digest TEXT,
    error TEXT,
    task TEXT,
    reset_info TEXT,
    final_observation BYTEA,
    parent_episode BIGINT,
    parent_frame BIGINT,
    edits TEXT,
    UNIQUE (run_id, idx)
);
CREATE TABLE IF NOT EXISTS frame_chunks (
    episode_id BIGINT NOT NULL,
    chunk BIGINT NOT NULL,
    first_step BIGINT NOT NULL,
    frames BIGINT NOT NULL,
    data BYTEA NOT NULL,
    timings BYTEA NOT NULL,
    block BIGINT,
    block_at BIGINT,
    data_len BIGINT,
    timings_len BIGINT,
    PRIMARY KEY (episode_id, chunk)
);
CREATE TABLE IF NOT EXISTS frame_blocks (id BIGINT PRIMARY KEY, data BYTEA NOT NULL);
CREATE TABLE IF NOT EXISTS memory_writes (
    episode_id BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    step BIGINT NOT NULL,
    path TEXT NOT NULL,
    value TEXT,
    PRIMARY KEY (episode_id, seq)
);
CREATE INDEX IF NOT EXISTS memory_writes_by_path ON memory_writes (episode_id, path, step, seq);
CREATE TABLE IF NOT EXISTS run_agent_memory (
    run_id TEXT NOT NULL,
    path TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (run_id, path)
);
CREATE TABLE IF NOT EXISTS model_calls (
    episode_id BIGINT NOT NULL,
    step BIGINT NOT NULL,
    idx BIGINT NOT NULL,
    role TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    outcome TEXT NOT NULL,
    tokens_in BIGINT NOT NULL,
    tokens_out BIGINT NOT NULL,
    cost_usd DOUBLE PRECISION NOT NULL,
    latency_ms DOUBLE PRECISION NOT NULL,
    served TEXT NOT NULL,
    data BYTEA NOT NULL,
    PRIMARY KEY (episode_id, step, idx)
);
CREATE TABLE IF NOT EXISTS model_images (
    key BYTEA PRIMARY KEY,
    width BIGINT NOT NULL,
    height BIGINT NOT NULL,
    channels BIGINT NOT NULL,
    data BYTEA NOT NULL
);
CREATE TABLE IF NOT EXISTS agent_memory (path TEXT PRIMARY KEY, value TEXT NOT NULL, episode_id BIGINT);
CREATE TABLE IF NOT EXISTS user_memory (path TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS train_metrics (
    run_id TEXT NOT NULL,
    update_no BIGINT NOT NULL,
    name TEXT NOT NULL,
    value DOUBLE PRECISION NOT NULL,
    time DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (run_id, update_no, name)
);
CREATE SEQUENCE IF NOT EXISTS episodes_ids;
CREATE SEQUENCE IF NOT EXISTS frame_blocks_ids;
-- The job queue: a run's episodes, leased by `ludus worker`s.
CREATE TABLE IF NOT EXISTS plugins (hash TEXT PRIMARY KEY, bytes BYTEA NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    run_id TEXT NOT NULL REFERENCES runs(id),
    idx BIGINT NOT NULL,
    seed BIGINT NOT NULL,
    -- queued, leased, done, or failed (every try ended in an error)
    state TEXT NOT NULL DEFAULT 'queued',
    worker TEXT,
    lease_until TIMESTAMPTZ,
    attempts BIGINT NOT NULL DEFAULT 0,
    -- why the last try failed (a worker's error, not a crashed episode)
    error TEXT,
    PRIMARY KEY (run_id, idx)
);
CREATE INDEX IF NOT EXISTS jobs_open ON jobs (run_id, idx) WHERE state <> 'done';
CREATE TABLE IF NOT EXISTS train_steps (
    episode_id BIGINT NOT NULL,
    step BIGINT NOT NULL,
    version BIGINT NOT NULL,
    log_prob DOUBLE PRECISION NOT NULL,
    value DOUBLE PRECISION NOT NULL,
    advantage DOUBLE PRECISION,
    lag BIGINT NOT NULL,
    PRIMARY KEY (episode_id, step)
);
"#;

/// The advisory lock taken while the schema is made.
const SCHEMA_LOCK: i64 = 0x006c_7564_7573;

/// `url` without its password: `postgres://user:***@host/db`, and
/// `password=***` in a key-value string.
/// The database a URL names (its last path segment, without a query), as
/// far as it is safe in a file name: for files named after it.
pub fn database_name(url: &str) -> String {
    let name: String = url
        .rsplit('/')
        .next()
        .unwrap_or("")
        .chars()
        .take_while(|c| *c != '?')
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .take(40)
        .collect();
    if name.is_empty() {
        "ludus".into()
    } else {
        name
    }
}

/// `text` with the password of every PostgreSQL URL in it hidden: for
/// messages that may quote a URL anywhere.
pub fn redact_all(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("postgres") {
        let (before, from) = rest.split_at(i);
        out.push_str(before);
        let end = from
            .find(|c: char| c.is_whitespace() || matches!(c, '`' | '"' | '\'' | ')' | '(' | ','))
            .unwrap_or(from.len());
        let token = &from[..end];
        if token.starts_with("postgres://") || token.starts_with("postgresql://") {
            out.push_str(&redact(token));
        } else {
            out.push_str(token);
        }
        rest = &from[end.max(1)..];
        if end == 0 {
            out.push_str(&from[..1]);
        }
    }
    out.push_str(rest);
    out
}

pub fn redact(url: &str) -> String {
    let mut out = url.to_string();
    if let Some(scheme_end) = out.find("://") {
        let rest = &out[scheme_end + 3..];
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@')
            && let Some(colon) = rest[..at].find(':')
        {
            let start = scheme_end + 3 + colon + 1;
            let end = scheme_end + 3 + at;
            out.replace_range(start..end, "***");
        }
    }
    // `password=` in the query or a key-value string.
    let lower = out.to_ascii_lowercase();
    if let Some(i) = lower.find("password=") {
        let start = i + "password=".len();
        let end = out[start..]
            .find(['&', ' '])
            .map_or(out.len(), |j| start + j);
        out.replace_range(start..end, "***");
    }
    out
}

/// A connection to a ludus database in PostgreSQL.
pub struct Pg {
    client: Client,
    url: String,
}

fn failed(url: &str, e: impl std::fmt::Display) -> StoreError {
    let message = e.to_string();
    let message = message.lines().next().unwrap_or("").to_string();
    StoreError::Open {
        path: PathBuf::from(redact(url)),
        message,
    }
}

impl Pg {
    /// Connects (10 s at most unless the URL says otherwise) and checks the
    /// schema: a newer one than this ludus's is refused; with `write`, the
    /// tables are created where they are missing.
    pub fn connect(url: &str, write: bool) -> Result<Pg, StoreError> {
        let mut config: postgres::Config = url.parse().map_err(|e| {
            failed(
                url,
                format!(
                    "not a PostgreSQL URL ({e}): write postgres://USER:PASSWORD@HOST:PORT/DATABASE"
                ),
            )
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        let mut client = config.connect(NoTls).map_err(|e| {
            let text = full_message(&e);
            let hint = if text.contains("password authentication failed") {
                " (check the user and password)"
            } else if text.contains("error connecting") || text.contains("timed out") {
                " (is the server running and reachable?)"
            } else {
                ""
            };
            failed(url, format!("{text}{hint}"))
        })?;
        let has_meta: bool = client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM information_schema.tables WHERE table_name = 'meta' AND table_schema = current_schema())",
                &[],
            )
            .map_err(|e| failed(url, full_message(&e)))?
            .get(0);
        if has_meta {
            let found: Option<String> = client
                .query_opt("SELECT value FROM meta WHERE key = 'schema_version'", &[])
                .map_err(|e| failed(url, full_message(&e)))?
                .map(|r| r.get(0));
            if let Some(v) = found.and_then(|v| v.parse::<i64>().ok())
                && v > SCHEMA_VERSION
            {
                return Err(StoreError::NewerSchema {
                    path: PathBuf::from(redact(url)),
                    found: v,
                });
            }
        } else if !write {
            return Err(failed(url, "not a ludus database (it has no `meta` table)"));
        }
        if write {
            // One schema maker at a time (several workers may start at
            // once). The statements run as one transaction, and the lock is
            // the transaction's: released at its commit, when the tables it
            // made are visible to the next schema maker (an explicit unlock
            // before the commit let the next one try to make them again).
            client
                .batch_execute(&format!(
                    "SELECT pg_advisory_xact_lock({SCHEMA_LOCK}); {SCHEMA}"
                ))
                .map_err(|e| failed(url, full_message(&e)))?;
            client
                .execute(
                    "INSERT INTO meta (key, value) VALUES ('schema_version', $1) ON CONFLICT (key) DO NOTHING",
                    &[&SCHEMA_VERSION.to_string()],
                )
                .map_err(|e| failed(url, full_message(&e)))?;
        }
        Ok(Pg {
            client,
            url: url.to_string(),
        })
    }

    fn err(&self, e: postgres::Error) -> StoreError {
        failed(&self.url, full_message(&e))
    }
}

/// Ends a queued run, once: with `status`, or (with `None`) when none of
/// its jobs is open any more, `failed` if one failed, else `finished`. The
/// run's row is locked first, so that two workers finishing its last jobs
/// at once end it once: `FOR NO KEY UPDATE`, which the key-share locks a
/// completing worker already holds on it (its episodes' foreign keys) do
/// not block, where `FOR UPDATE` made two completions deadlock. The `/agent` writes of its episodes that ended
/// normally go into the stored memory in episode order, as when a local
/// run ends.
fn end_run(
    c: &mut impl postgres::GenericClient,
    run_id: &str,
    status: Option<&str>,
) -> Result<(), postgres::Error> {
    let running = c
        .query_opt(
            "SELECT status FROM runs WHERE id = $1 FOR NO KEY UPDATE",
            &[&run_id],
        )?
        .is_some_and(|r| r.get::<_, String>(0) == "running");
    if !running {
        return Ok(());
    }
    let status = match status {
        Some(s) => s.to_string(),
        None => {
            let r = c.query_one(
                "SELECT COUNT(*) FILTER (WHERE state NOT IN ('done', 'failed')), COUNT(*) FILTER (WHERE state = 'failed')
                 FROM jobs WHERE run_id = $1",
                &[&run_id],
            )?;
            let (open, failed): (i64, i64) = (r.get(0), r.get(1));
            if open > 0 {
                return Ok(());
            }
            if failed > 0 { "failed" } else { "finished" }.to_string()
        }
    };
    let now = crate::store::now_rfc3339();
    c.execute(
        "UPDATE runs SET status = $2, finished_at = $3 WHERE id = $1",
        &[&run_id, &status, &now],
    )?;
    let writes = c.query(
        "SELECT e.id, w.path, w.value FROM memory_writes w JOIN episodes e ON e.id = w.episode_id
         WHERE e.run_id = $1 AND e.outcome IN ('terminated', 'truncated')
           AND (w.path = '/agent' OR w.path LIKE '/agent/%')
         ORDER BY e.idx, w.seq",
        &[&run_id],
    )?;
    for w in writes {
        let (episode, path, value): (i64, String, Option<String>) = (w.get(0), w.get(1), w.get(2));
        match value {
            Some(v) => c.execute(
                "INSERT INTO agent_memory (path, value, episode_id) VALUES ($1, $2, $3)
                 ON CONFLICT (path) DO UPDATE SET value = $2, episode_id = $3",
                &[&path, &v, &episode],
            )?,
            None => c.execute("DELETE FROM agent_memory WHERE path = $1", &[&path])?,
        };
    }
    Ok(())
}

/// A driver error with the server's own message where it sent one.
fn full_message(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                text = format!("{text}: {s}");
                source = s.source();
            }
            text
        }
    }
}

fn param(c: &Cell, kind: Kind) -> Box<dyn ToSql + Sync> {
    match (c, kind) {
        (Cell::Null, Kind::Int) => Box::new(None::<i64>),
        (Cell::Null, Kind::Real) => Box::new(None::<f64>),
        (Cell::Null, Kind::Text) => Box::new(None::<String>),
        (Cell::Null, Kind::Blob) => Box::new(None::<Vec<u8>>),
        (Cell::Int(i), Kind::Real) => Box::new(*i as f64),
        (Cell::Int(i), _) => Box::new(*i),
        (Cell::Real(f), _) => Box::new(*f),
        (Cell::Text(t), _) => Box::new(t.clone()),
        (Cell::Blob(b), _) => Box::new(b.clone()),
    }
}

impl Store for Pg {
    fn select(&mut self, table: &Table, filter: &Filter) -> Result<Vec<Vec<Cell>>, StoreError> {
        let base = format!("SELECT {} FROM {}", columns(table), table.name);
        let rows = match filter {
            Filter::All => self.client.query(&base, &[]),
            Filter::Eq(column, value) => {
                let kind = table
                    .columns
                    .iter()
                    .find(|(c, _)| c == column)
                    .map_or(Kind::Text, |(_, k)| *k);
                let p = param(value, kind);
                self.client
                    .query(&format!("{base} WHERE \"{column}\" = $1"), &[p.as_ref()])
            }
            Filter::In(column, ids) => {
                let ids: Vec<i64> = ids.to_vec();
                self.client
                    .query(&format!("{base} WHERE \"{column}\" = ANY($1)"), &[&ids])
            }
        }
        .map_err(|e| self.err(e))?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let mut cells = Vec::with_capacity(table.columns.len());
            for (i, (_, kind)) in table.columns.iter().enumerate() {
                let cell = match kind {
                    Kind::Int => row.try_get::<_, Option<i64>>(i).map(|v| v.map(Cell::Int)),
                    Kind::Real => row.try_get::<_, Option<f64>>(i).map(|v| v.map(Cell::Real)),
                    Kind::Text => row
                        .try_get::<_, Option<String>>(i)
                        .map(|v| v.map(Cell::Text)),
                    Kind::Blob => row
                        .try_get::<_, Option<Vec<u8>>>(i)
                        .map(|v| v.map(Cell::Blob)),
                }
                .map_err(|e| self.err(e))?;
                cells.push(cell.unwrap_or(Cell::Null));
            }
            out.push(cells);
        }
        Ok(out)
    }

    fn insert(&mut self, table: &Table, rows: &[Vec<Cell>]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let marks = (1..=table.columns.len())
            .map(|i| format!("${i}"))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "INSERT INTO {} ({}) VALUES ({marks})",
            table.name,
            columns(table)
        );
        let statement = self.client.prepare(&sql).map_err(|e| self.err(e))?;
        for r in rows {
            let params: Vec<Box<dyn ToSql + Sync>> = r
                .iter()
                .zip(table.columns)
                .map(|(c, (_, kind))| param(c, *kind))
                .collect();
            let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p.as_ref()).collect();
            self.client
                .execute(&statement, &refs)
                .map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    fn reserve(&mut self, table: &Table, n: usize) -> Result<Vec<i64>, StoreError> {
        if n == 0 {
            return Ok(Vec::new());
        }
        // Sequences: concurrent writers (workers) never take the same id.
        let sql = format!(
            "SELECT nextval('{}_ids')::BIGINT FROM generate_series(1, $1::BIGINT)",
            table.name
        );
        let rows = self
            .client
            .query(&sql, &[&(n as i64)])
            .map_err(|e| self.err(e))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    fn begin(&mut self) -> Result<(), StoreError> {
        self.client.batch_execute("BEGIN").map_err(|e| self.err(e))
    }

    fn commit(&mut self) -> Result<(), StoreError> {
        self.client.batch_execute("COMMIT").map_err(|e| self.err(e))
    }

    fn rollback(&mut self) {
        let _ = self.client.batch_execute("ROLLBACK");
    }
}

/// A run to put on the queue.
pub struct NewRun {
    pub id: String,
    pub seed: u64,
    pub jobs: u64,
    pub spec: serde_json::Value,
    /// One per episode, in index order.
    pub seeds: Vec<u64>,
    /// The plugins' bytes by content hash (stored once).
    pub plugins: Vec<(String, Vec<u8>)>,
}

/// An episode leased by a worker.
#[derive(Clone, Debug, PartialEq)]
pub struct Job {
    pub run_id: String,
    pub index: u64,
    pub seed: u64,
    pub attempt: u64,
}

/// A queued run's episode as recorded (for the run's report).
#[derive(Clone, Debug)]
pub struct QueuedEpisode {
    pub id: i64,
    pub index: u64,
    pub seed: u64,
    pub outcome: String,
    pub return_: f64,
    pub length: u64,
    pub digest: Option<String>,
    pub success: bool,
    pub error: Option<String>,
    /// The episode's model calls (answered or not), their tokens (prompt
    /// and completion) and cost, as a local run's report totals them.
    pub model_calls: u64,
    pub tokens: u64,
    pub cost_usd: f64,
}

impl Pg {
    fn tx<T>(
        &mut self,
        f: impl FnOnce(&mut postgres::Transaction<'_>) -> Result<T, postgres::Error>,
    ) -> Result<T, StoreError> {
        let mut tx = self
            .client
            .transaction()
            .map_err(|e| failed(&self.url, full_message(&e)))?;
        let out = f(&mut tx).map_err(|e| failed(&self.url, full_message(&e)))?;
        tx.commit()
            .map_err(|e| failed(&self.url, full_message(&e)))?;
        Ok(out)
    }

    /// Creates the run, stores its plugins and queues one job per episode,
    /// in one transaction.
    pub fn enqueue(&mut self, run: &NewRun) -> Result<(), StoreError> {
        let created = crate::store::now_rfc3339();
        self.tx(|tx| {
            // The memory the episodes start from, as a local run snapshots
            // it: `/user` into the spec, `/agent` into `run_agent_memory`.
            let mut spec = run.spec.clone();
            if let Some(obj) = spec.as_object_mut()
                && !obj.contains_key("user_memory")
            {
                let user: serde_json::Map<String, serde_json::Value> = tx
                    .query("SELECT path, value FROM user_memory", &[])?
                    .iter()
                    .map(|r| (r.get(0), serde_json::Value::String(r.get(1))))
                    .collect();
                obj.insert("user_memory".into(), serde_json::Value::Object(user));
            }
            tx.execute(
                "INSERT INTO runs (id, created_at, seed, episodes, jobs, spec, status, pid) VALUES ($1, $2, $3, $4, $5, $6, 'running', $7)",
                &[&run.id, &created, &(run.seed as i64), &(run.seeds.len() as i64), &(run.jobs as i64), &spec.to_string(), &i64::from(std::process::id())],
            )?;
            tx.execute(
                "INSERT INTO run_agent_memory (run_id, path, value) SELECT $1, path, value FROM agent_memory",
                &[&run.id],
            )?;
            for (hash, bytes) in &run.plugins {
                tx.execute(
                    "INSERT INTO plugins (hash, bytes) VALUES ($1, $2) ON CONFLICT (hash) DO NOTHING",
                    &[hash, bytes],
                )?;
            }
            let statement = tx.prepare("INSERT INTO jobs (run_id, idx, seed) VALUES ($1, $2, $3)")?;
            for (i, seed) in run.seeds.iter().enumerate() {
                tx.execute(&statement, &[&run.id, &(i as i64), &(*seed as i64)])?;
            }
            Ok(())
        })
    }

    /// Leases the next job: a queued one, or one whose lease ran out (its
    /// worker died). `SKIP LOCKED`: workers never wait on each other.
    pub fn lease(&mut self, worker: &str, lease: Duration) -> Result<Option<Job>, StoreError> {
        let seconds = lease.as_secs_f64();
        let row = self
            .client
            .query_opt(
                "UPDATE jobs SET state = 'leased', worker = $1, attempts = attempts + 1,
                     lease_until = now() + make_interval(secs => $2)
                 WHERE (run_id, idx) = (
                     SELECT run_id, idx FROM jobs
                     WHERE state = 'queued' OR (state = 'leased' AND lease_until < now())
                     ORDER BY run_id, idx LIMIT 1 FOR UPDATE SKIP LOCKED)
                 RETURNING run_id, idx, seed, attempts",
                &[&worker, &seconds],
            )
            .map_err(|e| self.err(e))?;
        Ok(row.map(|r| Job {
            run_id: r.get(0),
            index: r.get::<_, i64>(1) as u64,
            seed: r.get::<_, i64>(2) as u64,
            attempt: r.get::<_, i64>(3) as u64,
        }))
    }

    /// Extends `worker`'s lease of `job`; false when it is no longer its.
    pub fn heartbeat(
        &mut self,
        job: &Job,
        worker: &str,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        let n = self
            .client
            .execute(
                "UPDATE jobs SET lease_until = now() + make_interval(secs => $4)
                 WHERE run_id = $1 AND idx = $2 AND worker = $3 AND state = 'leased'",
                &[
                    &job.run_id,
                    &(job.index as i64),
                    &worker,
                    &lease.as_secs_f64(),
                ],
            )
            .map_err(|e| self.err(e))?;
        Ok(n == 1)
    }

    /// The recorded spec of a run.
    pub fn run_spec(&mut self, run_id: &str) -> Result<serde_json::Value, StoreError> {
        let row = self
            .client
            .query_opt("SELECT spec FROM runs WHERE id = $1", &[&run_id])
            .map_err(|e| self.err(e))?
            .ok_or_else(|| StoreError::NoRun(run_id.to_string()))?;
        let text: String = row.get(0);
        serde_json::from_str(&text)
            .map_err(|e| failed(&self.url, format!("run {run_id}'s spec: {e}")))
    }

    /// A plugin's bytes by content hash.
    pub fn plugin(&mut self, hash: &str) -> Result<Vec<u8>, StoreError> {
        let row = self
            .client
            .query_opt("SELECT bytes FROM plugins WHERE hash = $1", &[&hash])
            .map_err(|e| self.err(e))?
            .ok_or_else(|| {
                failed(
                    &self.url,
                    format!("no plugin with hash {hash} in the queue"),
                )
            })?;
        Ok(row.get(0))
    }

    /// Records the episode a worker played (the only episode of the SQLite
    /// file `scratch`) as `job`'s, and marks the job done, in one
    /// transaction; nothing when the job is no longer `worker`'s (its lease
    /// ran out and another worker took it). Whether it was recorded.
    pub fn complete(
        &mut self,
        job: &Job,
        worker: &str,
        scratch: &std::path::Path,
    ) -> Result<bool, StoreError> {
        let mut source = sqlite(scratch, false)?;
        let mut episodes = source.select(&EPISODES, &Filter::All)?;
        for r in &mut episodes {
            r[1] = Cell::Text(job.run_id.clone());
            r[2] = Cell::Int(job.index as i64);
        }
        self.begin()?;
        let done = (|| -> Result<bool, StoreError> {
            let row = self
                .client
                .query_opt(
                    "SELECT state, worker FROM jobs WHERE run_id = $1 AND idx = $2 FOR UPDATE",
                    &[&job.run_id, &(job.index as i64)],
                )
                .map_err(|e| self.err(e))?;
            let ours = row.is_some_and(|r| {
                r.get::<_, String>(0) == "leased"
                    && r.get::<_, Option<String>>(1).as_deref() == Some(worker)
            });
            if !ours {
                return Ok(false);
            }
            copy_episodes(source.as_mut(), self, episodes, Ids::Fresh)?;
            self.client
                .execute(
                    "UPDATE jobs SET state = 'done', lease_until = NULL WHERE run_id = $1 AND idx = $2",
                    &[&job.run_id, &(job.index as i64)],
                )
                .map_err(|e| self.err(e))?;
            // The last job ends the run, whoever queued it.
            end_run(&mut self.client, &job.run_id, None).map_err(|e| self.err(e))?;
            Ok(true)
        })();
        match done {
            Ok(true) => {
                self.commit()?;
                Ok(true)
            }
            Ok(false) => {
                self.rollback();
                Ok(false)
            }
            Err(e) => {
                self.rollback();
                Err(e)
            }
        }
    }

    /// Gives `job` back after a worker's error (not a crashed episode,
    /// which is recorded: a plugin that does not load, a lost scratch
    /// file): queued again, or `failed` after `max_attempts` tries.
    pub fn fail(
        &mut self,
        job: &Job,
        worker: &str,
        message: &str,
        max_attempts: u64,
    ) -> Result<(), StoreError> {
        self.tx(|tx| {
            tx.execute(
                "UPDATE jobs SET state = CASE WHEN attempts >= $4 THEN 'failed' ELSE 'queued' END,
                     lease_until = NULL, error = $5
                 WHERE run_id = $1 AND idx = $2 AND worker = $3 AND state = 'leased'",
                &[
                    &job.run_id,
                    &(job.index as i64),
                    &worker,
                    &(max_attempts as i64),
                    &message,
                ],
            )?;
            end_run(tx, &job.run_id, None)
        })
    }

    /// A run's jobs: (done, failed, all).
    pub fn progress(&mut self, run_id: &str) -> Result<(u64, u64, u64), StoreError> {
        let r = self
            .client
            .query_one(
                "SELECT COUNT(*) FILTER (WHERE state = 'done'), COUNT(*) FILTER (WHERE state = 'failed'), COUNT(*)
                 FROM jobs WHERE run_id = $1",
                &[&run_id],
            )
            .map_err(|e| self.err(e))?;
        Ok((
            r.get::<_, i64>(0) as u64,
            r.get::<_, i64>(1) as u64,
            r.get::<_, i64>(2) as u64,
        ))
    }

    /// A run's failed jobs: (index, the last error).
    pub fn failures(&mut self, run_id: &str) -> Result<Vec<(u64, String)>, StoreError> {
        let rows = self
            .client
            .query(
                "SELECT idx, COALESCE(error, '') FROM jobs WHERE run_id = $1 AND state = 'failed' ORDER BY idx",
                &[&run_id],
            )
            .map_err(|e| self.err(e))?;
        Ok(rows
            .iter()
            .map(|r| (r.get::<_, i64>(0) as u64, r.get(1)))
            .collect())
    }

    /// Jobs queued or leased, over every run.
    pub fn open_jobs(&mut self) -> Result<u64, StoreError> {
        let r = self
            .client
            .query_one(
                "SELECT COUNT(*) FROM jobs WHERE state IN ('queued', 'leased')",
                &[],
            )
            .map_err(|e| self.err(e))?;
        Ok(r.get::<_, i64>(0) as u64)
    }

    /// Marks a run `status` (finished once its jobs are done).
    ///
    /// As when a local run ends, the `/agent` writes of the episodes that
    /// ended normally go into the database's stored memory, in episode order,
    /// in the same transaction. Nothing when the run has ended already (the
    /// worker that finished its last job ends it).
    pub fn finish_run(&mut self, run_id: &str, status: &str) -> Result<(), StoreError> {
        self.tx(|tx| end_run(tx, run_id, Some(status)))
    }

    /// The memory a queued run's episodes start from: `/agent` and `/user`
    /// as they were when it was queued.
    pub fn run_memory(&mut self, run_id: &str) -> Result<crate::memory::MemoryBase, StoreError> {
        let agent: BTreeMap<String, String> = self
            .client
            .query(
                "SELECT path, value FROM run_agent_memory WHERE run_id = $1",
                &[&run_id],
            )
            .map_err(|e| self.err(e))?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let spec = self.run_spec(run_id)?;
        let user = spec
            .get("user_memory")
            .and_then(|v| v.as_object())
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        Ok(crate::memory::MemoryBase {
            agent: std::sync::Arc::new(agent),
            user: std::sync::Arc::new(user),
        })
    }

    /// Sets (or with `None` deletes) a /user/... value of the database.
    pub fn set_user_memory(&mut self, path: &str, value: Option<&str>) -> Result<(), StoreError> {
        let done = match value {
            Some(v) => self.client.execute(
                "INSERT INTO user_memory (path, value) VALUES ($1, $2) ON CONFLICT (path) DO UPDATE SET value = $2",
                &[&path, &v],
            ),
            None => self
                .client
                .execute("DELETE FROM user_memory WHERE path = $1", &[&path]),
        };
        done.map_err(|e| self.err(e))?;
        Ok(())
    }

    /// A run's recorded episodes, in index order.
    pub fn run_episodes(&mut self, run_id: &str) -> Result<Vec<QueuedEpisode>, StoreError> {
        let rows = self
            .client
            .query(
                "SELECT e.idx, e.seed, e.outcome, e.\"return\", e.length, e.digest, e.id, e.success, e.error, m.n, m.tokens, m.cost \
                 FROM episodes e LEFT JOIN LATERAL (SELECT COUNT(*)::BIGINT AS n, \
                 COALESCE(SUM(tokens_in + tokens_out), 0)::BIGINT AS tokens, \
                 COALESCE(SUM(cost_usd), 0)::DOUBLE PRECISION AS cost \
                 FROM model_calls c WHERE c.episode_id = e.id) m ON TRUE \
                 WHERE e.run_id = $1 ORDER BY e.idx",
                &[&run_id],
            )
            .map_err(|e| self.err(e))?;
        Ok(rows
            .iter()
            .map(|r| QueuedEpisode {
                index: r.get::<_, i64>(0) as u64,
                seed: r.get::<_, i64>(1) as u64,
                outcome: r.get(2),
                return_: r.get(3),
                length: r.get::<_, i64>(4) as u64,
                digest: r.get(5),
                id: r.get(6),
                success: r.get::<_, i64>(7) != 0,
                error: r.get(8),
                model_calls: r.get::<_, i64>(9) as u64,
                tokens: r.get::<_, i64>(10) as u64,
                cost_usd: r.get(11),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::{redact, redact_all};

    #[test]
    fn passwords_are_hidden_wherever_a_url_appears() {
        assert_eq!(
            redact("postgres://u:secret@h:5/db"),
            "postgres://u:***@h:5/db"
        );
        assert_eq!(
            redact_all(
                "cannot open `postgres://u:secret@h/db`: refused; also postgresql://a:b@c/d and postgres alone"
            ),
            "cannot open `postgres://u:***@h/db`: refused; also postgresql://a:***@c/d and postgres alone"
        );
        assert_eq!(redact_all("postgres"), "postgres");
        assert_eq!(redact_all("no url"), "no url");
    }
}
