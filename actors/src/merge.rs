//! Merge: collects the tile results of each frame, maps them to frame pixels, merges them
//! across tiles, and releases finished frames to publish in each partition's input order.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tessera_models::{Model, TileOutput, finish_frame};
use tessera_operators::merge::MergeConfig;
use tessera_operators::preprocess::InputTransform;

use crate::frame::{FrameKey, FrameMeta, PartitionId, now_ms};
use crate::metrics::{Queue, Stage};
use crate::monitor::Monitor;
use crate::names::{ActorNames, lookup_patiently};
use crate::ordering::Reorder;
use crate::prepare::PrepareFailure;
use crate::publish::{Outcome, PublishMsg};
use crate::result::{
    BoxOut, ClassificationOut, DetectionOut, FrameResult, FrameStatus, ImageSize, Latencies,
    ModelRef, RESULT_SCHEMA_VERSION, Source, Timestamps,
};

/// A frame that was decoded and tiled; its tiles are on their way through the model.
#[derive(Debug)]
pub struct PreparedFrame {
    pub meta: Arc<FrameMeta>,
    /// Kept until the frame is done, in case it has to be dead-lettered.
    pub payload: Arc<[u8]>,
    pub width: u32,
    pub height: u32,
    /// Model-input to frame mapping per tile index.
    pub transforms: Vec<InputTransform>,
    pub decode: Duration,
}

/// Messages to [`Merge`].
#[derive(Debug)]
pub enum MergeMsg {
    /// A frame's tiles were dispatched; expect `transforms.len()` tile outputs.
    Expect(Box<PreparedFrame>),
    /// Outputs of some tiles of a frame.
    Tiles {
        frame: FrameKey,
        tiles: Vec<usize>,
        outputs: Vec<TileOutput>,
        /// Preparation time of these tiles.
        preprocess: Duration,
        /// This frame's share of the model runs' time.
        inference: Duration,
    },
    /// A model run failed for some tiles of a frame, in a way retrying will not fix.
    TilesFailed {
        frame: FrameKey,
        kind: &'static str,
        message: String,
    },
    /// The frame cannot be processed (bad input, or out of attempts): dead-letter it.
    Failed {
        meta: Arc<FrameMeta>,
        payload: Arc<[u8]>,
        failure: PrepareFailure,
    },
    /// The lag policy skipped the frame: publish it as `status: skipped`.
    Skipped { meta: Arc<FrameMeta> },
    /// After a restart: per stream (partition, generation), every sequence number below the
    /// given one is acknowledged; resume ordering there.
    Resume(Vec<((PartitionId, u64), u64)>),
}

/// The merge actor.
#[derive(Debug)]
pub struct Merge;

/// Start arguments of [`Merge`].
#[derive(Debug)]
pub struct MergeArgs {
    pub model: Arc<Model>,
    pub merge: MergeConfig,
    pub names: ActorNames,
    pub monitor: Arc<Monitor>,
}

/// A frame waiting for its tile outputs.
#[derive(Debug)]
struct Pending {
    frame: Box<PreparedFrame>,
    /// Tile outputs by tile index.
    outputs: Vec<Option<TileOutput>>,
    remaining: usize,
    preprocess: Duration,
    inference: Duration,
    /// Set when a model run failed: the frame is dead-lettered once all tiles are accounted for.
    failure: Option<PrepareFailure>,
}

/// State of [`Merge`].
#[derive(Debug)]
pub struct MergeState {
    args: MergeArgs,
    pending: HashMap<FrameKey, Pending>,
    reorder: Reorder<(PartitionId, u64), Outcome>,
    /// Frames skipped by the lag policy since start.
    skipped: u64,
}

