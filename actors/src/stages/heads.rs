//! Heads: reads the compacted heads topic and applies every head on it to this replica's
//! registry, where the newest version goes live; so every replica converges on the same head,
//! whichever replica trained it. At start the pipeline reads the topic up to its end before
//! consuming a frame (`catch_up`), so a replica that starts later serves the newest head from
//! its first result.
//!
//! A record is keyed by the head's scope (`global`, or a camera group) and holds the head as one safetensors
//! file (`tessera_models::Head::to_bytes`).

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use rdkafka::consumer::StreamConsumer;
use rdkafka::message::Message;
use tessera_models::Head;

use crate::config::KafkaConfig;
use crate::learn::{Applied, HeadRegistry};
use crate::observe::{LOG_INTERVAL, Monitor, Throttle};
use crate::protocol::{StageFailure, StageId};
use crate::stage::kafka::{assign_all, read_to_end, reader_config};
use crate::stage::{ChildSpec, StageTask};

/// How often a missing heads topic is looked for again.
const TOPIC_RETRY: Duration = Duration::from_secs(5);

static BAD_HEAD: Throttle = Throttle::new(LOG_INTERVAL);

#[derive(Debug, Clone)]
pub struct HeadsSettings {
    pub kafka: KafkaConfig,
    /// The compacted heads topic (`heads.topic`).
    pub topic: String,
    pub registry: Arc<HeadRegistry>,
    pub monitor: Arc<Monitor>,
}

/// The supervisor's entry for the heads reader.
pub fn child(settings: HeadsSettings) -> ChildSpec {
    ChildSpec::actor(StageId::Heads, HeadsReader, move |_| settings.clone())
}

/// Reads the heads topic up to its end (as it is now), applying every head; returns how
/// many were read. An absent topic has no heads.
pub async fn catch_up(settings: &HeadsSettings, timeout: Duration) -> Result<usize, StageFailure> {
    let consumer = reader(settings)?;
    read_to_end(&consumer, &settings.topic, timeout, |_, value| {
        apply(&settings.registry, &settings.monitor, value)
    })
    .await
    .map_err(|e| StageFailure::external(StageId::Heads, e))
}

/// The heads reader actor: one task consuming the topic for as long as the stage runs.
#[derive(Debug, Clone, Copy)]
pub struct HeadsReader;

impl Actor for HeadsReader {
    type Msg = ();
    type State = StageTask;
    type Arguments = HeadsSettings;

    async fn pre_start(
        &self,
        _myself: ActorRef<()>,
        settings: HeadsSettings,
    ) -> Result<StageTask, ActorProcessingErr> {
        let consumer = reader(&settings)?;
        Ok(StageTask::spawn(follow(consumer, settings)))
    }
}

/// Applies every head on the topic, from its start, then each new one as it arrives.
async fn follow(consumer: StreamConsumer, settings: HeadsSettings) {
    loop {
        match assign_all(&consumer, &settings.topic).await {
            Ok(Some(_)) => break,
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(%error, "Cannot read the heads topic yet");
            }
        }
        tokio::time::sleep(TOPIC_RETRY).await;
    }
    loop {
        match consumer.recv().await {
            Ok(message) => apply(&settings.registry, &settings.monitor, message.payload()),
            Err(error) => {
                if let Some(held_back) = BAD_HEAD.allow() {
                    tracing::warn!(%error, held_back, "Heads topic read failed");
                }
                tokio::time::sleep(TOPIC_RETRY).await;
            }
        }
    }
}

fn reader(settings: &HeadsSettings) -> Result<StreamConsumer, StageFailure> {
    reader_config(&settings.kafka, "heads")
        .create()
        .map_err(|e| StageFailure::external(StageId::Heads, e.to_string()))
}

/// Applies one record's head; a record that is not a head of this backbone is skipped
/// (counted and logged: the heads topic is tessera's own, so it means a bug or a mixed-up
/// deployment).
fn apply(registry: &HeadRegistry, monitor: &Monitor, payload: Option<&[u8]>) {
    let Some(payload) = payload else {
        // A tombstone: nothing to apply (a head is never withdrawn, only superseded).
        return;
    };
    match Head::from_bytes(payload).and_then(|head| registry.apply(head)) {
        Ok(Applied::Live) => monitor.metrics.heads_applied.inc(),
        Ok(Applied::Older | Applied::Known) => {}
        Err(error) => {
            monitor.metrics.heads_refused.inc();
            if let Some(held_back) = BAD_HEAD.allow() {
                tracing::warn!(error = %error.detail(), held_back, "Head on the heads topic refused");
            }
        }
    }
}
