//! Bakes libtorch's lib folder (where torch-sys found it) into this crate's
//! test binaries as an rpath, and passes it on to dependents (`app`), so
//! nothing needs `LD_LIBRARY_PATH` at run time.

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        let lib = std::fs::canonicalize(&lib).unwrap_or_else(|_| lib.into());
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
        println!("cargo:libtorch_lib={}", lib.display());
        println!("cargo:rustc-env=LUDUS_LIBTORCH_LIB={}", lib.display());
    }
}
