//! Delivery checks shared by the fault-injection tests: what was sent against what tessera
//! published (results and dead letters), read back from Kafka.
//!
//! The promise checked (README, "Delivery guarantees"): every input frame has at least one
//! result or dead-letter record; duplicates happen only where a process died or a partition
//! moved (the caller says whether they are allowed, and they are always counted); each
//! camera's outputs are published in input order (with duplicates: the order of first
//! occurrences).
//!
//! This file is also compiled into the `tessera` package's integration tests
//! (`#[path = ...] mod delivery;`), so it names only crates both packages depend on.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::consumer::StreamConsumer;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use tessera::embedded::{CameraFrame, Landed, Output};

/// Input topic of the fault tests.
pub const FRAMES: &str = "frames";
/// Results topic of the fault tests.
pub const RESULTS: &str = "detections";
/// Dead-letter topic of the fault tests.
pub const DLQ: &str = "frames.dlq";
/// Both output topics.
pub const OUTPUTS: [&str; 2] = [RESULTS, DLQ];
/// Two cameras whose keys land on different input partitions (librdkafka's default
/// partitioner: CRC32 of the key) for 2, 3 and 4 partitions.
pub const CAMERAS: [&str; 2] = ["cam-north", "cam-east"];
/// Model load (and process start) plus the first consumer-group join.
pub const STARTUP: Duration = Duration::from_secs(120);
/// Long enough for a whole stream on a loaded 2-core machine; only a deadline.
pub const COMPLETION: Duration = Duration::from_secs(240);

/// Set (to anything but `0`) where the real assets must be present: CI. A test that needs them
/// then fails instead of skipping.
pub const REQUIRE_ASSETS: &str = "TESSERA_REQUIRE_ASSETS";

/// The real assets in `dir` (with `models/` and `images/`), or `None` with a printed reason so
/// the caller can skip; panics instead where [`REQUIRE_ASSETS`] is set.
pub fn assets_in(dir: PathBuf) -> Option<PathBuf> {
    if dir.join("models").is_dir() && dir.join("images").is_dir() {
        return Some(dir);
    }
    let required = std::env::var(REQUIRE_ASSETS).is_ok_and(|v| !v.is_empty() && v != "0");
    assert!(
        !required,
        "real-model assets not found at {} and {REQUIRE_ASSETS} is set (set TESSERA_ASSETS)",
        dir.display()
    );
    eprintln!(
        "SKIPPED: real-model assets not found at {} (set TESSERA_ASSETS)",
        dir.display()
    );
    None
}

/// The real assets: `$TESSERA_ASSETS`, else `../shared/assets` beside the workspace root.
pub fn assets_beside(workspace_root: &Path) -> Option<PathBuf> {
    let dir = std::env::var_os("TESSERA_ASSETS")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root.join("../shared/assets"));
    assets_in(dir)
}

/// The image every fault test sends.
pub fn dog(assets: &Path) -> anyhow::Result<Vec<u8>> {
    Ok(std::fs::read(assets.join("images/dog.jpg"))?)
}

/// The final read and check: everything the output topics hold, against what was sent.
pub async fn final_report(
    brokers: &str,
    sent: &[CameraFrame],
    allow_duplicates: bool,
    name: &str,
) -> anyhow::Result<DeliveryReport> {
    let outputs = read_all_outputs(brokers, RESULTS, DLQ, Duration::from_secs(60)).await?;
    let report = check_delivery(sent, &outputs, allow_duplicates);
    eprintln!("{name}: {report}");
    Ok(report)
}

/// `per_camera` frames of each camera, interleaved (c0-0, c1-0, c0-1, ...), frame id
/// `{camera}-{index}`, all carrying `payload`.
pub fn camera_frames(cameras: &[&str], per_camera: usize, payload: &[u8]) -> Vec<CameraFrame> {
    let mut frames = Vec::with_capacity(cameras.len() * per_camera);
    for index in 0..per_camera {
        for camera in cameras {
            frames.push(CameraFrame {
                camera: camera.as_bytes().to_vec(),
                frame_id: format!("{camera}-{index}"),
                payload: payload.to_vec(),
                content_type: None,
                capture_ms: 1_700_000_000_000 + index as i64,
            });
        }
    }
    frames
}

