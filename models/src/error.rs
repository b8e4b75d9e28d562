//! The crate's error type, classified the way supervisors need it: whose fault is it, and is
//! retrying worth it.

use std::path::PathBuf;

/// An error and every cause below it, `: `-separated: for the places that carry one string
/// (a log field, a dead letter's header), where errors that keep their causes as sources
/// would otherwise lose them.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

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
    #[error("cannot initialise ONNX Runtime ({context})")]
    RuntimeInit {
        /// What was being done.
        context: &'static str,
        /// ONNX Runtime's (or the loader's) error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
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
        /// What went wrong (or what was being done, when `source` says what went wrong).
        message: String,
        /// ONNX Runtime's error, when it refused.
        #[source]
        source: Option<ort::Error>,
    },
    /// A session or execution-provider configuration is invalid.
    #[error("invalid session configuration: {0}")]
    InvalidConfig(String),
    /// ONNX Runtime failed while running the model.
    #[error("inference failed ({context})")]
    Inference {
        /// What was being done.
        context: String,
        /// ONNX Runtime's error, if it raised one.
        #[source]
        source: Option<ort::Error>,
    },
    /// A tensor does not have the shape or length the model needs (a caller bug).
    #[error("tensor shape mismatch: {0}")]
    Shape(String),
    /// ONNX Runtime refused an input tensor (its shape or length; a caller bug).
    #[error("invalid input tensor")]
    Tensor(#[source] ort::Error),
    /// A tile could not be preprocessed (a bug or a bad manifest).
    #[error("preprocessing tile {tile}")]
    Preprocess {
        tile: usize,
        #[source]
        source: tessera_operators::preprocess::PreprocessError,
    },
    /// A head that cannot run on this model: trained on another backbone, or for another
    /// embedding size.
    #[error("head v{version} does not fit this model: {reason}")]
    HeadMismatch {
        /// The head's version.
        version: u64,
        /// What differs, and what to do about it.
        reason: String,
    },
    /// A head's file or message is unreadable or inconsistent.
    #[error("invalid head: {message}")]
    InvalidHead {
        /// What is wrong with it.
        message: String,
        /// The decoder's error, if one failed.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// Training or running a head failed in candle (a bug or an impossible input).
    #[error("head computation failed ({context})")]
    HeadCompute {
        /// What was being done.
        context: &'static str,
        /// candle's error.
        #[source]
        source: candle_core::Error,
    },
}

impl ModelError {
    /// The kinds a model run of one frame can fail with (its dead-letter kinds).
    pub const FRAME_KINDS: [&'static str; 2] = ["inference", "shape_mismatch"];

    /// Stable snake_case name, for metrics labels and error headers.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::RuntimeNotFound { .. } => "runtime_not_found",
            Self::RuntimeInit { .. } => "runtime_init",
            Self::Manifest { .. } => "invalid_manifest",
            Self::Io { .. } => "io",
            Self::Load { .. } => "model_load",
            Self::InvalidConfig(_) => "invalid_config",
            Self::Inference { .. } => "inference",
            Self::Shape(_) | Self::Tensor(_) | Self::Preprocess { .. } => "shape_mismatch",
            Self::HeadMismatch { .. } => "head_mismatch",
            Self::InvalidHead { .. } => "invalid_head",
            Self::HeadCompute { .. } => "head_compute",
        }
    }

    /// Whose fault the error is.
    pub fn origin(&self) -> ErrorOrigin {
        match self {
            Self::RuntimeNotFound { .. }
            | Self::RuntimeInit { .. }
            | Self::Manifest { .. }
            | Self::Io { .. }
            | Self::Load { .. }
            | Self::InvalidConfig(_)
            | Self::HeadMismatch { .. }
            | Self::InvalidHead { .. } => ErrorOrigin::Config,
            Self::Inference { .. } => ErrorOrigin::External,
            Self::Shape(_)
            | Self::Tensor(_)
            | Self::Preprocess { .. }
            | Self::HeadCompute { .. } => ErrorOrigin::Internal,
        }
    }

    /// A failed model run with no error of ONNX Runtime's to carry.
    pub fn inference(context: impl Into<String>) -> Self {
        Self::Inference {
            context: context.into(),
            source: None,
        }
    }

    /// The message and every cause below it, `: `-separated (for a dead letter's header or a
    /// log line, which carry one string).
    pub fn detail(&self) -> String {
        error_chain(self)
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
    fn causes_are_sources_and_printed_once() {
        // Creating an `ort::Error` loads the runtime library.
        let _env = crate::test_support::env();
        let e = ModelError::Inference {
            context: "running the model".into(),
            source: Some(ort::Error::new("device lost")),
        };
        assert_eq!(e.to_string(), "inference failed (running the model)");
        assert_eq!(
            e.detail(),
            "inference failed (running the model): device lost"
        );
        assert_eq!(e.kind(), "inference");
    }

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
        assert!(ModelError::inference("x").is_retryable());
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
