//! The independent goldens, through the whole actor pipeline: `dog.jpg` published to the
//! embedded broker, consumed, prepared, recognized, merged, sequenced and published by
//! tessera, its result read back from Kafka and held against the same goldens (and the same
//! checks, `tessera_tests::golden`) as the synchronous recognizer in `real_models.rs`.

use std::time::Duration;

use tessera::embedded::{Output, publish_frames};
use tessera_operators::merge::{MatchMetric, MergeConfig, MergeStrategy};
use tessera_tests::golden::{self, ClassificationGolden, DetectionGolden, Found};
use tessera_tests::harness::{FRAMES, Harness, camera_frames};
use tessera_tests::{assets_dir, manifest};

/// The one result of `dog.jpg` through a pipeline of `model`, full frame only, class-aware
/// NMS at IoU 0.5 (as the goldens were made).
async fn dog_through_the_pipeline(model: &str, group: &str) -> anyhow::Result<Option<Output>> {
    let Some(assets) = assets_dir() else {
        return Ok(None);
    };
    let dog = std::fs::read(assets.join("images/dog.jpg"))?;
    let harness = Harness::start(1)?;
    let mut config = harness.config(group);
    config.model.manifest = manifest(model);
    config.tiling.enabled = false;
    config.merge = MergeConfig {
        strategy: MergeStrategy::Nms,
        metric: MatchMetric::Iou,
        threshold: 0.5,
        class_agnostic: false,
    };
    let pipeline = tessera_actors::start(config, group, Some(&assets)).await?;
    publish_frames(&harness.brokers, FRAMES, &camera_frames("cam", &dog, 0..1)).await?;
    let mut outputs = harness.read(1, Duration::from_secs(120)).await?;
    pipeline.shutdown(Duration::from_secs(10)).await?;
    anyhow::ensure!(outputs.len() == 1, "{} outputs", outputs.len());
    Ok(outputs.pop())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn yolox_nano_dog_matches_the_golden_through_the_pipeline() -> anyhow::Result<()> {
    let Some(output) = dog_through_the_pipeline("yolox-nano", "golden-yolox").await? else {
        return Ok(());
    };
    let result = output
        .result()
        .ok_or_else(|| anyhow::anyhow!("dead-lettered: {output:?}"))?;
    assert_eq!(result.tile_count, 1, "full frame only");
    let found: Vec<Found> = result.detections.iter().map(Found::from).collect();
    let golden: DetectionGolden = golden::load("yolox_nano_dog_full_frame.json")?;
    let problems = golden::detection_mismatches(&golden, &found);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mobilenetv2_dog_matches_the_golden_top5_through_the_pipeline() -> anyhow::Result<()> {
    let Some(output) = dog_through_the_pipeline("mobilenetv2", "golden-mobilenet").await? else {
        return Ok(());
    };
    let result = output
        .result()
        .ok_or_else(|| anyhow::anyhow!("dead-lettered: {output:?}"))?;
    let found: Vec<u32> = result.classifications.iter().map(|c| c.class_id).collect();
    let golden: ClassificationGolden = golden::load("mobilenetv2_dog.json")?;
    let problems = golden::top5_mismatches(&golden, &found);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    Ok(())
}
