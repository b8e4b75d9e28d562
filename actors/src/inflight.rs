//! The registry of frames in flight, shared by the consume loop, the ingest actor and the
//! consumer's rebalance callbacks.
//!
//! It is the single source of truth for at-least-once delivery: every consumed frame stays
//! here (with its payload, so it can be re-dispatched if a stage dies) until Kafka has
//! acknowledged its result or dead letter; each partition's committable offset is the
//! contiguous watermark below which everything is acknowledged.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::frame::{Frame, FrameKey, PartitionId};
use crate::watermark::OffsetWatermark;

/// One consumed frame awaiting acknowledgement.
#[derive(Debug)]
struct Entry {
    frame: Frame,
    /// When the frame was last handed to the prepare pool.
    dispatched_at: Instant,
}

impl Entry {
    /// The frame for another attempt.
    fn redispatch(&mut self, now: Instant) -> Frame {
        self.dispatched_at = now;
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
}

/// Frames consumed and not yet acknowledged, per partition.
#[derive(Debug, Default)]
pub struct InFlight {
    state: Mutex<State>,
    /// Signalled whenever a frame is acknowledged or forgotten.
    changed: Condvar,
    /// Set once shutdown has drained what it could: the stages are stopping, so a revoke
    /// (the consumer closing) must not wait for frames that can no longer finish.
    closing: AtomicBool,
}

/// Where a revoked or acknowledged partition's offset may be committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committable {
    pub partition: PartitionId,
    /// The next offset to read (Kafka's committed-offset semantics).
    pub offset: i64,
}

/// One assigned partition's progress (see [`InFlight::snapshot`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionProgress {
    pub partition: PartitionId,
    pub generation: u64,
    /// Frames consumed and not yet acknowledged.
    pub in_flight: usize,
    /// Offset of the oldest frame in flight.
    pub oldest_in_flight: Option<i64>,
    /// The offset tessera may commit (everything below it is acknowledged).
    pub committable: Option<i64>,
}

impl InFlight {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means a thread panicked while holding it; the maps stay valid.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a new generation for newly assigned partitions.
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

    /// Gives a consumed record its key (generation and sequence) and records it in flight.
    /// `make` builds the frame from that key.
    pub fn register(
        &self,
        partition: PartitionId,
        offset: i64,
        make: impl FnOnce(FrameKey) -> Frame,
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
        let frame = make(key);
        entry.frames.insert(
            offset,
            Entry {
                frame: frame.clone(),
                dispatched_at: Instant::now(),
            },
        );
        frame
    }

