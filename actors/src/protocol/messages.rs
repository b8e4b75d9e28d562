//! The messages of the frame path, one type per edge:
//!
//! ```text
//! ingest --Frame--> prepare --Prepared--> recognize --Recognized--> merge --Outcome-->
//!   sequencer --Outcome--> publish
//! ```
//!
//! A frame's path runs one way; a frame that needs no model run (bad input, skipped by the
//! lag policy) travels the same edges as [`Unprocessed`], so every frame reaches the
//! sequencer in one place.

use std::sync::Arc;
use std::time::Duration;

use tessera_models::{Head, TileOutput};
use tessera_operators::gate::TileDecision;
use tessera_operators::preprocess::InputTransform;
use tokio::sync::OwnedSemaphorePermit;

use super::ack::AckHandle;
use super::dead_letter::Rejection;
use super::frame::FrameMeta;
use super::key::FrameKey;
use super::tensor::PooledTensor;

/// A frame that leaves the model path early.
#[derive(Debug)]
pub enum Unprocessed {
    /// The lag policy skipped it: published as `status: skipped`.
    Skipped { meta: Arc<FrameMeta> },
    /// It cannot be processed: dead-lettered with the original payload.
    Rejected {
        meta: Arc<FrameMeta>,
        payload: Arc<[u8]>,
        rejection: Rejection,
    },
}

impl Unprocessed {
    pub fn meta(&self) -> &Arc<FrameMeta> {
        match self {
            Unprocessed::Skipped { meta } | Unprocessed::Rejected { meta, .. } => meta,
        }
    }
}

/// A decoded and tiled frame: what merge needs to turn its tile outputs into a result.
#[derive(Debug)]
pub struct FrameLayout {
    pub meta: Arc<FrameMeta>,
    /// Kept until the frame is done, in case it has to be dead-lettered.
    pub payload: Arc<[u8]>,
    pub width: u32,
    pub height: u32,
    /// Model-input to frame mapping per tile index.
    pub transforms: Vec<InputTransform>,
    /// Time spent decoding the frame.
    pub decode: Duration,
    /// The decoded frame, kept for the second stage (`None` without one).
    pub image: Option<Arc<image::RgbImage>>,
    /// The change gate's plan for the frame (`None`: the gate is off, every tile runs).
    pub gate: Option<GatedFrame>,
}

/// The change gate's plan for one frame, as merge needs it.
#[derive(Debug)]
pub struct GatedFrame {
    /// Per tile index: run it (only those tiles are sent on), reuse an earlier frame's result,
    /// or follow an earlier frame whose run of the tile is under way.
    pub tiles: Vec<TileDecision<TileOutput>>,
    /// Whether the frame is a full refresh.
    pub refresh: bool,
    /// How far the settings were relaxed under lag (0 to 1).
    pub relaxation: f32,
}

/// One preprocessed tile: the model input of one slot of a batch.
#[derive(Debug)]
pub struct PreparedTile {
    /// Tile index within the frame.
    pub index: usize,
    /// NCHW input of one tile, from the preparation's buffer pool.
    pub tensor: PooledTensor,
    /// Time spent cropping, resizing and normalising this tile.
    pub preprocess: Duration,
    /// A tile credit (`flow.max_queued_tiles`), held until the tile's model run is done.
    pub credit: Option<OwnedSemaphorePermit>,
}

/// Some preprocessed tiles of one frame (a frame's tiles come in chunks, each holding its
/// tile credits, so a frame of more tiles than there are credits still flows).
#[derive(Debug)]
pub struct TileChunk {
    /// The frame's handle: its key, and how to hand it back if its model run fails.
    pub frame: AckHandle,
    /// The head pinned on the frame, applied to these tiles' embeddings.
    pub head: Option<Arc<Head>>,
    pub tiles: Vec<PreparedTile>,
}

/// prepare -> recognize.
#[derive(Debug)]
pub enum Prepared {
    /// A frame was decoded and tiled; its tiles follow. Sent before any of them.
    Layout(Box<FrameLayout>),
    Tiles(TileChunk),
    Unprocessed(Unprocessed),
}

/// Outputs of some tiles of one frame (one model run may hold tiles of several frames).
#[derive(Debug)]
pub struct TileOutputs {
    pub frame: FrameKey,
    /// Tile indices, in the order of `outputs`.
    pub tiles: Vec<usize>,
    pub outputs: Vec<TileOutput>,
    /// Preparation time of these tiles.
    pub preprocess: Duration,
    /// This frame's share of the model runs' time.
    pub inference: Duration,
}

/// recognize -> merge.
#[derive(Debug)]
pub enum Recognized {
    /// A frame's tiles are on their way through the model; expect `transforms.len()` outputs.
    /// Sent before any of its tiles runs.
    Expect(Box<FrameLayout>),
    Tiles(TileOutputs),
    /// A model run failed for some tiles of a frame in a way retrying will not fix.
    TilesFailed {
        frame: FrameKey,
        rejection: Rejection,
    },
    Unprocessed(Unprocessed),
}
