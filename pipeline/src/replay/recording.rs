//! The recording format of `tessera replay`: Kafka records in a standard MCAP file.
//!
//! A recording is an ordinary chunked MCAP file, so existing MCAP tools (`mcap info`,
//! `mcap cat`, Foxglove) open it:
//!
//! - header profile `tessera`;
//! - one channel per source Kafka topic: channel topic = the Kafka topic, message encoding
//!   `tessera.kafka-record.v1`, no schema (id 0), no channel metadata;
//! - one message per Kafka record: `sequence` counts from 0 per channel, `log_time` is the
//!   record's replay time and `publish_time` the caller's (the same by default), in nanoseconds;
//! - one metadata record named `tessera` (keys such as `tessera_version`, `source`, `created`,
//!   `kind`, `model`, `head_versions`, `config`), written right after the header, before any
//!   message, so that a truncated file still says what it is;
//! - uncompressed chunks of about 4 MiB with chunk CRCs; `finish` writes the summary and indexes.
//!
//! # Message envelope (`tessera.kafka-record.v1`)
//!
//! Each message's data keeps what MCAP has no field for. Little-endian, no padding; nothing may
//! follow the payload. The topic is not in the envelope: it is the channel's topic.
//!
//! | Field                     | Type    | Notes                                              |
//! |---------------------------|---------|----------------------------------------------------|
//! | envelope version          | `u8`    | `1`                                                |
//! | partition                 | `i32`   |                                                    |
//! | offset                    | `i64`   | `-1` when unknown (e.g. made from image files)     |
//! | Kafka timestamp (ms)      | `i64`   | `i64::MIN` when none                               |
//! | key length                | `u32`   | `u32::MAX` = null key, no bytes follow             |
//! | key                       | bytes   |                                                    |
//! | header count              | `u32`   |                                                    |
//! | per header: name length   | `u32`   |                                                    |
//! | per header: name          | UTF-8   |                                                    |
//! | per header: value length  | `u32`   | `u32::MAX` = null value, no bytes follow           |
//! | per header: value         | bytes   |                                                    |
//! | payload length            | `u32`   | `u32::MAX` = null payload, no bytes follow         |
//! | payload                   | bytes   |                                                    |
//!
//! # Writing and reading
//!
//! [`RecordingWriter`] writes to `<name>.partial` next to the final path and renames it on
//! [`RecordingWriter::finish`], so a crash never leaves a half file under the final name.
//!
//! [`RecordingReader`] streams any [`Read`] with memory bounded by the largest chunk (it never
//! loads the file). It yields the records in file order; at the first damage (truncation, CRC
//! mismatch, undecodable message, ...) it yields one [`Damage`] and then ends, so what it yielded
//! before is the intact prefix. A file cut after complete chunks yields all their records and
//! then the damage "truncated: no footer".

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read};
use std::path::{Path, PathBuf};

use mcap::records::{self, MessageHeader, Record, op};
use mcap::sans_io::{LinearReadEvent, LinearReader, LinearReaderOptions};
use mcap::{McapError, WriteOptions};

/// Message encoding of every channel of a recording.
pub const MESSAGE_ENCODING: &str = "tessera.kafka-record.v1";
/// Name of the MCAP metadata record holding the recording's description.
pub const METADATA_NAME: &str = "tessera";
/// Profile in the MCAP header.
pub const PROFILE: &str = "tessera";
/// Envelope version this build writes and reads.
pub const ENVELOPE_VERSION: u8 = 1;
/// Largest envelope (one Kafka record) a recording holds: 128 MiB.
pub const MAX_ENVELOPE_BYTES: usize = 128 * 1024 * 1024;
/// Default target chunk size: 4 MiB, large enough for cheap indexes, small enough to lose
/// little when a recording is cut short.
pub const DEFAULT_CHUNK_SIZE: u64 = 4 * 1024 * 1024;
/// Largest target chunk size [`WriterOptions`] accepts: 64 MiB.
pub const MAX_CHUNK_SIZE: u64 = 64 * 1024 * 1024;

/// Largest MCAP record the reader loads: a chunk of `MAX_CHUNK_SIZE` plus one maximal envelope
/// fits. This bounds the reader's memory even when a length field is corrupt.
const MAX_RECORD_BYTES: usize = 256 * 1024 * 1024;
/// Envelope length value meaning "null".
const NULL_LEN: u32 = u32::MAX;
/// Envelope timestamp value meaning "none".
const NO_TIMESTAMP: i64 = i64::MIN;
/// Fixed part of an envelope: version, partition, offset, timestamp, key length, header count,
/// payload length.
const ENVELOPE_FIXED_BYTES: usize = 1 + 4 + 8 + 8 + 4 + 4 + 4;
/// An MCAP record starts with an opcode (`u8`) and a length (`u64`).
const RECORD_PREFIX_BYTES: u64 = 9;
/// A chunk record's header before its `records` field, without the compression string.
const CHUNK_HEADER_FIXED_BYTES: u64 = 8 + 8 + 8 + 4 + 4 + 8;
/// The MCAP writer's placeholder length of a chunk it has not closed yet.
const UNFINISHED_CHUNK_LEN: u64 = u64::MAX;
const NANOS_PER_MILLI: u64 = 1_000_000;

// ---------------------------------------------------------------------------------------------
// Kafka record and envelope
// ---------------------------------------------------------------------------------------------

/// One Kafka record, as recorded and replayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaRecord {
    /// Source topic; in a recording, the MCAP channel's topic.
    pub topic: String,
    pub partition: i32,
    /// Kafka offset; `-1` when unknown (records made from image files).
    pub offset: i64,
    /// Kafka timestamp in ms. `Some(i64::MIN)` cannot be recorded: it reads back as `None`.
    pub timestamp_ms: Option<i64>,
    pub key: Option<Vec<u8>>,
    /// Headers in order; names may repeat, as in Kafka.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    pub payload: Option<Vec<u8>>,
}

impl KafkaRecord {
    /// The value of the first header named `name` that has a value.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .filter(|(header_name, _)| header_name == name)
            .find_map(|(_, value)| value.as_deref())
    }
}

/// A field of the envelope, to say where decoding failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvelopeField {
    Version,
    Partition,
    Offset,
    Timestamp,
    KeyLength,
    Key,
    HeaderCount,
    /// Header index (0-based) in the following variants.
    HeaderNameLength(u32),
    HeaderName(u32),
    HeaderValueLength(u32),
    HeaderValue(u32),
    PayloadLength,
    Payload,
}

impl fmt::Display for EnvelopeField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Version => f.write_str("envelope version"),
            Self::Partition => f.write_str("partition"),
            Self::Offset => f.write_str("offset"),
            Self::Timestamp => f.write_str("timestamp"),
            Self::KeyLength => f.write_str("key length"),
            Self::Key => f.write_str("key"),
            Self::HeaderCount => f.write_str("header count"),
            Self::HeaderNameLength(i) => write!(f, "header {i} name length"),
            Self::HeaderName(i) => write!(f, "header {i} name"),
            Self::HeaderValueLength(i) => write!(f, "header {i} value length"),
            Self::HeaderValue(i) => write!(f, "header {i} value"),
            Self::PayloadLength => f.write_str("payload length"),
            Self::Payload => f.write_str("payload"),
        }
    }
}

/// Why an envelope cannot be encoded or decoded. Byte positions are within the envelope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error(
        "envelope ends inside the {field}: {needed} bytes needed at byte {at}, {available} left"
    )]
    Truncated {
        field: EnvelopeField,
        at: usize,
        needed: usize,
        available: usize,
    },
    #[error(
        "unsupported envelope version {found} at byte 0 (this build reads version {})",
        ENVELOPE_VERSION
    )]
    UnsupportedVersion { found: u8 },
    #[error("{field} at byte {at} is not UTF-8 (invalid byte at {invalid_at})")]
    NotUtf8 {
        field: EnvelopeField,
        at: usize,
        invalid_at: usize,
    },
    #[error("{count} unexpected bytes after the payload, from byte {at}")]
    TrailingBytes { at: usize, count: usize },
    #[error("envelope would be {bytes} bytes, over the limit of {limit}")]
    TooLarge { bytes: usize, limit: usize },
}

/// Encoded size of `record`'s envelope.
pub fn envelope_len(record: &KafkaRecord) -> usize {
    let optional = |bytes: &Option<Vec<u8>>| bytes.as_ref().map_or(0, Vec::len);
    let headers: usize = record
        .headers
        .iter()
        .map(|(name, value)| 4 + name.len() + 4 + optional(value))
        .sum();
    ENVELOPE_FIXED_BYTES + optional(&record.key) + headers + optional(&record.payload)
}

