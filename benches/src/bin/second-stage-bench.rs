//! `second-stage-bench`: what step 7 costs (BENCHMARKS.md, "Second stage and scoped heads").
//!
//! 1. Memory of scoped heads: this process's resident memory before and after 100 heads (one
//!    per scope, 10 classes each, on MobileNetV2's 1,280-d embedding) are trained and held in
//!    a `HeadRegistry`, the structure every replica keeps them in; and one head's size on the
//!    heads topic.
//! 2. Throughput: the YOLOX workload's 1080p frames through the whole pipeline (in this
//!    process, embedded broker), with the second stage off, then on (MobileNetV2 backbone, a
//!    live head, up to `--crops` boxes per frame), alternating for `--rounds` rounds; frames/s
//!    = frames / (last result's `completed_ms` - first frame's `received_ms`).
//!
//! Build with `cargo build --release -p tessera-benches`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use tessera::embedded::EmbeddedKafka;
use tessera_actors::learn::HeadRegistry;
use tessera_actors::{FrameResult, PipelineConfig};
use tessera_benches::stats::rss_mib;
use tessera_benches::tessera_run::read_results;
use tessera_benches::{frames, publish};
use tessera_models::{Example, Head, Model, TrainSettings};

#[derive(Debug, Parser)]
#[command(about = "Cost of the second stage and of scoped heads")]
struct Args {
    /// Frames per throughput run.
    #[arg(long, default_value_t = 40)]
    frames: usize,
    /// Rounds of (off, on); medians are reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Most boxes classified per frame (`second_stage.max_crops`).
    #[arg(long, default_value_t = 10)]
    crops: usize,
    /// Scoped heads held in memory.
    #[arg(long, default_value_t = 100)]
    heads: usize,
    /// Classes of each head.
    #[arg(long, default_value_t = 10)]
    classes: usize,
    /// Skip the throughput part.
    #[arg(long)]
    memory_only: bool,
    /// The test assets (`$TESSERA_ASSETS`).
    #[arg(long, env = "TESSERA_ASSETS", default_value = "../shared/assets")]
    assets: PathBuf,
}

const DIM: usize = 1280;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,librdkafka=off,rdkafka=off"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let manifests = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/manifests");
    let backbone = Model::load(
        &manifests.join("mobilenetv2/model.toml"),
        None,
        Some(&args.assets),
    )?;
    memory(&args, &backbone.backbone_hash)?;
    if args.memory_only {
        return Ok(());
    }
    let mut off = Vec::new();
    let mut on = Vec::new();
    for round in 1..=args.rounds {
        for second_stage in [false, true] {
            let (fps, crops) =
                throughput(&args, &manifests, &backbone.backbone_hash, second_stage).await?;
            println!(
                "round {round}: second stage {}: {fps:.2} frames/s, {crops:.1} boxes classified per frame",
                if second_stage { "on " } else { "off" }
            );
            if second_stage { &mut on } else { &mut off }.push(fps);
        }
    }
    let (off, on) = (median(&mut off), median(&mut on));
    println!(
        "median: off {off:.2} frames/s, on {on:.2} frames/s: ratio {:.3}",
        on / off
    );
    Ok(())
}

/// Resident memory before and after `--heads` scoped heads are trained and registered.
fn memory(args: &Args, backbone: &str) -> anyhow::Result<()> {
    let pid = std::process::id();
    let classes: Vec<String> = (0..args.classes).map(|c| format!("class-{c}")).collect();
    let embeddings = synthetic(args.classes * 20, args.classes);
    let examples = examples_of(&embeddings);
    let settings = TrainSettings {
        steps: 5,
        ..TrainSettings::default()
    };
    let train = || {
        Head::train(
            classes.clone(),
            &examples,
            DIM,
            backbone.to_owned(),
            &settings,
        )
    };
    // Training allocates and frees candle's buffers: warm the allocator before measuring.
    let warm = train()?;
    let bytes = warm.to_bytes()?.len();
    drop(warm);
    let registry = HeadRegistry::new(backbone.to_owned(), DIM, None);
    let before = rss_mib(pid).unwrap_or(0.0);
    for scope in 0..args.heads {
        let mut head = train()?;
        head.meta_mut().scope = format!("group-{scope}");
        head.meta_mut().version = 1;
        registry.apply(head)?;
    }
    let after = rss_mib(pid).unwrap_or(0.0);
    println!(
        "{} scoped heads of {} classes on {DIM}-d embeddings: resident memory {before:.1} -> {after:.1} MiB (+{:.1} MiB, {:.0} KiB per head); one head on the heads topic: {:.1} KiB",
        registry.live_heads().versions().len(),
        args.classes,
        after - before,
        (after - before) * 1024.0 / args.heads.max(1) as f64,
        bytes as f64 / 1024.0
    );
    Ok(())
}

