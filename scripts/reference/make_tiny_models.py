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

The layouts of the other adapters, each [1, 3, 32, 32] "images" in, each finding the same box (8, 8, 16, 16)
(written in the layout's own way) with a score that follows m = mean(input):

tiny_yolov5.onnx       "output" [1, 12, 7]: rows cx, cy, w, h (pixels), objectness, 2 class scores;
                       row 3 = (12, 12, 8, 8, m, 0.1, 0.8): class 1, score 0.8 m. Other rows: objectness 0.
tiny_boxes_scores.onnx "boxes" [1, 6, 4] normalised corners, "scores" [1, 6, 3] probabilities with class 0 the
                       background: every row is background (0.9, 0.05, 0.05) except row 2, (0.25, 0.25, 0.5, 0.5)
                       with scores (0.1, 0.1, m): class 2, score m.
tiny_detr.onnx         "pred_boxes" [1, 5, 4] normalised centres, "logits" [1, 5, 2]: all logits -6 except query 1,
                       box (0.375, 0.375, 0.25, 0.25), class 1 logit 10 m - 5: class 1, score sigmoid(10 m - 5).
tiny_nms.onnx          "det_boxes" [1, 4, 4] pixel corners, "det_scores" [1, 4], "det_classes" [1, 4] int64,
                       "num_dets" [1] int64 = 1: row 0 is (8, 8, 16, 16), class 1, score m; row 1 is
                       (0, 0, 4, 4), class 0, score 0.99 but beyond the count (padding that must be ignored).
tiny_unknown.onnx      "features" [1, 3, 8, 8] (a 4x4 average pool): a layout no adapter reads.
tiny_two_inputs.onnx   "images" and "orig_target_sizes" [1, 2] int64 in (as some RT-DETR exports), "output"
                       [1, 3] (the per-channel mean) out: a model tessera cannot feed.
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


def graph_model(name, nodes, outputs, initializers):
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 32, 32])],
        outputs,
        initializer=[numpy_helper.from_array(v, k) for k, v in initializers.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="tessera")
    save(model, f"{name}.onnx")


MEAN = helper.make_node("ReduceMean", ["images"], ["mean"], keepdims=0)


def varying(name, base, mask, scale=1.0):
    """Nodes computing `name = base + mask * (scale * mean(input))`."""
    return [
        helper.make_node("Mul", ["mean", f"{name}_scale"], [f"{name}_m"]),
        helper.make_node("Mul", [f"{name}_mask", f"{name}_m"], [f"{name}_var"]),
        helper.make_node("Add", [f"{name}_base", f"{name}_var"], [name]),
    ], {f"{name}_base": base, f"{name}_mask": mask, f"{name}_scale": np.array(scale, dtype=np.float32)}


def tiny_yolov5():
    base = np.zeros((1, 12, 7), dtype=np.float32)
    base[0, 3, :] = [12, 12, 8, 8, 0, 0.1, 0.8]
    mask = np.zeros_like(base)
    mask[0, 3, 4] = 1.0
    nodes, inits = varying("output", base, mask)
    graph_model("tiny_yolov5", [MEAN, *nodes], [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 12, 7])], inits)


def tiny_boxes_scores():
    boxes = np.zeros((1, 6, 4), dtype=np.float32)
    boxes[0, :, :] = [0.0, 0.0, 0.1, 0.1]
    boxes[0, 2, :] = [0.25, 0.25, 0.5, 0.5]
    scores = np.tile(np.array([0.9, 0.05, 0.05], dtype=np.float32), (1, 6, 1))
    scores[0, 2, :] = [0.1, 0.1, 0.0]
    mask = np.zeros_like(scores)
    mask[0, 2, 2] = 1.0
    nodes, inits = varying("scores", scores, mask)
    inits["boxes_const"] = boxes
    nodes.append(helper.make_node("Identity", ["boxes_const"], ["boxes"]))
    outputs = [
        helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, 6, 4]),
        helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 6, 3]),
    ]
    graph_model("tiny_boxes_scores", [MEAN, *nodes], outputs, inits)


