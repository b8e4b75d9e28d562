#!/usr/bin/env python3
"""Makes an int8 YOLOX-Nano (scripts/quantize/yolox-nano-int8) with ONNX Runtime's static
quantisation (onnxruntime.quantization.quantize_static), calibrated on real tiles.

Not a shipped model: measured against the float model (`target/release/int8-bench`,
BENCHMARKS.md "compressed detector"), it agrees with only ~0.6 of the float model's detections,
below the 0.95 bar a model must meet to be offered, so it stays an experiment with its tools.

Calibration inputs are the tiles tessera itself would feed the model: every image of the
calibration folder (default $TESSERA_ASSETS/images) at its own size and scaled to 1080p, each
also mirrored, cut into tessera's default tiles (416 px, overlap 0.2, plus the full frame) and
letterboxed as the manifest says (the baseline's preprocessing, benches/baseline/pipeline.py,
which matches tessera's to the pixel).

Quantisation: QDQ format, int8 weights per output channel, uint8 activations (MinMax
calibration by default). Only convolutions are quantised: the head's sigmoid, the box decoding
inputs and the output concatenation stay float, so scores near the thresholds keep their
precision (one scale over objectness, class probabilities and box offsets together would not).

Run by `make quantize` (its venv: .tessera/venv, from scripts/reference/requirements.txt).
Writes the ONNX file beside the experiment's manifest, where tessera finds it; it is derived
from the asset model and never committed (.gitignore).
"""

import argparse
import os
import sys
import tempfile
import time

import numpy as np
import onnx
import onnx.version_converter
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process
from PIL import Image, ImageOps

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "benches", "baseline"))
import pipeline as baseline  # noqa: E402  (tessera's preprocessing, in Python)

FLOAT_MANIFEST = os.path.join(ROOT, "models", "manifests", "yolox-nano", "model.toml")
INT8_DIR = os.path.join(ROOT, "scripts", "quantize", "yolox-nano-int8")


class Tiles(CalibrationDataReader):
    """The calibration tiles, one [1, 3, H, W] input at a time."""

    def __init__(self, input_name, tensors):
        self.input_name = input_name
        self.tensors = iter(tensors)

    def get_next(self):
        tensor = next(self.tensors, None)
        return None if tensor is None else {self.input_name: tensor[None, ...]}


def calibration_tiles(model, folder, limit):
    paths = sorted(
        os.path.join(folder, name)
        for name in os.listdir(folder)
        if name.lower().endswith((".jpg", ".jpeg", ".png"))
    )
    if not paths:
        raise SystemExit(f"no calibration images in {folder}")
    tensors = []
    for path in paths:
        with open(path, "rb") as f:
            image = baseline.decode_image(f.read())
        for variant in (image, image.resize((1920, 1080), Image.BILINEAR)):
            for picture in (variant, ImageOps.mirror(variant)):
                for rect in baseline.tile_rects(picture.width, picture.height, model.width, model.height):
                    out = np.empty((3, model.height, model.width), dtype=np.float32)
                    baseline.preprocess(model, picture, rect, out)
                    tensors.append(out)
    if limit and len(tensors) > limit:
        step = len(tensors) / limit
        tensors = [tensors[int(i * step)] for i in range(limit)]
    return paths, tensors


def float_nodes(model):
    """Nodes kept in float: the first convolution (raw 0..255 pixels) and the detection head's
    prediction convolutions (those whose output goes straight to the output concatenation or to
    a sigmoid that is not a SiLU), with everything after them: scores and box offsets keep full
    precision, the backbone and neck run in int8."""
    graph = model.graph
    consumers = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    convs = [n for n in graph.node if n.op_type == "Conv"]
    heads = []
    for conv in convs:
        after = consumers.get(conv.output[0], [])
        kinds = {n.op_type for n in after}
        if "Concat" in kinds or ("Sigmoid" in kinds and "Mul" not in kinds):
            heads.append(conv)
    keep, queue = set(), list(heads)
    while queue:
        node = queue.pop()
        if node.name in keep:
            continue
        keep.add(node.name)
        for output in node.output:
            queue.extend(consumers.get(output, []))
    if convs:
        keep.add(convs[0].name)
    return sorted(keep)


