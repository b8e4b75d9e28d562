//! Publishing benchmark frames: spread over partitions explicitly (the embedded broker keeps
//! ~5 MiB per partition and drops the oldest beyond it), all at once or at a fixed rate.

use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tessera::embedded::CameraFrame;
use tessera_actors::protocol::{headers, now_ms};

/// Bytes of frames one partition of the embedded broker may hold without losing any.
pub const PARTITION_BUDGET_BYTES: usize = 4 * 1024 * 1024;

/// Partitions needed to hold `frames` at once.
pub fn partitions_for(frames: &[CameraFrame]) -> i32 {
    let bytes: usize = frames.iter().map(|f| f.payload.len() + 1024).sum();
    i32::try_from(bytes.div_ceil(PARTITION_BUDGET_BYTES).max(2)).unwrap_or(i32::MAX)
}

/// A producer for the benchmark's frames.
pub fn producer(brokers: &str) -> anyhow::Result<FutureProducer> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("message.max.bytes", "67108864")
        .set("linger.ms", "0")
        .create()?)
}

/// The frame's capture time: its own when it has one (a camera's clock), else now.
fn capture_ms(frame: &CameraFrame) -> i64 {
    if frame.capture_ms > 0 {
        frame.capture_ms
    } else {
        now_ms()
    }
}

/// Publishes `frame` to partition `partition`, stamped with its capture time (the time of
/// sending, unless it has its own).
pub async fn send(
    producer: &FutureProducer,
    topic: &str,
    partition: i32,
    frame: &CameraFrame,
) -> anyhow::Result<()> {
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: headers::FRAME_ID,
            value: Some(frame.frame_id.as_str()),
        })
        .insert(Header {
            key: headers::CAPTURE_TS,
            value: Some(capture_ms(frame).to_string().as_str()),
        });
    let record = FutureRecord::to(topic)
        .partition(partition)
        .key(&frame.camera)
        .payload(&frame.payload)
        .headers(headers);
    producer
        .send(record, Duration::from_secs(30))
        .await
        .map_err(|(e, _)| anyhow::anyhow!("publishing {}: {e}", frame.frame_id))?;
    Ok(())
}

/// Publishes every frame now, frame `i` to partition `i % partitions`.
pub async fn publish_all(
    brokers: &str,
    topic: &str,
    partitions: i32,
    frames: &[CameraFrame],
) -> anyhow::Result<()> {
    let producer = producer(brokers)?;
    for (i, frame) in frames.iter().enumerate() {
        send(&producer, topic, partition_of(i, partitions), frame).await?;
    }
    Ok(())
}

/// Publishes frames at `rate` per second (frame `i` at start + i / rate), until `frames` run
/// out or `duration` passes. Returns how many were sent.
pub async fn publish_paced(
    brokers: &str,
    topic: &str,
    partitions: i32,
    frames: &[CameraFrame],
    rate: f64,
    duration: Duration,
) -> anyhow::Result<usize> {
    let producer = producer(brokers)?;
    let started = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / rate.max(0.001));
    for (i, frame) in frames.iter().enumerate() {
        let due = started + interval.mul_f64(i as f64);
        if due.duration_since(started) >= duration {
            return Ok(i);
        }
        tokio::time::sleep_until(due.into()).await;
        send(&producer, topic, partition_of(i, partitions), frame).await?;
    }
    Ok(frames.len())
}

fn partition_of(i: usize, partitions: i32) -> i32 {
    (i % partitions.max(1) as usize) as i32
}
