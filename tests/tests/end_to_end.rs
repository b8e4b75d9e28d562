//! End to end through the embedded Kafka-protocol broker with the real YOLOX-Nano model:
//! frames of two cameras in, one result per frame out, keys kept, each camera's results in
//! input order, undecodable frames on the dead-letter topic, nothing missing.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use tessera::embedded::{CameraFrame, Output, publish_frames};
use tessera_actors::config::LagPolicy;
use tessera_actors::protocol::result::FrameStatus;
use tessera_tests::assets_dir;
use tessera_tests::harness::{FRAMES, Harness, camera_frames};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_cameras_in_order_with_bad_frames_dead_lettered() -> anyhow::Result<()> {
    let Some(assets) = assets_dir() else {
        return Ok(());
    };
    let dog = std::fs::read(assets.join("images/dog.jpg"))?;
    let vehicles = std::fs::read(assets.join("images/small-vehicles1.jpeg"))?;

    let harness = Harness::start(3)?;
    let brokers = harness.brokers.clone();
    let mut config = harness.config("e2e");
    // A small in-flight window makes frames of both cameras interleave through every stage.
    config.flow.max_in_flight_frames = 4;

    // Each camera sends 5 frames; cam-b's 2nd and 4th are undecodable.
    let cameras = ["cam-a", "cam-b"];
    let mut frames = Vec::new();
    let mut bad: HashMap<String, &str> = HashMap::new();
    for index in 0..5 {
        for camera in cameras {
            let frame_id = format!("{camera}-{index}");
            let payload = match (camera, index) {
                ("cam-b", 1) => {
                    bad.insert(frame_id.clone(), "corrupt_image");
                    dog[..dog.len() / 2].to_vec()
                }
                ("cam-b", 3) => {
                    bad.insert(frame_id.clone(), "unsupported_format");
                    b"definitely not an image, just some bytes".to_vec()
                }
                (_, i) if i % 2 == 0 => dog.clone(),
                _ => vehicles.clone(),
            };
            frames.push(CameraFrame {
                camera: camera.as_bytes().to_vec(),
                frame_id,
                payload,
                content_type: None,
                capture_ms: 1_700_000_000_000 + index as i64,
            });
        }
    }
    publish_frames(&brokers, FRAMES, &frames).await?;

    let pipeline = tessera_actors::start(config, "e2e", Some(&assets)).await?;
    let expected: HashSet<String> = frames.iter().map(|f| f.frame_id.clone()).collect();
    let outputs = harness
        .read(expected.len(), Duration::from_secs(240))
        .await?;
    let report = pipeline.shutdown(Duration::from_secs(10)).await?;
    assert_eq!(report.abandoned_frames, 0);

    // None missing, none duplicated.
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for output in &outputs {
        *seen.entry(output.frame_id().unwrap_or("?")).or_default() += 1;
    }
    for id in &expected {
        assert_eq!(
            seen.get(id.as_str()),
            Some(&1),
            "frame {id}: outputs {seen:?}"
        );
    }
    assert_eq!(outputs.len(), expected.len());

    // Keys kept; results and dead letters where they belong; per-camera input order.
    let mut order: HashMap<String, Vec<String>> = HashMap::new();
    for output in &outputs {
        match output {
            Output::Result { key, result, .. } => {
                let camera = String::from_utf8(key.clone().unwrap_or_default())?;
                assert_eq!(result.camera, camera);
                assert!(result.frame_id.starts_with(&camera));
                assert!(
                    !bad.contains_key(&result.frame_id),
                    "{} should be dead-lettered",
                    result.frame_id
                );
                assert_eq!(result.schema, 1);
                assert!(result.tile_count > 1, "tiles plus the full frame");
                assert!(
                    !result.detections.is_empty(),
                    "{} has detections",
                    result.frame_id
                );
                for d in &result.detections {
                    assert!(d.bbox.x1 >= 0.0 && d.bbox.y1 >= 0.0);
                    assert!(
                        d.bbox.x2 <= result.image.width as f32
                            && d.bbox.y2 <= result.image.height as f32
                    );
                }
                order
                    .entry(camera)
                    .or_default()
                    .push(result.frame_id.clone());
            }
            Output::DeadLetter {
                key,
                frame_id,
                source,
                kind,
                error,
                payload_len,
            } => {
                let frame_id = frame_id.clone().unwrap_or_default();
                // Every dead letter says where its record lies (`topic/partition/offset`).
                assert_eq!(
                    source.as_deref().map(|s| s.split('/').count()),
                    Some(3),
                    "{frame_id}: {source:?}"
                );
                assert_eq!(key.as_deref(), Some(&b"cam-b"[..]));
                assert_eq!(
                    bad.get(&frame_id).copied(),
                    Some(kind.as_str()),
                    "{frame_id}: {error}"
                );
                assert!(!error.is_empty());
                let sent = frames
                    .iter()
                    .find(|f| f.frame_id == frame_id)
                    .map(|f| f.payload.len());
                assert_eq!(
                    sent,
                    Some(*payload_len),
                    "the DLQ keeps the original payload"
                );
            }
        }
    }
    for camera in cameras {
        let want: Vec<String> = frames
            .iter()
            .filter(|f| f.camera == camera.as_bytes() && !bad.contains_key(&f.frame_id))
            .map(|f| f.frame_id.clone())
            .collect();
        assert_eq!(
            order.get(camera),
            Some(&want),
            "{camera} results in input order"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_stale_skips_old_frames_and_processes_fresh_ones() -> anyhow::Result<()> {
    let Some(assets) = assets_dir() else {
        return Ok(());
    };
    let dog = std::fs::read(assets.join("images/dog.jpg"))?;
    let harness = Harness::start(1)?;
    let mut config = harness.config("lag");
    config.tiling.enabled = false;
    config.flow.lag_policy = LagPolicy::DropStale;
    config.flow.max_age = Duration::from_secs(60);

    // Captured an hour ago, then just now, alternating.
    let now = tessera_actors::protocol::now_ms();
    let mut frames = camera_frames("cam-lag", &dog, 0..6);
    for (i, frame) in frames.iter_mut().enumerate() {
        frame.capture_ms = if i % 2 == 0 { now - 3_600_000 } else { now };
    }
    publish_frames(&harness.brokers, FRAMES, &frames).await?;
    let pipeline = tessera_actors::start(config, "lag", Some(&assets)).await?;
    let outputs = harness.read(frames.len(), Duration::from_secs(120)).await?;
    pipeline.shutdown(Duration::from_secs(10)).await?;

    assert_eq!(outputs.len(), frames.len());
    for (i, output) in outputs.iter().enumerate() {
        let Output::Result { result, .. } = output else {
            panic!("unexpected dead letter {output:?}");
        };
        assert_eq!(result.frame_id, format!("cam-lag-{i}"), "input order kept");
        if i % 2 == 0 {
            assert_eq!(result.status, FrameStatus::Skipped);
            assert!(result.detections.is_empty());
        } else {
            assert_eq!(result.status, FrameStatus::Ok);
            assert!(!result.detections.is_empty());
        }
    }
    Ok(())
}
