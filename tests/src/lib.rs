//! Shared helpers of tessera's integration tests.

pub mod delivery;
pub mod golden;
pub mod harness;
pub mod http;
pub mod learning;

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
/// `None` (and a printed reason) when they are absent, so the caller can skip; a panic instead
/// where `TESSERA_REQUIRE_ASSETS` is set (CI).
pub fn assets_dir() -> Option<PathBuf> {
    delivery::assets_beside(&workspace_root())
}

/// A shipped model manifest by model folder name.
pub fn manifest(model: &str) -> PathBuf {
    workspace_root()
        .join("models/manifests")
        .join(model)
        .join("model.toml")
}
