//! `finetune-bench`: what learning on the job costs (BENCHMARKS.md, "Fine-tuning").
//!
//! 1. One fine-tune round (`tessera_actors::learn::run_round_on`, the fine-tune stage's own
//!    code: split, train with candle, validate candidate and live head, decide) on 100, 1,000
//!    and 10,000 examples of 1,280-d embeddings, 10 classes, on `--cores` cores.
//! 2. Recognition capacity while a round runs: MobileNetV2 sessions (one per core, as
//!    `recognize.workers` defaults to) run batches of real tiles as fast as they can, first
//!    alone, then while rounds of 1,000 examples run back to back on their own pool. The ratio
//!    of the two rates is what a round leaves to recognition.
//! 3. The replay buffer's memory for `--classes` classes at `finetune.per_class` examples, and
//!    its bound.
//!
//! The embeddings of part 1 are synthetic (class clusters of ReLU-like values): a round's cost
//! depends on the shapes only. Build with `cargo build --release -p tessera-benches`.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use tessera_actors::learn::{Round, RoundSettings, run_round_on};
use tessera_models::{ModelSession, SessionConfig, TrainSettings};
use tessera_operators::learning::{LabelledExample, PromotionPolicy, ReplayBuffer, ReplayLimits};

#[derive(Debug, Parser)]
#[command(
    about = "Cost of fine-tuning heads: round time, recognition while a round runs, replay memory"
)]
struct Args {
    /// Example counts of the timed rounds.
    #[arg(long, value_delimiter = ',', default_value = "100,1000,10000")]
    sizes: Vec<usize>,
    /// Classes of the examples.
    #[arg(long, default_value_t = 10)]
    classes: usize,
    /// Cores a round may use (`finetune.threads`).
    #[arg(long, default_value_t = 1)]
    cores: usize,
    /// Training steps per round (`finetune.steps`).
    #[arg(long, default_value_t = 150)]
    steps: usize,
    /// Repetitions of each timed round (the median is reported).
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// How long recognition is measured, idle and under a round each.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    window: Duration,
    /// Examples per class the replay buffer keeps (`finetune.per_class`).
    #[arg(long, default_value_t = 500)]
    per_class: usize,
    /// The test assets (`$TESSERA_ASSETS`).
    #[arg(long, env = "TESSERA_ASSETS", default_value = "../shared/assets")]
    assets: PathBuf,
}

const DIM: usize = 1280;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let settings = RoundSettings {
        train: TrainSettings {
            steps: args.steps,
            ..TrainSettings::default()
        },
        validation_percent: 20,
        policy: PromotionPolicy::default(),
        min_examples: 10,
    };

    println!(
        "## One round (split, train, validate, decide), {} cores, {} steps, {DIM}-d, {} classes",
        args.cores, args.steps, args.classes
    );
    println!("| examples | median s | accuracy | outcome |");
    println!("|---:|---:|---:|---|");
    for &size in &args.sizes {
        let examples = synthetic(size, args.classes, 7);
        let mut times = Vec::new();
        let mut last = None;
        for _ in 0..args.repeat.max(1) {
            let started = Instant::now();
            let result = run_round_on(args.cores, &round_of(&examples), &settings);
            times.push(started.elapsed().as_secs_f64());
            last = Some(result.report);
        }
        times.sort_by(f64::total_cmp);
        let report = last.ok_or_else(|| anyhow::anyhow!("no round"))?;
        println!(
            "| {size} | {:.3} | {:.3} | {} |",
            times[times.len() / 2],
            report.candidate.map_or(0.0, |v| v.accuracy),
            report.outcome.as_str()
        );
    }

    println!();
    println!("## Replay buffer memory");
    let mut buffer = ReplayBuffer::new(ReplayLimits {
        per_class: args.per_class,
        classes: args.classes,
    });
    for example in synthetic(args.per_class * args.classes * 2, args.classes, 11) {
        buffer.add(example)?;
    }
    println!(
        "{} classes x {} per class, {DIM}-d: {} examples held (after {} offered), {:.1} MiB; bound {:.1} MiB",
        args.classes,
        args.per_class,
        buffer.len(),
        args.per_class * args.classes * 2,
        buffer.memory_bytes() as f64 / (1 << 20) as f64,
        buffer.memory_bound(DIM, 32) as f64 / (1 << 20) as f64
    );

    println!();
    println!("## Recognition while a round runs");
    let (idle, busy, rounds) = recognition(&args, &settings)?;
    println!(
        "MobileNetV2 tiles/s: idle {idle:.1}, during rounds {busy:.1} ({rounds} rounds of 1000 examples ran): ratio {:.3}",
        busy / idle
    );
    Ok(())
}

