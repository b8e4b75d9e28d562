//! The `tessera` binary's library: layered configuration, the HTTP endpoints, the embedded
//! broker and its client helpers, assets, and the demos. `main.rs` is the CLI over these.

pub mod assets;
pub mod config;
pub mod demo;
pub mod demo_learn;
pub mod detect;
pub mod embedded;
pub mod feed;
pub mod http;
pub mod images;
pub mod local;
pub mod logging;
pub mod progress;
pub mod replay;
