//! One consumed Kafka record (a frame) and its identity.

use std::sync::Arc;
use std::time::Instant;

use super::ack::AckHandle;
use super::headers;
use super::key::FrameKey;

/// Everything about a frame except its pixels, shared by every stage that handles it.
#[derive(Debug)]
pub struct FrameMeta {
    pub key: FrameKey,
    /// Settles the frame: delivered (its offset may be stored) or to be retried.
    pub ack: AckHandle,
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
    /// The head live when the frame was consumed: every tile of the frame, and every attempt
    /// at it, is classified by this one, so a camera's results switch heads once, in order.
    pub head: Option<Arc<tessera_models::Head>>,
    /// Released when the last reference to the frame is dropped (after its output is
    /// acknowledged, or its stream revoked): bounds frames in flight.
    pub _credit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl FrameMeta {
    /// Metadata of a frame outside any pipeline (tests, one-off runs): no credit, an ack
    /// handle that settles nowhere.
    pub fn detached(key: FrameKey, record_key: Option<Vec<u8>>) -> Self {
        Self {
            ack: AckHandle::detached(key.clone()),
            key,
            record_key,
            headers: Vec::new(),
            kafka_timestamp_ms: None,
            received_ms: now_ms(),
            received_at: Instant::now(),
            head: None,
            _credit: None,
        }
    }

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
        match self.header_str(headers::FRAME_ID) {
            Some(id) => id.to_owned(),
            None => self.source(),
        }
    }

    /// Where the record lies: `topic/partition/offset`.
    pub fn source(&self) -> String {
        headers::source_text(
            &self.key.partition.topic,
            self.key.partition.partition,
            self.key.offset,
        )
    }

    /// Capture time: the `tessera-ts` header, else the Kafka timestamp.
    pub fn capture_ms(&self) -> Option<i64> {
        self.header_str(headers::CAPTURE_TS)
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
    /// 0 for the first dispatch; bumped each time the frame is dispatched again.
    pub attempt: u32,
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
