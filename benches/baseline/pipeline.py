#!/usr/bin/env python3
"""Python baseline: the plain Kafka -> decode -> SAHI tiles -> ONNX Runtime -> merge -> Kafka loop.

This is the pipeline a competent user would write without tessera, used as the baseline tessera is
benchmarked against. It does the same work as tessera's default configuration, with the obvious
tools: confluent-kafka, Pillow, numpy and onnxruntime with default session options, in one process
and one loop (consume a record, process it, produce its result, repeat).

The steps follow tessera exactly (sources in parentheses):
  decode      Pillow, EXIF orientation applied, 8-bit RGB (operators/src/decode.rs)
  tiles       SAHI grid: tile = model input size, overlap 0.2, edge tiles shifted inward, then one
              full-frame tile (operators/src/tiling.rs)
  preprocess  crop + bilinear resize (letterbox at the top-left / centred, or stretch), pad value,
              channel order, (v * scale - mean) / std, NCHW float32 (operators/src/preprocess.rs)
  inference   one run per tile for fixed-batch models (YOLOX-Nano: [1, 3, 416, 416]); batches of
              --batch tiles for dynamic-batch models (MobileNetV2)
  decode      YOLOX grid/stride decode, best class, objectness * class score >= threshold, then
              class-aware NMS (IoU > nms_iou) per tile (operators/src/adapters/yolox.rs,
              models/src/session.rs); classifier: softmax + top-k per tile, then the best score per
              class over the tiles, top-k (operators/src/adapters/classifier.rs,
              models/src/recognizer.rs)
  merge       boxes mapped to frame pixels, clamped, empty ones dropped, then greedy NMM with IoS
              (intersection over the smaller box) > 0.5, per class (operators/src/merge.rs)

Kafka mode prints ONE JSON summary line on stdout when done; --image mode prints one result; --lean
mode (the leanest loop a Python user could write: the JPEG files already in memory, decode and
recognize one after the other, no Kafka) prints one JSON summary line. Everything else (progress,
warnings) goes to stderr.
"""

import argparse
import io
import json
import math
import os
import resource
import sys
import time
import tomllib

import numpy as np
import onnxruntime
from PIL import Image, ImageOps

HEADER_FRAME_ID = "tessera-frame-id"
YOLOX_STRIDES = (8, 16, 32)


