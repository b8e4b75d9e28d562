//! `tessera demo --learn`: learning on the job, end to end, on an embedded broker.
//!
//! YOLOX-Nano detects; the second stage crops every box and classifies it with MobileNetV2's
//! embedding and the live head. The label-request sampler asks for labels; a labeller inside
//! the demo answers each request by a stated rule; the trainer fine-tunes a head on the
//! answers, validates it and promotes it; the same images are then sent again, and annotated
//! frames from before and after the promotion are written side by side.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use image::RgbImage;
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tessera_actors::protocol::request::LabelRequest;
use tessera_actors::{FrameResult, GLOBAL_SCOPE, Monitor, PipelineConfig};
use tessera_operators::annotate::draw_detections;
use tessera_operators::decode::{DecodeLimits, decode_image};
use tessera_operators::detection::Detection;
use tessera_operators::geometry::BBox;

use crate::assets;
use crate::embedded::{CameraFrame, EmbeddedKafka, Output, publish_frames, read_outputs};

/// Options of the learning demo.
#[derive(Debug, Clone)]
pub struct LearnOptions {
    /// Assets folder; default `$TESSERA_ASSETS`, `../shared/assets`, else downloaded.
    pub assets: Option<PathBuf>,
    /// Where annotated frames are written (`before/` and `after/`).
    pub out: PathBuf,
    /// How long each phase may take.
    pub timeout: Duration,
}

/// The cameras of the demo.
const CAMERAS: [&str; 2] = ["cam-north", "cam-south"];
/// Variants (crops, mirror images, lighting) of each image sent per batch before the
/// promotion: the examples the head learns from.
const VARIANTS: usize = 8;
/// Batches of variants sent at most while waiting for a promotion.
const MAX_BATCHES: usize = 4;

/// The labeller's rule: the class a person would give a box the detector labelled `detector`
/// (`None`: the box is not worth keeping, and the answer is a negative label).
pub fn rule(detector: &str) -> Option<&'static str> {
    match detector {
        "car" | "truck" | "bus" | "motorcycle" | "train" => Some("vehicle"),
        "dog" | "cat" | "horse" | "sheep" | "cow" | "bird" => Some("animal"),
        "person" => Some("person"),
        _ => None,
    }
}

const RULE: &str = "car, truck, bus, motorcycle, train -> `vehicle`; dog, cat, horse, sheep, cow, bird -> `animal`; person -> `person`; anything else -> negative (the head learns to reject it as `none`)";

