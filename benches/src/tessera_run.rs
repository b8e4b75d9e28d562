//! Runs the `tessera` binary as an operator would (`tessera run --set ...`) against the
//! benchmark's broker, samples its CPU time and memory from /proc while it works, and reads
//! its results back.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tessera::embedded::{Output, read_outputs};
use tessera_actors::FrameResult;
use tessera_actors::protocol::now_ms;

use crate::stats;

/// One sample of the process: wall time (ms since the epoch), CPU time so far, resident MiB.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub at_ms: i64,
    pub cpu: Duration,
    pub rss_mib: f64,
}

/// A running `tessera run` process and its sampler.
#[derive(Debug)]
pub struct TesseraProcess {
    child: Child,
    /// Where its HTTP endpoints listen.
    http: String,
    samples: Arc<Mutex<Vec<Sample>>>,
    stop: Arc<AtomicBool>,
}

/// The `tessera` binary beside this one (both are built by `cargo build --release`).
pub fn tessera_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let binary = exe.with_file_name("tessera");
    anyhow::ensure!(
        binary.is_file(),
        "{} not found: build it first (cargo build --release -p tessera)",
        binary.display()
    );
    Ok(binary)
}

impl TesseraProcess {
    /// Starts `tessera run` with these `--set` overrides, serving HTTP on a free local port;
    /// its logs go to `log`.
    pub fn start(overrides: &[String], assets: &Path, log: &Path) -> anyhow::Result<Self> {
        Self::start_pinned(None, overrides, assets, log)
    }

