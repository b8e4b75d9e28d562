//! Loading the ONNX Runtime shared library and creating the process-wide environment.
//!
//! `ort` is built with `load-dynamic`: the library is opened at run time, so one binary serves
//! the CPU build (PyPI `onnxruntime`) and the GPU builds (`onnxruntime-gpu`). ONNX Runtime allows
//! one environment per process, so [`init_runtime`] creates it once and hands out clones.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ort::environment::Environment;

use crate::error::ModelError;

/// Environment variable naming the ONNX Runtime library (the same one `ort` reads).
pub const ORT_DYLIB_PATH_ENV: &str = "ORT_DYLIB_PATH";

/// The environment, once created, and the library it was created from (kept for diagnostics).
static RUNTIME: Mutex<Option<(Arc<Environment>, PathBuf)>> = Mutex::new(None);

/// Loads ONNX Runtime and returns the process-wide environment.
///
/// The library is `dylib` if given, else `$ORT_DYLIB_PATH`. Idempotent: later calls return the
/// same environment (a different `dylib` on a later call is ignored with a warning, since a
/// process can load ONNX Runtime only once).
pub fn init_runtime(dylib: Option<&Path>) -> Result<Arc<Environment>, ModelError> {
    // A poisoned lock only means another thread panicked mid-init; the Option is still valid.
    let mut guard = RUNTIME.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((env, loaded)) = guard.as_ref() {
        if let Some(requested) = dylib
            && requested != loaded.as_path()
        {
            tracing::warn!(
                loaded = %loaded.display(),
                requested = %requested.display(),
                "ONNX Runtime is already loaded; ignoring the other library."
            );
        }
        return Ok(Arc::clone(env));
    }

    let path = resolve_library(dylib)?;
    let builder = ort::init_from(&path).map_err(|e| match e {
        ort::LoadDynamicError::Dlopen { error, path } => ModelError::RuntimeNotFound {
            path: Some(path),
            reason: error.to_string(),
        },
        ort::LoadDynamicError::MissingApi { path } => ModelError::RuntimeNotFound {
            path: Some(path),
            reason: "the file is not an ONNX Runtime library (no OrtGetApiBase)".into(),
        },
        other => ModelError::RuntimeInit {
            context: "loading the library",
            source: Box::new(other),
        },
    })?;
    let env = builder
        .with_name("tessera")
        .with_telemetry(false)
        .build()
        .map_err(|e| ModelError::RuntimeInit {
            context: "creating the environment",
            source: Box::new(e),
        })?;
    tracing::info!(library = %path.display(), "ONNX Runtime loaded.");
    let env = Arc::new(env);
    *guard = Some((Arc::clone(&env), path));
    Ok(env)
}

/// The library the environment was created from, if [`init_runtime`] succeeded.
pub fn loaded_library() -> Option<PathBuf> {
    let guard = RUNTIME.lock().unwrap_or_else(|e| e.into_inner());
    guard.as_ref().map(|(_, p)| p.clone())
}

/// The library `make setup` installs, relative to the project root.
const PROJECT_LOCAL_LIBRARY: &str = ".tessera/onnxruntime/lib/libonnxruntime.so.1.31.1";

/// Picks the library path and checks that it is a file, so a missing library gives a clear
/// error rather than a loader message.
fn resolve_library(dylib: Option<&Path>) -> Result<PathBuf, ModelError> {
    let path = match dylib {
        Some(p) => p.to_path_buf(),
        None => match std::env::var_os(ORT_DYLIB_PATH_ENV) {
            Some(v) if !v.is_empty() => PathBuf::from(v),
            // Where `make setup` installs it, so `cargo run` works from the project root.
            _ if Path::new(PROJECT_LOCAL_LIBRARY).is_file() => PathBuf::from(PROJECT_LOCAL_LIBRARY),
            _ => {
                return Err(ModelError::RuntimeNotFound {
                    path: None,
                    reason: format!("no library path given and {ORT_DYLIB_PATH_ENV} is not set"),
                });
            }
        },
    };
    // `ort` resolves relative paths against the executable's folder; users mean the working
    // directory.
    let path = if path.is_relative() {
        std::env::current_dir()
            .map(|d| d.join(&path))
            .unwrap_or(path)
    } else {
        path
    };
    if !path.is_file() {
        return Err(ModelError::RuntimeNotFound {
            path: Some(path),
            reason: "no such file".into(),
        });
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_library_is_a_clear_error() {
        let err = resolve_library(Some(Path::new("/nonexistent/libonnxruntime.so")))
            .expect_err("must fail");
        let msg = err.to_string();
        assert!(msg.contains("/nonexistent/libonnxruntime.so"), "{msg}");
        assert!(msg.contains("make setup"), "{msg}");
        assert!(msg.contains("ORT_DYLIB_PATH"), "{msg}");
        assert_eq!(err.kind(), "runtime_not_found");
    }

    #[test]
    fn init_is_idempotent() -> Result<(), ModelError> {
        let first = crate::test_support::env();
        let again = init_runtime(None)?;
        assert!(Arc::ptr_eq(&first, &again));
        // Another path later is ignored: a process loads ONNX Runtime once.
        let other = init_runtime(Some(Path::new("/elsewhere/libonnxruntime.so")))?;
        assert!(Arc::ptr_eq(&first, &other));
        assert!(loaded_library().is_some_and(|p| p.is_file()));
        Ok(())
    }
}
