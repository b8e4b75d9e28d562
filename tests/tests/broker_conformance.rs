//! Broker conformance: each Kafka behaviour tessera relies on, observed on both test brokers
//! (librdkafka's mock cluster and tansu 0.6.0) with rdkafka as the client, and compared with
//! what is recorded here and in the README ("Which broker shows what"). A gap is a fact in the
//! test output rather than a surprise; a broker that changes (tansu fixing a gap, or a mock
//! regression) fails this test until the record and the README are updated.
//!
//! tansu comes from `make tansu` (run by `make test`); where it is missing the test skips,
//! and fails where `TESSERA_REQUIRE_ASSETS` is set (CI installs it).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tessera_tests::broker::{BrokerKind, Tansu, TestBroker};

/// One behaviour, as observed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    /// As Apache Kafka does it.
    Faithful,
    /// Not as Apache Kafka does it: what happened instead.
    Gap(String),
}

/// What each broker is recorded to do; `None`: faithful.
struct Behaviour {
    name: &'static str,
    check: fn(&TestBroker) -> anyhow::Result<Seen>,
    /// Start of the gap's description on tansu 0.6.0, `None` where tansu is faithful.
    tansu_gap: Option<&'static str>,
    /// The same for the mock cluster.
    mock_gap: Option<&'static str>,
}

const BEHAVIOURS: &[Behaviour] = &[
    Behaviour {
        name: "keyed records keep their partition, order, key and headers (idempotent producer)",
        check: keyed_records_round_trip,
        tansu_gap: None,
        mock_gap: None,
    },
    Behaviour {
        name: "a fetch from an offset inside a multi-record batch starts exactly there",
        check: fetch_inside_a_multi_record_batch,
        // librdkafka drops a batch's records below the offset it asked for.
        tansu_gap: None,
        mock_gap: None,
    },
    Behaviour {
        name: "the high watermark counts every record of multi-record batches",
        check: high_watermark_of_multi_record_batches,
        tansu_gap: Some("high watermark"),
        mock_gap: None,
    },
    Behaviour {
        name: "one-record batches: fetches from any offset and the high watermark are exact",
        check: one_record_batches,
        tansu_gap: None,
        mock_gap: None,
    },
    Behaviour {
        name: "a topic is created on first use",
        check: topic_created_on_first_use,
        tansu_gap: Some("producing to an unknown topic failed"),
        mock_gap: Some("producing to an unknown topic failed"),
    },
    Behaviour {
        name: "a fetch past the high watermark is answered OFFSET_OUT_OF_RANGE",
        check: fetch_past_the_end,
        tansu_gap: Some("no error"),
        mock_gap: None,
    },
    Behaviour {
        name: "a group resumes from its committed offset",
        check: committed_offset_resumes,
        tansu_gap: None,
        mock_gap: None,
    },
    Behaviour {
        name: "a joining member gets a share of the partitions, a leaving one hands them back",
        check: members_join_and_leave,
        tansu_gap: None,
        mock_gap: None,
    },
    Behaviour {
        name: "a killed member's partitions move to the survivor after the session timeout",
        check: killed_member_partitions_move,
        tansu_gap: None,
        mock_gap: None,
    },
];

/// Session timeout of the group checks (the brokers' usual minimum).
const SESSION_TIMEOUT: Duration = Duration::from_secs(6);
/// Deadline for a group to settle: the mock cluster coordinates slowly.
const SETTLE: Duration = Duration::from_secs(60);

