//! Kafka header names of the data contract.

/// Kafka header naming the producer's frame id.
pub const FRAME_ID: &str = "tessera-frame-id";
/// Kafka header with the capture time in milliseconds since the epoch.
pub const CAPTURE_TS: &str = "tessera-ts";
/// Kafka header with the payload's MIME type (informational; the decoder sniffs the bytes).
pub const CONTENT_TYPE: &str = "content-type";
/// DLQ header: the stable, machine-readable error kind ([`crate::protocol::DeadLetterKind`]).
pub const ERROR_KIND: &str = "tessera-error-kind";
/// DLQ header: the human-readable error message.
pub const ERROR: &str = "tessera-error";
/// DLQ header: whose fault the error is (`user`, `external`, `internal`).
pub const ERROR_DOMAIN: &str = "tessera-error-domain";
/// DLQ header, only when Kafka refused the dead letter for its size: the original value's
/// length in bytes; the record is then sent without its value.
pub const PAYLOAD_OMITTED: &str = "tessera-payload-omitted";
/// DLQ header: where the original record lies (`topic/partition/offset`); with
/// [`PAYLOAD_OMITTED`], where to fetch the value from.
pub const SOURCE: &str = "tessera-source";

/// Where a record lies, as [`SOURCE`] and result documents spell it: `topic/partition/offset`.
pub fn source_text(topic: &str, partition: i32, offset: i64) -> String {
    format!("{topic}/{partition}/{offset}")
}

/// A Kafka message's headers as names and values (`None`: a null value).
pub fn of_message(message: &impl rdkafka::message::Message) -> Vec<(String, Option<Vec<u8>>)> {
    use rdkafka::message::Headers;
    message
        .headers()
        .map(|headers| {
            headers
                .iter()
                .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
                .collect()
        })
        .unwrap_or_default()
}

/// The headers tessera reads from an input record (checked against the data contract).
pub const INPUT: [&str; 3] = [FRAME_ID, CAPTURE_TS, CONTENT_TYPE];
