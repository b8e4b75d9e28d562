//! Kafka and process faults injected into a running pipeline (real YOLOX-Nano, embedded
//! mock cluster): brokers going down and coming back, request errors on Produce, Fetch and
//! OffsetCommit, a rebalance while frames are in flight, and recognize workers panicking.
//!
//! Each test sends a known set of frames from several cameras, injects its fault, then reads
//! the results and dead-letter topics back and checks the delivery promise
//! ([`check_delivery`]): every frame has a result or a dead letter, duplicates are counted
//! (and allowed only where a partition moved), and each camera's outputs keep input order.
//! Where the pipeline stops cleanly, its group must also have committed every input partition
//! to its end: nothing stuck.

use std::sync::Once;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rdkafka::mocking::MockCoordinator;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use tessera::embedded::{CameraFrame, EmbeddedKafka, Output, publish_frames};
use tessera_actors::PipelineConfig;
use tessera_tests::delivery::{
    CAMERAS, COMPLETION, DLQ, FRAMES, OUTPUTS, RESULTS, STARTUP, assert_fits_mock_log,
    camera_frames, check_delivery, dog, final_report, read_all_outputs, read_from_start,
    read_until_covered, record_count, wait_committed_to_end, wait_for_records,
};
use tessera_tests::{assets_dir, manifest};

/// A small, fast pipeline: full-frame inference only, a small in-flight window so frames of
/// both cameras interleave and the faults find frames in flight.
fn pipeline_config(brokers: &str, group: &str) -> PipelineConfig {
    let mut config = PipelineConfig::default();
    config.kafka.brokers = brokers.to_owned();
    config.kafka.group_id = group.to_owned();
    config.model.manifest = manifest("yolox-nano");
    config.tiling.enabled = false;
    config.recognize.workers = 1;
    config.flow.max_in_flight_frames = 4;
    config
}

fn create_topics(kafka: &EmbeddedKafka, input_partitions: i32) -> anyhow::Result<()> {
    kafka.create_topic(FRAMES, input_partitions)?;
    kafka.create_topic(RESULTS, 3)?;
    kafka.create_topic(DLQ, 1)?;
    Ok(())
}

