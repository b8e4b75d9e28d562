//! Shared helpers of tessera's integration tests.

pub mod broker;
pub mod delivery;
pub mod golden;
pub mod harness;
pub mod http;
pub mod learning;
pub mod scene;

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

/// The ONNX Runtime environment from `$ORT_DYLIB_PATH`, else the library `make setup` installs
/// into `.tessera/onnxruntime` (a build prerequisite: a missing library fails with the fix).
pub fn ort_env() -> Result<std::sync::Arc<tessera_models::Environment>, tessera_models::ModelError>
{
    let fallback = workspace_root().join(".tessera/onnxruntime/lib/libonnxruntime.so.1.31.1");
    let dylib = match std::env::var_os(tessera_models::ORT_DYLIB_PATH_ENV) {
        Some(v) if !v.is_empty() => None,
        _ => Some(fallback.as_path()),
    };
    tessera_models::init_runtime(dylib)
}

/// A shipped model manifest by model folder name.
pub fn manifest(model: &str) -> PathBuf {
    workspace_root()
        .join("models/manifests")
        .join(model)
        .join("model.toml")
}

/// The test suite's Python tools (`make pytools`: kafka-python, helm-python-sdk,
/// kubernetes-validate, hadolint), installed in `.tessera/pytools/site` (or
/// `$TESSERA_PYTOOLS`), a folder used as `PYTHONPATH`. `None` (and a printed reason) when it
/// lacks `needed` (a path inside it), so the caller can skip; a panic instead where
/// `TESSERA_REQUIRE_ASSETS` is set (CI installs them).
pub fn pytools(needed: &str) -> Option<PathBuf> {
    let site = std::env::var_os("TESSERA_PYTOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".tessera/pytools/site"));
    if site.join(needed).exists() {
        return Some(site);
    }
    let reason = format!(
        "{} not found: run `make pytools` (the test suite's Python tools)",
        site.join(needed).display()
    );
    if std::env::var_os("TESSERA_REQUIRE_ASSETS").is_some() {
        panic!("{reason}");
    }
    eprintln!("SKIPPED: {reason}");
    None
}
