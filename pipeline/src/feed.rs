//! Feeding a pipeline on the embedded broker: frames are published while the outputs are read,
//! with a bound on the bytes published but not yet answered. librdkafka's mock broker keeps
//! only about 5 MiB per partition and throws the oldest records away beyond it, so publishing
//! a large folder up front loses frames; fed this way, it never does, whatever the folder's
//! size, and memory stays bounded by the credits instead of growing with the input.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::sync::{Semaphore, mpsc};

use tessera_actors::protocol::headers;

use crate::embedded::{CameraFrame, Output, output_consumer};

/// Bytes in flight on the embedded broker: below its 5 MiB per partition, with room for the
/// record overhead. A frame larger than this goes alone.
pub const EMBEDDED_BUDGET_BYTES: usize = 4 << 20;

/// The topics of a fed pipeline.
#[derive(Debug, Clone)]
pub struct FeedTopics {
    pub input: String,
    pub results: String,
    pub dlq: String,
}

/// A record to publish: a camera's frame, or a recorded record replayed as it was.
#[derive(Debug, Clone)]
pub struct FeedRecord {
    /// The frame id, for progress and errors.
    pub frame_id: String,
    pub key: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    pub payload: Vec<u8>,
    /// The Kafka timestamp; `None` lets the producer stamp it.
    pub timestamp_ms: Option<i64>,
}

impl From<CameraFrame> for FeedRecord {
    fn from(frame: CameraFrame) -> Self {
        Self {
            headers: frame.headers(),
            frame_id: frame.frame_id,
            key: Some(frame.camera),
            payload: frame.payload,
            timestamp_ms: None,
        }
    }
}

/// One item of the input: a record, or why one could not be made (an unreadable file, say);
/// the reason is reported through [`FeedEvent::Unreadable`] and the feed goes on.
pub type FeedItem = Result<FeedRecord, String>;

/// What the caller sees while a feed runs.
#[derive(Debug)]
pub enum FeedEvent {
    /// A frame was acknowledged by the broker (`topic/partition/offset`).
    Published { frame_id: String, source: String },
    /// An input item that could not be published, and why.
    Unreadable(String),
    /// An output of this run (a duplicate of an answered frame is reported again).
    Output(Output),
}

/// How a feed ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FeedReport {
    /// Frames published.
    pub published: usize,
    /// Items that could not be published.
    pub unreadable: usize,
    /// Outputs read (results and dead letters), duplicates included.
    pub outputs: usize,
    /// Outputs that answered no frame of this feed still unanswered (duplicates, or records
    /// left in the topics by an earlier run).
    pub unmatched: usize,
}

/// Publishes `frames` to `topics.input` while reading `topics.results` and `topics.dlq`, until
/// every published frame has its output. Returns an error naming the frames still unanswered
/// when no output arrives for `idle_timeout`.
pub async fn feed<I>(
    brokers: &str,
    topics: &FeedTopics,
    frames: I,
    budget_bytes: usize,
    idle_timeout: Duration,
    mut on_event: impl FnMut(FeedEvent),
) -> anyhow::Result<FeedReport>
where
    I: Iterator<Item = FeedItem> + Send + 'static,
{
    let consumer = output_consumer(brokers, &topics.results, &topics.dlq)?;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("message.max.bytes", "67108864")
        .set("linger.ms", "0")
        .create()?;
    let budget_kib = budget_kib(budget_bytes);
    let credits = std::sync::Arc::new(Semaphore::new(budget_kib as usize));
    let (events, mut published) = mpsc::channel(64);
    let publisher = tokio::spawn(publish(
        producer,
        topics.input.clone(),
        frames,
        credits.clone(),
        budget_kib,
        events,
    ));

    let mut report = FeedReport::default();
    // `topic/partition/offset` -> credits held, for frames published and not yet answered.
    let mut pending: HashMap<String, u32> = HashMap::new();
    // Outputs that came before their frame's delivery report (or answer no frame of ours).
    let mut early: HashSet<String> = HashSet::new();
    let mut publishing = true;
    loop {
        if !publishing && pending.is_empty() {
            break;
        }
        tokio::select! {
            event = published.recv(), if publishing => match event {
                Some(Published::Frame { frame_id, source, credits: held }) => {
                    report.published += 1;
                    if early.remove(&source) {
                        credits.add_permits(held as usize);
                    } else {
                        pending.insert(source.clone(), held);
                    }
                    on_event(FeedEvent::Published { frame_id, source });
                }
                Some(Published::Unreadable(reason)) => {
                    report.unreadable += 1;
                    on_event(FeedEvent::Unreadable(reason));
                }
                Some(Published::Failed(error)) => return Err(error),
                None => publishing = false,
            },
            message = tokio::time::timeout(idle_timeout, consumer.recv()) => {
                let message = match message {
                    Err(_) => anyhow::bail!(unanswered(&pending, idle_timeout)),
                    Ok(Err(error)) => {
                        tracing::debug!(%error, "Output reader error");
                        continue;
                    }
                    Ok(Ok(message)) => message,
                };
                let output = Output::from_message(&message, &topics.results)?;
                report.outputs += 1;
                if let Some(source) = output.source() {
                    match pending.remove(&source) {
                        Some(held) => credits.add_permits(held as usize),
                        None => {
                            early.insert(source);
                        }
                    }
                }
                on_event(FeedEvent::Output(output));
            }
        }
    }
    publisher.await??;
    report.unmatched = early.len();
    Ok(report)
}