/// Runs the learning demo; returns whether a head was promoted and changed some labels.
pub async fn run(options: LearnOptions) -> anyhow::Result<bool> {
    let assets_dir = match &options.assets {
        Some(dir) => dir.clone(),
        None => assets::resolve_assets_dir()?,
    };
    let images = load_images(&assets::images(&assets_dir)?)?;
    anyhow::ensure!(!images.is_empty(), "no images in {}", assets_dir.display());
    let kafka = EmbeddedKafka::start(1)?;
    let brokers = kafka.bootstrap_servers();
    let config = demo_config(&brokers);
    for (topic, partitions) in [
        (config.kafka.input_topics[0].as_str(), 2),
        (&config.kafka.results_topic, 2),
        (&config.kafka.dlq_topic, 1),
        (&config.labels.topic, 1),
        (&config.labels.examples_topic, 1),
        (&config.heads.topic, 1),
        (&config.label_requests.topic, 1),
    ] {
        kafka.create_topic(topic, partitions)?;
    }
    println!("Embedded Kafka broker at {brokers}");
    println!("The labeller's rule: {RULE}");

    let monitor = Monitor::new(
        "demo-learn",
        &config.kafka.group_id,
        config.http.liveness_timeout,
    );
    let pipeline = tessera_actors::start_monitored(
        config.clone(),
        "demo-learn",
        Some(&assets_dir),
        monitor.clone(),
    )
    .await?;
    let learning = pipeline
        .learning()
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("the pipeline has no heads"))?;
    println!(
        "Pipeline running: {} detects, {} embeds each box (second stage); no head is live yet",
        pipeline.model().manifest.name,
        config
            .second_stage
            .manifest
            .parent()
            .and_then(Path::file_name)
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    );
    let answered = Arc::new(AtomicUsize::new(0));
    let labeller = tokio::spawn(answer_requests(
        brokers.clone(),
        config.label_requests.topic.clone(),
        config.labels.topic.clone(),
        answered.clone(),
    ));

    // Before: the images as they are, then variants of them, until a head is promoted.
    println!(
        "\nBefore: frames classified by the detector alone; label requests answered by the rule"
    );
    let topic = config.kafka.input_topics[0].clone();
    let before = send_and_collect(
        &brokers,
        &config,
        &topic,
        &images,
        "before",
        None,
        options.timeout,
    )
    .await?;
    let started = Instant::now();
    let mut promoted = None;
    for batch in 0..MAX_BATCHES {
        let variants: Vec<(String, Vec<u8>)> = images
            .iter()
            .flat_map(|(name, image)| {
                (0..VARIANTS).filter_map(move |v| {
                    encode(&variant(image, batch * VARIANTS + v))
                        .ok()
                        .map(|bytes| (format!("{name}-v{batch}{v}"), bytes))
                })
            })
            .collect();
        send_and_collect(
            &brokers,
            &config,
            &topic,
            &variants,
            "train",
            None,
            options.timeout,
        )
        .await?;
        // Give the labeller the requests of this batch, then train on what was answered.
        tokio::time::sleep(Duration::from_secs(2)).await;
        println!(
            "  {} label requests answered so far; asking for a fine-tune round",
            answered.load(Ordering::SeqCst)
        );
        learning.trainer.request(None);
        promoted = wait_for_round(&learning, options.timeout).await;
        if promoted.is_some() {
            break;
        }
    }
    labeller.abort();
    let Some(version) = promoted else {
        println!("No head was promoted after {MAX_BATCHES} batches of labels");
        pipeline.shutdown(Duration::from_secs(10)).await?;
        return Ok(false);
    };
    println!(
        "Head v{version} promoted after {:.1} s of labelling and training",
        started.elapsed().as_secs_f64()
    );

    println!("\nAfter: the same frames, now relabelled by head v{version}");
    let after = send_and_collect(
        &brokers,
        &config,
        &topic,
        &images,
        "after",
        Some(version),
        options.timeout,
    )
    .await?;
    pipeline.shutdown(Duration::from_secs(10)).await?;

    let changed = compare(&images, &before, &after, &options.out)?;
    println!(
        "\nAnnotated frames in {} (before/ and after/); {changed} box label(s) changed by the head",
        options.out.display()
    );
    Ok(changed > 0)
}

fn demo_config(brokers: &str) -> PipelineConfig {
    let mut config = PipelineConfig::default();
    config.kafka.brokers = brokers.to_owned();
    config.kafka.group_id = "tessera-demo-learn".into();
    config.model.manifest = assets::manifest_path("yolox-nano");
    config.second_stage.enabled = true;
    config.second_stage.manifest = assets::manifest_path("mobilenetv2");
    config.label_requests.enabled = true;
    // Ask about every box, at most 600 a minute: a demo wants labels quickly.
    config.label_requests.random.enabled = true;
    config.label_requests.random.share = 1.0;
    config.label_requests.random.limit.per_minute = 600;
    config.label_requests.random.limit.per_hour = 10_000;
    // Rounds run when the demo asks for them.
    config.finetune.interval = Duration::ZERO;
    config.finetune.min_new_labels = 0;
    config.finetune.min_examples = 10;
    config.finetune.steps = 200;
    config
}

/// Decodes every image (its name is the file stem).
fn load_images(paths: &[PathBuf]) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    paths
        .iter()
        .map(|path| {
            let name = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            Ok((name, std::fs::read(path)?))
        })
        .collect()
}

/// The `index`th variant of an image: a crop keeping 80-100% of each side, mirrored every
/// other time, a little lighter or darker.
fn variant(bytes: &[u8], index: usize) -> RgbImage {
    let Ok(image) = decode_image(bytes, &DecodeLimits::default()) else {
        return RgbImage::new(1, 1);
    };
    let (w, h) = image.dimensions();
    let keep = 0.8 + 0.2 * ((index * 7 % 5) as f32 / 4.0);
    let (cw, ch) = (
        ((w as f32 * keep) as u32).max(1),
        ((h as f32 * keep) as u32).max(1),
    );
    let (x, y) = (
        (w - cw) * (index as u32 % 3) / 2,
        (h - ch) * (index as u32 / 3 % 3) / 2,
    );
    let mut out = image::imageops::crop_imm(&image, x, y, cw, ch).to_image();
    if index % 2 == 1 {
        image::imageops::flip_horizontal_in_place(&mut out);
    }
    image::imageops::colorops::brighten_in_place(&mut out, (index as i32 % 5 - 2) * 8);
    out
}

fn encode(image: &RgbImage) -> anyhow::Result<Vec<u8>> {
    let mut bytes = Cursor::new(Vec::new());
    image.write_to(&mut bytes, image::ImageFormat::Jpeg)?;
    Ok(bytes.into_inner())
}

