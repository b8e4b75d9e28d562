//! Record, replay and verify: a recording made from the shared images runs through the
//! pipeline on the embedded broker and matches the committed golden, which is itself held
//! against the independent reference of step 1; a changed threshold fails with a precise
//! diff; a truncated recording is reported and its intact records still replay; the same
//! recording run twice gives identical results.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tessera::replay::compare::{Difference, FrameOutcome, Tolerance, compare};
use tessera::replay::make::MakeOptions;
use tessera::replay::play::{PlayOptions, Speed};
use tessera::replay::recording::{DamageKind, scan};
use tessera::replay::verify::{VerifyOptions, VerifyReport, load_golden};
use tessera_actors::PipelineConfig;
use tessera_tests::broker::TestBroker;
use tessera_tests::golden::{self, DetectionGolden, Found};
use tessera_tests::{assets_dir, workspace_root};

fn golden_dir() -> PathBuf {
    workspace_root().join("tests/golden/replay")
}

/// The golden's pipeline settings (full frames, NMS at 0.5, as the reference was made).
fn golden_config() -> anyhow::Result<PipelineConfig> {
    let mut config = tessera::config::load(Some(&golden_dir().join("verify.toml")), &[])?;
    tessera::assets::locate_shipped_manifest(&mut config);
    Ok(config)
}

/// The recording the golden was made from: two cameras sending every shared image, as
/// `scripts/make-replay-golden.sh` makes it.
fn shared_images_recording(assets: &Path, out: &Path) -> anyhow::Result<()> {
    let images = assets.join("images");
    tessera::replay::make::run(&MakeOptions {
        cameras: vec![("cam-a".into(), images.clone()), ("cam-b".into(), images)],
        fps: 5.0,
        topic: "frames".into(),
        start_ms: tessera::replay::parse_time("2026-11-30T08:00:00Z")
            .map_err(anyhow::Error::msg)?,
        out: out.to_path_buf(),
    })?;
    Ok(())
}

/// How many records the first `partitions` partitions of a topic hold.
fn records_on(brokers: &str, topic: &str, partitions: i32) -> anyhow::Result<i64> {
    let consumer: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "record-count")
        .create()?;
    let mut records = 0;
    for partition in 0..partitions {
        let (low, high) = rdkafka::consumer::Consumer::fetch_watermarks(
            &consumer,
            topic,
            partition,
            Duration::from_secs(10),
        )?;
        records += high - low;
    }
    Ok(records)
}

/// Verify options: the golden compared with the default tolerance, on an embedded broker.
fn options(recording: &Path, expected: &Path, assets: &Path) -> VerifyOptions {
    VerifyOptions {
        recording: recording.to_path_buf(),
        expected: expected.to_path_buf(),
        tolerance: Tolerance::default(),
        write_golden: false,
        brokers: None,
        channel: None,
        assets: Some(assets.to_path_buf()),
        idle_timeout: Duration::from_secs(120),
    }
}

