//! What the labels and fine-tune stages share with each other and with operators: whether
//! this replica is the group's trainer, the on-demand trigger, and the last round's report.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

use tokio::sync::Notify;

use super::round::RoundReport;

/// The trainer's shared state.
#[derive(Debug, Default)]
pub struct TrainerState {
    /// True while this replica owns the labels topic (its consumer group of its own gives the
    /// one partition to one replica): that replica, and only it, trains.
    owns_labels: AtomicBool,
    /// `POST /v1/finetune`: train now.
    requested: Notify,
    last: Mutex<Option<RoundReport>>,
}

impl TrainerState {
    pub fn set_owner(&self, owns: bool) {
        self.owns_labels.store(owns, Ordering::SeqCst);
    }

    pub fn is_owner(&self) -> bool {
        self.owns_labels.load(Ordering::SeqCst)
    }

    /// Asks for a round now (kept until the fine-tune stage takes it).
    pub fn request(&self) {
        self.requested.notify_one();
    }

    /// Waits for a request.
    pub async fn requested(&self) {
        self.requested.notified().await;
    }

    pub fn record(&self, report: RoundReport) {
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = Some(report);
    }

    pub fn last(&self) -> Option<RoundReport> {
        self.last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}
