//! What the labels and fine-tune stages share with each other and with operators: whether
//! this replica is the group's trainer, rounds asked for on demand, and the last round's
//! report of every scope.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

use super::round::RoundReport;

/// The trainer's shared state.
#[derive(Debug, Default)]
pub struct TrainerState {
    /// True while this replica owns the labels topic (its consumer group of its own gives the
    /// one partition to one replica): that replica, and only it, trains.
    owns_labels: AtomicBool,
    /// `POST /v1/finetune`: scopes to train now (`None`: every scope with examples).
    requests: Mutex<Vec<Option<String>>>,
    requested: Notify,
    /// The last report of each scope.
    last: Mutex<BTreeMap<String, RoundReport>>,
}

impl TrainerState {
    pub fn set_owner(&self, owns: bool) {
        self.owns_labels.store(owns, Ordering::SeqCst);
    }

    pub fn is_owner(&self) -> bool {
        self.owns_labels.load(Ordering::SeqCst)
    }

    /// Asks for a round of `scope` now (`None`: of every scope with examples); kept until the
    /// fine-tune stage takes it.
    pub fn request(&self, scope: Option<String>) {
        lock(&self.requests).push(scope);
        self.requested.notify_one();
    }

    /// Waits for requests, and takes them.
    pub async fn requested(&self) -> Vec<Option<String>> {
        loop {
            let taken = std::mem::take(&mut *lock(&self.requests));
            if !taken.is_empty() {
                return taken;
            }
            self.requested.notified().await;
        }
    }

    pub fn record(&self, report: RoundReport) {
        lock(&self.last).insert(report.scope.clone(), report);
    }

    /// The most recent report, of any scope.
    pub fn last(&self) -> Option<RoundReport> {
        lock(&self.last)
            .values()
            .max_by_key(|r| r.finished_ms)
            .cloned()
    }

    /// The last report of every scope.
    pub fn reports(&self) -> BTreeMap<String, RoundReport> {
        lock(&self.last).clone()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
