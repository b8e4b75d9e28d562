//! Learning on the job, the state the stages share: the heads of the backbone and which one
//! is live, recent frames' embeddings, the trainer's state, and one fine-tune round as plain
//! code. No ractor and no rdkafka here; the stages that feed it (heads, labels, fine-tune) and
//! read it (ingest pins the live head on each frame, recognize and merge apply it) are in
//! `stages`.

pub mod cache;
pub mod registry;
pub mod round;
pub mod trainer;

pub use cache::{Cached, EmbeddingCache, EmbeddingKey, FrameAddress};
pub use registry::{Applied, HeadListing, HeadRegistry, LiveHeads};
pub use round::{
    Round, RoundOutcome, RoundReport, RoundResult, RoundSettings, run_round, run_round_on,
};
pub use trainer::TrainerState;

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use std::future::Future;
use std::pin::Pin;

use tessera_models::{Embedder, Head};
use tessera_operators::scopes::{GLOBAL_SCOPE, Scopes};

/// Everything of learning a replica holds, for the stages and the admin endpoints.
pub struct Learning {
    pub heads: Arc<HeadRegistry>,
    /// Which scope each camera belongs to (`groups` of the configuration).
    pub scopes: Scopes,
    /// Embeddings of recent single-tile frames and second-stage boxes, for joining labels.
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
    /// The scope of a camera: its group's, else `global`.
    pub fn scope_of(&self, camera: &str) -> &str {
        self.scopes.scope_of(camera)
    }

    /// The head serving a camera now: its group's live head, else the global one.
    pub fn head_for(&self, camera: &str) -> Option<Arc<Head>> {
        self.heads.serving(self.scopes.scope_of(camera))
    }

    /// Makes the weights of an earlier `version` of `scope` live again on every replica: they
    /// are published as a new version of that scope (the others are left alone). Returns it.
    pub async fn rollback(&self, scope: &str, version: u64) -> Result<u64, PublishError> {
        let head = self.heads.restore(scope, version)?;
        let new_version = head.version();
        (self.publish)(head).await?;
        Ok(new_version)
    }
}

/// A labelled example, and the scope whose head it trains.
#[derive(Debug, Clone)]
pub struct ScopedExample {
    pub scope: String,
    pub example: tessera_operators::learning::LabelledExample,
}

/// An example as the examples topic holds it (JSON, keyed by `id`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExampleRecord {
    pub id: String,
    pub label: String,
    /// The scope whose head it trains (`global`, or the camera's group).
    #[serde(default = "global_scope")]
    pub scope: String,
    /// `sha256:<hex>` of the backbone that computed the embedding.
    pub backbone: String,
    pub embedding: Vec<f32>,
}

fn global_scope() -> String {
    GLOBAL_SCOPE.to_owned()
}
