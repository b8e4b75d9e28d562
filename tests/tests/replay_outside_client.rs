//! A topic filled by a client that shares no code with tessera (`kafka-python`, a pure-Python
//! protocol implementation from PyPI) is recorded by `replay record` and replayed by
//! `replay play`; the same client reads the replayed topic back. Keys, headers, values,
//! timestamps and each camera's order survive both steps.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde::Deserialize;
use tessera::embedded::EmbeddedKafka;
use tessera::replay::play::{PlayOptions, Speed};
use tessera::replay::record::{RecordOptions, Start};
use tessera::replay::recording::RecordingReader;
use tessera_tests::{pytools, workspace_root};

const RECORDS: usize = 30;

/// One record as the Python client printed it (bytes in hex).
#[derive(Debug, Clone, PartialEq, Deserialize)]
struct Seen {
    topic: String,
    partition: i32,
    offset: i64,
    timestamp: i64,
    key: Option<String>,
    headers: Vec<(String, Option<String>)>,
    value: Option<String>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn client(site: &Path, command: &str, brokers: &str, topic: &str) -> anyhow::Result<Vec<Seen>> {
    let run = Command::new("python3")
        .arg(workspace_root().join("tests/python/kafka_client.py"))
        .args([command, brokers, topic, &RECORDS.to_string()])
        .env("PYTHONPATH", site)
        .output()?;
    anyhow::ensure!(
        run.status.success(),
        "kafka-python {command} failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    Ok(String::from_utf8(run.stdout)?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?)
}

/// A record's value, headers and timestamp.
type Content = (Option<String>, Vec<(String, Option<String>)>, i64);

/// Records grouped by key, in order: what "per-camera order" means.
fn by_key(records: &[Seen]) -> BTreeMap<Option<String>, Vec<Content>> {
    let mut grouped: BTreeMap<_, Vec<_>> = BTreeMap::new();
    for r in records {
        grouped.entry(r.key.clone()).or_default().push((
            r.value.clone(),
            r.headers.clone(),
            r.timestamp,
        ));
    }
    grouped
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_filled_by_kafka_python_is_recorded_and_replayed_faithfully() -> anyhow::Result<()>
{
    let Some(site) = pytools("kafka/__init__.py") else {
        return Ok(());
    };
    let kafka = EmbeddedKafka::start(1)?;
    let brokers = kafka.bootstrap_servers();
    kafka.create_topic("camera-feed", 3)?;
    kafka.create_topic("camera-feed-replayed", 2)?;
    let sent = tokio::task::block_in_place(|| client(&site, "produce", &brokers, "camera-feed"))?;
    assert_eq!(sent.len(), RECORDS);

    let dir = tempfile::tempdir()?;
    let recording = dir.path().join("feed.mcap");
    let written = tessera::replay::record::run(
        &RecordOptions {
            brokers: brokers.clone(),
            topics: vec!["camera-feed".into()],
            out: recording.clone(),
            start: Start::Beginning,
            max: None,
            follow: false,
            properties: Vec::new(),
        },
        std::future::pending(),
    )
    .await?;
    assert_eq!(written.messages, RECORDS as u64);

    // The recording holds exactly what was sent: partition, offset, timestamp, key, headers, value.
    let mut recorded: Vec<Seen> = RecordingReader::open(&recording)?
        .map(|item| {
            item.map(|r| Seen {
                topic: r.record.topic,
                partition: r.record.partition,
                offset: r.record.offset,
                timestamp: r.record.timestamp_ms.unwrap_or(-1),
                key: r.record.key.as_deref().map(hex),
                headers: r
                    .record
                    .headers
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_deref().map(hex)))
                    .collect(),
                value: r.record.payload.as_deref().map(hex),
            })
        })
        .collect::<Result<_, _>>()?;
    let mut expected = sent.clone();
    let order = |s: &Seen| (s.partition, s.offset);
    recorded.sort_by_key(order);
    expected.sort_by_key(order);
    assert_eq!(recorded, expected);

    let played = tessera::replay::play::run(&PlayOptions {
        file: recording,
        brokers: brokers.clone(),
        topic: "camera-feed-replayed".into(),
        channel: None,
        speed: Speed::Max,
        loops: 1,
        properties: Vec::new(),
    })
    .await?;
    assert_eq!(played.published, RECORDS as u64);
    assert!(played.damage.is_none());

    let replayed =
        tokio::task::block_in_place(|| client(&site, "consume", &brokers, "camera-feed-replayed"))?;
    assert_eq!(replayed.len(), RECORDS);
    // Keys, headers, values and timestamps kept; each key's records in their original order.
    assert_eq!(by_key(&replayed), by_key(&sent));
    Ok(())
}
