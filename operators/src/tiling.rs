//! SAHI sliding-window tiling (Akyon et al., "Slicing Aided Hyper Inference", ICIP 2022).
//!
//! A frame is cut into overlapping tiles of the model's input size (by default); edge tiles are
//! shifted inward so every tile is full size, and an optional full-frame pass comes last so large
//! objects that no tile contains whole are still found.

use serde::{Deserialize, Serialize};

use crate::geometry::PixelRect;

/// Largest overlap ratio accepted: beyond it the step becomes tiny and the tile count explodes.
pub const MAX_OVERLAP_RATIO: f32 = 0.95;

/// Tiling configuration (`[tiling]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TilingConfig {
    /// Cut frames into overlapping tiles. When false, each frame is one full-frame tile.
    #[serde(default = "default_enabled")]
    pub enabled: bool,
    /// Tile width in frame pixels. Unset: the model's input width, so tiles are not rescaled.
    #[serde(default)]
    pub tile_width: Option<u32>,
    /// Tile height in frame pixels. Unset: the model's input height.
    #[serde(default)]
    pub tile_height: Option<u32>,
    /// Fraction of a tile shared with its neighbour, in `[0, 0.95]` (SAHI default 0.2).
    #[serde(default = "default_overlap_ratio")]
    pub overlap_ratio: f32,
    /// Add one full-frame tile after the grid, to catch objects larger than a tile.
    #[serde(default = "default_full_frame")]
    pub full_frame: bool,
}

fn default_enabled() -> bool {
    true
}

fn default_overlap_ratio() -> f32 {
    0.2
}

fn default_full_frame() -> bool {
    true
}

impl Default for TilingConfig {
    fn default() -> Self {
        Self {
            enabled: default_enabled(),
            tile_width: None,
            tile_height: None,
            overlap_ratio: default_overlap_ratio(),
            full_frame: default_full_frame(),
        }
    }
}

/// An invalid [`TilingConfig`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TilingError {
    /// `overlap_ratio` outside `[0, 0.95]` or not a number.
    #[error("tiling.overlap_ratio must be in [0, {MAX_OVERLAP_RATIO}], got {0}")]
    OverlapRatio(f32),
    /// A tile dimension of zero.
    #[error("tiling.{field} must be at least 1 pixel")]
    ZeroTileSize {
        /// `tile_width` or `tile_height`.
        field: &'static str,
    },
    /// `enabled = false` together with `full_frame = false` would produce no tile at all.
    #[error("tiling.enabled = false requires the full-frame tile; set tiling.full_frame = true")]
    NoTiles,
}

impl TilingError {
    /// Stable snake_case name, for metrics and error headers.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::OverlapRatio(_) => "invalid_overlap_ratio",
            Self::ZeroTileSize { .. } => "invalid_tile_size",
            Self::NoTiles => "no_tiles",
        }
    }
}

impl TilingConfig {
    /// Checks the value ranges and cross-field rules.
    pub fn validate(&self) -> Result<(), TilingError> {
        if !(0.0..=MAX_OVERLAP_RATIO).contains(&self.overlap_ratio) {
            return Err(TilingError::OverlapRatio(self.overlap_ratio));
        }
        if self.tile_width == Some(0) {
            return Err(TilingError::ZeroTileSize {
                field: "tile_width",
            });
        }
        if self.tile_height == Some(0) {
            return Err(TilingError::ZeroTileSize {
                field: "tile_height",
            });
        }
        if !self.enabled && !self.full_frame {
            return Err(TilingError::NoTiles);
        }
        Ok(())
    }

    /// The concrete grid for a model with the given input size. Sizes are forced to at least 1 px
    /// and the overlap into `[0, 0.95]`, so a grid is always usable even from an unvalidated config.
    pub fn grid(&self, model_width: u32, model_height: u32) -> TileGrid {
        let overlap_ratio = if self.overlap_ratio.is_nan() {
            0.0
        } else {
            self.overlap_ratio.clamp(0.0, MAX_OVERLAP_RATIO)
        };
        TileGrid {
            tile_width: self.tile_width.unwrap_or(model_width).max(1),
            tile_height: self.tile_height.unwrap_or(model_height).max(1),
            overlap_ratio,
            full_frame: self.full_frame,
            enabled: self.enabled,
        }
    }
}

/// A resolved tiling plan; [`TileGrid::tiles`] applies it to a frame size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TileGrid {
    /// Tile width in frame pixels (at least 1).
    pub tile_width: u32,
    /// Tile height in frame pixels (at least 1).
    pub tile_height: u32,
    /// Fraction of a tile shared with its neighbour.
    pub overlap_ratio: f32,
    /// Append a full-frame tile after the grid.
    pub full_frame: bool,
    /// Tiling on; when off only the full frame is produced.
    pub enabled: bool,
}

