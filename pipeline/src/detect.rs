//! `tessera detect PATH...`: images or folders in, one result document per image out (the
//! results topic's schema), through the same pipeline and settings as `tessera run`, on an
//! embedded broker fed with bounded credits, so a folder of any size goes through whole and
//! memory does not grow with it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tessera_actors::config::LagPolicy;
use tessera_actors::{FrameResult, Monitor, PipelineConfig};

use crate::embedded::{CameraFrame, Output};
use crate::feed::{FeedEvent, FeedItem, FeedRecord};
use crate::images;
use crate::local::LocalPipeline;
use crate::progress::Progress;

/// Options of `tessera detect`.
#[derive(Debug, Clone)]
pub struct DetectOptions {
    /// Image files and folders (searched recursively).
    pub paths: Vec<PathBuf>,
    /// Where result documents go, one JSON object per line (`-`: stdout).
    pub json: Option<PathBuf>,
    /// Where annotated images go.
    pub annotate: Option<PathBuf>,
    /// The camera id the images are sent as (the record key).
    pub camera: String,
    /// Assets folder for model files the configuration does not locate.
    pub assets: Option<PathBuf>,
    /// How long to wait for the next result before giving up.
    pub idle_timeout: Duration,
}

/// What `tessera detect` did.
#[derive(Debug, Clone, Default)]
pub struct DetectSummary {
    pub images: usize,
    pub results: usize,
    pub detections: usize,
    /// Images that could not be read or were dead-lettered, with why.
    pub failed: Vec<String>,
    pub seconds: f64,
}

impl DetectSummary {
    /// Every image has its result.
    pub fn complete(&self) -> bool {
        self.failed.is_empty() && self.results == self.images
    }
}