/// Appends `record`'s envelope (see the module doc) to `out`. The topic is not encoded.
///
/// Fails only when the envelope would exceed [`MAX_ENVELOPE_BYTES`].
pub fn encode_envelope(record: &KafkaRecord, out: &mut Vec<u8>) -> Result<(), EnvelopeError> {
    let len = envelope_len(record);
    if len > MAX_ENVELOPE_BYTES {
        return Err(EnvelopeError::TooLarge {
            bytes: len,
            limit: MAX_ENVELOPE_BYTES,
        });
    }
    out.reserve(len);
    out.push(ENVELOPE_VERSION);
    out.extend_from_slice(&record.partition.to_le_bytes());
    out.extend_from_slice(&record.offset.to_le_bytes());
    out.extend_from_slice(&record.timestamp_ms.unwrap_or(NO_TIMESTAMP).to_le_bytes());
    put_optional_bytes(out, record.key.as_deref());
    put_len(out, record.headers.len());
    for (name, value) in &record.headers {
        put_optional_bytes(out, Some(name.as_bytes()));
        put_optional_bytes(out, value.as_deref());
    }
    put_optional_bytes(out, record.payload.as_deref());
    Ok(())
}

fn put_optional_bytes(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        Some(bytes) => {
            put_len(out, bytes.len());
            out.extend_from_slice(bytes);
        }
        None => out.extend_from_slice(&NULL_LEN.to_le_bytes()),
    }
}

fn put_len(out: &mut Vec<u8>, len: usize) {
    // `encode_envelope` checked the whole envelope against MAX_ENVELOPE_BYTES (< u32::MAX), so
    // every length and count fits and none equals NULL_LEN.
    out.extend_from_slice(&(len as u32).to_le_bytes());
}

/// Decodes an envelope (see the module doc), validating every length, the version, the header
/// names' UTF-8 and that nothing follows the payload.
pub fn decode_envelope(topic: &str, data: &[u8]) -> Result<KafkaRecord, EnvelopeError> {
    let mut input = EnvelopeInput { data, at: 0 };
    let [version] = input.array::<1>(EnvelopeField::Version)?;
    if version != ENVELOPE_VERSION {
        return Err(EnvelopeError::UnsupportedVersion { found: version });
    }
    let partition = i32::from_le_bytes(input.array(EnvelopeField::Partition)?);
    let offset = i64::from_le_bytes(input.array(EnvelopeField::Offset)?);
    let timestamp = i64::from_le_bytes(input.array(EnvelopeField::Timestamp)?);
    let key = input.optional_bytes(EnvelopeField::KeyLength, EnvelopeField::Key)?;
    let count = u32::from_le_bytes(input.array(EnvelopeField::HeaderCount)?);
    // Each header takes at least 8 bytes, so a corrupt count cannot make us reserve much.
    let mut headers = Vec::with_capacity((count as usize).min(input.remaining() / 8));
    for i in 0..count {
        let name = input.optional_bytes(
            EnvelopeField::HeaderNameLength(i),
            EnvelopeField::HeaderName(i),
        )?;
        let name_at = input.at - name.as_ref().map_or(0, Vec::len);
        // A null name (length u32::MAX) cannot be read as 4 GiB of bytes: it is truncation.
        let Some(name) = name else {
            return Err(EnvelopeError::Truncated {
                field: EnvelopeField::HeaderName(i),
                at: name_at,
                needed: NULL_LEN as usize,
                available: input.remaining(),
            });
        };
        let name = String::from_utf8(name).map_err(|err| EnvelopeError::NotUtf8 {
            field: EnvelopeField::HeaderName(i),
            at: name_at,
            invalid_at: name_at + err.utf8_error().valid_up_to(),
        })?;
        let value = input.optional_bytes(
            EnvelopeField::HeaderValueLength(i),
            EnvelopeField::HeaderValue(i),
        )?;
        headers.push((name, value));
    }
    let payload = input.optional_bytes(EnvelopeField::PayloadLength, EnvelopeField::Payload)?;
    if input.remaining() > 0 {
        return Err(EnvelopeError::TrailingBytes {
            at: input.at,
            count: input.remaining(),
        });
    }
    Ok(KafkaRecord {
        topic: topic.to_owned(),
        partition,
        offset,
        timestamp_ms: (timestamp != NO_TIMESTAMP).then_some(timestamp),
        key,
        headers,
        payload,
    })
}

/// A cursor over an envelope that names the field when data runs out.
struct EnvelopeInput<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> EnvelopeInput<'a> {
    fn remaining(&self) -> usize {
        self.data.len() - self.at
    }

    fn take(&mut self, len: usize, field: EnvelopeField) -> Result<&'a [u8], EnvelopeError> {
        let bytes = self
            .data
            .get(self.at..)
            .and_then(|rest| rest.get(..len))
            .ok_or(EnvelopeError::Truncated {
                field,
                at: self.at,
                needed: len,
                available: self.remaining(),
            })?;
        self.at += len;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self, field: EnvelopeField) -> Result<[u8; N], EnvelopeError> {
        let mut array = [0; N];
        array.copy_from_slice(self.take(N, field)?);
        Ok(array)
    }

    /// A `u32` length (`u32::MAX` = null) followed by that many bytes.
    fn optional_bytes(
        &mut self,
        length_field: EnvelopeField,
        bytes_field: EnvelopeField,
    ) -> Result<Option<Vec<u8>>, EnvelopeError> {
        let len = u32::from_le_bytes(self.array(length_field)?);
        if len == NULL_LEN {
            return Ok(None);
        }
        Ok(Some(self.take(len as usize, bytes_field)?.to_vec()))
    }
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// Errors of writing, opening and scanning recordings (damage found while reading is a
/// [`Damage`], yielded by [`RecordingReader`]).
#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    #[error("cannot {action} {}: {source}", .path.display())]
    Io {
        /// What was being done, e.g. "create", "read", "rename to its final name".
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("cannot write MCAP to {}: {source}", .path.display())]
    Mcap { path: PathBuf, source: McapError },
    #[error("cannot record to {}: {what}", .path.display())]
    InvalidRecord { path: PathBuf, what: String },
    #[error("invalid writer options: {0}")]
    InvalidOptions(String),
    #[error("{}: {damage}", .path.display())]
    NotMcap { path: PathBuf, damage: Damage },
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> RecordingError {
    let path = path.to_path_buf();
    move |source| RecordingError::Io {
        action,
        path,
        source,
    }
}

// ---------------------------------------------------------------------------------------------
// Writer
// ---------------------------------------------------------------------------------------------

/// Options of [`RecordingWriter`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriterOptions {
    /// Target uncompressed chunk size in bytes: a chunk is closed once it is larger. At most
    /// [`MAX_CHUNK_SIZE`]. What a crash loses is at most the open chunk.
    pub chunk_size: u64,
}

impl Default for WriterOptions {
    fn default() -> Self {
        Self {
            chunk_size: DEFAULT_CHUNK_SIZE,
        }
    }
}

/// What [`RecordingWriter::finish`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteSummary {
    /// The final path.
    pub path: PathBuf,
    pub messages: u64,
    /// Messages per Kafka topic.
    pub per_topic: BTreeMap<String, u64>,
    /// Size of the finished file in bytes.
    pub bytes: u64,
}

/// Writes a recording; see the module doc. Call [`Self::finish`]: dropped without it, the data
/// stays in `<name>.partial` (closed as a valid MCAP when possible) and `path` is not touched.
pub struct RecordingWriter {
    /// Final path; the file is renamed to it by `finish`.
    path: PathBuf,
    /// Where the data goes until `finish`, so a crash never leaves a half file at `path`.
    partial_path: PathBuf,
    mcap: mcap::Writer<BufWriter<File>>,
    /// By Kafka topic.
    channels: HashMap<String, WriterChannel>,
    messages: u64,
    /// Reused envelope buffer: no allocation per record once it has grown.
    envelope: Vec<u8>,
}

#[derive(Debug)]
struct WriterChannel {
    id: u16,
    /// MCAP `sequence` of the channel's next message.
    next_sequence: u32,
    messages: u64,
}

impl fmt::Debug for RecordingWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordingWriter")
            .field("path", &self.path)
            .field("partial_path", &self.partial_path)
            .field("channels", &self.channels)
            .field("messages", &self.messages)
            .finish_non_exhaustive()
    }
}

impl RecordingWriter {
    /// Starts a recording that [`Self::finish`] will put at `path` (replacing a file there),
    /// with the "tessera" `metadata` written first.
    pub fn create(
        path: &Path,
        metadata: &BTreeMap<String, String>,
    ) -> Result<Self, RecordingError> {
        Self::create_with_options(path, metadata, &WriterOptions::default())
    }

