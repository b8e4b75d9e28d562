//! Second stage (detection pipelines, optional): the boxes a frame's result selects
//! (`second_stage.min_score`, `classes`, `max_crops`) are cropped from the frame merge
//! decoded for the first stage, embedded by the backbone in one batch, and classified by the
//! head the frame pinned at ingest (its camera's group's, else the global one). Each box keeps
//! the detector's label and score and gains the head's label, score, version and verdict.
//!
//! It runs after merge and before the sequencer: frames may finish here in any order, and
//! the sequencer restores each camera's order. Without a live head a frame passes untouched.
//! A crop's embedding is kept in the learning cache, so that a label naming the box (as a
//! label request gives it) is joined without reading the frame back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use image::RgbImage;
use tessera_models::Head;
use tessera_operators::PixelRect;
use tessera_operators::crops::{CropSelection, verdict};
use tessera_operators::labels::crop_rect;

use crate::learn::{Cached, Learning};
use crate::observe::{LOG_INTERVAL, Monitor, Step, Throttle};
use crate::protocol::result::{FrameResult, HeadLabel};
use crate::protocol::{FrameMeta, Outcome, StageFailure, StageId};
use crate::stage::{ChildSpec, Edge, FrameStage, frame_stage};

static CROPS_FAILED: Throttle = Throttle::new(LOG_INTERVAL);

/// What the second stage needs.
#[derive(Debug, Clone)]
pub struct SecondStageSettings {
    pub selection: CropSelection,
    /// Head classes that reject a box.
    pub reject_labels: Arc<[String]>,
    /// The backbone (shared with the labels stage) and the embedding cache.
    pub learning: Arc<Learning>,
    /// Embed the boxes even when no head serves the camera (label requests are on: their
    /// answers then join from the cache instead of reading the frame back).
    pub embed_without_head: bool,
    pub monitor: Arc<Monitor>,
}

/// The supervisor's entry for the second stage.
pub fn child(settings: SecondStageSettings, input: Edge<Outcome>, out: Edge<Outcome>) -> ChildSpec {
    frame_stage(
        StageId::SecondStage,
        1,
        move || Ok(SecondStage(settings.clone())),
        input,
        out,
    )
}

/// The second stage.
#[derive(Debug)]
pub struct SecondStage(SecondStageSettings);

impl FrameStage for SecondStage {
    type In = Outcome;
    type Out = Outcome;

    async fn process(&mut self, input: Outcome, out: &Edge<Outcome>) -> Result<(), StageFailure> {
        let outcome = match input {
            Outcome::Result {
                meta,
                mut result,
                decoded: Some(image),
            } => {
                let head = meta.head.clone();
                if head.is_some() || self.0.embed_without_head {
                    let started = Instant::now();
                    if let Err(error) =
                        classify_boxes(&self.0, &meta, &mut result, image, head).await
                    {
                        // The frame goes round again (and, failing every attempt, to the
                        // dead-letter topic as `processing_failed`), like a failed model run.
                        if let Some(held_back) = CROPS_FAILED.allow() {
                            tracing::warn!(%error, offset = meta.key.offset, held_back, "Second stage failed; the frame is dispatched again");
                        }
                        meta.ack.retry();
                        return Ok(());
                    }
                    let elapsed = started.elapsed();
                    result.latency_ms.second_stage = millis(elapsed);
                    result.latency_ms.total = millis(meta.received_at.elapsed());
                    self.0
                        .monitor
                        .metrics
                        .stage(Step::SecondStage)
                        .observe(elapsed.as_secs_f64());
                }
                Outcome::Result {
                    meta,
                    result,
                    decoded: None,
                }
            }
            other => other,
        };
        let offset = outcome.meta().key.offset;
        if let Err(error) = out.send(outcome) {
            // The frame stays in flight: it is dispatched again once the successor is back.
            tracing::debug!(%error, offset, "Outcome not handed on");
        }
        Ok(())
    }
}

/// Classifies the selected boxes of `result` with `head`, in place.
async fn classify_boxes(
    settings: &SecondStageSettings,
    meta: &FrameMeta,
    result: &mut FrameResult,
    image: Arc<RgbImage>,
    head: Option<Arc<Head>>,
) -> Result<(), String> {
    let chosen = settings.selection.select(
        result
            .detections
            .iter()
            .map(|d| (d.label.as_str(), d.score)),
    );
    // Boxes are clamped to the frame, so each covers at least part of it; one that covers no
    // whole pixel is left unclassified.
    let crops: Vec<(usize, PixelRect)> = chosen
        .into_iter()
        .filter_map(|index| {
            let b = &result.detections[index].bbox;
            let region = tessera_operators::BBox {
                x1: b.x1,
                y1: b.y1,
                x2: b.x2,
                y2: b.y2,
            };
            crop_rect(Some(&region), image.width(), image.height())
                .ok()
                .map(|rect| (index, rect))
        })
        .collect();
    if crops.is_empty() {
        return Ok(());
    }
    let embedder = settings.learning.embedder.clone();
    let rects: Vec<PixelRect> = crops.iter().map(|(_, rect)| *rect).collect();
    let (embeddings, classes) = {
        let (image, head) = (image.clone(), head.clone());
        tokio::task::spawn_blocking(move || {
            let regions: Vec<(&RgbImage, Option<PixelRect>)> =
                rects.iter().map(|rect| (&*image, Some(*rect))).collect();
            let embeddings = embedder
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .embed_all(&regions)
                .map_err(|e| e.detail())?;
            let classes = match &head {
                Some(head) => {
                    let flat: Vec<f32> = embeddings.iter().flatten().copied().collect();
                    head.classify(&flat, 1).map_err(|e| e.detail())?
                }
                None => Vec::new(),
            };
            Ok::<_, String>((embeddings, classes))
        })
        .await
        .map_err(|e| e.to_string())??
    };
    let address = (
        meta.key.partition.topic.clone(),
        meta.key.partition.partition,
        meta.key.offset,
    );
    let camera: Arc<str> = Arc::from(meta.camera());
    let metrics = &settings.monitor.metrics;
    for ((_, rect), embedding) in crops.iter().zip(embeddings) {
        settings.learning.cache.insert(
            (address.clone(), Some(*rect)),
            Cached {
                camera: camera.clone(),
                embedding: Arc::from(embedding),
            },
        );
    }
    let Some(head) = head else {
        return Ok(());
    };
    for ((index, _), top) in crops.into_iter().zip(classes) {
        let Some(best) = top.first() else {
            continue;
        };
        let detection = &mut result.detections[index];
        let label = head
            .classes()
            .get(best.class_id as usize)
            .cloned()
            .unwrap_or_default();
        let verdict = verdict(&detection.label, &label, &settings.reject_labels);
        metrics.second_stage_box(verdict.as_str());
        detection.head = Some(HeadLabel {
            label,
            class_id: best.class_id,
            score: best.score,
            version: head.version(),
            scope: head.scope().to_owned(),
            rejected: verdict == tessera_operators::crops::Verdict::Rejected,
        });
    }
    Ok(())
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
