//! A suite file's text.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = ludus_suite::model::parse(text, std::path::Path::new("fuzz.toml"));
    }
});
