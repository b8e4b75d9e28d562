//! Label requests (optional): shows every prediction of a finished frame to the sampler
//! (`tessera_operators::sampling`) and publishes the ones worth labelling to
//! `label_requests.topic`, with what a labelling tool needs to answer on the labels topic.
//!
//! It sits in the frame path before the sequencer and passes every outcome on unchanged.
//! Requests are hints: they are sent without holding the frame back (at most
//! `label_requests.max_pending` unacknowledged; beyond that, and when Kafka refuses one, they
//! are dropped and counted), and a frame processed twice may be requested twice.

use std::sync::Arc;
use std::time::Instant;

use rdkafka::producer::{FutureProducer, FutureRecord};
use tessera_operators::sampling::{Candidate, Sampler, Strategy, request_key};
use tessera_operators::scopes::GLOBAL_SCOPE;
use tokio::sync::Semaphore;

use crate::config::{KafkaConfig, LabelRequestsConfig};
use crate::learn::Learning;
use crate::observe::{LOG_INTERVAL, Monitor, Throttle};
use crate::protocol::request::{
    Answer, AnswerFrame, DetectorGuess, LabelRequest, Prediction, REQUEST_SCHEMA_VERSION,
};
use crate::protocol::result::{FrameResult, FrameStatus};
use crate::protocol::{Outcome, StageFailure, StageId, now_ms};
use crate::stage::kafka::producer_config;
use crate::stage::{ChildSpec, Edge, FrameStage, frame_stage};

static REQUEST_FAILED: Throttle = Throttle::new(LOG_INTERVAL);

/// What the label-requests stage needs.
#[derive(Debug, Clone)]
pub struct LabelRequestsSettings {
    pub kafka: KafkaConfig,
    pub requests: LabelRequestsConfig,
    /// Camera scopes (`None`: no heads here; every camera is `global`).
    pub learning: Option<Arc<Learning>>,
    pub monitor: Arc<Monitor>,
}

/// The supervisor's entry for the label-requests stage.
pub fn child(
    settings: LabelRequestsSettings,
    input: Edge<Outcome>,
    out: Edge<Outcome>,
) -> ChildSpec {
    frame_stage(
        StageId::LabelRequests,
        1,
        move || LabelRequests::start(settings.clone()),
        input,
        out,
    )
}

/// The label-requests stage.
pub struct LabelRequests {
    settings: LabelRequestsSettings,
    sampler: Sampler,
    producer: FutureProducer,
    /// Requests sent and not yet acknowledged.
    pending: Arc<Semaphore>,
    /// The sampler's clock (its rate limits need a monotonic one).
    started: Instant,
}

impl std::fmt::Debug for LabelRequests {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LabelRequests")
            .field("topic", &self.settings.requests.topic)
            .finish_non_exhaustive()
    }
}

impl LabelRequests {
    fn start(settings: LabelRequestsSettings) -> Result<Self, StageFailure> {
        let producer = producer_config(&settings.kafka)
            .create()
            .map_err(|e| StageFailure::external(StageId::LabelRequests, e.to_string()))?;
        Ok(Self {
            sampler: Sampler::new(settings.requests.sampler()),
            pending: Arc::new(Semaphore::new(settings.requests.max_pending)),
            producer,
            started: Instant::now(),
            settings,
        })
    }

    /// Samples the result's predictions and sends the requests it grants.
    fn sample(&mut self, result: &FrameResult) {
        if result.status != FrameStatus::Ok {
            return;
        }
        let scope = self
            .settings
            .learning
            .as_ref()
            .map_or(GLOBAL_SCOPE, |l| l.scope_of(&result.camera))
            .to_owned();
        let now = self.started.elapsed().as_millis() as i64;
        for (target, prediction) in predictions(result) {
            let id = request_id(result, target);
            let candidate = Candidate {
                scope: &scope,
                label: &prediction.label,
                score: prediction.score,
                key: request_key(&[id.as_bytes()]),
            };
            if let Some(strategy) = self.sampler.consider(now, &candidate) {
                let request = request(result, target, id, strategy, &scope, prediction);
                self.send(&request);
            }
        }
    }

