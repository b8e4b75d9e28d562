//! Execution providers (CPU, CUDA, TensorRT, OpenVINO, QNN, CoreML, WebGPU, plugins) and session options.
//!
//! Providers are tried in the configured priority order. One that ONNX Runtime refuses (the loaded
//! library was built without it, its libraries or device are missing) is logged and skipped;
//! if a session cannot be created with a provider that registered, that provider is dropped and
//! the next ones are tried. The CPU provider is always the last resort, so a session is created
//! whenever the model itself is valid. [`crate::ModelSession::execution_provider`] reports the
//! provider that actually took the session.

use crate::manifest::Model;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ort::environment::Environment;
use ort::ep::{self, ExecutionProviderDispatch};
use ort::memory::DeviceType;
use ort::session::Session;
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use serde::{Deserialize, Serialize};

use crate::error::ModelError;

/// One execution provider, as configured: a table with its `kind` and options
/// (`{ kind = "cuda", device_id = 1 }`), or only the kind's name with default options (`"cuda"`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
// `remote = "Self"`: the derived code becomes inherent functions, which the trait impls below
// wrap, so that a bare name is accepted too.
#[serde(
    remote = "Self",
    tag = "kind",
    rename_all = "snake_case",
    deny_unknown_fields
)]
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
    /// An execution provider plugin, loaded through ONNX Runtime's plugin EP interface into
    /// the standard library: PyPI `onnxruntime-ep-openvino` (Intel CPU, GPU, NPU),
    /// `onnxruntime-ep-webgpu`, `onnxruntime-ep-nv-tensorrt-rtx`, ... The library is registered
    /// once per process; the session uses the devices it offers.
    Plugin {
        /// The plugin's shared library, e.g.
        /// `.../onnxruntime_ep_openvino/libonnxruntime_providers_openvino_plugin.so`.
        library: String,
        /// Which of the plugin's devices to use: `cpu`, `gpu` or `npu`; unset: all it offers.
        #[serde(default)]
        device: Option<PluginDevice>,
        /// Provider options, passed as given (e.g. OpenVINO's `precision = "FP16"`).
        #[serde(default)]
        options: BTreeMap<String, String>,
    },
}

impl Serialize for ExecutionProviderConfig {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        Self::serialize(self, serializer)
    }
}

impl<'de> Deserialize<'de> for ExecutionProviderConfig {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::value::{MapAccessDeserializer, MapDeserializer};

        struct NameOrTable;
        impl<'de> serde::de::Visitor<'de> for NameOrTable {
            type Value = ExecutionProviderConfig;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a provider name (\"cuda\") or a table with its kind and options")
            }

            fn visit_str<E: serde::de::Error>(self, kind: &str) -> Result<Self::Value, E> {
                ExecutionProviderConfig::deserialize(MapDeserializer::new(std::iter::once((
                    "kind", kind,
                ))))
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Self::Value, A::Error> {
                ExecutionProviderConfig::deserialize(MapAccessDeserializer::new(map))
            }
        }
        deserializer.deserialize_any(NameOrTable)
    }
}

/// The kind of hardware a plugin device is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PluginDevice {
    Cpu,
    Gpu,
    Npu,
}

impl PluginDevice {
    fn matches(self, ty: DeviceType) -> bool {
        matches!(
            (self, ty),
            (Self::Cpu, DeviceType::CPU)
                | (Self::Gpu, DeviceType::GPU)
                | (Self::Npu, DeviceType::NPU)
        )
    }

    fn name(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Gpu => "gpu",
            Self::Npu => "npu",
        }
    }
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
            Self::Plugin { .. } => "plugin",
        }
    }

    /// Adds this provider to `builder`, which comes back either way, with the name of what will
    /// run the session (`cuda`, `plugin:OpenVINOExecutionProvider`, ...) or why it cannot.
    fn register(
        &self,
        env: &Environment,
        mut builder: SessionBuilder,
    ) -> (SessionBuilder, Result<String, String>) {
        if let Self::Plugin {
            library,
            device,
            options,
        } = self
        {
            return register_plugin(env, builder, Path::new(library), *device, options);
        }
        let registered = match self.dispatch() {
            Some(dispatch) => dispatch
                .register(&mut builder)
                .map(|()| self.name().to_owned())
                .map_err(|e| e.to_string()),
            None => Err(format!("{self} is not a built-in provider")),
        };
        (builder, registered)
    }

    /// The built-in `ort` provider to register, `None` for a plugin (registered through the
    /// device API); fails instead of silently falling back, so the caller sees which provider
    /// was refused.
    fn dispatch(&self) -> Option<ExecutionProviderDispatch> {
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
            Self::Plugin { .. } => return None,
        };
        Some(d.error_on_failure())
    }
}

