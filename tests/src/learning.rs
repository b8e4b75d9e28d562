//! Labelled images for the learning tests, made by the tests themselves from the shared
//! images (nothing copied into the repository): augmented crops of distinct objects and
//! scenes, encoded as JPEG frames, and their embeddings from the backbone.

use std::collections::HashMap;
use std::io::Cursor;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use image::{ImageFormat, RgbImage, imageops};
use tessera_models::{Embedder, Model, ModelSession, SessionConfig};
use tessera_operators::PixelRect;

use tessera::embedded::{CameraFrame, Output, publish_frames, read_outputs};
use tessera_actors::learn::{Learning, RoundOutcome, RoundReport};
use tessera_actors::{FrameResult, PipelineHandle};

use crate::harness::{DLQ, FRAMES, Harness, RESULTS, eventually};

/// The labels topic of the learning tests.
pub const LABELS: &str = "labels";
use crate::manifest;

/// A class of test images: a region of a shared image, cropped and varied.
#[derive(Debug, Clone, Copy)]
pub struct Scene {
    pub label: &'static str,
    /// File under `images/` of the assets.
    pub image: &'static str,
    /// The region the crops are taken from (pixels).
    pub region: PixelRect,
}

/// The dog, the car and the bicycle of `dog.jpg` (boxes of the YOLOX golden), and the aerial
/// parking lot of `small-vehicles1.jpeg`: four classes MobileNetV2's embedding tells apart.
pub const DOG: Scene = Scene {
    label: "dog",
    image: "dog.jpg",
    region: PixelRect {
        x: 132,
        y: 206,
        width: 194,
        height: 337,
    },
};
pub const CAR: Scene = Scene {
    label: "car",
    image: "dog.jpg",
    region: PixelRect {
        x: 466,
        y: 78,
        width: 226,
        height: 93,
    },
};
pub const BICYCLE: Scene = Scene {
    label: "bicycle",
    image: "dog.jpg",
    region: PixelRect {
        x: 330,
        y: 140,
        width: 242,
        height: 283,
    },
};
pub const PARKING: Scene = Scene {
    label: "parking",
    image: "small-vehicles1.jpeg",
    region: PixelRect {
        x: 0,
        y: 0,
        width: 1068,
        height: 580,
    },
};

/// `count` variations of `scene`: a random crop of 60-100% of the region's sides, a random
/// horizontal flip and a brightness shift of up to +-25, from a seeded generator
/// (deterministic).
pub fn augmented(
    assets: &Path,
    scene: Scene,
    count: usize,
    seed: u64,
) -> anyhow::Result<Vec<RgbImage>> {
    let source = image::open(assets.join("images").join(scene.image))?.to_rgb8();
    let mut rng = seed ^ 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        rng = rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    };
    let r = scene.region;
    let mut images = Vec::with_capacity(count);
    for _ in 0..count {
        let width = ((0.6 + 0.4 * next()) * f64::from(r.width)).max(16.0) as u32;
        let height = ((0.6 + 0.4 * next()) * f64::from(r.height)).max(16.0) as u32;
        let x = r.x + (next() * f64::from(r.width - width.min(r.width))) as u32;
        let y = r.y + (next() * f64::from(r.height - height.min(r.height))) as u32;
        let mut crop = imageops::crop_imm(&source, x, y, width, height).to_image();
        if next() < 0.5 {
            imageops::flip_horizontal_in_place(&mut crop);
        }
        let shift = ((next() - 0.5) * 50.0) as i32;
        imageops::colorops::brighten_in_place(&mut crop, shift);
        images.push(crop);
    }
    Ok(images)
}

/// The image as a JPEG frame payload.
pub fn jpeg(image: &RgbImage) -> anyhow::Result<Vec<u8>> {
    let mut bytes = Cursor::new(Vec::new());
    image.write_to(&mut bytes, ImageFormat::Jpeg)?;
    Ok(bytes.into_inner())
}

/// The shipped MobileNetV2 (its derived 1280-d embedding) as an embedder.
pub fn mobilenet_embedder(assets: &Path) -> anyhow::Result<Embedder> {
    let model = Model::load(&manifest("mobilenetv2"), None, Some(assets))?;
    let env = crate::ort_env()?;
    let session = ModelSession::load(&env, Arc::new(model), &SessionConfig::default())?;
    Ok(Embedder::new(session)?)
}

/// Publishes the frames and waits for their results, by frame id (every frame must have one).
pub async fn results_of(
    harness: &Harness,
    frames: &[CameraFrame],
) -> anyhow::Result<HashMap<String, FrameResult>> {
    publish_frames(&harness.brokers, FRAMES, frames).await?;
    let wanted: Vec<&str> = frames.iter().map(|f| f.frame_id.as_str()).collect();
    let outputs = read_outputs(
        &harness.brokers,
        RESULTS,
        DLQ,
        Duration::from_secs(240),
        |_| {},
        |outputs| {
            let have: Vec<&str> = outputs.iter().filter_map(Output::frame_id).collect();
            wanted.iter().all(|id| have.contains(id))
        },
    )
    .await?;
    let results: HashMap<String, FrameResult> = outputs
        .iter()
        .filter_map(Output::result)
        .filter(|r| wanted.contains(&r.frame_id.as_str()))
        .map(|r| (r.frame_id.clone(), r.clone()))
        .collect();
    anyhow::ensure!(
        results.len() == wanted.len(),
        "{} of {} frames have a result",
        results.len(),
        wanted.len()
    );
    Ok(results)
}

/// Waits until the replay buffers hold `count` examples.
pub async fn examples_reach(pipeline: &PipelineHandle, count: i64) -> anyhow::Result<()> {
    let metrics = &pipeline.monitor().metrics;
    eventually(Duration::from_secs(180), || {
        (metrics.replay_examples.get() >= count).then_some(())
    })
    .await
    .ok_or_else(|| {
        anyhow::anyhow!(
            "the replay buffers hold {} examples, {count} expected",
            metrics.replay_examples.get()
        )
    })
}

/// Asks for a round of `scope`, waits for its report and, when it promoted a head, for the
/// head to go live here.
pub async fn round(learning: &Arc<Learning>, scope: &str) -> anyhow::Result<RoundReport> {
    let before = learning.trainer.reports().get(scope).map(|r| r.finished_ms);
    learning.trainer.request(Some(scope.to_owned()));
    let report = eventually(Duration::from_secs(120), || {
        learning
            .trainer
            .reports()
            .get(scope)
            .filter(|r| Some(r.finished_ms) != before)
            .cloned()
    })
    .await
    .ok_or_else(|| anyhow::anyhow!("no round of {scope} finished"))?;
    if let (RoundOutcome::Promoted, Some(version)) = (report.outcome, report.version) {
        eventually(Duration::from_secs(60), || {
            (learning.heads.live_version(scope) == version).then_some(())
        })
        .await
        .ok_or_else(|| anyhow::anyhow!("{scope} head v{version} never went live"))?;
    }
    Ok(report)
}

/// Sends label records (raw bytes: JSON, or anything a test wants refused) to the labels
/// topic, each acknowledged; returns how many.
pub async fn send_labels(harness: &Harness, values: &[Vec<u8>]) -> anyhow::Result<usize> {
    let producer: rdkafka::producer::FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &harness.brokers)
        .create()?;
    for value in values {
        producer
            .send(
                rdkafka::producer::FutureRecord::<(), _>::to(LABELS).payload(value),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)?;
    }
    Ok(values.len())
}
