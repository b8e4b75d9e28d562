#!/usr/bin/env python3
# Rerun: .tessera/venv/bin/python scripts/reference/mobilenet_reference.py   (from the repository root, after
#        `.tessera/venv/bin/pip install -r scripts/reference/requirements.txt`; assets from $TESSERA_ASSETS,
#        default ../shared/assets). Writes tests/golden/mobilenetv2_dog.json.
"""Reference MobileNetV2 (ONNX Model Zoo, int8 QDQ) top-5 on images/dog.jpg, computed independently of tessera.

Only onnxruntime, numpy and Pillow are used. Preprocessing, exactly, torchvision's convention (the model was
trained with it, and tessera's manifest follows it): PIL decode (RGB, uint8) -> PIL resize to 224x224 (stretch,
aspect ratio not kept) with bilinear filtering and antialiasing (Image.BILINEAR) -> float32 / 255 ->
(x - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225] per RGB channel -> NCHW [1, 3, 224, 224].
Output "output" [1, 1000] holds logits; the golden lists the top-5 logits and their softmax probabilities.

This int8 (QOperator) model is chaotic in its input: +-1 on the decoded pixels (what two JPEG decoders or
two resizers differ by) moves these probabilities by up to 0.2 and can change the top-1, while the top-5
classes stay the same set. tessera's test therefore holds its top-5 classes, as a set, against this golden
(and its top-1 against malamute); the YOLOX (float) golden is held to boxes and scores.
"""

import argparse
import hashlib
import json
import os
import sys

import numpy as np
import onnxruntime
import PIL
from PIL import Image

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    assets = os.environ.get("TESSERA_ASSETS", os.path.join(ROOT, "..", "shared", "assets"))
    parser.add_argument("--model", default=os.path.join(assets, "models", "mobilenetv2-12-int8.onnx"))
    parser.add_argument("--image", default=os.path.join(assets, "images", "dog.jpg"))
    parser.add_argument("--labels", default=os.path.join(ROOT, "models", "manifests", "mobilenetv2", "imagenet.txt"))
    parser.add_argument("--out", default=os.path.join(ROOT, "tests", "golden", "mobilenetv2_dog.json"))
    args = parser.parse_args()

    labels = [l.rstrip("\n") for l in open(args.labels, encoding="utf-8")]
    try:
        img = Image.open(args.image).convert("RGB")
    except OSError as error:
        sys.exit(f"cannot read {args.image}: {error}")
    resized = np.asarray(img.resize((224, 224), Image.BILINEAR))
    x = (resized.astype(np.float32) / 255.0 - MEAN) / STD
    x = np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32)

    session = onnxruntime.InferenceSession(args.model, providers=["CPUExecutionProvider"])
    logits = session.run(None, {session.get_inputs()[0].name: x})[0][0].astype(np.float64)
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    top = np.argsort(-logits, kind="stable")[:5]

    doc = {
        "generator": "scripts/reference/mobilenet_reference.py",
        "onnxruntime": onnxruntime.__version__,
        "pillow": PIL.__version__,
        "model": os.path.basename(args.model),
        "model_sha256": sha256(args.model),
        "image": os.path.basename(args.image),
        "image_sha256": sha256(args.image),
        "preprocess": "PIL RGB; PIL resize 224x224 BILINEAR with antialiasing (stretch); /255; ImageNet mean/std; NCHW",
        "top5": [
            {"class_id": int(i), "label": labels[i], "logit": round(float(logits[i]), 4), "probability": round(float(probs[i]), 5)}
            for i in top
        ],
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
    print(f"wrote {args.out}")
    for t in doc["top5"]:
        print(f"  {t['class_id']:4} {t['label']:>20} logit {t['logit']:.3f} p {t['probability']:.4f}")


if __name__ == "__main__":
    main()
