//! What a pool worker does when it fails while holding a frame: hand the frame back to ingest
//! for another attempt, and report the failure to the supervisor (which counts restarts).

use crate::frame::FrameKey;
use crate::ingest::IngestMsg;
use crate::names::{ActorNames, lookup};
use crate::supervisor::SupervisorMsg;

/// Reports a failed stage: the frames it held are re-dispatched, the failure counted (once)
/// towards the restart-storm limit. The caller then returns the error so its worker is
/// restarted.
pub fn stage_failed(names: &ActorNames, frames: &[FrameKey], stage: &'static str, error: &str) {
    tracing::warn!(stage, %error, frames = frames.len(), "Stage failed holding frames; re-dispatching them");
    if let Some(ingest) = lookup::<IngestMsg>(&names.ingest()) {
        for frame in frames {
            let _ = ingest.cast(IngestMsg::Redispatch(frame.clone()));
        }
    }
    if let Some(supervisor) = lookup::<SupervisorMsg>(&names.supervisor()) {
        let _ = supervisor.cast(SupervisorMsg::WorkerFailed {
            stage,
            reason: error.to_owned(),
        });
    }
}
