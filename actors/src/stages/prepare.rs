//! Prepare: decode (with limits) -> tile grid -> preprocess into model tensors. CPU-heavy work
//! runs on blocking threads; each lane keeps its own buffers. Runs on `prepare.workers` lanes:
//! order does not matter before the sequencer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use image::RgbImage;
use tessera_operators::decode::{DecodeLimits, decode_image_reusing};
use tessera_operators::gate::TileDecision;
use tessera_operators::preprocess::{PreprocessSpec, Preprocessor};
use tessera_operators::tiling::{Tile, TileGrid};
use tokio::sync::Semaphore;

use crate::config::LagPolicy;
use crate::gate::TileGate;
use crate::observe::{Monitor, Queue, Step};
use crate::protocol::messages::{FrameLayout, Prepared, PreparedTile, TileChunk, Unprocessed};
use crate::protocol::tensor::TensorPool;
use crate::protocol::{
    Clock, DeadLetterKind, Frame, FrameMeta, Rejection, StageFailure, StageId, headers,
};
use crate::stage::{ChildSpec, Edge, FrameStage, frame_stage};

/// How frames are prepared; shared by every lane.
#[derive(Debug, Clone)]
pub struct PreparePlan {
    pub limits: DecodeLimits,
    pub grid: TileGrid,
    pub preprocess: PreprocessSpec,
    /// Tiles per chunk handed on at once (a model run's batch).
    pub chunk: usize,
    /// Lag policy and the age beyond which `drop_stale` skips a frame.
    pub lag_policy: LagPolicy,
    pub max_age: Duration,
    /// What `max_age` is measured against (ingest feeds a stream clock).
    pub clock: Clock,
    /// Attempts before a frame is dead-lettered as `processing_failed`.
    pub max_attempts: u32,
    /// Tile credits: a tile holds one until its model run is done, which bounds the tensors
    /// waiting for inference.
    pub tile_credits: Arc<Semaphore>,
    /// Single-tile input tensors, reused.
    pub tiles: TensorPool,
    /// Keep the decoded frame for the second stage (it crops the detected boxes from it).
    pub keep_image: bool,
    /// Whether the frame's head applies to the model's tiles (the model has the embedding);
    /// with a second stage it applies to the boxes' crops instead.
    pub heads_on_tiles: bool,
    /// The change gate: only the tiles that changed run (`None`: every tile runs).
    pub gate: Option<Arc<TileGate>>,
}

impl PreparePlan {
    /// Whether the lag policy skips this frame (captured longer than `max_age` ago).
    fn is_stale(&self, meta: &FrameMeta) -> bool {
        self.lag_policy == LagPolicy::DropStale
            && meta
                .capture_ms()
                .is_some_and(|ts| self.clock.age_ms(ts) > self.max_age.as_millis() as i64)
    }
}

/// What prepare needs.
#[derive(Debug, Clone)]
pub struct PrepareSettings {
    pub plan: Arc<PreparePlan>,
    pub lanes: usize,
    pub monitor: Arc<Monitor>,
}

/// The supervisor's entry for prepare.
pub fn child(settings: PrepareSettings, input: Edge<Frame>, out: Edge<Prepared>) -> ChildSpec {
    let lanes = settings.lanes;
    frame_stage(
        StageId::Prepare,
        lanes,
        move || {
            Ok(Prepare::new(
                settings.plan.clone(),
                settings.monitor.clone(),
            ))
        },
        input,
        out,
    )
}

/// One prepare lane.
#[derive(Debug)]
pub struct Prepare {
    plan: Arc<PreparePlan>,
    monitor: Arc<Monitor>,
    /// Taken while a blocking thread works with them.
    buffers: Option<FrameBuffers>,
}

/// What a lane reuses from frame to frame: no allocation per frame or per tile.
struct FrameBuffers {
    preprocessor: Preprocessor,
    /// The previous frame's decoded pixels, decoded over by the next frame.
    pixels: Vec<u8>,
}

impl std::fmt::Debug for FrameBuffers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameBuffers").finish_non_exhaustive()
    }
}

