//! Sequencer: restores each camera's input order just before publish. Frame stages that do
//! not need order sit before it; stages that need per-camera order (tracking, later) after it.
//!
//! Its state is rebuilt from the delivery ledger, never handed over: a stream it has not
//! seen (a new assignment, or after its own restart) starts at the ledger's lowest sequence
//! number in flight, and the state of a stream the ledger no longer holds (its partition
//! was revoked) is dropped with its frames, returning their credits.

use std::sync::Arc;
use std::time::Duration;

use crate::delivery::{Ledger, Sequencer};
use crate::observe::{Monitor, Queue};
use crate::protocol::{Outcome, StageFailure, StageId, StreamId};
use crate::stage::{ChildSpec, Edge, FrameStage, frame_stage};

/// How often the state of revoked streams is dropped.
const PURGE_EVERY: Duration = Duration::from_secs(1);

/// The supervisor's entry for the sequencer.
pub fn child(
    ledger: Arc<Ledger>,
    monitor: Arc<Monitor>,
    input: Edge<Outcome>,
    out: Edge<Outcome>,
) -> ChildSpec {
    frame_stage(
        StageId::Sequencer,
        1,
        move || Ok(SequencerStage::new(ledger.clone(), monitor.clone())),
        input,
        out,
    )
}

/// The sequencer stage.
#[derive(Debug)]
pub struct SequencerStage {
    ledger: Arc<Ledger>,
    order: Sequencer<StreamId, Outcome>,
    monitor: Arc<Monitor>,
}

impl SequencerStage {
    pub fn new(ledger: Arc<Ledger>, monitor: Arc<Monitor>) -> Self {
        Self {
            ledger,
            order: Sequencer::default(),
            monitor,
        }
    }

    /// Frames held back waiting for an earlier one.
    #[cfg(test)]
    pub fn waiting(&self) -> usize {
        self.order.waiting()
    }

    /// Drops the state of streams that are no longer live.
    fn purge(&mut self) -> usize {
        let ledger = &self.ledger;
        let dropped = self.order.retain(|stream| ledger.is_live(stream));
        if !dropped.is_empty() {
            tracing::debug!(
                frames = dropped.len(),
                "Dropped frames of revoked partitions"
            );
        }
        dropped.len()
    }
}

impl FrameStage for SequencerStage {
    type In = Outcome;
    type Out = Outcome;

    async fn process(&mut self, outcome: Outcome, out: &Edge<Outcome>) -> Result<(), StageFailure> {
        let key = outcome.meta().key.clone();
        let stream = key.stream();
        if !self.order.knows(&stream) {
            match self.ledger.lowest_in_flight(&stream) {
                Some(next) => self.order.open(&stream, next),
                // Revoked: the next owner of the partition publishes it.
                None => return Ok(()),
            }
        }
        let mut ready = Vec::new();
        self.order.complete(&stream, key.seq, outcome, &mut ready);
        let queue = self.monitor.metrics.queue(Queue::Publish);
        for outcome in ready {
            let offset = outcome.meta().key.offset;
            match out.send(outcome) {
                Ok(()) => queue.pushed.inc(),
                // The frame stays in flight: it is dispatched again once publish is back.
                Err(error) => tracing::debug!(%error, offset, "Outcome not handed on"),
            }
        }
        Ok(())
    }

    fn tick_every(&self) -> Option<Duration> {
        Some(PURGE_EVERY)
    }

    async fn on_tick(&mut self, _out: &Edge<Outcome>) -> Result<(), StageFailure> {
        self.purge();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use tokio::sync::Semaphore;

    use super::*;
    use crate::observe::Monitor;
    use crate::protocol::result::ModelRef;
    use crate::protocol::{Frame, FrameMeta, PartitionId};

    fn partition() -> PartitionId {
        PartitionId {
            topic: Arc::from("frames"),
            partition: 0,
        }
    }

    fn outcome(frame: &Frame) -> Outcome {
        Outcome::skipped(
            frame.meta.clone(),
            ModelRef {
                name: "m".into(),
                version: "1".into(),
            },
        )
    }

    /// Registers `count` frames, each holding one of `credits`.
    fn frames(ledger: &Arc<Ledger>, credits: &Arc<Semaphore>, count: i64) -> Vec<Frame> {
        (0..count)
            .map(|offset| {
                let credit = credits.clone().try_acquire_owned().expect("credit");
                ledger.register(partition(), offset, |key, ack| {
                    let mut meta = FrameMeta::detached(key, Some(b"cam".to_vec()));
                    meta.ack = ack;
                    meta._credit = Some(credit);
                    Frame {
                        meta: Arc::new(meta),
                        payload: Arc::from(&b""[..]),
                        attempt: 0,
                    }
                })
            })
            .collect()
    }

    fn offsets(rx: &crossbeam_channel::Receiver<Outcome>) -> Vec<i64> {
        rx.try_iter().map(|o| o.meta().key.offset).collect()
    }

    #[tokio::test]
    async fn releases_in_input_order_and_a_fresh_sequencer_resumes_from_the_ledger() {
        let ledger = Ledger::new();
        ledger.assign(&[partition()]);
        let credits = Arc::new(Semaphore::new(8));
        let frames = frames(&ledger, &credits, 4);
        let (tx, rx) = crossbeam_channel::unbounded();
        let out = Edge::new(StageId::Publish);
        out.point_to_channel(tx);
        let monitor = Monitor::new("t", "g", Duration::ZERO);
        let mut stage = SequencerStage::new(ledger.clone(), monitor.clone());
        for index in [2, 1, 0] {
            stage
                .process(outcome(&frames[index]), &out)
                .await
                .expect("process");
        }
        assert_eq!(offsets(&rx), vec![0, 1, 2]);
        for frame in &frames[..3] {
            frame.meta.ack.delivered();
        }
        // A restarted sequencer knows nothing, yet resumes at the first frame in flight.
        let mut fresh = SequencerStage::new(ledger.clone(), monitor);
        fresh
            .process(outcome(&frames[3]), &out)
            .await
            .expect("process");
        assert_eq!(offsets(&rx), vec![3]);
    }

    #[tokio::test]
    async fn a_revoke_clears_the_streams_state_and_returns_its_credits() {
        let ledger = Ledger::new();
        ledger.assign(&[partition()]);
        let credits = Arc::new(Semaphore::new(8));
        let frames = frames(&ledger, &credits, 3);
        let out = Edge::new(StageId::Publish);
        let monitor = Monitor::new("t", "g", Duration::ZERO);
        let mut stage = SequencerStage::new(ledger.clone(), monitor);
        // Frames 1 and 2 wait for frame 0, which is stuck somewhere.
        for index in [1, 2] {
            stage
                .process(outcome(&frames[index]), &out)
                .await
                .expect("process");
        }
        assert_eq!(stage.waiting(), 2);
        let stuck = frames[0].clone();
        drop(frames);
        let revoked = ledger.revoke(&[partition()], std::time::Instant::now());
        assert_eq!(revoked.abandoned, 3);
        assert_eq!(
            credits.available_permits(),
            5,
            "the sequencer still holds two"
        );
        stage.on_tick(&out).await.expect("tick");
        assert_eq!(stage.waiting(), 0);
        // A late outcome of the revoked stream is dropped, not held.
        stage.process(outcome(&stuck), &out).await.expect("process");
        assert_eq!(stage.waiting(), 0);
        drop(stuck);
        assert_eq!(credits.available_permits(), 8);
    }
}
