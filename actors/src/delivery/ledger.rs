//! The ledger of frames in flight: the single source of truth for at-least-once delivery.
//!
//! Every consumed frame stays here (with its payload, so it can be dispatched again if a
//! stage dies) until Kafka has acknowledged its result or dead letter; each partition's
//! committable offset is the contiguous watermark below which everything is acknowledged.
//! Frames settle through their [`AckHandle`]: a delivery queues the partition's new
//! committable offset, a retry queues the frame; the source takes both with
//! [`Ledger::take_work`] when [`Ledger::wait_for_work`] wakes it. The ledger outlives every
//! stage, so nothing in it is lost when one restarts.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::watermark::OffsetWatermark;
use crate::protocol::{
    AckHandle, Acknowledge, Frame, FrameKey, PartitionId, PartitionProgress, Settlement, StreamId,
};

/// One consumed frame awaiting acknowledgement.
#[derive(Debug)]
struct Entry {
    frame: Frame,
    /// When the frame was last dispatched.
    dispatched_at: Instant,
    /// Whether a retry of it is queued (so it is queued once).
    retry_queued: bool,
}

impl Entry {
    /// The frame for another attempt.
    fn redispatch(&mut self, now: Instant) -> Frame {
        self.dispatched_at = now;
        self.retry_queued = false;
        self.frame.attempt += 1;
        self.frame.clone()
    }
}

/// The in-flight state of one assigned partition.
#[derive(Debug)]
struct PartitionState {
    /// Identifies this assignment of the partition; frames of an earlier one are stale.
    generation: u64,
    /// Sequence number of the next consumed frame (contiguous within the generation).
    next_seq: u64,
    watermark: OffsetWatermark,
    /// Frames in flight by offset.
    frames: BTreeMap<i64, Entry>,
}

impl PartitionState {
    fn new(generation: u64) -> Self {
        Self {
            generation,
            next_seq: 0,
            watermark: OffsetWatermark::default(),
            frames: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Default)]
struct State {
    partitions: HashMap<PartitionId, PartitionState>,
    /// Source of generations; never reused within a process.
    last_generation: u64,
    /// Committable offsets not yet taken by the source, one per partition (the newest).
    to_store: BTreeMap<PartitionId, i64>,
    /// Frames to dispatch again, in the order their retries were asked for.
    retries: VecDeque<FrameKey>,
    /// Set by [`Ledger::redispatch_all`]: every frame in flight goes out again.
    redispatch_all: bool,
}

/// Frames consumed and not yet acknowledged, per partition.
#[derive(Debug)]
pub struct Ledger {
    /// What every frame's ack handle settles to (one for all frames: no allocation per frame).
    acknowledger: Arc<dyn Acknowledge>,
    state: Mutex<State>,
    /// Signalled whenever a frame is acknowledged or forgotten (for a blocking revoke).
    changed: Condvar,
    /// Wakes the source when there is work: offsets to store, frames to dispatch again.
    work: Notify,
    /// Wakes a drain waiting for the ledger to empty.
    settled: Notify,
    /// Set once shutdown has drained what it could: the stages are stopping, so a revoke
    /// (the consumer closing) must not wait for frames that can no longer finish.
    closing: AtomicBool,
}

/// Where a partition's offset may be committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committable {
    pub partition: PartitionId,
    /// The next offset to read (Kafka's committed-offset semantics).
    pub offset: i64,
}

/// What the source has to do after frames settled.
#[derive(Debug, Default)]
pub struct Work {
    /// Offsets to store.
    pub store: Vec<Committable>,
    /// Frames to dispatch again, attempt counted.
    pub redispatch: Vec<Frame>,
}

/// What a revoke leaves: the offsets to commit and the frames given up.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Revoked {
    pub committable: Vec<Committable>,
    /// Frames still in flight at the deadline; the next owner reads them again.
    pub abandoned: usize,
}

