//! `ludus export DB [--run ID] [--episode ID] --format jsonl|parquet|otel --out PATH`:
//! recordings for other tools (SFT pipelines, dataframes, tracing UIs).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use arrow_array::{ArrayRef, BooleanArray, Float32Array, Float64Array, Int64Array, RecordBatch};
use arrow_array::{StringArray, UInt32Array, UInt64Array};
use clap::{Args, ValueEnum};
use ludus_arena::Db;
use ludus_arena::export::{FrameRow, episode_json, frame_rows, otlp_json};
use ludus_arena::store::EpisodeRow;

use crate::UsageError;

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// The recording to export.
    pub db: PathBuf,
    /// Only this run (default: every run in the database).
    #[arg(long)]
    pub run: Option<String>,
    /// Only this episode (by id).
    #[arg(long)]
    pub episode: Option<i64>,
    #[arg(long, value_enum)]
    pub format: Format,
    /// The file to write (`jsonl`, `otel`), or the folder (`parquet`:
    /// `episodes.parquet` and `frames.parquet` in it).
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per line per episode: frames, and model calls as
    /// chat messages.
    Jsonl,
    /// Arrow tables of episodes and frames as Parquet files.
    Parquet,
    /// OpenTelemetry traces in OTLP JSON, with the GenAI semantic conventions.
    Otel,
}

pub fn export(a: ExportArgs) -> Result<ExitCode> {
    if !a.db.is_file() {
        return Err(UsageError(format!(
            "database {} not found (record one with `ludus run ... --db {}`)",
            a.db.display(),
            a.db.display()
        ))
        .into());
    }
    let db = Db::open_read_only(&a.db)?;
    let runs: Vec<_> = db
        .runs()?
        .into_iter()
        .filter(|r| a.run.as_ref().is_none_or(|id| &r.id == id))
        .collect();
    if runs.is_empty() {
        return Err(UsageError(match &a.run {
            Some(id) => format!("no run `{id}` in {}", a.db.display()),
            None => format!("{} holds no runs", a.db.display()),
        })
        .into());
    }
    let mut selected: Vec<(usize, Vec<EpisodeRow>)> = Vec::new();
    for (i, r) in runs.iter().enumerate() {
        let eps: Vec<EpisodeRow> = db
            .episodes(&r.id)?
            .into_iter()
            .filter(|e| a.episode.is_none_or(|id| e.id == id))
            .collect();
        if !eps.is_empty() {
            selected.push((i, eps));
        }
    }
    if let (Some(id), true) = (a.episode, selected.is_empty()) {
        return Err(UsageError(format!("no episode {id} in {}", a.db.display())).into());
    }
    let count: usize = selected.iter().map(|s| s.1.len()).sum();
    match a.format {
        Format::Jsonl => {
            let mut out = std::io::BufWriter::new(create(&a.out)?);
            for (_, eps) in &selected {
                for e in eps {
                    serde_json::to_writer(&mut out, &episode_json(&db, e)?)?;
                    out.write_all(b"\n")?;
                }
            }
            out.flush()?;
        }
        Format::Otel => {
            let start = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            let mut resource_spans = Vec::new();
            for (i, eps) in &selected {
                let v = otlp_json(&db, &runs[*i], eps, start)?;
                if let Some(rs) = v["resourceSpans"].as_array() {
                    resource_spans.extend(rs.iter().cloned());
                }
            }
            let body = serde_json::json!({ "resourceSpans": resource_spans });
            serde_json::to_writer(std::io::BufWriter::new(create(&a.out)?), &body)?;
        }
        Format::Parquet => {
            std::fs::create_dir_all(&a.out)
                .with_context(|| format!("creating {}", a.out.display()))?;
            let episodes: Vec<&EpisodeRow> = selected.iter().flat_map(|s| &s.1).collect();
            let mut frames = Vec::new();
            for e in &episodes {
                frames.extend(frame_rows(&db, e)?);
            }
            write_parquet(&a.out.join("episodes.parquet"), episodes_batch(&episodes)?)?;
            write_parquet(&a.out.join("frames.parquet"), frames_batch(&frames)?)?;
        }
    }
    eprintln!("exported {count} episode(s) to {}", a.out.display());
    Ok(ExitCode::SUCCESS)
}

