//! Merge: collects the tile outputs of each frame, maps them to frame pixels and merges them
//! across tiles into the frame's result. Frames leave in the order they finish; the
//! sequencer after merge restores input order.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tessera_models::{Model, TileOutput, finish_frame};
use tessera_operators::gate::TileDecision;
use tessera_operators::merge::MergeConfig;
use tessera_operators::preprocess::InputTransform;

use crate::delivery::Ledger;
use crate::gate::{Followers, TileGate, frame_seq};
use crate::learn::{Cached, Learning};
use crate::observe::{Monitor, Step};
use crate::protocol::messages::{FrameLayout, Recognized, TileOutputs, Unprocessed};
use crate::protocol::result::{
    BoxOut, ClassificationOut, DetectionOut, FrameResult, FrameStatus, GateReport, ImageSize,
    Latencies, ModelRef,
};
use crate::protocol::{FrameKey, FrameMeta, Outcome, Rejection, StageFailure, StageId};
use crate::stage::{ChildSpec, Edge, FrameStage, frame_stage};

/// How often the frames of revoked partitions are dropped.
const PURGE_EVERY: Duration = Duration::from_secs(1);

/// What merge needs to finish frames.
#[derive(Debug, Clone)]
pub struct MergeSettings {
    pub model: Arc<Model>,
    pub merge: MergeConfig,
    pub ledger: Arc<Ledger>,
    pub monitor: Arc<Monitor>,
    /// Where a single-tile frame's embedding is kept for joining labels (`None`: the model
    /// has no embedding).
    pub learning: Option<Arc<Learning>>,
    /// The change gate, given the outputs of the tiles that ran (`None`: the gate is off).
    pub gate: Option<Arc<TileGate>>,
}

/// The supervisor's entry for merge.
pub fn child(settings: MergeSettings, input: Edge<Recognized>, out: Edge<Outcome>) -> ChildSpec {
    frame_stage(
        StageId::Merge,
        1,
        move || Ok(Merge::new(settings.clone())),
        input,
        out,
    )
}

/// A frame waiting for its tile outputs.
#[derive(Debug)]
struct Pending {
    frame: Box<FrameLayout>,
    /// Tile outputs by tile index (reused ones filled in from the start).
    outputs: Vec<Option<TileOutput>>,
    /// Which tiles ran through the model (their outputs go to the gate).
    ran: Vec<bool>,
    remaining: usize,
    preprocess: Duration,
    inference: Duration,
    /// Set when a model run failed: the frame is dead-lettered.
    failure: Option<Rejection>,
}

/// The merge stage.
#[derive(Debug)]
pub struct Merge {
    settings: MergeSettings,
    pending: HashMap<FrameKey, Pending>,
    /// Frames waiting for the tile outputs of an earlier frame (change gate).
    followers: Followers,
    /// Frames skipped by the lag policy since start.
    skipped: u64,
}

impl Merge {
    pub fn new(settings: MergeSettings) -> Self {
        Self {
            settings,
            pending: HashMap::new(),
            followers: Followers::default(),
            skipped: 0,
        }
    }

    /// The frame's outcome, if it is complete.
    fn take_finished(&mut self, key: &FrameKey) -> Option<Outcome> {
        let done = self
            .pending
            .get(key)
            .is_some_and(|p| p.remaining == 0 || p.failure.is_some());
        if !done {
            return None;
        }
        let pending = self.pending.remove(key)?;
        Some(finish(&self.settings, pending))
    }

    fn unprocessed(&mut self, frame: Unprocessed) -> Outcome {
        self.pending.remove(&frame.meta().key);
        match frame {
            Unprocessed::Skipped { meta } => {
                self.skipped += 1;
                tracing::debug!(
                    offset = meta.key.offset,
                    skipped = self.skipped,
                    "Stale frame skipped"
                );
                Outcome::skipped(meta, model_ref(&self.settings.model))
            }
            Unprocessed::Rejected {
                meta,
                payload,
                rejection,
            } => Outcome::DeadLetter {
                meta,
                payload,
                rejection,
            },
        }
    }
}

impl Merge {
    /// A frame's tiles are on their way: its slots start with the outputs the gate reused
    /// (or found for the frames it follows), the others wait.
    fn expect(&mut self, mut frame: Box<FrameLayout>) -> Vec<Outcome> {
        // A re-dispatched frame keeps the progress of earlier attempts: tiling is
        // deterministic, so any attempt's tile output fills the same slot, and a slow frame is
        // never reset by its own re-dispatch (a retried frame is not gated: all its tiles run).
        let key = frame.meta.key.clone();
        if self.pending.contains_key(&key) {
            return Vec::new();
        }
        let tiles = frame.transforms.len();
        let outputs: Vec<Option<TileOutput>> = match (frame.gate.as_mut(), &self.settings.gate) {
            (Some(gated), Some(gate)) => {
                let camera = frame.meta.camera();
                let decisions = std::mem::take(&mut gated.tiles);
                let mut outputs = Vec::with_capacity(tiles);
                for (index, decision) in decisions.into_iter().enumerate() {
                    outputs.push(match decision {
                        TileDecision::Infer => None,
                        TileDecision::Reuse(output) => Some(output),
                        TileDecision::Follow { frame: seq } => {
                            let found = gate.result(&camera, seq, index);
                            if found.is_none() {
                                self.followers
                                    .wait((camera.clone(), seq, index), key.clone());
                            }
                            found
                        }
                    });
                }
                outputs
            }
            _ => (0..tiles).map(|_| None).collect(),
        };
        self.pending.insert(
            key.clone(),
            Pending {
                remaining: outputs.iter().filter(|o| o.is_none()).count(),
                outputs,
                ran: vec![false; tiles],
                frame,
                preprocess: Duration::ZERO,
                inference: Duration::ZERO,
                failure: None,
            },
        );
        // A frame without tiles to wait for is complete at once.
        self.take_finished(&key).into_iter().collect()
    }

