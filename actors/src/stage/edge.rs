//! Edges between stages: a handle to a stage's input that the supervisor owns and re-points
//! when the stage restarts (mini-redis's channels, Vector's fanout). Senders never look a
//! peer up by name, and never wait for one.

use std::fmt;
use std::sync::{Arc, RwLock};

use ractor::{ActorRef, Message};

use crate::protocol::StageId;

type Sink<T> = Arc<dyn Fn(T) -> bool + Send + Sync>;

/// The input of stage `to`. Cloning shares the edge: every clone sees the re-pointing.
pub struct Edge<T> {
    to: StageId,
    target: Arc<RwLock<Option<Sink<T>>>>,
}

impl<T> Clone for Edge<T> {
    fn clone(&self) -> Self {
        Self {
            to: self.to,
            target: self.target.clone(),
        }
    }
}

impl<T> fmt::Debug for Edge<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Edge").field("to", &self.to).finish()
    }
}

/// The destination stage was not running (stopped, or being restarted). The frame stays in
/// the delivery ledger: the supervisor dispatches every frame in flight again once the
/// stage is back, so nothing is lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("stage {0} is not running")]
pub struct Undelivered(pub StageId);

impl<T: Send + 'static> Edge<T> {
    /// An edge to `to`, pointing nowhere until the stage starts.
    pub fn new(to: StageId) -> Self {
        Self {
            to,
            target: Arc::new(RwLock::new(None)),
        }
    }

    /// Points the edge at `sink` (false from the sink: the item could not be taken).
    pub fn point_to(&self, sink: impl Fn(T) -> bool + Send + Sync + 'static) {
        *self.target.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(sink));
    }

    /// Points the edge at an actor, each item wrapped into its message type.
    pub fn point_to_actor<M: Message>(&self, actor: ActorRef<M>, wrap: fn(T) -> M) {
        self.point_to(move |item| actor.cast(wrap(item)).is_ok());
    }

    /// Points the edge at a channel (a queue that outlives the stage's restarts).
    pub fn point_to_channel(&self, sender: crossbeam_channel::Sender<T>) {
        self.point_to(move |item| sender.send(item).is_ok());
    }

    /// Hands `item` to the stage.
    pub fn send(&self, item: T) -> Result<(), Undelivered> {
        let sink = self
            .target
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        match sink {
            Some(sink) if sink(item) => Ok(()),
            _ => Err(Undelivered(self.to)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[test]
    fn a_re_pointed_edge_reaches_the_new_target_through_every_clone() {
        let edge: Edge<u32> = Edge::new(StageId::Merge);
        let sender = edge.clone();
        assert_eq!(sender.send(1), Err(Undelivered(StageId::Merge)));
        let first = Arc::new(Mutex::new(Vec::new()));
        let seen = first.clone();
        edge.point_to(move |n| {
            seen.lock().expect("lock").push(n);
            true
        });
        assert_eq!(sender.send(2), Ok(()));
        let (tx, rx) = crossbeam_channel::unbounded();
        edge.point_to_channel(tx);
        assert_eq!(sender.send(3), Ok(()));
        assert_eq!(*first.lock().expect("lock"), vec![2]);
        assert_eq!(rx.try_recv(), Ok(3));
        drop(rx);
        assert!(sender.send(4).is_err(), "a closed channel takes nothing");
    }
}
