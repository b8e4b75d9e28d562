//! Process faults of `tessera run` against a broker it does not own: kill -9 mid-stream and a
//! restart; SIGTERM under load (what the shutdown commits bounds what a restart re-processes);
//! and overload (input far faster than processing: memory stays bounded because partitions are
//! paused, not buffered).
//! (Lives in the binary's package because only it can locate the built binary.)

mod common;

use common::broker::TestBroker;
use common::process::{Tessera, outputs_beyond_commit};
use common::{assets_dir, delivery};

use std::path::{Path, PathBuf};
use std::time::Duration;

use delivery::{
    CAMERAS, COMPLETION, DLQ, FRAMES, OUTPUTS, RESULTS, STARTUP, assert_fits_mock_log,
    camera_frames, check_delivery, final_report, read_all_outputs, read_until_covered,
    record_count, wait_committed_to_end, wait_for_records,
};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tessera::embedded::{CameraFrame, publish_frames};

/// The broker `TESSERA_TEST_BROKER` names (mock or tansu) with the input, results and
/// dead-letter topics.
fn broker(input_partitions: i32) -> anyhow::Result<(TestBroker, String)> {
    let kafka = TestBroker::from_env()?;
    let brokers = kafka.bootstrap_servers();
    kafka.create_topic(FRAMES, input_partitions)?;
    kafka.create_topic(RESULTS, 2)?;
    kafka.create_topic(DLQ, 1)?;
    Ok((kafka, brokers))
}