    /// [`Self::create`] with options.
    pub fn create_with_options(
        path: &Path,
        metadata: &BTreeMap<String, String>,
        options: &WriterOptions,
    ) -> Result<Self, RecordingError> {
        if options.chunk_size == 0 || options.chunk_size > MAX_CHUNK_SIZE {
            return Err(RecordingError::InvalidOptions(format!(
                "chunk_size {} is not within 1..={MAX_CHUNK_SIZE} bytes",
                options.chunk_size
            )));
        }
        let partial_path = partial_path(path)?;
        let file = File::create(&partial_path).map_err(io_error("create", &partial_path))?;
        let mcap_error = |source| RecordingError::Mcap {
            path: partial_path.clone(),
            source,
        };
        let mut mcap = WriteOptions::new()
            .compression(None)
            .profile(PROFILE)
            .library(format!(
                "tessera {}; {}",
                env!("CARGO_PKG_VERSION"),
                mcap::LIBRARY_IDENTIFIER
            ))
            .chunk_size(Some(options.chunk_size))
            .calculate_chunk_crcs(true)
            .create(BufWriter::with_capacity(256 * 1024, file))
            .map_err(mcap_error)?;
        // Before any message, so that it is outside (and before) every chunk.
        mcap.write_metadata(&records::Metadata {
            name: METADATA_NAME.to_owned(),
            metadata: metadata.clone(),
        })
        .map_err(mcap_error)?;
        Ok(Self {
            path: path.to_path_buf(),
            partial_path,
            mcap,
            channels: HashMap::new(),
            messages: 0,
            envelope: Vec::new(),
        })
    }

    /// Appends a record; its channel (by `record.topic`) is added on first use. `log_time_ms`
    /// (>= 0) orders and times it for replay; it is also the MCAP publish time.
    pub fn write(&mut self, record: &KafkaRecord, log_time_ms: i64) -> Result<(), RecordingError> {
        self.write_with_publish_time(record, log_time_ms, log_time_ms)
    }

    /// [`Self::write`] with a publish time (ms, >= 0) different from the log time.
    pub fn write_with_publish_time(
        &mut self,
        record: &KafkaRecord,
        log_time_ms: i64,
        publish_time_ms: i64,
    ) -> Result<(), RecordingError> {
        let log_time = self.nanos("log time", log_time_ms)?;
        let publish_time = self.nanos("publish time", publish_time_ms)?;
        self.envelope.clear();
        encode_envelope(record, &mut self.envelope).map_err(|err| {
            RecordingError::InvalidRecord {
                path: self.partial_path.clone(),
                what: format!(
                    "record at {}/{}/{}: {err}",
                    record.topic, record.partition, record.offset
                ),
            }
        })?;
        let channel = match self.channels.get_mut(&record.topic) {
            Some(channel) => channel,
            None => {
                let id = self
                    .mcap
                    .add_channel(0, &record.topic, MESSAGE_ENCODING, &BTreeMap::new())
                    .map_err(|source| RecordingError::Mcap {
                        path: self.partial_path.clone(),
                        source,
                    })?;
                self.channels
                    .entry(record.topic.clone())
                    .or_insert(WriterChannel {
                        id,
                        next_sequence: 0,
                        messages: 0,
                    })
            }
        };
        let header = MessageHeader {
            channel_id: channel.id,
            sequence: channel.next_sequence,
            log_time,
            publish_time,
        };
        self.mcap
            .write_to_known_channel(&header, &self.envelope)
            .map_err(|source| RecordingError::Mcap {
                path: self.partial_path.clone(),
                source,
            })?;
        // MCAP sequences are u32; past 4 billion messages on one topic they wrap, as MCAP allows.
        channel.next_sequence = channel.next_sequence.wrapping_add(1);
        channel.messages += 1;
        self.messages += 1;
        Ok(())
    }

    fn nanos(&self, what: &str, millis: i64) -> Result<u64, RecordingError> {
        u64::try_from(millis)
            .ok()
            .and_then(|millis| millis.checked_mul(NANOS_PER_MILLI))
            .ok_or_else(|| RecordingError::InvalidRecord {
                path: self.partial_path.clone(),
                what: format!("{what} {millis} ms is negative or too large for MCAP nanoseconds"),
            })
    }

    /// Messages written so far.
    pub fn messages(&self) -> u64 {
        self.messages
    }

    /// Closes the open chunk and flushes it to the file, so that a crash afterwards loses
    /// nothing written so far (call it every few seconds when recording live; each call ends a
    /// chunk, so not per record).
    pub fn flush(&mut self) -> Result<(), RecordingError> {
        self.mcap.flush().map_err(|source| RecordingError::Mcap {
            path: self.partial_path.clone(),
            source,
        })
    }

    /// Writes the summary and footer, syncs the file and renames it to its final path.
    pub fn finish(mut self) -> Result<WriteSummary, RecordingError> {
        self.mcap.finish().map_err(|source| RecordingError::Mcap {
            path: self.partial_path.clone(),
            source,
        })?;
        let file = self
            .mcap
            .into_inner()
            .into_inner()
            .map_err(|err| io_error("write", &self.partial_path)(err.into_error()))?;
        file.sync_all()
            .map_err(io_error("sync", &self.partial_path))?;
        let bytes = file
            .metadata()
            .map_err(io_error("stat", &self.partial_path))?
            .len();
        drop(file);
        std::fs::rename(&self.partial_path, &self.path)
            .map_err(io_error("rename to its final name", &self.partial_path))?;
        Ok(WriteSummary {
            path: self.path,
            messages: self.messages,
            per_topic: self
                .channels
                .into_iter()
                .map(|(topic, channel)| (topic, channel.messages))
                .collect(),
            bytes,
        })
    }
}

/// `<dir>/<name>.partial` for `<dir>/<name>`.
fn partial_path(path: &Path) -> Result<PathBuf, RecordingError> {
    let Some(name) = path.file_name() else {
        return Err(RecordingError::Io {
            action: "create",
            path: path.to_path_buf(),
            source: io::Error::new(io::ErrorKind::InvalidInput, "the path has no file name"),
        });
    };
    let mut partial = name.to_os_string();
    partial.push(".partial");
    Ok(path.with_file_name(partial))
}

// ---------------------------------------------------------------------------------------------
// Reader
// ---------------------------------------------------------------------------------------------

/// One message read from a recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// 0-based message index in file order.
    pub index: u64,
    /// MCAP sequence: per channel, from 0.
    pub sequence: u32,
    pub log_time_ms: i64,
    pub publish_time_ms: i64,
    pub record: KafkaRecord,
}

/// What kind of damage a [`Damage`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DamageKind {
    /// The input is not an MCAP file at all.
    NotMcap,
    /// The file ends early: cut short, or its writer never finished.
    Truncated,
    /// Bytes are wrong: CRC mismatch, malformed record, inconsistent summary.
    Corrupt,
    /// A message cannot be read as a Kafka record: unknown channel, other message encoding,
    /// undecodable envelope.
    BadMessage,
    /// Valid MCAP this build does not read (compressed chunks).
    Unsupported,
    /// Reading the input failed (I/O error).
    Unreadable,
}

/// Where and how a recording is damaged. The messages before it were intact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    pub kind: DamageKind,
    /// Messages yielded before the damage.
    pub messages_read: u64,
    /// Best known position in the file: the start of the damaged record or chunk.
    pub byte_offset: u64,
    /// Description, starting with "truncated: " or "not an MCAP file: " for those kinds.
    pub what: String,
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            DamageKind::NotMcap => f.write_str(&self.what),
            _ => write!(
                f,
                "damaged recording: after {} intact messages (byte {}): {}",
                self.messages_read, self.byte_offset, self.what
            ),
        }
    }
}

impl std::error::Error for Damage {}

/// Streams a recording's messages; see the module doc.
///
/// Construction reads up to the first message, so [`Self::metadata`] is ready at once (the
/// metadata record precedes every message). Yields `Ok` per message in file order, then at most
/// one `Err(Damage)`, then `None`.
pub struct RecordingReader<R: Read> {
    source: R,
    mcap: LinearReader,
    state: ReadState,
}

impl<R: Read> fmt::Debug for RecordingReader<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordingReader")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl RecordingReader<BufReader<File>> {
    /// Opens a recording file. Fails when it cannot be opened or is not MCAP at all; other
    /// damage is yielded by the iterator.
    pub fn open(path: &Path) -> Result<Self, RecordingError> {
        let file = File::open(path).map_err(io_error("open", path))?;
        let reader = Self::new(BufReader::with_capacity(256 * 1024, file));
        if let Some(Err(damage)) = reader.state.pending.front()
            && damage.kind == DamageKind::NotMcap
        {
            return Err(RecordingError::NotMcap {
                path: path.to_path_buf(),
                damage: damage.clone(),
            });
        }
        Ok(reader)
    }
}

impl<R: Read> RecordingReader<R> {
    /// Starts reading `source`, up to its first message.
    pub fn new(source: R) -> Self {
        // emit_chunks: chunks come whole, so we know where each starts and can report
        // positions; `read_chunk` validates and splits them. The end magic is expected: a
        // missing one ends in UnexpectedEof, which `eof_damage` turns into "truncated".
        let options = LinearReaderOptions::default()
            .with_emit_chunks(true)
            .with_validate_data_section_crc(true)
            .with_validate_summary_section_crc(true)
            .with_check_finishes_after_end_magic(true)
            .with_record_length_limit(MAX_RECORD_BYTES);
        let mut reader = Self {
            source,
            mcap: LinearReader::new_with_options(options),
            state: ReadState {
                next_record: mcap::MAGIC.len() as u64,
                record_head_complete: true,
                ..ReadState::default()
            },
        };
        reader.fill();
        reader
    }