/// The mock cluster keeps at most this many bytes per partition: it silently drops a
/// partition's oldest records beyond it (librdkafka `rdkafka_mock.c`), which would look like
/// frames lost by tessera.
pub const MOCK_PARTITION_LOG_BYTES: usize = 5 * 1024 * 1024;

/// Fails unless the frames, as they landed, fit the mock cluster's per-partition log (with a
/// margin for record overhead), and returns the partitions they landed on.
pub fn assert_fits_mock_log(sent: &[CameraFrame], landed: &[Landed]) -> Vec<i32> {
    let mut bytes: HashMap<i32, usize> = HashMap::new();
    for (frame, at) in sent.iter().zip(landed) {
        *bytes.entry(at.partition).or_default() += frame.payload.len() + 1024;
    }
    for (partition, bytes) in &bytes {
        assert!(
            *bytes < MOCK_PARTITION_LOG_BYTES * 9 / 10,
            "partition {partition} holds {bytes} bytes of frames: the mock broker keeps only \
             {MOCK_PARTITION_LOG_BYTES} bytes per partition and would drop the oldest"
        );
    }
    let mut partitions: Vec<i32> = bytes.into_keys().collect();
    partitions.sort_unstable();
    partitions
}

/// What a run delivered, compared with what was sent.
#[derive(Debug, Clone, Default)]
pub struct DeliveryReport {
    /// Frames sent.
    pub sent: usize,
    /// Result records read back (duplicates included).
    pub results: usize,
    /// Dead-letter records read back (duplicates included).
    pub dead_letters: usize,
    /// Frames sent that have neither a result nor a dead letter: lost.
    pub missing: Vec<String>,
    /// Outputs beyond the first of each frame.
    pub duplicates: usize,
    /// Frames with more than one output, and how many each has.
    pub duplicated: Vec<(String, usize)>,
    /// Outputs that name no frame that was sent, or carry another camera's key.
    pub unexpected: Vec<String>,
    /// Places where a camera's first occurrences go backwards in input order.
    pub out_of_order: Vec<String>,
    /// Whether duplicates are acceptable for this fault (kill -9, rebalance).
    pub allow_duplicates: bool,
}

impl DeliveryReport {
    /// Every broken promise, readable; empty when delivery held.
    pub fn violations(&self) -> Vec<String> {
        let mut violations = Vec::new();
        if !self.missing.is_empty() {
            violations.push(format!(
                "{} frame(s) lost (no result, no dead letter): {:?}",
                self.missing.len(),
                self.missing
            ));
        }
        if self.duplicates > 0 && !self.allow_duplicates {
            violations.push(format!(
                "{} duplicate output(s) where none are allowed: {:?}",
                self.duplicates, self.duplicated
            ));
        }
        if !self.unexpected.is_empty() {
            violations.push(format!("unexpected outputs: {:?}", self.unexpected));
        }
        if !self.out_of_order.is_empty() {
            violations.push(format!("per-camera order broken: {:?}", self.out_of_order));
        }
        violations
    }

    /// Panics with the report and every violation unless delivery held.
    #[track_caller]
    pub fn assert_ok(&self) {
        let violations = self.violations();
        assert!(
            violations.is_empty(),
            "delivery broken: {self}\n  - {}",
            violations.join("\n  - ")
        );
    }
}

impl fmt::Display for DeliveryReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "sent {} frames; read {} results and {} dead letters; {} missing; {} duplicate(s)",
            self.sent,
            self.results,
            self.dead_letters,
            self.missing.len(),
            self.duplicates
        )?;
        if !self.duplicated.is_empty() {
            let shown: Vec<String> = self
                .duplicated
                .iter()
                .take(12)
                .map(|(id, n)| format!("{id} x{n}"))
                .collect();
            write!(f, " [{}", shown.join(", "))?;
            if self.duplicated.len() > shown.len() {
                write!(f, ", ...")?;
            }
            write!(f, "]")?;
        }
        write!(
            f,
            "; order {}",
            if self.out_of_order.is_empty() {
                "kept"
            } else {
                "BROKEN"
            }
        )
    }
}