    /// Records an acknowledged frame. Returns the partition's committable offset when the
    /// frame belongs to the current assignment.
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
        drop(state);
        self.changed.notify_all();
        committable
    }

    /// Waits (blocking) until the given partitions have no frame in flight or `deadline`
    /// passes, then forgets them. Returns their committable offsets and how many frames were
    /// abandoned (their results may still be published: duplicates for the next owner).
    pub fn revoke(
        &self,
        partitions: &[PartitionId],
        deadline: Instant,
    ) -> (Vec<Committable>, usize) {
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
        let mut committable = Vec::new();
        let mut abandoned = 0;
        for partition in partitions {
            if let Some(removed) = state.partitions.remove(partition) {
                abandoned += removed.frames.len();
                if let Some(offset) = removed.watermark.committable() {
                    committable.push(Committable {
                        partition: partition.clone(),
                        offset,
                    });
                }
            }
        }
        drop(state);
        self.changed.notify_all();
        (committable, abandoned)
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

    /// Marks frames as dispatched again now and returns them: `all` of them, or those last
    /// dispatched longer than `older_than` ago.
    pub fn for_redispatch(&self, older_than: Option<Duration>) -> Vec<Frame> {
        let mut state = self.lock();
        let now = Instant::now();
        let mut frames = Vec::new();
        for partition in state.partitions.values_mut() {
            for entry in partition.frames.values_mut() {
                if older_than.is_none_or(|age| now.duration_since(entry.dispatched_at) >= age) {
                    frames.push(entry.redispatch(now));
                }
            }
        }
        frames.sort_by_key(|f| (f.meta.key.partition.clone(), f.meta.key.seq));
        frames
    }

    /// Per stream (partition, generation): the lowest sequence number still in flight. Every
    /// frame below it is acknowledged, so the merge stage may resume its ordering there.
    pub fn lowest_unacknowledged(&self) -> Vec<((PartitionId, u64), u64)> {
        let state = self.lock();
        state
            .partitions
            .iter()
            .map(|(id, p)| {
                let lowest = p
                    .frames
                    .values()
                    .map(|e| e.frame.meta.key.seq)
                    .min()
                    .unwrap_or(p.next_seq);
                ((id.clone(), p.generation), lowest)
            })
            .collect()
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

    /// The frame under `key` for another attempt, if it is still in flight.
    pub fn redispatch(&self, key: &FrameKey) -> Option<Frame> {
        let mut state = self.lock();
        state
            .partitions
            .get_mut(&key.partition)
            .filter(|p| p.generation == key.generation)
            .and_then(|p| p.frames.get_mut(&key.offset))
            .map(|entry| entry.redispatch(Instant::now()))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::frame::FrameMeta;

    fn partition(n: i32) -> PartitionId {
        PartitionId {
            topic: Arc::from("frames"),
            partition: n,
        }
    }

    fn frame(key: FrameKey) -> Frame {
        Frame {
            meta: Arc::new(FrameMeta {
                key,
                record_key: Some(b"cam".to_vec()),
                headers: Vec::new(),
                kafka_timestamp_ms: None,
                received_ms: 0,
                received_at: Instant::now(),
                _credit: None,
            }),
            payload: Arc::from(&b"jpeg"[..]),
            attempt: 0,
        }
    }

    #[test]
    fn sequences_are_contiguous_per_partition_and_generation() {
        let inflight = InFlight::default();
        inflight.assign(&[partition(0), partition(1)]);
        let a = inflight.register(partition(0), 10, frame);
        let b = inflight.register(partition(1), 5, frame);
        let c = inflight.register(partition(0), 11, frame);
        assert_eq!((a.meta.key.seq, b.meta.key.seq, c.meta.key.seq), (0, 0, 1));
        assert_ne!(a.meta.key.generation, b.meta.key.generation);
        // A new assignment of the same partition starts a new generation at seq 0.
        inflight.assign(&[partition(0)]);
        let d = inflight.register(partition(0), 12, frame);
        assert_eq!(d.meta.key.seq, 0);
        assert_ne!(d.meta.key.generation, a.meta.key.generation);
        // Acknowledgements of the old generation are ignored.
        assert_eq!(inflight.acknowledge(&a.meta.key), None);
    }

    #[test]
    fn acknowledgements_advance_the_contiguous_watermark() {
        let inflight = InFlight::default();
        inflight.assign(&[partition(0)]);
        let frames: Vec<Frame> = (0..3)
            .map(|o| inflight.register(partition(0), o, frame))
            .collect();
        assert_eq!(
            inflight.acknowledge(&frames[1].meta.key).map(|c| c.offset),
            Some(0)
        );
        assert_eq!(
            inflight.acknowledge(&frames[1].meta.key),
            None,
            "second ack ignored"
        );
        assert_eq!(
            inflight.acknowledge(&frames[0].meta.key).map(|c| c.offset),
            Some(2)
        );
        assert_eq!(inflight.len(), 1);
        assert_eq!(inflight.lowest_unacknowledged()[0].1, 2);
    }

    #[test]
    fn redispatch_counts_attempts() {
        let inflight = InFlight::default();
        let f = inflight.register(partition(0), 0, frame);
        assert_eq!(inflight.redispatch(&f.meta.key).map(|f| f.attempt), Some(1));
        assert_eq!(inflight.for_redispatch(None)[0].attempt, 2);
        assert!(
            inflight
                .for_redispatch(Some(Duration::from_secs(3600)))
                .is_empty()
        );
    }

    #[test]
    fn revoke_waits_for_in_flight_frames_then_reports_the_watermark() {
        let inflight = Arc::new(InFlight::default());
        inflight.assign(&[partition(0)]);
        let f0 = inflight.register(partition(0), 7, frame);
        let f1 = inflight.register(partition(0), 8, frame);
        let acker = {
            let inflight = inflight.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                inflight.acknowledge(&f0.meta.key);
                inflight.acknowledge(&f1.meta.key);
            })
        };
        let (committable, abandoned) =
            inflight.revoke(&[partition(0)], Instant::now() + Duration::from_secs(10));
        let _ = acker.join();
        assert_eq!(abandoned, 0);
        assert_eq!(committable.first().map(|c| c.offset), Some(9));
        assert!(inflight.is_empty());
    }

    #[test]
    fn revoke_does_not_wait_once_closing() {
        let inflight = InFlight::default();
        inflight.register(partition(0), 3, frame);
        inflight.close();
        let started = Instant::now();
        let (_, abandoned) =
            inflight.revoke(&[partition(0)], Instant::now() + Duration::from_secs(60));
        assert_eq!(abandoned, 1);
        assert!(started.elapsed() < Duration::from_secs(30));
    }

    #[test]
    fn revoke_gives_up_at_the_deadline() {
        let inflight = InFlight::default();
        inflight.register(partition(0), 3, frame);
        let (committable, abandoned) = inflight.revoke(&[partition(0)], Instant::now());
        assert_eq!((committable.len(), abandoned), (0, 1));
    }
}
