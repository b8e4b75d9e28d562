//! The whole synchronous recognition path of one frame: tile, preprocess, run, decode, map back,
//! merge. Tests, benchmarks and the model-ceiling measurement use [`Recognizer`]; the actors split
//! the same steps across stages and finish with the same [`finish_frame`], so both paths give
//! identical results.

use std::collections::BTreeMap;

use image::RgbImage;
use tessera_operators::{
    Classification, Detection, InputTransform, MergeConfig, Preprocessor, TileGrid, TilingConfig,
    merge,
};

use crate::error::ModelError;
use crate::manifest::{Aggregate, Model};
use crate::session::{BatchDim, ModelSession, TileOutput};

/// Tiles per run for models with a dynamic batch: bounds the input buffer (a 640x640 tile is
/// 4.9 MB of f32) while still amortising the per-run overhead.
const MAX_DYNAMIC_BATCH: usize = 8;

/// The result of one frame.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameRecognition {
    /// Frame width in pixels.
    pub width: u32,
    /// Frame height in pixels.
    pub height: u32,
    /// Number of tiles the model ran on (including the full-frame pass).
    pub tiles: usize,
    /// Detections in frame pixels, clamped to the frame and merged across tiles.
    pub detections: Vec<Detection>,
    /// Best classes over all tiles, best first.
    pub classifications: Vec<Classification>,
}

/// Runs a model over frames, tile by tile, in the calling thread.
#[derive(Debug)]
pub struct Recognizer {
    /// The model session (owned: runs take `&mut`).
    session: ModelSession,
    /// Tile plan resolved against the model's input size.
    grid: TileGrid,
    /// Cross-tile merge.
    merge: MergeConfig,
    /// Crop, resize and normalise; keeps its buffers between frames.
    preprocessor: Preprocessor,
    /// Input tensor of one run, reused between runs.
    buffer: Vec<f32>,
}

impl Recognizer {
    /// A recognizer over `session` with the given tiling and merge settings.
    pub fn new(session: ModelSession, tiling: &TilingConfig, merge: MergeConfig) -> Self {
        let model = session.model();
        let grid = model
            .tiling(tiling)
            .grid(model.manifest.input.width, model.manifest.input.height);
        let preprocessor = Preprocessor::new(model.preprocess_spec());
        Self {
            session,
            grid,
            merge,
            preprocessor,
            buffer: Vec::new(),
        }
    }

    /// The session this recognizer runs.
    pub fn session(&self) -> &ModelSession {
        &self.session
    }

    /// Recognizes one frame.
    pub fn recognize(&mut self, frame: &RgbImage) -> Result<FrameRecognition, ModelError> {
        let (width, height) = frame.dimensions();
        let tiles = self.grid.tiles(width, height);
        let len = self.session.tensor_len();
        let chunk = match self.session.batch_dim() {
            BatchDim::Dynamic => MAX_DYNAMIC_BATCH,
            BatchDim::Fixed(n) => n.max(1),
        };
        let mut results: Vec<(InputTransform, TileOutput)> = Vec::with_capacity(tiles.len());
        for group in tiles.chunks(chunk) {
            // A fixed batch larger than the tiles left is filled with blank inputs whose outputs
            // are dropped.
            let batch = match self.session.batch_dim() {
                BatchDim::Dynamic => group.len(),
                BatchDim::Fixed(n) => n.max(1),
            };
            self.buffer.clear();
            self.buffer.resize(batch * len, 0.0);
            let mut transforms = Vec::with_capacity(group.len());
            for (tile, out) in group.iter().zip(self.buffer.chunks_exact_mut(len)) {
                let t = self
                    .preprocessor
                    .prepare_into(frame, tile.rect, out)
                    .map_err(|source| ModelError::Preprocess {
                        tile: tile.index,
                        source,
                    })?;
                transforms.push(t);
            }
            let outputs = self.session.run(&self.buffer, batch)?;
            results.extend(transforms.into_iter().zip(outputs));
        }
        let (detections, classifications) =
            finish_frame(self.session.model(), &results, width, height, &self.merge);
        Ok(FrameRecognition {
            width,
            height,
            tiles: tiles.len(),
            detections,
            classifications,
        })
    }
}

