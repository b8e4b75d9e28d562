//! Prepare pool: decode (with limits) -> tile grid -> preprocess into model tensors.
//! A ractor factory; each worker does the CPU-heavy part on a blocking thread.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use image::RgbImage;
use ractor::factory::{FactoryMessage, FactoryRef, Job, Worker, WorkerId};
use ractor::{ActorProcessingErr, ActorRef};
use tessera_models::BatchDim;
use tessera_operators::decode::{DecodeLimits, decode_image_reusing};
use tessera_operators::preprocess::Preprocessor;
use tessera_operators::tiling::TileGrid;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::LagPolicy;
use crate::frame::{
    Frame, FrameMeta, HEADER_CAPTURE_TS, HEADER_CONTENT_TYPE, HEADER_FRAME_ID, now_ms,
};
use crate::merge::{MergeMsg, PreparedFrame};
use crate::metrics::{Queue, Stage};
use crate::monitor::Monitor;
use crate::names::{ActorNames, lookup_patiently};
use crate::recognize::{BatchQueue, TileBatch, TileSlot};
use crate::tensor_pool::{PooledTensor, TensorPool};

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
    /// Longest a batch that is not full waits for the next frame's tiles.
    pub max_batch_delay: Duration,
    /// Lag policy and the age beyond which `drop_stale` skips a frame.
    pub lag_policy: LagPolicy,
    pub max_age: Duration,
    /// Tile credits (`flow.max_queued_tiles`): a batch holds one per tile until its model run
    /// is done, which bounds the tensors waiting for inference.
    pub tile_credits: Arc<Semaphore>,
    /// Input tensors, reused across batches.
    pub tensors: TensorPool,
}

impl PreparePlan {
    /// Whether the lag policy skips this frame (captured longer than `max_age` ago).
    fn is_stale(&self, meta: &FrameMeta) -> bool {
        self.lag_policy == LagPolicy::DropStale
            && meta
                .capture_ms()
                .is_some_and(|ts| now_ms().saturating_sub(ts) > self.max_age.as_millis() as i64)
    }

    /// Slots of one model run.
    fn batch_capacity(&self) -> usize {
        batch_capacity(self.batch_dim, self.max_batch)
    }
}

/// Slots of one model run: the model's fixed batch, else `max_batch`.
pub fn batch_capacity(batch_dim: BatchDim, max_batch: usize) -> usize {
    match batch_dim {
        BatchDim::Fixed(n) => n.max(1),
        BatchDim::Dynamic => max_batch.max(1),
    }
}

/// One prepare worker.
#[derive(Debug)]
pub struct PrepareWorker {
    pub plan: Arc<PreparePlan>,
    /// Where full batches go (the recognize pool).
    pub batches: BatchQueue,
    pub names: ActorNames,
    pub monitor: Arc<Monitor>,
}

/// State of a prepare worker: its buffers (reused across frames) and the batch it is filling.
pub struct PrepareState {
    /// Taken while a frame is being prepared on a blocking thread.
    buffers: Option<FrameBuffers>,
    batcher: Batcher,
}

/// What a prepare worker reuses from frame to frame: no allocation per frame or per tile.
struct FrameBuffers {
    preprocessor: Preprocessor,
    /// The previous frame's decoded pixels, decoded over by the next frame.
    pixels: Vec<u8>,
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

/// How preparing a frame ended badly.
enum PrepareError {
    /// The frame is bad input: dead-letter it.
    Rejected(PrepareFailure),
    /// The stage cannot go on (a peer is gone): the worker fails and the frame is retried.
    Failed(String),
}

impl From<PrepareFailure> for PrepareError {
    fn from(failure: PrepareFailure) -> Self {
        PrepareError::Rejected(failure)
    }
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
            buffers: None,
            batcher: Batcher::default(),
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
            crate::recovery::stage_failed(
                &self.names,
                std::slice::from_ref(&frame_key),
                "prepare",
                &error.to_string(),
            );
            return Err(error);
        }
        Ok(key)
    }

    async fn post_stop(
        &self,
        _wid: WorkerId,
        _factory: &ActorRef<PrepareMsg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Tiles waiting for more of their batch run now rather than wait for a timeout.
        state
            .batcher
            .flush_now(&self.batches, &self.plan, &self.monitor);
        Ok(())
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
        let mut buffers = state.buffers.take().unwrap_or_else(|| FrameBuffers {
            preprocessor: Preprocessor::new(self.plan.preprocess.clone()),
            pixels: Vec::new(),
        });
        let job = FrameJob {
            plan: self.plan.clone(),
            monitor: self.monitor.clone(),
            batcher: state.batcher.clone(),
            merge: merge.clone(),
            batches: self.batches.clone(),
            frame: frame.clone(),
            runtime: tokio::runtime::Handle::current(),
        };
        let (buffers, outcome) = tokio::task::spawn_blocking(move || {
            job.batcher.set_filling(true);
            let outcome = job.run(&mut buffers);
            job.batcher.set_filling(false);
            job.batcher.flush_if_due(&job);
            (buffers, outcome)
        })
        .await?;
        state.buffers = Some(buffers);
        match outcome {
            Ok(()) => Ok(()),
            Err(PrepareError::Rejected(failure)) => {
                merge.cast(MergeMsg::Failed {
                    meta: frame.meta,
                    payload: frame.payload,
                    failure,
                })?;
                Ok(())
            }
            Err(PrepareError::Failed(error)) => Err(error.into()),
        }
    }
}

