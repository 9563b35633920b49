use std::process::ExitCode;

use anyhow::Result;
use ludus_arena::Db;
use ludus_arena::memory::{Scope, scope_of};

use crate::UsageError;
use crate::cli::{MemoryArgs, MemoryCommand};

pub fn run(args: MemoryArgs) -> Result<ExitCode> {
    match args.command {
        MemoryCommand::List { mut db, prefix } => {
            let _mirror = crate::copy_cmd::readable(&mut db)?;
            let db = open_existing(&db)?;
            let mut all = db.agent_memory()?;
            all.extend(db.user_memory()?);
            for (path, value) in all
                .range(prefix.clone()..)
                .take_while(|(p, _)| p.starts_with(&prefix))
            {
                // Escaped: a value is whatever an agent wrote, newlines
                // and terminal escapes included.
                println!("{} = {}", escaped(path), escaped(value));
            }
        }
        MemoryCommand::Set { db, path, value } => {
            user_path(&path)?;
            set_user_memory(&db, &path, Some(&value))?;
        }
        MemoryCommand::Delete { db, path } => {
            user_path(&path)?;
            set_user_memory(&db, &path, None)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// In a SQLite file or a PostgreSQL database.
fn set_user_memory(db: &std::path::Path, path: &str, value: Option<&str>) -> Result<()> {
    if ludus_arena::copy::is_postgres(db) {
        let mut pg = crate::worker_cmd::connect(&db.to_string_lossy(), false)?;
        pg.set_user_memory(path, value)?;
        return Ok(());
    }
    open_existing(db)?.set_user_memory(path, value)?;
    Ok(())
}

fn user_path(path: &str) -> Result<()> {
    match scope_of(path) {
        Ok(Scope::User) => Ok(()),
        Ok(_) => Err(UsageError(format!("`{path}`: only /user/... paths can be set here; /agent and /episode belong to the agent")).into()),
        Err(e) => Err(UsageError(e.to_string()).into()),
    }
}

pub fn open_existing(path: &std::path::Path) -> Result<Db> {
    if !path.exists() {
        return Err(UsageError(format!(
            "database {} does not exist (create one with `ludus run --db {}`)",
            path.display(),
            path.display()
        ))
        .into());
    }
    Ok(Db::open(path)?)
}

/// `text` with backslashes and control characters escaped as Rust writes
/// them (`\\`, `\n`, `\u{1b}`), so one entry is one line and nothing
/// reaches the terminal raw; everything else as it is.
fn escaped(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(|c| c == '\\' || c.is_control()) {
        return text.into();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c == '\\' || c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    out.into()
}
