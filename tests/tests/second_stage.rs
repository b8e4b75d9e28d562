//! Step 7 end to end on the embedded broker: the second stage re-classifies YOLOX's boxes
//! with MobileNetV2's embedding and the head of the camera's scope; labels on detected boxes
//! teach it; a camera group's labels change that group's results only; the label-request
//! sampler asks for uncertain boxes within its rate limit. The frames are augmented crops of
//! the shared `dog.jpg` (a dog, a bicycle and a car), made by the test.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use tessera::embedded::CameraFrame;
use tessera_actors::learn::{Learning, RoundOutcome};
use tessera_actors::protocol::request::LabelRequest;
use tessera_actors::protocol::result::DetectionOut;
use tessera_actors::{FrameResult, GLOBAL_SCOPE, PipelineConfig, PipelineHandle};
use tessera_operators::PixelRect;
use tessera_operators::scopes::CameraGroup;
use tessera_tests::harness::{Harness, eventually};
use tessera_tests::learning::{
    LABELS, Scene, augmented, examples_reach, jpeg, results_of, round, send_labels,
};
use tessera_tests::{assets_dir, manifest};

const REQUESTS: &str = "label-requests";
/// Boxes scored at least this are classified (and labelled by the tests): the dog, the
/// bicycle and the car of `dog.jpg`, where the detector's label is the truth.
const MIN_SCORE: f32 = 0.5;

/// The whole of `dog.jpg`.
const STREET: Scene = Scene {
    label: "street",
    image: "dog.jpg",
    region: PixelRect {
        x: 0,
        y: 0,
        width: 768,
        height: 576,
    },
};

/// What a labeller answers for a box the detector labelled so: `(label, negative)`.
type Rule = fn(&str) -> Option<(&'static str, bool)>;

/// The site's classes: animals and vehicles; bicycles are not wanted (a negative label).
fn site_rule(detector: &str) -> Option<(&'static str, bool)> {
    match detector {
        "dog" | "cat" => Some(("animal", false)),
        "car" | "truck" => Some(("vehicle", false)),
        "bicycle" => Some(("bicycle", true)),
        _ => None,
    }
}

/// Another site's classes: the detector's own names, bicycles included.
fn lot_rule(detector: &str) -> Option<(&'static str, bool)> {
    match detector {
        "dog" | "cat" => Some(("lot-dog", false)),
        "car" | "truck" => Some(("lot-car", false)),
        "bicycle" => Some(("lot-bicycle", false)),
        _ => None,
    }
}

/// The class a head should give a box under `rule` (`none` for a negative label).
fn expected(rule: Rule, detector: &str) -> Option<&'static str> {
    rule(detector).map(|(label, negative)| if negative { "none" } else { label })
}

fn broker() -> anyhow::Result<Harness> {
    let harness = Harness::start(2)?;
    for topic in [LABELS, "tessera.heads", "tessera.examples", REQUESTS] {
        harness.broker.create_topic(topic, 1)?;
    }
    Ok(harness)
}

fn config(harness: &Harness, group: &str) -> PipelineConfig {
    let mut config = harness.config(group);
    config.second_stage.enabled = true;
    config.second_stage.manifest = manifest("mobilenetv2");
    config.second_stage.min_score = MIN_SCORE;
    // Rounds on demand only, so the test decides when.
    config.finetune.interval = Duration::ZERO;
    config.finetune.min_new_labels = 0;
    config.finetune.validation_percent = 25;
    config.finetune.min_examples = 8;
    config
}

async fn start(
    config: PipelineConfig,
    group: &str,
) -> anyhow::Result<(PipelineHandle, Arc<Learning>)> {
    let assets = assets_dir().ok_or_else(|| anyhow::anyhow!("assets"))?;
    let pipeline = tessera_actors::start(config, group, Some(&assets)).await?;
    let learning = pipeline
        .learning()
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("the second stage's backbone gives heads"))?;
    eventually(Duration::from_secs(60), || {
        learning.trainer.is_owner().then_some(())
    })
    .await
    .ok_or_else(|| anyhow::anyhow!("the only replica never became the trainer"))?;
    Ok((pipeline, learning))
}