    /// Tile outputs of a frame arrived: they fill its slots, go to the gate, and fill the
    /// slots of the frames that follow them.
    fn tiles(&mut self, share: TileOutputs) -> Vec<Outcome> {
        // None: the frame already finished (a re-dispatched duplicate's late output).
        let Some(pending) = self.pending.get_mut(&share.frame) else {
            return Vec::new();
        };
        pending.preprocess += share.preprocess;
        pending.inference += share.inference;
        let gated = pending.frame.gate.is_some();
        let meta = pending.frame.meta.clone();
        let mut arrived = Vec::new();
        for (index, output) in share.tiles.into_iter().zip(share.outputs) {
            if gated {
                arrived.push((index, output.clone()));
            }
            if let Some(slot) = pending.outputs.get_mut(index)
                && slot.replace(output).is_none()
            {
                pending.remaining -= 1;
            }
            if let Some(ran) = pending.ran.get_mut(index) {
                *ran = true;
            }
        }
        let mut finished: Vec<Outcome> = self.take_finished(&share.frame).into_iter().collect();
        if let (Some(gate), false) = (self.settings.gate.clone(), arrived.is_empty()) {
            let (camera, seq) = (meta.camera(), frame_seq(&meta));
            for (index, output) in &arrived {
                for follower in self.followers.take(&(camera.clone(), seq, *index)) {
                    finished.extend(self.fill(&follower, *index, output.clone()));
                }
            }
            gate.complete(&meta, arrived);
        }
        finished
    }

    /// Fills slot `index` of `key` with an output another frame's run produced.
    fn fill(&mut self, key: &FrameKey, index: usize, output: TileOutput) -> Option<Outcome> {
        let pending = self.pending.get_mut(key)?;
        if let Some(slot) = pending.outputs.get_mut(index)
            && slot.is_none()
        {
            *slot = Some(output);
            pending.remaining -= 1;
        }
        self.take_finished(key)
    }

    /// Frames that followed a frame whose tiles will never arrive run again, in full.
    fn retry_followers(&mut self, followers: Vec<FrameKey>) {
        for key in followers {
            if let Some(pending) = self.pending.get(&key) {
                tracing::debug!(
                    offset = key.offset,
                    "Frame followed a frame that failed; running it again"
                );
                pending.frame.meta.ack.retry();
            }
        }
    }

    /// The gate forgets a camera whose frame failed after it was planned; the frames that
    /// follow it run again.
    fn forget(&mut self, meta: &FrameMeta) {
        if let Some(gate) = &self.settings.gate {
            gate.forget(meta);
            let followers = self.followers.take_frame(&meta.camera(), frame_seq(meta));
            self.retry_followers(followers);
        }
    }

    /// Followers whose output has arrived meanwhile get it; those following a frame that is
    /// no longer on its way run again (it was dropped before merge saw its tiles).
    fn settle_followers(&mut self) -> Vec<Outcome> {
        let Some(gate) = self.settings.gate.clone() else {
            return Vec::new();
        };
        let mut finished = Vec::new();
        for (tile, followers) in self.followers.take_all() {
            let followers: Vec<FrameKey> = followers
                .into_iter()
                .filter(|key| self.pending.contains_key(key))
                .collect();
            let (camera, seq, index) = &tile;
            if let Some(output) = gate.result(camera, *seq, *index) {
                for follower in followers {
                    finished.extend(self.fill(&follower, *index, output.clone()));
                }
                continue;
            }
            let on_its_way = self
                .pending
                .values()
                .any(|p| frame_seq(&p.frame.meta) == *seq && p.frame.meta.camera() == *camera);
            if on_its_way {
                for follower in followers {
                    self.followers.wait(tile.clone(), follower);
                }
            } else {
                self.retry_followers(followers);
            }
        }
        finished
    }
}

impl FrameStage for Merge {
    type In = Recognized;
    type Out = Outcome;

