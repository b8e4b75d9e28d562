//! `tessera-bench`: the end-to-end benchmark. For each workload, in one run on one machine:
//!
//! 1. throughput: a fixed set of 1080p frames, published to the embedded broker beforehand,
//!    through the `tessera` binary (frames/s, tiles/s, backlog latency, CPU, peak RSS);
//! 2. the ceiling: ONNX Runtime alone, the same model runs, best session layout (searched
//!    just before the throughput run, the best measured again just after);
//! 3. the baseline: the plain Python pipeline (`benches/baseline/`) on the same frames;
//! 4. latency at half the measured rate (p50/p95/p99, end to end);
//! 5. optionally a soak: frames continuously for `--soak`, resident memory and consumer lag
//!    per minute (`--soak-rate` runs the soak alone, at a given rate).
//!
//! The `static` workload is the change gate's: static 1080p cameras (`static_camera`), through
//! tessera with full tiling and with the gate, against the full-tiling ceiling, the lean Python
//! loop and the Kafka Python baseline, and the gate's recall of full tiling's detections.
//!
//! Build both binaries first: `cargo build --release -p tessera -p tessera-benches`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use serde::Serialize;
use tessera::embedded::EmbeddedKafka;
use tessera_actors::FrameResult;
use tessera_benches::baseline::{self, BaselineReport};
use tessera_benches::ceiling::{self, Ceiling};
use tessera_benches::stats::Latency;
use tessera_benches::tessera_run::{
    StageMeans, TesseraProcess, consumer_lag, cpu_between, read_results, result_window, stage_means,
};
use tessera_benches::{frames, publish};

