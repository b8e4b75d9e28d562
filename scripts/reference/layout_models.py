#!/usr/bin/env python3
# Run by tests/tests/model_layouts.rs with the test suite's Python tools (PYTHONPATH=.tessera/pytools/site:
# onnx, onnxruntime, numpy). By hand:
#   python3 scripts/reference/layout_models.py --model $TESSERA_ASSETS/models/yolox_nano.onnx \
#       --input input.f32 --shape 1,3,416,416 --out /tmp/layouts
"""Exports a real YOLOX model in three other output layouts and decodes each independently of tessera.

YOLOX's official ONNX export ends before the box decoding (`decode_in_inference=False`): output [1, rows, 85] of
grid offsets, log sizes, objectness and class scores. This script appends, with onnx.helper, the endings other
exports have, exactly as their exporters write them:

yolov5.onnx        YOLOX exported with `decode_in_inference=True`: rows of cx, cy, w, h in input pixels,
                   objectness, class scores: the YOLOv5 / YOLOv7 layout [1, rows, 5 + C].
boxes_scores.onnx  decoded boxes as normalised corners "boxes" [1, rows, 4] and per-class scores
                   (objectness x class) "scores" [1, rows, C]: the SSD / RetinaNet layout.
nms.onnx           ONNX NonMaxSuppression (IoU 0.45, score 0.25) over those boxes and scores, the kept boxes
                   sorted by score and padded to 100: "det_boxes" [1, 100, 4] pixel corners, "det_scores"
                   [1, 100], "det_classes" [1, 100] int64 (-1 padding), "num_dets" [1] int64.

Each model is run by onnxruntime's own Python package on the input tensor given (raw little-endian float32,
the tensor tessera fed the original model), and its outputs are decoded here with numpy by each layout's rules
(score threshold 0.25, no NMS except the graph's own). Written to --out: the three models and reference.json,
{layout: [[class, score, x1, y1, x2, y2], ...]} in input pixels.
"""

import argparse
import json
import os

import numpy as np
import onnx
import onnxruntime
from onnx import TensorProto, helper, numpy_helper

STRIDES = (8, 16, 32)
SCORE = 0.25
IOU = 0.45
KEEP = 100


