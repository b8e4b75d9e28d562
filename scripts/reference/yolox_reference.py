#!/usr/bin/env python3
# Rerun: .tessera/venv/bin/python scripts/reference/yolox_reference.py   (from the repository root, after
#        `.tessera/venv/bin/pip install -r scripts/reference/requirements.txt`; assets from $TESSERA_ASSETS,
#        default ../shared/assets). Writes tests/golden/yolox_nano_dog_full_frame.json.
"""Reference YOLOX-Nano detections on images/dog.jpg, computed independently of tessera.

Only onnxruntime, numpy and OpenCV are used; nothing here imports or calls tessera code. The steps
replicate the official YOLOX ONNX Runtime demo (demo/ONNXRuntime/onnx_inference.py with
yolox.data.data_augment.preproc and yolox.utils.demo_utils), exactly:

1. Read the image with cv2.imread (BGR, uint8). The whole frame is used (no tiling).
2. Letterbox into 416x416: r = min(416 / h, 416 / w); cv2.resize to (int(w * r), int(h * r)) with
   cv2.INTER_LINEAR; paste at the top-left of a 416x416 canvas filled with 114; HWC -> CHW; float32;
   raw 0..255 values, BGR, no mean/std normalisation.
3. Run the model (input "images" [1, 3, 416, 416]) on onnxruntime's CPUExecutionProvider.
4. Decode (demo_postprocess): rows are grid cells of strides 8, 16, 32 (52x52, 26x26, 13x13, row-major);
   cx, cy = (raw + grid) * stride; w, h = exp(raw) * stride; boxes to x1y1x2y2; divide by r to get
   image pixels.
5. Scores: score[class] = objectness * class_score (the model already applies the sigmoids).
6. NMS, class-aware (this script's default, matching tessera's default merge; pass --class-agnostic
   for the demo's own default, multiclass_nms(class_agnostic=True)): for every class, candidates with
   score > 0.1 (the demo's score_thr), greedy NMS with IoU threshold 0.45 using the demo's legacy
   "+1 pixel" box areas (area = (x2 - x1 + 1) * (y2 - y1 + 1)). Class-aware NMS considers every class
   score of every box, so one box can survive under two classes.
7. Boxes are clipped to the image ([0, width] x [0, height]) (the demo does not clip; tessera does),
   rounded to 0.01 px; scores rounded to 1e-5. Output sorted by score descending.
"""

import argparse
import hashlib
import json
import os
import sys

import cv2
import numpy as np
import onnxruntime

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
INPUT_SIZE = (416, 416)  # (height, width)
NMS_THR = 0.45
SCORE_THR = 0.1


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def preproc(img, input_size):
    padded = np.ones((input_size[0], input_size[1], 3), dtype=np.uint8) * 114
    r = min(input_size[0] / img.shape[0], input_size[1] / img.shape[1])
    resized = cv2.resize(
        img, (int(img.shape[1] * r), int(img.shape[0] * r)), interpolation=cv2.INTER_LINEAR
    ).astype(np.uint8)
    padded[: int(img.shape[0] * r), : int(img.shape[1] * r)] = resized
    return np.ascontiguousarray(padded.transpose(2, 0, 1), dtype=np.float32), r


def decode(outputs, input_size):
    grids, strides_ = [], []
    for stride in (8, 16, 32):
        hsize, wsize = input_size[0] // stride, input_size[1] // stride
        xv, yv = np.meshgrid(np.arange(wsize), np.arange(hsize))
        grid = np.stack((xv, yv), 2).reshape(1, -1, 2)
        grids.append(grid)
        strides_.append(np.full((*grid.shape[:2], 1), stride))
    grids = np.concatenate(grids, 1)
    strides_ = np.concatenate(strides_, 1)
    outputs = outputs.copy()
    outputs[..., :2] = (outputs[..., :2] + grids) * strides_
    outputs[..., 2:4] = np.exp(outputs[..., 2:4]) * strides_
    return outputs


def nms(boxes, scores, thr):
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = scores.argsort()[::-1]
    keep = []
    while order.size > 0:
        i = order[0]
        keep.append(i)
        xx1 = np.maximum(x1[i], x1[order[1:]])
        yy1 = np.maximum(y1[i], y1[order[1:]])
        xx2 = np.minimum(x2[i], x2[order[1:]])
        yy2 = np.minimum(y2[i], y2[order[1:]])
        inter = np.maximum(0.0, xx2 - xx1 + 1) * np.maximum(0.0, yy2 - yy1 + 1)
        ovr = inter / (areas[i] + areas[order[1:]] - inter)
        order = order[np.where(ovr <= thr)[0] + 1]
    return keep


