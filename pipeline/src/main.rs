//! The `tessera` command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use tessera::http::HttpServer;
use tessera::{assets, config, demo, demo_learn, detect};
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

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the pipeline against external Kafka brokers until SIGTERM/SIGINT.
    Run {
        /// Configuration file (TOML). `TESSERA__SECTION__KEY` variables and --set override it.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Override one setting, e.g. `--set kafka.brokers=broker:9092` (repeatable).
        #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
        overrides: Vec<String>,
        /// Assets folder for model files the configuration does not locate.
        #[arg(long, env = "TESSERA_ASSETS")]
        assets: Option<PathBuf>,
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
        /// Configuration file (TOML), as for `run`.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Override one setting, e.g. `--set model.manifest=models/manifests/mobilenetv2/model.toml`.
        #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
        overrides: Vec<String>,
        /// Assets folder for model files the configuration does not locate.
        #[arg(long, env = "TESSERA_ASSETS")]
        assets: Option<PathBuf>,
        /// The camera id the images are sent as.
        #[arg(long, default_value = "local")]
        camera: String,
        /// Give up when no result arrives for this long.
        #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
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
enum ModelsCommand {
    /// Print an ONNX file's inputs and outputs.
    Inspect {
        /// The ONNX file.
        file: PathBuf,
        /// ONNX Runtime library (default `$ORT_DYLIB_PATH`).
        #[arg(long)]
        runtime_library: Option<PathBuf>,
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
        Command::Run {
            config,
            overrides,
            assets: assets_dir,
        } => {
            let config = config::load(config.as_deref(), &overrides)?;
            let assets_dir = assets_dir.or_else(assets::local_assets_dir);
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
            config,
            overrides,
            assets: assets_dir,
            camera,
            timeout,
        } => {
            let mut config = config::load(config.as_deref(), &overrides)?;
            assets::locate_shipped_manifest(&mut config);
            let assets = assets_dir.or_else(assets::local_assets_dir);
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
        Command::Models {
            command:
                ModelsCommand::Inspect {
                    file,
                    runtime_library,
                },
        } => {
            let env = tessera_models::init_runtime(runtime_library.as_deref())?;
            let info = tessera_models::inspect(&env, &file)?;
            println!("{}", file.display());
            println!("{info}");
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
        Command::Models { .. } => "info,ort=error,librdkafka=warn",
        // One-shot commands tell their story on the terminal; the pipeline's log would bury it.
        Command::Detect { .. } => "warn,ort=error",
        _ => "info,ort=warn,librdkafka=warn",
    }
}

fn init_tracing(format: LogFormat, default_filter: &str) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
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