#[test]
fn both_brokers_behave_as_recorded() -> anyhow::Result<()> {
    tessera_tests::harness::init_logs();
    if !Tansu::binary().is_file() {
        let reason = format!(
            "tansu not found at {}: run `make tansu`",
            Tansu::binary().display()
        );
        assert!(
            std::env::var_os("TESSERA_REQUIRE_ASSETS").is_none(),
            "{reason}"
        );
        eprintln!("SKIPPED: {reason}");
        return Ok(());
    }
    // Every (broker, behaviour) on a fresh broker of its own, so no check sees another's
    // topics or groups; all at once, since most of the time is spent waiting on groups.
    let runs: Vec<(BrokerKind, &Behaviour)> = [BrokerKind::Mock, BrokerKind::Tansu]
        .into_iter()
        .flat_map(|kind| BEHAVIOURS.iter().map(move |b| (kind, b)))
        .collect();
    let observed: Vec<anyhow::Result<Seen>> = std::thread::scope(|scope| {
        let handles: Vec<_> = runs
            .iter()
            .map(|&(kind, behaviour)| {
                scope.spawn(move || {
                    let broker = TestBroker::start(kind)?;
                    (behaviour.check)(&broker)
                        .map_err(|e| anyhow::anyhow!("{} on {}: {e}", behaviour.name, kind.name()))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a check panicked")))
            })
            .collect()
    });
    let mut table = Vec::new();
    let mut surprises = Vec::new();
    for ((kind, behaviour), seen) in runs.into_iter().zip(observed) {
        let seen = seen?;
        let recorded = match kind {
            BrokerKind::Mock => behaviour.mock_gap,
            BrokerKind::Tansu => behaviour.tansu_gap,
        };
        let as_recorded = match (&seen, recorded) {
            (Seen::Faithful, None) => true,
            (Seen::Gap(what), Some(start)) => what.starts_with(start),
            _ => false,
        };
        let shown = match &seen {
            Seen::Faithful => "faithful".to_owned(),
            Seen::Gap(what) => format!("GAP: {what}"),
        };
        table.push(format!("{:5} | {} | {shown}", kind.name(), behaviour.name));
        if !as_recorded {
            surprises.push(format!(
                "{} on {}: {shown}, recorded: {}",
                behaviour.name,
                kind.name(),
                recorded.map_or("faithful".to_owned(), |g| format!("gap ({g}...)"))
            ));
        }
    }
    eprintln!("broker conformance:\n{}", table.join("\n"));
    assert!(
        surprises.is_empty(),
        "a broker no longer behaves as recorded (update BEHAVIOURS and the README):\n{}",
        surprises.join("\n")
    );
    Ok(())
}

fn client(broker: &TestBroker) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", broker.bootstrap_servers());
    config
}

fn producer(
    broker: &TestBroker,
    batch: usize,
) -> anyhow::Result<ThreadedProducer<DefaultProducerContext>> {
    Ok(client(broker)
        .set("enable.idempotence", "true")
        .set("linger.ms", if batch > 1 { "200" } else { "0" })
        .set("batch.num.messages", batch.to_string())
        .create()?)
}

/// Produces records `v{i}` for i in `indexes`, keys taken in turn from `keys`, to `topic`'s
/// `partition` (`None`: by key), in batches of up to `batch`, and waits for every
/// acknowledgement.
fn produce(
    broker: &TestBroker,
    topic: &str,
    partition: Option<i32>,
    keys: &[&str],
    indexes: std::ops::Range<usize>,
    batch: usize,
) -> anyhow::Result<()> {
    let producer = producer(broker, batch)?;
    for i in indexes {
        let key = keys[i % keys.len()];
        let value = format!("v{i}");
        let headers = OwnedHeaders::new().insert(Header {
            key: "index",
            value: Some(i.to_string().as_bytes()),
        });
        let mut record = BaseRecord::to(topic)
            .key(key)
            .payload(&value)
            .headers(headers);
        if let Some(p) = partition {
            record = record.partition(p);
        }
        producer
            .send(record)
            .map_err(|(e, _)| anyhow::anyhow!("queueing record {i}: {e}"))?;
    }
    producer.flush(Duration::from_secs(30))?;
    anyhow::ensure!(producer.in_flight_count() == 0, "records not acknowledged");
    Ok(())
}

/// Reads `topic`'s `partition` from `offset` until `want` records or `timeout`: their values.
fn read_from(
    broker: &TestBroker,
    topic: &str,
    partition: i32,
    offset: i64,
    want: usize,
    timeout: Duration,
) -> anyhow::Result<Vec<String>> {
    let consumer: BaseConsumer = client(broker)
        .set("group.id", "conformance-reader")
        .set("enable.auto.commit", "false")
        .create()?;
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(topic, partition, Offset::Offset(offset))?;
    consumer.assign(&assignment)?;
    let mut values = Vec::new();
    let deadline = Instant::now() + timeout;
    while values.len() < want && Instant::now() < deadline {
        if let Some(message) = consumer.poll(Duration::from_millis(100)) {
            let message = message?;
            values
                .push(String::from_utf8_lossy(message.payload().unwrap_or_default()).into_owned());
        }
    }
    Ok(values)
}

fn high_watermark(broker: &TestBroker, topic: &str, partition: i32) -> anyhow::Result<i64> {
    let consumer: BaseConsumer = client(broker).create()?;
    Ok(consumer
        .fetch_watermarks(topic, partition, Duration::from_secs(10))?
        .1)
}

fn expected(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("v{i}")).collect()
}