/// Combines the tile results of one frame: detections are mapped to frame pixels, clamped to
/// the frame (empty boxes dropped) and merged with `merge`; classifications combine as the
/// manifest's `aggregate` says (the best score of each class over the tiles, or the mean, a class
/// missing from a tile counting 0 there), then the manifest's `top_k`, best first (ties: lower
/// class id). Deterministic and independent of the order of `tiles`.
pub fn finish_frame(
    model: &Model,
    tiles: &[(InputTransform, TileOutput)],
    width: u32,
    height: u32,
    merge_config: &MergeConfig,
) -> (Vec<Detection>, Vec<Classification>) {
    let mut candidates = Vec::with_capacity(tiles.iter().map(|(_, o)| o.detections.len()).sum());
    for (transform, output) in tiles {
        for d in &output.detections {
            let bbox = transform.to_frame(&d.bbox).clamp_to(width, height);
            if !bbox.is_empty() {
                candidates.push(Detection { bbox, ..*d });
            }
        }
    }
    let detections = merge(&candidates, merge_config);

    let mean = model.manifest.output.aggregate() == Some(Aggregate::Mean);
    let mut combined: BTreeMap<u32, f32> = BTreeMap::new();
    for (_, output) in tiles {
        for c in &output.classifications {
            combined
                .entry(c.class_id)
                .and_modify(|s| *s = if mean { *s + c.score } else { s.max(c.score) })
                .or_insert(c.score);
        }
    }
    let tile_count = tiles.len().max(1) as f32;
    let mut classifications: Vec<Classification> = combined
        .into_iter()
        .map(|(class_id, score)| Classification {
            class_id,
            score: if mean { score / tile_count } else { score },
        })
        .collect();
    classifications.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then(a.class_id.cmp(&b.class_id))
    });
    classifications.truncate(model.manifest.thresholds.top_k);
    (detections, classifications)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use crate::SessionConfig;
    use crate::test_support::{env, tiny};
    use tessera_operators::{BBox, MatchMetric, MergeStrategy};

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn nms() -> MergeConfig {
        MergeConfig {
            strategy: MergeStrategy::Nms,
            metric: MatchMetric::Iou,
            threshold: 0.5,
            class_agnostic: false,
        }
    }

    fn det(class_id: u32, score: f32, x1: f32, y1: f32, x2: f32, y2: f32) -> Detection {
        Detection {
            class_id,
            score,
            bbox: BBox::new(x1, y1, x2, y2),
        }
    }

    #[test]
    fn tiles_are_mapped_back_and_merged() -> TestResult {
        let session = ModelSession::load(&env(), tiny("tiny_detector"), &SessionConfig::default())?;
        let tiling = TilingConfig {
            overlap_ratio: 0.0,
            ..TilingConfig::default()
        };
        let mut r = Recognizer::new(session, &tiling, nms());
        let frame = RgbImage::from_pixel(64, 32, image::Rgb([255, 255, 255]));
        let result = r.recognize(&frame)?;
        assert_eq!((result.width, result.height), (64, 32));
        // Two 32x32 tiles and the full frame (stretched 2:1 into 32x32).
        assert_eq!(result.tiles, 3);
        let mut boxes: Vec<(f32, f32, f32, f32)> = result
            .detections
            .iter()
            .map(|d| (d.bbox.x1, d.bbox.y1, d.bbox.x2, d.bbox.y2))
            .collect();
        boxes.sort_by(|a, b| a.0.total_cmp(&b.0));
        let close = |a: (f32, f32, f32, f32), b: (f32, f32, f32, f32)| {
            (a.0 - b.0).abs() < 0.01
                && (a.1 - b.1).abs() < 0.01
                && (a.2 - b.2).abs() < 0.01
                && (a.3 - b.3).abs() < 0.01
        };
        assert_eq!(boxes.len(), 3, "{boxes:?}");
        assert!(close(boxes[0], (8.0, 8.0, 16.0, 16.0)), "{boxes:?}");
        assert!(close(boxes[1], (16.0, 8.0, 32.0, 16.0)), "{boxes:?}");
        assert!(close(boxes[2], (40.0, 8.0, 48.0, 16.0)), "{boxes:?}");
        assert!(result.detections.iter().all(|d| d.class_id == 1));
        assert!(result.classifications.is_empty());
        // Same frame, same result, bit for bit.
        assert_eq!(r.recognize(&frame)?, result);
        Ok(())
    }

    #[test]
    fn classifier_tiles_combine_as_the_manifest_says() -> TestResult {
        // Left half red, right half blue: 8x8 tiles see one colour each, the full frame both.
        let frame = RgbImage::from_fn(16, 8, |x, _| {
            if x < 8 {
                image::Rgb([255, 0, 0])
            } else {
                image::Rgb([0, 0, 255])
            }
        });
        let tiling = TilingConfig {
            overlap_ratio: 0.0,
            ..TilingConfig::default()
        };
        // Softmax of the tiny classifier's logits: a one-colour tile gives its class
        // e / (2e^0 + e + e^-0.5) = 0.5099; the two-colour full frame gives red and blue
        // e^0.5 / (2e^0.5 + 1 + e^-0.5) = 0.3362 each, green 0.2039.
        let one_colour = 1f32.exp() / (2.0 + 1f32.exp() + (-0.5f32).exp());
        let mixed = 0.5f32.exp() / (2.0 * 0.5f32.exp() + 1.0 + (-0.5f32).exp());
        let green_alone = 1.0 / (2.0 + 1f32.exp() + (-0.5f32).exp());
        let cases = [
            (None, 1, mixed),
            (Some(Aggregate::FullFrame), 1, mixed),
            (Some(Aggregate::Max), 3, one_colour),
            (
                Some(Aggregate::Mean),
                3,
                (one_colour + green_alone + mixed) / 3.0,
            ),
        ];
        for (aggregate, tiles, score) in cases {
            let mut model = (*tiny("tiny_classifier")).clone();
            model.manifest.output.aggregate = aggregate;
            let session = ModelSession::load(&env(), Arc::new(model), &SessionConfig::default())?;
            let mut r = Recognizer::new(session, &tiling, nms());
            let result = r.recognize(&frame)?;
            assert_eq!(result.tiles, tiles, "{aggregate:?}");
            let ids: Vec<u32> = result.classifications.iter().map(|c| c.class_id).collect();
            // Red and blue tie (symmetric tiles); lower id first; top_k = 2.
            assert_eq!(ids, vec![0, 2], "{aggregate:?}");
            for c in &result.classifications {
                assert!(
                    (c.score - score).abs() < 1e-5,
                    "{aggregate:?}: {} vs {score}",
                    c.score
                );
            }
        }
        Ok(())
    }

    #[test]
    fn finish_frame_clamps_drops_and_is_order_independent() {
        let model = tiny("tiny_detector");
        let identity = InputTransform {
            origin_x: 0.0,
            origin_y: 0.0,
            scale_x: 1.0,
            scale_y: 1.0,
            pad_x: 0.0,
            pad_y: 0.0,
        };
        let shifted = InputTransform {
            origin_x: 50.0,
            ..identity
        };
        let a = TileOutput {
            detections: vec![
                det(1, 0.9, 10.0, 10.0, 20.0, 20.0),
                det(0, 0.5, -5.0, -5.0, 5.0, 5.0),
                det(0, 0.4, 200.0, 0.0, 210.0, 5.0),
            ],
            classifications: vec![Classification {
                class_id: 0,
                score: 0.2,
            }],
            embedding: Vec::new(),
        };
        let b = TileOutput {
            // 10.5..20.5 in the frame: the same object as a's first box.
            detections: vec![det(1, 0.8, -39.5, 10.0, -29.5, 20.0)],
            classifications: vec![
                Classification {
                    class_id: 0,
                    score: 0.6,
                },
                Classification {
                    class_id: 1,
                    score: 0.3,
                },
            ],
            embedding: Vec::new(),
        };
        let tiles = vec![(identity, a.clone()), (shifted, b.clone())];
        let (dets, cls) = finish_frame(&model, &tiles, 100, 100, &nms());
        assert_eq!(dets.len(), 2, "{dets:?}");
        assert_eq!(dets[0].score, 0.9);
        assert_eq!(dets[1].bbox, BBox::new(0.0, 0.0, 5.0, 5.0), "clamped");
        assert_eq!(
            cls,
            vec![
                Classification {
                    class_id: 0,
                    score: 0.6
                },
                Classification {
                    class_id: 1,
                    score: 0.3
                }
            ]
        );
        let reversed = vec![(shifted, b), (identity, a)];
        assert_eq!(
            finish_frame(&model, &reversed, 100, 100, &nms()),
            (dets, cls)
        );
    }
}
