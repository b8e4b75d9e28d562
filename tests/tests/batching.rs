//! Dynamic batching across frames (MobileNetV2, dynamic batch dimension): tiles of
//! consecutive frames share model runs, each frame still gets its own outputs, and a batch
//! that cannot fill runs after `recognize.max_batch_delay`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tessera::embedded::{Output, publish_frames};
use tessera_actors::PipelineConfig;
use tessera_models::{Model, ModelSession, Recognizer, SessionConfig};
use tessera_operators::decode::{DecodeLimits, decode_image};
use tessera_operators::merge::MergeConfig;
use tessera_operators::tiling::TilingConfig;
use tessera_tests::harness::{FRAMES, Harness, camera_frames};
use tessera_tests::{assets_dir, manifest};

fn config(harness: &Harness, group: &str, max_batch: usize, delay: Duration) -> PipelineConfig {
    let mut config = harness.config(group);
    config.model.manifest = manifest("mobilenetv2");
    // One tile per frame: every multi-tile run is made of several frames.
    config.tiling.enabled = false;
    config.recognize.max_batch = max_batch;
    config.recognize.max_batch_delay = delay;
    config
}

/// The top class of `image` classified alone, outside the pipeline.
fn top_class_alone(assets: &std::path::Path, image: &[u8]) -> anyhow::Result<u32> {
    let model = Model::load(&manifest("mobilenetv2"), None, Some(assets))?;
    let env = tessera_models::init_runtime(None)?;
    let session = ModelSession::load(&env, Arc::new(model), &SessionConfig::default())?;
    let tiling = TilingConfig {
        enabled: false,
        ..TilingConfig::default()
    };
    let mut recognizer = Recognizer::new(session, &tiling, MergeConfig::default());
    let frame = decode_image(image, &DecodeLimits::default())?;
    let recognition = recognizer.recognize(&frame)?;
    recognition
        .classifications
        .first()
        .map(|c| c.class_id)
        .ok_or_else(|| anyhow::anyhow!("no classification"))
}

fn top_class(output: &Output) -> Option<(String, u32)> {
    let result = output.result()?;
    Some((
        result.frame_id.clone(),
        result.classifications.first()?.class_id,
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiles_of_consecutive_frames_share_model_runs() -> anyhow::Result<()> {
    let Some(assets) = assets_dir() else {
        return Ok(());
    };
    let dog = std::fs::read(assets.join("images/dog.jpg"))?;
    let vehicles = std::fs::read(assets.join("images/small-vehicles1.jpeg"))?;
    let expected_dog = top_class_alone(&assets, &dog)?;
    let expected_vehicles = top_class_alone(&assets, &vehicles)?;
    assert_ne!(
        expected_dog, expected_vehicles,
        "the images must tell apart"
    );

    let harness = Harness::start(1)?;
    // A long delay: batches only run when full (or once the stream stops).
    let config = config(&harness, "batching", 4, Duration::from_secs(5));
    let mut frames = camera_frames("cam-a", &dog, 0..4);
    frames.extend(camera_frames("cam-b", &vehicles, 0..4));
    // Interleave, so every batch mixes both images.
    let frames: Vec<_> = (0..4)
        .flat_map(|i| [frames[i].clone(), frames[4 + i].clone()])
        .collect();
    publish_frames(&harness.brokers, FRAMES, &frames).await?;

    let pipeline = tessera_actors::start(config, "batching", Some(&assets)).await?;
    let outputs = harness.read(frames.len(), Duration::from_secs(120)).await?;
    let metrics = pipeline.monitor().metrics.clone();
    pipeline.shutdown(Duration::from_secs(10)).await?;

    // Each frame got its own image's class, whatever run it shared.
    let classes: HashMap<String, u32> = outputs.iter().filter_map(top_class).collect();
    assert_eq!(classes.len(), frames.len(), "{classes:?}");
    for (frame_id, class) in &classes {
        let expected = if frame_id.starts_with("cam-a") {
            expected_dog
        } else {
            expected_vehicles
        };
        assert_eq!(*class, expected, "{frame_id}");
    }
    // Eight one-tile frames ran in fewer than eight runs: runs took tiles of several frames.
    let runs = metrics.batch_size.get_sample_count();
    let tiles = metrics.batch_size.get_sample_sum();
    assert_eq!(tiles, frames.len() as f64);
    assert!(runs < frames.len() as u64, "{runs} runs for {tiles} tiles");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_cannot_fill_runs_after_the_delay() -> anyhow::Result<()> {
    let Some(assets) = assets_dir() else {
        return Ok(());
    };
    let dog = std::fs::read(assets.join("images/dog.jpg"))?;
    let harness = Harness::start(1)?;
    let config = config(&harness, "lone", 8, Duration::from_millis(100));
    let pipeline = tessera_actors::start(config, "lone", Some(&assets)).await?;
    publish_frames(&harness.brokers, FRAMES, &camera_frames("cam", &dog, 0..1)).await?;
    let outputs = harness.read(1, Duration::from_secs(60)).await?;
    let metrics = pipeline.monitor().metrics.clone();
    pipeline.shutdown(Duration::from_secs(10)).await?;
    assert_eq!(outputs.len(), 1);
    assert!(outputs[0].result().is_some());
    assert_eq!(metrics.batch_size.get_sample_count(), 1);
    assert_eq!(metrics.batch_size.get_sample_sum(), 1.0);
    Ok(())
}