impl Prepare {
    pub fn new(plan: Arc<PreparePlan>, monitor: Arc<Monitor>) -> Self {
        Self {
            buffers: Some(FrameBuffers {
                preprocessor: Preprocessor::new(plan.preprocess.clone()),
                pixels: Vec::new(),
            }),
            plan,
            monitor,
        }
    }

    fn take_buffers(&mut self) -> FrameBuffers {
        self.buffers.take().unwrap_or_else(|| FrameBuffers {
            preprocessor: Preprocessor::new(self.plan.preprocess.clone()),
            pixels: Vec::new(),
        })
    }

    /// Decodes and tiles the frame, hands its layout on, then preprocesses its tiles chunk by
    /// chunk, each chunk once it holds its tile credits (waiting for them is the model's
    /// back-pressure: it stalls preparation, which pauses consumption).
    async fn prepare(&mut self, frame: &Frame, out: &Edge<Prepared>) -> Result<(), PrepareError> {
        validate_record(&frame.meta)?;
        let mut buffers = self.take_buffers();
        let (plan, payload) = (self.plan.clone(), frame.payload.clone());
        // What the gate needs to plan the frame: the head applied to its tiles (their outputs
        // depend on it), its attempt and its age (the gate relaxes under sustained lag).
        let gating = self.plan.gate.is_some().then(|| {
            let meta = &frame.meta;
            let head = meta
                .head
                .as_ref()
                .filter(|_| self.plan.heads_on_tiles)
                .map(|head| (head.version(), head.scope().to_owned()));
            let age = meta.capture_ms().map(|ts| self.plan.clock.age_ms(ts));
            (meta.clone(), head, frame.attempt, age)
        });
        let started = Instant::now();
        let (mut buffers, decoded) = on_blocking_thread(move || {
            let pixels = std::mem::take(&mut buffers.pixels);
            let decoded = decode_image_reusing(&payload, &plan.limits, pixels).map(|image| {
                let tiles = plan.grid.tiles(image.width(), image.height());
                let gated =
                    plan.gate
                        .as_ref()
                        .zip(gating)
                        .map(|(gate, (meta, head, attempt, age))| {
                            gate.plan(&meta, head, attempt, age, &image, &tiles)
                        });
                (image, tiles, gated)
            });
            (buffers, decoded)
        })
        .await?;
        let (image, tiles, gated) = match decoded {
            Ok(decoded) => decoded,
            Err(error) => {
                self.buffers = Some(buffers);
                return Err(
                    Rejection::new(DeadLetterKind::of_decode(&error), error.to_string()).into(),
                );
            }
        };
        let decode = started.elapsed();
        let metrics = &self.monitor.metrics;
        metrics.stage(Step::Decode).observe(decode.as_secs_f64());

        let transforms = tiles
            .iter()
            .map(|tile| buffers.preprocessor.transform_for(tile.rect))
            .collect();
        let image = Arc::new(image);
        let layout = FrameLayout {
            meta: frame.meta.clone(),
            payload: frame.payload.clone(),
            width: image.width(),
            height: image.height(),
            transforms,
            decode,
            image: self.plan.keep_image.then(|| image.clone()),
            gate: gated,
        };
        // Only the tiles the gate did not reuse run.
        let tiles: Vec<Tile> = match &layout.gate {
            Some(gated) => tiles
                .into_iter()
                .zip(&gated.tiles)
                .filter(|(_, decision)| matches!(decision, TileDecision::Infer))
                .map(|(tile, _)| tile)
                .collect(),
            None => tiles,
        };
        out.send(Prepared::Layout(Box::new(layout)))?;

        // Preparation time only: waits for tile credits (model back-pressure) are left out.
        let mut preparing = Duration::ZERO;
        let chunk = self.plan.chunk.max(1);
        for tiles in tiles.chunks(chunk) {
            let credits = self
                .plan
                .tile_credits
                .clone()
                .acquire_many_owned(tiles.len() as u32)
                .await
                .map_err(|e| PrepareError::Failed(StageFailure::internal(StageId::Prepare, e)))?;
            let (image_ref, tiles_owned, pool) =
                (image.clone(), tiles.to_vec(), self.plan.tiles.clone());
            let chunk_started = Instant::now();
            let (returned, prepared) = on_blocking_thread(move || {
                let mut credits = Some(credits);
                let tensor_len = buffers.preprocessor.tensor_len();
                let prepared: Result<Vec<PreparedTile>, Rejection> = tiles_owned
                    .iter()
                    .map(|tile| {
                        let started = Instant::now();
                        let mut tensor = pool.take(tensor_len);
                        buffers
                            .preprocessor
                            .prepare_into(&image_ref, tile.rect, &mut tensor)
                            // A bug or a bad manifest, not bad input: retrying cannot help.
                            .map_err(|e| {
                                Rejection::new(
                                    DeadLetterKind::ProcessingFailed,
                                    format!("preprocessing: {e}"),
                                )
                            })?;
                        let credit = match credits.as_mut() {
                            Some(c) if c.num_permits() > 1 => c.split(1),
                            _ => credits.take(),
                        };
                        Ok(PreparedTile {
                            index: tile.index,
                            tensor,
                            preprocess: started.elapsed(),
                            credit,
                        })
                    })
                    .collect();
                (buffers, prepared)
            })
            .await?;
            buffers = returned;
            preparing += chunk_started.elapsed();
            let prepared = match prepared {
                Ok(prepared) => prepared,
                Err(rejection) => {
                    self.buffers = Some(buffers);
                    return Err(rejection.into());
                }
            };
            out.send(Prepared::Tiles(TileChunk {
                frame: frame.meta.ack.clone(),
                head: frame.meta.head.clone().filter(|_| self.plan.heads_on_tiles),
                tiles: prepared,
            }))?;
        }
        metrics
            .stage(Step::TilePreprocess)
            .observe(preparing.as_secs_f64());
        // The decoded pixels become the next frame's buffer.
        buffers.pixels = Arc::try_unwrap(image)
            .map(RgbImage::into_raw)
            .unwrap_or_default();
        self.buffers = Some(buffers);
        Ok(())
    }
}

