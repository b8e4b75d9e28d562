//! Labels: consumes the labels topic, joins each label with its embedding, writes the example
//! to the compacted examples topic and hands it to the fine-tune stage; only then is the
//! label's offset committed. A label that cannot be joined, or is not a label, goes to the
//! dead-letter topic with its own kind (and is committed too): nothing is lost silently.
//!
//! The embedding comes from the recent-frames cache when the label names a frame just
//! processed (a whole single-tile frame, or a box the second stage embedded), else from the
//! frame read back from Kafka by its offset (or the image inside the label), cropped to the
//! label's box and run through the backbone here.
//!
//! The example trains the head of the camera's scope: the label's `camera`, else the key of
//! the frame's record, decides the group; a label with neither trains the global head.
//!
//! The labels topic is consumed in a group of its own (`<kafka.group_id>.labels`); with its one
//! partition, exactly one replica owns it: that replica is the group's trainer.

use std::sync::Arc;
use std::time::Duration;

use image::RgbImage;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use tessera_operators::decode::{DecodeLimits, decode_image};
use tessera_operators::labels::{Label, LabelError, LabelSource, crop_rect, parse_label};
use tessera_operators::learning::LabelledExample;
use tessera_operators::scopes::GLOBAL_SCOPE;

use crate::config::{KafkaConfig, LabelsConfig};
use crate::learn::{ExampleRecord, Learning, ScopedExample};
use crate::observe::{LOG_INTERVAL, Monitor, Throttle};
use crate::protocol::{DeadLetterKind, StageFailure, StageId, headers};
use crate::stage::kafka::{consumer_config, producer_config, reader_config};
use crate::stage::{ChildSpec, Edge, StageTask};

static LABEL_FAILED: Throttle = Throttle::new(LOG_INTERVAL);

#[derive(Clone)]
pub struct LabelsSettings {
    pub kafka: KafkaConfig,
    pub labels: LabelsConfig,
    pub limits: DecodeLimits,
    pub learning: Arc<Learning>,
    pub monitor: Arc<Monitor>,
}

impl std::fmt::Debug for LabelsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LabelsSettings")
            .field("topic", &self.labels.topic)
            .finish_non_exhaustive()
    }
}

/// The supervisor's entry for the labels consumer; `out` leads to the fine-tune stage.
pub fn child(settings: LabelsSettings, out: Edge<ScopedExample>) -> ChildSpec {
    ChildSpec::actor(StageId::Labels, LabelsReader, move |_| {
        (settings.clone(), out.clone())
    })
}

/// The labels actor: one task consuming the topic while the stage runs.
#[derive(Debug, Clone, Copy)]
pub struct LabelsReader;

impl Actor for LabelsReader {
    type Msg = ();
    type State = StageTask;
    type Arguments = (LabelsSettings, Edge<ScopedExample>);

    async fn pre_start(
        &self,
        _myself: ActorRef<()>,
        (settings, out): (LabelsSettings, Edge<ScopedExample>),
    ) -> Result<StageTask, ActorProcessingErr> {
        let external =
            |e: rdkafka::error::KafkaError| StageFailure::external(StageId::Labels, e.to_string());
        let mut config = consumer_config(&settings.kafka);
        config
            .set("group.id", format!("{}.labels", settings.kafka.group_id))
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("partition.assignment.strategy", "range");
        let consumer: StreamConsumer = config.create().map_err(external)?;
        consumer
            .subscribe(&[settings.labels.topic.as_str()])
            .map_err(external)?;
        let producer: FutureProducer = producer_config(&settings.kafka)
            .create()
            .map_err(external)?;
        let fetcher: BaseConsumer = reader_config(&settings.kafka, "labels-fetch")
            .create()
            .map_err(external)?;
        Ok(StageTask::spawn(consume(
            consumer,
            producer,
            Arc::new(fetcher),
            settings,
            out,
        )))
    }
}

