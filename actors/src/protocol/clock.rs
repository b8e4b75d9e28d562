//! The clock that judges a frame's age (`flow.clock`): the wall clock for live cameras, or the
//! stream's own recorded time for replays, so that yesterday's recording is not all "stale".

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use super::frame::now_ms;
use crate::config::ClockKind;

/// A clock shared by the stages that read it (prepare) and the one that feeds it (ingest).
#[derive(Debug, Clone)]
pub enum Clock {
    Wall,
    /// The newest capture time observed, `i64::MIN` before the first frame.
    Stream(Arc<AtomicI64>),
}

impl Clock {
    pub fn new(kind: ClockKind) -> Self {
        match kind {
            ClockKind::Wall => Clock::Wall,
            ClockKind::Stream => Clock::Stream(Arc::new(AtomicI64::new(i64::MIN))),
        }
    }

    /// Notes a consumed frame's capture time (a no-op for the wall clock).
    pub fn observe(&self, capture_ms: Option<i64>) {
        if let (Clock::Stream(newest), Some(ts)) = (self, capture_ms) {
            newest.fetch_max(ts, Ordering::Relaxed);
        }
    }

    /// Now, in milliseconds since the epoch; for the stream clock the newest capture time
    /// observed, or `None` before any.
    pub fn now_ms(&self) -> Option<i64> {
        match self {
            Clock::Wall => Some(now_ms()),
            Clock::Stream(newest) => {
                let ts = newest.load(Ordering::Relaxed);
                (ts != i64::MIN).then_some(ts)
            }
        }
    }

    /// How long ago `capture_ms` was by this clock (zero for the future or before any frame).
    pub fn age_ms(&self, capture_ms: i64) -> i64 {
        self.now_ms()
            .map_or(0, |now| now.saturating_sub(capture_ms).max(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_clock_is_the_newest_capture_time_seen() {
        let clock = Clock::new(ClockKind::Stream);
        assert_eq!(clock.now_ms(), None);
        assert_eq!(clock.age_ms(1_000), 0);
        clock.observe(Some(1_000));
        clock.observe(Some(5_000));
        clock.observe(Some(3_000));
        clock.observe(None);
        assert_eq!(clock.now_ms(), Some(5_000));
        assert_eq!(clock.age_ms(1_000), 4_000);
        assert_eq!(clock.age_ms(6_000), 0);
        // Clones share the time: ingest feeds what prepare reads.
        let reader = clock.clone();
        clock.observe(Some(9_000));
        assert_eq!(reader.now_ms(), Some(9_000));
    }

    #[test]
    fn a_day_old_recording_is_not_old_by_its_own_clock_but_is_by_the_wall() {
        let day_ago = now_ms() - 86_400_000;
        let stream = Clock::new(ClockKind::Stream);
        stream.observe(Some(day_ago));
        stream.observe(Some(day_ago + 40));
        assert_eq!(stream.age_ms(day_ago), 40);
        assert!(Clock::new(ClockKind::Wall).age_ms(day_ago) >= 86_400_000);
    }
}
