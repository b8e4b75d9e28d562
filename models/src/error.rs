//! The crate's error type, classified the way supervisors need it: whose fault is it, and is
//! retrying worth it.

use std::path::PathBuf;

/// Where an error comes from, which decides what a supervisor does with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorOrigin {
    /// Configuration or installation (a manifest, a missing library or file): retrying cannot
    /// help; an operator must fix something.
    Config,
    /// The ONNX Runtime library or the hardware below it failed at run time: may be transient.
    External,
    /// tessera itself produced something inconsistent (a bug).
    Internal,
}

/// Everything that can go wrong while loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The ONNX Runtime shared library could not be found or opened.
    #[error(
        "ONNX Runtime library not found{}: {reason}; run `make setup` (installs onnxruntime==1.31.1 from PyPI into .tessera/onnxruntime) or set ORT_DYLIB_PATH to libonnxruntime.so",
        path.as_ref().map(|p| format!(" at {}", p.display())).unwrap_or_default()
    )]
    RuntimeNotFound {
        /// The path that was tried, if any.
        path: Option<PathBuf>,
        /// Why it could not be used.
        reason: String,
    },
    /// The library was found but ONNX Runtime could not be initialised (wrong version, ...).
    #[error("cannot initialise ONNX Runtime: {0}")]
    RuntimeInit(String),
    /// A model manifest or its label file is invalid.
    #[error("invalid model manifest {}: {message}", path.display())]
    Manifest {
        /// The manifest (or label file) at fault.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// ONNX Runtime rejected the model, or the model does not match its manifest.
    #[error("cannot load model {}: {message}", path.display())]
    Load {
        /// The ONNX file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A session or execution-provider configuration is invalid.
    #[error("invalid session configuration: {0}")]
    InvalidConfig(String),
    /// ONNX Runtime failed while running the model.
    #[error("inference failed: {0}")]
    Inference(String),
    /// A tensor does not have the shape or length the model needs (a caller bug).
    #[error("tensor shape mismatch: {0}")]
    Shape(String),
}

impl ModelError {
    /// The kinds a model run of one frame can fail with (its dead-letter kinds).
    pub const FRAME_KINDS: [&'static str; 2] = ["inference", "shape_mismatch"];

    /// Stable snake_case name, for metrics labels and error headers.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::RuntimeNotFound { .. } => "runtime_not_found",
            Self::RuntimeInit(_) => "runtime_init",
            Self::Manifest { .. } => "invalid_manifest",
            Self::Io { .. } => "io",
            Self::Load { .. } => "model_load",
            Self::InvalidConfig(_) => "invalid_config",
            Self::Inference(_) => "inference",
            Self::Shape(_) => "shape_mismatch",
        }
    }

    /// Whose fault the error is.
    pub fn origin(&self) -> ErrorOrigin {
        match self {
            Self::RuntimeNotFound { .. }
            | Self::RuntimeInit(_)
            | Self::Manifest { .. }
            | Self::Io { .. }
            | Self::Load { .. }
            | Self::InvalidConfig(_) => ErrorOrigin::Config,
            Self::Inference(_) => ErrorOrigin::External,
            Self::Shape(_) => ErrorOrigin::Internal,
        }
    }

    /// True when retrying the same operation later (with backoff) may succeed: only run-time
    /// failures of ONNX Runtime (device busy or out of memory, for example).
    pub fn is_retryable(&self) -> bool {
        matches!(self.origin(), ErrorOrigin::External)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_not_found_names_the_fix() {
        let e = ModelError::RuntimeNotFound {
            path: None,
            reason: "ORT_DYLIB_PATH is not set".into(),
        };
        let msg = e.to_string();
        assert!(msg.contains("make setup"), "{msg}");
        assert!(msg.contains("ORT_DYLIB_PATH"), "{msg}");
        assert_eq!(e.kind(), "runtime_not_found");
        assert!(!e.is_retryable());
    }

    #[test]
    fn classification() {
        assert!(ModelError::Inference("x".into()).is_retryable());
        assert_eq!(
            ModelError::Shape("x".into()).origin(),
            ErrorOrigin::Internal
        );
        assert_eq!(
            ModelError::Manifest {
                path: "m.toml".into(),
                message: "bad".into()
            }
            .origin(),
            ErrorOrigin::Config
        );
    }
}