def nms_class_aware(boxes, scores):
    dets = []
    for c in range(scores.shape[1]):
        s = scores[:, c]
        mask = s > SCORE_THR
        if mask.any():
            b, s = boxes[mask], s[mask]
            for i in nms(b, s, NMS_THR):
                dets.append((b[i], float(s[i]), c))
    return dets


def nms_class_agnostic(boxes, scores):
    cls = scores.argmax(1)
    s = scores[np.arange(len(cls)), cls]
    mask = s > SCORE_THR
    b, s, cls = boxes[mask], s[mask], cls[mask]
    return [(b[i], float(s[i]), int(cls[i])) for i in nms(b, s, NMS_THR)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    assets = os.environ.get("TESSERA_ASSETS", os.path.join(ROOT, "..", "shared", "assets"))
    parser.add_argument("--model", default=os.path.join(assets, "models", "yolox_nano.onnx"))
    parser.add_argument("--image", default=os.path.join(assets, "images", "dog.jpg"))
    parser.add_argument("--labels", default=os.path.join(ROOT, "models", "manifests", "yolox-nano", "coco.txt"))
    parser.add_argument("--class-agnostic", action="store_true", help="the demo's default NMS mode")
    parser.add_argument("--out", default=os.path.join(ROOT, "tests", "golden", "yolox_nano_dog_full_frame.json"))
    args = parser.parse_args()

    labels = [l.strip() for l in open(args.labels, encoding="utf-8") if l.strip()]
    img = cv2.imread(args.image)
    if img is None:
        sys.exit(f"cannot read {args.image}")
    height, width = img.shape[:2]
    tensor, r = preproc(img, INPUT_SIZE)

    session = onnxruntime.InferenceSession(args.model, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    output = session.run(None, {name: tensor[None, :, :, :]})[0]
    pred = decode(output, INPUT_SIZE)[0]

    boxes = pred[:, :4]
    scores = pred[:, 4:5] * pred[:, 5:]
    xyxy = np.empty_like(boxes)
    xyxy[:, 0] = boxes[:, 0] - boxes[:, 2] / 2.0
    xyxy[:, 1] = boxes[:, 1] - boxes[:, 3] / 2.0
    xyxy[:, 2] = boxes[:, 0] + boxes[:, 2] / 2.0
    xyxy[:, 3] = boxes[:, 1] + boxes[:, 3] / 2.0
    xyxy /= r

    dets = nms_class_agnostic(xyxy, scores) if args.class_agnostic else nms_class_aware(xyxy, scores)
    dets.sort(key=lambda d: -d[1])
    detections = []
    for box, score, c in dets:
        x1, y1, x2, y2 = (float(v) for v in box)
        x1, x2 = min(max(x1, 0.0), width), min(max(x2, 0.0), width)
        y1, y2 = min(max(y1, 0.0), height), min(max(y2, 0.0), height)
        detections.append(
            {
                "class_id": int(c),
                "label": labels[c],
                "score": round(score, 5),
                "bbox": [round(x1, 2), round(y1, 2), round(x2, 2), round(y2, 2)],
            }
        )

    doc = {
        "generator": "scripts/reference/yolox_reference.py",
        "onnxruntime": onnxruntime.__version__,
        "opencv": cv2.__version__,
        "model": os.path.basename(args.model),
        "model_sha256": sha256(args.model),
        "image": os.path.basename(args.image),
        "image_sha256": sha256(args.image),
        "image_size": [width, height],
        "input_size": [INPUT_SIZE[1], INPUT_SIZE[0]],
        "letterbox_ratio": r,
        "preprocess": "cv2.imread BGR; letterbox top-left, cv2.resize INTER_LINEAR, pad 114; raw 0..255, no mean/std",
        "score": "objectness * class_score",
        "score_threshold": SCORE_THR,
        "nms": {"iou_threshold": NMS_THR, "class_agnostic": bool(args.class_agnostic), "area": "legacy +1 px"},
        "bbox": "x1, y1, x2, y2 in image pixels, clipped to the image",
        "detections": detections,
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
    print(f"wrote {args.out}")
    for d in detections:
        if d["score"] >= 0.3:
            print(f"  {d['label']:>12} ({d['class_id']:2}) {d['score']:.4f} {d['bbox']}")


if __name__ == "__main__":
    main()