/// Everything the blocking part of preparing one frame needs.
struct FrameJob {
    plan: Arc<PreparePlan>,
    monitor: Arc<Monitor>,
    batcher: Batcher,
    merge: ActorRef<MergeMsg>,
    batches: BatchQueue,
    frame: Frame,
    runtime: tokio::runtime::Handle,
}

impl FrameJob {
    /// Decodes the frame, tells merge what to expect, then preprocesses each tile straight
    /// into the batch being filled, dispatching batches as they fill. Pure CPU work but for
    /// waiting on tile credits; runs on a blocking thread.
    fn run(&self, buffers: &mut FrameBuffers) -> Result<(), PrepareError> {
        validate_record(&self.frame.meta)?;
        let started = Instant::now();
        let pixels = std::mem::take(&mut buffers.pixels);
        let image =
            decode_image_reusing(&self.frame.payload, &self.plan.limits, pixels).map_err(|e| {
                PrepareFailure {
                    kind: e.kind(),
                    message: e.to_string(),
                }
            })?;
        let decode = started.elapsed();
        self.monitor
            .metrics
            .stage(Stage::Decode)
            .observe(decode.as_secs_f64());
        let outcome = self.prepare_tiles(&image, decode, &mut buffers.preprocessor);
        buffers.pixels = image.into_raw();
        outcome
    }

    /// Tells merge what to expect of the decoded frame, then preprocesses its tiles.
    fn prepare_tiles(
        &self,
        image: &RgbImage,
        decode: Duration,
        preprocessor: &mut Preprocessor,
    ) -> Result<(), PrepareError> {
        let meta = &self.frame.meta;
        let metrics = &self.monitor.metrics;

        // Preparation time only: waits for tile credits (model back-pressure) are left out.
        let started = Instant::now();
        let tiles = self.plan.grid.tiles(image.width(), image.height());
        let transforms = tiles
            .iter()
            .map(|tile| preprocessor.transform_for(tile.rect))
            .collect();
        // Before any tile is dispatched, so merge knows the frame when its outputs arrive.
        self.merge
            .cast(MergeMsg::Expect(Box::new(PreparedFrame {
                meta: meta.clone(),
                payload: self.frame.payload.clone(),
                width: image.width(),
                height: image.height(),
                transforms,
                decode,
            })))
            .map_err(|e| PrepareError::Failed(format!("merge: {e}")))?;
        let mut preparing = started.elapsed();

        let tensor_len = preprocessor.tensor_len();
        for tile in &tiles {
            // Waiting here stalls preparation, which (through the frame budget) pauses
            // consumption: pressure never turns into queued tensors.
            let credit = self
                .runtime
                .block_on(self.plan.tile_credits.clone().acquire_owned())
                .map_err(|e| PrepareError::Failed(format!("tile credits: {e}")))?;
            let tile_started = Instant::now();
            let full = self.batcher.with_open(self, |open| {
                let slot = open.slots.len();
                let out = &mut open.tensor[slot * tensor_len..(slot + 1) * tensor_len];
                preprocessor
                    .prepare_into(image, tile.rect, out)
                    .map_err(|e| PrepareFailure {
                        kind: e.kind(),
                        message: e.to_string(),
                    })?;
                open.slots.push(TileSlot {
                    frame: meta.key.clone(),
                    tile: tile.index,
                    preprocess: tile_started.elapsed(),
                });
                open.add_credit(credit);
                Ok(open.slots.len() == open.capacity)
            })?;
            preparing += tile_started.elapsed();
            if full {
                self.batcher.dispatch_open(self);
            }
        }
        metrics
            .stage(Stage::TilePreprocess)
            .observe(preparing.as_secs_f64());
        Ok(())
    }
}

/// The batch a prepare worker is filling: tiles of consecutive frames, preprocessed straight
/// into its input tensor.
#[derive(Debug)]
struct OpenBatch {
    id: u64,
    slots: Vec<TileSlot>,
    tensor: PooledTensor,
    capacity: usize,
    opened_at: Instant,
    credits: Option<OwnedSemaphorePermit>,
}

impl OpenBatch {
    fn add_credit(&mut self, credit: OwnedSemaphorePermit) {
        match &mut self.credits {
            Some(credits) => credits.merge(credit),
            None => self.credits = Some(credit),
        }
    }

