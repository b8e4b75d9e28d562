#!/usr/bin/env python3
# Rerun: .tessera/venv/bin/python scripts/reference/embedding_reference.py   (from the repository root, after
#        `.tessera/venv/bin/pip install -r scripts/reference/requirements.txt`; assets from $TESSERA_ASSETS,
#        default ../shared/assets). Writes tests/golden/mobilenetv2_embedding.json.
"""Reference pooled embedding of MobileNetV2 (int8), computed with the onnx library and onnxruntime.

The same graph edit tessera makes when it loads a manifest with `output.embedding_from = "627"`: a
GlobalAveragePool over the last feature map `627` ([N, 1280, 7, 7]) then Flatten(axis=1), as a new graph output
`embedding` [N, 1280]. Made here with onnx.helper, run by onnxruntime's own Python package on a deterministic
input batch (no image decoding, so only the graph edit is compared). The script also checks, independently of
the edit, that the result is the mean of `627` computed by numpy (with `627` exposed as an output), and that the
logits of the edited model equal those of the original.

Input, item b of 2, NCHW [2, 3, 224, 224] float32, flat index i within the item:
    ((i * 7919 + b * 104729) % 1000) / 500 - 1        (computed in float32)
"""

import argparse
import hashlib
import json
import os

import numpy as np
import onnx
import onnxruntime
from onnx import TensorProto, helper

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
FEATURE_MAP = "627"
BATCH = 2
ITEM = 3 * 224 * 224


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def deterministic_input():
    items = []
    for b in range(BATCH):
        i = np.arange(ITEM, dtype=np.int64)
        pattern = ((i * 7919 + b * 104729) % 1000).astype(np.float32)
        items.append(pattern / np.float32(500.0) - np.float32(1.0))
    return np.stack(items).reshape(BATCH, 3, 224, 224).astype(np.float32)


def with_outputs(model, nodes, outputs):
    edited = onnx.ModelProto()
    edited.CopyFrom(model)
    edited.graph.node.extend(nodes)
    edited.graph.output.extend(outputs)
    return edited


def run(model, x):
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {session.get_inputs()[0].name: x})))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    assets = os.environ.get("TESSERA_ASSETS", os.path.join(ROOT, "..", "shared", "assets"))
    parser.add_argument("--model", default=os.path.join(assets, "models", "mobilenetv2-12-int8.onnx"))
    parser.add_argument("--out", default=os.path.join(ROOT, "tests", "golden", "mobilenetv2_embedding.json"))
    args = parser.parse_args()

    original = onnx.load(args.model)
    x = deterministic_input()

    pooled = with_outputs(
        original,
        [
            helper.make_node("GlobalAveragePool", [FEATURE_MAP], ["embedding/pooled"], name="embedding/GlobalAveragePool"),
            helper.make_node("Flatten", ["embedding/pooled"], ["embedding"], name="embedding/Flatten", axis=1),
        ],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, None)],
    )
    edited = run(pooled, x)
    embedding = edited["embedding"]
    assert embedding.shape == (BATCH, 1280), embedding.shape

    # Independent checks: the mean of the feature map itself, and unchanged logits.
    feature_map = run(with_outputs(original, [], [helper.make_tensor_value_info(FEATURE_MAP, TensorProto.FLOAT, None)]), x)
    mean = feature_map[FEATURE_MAP].astype(np.float64).mean(axis=(2, 3))
    assert np.allclose(mean, embedding, atol=1e-4), np.abs(mean - embedding).max()
    logits = run(original, x)["output"]
    assert np.array_equal(logits, edited["output"]), "the edit changed the logits"

    golden = {
        "model_sha256": sha256(args.model),
        "onnxruntime": onnxruntime.__version__,
        "onnx": onnx.__version__,
        "input": "((i * 7919 + b * 104729) % 1000) / 500 - 1, float32, NCHW [2, 3, 224, 224]",
        "feature_map": FEATURE_MAP,
        "embedding": [[float(v) for v in row] for row in embedding],
        "logits_top5": [[int(c) for c in np.argsort(-row)[:5]] for row in logits],
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(golden, f)
        f.write("\n")
    print(f"wrote {args.out}: embedding {embedding.shape}, |e| mean {np.abs(embedding).mean():.4f}")


if __name__ == "__main__":
    main()