    async fn process(
        &mut self,
        input: Recognized,
        out: &Edge<Outcome>,
    ) -> Result<(), StageFailure> {
        let finished = match input {
            Recognized::Expect(frame) => self.expect(frame),
            Recognized::Tiles(share) => self.tiles(share),
            Recognized::TilesFailed { frame, rejection } => {
                // The frame goes to the DLQ at once; later outputs of its other tiles are ignored.
                if let Some(pending) = self.pending.get_mut(&frame) {
                    pending.failure = Some(rejection);
                    let meta = pending.frame.meta.clone();
                    self.forget(&meta);
                }
                self.take_finished(&frame).into_iter().collect()
            }
            Recognized::Unprocessed(frame) => {
                if matches!(frame, Unprocessed::Rejected { .. }) {
                    // It may have been planned by the gate before it failed.
                    let meta = frame.meta().clone();
                    self.forget(&meta);
                }
                vec![self.unprocessed(frame)]
            }
        };
        send(out, finished);
        Ok(())
    }

    fn tick_every(&self) -> Option<Duration> {
        Some(PURGE_EVERY)
    }

    async fn on_tick(&mut self, out: &Edge<Outcome>) -> Result<(), StageFailure> {
        // Frames no longer in flight never finish here (their partition was revoked, or another
        // attempt finished them): let them, and their credits, go. Merge's state is thereby
        // bounded by the frames in flight.
        let ledger = self.settings.ledger.clone();
        self.pending.retain(|key, _| ledger.in_flight(key));
        if let Some(gate) = &self.settings.gate {
            gate.retain_live(|stream| ledger.is_live(stream));
        }
        let finished = self.settle_followers();
        send(out, finished);
        Ok(())
    }
}

/// Hands finished frames on.
fn send(out: &Edge<Outcome>, finished: Vec<Outcome>) {
    for outcome in finished {
        let offset = outcome.meta().key.offset;
        if let Err(error) = out.send(outcome) {
            // The frame stays in flight: it is dispatched again once the sequencer is back.
            tracing::debug!(%error, offset, "Outcome not handed on");
        }
    }
}

/// Builds the frame's outcome from its tile outputs.
fn finish(settings: &MergeSettings, pending: Pending) -> Outcome {
    let Pending {
        frame,
        outputs,
        ran,
        preprocess,
        inference,
        failure,
        ..
    } = pending;
    if let Some(rejection) = failure {
        return Outcome::DeadLetter {
            meta: frame.meta,
            payload: frame.payload,
            rejection,
        };
    }
    let started = Instant::now();
    let mut outputs = outputs;
    let gate_report = frame.gate.as_ref().map(|gated| {
        let inferred = ran.iter().filter(|ran| **ran).count();
        GateReport {
            inferred,
            reused: ran.len() - inferred,
            refresh: gated.refresh,
            relaxation: gated.relaxation,
        }
    });
    if let (Some(learning), [Some(only)]) = (&settings.learning, outputs.as_mut_slice())
        && !only.embedding.is_empty()
    {
        // The whole frame in one tile: its embedding is the frame's, as the labels stage
        // would compute it.
        let key = &frame.meta.key;
        learning.cache.insert(
            (
                (
                    key.partition.topic.clone(),
                    key.partition.partition,
                    key.offset,
                ),
                None,
            ),
            Cached {
                camera: Arc::from(frame.meta.camera()),
                embedding: Arc::from(std::mem::take(&mut only.embedding)),
            },
        );
    }
    let tiles: Vec<(InputTransform, TileOutput)> = frame
        .transforms
        .iter()
        .copied()
        .zip(outputs.into_iter().map(Option::unwrap_or_default))
        .collect();
    let (detections, classifications) = finish_frame(
        &settings.model,
        &tiles,
        frame.width,
        frame.height,
        &settings.merge,
    );
    let merge = started.elapsed();
    settings
        .monitor
        .metrics
        .stage(Step::Merge)
        .observe(merge.as_secs_f64());
    let meta = &frame.meta;
    let model = &settings.model;
    let result = FrameResult {
        image: ImageSize {
            width: frame.width,
            height: frame.height,
        },
        tile_count: tiles.len(),
        gate: gate_report,
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
                head: None,
            })
            .collect(),
        // A head's class ids index its own classes.
        classifications: classifications
            .iter()
            .map(|c| ClassificationOut {
                label: match &meta.head {
                    Some(head) => head
                        .classes()
                        .get(c.class_id as usize)
                        .cloned()
                        .unwrap_or_default(),
                    None => model.label(c.class_id).to_owned(),
                },
                class_id: c.class_id,
                score: c.score,
            })
            .collect(),
        head_version: meta.head.as_ref().map(|head| head.version()),
        head_scope: meta.head.as_ref().map(|head| head.scope().to_owned()),
        latency_ms: Latencies {
            decode: millis(frame.decode),
            preprocess: millis(preprocess),
            inference: millis(inference),
            merge: millis(merge),
            second_stage: 0.0,
            total: millis(meta.received_at.elapsed()),
        },
        ..FrameResult::skipped(meta, model_ref(model))
    };
    Outcome::Result {
        meta: frame.meta,
        result: Box::new(result),
        decoded: frame.image,
    }
}

/// The model as results name it.
fn model_ref(model: &Model) -> ModelRef {
    ModelRef {
        name: model.manifest.name.clone(),
        version: model.manifest.version.clone(),
    }
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
