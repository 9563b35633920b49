//! A component that exports `ludus:plugin/env-plugin@0.9.0`, a contract version
//! the host does not implement. Loading it must fail with a version error.

wit_bindgen::generate!({ world: "env", path: "wit" });

struct WrongVersion;

impl exports::ludus::plugin::env_plugin::Guest for WrongVersion {
    fn init(config: String) -> Result<String, String> {
        Ok(format!("wrong-version env (config `{config}`)"))
    }
}

export!(WrongVersion);