/// Runs `config`'s pipeline over the images.
pub async fn run(
    mut config: PipelineConfig,
    options: DetectOptions,
) -> anyhow::Result<DetectSummary> {
    let files = images::image_files(&options.paths)?;
    anyhow::ensure!(
        !files.is_empty(),
        "no images found in {}",
        options
            .paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    if config.flow.lag_policy != LagPolicy::ProcessAll {
        eprintln!("detect answers every image: flow.lag_policy is process_all here");
        config.flow.lag_policy = LagPolicy::ProcessAll;
    }
    config.kafka.group_id = "tessera-detect".into();
    config.http.enabled = false;
    let mut sink = JsonSink::open(options.json.as_deref())?;
    if let Some(dir) = &options.annotate {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
    }
    // One line per image on stdout, unless the documents go there.
    let human = !matches!(sink, JsonSink::Stdout(_));

    let monitor = Monitor::new(
        "detect",
        &config.kafka.group_id,
        config.http.liveness_timeout,
    );
    let local =
        LocalPipeline::start(config, "detect", options.assets.as_deref(), 1, monitor).await?;
    eprintln!(
        "{} image(s); model {} {} on {}",
        files.len(),
        local.pipeline().model().manifest.name,
        local.pipeline().model().manifest.version,
        local.pipeline().execution_provider()
    );
    let started = Instant::now();
    let progress = Progress::new("detect", "images", Some(files.len() as u64));
    let mut summary = DetectSummary {
        images: files.len(),
        ..DetectSummary::default()
    };
    let mut failure: Option<anyhow::Error> = None;
    let frames = frames_of(files, options.camera.clone());
    let fed = local
        .feed(frames, options.idle_timeout, |event| {
            if failure.is_some() {
                return;
            }
            let outcome = match event {
                FeedEvent::Published { .. } => Ok(()),
                FeedEvent::Unreadable(reason) => {
                    progress.inc(1);
                    progress.println(&format!("skipped: {reason}"));
                    summary.failed.push(reason);
                    Ok(())
                }
                FeedEvent::Output(output) => {
                    progress.inc(1);
                    on_output(&output, &mut summary, &mut sink, &options, human, &progress)
                }
            };
            if let Err(error) = outcome {
                failure = Some(error);
            }
        })
        .await;
    progress.finish();
    local.shutdown(Duration::from_secs(10)).await?;
    fed?;
    if let Some(error) = failure {
        return Err(error);
    }
    sink.flush()?;
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// The frames of the files, read one at a time as the feed asks for them.
fn frames_of(
    files: Vec<PathBuf>,
    camera: String,
) -> impl Iterator<Item = FeedItem> + Send + 'static {
    files.into_iter().map(move |path| {
        let payload = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(FeedRecord::from(CameraFrame {
            camera: camera.as_bytes().to_vec(),
            frame_id: path.display().to_string(),
            payload,
            content_type: images::content_type(&path).map(str::to_owned),
            capture_ms: tessera_actors::protocol::now_ms(),
        }))
    })
}

fn on_output(
    output: &Output,
    summary: &mut DetectSummary,
    sink: &mut JsonSink,
    options: &DetectOptions,
    human: bool,
    progress: &Progress,
) -> anyhow::Result<()> {
    match output {
        Output::Result { result, .. } => {
            summary.results += 1;
            summary.detections += result.detections.len();
            sink.write(result)?;
            if human {
                progress.suspend(|| println!("{}", describe(result)));
            }
            if let Some(dir) = &options.annotate {
                annotate_to(dir, result)?;
            }
        }
        Output::DeadLetter {
            frame_id,
            kind,
            error,
            ..
        } => {
            let line = format!("{}: {kind}: {error}", frame_id.as_deref().unwrap_or("?"));
            progress.println(&format!("rejected: {line}"));
            summary.failed.push(line);
        }
    }
    Ok(())
}

/// One line per image: its path, size and the best detections or classes.
fn describe(result: &FrameResult) -> String {
    let found: Vec<String> = if result.detections.is_empty() {
        result
            .classifications
            .iter()
            .take(3)
            .map(|c| format!("{} {:.2}", c.label, c.score))
            .collect()
    } else {
        result
            .detections
            .iter()
            .take(6)
            .map(|d| format!("{} {:.2}", d.label, d.score))
            .collect()
    };
    let more = result.detections.len().saturating_sub(6);
    format!(
        "{}  {}x{}  {} detection(s){}{}{}",
        result.frame_id,
        result.image.width,
        result.image.height,
        result.detections.len(),
        if found.is_empty() { "" } else { ": " },
        found.join(", "),
        if more > 0 {
            format!(", +{more}")
        } else {
            String::new()
        }
    )
}

/// Draws the result onto its image (read again from disk: the path is the frame id).
fn annotate_to(dir: &Path, result: &FrameResult) -> anyhow::Result<()> {
    let source = Path::new(&result.frame_id);
    let bytes = std::fs::read(source).map_err(|e| anyhow::anyhow!("{}: {e}", source.display()))?;
    let image = images::annotate(&bytes, result)?;
    let path = dir.join(format!("{}.jpg", images::file_name_for(&result.frame_id)));
    image
        .save(&path)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    Ok(())
}

/// Where result documents go: JSON Lines, written as they arrive.
enum JsonSink {
    None,
    Stdout(std::io::BufWriter<std::io::Stdout>),
    File(std::io::BufWriter<std::fs::File>),
}

impl JsonSink {
    fn open(target: Option<&Path>) -> anyhow::Result<Self> {
        Ok(match target {
            None => JsonSink::None,
            Some(path) if path == Path::new("-") => {
                JsonSink::Stdout(std::io::BufWriter::new(std::io::stdout()))
            }
            Some(path) => {
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent)?;
                }
                let file = std::fs::File::create(path)
                    .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", path.display()))?;
                JsonSink::File(std::io::BufWriter::new(file))
            }
        })
    }

    fn write(&mut self, result: &FrameResult) -> anyhow::Result<()> {
        let writer: &mut dyn Write = match self {
            JsonSink::None => return Ok(()),
            JsonSink::Stdout(w) => w,
            JsonSink::File(w) => w,
        };
        serde_json::to_writer(&mut *writer, result)?;
        writer.write_all(b"\n")?;
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        match self {
            JsonSink::None => {}
            JsonSink::Stdout(w) => w.flush()?,
            JsonSink::File(w) => w.flush()?,
        }
        Ok(())
    }
}