fn keyed_records_round_trip(broker: &TestBroker) -> anyhow::Result<Seen> {
    broker.create_topic("keyed", 4)?;
    produce(
        broker,
        "keyed",
        None,
        &["cam-a", "cam-b", "cam-c"],
        0..30,
        1,
    )?;
    let consumer: BaseConsumer = client(broker)
        .set("group.id", "conformance-keyed")
        .set("auto.offset.reset", "earliest")
        .create()?;
    consumer.subscribe(&["keyed"])?;
    let mut by_key: BTreeMap<String, (i32, Vec<usize>)> = BTreeMap::new();
    let mut problems = Vec::new();
    let deadline = Instant::now() + SETTLE;
    let mut read = 0;
    while read < 30 && Instant::now() < deadline {
        let Some(message) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let message = message?;
        read += 1;
        let key = String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned();
        let index: usize = message
            .headers()
            .and_then(|h| h.iter().find(|h| h.key == "index"))
            .and_then(|h| std::str::from_utf8(h.value?).ok()?.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("record without its index header"))?;
        let value = String::from_utf8_lossy(message.payload().unwrap_or_default()).into_owned();
        if value != format!("v{index}") {
            problems.push(format!("header index {index} on value {value}"));
        }
        let entry = by_key
            .entry(key.clone())
            .or_insert((message.partition(), Vec::new()));
        if entry.0 != message.partition() {
            problems.push(format!(
                "key {key} on partitions {} and {}",
                entry.0,
                message.partition()
            ));
        }
        entry.1.push(index);
    }
    if read < 30 {
        problems.push(format!("read {read} of 30 records"));
    }
    for (key, (_, indexes)) in &by_key {
        if !indexes.is_sorted() {
            problems.push(format!("key {key} out of order: {indexes:?}"));
        }
    }
    Ok(if problems.is_empty() {
        Seen::Faithful
    } else {
        Seen::Gap(problems.join("; "))
    })
}

/// Three batches of ten records, v0..v29, on partition 0 of a fresh `topic`.
fn three_batches(broker: &TestBroker, topic: &str) -> anyhow::Result<()> {
    broker.create_topic(topic, 1)?;
    for start in [0, 10, 20] {
        produce(broker, topic, Some(0), &["k"], start..start + 10, 10)?;
    }
    Ok(())
}

fn fetch_inside_a_multi_record_batch(broker: &TestBroker) -> anyhow::Result<Seen> {
    three_batches(broker, "batched")?;
    let mut problems = Vec::new();
    for offset in [5, 15, 25] {
        let values = read_from(
            broker,
            "batched",
            0,
            offset,
            30 - offset as usize,
            Duration::from_secs(5),
        )?;
        if values != expected(offset as usize..30) {
            problems.push(format!("read {values:?} from offset {offset}"));
        }
    }
    Ok(if problems.is_empty() {
        Seen::Faithful
    } else {
        Seen::Gap(format!(
            "{} (of v0..v29 in three batches)",
            problems.join("; ")
        ))
    })
}

fn high_watermark_of_multi_record_batches(broker: &TestBroker) -> anyhow::Result<Seen> {
    three_batches(broker, "batched")?;
    let high = high_watermark(broker, "batched", 0)?;
    Ok(if high == 30 {
        Seen::Faithful
    } else {
        Seen::Gap(format!(
            "high watermark {high} after 30 records in three batches of ten"
        ))
    })
}

fn one_record_batches(broker: &TestBroker) -> anyhow::Result<Seen> {
    broker.create_topic("single", 1)?;
    produce(broker, "single", Some(0), &["k"], 0..10, 1)?;
    let high = high_watermark(broker, "single", 0)?;
    let values = read_from(broker, "single", 0, 5, 5, Duration::from_secs(5))?;
    Ok(if high == 10 && values == expected(5..10) {
        Seen::Faithful
    } else {
        Seen::Gap(format!(
            "high watermark {high}; read {values:?} from offset 5"
        ))
    })
}

