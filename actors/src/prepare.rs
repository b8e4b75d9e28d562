//! Prepare pool: decode (with limits) -> tile grid -> preprocess into model tensors.
//! A ractor factory; each worker does the CPU-heavy part on a blocking thread.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::factory::{FactoryMessage, FactoryRef, Job, Worker, WorkerId};
use ractor::{ActorProcessingErr, ActorRef};
use tessera_models::BatchDim;
use tessera_operators::decode::{DecodeLimits, decode_image};
use tessera_operators::preprocess::{InputTransform, Preprocessor};
use tessera_operators::tiling::TileGrid;
use tokio::sync::Semaphore;

use crate::config::LagPolicy;
use crate::frame::{
    Frame, FrameMeta, HEADER_CAPTURE_TS, HEADER_CONTENT_TYPE, HEADER_FRAME_ID, now_ms,
};
use crate::merge::{MergeMsg, PreparedFrame};
use crate::metrics::{Queue, Stage};
use crate::monitor::Monitor;
use crate::names::{ActorNames, lookup_patiently};
use crate::recognize::{RecognizeMsg, TileBatch};

/// Dead-letter kinds of records that break the data contract before their image is looked at.
pub const MISSING_KEY: &str = "missing_key";
pub const INVALID_KEY: &str = "invalid_key";
pub const INVALID_HEADER: &str = "invalid_header";
pub const RECORD_KINDS: [&str; 3] = [MISSING_KEY, INVALID_KEY, INVALID_HEADER];

/// Messages of the prepare factory.
pub type PrepareMsg = FactoryMessage<(), Frame>;
/// Reference to the prepare factory.
pub type PrepareRef = FactoryRef<(), Frame>;

/// How frames are prepared; shared by all prepare workers.
#[derive(Debug, Clone)]
pub struct PreparePlan {
    pub limits: DecodeLimits,
    pub grid: TileGrid,
    pub preprocess: tessera_operators::preprocess::PreprocessSpec,
    /// The model's batch dimension decides how tiles are grouped into model runs.
    pub batch_dim: BatchDim,
    /// Most tiles per run for a dynamic batch dimension.
    pub max_batch: usize,
    /// Lag policy and the age beyond which `drop_stale` skips a frame.
    pub lag_policy: LagPolicy,
    pub max_age: Duration,
    /// Tile credits (`flow.max_queued_tiles`): a batch holds one per tile until its model run
    /// is done, which bounds the tensors waiting for inference.
    pub tile_credits: Arc<Semaphore>,
    /// Capacity of `tile_credits`.
    pub max_queued_tiles: usize,
}

impl PreparePlan {
    /// Whether the lag policy skips this frame (captured longer than `max_age` ago).
    fn is_stale(&self, meta: &FrameMeta) -> bool {
        self.lag_policy == LagPolicy::DropStale
            && meta
                .capture_ms()
                .is_some_and(|ts| now_ms().saturating_sub(ts) > self.max_age.as_millis() as i64)
    }
}

/// One prepare worker.
#[derive(Debug)]
pub struct PrepareWorker {
    pub plan: Arc<PreparePlan>,
    pub names: ActorNames,
    pub monitor: Arc<Monitor>,
}

/// State of a prepare worker: its preprocessor (buffers reused across frames).
pub struct PrepareState {
    /// Taken while a frame is being prepared on a blocking thread.
    preprocessor: Option<Preprocessor>,
}

impl std::fmt::Debug for PrepareState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrepareState").finish_non_exhaustive()
    }
}

/// Why a frame could not be prepared (it goes to the dead-letter topic).
#[derive(Debug, Clone)]
pub struct PrepareFailure {
    /// Stable error kind (DLQ header and metric label).
    pub kind: &'static str,
    pub message: String,
}

/// The outcome of preparing one frame.
struct Prepared {
    width: u32,
    height: u32,
    transforms: Vec<InputTransform>,
    batches: Vec<(Vec<usize>, Vec<f32>, usize)>,
    decode: Duration,
    preprocess: Duration,
}

impl Worker for PrepareWorker {
    type Key = ();
    type Message = Frame;
    type Arguments = ();
    type State = PrepareState;

