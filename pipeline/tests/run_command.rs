//! `tessera run` as an operator runs it: against a broker it does not own, configured by file,
//! environment and flags, until SIGTERM; then it drains, commits and exits 0.
//! (Lives in the binary's package because only it can locate the built binary.)

mod common;

use common::assets_dir;

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tessera::embedded::{CameraFrame, EmbeddedKafka, Output, publish_frames, read_outputs};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_processes_until_sigterm_then_commits_and_exits_zero() -> anyhow::Result<()> {
    let Some(assets) = assets_dir() else {
        return Ok(());
    };
    let kafka = EmbeddedKafka::start(1)?;
    let brokers = kafka.bootstrap_servers();
    for topic in ["camera-frames", "results", "dead-letters"] {
        kafka.create_topic(topic, 1)?;
    }
    let dog = std::fs::read(assets.join("images/dog.jpg"))?;
    let frames: Vec<CameraFrame> = (0..4)
        .map(|i| CameraFrame {
            camera: b"cam-1".to_vec(),
            frame_id: format!("frame-{i}"),
            payload: dog.clone(),
            content_type: Some("image/jpeg".into()),
            capture_ms: i,
        })
        .collect();
    publish_frames(&brokers, "camera-frames", &frames).await?;

    // File, environment and flag layers all take part.
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("tessera.toml");
    std::fs::write(
        &config,
        format!(
            "[kafka]\nbrokers = \"{brokers}\"\ngroup_id = \"run-test\"\ninput_topics = [\"camera-frames\"]\nresults_topic = \"wrong\"\n\n[model]\nmanifest = \"{}\"\n",
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../models/manifests/yolox-nano/model.toml"
            )
        ),
    )?;
    let http_address = free_local_address()?;
    let mut child = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .arg("run")
        .arg("--config")
        .arg(&config)
        .args(["--set", "kafka.results_topic=results"])
        .env("TESSERA__KAFKA__DLQ_TOPIC", "dead-letters")
        .env("TESSERA__HTTP__ADDRESS", &http_address)
        .env("TESSERA_ASSETS", &assets)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()?;

    let expected: HashSet<String> = frames.iter().map(|f| f.frame_id.clone()).collect();
    let outputs = read_outputs(
        &brokers,
        "results",
        "dead-letters",
        Duration::from_secs(120),
        |_| {},
        |outputs| outputs.len() >= expected.len(),
    )
    .await?;
    let seen: HashSet<String> = outputs
        .iter()
        .filter_map(|o| match o {
            Output::Result { result, .. } => Some(result.frame_id.clone()),
            Output::DeadLetter { .. } => None,
        })
        .collect();
    assert_eq!(seen, expected);

    // The binary serves its endpoints: ready, and its metrics count what it processed.
    let base = format!("http://{http_address}");
    let ready = get_until(&format!("{base}/readyz"), |status, _| status == 200).await?;
    assert_eq!(ready.0, 200, "{}", ready.1);
    let metrics = get_until(&format!("{base}/metrics"), |_, body| {
        body.contains("tessera_publish_frames_published_total 4")
    })
    .await?;
    assert!(
        metrics.1.contains("tessera_ingest_frames_consumed_total 4"),
        "{}",
        metrics.1
    );

    // The container's HEALTHCHECK: `tessera probe` exits 0 on /healthz, 1 with the reason
    // on an endpoint that answers 404.
    let probe = |url: String| {
        Command::new(env!("CARGO_BIN_EXE_tessera"))
            .args(["probe", &url])
            .output()
    };
    let healthy = probe(format!("{base}/healthz"))?;
    assert_eq!(healthy.status.code(), Some(0), "{healthy:?}");
    let missing = probe(format!("{base}/no-such-endpoint"))?;
    assert_eq!(missing.status.code(), Some(1), "{missing:?}");
    assert!(String::from_utf8_lossy(&missing.stderr).contains("unhealthy: "));

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()?;
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || child.wait()).await??;
    assert_eq!(exit.code(), Some(0), "graceful shutdown exits 0");

    // The shutdown committed everything that was processed.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "run-test")
        .create()?;
    let mut partitions = TopicPartitionList::new();
    partitions.add_partition("camera-frames", 0);
    let committed = consumer.committed_offsets(partitions, Duration::from_secs(10))?;
    let offset = committed
        .find_partition("camera-frames", 0)
        .map(|p| p.offset());
    assert_eq!(offset, Some(Offset::Offset(frames.len() as i64)));
    Ok(())
}

/// A local address with a port that was free a moment ago.
fn free_local_address() -> anyhow::Result<String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.to_string())
}

/// GETs `url` until `done(status, body)` holds or 60 s pass; returns the last answer.
async fn get_until(url: &str, done: impl Fn(u16, &str) -> bool) -> anyhow::Result<(u16, String)> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let url = url.to_owned();
        let answer = tokio::task::spawn_blocking(move || -> Option<(u16, String)> {
            let agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .new_agent();
            let mut response = agent.get(&url).call().ok()?;
            let status = response.status().as_u16();
            let body = response.body_mut().read_to_string().ok()?;
            Some((status, body))
        })
        .await?;
        match answer {
            Some((status, body)) if done(status, &body) => return Ok((status, body)),
            answer if std::time::Instant::now() >= deadline => {
                return Ok(answer.unwrap_or((0, "no answer".into())));
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}