    /// [`TesseraProcess::start`], pinned to one core with `taskset -c` when `core` is given
    /// (the process then sees one core and sizes its pools for it).
    pub fn start_pinned(
        core: Option<usize>,
        overrides: &[String],
        assets: &Path,
        log: &Path,
    ) -> anyhow::Result<Self> {
        let http = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .to_string();
        let mut command = match core {
            Some(core) => {
                // taskset execs tessera: the pid sampled below is tessera's.
                let mut command = Command::new("taskset");
                command
                    .args(["-c", &core.to_string()])
                    .arg(tessera_binary()?);
                command
            }
            None => Command::new(tessera_binary()?),
        };
        command.arg("run");
        for setting in overrides {
            command.args(["--set", setting]);
        }
        command.args(["--set", &format!("http.address={http}")]);
        let child = command
            .env("TESSERA_ASSETS", assets)
            .env("RUST_LOG", "info,ort=warn,librdkafka=warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log)?)
            .spawn()?;
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let pid = child.id();
        {
            let (samples, stop) = (samples.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let (Some(cpu), Some(rss_mib)) = (stats::cpu_time(pid), stats::rss_mib(pid))
                    else {
                        break;
                    };
                    if let Ok(mut samples) = samples.lock() {
                        samples.push(Sample {
                            at_ms: now_ms(),
                            cpu,
                            rss_mib,
                        });
                    }
                    std::thread::sleep(Duration::from_millis(250));
                }
            });
        }
        Ok(Self {
            child,
            http,
            samples,
            stop,
        })
    }

    /// Waits until `/readyz` answers 200 (model loaded, consumer in its group).
    pub async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let url = format!("http://{}/readyz", self.http);
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            let url = url.clone();
            let ready = tokio::task::spawn_blocking(move || {
                ureq::get(&url).call().is_ok_and(|r| r.status() == 200)
            })
            .await?;
            if ready {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        anyhow::bail!("tessera was not ready within {timeout:?}")
    }

    /// Its Prometheus exposition, as text.
    pub async fn metrics(&self) -> anyhow::Result<String> {
        self.metrics_endpoint().fetch().await
    }

    /// Where its `/metrics` can be read while the process is used elsewhere.
    pub fn metrics_endpoint(&self) -> MetricsEndpoint {
        MetricsEndpoint {
            url: format!("http://{}/metrics", self.http),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The samples so far.
    pub fn samples(&self) -> Vec<Sample> {
        self.samples.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Peak resident memory so far (the kernel's high-water mark), MiB.
    pub fn peak_rss_mib(&self) -> Option<f64> {
        stats::peak_rss_mib(self.pid())
    }

    /// Graceful stop (SIGTERM), then waits for the exit.
    pub fn stop(mut self) -> anyhow::Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let status = self.child.wait()?;
        anyhow::ensure!(status.success(), "tessera exited with {status}");
        Ok(())
    }
}

/// A tessera process's `/metrics` URL.
#[derive(Debug, Clone)]
pub struct MetricsEndpoint {
    url: String,
}

impl MetricsEndpoint {
    /// The Prometheus exposition, as text.
    pub async fn fetch(&self) -> anyhow::Result<String> {
        let url = self.url.clone();
        tokio::task::spawn_blocking(move || -> anyhow::Result<String> {
            Ok(ureq::get(&url).call()?.body_mut().read_to_string()?)
        })
        .await?
    }
}

/// Total consumer lag over all partitions (frames waiting in Kafka), from an exposition.
pub fn consumer_lag(exposition: &str) -> f64 {
    exposition
        .lines()
        .filter(|line| line.starts_with(tessera_actors::observe::metrics::names::CONSUMER_LAG))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// CPU seconds the process used between two wall-clock instants (nearest samples).
pub fn cpu_between(samples: &[Sample], from_ms: i64, to_ms: i64) -> Option<f64> {
    let nearest = |t: i64| samples.iter().min_by_key(|s| (s.at_ms - t).abs());
    let (a, b) = (nearest(from_ms)?, nearest(to_ms)?);
    Some(b.cpu.saturating_sub(a.cpu).as_secs_f64())
}

/// Reads `count` results from `results_topic` (failing on dead letters: benchmark frames
/// are all valid).
pub async fn read_results(
    brokers: &str,
    results_topic: &str,
    dlq_topic: &str,
    count: usize,
    timeout: Duration,
) -> anyhow::Result<Vec<FrameResult>> {
    let outputs = read_outputs(
        brokers,
        results_topic,
        dlq_topic,
        timeout,
        |_| {},
        |outputs| outputs.len() >= count,
    )
    .await?;
    let mut results = Vec::with_capacity(outputs.len());
    for output in outputs {
        match output {
            Output::Result { result, .. } => results.push(*result),
            Output::DeadLetter { kind, error, .. } => {
                anyhow::bail!("a benchmark frame was dead-lettered: {kind}: {error}")
            }
        }
    }
    anyhow::ensure!(
        results.len() >= count,
        "only {} of {count} results within {timeout:?}",
        results.len()
    );
    Ok(results)
}

/// The window frames/s is counted over (model loading left out): the first frame's
/// consumption and the last result's completion, ms since the epoch, and its length in seconds.
pub fn result_window(results: &[FrameResult]) -> (i64, i64, f64) {
    let first = results
        .iter()
        .map(|r| r.timestamps.received_ms)
        .min()
        .unwrap_or(0);
    let last = results
        .iter()
        .map(|r| r.timestamps.completed_ms)
        .max()
        .unwrap_or(0);
    (first, last, ((last - first) as f64 / 1000.0).max(0.001))
}

/// Where a pipeline's time went, from its own metrics: mean milliseconds per observation of
/// each stage (decode and preprocessing per frame, queue wait and inference per model run)
/// and the mean tiles per model run.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct StageMeans {
    pub decode_ms: f64,
    pub tile_preprocess_ms: f64,
    pub queue_wait_ms: f64,
    pub inference_ms: f64,
    pub tiles_per_run: f64,
}

/// Reads [`StageMeans`] out of a Prometheus exposition.
pub fn stage_means(exposition: &str) -> StageMeans {
    let value = |series: &str| {
        exposition.lines().find_map(|line| {
            let rest = line.strip_prefix(series)?;
            rest.trim().parse::<f64>().ok()
        })
    };
    let stage = |name: &str| {
        let sum = value(&format!(
            "tessera_pipeline_stage_latency_seconds_sum{{stage=\"{name}\"}}"
        ));
        let count = value(&format!(
            "tessera_pipeline_stage_latency_seconds_count{{stage=\"{name}\"}}"
        ));
        match (sum, count) {
            (Some(sum), Some(count)) if count > 0.0 => sum / count * 1000.0,
            _ => f64::NAN,
        }
    };
    let tiles_per_run = match (
        value("tessera_recognize_batch_size_tiles_sum"),
        value("tessera_recognize_batch_size_tiles_count"),
    ) {
        (Some(sum), Some(count)) if count > 0.0 => sum / count,
        _ => f64::NAN,
    };
    StageMeans {
        decode_ms: stage("decode"),
        tile_preprocess_ms: stage("tile_preprocess"),
        queue_wait_ms: stage("queue_wait"),
        inference_ms: stage("inference"),
        tiles_per_run,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_means_come_from_sums_and_counts() {
        let text = "tessera_pipeline_stage_latency_seconds_sum{stage=\"inference\"} 3\n\
                    tessera_pipeline_stage_latency_seconds_count{stage=\"inference\"} 200\n\
                    tessera_recognize_batch_size_tiles_sum 1600\n\
                    tessera_recognize_batch_size_tiles_count 200\n";
        let means = stage_means(text);
        assert_eq!(means.inference_ms, 15.0);
        assert_eq!(means.tiles_per_run, 8.0);
        assert!(means.decode_ms.is_nan());
    }

    #[test]
    fn consumer_lag_sums_the_partitions_and_skips_comments() {
        let text = "# HELP tessera_ingest_consumer_lag_messages Messages behind\n\
                    # TYPE tessera_ingest_consumer_lag_messages gauge\n\
                    tessera_ingest_consumer_lag_messages{partition=\"0\",topic=\"t\"} 4\n\
                    tessera_ingest_consumer_lag_messages{partition=\"1\",topic=\"t\"} 3\n\
                    tessera_ingest_frames_consumed_total 99\n";
        assert_eq!(consumer_lag(text), 7.0);
        assert_eq!(consumer_lag(""), 0.0);
    }
}