/// `count` augmented street frames from `camera`, ids `<prefix>-<camera>-<i>`.
fn street(
    assets: &std::path::Path,
    camera: &str,
    count: usize,
    seed: u64,
    prefix: &str,
) -> anyhow::Result<Vec<CameraFrame>> {
    augmented(assets, STREET, count, seed)?
        .iter()
        .enumerate()
        .map(|(i, image)| {
            Ok(CameraFrame {
                camera: camera.as_bytes().to_vec(),
                frame_id: format!("{prefix}-{camera}-{i}"),
                payload: jpeg(image)?,
                content_type: None,
                capture_ms: i as i64,
            })
        })
        .collect()
}

/// Labels every classified box of the results by `rule` (a label naming the frame and the
/// box, as a labelling tool answers a label request); returns how many were sent.
async fn label_boxes<'a>(
    harness: &Harness,
    results: impl IntoIterator<Item = &'a FrameResult>,
    rule: Rule,
) -> anyhow::Result<usize> {
    let mut records = Vec::new();
    for result in results {
        for detection in result.detections.iter().filter(|d| d.score >= MIN_SCORE) {
            let Some((label, negative)) = rule(&detection.label) else {
                continue;
            };
            records.push(serde_json::to_vec(&serde_json::json!({
                "label": label,
                "negative": negative,
                "frame": {
                    "topic": result.source.topic,
                    "partition": result.source.partition,
                    "offset": result.source.offset,
                },
                "box": detection.bbox,
            }))?);
        }
    }
    send_labels(harness, &records).await
}

/// Of the classified boxes of `results` whose expected class under `rule` is known: how many
/// the head got right, and how many there were, by expected class.
fn scores(
    results: &HashMap<String, FrameResult>,
    rule: Rule,
) -> HashMap<&'static str, (usize, usize)> {
    let mut by_class: HashMap<&'static str, (usize, usize)> = HashMap::new();
    for detection in results.values().flat_map(|r| &r.detections) {
        let (Some(head), Some(truth)) = (&detection.head, expected(rule, &detection.label)) else {
            continue;
        };
        let entry = by_class.entry(truth).or_default();
        entry.1 += 1;
        let right = if truth == "none" {
            head.rejected && head.label == "none"
        } else {
            !head.rejected && head.label == truth
        };
        if right {
            entry.0 += 1;
        }
    }
    by_class
}

