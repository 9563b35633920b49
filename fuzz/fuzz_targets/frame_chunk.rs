//! A stored chunk of frames, as a damaged or hostile recording holds it.
//! The first byte picks how the rest is used: as the compressed blob itself
//! (zstd's own decoder), or as raw frame bytes compressed here first (so
//! the fuzzer reaches the frame decoder), read whole or field by field.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ludus_arena::codec::{FrameFields, decode_chunk_fields};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let blob = if mode & 1 == 0 {
        rest.to_vec()
    } else {
        zstd::bulk::compress(rest, 1).expect("compressing in memory")
    };
    let fields = if mode & 2 == 0 {
        FrameFields::ALL
    } else {
        FrameFields {
            observation: false,
            info: mode & 4 != 0,
            logs: false,
            memory_writes: mode & 8 != 0,
            model_calls: false,
        }
    };
    // Timings are a separate blob; an empty one, compressed, lets every
    // input reach the frame decoder.
    let timings = zstd::bulk::compress(&[], 1).expect("compressing in memory");
    let mut out = Vec::new();
    let _ = decode_chunk_fields(&blob, &timings, fields, &mut out);
});
