"""An outside Kafka client for tessera's tests: kafka-python (pure Python, no librdkafka), so
it shares no code with tessera.

  produce BROKERS TOPIC N   publishes N keyed records with headers and binary values, waits
                            for each acknowledgement, prints one JSON line per record
  consume BROKERS TOPIC N   reads N records from the beginning of every partition, prints
                            one JSON line per record

Each JSON line: topic, partition, offset, timestamp, key, headers and value (hex for bytes).
"""

import json
import sys

from kafka import KafkaConsumer, KafkaProducer


def line(topic, partition, offset, timestamp, key, headers, value):
    return json.dumps(
        {
            "topic": topic,
            "partition": partition,
            "offset": offset,
            "timestamp": timestamp,
            "key": None if key is None else key.hex(),
            "headers": [[k, None if v is None else v.hex()] for k, v in headers],
            "value": None if value is None else value.hex(),
        }
    )


def produce(brokers, topic, count):
    producer = KafkaProducer(bootstrap_servers=brokers, acks="all", linger_ms=0)
    for i in range(count):
        camera = f"py-cam-{i % 3}"
        key = camera.encode()
        headers = [
            ("tessera-frame-id", f"{camera}-{i}".encode()),
            ("tessera-ts", str(1_700_000_000_000 + i * 40).encode()),
            ("note", bytes([0, 255, i % 256])),
        ]
        value = bytes((i * 7 + j) % 256 for j in range(100 + i))
        timestamp = 1_700_000_000_000 + i * 40
        meta = producer.send(
            topic, key=key, value=value, headers=headers, timestamp_ms=timestamp
        ).get(timeout=30)
        print(line(topic, meta.partition, meta.offset, timestamp, key, headers, value))
    producer.flush()
    producer.close()


def consume(brokers, topic, count):
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=brokers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
        consumer_timeout_ms=30_000,
    )
    seen = 0
    for record in consumer:
        print(
            line(
                record.topic,
                record.partition,
                record.offset,
                record.timestamp,
                record.key,
                record.headers,
                record.value,
            )
        )
        seen += 1
        if seen >= count:
            break
    consumer.close()
    if seen < count:
        sys.exit(f"only {seen} of {count} records arrived")


if __name__ == "__main__":
    command, brokers, topic, count = sys.argv[1:5]
    {"produce": produce, "consume": consume}[command](brokers, topic, int(count))
