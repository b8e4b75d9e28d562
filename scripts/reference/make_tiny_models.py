#!/usr/bin/env python3
# Rerun: .tessera/venv/bin/python scripts/reference/make_tiny_models.py   (from the repository root;
#        deps: scripts/reference/requirements.txt). Rewrites models/testdata/*.onnx deterministically.
"""Generates the tiny ONNX models that tessera-models' unit tests use, so core tests need no assets.

tiny_classifier.onnx
    input  "input"  float32 [N, 3, 8, 8]  (dynamic batch, dim_param "N")
    output "output" float32 [N, 4]
    logits = W @ mean_over_pixels(input[n]) + b, with W = [[1,0,0],[0,1,0],[0,0,1],[-1,-1,-1]]
    and b = [0, 0, 0, 0.5]: an input whose channel c is the brightest gives top-1 class c;
    an all-zero input gives class 3.

tiny_detector.onnx
    input  "images" float32 [1, 3, 32, 32]  (fixed batch of 1)
    output "output" float32 [1, 21, 7]: YOLOX layout for a 32x32 input and 2 classes
    (rows: 4x4 grid of stride 8, 2x2 of stride 16, 1x1 of stride 32; columns cx, cy, w, h, obj, cls0, cls1).
    All rows are zero (objectness 0) except row 5 (stride 8, grid x=1, y=1):
    raw cx = cy = 0.5, raw w = h = 0, cls = [0.1, 0.8], objectness = mean(input).
    Decoded with the YOLOX rules this is one box (8, 8, 16, 16) of class 1 with score 0.8 * mean(input).
"""

import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8
HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.normpath(os.path.join(HERE, "..", "..", "models", "testdata"))


def save(model, name):
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    path = os.path.join(OUT, name)
    onnx.save(model, path)
    print(f"wrote {path} ({os.path.getsize(path)} bytes)")


def tiny_classifier():
    w = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [-1, -1, -1]], dtype=np.float32)
    b = np.array([0, 0, 0, 0.5], dtype=np.float32)
    nodes = [
        helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "W", "B"], ["output"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_classifier",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 4])],
        initializer=[numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="tessera")
    save(model, "tiny_classifier.onnx")


def tiny_detector():
    rows, cols = 4 * 4 + 2 * 2 + 1, 5 + 2
    base = np.zeros((1, rows, cols), dtype=np.float32)
    base[0, 5, :] = [0.5, 0.5, 0.0, 0.0, 0.0, 0.1, 0.8]
    mask = np.zeros((1, rows, cols), dtype=np.float32)
    mask[0, 5, 4] = 1.0
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["mean"], keepdims=0),
        helper.make_node("Mul", ["mask", "mean"], ["obj"]),
        helper.make_node("Add", ["base", "obj"], ["output"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_detector",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, rows, cols])],
        initializer=[numpy_helper.from_array(base, "base"), numpy_helper.from_array(mask, "mask")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="tessera")
    save(model, "tiny_detector.onnx")


def check():
    import onnxruntime as ort

    cls = ort.InferenceSession(os.path.join(OUT, "tiny_classifier.onnx"), providers=["CPUExecutionProvider"])
    x = np.zeros((2, 3, 8, 8), dtype=np.float32)
    x[0, 1] = 1.0
    y = cls.run(None, {"input": x})[0]
    assert y.shape == (2, 4) and int(y[0].argmax()) == 1 and int(y[1].argmax()) == 3, y
    det = ort.InferenceSession(os.path.join(OUT, "tiny_detector.onnx"), providers=["CPUExecutionProvider"])
    y = det.run(None, {"images": np.full((1, 3, 32, 32), 0.5, dtype=np.float32)})[0]
    assert y.shape == (1, 21, 7) and abs(y[0, 5, 4] - 0.5) < 1e-6 and y[0, :, 4].sum() == y[0, 5, 4], y
    print("onnxruntime check passed")


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    tiny_classifier()
    tiny_detector()
    check()