/// One region of a frame to run the model on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tile {
    /// Position in the frame's tile list.
    pub index: usize,
    /// The region in frame pixels.
    pub rect: PixelRect,
    /// True for the whole-frame pass.
    pub full_frame: bool,
}

impl TileGrid {
    /// The tiles of a `frame_width x frame_height` frame: row-major sliding windows, then the
    /// full frame if configured. Empty for an empty frame.
    pub fn tiles(&self, frame_width: u32, frame_height: u32) -> Vec<Tile> {
        if frame_width == 0 || frame_height == 0 {
            return Vec::new();
        }
        let full = PixelRect::new(0, 0, frame_width, frame_height);
        let mut tiles = Vec::new();
        if !self.enabled {
            tiles.push(Tile {
                index: 0,
                rect: full,
                full_frame: true,
            });
            return tiles;
        }
        let xs = window_starts(frame_width, self.tile_width, self.overlap_ratio);
        let ys = window_starts(frame_height, self.tile_height, self.overlap_ratio);
        let tw = self.tile_width.min(frame_width);
        let th = self.tile_height.min(frame_height);
        tiles.reserve(xs.len() * ys.len() + 1);
        for &y in &ys {
            for &x in &xs {
                tiles.push(Tile {
                    index: tiles.len(),
                    rect: PixelRect::new(x, y, tw, th),
                    full_frame: false,
                });
            }
        }
        let grid_is_full_frame = tiles.len() == 1 && tiles[0].rect == full;
        if self.full_frame && !grid_is_full_frame {
            tiles.push(Tile {
                index: tiles.len(),
                rect: full,
                full_frame: true,
            });
        }
        tiles
    }
}