    /// The "tessera" metadata; empty when the file has none (before its first message).
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.state.metadata
    }

    /// The MCAP header's profile, once read (`Some("tessera")` for recordings).
    pub fn profile(&self) -> Option<&str> {
        self.state.profile.as_deref()
    }

    /// Topics of the channels seen so far, by channel id.
    pub fn topics(&self) -> Vec<&str> {
        self.state
            .channels
            .values()
            .map(|channel| channel.topic.as_str())
            .collect()
    }

    /// Bytes read from the source so far (for progress).
    pub fn bytes_read(&self) -> u64 {
        self.state.bytes_fed
    }

    /// Drives the MCAP reader until an item is pending or the input ends.
    fn fill(&mut self) {
        while self.state.pending.is_empty() && !self.state.ended {
            let event = match self.mcap.next_event() {
                // Only after the end magic (and nothing after it): the file is complete.
                None => {
                    self.state.ended = true;
                    return;
                }
                Some(event) => event,
            };
            match event {
                Err(err) => {
                    let damage = self.state.reader_damage(err);
                    self.state.fail(damage);
                }
                Ok(LinearReadEvent::ReadRequest(wanted)) => {
                    let buffer = self.mcap.insert(wanted);
                    match read_some(&mut self.source, buffer) {
                        Ok(got) => {
                            self.state.fed(&buffer[..got]);
                            self.mcap.notify_read(got);
                        }
                        Err(err) => {
                            let damage = self.state.damage(
                                DamageKind::Unreadable,
                                self.state.bytes_fed,
                                format!("read error at byte {}: {err}", self.state.bytes_fed),
                            );
                            self.state.fail(damage);
                        }
                    }
                }
                Ok(LinearReadEvent::Record { opcode, data }) => {
                    let offset = self.state.next_record;
                    self.state.advance(RECORD_PREFIX_BYTES + data.len() as u64);
                    if let Err(damage) = self.state.on_record(opcode, data, offset) {
                        self.state.fail(damage);
                    }
                }
            }
        }
    }
}

impl<R: Read> Iterator for RecordingReader<R> {
    type Item = Result<Recorded, Damage>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.state.pending.is_empty() {
            self.fill();
        }
        self.state.pending.pop_front()
    }
}

/// `read` that retries when interrupted; 0 means end of input.
fn read_some(source: &mut impl Read, buffer: &mut [u8]) -> io::Result<usize> {
    loop {
        match source.read(buffer) {
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            result => return result,
        }
    }
}

/// A channel as read from the file.
#[derive(Debug)]
struct ReadChannel {
    topic: String,
    message_encoding: String,
}

/// Everything the reader knows besides the MCAP reader itself.
#[derive(Debug, Default)]
struct ReadState {
    metadata: BTreeMap<String, String>,
    profile: Option<String>,
    /// By channel id.
    channels: BTreeMap<u16, ReadChannel>,
    /// Decoded messages (the next message's index).
    messages_read: u64,
    /// Items ready to yield: a chunk's messages, or a damage last.
    pending: VecDeque<Result<Recorded, Damage>>,
    /// No more items will be added.
    ended: bool,
    /// Bytes given to the MCAP reader: the file position it has reached.
    bytes_fed: u64,
    /// Offset of the next top-level record (the first one follows the 8-byte magic).
    next_record: u64,
    /// The file's first bytes, to show what a non-MCAP file starts with.
    magic: [u8; 8],
    /// The first bytes of the next top-level record (opcode and length), captured as they are
    /// fed: the MCAP reader does not tell where it stopped.
    record_head: [u8; 9],
    /// Whether `record_head` saw every fed byte of that record (see `advance`).
    record_head_complete: bool,
    /// Top-level records read so far.
    records: u64,
    seen_footer: bool,
}

impl ReadState {
    fn damage(&self, kind: DamageKind, byte_offset: u64, what: String) -> Damage {
        Damage {
            kind,
            messages_read: self.messages_read,
            byte_offset,
            what,
        }
    }

    fn fail(&mut self, damage: Damage) {
        self.pending.push_back(Err(damage));
        self.ended = true;
    }

    /// Records bytes just given to the MCAP reader.
    fn fed(&mut self, bytes: &[u8]) {
        capture(&mut self.magic, 0, bytes, self.bytes_fed);
        capture(
            &mut self.record_head,
            self.next_record,
            bytes,
            self.bytes_fed,
        );
        self.bytes_fed += bytes.len() as u64;
    }

    /// Moves past the top-level record just yielded, `len` bytes long.
    fn advance(&mut self, len: u64) {
        self.records += 1;
        self.next_record += len;
        self.record_head = [0; 9];
        // The MCAP reader asks for exactly the bytes of the record it reads, so none of the
        // next record's bytes should have been fed yet; if some were, its head is unknown.
        self.record_head_complete = self.bytes_fed <= self.next_record;
    }

    /// Handles one top-level record that starts at `offset`.
    fn on_record(&mut self, opcode: u8, data: &[u8], offset: u64) -> Result<(), Damage> {
        let record = mcap::parse_record(opcode, data).map_err(|err| {
            self.damage(
                DamageKind::Corrupt,
                offset,
                format!(
                    "{} record at byte {offset} does not parse: {err}",
                    opcode_name(opcode)
                ),
            )
        })?;
        if self.records == 1 && !matches!(record, Record::Header(_)) {
            return Err(self.damage(
                DamageKind::NotMcap,
                offset,
                format!(
                    "not an MCAP file: its first record is a {} (opcode {opcode:#04x}), not a header",
                    opcode_name(opcode)
                ),
            ));
        }
        match record {
            Record::Header(header) => self.profile = Some(header.profile),
            // The first one wins: recordings have exactly one.
            Record::Metadata(metadata)
                if metadata.name == METADATA_NAME && self.metadata.is_empty() =>
            {
                self.metadata = metadata.metadata;
            }
            Record::Channel(channel) => self.on_channel(channel, offset)?,
            Record::Message { header, data } => self.on_message(&header, &data, offset)?,
            Record::Chunk { header, .. } => self.on_chunk(&header, data, offset)?,
            Record::Statistics(statistics) if statistics.message_count != self.messages_read => {
                return Err(self.damage(
                    DamageKind::Corrupt,
                    offset,
                    format!(
                        "the summary counts {} messages but the data section holds {}",
                        statistics.message_count, self.messages_read
                    ),
                ));
            }
            Record::Footer(_) => self.seen_footer = true,
            // Indexes, schemas, data end, other metadata: nothing to check or keep.
            _ => {}
        }
        Ok(())
    }

    fn on_channel(&mut self, channel: records::Channel, offset: u64) -> Result<(), Damage> {
        if let Some(known) = self.channels.get(&channel.id) {
            // The summary repeats every channel: identical repeats are expected.
            if known.topic == channel.topic && known.message_encoding == channel.message_encoding {
                return Ok(());
            }
            return Err(self.damage(
                DamageKind::Corrupt,
                offset,
                format!(
                    "channel id {} redefined at byte {offset} as '{}' ({}), was '{}' ({})",
                    channel.id,
                    channel.topic,
                    channel.message_encoding,
                    known.topic,
                    known.message_encoding
                ),
            ));
        }
        self.channels.insert(
            channel.id,
            ReadChannel {
                topic: channel.topic,
                message_encoding: channel.message_encoding,
            },
        );
        Ok(())
    }

    fn on_message(
        &mut self,
        header: &MessageHeader,
        data: &[u8],
        offset: u64,
    ) -> Result<(), Damage> {
        let index = self.messages_read;
        let Some(channel) = self.channels.get(&header.channel_id) else {
            return Err(self.damage(
                DamageKind::BadMessage,
                offset,
                format!(
                    "message {index} at byte {offset} is on unknown channel id {}",
                    header.channel_id
                ),
            ));
        };
        if channel.message_encoding != MESSAGE_ENCODING {
            return Err(self.damage(
                DamageKind::BadMessage,
                offset,
                format!(
                    "message {index} at byte {offset} on channel '{}' has message encoding '{}', not '{MESSAGE_ENCODING}'",
                    channel.topic, channel.message_encoding
                ),
            ));
        }
        let record = decode_envelope(&channel.topic, data).map_err(|err| {
            let envelope_at = offset + RECORD_PREFIX_BYTES + 22;
            self.damage(
                DamageKind::BadMessage,
                offset,
                format!(
                    "message {index} at byte {offset} on channel '{}': bad envelope (starting at byte {envelope_at}): {err}",
                    channel.topic
                ),
            )
        })?;
        self.pending.push_back(Ok(Recorded {
            index,
            sequence: header.sequence,
            log_time_ms: millis(header.log_time),
            publish_time_ms: millis(header.publish_time),
            record,
        }));
        self.messages_read += 1;
        Ok(())
    }