/// How preparing a frame ended badly.
#[derive(Debug)]
enum PrepareError {
    /// The frame is bad input: dead-letter it.
    Rejected(Rejection),
    /// The successor is not running: the frame stays in flight and comes back.
    Undelivered(crate::stage::Undelivered),
    /// The lane cannot go on.
    Failed(StageFailure),
}

impl From<Rejection> for PrepareError {
    fn from(rejection: Rejection) -> Self {
        PrepareError::Rejected(rejection)
    }
}

impl From<crate::stage::Undelivered> for PrepareError {
    fn from(undelivered: crate::stage::Undelivered) -> Self {
        PrepareError::Undelivered(undelivered)
    }
}

/// Runs CPU-heavy work off the async threads; a panic there fails the lane.
async fn on_blocking_thread<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, PrepareError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| PrepareError::Failed(StageFailure::internal(StageId::Prepare, e)))
}

impl FrameStage for Prepare {
    type In = Frame;
    type Out = Prepared;

    async fn process(&mut self, frame: Frame, out: &Edge<Prepared>) -> Result<(), StageFailure> {
        self.monitor.metrics.queue(Queue::Prepare).popped.inc();
        let unprocessed = if frame.attempt >= self.plan.max_attempts {
            tracing::error!(
                offset = frame.meta.key.offset,
                attempts = frame.attempt,
                "Frame failed every attempt; dead-lettering it"
            );
            Some(Unprocessed::Rejected {
                rejection: Rejection::new(
                    DeadLetterKind::ProcessingFailed,
                    format!("processing failed {} times", frame.attempt),
                ),
                meta: frame.meta.clone(),
                payload: frame.payload.clone(),
            })
        } else if self.plan.is_stale(&frame.meta) {
            Some(Unprocessed::Skipped {
                meta: frame.meta.clone(),
            })
        } else {
            match self.prepare(&frame, out).await {
                Ok(()) => None,
                Err(PrepareError::Rejected(rejection)) => Some(Unprocessed::Rejected {
                    meta: frame.meta.clone(),
                    payload: frame.payload.clone(),
                    rejection,
                }),
                Err(PrepareError::Undelivered(error)) => {
                    tracing::debug!(%error, offset = frame.meta.key.offset, "Frame not handed on");
                    None
                }
                Err(PrepareError::Failed(failure)) => {
                    // Hand the frame back before the stage fails, so it is not lost.
                    frame.meta.ack.retry();
                    return Err(failure);
                }
            }
        };
        if let Some(unprocessed) = unprocessed
            && let Err(error) = out.send(Prepared::Unprocessed(unprocessed))
        {
            tracing::debug!(%error, offset = frame.meta.key.offset, "Frame not handed on");
        }
        Ok(())
    }
}

