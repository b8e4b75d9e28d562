//! `scale-bench`: throughput of one `tessera run` process against a consumer group of
//! several, on the same frames. Per round, on one embedded broker holding the frames:
//!
//! - **one process** using every core (`recognize.workers` follows the cores it may use);
//! - **N processes** in one consumer group, each pinned to one core with `taskset -c`, so each
//!   sees one core and sizes itself for it, as a replica on a one-core node would.
//!
//! Frames/s = frames / (last result's completion - first frame's consumption), over all the
//! processes' results. The ratio N-process / one-process is the scaling efficiency; the median
//! over the rounds is reported. Build first: `cargo build --release -p tessera -p
//! tessera-benches`; needs `taskset` (util-linux).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use clap::Parser;
use serde::Serialize;
use tessera::embedded::EmbeddedKafka;
use tessera_benches::tessera_run::{TesseraProcess, read_results, result_window};
use tessera_benches::{frames, publish};

#[derive(Debug, Parser)]
#[command(about = "One tessera process against a consumer group of one-core processes")]
struct Args {
    /// Model: `yolox-nano` (tiled 1080p, the main workload) or `mobilenetv2`.
    #[arg(long, default_value = "yolox-nano")]
    model: String,
    /// Frames per run (rounded up to a multiple of the partition count).
    #[arg(long, default_value_t = 120)]
    frames: usize,
    /// Rounds; each runs the single process and the group once.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Processes in the group, pinned to cores 0..N-1 (at most the cores there are).
    #[arg(long, default_value_t = 2)]
    replicas: usize,
    /// Assets folder (models, images); default `$TESSERA_ASSETS`.
    #[arg(long, env = "TESSERA_ASSETS")]
    assets: PathBuf,
    /// Extra tessera settings for every process (repeatable).
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    settings: Vec<String>,
    /// Where the JSON report and logs go.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
}

/// One run: how many processes, and what they did together.
#[derive(Debug, Clone, Serialize)]
struct Run {
    processes: usize,
    frames: usize,
    seconds: f64,
    frames_per_s: f64,
    /// Results each process published (from its own metrics), to show the partitions were
    /// shared.
    per_process: Vec<u64>,
}

#[derive(Debug, Clone, Serialize)]
struct Round {
    single: Run,
    group: Run,
    /// group frames/s over single frames/s.
    efficiency: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    model: String,
    cores: usize,
    replicas: usize,
    partitions: i32,
    rounds: Vec<Round>,
    median_efficiency: f64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.out)?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    anyhow::ensure!(
        args.replicas >= 2 && args.replicas <= cores,
        "--replicas {} needs as many cores (there are {cores})",
        args.replicas
    );
    anyhow::ensure!(
        Command::new("taskset").arg("-V").output().is_ok(),
        "taskset (util-linux) is needed to pin the replicas"
    );
    let jpegs = frames::jpegs_1080p(&args.assets)?;
    // An even split: a partition count the replicas divide, each partition as many frames.
    let needed = publish::partitions_for(&frames::camera_frames(&jpegs, args.frames, 1));
    let replicas = args.replicas as i32;
    let partitions = (needed + replicas - 1) / replicas * replicas;
    let count = args.frames.div_ceil(partitions as usize) * partitions as usize;
    let frames = frames::camera_frames(&jpegs, count, partitions as usize);
    let kafka = EmbeddedKafka::start(1)?;
    let brokers = kafka.bootstrap_servers();
    kafka.create_topic("frames", partitions)?;
    kafka.create_topic("frames.dlq", 1)?;
    publish::publish_all(&brokers, "frames", partitions, &frames).await?;
    eprintln!(
        "{count} 1080p frames over {partitions} partitions; {cores} cores; model {}",
        args.model
    );

    let mut rounds = Vec::new();
    for round in 0..args.rounds.max(1) {
        eprintln!("-- round {}", round + 1);
        let single = run(&args, &kafka, &format!("single-{round}"), &[None], count).await?;
        let pinned: Vec<Option<usize>> = (0..args.replicas).map(Some).collect();
        let group = run(&args, &kafka, &format!("group-{round}"), &pinned, count).await?;
        let efficiency = group.frames_per_s / single.frames_per_s;
        eprintln!(
            "one process: {:.2} frames/s; {} one-core processes: {:.2} frames/s {:?}; efficiency {efficiency:.3}",
            single.frames_per_s, args.replicas, group.frames_per_s, group.per_process
        );
        rounds.push(Round {
            single,
            group,
            efficiency,
        });
    }
    let mut efficiencies: Vec<f64> = rounds.iter().map(|r| r.efficiency).collect();
    efficiencies.sort_by(f64::total_cmp);
    let median_efficiency = efficiencies[efficiencies.len() / 2];
    let report = Report {
        model: args.model.clone(),
        cores,
        replicas: args.replicas,
        partitions,
        rounds,
        median_efficiency,
    };
    let path = args.out.join(format!("scale-{}.json", args.model));
    std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
    eprintln!(
        "median efficiency {median_efficiency:.3}; report in {}",
        path.display()
    );
    Ok(())
}

/// Starts one process per entry of `cores` (pinned to that core, or free), all in one group
/// writing to a results topic of their own, and measures them over the `count` frames.
async fn run(
    args: &Args,
    kafka: &EmbeddedKafka,
    name: &str,
    cores: &[Option<usize>],
    count: usize,
) -> anyhow::Result<Run> {
    let brokers = kafka.bootstrap_servers();
    let results_topic = format!("results-{name}");
    kafka.create_topic(&results_topic, 2)?;
    let mut settings = vec![
        format!("kafka.brokers={brokers}"),
        format!("kafka.group_id=scale-{name}"),
        "kafka.input_topics=[\"frames\"]".to_owned(),
        format!("kafka.results_topic={results_topic}"),
        "kafka.dlq_topic=frames.dlq".to_owned(),
        format!(
            "model.manifest={}",
            tessera_benches::workload_manifest(&args.model)?.display()
        ),
    ];
    settings.extend(args.settings.iter().cloned());
    let mut processes = Vec::new();
    for (i, core) in cores.iter().enumerate() {
        let log = args.out.join(format!("scale-{name}-{i}.log"));
        processes.push(TesseraProcess::start_pinned(
            *core,
            &settings,
            &args.assets,
            &log,
        )?);
    }
    let results = read_results(
        &brokers,
        &results_topic,
        "frames.dlq",
        count,
        Duration::from_secs(1800),
    )
    .await?;
    let mut per_process = Vec::new();
    for process in &processes {
        let text = process.metrics().await.unwrap_or_default();
        per_process.push(published(&text));
    }
    for process in processes {
        process.stop()?;
    }
    let (_, _, seconds) = result_window(&results);
    Ok(Run {
        processes: cores.len(),
        frames: results.len(),
        seconds,
        frames_per_s: results.len() as f64 / seconds,
        per_process,
    })
}

/// Results a process published, from its exposition.
fn published(exposition: &str) -> u64 {
    let name = tessera_actors::observe::metrics::names::FRAMES_PUBLISHED;
    exposition
        .lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}
