//! Registered names of the actors of one pipeline instance.
//!
//! Actors reach each other through ractor's registry by name rather than by a reference
//! captured at start: a restarted actor registers under the same name, so its peers find
//! the new incarnation without being restarted themselves. The instance prefix lets several
//! pipelines (tests, replays) share one process.

use ractor::{ActorRef, Message};

/// The names of one pipeline instance's actors.
#[derive(Debug, Clone)]
pub struct ActorNames {
    prefix: String,
}

impl ActorNames {
    pub fn new(instance: &str) -> Self {
        Self {
            prefix: format!("tessera/{instance}"),
        }
    }

    pub fn supervisor(&self) -> String {
        format!("{}/supervisor", self.prefix)
    }
    pub fn ingest(&self) -> String {
        format!("{}/ingest", self.prefix)
    }
    pub fn prepare(&self) -> String {
        format!("{}/prepare", self.prefix)
    }
    pub fn recognize(&self) -> String {
        format!("{}/recognize", self.prefix)
    }
    pub fn merge(&self) -> String {
        format!("{}/merge", self.prefix)
    }
    pub fn publish(&self) -> String {
        format!("{}/publish", self.prefix)
    }
}

/// Looks up a live actor by name.
pub fn lookup<M: Message>(name: &str) -> Option<ActorRef<M>> {
    ActorRef::<M>::where_is(name)
}

/// Looks up an actor, waiting briefly while it is being restarted. Returns None if it does
/// not come back within `patience`.
pub async fn lookup_patiently<M: Message>(
    name: &str,
    patience: std::time::Duration,
) -> Option<ActorRef<M>> {
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        if let Some(actor) = lookup(name) {
            return Some(actor);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// [`lookup_patiently`] for a plain thread (the recognize sessions' threads), which cannot
/// await.
pub fn lookup_patiently_blocking<M: Message>(
    name: &str,
    patience: std::time::Duration,
) -> Option<ActorRef<M>> {
    let deadline = std::time::Instant::now() + patience;
    loop {
        if let Some(actor) = lookup(name) {
            return Some(actor);
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