    async fn pre_start(
        &self,
        _wid: WorkerId,
        _factory: &ActorRef<PrepareMsg>,
        _args: (),
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(PrepareState {
            preprocessor: Some(Preprocessor::new(self.plan.preprocess.clone())),
        })
    }

    async fn handle(
        &self,
        _wid: WorkerId,
        _factory: &ActorRef<PrepareMsg>,
        Job {
            key, msg: frame, ..
        }: Job<(), Frame>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        self.monitor.metrics.queue(Queue::Prepare).popped.inc();
        let frame_key = frame.meta.key.clone();
        if let Err(error) = self.process(frame, state).await {
            // Hand the frame back before this worker is restarted, so it is not lost.
            crate::recovery::stage_failed(&self.names, &frame_key, "prepare", &error.to_string());
            return Err(error);
        }
        Ok(key)
    }
}

impl PrepareWorker {
    async fn process(
        &self,
        frame: Frame,
        state: &mut PrepareState,
    ) -> Result<(), ActorProcessingErr> {
        let merge = lookup_patiently::<MergeMsg>(&self.names.merge(), Duration::from_secs(30))
            .await
            .ok_or("merge actor unavailable")?;
        if self.plan.is_stale(&frame.meta) {
            merge.cast(MergeMsg::Skipped { meta: frame.meta })?;
            return Ok(());
        }
        let mut preprocessor = state
            .preprocessor
            .take()
            .unwrap_or_else(|| Preprocessor::new(self.plan.preprocess.clone()));
        let plan = self.plan.clone();
        let (payload, meta) = (frame.payload.clone(), frame.meta.clone());
        let (preprocessor, outcome) = tokio::task::spawn_blocking(move || {
            let outcome = validate_record(&meta)
                .and_then(|()| prepare_frame(&payload, &plan, &mut preprocessor));
            (preprocessor, outcome)
        })
        .await?;
        state.preprocessor = Some(preprocessor);

        let prepared = match outcome {
            Ok(prepared) => prepared,
            Err(failure) => {
                merge.cast(MergeMsg::Failed {
                    meta: frame.meta,
                    payload: frame.payload,
                    failure,
                })?;
                return Ok(());
            }
        };
        let metrics = &self.monitor.metrics;
        metrics
            .stage(Stage::Decode)
            .observe(prepared.decode.as_secs_f64());
        metrics
            .stage(Stage::TilePreprocess)
            .observe(prepared.preprocess.as_secs_f64());
        let frame_key = frame.meta.key.clone();
        merge.cast(MergeMsg::Expect(Box::new(PreparedFrame {
            meta: frame.meta,
            payload: frame.payload,
            width: prepared.width,
            height: prepared.height,
            transforms: prepared.transforms,
            decode: prepared.decode,
            preprocess: prepared.preprocess,
        })))?;
        let recognize =
            lookup_patiently::<RecognizeMsg>(&self.names.recognize(), Duration::from_secs(30))
                .await
                .ok_or("recognize pool unavailable")?;
        for (tiles, tensor, batch) in prepared.batches {
            // Waiting here stalls preparation, which (through the frame budget) pauses
            // consumption: pressure never turns into queued tensors.
            let wanted = u32::try_from(tiles.len().min(self.plan.max_queued_tiles)).unwrap_or(1);
            let credit = self
                .plan
                .tile_credits
                .clone()
                .acquire_many_owned(wanted)
                .await?;
            recognize
                .dispatch(
                    (),
                    TileBatch {
                        frame: frame_key.clone(),
                        tiles,
                        tensor,
                        batch,
                        queued_at: Instant::now(),
                        _credit: Some(credit),
                    },
                )
                .map_err(|e| format!("dispatch to recognize pool: {e}"))?;
            metrics.queue(Queue::Recognize).pushed.inc();
        }
        Ok(())
    }
}