fn topic_created_on_first_use(broker: &TestBroker) -> anyhow::Result<Seen> {
    let producer: ThreadedProducer<DefaultProducerContext> =
        client(broker).set("message.timeout.ms", "5000").create()?;
    producer
        .send(BaseRecord::to("unknown-topic").key("k").payload("v"))
        .map_err(|(e, _)| anyhow::anyhow!("queueing: {e}"))?;
    producer.flush(Duration::from_secs(10))?;
    let delivered = producer.in_flight_count() == 0
        && high_watermark(broker, "unknown-topic", 0).is_ok_and(|h| h >= 1);
    Ok(if delivered {
        Seen::Faithful
    } else {
        Seen::Gap("producing to an unknown topic failed: it was not created".into())
    })
}

fn fetch_past_the_end(broker: &TestBroker) -> anyhow::Result<Seen> {
    broker.create_topic("short", 1)?;
    produce(broker, "short", Some(0), &["k"], 0..3, 1)?;
    let consumer: BaseConsumer = client(broker)
        .set("group.id", "conformance-range")
        .set("auto.offset.reset", "error")
        .create()?;
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset("short", 0, Offset::Offset(100))?;
    consumer.assign(&assignment)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Err(e)) if e.to_string().to_lowercase().contains("offset") => {
                return Ok(Seen::Faithful);
            }
            Some(Ok(message)) => {
                return Ok(Seen::Gap(format!(
                    "no error: a record came back at offset {}",
                    message.offset()
                )));
            }
            _ => {}
        }
    }
    Ok(Seen::Gap(
        "no error: offset 100 of a 3-record partition was answered with nothing".into(),
    ))
}

fn committed_offset_resumes(broker: &TestBroker) -> anyhow::Result<Seen> {
    broker.create_topic("resume", 1)?;
    produce(broker, "resume", Some(0), &["k"], 0..10, 1)?;
    let group = |broker: &TestBroker| -> anyhow::Result<BaseConsumer> {
        let consumer: BaseConsumer = client(broker)
            .set("group.id", "conformance-resume")
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .create()?;
        consumer.subscribe(&["resume"])?;
        Ok(consumer)
    };
    let first = group(broker)?;
    let deadline = Instant::now() + SETTLE;
    let mut commit = TopicPartitionList::new();
    commit.add_partition_offset("resume", 0, Offset::Offset(7))?;
    // Commit once the member owns the partition.
    loop {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the first member never got the partition"
        );
        if let Some(message) = first.poll(Duration::from_millis(100)) {
            message?;
            first.commit(&commit, CommitMode::Sync)?;
            break;
        }
    }
    drop(first);
    let second = group(broker)?;
    while Instant::now() < deadline {
        if let Some(message) = second.poll(Duration::from_millis(100)) {
            let offset = message?.offset();
            return Ok(if offset == 7 {
                Seen::Faithful
            } else {
                Seen::Gap(format!("resumed at offset {offset} after committing 7"))
            });
        }
    }
    Ok(Seen::Gap("the second member read nothing".into()))
}

/// A consumer subscribed to `topic` in `group`, as tessera's members are (cooperative-sticky)
/// but with the short session of the group checks.
fn group_member(brokers: &str, topic: &str, group: &str) -> anyhow::Result<BaseConsumer> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set(
            "session.timeout.ms",
            SESSION_TIMEOUT.as_millis().to_string(),
        )
        .set("heartbeat.interval.ms", "1000")
        .set("partition.assignment.strategy", "cooperative-sticky")
        .create()?;
    consumer.subscribe(&[topic])?;
    Ok(consumer)
}

/// A group member on its own thread, reporting how many partitions it holds.
struct Member {
    stop: mpsc::Sender<()>,
    held: mpsc::Receiver<usize>,
    last: usize,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Member {
    fn join(broker: &TestBroker, topic: &str, group: &str) -> anyhow::Result<Self> {
        let consumer = group_member(&broker.bootstrap_servers(), topic, group)?;
        let (stop, stopped) = mpsc::channel();
        let (report, held) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            while stopped.try_recv().is_err() {
                let _ = consumer.poll(Duration::from_millis(100));
                let count = consumer.assignment().map_or(0, |a| a.count());
                let _ = report.send(count);
            }
            // Dropping the consumer leaves the group.
        });
        Ok(Self {
            stop,
            held,
            last: 0,
            thread: Some(thread),
        })
    }

    fn held(&mut self) -> usize {
        while let Ok(count) = self.held.try_recv() {
            self.last = count;
        }
        self.last
    }

    /// Leaves the group (also on drop, so no member outlives its broker).
    fn leave(self) {}
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.stop.send(());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Waits until `condition` holds or `timeout` passes.
fn settle(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    condition()
}

