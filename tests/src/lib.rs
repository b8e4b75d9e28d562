//! Shared helpers of tessera's integration tests.

pub mod delivery;
pub mod harness;
pub mod http;

pub use tessera_operators::test_images as hostile;

use std::path::{Path, PathBuf};

/// The workspace root (the tests crate lives one level below it).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// The real test assets: `$TESSERA_ASSETS`, else `../shared/assets` beside the workspace.
/// `None` (and a printed reason) when they are absent, so the caller can skip.
pub fn assets_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("TESSERA_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("../shared/assets"));
    if dir.join("models").is_dir() && dir.join("images").is_dir() {
        Some(dir)
    } else {
        eprintln!(
            "SKIPPED: real-model assets not found at {} (set TESSERA_ASSETS)",
            dir.display()
        );
        None
    }
}

/// A shipped model manifest by model folder name.
pub fn manifest(model: &str) -> PathBuf {
    workspace_root()
        .join("models/manifests")
        .join(model)
        .join("model.toml")
}
