//! Learning on the job, the state the stages share: the heads of the backbone and which one
//! is live, recent frames' embeddings, the trainer's state, and one fine-tune round as plain
//! code. No ractor and no rdkafka here; the stages that feed it (heads, labels, fine-tune) and
//! read it (ingest pins the live head on each frame, recognize and merge apply it) are in
//! `stages`.

pub mod cache;
pub mod registry;
pub mod round;
pub mod trainer;

pub use cache::{EmbeddingCache, FrameAddress};
pub use registry::{Applied, HeadListing, HeadRegistry};
pub use round::{
    Round, RoundOutcome, RoundReport, RoundResult, RoundSettings, run_round, run_round_on,
};
pub use trainer::TrainerState;

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use std::future::Future;
use std::pin::Pin;

use tessera_models::{Embedder, Head};

/// Everything of learning a replica holds, for the stages and the admin endpoints.
pub struct Learning {
    pub heads: Arc<HeadRegistry>,
    /// Whole-frame embeddings of recent single-tile frames, for joining labels.
    pub cache: EmbeddingCache,
    pub trainer: TrainerState,
    /// The backbone, for labels whose embedding is not cached (one session, used by the
    /// labels stage on blocking threads).
    pub embedder: Arc<Mutex<Embedder>>,
    /// Publishes a head to the heads topic (every replica then applies it).
    pub publish: PublishHead,
}

/// Why a head could not be published.
pub type PublishError = Box<dyn std::error::Error + Send + Sync>;

/// Publishes a head to the heads topic.
pub type PublishHead = Arc<
    dyn Fn(Head) -> Pin<Box<dyn Future<Output = Result<(), PublishError>> + Send>> + Send + Sync,
>;

impl std::fmt::Debug for Learning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Learning")
            .field("heads", &self.heads)
            .field("cache", &self.cache.len())
            .field("trainer", &self.trainer)
            .finish_non_exhaustive()
    }
}

impl Learning {
    /// Makes the weights of an earlier `version` live again on every replica: they are
    /// published as a new version. Returns it.
    pub async fn rollback(&self, version: u64) -> Result<u64, PublishError> {
        let head = self.heads.restore(version)?;
        let new_version = head.version();
        (self.publish)(head).await?;
        Ok(new_version)
    }
}

/// An example as the examples topic holds it (JSON, keyed by `id`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExampleRecord {
    pub id: String,
    pub label: String,
    /// `sha256:<hex>` of the backbone that computed the embedding.
    pub backbone: String,
    pub embedding: Vec<f32>,
}