    fn send(&self, request: &LabelRequest) {
        let metrics = &self.settings.monitor.metrics;
        let Ok(permit) = self.pending.clone().try_acquire_owned() else {
            metrics.label_requests_dropped.inc();
            return;
        };
        let value = match serde_json::to_vec(request) {
            Ok(value) => value,
            Err(error) => {
                tracing::error!(%error, "Label request not encoded");
                metrics.label_requests_dropped.inc();
                return;
            }
        };
        let record = FutureRecord::to(&self.settings.requests.topic)
            .key(&request.camera)
            .payload(&value);
        match self.producer.send_result(record) {
            Ok(delivery) => {
                let monitor = self.settings.monitor.clone();
                let strategy = request.strategy;
                tokio::spawn(async move {
                    let _permit = permit;
                    match delivery.await {
                        Ok(Ok(_)) => monitor.metrics.label_request(strategy),
                        Ok(Err((error, _))) => {
                            monitor.metrics.label_requests_dropped.inc();
                            if let Some(held_back) = REQUEST_FAILED.allow() {
                                tracing::warn!(%error, held_back, "Label request not delivered");
                            }
                        }
                        Err(_) => monitor.metrics.label_requests_dropped.inc(),
                    }
                });
            }
            Err((error, _)) => {
                metrics.label_requests_dropped.inc();
                if let Some(held_back) = REQUEST_FAILED.allow() {
                    tracing::warn!(%error, held_back, "Label request not queued");
                }
            }
        }
    }
}

impl FrameStage for LabelRequests {
    type In = Outcome;
    type Out = Outcome;

    async fn process(&mut self, input: Outcome, out: &Edge<Outcome>) -> Result<(), StageFailure> {
        if let Outcome::Result { result, .. } = &input {
            self.sample(result);
        }
        let offset = input.meta().key.offset;
        if let Err(error) = out.send(input) {
            tracing::debug!(%error, offset, "Outcome not handed on");
        }
        Ok(())
    }
}

/// What a request is about: a detection (by index) or the whole frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Box(usize),
    Frame,
}

/// Every prediction of a result the sampler is shown: each detection (the head's label and
/// score where the second stage classified it, else the detector's), and the frame's best
/// classification.
fn predictions(result: &FrameResult) -> Vec<(Target, Prediction)> {
    let mut shown: Vec<(Target, Prediction)> = result
        .detections
        .iter()
        .enumerate()
        .map(|(index, d)| {
            let detector = Some(DetectorGuess {
                label: d.label.clone(),
                score: d.score,
            });
            let prediction = match &d.head {
                Some(head) => Prediction {
                    label: head.label.clone(),
                    score: head.score,
                    source: "head".into(),
                    head_version: Some(head.version),
                    head_scope: Some(head.scope.clone()),
                    detector,
                },
                None => Prediction {
                    label: d.label.clone(),
                    score: d.score,
                    source: "detector".into(),
                    head_version: None,
                    head_scope: None,
                    detector,
                },
            };
            (Target::Box(index), prediction)
        })
        .collect();
    if let Some(best) = result.classifications.first() {
        let by_head = result.head_version.is_some();
        shown.push((
            Target::Frame,
            Prediction {
                label: best.label.clone(),
                score: best.score,
                source: if by_head { "head" } else { "model" }.into(),
                head_version: result.head_version,
                head_scope: result.head_scope.clone().filter(|_| by_head),
                detector: None,
            },
        ));
    }
    shown
}

fn request_id(result: &FrameResult, target: Target) -> String {
    let source = &result.source;
    match target {
        Target::Box(index) => format!(
            "{}/{}/{}/box/{index}",
            source.topic, source.partition, source.offset
        ),
        Target::Frame => format!(
            "{}/{}/{}/frame",
            source.topic, source.partition, source.offset
        ),
    }
}

