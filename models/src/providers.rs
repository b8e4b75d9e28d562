//! Execution providers (CPU, CUDA, TensorRT, OpenVINO, QNN, CoreML, WebGPU) and session options.
//!
//! Providers are tried in the configured priority order. One that ONNX Runtime refuses (the loaded
//! library was built without it, its libraries or device are missing) is logged and skipped;
//! if a session cannot be created with a provider that registered, that provider is dropped and
//! the next ones are tried. The CPU provider is always the last resort, so a session is created
//! whenever the model itself is valid. [`crate::ModelSession::execution_provider`] reports the
//! provider that actually took the session.

use crate::manifest::Model;
use std::fmt;

use ort::environment::Environment;
use ort::ep::{self, ExecutionProviderDispatch};
use ort::session::Session;
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use serde::{Deserialize, Serialize};

use crate::error::ModelError;

/// One execution provider, as configured (`[[model.execution_providers]] kind = "cuda"`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ExecutionProviderConfig {
    /// ONNX Runtime's default CPU provider (MLAS); always available.
    Cpu,
    /// NVIDIA CUDA (needs the `onnxruntime-gpu` library, CUDA and cuDNN).
    Cuda {
        /// CUDA device ordinal.
        #[serde(default)]
        device_id: i32,
    },
    /// NVIDIA TensorRT (needs the `onnxruntime-gpu` library and TensorRT).
    #[serde(rename = "tensorrt")]
    TensorRt {
        /// CUDA device ordinal.
        #[serde(default)]
        device_id: i32,
        /// Build engines in half precision where TensorRT finds it faster.
        #[serde(default)]
        fp16: bool,
        /// Build engines in int8 (needs a calibration table, or a quantised model).
        #[serde(default)]
        int8: bool,
        /// Keep built engines in this folder and reuse them: building one takes minutes, so
        /// a restart without a cache is slow. Unset: engines are rebuilt every start.
        #[serde(default)]
        engine_cache_path: Option<String>,
    },
    /// Intel OpenVINO: CPU, integrated/discrete GPU or NPU.
    #[serde(rename = "openvino")]
    OpenVino {
        /// OpenVINO device, e.g. `CPU`, `GPU.0`, `NPU`, `HETERO:NPU,GPU`; unset: OpenVINO's default.
        #[serde(default)]
        device_type: Option<String>,
    },
    /// Qualcomm QNN (Hexagon NPU).
    Qnn {
        /// QNN backend library, e.g. `libQnnHtp.so` (NPU) or `libQnnCpu.so`; unset: QNN's default.
        #[serde(default)]
        backend_path: Option<String>,
    },
    /// Apple CoreML (macOS / iOS builds of ONNX Runtime).
    #[serde(rename = "coreml")]
    CoreMl,
    /// WebGPU (Dawn over Vulkan, Metal or D3D12).
    #[serde(rename = "webgpu")]
    WebGpu,
}

impl ExecutionProviderConfig {
    /// The short name used in configuration, logs and metric labels (`cpu`, `cuda`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Cuda { .. } => "cuda",
            Self::TensorRt { .. } => "tensorrt",
            Self::OpenVino { .. } => "openvino",
            Self::Qnn { .. } => "qnn",
            Self::CoreMl => "coreml",
            Self::WebGpu => "webgpu",
        }
    }

    /// The `ort` provider to register; fails instead of silently falling back, so the caller sees
    /// which provider was refused.
    fn dispatch(&self) -> ExecutionProviderDispatch {
        let d: ExecutionProviderDispatch = match self {
            Self::Cpu => ep::CPU::default().with_arena_allocator(true).build(),
            Self::Cuda { device_id } => ep::CUDA::default().with_device_id(*device_id).build(),
            Self::TensorRt {
                device_id,
                fp16,
                int8,
                engine_cache_path,
            } => {
                let p = ep::TensorRT::default()
                    .with_device_id(*device_id)
                    .with_fp16(*fp16)
                    .with_int8(*int8);
                match engine_cache_path {
                    Some(path) => p
                        .with_engine_cache(true)
                        .with_engine_cache_path(path)
                        .build(),
                    None => p.build(),
                }
            }
            Self::OpenVino { device_type } => {
                let p = ep::OpenVINO::default();
                match device_type {
                    Some(t) => p.with_device_type(t).build(),
                    None => p.build(),
                }
            }
            Self::Qnn { backend_path } => {
                let p = ep::QNN::default();
                match backend_path {
                    Some(b) => p.with_backend_path(b).build(),
                    None => p.build(),
                }
            }
            Self::CoreMl => ep::CoreML::default().build(),
            Self::WebGpu => ep::WebGPU::default().build(),
        };
        d.error_on_failure()
    }
}

