//! The plugin contract's types and bindings, generated from `plugins/wit`.
//! Nothing else lives here: [`crate::model`] re-exports the data types for
//! the rest of the crate and its users, [`crate::host`] implements the host
//! side, [`crate::plugin`] calls the exports.

wasmtime::component::bindgen!({
    path: "../plugins/wit",
    world: "host",
    additional_derives: [serde::Serialize, serde::Deserialize, PartialEq],
});
