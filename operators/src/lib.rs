//! Pure, synchronous, deterministic building blocks of tessera: decode, tile, preprocess,
//! output adapters, merge and annotate. No async, no I/O, no global state.
//!
//! The per-frame path is `decode::decode_image` -> `tiling::TileGrid::tiles` ->
//! `preprocess::Preprocessor::prepare_into` (per tile) -> model -> `adapters` (per tile) ->
//! `preprocess::InputTransform::to_frame` + `geometry::BBox::clamp_to` -> `merge::merge`.

pub mod adapters;
pub mod annotate;
pub mod batching;
pub mod crops;
pub mod decode;
pub mod detection;
pub mod gate;
pub mod geometry;
pub mod labels;
pub mod learning;
pub mod merge;
pub mod preprocess;
pub mod sampling;
#[cfg(any(test, feature = "test-images"))]
pub mod scene;
pub mod scopes;
#[cfg(any(test, feature = "test-images"))]
pub mod test_images;
pub mod tiling;

pub use adapters::{Activation, AdapterKind, BoxEncoding, BoxFormat, DetectionParams, Role};
pub use annotate::draw_detections;
pub use decode::{DecodeError, DecodeLimits, decode_image, decode_image_reusing};
pub use detection::{Classification, Detection};
pub use geometry::{BBox, PixelRect};
pub use merge::{MatchMetric, MergeConfig, MergeConfigError, MergeStrategy, merge};
pub use preprocess::{
    ChannelOrder, InputTransform, PreprocessError, PreprocessSpec, Preprocessor, ResizeMode,
};
pub use tiling::{Tile, TileGrid, TilingConfig, TilingError};
