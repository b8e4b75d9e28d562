//! Helpers shared by the binary's integration tests.

use std::path::PathBuf;

/// The real assets (`$TESSERA_ASSETS`, else `../shared/assets` beside the workspace), or None
/// with a printed reason so the caller can skip.
pub fn assets_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("TESSERA_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/assets"))
        });
    if dir.join("models").is_dir() {
        Some(dir)
    } else {
        eprintln!(
            "SKIPPED: assets not found at {} (set TESSERA_ASSETS)",
            dir.display()
        );
        None
    }
}