impl Actor for Merge {
    type Msg = MergeMsg;
    type State = MergeState;
    type Arguments = MergeArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: MergeArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(MergeState {
            args,
            pending: HashMap::new(),
            reorder: Reorder::default(),
            skipped: 0,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: MergeMsg,
        state: &mut MergeState,
    ) -> Result<(), ActorProcessingErr> {
        let finished = match message {
            MergeMsg::Expect(frame) => {
                // A re-dispatched frame keeps the progress of earlier attempts: tiling is
                // deterministic, so any attempt's tile output fills the same slot, and a slow
                // frame is never reset by its own re-dispatch.
                let tiles = frame.transforms.len();
                state
                    .pending
                    .entry(frame.meta.key.clone())
                    .or_insert_with(|| Pending {
                        frame,
                        outputs: (0..tiles).map(|_| None).collect(),
                        remaining: tiles,
                        preprocess: Duration::ZERO,
                        inference: Duration::ZERO,
                        failure: None,
                    });
                None
            }
            MergeMsg::Tiles {
                frame,
                tiles,
                outputs,
                preprocess,
                inference,
            } => {
                let Some(pending) = state.pending.get_mut(&frame) else {
                    // The frame already finished (a re-dispatched duplicate's late output).
                    return Ok(());
                };
                pending.preprocess += preprocess;
                pending.inference += inference;
                for (index, output) in tiles.into_iter().zip(outputs) {
                    if let Some(slot) = pending.outputs.get_mut(index)
                        && slot.replace(output).is_none()
                    {
                        pending.remaining -= 1;
                    }
                }
                (pending.remaining == 0).then_some(frame)
            }
            MergeMsg::TilesFailed {
                frame,
                kind,
                message,
            } => {
                // The frame goes to the DLQ at once; later outputs of its other tiles are ignored.
                state.pending.get_mut(&frame).map(|pending| {
                    pending.failure = Some(PrepareFailure { kind, message });
                    frame
                })
            }
            MergeMsg::Failed {
                meta,
                payload,
                failure,
            } => {
                let key = meta.key.clone();
                state.pending.remove(&key);
                let outcome = Outcome::DeadLetter {
                    meta,
                    payload,
                    kind: failure.kind,
                    message: failure.message,
                };
                release(state, &key, outcome).await?;
                None
            }
            MergeMsg::Skipped { meta } => {
                let key = meta.key.clone();
                state.pending.remove(&key);
                state.skipped += 1;
                tracing::debug!(
                    offset = key.offset,
                    skipped = state.skipped,
                    "Stale frame skipped"
                );
                let result = skipped_result(&state.args.model, &meta);
                release(
                    state,
                    &key,
                    Outcome::Result {
                        meta,
                        result: Box::new(result),
                    },
                )
                .await?;
                None
            }
            MergeMsg::Resume(streams) => {
                let mut ready = Vec::new();
                for (stream, next) in streams {
                    state.reorder.resume(&stream, next, &mut ready);
                }
                forward(state, ready).await?;
                None
            }
        };
        if let Some(key) = finished
            && let Some(pending) = state.pending.remove(&key)
        {
            let outcome = finish(&state.args, pending);
            release(state, &key, outcome).await?;
        }
        Ok(())
    }
}

/// Builds the frame's outcome from its tile outputs.
fn finish(args: &MergeArgs, pending: Pending) -> Outcome {
    let Pending {
        frame,
        outputs,
        preprocess,
        inference,
        failure,
        ..
    } = pending;
    if let Some(failure) = failure {
        return Outcome::DeadLetter {
            meta: frame.meta,
            payload: frame.payload,
            kind: failure.kind,
            message: failure.message,
        };
    }
    let started = Instant::now();
    let tiles: Vec<(InputTransform, TileOutput)> = frame
        .transforms
        .iter()
        .copied()
        .zip(outputs.into_iter().map(Option::unwrap_or_default))
        .collect();
    let (detections, classifications) =
        finish_frame(&args.model, &tiles, frame.width, frame.height, &args.merge);
    let merge = started.elapsed();
    args.monitor
        .metrics
        .stage(Stage::Merge)
        .observe(merge.as_secs_f64());
    let meta = &frame.meta;
    let model = &args.model;
    let result = FrameResult {
        image: ImageSize {
            width: frame.width,
            height: frame.height,
        },
        tile_count: tiles.len(),
        status: FrameStatus::Ok,
        detections: detections
            .iter()
            .map(|d| DetectionOut {
                label: model.label(d.class_id).to_owned(),
                class_id: d.class_id,
                score: d.score,
                bbox: BoxOut {
                    x1: d.bbox.x1,
                    y1: d.bbox.y1,
                    x2: d.bbox.x2,
                    y2: d.bbox.y2,
                },
            })
            .collect(),
        classifications: classifications
            .iter()
            .map(|c| ClassificationOut {
                label: model.label(c.class_id).to_owned(),
                class_id: c.class_id,
                score: c.score,
            })
            .collect(),
        latency_ms: Latencies {
            decode: millis(frame.decode),
            preprocess: millis(preprocess),
            inference: millis(inference),
            merge: millis(merge),
            total: millis(meta.received_at.elapsed()),
        },
        ..skipped_result(model, meta)
    };
    Outcome::Result {
        meta: frame.meta,
        result: Box::new(result),
    }
}

/// The result of a frame that was not processed (`status: skipped`); also the base that a
/// processed frame's result fills in.
fn skipped_result(model: &Model, meta: &FrameMeta) -> FrameResult {
    FrameResult {
        schema: RESULT_SCHEMA_VERSION,
        camera: meta.camera(),
        source: Source {
            topic: meta.key.partition.topic.to_string(),
            partition: meta.key.partition.partition,
            offset: meta.key.offset,
        },
        frame_id: meta.frame_id(),
        timestamps: Timestamps {
            capture_ms: meta.capture_ms(),
            kafka_ms: meta.kafka_timestamp_ms,
            received_ms: meta.received_ms,
            completed_ms: now_ms(),
        },
        image: ImageSize {
            width: 0,
            height: 0,
        },
        model: ModelRef {
            name: model.manifest.name.clone(),
            version: model.manifest.version.clone(),
        },
        head_version: None,
        tile_count: 0,
        status: FrameStatus::Skipped,
        detections: Vec::new(),
        classifications: Vec::new(),
        latency_ms: Latencies {
            total: millis(meta.received_at.elapsed()),
            ..Latencies::default()
        },
    }
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Hands finished frames to publish in their partition's input order.
async fn release(
    state: &mut MergeState,
    key: &FrameKey,
    outcome: Outcome,
) -> Result<(), ActorProcessingErr> {
    let mut ready = Vec::new();
    state.reorder.complete(
        &(key.partition.clone(), key.generation),
        key.seq,
        outcome,
        &mut ready,
    );
    forward(state, ready).await
}

/// Sends released outcomes to publish, in order.
async fn forward(state: &MergeState, ready: Vec<Outcome>) -> Result<(), ActorProcessingErr> {
    if ready.is_empty() {
        return Ok(());
    }
    let publish =
        lookup_patiently::<PublishMsg>(&state.args.names.publish(), Duration::from_secs(30))
            .await
            .ok_or("publish actor unavailable")?;
    let queue = state.args.monitor.metrics.queue(Queue::Publish);
    for outcome in ready {
        publish.cast(PublishMsg::Publish(outcome))?;
        queue.pushed.inc();
    }
    Ok(())
}