/// Checks the record's key and tessera headers against the data contract: the key is the
/// camera id (non-empty UTF-8); `tessera-frame-id` and `content-type` are UTF-8; `tessera-ts`
/// is an integer (ms since the epoch). Other headers are carried through untouched.
fn validate_record(meta: &FrameMeta) -> Result<(), Rejection> {
    match meta.record_key.as_deref() {
        None | Some([]) => {
            return Err(Rejection::new(
                DeadLetterKind::MissingKey,
                "the record has no key; the key must be the camera id",
            ));
        }
        Some(key) if std::str::from_utf8(key).is_err() => {
            return Err(Rejection::new(
                DeadLetterKind::InvalidKey,
                "the record key (camera id) is not valid UTF-8",
            ));
        }
        Some(_) => {}
    }
    for (name, value) in &meta.headers {
        if !headers::INPUT.contains(&name.as_str()) {
            continue;
        }
        let text = value.as_deref().map(std::str::from_utf8);
        let valid = match (name.as_str(), text) {
            (_, None) => false,
            (_, Some(Err(_))) => false,
            (headers::CAPTURE_TS, Some(Ok(ts))) => ts.trim().parse::<i64>().is_ok(),
            (_, Some(Ok(_))) => true,
        };
        if !valid {
            return Err(Rejection::new(
                DeadLetterKind::InvalidHeader,
                format!(
                    "header {name:?} must be {}",
                    if name == headers::CAPTURE_TS {
                        "an integer (ms since the epoch)"
                    } else {
                        "valid UTF-8"
                    }
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{FrameKey, PartitionId};

    fn meta(key: Option<&[u8]>, headers: &[(&str, Option<&[u8]>)]) -> FrameMeta {
        let mut meta = FrameMeta::detached(
            FrameKey {
                partition: PartitionId {
                    topic: Arc::from("frames"),
                    partition: 0,
                },
                generation: 0,
                seq: 0,
                offset: 0,
            },
            key.map(<[u8]>::to_vec),
        );
        meta.headers = headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.map(<[u8]>::to_vec)))
            .collect();
        meta
    }

    fn kind(meta: &FrameMeta) -> Option<&'static str> {
        validate_record(meta).err().map(|f| f.kind.as_str())
    }

    #[test]
    fn keys_must_be_utf8_camera_ids() {
        assert_eq!(kind(&meta(Some(b"cam-1"), &[])), None);
        assert_eq!(kind(&meta(None, &[])), Some("missing_key"));
        assert_eq!(kind(&meta(Some(b""), &[])), Some("missing_key"));
        assert_eq!(
            kind(&meta(Some(&[0xff, 0xfe, 0x00]), &[])),
            Some("invalid_key")
        );
    }

    #[test]
    fn tessera_headers_are_checked_and_others_carried() {
        let ok = meta(
            Some(b"cam"),
            &[
                ("tessera-ts", Some(b"1700000000000")),
                ("tessera-frame-id", Some(b"f-1")),
                ("x-vendor", Some(&[0xff, 0x00])),
                ("x-empty", None),
            ],
        );
        assert_eq!(kind(&ok), None);
        for bad in [
            ("tessera-ts", Some(&b"yesterday"[..])),
            ("tessera-ts", None),
            ("tessera-frame-id", Some(&[0xc3, 0x28][..])),
            ("content-type", Some(&[0xff][..])),
        ] {
            assert_eq!(
                kind(&meta(Some(b"cam"), &[bad])),
                Some("invalid_header"),
                "{bad:?}"
            );
        }
    }
}
