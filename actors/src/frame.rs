//! What travels between the actors: one consumed Kafka record (a frame) and its identity.

use std::sync::Arc;
use std::time::Instant;

/// Kafka header naming the producer's frame id.
pub const HEADER_FRAME_ID: &str = "tessera-frame-id";
/// Kafka header with the capture time in milliseconds since the epoch.
pub const HEADER_CAPTURE_TS: &str = "tessera-ts";
/// Kafka header with the payload's MIME type (informational; the decoder sniffs the bytes).
pub const HEADER_CONTENT_TYPE: &str = "content-type";
/// DLQ header: the stable, machine-readable error kind.
pub const HEADER_ERROR_KIND: &str = "tessera-error-kind";
/// DLQ header: the human-readable error message.
pub const HEADER_ERROR: &str = "tessera-error";
/// DLQ header, only when Kafka refused the dead letter for its size: the original value's
/// length in bytes; the record is then sent without its value.
pub const HEADER_PAYLOAD_OMITTED: &str = "tessera-payload-omitted";
/// DLQ header, with [`HEADER_PAYLOAD_OMITTED`]: where the original record lies
/// (`topic/partition/offset`), to fetch the value from the input topic.
pub const HEADER_SOURCE: &str = "tessera-source";

/// One input partition. Ordering and offset watermarks are kept per partition.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartitionId {
    pub topic: Arc<str>,
    pub partition: i32,
}

/// Identity of one frame in flight: its partition, the assignment generation in which it
/// was consumed, and its position in that partition's stream.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FrameKey {
    pub partition: PartitionId,
    /// Bumped on every (re)assignment of the partition, so sequences of an old assignment
    /// never mix with a new one.
    pub generation: u64,
    /// Contiguous per (partition, generation): the merge stage releases results in this order.
    pub seq: u64,
    pub offset: i64,
}

/// Everything about a frame except its pixels, shared by every stage that handles it.
#[derive(Debug)]
pub struct FrameMeta {
    pub key: FrameKey,
    /// The Kafka record key as sent (normally the camera id, UTF-8).
    pub record_key: Option<Vec<u8>>,
    /// The record's headers, kept so a dead-lettered frame carries them unchanged.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    /// Kafka record timestamp (ms since the epoch), when the broker gave one.
    pub kafka_timestamp_ms: Option<i64>,
    /// Wall-clock time of consumption (ms since the epoch).
    pub received_ms: i64,
    /// Monotonic time of consumption, for stage latencies.
    pub received_at: Instant,
    /// Released when the frame's output is acknowledged: bounds frames in flight.
    pub _credit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl FrameMeta {
    /// The camera id: the record key as UTF-8 (lossy), or empty when the record has no key.
    pub fn camera(&self) -> String {
        self.record_key
            .as_deref()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .unwrap_or_default()
    }

    /// Value of a header as UTF-8, if present and valid.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.as_deref())
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The producer's frame id header, else `topic/partition/offset`.
    pub fn frame_id(&self) -> String {
        match self.header_str(HEADER_FRAME_ID) {
            Some(id) => id.to_owned(),
            None => format!(
                "{}/{}/{}",
                self.key.partition.topic, self.key.partition.partition, self.key.offset
            ),
        }
    }

    /// Capture time: the `tessera-ts` header, else the Kafka timestamp.
    pub fn capture_ms(&self) -> Option<i64> {
        self.header_str(HEADER_CAPTURE_TS)
            .and_then(|v| v.trim().parse::<i64>().ok())
            .or(self.kafka_timestamp_ms)
    }
}

/// A consumed frame: metadata plus the encoded image bytes.
#[derive(Debug, Clone)]
pub struct Frame {
    pub meta: Arc<FrameMeta>,
    /// Encoded image bytes, shared so the dead-letter path can republish them unchanged.
    pub payload: Arc<[u8]>,
    /// 0 for the first dispatch; bumped each time the frame is re-dispatched after a failure.
    pub attempt: u32,
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
