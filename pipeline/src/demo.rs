//! `tessera demo`: the whole pipeline on an embedded broker with the real YOLOX-Nano model.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use tessera_actors::{Monitor, PipelineConfig};
use tessera_operators::annotate::draw_detections;
use tessera_operators::decode::{DecodeLimits, decode_image};
use tessera_operators::detection::Detection;
use tessera_operators::geometry::BBox;

use crate::assets;
use crate::embedded::{CameraFrame, EmbeddedKafka, Output, publish_frames, read_outputs};
use crate::http::HttpServer;

/// Options of the demo.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Assets folder; default `$TESSERA_ASSETS`, `../shared/assets`, else downloaded.
    pub assets: Option<PathBuf>,
    /// Where annotated frames are written.
    pub out: PathBuf,
    /// How many times each camera sends each image.
    pub rounds: usize,
    /// How long to wait for all results.
    pub timeout: Duration,
}

const CAMERAS: [&str; 2] = ["cam-north", "cam-south"];

/// Where the demo serves its HTTP endpoints.
const DEMO_HTTP_ADDRESS: &str = "127.0.0.1:9464";

/// Runs the demo; returns whether every frame got its result or dead-letter record.
pub async fn run(options: DemoOptions) -> anyhow::Result<bool> {
    let assets_dir = match &options.assets {
        Some(dir) => dir.clone(),
        None => assets::resolve_assets_dir()?,
    };
    let images = assets::images(&assets_dir)?;
    let kafka = EmbeddedKafka::start(1)?;
    let brokers = kafka.bootstrap_servers();
    let mut config = PipelineConfig::default();
    config.kafka.brokers = brokers.clone();
    config.kafka.group_id = "tessera-demo".into();
    config.model.manifest = assets::manifest_path("yolox-nano");
    kafka.create_topic(&config.kafka.input_topics[0], 2)?;
    kafka.create_topic(&config.kafka.results_topic, 2)?;
    kafka.create_topic(&config.kafka.dlq_topic, 1)?;
    println!("Embedded Kafka broker at {brokers}");

    // Two cameras, each sending every image `rounds` times, plus one corrupt frame to show
    // the dead-letter path.
    let mut frames = Vec::new();
    let mut sources = Vec::new();
    let start_ms = tessera_actors::protocol::now_ms();
    for round in 0..options.rounds.max(1) {
        for camera in CAMERAS {
            for image in &images {
                let payload = std::fs::read(image)?;
                let name = image
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let frame_id = format!("{camera}-{round}-{name}");
                sources.push((frame_id.clone(), payload.clone()));
                frames.push(CameraFrame {
                    camera: camera.as_bytes().to_vec(),
                    frame_id,
                    payload,
                    content_type: Some("image/jpeg".into()),
                    capture_ms: start_ms + (frames.len() as i64) * 40,
                });
            }
        }
    }
    if let Some((_, first)) = sources.first() {
        let truncated = first[..first.len() / 3].to_vec();
        frames.push(CameraFrame {
            camera: CAMERAS[1].as_bytes().to_vec(),
            frame_id: format!("{}-corrupt", CAMERAS[1]),
            payload: truncated,
            content_type: Some("image/jpeg".into()),
            capture_ms: start_ms + (frames.len() as i64) * 40,
        });
    }
    publish_frames(&brokers, &config.kafka.input_topics[0], &frames).await?;
    println!(
        "Published {} frames from {} cameras ({} images each, {} round(s), plus one corrupt frame)",
        frames.len(),
        CAMERAS.len(),
        images.len(),
        options.rounds.max(1)
    );

    let started = Instant::now();
    let monitor = Monitor::new("demo", &config.kafka.group_id, config.http.liveness_timeout);
    // The endpoints are a convenience here: a busy port must not stop the demo.
    config.http.address = DEMO_HTTP_ADDRESS.into();
    let http = match HttpServer::start(&config.http, monitor.clone()).await {
        Ok(http) => {
            println!(
                "Metrics, health and status at http://{0}/metrics, /healthz, /readyz, /v1/status",
                http.local_addr()
            );
            Some(http)
        }
        Err(error) => {
            println!("HTTP endpoints off: {error:#}");
            None
        }
    };
    let pipeline =
        tessera_actors::start_monitored(config.clone(), "demo", Some(&assets_dir), monitor.clone())
            .await?;
    let model = pipeline.model().clone();
    println!(
        "Pipeline running: model {} {} on {}",
        model.manifest.name,
        model.manifest.version,
        pipeline.execution_provider()
    );
    let expected: HashSet<String> = frames.iter().map(|f| f.frame_id.clone()).collect();
    let outputs = read_outputs(
        &brokers,
        &config.kafka.results_topic,
        &config.kafka.dlq_topic,
        options.timeout,
        print_progress,
        |outputs| {
            let seen: HashSet<&str> = outputs.iter().filter_map(Output::frame_id).collect();
            expected.iter().all(|id| seen.contains(id.as_str()))
        },
    )
    .await?;
    let elapsed = started.elapsed();
    pipeline.shutdown(Duration::from_secs(10)).await?;
    if let Some(http) = http {
        http.stop().await;
    }
    let totals = monitor.status().totals;

    print_table(&outputs);
    let written = write_annotated(&outputs, &sources, &options.out, &model)?;
    let seen: HashSet<&str> = outputs.iter().filter_map(Output::frame_id).collect();
    let missing: Vec<&String> = expected
        .iter()
        .filter(|id| !seen.contains(id.as_str()))
        .collect();
    let results = outputs
        .iter()
        .filter(|o| matches!(o, Output::Result { .. }))
        .count();
    let results_only = || outputs.iter().filter_map(Output::result);
    let detections: usize = results_only().map(|r| r.detections.len()).sum();
    let tiles: usize = results_only().map(|r| r.tile_count).sum();
    println!();
    println!("Summary");
    println!("  frames published      {}", frames.len());
    println!("  results               {results}");
    println!("  dead-lettered         {}", outputs.len() - results);
    println!("  tiles inferred        {tiles}");
    println!(
        "  metrics               {} consumed, {} published, {} dead-lettered, {} tiles inferred",
        totals.frames_consumed,
        totals.frames_published,
        totals.frames_dead_lettered,
        totals.tiles_inferred
    );
    println!("  detections            {detections}");
    println!(
        "  wall time             {:.2} s ({:.1} frames/s, including model load)",
        elapsed.as_secs_f64(),
        outputs.len() as f64 / elapsed.as_secs_f64()
    );
    println!(
        "  annotated frames      {written} written to {}",
        options.out.display()
    );
    if missing.is_empty() {
        println!("  every frame has its result");
        Ok(true)
    } else {
        println!(
            "  MISSING               {} frame(s): {missing:?}",
            missing.len()
        );
        Ok(false)
    }
}

