//! Heads on the embedded broker: a head published on one replica goes live on every replica
//! of the group, each camera's results switch to it once and forward only, no frame is lost
//! or duplicated across the swap, and a replica started afterwards serves the head from its
//! first result. A head of another backbone is refused.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use tessera::embedded::{CameraFrame, Output, publish_frames, read_outputs};
use tessera_actors::GLOBAL_SCOPE;
use tessera_models::{Example, Head, TrainSettings};
use tessera_tests::harness::{DLQ, FRAMES, Harness, RESULTS, eventually};
use tessera_tests::learning::{DOG, PARKING, Scene, augmented, jpeg, mobilenet_embedder};
use tessera_tests::{assets_dir, manifest};

const HEADS: &str = "tessera.heads";

/// A head for `scenes`, trained on embeddings of decoded JPEG crops (what the pipeline sees).
fn train_head(assets: &std::path::Path, scenes: &[Scene], version: u64) -> anyhow::Result<Head> {
    let mut embedder = mobilenet_embedder(assets)?;
    let mut embeddings = Vec::new();
    let mut classes = Vec::new();
    for (class, scene) in scenes.iter().enumerate() {
        for crop in augmented(assets, *scene, 24, 1 + class as u64)? {
            let decoded = image::load_from_memory(&jpeg(&crop)?)?.to_rgb8();
            embeddings.push(embedder.embed(&decoded, None)?);
            classes.push(class);
        }
    }
    let examples: Vec<Example<'_>> = embeddings
        .iter()
        .zip(&classes)
        .map(|(embedding, &class)| Example { embedding, class })
        .collect();
    let backbone = embedder.session().model().backbone_hash.clone();
    let mut head = Head::train(
        scenes.iter().map(|s| s.label.to_owned()).collect(),
        &examples,
        1280,
        backbone,
        &TrainSettings::default(),
    )?;
    head.meta_mut().version = version;
    Ok(head)
}

/// Frames of two cameras, alternating between the scenes; the label of each frame id.
fn frames(
    assets: &std::path::Path,
    scenes: &[Scene],
    range: std::ops::Range<usize>,
    seed: u64,
) -> anyhow::Result<(Vec<CameraFrame>, HashMap<String, &'static str>)> {
    let mut frames = Vec::new();
    let mut labels = HashMap::new();
    for (index, scene) in scenes.iter().enumerate() {
        let crops = augmented(assets, *scene, range.len(), seed + index as u64)?;
        for (i, crop) in range.clone().zip(crops) {
            let camera = format!("cam-{}", i % 2);
            let frame_id = format!("{camera}-{}-{i}", scene.label);
            labels.insert(frame_id.clone(), scene.label);
            frames.push((
                i,
                CameraFrame {
                    camera: camera.into_bytes(),
                    frame_id,
                    payload: jpeg(&crop)?,
                    content_type: None,
                    capture_ms: i as i64,
                },
            ));
        }
    }
    frames.sort_by_key(|(i, _)| *i);
    Ok((frames.into_iter().map(|(_, f)| f).collect(), labels))
}