async fn verify(config: PipelineConfig, options: VerifyOptions) -> anyhow::Result<VerifyReport> {
    tessera::replay::verify::run(config, &options).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_images_verify_against_the_committed_golden_which_matches_the_reference()
-> anyhow::Result<()> {
    let Some(assets) = assets_dir() else {
        return Ok(());
    };
    // The committed golden agrees with the independent reference on dog.jpg, for both cameras.
    let committed = load_golden(&golden_dir().join("shared-images.mcap"))?;
    let reference: DetectionGolden = golden::load("yolox_nano_dog_full_frame.json")?;
    for camera in ["cam-a", "cam-b"] {
        let Some(FrameOutcome::Result(dog)) =
            committed.get(&(camera.to_owned(), "dog.jpg".to_owned()))
        else {
            panic!(
                "the golden has no result for {camera} dog.jpg: {:?}",
                committed.keys()
            );
        };
        let found: Vec<Found> = dog.detections.iter().map(Found::from).collect();
        let problems = golden::detection_mismatches(&reference, &found);
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }

    let dir = tempfile::tempdir()?;
    let recording = dir.path().join("shared-images.mcap");
    shared_images_recording(&assets, &recording)?;
    let golden = golden_dir().join("shared-images.mcap");
    let report = verify(golden_config()?, options(&recording, &golden, &assets)).await?;
    let comparison = report.comparison.as_ref().expect("compared");
    assert!(report.passed(), "{comparison}");
    assert_eq!(comparison.compared, committed.len());
    assert_eq!(report.frames, committed.len());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raised_score_threshold_fails_verify_with_a_precise_diff() -> anyhow::Result<()> {
    let Some(assets) = assets_dir() else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let recording = dir.path().join("shared-images.mcap");
    shared_images_recording(&assets, &recording)?;
    // The shipped manifest with its score threshold raised from 0.25 to 0.5.
    let manifest_dir = dir.path().join("yolox-nano");
    std::fs::create_dir_all(&manifest_dir)?;
    let shipped = workspace_root().join("models/manifests/yolox-nano");
    for entry in std::fs::read_dir(&shipped)? {
        let path = entry?.path();
        std::fs::copy(&path, manifest_dir.join(path.file_name().expect("a name")))?;
    }
    let manifest = manifest_dir.join("model.toml");
    let text = std::fs::read_to_string(&manifest)?;
    assert!(
        text.contains("score = 0.25"),
        "the shipped threshold moved: {text}"
    );
    std::fs::write(&manifest, text.replace("score = 0.25", "score = 0.5"))?;
    let mut config = golden_config()?;
    config.model.manifest = manifest;

    let golden = golden_dir().join("shared-images.mcap");
    let report = verify(config, options(&recording, &golden, &assets)).await?;
    let comparison = report.comparison.as_ref().expect("compared");
    assert!(!report.passed(), "a raised threshold still matched");
    assert!(comparison.missing_frames.is_empty() && comparison.extra_frames.is_empty());
    // Exactly the golden's detections scoring below 0.5 are missing, and nothing else differs.
    let golden = load_golden(&golden_dir().join("shared-images.mcap"))?;
    for (key, outcome) in &golden {
        let FrameOutcome::Result(result) = outcome else {
            continue;
        };
        let mut expected: Vec<String> = result
            .detections
            .iter()
            .filter(|d| d.score < 0.5)
            .map(|d| Difference::MissingDetection(d.clone()).to_string())
            .collect();
        let mut found: Vec<String> = comparison
            .differing
            .get(key)
            .map(|differences| differences.iter().map(ToString::to_string).collect())
            .unwrap_or_default();
        expected.sort();
        found.sort();
        assert_eq!(found, expected, "{key:?}");
    }
    let text = comparison.to_string();
    assert!(
        text.contains("frame cam-a / dog.jpg:\n  - detection "),
        "{text}"
    );
    assert!(text.contains("missing detections"), "{text}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_recording_is_reported_and_its_intact_records_still_replay()
-> anyhow::Result<()> {
    let Some(assets) = assets_dir() else {
        return Ok(());
    };
    // Enough frames for several 4 MiB chunks: 12 copies of each shared image per camera.
    let dir = tempfile::tempdir()?;
    let images = dir.path().join("images");
    std::fs::create_dir_all(&images)?;
    for entry in std::fs::read_dir(assets.join("images"))? {
        let path = entry?.path();
        let name = path
            .file_name()
            .expect("a name")
            .to_string_lossy()
            .into_owned();
        for copy in 0..12 {
            std::fs::copy(&path, images.join(format!("{copy:02}-{name}")))?;
        }
    }
    let whole = dir.path().join("whole.mcap");
    tessera::replay::make::run(&MakeOptions {
        cameras: vec![("cam-a".into(), images.clone()), ("cam-b".into(), images)],
        fps: 10.0,
        topic: "frames".into(),
        start_ms: 1_700_000_000_000,
        out: whole.clone(),
    })?;
    let whole_scan = scan(&whole)?;
    assert!(whole_scan.damage.is_none());
    let bytes = std::fs::read(&whole)?;
    let cut = dir.path().join("cut.mcap");
    std::fs::write(&cut, &bytes[..bytes.len() * 6 / 10])?;

    let cut_scan = scan(&cut)?;
    let damage = cut_scan.damage.clone().expect("the cut is reported");
    assert_eq!(damage.kind, DamageKind::Truncated, "{damage}");
    assert!(damage.to_string().contains("truncated"), "{damage}");
    let intact = cut_scan.messages;
    assert!(
        intact > 0 && intact < whole_scan.messages,
        "{intact} of {}",
        whole_scan.messages
    );

    let kafka = TestBroker::from_env()?;
    kafka.create_topic("replayed", 2)?;
    let played = tessera::replay::play::run(&PlayOptions {
        file: cut,
        brokers: kafka.bootstrap_servers(),
        topic: "replayed".into(),
        channel: None,
        speed: Speed::Max,
        loops: 1,
        properties: kafka.producer_properties(),
    })
    .await?;
    assert_eq!(played.published, intact);
    assert_eq!(played.damage.map(|d| d.kind), Some(DamageKind::Truncated));
    // What was played is on the broker, each record whole.
    let on_broker = records_on(&kafka.bootstrap_servers(), "replayed", 2)?;
    assert_eq!(on_broker as u64, intact);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_recording_run_twice_gives_identical_results() -> anyhow::Result<()> {
    let Some(assets) = assets_dir() else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let recording = dir.path().join("shared-images.mcap");
    shared_images_recording(&assets, &recording)?;
    let mut runs = Vec::new();
    for run in ["first", "second"] {
        let golden = dir.path().join(format!("{run}.mcap"));
        let report = verify(
            golden_config()?,
            VerifyOptions {
                write_golden: true,
                ..options(&recording, &golden, &assets)
            },
        )
        .await?;
        assert!(report.written.is_some() && report.passed());
        runs.push(load_golden(&golden)?);
    }
    // No tolerance at all: identical boxes and scores, everything but clocks and offsets.
    let exact = Tolerance {
        iou: 1.0,
        score: 0.0,
    };
    let comparison = compare(&runs[0], &runs[1], exact);
    assert!(comparison.matches(), "{comparison}");
    assert_eq!(comparison.compared, 4);
    let detections: usize = runs[0]
        .values()
        .map(|o| match o {
            FrameOutcome::Result(r) => r.detections.len(),
            FrameOutcome::DeadLetter { .. } => 0,
        })
        .sum();
    assert!(
        detections > 10,
        "the runs found only {detections} detections"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_on_a_users_broker_runs_only_the_recording_judged_by_its_own_clock()
-> anyhow::Result<()> {
    let Some(assets) = assets_dir() else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let recording = dir.path().join("shared-images.mcap");
    shared_images_recording(&assets, &recording)?;
    // "The user's broker": topics made beforehand, the input already holding a frame that is
    // not part of the recording.
    let kafka = TestBroker::from_env()?;
    let brokers = kafka.bootstrap_servers();
    let mut config = golden_config()?;
    config
        .kafka
        .producer_properties
        .extend(kafka.producer_properties());
    kafka.create_topic(&config.kafka.input_topics[0], 2)?;
    kafka.create_topic(&config.kafka.results_topic, 2)?;
    kafka.create_topic(&config.kafka.dlq_topic, 1)?;
    let old = tessera::embedded::CameraFrame {
        camera: b"cam-old".to_vec(),
        frame_id: "old".into(),
        payload: std::fs::read(assets.join("images/dog.jpg"))?,
        content_type: None,
        capture_ms: tessera_actors::protocol::now_ms(),
    };
    tessera::embedded::publish_frames(&brokers, &config.kafka.input_topics[0], &[old]).await?;
    // The recording is a day old: judged by the wall clock, drop_stale would skip it all.
    config.flow.lag_policy = tessera_actors::config::LagPolicy::DropStale;
    config.flow.max_age = Duration::from_secs(10);

    let golden = golden_dir().join("shared-images.mcap");
    let report = verify(
        config.clone(),
        VerifyOptions {
            brokers: Some(brokers.clone()),
            ..options(&recording, &golden, &assets)
        },
    )
    .await?;
    let comparison = report.comparison.as_ref().expect("compared");
    assert!(report.passed(), "{comparison}");
    // Only the recording's four frames were processed: the old frame was left alone.
    let results = records_on(&brokers, &config.kafka.results_topic, 2)?;
    assert_eq!(results, 4);
    Ok(())
}