fn print_progress(output: &Output) {
    match output {
        Output::Result { result, .. } => println!(
            "  result   {:<28} {:>3} tiles {:>3} detections  {:>7.1} ms",
            result.frame_id,
            result.tile_count,
            result.detections.len(),
            result.latency_ms.total
        ),
        Output::DeadLetter { frame_id, kind, .. } => println!(
            "  dlq      {:<28} {kind}",
            frame_id.as_deref().unwrap_or("?")
        ),
    }
}

fn print_table(outputs: &[Output]) {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header(vec![
        "camera",
        "frame",
        "p/offset",
        "size",
        "tiles",
        "dets",
        "top detections",
        "ms",
    ]);
    for output in outputs {
        match output {
            Output::Result { result, .. } => {
                let mut labels: Vec<String> = result
                    .detections
                    .iter()
                    .take(4)
                    .map(|d| format!("{} {:.2}", d.label, d.score))
                    .collect();
                if result.detections.len() > 4 {
                    labels.push(format!("+{}", result.detections.len() - 4));
                }
                table.add_row(vec![
                    result.camera.clone(),
                    result.frame_id.clone(),
                    format!("{}/{}", result.source.partition, result.source.offset),
                    format!("{}x{}", result.image.width, result.image.height),
                    result.tile_count.to_string(),
                    result.detections.len().to_string(),
                    labels.join(", "),
                    format!("{:.0}", result.latency_ms.total),
                ]);
            }
            Output::DeadLetter {
                key,
                frame_id,
                kind,
                error,
                ..
            } => {
                table.add_row(vec![
                    key.as_deref()
                        .map(|k| String::from_utf8_lossy(k).into_owned())
                        .unwrap_or_default(),
                    frame_id.clone().unwrap_or_default(),
                    "dlq".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    format!("{kind}: {}", truncate(error, 48)),
                    "-".into(),
                ]);
            }
        }
    }
    println!();
    println!("{table}");
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        format!("{}...", text.chars().take(max).collect::<String>())
    }
}

/// Draws each result's detections onto a copy of its frame and writes it as a JPEG.
fn write_annotated(
    outputs: &[Output],
    sources: &[(String, Vec<u8>)],
    out: &Path,
    model: &tessera_models::Model,
) -> anyhow::Result<usize> {
    std::fs::create_dir_all(out)?;
    let mut written = 0;
    for output in outputs {
        let Output::Result { result, .. } = output else {
            continue;
        };
        let Some((_, bytes)) = sources.iter().find(|(id, _)| *id == result.frame_id) else {
            continue;
        };
        let mut image = decode_image(bytes, &DecodeLimits::default())?;
        let detections: Vec<Detection> = result
            .detections
            .iter()
            .map(|d| Detection {
                class_id: d.class_id,
                score: d.score,
                bbox: BBox::new(d.bbox.x1, d.bbox.y1, d.bbox.x2, d.bbox.y2),
            })
            .collect();
        draw_detections(&mut image, &detections, |class| {
            model.label(class).to_owned()
        });
        let path = out.join(format!("{}.jpg", sanitize(&result.frame_id)));
        image.save(&path)?;
        written += 1;
    }
    Ok(written)
}

fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}