impl fmt::Display for ExecutionProviderConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Graph optimisation level applied when a session is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GraphOptimization {
    /// No graph rewrites (for debugging a model).
    Disable,
    /// Constant folding and redundant-node elimination.
    Basic,
    /// Basic plus complex node fusions.
    Extended,
    /// Extended plus layout optimisations (NCHWc on CPU).
    Layout,
    /// Everything ONNX Runtime offers (the default).
    All,
}

impl From<GraphOptimization> for GraphOptimizationLevel {
    fn from(g: GraphOptimization) -> Self {
        match g {
            GraphOptimization::Disable => Self::Disable,
            GraphOptimization::Basic => Self::Level1,
            GraphOptimization::Extended => Self::Level2,
            GraphOptimization::Layout => Self::Level3,
            GraphOptimization::All => Self::All,
        }
    }
}

/// How ONNX Runtime sessions are created (`[model.session]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    /// Execution providers in priority order; a provider that cannot be used is skipped, and the
    /// CPU provider is always the last resort.
    #[serde(default = "default_execution_providers")]
    pub execution_providers: Vec<ExecutionProviderConfig>,
    /// Threads used inside one operator; 0 lets ONNX Runtime use every core. Keep it low when
    /// several recognize workers run in parallel, each with its own session.
    #[serde(default = "default_threads")]
    pub intra_op_threads: usize,
    /// Threads used to run independent graph branches in parallel; 1 runs the graph sequentially.
    #[serde(default = "default_threads")]
    pub inter_op_threads: usize,
    /// Graph optimisation level.
    #[serde(default = "default_graph_optimization")]
    pub graph_optimization: GraphOptimization,
}

fn default_execution_providers() -> Vec<ExecutionProviderConfig> {
    vec![ExecutionProviderConfig::Cpu]
}

fn default_threads() -> usize {
    1
}

fn default_graph_optimization() -> GraphOptimization {
    GraphOptimization::All
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            execution_providers: default_execution_providers(),
            intra_op_threads: default_threads(),
            inter_op_threads: default_threads(),
            graph_optimization: default_graph_optimization(),
        }
    }
}

/// More threads than this in one session is a configuration mistake, not a machine.
const MAX_THREADS: usize = 1024;