/// One run of the YOLOX workload; frames/s and the mean of boxes classified per frame.
async fn throughput(
    args: &Args,
    manifests: &Path,
    backbone: &str,
    second_stage: bool,
) -> anyhow::Result<(f64, f64)> {
    let jpegs = frames::jpegs_1080p(&args.assets)?;
    let frames = frames::camera_frames(&jpegs, args.frames, 4);
    let partitions = publish::partitions_for(&frames);
    let kafka = EmbeddedKafka::start(1)?;
    let mut config = PipelineConfig::default();
    config.kafka.brokers = kafka.bootstrap_servers();
    config.kafka.group_id = "second-stage-bench".into();
    config.model.manifest = manifests.join("yolox-nano/model.toml");
    config.second_stage.enabled = second_stage;
    config.second_stage.manifest = manifests.join("mobilenetv2/model.toml");
    config.second_stage.max_crops = args.crops;
    for topic in &config.kafka.input_topics {
        kafka.create_topic(topic, partitions)?;
    }
    kafka.create_topic(&config.kafka.results_topic, partitions)?;
    for topic in [
        config.kafka.dlq_topic.as_str(),
        &config.heads.topic,
        &config.labels.topic,
        &config.labels.examples_topic,
    ] {
        kafka.create_topic(topic, 1)?;
    }
    eprintln!("starting the pipeline (second stage {second_stage})");
    let pipeline = tessera_actors::start(config.clone(), "bench", Some(&args.assets)).await?;
    eprintln!("pipeline started");
    if second_stage {
        // A live head, so that every selected box is embedded and classified.
        let embeddings = synthetic(60, 3);
        let examples = examples_of(&embeddings);
        let mut head = Head::train(
            vec!["vehicle".into(), "animal".into(), "none".into()],
            &examples,
            DIM,
            backbone.to_owned(),
            &TrainSettings::default(),
        )?;
        head.meta_mut().version = 1;
        pipeline.publish_head(&head).await?;
        let heads = pipeline
            .heads()
            .ok_or_else(|| anyhow::anyhow!("no heads"))?
            .clone();
        for _ in 0..100 {
            if heads.live_version(tessera_actors::GLOBAL_SCOPE) == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    publish::publish_all(
        &config.kafka.brokers,
        &config.kafka.input_topics[0],
        partitions,
        &frames,
    )
    .await?;
    eprintln!("{} frames published", frames.len());
    let results = read_results(
        &config.kafka.brokers,
        &config.kafka.results_topic,
        &config.kafka.dlq_topic,
        frames.len(),
        Duration::from_secs(900),
    )
    .await?;
    pipeline.shutdown(Duration::from_secs(10)).await?;
    Ok((frames_per_s(&results), crops_per_frame(&results)))
}

fn frames_per_s(results: &[FrameResult]) -> f64 {
    let first = results.iter().map(|r| r.timestamps.received_ms).min();
    let last = results.iter().map(|r| r.timestamps.completed_ms).max();
    match (first, last) {
        (Some(first), Some(last)) if last > first => {
            results.len() as f64 * 1000.0 / (last - first) as f64
        }
        _ => 0.0,
    }
}

fn crops_per_frame(results: &[FrameResult]) -> f64 {
    let classified: usize = results
        .iter()
        .map(|r| r.detections.iter().filter(|d| d.head.is_some()).count())
        .sum();
    classified as f64 / results.len().max(1) as f64
}

/// `n` embeddings of `classes` clusters (deterministic).
fn synthetic(n: usize, classes: usize) -> Vec<(usize, Vec<f32>)> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32
    };
    (0..n)
        .map(|i| {
            let class = i % classes.max(1);
            let embedding = (0..DIM)
                .map(|d| if d % classes.max(1) == class { 1.0 } else { 0.0 } + 0.3 * next())
                .collect();
            (class, embedding)
        })
        .collect()
}

fn examples_of(embeddings: &[(usize, Vec<f32>)]) -> Vec<Example<'_>> {
    embeddings
        .iter()
        .map(|(class, embedding)| Example {
            embedding,
            class: *class,
        })
        .collect()
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}