def log(*args):
    print(*args, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------------
# Model manifest
# --------------------------------------------------------------------------------------------------


class Model:
    """A tessera model manifest (model.toml), its labels and its ONNX Runtime session."""

    def __init__(self, manifest_path, model_path=None, labels_path=None, batch=8):
        with open(manifest_path, "rb") as f:
            m = tomllib.load(f)
        base = os.path.dirname(os.path.abspath(manifest_path))
        self.name = m["name"]
        self.version = m.get("version", "")
        inp, out, thr = m["input"], m["output"], m.get("thresholds", {})
        if inp.get("layout", "nchw") != "nchw":
            raise SystemExit(f"unsupported layout {inp['layout']!r}")
        self.input_name = inp["name"]
        self.width, self.height = int(inp["width"]), int(inp["height"])
        self.channel_order = inp["channel_order"]
        self.resize = inp["resize"]
        self.pad_value = int(inp.get("pad_value", 0))
        # value = (pixel * scale - mean[c]) / std[c] in float32, mean/std in the model's channel order.
        self.scale = np.float32(inp.get("scale", 1.0))
        self.mean = np.array(inp.get("mean", [0.0, 0.0, 0.0]), dtype=np.float32)
        self.std = np.array(inp.get("std", [1.0, 1.0, 1.0]), dtype=np.float32)
        self.pad = (np.float32(self.pad_value) * self.scale - self.mean) / self.std
        self.output_name = out["name"]
        self.adapter = out["adapter"]
        if self.adapter not in ("yolox", "classifier"):
            raise SystemExit(f"adapter {self.adapter!r} is not implemented in the baseline")
        self.softmax = bool(out.get("softmax", False))
        # tessera's default for classifiers: one whole-frame pass (`aggregate = "full_frame"`).
        self.aggregate = out.get("aggregate", "full_frame") if self.adapter == "classifier" else None
        if self.aggregate not in (None, "full_frame", "max"):
            raise SystemExit(f"aggregate {self.aggregate!r} is not implemented in the baseline")
        self.score_threshold = float(thr.get("score", 0.25))
        self.nms_iou = thr.get("nms_iou")
        self.top_k = int(thr.get("top_k", 5))

        if labels_path is None:
            labels_path = os.path.join(base, m["labels"]["file"])
        with open(labels_path, encoding="utf-8") as f:
            labels = [line.rstrip("\r") for line in f.read().split("\n")]
        while labels and not labels[-1].strip():
            labels.pop()
        self.labels = labels

        if model_path is None:
            model_path = find_model_file(base, m["file"])
        self.model_path = model_path
        # Default session options, default (CPU) provider: what a user gets out of the box.
        self.session = onnxruntime.InferenceSession(model_path)
        shape = next(i.shape for i in self.session.get_inputs() if i.name == self.input_name)
        fixed = isinstance(shape[0], int) and shape[0] > 0
        self.fixed_batch = shape[0] if fixed else None
        self.batch = shape[0] if fixed else max(1, batch)
        if self.adapter == "yolox":
            self.grid, self.strides = yolox_grids(self.width, self.height)

    def label(self, class_id):
        return self.labels[class_id] if 0 <= class_id < len(self.labels) else str(class_id)


def find_model_file(manifest_dir, file_name):
    """The ONNX file beside the manifest, else in $TESSERA_ASSETS/models (as tessera looks it up)."""
    here = os.path.join(manifest_dir, file_name)
    if os.path.exists(here):
        return here
    root = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
    assets = os.environ.get("TESSERA_ASSETS", os.path.join(root, "..", "shared", "assets"))
    there = os.path.join(assets, "models", file_name)
    if os.path.exists(there):
        return there
    raise SystemExit(f"ONNX file {file_name} not found beside the manifest or in {assets}/models; pass --model")


# --------------------------------------------------------------------------------------------------
# Decode, tiles, preprocessing
# --------------------------------------------------------------------------------------------------


def decode_image(data):
    """JPEG/PNG/... bytes -> 8-bit RGB Pillow image, EXIF orientation applied."""
    image = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    return image.convert("RGB")


def window_starts(length, tile, overlap):
    """Start offsets of windows of `tile` px along `length` px; the last one ends at the edge."""
    if tile >= length:
        return [0]
    step = max(1, math.floor(np.float32(tile) * (np.float32(1.0) - np.float32(overlap))))
    last = length - tile
    starts = list(range(0, last, step))
    starts.append(last)
    return starts


def tile_rects(width, height, tile_w, tile_h, overlap=0.2, full_frame=True, enabled=True):
    """SAHI tiles of a frame as (x, y, w, h): row-major grid, then the full frame."""
    if width == 0 or height == 0:
        return []
    full = (0, 0, width, height)
    if not enabled:
        return [full]
    tw, th = min(tile_w, width), min(tile_h, height)
    rects = [
        (x, y, tw, th)
        for y in window_starts(height, tile_h, overlap)
        for x in window_starts(width, tile_w, overlap)
    ]
    if full_frame and not (len(rects) == 1 and rects[0] == full):
        rects.append(full)
    return rects


def placement(model, w, h):
    """(resized width, resized height, pad x, pad y) of a w x h tile in the model input."""
    if model.resize == "stretch":
        return model.width, model.height, 0, 0
    r = min(model.width / w, model.height / h)
    # Rounded half away from zero, like Rust's f64::round.
    rw = min(max(int(math.floor(w * r + 0.5)), 1), model.width)
    rh = min(max(int(math.floor(h * r + 0.5)), 1), model.height)
    if model.resize == "letterbox_center":
        return rw, rh, (model.width - rw) // 2, (model.height - rh) // 2
    return rw, rh, 0, 0


def preprocess(model, image, rect, out):
    """Crops `rect` out of `image`, fits it into the model input and writes the normalised CHW
    tensor into `out` ([3, H, W] float32). Returns the (origin, scale, pad) transform back."""
    x, y, w, h = rect
    rw, rh, px, py = placement(model, w, h)
    resized = image.resize((rw, rh), Image.BILINEAR, box=(x, y, x + w, y + h))
    pixels = np.asarray(resized, dtype=np.float32)  # H x W x RGB
    if model.channel_order == "bgr":
        pixels = pixels[:, :, ::-1]
    out[:] = model.pad[:, None, None]
    out[:, py : py + rh, px : px + rw] = ((pixels * model.scale - model.mean) / model.std).transpose(2, 0, 1)
    return (x, y, rw / w, rh / h, px, py)


# --------------------------------------------------------------------------------------------------
# Output decoding (same math as scripts/reference/yolox_reference.py and mobilenet_reference.py;
# not imported from them because they import OpenCV at module level, which the baseline does not use)
# --------------------------------------------------------------------------------------------------


def yolox_grids(width, height):
    grids, strides = [], []
    for stride in YOLOX_STRIDES:
        xv, yv = np.meshgrid(np.arange(width // stride), np.arange(height // stride))
        grids.append(np.stack((xv, yv), 2).reshape(-1, 2))
        strides.append(np.full((grids[-1].shape[0], 1), stride))
    return np.concatenate(grids).astype(np.float32), np.concatenate(strides).astype(np.float32)


def decode_yolox(model, output):
    """One image's [rows, 5 + classes] YOLOX output -> (boxes x1y1x2y2, scores, classes) in
    model-input pixels: best class per cell, kept when objectness * class score >= threshold."""
    thr = model.score_threshold
    idx = np.nonzero(output[:, 4] >= thr)[0]
    cand = output[idx]
    classes = cand[:, 5:].argmax(1)
    scores = cand[:, 4] * cand[np.arange(len(cand)), 5 + classes]
    ok = scores >= thr
    idx, cand, classes, scores = idx[ok], cand[ok], classes[ok], scores[ok]
    stride = model.strides[idx]
    cxy = (cand[:, 0:2] + model.grid[idx]) * stride
    wh = np.exp(cand[:, 2:4]) * stride
    boxes = np.concatenate((cxy - wh / 2, cxy + wh / 2), 1)
    return boxes, scores, classes


def detection_order(boxes, scores, classes):
    """Indices in tessera's total order: score descending, then class, x1, y1, x2, y2 ascending."""
    return np.lexsort((boxes[:, 3], boxes[:, 2], boxes[:, 1], boxes[:, 0], classes, -scores))


def areas(boxes):
    return np.maximum(boxes[:, 2] - boxes[:, 0], 0) * np.maximum(boxes[:, 3] - boxes[:, 1], 0)


def intersections(box, boxes):
    w = np.maximum(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0)
    h = np.maximum(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0)
    return w * h


def greedy_merge(boxes, scores, classes, metric, threshold, merge_boxes):
    """Class-aware NMS (merge_boxes=False) or SAHI greedy NMM (merge_boxes=True: the keeper absorbs
    its matches into a union box). Matches are measured against the keeper's original box;
    `metric` is "iou" or "ios"; overlap must exceed `threshold`. Result in detection order."""
    order = detection_order(boxes, scores, classes)
    boxes, scores, classes = boxes[order], scores[order], classes[order]
    area = areas(boxes)
    consumed = np.zeros(len(boxes), dtype=bool)
    out_boxes, out_idx = [], []
    for i in range(len(boxes)):
        if consumed[i]:
            continue
        consumed[i] = True
        rest = np.nonzero(~consumed & (classes == classes[i]))[0]
        rest = rest[rest > i]
        box = boxes[i].copy()
        if len(rest):
            inter = intersections(boxes[i], boxes[rest])
            if metric == "ios":
                den = np.minimum(area[i], area[rest])
            else:
                den = area[i] + area[rest] - inter
            with np.errstate(divide="ignore", invalid="ignore"):
                overlap = np.where(den > 0, np.clip(inter / den, 0, 1), 0)
            matched = rest[overlap > threshold]
            consumed[matched] = True
            if merge_boxes and len(matched):
                box[:2] = np.minimum(box[:2], boxes[matched, :2].min(0))
                box[2:] = np.maximum(box[2:], boxes[matched, 2:].max(0))
        out_boxes.append(box)
        out_idx.append(i)
    if not out_idx:
        return boxes[:0], scores[:0], classes[:0]
    boxes, scores, classes = np.array(out_boxes), scores[out_idx], classes[out_idx]
    order = detection_order(boxes, scores, classes)
    return boxes[order], scores[order], classes[order]


def top_k(logits, k, softmax):
    """The k best (class, score) pairs of one image's logits, best first (ties: lower class)."""
    logits = logits.astype(np.float64)
    if softmax:
        e = np.exp(logits - logits.max())
        scores = e / e.sum()
    else:
        scores = logits
    best = np.lexsort((np.arange(len(scores)), -scores))[:k]
    return [(int(c), float(scores[c])) for c in best]


# --------------------------------------------------------------------------------------------------
# One frame
# --------------------------------------------------------------------------------------------------


class Recognizer:
    def __init__(self, model, overlap=0.2, tiling=True):
        self.model = model
        self.overlap = overlap
        self.tiling = tiling
        self.buffer = np.empty((model.batch, 3, model.height, model.width), dtype=np.float32)

    def recognize(self, image):
        """-> (tile count, detections, classifications) for one RGB frame."""
        m = self.model
        width, height = image.size
        rects = tile_rects(width, height, m.width, m.height, self.overlap, True, self.tiling)
        boxes, scores, classes = [], [], []
        best = {}
        for start in range(0, len(rects), m.batch):
            group = rects[start : start + m.batch]
            n = m.fixed_batch or len(group)
            if m.fixed_batch:
                self.buffer[len(group) :] = 0.0
            transforms = [preprocess(m, image, r, self.buffer[i]) for i, r in enumerate(group)]
            output = m.session.run([m.output_name], {m.input_name: self.buffer[:n]})[0]
            for item, t in zip(output, transforms):
                if m.adapter == "yolox":
                    b, s, c = decode_yolox(m, item.reshape(-1, 5 + len(m.labels)))
                    if m.nms_iou is not None and len(b) > 1:
                        b, s, c = greedy_merge(b, s, c, "iou", float(m.nms_iou), merge_boxes=False)
                    # Model-input pixels -> frame pixels, clamped to the frame.
                    ox, oy, sx, sy, px, py = t
                    b = b.astype(np.float32)
                    b[:, [0, 2]] = np.clip((b[:, [0, 2]] - px) / np.float32(sx) + ox, 0, width)
                    b[:, [1, 3]] = np.clip((b[:, [1, 3]] - py) / np.float32(sy) + oy, 0, height)
                    boxes.append(b)
                    scores.append(s)
                    classes.append(c)
                else:
                    for class_id, score in top_k(item.reshape(-1), m.top_k, m.softmax):
                        best[class_id] = max(best.get(class_id, score), score)
        detections = []
        if boxes:
            b, s, c = np.concatenate(boxes), np.concatenate(scores), np.concatenate(classes)
            keep = areas(b) > 0
            b, s, c = greedy_merge(b[keep], s[keep], c[keep], "ios", 0.5, merge_boxes=True)
            for box, score, class_id in zip(b.tolist(), s.tolist(), c.tolist()):
                detections.append(
                    {
                        "label": m.label(class_id),
                        "class_id": class_id,
                        "score": score,
                        "bbox": {"x1": box[0], "y1": box[1], "x2": box[2], "y2": box[3]},
                    }
                )
        ranked = sorted(best.items(), key=lambda kv: (-kv[1], kv[0]))[: m.top_k]
        classifications = [{"label": m.label(c), "class_id": c, "score": s} for c, s in ranked]
        return len(rects), detections, classifications


def result_doc(camera, frame_id, width, height, tile_count, detections, classifications):
    return {
        "camera": camera,
        "frame_id": frame_id,
        "image": {"width": width, "height": height},
        "tile_count": tile_count,
        "detections": detections,
        "classifications": classifications,
    }


# --------------------------------------------------------------------------------------------------
# Modes
# --------------------------------------------------------------------------------------------------


def percentile(values, q):
    return float(np.percentile(np.array(values, dtype=np.float64), q)) if values else None


def run_image(args, recognizer):
    with open(args.image, "rb") as f:
        data = f.read()
    timings, cpu = [], []
    for _ in range(max(1, args.repeat)):
        started, cpu_started = time.perf_counter(), time.process_time()
        image = decode_image(data)
        tiles, detections, classifications = recognizer.recognize(image)
        timings.append((time.perf_counter() - started) * 1000.0)
        cpu.append((time.process_time() - cpu_started) * 1000.0)
    doc = result_doc(
        os.path.basename(args.image), args.image, image.width, image.height, tiles, detections, classifications
    )
    print(json.dumps(doc))
    log(
        f"{args.image}: {image.width}x{image.height}, {tiles} tiles, {len(detections)} detections; "
        f"wall ms per frame: first {timings[0]:.1f}"
        + (f", median of the rest {percentile(timings[1:], 50):.1f} (n={len(timings) - 1})" if len(timings) > 1 else "")
        + f"; CPU ms per frame (all threads): median {percentile(cpu[1:] or cpu, 50):.1f}"
    )


def run_lean(args, recognizer):
    """Frames from files already in memory, decoded and recognized in a plain loop: the upper bound
    of what a Python user gets from the same model, tiles and onnxruntime defaults."""
    paths = sorted(
        os.path.join(args.lean, name)
        for name in os.listdir(args.lean)
        if name.lower().endswith((".jpg", ".jpeg", ".png"))
    )
    if not paths:
        raise SystemExit(f"no images in {args.lean}")
    frames = []
    for path in paths:
        with open(path, "rb") as f:
            frames.append(f.read())
    total = max(1, args.frames)
    # One untimed warm-up frame (session initialisation, allocator growth).
    recognizer.recognize(decode_image(frames[0]))
    started, cpu_started = time.perf_counter(), time.process_time()
    tiles = detections = 0
    for i in range(total):
        count, found, _ = recognizer.recognize(decode_image(frames[i % len(frames)]))
        tiles += count
        detections += len(found)
    seconds = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    print(
        json.dumps(
            {
                "mode": "lean",
                "frames": total,
                "tiles": tiles,
                "detections": detections,
                "seconds": seconds,
                "frames_per_s": total / seconds,
                "cpu_percent": 100.0 * cpu / seconds,
            }
        )
    )


def run_kafka(args, recognizer):
    from confluent_kafka import Consumer, KafkaError, Producer

    consumer = Consumer(
        {
            "bootstrap.servers": args.brokers,
            "group.id": args.group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": True,
        }
    )
    producer = Producer({"bootstrap.servers": args.brokers})
    consumer.subscribe([args.input_topic])

    stats = {"delivered": 0, "failed": 0, "last_delivery": None}
    latencies_ms = []

    def on_delivery(kafka_ts_ms):
        def callback(err, _msg):
            now = time.time()
            if err is not None:
                stats["failed"] += 1
                log(f"result delivery failed: {err}")
                return
            stats["delivered"] += 1
            stats["last_delivery"] = now
            if kafka_ts_ms is not None:
                latencies_ms.append(now * 1000.0 - kafka_ts_ms)

        return callback

    frames = tiles = errors = 0
    first_consumed = None
    last_record = time.monotonic()
    log(f"consuming {args.input_topic} on {args.brokers} (group {args.group}), {args.frames} frames")
    try:
        while frames < args.frames:
            msg = consumer.poll(1.0)
            producer.poll(0)
            if msg is None:
                if time.monotonic() - last_record > args.idle_timeout:
                    log(f"no record for {args.idle_timeout} s; stopping after {frames} frames")
                    break
                continue
            if msg.error():
                if msg.error().code() != KafkaError._PARTITION_EOF:
                    log(f"consumer error: {msg.error()}")
                continue
            last_record = time.monotonic()
            if first_consumed is None:
                first_consumed = time.time()
            frames += 1
            ts_type, ts = msg.timestamp()
            kafka_ts_ms = ts if ts_type != 0 and ts >= 0 else None  # 0: TIMESTAMP_NOT_AVAILABLE
            headers = dict(msg.headers() or [])
            frame_id = headers.get(HEADER_FRAME_ID)
            if frame_id is not None:
                frame_id = frame_id.decode("utf-8", "replace")
            else:
                frame_id = f"{msg.topic()}/{msg.partition()}/{msg.offset()}"
            camera = (msg.key() or b"").decode("utf-8", "replace")
            try:
                image = decode_image(msg.value() or b"")
            except Exception as e:  # a corrupt frame is skipped, like tessera's dead-letter path
                errors += 1
                log(f"frame {frame_id}: cannot decode: {e}")
                continue
            count, detections, classifications = recognizer.recognize(image)
            tiles += count
            doc = result_doc(camera, frame_id, image.width, image.height, count, detections, classifications)
            while True:
                try:
                    producer.produce(
                        args.results_topic,
                        key=msg.key(),
                        value=json.dumps(doc).encode(),
                        on_delivery=on_delivery(kafka_ts_ms),
                    )
                    break
                except BufferError:  # local queue full: serve delivery reports, then retry
                    producer.poll(0.1)
            producer.poll(0)
            if frames % 50 == 0:
                log(f"{frames} frames, {tiles} tiles")
        remaining = producer.flush(30)
        if remaining:
            log(f"{remaining} results still undelivered after flush")
    finally:
        consumer.close()

    end = stats["last_delivery"] or time.time()
    seconds = (end - first_consumed) if first_consumed is not None else 0.0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    summary = {
        "frames": frames,
        "tiles": tiles,
        "seconds": round(seconds, 4),
        # 0.0 rather than null when nothing was timed: benches/src/baseline.rs parses these as f64.
        "frames_per_s": round(frames / seconds, 3) if seconds > 0 else 0.0,
        "tiles_per_s": round(tiles / seconds, 3) if seconds > 0 else 0.0,
        "latency_ms": {
            "p50": percentile(latencies_ms, 50),
            "p95": percentile(latencies_ms, 95),
            "p99": percentile(latencies_ms, 99),
        },
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 3),
        "peak_rss_mb": round(usage.ru_maxrss / 1024.0, 1),  # ru_maxrss is in KiB on Linux
        "delivered": stats["delivered"],
        "delivery_failures": stats["failed"],
        "decode_errors": errors,
        "model": recognizer.model.name,
    }
    print(json.dumps(summary), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--brokers", help="Kafka bootstrap servers (host:port,...)")
    parser.add_argument("--input-topic", help="topic of JPEG frames (key = camera id)")
    parser.add_argument("--results-topic", help="topic the JSON results are produced to")
    parser.add_argument("--group", default="tessera-baseline", help="consumer group id")
    parser.add_argument("--model", help="ONNX file (default: the manifest's file, beside it or in $TESSERA_ASSETS/models)")
    parser.add_argument("--manifest", required=True, help="tessera model manifest (model.toml)")
    parser.add_argument("--labels", help="label file (default: the manifest's [labels] file)")
    parser.add_argument("--frames", type=int, default=1000, help="stop after this many input records")
    parser.add_argument("--batch", type=int, default=8, help="tiles per run for dynamic-batch models")
    parser.add_argument("--idle-timeout", type=float, default=60.0, help="stop after this many seconds without a record")
    parser.add_argument("--overlap", type=float, default=0.2, help="tile overlap ratio (tessera default 0.2)")
    parser.add_argument("--no-tiling", action="store_true", help="full frame only (tessera's tiling.enabled = false)")
    parser.add_argument("--image", help="process this image file instead of Kafka and print its result")
    parser.add_argument("--repeat", type=int, default=1, help="--image mode: process the image this many times (timing)")
    parser.add_argument("--lean", metavar="DIR", help="the lean loop over the images of DIR (--frames of them, cycling), no Kafka")
    args = parser.parse_args()

    model = Model(args.manifest, args.model, args.labels, args.batch)
    tiling = not args.no_tiling and model.aggregate != "full_frame"
    recognizer = Recognizer(model, overlap=args.overlap, tiling=tiling)
    log(f"model {model.name} {model.version} ({model.model_path}), batch {model.batch}, onnxruntime {onnxruntime.__version__}")
    if args.image:
        run_image(args, recognizer)
        return
    if args.lean:
        run_lean(args, recognizer)
        return
    missing = [n for n in ("brokers", "input_topic", "results_topic") if not getattr(args, n)]
    if missing:
        parser.error("Kafka mode needs " + ", ".join("--" + n.replace("_", "-") for n in missing))
    run_kafka(args, recognizer)


if __name__ == "__main__":
    main()
