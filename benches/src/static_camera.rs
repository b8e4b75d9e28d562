//! The static-camera workload: frames of several static cameras (the project's own stream from
//! the shared images, `tessera_tests::scene`), fed to a consumer as fast as it takes them, and
//! what the change gate keeps of full tiling's detections.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use tessera::embedded::CameraFrame;
use tessera_actors::FrameResult;
use tessera_actors::protocol::result::BoxOut;
use tessera_operators::geometry::BBox;
use tessera_tests::scene::{SceneSpec, static_camera};

use crate::frames::{HEIGHT, WIDTH};

/// Capture time of every camera's first frame (2026-01-01).
const CAPTURE_START_MS: i64 = 1_767_225_600_000;
use crate::publish;

/// What the static cameras see: a shared image as background, and how many vehicles move.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Scene {
    pub background: String,
    pub movers: usize,
    /// Sensor noise, +- levels per channel.
    pub noise: u8,
}

impl Default for Scene {
    fn default() -> Self {
        let spec = SceneSpec::default();
        Self {
            background: spec.background,
            movers: spec.movers,
            noise: spec.noise,
        }
    }
}

/// Frames per second of the static cameras' clocks (their capture times).
pub const CAMERA_FPS: i64 = 10;

/// `per_camera` 1080p frames of each of `cameras` static cameras, interleaved (frame 0 of every
/// camera, then frame 1, ...), captured at [`CAMERA_FPS`]. Every camera is the same scene at
/// another moment (its objects elsewhere, its own noise), so no two cameras send the same frame.
pub fn frames(
    assets: &Path,
    scene: &Scene,
    cameras: usize,
    per_camera: usize,
) -> anyhow::Result<Vec<CameraFrame>> {
    let scene = static_camera(
        assets,
        SceneSpec {
            background: scene.background.clone(),
            movers: scene.movers,
            noise: scene.noise,
            width: WIDTH,
            height: HEIGHT,
            ..SceneSpec::default()
        },
    )?;
    let mut frames = Vec::with_capacity(cameras * per_camera);
    for n in 0..per_camera {
        for camera in 0..cameras {
            let (jpeg, _) = scene.jpeg((camera * 1000 + n) as u64)?;
            frames.push(CameraFrame {
                camera: format!("static-{camera}").into_bytes(),
                frame_id: format!("static-{camera}-{n:04}"),
                payload: jpeg,
                content_type: Some("image/jpeg".into()),
                capture_ms: CAPTURE_START_MS + n as i64 * 1000 / CAMERA_FPS,
            });
        }
    }
    Ok(frames)
}

/// Publishes `frames` (camera `i % cameras` to partition `i % cameras`) keeping at most
/// `window` of them ahead of the records on `results_topic`: the consumer always has frames
/// waiting, and the embedded broker (about 5 MiB a partition) never drops one unread.
pub async fn publish_ahead(
    brokers: &str,
    topic: &str,
    cameras: usize,
    frames: &[CameraFrame],
    results_topic: &str,
    window: usize,
) -> anyhow::Result<()> {
    let done = Arc::new(AtomicUsize::new(0));
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("count-{results_topic}"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()?;
    consumer.subscribe(&[results_topic])?;
    let counting = {
        let done = done.clone();
        tokio::spawn(async move {
            while consumer.recv().await.is_ok() {
                done.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let producer = publish::producer(brokers)?;
    for (i, frame) in frames.iter().enumerate() {
        while i >= done.load(Ordering::Relaxed) + window {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let partition = (i % cameras.max(1)) as i32;
        publish::send(&producer, topic, partition, frame).await?;
    }
    // Until everything is through, then stop counting.
    while done.load(Ordering::Relaxed) < frames.len() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    counting.abort();
    Ok(())
}

/// How much of full tiling's detections the gated run found.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Recall {
    /// Detections of full tiling matched in the same frame of the gated run by a detection of
    /// the same class with IoU >= 0.5.
    pub found: usize,
    /// Detections of full tiling.
    pub wanted: usize,
    /// Those missed, by full tiling's score: below 0.35 (near the 0.25 threshold, where noise
    /// alone makes a detection come and go between frames), 0.35-0.5, and 0.5 or more.
    pub missed_by_score: [usize; 3],
}

impl Recall {
    pub fn ratio(&self) -> f64 {
        self.found as f64 / self.wanted.max(1) as f64
    }
}

/// Full tiling's detections (`full`) found by the gated run (`gated`), frame by frame.
pub fn recall(full: &[FrameResult], gated: &[FrameResult]) -> Recall {
    let mut recall = Recall::default();
    for want in full {
        let got = gated.iter().find(|g| g.frame_id == want.frame_id);
        for w in &want.detections {
            recall.wanted += 1;
            let found = got.is_some_and(|got| {
                got.detections
                    .iter()
                    .any(|g| g.class_id == w.class_id && iou(&g.bbox, &w.bbox) >= 0.5)
            });
            if found {
                recall.found += 1;
            } else {
                let band = match w.score {
                    s if s < 0.35 => 0,
                    s if s < 0.5 => 1,
                    _ => 2,
                };
                recall.missed_by_score[band] += 1;
            }
        }
    }
    recall
}

/// The IoU of two result boxes.
fn iou(a: &BoxOut, b: &BoxOut) -> f32 {
    let bbox = |b: &BoxOut| BBox::new(b.x1, b.y1, b.x2, b.y2);
    bbox(a).iou(&bbox(b))
}
