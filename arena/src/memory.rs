//! Execution memory: a tree of text values addressed by paths, in three scopes.
//!
//! - `/episode/...` starts empty every episode.
//! - `/agent/...` persists across episodes and runs (stored in the database).
//! - `/user/...` is set by the user and read-only to the agent.
//!
//! Parallel episodes and `/agent`: every episode of a run sees `/agent` as it
//! was when the run started, plus its own writes. When the run ends, the writes
//! of its finished episodes (not crashed or interrupted ones) are applied to the
//! stored `/agent` in episode order. So results never depend on `--jobs`.
//!
//! Pure logic, no I/O: the store persists, the host records writes.

use std::collections::BTreeMap;
use std::sync::Arc;

/// Longest path, in bytes.
pub const MAX_PATH: usize = 512;
/// Largest value, in bytes.
pub const MAX_VALUE: usize = 1 << 20;
/// Most bytes the `/episode` and `/agent` writes of one episode may hold.
pub const MAX_EPISODE_BYTES: usize = 64 << 20;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MemoryError {
    #[error("`{0}` is read-only to the agent (set /user/... values with `ludus memory set`)")]
    ReadOnly(String),
    #[error(
        "`{0}` is not a memory path: paths start with /episode/, /agent/ or /user/, and have no empty, `.` or `..` segments and no control characters"
    )]
    BadPath(String),
    #[error("path `{0}...` is longer than {MAX_PATH} bytes")]
    PathTooLong(String),
    #[error("value for `{0}` is larger than {MAX_VALUE} bytes")]
    ValueTooLarge(String),
    #[error("the episode's memory writes exceed {MAX_EPISODE_BYTES} bytes")]
    Full,
}

/// The scope a path belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Episode,
    Agent,
    User,
}

/// Checks a path and tells its scope.
pub fn scope_of(path: &str) -> Result<Scope, MemoryError> {
    if path.len() > MAX_PATH {
        return Err(MemoryError::PathTooLong(path.chars().take(40).collect()));
    }
    let scope = if path.starts_with("/episode/") {
        Scope::Episode
    } else if path.starts_with("/agent/") {
        Scope::Agent
    } else if path.starts_with("/user/") {
        Scope::User
    } else {
        return Err(MemoryError::BadPath(path.to_string()));
    };
    // One rule for every path: segments are non-empty, not `.` or `..`, and
    // no character is a control character (a newline or an escape sequence
    // would forge lines and reach terminals in listings).
    if path[1..]
        .split('/')
        .any(|seg| seg.is_empty() || seg == "." || seg == "..")
        || path.chars().any(char::is_control)
    {
        return Err(MemoryError::BadPath(path.escape_debug().to_string()));
    }
    Ok(scope)
}

/// The read-only starting point an episode's memory is built on.
#[derive(Clone, Debug, Default)]
pub struct MemoryBase {
    /// `/agent/...` as it was when the run started.
    pub agent: Arc<BTreeMap<String, String>>,
    /// `/user/...`.
    pub user: Arc<BTreeMap<String, String>>,
}

/// One episode's view of execution memory.
#[derive(Clone, Debug)]
pub struct EpisodeMemory {
    base: MemoryBase,
    /// Writes of this episode to `/episode` and `/agent`; `None` = deleted.
    overlay: BTreeMap<String, Option<String>>,
    bytes: usize,
}

impl EpisodeMemory {
    pub fn new(base: MemoryBase) -> Self {
        EpisodeMemory {
            base,
            overlay: BTreeMap::new(),
            bytes: 0,
        }
    }

    pub fn read(&self, path: &str) -> Option<&str> {
        if let Some(v) = self.overlay.get(path) {
            return v.as_deref();
        }
        match scope_of(path).ok()? {
            Scope::Episode => None,
            Scope::Agent => self.base.agent.get(path).map(String::as_str),
            Scope::User => self.base.user.get(path).map(String::as_str),
        }
    }

    pub fn write(&mut self, path: &str, value: String) -> Result<(), MemoryError> {
        if scope_of(path)? == Scope::User {
            return Err(MemoryError::ReadOnly(path.to_string()));
        }
        if value.len() > MAX_VALUE {
            return Err(MemoryError::ValueTooLarge(path.to_string()));
        }
        self.bytes += path.len() + value.len();
        if self.bytes > MAX_EPISODE_BYTES {
            return Err(MemoryError::Full);
        }
        self.overlay.insert(path.to_string(), Some(value));
        Ok(())
    }