fn results_in(outputs: &[Output]) -> Vec<&tessera_actors::FrameResult> {
    outputs.iter().filter_map(Output::result).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_head_goes_live_everywhere_and_each_camera_switches_once() -> anyhow::Result<()>
{
    let Some(assets) = assets_dir() else {
        return Ok(());
    };
    let scenes = [DOG, PARKING];
    let head = train_head(&assets, &scenes, 1)?;
    let harness = Harness::start(2)?;
    harness.broker.create_topic(HEADS, 1)?;
    let mut config = harness.config("heads");
    config.model.manifest = manifest("mobilenetv2");
    config.tiling.enabled = false;

    let a = tessera_actors::start(config.clone(), "a", Some(&assets)).await?;
    let b = tessera_actors::start(config.clone(), "b", Some(&assets)).await?;
    let registry =
        |p: &tessera_actors::PipelineHandle| p.heads().map(|h| h.live_version(GLOBAL_SCOPE));
    assert_eq!(registry(&a), Some(0), "no head yet");

    // Frames before, during and after the swap; the head is published while they flow.
    let (before, mut labels) = frames(&assets, &scenes, 0..10, 100)?;
    let (after, later) = frames(&assets, &scenes, 10..20, 200)?;
    labels.extend(later);
    publish_frames(&harness.brokers, FRAMES, &before).await?;
    a.publish_head(&head).await?;
    publish_frames(&harness.brokers, FRAMES, &after).await?;
    let converged = eventually(Duration::from_secs(60), || {
        (registry(&a) == Some(1) && registry(&b) == Some(1)).then_some(())
    })
    .await;
    assert!(
        converged.is_some(),
        "replicas did not apply the head: a {:?}, b {:?}",
        registry(&a),
        registry(&b)
    );

    let total = before.len() + after.len();
    let outputs = harness.read(total, Duration::from_secs(120)).await?;
    let results = results_in(&outputs);
    // Nothing lost, nothing twice.
    let mut ids: Vec<&str> = results.iter().map(|r| r.frame_id.as_str()).collect();
    ids.sort_unstable();
    let before_dedup = ids.len();
    ids.dedup();
    assert_eq!(before_dedup, ids.len(), "a frame was published twice");
    assert_eq!(ids.len(), total, "frames lost");

    // Per camera, in capture order: no head, then head 1, never back.
    let mut per_camera: BTreeMap<&str, Vec<(i64, Option<u64>)>> = BTreeMap::new();
    for result in &results {
        per_camera.entry(result.camera.as_str()).or_default().push((
            result.timestamps.capture_ms.unwrap_or_default(),
            result.head_version,
        ));
    }
    for (camera, mut versions) in per_camera {
        versions.sort_by_key(|(capture, _)| *capture);
        let switches = versions.windows(2).filter(|w| w[0].1 != w[1].1).count();
        assert!(
            switches <= 1,
            "{camera} switched heads {switches} times: {versions:?}"
        );
        assert!(
            versions.windows(2).all(|w| w[0].1 <= w[1].1),
            "{camera} went back to an older head: {versions:?}"
        );
        assert_eq!(
            versions.last().map(|v| v.1),
            Some(Some(1)),
            "{camera}: {versions:?}"
        );
    }
    // The head's results are its classes, and right.
    let with_head: Vec<_> = results
        .iter()
        .filter(|r| r.head_version == Some(1))
        .collect();
    let correct = with_head
        .iter()
        .filter(|r| {
            r.classifications.first().map(|c| c.label.as_str()) == labels.get(&r.frame_id).copied()
        })
        .count();
    assert!(
        correct * 10 >= with_head.len() * 9,
        "{correct} of {} classified right by the head",
        with_head.len()
    );

    // A replica started afterwards reads the heads topic before it serves a frame.
    a.shutdown(Duration::from_secs(10)).await?;
    b.shutdown(Duration::from_secs(10)).await?;
    let c = tessera_actors::start(config.clone(), "c", Some(&assets)).await?;
    assert_eq!(
        registry(&c),
        Some(1),
        "the new replica did not load the head before starting"
    );
    let (late, _) = frames(&assets, &scenes, 20..24, 300)?;
    publish_frames(&harness.brokers, FRAMES, &late).await?;
    let late_ids: Vec<&str> = late.iter().map(|f| f.frame_id.as_str()).collect();
    // Until every late frame is in (frames the group had not committed may come again).
    let outputs = read_outputs(
        &harness.brokers,
        RESULTS,
        DLQ,
        Duration::from_secs(120),
        |_| {},
        |outputs| {
            let ids: HashSet<&str> = results_in(outputs)
                .iter()
                .map(|r| r.frame_id.as_str())
                .collect();
            late_ids.iter().all(|id| ids.contains(id))
        },
    )
    .await?;
    let late_results: Vec<_> = results_of(&outputs, &late_ids);
    assert!(
        late_results.len() >= late.len(),
        "{} of {} late frames",
        late_results.len(),
        late.len()
    );
    assert!(
        late_results.iter().all(|r| r.head_version == Some(1)),
        "{:?}",
        late_results
            .iter()
            .map(|r| r.head_version)
            .collect::<Vec<_>>()
    );
    c.shutdown(Duration::from_secs(10)).await?;
    Ok(())
}

fn results_of<'a>(outputs: &'a [Output], ids: &[&str]) -> Vec<&'a tessera_actors::FrameResult> {
    results_in(outputs)
        .into_iter()
        .filter(|r| ids.contains(&r.frame_id.as_str()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_of_another_backbone_is_refused_and_the_live_head_stays() -> anyhow::Result<()> {
    let Some(assets) = assets_dir() else {
        return Ok(());
    };
    let harness = Harness::start(1)?;
    harness.broker.create_topic(HEADS, 1)?;
    let mut config = harness.config("foreign");
    config.model.manifest = manifest("mobilenetv2");
    config.tiling.enabled = false;
    let pipeline = tessera_actors::start(config, "foreign", Some(&assets)).await?;
    let mut head = train_head(&assets, &[DOG, PARKING], 1)?;
    head.meta_mut().backbone = "sha256:another-backbone".into();
    let error = pipeline
        .publish_head(&head)
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("a foreign head was published"))?;
    let text = error.to_string();
    assert!(text.contains("another-backbone"), "{text}");
    assert_eq!(
        pipeline.heads().map(|h| h.live_version(GLOBAL_SCOPE)),
        Some(0)
    );
    pipeline.shutdown(Duration::from_secs(10)).await?;
    Ok(())
}
