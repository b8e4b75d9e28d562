//! `kafka.compression` as the data contract states it: results produced with `gzip` are read
//! by a client that shares no code with tessera and has no extra codec library (kafka-python,
//! pure Python); with the default `lz4` that client needs the `lz4` package and, without it,
//! fails with `UnsupportedCodecError`.

use std::process::Command;
use std::time::Duration;

use tessera::embedded::publish_frames;
use tessera_actors::config::Compression;
use tessera_tests::harness::{FRAMES, Harness, RESULTS, camera_frames};
use tessera_tests::{assets_dir, pytools, workspace_root};

/// Runs the pipeline with `compression` on two frames, then lets kafka-python read the
/// results topic: its exit status, stdout and stderr.
async fn read_with_kafka_python(
    compression: Compression,
) -> anyhow::Result<Option<(bool, String, String)>> {
    let (Some(assets), Some(site)) = (assets_dir(), pytools("kafka")) else {
        return Ok(None);
    };
    let harness = Harness::start(1)?;
    let mut config = harness.config(&format!("compression-{}", compression.as_str()));
    config.kafka.compression = compression;
    config.tiling.enabled = false;
    let frames = camera_frames(
        "cam-1",
        &std::fs::read(assets.join("images/dog.jpg"))?,
        0..2,
    );
    publish_frames(&harness.brokers, FRAMES, &frames).await?;
    let instance = format!("compression-{}", compression.as_str());
    let pipeline = tessera_actors::start(config, &instance, Some(&assets)).await?;
    let outputs = harness.read(2, Duration::from_secs(120)).await?;
    anyhow::ensure!(outputs.len() == 2, "{} of 2 results", outputs.len());
    pipeline.shutdown(Duration::from_secs(10)).await?;
    let run = Command::new("python3")
        .arg(workspace_root().join("tests/python/kafka_client.py"))
        .args(["consume", &harness.brokers, RESULTS, "2"])
        .env("PYTHONPATH", &site)
        .output()?;
    Ok(Some((
        run.status.success(),
        String::from_utf8(run.stdout)?,
        String::from_utf8_lossy(&run.stderr).into_owned(),
    )))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_results_are_read_by_a_plain_outside_client() -> anyhow::Result<()> {
    let Some((ok, stdout, stderr)) = read_with_kafka_python(Compression::Gzip).await? else {
        return Ok(());
    };
    assert!(ok, "kafka-python could not read gzip results: {stderr}");
    let mut ids = Vec::new();
    for line in stdout.lines() {
        let record: serde_json::Value = serde_json::from_str(line)?;
        let hex = record["value"].as_str().unwrap_or_default();
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16))
            .collect::<Result<_, _>>()?;
        let result: serde_json::Value = serde_json::from_slice(&bytes)?;
        ids.push(result["frame_id"].as_str().unwrap_or_default().to_owned());
    }
    ids.sort();
    assert_eq!(ids, ["cam-1-0", "cam-1-1"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lz4_results_need_the_codec_in_the_consumer() -> anyhow::Result<()> {
    let Some((ok, _, stderr)) = read_with_kafka_python(Compression::Lz4).await? else {
        return Ok(());
    };
    let has_lz4 = Command::new("python3")
        .args(["-c", "import lz4"])
        .stderr(std::process::Stdio::null())
        .status()?
        .success();
    if has_lz4 {
        assert!(ok, "this Python has lz4, yet: {stderr}");
    } else {
        assert!(!ok, "read lz4 results without the lz4 package?");
        assert!(stderr.contains("UnsupportedCodecError"), "{stderr}");
    }
    Ok(())
}
