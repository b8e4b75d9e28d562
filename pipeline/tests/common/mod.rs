//! Helpers shared by the binary's integration tests.

use std::path::{Path, PathBuf};

#[path = "../../../tests/src/delivery.rs"]
#[allow(dead_code)]
pub mod delivery;

#[path = "../../../tests/src/broker.rs"]
#[allow(dead_code)]
pub mod broker;

#[allow(dead_code)]
pub mod process;

/// A finished command's exit code, stdout and stderr, for assertion messages.
#[allow(dead_code)]
pub fn describe(output: &std::process::Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The real assets (`$TESSERA_ASSETS`, else `../shared/assets` beside the workspace), or None
/// with a printed reason so the caller can skip (a panic where `TESSERA_REQUIRE_ASSETS` is set).
#[allow(dead_code)]
pub fn assets_dir() -> Option<PathBuf> {
    delivery::assets_beside(&Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
}
