//! Shutdown when Kafka acknowledges nothing: the drain gives up at its deadline, the stages
//! stop anyway (publish does not wedge on records it cannot deliver), and the report names
//! exactly the frames whose output Kafka never acknowledged. (Its own test binary: it loads a
//! model and would slow the timing-sized fault tests if it ran beside them.)

use std::time::Duration;

use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use tessera::embedded::{EmbeddedKafka, publish_frames};
use tessera_actors::PipelineConfig;
use tessera_actors::observe::Queue;
use tessera_tests::delivery::{
    CAMERAS, DLQ, FRAMES, RESULTS, STARTUP, assert_fits_mock_log, camera_frames, dog,
};
use tessera_tests::{assets_dir, manifest};

/// Polls `condition` every 50 ms until it holds or `timeout` passes.
async fn eventually(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    condition()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_reports_exactly_the_frames_kafka_never_acknowledged() -> anyhow::Result<()> {
    let Some(assets) = assets_dir() else {
        return Ok(());
    };
    let kafka = EmbeddedKafka::start(1)?;
    let brokers = kafka.bootstrap_servers();
    kafka.create_topic(FRAMES, 2)?;
    kafka.create_topic(RESULTS, 2)?;
    kafka.create_topic(DLQ, 1)?;
    let sent = camera_frames(&CAMERAS, 3, &dog(&assets)?);
    let landed = publish_frames(&brokers, FRAMES, &sent).await?;
    assert_fits_mock_log(&sent, &landed);
    // From now on the broker refuses every produce, retriably: no output can be acknowledged,
    // and the producer keeps retrying (its message timeout is far away).
    kafka.cluster().request_errors(
        RDKafkaApiKey::Produce,
        &vec![RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS; 100_000],
    );
    let mut config = PipelineConfig::default();
    config.kafka.brokers = brokers.clone();
    config.kafka.group_id = "abandoned".into();
    config.model.manifest = manifest("yolox-nano");
    config.tiling.enabled = false;
    config.flow.max_in_flight_frames = 16;
    let pipeline = tessera_actors::start(config, "abandoned", Some(&assets)).await?;
    let metrics = pipeline.monitor().metrics.clone();
    // Every frame consumed, processed and handed to the producer.
    let handed = eventually(STARTUP, || {
        metrics.queue(Queue::Delivery).pushed.get() == sent.len() as u64
    })
    .await;
    assert!(
        handed,
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