/// A first round (no live head) over `examples`.
fn round_of(examples: &[LabelledExample]) -> Round<'_> {
    Round {
        scope: "global",
        examples,
        live: None,
        backbone: "sha256:bench",
        embedding_dim: DIM,
        version: 1,
    }
}

/// `n` examples of `classes` clusters, ids `bench/<i>`.
fn synthetic(n: usize, classes: usize, seed: u64) -> Vec<LabelledExample> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f32 / (1u64 << 53) as f32
    };
    (0..n)
        .map(|i| {
            let class = i % classes;
            let embedding = (0..DIM)
                .map(|d| {
                    let centre = if d % classes == class { 1.5 } else { 0.3 };
                    (centre + (next() - 0.5) * 1.2).clamp(0.0, 6.0)
                })
                .collect();
            LabelledExample {
                id: format!("bench/{i}"),
                label: format!("class-{class}"),
                embedding,
            }
        })
        .collect()
}

/// Tiles per second of one session per core, alone and while rounds run back to back.
fn recognition(args: &Args, settings: &RoundSettings) -> anyhow::Result<(f64, f64, u64)> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../models/manifests/mobilenetv2/model.toml");
    let model = Arc::new(tessera_models::Model::load(
        &manifest,
        None,
        Some(&args.assets),
    )?);
    let env = tessera_models::init_runtime(None)?;
    let sessions = std::thread::available_parallelism().map_or(1, |n| n.get());
    let batch = 8;
    let measure = |rounds_running: bool| -> anyhow::Result<(f64, u64)> {
        let stop = Arc::new(AtomicBool::new(false));
        let tiles = Arc::new(AtomicU64::new(0));
        let rounds = Arc::new(AtomicU64::new(0));
        let mut workers = Vec::new();
        for _ in 0..sessions {
            let mut session = ModelSession::load(&env, model.clone(), &SessionConfig::default())?;
            let input: Vec<f32> = (0..batch * session.tensor_len())
                .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
                .collect();
            let (stop, tiles) = (stop.clone(), tiles.clone());
            workers.push(std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if session.run(&input, batch).is_ok() {
                        tiles.fetch_add(batch as u64, Ordering::Relaxed);
                    }
                }
            }));
        }
        let trainer = rounds_running.then(|| {
            let (stop, rounds, settings, cores) =
                (stop.clone(), rounds.clone(), settings.clone(), args.cores);
            let examples = synthetic(1000, args.classes, 13);
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    run_round_on(cores, &round_of(&examples), &settings);
                    rounds.fetch_add(1, Ordering::Relaxed);
                }
            })
        });
        // Warm-up, then the window.
        std::thread::sleep(Duration::from_secs(2));
        let start_tiles = tiles.load(Ordering::Relaxed);
        let started = Instant::now();
        std::thread::sleep(args.window);
        let rate =
            (tiles.load(Ordering::Relaxed) - start_tiles) as f64 / started.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        for worker in workers {
            let _ = worker.join();
        }
        if let Some(trainer) = trainer {
            let _ = trainer.join();
        }
        Ok((rate, rounds.load(Ordering::Relaxed)))
    };
    let (idle, _) = measure(false)?;
    let (busy, rounds) = measure(true)?;
    Ok((idle, busy, rounds))
}