impl fmt::Display for ExecutionProviderConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Plugin {
                library, device, ..
            } => {
                write!(f, "plugin {library}")?;
                match device {
                    Some(d) => write!(f, " ({})", d.name()),
                    None => Ok(()),
                }
            }
            other => f.write_str(other.name()),
        }
    }
}

/// Plugin libraries registered with the process's environment (ONNX Runtime refuses a second
/// registration): the library, then the execution providers it added or why it failed.
type PluginRegistry = Vec<(PathBuf, Result<Vec<String>, String>)>;
static PLUGINS: Mutex<PluginRegistry> = Mutex::new(Vec::new());

/// Registers `library` with `env` once per process; the names of the execution providers it
/// added (found by comparing the environment's devices before and after).
fn plugin_providers(env: &Environment, library: &Path) -> Result<Vec<String>, String> {
    let mut plugins = PLUGINS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, known)) = plugins.iter().find(|(path, _)| path == library) {
        return known.clone();
    }
    let providers_now = |env: &Environment| -> BTreeSet<String> {
        env.devices()
            .filter_map(|d| d.ep().ok().map(str::to_owned))
            .collect()
    };
    let result = if library.is_file() {
        let before = providers_now(env);
        let name = format!("tessera-plugin-{}", plugins.len());
        env.register_ep_library(name, library)
            .map_err(|e| format!("ONNX Runtime refused the plugin library: {e}"))
            .and_then(|()| {
                let added: Vec<String> = providers_now(env).difference(&before).cloned().collect();
                if added.is_empty() {
                    // Plugins support particular vendors' hardware (OpenVINO: Intel's), so say
                    // what this machine has.
                    let hardware: BTreeSet<String> = env
                        .devices()
                        .map(|d| {
                            let h = d.hardware_device();
                            format!("{} {:?}", h.vendor().unwrap_or("?"), h.ty()).to_lowercase()
                        })
                        .collect();
                    Err(format!(
                        "the plugin registered, but supports none of this machine's devices ({})",
                        hardware.into_iter().collect::<Vec<_>>().join(", ")
                    ))
                } else {
                    tracing::info!(library = %library.display(), providers = ?added, "Execution provider plugin registered.");
                    Ok(added)
                }
            })
    } else {
        Err(format!("plugin library {} not found", library.display()))
    };
    plugins.push((library.to_path_buf(), result.clone()));
    result
}