/// Sends `images` from every camera (frame ids `<phase>-<camera>-<name>`) and waits for
/// their results; prints each with the head's view of its boxes.
async fn send_and_collect(
    brokers: &str,
    config: &PipelineConfig,
    topic: &str,
    images: &[(String, Vec<u8>)],
    phase: &str,
    head: Option<u64>,
    timeout: Duration,
) -> anyhow::Result<BTreeMap<String, FrameResult>> {
    let now = tessera_actors::protocol::now_ms();
    let frames: Vec<CameraFrame> = CAMERAS
        .iter()
        .flat_map(|camera| {
            images.iter().map(move |(name, payload)| CameraFrame {
                camera: camera.as_bytes().to_vec(),
                frame_id: format!("{phase}-{camera}-{name}"),
                payload: payload.clone(),
                content_type: None,
                capture_ms: now,
            })
        })
        .collect();
    publish_frames(brokers, topic, &frames).await?;
    let expected: Vec<String> = frames.iter().map(|f| f.frame_id.clone()).collect();
    let outputs = read_outputs(
        brokers,
        &config.kafka.results_topic,
        &config.kafka.dlq_topic,
        timeout,
        |output| {
            if let Output::Result { result, .. } = output
                && result.frame_id.starts_with(phase)
            {
                print_result(result, head);
            }
        },
        |outputs| {
            expected
                .iter()
                .all(|id| outputs.iter().any(|o| o.frame_id() == Some(id.as_str())))
        },
    )
    .await?;
    let results: BTreeMap<String, FrameResult> = outputs
        .into_iter()
        .filter_map(|o| match o {
            Output::Result { result, .. } if expected.contains(&result.frame_id) => {
                Some((result.frame_id.clone(), *result))
            }
            _ => None,
        })
        .collect();
    anyhow::ensure!(
        results.len() == expected.len(),
        "{} of {} {phase} frames got a result within {timeout:?}",
        results.len(),
        expected.len()
    );
    Ok(results)
}

fn print_result(result: &FrameResult, head: Option<u64>) {
    let boxes: Vec<String> = result
        .detections
        .iter()
        .take(5)
        .map(|d| match &d.head {
            Some(h) if h.rejected => format!("{} -> rejected ({:.2})", d.label, h.score),
            Some(h) => format!("{} -> {} {:.2}", d.label, h.label, h.score),
            None => format!("{} {:.2}", d.label, d.score),
        })
        .collect();
    let more = result.detections.len().saturating_sub(5);
    println!(
        "  {:<34} head {:<5} {}{}",
        result.frame_id,
        result
            .head_version
            .filter(|_| head.is_some())
            .map_or("-".to_owned(), |v| format!("v{v}")),
        boxes.join(", "),
        if more > 0 {
            format!(", +{more}")
        } else {
            String::new()
        }
    );
}

/// Answers every label request by [`rule`], on the labels topic.
async fn answer_requests(
    brokers: String,
    requests_topic: String,
    labels_topic: String,
    answered: Arc<AtomicUsize>,
) -> anyhow::Result<()> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "tessera-demo-labeller")
        .set("auto.offset.reset", "earliest")
        .create()?;
    consumer.subscribe(&[requests_topic.as_str()])?;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()?;
    loop {
        let message = consumer.recv().await?;
        let Ok(request) =
            serde_json::from_slice::<LabelRequest>(message.payload().unwrap_or_default())
        else {
            continue;
        };
        let Some(detector) = &request.prediction.detector else {
            continue;
        };
        let mut answer = serde_json::to_value(&request.answer)?;
        match rule(&detector.label) {
            Some(label) => answer["label"] = label.into(),
            None => {
                answer["label"] = detector.label.clone().into();
                answer["negative"] = true.into();
            }
        }
        let value = serde_json::to_vec(&answer)?;
        producer
            .send(
                FutureRecord::to(&labels_topic)
                    .key(&request.camera)
                    .payload(&value),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)?;
        let count = answered.fetch_add(1, Ordering::SeqCst) + 1;
        if count <= 8 || count.is_multiple_of(25) {
            println!(
                "  label request #{count:<4} {:<9} {} {:<20} detector {} {:.2} -> answered {}",
                request.strategy.as_str(),
                request.camera,
                request.id,
                detector.label,
                detector.score,
                rule(&detector.label).map_or("negative".to_owned(), |l| format!("`{l}`"))
            );
        }
    }
}

