//! The change gate through the whole pipeline, on the static-camera stream made from the
//! shared images (real background, real objects moving, noise, a fresh JPEG per frame):
//! with the gate off, results are those of full tiling; with it on, unchanged tiles are
//! reused, the refresh period is honoured, what full tiling finds is still found, the metrics
//! count both kinds of tile, a restarted pipeline starts every camera afresh, and results say
//! when lag relaxed the gate.

use std::sync::Arc;
use std::time::Duration;

use tessera::embedded::{CameraFrame, Output, publish_frames, read_outputs};
use tessera_actors::PipelineConfig;
use tessera_actors::config::ClockKind;
use tessera_actors::protocol::result::{DetectionOut, FrameResult};
use tessera_models::{Model, ModelSession, Recognizer, SessionConfig};
use tessera_operators::decode::{DecodeLimits, decode_image};
use tessera_operators::geometry::BBox;
use tessera_tests::harness::{DLQ, FRAMES, Harness};
use tessera_tests::scene::{SceneSpec, static_camera};
use tessera_tests::{assets_dir, manifest, ort_env};

const CAMERA: &str = "lot-7";
const REFRESH_FRAMES: u32 = 10;

fn frames(payloads: &[Vec<u8>], first: usize) -> Vec<CameraFrame> {
    payloads
        .iter()
        .enumerate()
        .map(|(i, payload)| {
            let n = first + i;
            CameraFrame {
                camera: CAMERA.as_bytes().to_vec(),
                frame_id: format!("{CAMERA}-{n:03}"),
                payload: payload.clone(),
                content_type: None,
                // 10 frames a second.
                capture_ms: 1_700_000_000_000 + n as i64 * 100,
            }
        })
        .collect()
}

fn gated(config: &mut PipelineConfig) {
    config.gate.enabled = true;
    // The frames are a recording (captured in 2023): their age is measured on the stream's
    // clock, as for any replay, or the gate would relax for lag.
    config.flow.clock = ClockKind::Stream;
    config.gate.refresh_frames = REFRESH_FRAMES;
    config.gate.refresh_interval = Duration::from_secs(60);
}

/// Runs `config` until it has published `count` results to its own `results_topic`; returns
/// them in frame order, and the pipeline's metrics.
async fn run(
    harness: &Harness,
    mut config: PipelineConfig,
    assets: &std::path::Path,
    results_topic: &str,
    count: usize,
) -> anyhow::Result<(Vec<FrameResult>, String)> {
    harness.broker.create_topic(results_topic, 1)?;
    config.kafka.results_topic = results_topic.into();
    let group = config.kafka.group_id.clone();
    let pipeline = tessera_actors::start(config, &group, Some(assets)).await?;
    let outputs = read_outputs(
        &harness.brokers,
        results_topic,
        DLQ,
        Duration::from_secs(300),
        |_| {},
        |outputs| outputs.len() >= count,
    )
    .await?;
    let metrics = pipeline.monitor().metrics.encode_text();
    pipeline.shutdown(Duration::from_secs(10)).await?;
    let mut results: Vec<FrameResult> =
        outputs.iter().filter_map(Output::result).cloned().collect();
    results.sort_by(|a, b| a.frame_id.cmp(&b.frame_id));
    anyhow::ensure!(
        results.len() == count,
        "{} of {count} results",
        results.len()
    );
    Ok((results, metrics))
}

fn bbox(d: &DetectionOut) -> BBox {
    BBox::new(d.bbox.x1, d.bbox.y1, d.bbox.x2, d.bbox.y2)
}