/// Adds a plugin's devices (those of kind `device`, or all) to `builder`, with `options` given
/// to each of the plugin's providers.
fn register_plugin(
    env: &Environment,
    builder: SessionBuilder,
    library: &Path,
    device: Option<PluginDevice>,
    options: &BTreeMap<String, String>,
) -> (SessionBuilder, Result<String, String>) {
    let providers = match plugin_providers(env, library) {
        Ok(p) => p,
        Err(why) => return (builder, Err(why)),
    };
    let ours =
        |d: &ort::device::Device<'_>| d.ep().is_ok_and(|ep| providers.iter().any(|p| p == ep));
    let devices: Vec<_> = env
        .devices()
        .filter(|d| ours(d) && device.is_none_or(|k| k.matches(d.hardware_device().ty())))
        .collect();
    let Some(first) = devices.first() else {
        let offered: Vec<String> = env
            .devices()
            .filter(|d| ours(d))
            .map(|d| format!("{:?}", d.hardware_device().ty()).to_lowercase())
            .collect();
        let wanted = device.map_or("any", PluginDevice::name);
        return (
            builder,
            Err(format!(
                "{} offers no {wanted} device on this machine (it offers: {})",
                providers.join(", "),
                offered.join(", ")
            )),
        );
    };
    let in_use = format!("plugin:{}", first.ep().unwrap_or("?"));
    // `with_devices` hands each provider the options prefixed with its name.
    let prefixed: Vec<(String, String)> = providers
        .iter()
        .flat_map(|p| {
            options
                .iter()
                .map(move |(k, v)| (format!("{p}.{k}"), v.clone()))
        })
        .collect();
    match builder.with_devices(devices, Some(&prefixed)) {
        Ok(builder) => (builder, Ok(in_use)),
        Err(e) => {
            let why = e.to_string();
            (e.recover(), Err(why))
        }
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
                }
                | ExecutionProviderConfig::Plugin { library: s, .. } => s.trim().is_empty(),
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
/// module docs). Returns the session and the name of the provider that took it (`cpu`,
/// `cuda`, `plugin:OpenVINOExecutionProvider`, ...).
pub(crate) fn build_session(
    env: &Environment,
    model: &Model,
    config: &SessionConfig,
) -> Result<(Session, String), ModelError> {
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
        // The registered providers, each with the name of what runs it.
        let mut registered: Vec<(&ExecutionProviderConfig, String)> = Vec::new();
        for p in &candidates {
            let (returned, outcome) = p.register(env, builder);
            builder = returned;
            match outcome {
                Ok(in_use) => registered.push((p, in_use)),
                Err(e) => {
                    // Every session (one per worker, one per model) tries the same providers:
                    // the operator hears of each unavailable one once.
                    let provider = p.to_string();
                    let provider = provider.as_str();
                    if first_time_unavailable(p) {
                        tracing::warn!(provider, error = %e, "Execution provider unavailable; trying the next one.");
                    } else {
                        tracing::debug!(provider, error = %e, "Execution provider unavailable; trying the next one.");
                    }
                }
            }
        }
        candidates.retain(|p| registered.iter().any(|(r, _)| r == p));
        let Some((_, first)) = registered.into_iter().next() else {
            // CPU only: ONNX Runtime always has it, so no registration is needed.
            let session =
                commit(&mut builder).map_err(|e| load_err(("creating the session", e)))?;
            return Ok((session, "cpu".to_owned()));
        };
        match commit(&mut builder) {
            Ok(session) => {
                tracing::info!(provider = first.as_str(), model = %path.display(), "Session created.");
                return Ok((session, first));
            }
            Err(e) => {
                let dropped = candidates.remove(0);
                tracing::warn!(provider = dropped.to_string().as_str(), error = %e, "Session creation failed with this execution provider; trying the next one.");
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
            kind = "plugin"
            library = "/opt/ep/libonnxruntime_providers_openvino_plugin.so"
            device = "npu"
            options = { precision = "FP16" }
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
                ExecutionProviderConfig::Plugin {
                    library: "/opt/ep/libonnxruntime_providers_openvino_plugin.so".into(),
                    device: Some(PluginDevice::Npu),
                    options: [("precision".to_owned(), "FP16".to_owned())].into(),
                },
                ExecutionProviderConfig::Cpu,
            ]
        );
        assert_eq!(
            c.execution_providers[6].to_string(),
            "plugin /opt/ep/libonnxruntime_providers_openvino_plugin.so (npu)"
        );
        assert_eq!(c.intra_op_threads, 2);
        assert_eq!(c.inter_op_threads, 1);
        assert_eq!(c.graph_optimization, GraphOptimization::All);
        c.validate()?;
        Ok(())
    }

    #[test]
    fn a_bare_name_is_the_provider_with_default_options() -> Result<(), Box<dyn std::error::Error>>
    {
        let c: SessionConfig = toml::from_str(
            r#"execution_providers = ["tensorrt", { kind = "cuda", device_id = 1 }, "openvino", "cpu"]"#,
        )?;
        assert_eq!(
            c.execution_providers,
            vec![
                ExecutionProviderConfig::TensorRt {
                    device_id: 0,
                    fp16: false,
                    int8: false,
                    engine_cache_path: None,
                },
                ExecutionProviderConfig::Cuda { device_id: 1 },
                ExecutionProviderConfig::OpenVino { device_type: None },
                ExecutionProviderConfig::Cpu,
            ]
        );
        // Serialised back as tables, which read the same.
        let text = toml::to_string(&c)?;
        assert_eq!(toml::from_str::<SessionConfig>(&text)?, c);
        // A name still has to be a known kind, and a plugin needs its library.
        let e = toml::from_str::<SessionConfig>(r#"execution_providers = ["tpu"]"#)
            .expect_err("unknown kind");
        assert!(e.to_string().contains("unknown variant `tpu`"), "{e}");
        let e = toml::from_str::<SessionConfig>(r#"execution_providers = ["plugin"]"#)
            .expect_err("no library");
        assert!(e.to_string().contains("missing field `library`"), "{e}");
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
        // A plugin needs its library; devices are cpu, gpu or npu.
        assert!(
            toml::from_str::<SessionConfig>("[[execution_providers]]\nkind = \"plugin\"").is_err()
        );
        assert!(
            toml::from_str::<SessionConfig>(
                "[[execution_providers]]\nkind = \"plugin\"\nlibrary = \"x.so\"\ndevice = \"tpu\""
            )
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
        c.execution_providers = vec![ExecutionProviderConfig::Plugin {
            library: "".into(),
            device: None,
            options: BTreeMap::new(),
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
