//! The `tessera` command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use tessera::http::HttpServer;
use tessera::{assets, config, demo, demo_learn, detect, replay};
use tessera_actors::Monitor;

/// Where `tessera demo` writes annotated frames, and `tessera demo --learn` unless told.
const DEMO_OUT: &str = "out/demo";
const DEMO_LEARN_OUT: &str = "out/demo-learn";

#[derive(Debug, Parser)]
#[command(
    name = "tessera",
    version,
    about = "Online image recognition on Kafka streams: tiled ONNX Runtime inference, merged results out."
)]
struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human, env = "TESSERA_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// How a command that runs the pipeline is configured, as for `run`.
#[derive(Debug, clap::Args)]
struct PipelineArgs {
    /// Configuration file (TOML). `TESSERA__SECTION__KEY` variables and --set override it.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Override one setting, e.g. `--set kafka.brokers=broker:9092` (repeatable).
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    overrides: Vec<String>,
    /// Assets folder for model files the configuration does not locate.
    #[arg(long, env = "TESSERA_ASSETS")]
    assets: Option<PathBuf>,
}

impl PipelineArgs {
    /// The layered configuration, and the assets folder (the local one unless given).
    fn load(&self) -> anyhow::Result<(tessera_actors::PipelineConfig, Option<PathBuf>)> {
        let mut config = config::load(self.config.as_deref(), &self.overrides)?;
        assets::locate_shipped_manifest(&mut config);
        Ok((
            config,
            self.assets.clone().or_else(assets::local_assets_dir),
        ))
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the pipeline against external Kafka brokers until SIGTERM/SIGINT.
    Run {
        #[command(flatten)]
        pipeline: PipelineArgs,
    },
    /// Run the whole pipeline on an embedded Kafka broker with the real YOLOX-Nano model.
    Demo {
        /// Assets folder (default `$TESSERA_ASSETS`, `../shared/assets`, else downloaded).
        #[arg(long)]
        assets: Option<PathBuf>,
        /// Where annotated frames are written.
        #[arg(long, default_value = DEMO_OUT)]
        out: PathBuf,
        /// How many times each camera sends each image.
        #[arg(long, default_value_t = 2)]
        rounds: usize,
        /// Give up when no result arrives for this long (with `--learn`: a phase's limit).
        #[arg(long, default_value = "180s", value_parser = humantime::parse_duration)]
        timeout: Duration,
        /// Learning on the job instead: the second stage, label requests answered by a stated
        /// rule, a promoted head, and annotated frames from before and after it.
        #[arg(long)]
        learn: bool,
    },
    /// Run the pipeline over image files or folders and print one result per image; no
    /// broker needed (an embedded one is fed as fast as the pipeline takes the images).
    Detect {
        /// Image files, or folders searched recursively for images.
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
        /// Write the result documents (the results topic's schema) to this file, one JSON
        /// object per line; `-` writes them to stdout.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
        /// Write each image with its detections drawn into this folder.
        #[arg(long, value_name = "DIR")]
        annotate: Option<PathBuf>,
        #[command(flatten)]
        pipeline: PipelineArgs,
        /// The camera id the images are sent as.
        #[arg(long, default_value = "local")]
        camera: String,
        /// Give up when no result arrives for this long.
        #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Record Kafka topics, build recordings from images, replay them, and verify a
    /// pipeline against a golden.
    Replay {
        #[command(subcommand)]
        command: ReplayCommand,
    },
    /// Exit 0 when an HTTP endpoint answers 2xx, else 1 with the reason: the container's
    /// HEALTHCHECK (`tessera probe http://127.0.0.1:9464/healthz`; the image has no curl).
    Probe {
        /// The URL to GET.
        url: String,
        /// Give up after this long.
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Model utilities.
    Models {
        #[command(subcommand)]
        command: ModelsCommand,
    },
    /// Print the configuration: the defaults, or the layered result for a file.
    Config {
        /// Configuration file to layer over the defaults.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Override one setting (repeatable).
        #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
        overrides: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
enum ReplayCommand {
    /// Capture topics (frames, results, labels) into a recording.
    Record {
        /// Kafka bootstrap servers.
        #[arg(long, env = "TESSERA_BROKERS")]
        brokers: String,
        /// A topic to record (repeatable).
        #[arg(long = "topic", required = true, value_name = "TOPIC")]
        topics: Vec<String>,
        /// The recording to write (MCAP).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Record what the topics hold, from their beginning to their end now.
        #[arg(long, conflicts_with = "since")]
        from_beginning: bool,
        /// Record from this time to the end now: `2026-11-30T08:00:00Z`, or a duration ago (`2h`).
        #[arg(long, value_name = "TIME", value_parser = replay::parse_time)]
        since: Option<i64>,
        /// Stop after this many records.
        #[arg(long, value_name = "N")]
        max: Option<u64>,
        /// With --from-beginning or --since: keep recording after the end (until a signal).
        #[arg(long)]
        follow: bool,
        /// A librdkafka property for the consumer, e.g. `security.protocol=SSL` (repeatable).
        #[arg(long = "property", value_name = "KEY=VALUE", value_parser = key_value)]
        properties: Vec<(String, String)>,
    },
    /// Build a recording from folders of images, one camera per folder.
    Make {
        /// A folder of images (repeatable; pairs with --camera in order).
        #[arg(long = "images", required = true, value_name = "DIR")]
        images: Vec<PathBuf>,
        /// The camera id of the folder at the same position (repeatable).
        #[arg(long = "camera", required = true, value_name = "ID")]
        cameras: Vec<String>,
        /// Frames per second of each camera.
        #[arg(long, default_value_t = 5.0)]
        fps: f64,
        /// Capture time of the first frames (default: now).
        #[arg(long, value_name = "TIME", value_parser = replay::parse_time)]
        start: Option<i64>,
        /// The channel (topic) the frames are recorded under.
        #[arg(long, default_value = "frames")]
        topic: String,
        /// The recording to write (MCAP).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Publish a recording to a topic with its recorded timing.
    Play {
        /// The recording.
        file: PathBuf,
        /// Kafka bootstrap servers.
        #[arg(long, env = "TESSERA_BROKERS")]
        brokers: String,
        /// The topic to publish to.
        #[arg(long)]
        topic: String,
        /// The recorded topic to play (default: the only one, else `frames`).
        #[arg(long)]
        channel: Option<String>,
        /// Speed factor of the recorded timing (`1.0`, `4`), or `max`.
        #[arg(long, default_value = "1.0")]
        speed: replay::play::Speed,
        /// Play the recording this many times.
        #[arg(long = "loop", default_value_t = 1, value_name = "N")]
        loops: u32,
        /// A librdkafka property for the producer (repeatable).
        #[arg(long = "property", value_name = "KEY=VALUE", value_parser = key_value)]
        properties: Vec<(String, String)>,
    },
    /// Run a recording's frames through the pipeline and compare the results with a golden.
    Verify {
        /// The recording of frames.
        file: PathBuf,
        /// The golden results recording (written with --write-golden).
        #[arg(long, value_name = "GOLDEN")]
        expected: PathBuf,
        /// How far boxes and scores may move: `iou=0.9,score=0.05`.
        #[arg(long, default_value = "iou=0.9,score=0.05")]
        tolerance: replay::compare::Tolerance,
        /// Record this run's results as the golden instead of comparing.
        #[arg(long)]
        write_golden: bool,
        /// Run on these brokers instead of an embedded one (the topics must exist).
        #[arg(long)]
        brokers: Option<String>,
        /// The recorded topic holding the frames.
        #[arg(long)]
        channel: Option<String>,
        #[command(flatten)]
        pipeline: PipelineArgs,
        /// Give up when no result arrives for this long.
        #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Describe a recording: metadata, channels, time range, damage.
    Info {
        /// The recording.
        file: PathBuf,
    },
}

fn key_value(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("{text:?}: expected KEY=VALUE"))
}

#[derive(Debug, Subcommand)]
enum ModelsCommand {
    /// Print an ONNX file's inputs and outputs, which output adapter fits them, and a draft
    /// model.toml to check and complete. The model is run once on a grey image to tell apart
    /// what shapes alone cannot (pixel or normalised boxes, logits or probabilities).
    Inspect {
        /// The ONNX file.
        file: PathBuf,
        /// ONNX Runtime library (default `$ORT_DYLIB_PATH`).
        #[arg(long)]
        runtime_library: Option<PathBuf>,
        /// Do not run the model: propose from the output shapes alone.
        #[arg(long)]
        no_probe: bool,
        /// Also write the draft manifest to this file (refuses to overwrite one).
        #[arg(long, short = 'o', value_name = "MODEL_TOML")]
        write: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format, default_log_filter(&cli.command));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Frame preparation runs on blocking threads: keep them rather than let idle ones
        // exit after tokio's default 10 s and start new ones, each with a fresh stack and
        // malloc arena (memory that creeps up under steady load).
        .thread_keep_alive(std::time::Duration::from_secs(600))
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run { pipeline } => {
            let (config, assets_dir) = pipeline.load()?;
            run_until_signal(config, assets_dir).await
        }
        Command::Demo {
            assets,
            out,
            rounds,
            timeout,
            learn,
        } => {
            let ok = if learn {
                let out = if out == Path::new(DEMO_OUT) {
                    PathBuf::from(DEMO_LEARN_OUT)
                } else {
                    out
                };
                demo_learn::run(demo_learn::LearnOptions {
                    assets,
                    out,
                    timeout,
                })
                .await?
            } else {
                demo::run(demo::DemoOptions {
                    assets,
                    out,
                    rounds,
                    timeout,
                })
                .await?
            };
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Detect {
            paths,
            json,
            annotate,
            pipeline,
            camera,
            timeout,
        } => {
            let (config, assets) = pipeline.load()?;
            let summary = detect::run(
                config,
                detect::DetectOptions {
                    paths,
                    json,
                    annotate,
                    camera,
                    assets,
                    idle_timeout: timeout,
                },
            )
            .await?;
            eprintln!(
                "{} image(s): {} result(s), {} detection(s), {} failed, {:.1} s ({:.1} images/s)",
                summary.images,
                summary.results,
                summary.detections,
                summary.failed.len(),
                summary.seconds,
                summary.results as f64 / summary.seconds.max(1e-9)
            );
            for failed in &summary.failed {
                eprintln!("  failed: {failed}");
            }
            Ok(if summary.complete() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Replay { command } => run_replay(command).await,
        Command::Probe { url, timeout } => {
            let answer = tokio::task::spawn_blocking(move || probe(&url, timeout)).await?;
            Ok(match answer {
                Ok(()) => ExitCode::SUCCESS,
                Err(reason) => {
                    eprintln!("unhealthy: {reason}");
                    ExitCode::FAILURE
                }
            })
        }
        Command::Models {
            command:
                ModelsCommand::Inspect {
                    file,
                    runtime_library,
                    no_probe,
                    write,
                },
        } => {
            let env = tessera_models::init_runtime(runtime_library.as_deref())?;
            let proposal = tessera_models::propose(&env, &file, !no_probe)?;
            println!("{}", file.display());
            println!("{}", proposal.info);
            let fits = match &proposal.fits {
                Ok(fits) => fits,
                Err(none) => {
                    eprintln!("error: {none}");
                    eprintln!(
                        "The adapters' layouts are described in README.md (Models, Output layouts)."
                    );
                    return Ok(ExitCode::FAILURE);
                }
            };
            let others: Vec<&str> = fits[1..].iter().map(|f| f.adapter.as_str()).collect();
            println!(
                "adapter: {}{}",
                fits[0].adapter.as_str(),
                if others.is_empty() {
                    String::new()
                } else {
                    format!(" (the shapes fit {} too)", others.join(", "))
                }
            );
            let Some(draft) = proposal.draft_manifest(&file) else {
                eprintln!(
                    "error: no input is an f32 [N, 3, H, W] image; tessera feeds models one such tensor"
                );
                return Ok(ExitCode::FAILURE);
            };
            println!("\ndraft model.toml:\n\n{draft}");
            if let Some(path) = write {
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&path)
                    .and_then(|mut f| std::io::Write::write_all(&mut f, draft.as_bytes()))
                    .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
                eprintln!(
                    "wrote {}; check the CHECK lines, add the label file, then try it with `tessera detect`",
                    path.display()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Config { config, overrides } => {
            let mut config = config::load(config.as_deref(), &overrides)?;
            if config.http.admin_token.is_some() {
                config.http.admin_token = Some("<redacted>".into());
            }
            println!("{}", toml::to_string_pretty(&config)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn run_replay(command: ReplayCommand) -> anyhow::Result<ExitCode> {
    match command {
        ReplayCommand::Record {
            brokers,
            topics,
            out,
            from_beginning,
            since,
            max,
            follow,
            properties,
        } => {
            let start = match (from_beginning, since) {
                (true, _) => replay::record::Start::Beginning,
                (false, Some(ms)) => replay::record::Start::Since(ms),
                (false, None) => replay::record::Start::Now,
            };
            let options = replay::record::RecordOptions {
                brokers,
                topics,
                out,
                start,
                max,
                follow,
                properties,
            };
            let written = replay::record::run(&options, shutdown_signal()).await?;
            println!("{}", describe_written(&written));
            Ok(ExitCode::SUCCESS)
        }
        ReplayCommand::Make {
            images,
            cameras,
            fps,
            start,
            topic,
            out,
        } => {
            anyhow::ensure!(
                images.len() == cameras.len(),
                "give one --camera per --images folder ({} folders, {} cameras)",
                images.len(),
                cameras.len()
            );
            let written = replay::make::run(&replay::make::MakeOptions {
                cameras: cameras.into_iter().zip(images).collect(),
                fps,
                topic,
                start_ms: start.unwrap_or_else(tessera_actors::protocol::now_ms),
                out,
            })?;
            println!("{}", describe_written(&written));
            Ok(ExitCode::SUCCESS)
        }
        ReplayCommand::Play {
            file,
            brokers,
            topic,
            channel,
            speed,
            loops,
            properties,
        } => {
            let report = replay::play::run(&replay::play::PlayOptions {
                file,
                brokers,
                topic: topic.clone(),
                channel,
                speed,
                loops: loops.max(1),
                properties,
            })
            .await?;
            println!(
                "Published {} record(s) to {topic} in {:.1} s ({:.0} records/s)",
                report.published,
                report.seconds,
                report.published as f64 / report.seconds.max(1e-9)
            );
            match report.damage {
                None => Ok(ExitCode::SUCCESS),
                Some(damage) => {
                    eprintln!("error: {damage}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        ReplayCommand::Verify {
            file,
            expected,
            tolerance,
            write_golden,
            brokers,
            channel,
            pipeline,
            timeout,
        } => {
            let (config, assets) = pipeline.load()?;
            let options = replay::verify::VerifyOptions {
                recording: file,
                expected,
                tolerance,
                write_golden,
                brokers,
                channel,
                assets,
                idle_timeout: timeout,
            };
            let report = replay::verify::run(config, &options).await?;
            if let Some(written) = &report.written {
                println!("Golden written: {}", describe_written(written));
            }
            if let Some(comparison) = &report.comparison {
                println!("{comparison}");
                println!(
                    "{}",
                    if comparison.matches() {
                        "verify: the results match the golden"
                    } else {
                        "verify: MISMATCH"
                    }
                );
            }
            if let Some(damage) = &report.damage {
                eprintln!("error: {damage}; its intact frames were run");
            }
            Ok(if report.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        ReplayCommand::Info { file } => {
            let scan = replay::recording::scan(&file)?;
            println!("{}", replay::describe_scan(&file, &scan));
            Ok(if scan.damage.is_none() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

/// GETs `url`; Ok on a 2xx answer within `timeout`.
fn probe(url: &str, timeout: Duration) -> Result<(), String> {
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .build()
        .new_agent();
    let mut response = agent.get(url).call().map_err(|e| format!("{url}: {e}"))?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let body = response.body_mut().read_to_string().unwrap_or_default();
    Err(format!("{url}: {status}: {}", body.trim()))
}

fn describe_written(written: &replay::recording::WriteSummary) -> String {
    let topics: Vec<String> = written
        .per_topic
        .iter()
        .map(|(topic, n)| format!("{topic}: {n}"))
        .collect();
    format!(
        "{}: {} record(s) ({}), {} bytes",
        written.path.display(),
        written.messages,
        topics.join(", "),
        written.bytes
    )
}

/// Runs until SIGTERM/SIGINT (graceful: drain, flush, commit; a second signal exits at once)
/// or until the pipeline stops on its own (restart storm: non-zero exit).
async fn run_until_signal(
    config: tessera_actors::PipelineConfig,
    assets_dir: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let drain = config.flow.drain_timeout;
    let monitor = Monitor::new("main", &config.kafka.group_id, config.http.liveness_timeout);
    // HTTP first: probes and metrics answer while the model loads, and report a failed start.
    let http = if config.http.enabled {
        Some(HttpServer::start(&config.http, monitor.clone()).await?)
    } else {
        None
    };
    let outcome = run_pipeline(config, assets_dir, monitor, drain).await;
    if let Some(http) = http {
        http.stop().await;
    }
    outcome
}

async fn run_pipeline(
    config: tessera_actors::PipelineConfig,
    assets_dir: Option<PathBuf>,
    monitor: std::sync::Arc<Monitor>,
    drain: Duration,
) -> anyhow::Result<ExitCode> {
    let mut pipeline =
        tessera_actors::start_monitored(config, "main", assets_dir.as_deref(), monitor).await?;
    tokio::select! {
        stopped = pipeline.stopped() => {
            stopped?;
            return Ok(ExitCode::SUCCESS);
        }
        () = shutdown_signal() => {}
    }
    tracing::info!(
        ?drain,
        "Shutdown requested; draining (a second signal exits at once)"
    );
    tokio::spawn(async {
        shutdown_signal().await;
        eprintln!("Second signal: exiting without draining");
        std::process::exit(130);
    });
    let report = pipeline.shutdown(drain).await?;
    tracing::info!(abandoned = report.abandoned_frames, "Shutdown complete");
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The log filter unless `RUST_LOG` sets one: ONNX Runtime's own log at warning while the
/// pipeline runs, and quiet (errors only) for one-off model commands, where its warnings
/// about a model's graph (one per unused initializer, say) would bury the answer.
fn default_log_filter(command: &Command) -> &'static str {
    match command {
        Command::Models { .. } => "warn,ort=error,librdkafka=warn",
        // One-shot commands tell their story on the terminal; the pipeline's log would bury it.
        Command::Detect { .. } | Command::Replay { .. } | Command::Probe { .. } => "warn,ort=error",
        _ => "info,ort=warn,librdkafka=warn",
    }
}

fn init_tracing(format: LogFormat, default_filter: &str) {
    tessera::logging::init(matches!(format, LogFormat::Json), default_filter);
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn filter(args: &[&str]) -> &'static str {
        let cli = Cli::try_parse_from(args).expect("valid command line");
        default_log_filter(&cli.command)
    }

    #[test]
    fn model_commands_keep_onnx_runtime_quiet_and_runs_keep_its_warnings() {
        assert!(filter(&["tessera", "models", "inspect", "m.onnx"]).contains("ort=error"));
        assert!(filter(&["tessera", "run"]).contains("ort=warn"));
    }
}