    /// Reads a whole chunk record (`body`, starting at `offset`): its CRC is checked before any
    /// of its records is used, so a damaged chunk yields nothing.
    fn on_chunk(
        &mut self,
        header: &records::ChunkHeader,
        body: &[u8],
        offset: u64,
    ) -> Result<(), Damage> {
        if !header.compression.is_empty() {
            return Err(self.damage(
                DamageKind::Unsupported,
                offset,
                format!(
                    "chunk at byte {offset} is compressed with '{}'; this build reads uncompressed chunks only",
                    header.compression
                ),
            ));
        }
        // A second MCAP reader over just this chunk record validates the CRC first
        // (prevalidate) and splits the records, whose lengths give their exact positions.
        let mut chunk_reader = LinearReader::new_with_options(
            LinearReaderOptions::default()
                .with_skip_start_magic(true)
                .with_skip_end_magic(true)
                .with_prevalidate_chunk_crcs(true)
                .with_record_length_limit(MAX_RECORD_BYTES),
        );
        let mut prefix = [0u8; 9];
        prefix[0] = op::CHUNK;
        prefix[1..].copy_from_slice(&(body.len() as u64).to_le_bytes());
        let mut input = (&prefix[..]).chain(body);
        let mut record_offset = offset
            + RECORD_PREFIX_BYTES
            + CHUNK_HEADER_FIXED_BYTES
            + header.compression.len() as u64;
        while let Some(event) = chunk_reader.next_event() {
            match event {
                Ok(LinearReadEvent::ReadRequest(wanted)) => {
                    // Reading from memory cannot fail; 0 at the end tells the reader so.
                    let got = read_some(&mut input, chunk_reader.insert(wanted)).unwrap_or(0);
                    chunk_reader.notify_read(got);
                }
                Ok(LinearReadEvent::Record { opcode, data }) => {
                    let at = record_offset;
                    record_offset += RECORD_PREFIX_BYTES + data.len() as u64;
                    let record = mcap::parse_record(opcode, data).map_err(|err| {
                        self.damage(
                            DamageKind::Corrupt,
                            at,
                            format!(
                                "{} record at byte {at} in the chunk at byte {offset} does not parse: {err}",
                                opcode_name(opcode)
                            ),
                        )
                    })?;
                    match record {
                        Record::Channel(channel) => self.on_channel(channel, at)?,
                        Record::Message { header, data } => self.on_message(&header, &data, at)?,
                        // Schemas and unknown records: recordings have none; skip them.
                        _ => {}
                    }
                }
                Err(McapError::BadChunkCrc { saved, calculated }) => {
                    return Err(self.damage(
                        DamageKind::Corrupt,
                        offset,
                        format!(
                            "chunk CRC mismatch in the chunk at byte {offset} (expected {saved:#010x}, found {calculated:#010x})"
                        ),
                    ));
                }
                Err(err) => {
                    return Err(self.damage(
                        DamageKind::Corrupt,
                        offset,
                        format!(
                            "malformed chunk at byte {offset} (near byte {record_offset}): {err}"
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Turns an error of the top-level MCAP reader into a damage report.
    fn reader_damage(&self, err: McapError) -> Damage {
        let at = self.next_record;
        match err {
            McapError::UnexpectedEof => self.eof_damage(),
            McapError::BadMagic if self.records == 0 => self.damage(
                DamageKind::NotMcap,
                0,
                format!(
                    "not an MCAP file: it starts with {} instead of the MCAP magic {}",
                    hex(&self.magic),
                    hex(mcap::MAGIC)
                ),
            ),
            McapError::BadMagic => self.damage(
                DamageKind::Corrupt,
                at,
                format!("bad end magic at byte {at}"),
            ),
            McapError::RecordTooLarge { opcode, len }
                if opcode == op::CHUNK && len == UNFINISHED_CHUNK_LEN =>
            {
                self.damage(
                    DamageKind::Truncated,
                    at,
                    format!(
                        "truncated: unfinished chunk at byte {at} (its writer stopped before closing it; file ends at byte {})",
                        self.bytes_fed
                    ),
                )
            }
            McapError::RecordTooLarge { opcode, len } => self.damage(
                DamageKind::Corrupt,
                at,
                format!(
                    "{} record at byte {at} declares {len} bytes, over the limit of {MAX_RECORD_BYTES} (corrupt length?)",
                    opcode_name(opcode)
                ),
            ),
            McapError::BadDataCrc { saved, calculated } => self.damage(
                DamageKind::Corrupt,
                at,
                format!("data section CRC mismatch (expected {saved:#010x}, found {calculated:#010x})"),
            ),
            McapError::BadSummaryCrc { saved, calculated } => self.damage(
                DamageKind::Corrupt,
                at,
                format!("summary section CRC mismatch (expected {saved:#010x}, found {calculated:#010x})"),
            ),
            McapError::BytesAfterEndMagic => self.damage(
                DamageKind::Corrupt,
                at,
                format!("unexpected bytes after the end magic at byte {at}"),
            ),
            err => self.damage(
                DamageKind::Corrupt,
                at,
                format!("malformed record at byte {at}: {err}"),
            ),
        }
    }

    /// The input ended where the MCAP reader needed more.
    fn eof_damage(&self) -> Damage {
        let end = self.bytes_fed;
        let at = self.next_record;
        if self.records == 0 && end <= mcap::MAGIC.len() as u64 {
            let what = if end == 0 {
                "not an MCAP file: it is empty".to_owned()
            } else {
                format!(
                    "not an MCAP file: it is only {end} bytes long, shorter than the MCAP magic"
                )
            };
            return self.damage(DamageKind::NotMcap, 0, what);
        }
        if self.seen_footer {
            return self.damage(
                DamageKind::Truncated,
                at,
                format!("truncated: file ends at byte {end} inside the end magic"),
            );
        }
        if end == at {
            return self.damage(
                DamageKind::Truncated,
                at,
                format!(
                    "truncated: no footer: file ends at byte {end}, after its last complete record (its writer did not finish)"
                ),
            );
        }
        let present = end.saturating_sub(at);
        if present >= RECORD_PREFIX_BYTES && self.record_head_complete {
            let opcode = self.record_head[0];
            let mut len = [0u8; 8];
            len.copy_from_slice(&self.record_head[1..]);
            let len = u64::from_le_bytes(len);
            self.damage(
                DamageKind::Truncated,
                at,
                format!(
                    "truncated: file ends at byte {end} inside a {} record starting at byte {at} (declared {len} bytes, {} present)",
                    opcode_name(opcode),
                    present - RECORD_PREFIX_BYTES
                ),
            )
        } else {
            self.damage(
                DamageKind::Truncated,
                at,
                format!("truncated: file ends at byte {end} inside a record starting at byte {at}"),
            )
        }
    }
}

/// Copies the part of `fed` (file bytes from `fed_start`) that falls within the window of
/// `window.len()` bytes from `window_start`.
fn capture(window: &mut [u8], window_start: u64, fed: &[u8], fed_start: u64) {
    let window_end = window_start + window.len() as u64;
    let fed_end = fed_start + fed.len() as u64;
    let low = window_start.max(fed_start);
    let high = window_end.min(fed_end);
    if low < high {
        let (from, to) = ((low - fed_start) as usize, (high - fed_start) as usize);
        let into = (low - window_start) as usize;
        window[into..into + (to - from)].copy_from_slice(&fed[from..to]);
    }
}

fn millis(nanos: u64) -> i64 {
    // u64::MAX / 1e6 is far below i64::MAX, so this never saturates.
    i64::try_from(nanos / NANOS_PER_MILLI).unwrap_or(i64::MAX)
}

fn hex(bytes: &[u8]) -> String {
    let digits: Vec<String> = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("0x{}", digits.concat())
}

fn opcode_name(opcode: u8) -> &'static str {
    match opcode {
        op::HEADER => "header",
        op::FOOTER => "footer",
        op::SCHEMA => "schema",
        op::CHANNEL => "channel",
        op::MESSAGE => "message",
        op::CHUNK => "chunk",
        op::MESSAGE_INDEX => "message index",
        op::CHUNK_INDEX => "chunk index",
        op::ATTACHMENT => "attachment",
        op::ATTACHMENT_INDEX => "attachment index",
        op::STATISTICS => "statistics",
        op::METADATA => "metadata",
        op::METADATA_INDEX => "metadata index",
        op::SUMMARY_OFFSET => "summary offset",
        op::DATA_END => "data end",
        _ => "unknown",
    }
}

// ---------------------------------------------------------------------------------------------
// Scan
// ---------------------------------------------------------------------------------------------

/// What [`scan`] found in a recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    pub metadata: BTreeMap<String, String>,
    /// The MCAP header's profile (`tessera` for recordings).
    pub profile: Option<String>,
    /// By topic, including channels without messages.
    pub channels: BTreeMap<String, ChannelScan>,
    /// Intact messages.
    pub messages: u64,
    /// Earliest and latest log time of the intact messages.
    pub start_log_time_ms: Option<i64>,
    pub end_log_time_ms: Option<i64>,
    /// File size.
    pub bytes: u64,
    /// The damage that ended the scan, if any.
    pub damage: Option<Damage>,
}

/// One channel of a [`Scan`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelScan {
    pub messages: u64,
    pub start_log_time_ms: Option<i64>,
    pub end_log_time_ms: Option<i64>,
}

/// Reads the whole file once (for `tessera replay info` and `verify`): metadata, channels with
/// message counts, log time range, total messages, and the damage if any. Fails when the file
/// cannot be opened or is not MCAP.
pub fn scan(path: &Path) -> Result<Scan, RecordingError> {
    let bytes = std::fs::metadata(path)
        .map_err(io_error("stat", path))?
        .len();
    let mut reader = RecordingReader::open(path)?;
    let mut found = Scan {
        metadata: BTreeMap::new(),
        profile: None,
        channels: BTreeMap::new(),
        messages: 0,
        start_log_time_ms: None,
        end_log_time_ms: None,
        bytes,
        damage: None,
    };
    for item in reader.by_ref() {
        match item {
            Ok(recorded) => {
                let time = recorded.log_time_ms;
                found.messages += 1;
                widen(
                    &mut found.start_log_time_ms,
                    &mut found.end_log_time_ms,
                    time,
                );
                let channel = found.channels.entry(recorded.record.topic).or_default();
                channel.messages += 1;
                widen(
                    &mut channel.start_log_time_ms,
                    &mut channel.end_log_time_ms,
                    time,
                );
            }
            Err(damage) => found.damage = Some(damage),
        }
    }
    for topic in reader.topics() {
        found.channels.entry(topic.to_owned()).or_default();
    }
    found.metadata = reader.metadata().clone();
    found.profile = reader.profile().map(str::to_owned);
    Ok(found)
}

fn widen(start: &mut Option<i64>, end: &mut Option<i64>, time: i64) {
    *start = Some(start.map_or(time, |start| start.min(time)));
    *end = Some(end.map_or(time, |end| end.max(time)));
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn record(topic: &str, i: u64) -> KafkaRecord {
        KafkaRecord {
            topic: topic.to_owned(),
            partition: (i % 3) as i32,
            offset: 1000 + i as i64,
            timestamp_ms: if i.is_multiple_of(5) {
                None
            } else {
                Some(1_700_000_000_000 + i as i64)
            },
            key: match i % 4 {
                0 => None,
                1 => Some(Vec::new()),
                _ => Some(vec![0, 0xff, i as u8, 0x80]),
            },
            headers: (0..i % 3)
                .map(|h| {
                    let value = if h == 1 {
                        None
                    } else {
                        Some(format!("v{i}-{h}").into_bytes())
                    };
                    (format!("h{h}"), value)
                })
                .collect(),
            // A unique, findable payload per record (the flipped-byte test looks for it).
            payload: if i % 7 == 3 {
                None
            } else {
                Some(format!("payload-{i:04}-{}", "x".repeat((i % 11) as usize * 10)).into_bytes())
            },
        }
    }

    fn encode(record: &KafkaRecord) -> Vec<u8> {
        let mut out = Vec::new();
        encode_envelope(record, &mut out).expect("encodes");
        out
    }

    fn metadata() -> BTreeMap<String, String> {
        BTreeMap::from([
            ("tessera_version".to_owned(), "0.1.0".to_owned()),
            ("kind".to_owned(), "test".to_owned()),
            ("config".to_owned(), "{\"a\": 1}".to_owned()),
        ])
    }

    /// 50 records over two topics, log times increasing by 10 ms.
    fn records() -> Vec<(KafkaRecord, i64)> {
        (0..50u64)
            .map(|i| {
                let topic = if i.is_multiple_of(3) {
                    "frames.b"
                } else {
                    "frames.a"
                };
                (record(topic, i), 5_000 + 10 * i as i64)
            })
            .collect()
    }

    fn write_recording(path: &Path, chunk_size: u64) -> WriteSummary {
        let options = WriterOptions { chunk_size };
        let mut writer =
            RecordingWriter::create_with_options(path, &metadata(), &options).expect("create");
        for (record, log_time) in records() {
            writer.write(&record, log_time).expect("write");
        }
        assert_eq!(writer.messages(), 50);
        writer.finish().expect("finish")
    }

    fn read_all(bytes: &[u8]) -> (Vec<Recorded>, Option<Damage>, usize) {
        let mut reader = RecordingReader::new(Cursor::new(bytes));
        let mut ok = Vec::new();
        let mut damage = None;
        let mut errors = 0;
        for item in reader.by_ref() {
            match item {
                Ok(recorded) => {
                    assert!(damage.is_none(), "a message after the damage");
                    ok.push(recorded);
                }
                Err(err) => {
                    errors += 1;
                    damage = Some(err);
                }
            }
        }
        assert!(reader.next().is_none());
        (ok, damage, errors)
    }

    /// Number of messages in each chunk, with the chunk's end offset, by mcap's own reader.
    fn chunk_ends(bytes: &[u8]) -> Vec<(u64, usize)> {
        let summary = mcap::Summary::read(bytes)
            .expect("summary")
            .expect("has summary");
        summary
            .chunk_indexes
            .iter()
            .map(|index| {
                let count = summary.stream_chunk(bytes, index).expect("chunk").count();
                (index.chunk_start_offset + index.chunk_length, count)
            })
            .collect()
    }

    fn assert_prefix(read: &[Recorded], count: usize) {
        let originals = records();
        assert_eq!(read.len(), count);
        for (i, recorded) in read.iter().enumerate() {
            assert_eq!(recorded.index, i as u64);
            assert_eq!(recorded.record, originals[i].0);
            assert_eq!(recorded.log_time_ms, originals[i].1);
        }
    }

    // --- envelope ---

    #[test]
    fn envelope_round_trips_explicit_cases() {
        let cases = [
            KafkaRecord {
                topic: "t".to_owned(),
                partition: 0,
                offset: -1,
                timestamp_ms: None,
                key: None,
                headers: Vec::new(),
                payload: None,
            },
            KafkaRecord {
                topic: "t".to_owned(),
                partition: i32::MAX,
                offset: i64::MAX,
                timestamp_ms: Some(-5),
                key: Some(Vec::new()),
                headers: vec![("".to_owned(), Some(Vec::new())), ("n".to_owned(), None)],
                payload: Some(Vec::new()),
            },
            KafkaRecord {
                topic: "t".to_owned(),
                partition: -7,
                offset: 42,
                timestamp_ms: Some(i64::MAX),
                key: Some(vec![0xff, 0xff, 0xff, 0xff, 0, 1]),
                headers: vec![
                    ("dup".to_owned(), None),
                    ("dup".to_owned(), Some(vec![1, 2])),
                    ("ünïcode".to_owned(), Some(vec![0xff; 300])),
                ],
                payload: Some((0..=255).collect()),
            },
        ];
        for case in &cases {
            let bytes = encode(case);
            assert_eq!(bytes.len(), envelope_len(case));
            assert_eq!(&decode_envelope("t", &bytes).expect("decodes"), case);
        }
        assert_eq!(cases[2].header("dup"), Some(&[1u8, 2][..]));
        assert_eq!(cases[1].header("n"), None);
        assert_eq!(cases[0].header("missing"), None);
    }

    #[test]
    fn envelope_round_trips_generated_variations() {
        for i in 0..300 {
            let original = record("topic", i);
            let bytes = encode(&original);
            assert_eq!(decode_envelope("topic", &bytes), Ok(original), "case {i}");
            // Anything after the payload is rejected.
            let mut longer = bytes.clone();
            longer.push(0);
            assert_eq!(
                decode_envelope("topic", &longer),
                Err(EnvelopeError::TrailingBytes {
                    at: bytes.len(),
                    count: 1
                })
            );
            // Every truncation is rejected as truncation.
            for cut in 0..bytes.len() {
                assert!(
                    matches!(
                        decode_envelope("topic", &bytes[..cut]),
                        Err(EnvelopeError::Truncated { .. })
                    ),
                    "case {i} cut at {cut}"
                );
            }
        }
    }

    #[test]
    fn every_truncation_names_the_field() {
        use EnvelopeField::*;
        let original = KafkaRecord {
            topic: "t".to_owned(),
            partition: 1,
            offset: 2,
            timestamp_ms: Some(3),
            key: Some(b"k".to_vec()),
            headers: vec![("h".to_owned(), Some(b"v".to_vec()))],
            payload: Some(b"p".to_vec()),
        };
        let bytes = encode(&original);
        // The layout, field by field, as documented in the module doc.
        let layout = [
            (Version, 1),
            (Partition, 4),
            (Offset, 8),
            (Timestamp, 8),
            (KeyLength, 4),
            (Key, 1),
            (HeaderCount, 4),
            (HeaderNameLength(0), 4),
            (HeaderName(0), 1),
            (HeaderValueLength(0), 4),
            (HeaderValue(0), 1),
            (PayloadLength, 4),
            (Payload, 1),
        ];
        assert_eq!(
            layout.iter().map(|(_, len)| len).sum::<usize>(),
            bytes.len()
        );
        let mut start = 0;
        for (field, len) in layout {
            for cut in start..start + len {
                let err = decode_envelope("t", &bytes[..cut]).expect_err("truncated");
                assert_eq!(
                    err,
                    EnvelopeError::Truncated {
                        field,
                        at: start,
                        needed: len,
                        available: cut - start
                    },
                    "cut at {cut}"
                );
                assert!(err.to_string().contains(&field.to_string()), "{err}");
            }
            start += len;
        }
        assert_eq!(decode_envelope("t", &bytes), Ok(original));
    }

    #[test]
    fn envelope_rejects_bad_version_utf8_and_null_name() {
        let original = record("t", 2); // two headers
        let mut bytes = encode(&original);
        bytes[0] = 2;
        assert_eq!(
            decode_envelope("t", &bytes),
            Err(EnvelopeError::UnsupportedVersion { found: 2 })
        );

        let mut bytes = encode(&original);
        // The first header name starts after the fixed fields, the key and the counts.
        let key_len = original.key.as_ref().map_or(0, Vec::len);
        let name_at = 1 + 4 + 8 + 8 + 4 + key_len + 4 + 4;
        assert_eq!(&bytes[name_at..name_at + 2], b"h0");
        bytes[name_at + 1] = 0xff;
        let err = decode_envelope("t", &bytes).expect_err("not UTF-8");
        assert_eq!(
            err,
            EnvelopeError::NotUtf8 {
                field: EnvelopeField::HeaderName(0),
                at: name_at,
                invalid_at: name_at + 1
            }
        );
        assert!(err.to_string().contains("header 0 name"), "{err}");

        let mut bytes = encode(&original);
        bytes[name_at - 4..name_at].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            decode_envelope("t", &bytes),
            Err(EnvelopeError::Truncated {
                field: EnvelopeField::HeaderName(0),
                ..
            })
        ));
    }

    // --- writer and reader ---

    #[test]
    fn writer_reader_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("rec.mcap");
        let summary = write_recording(&path, DEFAULT_CHUNK_SIZE);
        assert_eq!(summary.messages, 50);
        assert_eq!(summary.per_topic.get("frames.a"), Some(&33));
        assert_eq!(summary.per_topic.get("frames.b"), Some(&17));
        assert!(!dir.path().join("rec.mcap.partial").exists());
        let bytes = std::fs::read(&path).expect("read");
        assert_eq!(summary.bytes, bytes.len() as u64);

        let mut reader = RecordingReader::open(&path).expect("open");
        assert_eq!(reader.metadata(), &metadata());
        assert_eq!(reader.profile(), Some(PROFILE));
        let read: Vec<Recorded> = reader.by_ref().map(|item| item.expect("intact")).collect();
        assert_prefix(&read, 50);
        let mut next_sequence: HashMap<String, u32> = HashMap::new();
        for recorded in &read {
            let sequence = next_sequence
                .entry(recorded.record.topic.clone())
                .or_default();
            assert_eq!(recorded.sequence, *sequence);
            *sequence += 1;
            assert_eq!(recorded.publish_time_ms, recorded.log_time_ms);
        }
        assert_eq!(reader.topics(), vec!["frames.b", "frames.a"]);
        assert_eq!(reader.bytes_read(), bytes.len() as u64);
    }

    #[test]
    fn publish_time_and_bad_times() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("rec.mcap");
        let mut writer = RecordingWriter::create(&path, &BTreeMap::new()).expect("create");
        writer
            .write_with_publish_time(&record("t", 1), 10, 7)
            .expect("write");
        let err = writer
            .write(&record("t", 2), -1)
            .expect_err("negative log time");
        assert!(err.to_string().contains("log time -1 ms"), "{err}");
        assert!(writer.write(&record("t", 2), i64::MAX).is_err());
        writer.finish().expect("finish");
        let read: Vec<Recorded> = RecordingReader::open(&path)
            .expect("open")
            .map(|item| item.expect("intact"))
            .collect();
        assert_eq!(read.len(), 1);
        assert_eq!((read[0].log_time_ms, read[0].publish_time_ms), (10, 7));
    }