impl Ledger {
    pub fn new() -> Arc<Self> {
        Arc::new_cyclic(|ledger| Self {
            acknowledger: Arc::new(LedgerRef(ledger.clone())),
            state: Mutex::default(),
            changed: Condvar::new(),
            work: Notify::new(),
            settled: Notify::new(),
            closing: AtomicBool::new(false),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means a thread panicked while holding it; the maps stay valid.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a new generation (a new stream) for each newly assigned partition.
    pub fn assign(&self, partitions: &[PartitionId]) {
        let mut state = self.lock();
        for partition in partitions {
            state.last_generation += 1;
            let generation = state.last_generation;
            state
                .partitions
                .insert(partition.clone(), PartitionState::new(generation));
        }
    }

    /// Gives a consumed record its key (generation and sequence) and an acknowledgement
    /// handle, and records it in flight. `make` builds the frame from them.
    pub fn register(
        &self,
        partition: PartitionId,
        offset: i64,
        make: impl FnOnce(FrameKey, AckHandle) -> Frame,
    ) -> Frame {
        let mut guard = self.lock();
        let state = &mut *guard;
        let last_generation = &mut state.last_generation;
        // A record only comes from an assigned partition; the fallback covers an assignment
        // that was not reported through the rebalance callback.
        let entry = state
            .partitions
            .entry(partition.clone())
            .or_insert_with(|| {
                *last_generation += 1;
                PartitionState::new(*last_generation)
            });
        let key = FrameKey {
            partition,
            generation: entry.generation,
            seq: entry.next_seq,
            offset,
        };
        entry.next_seq += 1;
        entry.watermark.consumed(offset);
        let ack = AckHandle::new(key.clone(), self.acknowledger.clone());
        let frame = make(key, ack);
        entry.frames.insert(
            offset,
            Entry {
                frame: frame.clone(),
                dispatched_at: Instant::now(),
                retry_queued: false,
            },
        );
        frame
    }

    /// Records an acknowledged frame and queues its partition's committable offset for
    /// storing. Returns that offset when the frame belongs to the current assignment and was
    /// still in flight.
    pub fn acknowledge(&self, key: &FrameKey) -> Option<Committable> {
        let mut state = self.lock();
        let partition = state.partitions.get_mut(&key.partition)?;
        if partition.generation != key.generation {
            return None;
        }
        // None: already acknowledged (a re-dispatched frame produced a second output).
        partition.frames.remove(&key.offset)?;
        partition.watermark.acknowledged(key.offset);
        let committable = partition.watermark.committable().map(|offset| Committable {
            partition: key.partition.clone(),
            offset,
        });
        // Queued under the same lock: a revoke waiting for this frame must not see it settled
        // before its offset is queued, or the offset would be stored after the revoke.
        if let Some(c) = &committable {
            state.to_store.insert(c.partition.clone(), c.offset);
        }
        drop(state);
        self.changed.notify_all();
        self.settled.notify_waiters();
        committable
    }

    /// Queues a frame still in flight for another dispatch. False if it is not in flight
    /// (acknowledged, or its partition revoked) or already queued.
    pub fn request_retry(&self, key: &FrameKey) -> bool {
        let mut state = self.lock();
        let queued = state
            .partitions
            .get_mut(&key.partition)
            .filter(|p| p.generation == key.generation)
            .and_then(|p| p.frames.get_mut(&key.offset))
            .is_some_and(|entry| !std::mem::replace(&mut entry.retry_queued, true));
        if queued {
            state.retries.push_back(key.clone());
        }
        queued
    }

    /// Asks for every frame in flight to be dispatched again (a stage restarted and may have
    /// lost the frames it held).
    pub fn redispatch_all(&self) {
        self.lock().redispatch_all = true;
        self.work.notify_one();
    }

    /// Waits until there may be work for the source (see [`Ledger::take_work`]).
    pub async fn wait_for_work(&self) {
        self.work.notified().await;
    }

    /// Takes the offsets to store and the frames to dispatch again.
    pub fn take_work(&self) -> Work {
        let mut state = self.lock();
        let store = std::mem::take(&mut state.to_store)
            .into_iter()
            .map(|(partition, offset)| Committable { partition, offset })
            .collect();
        let now = Instant::now();
        let mut redispatch = Vec::new();
        if std::mem::take(&mut state.redispatch_all) {
            state.retries.clear();
            for partition in state.partitions.values_mut() {
                redispatch.extend(partition.frames.values_mut().map(|e| e.redispatch(now)));
            }
            redispatch.sort_by_key(|f| (f.meta.key.partition.clone(), f.meta.key.seq));
        } else {
            let retries = std::mem::take(&mut state.retries);
            for key in retries {
                if let Some(entry) = state
                    .partitions
                    .get_mut(&key.partition)
                    .filter(|p| p.generation == key.generation)
                    .and_then(|p| p.frames.get_mut(&key.offset))
                {
                    redispatch.push(entry.redispatch(now));
                }
            }
        }
        Work { store, redispatch }
    }

    /// Waits (blocking) until the given partitions have no frame in flight or `deadline`
    /// passes, then forgets them: their streams are no longer live, and the ledger drops its
    /// references to their frames (returning their credits once no stage holds them).
    pub fn revoke(&self, partitions: &[PartitionId], deadline: Instant) -> Revoked {
        let mut state = self.lock();
        loop {
            if self.closing.load(Ordering::SeqCst) {
                break;
            }
            let pending: usize = partitions
                .iter()
                .filter_map(|p| state.partitions.get(p))
                .map(|p| p.frames.len())
                .sum();
            let now = Instant::now();
            if pending == 0 || now >= deadline {
                break;
            }
            let (next, _) = self
                .changed
                .wait_timeout(state, (deadline - now).min(Duration::from_millis(100)))
                .unwrap_or_else(|e| e.into_inner());
            state = next;
        }
        let mut revoked = Revoked::default();
        for partition in partitions {
            state.to_store.remove(partition);
            if let Some(removed) = state.partitions.remove(partition) {
                revoked.abandoned += removed.frames.len();
                if let Some(offset) = removed.watermark.committable() {
                    revoked.committable.push(Committable {
                        partition: partition.clone(),
                        offset,
                    });
                }
            }
        }
        state
            .retries
            .retain(|key| !partitions.contains(&key.partition));
        drop(state);
        self.changed.notify_all();
        self.settled.notify_waiters();
        revoked
    }

    /// Waits until no frame is in flight or `deadline` passes; true if none is.
    pub async fn drained(&self, deadline: tokio::time::Instant) -> bool {
        loop {
            let settled = self.settled.notified();
            let mut settled = std::pin::pin!(settled);
            // Registered before looking, so a frame settling in between is not missed.
            settled.as_mut().enable();
            if self.is_empty() {
                return true;
            }
            if tokio::time::timeout_at(deadline, settled).await.is_err() {
                return self.is_empty();
            }
        }
    }

    /// Marks the pipeline as closing: from now on revokes do not wait (see `closing`).
    pub fn close(&self) {
        self.closing.store(true, Ordering::SeqCst);
        self.changed.notify_all();
    }

    /// Frames in flight over all partitions.
    pub fn len(&self) -> usize {
        self.lock()
            .partitions
            .values()
            .map(|p| p.frames.len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Marks the frames last dispatched longer than `older_than` ago as dispatched again now
    /// and returns them.
    pub fn timed_out(&self, older_than: Duration) -> Vec<Frame> {
        let mut state = self.lock();
        let now = Instant::now();
        let mut frames = Vec::new();
        for partition in state.partitions.values_mut() {
            for entry in partition.frames.values_mut() {
                if now.duration_since(entry.dispatched_at) >= older_than {
                    frames.push(entry.redispatch(now));
                }
            }
        }
        frames.sort_by_key(|f| (f.meta.key.partition.clone(), f.meta.key.seq));
        frames
    }

    /// Whether `stream` is the current assignment of its partition. Stages drop the state
    /// of streams that are not (their partition was revoked).
    pub fn is_live(&self, stream: &StreamId) -> bool {
        self.lock()
            .partitions
            .get(&stream.partition)
            .is_some_and(|p| p.generation == stream.generation)
    }

    /// Whether the frame is still in flight (not acknowledged, its partition not revoked).
    pub fn in_flight(&self, key: &FrameKey) -> bool {
        self.lock()
            .partitions
            .get(&key.partition)
            .filter(|p| p.generation == key.generation)
            .is_some_and(|p| p.frames.contains_key(&key.offset))
    }

    /// The lowest sequence number of `stream` still in flight (every frame below it is
    /// acknowledged), or the next one to be consumed if none is; `None` if the stream is not
    /// live. A sequencer that starts afresh resumes its ordering there.
    pub fn lowest_in_flight(&self, stream: &StreamId) -> Option<u64> {
        let state = self.lock();
        let partition = state
            .partitions
            .get(&stream.partition)
            .filter(|p| p.generation == stream.generation)?;
        Some(
            partition
                .frames
                .values()
                .map(|e| e.frame.meta.key.seq)
                .min()
                .unwrap_or(partition.next_seq),
        )
    }

    /// Where each assigned partition stands, for the status endpoint.
    pub fn snapshot(&self) -> Vec<PartitionProgress> {
        let state = self.lock();
        let mut progress: Vec<PartitionProgress> = state
            .partitions
            .iter()
            .map(|(id, p)| PartitionProgress {
                partition: id.clone(),
                generation: p.generation,
                in_flight: p.frames.len(),
                oldest_in_flight: p.frames.keys().next().copied(),
                committable: p.watermark.committable(),
            })
            .collect();
        progress.sort_by(|a, b| a.partition.cmp(&b.partition));
        progress
    }

    fn settle(&self, key: &FrameKey, settlement: Settlement) {
        match settlement {
            Settlement::Delivered => {
                if self.acknowledge(key).is_some() {
                    self.work.notify_one();
                }
            }
            Settlement::Retry => {
                if self.request_retry(key) {
                    self.work.notify_one();
                }
            }
        }
    }
}

/// What an [`AckHandle`] settles to: the ledger, weakly (frames in the ledger hold handles;
/// a strong reference would keep a stopped pipeline's ledger alive through them).
#[derive(Debug)]
struct LedgerRef(Weak<Ledger>);

impl Acknowledge for LedgerRef {
    fn settle(&self, key: &FrameKey, settlement: Settlement) {
        if let Some(ledger) = self.0.upgrade() {
            ledger.settle(key, settlement);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;
    use tokio::sync::Semaphore;

    use super::*;
    use crate::protocol::FrameMeta;

    fn partition(n: i32) -> PartitionId {
        PartitionId {
            topic: Arc::from("frames"),
            partition: n,
        }
    }

    fn frame(key: FrameKey, ack: AckHandle) -> Frame {
        frame_with_credit(key, ack, None)
    }

    fn frame_with_credit(
        key: FrameKey,
        ack: AckHandle,
        credit: Option<tokio::sync::OwnedSemaphorePermit>,
    ) -> Frame {
        let mut meta = FrameMeta::detached(key, Some(b"cam".to_vec()));
        meta.ack = ack;
        meta._credit = credit;
        Frame {
            meta: Arc::new(meta),
            payload: Arc::from(&b"jpeg"[..]),
            attempt: 0,
        }
    }

    #[test]
    fn sequences_are_contiguous_per_partition_and_generation() {
        let ledger = Ledger::new();
        ledger.assign(&[partition(0), partition(1)]);
        let a = ledger.register(partition(0), 10, frame);
        let b = ledger.register(partition(1), 5, frame);
        let c = ledger.register(partition(0), 11, frame);
        assert_eq!((a.meta.key.seq, b.meta.key.seq, c.meta.key.seq), (0, 0, 1));
        assert_ne!(a.meta.key.generation, b.meta.key.generation);
        // A new assignment of the same partition starts a new generation at seq 0.
        ledger.assign(&[partition(0)]);
        let d = ledger.register(partition(0), 12, frame);
        assert_eq!(d.meta.key.seq, 0);
        assert_ne!(d.meta.key.generation, a.meta.key.generation);
        assert!(!ledger.is_live(&a.meta.key.stream()));
        assert!(ledger.is_live(&d.meta.key.stream()));
        // Acknowledgements of the old generation are ignored.
        assert_eq!(ledger.acknowledge(&a.meta.key), None);
    }

    #[test]
    fn deliveries_through_the_handle_queue_the_newest_committable_offset() {
        let ledger = Ledger::new();
        ledger.assign(&[partition(0)]);
        let frames: Vec<Frame> = (0..3)
            .map(|o| ledger.register(partition(0), o, frame))
            .collect();
        frames[1].meta.ack.delivered();
        frames[1].meta.ack.delivered();
        frames[0].meta.ack.delivered();
        let work = ledger.take_work();
        assert_eq!(
            work.store,
            vec![Committable {
                partition: partition(0),
                offset: 2
            }]
        );
        assert!(work.redispatch.is_empty());
        assert_eq!(ledger.len(), 1);
        assert!(!ledger.in_flight(&frames[0].meta.key));
        assert!(ledger.in_flight(&frames[2].meta.key));
        assert_eq!(
            ledger.lowest_in_flight(&frames[2].meta.key.stream()),
            Some(2)
        );
    }

    #[test]
    fn retries_are_queued_once_and_count_attempts() {
        let ledger = Ledger::new();
        let f = ledger.register(partition(0), 0, frame);
        f.meta.ack.retry();
        f.meta.ack.retry();
        let work = ledger.take_work();
        assert_eq!(work.redispatch.len(), 1);
        assert_eq!(work.redispatch[0].attempt, 1);
        ledger.redispatch_all();
        assert_eq!(ledger.take_work().redispatch[0].attempt, 2);
        assert!(ledger.timed_out(Duration::from_secs(3600)).is_empty());
        // A delivered frame is not retried.
        f.meta.ack.delivered();
        f.meta.ack.retry();
        assert!(ledger.take_work().redispatch.is_empty());
    }

    #[test]
    fn revoke_waits_for_in_flight_frames_then_reports_the_watermark() {
        let ledger = Ledger::new();
        ledger.assign(&[partition(0)]);
        let f0 = ledger.register(partition(0), 7, frame);
        let f1 = ledger.register(partition(0), 8, frame);
        let acker = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            f0.meta.ack.delivered();
            f1.meta.ack.delivered();
        });
        let revoked = ledger.revoke(&[partition(0)], Instant::now() + Duration::from_secs(10));
        let _ = acker.join();
        assert_eq!(revoked.abandoned, 0);
        assert_eq!(revoked.committable.first().map(|c| c.offset), Some(9));
        assert!(ledger.is_empty());
        assert!(
            ledger.take_work().store.is_empty(),
            "a revoked partition stores nothing"
        );
    }

    #[test]
    fn revoke_does_not_wait_once_closing() {
        let ledger = Ledger::new();
        ledger.register(partition(0), 3, frame);
        ledger.close();
        let revoked = ledger.revoke(&[partition(0)], Instant::now() + Duration::from_secs(3600));
        assert_eq!(revoked.abandoned, 1);
    }

    #[test]
    fn revoke_gives_up_at_the_deadline() {
        let ledger = Ledger::new();
        ledger.register(partition(0), 3, frame);
        let revoked = ledger.revoke(&[partition(0)], Instant::now());
        assert_eq!((revoked.committable.len(), revoked.abandoned), (0, 1));
    }

    proptest! {
        /// Whatever the order of acknowledgements, the committable offset is the lowest
        /// offset still in flight (or one past the highest when none is), so it never passes
        /// an unacknowledged frame, and it never moves back.
        #[test]
        fn the_watermark_is_contiguous(
            gaps in prop::collection::vec(1i64..4, 1..40),
            order in prop::collection::vec(any::<prop::sample::Index>(), 0..40),
        ) {
            let ledger = Ledger::new();
            ledger.assign(&[partition(0)]);
            let offsets: Vec<i64> = gaps.iter().scan(0, |o, g| { *o += g; Some(*o) }).collect();
            let frames: Vec<Frame> = offsets
                .iter()
                .map(|&o| ledger.register(partition(0), o, frame))
                .collect();
            let mut pending: BTreeSet<i64> = offsets.iter().copied().collect();
            let mut last = None;
            for index in order {
                let f = &frames[index.index(frames.len())];
                f.meta.ack.delivered();
                pending.remove(&f.meta.key.offset);
                let stored = ledger.take_work().store.first().map(|c| c.offset);
                let committable = ledger.snapshot()[0].committable;
                let expected = pending.first().copied().unwrap_or(offsets[offsets.len() - 1] + 1);
                prop_assert_eq!(committable, Some(expected));
                if let Some(stored) = stored {
                    prop_assert_eq!(stored, expected);
                }
                prop_assert!(last.is_none_or(|l| l <= expected));
                last = Some(expected);
            }
        }

        /// A revoke drops the stream: the ledger lets go of every frame of the generation (so
        /// their credits come back once no stage holds them), later settlements of it are
        /// ignored, and the next assignment starts a new stream at 0.
        #[test]
        fn revoke_drops_a_generation_and_releases_its_credits(
            count in 1usize..20,
            delivered in prop::collection::vec(any::<bool>(), 20),
        ) {
            let credits = Arc::new(Semaphore::new(count));
            let ledger = Ledger::new();
            ledger.assign(&[partition(0)]);
            let mut keys = Vec::new();
            for (offset, delivered) in delivered.iter().take(count).enumerate() {
                let credit = credits.clone().try_acquire_owned().expect("credit");
                let f = ledger.register(partition(0), offset as i64, |key, ack| {
                    frame_with_credit(key, ack, Some(credit))
                });
                if *delivered {
                    f.meta.ack.delivered();
                }
                keys.push((f.meta.key.clone(), f.meta.ack.clone()));
            }
            let acknowledged = delivered[..count].iter().filter(|d| **d).count();
            prop_assert_eq!(credits.available_permits(), acknowledged);
            let revoked = ledger.revoke(&[partition(0)], Instant::now());
            prop_assert_eq!(revoked.abandoned, count - acknowledged);
            prop_assert_eq!(credits.available_permits(), count);
            for (key, ack) in &keys {
                prop_assert!(!ledger.is_live(&key.stream()));
                ack.retry();
                ack.delivered();
            }
            let work = ledger.take_work();
            prop_assert!(work.redispatch.is_empty() && work.store.is_empty());
            ledger.assign(&[partition(0)]);
            let next = ledger.register(partition(0), count as i64, frame);
            prop_assert_eq!(next.meta.key.seq, 0);
            prop_assert!(next.meta.key.generation > keys[0].0.generation);
        }
    }
}
