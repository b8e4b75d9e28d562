#!/usr/bin/env python3
"""End-to-end smoke test of pipeline.py against librdkafka's in-process mock cluster (no broker).

This process starts a mock cluster (`test.mock.num.brokers=1`), reads its bootstrap address from
the cluster metadata, publishes frames (key = camera id, value = JPEG, headers tessera-frame-id and
tessera-ts), runs pipeline.py against it as a subprocess, then reads the results topic back and
checks one result per frame with the right key, frame id and tile count. The mock cluster lives as
long as this process, so pipeline.py must finish before it exits.

  .tessera/baseline-venv/bin/python benches/baseline/smoke_mock_kafka.py [--frames 6] [--manifest ...]
"""

import argparse
import json
import os
import subprocess
import sys
import time

from confluent_kafka import Consumer, Producer

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
ASSETS = os.environ.get("TESSERA_ASSETS", os.path.join(ROOT, "..", "shared", "assets"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=6)
    parser.add_argument("--manifest", default=os.path.join(ROOT, "models", "manifests", "yolox-nano", "model.toml"))
    parser.add_argument(
        "--images",
        nargs="+",
        default=[os.path.join(ASSETS, "images", n) for n in ("dog.jpg", "small-vehicles1.jpeg")],
    )
    args = parser.parse_args()

    # The mock cluster lives inside this client; its metadata names the broker's host:port.
    mock = Producer({"test.mock.num.brokers": 1, "log_level": 3})
    broker = next(iter(mock.list_topics(timeout=10).brokers.values()))
    brokers = f"{broker.host}:{broker.port}"
    print(f"mock cluster at {brokers}", file=sys.stderr)

    topic, results = "frames", "results"
    payloads = [open(p, "rb").read() for p in args.images]
    producer = Producer({"bootstrap.servers": brokers})
    sent = {}
    for i in range(args.frames):
        camera = f"cam-{i % 2}"
        frame_id = f"{camera}-frame-{i}"
        image = i % len(payloads)
        producer.produce(
            topic,
            key=camera.encode(),
            value=payloads[image],
            headers=[("tessera-frame-id", frame_id.encode()), ("tessera-ts", str(int(time.time() * 1000)).encode())],
        )
        sent[frame_id] = (camera, os.path.basename(args.images[image]))
    assert producer.flush(10) == 0, "frames not delivered to the mock cluster"

    cmd = [
        sys.executable, os.path.join(HERE, "pipeline.py"),
        "--brokers", brokers, "--input-topic", topic, "--results-topic", results,
        "--group", "baseline-smoke", "--manifest", args.manifest,
        "--frames", str(args.frames), "--idle-timeout", "20",
    ]  # fmt: skip
    run = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, timeout=600)
    if run.returncode != 0:
        sys.exit(f"pipeline.py exited with {run.returncode}")
    lines = [l for l in run.stdout.splitlines() if l.strip()]
    assert len(lines) == 1, f"expected one summary line on stdout, got {lines}"
    summary = json.loads(lines[0])
    print(f"summary: {lines[0]}", file=sys.stderr)
    assert summary["frames"] == args.frames, summary

    consumer = Consumer(
        {"bootstrap.servers": brokers, "group.id": "baseline-smoke-check", "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([results])
    got = {}
    deadline = time.time() + 30
    while len(got) < args.frames and time.time() < deadline:
        msg = consumer.poll(1.0)
        if msg is None or msg.error():
            continue
        doc = json.loads(msg.value())
        got[doc["frame_id"]] = (msg.key().decode(), doc)
    consumer.close()

    assert set(got) == set(sent), f"results for {sorted(got)}, frames {sorted(sent)}"
    for frame_id, (key, doc) in sorted(got.items()):
        camera, image = sent[frame_id]
        assert key == camera and doc["camera"] == camera, (frame_id, key, doc["camera"])
        labels = ", ".join(f"{d['label']} {d['score']:.2f}" for d in doc["detections"][:4])
        print(
            f"  {frame_id:<16} key {key} {image:<22} {doc['tile_count']} tiles "
            f"{len(doc['detections']):>3} detections ({labels}...)",
            file=sys.stderr,
        )
    print(json.dumps({"ok": True, "frames": len(got), "summary": summary}))


if __name__ == "__main__":
    main()
