//! The change gate of one pipeline: per-camera tile references shared by prepare (which plans
//! each frame through it and runs only the tiles that changed) and merge (which hands it the
//! results of the tiles that ran). Plain code over [`tessera_operators::gate`]; the gate's
//! state lives only in memory and is dropped with a partition's assignment.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use image::RgbImage;
use tessera_models::TileOutput;
use tessera_operators::gate::{ChangeGate, FrameStamp, GateSettings, signatures};
use tessera_operators::tiling::Tile;

use crate::config::GateConfig;
use crate::observe::Monitor;
use crate::protocol::messages::GatedFrame;
use crate::protocol::{FrameKey, FrameMeta, StreamId};

/// Weight of the newest frame in the smoothed lag: about 20 frames make "sustained".
const LAG_SMOOTHING: f64 = 0.05;

/// What a camera's tile results depend on besides its pixels.
#[derive(Debug, Clone, PartialEq)]
struct Epoch {
    /// The partition assignment the frames come from: a rebalance starts a new one.
    stream: StreamId,
    /// The head applied to the tiles (version and scope), if any.
    head: Option<(u64, String)>,
}

/// The gate and the lag it relaxes under.
#[derive(Debug)]
struct State {
    references: ChangeGate<TileOutput, Epoch>,
    /// Frames' age in milliseconds, smoothed; `None` before the first frame with a capture time.
    lag_ms: Option<f64>,
}

/// The change gate of a pipeline, shared by the prepare lanes and merge.
#[derive(Debug)]
pub struct TileGate {
    state: Mutex<State>,
    settings: GateSettings,
    relaxed: GateSettings,
    /// Smoothed lag at which relaxing starts, and at which it is complete (ms).
    relax_from_ms: f64,
    relax_full_ms: f64,
    monitor: Arc<Monitor>,
}