#[derive(Debug, Parser)]
#[command(
    about = "End-to-end benchmark of tessera against the ONNX Runtime ceiling and the Python baseline"
)]
struct Args {
    /// Which workloads to run.
    #[arg(long, value_enum, default_value_t = WorkloadName::All)]
    workload: WorkloadName,
    /// Frames in the throughput run.
    #[arg(long, default_value_t = 60)]
    frames: usize,
    /// Throughput rounds (tessera, then the ceiling again, then the baseline); the ratios
    /// reported are the medians over the rounds.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Length of the half-rate latency run.
    #[arg(long, default_value = "40s", value_parser = humantime::parse_duration)]
    latency_run: Duration,
    /// Length of the continuous-load memory run (0s: skip).
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    soak: Duration,
    /// The soak's input rate, as a fraction of the median measured frames/s. Near 1, this
    /// VM's slow spells build backlogs, and memory rises with them up to the bounded prefetch
    /// buffer; the default keeps the soak about whether anything grows under steady load.
    #[arg(long, default_value_t = 0.5)]
    soak_load: f64,
    /// Run only the soak, at this many frames/s (no throughput rounds, no latency run):
    /// for memory investigations at a known rate.
    #[arg(long, requires = "soak")]
    soak_rate: Option<f64>,
    /// Skip the Python baseline.
    #[arg(long)]
    no_baseline: bool,
    /// Python interpreter with the baseline's requirements (benches/baseline/setup.sh).
    #[arg(long, default_value = ".tessera/baseline-venv/bin/python")]
    python: PathBuf,
    /// Assets folder (models, images); default `$TESSERA_ASSETS`.
    #[arg(long, env = "TESSERA_ASSETS")]
    assets: PathBuf,
    /// Extra tessera settings for every run, e.g. `--set recognize.workers=2` (repeatable).
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    settings: Vec<String>,
    /// Where the JSON reports and logs go.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    /// Static workload: cameras (one partition each).
    #[arg(long, default_value_t = 8)]
    static_cameras: usize,
    /// Static workload: frames in all (spread over the cameras).
    #[arg(long, default_value_t = 240)]
    static_frames: usize,
    /// Static workload: the shared image the cameras see.
    #[arg(long, default_value = "small-vehicles1.jpeg")]
    static_background: String,
    /// Static workload: vehicles moving across it.
    #[arg(long, default_value_t = 3)]
    static_movers: usize,
    /// Static workload: sensor noise, +- levels per channel and pixel, fresh every frame.
    #[arg(long, default_value_t = 3)]
    static_noise: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum WorkloadName {
    Yolox,
    Mobilenet,
    /// YOLOX-Nano on static cameras, with and without the change gate.
    Static,
    All,
}

/// One workload: a model, its tiling and batching.
#[derive(Debug, Clone)]
struct Workload {
    name: &'static str,
    model: &'static str,
    /// `--set` overrides on top of the defaults.
    settings: Vec<String>,
    /// Tiles per model run (dynamic-batch models).
    batch: usize,
}

fn workloads(which: WorkloadName, extra: &[String]) -> Vec<Workload> {
    let yolox = Workload {
        name: "yolox",
        model: "yolox-nano",
        settings: Vec::new(),
        batch: 1,
    };
    let mobilenet = Workload {
        name: "mobilenet",
        model: "mobilenetv2",
        settings: vec!["recognize.max_batch=8".into()],
        batch: 8,
    };
    let mut chosen = match which {
        WorkloadName::Yolox => vec![yolox],
        WorkloadName::Mobilenet => vec![mobilenet],
        WorkloadName::Static => Vec::new(),
        WorkloadName::All => vec![yolox, mobilenet],
    };
    for workload in &mut chosen {
        workload.settings.extend(extra.iter().cloned());
    }
    chosen
}

/// What one tessera run measured.
#[derive(Debug, Clone, Serialize)]
struct PipelineFigures {
    frames: usize,
    tiles: usize,
    seconds: f64,
    frames_per_s: f64,
    tiles_per_s: f64,
    /// From consumption to the finished result, per frame.
    latency_ms: Latency,
    cpu_utilisation: Option<f64>,
    peak_rss_mib: Option<f64>,
    /// Where the time went, from tessera's own metrics.
    stages: Option<StageMeans>,
}

#[derive(Debug, Clone, Serialize)]
struct LatencyRun {
    rate_per_s: f64,
    frames: usize,
    latency_ms: Latency,
    /// Of which from publishing to tessera consuming the frame (Kafka's part).
    consume_wait_ms: Latency,
    p99_over_p50: f64,
}

#[derive(Debug, Clone, Serialize)]
struct SoakRun {
    seconds: f64,
    frames: usize,
    peak_rss_mib: Option<f64>,
    max_rss_first_minute_mib: f64,
    max_rss_second_minute_mib: f64,
    /// Max resident memory per minute of the whole soak (longer soaks show whether it levels
    /// off), MiB.
    max_rss_per_minute_mib: Vec<f64>,
    /// Max consumer lag (frames waiting in Kafka) per minute, from tessera's `/metrics`: a
    /// backlog fills the bounded buffers, so memory rising with it is expected.
    max_lag_per_minute: Vec<f64>,
}

/// One throughput round: tessera, the ceiling around it, the baseline after it.
#[derive(Debug, Clone, Serialize)]
struct Round {
    tessera: PipelineFigures,
    /// The best layout's mean of the measurements just before and just after this round.
    ceiling_frames_per_s: f64,
    pipeline_over_ceiling: f64,
    baseline: Option<BaselineReport>,
    tessera_over_baseline: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
struct Report {
    workload: String,
    cores: usize,
    /// Median over the rounds.
    frames_per_s: f64,
    rounds: Vec<Round>,
    ceiling: Ceiling,
    /// Median over the rounds.
    pipeline_over_ceiling: f64,
    /// Median over the rounds.
    tessera_over_baseline: Option<f64>,
    latency_at_half_rate: Option<LatencyRun>,
    soak: Option<SoakRun>,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.out)?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let jpegs = frames::jpegs_1080p(&args.assets)?;
    eprintln!(
        "{} distinct 1080p frames ({} KiB on average), {cores} cores",
        jpegs.len(),
        jpegs.iter().map(Vec::len).sum::<usize>() / jpegs.len() / 1024
    );
    let mut reports = Vec::new();
    for workload in workloads(args.workload, &args.settings) {
        if let Some(rate) = args.soak_rate {
            soak_only(&args, &workload, &jpegs, rate).await?;
            continue;
        }
        let report = run_workload(&args, &workload, &jpegs, cores).await?;
        let path = args.out.join(format!("report-{}.json", workload.name));
        std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
        eprintln!("Report written to {}", path.display());
        reports.push(report);
    }
    if reports.is_empty() && args.workload == WorkloadName::Static {
        // The static workload alone.
    } else {
        print_summary(&reports);
    }
    if matches!(args.workload, WorkloadName::Static | WorkloadName::All) && args.soak_rate.is_none()
    {
        let report = run_static(&args, cores).await?;
        let path = args.out.join("report-static.json");
        std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
        eprintln!("Report written to {}", path.display());
        print_static_summary(&report);
    }
    Ok(())
}

/// Input partitions for `count` benchmark frames (the embedded broker keeps ~5 MiB each).
fn input_partitions(jpegs: &[Vec<u8>], count: usize) -> i32 {
    publish::partitions_for(&frames::camera_frames(jpegs, count, 1))
}

/// The soak alone, at a given rate, on a broker of its own.
async fn soak_only(
    args: &Args,
    workload: &Workload,
    jpegs: &[Vec<u8>],
    rate: f64,
) -> anyhow::Result<SoakRun> {
    eprintln!(
        "== workload {} ({}), soak only",
        workload.name, workload.model
    );
    let kafka = EmbeddedKafka::start(1)?;
    let partitions = input_partitions(jpegs, args.frames);
    let soak = soak_run(args, workload, &kafka, jpegs, rate, partitions).await?;
    let path = args.out.join(format!("soak-{}.json", workload.name));
    std::fs::write(&path, serde_json::to_string_pretty(&soak)?)?;
    Ok(soak)
}

async fn run_workload(
    args: &Args,
    workload: &Workload,
    jpegs: &[Vec<u8>],
    cores: usize,
) -> anyhow::Result<Report> {
    eprintln!("== workload {} ({})", workload.name, workload.model);
    let kafka = EmbeddedKafka::start(1)?;
    let brokers = kafka.bootstrap_servers();
    let partitions = input_partitions(jpegs, args.frames);
    let frames = frames::camera_frames(jpegs, args.frames, partitions as usize);
    let topics = Topics::new(workload.name);
    kafka.create_topic(&topics.input, partitions)?;
    for round in 0..args.rounds.max(1) {
        kafka.create_topic(
            &topics.results_for(&format!("throughput-{round}")),
            partitions,
        )?;
        kafka.create_topic(&topics.baseline_results_for(round), partitions)?;
    }
    kafka.create_topic(&topics.dlq, 1)?;
    publish::publish_all(&brokers, &topics.input, partitions, &frames).await?;
    eprintln!(
        "Published {} frames over {partitions} partitions",
        frames.len()
    );

    // The ceiling: the same model runs, ONNX Runtime alone. The layout search runs just
    // before the first round, and the best layout again after each round's tessera run, so
    // each round is compared with the ceiling measured around it.
    let env = tessera_models::init_runtime(None)?;
    let model = ceiling::load_model(
        &tessera_benches::workload_manifest(workload.model)?,
        &args.assets,
    )?;
    let tiles = ceiling::real_tiles(&model, jpegs)?;
    let images = args.frames * tiles.len() / jpegs.len();
    let mut ceiling = ceiling::measure(&env, &model, &tiles, images, workload.batch, cores)?;

    let mut rounds = Vec::with_capacity(args.rounds);
    for round in 0..args.rounds.max(1) {
        eprintln!("-- round {}", round + 1);
        let tessera = throughput_run(args, workload, &brokers, &topics, round, cores).await?;
        ceiling.measure_again(&env, &model, &tiles)?;
        let tiles_per_frame = tessera.tiles as f64 / tessera.frames.max(1) as f64;
        let ceiling_frames_per_s = ceiling.images_per_s_around(round) / tiles_per_frame;
        let pipeline_over_ceiling = tessera.frames_per_s / ceiling_frames_per_s;
        eprintln!(
            "ceiling: {ceiling_frames_per_s:.2} frames/s; tessera / ceiling = {pipeline_over_ceiling:.3}"
        );
        // The Python baseline on the same frames (same topic, its own group).
        let baseline = if args.no_baseline {
            None
        } else {
            let run = baseline::Run {
                python: &args.python,
                brokers: &brokers,
                input_topic: &topics.input,
                results_topic: &topics.baseline_results_for(round),
                group: &format!("baseline-{}-{round}", workload.name),
                model: &model.onnx_path,
                manifest: &tessera_benches::workload_manifest(workload.model)?,
                frames: frames.len(),
                batch: workload.batch,
                log: &args
                    .out
                    .join(format!("baseline-{}-{round}.log", workload.name)),
            };
            let report = baseline::run(&run).await?;
            eprintln!(
                "baseline: {:.2} frames/s; tessera / baseline = {:.2}",
                report.frames_per_s,
                tessera.frames_per_s / report.frames_per_s
            );
            Some(report)
        };
        rounds.push(Round {
            tessera_over_baseline: baseline
                .as_ref()
                .map(|b| tessera.frames_per_s / b.frames_per_s),
            tessera,
            ceiling_frames_per_s,
            pipeline_over_ceiling,
            baseline,
        });
    }
    drop(tiles);
    let pipeline_over_ceiling = median(rounds.iter().map(|r| r.pipeline_over_ceiling));
    let tessera_over_baseline = rounds
        .iter()
        .map(|r| r.tessera_over_baseline)
        .collect::<Option<Vec<f64>>>()
        .map(|ratios| median(ratios.into_iter()));
    let frames_per_s = median(rounds.iter().map(|r| r.tessera.frames_per_s));

    // 4. Latency at half the sustained rate.
    let latency_at_half_rate = if args.latency_run.is_zero() {
        None
    } else {
        Some(
            latency_run(
                args,
                workload,
                &kafka,
                jpegs,
                frames_per_s / 2.0,
                partitions,
            )
            .await?,
        )
    };

    // 5. Memory under continuous load, at `--soak-load` of the measured rate. (Near 100%, any
    // slowdown of the machine builds a backlog, which fills the bounded prefetch buffer:
    // memory then rises to that bound, which the throughput runs' peak RSS shows anyway.)
    let soak = if args.soak.is_zero() {
        None
    } else {
        let rate = args.soak_load * frames_per_s;
        Some(soak_run(args, workload, &kafka, jpegs, rate, partitions).await?)
    };

    Ok(Report {
        workload: workload.name.into(),
        cores,
        frames_per_s,
        rounds,
        ceiling,
        pipeline_over_ceiling,
        tessera_over_baseline,
        latency_at_half_rate,
        soak,
    })
}

/// One tessera run over the published backlog (its own consumer group and results topic).
async fn throughput_run(
    args: &Args,
    workload: &Workload,
    brokers: &str,
    topics: &Topics,
    round: usize,
    cores: usize,
) -> anyhow::Result<PipelineFigures> {
    let run = format!("throughput-{round}");
    let settings = pipeline_settings(workload, brokers, &topics.input, topics, &run)?;
    let log = args
        .out
        .join(format!("tessera-{}-{run}.log", workload.name));
    let process = TesseraProcess::start(&settings, &args.assets, &log)?;
    let results = read_results(
        brokers,
        &topics.results_for(&run),
        &topics.dlq,
        args.frames,
        Duration::from_secs(1800),
    )
    .await?;
    let samples = process.samples();
    let peak_rss_mib = process.peak_rss_mib();
    let stages = process.metrics().await.map(|text| stage_means(&text)).ok();
    process.stop()?;
    let mut tessera = figures(&results, &samples, peak_rss_mib, cores);
    tessera.stages = stages;
    eprintln!(
        "tessera: {:.2} frames/s, {:.1} tiles/s, CPU {:.0}%, peak RSS {:.0} MiB",
        tessera.frames_per_s,
        tessera.tiles_per_s,
        tessera.cpu_utilisation.unwrap_or(f64::NAN) * 100.0,
        tessera.peak_rss_mib.unwrap_or(f64::NAN)
    );
    if let Some(stages) = &tessera.stages {
        eprintln!(
            "  per frame: decode {:.1} ms, tile preprocessing {:.1} ms; per model run: queue wait {:.1} ms, inference {:.1} ms, {:.1} tiles",
            stages.decode_ms,
            stages.tile_preprocess_ms,
            stages.queue_wait_ms,
            stages.inference_ms,
            stages.tiles_per_run
        );
    }
    Ok(tessera)
}

/// The median (the mean of the middle two for an even count); NaN for none.
fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.collect();
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// The topics of one workload.
struct Topics {
    input: String,
    results: String,
    baseline_results: String,
    dlq: String,
}

impl Topics {
    fn new(workload: &str) -> Self {
        Self {
            input: format!("{workload}-frames"),
            results: format!("{workload}-results"),
            baseline_results: format!("{workload}-baseline-results"),
            dlq: format!("{workload}-dlq"),
        }
    }

