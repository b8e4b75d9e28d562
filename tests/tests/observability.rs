//! The operator's view over HTTP: the pipeline runs on the embedded broker with the real
//! model; `/metrics` is scraped and parsed with a Prometheus text-format parser, and its
//! counters must agree with what was processed; `/readyz` turns ready; `/v1/status` tells the
//! same story; admin endpoints refuse requests without the token, and pause/resume work.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use prometheus_parse::{Sample, Scrape, Value};
use tessera::embedded::{CameraFrame, Output, publish_frames};
use tessera::http::HttpServer;
use tessera_actors::Monitor;
use tessera_actors::observe::metrics::names;
use tessera_tests::assets_dir;
use tessera_tests::harness::{FRAMES, Harness, camera_frames};
use tessera_tests::http::{get_until, request};

const TOKEN: &str = "observability-test-token";

fn parse(text: &str) -> anyhow::Result<Scrape> {
    Ok(Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))?)
}

fn matches(sample: &Sample, name: &str, labels: &[(&str, &str)]) -> bool {
    sample.metric == name
        && labels
            .iter()
            .all(|(key, value)| sample.labels.get(key) == Some(*value))
}

/// The value of a counter, gauge or untyped sample (histograms' `_count`/`_sum` are untyped).
fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| matches(s, name, labels))
        .and_then(|s| match s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => Some(v),
            _ => None,
        })
}

