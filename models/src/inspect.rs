//! Inputs and outputs of an ONNX file, for `tessera inspect` and for writing manifests.

use std::fmt;
use std::path::Path;

use ort::environment::Environment;
use ort::session::Session;
use ort::value::Outlet;

use crate::error::ModelError;
use crate::session::tensor_type;

/// One input or output of a graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// Tensor name.
    pub name: String,
    /// Element type (`f32`, `u8`, ...), or the value type for non-tensors.
    pub element_type: String,
    /// Dimensions; -1 marks a dynamic dimension. Empty for non-tensors.
    pub shape: Vec<i64>,
}

/// The inputs and outputs of a graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInfo {
    /// Graph inputs, in order.
    pub inputs: Vec<TensorInfo>,
    /// Graph outputs, in order.
    pub outputs: Vec<TensorInfo>,
}

/// Loads `path` (CPU provider, no optimisation) and lists its inputs and outputs.
pub fn inspect(env: &Environment, path: &Path) -> Result<ModelInfo, ModelError> {
    let load_err = |message: &str, source: ort::Error| ModelError::Load {
        path: path.to_path_buf(),
        message: message.to_owned(),
        source: Some(source),
    };
    if !path.is_file() {
        return Err(ModelError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        });
    }
    let session = Session::builder(env)
        .map_err(|e| load_err("creating a session builder", e))?
        .with_optimization_level(ort::session::builder::GraphOptimizationLevel::Disable)
        .map_err(|e| load_err("disabling graph optimisation", e.into()))?
        .commit_from_file(path)
        .map_err(|e| load_err("creating the session", e))?;
    Ok(ModelInfo {
        inputs: session.inputs().iter().map(info).collect(),
        outputs: session.outputs().iter().map(info).collect(),
    })
}

fn info(outlet: &Outlet) -> TensorInfo {
    match tensor_type(outlet.dtype()) {
        Some((ty, shape)) => TensorInfo {
            name: outlet.name().to_string(),
            element_type: ty.to_string(),
            shape,
        },
        None => TensorInfo {
            name: outlet.name().to_string(),
            element_type: outlet.dtype().to_string(),
            shape: Vec::new(),
        },
    }
}

impl TensorInfo {
    /// The shape as `[N, 3, 416, 416]`, with `N` for dynamic dimensions.
    pub fn shape_string(&self) -> String {
        let dims: Vec<String> = self
            .shape
            .iter()
            .map(|d| {
                if *d < 0 {
                    "N".to_string()
                } else {
                    d.to_string()
                }
            })
            .collect();
        format!("[{}]", dims.join(", "))
    }
}

impl fmt::Display for ModelInfo {
    /// An aligned table: direction, name, element type, shape.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rows: Vec<(&str, &TensorInfo)> = self
            .inputs
            .iter()
            .map(|t| ("input", t))
            .chain(self.outputs.iter().map(|t| ("output", t)))
            .collect();
        let name_w = rows
            .iter()
            .map(|(_, t)| t.name.len())
            .max()
            .unwrap_or(0)
            .max(4);
        let type_w = rows
            .iter()
            .map(|(_, t)| t.element_type.len())
            .max()
            .unwrap_or(0)
            .max(4);
        writeln!(
            f,
            "{:<6}  {:<name_w$}  {:<type_w$}  shape",
            "", "name", "type"
        )?;
        for (dir, t) in rows {
            writeln!(
                f,
                "{dir:<6}  {:<name_w$}  {:<type_w$}  {}",
                t.name,
                t.element_type,
                t.shape_string()
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{env, testdata};

    #[test]
    fn lists_inputs_and_outputs() -> Result<(), ModelError> {
        let info = inspect(&env(), &testdata("tiny_classifier.onnx"))?;
        assert_eq!(
            info.inputs,
            vec![TensorInfo {
                name: "input".into(),
                element_type: "f32".into(),
                shape: vec![-1, 3, 8, 8],
            }]
        );
        assert_eq!(info.outputs[0].name, "output");
        assert_eq!(info.outputs[0].shape, vec![-1, 4]);
        let table = info.to_string();
        let lines: Vec<Vec<&str>> = table
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(lines[0], vec!["name", "type", "shape"], "{table}");
        assert_eq!(
            lines[1],
            vec!["input", "input", "f32", "[N,", "3,", "8,", "8]"],
            "{table}"
        );
        assert_eq!(
            lines[2],
            vec!["output", "output", "f32", "[N,", "4]"],
            "{table}"
        );

        let det = inspect(&env(), &testdata("tiny_detector.onnx"))?;
        assert_eq!(det.inputs[0].shape, vec![1, 3, 32, 32]);
        assert_eq!(det.outputs[0].shape, vec![1, 21, 7]);
        Ok(())
    }

    #[test]
    fn missing_file_is_an_io_error() {
        let err = inspect(&env(), Path::new("/nonexistent/model.onnx")).expect_err("missing");
        assert_eq!(err.kind(), "io");
    }

    #[test]
    fn garbage_file_is_a_load_error() {
        let err = inspect(&env(), &testdata("tiny_classifier.txt")).expect_err("not onnx");
        assert_eq!(err.kind(), "model_load");
    }
}