def tiny_detr():
    boxes = np.full((1, 5, 4), 0.5, dtype=np.float32)
    boxes[0, 1, :] = [0.375, 0.375, 0.25, 0.25]
    logits = np.full((1, 5, 2), -6.0, dtype=np.float32)
    logits[0, 1, 1] = -5.0
    mask = np.zeros_like(logits)
    mask[0, 1, 1] = 1.0
    nodes, inits = varying("logits", logits, mask, scale=10.0)
    inits["boxes_const"] = boxes
    nodes.append(helper.make_node("Identity", ["boxes_const"], ["pred_boxes"]))
    outputs = [
        helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 5, 2]),
        helper.make_tensor_value_info("pred_boxes", TensorProto.FLOAT, [1, 5, 4]),
    ]
    graph_model("tiny_detr", [MEAN, *nodes], outputs, inits)


def tiny_nms():
    boxes = np.zeros((1, 4, 4), dtype=np.float32)
    boxes[0, 0, :] = [8, 8, 16, 16]
    boxes[0, 1, :] = [0, 0, 4, 4]
    scores = np.array([[0.0, 0.99, 0.0, 0.0]], dtype=np.float32)
    mask = np.array([[1.0, 0.0, 0.0, 0.0]], dtype=np.float32)
    nodes, inits = varying("det_scores", scores, mask)
    inits["boxes_const"] = boxes
    inits["classes_const"] = np.array([[1, 0, -1, -1]], dtype=np.int64)
    inits["count_const"] = np.array([1], dtype=np.int64)
    nodes += [
        helper.make_node("Identity", ["boxes_const"], ["det_boxes"]),
        helper.make_node("Identity", ["classes_const"], ["det_classes"]),
        helper.make_node("Identity", ["count_const"], ["num_dets"]),
    ]
    outputs = [
        helper.make_tensor_value_info("num_dets", TensorProto.INT64, [1]),
        helper.make_tensor_value_info("det_boxes", TensorProto.FLOAT, [1, 4, 4]),
        helper.make_tensor_value_info("det_scores", TensorProto.FLOAT, [1, 4]),
        helper.make_tensor_value_info("det_classes", TensorProto.INT64, [1, 4]),
    ]
    graph_model("tiny_nms", [MEAN, *nodes], outputs, inits)


def tiny_unknown():
    nodes = [helper.make_node("AveragePool", ["images"], ["features"], kernel_shape=[4, 4], strides=[4, 4])]
    graph_model("tiny_unknown", nodes, [helper.make_tensor_value_info("features", TensorProto.FLOAT, [1, 3, 8, 8])], {})


def tiny_two_inputs():
    nodes = [
        helper.make_node("GlobalAveragePool", ["images"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["output"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_two_inputs",
        [
            helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 32, 32]),
            helper.make_tensor_value_info("orig_target_sizes", TensorProto.INT64, [1, 2]),
        ],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="tessera")
    save(model, "tiny_two_inputs.onnx")


def check_layouts():
    import onnxruntime as ort

    x = np.full((1, 3, 32, 32), 0.9, dtype=np.float32)

    def run(name):
        s = ort.InferenceSession(os.path.join(OUT, f"{name}.onnx"), providers=["CPUExecutionProvider"])
        return dict(zip([o.name for o in s.get_outputs()], s.run(None, {"images": x})))

    y = run("tiny_yolov5")["output"]
    assert y.shape == (1, 12, 7) and abs(y[0, 3, 4] - 0.9) < 1e-4 and y[0, :, 4].sum() == y[0, 3, 4], y
    y = run("tiny_boxes_scores")
    assert y["boxes"].shape == (1, 6, 4) and abs(y["scores"][0, 2, 2] - 0.9) < 1e-4, y
    y = run("tiny_detr")
    assert y["pred_boxes"].shape == (1, 5, 4) and abs(y["logits"][0, 1, 1] - 4.0) < 1e-3, y
    y = run("tiny_nms")
    assert y["num_dets"].tolist() == [1] and y["det_classes"].dtype == np.int64, y
    assert abs(y["det_scores"][0, 0] - 0.9) < 1e-4, y
    assert run("tiny_unknown")["features"].shape == (1, 3, 8, 8)
    print("onnxruntime check of the layout models passed")


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
    tiny_yolov5()
    tiny_boxes_scores()
    tiny_detr()
    tiny_nms()
    tiny_unknown()
    tiny_two_inputs()
    check()
    check_layouts()
