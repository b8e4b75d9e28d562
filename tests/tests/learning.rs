//! Learning on the job, end to end on the embedded broker: frames are classified, labels on
//! the labels topic refer to them, a fine-tune round trains, validates and promotes a head,
//! and the results switch to it. A class the live head does not know is learned from labels
//! while the classes it knew stay as accurate; labels assigned at random yield a rejected head
//! and the live head stays. The labelled images are augmented crops the test makes from the
//! shared images (nothing is committed).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tessera::embedded::{CameraFrame, Output, read_outputs};
use tessera::http::HttpServer;
use tessera_actors::learn::{Learning, RoundOutcome};
use tessera_actors::{FrameResult, GLOBAL_SCOPE, PipelineConfig, PipelineHandle};
use tessera_tests::harness::{DLQ, Harness, RESULTS, eventually};
use tessera_tests::http::{request, request_with_body};
use tessera_tests::learning::{
    BICYCLE, CAR, DOG, LABELS, PARKING, Scene, augmented, examples_reach, jpeg, results_of, round,
    send_labels,
};
use tessera_tests::{assets_dir, manifest};

/// Frames of `scene`, `count` of them, ids `<prefix>-<label>-<i>`.
fn frames_of(
    assets: &std::path::Path,
    scene: Scene,
    count: usize,
    seed: u64,
    prefix: &str,
) -> anyhow::Result<Vec<(CameraFrame, &'static str)>> {
    augmented(assets, scene, count, seed)?
        .iter()
        .enumerate()
        .map(|(i, crop)| {
            Ok((
                CameraFrame {
                    camera: b"cam-1".to_vec(),
                    frame_id: format!("{prefix}-{}-{i}", scene.label),
                    payload: jpeg(crop)?,
                    content_type: None,
                    capture_ms: i as i64,
                },
                scene.label,
            ))
        })
        .collect()
}