def main():
    assets = os.environ.get("TESSERA_ASSETS", os.path.join(ROOT, "..", "shared", "assets"))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=os.path.join(assets, "models", "yolox_nano.onnx"), help="the float YOLOX-Nano")
    parser.add_argument("--calibration", default=os.path.join(assets, "images"), help="folder of calibration images")
    parser.add_argument("--out", default=os.path.join(INT8_DIR, "yolox_nano_int8.onnx"), help="where the int8 model goes")
    parser.add_argument("--method", choices=["minmax", "entropy", "percentile"], default="minmax", help="calibration method")
    parser.add_argument("--max-tiles", type=int, default=256, help="calibration tiles at most (spread over all)")
    parser.add_argument("--ops", choices=["conv", "all"], default="conv", help="quantise convolutions only, or every supported operator")
    parser.add_argument("--format", choices=["qdq", "qoperator"], default="qdq", help="QDQ pairs or QLinear operators")
    parser.add_argument("--quantize-head", action="store_true", help="quantise the stem and the head's predictions too")
    parser.add_argument("--activations", choices=["uint8", "int8"], default="uint8", help="activation type")
    parser.add_argument("--per-tensor", action="store_true", help="one weight scale per tensor instead of per output channel")
    parser.add_argument("--reduce-range", action="store_true", help="7-bit weights (avoids saturation of u8s8 kernels without VNNI)")
    args = parser.parse_args()
    if not os.path.isfile(args.model):
        raise SystemExit(f"{args.model} not found: set TESSERA_ASSETS or pass --model")

    model = baseline.Model(FLOAT_MANIFEST, model_path=args.model)
    started = time.perf_counter()
    paths, tensors = calibration_tiles(model, args.calibration, args.max_tiles)
    print(f"calibration: {len(tensors)} tiles from {len(paths)} images in {args.calibration}", file=sys.stderr)

    method = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[args.method]
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        # Per-channel scales need opset 13 (DequantizeLinear's `axis`); the official export is
        # older. Then shape inference and graph clean-up, as ONNX Runtime recommends.
        source = onnx.load(args.model)
        opset = next((o.version for o in source.opset_import if o.domain in ("", "ai.onnx")), 0)
        upgraded = os.path.join(scratch, "opset13.onnx")
        if opset < 13:
            source = onnx.version_converter.convert_version(source, 13)
        onnx.save(source, upgraded)
        prepared = os.path.join(scratch, "prepared.onnx")
        quant_pre_process(upgraded, prepared, skip_symbolic_shape=True)
        excluded = [] if args.quantize_head else float_nodes(onnx.load(prepared))
        print(f"kept in float: {len(excluded)} nodes", file=sys.stderr)
        quantize_static(
            prepared,
            args.out,
            Tiles(model.input_name, tensors),
            quant_format=QuantFormat.QDQ if args.format == "qdq" else QuantFormat.QOperator,
            op_types_to_quantize=["Conv"] if args.ops == "conv" else None,
            per_channel=not args.per_tensor,
            activation_type=QuantType.QUInt8 if args.activations == "uint8" else QuantType.QInt8,
            reduce_range=args.reduce_range,
            weight_type=QuantType.QInt8,
            calibrate_method=method,
            nodes_to_exclude=excluded,
        )
    size = os.path.getsize(args.out)
    print(
        f"wrote {args.out} ({size / 1e6:.2f} MB, float {os.path.getsize(args.model) / 1e6:.2f} MB) "
        f"in {time.perf_counter() - started:.0f} s; check it with target/release/int8-bench",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