/// Start offsets of sliding windows of `tile` px along an axis of `len` px. Windows advance by
/// `tile * (1 - overlap)` (at least 1 px); the last one is shifted inward to end at the edge.
/// Strictly increasing, hence free of duplicates.
fn window_starts(len: u32, tile: u32, overlap: f32) -> Vec<u32> {
    if tile >= len {
        return vec![0];
    }
    let step = ((tile as f32) * (1.0 - overlap)).floor();
    let step = if step.is_finite() && step >= 1.0 {
        step as u32
    } else {
        1
    };
    let last = len - tile;
    let mut starts = Vec::with_capacity((last / step) as usize + 2);
    let mut s = 0u32;
    loop {
        if s >= last {
            starts.push(last);
            break;
        }
        starts.push(s);
        s = s.saturating_add(step);
    }
    starts
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rects(tiles: &[Tile]) -> Vec<(u32, u32, u32, u32)> {
        tiles
            .iter()
            .map(|t| (t.rect.x, t.rect.y, t.rect.width, t.rect.height))
            .collect()
    }

    #[test]
    fn hd_frame_with_640_tiles() {
        let grid = TilingConfig::default().grid(640, 640);
        let tiles = grid.tiles(1920, 1080);
        // step 512: x = 0, 512, 1024, then 1280 shifted inward; y = 0, then 440 shifted inward.
        let mut expected = Vec::new();
        for y in [0, 440] {
            for x in [0, 512, 1024, 1280] {
                expected.push((x, y, 640, 640));
            }
        }
        expected.push((0, 0, 1920, 1080));
        assert_eq!(rects(&tiles), expected);
        for (i, t) in tiles.iter().enumerate() {
            assert_eq!(t.index, i);
            assert_eq!(t.full_frame, i == 8);
        }
    }

    #[test]
    fn frame_smaller_than_tile_is_one_tile() {
        let tiles = TilingConfig::default().grid(640, 640).tiles(320, 240);
        assert_eq!(rects(&tiles), vec![(0, 0, 320, 240)]);
        assert!(!tiles[0].full_frame);
    }

    #[test]
    fn frame_smaller_in_one_axis_clips_tiles() {
        let tiles = TilingConfig::default().grid(640, 640).tiles(1000, 300);
        // x: step 512, last = 360: 0, 360.
        assert_eq!(
            rects(&tiles),
            vec![(0, 0, 640, 300), (360, 0, 640, 300), (0, 0, 1000, 300)]
        );
    }

    #[test]
    fn frame_equal_to_tile_has_no_duplicate_full_frame() {
        let tiles = TilingConfig::default().grid(640, 640).tiles(640, 640);
        assert_eq!(rects(&tiles), vec![(0, 0, 640, 640)]);
    }

    #[test]
    fn disabled_gives_full_frame_only() {
        let config = TilingConfig {
            enabled: false,
            ..TilingConfig::default()
        };
        let tiles = config.grid(640, 640).tiles(1920, 1080);
        assert_eq!(rects(&tiles), vec![(0, 0, 1920, 1080)]);
        assert!(tiles[0].full_frame);
    }

    #[test]
    fn no_full_frame_and_explicit_tile_size() {
        let config = TilingConfig {
            tile_width: Some(100),
            tile_height: Some(50),
            overlap_ratio: 0.0,
            full_frame: false,
            ..TilingConfig::default()
        };
        let tiles = config.grid(640, 640).tiles(200, 100);
        assert_eq!(
            rects(&tiles),
            vec![
                (0, 0, 100, 50),
                (100, 0, 100, 50),
                (0, 50, 100, 50),
                (100, 50, 100, 50)
            ]
        );
    }

    #[test]
    fn empty_frame_has_no_tiles() {
        assert!(
            TilingConfig::default()
                .grid(640, 640)
                .tiles(0, 100)
                .is_empty()
        );
        assert!(
            TilingConfig::default()
                .grid(640, 640)
                .tiles(100, 0)
                .is_empty()
        );
    }

    #[test]
    fn high_overlap_advances_at_least_one_pixel() {
        let config = TilingConfig {
            tile_width: Some(1),
            tile_height: Some(1),
            overlap_ratio: 0.95,
            full_frame: false,
            ..TilingConfig::default()
        };
        assert_eq!(config.grid(0, 0).tiles(3, 2).len(), 6);
    }

    #[test]
    fn validate_rejects_bad_values() {
        assert_eq!(TilingConfig::default().validate(), Ok(()));
        for overlap in [-0.1, 0.96, f32::NAN] {
            let c = TilingConfig {
                overlap_ratio: overlap,
                ..TilingConfig::default()
            };
            let err = c.validate().err();
            assert!(
                matches!(err, Some(TilingError::OverlapRatio(_))),
                "{overlap}"
            );
            assert_eq!(err.map(|e| e.kind()), Some("invalid_overlap_ratio"));
        }
        let c = TilingConfig {
            tile_height: Some(0),
            ..TilingConfig::default()
        };
        assert_eq!(
            c.validate(),
            Err(TilingError::ZeroTileSize {
                field: "tile_height"
            })
        );
        let c = TilingConfig {
            enabled: false,
            full_frame: false,
            ..TilingConfig::default()
        };
        assert_eq!(c.validate(), Err(TilingError::NoTiles));
    }

    #[test]
    fn grid_sanitises_unvalidated_config() {
        let c = TilingConfig {
            tile_width: Some(0),
            overlap_ratio: f32::NAN,
            ..TilingConfig::default()
        };
        let g = c.grid(0, 0);
        assert_eq!((g.tile_width, g.tile_height, g.overlap_ratio), (1, 1, 0.0));
    }

    #[test]
    fn config_serde_defaults_and_unknown_fields() {
        let c: TilingConfig =
            serde_json::from_str(r#"{"overlap_ratio": 0.5}"#).expect("valid config");
        assert_eq!(c.overlap_ratio, 0.5);
        assert!(c.enabled && c.full_frame && c.tile_width.is_none());
        assert!(serde_json::from_str::<TilingConfig>(r#"{"overlap": 0.5}"#).is_err());
    }

    proptest! {
        #[test]
        fn tiles_cover_the_frame_and_lie_inside(
            fw in 1u32..300,
            fh in 1u32..300,
            tw in 1u32..200,
            th in 1u32..200,
            overlap in 0.0f32..=0.95,
            full_frame: bool,
        ) {
            let config = TilingConfig {
                tile_width: Some(tw),
                tile_height: Some(th),
                overlap_ratio: overlap,
                full_frame,
                ..TilingConfig::default()
            };
            prop_assert!(config.validate().is_ok());
            let tiles = config.grid(640, 640).tiles(fw, fh);
            prop_assert!(!tiles.is_empty());
            let mut covered = vec![false; (fw * fh) as usize];
            let mut seen = std::collections::HashSet::new();
            for (i, t) in tiles.iter().enumerate() {
                prop_assert_eq!(t.index, i);
                prop_assert!(t.rect.fits_in(fw, fh), "{:?} outside {}x{}", t.rect, fw, fh);
                prop_assert!(seen.insert(t.rect), "duplicate {:?}", t.rect);
                if t.full_frame {
                    prop_assert_eq!(i, tiles.len() - 1);
                    prop_assert_eq!(t.rect, PixelRect::new(0, 0, fw, fh));
                } else {
                    // Every grid tile is full size (clipped only where the frame is smaller).
                    prop_assert_eq!(t.rect.width, tw.min(fw));
                    prop_assert_eq!(t.rect.height, th.min(fh));
                    for y in t.rect.y..t.rect.y + t.rect.height {
                        for x in t.rect.x..t.rect.x + t.rect.width {
                            covered[(y * fw + x) as usize] = true;
                        }
                    }
                }
            }
            prop_assert!(covered.iter().all(|&c| c), "uncovered pixel");
            let has_full = tiles.iter().any(|t| t.full_frame);
            let grid_is_frame = tiles.len() == 1 && tiles[0].rect == PixelRect::new(0, 0, fw, fh);
            prop_assert_eq!(has_full, full_frame && !grid_is_frame);
        }
    }
}
