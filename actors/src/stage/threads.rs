//! The threads stages run outside the tokio runtime (model sessions, batching), counted so
//! that the pipeline reports itself stopped only once none of them still runs: a process
//! that exits while a thread is inside ONNX Runtime can crash in the runtime's teardown.

use std::io;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::watch;

/// Spawns stage threads and tells when all of them have ended.
#[derive(Debug, Clone)]
pub struct StageThreads {
    live: Arc<watch::Sender<usize>>,
}

impl Default for StageThreads {
    fn default() -> Self {
        Self {
            live: Arc::new(watch::Sender::new(0)),
        }
    }
}

/// Held by a running thread; ending the thread (or unwinding it) drops it.
struct Live(Arc<watch::Sender<usize>>);

impl Drop for Live {
    fn drop(&mut self) {
        self.0.send_modify(|live| *live -= 1);
    }
}

impl StageThreads {
    /// Spawns a named thread, counted until `work` returns or panics.
    pub fn spawn(
        &self,
        name: String,
        work: impl FnOnce() + Send + 'static,
    ) -> io::Result<JoinHandle<()>> {
        self.live.send_modify(|live| *live += 1);
        // If the spawn fails the closure, and with it the guard, is dropped: still counted.
        let live = Live(self.live.clone());
        std::thread::Builder::new().name(name).spawn(move || {
            let _live = live;
            work();
        })
    }

    /// Threads still running.
    pub fn live(&self) -> usize {
        *self.live.borrow()
    }

    /// Waits up to `timeout` for every thread to end; false if some still run.
    pub async fn finished(&self, timeout: Duration) -> bool {
        let mut live = self.live.subscribe();
        tokio::time::timeout(timeout, live.wait_for(|live| *live == 0))
            .await
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn finished_waits_for_every_thread_including_one_that_panics() -> io::Result<()> {
        let threads = StageThreads::default();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let waiting = threads.spawn("waiting".into(), move || {
            let _ = released.recv();
        })?;
        let panicking = threads.spawn("panicking".into(), || panic!("injected"))?;
        assert!(panicking.join().is_err());
        assert_eq!(threads.live(), 1);
        assert!(!threads.finished(Duration::from_millis(20)).await);
        release.send(()).map_err(io::Error::other)?;
        assert!(threads.finished(Duration::from_secs(10)).await);
        assert!(waiting.join().is_ok());
        assert_eq!(threads.live(), 0);
        Ok(())
    }
}