impl TileGate {
    /// A gate for `config` relaxing fully at `max_age` (`flow.max_age`).
    pub fn new(config: &GateConfig, max_age: Duration, monitor: Arc<Monitor>) -> Self {
        let (settings, relaxed) = config.settings();
        Self {
            state: Mutex::new(State {
                references: ChangeGate::new(config.max_cameras),
                lag_ms: None,
            }),
            settings,
            relaxed,
            relax_from_ms: config.relax_after.as_secs_f64() * 1000.0,
            relax_full_ms: max_age.as_secs_f64() * 1000.0,
            monitor,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is a cache: whatever a panicking holder left is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Plans a frame cut into `tiles`. `head` is the head applied to its tiles, `attempt` the
    /// frame's attempt (a retried frame runs in full, so it never waits on a tile that an
    /// earlier attempt did not finish), `age_ms` its age on the lag policy's clock.
    pub fn plan(
        &self,
        meta: &FrameMeta,
        head: Option<(u64, String)>,
        attempt: u32,
        age_ms: Option<i64>,
        image: &RgbImage,
        tiles: &[Tile],
    ) -> GatedFrame {
        // The costly part, outside the lock.
        let signatures = signatures(image, tiles);
        let camera = meta.camera();
        let epoch = Epoch {
            stream: meta.key.stream(),
            head,
        };
        let stamp = FrameStamp {
            camera: &camera,
            epoch: &epoch,
            seq: frame_seq(meta),
            now_ms: meta.capture_ms().map_or(0, |ms| ms.max(0) as u64),
        };
        let (plan, relaxation, cameras) = {
            let mut state = self.lock();
            if let Some(age) = age_ms {
                let age = age.max(0) as f64;
                state.lag_ms = Some(match state.lag_ms {
                    Some(lag) => lag + LAG_SMOOTHING * (age - lag),
                    None => age,
                });
            }
            let relaxation = self.relaxation(state.lag_ms);
            let settings = self.settings.relaxed_towards(&self.relaxed, relaxation);
            if attempt > 0 {
                state.references.forget(&camera);
            }
            let plan = state.references.plan(stamp, signatures, tiles, &settings);
            (plan, relaxation, state.references.cameras())
        };
        let metrics = &self.monitor.metrics;
        metrics.gate_tiles(plan.inferred(), plan.reused());
        if plan.refresh {
            metrics.gate_refreshes.inc();
        }
        metrics.gate_relaxation.set(f64::from(relaxation));
        metrics.gate_cameras.set(cameras as i64);
        GatedFrame {
            refresh: plan.refresh,
            relaxation,
            tiles: plan.decisions,
        }
    }

    /// How far to relax for a smoothed lag: 0 up to `relax_after`, 1 from `flow.max_age`.
    fn relaxation(&self, lag_ms: Option<f64>) -> f32 {
        let Some(lag) = lag_ms else { return 0.0 };
        let span = self.relax_full_ms - self.relax_from_ms;
        if span <= 0.0 {
            return 0.0;
        }
        ((lag - self.relax_from_ms) / span).clamp(0.0, 1.0) as f32
    }

    /// Outputs of tiles of the frame (by tile index), which ran through the model as planned.
    pub fn complete(&self, meta: &FrameMeta, outputs: Vec<(usize, TileOutput)>) {
        let (camera, seq) = (meta.camera(), frame_seq(meta));
        let mut state = self.lock();
        for (index, output) in outputs {
            state.references.complete(&camera, seq, index, output);
        }
    }

    /// The output of tile `index` of frame `seq` of `camera`, if it is known (for a frame
    /// that follows it).
    pub fn result(&self, camera: &str, seq: u64, index: usize) -> Option<TileOutput> {
        self.lock().references.result(camera, seq, index)
    }

    /// Drops a camera whose frame failed: its next frame runs in full.
    pub fn forget(&self, meta: &FrameMeta) {
        self.lock().references.forget(&meta.camera());
    }

    /// Drops the cameras of partitions no longer assigned here (`live` tells which streams
    /// are), so the gate holds state only for cameras this replica serves.
    pub fn retain_live(&self, live: impl Fn(&StreamId) -> bool) {
        let mut state = self.lock();
        state.references.retain(|epoch| live(&epoch.stream));
        self.monitor
            .metrics
            .gate_cameras
            .set(state.references.cameras() as i64);
    }
}

/// A frame's position in its camera's stream: its offset (a camera's frames share a
/// partition, so offsets increase per camera).
pub fn frame_seq(meta: &FrameMeta) -> u64 {
    meta.key.offset.max(0) as u64
}

/// A tile of a frame: camera, frame (see [`frame_seq`]) and tile index.
pub type TileOf = (String, u64, usize);

/// Frames waiting (in merge) for a tile output of an earlier frame of their camera, which they
/// follow (see [`tessera_operators::gate::TileDecision::Follow`]).
#[derive(Debug, Default)]
pub struct Followers {
    waiting: HashMap<TileOf, Vec<FrameKey>>,
}

impl Followers {
    /// `follower` waits for `tile`.
    pub fn wait(&mut self, tile: TileOf, follower: FrameKey) {
        self.waiting.entry(tile).or_default().push(follower);
    }

    /// The frames waiting for `tile`, which has arrived.
    pub fn take(&mut self, tile: &TileOf) -> Vec<FrameKey> {
        self.waiting.remove(tile).unwrap_or_default()
    }

    /// The frames waiting for any tile of frame `seq` of `camera` (which failed).
    pub fn take_frame(&mut self, camera: &str, seq: u64) -> Vec<FrameKey> {
        let tiles: Vec<TileOf> = self
            .waiting
            .keys()
            .filter(|(c, s, _)| c == camera && *s == seq)
            .cloned()
            .collect();
        tiles.iter().flat_map(|tile| self.take(tile)).collect()
    }

    /// Everything waiting, emptied.
    pub fn take_all(&mut self) -> Vec<(TileOf, Vec<FrameKey>)> {
        self.waiting.drain().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{FrameKey, PartitionId};
    use image::Rgb;
    use tessera_operators::detection::Detection;
    use tessera_operators::gate::TileDecision;
    use tessera_operators::geometry::{BBox, PixelRect};

    fn meta(camera: &str, generation: u64, offset: i64, capture_ms: i64) -> FrameMeta {
        let mut meta = FrameMeta::detached(
            FrameKey {
                partition: PartitionId {
                    topic: Arc::from("frames"),
                    partition: 0,
                },
                generation,
                seq: offset as u64,
                offset,
            },
            Some(camera.as_bytes().to_vec()),
        );
        meta.kafka_timestamp_ms = Some(capture_ms);
        meta
    }

    fn tiles() -> Vec<Tile> {
        vec![
            Tile {
                index: 0,
                rect: PixelRect::new(0, 0, 64, 64),
                full_frame: false,
            },
            Tile {
                index: 1,
                rect: PixelRect::new(64, 0, 64, 64),
                full_frame: false,
            },
        ]
    }

    fn output(score: f32) -> TileOutput {
        TileOutput {
            detections: vec![Detection {
                bbox: BBox {
                    x1: 1.0,
                    y1: 2.0,
                    x2: 3.0,
                    y2: 4.0,
                },
                score,
                class_id: 0,
            }],
            ..TileOutput::default()
        }
    }

    fn gate(config: GateConfig) -> TileGate {
        TileGate::new(
            &config,
            Duration::from_secs(10),
            Monitor::new("test", "group", Duration::from_secs(30)),
        )
    }

    /// Plans a frame and completes the tiles that ran with `score`; returns the plan.
    fn frame(gate: &TileGate, meta: &FrameMeta, image: &RgbImage, score: f32) -> GatedFrame {
        let planned = gate.plan(meta, None, 0, None, image, &tiles());
        let ran = planned
            .tiles
            .iter()
            .enumerate()
            .filter(|(_, decision)| matches!(decision, TileDecision::Infer))
            .map(|(i, _)| (i, output(score)))
            .collect();
        gate.complete(meta, ran);
        planned
    }

    fn reused(planned: &GatedFrame) -> Vec<Option<f32>> {
        planned
            .tiles
            .iter()
            .map(|d| match d {
                TileDecision::Reuse(o) => Some(o.detections[0].score),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn unchanged_tiles_reuse_and_a_new_assignment_runs_in_full() {
        let config = GateConfig {
            enabled: true,
            ..GateConfig::default()
        };
        let gate = gate(config);
        let grey = RgbImage::from_pixel(128, 64, Rgb([90, 90, 90]));
        let first = frame(&gate, &meta("cam", 1, 10, 1_000), &grey, 0.1);
        assert!(first.refresh);
        assert_eq!(reused(&first), vec![None, None]);
        let second = frame(&gate, &meta("cam", 1, 11, 1_100), &grey, 0.2);
        assert_eq!(reused(&second), vec![Some(0.1), Some(0.1)]);
        // Something appears in the right tile: only it runs.
        let mut changed = grey.clone();
        for y in 10..40 {
            for x in 80..110 {
                changed.put_pixel(x, y, Rgb([250, 250, 250]));
            }
        }
        let third = frame(&gate, &meta("cam", 1, 12, 1_200), &changed, 0.3);
        assert_eq!(reused(&third), vec![Some(0.1), None]);
        // The partition is assigned again (generation 2, after a rebalance): a full refresh.
        let after = frame(&gate, &meta("cam", 2, 13, 1_300), &changed, 0.4);
        assert!(after.refresh);
        assert_eq!(reused(&after), vec![None, None]);
        // A revoked assignment's cameras are dropped.
        gate.retain_live(|stream| stream.generation != 2);
        assert_eq!(gate.monitor.metrics.gate_cameras.get(), 0);
        let metrics = gate.monitor.metrics.encode_text();
        assert!(
            metrics.contains("tessera_gate_tiles_total{decision=\"reused\"} 3"),
            "{metrics}"
        );
        assert!(
            metrics.contains("tessera_gate_refreshes_total 2"),
            "{metrics}"
        );
    }

    #[test]
    fn a_retried_frame_and_a_new_head_run_in_full() {
        let gate = gate(GateConfig::default());
        let grey = RgbImage::from_pixel(128, 64, Rgb([90, 90, 90]));
        frame(&gate, &meta("cam", 1, 1, 0), &grey, 0.1);
        let retried = gate.plan(&meta("cam", 1, 2, 100), None, 1, None, &grey, &tiles());
        assert!(retried.refresh);
        gate.complete(
            &meta("cam", 1, 2, 100),
            vec![(0, output(0.2)), (1, output(0.2))],
        );
        let head = Some((3, "global".to_owned()));
        let with_head = gate.plan(&meta("cam", 1, 3, 200), head, 0, None, &grey, &tiles());
        assert!(with_head.refresh, "another head's outputs differ");
    }

    #[test]
    fn sustained_lag_relaxes_towards_the_bounds() {
        let config = GateConfig {
            relax_after: Duration::from_secs(2),
            ..GateConfig::default()
        };
        let gate = gate(config);
        let grey = RgbImage::from_pixel(128, 64, Rgb([90, 90, 90]));
        let plan = |offset: i64, age_ms: i64| {
            gate.plan(
                &meta("cam", 1, offset, offset * 100),
                None,
                0,
                Some(age_ms),
                &grey,
                &tiles(),
            )
        };
        assert_eq!(plan(1, 500).relaxation, 0.0);
        // One late frame barely moves the smoothed lag.
        assert_eq!(plan(2, 2_500).relaxation, 0.0);
        // Frames 6 s late, for long: halfway between 2 s and flow.max_age (10 s).
        let mut last = 0.0;
        for offset in 3..200 {
            last = plan(offset, 6_000).relaxation;
        }
        assert!((last - 0.5).abs() < 0.01, "{last}");
        // Beyond max_age: fully relaxed.
        for offset in 200..400 {
            last = plan(offset, 60_000).relaxation;
        }
        assert_eq!(last, 1.0);
    }
}