impl SessionConfig {
    /// Checks cross-field rules: at least one provider, no provider listed twice, sane thread
    /// counts, no empty provider option strings.
    pub fn validate(&self) -> Result<(), ModelError> {
        if self.execution_providers.is_empty() {
            return Err(ModelError::InvalidConfig(
                "execution_providers is empty; list at least `cpu`".into(),
            ));
        }
        for (i, p) in self.execution_providers.iter().enumerate() {
            if self.execution_providers[..i].contains(p) {
                return Err(ModelError::InvalidConfig(format!(
                    "execution provider `{p}` is listed twice with the same options"
                )));
            }
            let empty = match p {
                ExecutionProviderConfig::OpenVino {
                    device_type: Some(s),
                }
                | ExecutionProviderConfig::Qnn {
                    backend_path: Some(s),
                }
                | ExecutionProviderConfig::TensorRt {
                    engine_cache_path: Some(s),
                    ..
                } => s.trim().is_empty(),
                ExecutionProviderConfig::Cuda { device_id }
                | ExecutionProviderConfig::TensorRt { device_id, .. }
                    if *device_id < 0 =>
                {
                    return Err(ModelError::InvalidConfig(format!(
                        "execution provider `{p}`: device_id {device_id} is negative"
                    )));
                }
                _ => false,
            };
            if empty {
                return Err(ModelError::InvalidConfig(format!(
                    "execution provider `{p}` has an empty option string"
                )));
            }
        }
        for (name, n) in [
            ("intra_op_threads", self.intra_op_threads),
            ("inter_op_threads", self.inter_op_threads),
        ] {
            if n > MAX_THREADS {
                return Err(ModelError::InvalidConfig(format!(
                    "{name} = {n} exceeds {MAX_THREADS}"
                )));
            }
        }
        if self.inter_op_threads == 0 {
            return Err(ModelError::InvalidConfig(
                "inter_op_threads must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// Creates a session for `model`'s graph, trying the configured providers in order (see the
/// module docs). Returns the session and the short name of the provider that took it.
pub(crate) fn build_session(
    env: &Environment,
    model: &Model,
    config: &SessionConfig,
) -> Result<(Session, &'static str), ModelError> {
    let path = model.onnx_path.as_path();
    // The edited graph when the model derives an output, else the file itself.
    let commit = |builder: &mut SessionBuilder| match &model.graph {
        Some(bytes) => builder.commit_from_memory(bytes),
        None => builder.commit_from_file(path),
    };
    config.validate()?;
    let load_err = |(message, source): (&str, ort::Error)| ModelError::Load {
        path: path.to_path_buf(),
        message: message.to_owned(),
        source: Some(source),
    };
    // Non-CPU providers still in the running; a provider is removed when registration or
    // session creation with it fails.
    // The CPU provider takes every node, so providers listed after it would never run.
    let mut candidates: Vec<&ExecutionProviderConfig> = config
        .execution_providers
        .iter()
        .take_while(|p| **p != ExecutionProviderConfig::Cpu)
        .collect();
    if candidates.len() + 1 < config.execution_providers.len() {
        tracing::warn!("Execution providers listed after `cpu` are never used.");
    }
    loop {
        let mut builder = base_builder(env, config).map_err(&load_err)?;
        let mut registered: Vec<&ExecutionProviderConfig> = Vec::new();
        for p in &candidates {
            match p.dispatch().register(&mut builder) {
                Ok(()) => registered.push(p),
                Err(e) => {
                    // Every session (one per worker, one per model) tries the same providers:
                    // the operator hears of each unavailable one once.
                    if first_time_unavailable(p) {
                        tracing::warn!(provider = p.name(), error = %e, "Execution provider unavailable; trying the next one.");
                    } else {
                        tracing::debug!(provider = p.name(), error = %e, "Execution provider unavailable; trying the next one.");
                    }
                }
            }
        }
        candidates.retain(|p| registered.contains(p));
        if candidates.is_empty() {
            // CPU only: ONNX Runtime always has it, so no registration is needed.
            let session =
                commit(&mut builder).map_err(|e| load_err(("creating the session", e)))?;
            return Ok((session, "cpu"));
        }
        match commit(&mut builder) {
            Ok(session) => {
                let first = candidates[0].name();
                tracing::info!(provider = first, model = %path.display(), "Session created.");
                return Ok((session, first));
            }
            Err(e) => {
                let dropped = candidates.remove(0);
                tracing::warn!(provider = dropped.name(), error = %e, "Session creation failed with this execution provider; trying the next one.");
            }
        }
    }
}

/// True the first time this process finds `provider` (with these options) unavailable.
fn first_time_unavailable(provider: &ExecutionProviderConfig) -> bool {
    static WARNED: std::sync::Mutex<Vec<ExecutionProviderConfig>> =
        std::sync::Mutex::new(Vec::new());
    match WARNED.lock() {
        Ok(mut warned) if !warned.contains(provider) => {
            warned.push(provider.clone());
            true
        }
        Ok(_) => false,
        // A poisoned lock only costs a repeated warning.
        Err(_) => true,
    }
}

/// A session builder with the thread and optimisation options applied; on failure, what was
/// being set and ONNX Runtime's error.
fn base_builder(
    env: &Environment,
    config: &SessionConfig,
) -> Result<SessionBuilder, (&'static str, ort::Error)> {
    Session::builder(env)
        .map_err(|e| ("creating a session builder", e))?
        .with_optimization_level(config.graph_optimization.into())
        .map_err(|e| ("setting the graph optimisation level", e.into()))?
        .with_intra_threads(config.intra_op_threads)
        .map_err(|e| ("setting the intra-op threads", e.into()))?
        .with_inter_threads(config.inter_op_threads)
        .map_err(|e| ("setting the inter-op threads", e.into()))?
        .with_parallel_execution(config.inter_op_threads > 1)
        .map_err(|e| ("setting parallel execution", e.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Wrapper {
        session: SessionConfig,
    }

    #[test]
    fn parses_providers_tagged_by_kind() -> Result<(), Box<dyn std::error::Error>> {
        let w: Wrapper = toml::from_str(
            r#"
            [session]
            intra_op_threads = 2
            [[session.execution_providers]]
            kind = "tensorrt"
            device_id = 1
            fp16 = true
            engine_cache_path = "/var/cache/tessera/trt"
            [[session.execution_providers]]
            kind = "cuda"
            [[session.execution_providers]]
            kind = "openvino"
            device_type = "NPU"
            [[session.execution_providers]]
            kind = "qnn"
            backend_path = "libQnnHtp.so"
            [[session.execution_providers]]
            kind = "coreml"
            [[session.execution_providers]]
            kind = "webgpu"
            [[session.execution_providers]]
            kind = "cpu"
            "#,
        )?;
        let c = w.session;
        assert_eq!(
            c.execution_providers,
            vec![
                ExecutionProviderConfig::TensorRt {
                    device_id: 1,
                    fp16: true,
                    int8: false,
                    engine_cache_path: Some("/var/cache/tessera/trt".into()),
                },
                ExecutionProviderConfig::Cuda { device_id: 0 },
                ExecutionProviderConfig::OpenVino {
                    device_type: Some("NPU".into())
                },
                ExecutionProviderConfig::Qnn {
                    backend_path: Some("libQnnHtp.so".into())
                },
                ExecutionProviderConfig::CoreMl,
                ExecutionProviderConfig::WebGpu,
                ExecutionProviderConfig::Cpu,
            ]
        );
        assert_eq!(c.intra_op_threads, 2);
        assert_eq!(c.inter_op_threads, 1);
        assert_eq!(c.graph_optimization, GraphOptimization::All);
        c.validate()?;
        Ok(())
    }

    #[test]
    fn rejects_unknown_fields_and_kinds() {
        assert!(toml::from_str::<SessionConfig>("threads = 2").is_err());
        assert!(
            toml::from_str::<SessionConfig>("[[execution_providers]]\nkind = \"tpu\"").is_err()
        );
        assert!(
            toml::from_str::<SessionConfig>("[[execution_providers]]\nkind = \"cuda\"\ndevice = 1")
                .is_err()
        );
    }

    #[test]
    fn default_is_cpu_single_threaded() {
        let c = SessionConfig::default();
        assert_eq!(c.execution_providers, vec![ExecutionProviderConfig::Cpu]);
        assert_eq!((c.intra_op_threads, c.inter_op_threads), (1, 1));
        assert!(c.validate().is_ok());
    }

    #[test]
    fn validate_catches_mistakes() {
        let mut c = SessionConfig {
            execution_providers: vec![],
            ..SessionConfig::default()
        };
        assert!(c.validate().is_err());
        c.execution_providers = vec![ExecutionProviderConfig::Cpu, ExecutionProviderConfig::Cpu];
        assert!(c.validate().is_err());
        c.execution_providers = vec![ExecutionProviderConfig::Cuda { device_id: -1 }];
        assert!(c.validate().is_err());
        c.execution_providers = vec![ExecutionProviderConfig::OpenVino {
            device_type: Some(" ".into()),
        }];
        assert!(c.validate().is_err());
        c.execution_providers = vec![ExecutionProviderConfig::Cpu];
        c.inter_op_threads = 0;
        assert!(c.validate().is_err());
        c.inter_op_threads = 1;
        c.intra_op_threads = 100_000;
        assert!(c.validate().is_err());
    }
}