/// The detector's own fields of a detection.
fn detector_fields(d: &DetectionOut) -> (String, u32, u32, [u32; 4]) {
    (
        d.label.clone(),
        d.class_id,
        d.score.to_bits(),
        [d.bbox.x1, d.bbox.y1, d.bbox.x2, d.bbox.y2].map(f32::to_bits),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labelled_boxes_teach_the_second_stage_to_relabel_and_reject() -> anyhow::Result<()> {
    let Some(assets) = assets_dir() else {
        return Ok(());
    };
    let harness = broker()?;
    let (pipeline, learning) = start(config(&harness, "second-stage"), "second-stage").await?;

    let training = street(&assets, "cam-1", 20, 1, "train")?;
    let held_out = street(&assets, "cam-1", 10, 2, "held")?;
    let trained = results_of(&harness, &training).await?;
    let before = results_of(&harness, &held_out).await?;
    for result in trained.values().chain(before.values()) {
        assert_eq!(result.head_version, None, "no head yet");
        assert!(result.detections.iter().all(|d| d.head.is_none()));
    }
    let labelled = label_boxes(&harness, trained.values(), site_rule).await?;
    assert!(labelled >= 40, "only {labelled} boxes to label");
    examples_reach(&pipeline, labelled as i64).await?;
    let report = round(&learning, GLOBAL_SCOPE).await?;
    assert_eq!(report.outcome, RoundOutcome::Promoted, "{report:?}");
    assert!(report.classes.iter().any(|c| c == "none"), "{report:?}");

    // The held-out frames again (other crops than the training ones), under the head.
    let again: Vec<CameraFrame> = held_out
        .iter()
        .map(|f| CameraFrame {
            frame_id: f.frame_id.replace("held", "after"),
            ..f.clone()
        })
        .collect();
    let after = results_of(&harness, &again).await?;
    let scores = scores(&after, site_rule);
    for class in ["animal", "vehicle"] {
        let (right, total) = scores.get(class).copied().unwrap_or_default();
        assert!(
            total >= 5,
            "{class}: only {total} held-out boxes ({scores:?})"
        );
        assert!(
            right as f64 >= 0.9 * total as f64,
            "{class}: {right} of {total} held-out boxes relabelled right ({scores:?})"
        );
    }
    let (rejected, negatives) = scores.get("none").copied().unwrap_or_default();
    assert!(
        negatives >= 5,
        "only {negatives} bicycle boxes ({scores:?})"
    );
    assert!(
        rejected as f64 >= 0.9 * negatives as f64,
        "{rejected} of {negatives} bicycle boxes rejected ({scores:?})"
    );

    // The detector's fields are those of the same frames without a head, bit for bit.
    for frame in &held_out {
        let was = &before[&frame.frame_id];
        let now = &after[&frame.frame_id.replace("held", "after")];
        let fields = |r: &FrameResult| r.detections.iter().map(detector_fields).collect::<Vec<_>>();
        assert_eq!(fields(was), fields(now), "{}", frame.frame_id);
        assert_eq!(now.head_scope.as_deref(), Some(GLOBAL_SCOPE));
        assert!(now.latency_ms.second_stage > 0.0);
    }
    pipeline.shutdown(Duration::from_secs(10)).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_groups_labels_change_only_that_groups_results() -> anyhow::Result<()> {
    let Some(assets) = assets_dir() else {
        return Ok(());
    };
    let harness = broker()?;
    let mut config = config(&harness, "scopes");
    config.groups = vec![CameraGroup {
        name: "lot".into(),
        cameras: vec!["lot-*".into()],
    }];
    let (pipeline, learning) = start(config, "scopes").await?;

    // The global head, from labels on a camera outside every group.
    let dock = results_of(&harness, &street(&assets, "dock-1", 16, 3, "train")?).await?;
    let global_labels = label_boxes(&harness, dock.values(), site_rule).await?;
    examples_reach(&pipeline, global_labels as i64).await?;
    let global = round(&learning, GLOBAL_SCOPE).await?;
    assert_eq!(global.outcome, RoundOutcome::Promoted, "{global:?}");

    // The lot's head, from labels on the lot's camera: other classes for the same objects.
    let lot = results_of(&harness, &street(&assets, "lot-1", 16, 4, "train")?).await?;
    assert!(
        lot.values()
            .all(|r| r.head_scope.as_deref() == Some(GLOBAL_SCOPE)),
        "the lot uses the global head until it has its own"
    );
    let lot_labels = label_boxes(&harness, lot.values(), lot_rule).await?;
    examples_reach(&pipeline, (global_labels + lot_labels) as i64).await?;
    let lot_round = round(&learning, "lot").await?;
    assert_eq!(lot_round.outcome, RoundOutcome::Promoted, "{lot_round:?}");
    assert_eq!(
        lot_round.version,
        Some(1),
        "a scope counts its own versions"
    );
    assert_eq!(lot_round.baseline.as_deref(), Some("global/1"));
    let global_version = learning.heads.live_version(GLOBAL_SCOPE);

    // Through the results topic: the lot's camera gets the lot's classes, the dock's the
    // global ones.
    let check = async |prefix: &str, lot_version: u64| -> anyhow::Result<()> {
        let mut frames = street(&assets, "lot-1", 6, 5, prefix)?;
        frames.extend(street(&assets, "dock-1", 6, 5, prefix)?);
        let results = results_of(&harness, &frames).await?;
        for result in results.values() {
            let (scope, version, rule): (&str, u64, Rule) = if result.camera == "lot-1" {
                ("lot", lot_version, lot_rule)
            } else {
                (GLOBAL_SCOPE, global_version, site_rule)
            };
            assert_eq!(
                result.head_scope.as_deref(),
                Some(scope),
                "{}",
                result.frame_id
            );
            assert_eq!(result.head_version, Some(version), "{}", result.frame_id);
            for detection in result.detections.iter().filter_map(|d| d.head.as_ref()) {
                assert_eq!(
                    (detection.scope.as_str(), detection.version),
                    (scope, version)
                );
            }
            // Every head label is one of the scope's own classes.
            let classes: Vec<&str> = ["dog", "car", "truck", "bicycle"]
                .iter()
                .filter_map(|d| expected(rule, d))
                .collect();
            for detection in result.detections.iter().filter_map(|d| d.head.as_ref()) {
                assert!(
                    classes.contains(&detection.label.as_str()),
                    "{}: {} is not a class of {scope}",
                    result.frame_id,
                    detection.label
                );
            }
        }
        // And mostly the right one, on each camera.
        for (camera, rule) in [("lot-1", lot_rule as Rule), ("dock-1", site_rule)] {
            let of_camera: HashMap<String, FrameResult> = results
                .iter()
                .filter(|(_, r)| r.camera == camera)
                .map(|(id, r)| (id.clone(), r.clone()))
                .collect();
            let (right, total) = scores(&of_camera, rule)
                .values()
                .fold((0, 0), |(r, t), (right, total)| (r + right, t + total));
            assert!(total >= 10, "{camera}: only {total} boxes classified");
            assert!(
                right * 10 >= total * 8,
                "{camera}: {right} of {total} boxes classified right"
            );
        }
        Ok(())
    };
    check("scoped", 1).await?;

    // Rolling the lot back is a new version of the lot; the global head is left alone.
    let restored = pipeline.rollback("lot", 1).await?;
    assert_eq!(restored, 2);
    eventually(Duration::from_secs(60), || {
        (learning.heads.live_version("lot") == restored).then_some(())
    })
    .await
    .ok_or_else(|| anyhow::anyhow!("the lot's rollback never went live"))?;
    assert_eq!(learning.heads.live_version(GLOBAL_SCOPE), global_version);
    check("rolled-back", restored).await?;
    pipeline.shutdown(Duration::from_secs(10)).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn label_requests_ask_for_uncertain_boxes_within_the_rate_limit() -> anyhow::Result<()> {
    let Some(assets) = assets_dir() else {
        return Ok(());
    };
    let harness = broker()?;
    let mut config = harness.config("requests");
    config.label_requests.enabled = true;
    let sampler = &mut config.label_requests;
    sampler.uncertain.threshold = 0.5;
    sampler.uncertain.epsilon = 0.2;
    sampler.uncertain.limit.per_minute = 5;
    sampler.uncertain.limit.per_hour = 100;
    sampler.classes.enabled = false;
    sampler.rare.enabled = false;
    sampler.random.enabled = false;
    let pipeline = tessera_actors::start(config, "requests", Some(&assets)).await?;
    let results = results_of(&harness, &street(&assets, "cam-1", 16, 6, "req")?).await?;
    let uncertain = |score: f32| (score - 0.5).abs() <= 0.2;
    let candidates = results
        .values()
        .flat_map(|r| &r.detections)
        .filter(|d| uncertain(d.score))
        .count();
    assert!(
        candidates > 5,
        "only {candidates} uncertain boxes: the limit is not tested"
    );
    assert!(
        results
            .values()
            .flat_map(|r| &r.detections)
            .any(|d| !uncertain(d.score)),
        "no confident boxes"
    );

    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &harness.brokers)
        .set("group.id", "request-reader")
        .set("auto.offset.reset", "earliest")
        .create()?;
    consumer.subscribe(&[REQUESTS])?;
    let mut requests: Vec<LabelRequest> = Vec::new();
    // Read for a while after the last frame: nothing more may come.
    let quiet = Duration::from_secs(5);
    while let Ok(Ok(message)) = tokio::time::timeout(quiet, consumer.recv()).await {
        requests.push(serde_json::from_slice(
            message.payload().unwrap_or_default(),
        )?);
    }
    assert_eq!(requests.len(), 5, "the per-minute limit: {requests:#?}");
    for request in &requests {
        assert_eq!(request.strategy.as_str(), "uncertain");
        assert!(uncertain(request.prediction.score), "{request:?}");
        let result = results
            .values()
            .find(|r| r.source == request.frame)
            .ok_or_else(|| anyhow::anyhow!("request for an unknown frame: {request:?}"))?;
        assert!(
            result
                .detections
                .iter()
                .any(|d| Some(d.bbox) == request.bbox && d.score == request.prediction.score),
            "the request's box is one of the frame's: {request:?}"
        );
        assert_eq!(request.answer.camera, "cam-1");
    }
    // Counted by strategy (the counter moves when Kafka acknowledges a request).
    let text = pipeline.monitor().metrics.encode_text();
    let counted = text
        .lines()
        .find(|l| l.starts_with("tessera_label_requests_total{") && l.contains("\"uncertain\""))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok());
    assert_eq!(counted, Some(5.0));
    pipeline.shutdown(Duration::from_secs(10)).await?;
    Ok(())
}
