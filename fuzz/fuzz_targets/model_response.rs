//! What a model server answers, and a `--model` value.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = ludus_llm::parse_response(text);
        let _ = ludus_llm::Endpoint::parse(text);
    }
});
