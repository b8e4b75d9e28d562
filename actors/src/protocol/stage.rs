//! Identifiers of the pipeline's stages: actor names, restart metric labels and log fields
//! derive from them.

use std::fmt;

/// A stage of the actor tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StageId {
    Ingest,
    Prepare,
    Recognize,
    Merge,
    /// Re-classifies detected boxes with the scope's head (optional).
    SecondStage,
    /// Publishes label requests (optional).
    LabelRequests,
    Sequencer,
    Publish,
    /// Applies the heads published on the heads topic.
    Heads,
    /// Joins labels with embeddings into examples.
    Labels,
    /// Trains, validates and promotes heads.
    FineTune,
}

impl StageId {
    /// Every stage: those a frame passes, in order, then the learning stages.
    pub const ALL: [StageId; 11] = [
        StageId::Ingest,
        StageId::Prepare,
        StageId::Recognize,
        StageId::Merge,
        StageId::SecondStage,
        StageId::LabelRequests,
        StageId::Sequencer,
        StageId::Publish,
        StageId::Heads,
        StageId::Labels,
        StageId::FineTune,
    ];

    /// Stable snake_case name (actor names, metric labels).
    pub fn name(self) -> &'static str {
        match self {
            StageId::Ingest => "ingest",
            StageId::Prepare => "prepare",
            StageId::Recognize => "recognize",
            StageId::Merge => "merge",
            StageId::SecondStage => "second_stage",
            StageId::LabelRequests => "label_requests",
            StageId::Sequencer => "sequencer",
            StageId::Publish => "publish",
            StageId::Heads => "heads",
            StageId::Labels => "labels",
            StageId::FineTune => "finetune",
        }
    }
}

impl fmt::Display for StageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
