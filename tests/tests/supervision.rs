//! The supervisor restarts a failed child, and the pipeline keeps processing afterwards.

use std::collections::HashSet;
use std::time::Duration;

use ractor::{ActorCell, ActorRef};
use tessera::embedded::{CameraFrame, EmbeddedKafka, Output, publish_frames, read_outputs};
use tessera_actors::PipelineConfig;
use tessera_actors::merge::MergeMsg;
use tessera_actors::names::ActorNames;
use tessera_tests::{assets_dir, manifest};

/// Polls `condition` until it holds or `timeout` passes.
async fn eventually<T>(timeout: Duration, mut condition: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = condition() {
            return Some(value);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn frames(camera: &str, payload: &[u8], range: std::ops::Range<usize>) -> Vec<CameraFrame> {
    range
        .map(|i| CameraFrame {
            camera: camera.as_bytes().to_vec(),
            frame_id: format!("{camera}-{i}"),
            payload: payload.to_vec(),
            content_type: None,
            capture_ms: i as i64,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_stage_is_restarted_and_the_stream_goes_on() -> anyhow::Result<()> {
    let Some(assets) = assets_dir() else {
        return Ok(());
    };
    let dog = std::fs::read(assets.join("images/dog.jpg"))?;
    let kafka = EmbeddedKafka::start(1)?;
    let brokers = kafka.bootstrap_servers();
    for topic in ["frames", "detections", "frames.dlq"] {
        kafka.create_topic(topic, 1)?;
    }
    let mut config = PipelineConfig::default();
    config.kafka.brokers = brokers.clone();
    config.kafka.group_id = "supervision".into();
    config.model.manifest = manifest("yolox-nano");
    config.tiling.enabled = false;

    let pipeline = tessera_actors::start(config, "supervision", Some(&assets)).await?;
    let names = ActorNames::new("supervision");
    let merge_name = names.merge();
    let first: ActorRef<MergeMsg> = ActorRef::where_is(merge_name.clone())
        .ok_or_else(|| anyhow::anyhow!("merge actor not registered"))?;
    let first_id = first.get_id();

    // Kill the merge stage while the pipeline is idle: the supervisor must bring it back.
    ActorCell::from(first).kill();
    let restarted = eventually(Duration::from_secs(30), || {
        ActorRef::<MergeMsg>::where_is(merge_name.clone()).filter(|a| a.get_id() != first_id)
    })
    .await;
    assert!(restarted.is_some(), "merge was not restarted");

    // The restarted stage is wired in: frames published now all come out.
    let sent = frames("cam-1", &dog, 0..3);
    publish_frames(&brokers, "frames", &sent).await?;
    let expected: HashSet<String> = sent.iter().map(|f| f.frame_id.clone()).collect();
    let outputs = read_outputs(
        &brokers,
        "detections",
        "frames.dlq",
        Duration::from_secs(120),
        |_| {},
        |outputs| outputs.len() >= expected.len(),
    )
    .await?;
    let seen: HashSet<String> = outputs
        .iter()
        .filter_map(|o| match o {
            Output::Result { result, .. } => Some(result.frame_id.clone()),
            Output::DeadLetter { .. } => None,
        })
        .collect();
    assert_eq!(seen, expected);
    pipeline.shutdown(Duration::from_secs(10)).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_storm_stops_the_pipeline_with_an_error() -> anyhow::Result<()> {
    let Some(assets) = assets_dir() else {
        return Ok(());
    };
    let dog = std::fs::read(assets.join("images/dog.jpg"))?;
    let kafka = EmbeddedKafka::start(1)?;
    let brokers = kafka.bootstrap_servers();
    for topic in ["frames", "detections", "frames.dlq"] {
        kafka.create_topic(topic, 1)?;
    }
    let mut config = PipelineConfig::default();
    config.kafka.brokers = brokers.clone();
    config.kafka.group_id = "storm".into();
    config.model.manifest = manifest("yolox-nano");
    config.tiling.enabled = false;
    // Every model run panics: each failure is counted, and the fourth within the window
    // escalates. Attempts are plenty, so frames are never dead-lettered before that.
    config.recognize.panic_every_nth_batch = Some(1);
    config.supervision.max_restarts = 3;
    config.flow.max_attempts = 100;

    let mut pipeline = tessera_actors::start(config, "storm", Some(&assets)).await?;
    publish_frames(&brokers, "frames", &frames("cam-1", &dog, 0..2)).await?;
    let stopped = tokio::time::timeout(Duration::from_secs(120), pipeline.stopped()).await;
    match stopped {
        Ok(Err(tessera_actors::PipelineError::RestartStorm { restarts, last, .. })) => {
            assert!(restarts > 3, "{restarts} restarts");
            assert!(last.contains("recognize"), "{last}");
        }
        other => panic!("expected a restart storm, got {other:?}"),
    }
    Ok(())
}
