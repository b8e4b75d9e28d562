//! Embeddings of whole images or regions, outside the frame pipeline: for joining a label
//! with the frame (or the box) it names, and for tools and tests. A region is preprocessed
//! exactly like a tile of the pipeline, so a frame's embedding here equals the pipeline's
//! full-frame tile.

use image::RgbImage;
use tessera_operators::{PixelRect, Preprocessor};

use crate::error::ModelError;
use crate::session::{BatchDim, ModelSession};

/// A session of a model with an embedding output, and its preprocessing.
#[derive(Debug)]
pub struct Embedder {
    session: ModelSession,
    preprocessor: Preprocessor,
    /// Batch input, reused.
    buffer: Vec<f32>,
}

/// Most regions per model run with a dynamic batch.
const MAX_BATCH: usize = 16;

impl Embedder {
    /// Fails if the session's model names no embedding output.
    pub fn new(session: ModelSession) -> Result<Self, ModelError> {
        if session.model().manifest.output.embedding.is_none() {
            return Err(ModelError::InvalidHead {
                message: format!(
                    "model `{}` has no embedding output (set `output.embedding` in its manifest)",
                    session.model().manifest.name
                ),
                source: None,
            });
        }
        let preprocessor = Preprocessor::new(session.model().preprocess_spec());
        Ok(Self {
            session,
            preprocessor,
            buffer: Vec::new(),
        })
    }

    pub fn session(&self) -> &ModelSession {
        &self.session
    }

    /// The embedding of `region` of `image` (the whole image for `None`).
    pub fn embed(
        &mut self,
        image: &RgbImage,
        region: Option<PixelRect>,
    ) -> Result<Vec<f32>, ModelError> {
        let mut embeddings = self.embed_all(&[(image, region)])?;
        embeddings
            .pop()
            .ok_or_else(|| ModelError::inference("the model returned no embedding"))
    }

    /// Embeddings of many regions, in batches.
    pub fn embed_all(
        &mut self,
        regions: &[(&RgbImage, Option<PixelRect>)],
    ) -> Result<Vec<Vec<f32>>, ModelError> {
        let len = self.session.tensor_len();
        let chunk = match self.session.batch_dim() {
            BatchDim::Dynamic => MAX_BATCH,
            BatchDim::Fixed(n) => n.max(1),
        };
        let mut embeddings = Vec::with_capacity(regions.len());
        for group in regions.chunks(chunk) {
            let batch = match self.session.batch_dim() {
                BatchDim::Dynamic => group.len(),
                BatchDim::Fixed(n) => n.max(1),
            };
            self.buffer.clear();
            self.buffer.resize(batch * len, 0.0);
            for (index, ((image, region), out)) in group
                .iter()
                .zip(self.buffer.chunks_exact_mut(len))
                .enumerate()
            {
                let rect = region.unwrap_or(PixelRect {
                    x: 0,
                    y: 0,
                    width: image.width(),
                    height: image.height(),
                });
                self.preprocessor
                    .prepare_into(image, rect, out)
                    .map_err(|source| ModelError::Preprocess {
                        tile: index,
                        source,
                    })?;
            }
            let outputs = self.session.run(&self.buffer, batch)?;
            embeddings.extend(
                outputs
                    .into_iter()
                    .take(group.len())
                    .map(|output| output.embedding),
            );
        }
        Ok(embeddings)
    }
}
