//! A plain core WebAssembly module, not a component: `build.rs` tells the
//! wasm32-wasip2 linker not to wrap it. The host must refuse to load it as a
//! plugin ("a core module, not a component").

#[unsafe(no_mangle)]
pub extern "C" fn answer() -> i32 {
    42
}