fn members_join_and_leave(broker: &TestBroker) -> anyhow::Result<Seen> {
    broker.create_topic("shared", 4)?;
    let mut a = Member::join(broker, "shared", "conformance-share")?;
    if !settle(SETTLE, || a.held() == 4) {
        return Ok(Seen::Gap(format!("a lone member holds {} of 4", a.held())));
    }
    let mut b = Member::join(broker, "shared", "conformance-share")?;
    if !settle(SETTLE, || a.held() == 2 && b.held() == 2) {
        return Ok(Seen::Gap(format!(
            "after a second member joined: {} and {} of 4",
            a.held(),
            b.held()
        )));
    }
    b.leave();
    if !settle(SETTLE, || a.held() == 4) {
        return Ok(Seen::Gap(format!(
            "after the second member left, the first holds {} of 4",
            a.held()
        )));
    }
    Ok(Seen::Faithful)
}

/// Environment variables that turn this test binary into a group member process (for the
/// SIGKILL check): the broker, the topic and the group.
const MEMBER_ENV: &str = "CONFORMANCE_MEMBER";

/// Not a check: the body of the member process `killed_member_partitions_move` starts (this
/// binary again, running only this function), which reports its partition count on stdout
/// until it is killed. Returns at once in a normal test run.
#[test]
fn conformance_member_process() -> anyhow::Result<()> {
    let Ok(spec) = std::env::var(MEMBER_ENV) else {
        return Ok(());
    };
    let mut parts = spec.splitn(3, ' ');
    let (Some(brokers), Some(topic), Some(group)) = (parts.next(), parts.next(), parts.next())
    else {
        anyhow::bail!("{MEMBER_ENV}={spec:?}: expected `BROKERS TOPIC GROUP`");
    };
    let consumer = group_member(brokers, topic, group)?;
    loop {
        let _ = consumer.poll(Duration::from_millis(100));
        let count = consumer.assignment().map_or(0, |a| a.count());
        println!("held {count}");
    }
}

fn killed_member_partitions_move(broker: &TestBroker) -> anyhow::Result<Seen> {
    broker.create_topic("failover", 4)?;
    let group = "conformance-failover";
    let mut survivor = Member::join(broker, "failover", group)?;
    if !settle(SETTLE, || survivor.held() == 4) {
        return Ok(Seen::Gap(format!(
            "a lone member holds {} of 4",
            survivor.held()
        )));
    }
    let mut child = Command::new(std::env::current_exe()?)
        .args([
            "--exact",
            "conformance_member_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(
            MEMBER_ENV,
            format!("{} failover {group}", broker.bootstrap_servers()),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let (report, reported) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(count) = line
                .strip_prefix("held ")
                .and_then(|c| c.parse::<usize>().ok())
            {
                let _ = report.send(count);
            }
        }
    });
    let mut killed_held = 0;
    let shared = settle(SETTLE, || {
        while let Ok(count) = reported.try_recv() {
            killed_held = count;
        }
        survivor.held() == 2 && killed_held == 2
    });
    if !shared {
        let _ = child.kill();
        let _ = child.wait();
        return Ok(Seen::Gap(format!(
            "the member process never got a share: {} and {killed_held} of 4",
            survivor.held()
        )));
    }
    // SIGKILL: no LeaveGroup; only the session timeout tells the coordinator.
    child.kill()?;
    child.wait()?;
    let moved = settle(SESSION_TIMEOUT * 5, || survivor.held() == 4);
    let held = survivor.held();
    survivor.leave();
    Ok(if moved {
        Seen::Faithful
    } else {
        Seen::Gap(format!(
            "the survivor kept {held} of 4 partitions {}s after the kill (session timeout {}s)",
            (SESSION_TIMEOUT * 5).as_secs(),
            SESSION_TIMEOUT.as_secs()
        ))
    })
}
