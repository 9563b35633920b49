//! The `ludus` binary links libtorch through the trainer: bake libtorch's lib
//! folder in as an rpath so it runs without `LD_LIBRARY_PATH`.

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_LUDUS_TRAINER_LIBTORCH_LIB");
    if let Ok(lib) = std::env::var("DEP_LUDUS_TRAINER_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    }
}
