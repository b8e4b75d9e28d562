//! `tessera demo`: the whole pipeline on an embedded broker with the real YOLOX-Nano model.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use tessera_actors::{Monitor, PipelineConfig};

use crate::embedded::{CameraFrame, Output};
use crate::feed::{FeedEvent, FeedRecord};
use crate::http::HttpServer;
use crate::local::LocalPipeline;
use crate::{assets, images};

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
    let mut config = PipelineConfig::default();
    config.kafka.group_id = "tessera-demo".into();
    config.model.manifest = assets::manifest_path("yolox-nano");
    // The endpoints are a convenience here: a busy port must not stop the demo.
    config.http.address = DEMO_HTTP_ADDRESS.into();

    // Two cameras, each sending every image `rounds` times, plus one corrupt frame to show
    // the dead-letter path. Files are read as the broker takes them, never all at once.
    let rounds = options.rounds.max(1);
    let mut plan: Vec<(String, String, PathBuf)> = Vec::new();
    for round in 0..rounds {
        for camera in CAMERAS {
            for image in &images {
                let name = image
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                plan.push((
                    camera.to_owned(),
                    format!("{camera}-{round}-{name}"),
                    image.clone(),
                ));
            }
        }
    }
    let corrupt_id = format!("{}-corrupt", CAMERAS[1]);
    let expected: HashSet<String> = plan
        .iter()
        .map(|(_, id, _)| id.clone())
        .chain([corrupt_id.clone()])
        .collect();
    let sources: HashMap<String, PathBuf> = plan
        .iter()
        .map(|(_, id, path)| (id.clone(), path.clone()))
        .collect();

    let monitor = Monitor::new("demo", &config.kafka.group_id, config.http.liveness_timeout);
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
    let local = LocalPipeline::start(config, "demo", Some(&assets_dir), 2, monitor.clone()).await?;
    println!("Embedded Kafka broker at {}", local.brokers());
    let model = local.pipeline().model().clone();
    println!(
        "Pipeline running: model {} {} on {}",
        model.manifest.name,
        model.manifest.version,
        local.pipeline().execution_provider()
    );
    println!(
        "Publishing {} frames from {} cameras ({} images each, {rounds} round(s), plus one corrupt frame) as the pipeline takes them",
        expected.len(),
        CAMERAS.len(),
        images.len(),
    );

    let started = Instant::now();
    let start_ms = tessera_actors::protocol::now_ms();
    let first_image = images.first().cloned();
    let frames = plan
        .into_iter()
        .map(|(camera, frame_id, path)| {
            let payload = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            Ok((camera, frame_id, payload))
        })
        .chain(first_image.map(move |path| {
            let payload = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            Ok((
                CAMERAS[1].to_owned(),
                corrupt_id,
                payload[..payload.len() / 3].to_vec(),
            ))
        }))
        .enumerate()
        .map(move |(i, item)| {
            item.map(|(camera, frame_id, payload)| {
                FeedRecord::from(CameraFrame {
                    camera: camera.into_bytes(),
                    frame_id,
                    payload,
                    content_type: Some("image/jpeg".into()),
                    capture_ms: start_ms + i as i64 * 40,
                })
            })
        });
    let mut outputs = Vec::new();
    let mut unreadable = Vec::new();
    let fed = local
        .feed(frames, options.timeout, |event| match event {
            FeedEvent::Published { .. } => {}
            FeedEvent::Unreadable(reason) => unreadable.push(reason),
            FeedEvent::Output(output) => {
                print_progress(&output);
                outputs.push(output);
            }
        })
        .await;
    let elapsed = started.elapsed();
    local.shutdown(Duration::from_secs(10)).await?;
    if let Some(http) = http {
        http.stop().await;
    }
    let report = fed?;
    let totals = monitor.status().totals;

    print_table(&outputs);
    let written = write_annotated(&outputs, &sources, &options.out)?;
    let seen: HashSet<&str> = outputs.iter().filter_map(Output::frame_id).collect();
    let mut missing: Vec<&String> = expected
        .iter()
        .filter(|id| !seen.contains(id.as_str()))
        .collect();
    missing.sort();
    let results = outputs
        .iter()
        .filter(|o| matches!(o, Output::Result { .. }))
        .count();
    let results_only = || outputs.iter().filter_map(Output::result);
    let detections: usize = results_only().map(|r| r.detections.len()).sum();
    let tiles: usize = results_only().map(|r| r.tile_count).sum();
    println!();
    println!("Summary");
    println!("  frames published      {}", report.published);
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
        "  wall time             {:.2} s ({:.1} frames/s)",
        elapsed.as_secs_f64(),
        outputs.len() as f64 / elapsed.as_secs_f64()
    );
    println!(
        "  annotated frames      {written} written to {}",
        options.out.display()
    );
    for reason in &unreadable {
        println!("  UNREADABLE            {reason}");
    }
    if missing.is_empty() && unreadable.is_empty() {
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
    sources: &HashMap<String, PathBuf>,
    out: &Path,
) -> anyhow::Result<usize> {
    std::fs::create_dir_all(out)?;
    let mut written = 0;
    for result in outputs.iter().filter_map(Output::result) {
        let Some(path) = sources.get(&result.frame_id) else {
            continue;
        };
        let image = images::annotate(&std::fs::read(path)?, result)?;
        image.save(out.join(format!("{}.jpg", images::file_name_for(&result.frame_id))))?;
        written += 1;
    }
    Ok(written)
}