def grids(width, height):
    """Per-row grid offsets [rows, 2] and strides [rows, 1], in YOLOX's row order."""
    offsets, strides = [], []
    for s in STRIDES:
        gy, gx = np.meshgrid(np.arange(height // s), np.arange(width // s), indexing="ij")
        offsets.append(np.stack([gx.ravel(), gy.ravel()], axis=1))
        strides.append(np.full((gx.size, 1), s))
    return np.concatenate(offsets).astype(np.float32), np.concatenate(strides).astype(np.float32)


def const(name, value):
    return numpy_helper.from_array(np.asarray(value), name)


def with_ending(base, nodes, initializers, outputs):
    """`base` with its output replaced by `outputs`, computed from it by `nodes`."""
    model = onnx.ModelProto()
    model.CopyFrom(base)
    graph = model.graph
    raw = graph.output[0].name
    for node in nodes:
        node.input[:] = [raw if i == "raw" else i for i in node.input]
    graph.node.extend(nodes)
    graph.initializer.extend(initializers)
    del graph.output[:]
    graph.output.extend(outputs)
    onnx.checker.check_model(model)
    return model


def decode_nodes(width, height):
    """Nodes turning `raw` [1, rows, 5 + C] into `decoded` (pixel cx, cy, w, h, obj, classes)."""
    offsets, strides = grids(width, height)
    nodes = [
        helper.make_node("Slice", ["raw", "s0", "s2", "axis2"], ["xy_raw"]),
        helper.make_node("Slice", ["raw", "s2", "s4", "axis2"], ["wh_raw"]),
        helper.make_node("Slice", ["raw", "s4", "end", "axis2"], ["rest"]),
        helper.make_node("Add", ["xy_raw", "grid"], ["xy_cells"]),
        helper.make_node("Mul", ["xy_cells", "stride"], ["xy"]),
        helper.make_node("Exp", ["wh_raw"], ["wh_cells"]),
        helper.make_node("Mul", ["wh_cells", "stride"], ["wh"]),
        helper.make_node("Concat", ["xy", "wh", "rest"], ["decoded"], axis=2),
    ]
    inits = [
        const("s0", [0]), const("s2", [2]), const("s4", [4]), const("end", [2**62]), const("axis2", [2]),
        const("grid", offsets[None]), const("stride", strides[None]),
    ]
    return nodes, inits


def corner_nodes(scale):
    """Nodes turning `decoded` into corner boxes `corners` (divided by `scale`) and `class_scores`."""
    nodes = [
        helper.make_node("Slice", ["decoded", "s0", "s2", "axis2"], ["centre"]),
        helper.make_node("Slice", ["decoded", "s2", "s4", "axis2"], ["size"]),
        helper.make_node("Slice", ["decoded", "s4", "s5", "axis2"], ["obj"]),
        helper.make_node("Slice", ["decoded", "s5", "end", "axis2"], ["cls"]),
        helper.make_node("Mul", ["cls", "obj"], ["class_scores"]),
        helper.make_node("Div", ["size", "two"], ["half"]),
        helper.make_node("Sub", ["centre", "half"], ["top_left"]),
        helper.make_node("Add", ["centre", "half"], ["bottom_right"]),
        helper.make_node("Concat", ["top_left", "bottom_right"], ["corners_px"], axis=2),
        helper.make_node("Div", ["corners_px", "box_scale"], ["corners"]),
    ]
    inits = [const("s5", [5]), const("two", np.float32(2.0)), const("box_scale", np.asarray(scale, np.float32))]
    return nodes, inits


def nms_nodes():
    """Nodes turning `corners` (pixels) and `class_scores` into padded, score-sorted NMS outputs (opset 11, as
    the YOLOX export: Squeeze and Unsqueeze take attributes)."""
    nodes = [
        helper.make_node("Transpose", ["class_scores"], ["scores_by_class"], perm=[0, 2, 1]),
        helper.make_node("NonMaxSuppression", ["corners", "scores_by_class", "max_per_class", "iou", "score"],
                         ["selected"]),
        # selected: [K, 3] of (batch, class, box).
        helper.make_node("Slice", ["selected", "s1", "s2", "axis1"], ["class_col"]),
        helper.make_node("Slice", ["selected", "s2", "s3", "axis1"], ["box_col"]),
        helper.make_node("Squeeze", ["class_col"], ["kept_classes"], axes=[1]),
        helper.make_node("Squeeze", ["box_col"], ["kept_box_ids"], axes=[1]),
        helper.make_node("GatherND", ["scores_by_class", "selected"], ["kept_scores"]),
        helper.make_node("Squeeze", ["corners"], ["all_boxes"], axes=[0]),
        helper.make_node("Gather", ["all_boxes", "kept_box_ids"], ["kept_boxes"], axis=0),
        # Best KEEP by score (Min takes no integers before opset 12: through float).
        helper.make_node("Shape", ["kept_scores"], ["k_all"]),
        helper.make_node("Cast", ["k_all"], ["k_all_f"], to=TensorProto.FLOAT),
        helper.make_node("Min", ["k_all_f", "keep_f"], ["k_f"]),
        helper.make_node("Cast", ["k_f"], ["k"], to=TensorProto.INT64),
        helper.make_node("TopK", ["kept_scores", "k"], ["top_scores", "top_ids"], axis=0, largest=1, sorted=1),
        helper.make_node("Gather", ["kept_boxes", "top_ids"], ["top_boxes"], axis=0),
        helper.make_node("Gather", ["kept_classes", "top_ids"], ["top_classes"], axis=0),
        # Pad to KEEP rows.
        helper.make_node("Sub", ["keep", "k"], ["pad"]),
        helper.make_node("Concat", ["zero", "pad"], ["pads_1d"], axis=0),
        helper.make_node("Concat", ["zero", "zero", "pad", "zero"], ["pads_2d"], axis=0),
        helper.make_node("Pad", ["top_scores", "pads_1d", "fzero"], ["padded_scores"]),
        helper.make_node("Pad", ["top_classes", "pads_1d", "minus_one"], ["padded_classes"]),
        helper.make_node("Pad", ["top_boxes", "pads_2d", "fzero"], ["padded_boxes"]),
        helper.make_node("Unsqueeze", ["padded_scores"], ["det_scores"], axes=[0]),
        helper.make_node("Unsqueeze", ["padded_classes"], ["det_classes"], axes=[0]),
        helper.make_node("Unsqueeze", ["padded_boxes"], ["det_boxes"], axes=[0]),
        helper.make_node("Identity", ["k"], ["num_dets"]),
    ]
    inits = [
        const("max_per_class", np.array([KEEP], np.int64)), const("iou", np.array([IOU], np.float32)),
        const("score", np.array([SCORE], np.float32)), const("s1", [1]), const("s3", [3]), const("axis1", [1]),
        const("keep", np.array([KEEP], np.int64)), const("keep_f", np.array([KEEP], np.float32)), const("zero", np.array([0], np.int64)),
        const("fzero", np.float32(0.0)), const("minus_one", np.int64(-1)),
    ]
    return nodes, inits


def build(base, width, height, rows, classes):
    out = lambda name, ty, shape: helper.make_tensor_value_info(name, ty, shape)
    dn, di = decode_nodes(width, height)
    yolov5 = with_ending(base, dn, di, [out("decoded", TensorProto.FLOAT, [1, rows, 5 + classes])])
    dn, di = decode_nodes(width, height)
    cn, ci = corner_nodes([width, height, width, height])
    boxes_scores = with_ending(base, dn + cn + [helper.make_node("Identity", ["corners"], ["boxes"]),
                                                helper.make_node("Identity", ["class_scores"], ["scores"])],
                               di + ci, [out("boxes", TensorProto.FLOAT, [1, rows, 4]),
                                         out("scores", TensorProto.FLOAT, [1, rows, classes])])
    dn, di = decode_nodes(width, height)
    cn, ci = corner_nodes([1.0, 1.0, 1.0, 1.0])
    nn, ni = nms_nodes()
    nms = with_ending(base, dn + cn + nn, di + ci + ni, [
        out("num_dets", TensorProto.INT64, [1]), out("det_boxes", TensorProto.FLOAT, [1, KEEP, 4]),
        out("det_scores", TensorProto.FLOAT, [1, KEEP]), out("det_classes", TensorProto.INT64, [1, KEEP])])
    return {"yolov5": yolov5, "boxes_scores": boxes_scores, "nms_outputs": nms}


def reference(layout, outputs, width, height):
    """Detections decoded with numpy by the layout's rules."""
    found = []
    if layout == "yolov5":
        rows = outputs["decoded"][0]
        for cx, cy, w, h, obj, *cls in rows:
            c = int(np.argmax(cls))
            score = obj * cls[c]
            if score >= SCORE:
                found.append([c, score, cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
    elif layout == "boxes_scores":
        boxes, scores = outputs["boxes"][0], outputs["scores"][0]
        for box, row in zip(boxes, scores):
            c = int(np.argmax(row))
            if row[c] >= SCORE:
                found.append([c, row[c], box[0] * width, box[1] * height, box[2] * width, box[3] * height])
    else:
        count = int(outputs["num_dets"][0])
        for box, score, c in list(zip(outputs["det_boxes"][0], outputs["det_scores"][0], outputs["det_classes"][0]))[:count]:
            if score >= SCORE and c >= 0:
                found.append([int(c), score, *box])
    return [[int(d[0])] + [float(v) for v in d[1:]] for d in found]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--input", required=True, help="raw little-endian float32 NCHW tensor")
    parser.add_argument("--shape", required=True, help="N,C,H,W of --input")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    shape = tuple(int(d) for d in args.shape.split(","))
    x = np.fromfile(args.input, dtype="<f4").reshape(shape)
    base = onnx.load(args.model)
    raw_shape = [d.dim_value for d in base.graph.output[0].type.tensor_type.shape.dim]
    rows, classes = raw_shape[1], raw_shape[2] - 5
    height, width = shape[2], shape[3]
    os.makedirs(args.out, exist_ok=True)
    result = {}
    for layout, model in build(base, width, height, rows, classes).items():
        path = os.path.join(args.out, f"{layout}.onnx")
        onnx.save(model, path)
        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        outputs = dict(zip(names, session.run(None, {session.get_inputs()[0].name: x})))
        result[layout] = reference(layout, outputs, width, height)
        print(f"{layout}: {len(result[layout])} detections")
    with open(os.path.join(args.out, "reference.json"), "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