async fn consume(
    consumer: StreamConsumer,
    producer: FutureProducer,
    fetcher: Arc<BaseConsumer>,
    settings: LabelsSettings,
    out: Edge<ScopedExample>,
) {
    let trainer = &settings.learning.trainer;
    let mut ownership = tokio::time::interval(Duration::from_secs(1));
    loop {
        let message = tokio::select! {
            biased;
            _ = ownership.tick() => {
                trainer.set_owner(consumer.assignment().is_ok_and(|a| a.count() > 0));
                continue;
            }
            message = consumer.recv() => message,
        };
        let message = match message {
            Ok(message) => message,
            Err(error) => {
                if let Some(held_back) = LABEL_FAILED.allow() {
                    tracing::warn!(%error, held_back, "Labels topic read failed");
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        trainer.set_owner(true);
        let id = format!("labels/{}/{}", message.partition(), message.offset());
        let payload = message.payload().unwrap_or_default();
        let handled = match join(&settings, &fetcher, payload).await {
            Ok(Joined {
                label,
                embedding,
                via,
                camera,
            }) => {
                let camera = label.camera.as_deref().or(camera.as_deref());
                let scope = camera.map_or(GLOBAL_SCOPE, |c| settings.learning.scope_of(c));
                let example = ScopedExample {
                    scope: scope.to_owned(),
                    example: LabelledExample {
                        id: id.clone(),
                        label: label.class().to_owned(),
                        embedding,
                    },
                };
                match write_example(&producer, &settings, &example).await {
                    Ok(()) => {
                        settings.monitor.metrics.label_joined(via);
                        if out.send(example).is_err() {
                            // Fine-tune reads it back from the examples topic when it restarts.
                            tracing::debug!(%id, "Example not handed to fine-tune");
                        }
                        true
                    }
                    Err(error) => {
                        if let Some(held_back) = LABEL_FAILED.allow() {
                            tracing::warn!(%error, %id, held_back, "Example not written; the label will be read again");
                        }
                        false
                    }
                }
            }
            Err((kind, reason)) => {
                if let Some(held_back) = LABEL_FAILED.allow() {
                    tracing::warn!(kind = kind.as_str(), %reason, %id, held_back, "Label dead-lettered");
                }
                dead_letter(&producer, &settings, &message, kind, &reason).await
            }
        };
        if handled {
            if let Err(error) = consumer.commit_message(&message, CommitMode::Async) {
                tracing::warn!(%error, %id, "Label offset not committed");
            }
        } else {
            // Read it again: seek back to it (an example write or a dead letter failed).
            let _ = consumer.seek(
                message.topic(),
                message.partition(),
                Offset::Offset(message.offset()),
                Duration::from_secs(5),
            );
        }
    }
}

/// A label with its embedding.
struct Joined {
    label: Label,
    embedding: Vec<f32>,
    /// How the embedding was found (the `via` label of the metric).
    via: &'static str,
    /// The camera of the frame, when known from the cache or the frame's record.
    camera: Option<String>,
}

type Unjoinable = (DeadLetterKind, String);

/// Parses a label and finds its embedding.
async fn join(
    settings: &LabelsSettings,
    fetcher: &Arc<BaseConsumer>,
    payload: &[u8],
) -> Result<Joined, Unjoinable> {
    let label = parse_label(payload, settings.labels.max_image_bytes).map_err(|e| rejection(&e))?;
    let (bytes, via, camera) = match &label.source {
        LabelSource::Frame(frame) => {
            let address = (
                Arc::from(frame.topic.as_str()),
                frame.partition,
                frame.offset,
            );
            // A box inside its frame: the rectangle the second stage cropped (clamping to the
            // frame changes nothing for it, so the frame's size is not needed here).
            let region = match &label.region {
                None => Some(None),
                Some(region) => crop_rect(Some(region), u32::MAX, u32::MAX).ok().map(Some),
            };
            if let Some(cached) = region.and_then(|r| settings.learning.cache.get(&(address, r))) {
                return Ok(Joined {
                    label,
                    embedding: cached.embedding.to_vec(),
                    via: "cache",
                    camera: Some(cached.camera.to_string()),
                });
            }
            let fetcher = fetcher.clone();
            let (topic, partition, offset) = (frame.topic.clone(), frame.partition, frame.offset);
            let timeout = settings.labels.fetch_timeout;
            let (key, bytes) = tokio::task::spawn_blocking(move || {
                fetch_frame(&fetcher, &topic, partition, offset, timeout)
            })
            .await
            .map_err(|e| (DeadLetterKind::LabelFrameMissing, e.to_string()))??;
            let camera = key.map(|k| String::from_utf8_lossy(&k).into_owned());
            (bytes, "fetch", camera)
        }
        LabelSource::Image(bytes) => (bytes.clone(), "inline", None),
    };
    let limits = settings.limits.clone();
    let embedder = settings.learning.embedder.clone();
    let region = label.region;
    let embedding = tokio::task::spawn_blocking(move || -> Result<Vec<f32>, Unjoinable> {
        let image: RgbImage = decode_image(&bytes, &limits)
            .map_err(|e| (DeadLetterKind::LabelImageInvalid, e.to_string()))?;
        let rect =
            crop_rect(region.as_ref(), image.width(), image.height()).map_err(|e| rejection(&e))?;
        let mut embedder = embedder
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        embedder
            .embed(&image, Some(rect))
            .map_err(|e| (DeadLetterKind::ProcessingFailed, e.detail()))
    })
    .await
    .map_err(|e| (DeadLetterKind::ProcessingFailed, e.to_string()))??;
    Ok(Joined {
        label,
        embedding,
        via,
        camera,
    })
}

fn rejection(error: &LabelError) -> Unjoinable {
    let kind = match error.kind() {
        "label_box_outside" => DeadLetterKind::LabelBoxOutside,
        _ => DeadLetterKind::LabelMalformed,
    };
    (kind, error.to_string())
}

/// Reads the key and value of the record at `offset` of `topic`/`partition`: gone
/// (retention), not yet written, or of an unknown topic or partition is `label_frame_missing`.
fn fetch_frame(
    fetcher: &BaseConsumer,
    topic: &str,
    partition: i32,
    offset: i64,
    timeout: Duration,
) -> Result<(Option<Vec<u8>>, Vec<u8>), Unjoinable> {
    let missing = |reason: String| (DeadLetterKind::LabelFrameMissing, reason);
    let (low, high) = fetcher
        .fetch_watermarks(topic, partition, timeout)
        .map_err(|e| missing(format!("{topic}/{partition}: {e}")))?;
    if offset < low || offset >= high {
        return Err(missing(format!(
            "offset {offset} of {topic}/{partition} is not readable (the partition holds {low}..{high})"
        )));
    }
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(topic, partition, Offset::Offset(offset))
        .map_err(|e| missing(e.to_string()))?;
    fetcher
        .assign(&assignment)
        .map_err(|e| missing(e.to_string()))?;
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        match fetcher.poll(Duration::from_millis(200)) {
            Some(Ok(message)) if message.offset() == offset && message.topic() == topic => {
                return Ok((
                    message.key().map(<[u8]>::to_vec),
                    message.payload().unwrap_or_default().to_vec(),
                ));
            }
            Some(Ok(_)) | None => {}
            Some(Err(error)) => return Err(missing(error.to_string())),
        }
    }
    Err(missing(format!(
        "offset {offset} of {topic}/{partition} was not read within {timeout:?}"
    )))
}

async fn write_example(
    producer: &FutureProducer,
    settings: &LabelsSettings,
    scoped: &ScopedExample,
) -> Result<(), String> {
    let example = &scoped.example;
    let record = ExampleRecord {
        id: example.id.clone(),
        label: example.label.clone(),
        scope: scoped.scope.clone(),
        backbone: settings.learning.heads.backbone().to_owned(),
        embedding: example.embedding.clone(),
    };
    let value = serde_json::to_vec(&record).map_err(|e| e.to_string())?;
    producer
        .send(
            FutureRecord::to(&settings.labels.examples_topic)
                .key(&example.id)
                .payload(&value),
            settings.kafka.message_timeout,
        )
        .await
        .map(|_| ())
        .map_err(|(error, _)| error.to_string())
}

/// Sends the label record to the dead-letter topic with the error headers; true once Kafka
/// acknowledged it.
async fn dead_letter(
    producer: &FutureProducer,
    settings: &LabelsSettings,
    message: &impl Message,
    kind: DeadLetterKind,
    reason: &str,
) -> bool {
    let source = format!(
        "{}/{}/{}",
        message.topic(),
        message.partition(),
        message.offset()
    );
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: headers::ERROR_KIND,
            value: Some(kind.as_str()),
        })
        .insert(Header {
            key: headers::ERROR,
            value: Some(reason),
        })
        .insert(Header {
            key: headers::ERROR_DOMAIN,
            value: Some(kind.domain().as_str()),
        })
        .insert(Header {
            key: headers::SOURCE,
            value: Some(source.as_str()),
        });
    let mut record = FutureRecord::to(&settings.kafka.dlq_topic)
        .payload(message.payload().unwrap_or_default())
        .headers(headers);
    if let Some(key) = message.key() {
        record = record.key(key);
    }
    match producer.send(record, settings.kafka.message_timeout).await {
        Ok(_) => {
            settings.monitor.metrics.dead_lettered(kind);
            true
        }
        Err((error, _)) => {
            tracing::warn!(%error, %source, "Label dead letter not written; the label will be read again");
            false
        }
    }
}
