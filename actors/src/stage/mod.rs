//! The stage kit: what every stage is built from, and nothing that is a stage. The shape of
//! a per-frame stage and the actor that runs it, the edges between stages, the
//! supervisor's child entries, and the Kafka client settings the source and the sink share.

pub mod child;
pub mod edge;
pub mod frame_stage;
pub mod kafka;
pub mod task;
pub mod threads;

pub use child::{ChildSpec, FailureReporter, SpawnContext, actor_name};
pub use edge::{Edge, Undelivered};
pub use frame_stage::{FrameStage, frame_stage};
pub use task::StageTask;
pub use threads::StageThreads;
