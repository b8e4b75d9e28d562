//! Shutdown when Kafka acknowledges nothing: the drain gives up at its deadline, the stages
//! stop anyway (publish does not wedge on records it cannot deliver), and the report names
//! exactly the frames whose output Kafka never acknowledged. (Its own test binary: it loads a
//! model and would slow the timing-sized fault tests if it ran beside them.)

use std::time::Duration;

use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use tessera::embedded::publish_frames;
use tessera_actors::observe::Queue;
use tessera_tests::assets_dir;
use tessera_tests::broker::BrokerKind;
use tessera_tests::delivery::{CAMERAS, STARTUP, assert_fits_mock_log, camera_frames, dog};
use tessera_tests::harness::{FRAMES, Harness, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_reports_exactly_the_frames_kafka_never_acknowledged() -> anyhow::Result<()> {
    let Some(assets) = assets_dir() else {
        return Ok(());
    };
    // Fault injection: the mock cluster whatever TESSERA_TEST_BROKER says.
    let harness = Harness::start_on(BrokerKind::Mock, 2)?;
    let sent = camera_frames(&CAMERAS, 3, &dog(&assets)?);
    let landed = publish_frames(&harness.brokers, FRAMES, &sent).await?;
    assert_fits_mock_log(&sent, &landed);
    // From now on the broker refuses every produce, retriably: no output can be acknowledged,
    // and the producer keeps retrying (its message timeout is far away).
    let kafka = harness
        .broker
        .mock()
        .ok_or_else(|| anyhow::anyhow!("fault injection needs the mock cluster"))?;
    kafka.cluster().request_errors(
        RDKafkaApiKey::Produce,
        &vec![RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS; 100_000],
    );
    let mut config = harness.config("abandoned");
    config.tiling.enabled = false;
    config.flow.max_in_flight_frames = 16;
    let pipeline = tessera_actors::start(config, "abandoned", Some(&assets)).await?;
    let metrics = pipeline.monitor().metrics.clone();
    // Every frame consumed, processed and handed to the producer.
    let handed = eventually(STARTUP, || {
        (metrics.queue(Queue::Delivery).pushed.get() == sent.len() as u64).then_some(())
    })
    .await;
    assert!(
        handed.is_some(),
        "{} of {} frames reached the producer",
        metrics.queue(Queue::Delivery).pushed.get(),
        sent.len()
    );
    assert_eq!(pipeline.monitor().status().frames_in_flight, sent.len());
    // The drain cannot finish: shutdown gives up at its deadline, stops the stages anyway (publish
    // does not wedge on its undeliverable records), and reports exactly the frames in flight.
    let report = pipeline.shutdown(Duration::from_secs(2)).await?;
    assert_eq!(report.abandoned_frames, sent.len());
    assert_eq!(metrics.frames_published.get(), 0);
    Ok(())
}
