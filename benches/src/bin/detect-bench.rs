//! `detect-bench`: what step 8 costs (BENCHMARKS.md, "detect and replay").
//!
//! 1. Throughput: the YOLOX workload's 1080p frames through `tessera run` (published first
//!    to the embedded broker, as `tessera-bench` does) and through `tessera detect` on a
//!    folder of the same frames, alternating for `--rounds` rounds. Both frames/s = frames /
//!    (last result's `completed_ms` - first frame's `received_ms`): model loading is left out
//!    of both alike.
//! 2. Memory: `tessera detect`'s peak resident memory (`VmHWM`) on a folder of `--frames`
//!    frames and on one `--big` times larger.
//! 3. `replay play --speed max`: records/s into the embedded broker, against tessera's
//!    frames/s.
//!
//! Build with `cargo build --release -p tessera -p tessera-benches`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use tessera::embedded::EmbeddedKafka;
use tessera::replay::make::MakeOptions;
use tessera::replay::play::{PlayOptions, Speed};
use tessera_actors::FrameResult;
use tessera_benches::stats::peak_rss_mib;
use tessera_benches::tessera_run::{TesseraProcess, read_results, result_window, tessera_binary};
use tessera_benches::{frames, publish};

#[derive(Debug, Parser)]
#[command(about = "tessera detect against tessera run; detect's memory; replay play's rate")]
struct Args {
    /// Frames per throughput run (and in the smaller folder).
    #[arg(long, default_value_t = 60)]
    frames: usize,
    /// Rounds of (run, detect); medians are reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// The larger folder holds this many times `--frames`.
    #[arg(long, default_value_t = 4)]
    big: usize,
    /// The test assets (`$TESSERA_ASSETS`).
    #[arg(long, env = "TESSERA_ASSETS", default_value = "../shared/assets")]
    assets: PathBuf,
    /// Where logs and the folders go.
    #[arg(long, default_value = "target/detect-bench")]
    out: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.out)?;
    let jpegs = frames::jpegs_1080p(&args.assets)?;
    let small = folder(&args.out.join("small"), &jpegs, args.frames)?;
    let big = folder(&args.out.join("big"), &jpegs, args.frames * args.big)?;
    let manifest = tessera::assets::manifest_path("yolox-nano");

    // 1. run against detect on the same frames.
    let kafka = EmbeddedKafka::start(1)?;
    let brokers = kafka.bootstrap_servers();
    let camera_frames = frames::camera_frames(&jpegs, args.frames, 1);
    let partitions = publish::partitions_for(&camera_frames);
    kafka.create_topic("frames", partitions)?;
    kafka.create_topic("frames.dlq", 1)?;
    publish::publish_all(&brokers, "frames", partitions, &camera_frames).await?;
    let mut run_rates = Vec::new();
    let mut detect_rates = Vec::new();
    for round in 0..args.rounds {
        let results_topic = format!("results-{round}");
        kafka.create_topic(&results_topic, partitions)?;
        let settings = vec![
            format!("kafka.brokers={brokers}"),
            format!("kafka.group_id=bench-run-{round}"),
            format!("kafka.results_topic={results_topic}"),
            format!("model.manifest={}", manifest.display()),
        ];
        let log = args.out.join(format!("run-{round}.log"));
        let process = TesseraProcess::start(&settings, &args.assets, &log)?;
        let results = read_results(
            &brokers,
            &results_topic,
            "frames.dlq",
            args.frames,
            Duration::from_secs(1800),
        )
        .await?;
        process.stop()?;
        let run = frames_per_s(&results);
        let detect = detect(&args, &small, &manifest, &format!("detect-{round}"))?;
        eprintln!(
            "round {round}: run {run:.2} frames/s, detect {:.2} frames/s ({:.3}), detect peak RSS {:.0} MiB",
            detect.frames_per_s,
            detect.frames_per_s / run,
            detect.peak_rss_mib
        );
        run_rates.push(run);
        detect_rates.push(detect.frames_per_s);
    }
    let run = median(&run_rates);
    let detect_rate = median(&detect_rates);

    // 2. Memory against the folder's size.
    let small_run = detect(&args, &small, &manifest, "memory-small")?;
    let big_run = detect(&args, &big, &manifest, "memory-big")?;

    // 3. replay play --speed max into the embedded broker.
    let recording = args.out.join("small.mcap");
    tessera::replay::make::run(&MakeOptions {
        cameras: vec![("cam-0".into(), small.clone())],
        fps: 5.0,
        topic: "frames".into(),
        start_ms: 1_700_000_000_000,
        out: recording.clone(),
    })?;
    kafka.create_topic("replayed", 4)?;
    let played = tessera::replay::play::run(&PlayOptions {
        file: recording,
        brokers: brokers.clone(),
        topic: "replayed".into(),
        channel: None,
        speed: Speed::Max,
        loops: 1,
        properties: Vec::new(),
    })
    .await?;
    let play_rate = played.published as f64 / played.seconds;

    println!("| measure | figure |");
    println!("|---------|--------|");
    println!(
        "| `tessera run`, frames/s (median of {}) | {run:.2} |",
        args.rounds
    );
    println!(
        "| `tessera detect`, frames/s (median of {}) | {detect_rate:.2} |",
        args.rounds
    );
    println!("| detect / run | {:.3} |", detect_rate / run);
    println!(
        "| detect peak RSS, {} frames ({:.0} MiB folder) | {:.0} MiB |",
        args.frames,
        folder_mib(&small)?,
        small_run.peak_rss_mib
    );
    println!(
        "| detect peak RSS, {} frames ({:.0} MiB folder) | {:.0} MiB |",
        args.frames * args.big,
        folder_mib(&big)?,
        big_run.peak_rss_mib
    );
    println!(
        "| `replay play --speed max`, records/s ({} frames, {:.0} MiB) | {play_rate:.0} ({:.0}x tessera's frames/s) |",
        played.published,
        folder_mib(&small)?,
        play_rate / run
    );
    Ok(())
}

