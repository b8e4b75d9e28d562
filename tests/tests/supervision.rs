//! The supervisor restarts a failed child, and the pipeline keeps processing afterwards; a
//! restart storm stops it with an error.

use std::collections::HashSet;
use std::time::Duration;

use ractor::ActorCell;
use tessera::embedded::publish_frames;
use tessera_actors::StageId;
use tessera_tests::assets_dir;
use tessera_tests::harness::{FRAMES, Harness, camera_frames, eventually, result_ids};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_stage_is_restarted_and_the_stream_goes_on() -> anyhow::Result<()> {
    let Some(assets) = assets_dir() else {
        return Ok(());
    };
    let dog = std::fs::read(assets.join("images/dog.jpg"))?;
    let harness = Harness::start(1)?;
    let mut config = harness.config("supervision");
    config.tiling.enabled = false;

    let pipeline = tessera_actors::start(config, "supervision", Some(&assets)).await?;
    let merge_name = pipeline.stage_name(StageId::Merge);
    let first: ActorCell = ractor::registry::where_is(merge_name.clone())
        .ok_or_else(|| anyhow::anyhow!("merge actor not registered"))?;
    let first_id = first.get_id();

    // Kill the merge stage while the pipeline is idle: the supervisor must bring it back.
    first.kill();
    let restarted = eventually(Duration::from_secs(30), || {
        ractor::registry::where_is(merge_name.clone()).filter(|a| a.get_id() != first_id)
    })
    .await;
    assert!(restarted.is_some(), "merge was not restarted");
    let monitor = pipeline.monitor();
    let metrics = monitor.metrics.encode_text();
    assert!(
        metrics.contains(
            r#"tessera_supervisor_actor_restarts_total{actor="merge",cause="internal"} 1"#
        ),
        "{metrics}"
    );
    assert!(monitor.liveness().is_ok(), "a restarted tree is alive");

    // The restarted stage is wired in: frames published now all come out.
    let sent = camera_frames("cam-1", &dog, 0..3);
    publish_frames(&harness.brokers, FRAMES, &sent).await?;
    let outputs = harness.read(sent.len(), Duration::from_secs(120)).await?;
    let expected: HashSet<String> = sent.iter().map(|f| f.frame_id.clone()).collect();
    assert_eq!(
        result_ids(&outputs).into_iter().collect::<HashSet<_>>(),
        expected
    );
    pipeline.shutdown(Duration::from_secs(10)).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_storm_stops_the_pipeline_with_an_error() -> anyhow::Result<()> {
    let Some(assets) = assets_dir() else {
        return Ok(());
    };
    let dog = std::fs::read(assets.join("images/dog.jpg"))?;
    let harness = Harness::start(1)?;
    let mut config = harness.config("storm");
    config.tiling.enabled = false;
    // Every model run panics: each failure is counted, and the fourth within the window
    // escalates. Attempts are plenty, so frames are never dead-lettered before that.
    config.recognize.panic_every_nth_batch = Some(1);
    config.supervision.max_restarts = 3;
    config.flow.max_attempts = 100;

    let mut pipeline = tessera_actors::start(config, "storm", Some(&assets)).await?;
    publish_frames(
        &harness.brokers,
        FRAMES,
        &camera_frames("cam-1", &dog, 0..2),
    )
    .await?;
    let stopped = tokio::time::timeout(Duration::from_secs(120), pipeline.stopped()).await;
    match stopped {
        Ok(Err(tessera_actors::PipelineError::RestartStorm { restarts, last, .. })) => {
            assert!(restarts > 3, "{restarts} restarts");
            assert!(last.contains("recognize"), "{last}");
        }
        other => panic!("expected a restart storm, got {other:?}"),
    }
    // Stopped means stopped: no session thread is left inside ONNX Runtime (a process that
    // exits while one is can crash in the runtime's teardown).
    assert_eq!(pipeline.stage_threads(), 0);
    // Operators see it: not live, not ready, and the restarts counted.
    let monitor = pipeline.monitor();
    assert!(monitor.liveness().is_err());
    assert!(monitor.readiness().is_err());
    assert_eq!(monitor.status().phase, tessera_actors::Phase::Failed);
    let metrics = monitor.metrics.encode_text();
    let counted = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(
                r#"tessera_supervisor_actor_restarts_total{actor="recognize",cause="internal"} "#,
            )
        })
        .and_then(|v| v.parse::<u64>().ok());
    assert!(counted.is_some_and(|n| n > 3), "{metrics}");
    Ok(())
}