/// The counter of `decision` in a metrics exposition.
fn gate_tiles(metrics: &str, decision: &str) -> Option<u64> {
    let prefix = format!("tessera_gate_tiles_total{{decision=\"{decision}\"}} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_tiles_are_reused_and_full_tiling_is_matched() -> anyhow::Result<()> {
    let Some(assets) = assets_dir() else {
        return Ok(());
    };
    let spec = SceneSpec {
        width: 1280,
        height: 720,
        movers: 2,
        seed: 11,
        ..SceneSpec::default()
    };
    let scene = static_camera(&assets, spec)?;
    let (total, first_run) = (20, 16);
    let payloads: Vec<Vec<u8>> = (0..total)
        .map(|n| scene.jpeg(n as u64).map(|(jpeg, _)| jpeg))
        .collect::<Result<_, _>>()?;

    let harness = Harness::start(1)?;
    publish_frames(&harness.brokers, FRAMES, &frames(&payloads[..first_run], 0)).await?;

    // Gate off: every result is full tiling's, as the model alone computes it.
    let (full, _) = run(&harness, harness.config("full"), &assets, "full", first_run).await?;
    let model = Arc::new(Model::load(&manifest("yolox-nano"), None, Some(&assets))?);
    let env = ort_env()?;
    let session = ModelSession::load(&env, model, &SessionConfig::default())?;
    let config = harness.config("full");
    let mut recognizer = Recognizer::new(session, &config.tiling, config.merge.clone());
    for (result, payload) in full.iter().zip(&payloads) {
        assert!(
            result.gate.is_none(),
            "no gate report while the gate is off"
        );
        let alone = recognizer.recognize(&decode_image(payload, &DecodeLimits::default())?)?;
        assert_eq!(result.tile_count, alone.tiles);
        assert_eq!(
            result.detections.len(),
            alone.detections.len(),
            "{}",
            result.frame_id
        );
        for (got, want) in result.detections.iter().zip(&alone.detections) {
            assert_eq!(got.class_id, want.class_id, "{}", result.frame_id);
            assert!((got.score - want.score).abs() < 1e-5, "{}", result.frame_id);
            assert!(bbox(got).iou(&want.bbox) > 0.999, "{}", result.frame_id);
        }
    }
    let tiles = full[0].tile_count;
    assert!(
        tiles > 2,
        "a 720p frame is cut into tiles plus the full frame"
    );

    // Gate on.
    let mut config = harness.config("gated");
    gated(&mut config);
    let (gated_results, metrics) = run(&harness, config, &assets, "gated", first_run).await?;
    let mut inferred_total = 0;
    let mut reused_total = 0;
    for (n, result) in gated_results.iter().enumerate() {
        let report = result.gate.expect("a gate report per frame");
        assert_eq!(
            report.inferred + report.reused,
            tiles,
            "{}",
            result.frame_id
        );
        assert_eq!(report.relaxation, 0.0, "no lag here to relax for");
        inferred_total += report.inferred;
        reused_total += report.reused;
        if n % REFRESH_FRAMES as usize == 0 {
            assert!(report.refresh, "frame {n} is a refresh");
            assert_eq!(
                report.inferred, tiles,
                "frame {n}: a refresh runs every tile"
            );
        } else {
            assert!(!report.refresh, "frame {n}");
            // The objects moved: their tiles ran, and so did the full-frame pass.
            assert!(report.inferred >= 2, "frame {n}: {report:?}");
        }
    }
    assert!(
        reused_total > 0 && inferred_total < tiles * gated_results.len(),
        "unchanged tiles reused: {inferred_total} inferred, {reused_total} reused"
    );
    assert_eq!(
        gate_tiles(&metrics, "inferred"),
        Some(inferred_total as u64)
    );
    assert_eq!(gate_tiles(&metrics, "reused"), Some(reused_total as u64));

    // What full tiling finds, the gate still finds (same class, IoU >= 0.5).
    let (mut found, mut wanted) = (0, 0);
    for (with_gate, without) in gated_results.iter().zip(&full) {
        assert_eq!(with_gate.frame_id, without.frame_id);
        for want in &without.detections {
            wanted += 1;
            if with_gate
                .detections
                .iter()
                .any(|got| got.class_id == want.class_id && bbox(got).iou(&bbox(want)) >= 0.5)
            {
                found += 1;
            }
        }
    }
    assert!(wanted > 0);
    let recall = found as f64 / wanted as f64;
    eprintln!(
        "{tiles} tiles a frame; gated: {inferred_total} inferred, {reused_total} reused; \
         recall {recall:.3} ({found} of {wanted})"
    );
    assert!(recall >= 0.98, "recall {recall} ({found} of {wanted})");

    // A restarted pipeline keeps nothing: its first frame is a full refresh although the
    // camera's refresh period is not due (frame 16, the last refresh at frame 10). This time
    // ages are measured on the wall clock, where frames captured in 2023 are years late: the
    // gate is fully relaxed (its refresh period only longer), and every result says so.
    publish_frames(
        &harness.brokers,
        FRAMES,
        &frames(&payloads[first_run..], first_run),
    )
    .await?;
    let mut config = harness.config("gated");
    gated(&mut config);
    config.flow.clock = ClockKind::Wall;
    let rest = total - first_run;
    let (after, _) = run(&harness, config, &assets, "gated-restarted", rest).await?;
    let refreshes: Vec<_> = after
        .iter()
        .filter_map(|r| Some((r.frame_id.as_str(), r.gate?.refresh)))
        .collect();
    assert_eq!(
        refreshes,
        vec![
            ("lot-7-016", true),
            ("lot-7-017", false),
            ("lot-7-018", false),
            ("lot-7-019", false)
        ]
    );
    let relaxation: Vec<f32> = after
        .iter()
        .filter_map(|r| Some(r.gate?.relaxation))
        .collect();
    assert_eq!(
        relaxation,
        vec![1.0; rest],
        "sustained lag relaxes the gate fully"
    );
    Ok(())
}