/// `count` frames cycling through `jpegs`, as files.
fn folder(dir: &Path, jpegs: &[Vec<u8>], count: usize) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    for i in 0..count {
        std::fs::write(
            dir.join(format!("frame-{i:05}.jpg")),
            &jpegs[i % jpegs.len()],
        )?;
    }
    Ok(dir.to_path_buf())
}

fn folder_mib(dir: &Path) -> anyhow::Result<f64> {
    let mut bytes = 0;
    for entry in std::fs::read_dir(dir)? {
        bytes += entry?.metadata()?.len();
    }
    Ok(bytes as f64 / (1 << 20) as f64)
}

struct DetectRun {
    frames_per_s: f64,
    peak_rss_mib: f64,
}

/// `tessera detect DIR --json FILE` as a user runs it, its peak RSS sampled from /proc.
fn detect(args: &Args, dir: &Path, manifest: &Path, name: &str) -> anyhow::Result<DetectRun> {
    let json = args.out.join(format!("{name}.jsonl"));
    let mut child = Command::new(tessera_binary()?)
        .arg("detect")
        .arg(dir)
        .arg("--json")
        .arg(&json)
        .arg("--set")
        .arg(format!("model.manifest={}", manifest.display()))
        .env("TESSERA_ASSETS", &args.assets)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(args.out.join(format!("{name}.log")))?)
        .spawn()?;
    let pid = child.id();
    let peak = Arc::new(Mutex::new(0.0_f64));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                if let (Some(rss), Ok(mut peak)) = (peak_rss_mib(pid), peak.lock()) {
                    *peak = peak.max(rss);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let started = Instant::now();
    let status = child.wait()?;
    done.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    anyhow::ensure!(
        status.success(),
        "detect {name} failed ({status}); see its log"
    );
    let results: Vec<FrameResult> = std::fs::read_to_string(&json)?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    eprintln!(
        "{name}: {} results in {:.1} s",
        results.len(),
        started.elapsed().as_secs_f64()
    );
    let peak_rss_mib = *peak
        .lock()
        .map_err(|_| anyhow::anyhow!("sampler panicked"))?;
    Ok(DetectRun {
        frames_per_s: frames_per_s(&results),
        peak_rss_mib,
    })
}

/// Frames / (last `completed_ms` - first `received_ms`), as `tessera-bench` counts.
fn frames_per_s(results: &[FrameResult]) -> f64 {
    results.len() as f64 / result_window(results).2
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}