/// Writes the configuration file every `tessera run` of a test shares.
fn write_config(dir: &Path, kafka: &TestBroker, group: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join("tessera.toml");
    let brokers = kafka.bootstrap_servers();
    let mut text = format!(
        "[kafka]\nbrokers = \"{brokers}\"\ngroup_id = \"{group}\"\ninput_topics = [\"{FRAMES}\"]\n\
         results_topic = \"{RESULTS}\"\ndlq_topic = \"{DLQ}\"\n\n[model]\nmanifest = \"{}\"\n\n\
         [recognize]\nworkers = 1\n",
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../models/manifests/yolox-nano/model.toml"
        )
    );
    text.push_str("\n[kafka.producer_properties]\n");
    for (key, value) in kafka.producer_properties() {
        text.push_str(&format!("\"{key}\" = \"{value}\"\n"));
    }
    std::fs::write(&path, text)?;
    Ok(path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_stream_then_restart_loses_nothing() -> anyhow::Result<()> {
    let Some(assets) = assets_dir() else {
        return Ok(());
    };
    let name = "kill -9";
    let (kafka, brokers) = broker(2)?;
    let group = "process-kill";
    let dog = std::fs::read(assets.join("images/dog.jpg"))?;
    // Tiled (7 model runs a frame): slow enough that the kill lands mid-stream.
    let sent = camera_frames(&CAMERAS, 20, &dog);
    let landed = publish_frames(&brokers, FRAMES, &sent).await?;
    assert_fits_mock_log(&sent, &landed);
    let dir = tempfile::tempdir()?;
    let config = write_config(dir.path(), &kafka, group)?;
    // The killed member never leaves the group: a short session lets the restart take its
    // partitions over without waiting 30 s.
    let overrides = [
        "kafka.session_timeout=6s".to_owned(),
        "kafka.revoke_drain_timeout=3s".to_owned(),
        "flow.max_in_flight_frames=4".to_owned(),
    ];

    let mut first = Tessera::spawn("first", &config, &assets, &overrides)?;
    wait_for_records(&brokers, &OUTPUTS, 6, STARTUP).await?;
    first.signal("KILL")?;
    let status = first.wait_exit(Duration::from_secs(30)).await?;
    assert_eq!(status.code(), None, "killed by a signal");
    let published = record_count(&brokers, &OUTPUTS).await?;
    assert!(
        (published as usize) < sent.len(),
        "all {published} outputs were out before the kill; send more frames"
    );
    // What the restart will publish a second time: outputs at or past the last commit.
    let replayed = outputs_beyond_commit(&brokers, group, &sent, &landed).await?;
    eprintln!(
        "{name}: killed after {published} outputs; {} of them past the committed offsets",
        replayed.len()
    );

    let mut second = Tessera::spawn("restart", &config, &assets, &overrides)?;
    read_until_covered(&brokers, RESULTS, DLQ, &sent, COMPLETION).await?;
    let status = second.terminate(Duration::from_secs(60)).await?;
    assert_eq!(status.code(), Some(0), "graceful shutdown exits 0");

    let report = final_report(&brokers, &sent, true, name).await?;
    report.assert_ok();
    assert_eq!(report.dead_letters, 0, "every frame is a valid image");
    // Only frames published past the last commit come out twice (each at most twice). A
    // commit the killed process had already sent may still land after it was read, so the
    // duplicates may be fewer than `replayed`, never others.
    for (id, count) in &report.duplicated {
        assert!(
            replayed.contains(id) && *count == 2,
            "{id} published {count} times, but it was not past the committed offsets {replayed:?}"
        );
    }
    wait_committed_to_end(&brokers, group, FRAMES, Duration::from_secs(30)).await?;
    Ok(())
}

/// SIGTERM while busy, with `drain` for the frames in flight; the promise: every frame below
/// the committed offsets has its output, and at most the in-flight window of frames past
/// them does (those, and only those, a restart publishes again).
async fn shutdown_under_load(name: &str, group: &str, drain: &str) -> anyhow::Result<()> {
    let Some(assets) = assets_dir() else {
        return Ok(());
    };
    let window = 4;
    let (kafka, brokers) = broker(2)?;
    let dog = std::fs::read(assets.join("images/dog.jpg"))?;
    let sent = camera_frames(&CAMERAS, 24, &dog);
    let landed = publish_frames(&brokers, FRAMES, &sent).await?;
    assert_fits_mock_log(&sent, &landed);
    let dir = tempfile::tempdir()?;
    let config = write_config(dir.path(), &kafka, group)?;
    let overrides = [
        format!("flow.max_in_flight_frames={window}"),
        format!("flow.drain_timeout={drain}"),
    ];

    let mut first = Tessera::spawn("first", &config, &assets, &overrides)?;
    wait_for_records(&brokers, &OUTPUTS, 6, STARTUP).await?;
    let status = first.terminate(Duration::from_secs(60)).await?;
    assert_eq!(status.code(), Some(0), "graceful shutdown exits 0");
    let published = record_count(&brokers, &OUTPUTS).await?;
    assert!(
        (published as usize) < sent.len(),
        "all {published} outputs were out before SIGTERM; send more frames"
    );
    let beyond = outputs_beyond_commit(&brokers, group, &sent, &landed).await?;
    eprintln!(
        "{name}: stopped after {published} outputs; {} past the committed offsets {beyond:?} \
         (in-flight window {window})",
        beyond.len()
    );
    assert!(
        beyond.len() <= window,
        "{} frames with outputs past the committed offsets, more than the in-flight window {window}",
        beyond.len()
    );
    let stopped = check_delivery(
        &sent,
        &read_all_outputs(&brokers, RESULTS, DLQ, Duration::from_secs(60)).await?,
        false,
    );
    assert_eq!(stopped.duplicates, 0, "{stopped}");
    assert!(stopped.out_of_order.is_empty(), "{stopped}");

    // The restart re-processes from the committed offsets: the duplicates are exactly the
    // frames that were past them.
    // (With the full drain: its own stop must not add duplicates to the count.)
    let restart = [
        format!("flow.max_in_flight_frames={window}"),
        "flow.drain_timeout=20s".to_owned(),
    ];
    let mut second = Tessera::spawn("restart", &config, &assets, &restart)?;
    read_until_covered(&brokers, RESULTS, DLQ, &sent, COMPLETION).await?;
    let status = second.terminate(Duration::from_secs(60)).await?;
    assert_eq!(status.code(), Some(0), "graceful shutdown exits 0");
    let report = final_report(&brokers, &sent, true, name).await?;
    report.assert_ok();
    assert_eq!(report.dead_letters, 0, "every frame is a valid image");
    assert_eq!(
        report.duplicates,
        beyond.len(),
        "a restart publishes again exactly the frames past the commit"
    );
    wait_committed_to_end(&brokers, group, FRAMES, Duration::from_secs(30)).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_commits_so_a_restart_reprocesses_at_most_the_window()
-> anyhow::Result<()> {
    shutdown_under_load("sigterm, drained", "process-sigterm", "20s").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_no_drain_time_still_bounds_reprocessing_by_the_window() -> anyhow::Result<()>
{
    // Frames in flight are abandoned at once; some of them may still be published after the
    // commit. They are within the window, and the restart processes them again.
    shutdown_under_load("sigterm, no drain", "process-sigterm-nodrain", "0s").await
}

/// A 1080p camera-like JPEG: the dog photo scaled up, with sensor-like noise so it
/// compresses like a real frame rather than a smooth upscale.
fn full_hd_frame(dog: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut image = image::load_from_memory(dog)?
        .resize_exact(1920, 1080, image::imageops::FilterType::Triangle)
        .to_rgb8();
    let mut state: u32 = 0x9e37_79b9;
    for pixel in image.pixels_mut() {
        for channel in pixel.0.iter_mut() {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            let noise = (state % 25) as i16 - 12;
            *channel = (i16::from(*channel) + noise).clamp(0, 255) as u8;
        }
    }
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90).encode_image(&image)?;
    Ok(jpeg)
}

/// Publishes each camera's frames to its own partition (as the key would, but with one camera
/// per partition guaranteed, so no partition outgrows the mock broker's log).
async fn publish_one_camera_per_partition(
    brokers: &str,
    frames: &[(i32, CameraFrame)],
) -> anyhow::Result<()> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("message.max.bytes", "67108864")
        .create()?;
    for (partition, frame) in frames {
        let record = FutureRecord::to(FRAMES)
            .partition(*partition)
            .key(&frame.camera)
            .payload(&frame.payload);
        producer
            .send(record, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| anyhow::anyhow!("publishing {}: {e}", frame.frame_id))?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_keeps_memory_bounded_by_pausing_partitions() -> anyhow::Result<()> {
    let Some(assets) = assets_dir() else {
        return Ok(());
    };
    let name = "overload";
    let frame = full_hd_frame(&std::fs::read(assets.join("images/dog.jpg"))?)?;
    // The mock broker keeps ~5 MiB per partition, so the backlog is spread over many cameras
    // (one per partition), each with as many frames as its partition holds.
    let wanted: usize = 480;
    let per_camera = (delivery::MOCK_PARTITION_LOG_BYTES * 8 / 10 / frame.len()).max(1);
    let cameras = wanted.div_ceil(per_camera);
    let (kafka, brokers) = broker(i32::try_from(cameras)?)?;
    let group = "process-overload";
    let mut sent = Vec::new();
    for index in 0..per_camera {
        for camera in 0..cameras {
            let frame = CameraFrame {
                camera: format!("cam-{camera:03}").into_bytes(),
                frame_id: format!("cam-{camera:03}-{index}"),
                payload: frame.clone(),
                content_type: None,
                capture_ms: index as i64,
            };
            sent.push((i32::try_from(camera)?, frame));
        }
    }
    let decoded_frame = 1920 * 1080 * 3;
    let input_bytes = (sent.len() * frame.len()) as u64;
    let decoded_bytes = (sent.len() * decoded_frame) as u64;
    publish_one_camera_per_partition(&brokers, &sent).await?;
    let dir = tempfile::tempdir()?;
    let config = write_config(dir.path(), &kafka, group)?;

    // Default flow settings; tiled 1080p frames (19 model runs each) on one worker: the input
    // is all there at once, orders of magnitude faster than it can be processed.
    let mut run = Tessera::spawn("overload", &config, &assets, &[])?;
    let sampling = Duration::from_secs(20);
    let interval = Duration::from_millis(200);
    // Sample from the start (model load included) until `sampling` after the first output.
    let mut max_rss = 0;
    let mut samples = 0;
    let mut first_output = None;
    let deadline = tokio::time::Instant::now() + STARTUP + sampling;
    loop {
        let now = tokio::time::Instant::now();
        if let Some(rss) = run.resident_bytes() {
            max_rss = max_rss.max(rss);
            samples += 1;
        }
        anyhow::ensure!(
            run.child.try_wait()?.is_none(),
            "tessera run exited during the overload"
        );
        if first_output.is_none() && record_count(&brokers, &OUTPUTS).await.unwrap_or(0) > 0 {
            first_output = Some(now);
        }
        if first_output.is_some_and(|t| now.duration_since(t) >= sampling) {
            break;
        }
        anyhow::ensure!(now < deadline, "no output within {STARTUP:?}");
        tokio::time::sleep(interval).await;
    }
    let processed = record_count(&brokers, &OUTPUTS).await?;
    let status = run.terminate(Duration::from_secs(90)).await?;
    assert_eq!(status.code(), Some(0), "graceful shutdown exits 0");

    const MIB: u64 = 1 << 20;
    // Far below what buffering the input decoded would take (~2.8 GiB), and below the encoded
    // input (~460 MiB) on top of the runtime and model: a pipeline that buffered the backlog,
    // decoded or not, would exceed it; one that pauses holds the in-flight window only.
    let bound = 512 * MIB;
    eprintln!(
        "{name}: {} frames of {} KiB from {cameras} cameras ({} MiB encoded, {} MiB decoded); \
         processed {processed} while sampling; max RSS {} MiB over {samples} samples; bound {} MiB",
        sent.len(),
        frame.len() / 1024,
        input_bytes / MIB,
        decoded_bytes / MIB,
        max_rss / MIB,
        bound / MIB,
    );
    assert!(
        (processed as usize) < sent.len() / 2,
        "input was not produced faster than processed"
    );
    assert!(
        max_rss < bound,
        "resident memory {} MiB exceeded {} MiB",
        max_rss / MIB,
        bound / MIB
    );
    assert!(
        run.logged("Paused partitions"),
        "no \"Paused partitions\" log line: consumption was not paused at the in-flight budget"
    );
    Ok(())
}