fn request(
    result: &FrameResult,
    target: Target,
    id: String,
    strategy: Strategy,
    scope: &str,
    prediction: Prediction,
) -> LabelRequest {
    let bbox = match target {
        Target::Box(index) => result.detections.get(index).map(|d| d.bbox),
        Target::Frame => None,
    };
    let frame = AnswerFrame {
        topic: result.source.topic.clone(),
        partition: result.source.partition,
        offset: result.source.offset,
    };
    LabelRequest {
        schema: REQUEST_SCHEMA_VERSION,
        id,
        strategy,
        camera: result.camera.clone(),
        scope: scope.to_owned(),
        frame: result.source.clone(),
        frame_id: result.frame_id.clone(),
        capture_ms: result.timestamps.capture_ms,
        image: result.image,
        bbox,
        prediction,
        answer: Answer {
            frame,
            bbox,
            camera: result.camera.clone(),
        },
        requested_ms: now_ms(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::result::{
        BoxOut, ClassificationOut, DetectionOut, HeadLabel, ImageSize, Latencies, ModelRef, Source,
        Timestamps,
    };

    fn result() -> FrameResult {
        let bbox = BoxOut {
            x1: 1.0,
            y1: 2.0,
            x2: 30.0,
            y2: 40.0,
        };
        FrameResult {
            schema: 1,
            camera: "lot-1".into(),
            source: Source {
                topic: "frames".into(),
                partition: 2,
                offset: 7,
            },
            frame_id: "f".into(),
            timestamps: Timestamps {
                capture_ms: Some(1),
                kafka_ms: None,
                received_ms: 2,
                completed_ms: 3,
            },
            image: ImageSize {
                width: 64,
                height: 48,
            },
            model: ModelRef {
                name: "m".into(),
                version: "1".into(),
            },
            head_version: Some(3),
            head_scope: Some("lot".into()),
            tile_count: 1,
            gate: None,
            status: FrameStatus::Ok,
            detections: vec![
                DetectionOut {
                    label: "car".into(),
                    class_id: 2,
                    score: 0.9,
                    bbox,
                    head: Some(HeadLabel {
                        label: "van".into(),
                        class_id: 1,
                        score: 0.55,
                        version: 3,
                        scope: "lot".into(),
                        rejected: false,
                    }),
                },
                DetectionOut {
                    label: "dog".into(),
                    class_id: 16,
                    score: 0.4,
                    bbox,
                    head: None,
                },
            ],
            classifications: vec![ClassificationOut {
                label: "street".into(),
                class_id: 0,
                score: 0.7,
            }],
            latency_ms: Latencies::default(),
        }
    }

    #[test]
    fn predictions_prefer_the_head_and_keep_the_detector() {
        let shown = predictions(&result());
        assert_eq!(shown.len(), 3);
        let (target, first) = &shown[0];
        assert_eq!(*target, Target::Box(0));
        assert_eq!((first.label.as_str(), first.score), ("van", 0.55));
        assert_eq!(first.source, "head");
        assert_eq!(
            first.detector.as_ref().map(|d| d.label.as_str()),
            Some("car")
        );
        assert_eq!(shown[1].1.source, "detector");
        assert_eq!(shown[1].1.label, "dog");
        assert_eq!(shown[2].0, Target::Frame);
        assert_eq!(shown[2].1.head_version, Some(3));
    }

    #[test]
    fn a_request_carries_the_answer_to_send_back() -> Result<(), serde_json::Error> {
        let result = result();
        let (target, prediction) = predictions(&result).remove(0);
        let id = request_id(&result, target);
        assert_eq!(id, "frames/2/7/box/0");
        let request = request(&result, target, id, Strategy::Uncertain, "lot", prediction);
        let json = serde_json::to_value(&request)?;
        assert_eq!(json["strategy"], "uncertain");
        assert_eq!(json["answer"]["frame"]["offset"], 7);
        assert_eq!(json["answer"]["box"]["x2"], 30.0);
        assert_eq!(json["answer"]["camera"], "lot-1");
        // The answer plus a label is a label record the labels topic accepts.
        let mut answer = json["answer"].clone();
        answer["label"] = "van".into();
        let label = tessera_operators::labels::parse_label(&serde_json::to_vec(&answer)?, 1024);
        assert!(label.is_ok(), "{label:?}");
        Ok(())
    }
}