/// Publishes the frames as cameras would and checks they fit the mock broker's log.
async fn publish(brokers: &str, sent: &[CameraFrame]) -> anyhow::Result<Vec<i32>> {
    let landed = publish_frames(brokers, FRAMES, sent).await?;
    Ok(assert_fits_mock_log(sent, &landed))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_down_and_back_up_mid_stream() -> anyhow::Result<()> {
    let Some(assets) = assets_dir() else {
        return Ok(());
    };
    let name = "broker down/up";
    // Three brokers. Broker 1 coordinates the group and leads cam-north's input and results
    // partitions (1 of 3 for its key); broker 2 leads cam-east's (0). Taking broker 1 down
    // stops one camera's fetches and produces and the group coordination at once, while the
    // other camera goes on (the mock moves no leaders).
    let kafka = EmbeddedKafka::start(3)?;
    let brokers = kafka.bootstrap_servers();
    create_topics(&kafka, 3)?;
    let group = "faults-broker";
    let cluster = kafka.cluster();
    cluster.coordinator(MockCoordinator::Group(group.into()), 1)?;
    for topic in [FRAMES, RESULTS] {
        cluster.partition_leader(topic, 1, Some(1))?;
        cluster.partition_leader(topic, 0, Some(2))?;
    }
    let sent = camera_frames(&CAMERAS, 24, &dog(&assets)?);
    let partitions = publish(&brokers, &sent).await?;
    assert_eq!(partitions, [0, 1], "one input partition per camera");

    let pipeline =
        tessera_actors::start(pipeline_config(&brokers, group), "broker", Some(&assets)).await?;
    let outage = Duration::from_secs(3);

    // Fault 1: one broker (coordinator and partition leader) down, then back.
    let before = wait_for_records(&brokers, &OUTPUTS, 4, STARTUP).await?;
    cluster.broker_down(1)?;
    tokio::time::sleep(outage).await;
    cluster.broker_up(1)?;
    eprintln!("{name}: broker 1 down for {outage:?} after {before} outputs");
    // The pipeline recovers: more outputs appear after the broker is back.
    let recovered = wait_for_records(&brokers, &OUTPUTS, before + 4, COMPLETION).await?;

    // Fault 2: the whole cluster down, then back.
    cluster.broker_down(-1)?;
    tokio::time::sleep(outage).await;
    cluster.broker_up(-1)?;
    eprintln!("{name}: all brokers down for {outage:?} after {recovered} outputs");
    assert!(
        (recovered as usize) < sent.len(),
        "the stream ended before the second outage ({recovered} outputs); send more frames"
    );

    read_until_covered(&brokers, RESULTS, DLQ, &sent, COMPLETION).await?;
    let shutdown = pipeline.shutdown(Duration::from_secs(20)).await?;
    assert_eq!(shutdown.abandoned_frames, 0);
    let report = final_report(&brokers, &sent, false, name).await?;
    report.assert_ok();
    assert_eq!(report.dead_letters, 0, "every frame is a valid image");
    wait_committed_to_end(&brokers, group, FRAMES, Duration::from_secs(30)).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_errors_on_produce_fetch_and_offset_commit() -> anyhow::Result<()> {
    let Some(assets) = assets_dir() else {
        return Ok(());
    };
    use RDKafkaRespErr::{
        RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE as COORDINATOR_NOT_AVAILABLE,
        RD_KAFKA_RESP_ERR_NOT_COORDINATOR as NOT_COORDINATOR,
        RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION as NOT_LEADER,
        RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT as TIMED_OUT,
    };
    let name = "request errors";
    let kafka = EmbeddedKafka::start(1)?;
    let brokers = kafka.bootstrap_servers();
    create_topics(&kafka, 2)?;
    let group = "faults-requests";
    let cluster = kafka.cluster();
    let sent = camera_frames(&CAMERAS, 20, &dog(&assets)?);
    publish(&brokers, &sent).await?;

    let mut config = pipeline_config(&brokers, group);
    // The mock broker checks idempotent-producer sequence numbers only for transactional
    // producers (rdkafka_mock.c, rd_kafka_mock_validate_records). With pipelined requests, a
    // batch that failed with a not-persisted error (NOT_LEADER) while its successor succeeded
    // is then "implicitly acked" by librdkafka and silently missing from the mock's log; a
    // real broker rejects the successor with OUT_OF_ORDER_SEQUENCE_NUMBER and librdkafka
    // retries both. One request in flight keeps the mock honest.
    config
        .kafka
        .producer_properties
        .insert("max.in.flight.requests.per.connection".into(), "1".into());
    let pipeline = tessera_actors::start(config, "requests", Some(&assets)).await?;
    // Round 1, before the pipeline's first fetch, produce and commit (it is still joining
    // the group, and no other client produces, fetches or commits now): each error stack is
    // consumed by the pipeline alone. The stacks are FIFO, so the first successful request
    // of a kind proves every error of that kind was served.
    cluster.request_errors(RDKafkaApiKey::Fetch, &[NOT_LEADER, TIMED_OUT, NOT_LEADER]);
    cluster.request_errors(RDKafkaApiKey::Produce, &[NOT_LEADER, TIMED_OUT, NOT_LEADER]);
    cluster.request_errors(
        RDKafkaApiKey::OffsetCommit,
        &[COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR, TIMED_OUT],
    );
    // Outputs exist only after a fetch and a produce succeeded: round 1's errors were served.
    let before = wait_for_records(&brokers, &OUTPUTS, 6, STARTUP).await?;

    // Round 2, mid-stream with frames in flight.
    cluster.request_errors(RDKafkaApiKey::Produce, &[TIMED_OUT, NOT_LEADER, TIMED_OUT]);
    cluster.request_errors(RDKafkaApiKey::Fetch, &[TIMED_OUT, NOT_LEADER]);
    cluster.request_errors(
        RDKafkaApiKey::OffsetCommit,
        &[NOT_COORDINATOR, COORDINATOR_NOT_AVAILABLE],
    );
    let at_push = record_count(&brokers, &OUTPUTS).await?;
    eprintln!("{name}: round 2 pushed after {before} outputs ({at_push} when pushed)");
    if (at_push as usize) < sent.len() {
        eprintln!("{name}: frames still to publish, so round 2's produce errors will be served");
    } else {
        eprintln!("{name}: WARNING: the stream ended before round 2; it hit no produce request");
    }

    read_until_covered(&brokers, RESULTS, DLQ, &sent, COMPLETION).await?;
    // The commit recovers from its errors while the pipeline runs (auto-commit retries the
    // stored offsets): this also proves both rounds of OffsetCommit errors were served.
    let progress = wait_committed_to_end(&brokers, group, FRAMES, Duration::from_secs(60)).await?;
    eprintln!("{name}: committed {progress:?}");
    for api in [
        RDKafkaApiKey::Produce,
        RDKafkaApiKey::Fetch,
        RDKafkaApiKey::OffsetCommit,
    ] {
        cluster.clear_request_errors(api);
    }
    let shutdown = pipeline.shutdown(Duration::from_secs(20)).await?;
    assert_eq!(shutdown.abandoned_frames, 0);
    let report = final_report(&brokers, &sent, false, name).await?;
    report.assert_ok();
    assert_eq!(report.dead_letters, 0, "every frame is a valid image");
    wait_committed_to_end(&brokers, group, FRAMES, Duration::from_secs(30)).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebalance_while_frames_are_in_flight() -> anyhow::Result<()> {
    let Some(assets) = assets_dir() else {
        return Ok(());
    };
    let name = "rebalance";
    let kafka = EmbeddedKafka::start(1)?;
    let brokers = kafka.bootstrap_servers();
    create_topics(&kafka, 4)?;
    let group = "faults-rebalance";
    // Four cameras on the four input partitions, so that some partitions move from A to B
    // (and all of A's to B at A's shutdown) while their frames are in flight.
    let cameras = ["cam-north", "cam-gate", "cam-south", "cam-east"];
    let dog = dog(&assets)?;
    let early = camera_frames(&cameras, 10, &dog);
    let late: Vec<CameraFrame> = camera_frames(&cameras, 16, &dog)
        .into_iter()
        .skip(early.len())
        .collect();
    let sent: Vec<CameraFrame> = early.iter().chain(&late).cloned().collect();
    let mut landed = publish_frames(&brokers, FRAMES, &early).await?;

    // The mock coordinator holds every rebalance of a stable group open for the session
    // timeout less a second, and answers a follower whose SyncGroup arrives after the
    // leader's with INVALID_REQUEST (it must rejoin: another round). A short session keeps
    // those rounds short; the revoke drain must stay below it.
    let config = || {
        let mut config = pipeline_config(&brokers, group);
        config.kafka.session_timeout = Duration::from_secs(6);
        config.kafka.revoke_drain_timeout = Duration::from_secs(3);
        config
    };
    // A tiles the frames (tile_count > 1: slow, so it still has a backlog when B arrives),
    // B runs full frames only (tile_count 1): each result tells which instance made it.
    let mut a_config = config();
    a_config.tiling.enabled = true;
    let a = tessera_actors::start(a_config, "rebalance-a", Some(&assets)).await?;
    let before_b = wait_for_records(&brokers, &OUTPUTS, 6, STARTUP).await?;
    // B joins the group mid-stream, with A busy (frames in flight, a backlog behind them):
    // A must give up some partitions while their frames are in flight.
    let b_started = std::time::Instant::now();
    let b = tessera_actors::start(config(), "rebalance-b", Some(&assets)).await?;
    landed.extend(publish_frames(&brokers, FRAMES, &late).await?);
    let partitions = assert_fits_mock_log(&sent, &landed);
    assert_eq!(partitions, [0, 1, 2, 3], "one input partition per camera");
    // The rebalance happened while A was running: B publishes results before A stops.
    let by_b =
        |output: &Output| matches!(output, Output::Result { result, .. } if result.tile_count == 1);
    let seen = read_from_start(&brokers, RESULTS, DLQ, COMPLETION, |outputs| {
        outputs.iter().any(by_b)
    })
    .await?;
    assert!(
        seen.iter().any(by_b),
        "B got no partition while A was running"
    );
    let before_stop = record_count(&brokers, &OUTPUTS).await?;
    eprintln!(
        "{name}: B started after {before_b} outputs, published its first result {:?} later; \
         A stops after {before_stop} outputs",
        b_started.elapsed()
    );
    assert!(
        (before_stop as usize) < sent.len(),
        "the stream ended before A stopped; send more frames"
    );
    // A leaves with frames in flight: its partitions move to B.
    let a_report = a.shutdown(Duration::from_secs(20)).await?;
    eprintln!("{name}: A stopped ({a_report:?})");

    read_until_covered(&brokers, RESULTS, DLQ, &sent, COMPLETION).await?;
    let b_report = b.shutdown(Duration::from_secs(20)).await?;
    assert_eq!(b_report.abandoned_frames, 0);
    let outputs = read_all_outputs(&brokers, RESULTS, DLQ, Duration::from_secs(60)).await?;
    let report = check_delivery(&sent, &outputs, true);
    let from_b = outputs.iter().filter(|o| by_b(o)).count();
    eprintln!(
        "{name}: {report}; {} results from A, {from_b} from B",
        report.results - from_b
    );
    report.assert_ok();
    assert_eq!(report.dead_letters, 0, "every frame is a valid image");
    wait_committed_to_end(&brokers, group, FRAMES, Duration::from_secs(30)).await?;
    Ok(())
}

/// Panics raised in the actors crate (the recognize test hook), counted process-wide.
static ACTOR_PANICS: AtomicUsize = AtomicUsize::new(0);

fn count_actor_panics() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info.location().is_some_and(|l| {
                let file = l.file().replace('\\', "/");
                file.contains("actors/src/")
            }) {
                ACTOR_PANICS.fetch_add(1, Ordering::SeqCst);
            }
            previous(info);
        }));
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recognize_worker_panicking_every_nth_batch_loses_nothing() -> anyhow::Result<()> {
    let Some(assets) = assets_dir() else {
        return Ok(());
    };
    count_actor_panics();
    let name = "recognize panics";
    let kafka = EmbeddedKafka::start(1)?;
    let brokers = kafka.bootstrap_servers();
    create_topics(&kafka, 2)?;
    let group = "faults-panics";
    let sent = camera_frames(&CAMERAS, 12, &dog(&assets)?);
    publish(&brokers, &sent).await?;

    let every = 4;
    let mut config = pipeline_config(&brokers, group);
    // Two workers: a panicking worker's batch can be taken up by the other one.
    config.recognize.workers = 2;
    config.recognize.panic_every_nth_batch = Some(every);
    // The panics are the test, not a restart storm.
    config.supervision.max_restarts = 1000;
    let panics_before = ACTOR_PANICS.load(Ordering::SeqCst);
    let pipeline = tessera_actors::start(config, "panics", Some(&assets)).await?;

    read_until_covered(&brokers, RESULTS, DLQ, &sent, COMPLETION).await?;
    let shutdown = pipeline.shutdown(Duration::from_secs(20)).await?;
    assert_eq!(shutdown.abandoned_frames, 0);
    let panics = ACTOR_PANICS.load(Ordering::SeqCst) - panics_before;
    eprintln!(
        "{name}: {panics} worker panic(s) over {} frames (one batch per frame, every {every}th panics)",
        sent.len()
    );
    assert!(panics > 0, "the test hook never fired");
    let report = final_report(&brokers, &sent, false, name).await?;
    report.assert_ok();
    assert_eq!(
        report.dead_letters, 0,
        "a panicked batch is re-dispatched, not dead-lettered"
    );
    wait_committed_to_end(&brokers, group, FRAMES, Duration::from_secs(30)).await?;
    Ok(())
}
