//! `tessera replay record`: captures Kafka topics (frames, results, labels) into a recording.
//! It reads the partitions directly (no consumer group: it commits nothing and disturbs no
//! one) and keeps every record's partition, offset, key, headers, timestamp and value.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tessera_actors::protocol::headers;

use super::recording::{KafkaRecord, RecordingWriter, WriteSummary};
use crate::progress::Progress;

/// Where recording starts in each partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Records published from now on, until stopped (a signal) or `--max`.
    Now,
    /// Everything the topics hold, up to their end when recording started.
    Beginning,
    /// Records from this time on (ms since the epoch), up to the end when recording started.
    Since(i64),
}

/// Options of `tessera replay record`.
#[derive(Debug, Clone)]
pub struct RecordOptions {
    pub brokers: String,
    pub topics: Vec<String>,
    pub out: PathBuf,
    pub start: Start,
    /// Stop after this many records.
    pub max: Option<u64>,
    /// With `Beginning` or `Since`: go on after the end, until stopped.
    pub follow: bool,
    /// Extra consumer properties (`security.protocol`, ...).
    pub properties: Vec<(String, String)>,
}

const METADATA_TIMEOUT: Duration = Duration::from_secs(15);
/// How long without a record before the partitions' positions are checked against their ends.
const IDLE_CHECK: Duration = Duration::from_millis(500);

/// Records until the end (see [`Start`]), `max`, or `stop` resolves.
pub async fn run(
    options: &RecordOptions,
    stop: impl Future<Output = ()>,
) -> anyhow::Result<WriteSummary> {
    anyhow::ensure!(!options.topics.is_empty(), "no --topic given");
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &options.brokers)
        // librdkafka wants a group id; nothing is committed under it.
        .set("group.id", format!("tessera-record-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        // Records deleted by retention while recording: go on from the oldest left.
        .set("auto.offset.reset", "earliest")
        .set("fetch.message.max.bytes", "67108864");
    for (key, value) in &options.properties {
        config.set(key, value);
    }
    let consumer: StreamConsumer = config.create()?;
    let (assignment, mut ends) = assignment(&consumer, options)?;
    consumer.assign(&assignment)?;
    let bounded = options.start != Start::Now && !options.follow;

    let source = format!(
        "kafka {} topics {}",
        options.brokers,
        options.topics.join(",")
    );
    let mut metadata = super::base_metadata(&source, "topics");
    metadata.insert("topics".into(), options.topics.join(","));
    let mut writer = RecordingWriter::create(&options.out, &metadata)?;
    let total = if bounded {
        Some(
            ends.values()
                .map(|(from, to)| (to - from).max(0) as u64)
                .sum::<u64>(),
        )
    } else {
        options.max
    };
    let total = match (total, options.max) {
        (Some(total), Some(max)) => Some(total.min(max)),
        (total, _) => total,
    };
    let progress = Progress::new("record", "records", total);
    tokio::pin!(stop);
    loop {
        if options.max.is_some_and(|max| writer.messages() >= max) {
            break;
        }
        if bounded && ends.values().all(|(next, end)| next >= end) {
            break;
        }
        let message = tokio::select! {
            () = &mut stop => break,
            message = tokio::time::timeout(IDLE_CHECK, consumer.recv()) => match message {
                Ok(message) => message,
                Err(_) => {
                    // Quiet: a partition's last offsets may be transaction markers, which are
                    // never delivered; its position says it has passed them.
                    if bounded {
                        advance_to_positions(&consumer, &mut ends);
                    }
                    continue;
                }
            },
        };
        let message = match message {
            Ok(message) => message,
            Err(error) => {
                progress.println(&format!("Kafka error (retrying): {error}"));
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        if let Some((next, _)) = ends.get_mut(&(message.topic().to_owned(), message.partition())) {
            *next = message.offset() + 1;
        }
        let record = record_of(&message);
        let log_time_ms = record
            .timestamp_ms
            .unwrap_or_else(tessera_actors::protocol::now_ms);
        writer.write(&record, log_time_ms)?;
        progress.inc(1);
    }
    progress.finish();
    Ok(writer.finish()?)
}

/// Every partition of the topics at its start offset, and per partition the next offset and
/// the end (high watermark) when recording started.
#[allow(clippy::type_complexity)]
fn assignment(
    consumer: &StreamConsumer,
    options: &RecordOptions,
) -> anyhow::Result<(TopicPartitionList, HashMap<(String, i32), (i64, i64)>)> {
    let mut list = TopicPartitionList::new();
    let mut ends = HashMap::new();
    for topic in &options.topics {
        let partitions = super::partitions_of(consumer, topic, &options.brokers)?;
        for partition in partitions {
            let (low, high) = consumer
                .fetch_watermarks(topic, partition, METADATA_TIMEOUT)
                .map_err(|e| {
                    anyhow::anyhow!("cannot read the offsets of {topic}/{partition}: {e}")
                })?;
            let from = match options.start {
                Start::Now => high,
                Start::Beginning => low,
                Start::Since(ms) => since(consumer, topic, partition, ms)?.unwrap_or(high),
            };
            list.add_partition_offset(topic, partition, Offset::Offset(from))?;
            ends.insert((topic.clone(), partition), (from, high));
        }
    }
    Ok((list, ends))
}

/// Moves each partition's next offset to the consumer's position where that is further.
fn advance_to_positions(consumer: &StreamConsumer, ends: &mut HashMap<(String, i32), (i64, i64)>) {
    let Ok(positions) = consumer.position() else {
        return;
    };
    for element in positions.elements() {
        if let (Offset::Offset(position), Some((next, _))) = (
            element.offset(),
            ends.get_mut(&(element.topic().to_owned(), element.partition())),
        ) {
            *next = (*next).max(position);
        }
    }
}

/// The first offset at or after `ms` in a partition (`None`: nothing that recent).
fn since(
    consumer: &StreamConsumer,
    topic: &str,
    partition: i32,
    ms: i64,
) -> anyhow::Result<Option<i64>> {
    let mut query = TopicPartitionList::new();
    query.add_partition_offset(topic, partition, Offset::Offset(ms))?;
    let found = consumer
        .offsets_for_times(query, METADATA_TIMEOUT)
        .map_err(|e| {
            anyhow::anyhow!("cannot look up offsets by time in {topic}/{partition}: {e}")
        })?;
    Ok(found
        .find_partition(topic, partition)
        .and_then(|p| match p.offset() {
            Offset::Offset(offset) => Some(offset),
            _ => None,
        }))
}

/// A consumed message as a recorded record.
fn record_of(message: &impl Message) -> KafkaRecord {
    KafkaRecord {
        topic: message.topic().to_owned(),
        partition: message.partition(),
        offset: message.offset(),
        timestamp_ms: message.timestamp().to_millis(),
        key: message.key().map(<[u8]>::to_vec),
        headers: headers::of_message(message),
        payload: message.payload().map(<[u8]>::to_vec),
    }
}
