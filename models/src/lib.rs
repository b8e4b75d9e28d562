//! Models for tessera: manifests (`model.toml`), the ONNX Runtime library and environment,
//! execution providers with fallback, sessions with output adapters, and the synchronous
//! per-frame recognition path shared with the actors.
//!
//! ```no_run
//! # fn main() -> Result<(), tessera_models::ModelError> {
//! use std::path::Path;
//! use std::sync::Arc;
//! use tessera_models::{Model, ModelSession, Recognizer, SessionConfig, init_runtime};
//! use tessera_operators::{MergeConfig, TilingConfig};
//!
//! let env = init_runtime(None)?; // $ORT_DYLIB_PATH
//! let model = Model::load(
//!     Path::new("models/manifests/yolox-nano/model.toml"),
//!     None,
//!     Some(Path::new("../shared/assets")),
//! )?;
//! let session = ModelSession::load(&env, Arc::new(model), &SessionConfig::default())?;
//! let mut recognizer = Recognizer::new(session, &TilingConfig::default(), MergeConfig::default());
//! # let frame = image::RgbImage::new(640, 480);
//! let result = recognizer.recognize(&frame)?;
//! # Ok(())
//! # }
//! ```

pub mod embedder;
pub mod embedding;
pub mod error;
pub mod head;
pub mod inspect;
pub mod manifest;
pub mod providers;
pub mod recognizer;
pub mod runtime;
pub mod session;

pub use embedder::Embedder;
pub use error::{ErrorOrigin, ModelError, error_chain};
pub use head::{Example, HEAD_FORMAT, Head, HeadMeta, TrainSettings, Validation};
pub use inspect::{ModelInfo, Proposal, TensorInfo, inspect, propose};
pub use manifest::{
    Aggregate, InputSpec, LabelsSpec, Layout, Model, ModelManifest, OutputSpec, Task, Thresholds,
};
/// The ONNX Runtime environment type (re-exported so callers need no direct `ort` dependency).
pub use ort::environment::Environment;
pub use providers::{ExecutionProviderConfig, GraphOptimization, PluginDevice, SessionConfig};
pub use recognizer::{FrameRecognition, Recognizer, finish_frame};
pub use runtime::{ORT_DYLIB_PATH_ENV, init_runtime, loaded_library};
pub use session::{BatchDim, ModelSession, TileOutput};

#[cfg(test)]
pub(crate) mod test_support {
    //! Shared helpers of the unit tests: the ONNX Runtime environment and the tiny test models.

    use std::path::{Path, PathBuf};
    use std::sync::Arc;

    use ort::environment::Environment;

    use crate::{Model, init_runtime};

    /// The environment from `$ORT_DYLIB_PATH`, else the library `make setup` installs into
    /// `.tessera/onnxruntime`. The runtime is a build prerequisite (not a test asset), so a missing
    /// library fails the test with the fix instead of skipping it.
    pub(crate) fn env() -> Arc<Environment> {
        let dylib = match std::env::var_os(crate::ORT_DYLIB_PATH_ENV) {
            Some(v) if !v.is_empty() => None,
            _ => Some(
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../.tessera/onnxruntime/lib/libonnxruntime.so.1.31.1"),
            ),
        };
        match init_runtime(dylib.as_deref()) {
            Ok(env) => env,
            Err(e) => panic!("{e}"),
        }
    }

    pub(crate) fn testdata(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("testdata")
            .join(name)
    }

    /// A tiny test model: `tiny_classifier` or `tiny_detector`.
    pub(crate) fn tiny(name: &str) -> Arc<Model> {
        match Model::load(&testdata(&format!("{name}.toml")), None, None) {
            Ok(m) => Arc::new(m),
            Err(e) => panic!("{e}"),
        }
    }
}