    /// The batch as the recognize pool takes it: a fixed batch keeps its size (unused slots
    /// zeroed), a dynamic one shrinks to its tiles.
    fn into_batch(mut self, batch_dim: BatchDim) -> TileBatch {
        let tensor_len = self.tensor.len() / self.capacity.max(1);
        let filled = self.slots.len();
        let batch = match batch_dim {
            BatchDim::Fixed(n) => {
                self.tensor[filled * tensor_len..].fill(0.0);
                n.max(1)
            }
            BatchDim::Dynamic => {
                self.tensor.truncate(filled * tensor_len);
                filled
            }
        };
        TileBatch {
            slots: self.slots,
            tensor: self.tensor,
            batch,
            queued_at: Instant::now(),
            _credit: self.credits,
        }
    }
}

#[derive(Debug, Default)]
struct BatcherState {
    open: Option<OpenBatch>,
    /// Whether the worker is preparing a frame (its tiles may still join the open batch).
    filling: bool,
    next_id: u64,
}

/// A prepare worker's batching: the open batch, dispatched when full, at the end of a frame
/// once `max_batch_delay` has passed, or by a timer when the worker goes idle.
#[derive(Debug, Clone, Default)]
struct Batcher {
    state: Arc<Mutex<BatcherState>>,
}

impl Batcher {
    fn lock(&self) -> MutexGuard<'_, BatcherState> {
        // A panic while filling leaves the batch usable: a slot counts once written.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_filling(&self, filling: bool) {
        self.lock().filling = filling;
    }

    /// Runs `fill` on the open batch, opening one (and arming its timer) if there is none.
    fn with_open<T>(
        &self,
        job: &FrameJob,
        fill: impl FnOnce(&mut OpenBatch) -> Result<T, PrepareFailure>,
    ) -> Result<T, PrepareError> {
        let mut state = self.lock();
        if state.open.is_none() {
            state.next_id += 1;
            let capacity = job.plan.batch_capacity();
            let tensor_len =
                3 * job.plan.preprocess.width as usize * job.plan.preprocess.height as usize;
            state.open = Some(OpenBatch {
                id: state.next_id,
                slots: Vec::with_capacity(capacity),
                tensor: job.plan.tensors.take(capacity * tensor_len),
                capacity,
                opened_at: Instant::now(),
                credits: None,
            });
            // A one-slot batch is full with its first tile and never waits.
            if capacity > 1 {
                self.arm_timer(job, state.next_id);
            }
        }
        let open = state
            .open
            .as_mut()
            .ok_or_else(|| PrepareError::Failed("no open batch".into()))?;
        Ok(fill(open)?)
    }

    /// Dispatches the open batch now.
    fn dispatch_open(&self, job: &FrameJob) {
        let open = self.lock().open.take();
        if let Some(open) = open {
            dispatch(&job.batches, open, &job.plan, &job.monitor);
        }
    }

    /// At the end of a frame: dispatches the open batch if it has waited `max_batch_delay`.
    fn flush_if_due(&self, job: &FrameJob) {
        let due = {
            let mut state = self.lock();
            match &state.open {
                Some(open) if open.opened_at.elapsed() >= job.plan.max_batch_delay => {
                    state.open.take()
                }
                _ => None,
            }
        };
        if let Some(open) = due {
            dispatch(&job.batches, open, &job.plan, &job.monitor);
        }
    }

    /// Dispatches whatever is open (the worker is stopping).
    fn flush_now(&self, batches: &BatchQueue, plan: &PreparePlan, monitor: &Monitor) {
        let open = self.lock().open.take();
        if let Some(open) = open {
            dispatch(batches, open, plan, monitor);
        }
    }

    /// After `max_batch_delay`, dispatches batch `id` if it is still open and the worker is
    /// idle; while the worker is busy with a frame, the frame's end decides.
    fn arm_timer(&self, job: &FrameJob, id: u64) {
        let (batcher, plan, monitor, batches) = (
            self.clone(),
            job.plan.clone(),
            job.monitor.clone(),
            job.batches.clone(),
        );
        job.runtime.spawn(async move {
            loop {
                tokio::time::sleep(plan.max_batch_delay).await;
                let open = {
                    let mut state = batcher.lock();
                    match &state.open {
                        Some(open) if open.id == id && !state.filling => state.open.take(),
                        Some(open) if open.id == id => continue,
                        _ => return,
                    }
                };
                if let Some(open) = open {
                    dispatch(&batches, open, &plan, &monitor);
                }
                return;
            }
        });
    }
}

/// Hands a batch to the recognize pool.
fn dispatch(batches: &BatchQueue, open: OpenBatch, plan: &PreparePlan, monitor: &Monitor) {
    batches.send(open.into_batch(plan.batch_dim), monitor);
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