/// What the publishing task tells the feed loop.
enum Published {
    Frame {
        frame_id: String,
        source: String,
        credits: u32,
    },
    Unreadable(String),
    Failed(anyhow::Error),
}

/// Publishes each frame once it holds credits for its size, in order, and reports where it
/// landed.
async fn publish<I>(
    producer: FutureProducer,
    topic: String,
    frames: I,
    credits: std::sync::Arc<Semaphore>,
    budget_kib: u32,
    events: mpsc::Sender<Published>,
) -> anyhow::Result<()>
where
    I: Iterator<Item = FeedItem>,
{
    for item in frames {
        let frame = match item {
            Ok(frame) => frame,
            Err(reason) => {
                let _ = events.send(Published::Unreadable(reason)).await;
                continue;
            }
        };
        let cost = frame_cost(frame.payload.len(), budget_kib);
        credits.acquire_many(cost).await?.forget();
        let event = match send(&producer, &topic, &frame).await {
            Ok(source) => Published::Frame {
                frame_id: frame.frame_id,
                source,
                credits: cost,
            },
            Err(error) => Published::Failed(error),
        };
        let failed = matches!(event, Published::Failed(_));
        if events.send(event).await.is_err() || failed {
            break;
        }
    }
    Ok(())
}

async fn send(
    producer: &FutureProducer,
    topic: &str,
    record: &FeedRecord,
) -> anyhow::Result<String> {
    let mut out = FutureRecord::to(topic)
        .payload(&record.payload)
        .headers(owned_headers(&record.headers));
    if let Some(key) = &record.key {
        out = out.key(key);
    }
    if let Some(timestamp) = record.timestamp_ms {
        out = out.timestamp(timestamp);
    }
    let delivered = producer
        .send(out, Duration::from_secs(30))
        .await
        .map_err(|(e, _)| anyhow::anyhow!("publishing frame {}: {e}", record.frame_id))?;
    Ok(headers::source_text(
        topic,
        delivered.partition,
        delivered.offset,
    ))
}

/// Kafka headers from names and values.
pub fn owned_headers(headers: &[(String, Option<Vec<u8>>)]) -> OwnedHeaders {
    headers.iter().fold(
        OwnedHeaders::new_with_capacity(headers.len()),
        |all, (key, value)| {
            all.insert(Header {
                key,
                value: value.as_deref(),
            })
        },
    )
}

/// The budget in KiB credits (a semaphore counts in `u32`).
fn budget_kib(budget_bytes: usize) -> u32 {
    u32::try_from(budget_bytes.div_ceil(1024))
        .unwrap_or(u32::MAX)
        .max(1)
}

/// Credits a frame of `len` bytes holds: its size in KiB, at least one, at most the whole
/// budget (a frame larger than the budget goes alone).
fn frame_cost(len: usize, budget_kib: u32) -> u32 {
    u32::try_from(len.div_ceil(1024))
        .unwrap_or(u32::MAX)
        .clamp(1, budget_kib)
}

fn unanswered(pending: &HashMap<String, u32>, idle_timeout: Duration) -> String {
    let mut sources: Vec<&String> = pending.keys().collect();
    sources.sort();
    let shown: Vec<&str> = sources.iter().take(10).map(|s| s.as_str()).collect();
    format!(
        "no output for {}: {} frame(s) still unanswered ({}{})",
        humantime::format_duration(idle_timeout),
        pending.len(),
        shown.join(", "),
        if sources.len() > shown.len() {
            ", ..."
        } else {
            ""
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_holds_its_size_in_credits_within_the_budget() {
        let budget = budget_kib(EMBEDDED_BUDGET_BYTES);
        assert_eq!(budget, 4096);
        assert_eq!(frame_cost(0, budget), 1);
        assert_eq!(frame_cost(1, budget), 1);
        assert_eq!(frame_cost(1025, budget), 2);
        assert_eq!(frame_cost(300 << 10, budget), 300);
        // Larger than the budget: it waits for every credit and goes alone.
        assert_eq!(frame_cost(64 << 20, budget), budget);
        assert_eq!(budget_kib(0), 1);
    }
}