    fn baseline_results_for(&self, round: usize) -> String {
        format!("{}-{round}", self.baseline_results)
    }

    fn results_for(&self, run: &str) -> String {
        format!("{}-{run}", self.results)
    }
}

/// `--set` settings of a tessera run of `workload` reading `input`.
fn pipeline_settings(
    workload: &Workload,
    brokers: &str,
    input: &str,
    topics: &Topics,
    run: &str,
) -> anyhow::Result<Vec<String>> {
    let mut settings = vec![
        format!("kafka.brokers={brokers}"),
        format!("kafka.group_id=bench-{}-{run}", workload.name),
        format!("kafka.input_topics=[\"{input}\"]"),
        format!("kafka.results_topic={}", topics.results_for(run)),
        format!("kafka.dlq_topic={}", topics.dlq),
        format!(
            "model.manifest={}",
            tessera_benches::workload_manifest(workload.model)?.display()
        ),
    ];
    settings.extend(workload.settings.iter().cloned());
    Ok(settings)
}

/// Throughput, latency and resources from a backlog run's results and process samples.
fn figures(
    results: &[FrameResult],
    samples: &[tessera_benches::tessera_run::Sample],
    peak_rss_mib: Option<f64>,
    cores: usize,
) -> PipelineFigures {
    let (first, last, seconds) = result_window(results);
    let tiles: usize = results.iter().map(|r| r.tile_count).sum();
    // Over a backlog, time since publishing is mostly waiting in Kafka: measure from
    // consumption instead (the end-to-end figure is the half-rate run's).
    let latencies: Vec<f64> = results
        .iter()
        .map(|r| (r.timestamps.completed_ms - r.timestamps.received_ms) as f64)
        .collect();
    PipelineFigures {
        frames: results.len(),
        tiles,
        seconds,
        frames_per_s: results.len() as f64 / seconds,
        tiles_per_s: tiles as f64 / seconds,
        latency_ms: Latency::of(&latencies),
        cpu_utilisation: cpu_between(samples, first, last).map(|cpu| cpu / seconds / cores as f64),
        peak_rss_mib,
        stages: None,
    }
}

/// From the frame's capture stamp (set when it was published) to its result.
fn end_to_end_ms(result: &FrameResult) -> Option<f64> {
    let capture = result.timestamps.capture_ms?;
    Some((result.timestamps.completed_ms - capture) as f64)
}

/// A fresh tessera process, ready, reading its own topic `<workload>-<run>`, and the frames
/// to publish to it.
struct PacedRun {
    brokers: String,
    input: String,
    results_topic: String,
    dlq: String,
    frames: Vec<tessera::embedded::CameraFrame>,
    process: TesseraProcess,
}

impl PacedRun {
    async fn start(
        args: &Args,
        workload: &Workload,
        kafka: &EmbeddedKafka,
        jpegs: &[Vec<u8>],
        count: usize,
        partitions: i32,
        run: &str,
    ) -> anyhow::Result<Self> {
        let brokers = kafka.bootstrap_servers();
        let topics = Topics::new(workload.name);
        let input = format!("{}-{run}", workload.name);
        let results_topic = topics.results_for(run);
        kafka.create_topic(&input, partitions)?;
        kafka.create_topic(&results_topic, partitions)?;
        let frames = frames::camera_frames(jpegs, count, partitions as usize);
        let settings = pipeline_settings(workload, &brokers, &input, &topics, run)?;
        let log = args
            .out
            .join(format!("tessera-{}-{run}.log", workload.name));
        let process = TesseraProcess::start(&settings, &args.assets, &log)?;
        // The model loads before the first frame is due: the run measures steady state.
        process.wait_ready(Duration::from_secs(120)).await?;
        Ok(Self {
            brokers,
            input,
            results_topic,
            dlq: topics.dlq,
            frames,
            process,
        })
    }
}

async fn latency_run(
    args: &Args,
    workload: &Workload,
    kafka: &EmbeddedKafka,
    jpegs: &[Vec<u8>],
    rate: f64,
    partitions: i32,
) -> anyhow::Result<LatencyRun> {
    let count = ((rate * args.latency_run.as_secs_f64()).ceil() as usize).max(4);
    let PacedRun {
        brokers,
        input,
        results_topic,
        dlq,
        frames,
        process,
    } = PacedRun::start(args, workload, kafka, jpegs, count, partitions, "paced").await?;
    eprintln!("latency: {count} frames at {rate:.2} frames/s");
    let publishing = {
        let (brokers, input) = (brokers.clone(), input.clone());
        tokio::spawn(async move {
            publish::publish_paced(&brokers, &input, partitions, &frames, rate, Duration::MAX).await
        })
    };
    let results = read_results(
        &brokers,
        &results_topic,
        &dlq,
        count,
        Duration::from_secs_f64(count as f64 / rate + 300.0),
    )
    .await?;
    publishing.await??;
    process.stop()?;
    let latencies: Vec<f64> = results.iter().filter_map(end_to_end_ms).collect();
    let latency_ms = Latency::of(&latencies);
    let waits: Vec<f64> = results
        .iter()
        .filter_map(|r| Some((r.timestamps.received_ms - r.timestamps.capture_ms?) as f64))
        .collect();
    let consume_wait_ms = Latency::of(&waits);
    eprintln!(
        "latency at {rate:.2} frames/s: p50 {:.0} ms, p95 {:.0} ms, p99 {:.0} ms (consume wait p50 {:.0} ms)",
        latency_ms.p50, latency_ms.p95, latency_ms.p99, consume_wait_ms.p50
    );
    Ok(LatencyRun {
        rate_per_s: rate,
        frames: results.len(),
        consume_wait_ms,
        p99_over_p50: latency_ms.p99 / latency_ms.p50,
        latency_ms,
    })
}

async fn soak_run(
    args: &Args,
    workload: &Workload,
    kafka: &EmbeddedKafka,
    jpegs: &[Vec<u8>],
    rate: f64,
    partitions: i32,
) -> anyhow::Result<SoakRun> {
    let count = (rate * args.soak.as_secs_f64()).ceil() as usize + 1;
    let PacedRun {
        brokers,
        input,
        frames,
        process,
        ..
    } = PacedRun::start(args, workload, kafka, jpegs, count, partitions, "soak").await?;
    eprintln!("soak: {:?} at {rate:.2} frames/s", args.soak);
    let started_ms = tessera_actors::protocol::now_ms();
    let lag_samples = {
        let metrics = process.metrics_endpoint();
        let stop_at = std::time::Instant::now() + args.soak;
        tokio::spawn(async move {
            let mut samples = Vec::new();
            while std::time::Instant::now() < stop_at {
                if let Ok(text) = metrics.fetch().await {
                    samples.push((tessera_actors::protocol::now_ms(), consumer_lag(&text)));
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            samples
        })
    };
    let sent =
        publish::publish_paced(&brokers, &input, partitions, &frames, rate, args.soak).await?;
    let lag_samples = lag_samples.await?;
    let samples = process.samples();
    let peak_rss_mib = process.peak_rss_mib();
    process.stop()?;
    let max_in = |from_s: i64, to_s: i64| {
        samples
            .iter()
            .filter(|s| s.at_ms >= started_ms + from_s * 1000 && s.at_ms < started_ms + to_s * 1000)
            .map(|s| s.rss_mib)
            .fold(0.0, f64::max)
    };
    let minutes = args.soak.as_secs().div_ceil(60) as i64;
    let soak = SoakRun {
        max_lag_per_minute: (0..minutes)
            .map(|minute| {
                let window = started_ms + minute * 60_000..started_ms + (minute + 1) * 60_000;
                lag_samples
                    .iter()
                    .filter(|(at, _)| window.contains(at))
                    .map(|&(_, lag)| lag)
                    .fold(0.0, f64::max)
            })
            .collect(),
        seconds: args.soak.as_secs_f64(),
        frames: sent,
        peak_rss_mib,
        max_rss_first_minute_mib: max_in(0, 60),
        max_rss_second_minute_mib: max_in(60, 120),
        max_rss_per_minute_mib: (0..minutes)
            .map(|minute| max_in(minute * 60, (minute + 1) * 60))
            .collect(),
    };
    eprintln!(
        "soak: peak RSS {:.0} MiB; max RSS per minute {:.1?} MiB (max consumer lag {:?} frames); minute 1 -> 2: {:+.1} MiB",
        soak.peak_rss_mib.unwrap_or(f64::NAN),
        soak.max_rss_per_minute_mib,
        soak.max_lag_per_minute,
        soak.max_rss_second_minute_mib - soak.max_rss_first_minute_mib
    );
    Ok(soak)
}

fn print_summary(reports: &[Report]) {
    let opt = |v: Option<f64>, digits: usize| {
        v.map_or_else(|| "-".to_owned(), |v| format!("{v:.digits$}"))
    };
    println!();
    println!(
        "| workload | round | tessera frames/s | tiles/s | CPU | peak RSS (MiB) | ceiling frames/s | tessera / ceiling | baseline frames/s | tessera / baseline |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for r in reports {
        for (i, round) in r.rounds.iter().enumerate() {
            println!(
                "| {} | {} | {:.2} | {:.1} | {}% | {} | {:.2} | {:.3} | {} | {} |",
                r.workload,
                i + 1,
                round.tessera.frames_per_s,
                round.tessera.tiles_per_s,
                opt(round.tessera.cpu_utilisation.map(|c| c * 100.0), 0),
                opt(round.tessera.peak_rss_mib, 0),
                round.ceiling_frames_per_s,
                round.pipeline_over_ceiling,
                opt(round.baseline.as_ref().map(|b| b.frames_per_s), 2),
                opt(round.tessera_over_baseline, 2),
            );
        }
        println!(
            "| {} | **median** | {:.2} | | | | | **{:.3}** | | **{}** |",
            r.workload,
            r.frames_per_s,
            r.pipeline_over_ceiling,
            opt(r.tessera_over_baseline, 2),
        );
    }
    println!();
    println!(
        "| workload | rate | p50 / p95 / p99 (ms) | p99 / p50 | soak: max RSS per minute (MiB) | soak: max lag per minute (frames) |"
    );
    println!("|---|---|---|---|---|---|");
    for r in reports {
        let latency = r.latency_at_half_rate.as_ref();
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            r.workload,
            opt(latency.map(|l| l.rate_per_s), 2),
            latency.map_or_else(
                || "-".to_owned(),
                |l| format!(
                    "{:.0} / {:.0} / {:.0}",
                    l.latency_ms.p50, l.latency_ms.p95, l.latency_ms.p99
                )
            ),
            opt(latency.map(|l| l.p99_over_p50), 2),
            r.soak.as_ref().map_or_else(
                || "-".to_owned(),
                |s| format!("{:.0?}", s.max_rss_per_minute_mib)
            ),
            r.soak.as_ref().map_or_else(
                || "-".to_owned(),
                |s| format!("{:.0?}", s.max_lag_per_minute)
            ),
        );
    }
}

/// The static workload's figures (see the module comment).
#[derive(Debug, Clone, Serialize)]
struct StaticReport {
    scene: tessera_benches::static_camera::Scene,
    cameras: usize,
    frames: usize,
    /// Tiles of a 1080p frame, the full-frame pass included.
    tiles_per_frame: f64,
    full_tiling: PipelineFigures,
    gated: PipelineFigures,
    /// Tiles the gated run inferred and reused, in all.
    gated_tiles_inferred: usize,
    gated_tiles_reused: usize,
    gated_refreshes: usize,
    /// Mean of the results' `gate.relaxation`.
    gated_mean_relaxation: f64,
    /// Full tiling's detections the gated run found (same class, IoU >= 0.5), of all.
    recall: f64,
    recall_detail: tessera_benches::static_camera::Recall,
    /// ONNX Runtime alone over every tile of a frame (best layout), in frames/s.
    ceiling_frames_per_s: f64,
    ceiling: Ceiling,
    full_over_ceiling: f64,
    gated_over_ceiling: f64,
    lean: Option<baseline::LeanReport>,
    full_over_lean: Option<f64>,
    gated_over_lean: Option<f64>,
    baseline: Option<BaselineReport>,
    full_over_baseline: Option<f64>,
    gated_over_baseline: Option<f64>,
}

/// Frames ahead of the results in the static workload's feed: more than tessera holds in
/// flight, so it always has frames waiting, and few enough per partition for the broker.
const STATIC_WINDOW: usize = 24;

async fn run_static(args: &Args, cores: usize) -> anyhow::Result<StaticReport> {
    let cameras = args.static_cameras.max(1);
    let per_camera = args.static_frames.div_ceil(cameras).max(1);
    let scene = tessera_benches::static_camera::Scene {
        background: args.static_background.clone(),
        movers: args.static_movers,
        noise: args.static_noise,
    };
    eprintln!(
        "== workload static (yolox-nano, {cameras} static cameras, {per_camera} frames each; {scene:?})"
    );
    let frames = tessera_benches::static_camera::frames(&args.assets, &scene, cameras, per_camera)?;
    let count = frames.len();
    eprintln!(
        "{count} frames ({} KiB on average)",
        frames.iter().map(|f| f.payload.len()).sum::<usize>() / count / 1024
    );
    let kafka = EmbeddedKafka::start(1)?;
    let brokers = kafka.bootstrap_servers();
    let workload = Workload {
        name: "static",
        model: "yolox-nano",
        // The frames are fed as a replay: their age is measured on the stream's clock, so
        // the gate runs at its configured settings (no relaxing for the benchmark's backlog).
        settings: [vec!["flow.clock=stream".to_owned()], args.settings.clone()].concat(),
        batch: 1,
    };
    let topics = Topics::new(workload.name);
    kafka.create_topic(&topics.dlq, 1)?;

    let mut runs = Vec::new();
    for (run, gate) in [("full", false), ("gated", true)] {
        let input = format!("static-{run}-frames");
        kafka.create_topic(&input, cameras as i32)?;
        kafka.create_topic(&topics.results_for(run), cameras as i32)?;
        let mut settings = pipeline_settings(&workload, &brokers, &input, &topics, run)?;
        settings.push(format!("gate.enabled={gate}"));
        let log = args.out.join(format!("tessera-static-{run}.log"));
        let process = TesseraProcess::start(&settings, &args.assets, &log)?;
        let feeding = {
            let (brokers, input, results, frames) = (
                brokers.clone(),
                input.clone(),
                topics.results_for(run),
                frames.clone(),
            );
            tokio::spawn(async move {
                tessera_benches::static_camera::publish_ahead(
                    &brokers,
                    &input,
                    cameras,
                    &frames,
                    &results,
                    STATIC_WINDOW,
                )
                .await
            })
        };
        let results = read_results(
            &brokers,
            &topics.results_for(run),
            &topics.dlq,
            count,
            Duration::from_secs(3600),
        )
        .await?;
        feeding.await??;
        let samples = process.samples();
        let peak_rss_mib = process.peak_rss_mib();
        let stages = process.metrics().await.map(|text| stage_means(&text)).ok();
        process.stop()?;
        let mut figures = figures(&results, &samples, peak_rss_mib, cores);
        figures.stages = stages;
        eprintln!(
            "tessera ({run}): {:.2} frames/s, CPU {:.0}%",
            figures.frames_per_s,
            figures.cpu_utilisation.unwrap_or(f64::NAN) * 100.0
        );
        runs.push((figures, results));
    }
    let (gated, gated_results) = runs.pop().expect("two runs");
    let (full, full_results) = runs.pop().expect("two runs");
    let reports: Vec<_> = gated_results.iter().filter_map(|r| r.gate).collect();
    let gated_tiles_inferred: usize = reports.iter().map(|g| g.inferred).sum();
    let gated_tiles_reused: usize = reports.iter().map(|g| g.reused).sum();
    let gated_refreshes = reports.iter().filter(|g| g.refresh).count();
    let gated_mean_relaxation =
        reports.iter().map(|g| f64::from(g.relaxation)).sum::<f64>() / reports.len().max(1) as f64;
    let recall_detail = tessera_benches::static_camera::recall(&full_results, &gated_results);
    let recall = recall_detail.ratio();
    let (found, wanted) = (recall_detail.found, recall_detail.wanted);
    let tiles_per_frame = full.tiles as f64 / full.frames.max(1) as f64;
    eprintln!(
        "gate: {gated_tiles_inferred} tiles inferred, {gated_tiles_reused} reused, {gated_refreshes} refreshes; recall {recall:.4} ({found} of {wanted}; missed by score <0.35 / 0.35-0.5 / >=0.5: {:?})",
        recall_detail.missed_by_score
    );

    // The ceiling: every tile of a frame through ONNX Runtime alone.
    let env = tessera_models::init_runtime(None)?;
    let manifest = tessera_benches::workload_manifest(workload.model)?;
    let model = ceiling::load_model(&manifest, &args.assets)?;
    let sample: Vec<Vec<u8>> = frames.iter().take(4).map(|f| f.payload.clone()).collect();
    let tiles = ceiling::real_tiles(&model, &sample)?;
    let ceiling = ceiling::measure(&env, &model, &tiles, 8 * tiles.len(), 1, cores)?;
    let ceiling_frames_per_s = ceiling.best.images_per_s / tiles_per_frame;
    drop(tiles);

    // The Python side: the lean loop on the same frames (files in memory), and the Kafka
    // baseline fed as tessera was.
    let (mut lean, mut python) = (None, None);
    if !args.no_baseline {
        let dir = args.out.join("static-frames");
        std::fs::create_dir_all(&dir)?;
        for frame in &frames {
            std::fs::write(dir.join(format!("{}.jpg", frame.frame_id)), &frame.payload)?;
        }
        let report = baseline::lean(
            &args.python,
            &dir,
            &model.onnx_path,
            &manifest,
            count,
            &args.out.join("lean-static.log"),
        )
        .await?;
        eprintln!("lean Python loop: {:.2} frames/s", report.frames_per_s);
        lean = Some(report);

        let input = "static-baseline-frames";
        let results = topics.baseline_results_for(0);
        kafka.create_topic(input, cameras as i32)?;
        kafka.create_topic(&results, cameras as i32)?;
        let feeding = {
            let (brokers, results, frames) = (brokers.clone(), results.clone(), frames.clone());
            tokio::spawn(async move {
                tessera_benches::static_camera::publish_ahead(
                    &brokers,
                    input,
                    cameras,
                    &frames,
                    &results,
                    STATIC_WINDOW,
                )
                .await
            })
        };
        let run = baseline::Run {
            python: &args.python,
            brokers: &brokers,
            input_topic: input,
            results_topic: &results,
            group: "baseline-static",
            model: &model.onnx_path,
            manifest: &manifest,
            frames: count,
            batch: 1,
            log: &args.out.join("baseline-static.log"),
        };
        let report = baseline::run(&run).await?;
        feeding.await??;
        eprintln!("Kafka Python baseline: {:.2} frames/s", report.frames_per_s);
        python = Some(report);
    }
    let over = |a: f64, b: Option<f64>| b.map(|b| a / b);
    Ok(StaticReport {
        scene,
        cameras,
        frames: count,
        tiles_per_frame,
        full_over_ceiling: full.frames_per_s / ceiling_frames_per_s,
        gated_over_ceiling: gated.frames_per_s / ceiling_frames_per_s,
        full_over_lean: over(full.frames_per_s, lean.as_ref().map(|l| l.frames_per_s)),
        gated_over_lean: over(gated.frames_per_s, lean.as_ref().map(|l| l.frames_per_s)),
        full_over_baseline: over(full.frames_per_s, python.as_ref().map(|b| b.frames_per_s)),
        gated_over_baseline: over(gated.frames_per_s, python.as_ref().map(|b| b.frames_per_s)),
        full_tiling: full,
        gated,
        gated_tiles_inferred,
        gated_tiles_reused,
        gated_refreshes,
        gated_mean_relaxation,
        recall,
        recall_detail,
        ceiling_frames_per_s,
        ceiling,
        lean,
        baseline: python,
    })
}

fn print_static_summary(r: &StaticReport) {
    let opt = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"));
    println!();
    println!(
        "static: {} cameras ({} with {} moving vehicles), {} frames of {:.0} tiles; ceiling (full tiling, ONNX Runtime alone) {:.2} frames/s",
        r.cameras,
        r.scene.background,
        r.scene.movers,
        r.frames,
        r.tiles_per_frame,
        r.ceiling_frames_per_s
    );
    println!(
        "| run | frames/s | / ceiling | / lean Python loop | / Kafka Python baseline | tiles inferred | recall |"
    );
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| tessera, full tiling | {:.2} | {:.2} | {} | {} | {} | 1 |",
        r.full_tiling.frames_per_s,
        r.full_over_ceiling,
        opt(r.full_over_lean),
        opt(r.full_over_baseline),
        r.full_tiling.tiles,
    );
    println!(
        "| tessera, change gate | {:.2} | **{:.2}** | {} | {} | {} ({} reused) | **{:.4}** |",
        r.gated.frames_per_s,
        r.gated_over_ceiling,
        opt(r.gated_over_lean),
        opt(r.gated_over_baseline),
        r.gated_tiles_inferred,
        r.gated_tiles_reused,
        r.recall,
    );
    println!(
        "| lean Python loop | {} | | | | | |",
        opt(r.lean.as_ref().map(|l| l.frames_per_s))
    );
    println!(
        "| Kafka Python baseline | {} | | | | | |",
        opt(r.baseline.as_ref().map(|b| b.frames_per_s))
    );
}