/// Waits for the requested round to end; the new head's version when it was promoted.
async fn wait_for_round(
    learning: &tessera_actors::learn::Learning,
    timeout: Duration,
) -> Option<u64> {
    let before = learning.trainer.last().map(|r| r.finished_ms);
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(report) = learning.trainer.last()
            && Some(report.finished_ms) != before
        {
            let accuracy = |v: &Option<tessera_operators::learning::Validation>| {
                v.as_ref()
                    .map_or("-".to_owned(), |v| format!("{:.2}", v.accuracy))
            };
            println!(
                "  fine-tune round: {} (classes {:?}, {} training / {} held-out examples, accuracy {} vs live {}){}",
                report.outcome.as_str(),
                report.classes,
                report.training_examples,
                report.held_out_examples,
                accuracy(&report.candidate),
                accuracy(&report.live),
                report
                    .reason
                    .as_deref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            );
            if report.outcome != tessera_actors::learn::RoundOutcome::Promoted {
                return None;
            }
            // Promoted: wait until this replica serves it.
            let version = report.version?;
            while learning.heads.live_version(GLOBAL_SCOPE) < version {
                if Instant::now() >= deadline {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            return Some(version);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

/// Writes annotated frames of each image from before and after the promotion, prints the
/// boxes whose label the head changed, and returns how many did.
fn compare(
    images: &[(String, Vec<u8>)],
    before: &BTreeMap<String, FrameResult>,
    after: &BTreeMap<String, FrameResult>,
    out: &Path,
) -> anyhow::Result<usize> {
    std::fs::create_dir_all(out.join("before"))?;
    std::fs::create_dir_all(out.join("after"))?;
    let mut changed = 0;
    println!("\nWhat the head changed (camera {}):", CAMERAS[0]);
    for (name, bytes) in images {
        let id = |phase: &str| format!("{phase}-{}-{name}", CAMERAS[0]);
        let (Some(was), Some(now)) = (before.get(&id("before")), after.get(&id("after"))) else {
            continue;
        };
        let image = decode_image(bytes, &DecodeLimits::default())?;
        annotate(&image, was).save(out.join("before").join(format!("{name}.jpg")))?;
        annotate(&image, now).save(out.join("after").join(format!("{name}.jpg")))?;
        for detection in &now.detections {
            let Some(head) = &detection.head else {
                continue;
            };
            if head.label != detection.label {
                changed += 1;
                println!(
                    "  {name}: {} {:.2} at ({:.0},{:.0}) -> {} {:.2}{}",
                    detection.label,
                    detection.score,
                    detection.bbox.x1,
                    detection.bbox.y1,
                    head.label,
                    head.score,
                    if head.rejected { " (rejected)" } else { "" }
                );
            }
        }
    }
    Ok(changed)
}

/// The frame with each box labelled as the result says: the head's label where it
/// classified the box (`x <label>` when it rejected it), else the detector's.
fn annotate(image: &RgbImage, result: &FrameResult) -> RgbImage {
    let mut image = image.clone();
    let mut names: Vec<String> = Vec::new();
    let detections: Vec<Detection> = result
        .detections
        .iter()
        .map(|d| {
            let (name, score) = match &d.head {
                Some(h) if h.rejected => (format!("x {}", h.label), h.score),
                Some(h) => (h.label.clone(), h.score),
                None => (d.label.clone(), d.score),
            };
            let class_id = match names.iter().position(|n| *n == name) {
                Some(index) => index,
                None => {
                    names.push(name);
                    names.len() - 1
                }
            } as u32;
            Detection {
                class_id,
                score,
                bbox: BBox::new(d.bbox.x1, d.bbox.y1, d.bbox.x2, d.bbox.y2),
            }
        })
        .collect();
    draw_detections(&mut image, &detections, |class| {
        names.get(class as usize).cloned().unwrap_or_default()
    });
    image
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule_maps_detector_labels() {
        assert_eq!(rule("car"), Some("vehicle"));
        assert_eq!(rule("dog"), Some("animal"));
        assert_eq!(rule("bicycle"), None);
    }

    #[test]
    fn variants_differ_and_stay_inside_the_image() -> anyhow::Result<()> {
        let mut source = RgbImage::new(100, 80);
        for (x, _, pixel) in source.enumerate_pixels_mut() {
            *pixel = image::Rgb([(x * 2) as u8, 100, 50]);
        }
        let bytes = encode(&source)?;
        let a = variant(&bytes, 0);
        let b = variant(&bytes, 1);
        assert!(a.width() <= 100 && a.height() <= 80 && a.width() >= 80);
        assert_ne!(a.as_raw(), b.as_raw());
        Ok(())
    }
}
