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

/// The headers tessera reads from an input record (checked against the data contract).
pub const INPUT: [&str; 3] = [FRAME_ID, CAPTURE_TS, CONTENT_TYPE];