fn create(path: &Path) -> Result<std::fs::File> {
    std::fs::File::create(path)
        .map_err(|e| UsageError(format!("cannot write {}: {e}", path.display())).into())
}

fn episodes_batch(eps: &[&EpisodeRow]) -> Result<RecordBatch> {
    let col = |a: ArrayRef| a;
    Ok(RecordBatch::try_from_iter([
        (
            "run_id",
            col(Arc::new(StringArray::from_iter_values(
                eps.iter().map(|e| e.run_id.as_str()),
            ))),
        ),
        (
            "episode",
            col(Arc::new(Int64Array::from_iter_values(
                eps.iter().map(|e| e.id),
            ))),
        ),
        (
            "index",
            col(Arc::new(UInt64Array::from_iter_values(
                eps.iter().map(|e| e.index),
            ))),
        ),
        (
            "seed",
            col(Arc::new(UInt64Array::from_iter_values(
                eps.iter().map(|e| e.seed),
            ))),
        ),
        (
            "outcome",
            col(Arc::new(StringArray::from_iter_values(
                eps.iter().map(|e| e.outcome.as_str()),
            ))),
        ),
        (
            "return",
            col(Arc::new(Float64Array::from_iter_values(
                eps.iter().map(|e| e.return_),
            ))),
        ),
        (
            "length",
            col(Arc::new(UInt64Array::from_iter_values(
                eps.iter().map(|e| e.length),
            ))),
        ),
        (
            "success",
            col(Arc::new(BooleanArray::from(
                eps.iter().map(|e| e.success).collect::<Vec<_>>(),
            ))),
        ),
        (
            "digest",
            col(Arc::new(StringArray::from(
                eps.iter().map(|e| e.digest.clone()).collect::<Vec<_>>(),
            ))),
        ),
    ])?)
}

fn frames_batch(rows: &[FrameRow]) -> Result<RecordBatch> {
    let s = |f: fn(&FrameRow) -> &str| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(rows.iter().map(f)))
    };
    let u64s = |f: fn(&FrameRow) -> u64| -> ArrayRef {
        Arc::new(UInt64Array::from_iter_values(rows.iter().map(f)))
    };
    let bools = |f: fn(&FrameRow) -> bool| -> ArrayRef {
        Arc::new(BooleanArray::from(rows.iter().map(f).collect::<Vec<_>>()))
    };
    Ok(RecordBatch::try_from_iter([
        ("run_id", s(|r| &r.run_id)),
        (
            "episode",
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.episode))) as ArrayRef,
        ),
        (
            "step",
            Arc::new(UInt32Array::from_iter_values(rows.iter().map(|r| r.step))) as ArrayRef,
        ),
        (
            "reward",
            Arc::new(Float32Array::from_iter_values(
                rows.iter().map(|r| r.reward),
            )) as ArrayRef,
        ),
        (
            "env_reward",
            Arc::new(Float32Array::from_iter_values(
                rows.iter().map(|r| r.env_reward),
            )) as ArrayRef,
        ),
        ("terminated", bools(|r| r.terminated)),
        ("truncated", bools(|r| r.truncated)),
        ("observation", s(|r| &r.observation)),
        ("action", s(|r| &r.action)),
        ("info", s(|r| &r.info)),
        (
            "model_calls",
            Arc::new(UInt32Array::from_iter_values(
                rows.iter().map(|r| r.model_calls),
            )) as ArrayRef,
        ),
        ("tokens_in", u64s(|r| r.tokens_in)),
        ("tokens_out", u64s(|r| r.tokens_out)),
        ("act_ns", u64s(|r| r.act_ns)),
        ("step_ns", u64s(|r| r.step_ns)),
    ])?)
}

fn write_parquet(path: &Path, batch: RecordBatch) -> Result<()> {
    let file = create(path)?;
    let props = parquet::file::properties::WriterProperties::builder()
        .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
        .build();
    let mut w = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), Some(props))?;
    w.write(&batch)?;
    w.close()?;
    Ok(())
}