    pub fn delete(&mut self, path: &str) -> Result<(), MemoryError> {
        if scope_of(path)? == Scope::User {
            return Err(MemoryError::ReadOnly(path.to_string()));
        }
        self.overlay.insert(path.to_string(), None);
        Ok(())
    }

    /// Sets (`Some`) or deletes (`None`) a path as the user does in the
    /// debugger: any scope, `/user` included, within the same size limits.
    pub fn edit(&mut self, path: &str, value: Option<String>) -> Result<(), MemoryError> {
        scope_of(path)?;
        if let Some(v) = &value {
            if v.len() > MAX_VALUE {
                return Err(MemoryError::ValueTooLarge(path.to_string()));
            }
            self.bytes += path.len() + v.len();
        }
        self.overlay.insert(path.to_string(), value);
        Ok(())
    }

    /// Paths under `prefix` that hold a value, sorted.
    pub fn list(&self, prefix: &str) -> Vec<String> {
        self.snapshot()
            .into_keys()
            .filter(|p| p.starts_with(prefix))
            .collect()
    }

    /// The whole memory as the agent sees it now.
    pub fn snapshot(&self) -> BTreeMap<String, String> {
        let mut all: BTreeMap<String, String> = BTreeMap::new();
        all.extend(self.base.user.iter().map(|(k, v)| (k.clone(), v.clone())));
        all.extend(self.base.agent.iter().map(|(k, v)| (k.clone(), v.clone())));
        for (k, v) in &self.overlay {
            match v {
                Some(v) => {
                    all.insert(k.clone(), v.clone());
                }
                None => {
                    all.remove(k);
                }
            }
        }
        all
    }
}

/// Applies recorded writes, in order, to a memory map (e.g. to rebuild the
/// memory at a frame, or to fold a run's `/agent` writes into the stored one).
pub fn apply_writes<'a>(
    memory: &mut BTreeMap<String, String>,
    writes: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
) {
    for (path, value) in writes {
        match value {
            Some(v) => {
                memory.insert(path.to_string(), v.to_string());
            }
            None => {
                memory.remove(path);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> MemoryBase {
        MemoryBase {
            agent: Arc::new(BTreeMap::from([("/agent/a".to_string(), "1".to_string())])),
            user: Arc::new(BTreeMap::from([(
                "/user/hint".to_string(),
                "go left".to_string(),
            )])),
        }
    }

    #[test]
    fn scopes_and_overlay() {
        let mut m = EpisodeMemory::new(base());
        assert_eq!(m.read("/agent/a"), Some("1"));
        assert_eq!(m.read("/user/hint"), Some("go left"));
        assert!(matches!(
            m.write("/user/hint", "x".into()),
            Err(MemoryError::ReadOnly(_))
        ));
        assert!(matches!(
            m.write("/etc/passwd", "x".into()),
            Err(MemoryError::BadPath(_))
        ));
        assert!(matches!(
            m.write("/agent//x", "x".into()),
            Err(MemoryError::BadPath(_))
        ));
        // One rule for paths: no empty, `.` or `..` segment, no control
        // character, at most MAX_PATH bytes.
        for bad in [
            "",
            "/",
            "/agent/",
            "/episode/a/../b",
            "/episode/./x",
            "/user/a\nb",
            "/agent/\u{1b}[31mred",
            "/agent/nul\0",
        ] {
            assert!(scope_of(bad).is_err(), "{bad:?}");
        }
        let long = format!("/agent/{}", "x".repeat(MAX_PATH));
        assert!(matches!(scope_of(&long), Err(MemoryError::PathTooLong(_))));
        assert!(scope_of("/agent/a.b/..c/ü").is_ok());
        m.write("/agent/a", "2".into()).unwrap();
        m.write("/episode/plan", "up".into()).unwrap();
        m.delete("/agent/a").unwrap();
        assert_eq!(m.read("/agent/a"), None);
        assert_eq!(
            m.list("/"),
            vec!["/episode/plan".to_string(), "/user/hint".to_string()]
        );
    }
}
