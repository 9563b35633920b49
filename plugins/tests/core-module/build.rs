//! The wasm32-wasip2 linker (`wasm-component-ld`) wraps every cdylib into a
//! component; this flag tells it to stop at the core module.
fn main() {
    println!("cargo:rustc-link-arg-cdylib=--skip-wit-component");
}