/// Publishes the frames and waits for their results (by frame id).
async fn classify(
    harness: &Harness,
    frames: &[(CameraFrame, &'static str)],
) -> anyhow::Result<HashMap<String, FrameResult>> {
    let sent: Vec<CameraFrame> = frames.iter().map(|(f, _)| f.clone()).collect();
    results_of(harness, &sent).await
}

/// Sends one label per frame (a reference to its record), with `label_of` choosing the label.
async fn label(
    harness: &Harness,
    results: &HashMap<String, FrameResult>,
    frames: &[(CameraFrame, &'static str)],
    mut label_of: impl FnMut(usize, &'static str) -> &'static str,
) -> anyhow::Result<usize> {
    let mut records = Vec::new();
    for (i, (frame, truth)) in frames.iter().enumerate() {
        let result = results
            .get(&frame.frame_id)
            .ok_or_else(|| anyhow::anyhow!("no result for {}", frame.frame_id))?;
        records.push(serde_json::to_vec(&serde_json::json!({
            "label": label_of(i, truth),
            "frame": {
                "topic": result.source.topic,
                "partition": result.source.partition,
                "offset": result.source.offset,
            },
        }))?);
    }
    send_labels(harness, &records).await
}

/// Share of `results` whose top class is the frame's true label.
fn accuracy(results: &HashMap<String, FrameResult>, frames: &[(CameraFrame, &'static str)]) -> f64 {
    let correct = frames
        .iter()
        .filter(|(frame, truth)| {
            results
                .get(&frame.frame_id)
                .and_then(|r| r.classifications.first())
                .is_some_and(|c| c.label == *truth)
        })
        .count();
    correct as f64 / frames.len().max(1) as f64
}

fn config(harness: &Harness, group: &str) -> PipelineConfig {
    let mut config = harness.config(group);
    config.model.manifest = manifest("mobilenetv2");
    config.tiling.enabled = false;
    // Rounds on demand only, so the test decides when.
    config.finetune.interval = Duration::ZERO;
    config.finetune.min_new_labels = 0;
    config.finetune.validation_percent = 25;
    config.finetune.min_examples = 8;
    config
}

/// A broker with the frame topics and the learning topics (labels, heads, examples).
fn broker() -> anyhow::Result<Harness> {
    let harness = Harness::start(1)?;
    harness.broker.create_topic(LABELS, 1)?;
    harness.broker.create_topic("tessera.heads", 1)?;
    harness.broker.create_topic("tessera.examples", 1)?;
    Ok(harness)
}

async fn start(harness: &Harness, group: &str) -> anyhow::Result<(PipelineHandle, Arc<Learning>)> {
    let assets = assets_dir().ok_or_else(|| anyhow::anyhow!("assets"))?;
    let pipeline = tessera_actors::start(config(harness, group), group, Some(&assets)).await?;
    let learning = pipeline
        .learning()
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("MobileNetV2 has an embedding: learning is on"))?;
    let owner = eventually(Duration::from_secs(60), || {
        learning.trainer.is_owner().then_some(())
    })
    .await;
    anyhow::ensure!(owner.is_some(), "the only replica never became the trainer");
    Ok((pipeline, learning))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_teach_a_new_class_without_forgetting_the_old_ones() -> anyhow::Result<()> {
    let Some(assets) = assets_dir() else {
        return Ok(());
    };
    let harness = broker()?;
    let (pipeline, learning) = start(&harness, "learn").await?;

    // The first head: three classes, from labels on frames the pipeline processed.
    let mut known = Vec::new();
    for (seed, scene) in [DOG, CAR, BICYCLE].into_iter().enumerate() {
        known.extend(frames_of(&assets, scene, 24, 10 + seed as u64, "train")?);
    }
    let results = classify(&harness, &known).await?;
    assert!(
        results.values().all(|r| r.head_version.is_none()),
        "no head yet"
    );
    let labelled = label(&harness, &results, &known, |_, truth| truth).await?;
    examples_reach(&pipeline, labelled as i64).await?;
    let first = round(&learning, GLOBAL_SCOPE).await?;
    assert_eq!(first.outcome, RoundOutcome::Promoted, "{first:?}");
    let v1 = first.version.ok_or_else(|| anyhow::anyhow!("no version"))?;
    eventually(Duration::from_secs(60), || {
        (learning.heads.live_version(GLOBAL_SCOPE) == v1).then_some(())
    })
    .await
    .ok_or_else(|| anyhow::anyhow!("head {v1} never went live"))?;

    // Held-out frames (other crops) of the known classes, under the first head.
    let mut held_out_known = Vec::new();
    for (seed, scene) in [DOG, CAR, BICYCLE].into_iter().enumerate() {
        held_out_known.extend(frames_of(&assets, scene, 12, 50 + seed as u64, "v1")?);
    }
    let under_v1 = classify(&harness, &held_out_known).await?;
    assert!(under_v1.values().all(|r| r.head_version == Some(v1)));
    let known_before = accuracy(&under_v1, &held_out_known);

    // A class the live head does not know: frames of it, labels for part of them.
    let new_class = frames_of(&assets, PARKING, 30, 70, "train")?;
    let results = classify(&harness, &new_class).await?;
    let labelled_new = label(&harness, &results, &new_class[..24], |_, truth| truth).await?;
    examples_reach(&pipeline, (labelled + labelled_new) as i64).await?;
    let second = round(&learning, GLOBAL_SCOPE).await?;
    assert_eq!(second.outcome, RoundOutcome::Promoted, "{second:?}");
    assert!(second.classes.iter().any(|c| c == "parking"), "{second:?}");
    let v2 = second
        .version
        .ok_or_else(|| anyhow::anyhow!("no version"))?;
    assert_eq!(second.parent, Some(v1));
    eventually(Duration::from_secs(60), || {
        (learning.heads.live_version(GLOBAL_SCOPE) == v2).then_some(())
    })
    .await
    .ok_or_else(|| anyhow::anyhow!("head {v2} never went live"))?;

    // Held-out frames of the new class are recognised; the known classes stay as accurate.
    let held_out_new = frames_of(&assets, PARKING, 20, 90, "v2")?;
    let new_results = classify(&harness, &held_out_new).await?;
    let new_accuracy = accuracy(&new_results, &held_out_new);
    let again: Vec<(CameraFrame, &'static str)> = held_out_known
        .iter()
        .map(|(frame, truth)| {
            let mut frame = frame.clone();
            frame.frame_id = frame.frame_id.replace("v1-", "v2-");
            (frame, *truth)
        })
        .collect();
    let under_v2 = classify(&harness, &again).await?;
    assert!(under_v2.values().all(|r| r.head_version == Some(v2)));
    let known_after = accuracy(&under_v2, &again);
    println!(
        "new class accuracy {new_accuracy:.3}; known classes {known_before:.3} under v{v1}, {known_after:.3} under v{v2}"
    );
    assert!(new_accuracy >= 0.9, "new class accuracy {new_accuracy}");
    assert!(
        known_after >= known_before - 0.02,
        "known classes fell from {known_before} to {known_after}"
    );

    // Status and metrics tell what happened.
    let status = pipeline.monitor().status();
    let learning_status = status
        .learning
        .ok_or_else(|| anyhow::anyhow!("no learning status"))?;
    assert_eq!(learning_status.live_head, v2);
    assert!(learning_status.trainer);
    let metrics = pipeline.monitor().metrics.encode_text();
    assert!(
        metrics.contains(r#"tessera_finetune_runs_total{outcome="promoted"} 2"#),
        "{metrics}"
    );

    // Operators list the heads and roll back over HTTP; the rollback is a new version.
    let mut http_config = tessera_actors::config::HttpConfig {
        address: "127.0.0.1:0".into(),
        admin_token: Some(TOKEN.into()),
        ..Default::default()
    };
    http_config.liveness_timeout = Duration::ZERO;
    let http = HttpServer::start(&http_config, pipeline.monitor().clone()).await?;
    let base = format!("http://{}", http.local_addr());
    let listed = request("GET", &format!("{base}/v1/heads"), None)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no answer"))?;
    assert_eq!(listed.status, 200, "{}", listed.body);
    let listed: serde_json::Value = serde_json::from_str(&listed.body)?;
    assert_eq!(listed["live"], v2);
    let versions: Vec<u64> = listed["heads"]
        .as_array()
        .map(|heads| heads.iter().filter_map(|h| h["version"].as_u64()).collect())
        .unwrap_or_default();
    assert_eq!(versions, vec![v1, v2]);
    let unauthorised = request("POST", &format!("{base}/v1/finetune"), None).await?;
    assert_eq!(unauthorised.map(|a| a.status), Some(401));
    let rollback = request_with_body(
        "POST",
        &format!("{base}/v1/heads/rollback"),
        Some(TOKEN),
        Some(format!(r#"{{"version": {v1}}}"#)),
    )
    .await?
    .ok_or_else(|| anyhow::anyhow!("no answer"))?;
    assert_eq!(rollback.status, 200, "{}", rollback.body);
    let v3 = v2 + 1;
    eventually(Duration::from_secs(60), || {
        (learning.heads.live_version(GLOBAL_SCOPE) == v3).then_some(())
    })
    .await
    .ok_or_else(|| anyhow::anyhow!("the rollback never went live"))?;
    let live = learning
        .heads
        .live(GLOBAL_SCOPE)
        .ok_or_else(|| anyhow::anyhow!("no live head"))?;
    assert_eq!(live.meta().restored_from, Some(v1));
    assert_eq!(live.classes().len(), 3, "version {v1}'s classes are back");
    http.stop().await;
    pipeline.shutdown(Duration::from_secs(10)).await?;
    Ok(())
}

const TOKEN: &str = "learning-t0ken";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_labels_yield_a_rejected_head_and_the_live_head_stays() -> anyhow::Result<()> {
    let Some(assets) = assets_dir() else {
        return Ok(());
    };
    let harness = broker()?;
    let (pipeline, learning) = start(&harness, "poison").await?;
    let mut good = Vec::new();
    for (seed, scene) in [DOG, PARKING].into_iter().enumerate() {
        good.extend(frames_of(&assets, scene, 16, 200 + seed as u64, "good")?);
    }
    let results = classify(&harness, &good).await?;
    let labelled = label(&harness, &results, &good, |_, truth| truth).await?;
    examples_reach(&pipeline, labelled as i64).await?;
    let first = round(&learning, GLOBAL_SCOPE).await?;
    assert_eq!(first.outcome, RoundOutcome::Promoted, "{first:?}");
    let live = first.version;

    // Poison: many more frames, each labelled with a class drawn at random.
    let mut poison = Vec::new();
    for (seed, scene) in [DOG, CAR, BICYCLE, PARKING].into_iter().enumerate() {
        poison.extend(frames_of(&assets, scene, 20, 300 + seed as u64, "poison")?);
    }
    let results = classify(&harness, &poison).await?;
    let classes = ["dog", "car", "bicycle", "parking"];
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let poisoned = label(&harness, &results, &poison, |_, _| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        classes[(state % 4) as usize]
    })
    .await?;
    examples_reach(&pipeline, (labelled + poisoned) as i64).await?;
    let second = round(&learning, GLOBAL_SCOPE).await?;
    assert_eq!(second.outcome, RoundOutcome::Rejected, "{second:?}");
    assert!(second.reason.is_some());
    assert_eq!(
        Some(learning.heads.live_version(GLOBAL_SCOPE)),
        live,
        "the live head changed"
    );
    let metrics = pipeline.monitor().metrics.encode_text();
    assert!(
        metrics.contains(r#"tessera_finetune_runs_total{outcome="rejected"} 1"#),
        "{metrics}"
    );
    pipeline.shutdown(Duration::from_secs(10)).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_that_cannot_be_joined_are_dead_lettered_with_their_kind() -> anyhow::Result<()> {
    let Some(assets) = assets_dir() else {
        return Ok(());
    };
    let harness = broker()?;
    let (pipeline, _learning) = start(&harness, "bad-labels").await?;
    let frames = frames_of(&assets, DOG, 1, 400, "one")?;
    let results = classify(&harness, &frames).await?;
    let source = &results
        .values()
        .next()
        .ok_or_else(|| anyhow::anyhow!("no result"))?
        .source;
    let frame = serde_json::json!({"topic": source.topic, "partition": source.partition, "offset": source.offset});
    let inline = {
        use std::io::Write;
        let mut text = Vec::new();
        // Standard base64 of the frame's JPEG, written by hand to keep the test's own deps.
        let bytes = &frames[0].0.payload;
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        for chunk in bytes.chunks(3) {
            let n =
                chunk.iter().fold(0u32, |n, b| (n << 8) | u32::from(*b)) << (8 * (3 - chunk.len()));
            for i in 0..4 {
                if i <= chunk.len() {
                    text.write_all(&[ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]])?;
                } else {
                    text.write_all(b"=")?;
                }
            }
        }
        String::from_utf8(text)?
    };
    let records = [
        // Joined: whole frame (cache), a box (read back), an inline image.
        serde_json::json!({"label": "dog", "frame": frame}),
        serde_json::json!({"label": "dog", "frame": frame, "box": {"x1": 10, "y1": 10, "x2": 60, "y2": 60}}),
        serde_json::json!({"label": "dog", "image": inline}),
        // Dead-lettered, each with its own kind.
        serde_json::json!({"label": "dog", "frame": {"topic": source.topic, "partition": source.partition, "offset": source.offset + 1000}}),
        serde_json::json!({"label": "dog", "frame": frame, "box": {"x1": 5000, "y1": 10, "x2": 6000, "y2": 60}}),
        serde_json::json!({"label": "dog", "image": "bm90IGFuIGltYWdl"}),
        serde_json::json!({"label": "", "frame": frame}),
    ];
    let mut values: Vec<Vec<u8>> = records
        .iter()
        .map(serde_json::to_vec)
        .collect::<Result<_, _>>()?;
    values.push(b"{not json".to_vec());
    send_labels(&harness, &values).await?;

    let expected = [
        "label_frame_missing",
        "label_box_outside",
        "label_image_invalid",
        "label_malformed",
        "label_malformed",
    ];
    let outputs = read_outputs(
        &harness.brokers,
        RESULTS,
        DLQ,
        Duration::from_secs(120),
        |_| {},
        |outputs| {
            outputs
                .iter()
                .filter(|o| matches!(o, Output::DeadLetter { .. }))
                .count()
                >= expected.len()
        },
    )
    .await?;
    let mut kinds: Vec<String> = outputs
        .iter()
        .filter_map(|o| match o {
            Output::DeadLetter { kind, .. } => Some(kind.clone()),
            Output::Result { .. } => None,
        })
        .collect();
    kinds.sort();
    let mut want: Vec<String> = expected.iter().map(|k| k.to_string()).collect();
    want.sort();
    assert_eq!(kinds, want);
    examples_reach(&pipeline, 3).await?;
    let metrics = pipeline.monitor().metrics.encode_text();
    for via in ["cache", "fetch", "inline"] {
        assert!(
            metrics.contains(&format!(r#"tessera_labels_joined_total{{via="{via}"}} 1"#)),
            "{via}: {metrics}"
        );
    }
    pipeline.shutdown(Duration::from_secs(10)).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_trainer_keeps_every_acknowledged_example() -> anyhow::Result<()> {
    let Some(assets) = assets_dir() else {
        return Ok(());
    };
    let harness = broker()?;
    let (pipeline, _) = start(&harness, "restart").await?;
    let mut frames = frames_of(&assets, DOG, 6, 500, "keep")?;
    frames.extend(frames_of(&assets, CAR, 6, 501, "keep")?);
    let results = classify(&harness, &frames).await?;
    let labelled = label(&harness, &results, &frames, |_, truth| truth).await?;
    examples_reach(&pipeline, labelled as i64).await?;
    pipeline.shutdown(Duration::from_secs(10)).await?;

    // A new process: the buffer comes back from the examples topic, whole.
    let (restarted, learning) = start(&harness, "restart").await?;
    assert_eq!(
        restarted.monitor().metrics.replay_examples.get(),
        labelled as i64,
        "examples lost or doubled across the restart"
    );
    // And it trains on them.
    let report = round(&learning, GLOBAL_SCOPE).await?;
    assert_eq!(
        report.training_examples + report.held_out_examples,
        labelled
    );
    restarted.shutdown(Duration::from_secs(10)).await?;
    Ok(())
}