/// Checks the record's key and tessera headers against the data contract: the key is the
/// camera id (non-empty UTF-8); `tessera-frame-id` and `content-type` are UTF-8; `tessera-ts`
/// is an integer (ms since the epoch). Other headers are carried through untouched.
fn validate_record(meta: &FrameMeta) -> Result<(), PrepareFailure> {
    match meta.record_key.as_deref() {
        None | Some([]) => {
            return Err(PrepareFailure {
                kind: MISSING_KEY,
                message: "the record has no key; the key must be the camera id".into(),
            });
        }
        Some(key) if std::str::from_utf8(key).is_err() => {
            return Err(PrepareFailure {
                kind: INVALID_KEY,
                message: "the record key (camera id) is not valid UTF-8".into(),
            });
        }
        Some(_) => {}
    }
    for (name, value) in &meta.headers {
        if ![HEADER_FRAME_ID, HEADER_CAPTURE_TS, HEADER_CONTENT_TYPE].contains(&name.as_str()) {
            continue;
        }
        let text = value.as_deref().map(std::str::from_utf8);
        let valid = match (name.as_str(), text) {
            (_, None) => false,
            (_, Some(Err(_))) => false,
            (HEADER_CAPTURE_TS, Some(Ok(ts))) => ts.trim().parse::<i64>().is_ok(),
            (_, Some(Ok(_))) => true,
        };
        if !valid {
            return Err(PrepareFailure {
                kind: INVALID_HEADER,
                message: format!(
                    "header {name:?} must be {}",
                    if name == HEADER_CAPTURE_TS {
                        "an integer (ms since the epoch)"
                    } else {
                        "valid UTF-8"
                    }
                ),
            });
        }
    }
    Ok(())
}

/// Decodes, tiles and preprocesses one frame. Pure CPU work; runs on a blocking thread.
fn prepare_frame(
    payload: &[u8],
    plan: &PreparePlan,
    preprocessor: &mut Preprocessor,
) -> Result<Prepared, PrepareFailure> {
    let started = Instant::now();
    let image = decode_image(payload, &plan.limits).map_err(|e| PrepareFailure {
        kind: e.kind(),
        message: e.to_string(),
    })?;
    let decode = started.elapsed();

    let started = Instant::now();
    let tiles = plan.grid.tiles(image.width(), image.height());
    let tensor_len = preprocessor.tensor_len();
    let per_run = match plan.batch_dim {
        BatchDim::Fixed(n) => n.max(1),
        BatchDim::Dynamic => plan.max_batch.max(1),
    };
    let mut transforms = Vec::with_capacity(tiles.len());
    let mut batches = Vec::with_capacity(tiles.len().div_ceil(per_run));
    for chunk in tiles.chunks(per_run) {
        // A fixed batch dimension must be filled; unused slots stay zero and are ignored.
        let batch = match plan.batch_dim {
            BatchDim::Fixed(n) => n.max(1),
            BatchDim::Dynamic => chunk.len(),
        };
        let mut tensor = vec![0.0f32; batch * tensor_len];
        for (slot, tile) in chunk.iter().enumerate() {
            let out = &mut tensor[slot * tensor_len..(slot + 1) * tensor_len];
            let transform = preprocessor
                .prepare_into(&image, tile.rect, out)
                .map_err(|e| PrepareFailure {
                    kind: e.kind(),
                    message: e.to_string(),
                })?;
            transforms.push(transform);
        }
        batches.push((chunk.iter().map(|t| t.index).collect(), tensor, batch));
    }
    Ok(Prepared {
        width: image.width(),
        height: image.height(),
        transforms,
        batches,
        decode,
        preprocess: started.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::frame::{FrameKey, PartitionId};

    fn meta(key: Option<&[u8]>, headers: &[(&str, Option<&[u8]>)]) -> FrameMeta {
        FrameMeta {
            key: FrameKey {
                partition: PartitionId {
                    topic: Arc::from("frames"),
                    partition: 0,
                },
                generation: 0,
                seq: 0,
                offset: 0,
            },
            record_key: key.map(<[u8]>::to_vec),
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.map(<[u8]>::to_vec)))
                .collect(),
            kafka_timestamp_ms: None,
            received_ms: 0,
            received_at: Instant::now(),
            _credit: None,
        }
    }

    fn kind(meta: &FrameMeta) -> Option<&'static str> {
        validate_record(meta).err().map(|f| f.kind)
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
