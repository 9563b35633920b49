//! The `ludus` package's library part: the IDE under its old path
//! (`ludus::ide`), so the integration tests and the binary name it as before.

pub use ludus_ide as ide;