    #[test]
    fn file_is_standard_mcap_with_metadata_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("rec.mcap");
        write_recording(&path, 1024);
        let bytes = std::fs::read(&path).expect("read");

        // mcap's own reader: messages, channels, summary, uncompressed chunks with CRCs.
        let messages: Vec<mcap::Message> = mcap::MessageStream::new(&bytes)
            .expect("stream")
            .map(|message| message.expect("message"))
            .collect();
        assert_eq!(messages.len(), 50);
        assert!(
            messages
                .iter()
                .all(|m| m.channel.message_encoding == MESSAGE_ENCODING
                    && m.channel.schema.is_none()
                    && m.channel.metadata.is_empty())
        );
        assert_eq!(messages[1].log_time, 5_010 * NANOS_PER_MILLI);
        let summary = mcap::Summary::read(&bytes)
            .expect("summary")
            .expect("has summary");
        assert_eq!(
            summary.stats.as_ref().map(|stats| stats.message_count),
            Some(50)
        );
        assert!(summary.chunk_indexes.len() > 3);
        assert!(
            summary
                .chunk_indexes
                .iter()
                .all(|index| index.compression.is_empty())
        );
        assert_eq!(summary.metadata_indexes.len(), 1);

        // Magic, header, then the metadata record before any chunk.
        let header_len = u64::from_le_bytes(bytes[9..17].try_into().expect("8 bytes")) as usize;
        let after_header = 8 + 9 + header_len;
        assert_eq!(bytes[after_header], op::METADATA);
        assert_eq!(summary.metadata_indexes[0].offset, after_header as u64);
        assert!(summary.chunk_indexes[0].chunk_start_offset > after_header as u64);
    }

    #[test]
    fn cut_files_yield_their_complete_chunks_then_truncated() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("rec.mcap");
        write_recording(&path, 512);
        let bytes = std::fs::read(&path).expect("read");
        let chunks = chunk_ends(&bytes);
        assert!(chunks.len() > 5, "small chunks expected");

        let complete = |cut: usize| {
            chunks
                .iter()
                .filter(|(end, _)| *end <= cut as u64)
                .map(|(_, count)| count)
                .sum::<usize>()
        };
        for percent in [30, 60, 99] {
            let cut = bytes.len() * percent / 100;
            let (read, damage, errors) = read_all(&bytes[..cut]);
            let damage = damage.expect("damage");
            assert_eq!(errors, 1);
            assert_prefix(&read, complete(cut));
            assert_eq!(damage.kind, DamageKind::Truncated, "{damage}");
            assert!(damage.what.starts_with("truncated"), "{damage}");
            assert!(
                damage.what.contains(&format!("file ends at byte {cut}")),
                "{damage}"
            );
            assert_eq!(damage.messages_read, read.len() as u64);
        }

        // Cut inside the second chunk: the message names the chunk and where it starts.
        let summary = mcap::Summary::read(&bytes)
            .expect("summary")
            .expect("has summary");
        let second = summary.chunk_indexes[1].chunk_start_offset;
        let cut = second as usize + 100;
        let (read, damage, _) = read_all(&bytes[..cut]);
        assert_prefix(&read, chunks[0].1);
        let damage = damage.expect("damage");
        assert_eq!(damage.byte_offset, second);
        assert!(
            damage.what.contains(&format!(
                "file ends at byte {cut} inside a chunk record starting at byte {second}"
            )),
            "{damage}"
        );

        // Cut right after complete chunks (and their message indexes): everything, then
        // "no footer".
        let cut = summary.chunk_indexes[3].chunk_start_offset as usize;
        let (read, damage, _) = read_all(&bytes[..cut]);
        assert_prefix(&read, complete(cut));
        let damage = damage.expect("damage");
        assert_eq!(damage.kind, DamageKind::Truncated);
        assert!(damage.what.contains("truncated: no footer"), "{damage}");
        assert_eq!(damage.byte_offset, cut as u64);

        // Cut inside the end magic.
        let (read, damage, _) = read_all(&bytes[..bytes.len() - 3]);
        assert_prefix(&read, 50);
        assert!(damage.expect("damage").what.contains("end magic"));
    }

    #[test]
    fn crashed_writer_leaves_a_readable_partial_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("rec.mcap");
        let options = WriterOptions {
            chunk_size: MAX_CHUNK_SIZE,
        };
        let mut writer =
            RecordingWriter::create_with_options(&path, &metadata(), &options).expect("create");
        let originals = records();
        for (record, log_time) in &originals[..10] {
            writer.write(record, *log_time).expect("write");
        }
        writer.flush().expect("flush");
        // Enough for the file buffer to spill part of the open chunk onto disk.
        let big = KafkaRecord {
            payload: Some(vec![7; 600 * 1024]),
            ..record("frames.a", 99)
        };
        writer.write(&big, 9_999).expect("write");
        // A crash: nothing is finished, flushed or renamed.
        std::mem::forget(writer);

        assert!(!path.exists());
        let partial = dir.path().join("rec.mcap.partial");
        let mut reader = RecordingReader::open(&partial).expect("open");
        assert_eq!(reader.metadata(), &metadata());
        let read: Vec<Recorded> = reader.by_ref().map_while(Result::ok).collect();
        assert_prefix(&read, 10);
        let scan = scan(&partial).expect("scan");
        let damage = scan.damage.expect("damage");
        assert_eq!(damage.kind, DamageKind::Truncated);
        assert!(damage.what.contains("unfinished chunk"), "{damage}");
    }

    #[test]
    fn flipped_byte_yields_the_intact_prefix_then_a_crc_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("rec.mcap");
        write_recording(&path, 512);
        let mut bytes = std::fs::read(&path).expect("read");
        let chunks = chunk_ends(&bytes);

        let needle = b"payload-0025";
        let at = bytes
            .windows(needle.len())
            .position(|window| window == needle)
            .expect("payload 25 in the file");
        bytes[at + 3] ^= 0x01;
        let intact: usize = chunks
            .iter()
            .filter(|(end, _)| *end <= at as u64)
            .map(|(_, count)| count)
            .sum();
        assert!(intact > 0 && intact <= 25);

        let (read, damage, errors) = read_all(&bytes);
        assert_eq!(errors, 1);
        assert_prefix(&read, intact);
        let damage = damage.expect("damage");
        assert_eq!(damage.kind, DamageKind::Corrupt);
        assert!(damage.what.contains("chunk CRC mismatch"), "{damage}");
        assert!(damage.byte_offset < at as u64);
        assert!(
            damage.to_string().starts_with(&format!(
                "damaged recording: after {intact} intact messages (byte {})",
                damage.byte_offset
            )),
            "{damage}"
        );
    }

    #[test]
    fn not_mcap_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notes.txt");
        std::fs::write(&path, "hello, this is not an MCAP file at all").expect("write");
        let err = RecordingReader::open(&path).expect_err("not MCAP");
        assert!(
            err.to_string()
                .contains("not an MCAP file: it starts with 0x68656c6c"),
            "{err}"
        );
        assert!(matches!(scan(&path), Err(RecordingError::NotMcap { .. })));

        for (input, expected) in [
            (&b""[..], "not an MCAP file: it is empty"),
            (&b"\x89MC"[..], "shorter than the MCAP magic"),
            (&b"hello, world, this is text"[..], "not an MCAP file"),
        ] {
            let (read, damage, errors) = read_all(input);
            assert!(read.is_empty());
            assert_eq!(errors, 1);
            let damage = damage.expect("damage");
            assert_eq!(damage.kind, DamageKind::NotMcap);
            assert!(
                damage.to_string().starts_with("not an MCAP file: "),
                "{damage}"
            );
            assert!(damage.to_string().contains(expected), "{damage}");
        }

        // The magic followed by something other than a header.
        let mut bytes = mcap::MAGIC.to_vec();
        bytes.extend_from_slice(&raw_record(op::DATA_END, &[0; 4]));
        let (_, damage, _) = read_all(&bytes);
        assert!(
            damage
                .expect("damage")
                .what
                .contains("first record is a data end")
        );
    }

    fn raw_record(opcode: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![opcode];
        out.extend_from_slice(&(body.len() as u64).to_le_bytes());
        out.extend_from_slice(body);
        out
    }

    fn mcap_string(value: &str) -> Vec<u8> {
        let mut out = (value.len() as u32).to_le_bytes().to_vec();
        out.extend_from_slice(value.as_bytes());
        out
    }

    #[test]
    fn message_on_unknown_channel_is_damage() {
        let mut bytes = mcap::MAGIC.to_vec();
        let header = [mcap_string(PROFILE), mcap_string("hand-made")].concat();
        bytes.extend_from_slice(&raw_record(op::HEADER, &header));
        let message_at = bytes.len();
        let mut message = 7u16.to_le_bytes().to_vec();
        message.extend_from_slice(&0u32.to_le_bytes());
        message.extend_from_slice(&1u64.to_le_bytes());
        message.extend_from_slice(&1u64.to_le_bytes());
        message.extend_from_slice(&encode(&record("t", 1)));
        bytes.extend_from_slice(&raw_record(op::MESSAGE, &message));
        let (read, damage, _) = read_all(&bytes);
        assert!(read.is_empty());
        let damage = damage.expect("damage");
        assert_eq!(damage.kind, DamageKind::BadMessage);
        assert_eq!(damage.byte_offset, message_at as u64);
        assert_eq!(
            damage.what,
            format!("message 0 at byte {message_at} is on unknown channel id 7")
        );
    }

    /// A file written by mcap directly: `channels` are (topic, encoding), `messages` go to them.
    fn foreign_mcap(channels: &[(&str, &str)], messages: &[(usize, Vec<u8>)]) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        {
            let mut writer = WriteOptions::new()
                .compression(None)
                .create(&mut out)
                .expect("writer");
            let ids: Vec<u16> = channels
                .iter()
                .map(|(topic, encoding)| {
                    writer
                        .add_channel(0, topic, encoding, &BTreeMap::new())
                        .expect("channel")
                })
                .collect();
            for (sequence, (channel, data)) in messages.iter().enumerate() {
                let header = MessageHeader {
                    channel_id: ids[*channel],
                    sequence: sequence as u32,
                    log_time: 0,
                    publish_time: 0,
                };
                writer
                    .write_to_known_channel(&header, data)
                    .expect("message");
            }
            writer.finish().expect("finish");
        }
        out.into_inner()
    }

    #[test]
    fn undecodable_envelope_names_message_channel_and_field() {
        let good = encode(&record("a", 1));
        let mut bad = encode(&record("b", 2));
        bad.truncate(20); // inside the timestamp
        let bytes = foreign_mcap(
            &[("a", MESSAGE_ENCODING), ("b", MESSAGE_ENCODING)],
            &[(0, good.clone()), (0, good), (1, bad)],
        );
        let (read, damage, _) = read_all(&bytes);
        assert_eq!(read.len(), 2);
        let damage = damage.expect("damage");
        assert_eq!(damage.kind, DamageKind::BadMessage);
        assert_eq!(damage.messages_read, 2);
        assert!(damage.what.starts_with("message 2 at byte"), "{damage}");
        assert!(damage.what.contains("on channel 'b'"), "{damage}");
        assert!(damage.what.contains("inside the timestamp"), "{damage}");
    }

    #[test]
    fn other_message_encoding_is_damage() {
        let bytes = foreign_mcap(&[("json", "json")], &[(0, b"{}".to_vec())]);
        let (read, damage, _) = read_all(&bytes);
        assert!(read.is_empty());
        let damage = damage.expect("damage");
        assert_eq!(damage.kind, DamageKind::BadMessage);
        assert!(
            damage.what.contains(
                "channel 'json' has message encoding 'json', not 'tessera.kafka-record.v1'"
            ),
            "{damage}"
        );
    }

    #[test]
    fn scan_counts_channels_and_reports_damage() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("rec.mcap");
        let summary = write_recording(&path, 512);

        let found = scan(&path).expect("scan");
        assert_eq!(found.damage, None);
        assert_eq!(found.messages, 50);
        assert_eq!(found.metadata, metadata());
        assert_eq!(found.profile.as_deref(), Some(PROFILE));
        assert_eq!(found.bytes, summary.bytes);
        assert_eq!(
            (found.start_log_time_ms, found.end_log_time_ms),
            (Some(5_000), Some(5_490))
        );
        let b = &found.channels["frames.b"];
        assert_eq!(
            (b.messages, b.start_log_time_ms, b.end_log_time_ms),
            (17, Some(5_000), Some(5_480))
        );
        assert_eq!(found.channels["frames.a"].messages, 33);
        assert_eq!(found.channels.len(), 2);

        // The same file cut at 60%: the counts of its intact prefix and the damage.
        let bytes = std::fs::read(&path).expect("read");
        let cut_path = dir.path().join("cut.mcap");
        std::fs::write(&cut_path, &bytes[..bytes.len() * 60 / 100]).expect("write");
        let (read, _, _) = read_all(&bytes[..bytes.len() * 60 / 100]);
        let found = scan(&cut_path).expect("scan");
        assert_eq!(found.messages, read.len() as u64);
        assert!(found.messages > 0 && found.messages < 50);
        let per_channel: u64 = found
            .channels
            .values()
            .map(|channel| channel.messages)
            .sum();
        assert_eq!(per_channel, found.messages);
        let damage = found.damage.expect("damage");
        assert_eq!(damage.kind, DamageKind::Truncated);
        assert_eq!(damage.messages_read, found.messages);
    }

    #[test]
    fn bad_options_and_oversized_records_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("rec.mcap");
        let options = WriterOptions {
            chunk_size: MAX_CHUNK_SIZE + 1,
        };
        assert!(matches!(
            RecordingWriter::create_with_options(&path, &BTreeMap::new(), &options),
            Err(RecordingError::InvalidOptions(_))
        ));
        let huge = KafkaRecord {
            payload: Some(vec![0; MAX_ENVELOPE_BYTES]),
            ..record("t", 1)
        };
        let mut out = Vec::new();
        assert!(matches!(
            encode_envelope(&huge, &mut out),
            Err(EnvelopeError::TooLarge { .. })
        ));
        assert!(out.is_empty());
    }
}