/// Compares the outputs read back (in the order read: each topic partition in offset order)
/// with the frames sent.
///
/// Order is checked per camera and per output topic: a camera's records share one partition
/// of each output topic (the key decides it), so their read order is their publish order;
/// between the results and the dead-letter topic there is no order to observe.
pub fn check_delivery(
    sent: &[CameraFrame],
    outputs: &[Output],
    allow_duplicates: bool,
) -> DeliveryReport {
    // frame id -> (camera, position in that camera's input order)
    let mut position: HashMap<&str, (&[u8], usize)> = HashMap::new();
    let mut per_camera: HashMap<&[u8], usize> = HashMap::new();
    for frame in sent {
        let next = per_camera.entry(frame.camera.as_slice()).or_default();
        position.insert(frame.frame_id.as_str(), (frame.camera.as_slice(), *next));
        *next += 1;
    }

    let mut report = DeliveryReport {
        sent: sent.len(),
        allow_duplicates,
        ..DeliveryReport::default()
    };
    let mut count: HashMap<&str, usize> = HashMap::new();
    // (camera, is dead letter) -> position of the last first occurrence seen
    let mut last: HashMap<(&[u8], bool), (usize, &str)> = HashMap::new();
    for output in outputs {
        let (key, dead_letter) = match output {
            Output::Result { key, .. } => {
                report.results += 1;
                (key.as_deref(), false)
            }
            Output::DeadLetter { key, .. } => {
                report.dead_letters += 1;
                (key.as_deref(), true)
            }
        };
        let Some(id) = output.frame_id() else {
            report
                .unexpected
                .push(format!("an output without a frame id (key {key:?})"));
            continue;
        };
        let Some(&(camera, index)) = position.get(id) else {
            report.unexpected.push(format!("{id}: never sent"));
            continue;
        };
        if key != Some(camera) {
            report.unexpected.push(format!(
                "{id}: key {:?}, sent as {:?}",
                key.map(String::from_utf8_lossy),
                String::from_utf8_lossy(camera)
            ));
        }
        let seen = count.entry(id).or_default();
        *seen += 1;
        if *seen > 1 {
            report.duplicates += 1;
            continue;
        }
        if let Some(&(previous, previous_id)) = last.get(&(camera, dead_letter))
            && index < previous
        {
            report
                .out_of_order
                .push(format!("{id} published after {previous_id}"));
        }
        last.insert((camera, dead_letter), (index, id));
    }
    for frame in sent {
        if !count.contains_key(frame.frame_id.as_str()) {
            report.missing.push(frame.frame_id.clone());
        }
    }
    let mut duplicated: Vec<(String, usize)> = count
        .into_iter()
        .filter(|&(_, n)| n > 1)
        .map(|(id, n)| (id.to_owned(), n))
        .collect();
    duplicated.sort_by_key(|(id, _)| {
        position
            .get(id.as_str())
            .map(|&(camera, index)| (camera.to_vec(), index))
    });
    report.duplicated = duplicated;
    report
}

/// Records currently in `topics` (sum of high minus low watermarks over their partitions),
/// from partition metadata only: no consumer group, nothing consumed.
pub async fn record_count(brokers: &str, topics: &[&str]) -> anyhow::Result<i64> {
    let brokers = brokers.to_owned();
    let topics: Vec<String> = topics.iter().map(|t| (*t).to_owned()).collect();
    tokio::task::spawn_blocking(move || -> anyhow::Result<i64> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", "tessera-test-watermarks")
            .create()?;
        let timeout = Duration::from_secs(5);
        let mut total = 0;
        for topic in &topics {
            let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
            for t in metadata.topics() {
                if let Some(error) = t.error() {
                    anyhow::bail!("topic {topic}: {error:?}");
                }
                for partition in t.partitions() {
                    let (low, high) = consumer.fetch_watermarks(topic, partition.id(), timeout)?;
                    total += high - low;
                }
            }
        }
        Ok(total)
    })
    .await?
}

