//! The Python baseline (`benches/baseline/pipeline.py`), run as a child process on the same
//! broker and frames; it prints one JSON line of figures when done.

use std::path::Path;
use std::process::Stdio;

use serde::{Deserialize, Serialize};

/// What the baseline reports (see `benches/baseline/README.md`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BaselineReport {
    pub frames: usize,
    pub tiles: usize,
    pub seconds: f64,
    pub frames_per_s: f64,
    pub tiles_per_s: f64,
    pub cpu_seconds: Option<f64>,
    pub peak_rss_mb: Option<f64>,
}

/// One baseline run.
#[derive(Debug)]
pub struct Run<'a> {
    pub python: &'a Path,
    pub brokers: &'a str,
    pub input_topic: &'a str,
    pub results_topic: &'a str,
    pub group: &'a str,
    pub model: &'a Path,
    pub manifest: &'a Path,
    pub frames: usize,
    pub batch: usize,
    /// Where its stderr goes.
    pub log: &'a Path,
}

/// Runs the baseline to completion and parses its report.
pub async fn run(run: &Run<'_>) -> anyhow::Result<BaselineReport> {
    anyhow::ensure!(
        run.python.is_file(),
        "{} not found: run benches/baseline/setup.sh (or pass --no-baseline)",
        run.python.display()
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("baseline/pipeline.py");
    let output = tokio::process::Command::new(run.python)
        .arg(script)
        .args(["--brokers", run.brokers])
        .args(["--input-topic", run.input_topic])
        .args(["--results-topic", run.results_topic])
        .args(["--group", run.group])
        .arg("--model")
        .arg(run.model)
        .arg("--manifest")
        .arg(run.manifest)
        .args(["--frames", &run.frames.to_string()])
        .args(["--batch", &run.batch.to_string()])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(run.log)?)
        .output()
        .await?;
    anyhow::ensure!(
        output.status.success(),
        "the baseline failed ({}); see {}",
        output.status,
        run.log.display()
    );
    let report: BaselineReport = last_json_line(&output.stdout, "the baseline")?;
    anyhow::ensure!(
        report.frames == run.frames,
        "the baseline processed {} of {} frames",
        report.frames,
        run.frames
    );
    Ok(report)
}

/// What the lean loop reports (`pipeline.py --lean`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LeanReport {
    pub frames: usize,
    pub tiles: usize,
    pub seconds: f64,
    pub frames_per_s: f64,
    pub cpu_percent: f64,
}

/// The leanest Python loop (`pipeline.py --lean DIR`): the images of `dir` already in memory,
/// Pillow decode, the same tiles, onnxruntime with default options, no Kafka; `frames` of them.
pub async fn lean(
    python: &Path,
    dir: &Path,
    model: &Path,
    manifest: &Path,
    frames: usize,
    log: &Path,
) -> anyhow::Result<LeanReport> {
    anyhow::ensure!(
        python.is_file(),
        "{} not found: run benches/baseline/setup.sh (or pass --no-baseline)",
        python.display()
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("baseline/pipeline.py");
    let output = tokio::process::Command::new(python)
        .arg(script)
        .arg("--lean")
        .arg(dir)
        .arg("--model")
        .arg(model)
        .arg("--manifest")
        .arg(manifest)
        .args(["--frames", &frames.to_string()])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log)?)
        .output()
        .await?;
    anyhow::ensure!(
        output.status.success(),
        "the lean loop failed ({}); see {}",
        output.status,
        log.display()
    );
    last_json_line(&output.stdout, "the lean loop")
}

/// The report a baseline prints: its last line that is a JSON object.
fn last_json_line<T: serde::de::DeserializeOwned>(stdout: &[u8], who: &str) -> anyhow::Result<T> {
    let stdout = String::from_utf8_lossy(stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .ok_or_else(|| anyhow::anyhow!("{who} printed no report: {stdout}"))?;
    Ok(serde_json::from_str(line)?)
}