/// The sum over every series of `name`.
fn total(scrape: &Scrape, name: &str) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .map(|s| match s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

fn present(scrape: &Scrape, family: &str) -> bool {
    scrape.samples.iter().any(|s| {
        s.metric == family
            || s.metric == format!("{family}_count")
            || s.metric == format!("{family}_bucket")
    })
}

async fn scrape_until(base: &str, done: impl Fn(&Scrape) -> bool) -> anyhow::Result<Scrape> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let answer = get_until(&format!("{base}/metrics"), Duration::from_secs(10), |a| {
            a.status == 200
        })
        .await?;
        let scrape = parse(&answer.body)?;
        if done(&scrape) || Instant::now() >= deadline {
            return Ok(scrape);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_health_status_and_admin_over_http() -> anyhow::Result<()> {
    let Some(assets) = assets_dir() else {
        return Ok(());
    };
    let dog = std::fs::read(assets.join("images/dog.jpg"))?;
    let harness = Harness::start(2)?;
    let mut config = harness.config("observability");
    config.http.address = "127.0.0.1:0".into();
    config.http.admin_token = Some(TOKEN.into());
    config.kafka.statistics_interval = Duration::from_millis(500);
    // Shorter than the paused window below: liveness must come from the consumer's polling,
    // not from frames flowing.
    config.http.liveness_timeout = Duration::from_secs(2);

    let monitor = Monitor::new(
        "observability",
        "observability",
        config.http.liveness_timeout,
    );
    let http = HttpServer::start(&config.http, monitor.clone()).await?;
    let base = format!("http://{}", http.local_addr());

    // Before the pipeline starts: alive, not ready.
    let ready = request("GET", &format!("{base}/readyz"), None).await?;
    assert_eq!(ready.map(|a| a.status), Some(503));

    // Two cameras of good frames, and bad frames of known kinds.
    let mut frames = camera_frames("cam-a", &dog, 0..3);
    frames.extend(camera_frames("cam-b", &dog, 0..3));
    let bad = |frame_id: &str, camera: &[u8], payload: Vec<u8>| CameraFrame {
        camera: camera.to_vec(),
        frame_id: frame_id.into(),
        payload,
        content_type: None,
        capture_ms: 0,
    };
    let bad_frames = vec![
        bad("corrupt-1", b"cam-a", dog[..dog.len() / 2].to_vec()),
        bad("corrupt-2", b"cam-b", dog[..dog.len() / 3].to_vec()),
        bad("empty", b"cam-a", Vec::new()),
        bad("no-camera", b"", dog.clone()),
    ];
    let good = frames.len();
    frames.extend(bad_frames);
    publish_frames(&harness.brokers, FRAMES, &frames).await?;

    let pipeline =
        tessera_actors::start_monitored(config, "observability", Some(&assets), monitor.clone())
            .await?;
    let ready = get_until(&format!("{base}/readyz"), Duration::from_secs(60), |a| {
        a.status == 200
    })
    .await?;
    assert_eq!(ready.status, 200, "{}", ready.body);

    let outputs = harness.read(frames.len(), Duration::from_secs(240)).await?;
    assert_eq!(outputs.len(), frames.len());
    let tiles: usize = outputs
        .iter()
        .filter_map(Output::result)
        .map(|r| r.tile_count)
        .sum();
    let mut kinds: HashMap<String, usize> = HashMap::new();
    for output in &outputs {
        if let Output::DeadLetter { kind, .. } = output {
            *kinds.entry(kind.clone()).or_default() += 1;
        }
    }
    assert_eq!(kinds.get("corrupt_image"), Some(&2), "{kinds:?}");

    // Acknowledgements are counted just after delivery, and lag comes with the statistics.
    let scrape = scrape_until(&base, |s| {
        value(s, names::FRAMES_PUBLISHED, &[]) == Some(good as f64)
            && total(s, names::FRAMES_DEAD_LETTERED) == (frames.len() - good) as f64
            && s.samples
                .iter()
                .filter(|x| x.metric == names::CONSUMER_LAG)
                .count()
                == 2
    })
    .await?;

    // Every metric family is exposed.
    for family in names::ALL.iter().chain(names::PROCESS.iter()) {
        assert!(present(&scrape, family), "{family} missing from /metrics");
    }
    // The counters agree with what was processed.
    let count = |name: &str, labels: &[(&str, &str)]| value(&scrape, name, labels);
    assert_eq!(
        count(names::FRAMES_CONSUMED, &[]),
        Some(frames.len() as f64)
    );
    assert_eq!(count(names::FRAMES_PUBLISHED, &[]), Some(good as f64));
    assert_eq!(count(names::FRAMES_SKIPPED, &[]), Some(0.0));
    for (kind, expected) in [
        ("corrupt_image", 2.0),
        ("empty_payload", 1.0),
        ("missing_key", 1.0),
    ] {
        assert_eq!(
            count(names::FRAMES_DEAD_LETTERED, &[("kind", kind)]),
            Some(expected),
            "{kind}"
        );
    }
    assert_eq!(
        count(names::FRAMES_DEAD_LETTERED, &[("kind", "inference")]),
        Some(0.0)
    );
    assert_eq!(count(names::TILES_INFERRED, &[]), Some(tiles as f64));
    // YOLOX-Nano has a fixed batch of one: one model run per tile.
    let batches = format!("{}_count", names::BATCH_SIZE);
    assert_eq!(count(&batches, &[]), Some(tiles as f64));
    let stage = format!("{}_count", names::STAGE_LATENCY);
    assert_eq!(count(&stage, &[("stage", "inference")]), Some(tiles as f64));
    assert_eq!(
        count(&stage, &[("stage", "queue_wait")]),
        Some(tiles as f64)
    );
    assert_eq!(count(&stage, &[("stage", "decode")]), Some(good as f64));
    assert_eq!(
        count(&stage, &[("stage", "tile_preprocess")]),
        Some(good as f64)
    );
    assert_eq!(count(&stage, &[("stage", "merge")]), Some(good as f64));
    assert_eq!(
        count(&stage, &[("stage", "publish")]),
        Some(frames.len() as f64)
    );
    let end_to_end = format!("{}_count", names::END_TO_END_LATENCY);
    assert_eq!(count(&end_to_end, &[]), Some(good as f64));
    assert_eq!(count(names::FRAMES_IN_FLIGHT, &[]), Some(0.0));
    assert_eq!(count(names::PARTITIONS_ASSIGNED, &[]), Some(2.0));
    // Every queue drained: as many items popped as pushed.
    for queue in ["prepare", "recognize", "publish", "delivery"] {
        let pushed = count(names::QUEUE_PUSHED, &[("queue", queue)]);
        assert!(pushed.is_some_and(|p| p > 0.0), "{queue}: {pushed:?}");
        assert_eq!(
            count(names::QUEUE_POPPED, &[("queue", queue)]),
            pushed,
            "{queue}"
        );
    }
    for partition in ["0", "1"] {
        assert_eq!(
            count(
                names::CONSUMER_LAG,
                &[("topic", FRAMES), ("partition", partition)]
            ),
            Some(0.0),
            "partition {partition}: everything consumed is stored"
        );
    }
    assert_eq!(
        count(
            names::MODEL_INFO,
            &[
                ("model", "yolox-nano"),
                ("head_version", "base"),
                ("execution_provider", "cpu")
            ]
        ),
        Some(1.0)
    );
    assert_eq!(
        count(names::ACTOR_RESTARTS, &[("actor", "recognize")]),
        Some(0.0)
    );

    // The status document tells the same story.
    let status = get_until(&format!("{base}/v1/status"), Duration::from_secs(10), |a| {
        a.status == 200
    })
    .await?;
    let status: serde_json::Value = serde_json::from_str(&status.body)?;
    assert_eq!(status["phase"], "running");
    assert_eq!(status["ready"], true);
    assert_eq!(status["model"]["name"], "yolox-nano");
    assert_eq!(status["model"]["execution_provider"], "cpu");
    assert_eq!(status["totals"]["frames_consumed"], frames.len());
    assert_eq!(
        status["totals"]["frames_dead_lettered"],
        frames.len() - good
    );
    let partitions = status["partitions"].as_array().cloned().unwrap_or_default();
    assert_eq!(partitions.len(), 2, "{status}");
    let committable: i64 = partitions
        .iter()
        .map(|p| p["committable_offset"].as_i64().unwrap_or(0))
        .sum();
    assert_eq!(committable, frames.len() as i64, "{status}");

    // Admin endpoints refuse a missing or wrong token, and change nothing then.
    let pause = format!("{base}/v1/pause");
    for token in [None, Some("wrong-token")] {
        let answer = request("POST", &pause, token).await?;
        assert_eq!(answer.map(|a| a.status), Some(401), "token {token:?}");
    }
    assert!(!monitor.is_paused());

    // Paused: new frames stay in Kafka.
    let answer = request("POST", &pause, Some(TOKEN)).await?;
    assert_eq!(answer.as_ref().map(|a| a.status), Some(200), "{answer:?}");
    let paused = scrape_until(&base, |s| {
        value(s, names::PARTITIONS_PAUSED, &[]) == Some(2.0)
    })
    .await?;
    assert_eq!(value(&paused, names::OPERATOR_PAUSED, &[]), Some(1.0));
    assert_eq!(value(&paused, names::PARTITIONS_PAUSED, &[]), Some(2.0));
    let more = camera_frames("cam-c", &dog, 0..3);
    publish_frames(&harness.brokers, FRAMES, &more).await?;
    // A negative can only be observed over a window: a few statistics intervals.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let still = scrape_until(&base, |_| true).await?;
    assert_eq!(
        value(&still, names::FRAMES_CONSUMED, &[]),
        Some(frames.len() as f64),
        "nothing is consumed while paused"
    );
    let lag = total(&still, names::CONSUMER_LAG);
    assert!(lag >= 1.0, "the waiting frames show as lag: {lag}");
    let health = request("GET", &format!("{base}/healthz"), None).await?;
    assert_eq!(
        health.as_ref().map(|a| a.status),
        Some(200),
        "a paused consumer still polls: {health:?}"
    );

    // Resumed: they are processed.
    let answer = request("POST", &format!("{base}/v1/resume"), Some(TOKEN)).await?;
    assert_eq!(answer.map(|a| a.status), Some(200));
    let resumed = scrape_until(&base, |s| {
        value(s, names::FRAMES_PUBLISHED, &[]) == Some((good + more.len()) as f64)
    })
    .await?;
    assert_eq!(
        value(&resumed, names::FRAMES_PUBLISHED, &[]),
        Some((good + more.len()) as f64)
    );
    assert_eq!(value(&resumed, names::OPERATOR_PAUSED, &[]), Some(0.0));

    pipeline.shutdown(Duration::from_secs(10)).await?;
    let after = request("GET", &format!("{base}/readyz"), None).await?;
    assert_eq!(after.map(|a| a.status), Some(503), "not ready once stopped");
    http.stop().await;
    Ok(())
}