/// Polls [`record_count`] until `topics` hold at least `at_least` records; returns the count.
/// Errors (a broker may be down on purpose) only delay; the deadline fails the wait.
pub async fn wait_for_records(
    brokers: &str,
    topics: &[&str],
    at_least: i64,
    timeout: Duration,
) -> anyhow::Result<i64> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let last = match record_count(brokers, topics).await {
            Ok(count) if count >= at_least => return Ok(count),
            Ok(count) => format!("{count} records"),
            Err(error) => error.to_string(),
        };
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!(
                "{topics:?} did not reach {at_least} records within {timeout:?} (last: {last})"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reads the results and dead-letter topics from their beginning until `done` says enough
/// was read or `timeout` passes (then whatever was read comes back).
///
/// Unlike `tessera::embedded::read_outputs` it joins no consumer group: it assigns every
/// partition itself, so no rebalance or session timeout of an earlier reader can hold it up
/// while faults are being injected.
pub async fn read_from_start(
    brokers: &str,
    results_topic: &str,
    dlq_topic: &str,
    timeout: Duration,
    mut done: impl FnMut(&[Output]) -> bool,
) -> anyhow::Result<Vec<Output>> {
    // librdkafka wants a group id even for assigned partitions; it is never joined.
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "tessera-test-reader")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .create()?;
    let mut partitions = TopicPartitionList::new();
    for topic in [results_topic, dlq_topic] {
        let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
        for t in metadata.topics() {
            for partition in t.partitions() {
                partitions.add_partition_offset(topic, partition.id(), Offset::Beginning)?;
            }
        }
    }
    consumer.assign(&partitions)?;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut outputs = Vec::new();
    while !done(&outputs) {
        let message = match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Err(_) => break,
            // Transient (a broker may be down on purpose): the consumer retries by itself.
            Ok(Err(_)) => continue,
            Ok(Ok(message)) => message,
        };
        let output = Output::from_message(&message, results_topic)?;
        outputs.push(output);
    }
    Ok(outputs)
}

/// Reads the results and dead-letter topics until every sent frame has at least one output
/// (or `timeout` passes: then whatever was read comes back, for the checker to report).
pub async fn read_until_covered(
    brokers: &str,
    results_topic: &str,
    dlq_topic: &str,
    sent: &[CameraFrame],
    timeout: Duration,
) -> anyhow::Result<Vec<Output>> {
    let mut missing: HashSet<&str> = sent.iter().map(|f| f.frame_id.as_str()).collect();
    let mut checked = 0;
    read_from_start(brokers, results_topic, dlq_topic, timeout, |outputs| {
        for output in &outputs[checked..] {
            if let Some(id) = output.frame_id() {
                missing.remove(id);
            }
        }
        checked = outputs.len();
        missing.is_empty()
    })
    .await
}

/// Reads everything the results and dead-letter topics hold now (call it once the producers
/// have stopped): the record count comes from the watermarks, then exactly that many records
/// are read. Fails if they cannot all be read within `timeout`.
pub async fn read_all_outputs(
    brokers: &str,
    results_topic: &str,
    dlq_topic: &str,
    timeout: Duration,
) -> anyhow::Result<Vec<Output>> {
    let total = record_count(brokers, &[results_topic, dlq_topic]).await?;
    let total = usize::try_from(total)?;
    let outputs = read_from_start(brokers, results_topic, dlq_topic, timeout, |outputs| {
        outputs.len() >= total
    })
    .await?;
    anyhow::ensure!(
        outputs.len() == total,
        "read {} of the {total} output records within {timeout:?}",
        outputs.len()
    );
    Ok(outputs)
}

/// One input partition's committed offset (for a consumer group) and its end offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionProgress {
    pub partition: i32,
    /// The group's committed offset (the next offset to read), `None` if nothing is committed.
    pub committed: Option<i64>,
    /// The partition's high watermark: one past its last record.
    pub end: i64,
}

impl PartitionProgress {
    /// Committed up to the end (an empty partition needs no commit).
    pub fn done(&self) -> bool {
        self.committed.unwrap_or(0) == self.end
    }
}

/// The committed offsets of `group` and the end offsets of every partition of `topic`,
/// read without joining the group.
pub async fn group_progress(
    brokers: &str,
    group: &str,
    topic: &str,
) -> anyhow::Result<Vec<PartitionProgress>> {
    let (brokers, group, topic) = (brokers.to_owned(), group.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<PartitionProgress>> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", &group)
            .create()?;
        let timeout = Duration::from_secs(10);
        let metadata = consumer.fetch_metadata(Some(&topic), timeout)?;
        let mut list = rdkafka::TopicPartitionList::new();
        let mut ends = Vec::new();
        for t in metadata.topics() {
            for partition in t.partitions() {
                list.add_partition(&topic, partition.id());
                ends.push((
                    partition.id(),
                    consumer
                        .fetch_watermarks(&topic, partition.id(), timeout)?
                        .1,
                ));
            }
        }
        let committed = consumer.committed_offsets(list, timeout)?;
        let mut progress: Vec<PartitionProgress> = ends
            .into_iter()
            .map(|(partition, end)| PartitionProgress {
                partition,
                committed: committed
                    .find_partition(&topic, partition)
                    .and_then(|p| p.offset().to_raw())
                    .filter(|&o| o >= 0),
                end,
            })
            .collect();
        progress.sort_by_key(|p| p.partition);
        Ok(progress)
    })
    .await?
}

