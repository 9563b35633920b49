//! ludus's benchmarks, kept out of the library crates: CartPole through the
//! arena (`ludus bench`), the debugger on a long episode (`ludus bench
//! debugger`), any env (`bench-env`), CartPole in three languages
//! (`bench-lang`), sync against decoupled training (`train-bench`), training the model an LLM agent calls (`ludus bench llm-train`) and the
//! IDE's cost per frame while scrubbing (`ludus ide --bench-scrub`). The
//! `ludus` binary parses the arguments and calls in here.

pub mod cartpole;
pub mod cartpole_cmd;
pub mod cli;
pub mod debugger;
pub mod env;
pub mod ide_scrub;
pub mod lang;
pub mod llm;
pub mod llm_train;
pub mod train;

/// An error the user caused (bad argument, missing plugin): the binary exits 2.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}
