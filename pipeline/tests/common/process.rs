//! `tessera run` child processes, and what a killed one leaves to be processed again.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::delivery::{DLQ, FRAMES, RESULTS, group_progress, read_all_outputs};
use tessera::embedded::CameraFrame;

/// A `tessera run` child process. Its stderr (the logs) is kept for inspection and echoed
/// (shown when a test fails). Killed on drop, so a failing test leaves no process behind.
pub struct Tessera {
    pub name: &'static str,
    pub child: Child,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Tessera {
    pub fn spawn(
        name: &'static str,
        config: &Path,
        assets: &Path,
        overrides: &[String],
    ) -> anyhow::Result<Self> {
        Self::spawn_with_env(name, config, assets, overrides, &[])
    }

    /// [`Tessera::spawn`] with extra environment variables.
    pub fn spawn_with_env(
        name: &'static str,
        config: &Path,
        assets: &Path,
        overrides: &[String],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let mut command = Command::new(env!("CARGO_BIN_EXE_tessera"));
        command.envs(env.iter().copied());
        command.arg("run").arg("--config").arg(config);
        // Several of these processes run at once: each takes a free port.
        command.env("TESSERA__HTTP__ADDRESS", "127.0.0.1:0");
        for setting in overrides {
            command.args(["--set", setting]);
        }
        let mut child = command
            .env("TESSERA_ASSETS", assets)
            .env("RUST_LOG", "info,ort=warn,librdkafka=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let logs = Arc::new(Mutex::new(Vec::new()));
        if let Some(stderr) = child.stderr.take() {
            let logs = logs.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    eprintln!("[{name}] {line}");
                    if let Ok(mut logs) = logs.lock() {
                        logs.push(line);
                    }
                }
            });
        }
        Ok(Self { name, child, logs })
    }

    /// Sends a signal by name (`TERM`, `KILL`, ...).
    pub fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()?;
        anyhow::ensure!(status.success(), "kill -{signal} {} failed", self.name);
        Ok(())
    }

    /// Waits for the process to exit, polling, up to `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "{} did not exit within {timeout:?}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, then the exit status of the graceful shutdown.
    pub async fn terminate(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        self.signal("TERM")?;
        self.wait_exit(timeout).await
    }

    /// Resident memory now, in bytes (`VmRSS` of /proc/PID/status), if still running.
    pub fn resident_bytes(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }

    /// Log lines containing `needle`.
    pub fn logged_count(&self, needle: &str) -> usize {
        self.logs
            .lock()
            .map(|logs| logs.iter().filter(|l| l.contains(needle)).count())
            .unwrap_or(0)
    }

    pub fn logged(&self, needle: &str) -> bool {
        self.logs
            .lock()
            .map(|logs| logs.iter().any(|l| l.contains(needle)))
            .unwrap_or(false)
    }
}

impl Drop for Tessera {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The frames (of `sent`, landed at `landed`) that have an output although they lie at or
/// beyond their partition's committed offset: a consumer restarting from the committed
/// offsets processes them again. Also fails if a frame below a committed offset has no
/// output (committed but lost).
pub async fn outputs_beyond_commit(
    brokers: &str,
    group: &str,
    sent: &[CameraFrame],
    landed: &[tessera::embedded::Landed],
) -> anyhow::Result<Vec<String>> {
    let outputs = read_all_outputs(brokers, RESULTS, DLQ, Duration::from_secs(60)).await?;
    let with_output: HashSet<&str> = outputs.iter().filter_map(|o| o.frame_id()).collect();
    let progress = group_progress(brokers, group, FRAMES).await?;
    eprintln!("committed: {progress:?}");
    let mut beyond = Vec::new();
    let mut lost = Vec::new();
    for (frame, at) in sent.iter().zip(landed) {
        let committed = progress
            .iter()
            .find(|p| p.partition == at.partition)
            .and_then(|p| p.committed)
            .unwrap_or(0);
        let output = with_output.contains(frame.frame_id.as_str());
        if at.offset < committed && !output {
            lost.push(frame.frame_id.clone());
        }
        if at.offset >= committed && output {
            beyond.push(frame.frame_id.clone());
        }
    }
    assert!(
        lost.is_empty(),
        "committed past frames without an output (lost): {lost:?}"
    );
    Ok(beyond)
}