/// Polls [`group_progress`] until `group` has committed every partition of `topic` up to its
/// end (nothing left behind, nothing stuck); fails with the last progress at the deadline.
pub async fn wait_committed_to_end(
    brokers: &str,
    group: &str,
    topic: &str,
    timeout: Duration,
) -> anyhow::Result<Vec<PartitionProgress>> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let last = group_progress(brokers, group, topic).await;
        if let Ok(progress) = &last
            && progress.iter().all(PartitionProgress::done)
        {
            return Ok(progress.clone());
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!(
                "group {group} did not commit {topic} to its end within {timeout:?}: {last:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(camera: &str, id: &str) -> Output {
        let json = serde_json::json!({
            "schema": 1, "camera": camera,
            "source": {"topic": "frames", "partition": 0, "offset": 0},
            "frame_id": id,
            "timestamps": {"capture_ms": null, "kafka_ms": null, "received_ms": 0, "completed_ms": 0},
            "image": {"width": 1, "height": 1},
            "model": {"name": "m", "version": "1"},
            "head_version": null, "tile_count": 1, "status": "ok",
            "detections": [], "classifications": [],
            "latency_ms": {"decode": 0.0, "preprocess": 0.0, "inference": 0.0, "merge": 0.0, "total": 0.0}
        });
        let result: tessera_actors::FrameResult =
            serde_json::from_value(json).expect("valid result document");
        Output::Result {
            key: Some(camera.as_bytes().to_vec()),
            partition: 0,
            result: Box::new(result),
        }
    }

    fn dead_letter(camera: &str, id: &str) -> Output {
        Output::DeadLetter {
            key: Some(camera.as_bytes().to_vec()),
            frame_id: Some(id.to_owned()),
            source: None,
            kind: "corrupt_image".into(),
            error: "bad".into(),
            payload_len: 1,
        }
    }

    #[test]
    fn complete_ordered_delivery_passes() {
        let sent = camera_frames(&["a", "b"], 3, b"x");
        let outputs = vec![
            result("b", "b-0"),
            result("a", "a-0"),
            dead_letter("a", "a-1"),
            result("a", "a-2"),
            result("b", "b-1"),
            result("b", "b-2"),
        ];
        let report = check_delivery(&sent, &outputs, false);
        assert!(report.violations().is_empty(), "{report}");
        assert_eq!((report.results, report.dead_letters), (5, 1));
    }

    #[test]
    fn loss_duplicates_reordering_and_strangers_are_reported() {
        let sent = camera_frames(&["a"], 4, b"x");
        let outputs = vec![
            result("a", "a-0"),
            result("a", "a-2"),
            result("a", "a-1"),
            result("a", "a-0"),
            result("b", "b-9"),
            result("b", "a-1"),
        ];
        let report = check_delivery(&sent, &outputs, false);
        assert_eq!(report.missing, vec!["a-3".to_owned()]);
        assert_eq!(report.duplicates, 2);
        assert_eq!(
            report.duplicated,
            vec![("a-0".to_owned(), 2), ("a-1".to_owned(), 2)]
        );
        assert_eq!(report.out_of_order.len(), 1, "{report:?}");
        assert_eq!(report.unexpected.len(), 2, "{report:?}");
        assert_eq!(report.violations().len(), 4);
    }

    #[test]
    fn replays_after_a_crash_keep_first_occurrence_order() {
        // Published 0..=3, crashed, the restart re-processed from the committed offset 2.
        let sent = camera_frames(&["a"], 6, b"x");
        let ids = ["a-0", "a-1", "a-2", "a-3", "a-2", "a-3", "a-4", "a-5"];
        let outputs: Vec<Output> = ids.iter().map(|id| result("a", id)).collect();
        let report = check_delivery(&sent, &outputs, true);
        assert!(report.violations().is_empty(), "{report}");
        assert_eq!(report.duplicates, 2);
        assert!(
            !check_delivery(&sent, &outputs, false)
                .violations()
                .is_empty()
        );
    }
}
