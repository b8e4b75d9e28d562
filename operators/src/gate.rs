//! Change-gated tiles: most cameras are static, and between two frames of one camera most tiles
//! do not change. Per camera, the gate keeps a cheap signature of each tile of the last frame it
//! was inferred on (the mean luma of a 16 x 16 grid of cells) with that tile's result; a tile
//! whose signature has not moved beyond a threshold reuses the result instead of running the
//! model. The full-frame pass runs when any tile runs or its own signature moved. Every camera
//! is refreshed in full every N frames or T milliseconds of its stream clock, so nothing stays
//! stale for long. State is bounded (least recently seen cameras are dropped first) and is reset
//! on rebalance (another epoch) or restart (a new gate): a camera without state gets a full
//! refresh.
//!
//! The gate is generic over the cached per-tile result, so it knows nothing of models.

use std::collections::HashMap;

use image::RgbImage;

use crate::geometry::PixelRect;
use crate::tiling::Tile;

/// Cells per side of a tile signature.
pub const SIGNATURE_SIDE: u32 = 16;

/// Samples per cell side at most: a cell's mean is estimated from up to 8 x 8 pixels, enough
/// to average sensor noise and JPEG ringing away while costing a few thousand reads per tile.
const SAMPLES_PER_CELL_SIDE: u32 = 8;

/// The mean luma (0-255) of each cell of a grid over a tile.
#[derive(Debug, Clone, PartialEq)]
pub struct TileSignature {
    cells: Vec<f32>,
}

impl TileSignature {
    /// The signature of `rect` of `frame` (clipped to the frame). An empty rectangle has an
    /// empty signature, which differs from every other.
    pub fn of(frame: &RgbImage, rect: PixelRect) -> Self {
        let x_end = (rect.x.saturating_add(rect.width)).min(frame.width());
        let y_end = (rect.y.saturating_add(rect.height)).min(frame.height());
        let (width, height) = (x_end.saturating_sub(rect.x), y_end.saturating_sub(rect.y));
        let side_x = SIGNATURE_SIDE.min(width);
        let side_y = SIGNATURE_SIDE.min(height);
        let mut cells = Vec::with_capacity((side_x * side_y) as usize);
        for cy in 0..side_y {
            let (y0, y1) = (
                rect.y + cy * height / side_y,
                rect.y + (cy + 1) * height / side_y,
            );
            let step_y = ((y1 - y0) / SAMPLES_PER_CELL_SIDE).max(1);
            for cx in 0..side_x {
                let (x0, x1) = (
                    rect.x + cx * width / side_x,
                    rect.x + (cx + 1) * width / side_x,
                );
                let step_x = ((x1 - x0) / SAMPLES_PER_CELL_SIDE).max(1);
                let (mut sum, mut n) = (0u32, 0u32);
                for y in (y0..y1).step_by(step_y as usize) {
                    for x in (x0..x1).step_by(step_x as usize) {
                        let [r, g, b] = frame.get_pixel(x, y).0;
                        // BT.601 luma in fixed point.
                        sum += (77 * u32::from(r) + 150 * u32::from(g) + 29 * u32::from(b)) >> 8;
                        n += 1;
                    }
                }
                cells.push(sum as f32 / n.max(1) as f32);
            }
        }
        Self { cells }
    }

    /// The largest change of a cell's mean luma between two signatures; infinite when their
    /// grids differ (another tile size), so such tiles always count as changed.
    pub fn distance(&self, other: &Self) -> f32 {
        if self.cells.len() != other.cells.len() || self.cells.is_empty() {
            return f32::INFINITY;
        }
        self.cells
            .iter()
            .zip(&other.cells)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max)
    }
}

/// When a tile counts as changed and how often a camera is refreshed in full.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GateSettings {
    /// A tile is re-inferred when a cell's mean luma moved by more than this (0-255 levels).
    pub threshold: f32,
    /// Every camera is inferred in full at least every this many frames (1: every frame).
    pub refresh_frames: u32,
    /// Every camera is inferred in full at least every this many milliseconds of its clock.
    pub refresh_ms: u64,
}

impl GateSettings {
    /// The settings relaxed by `level` in `[0, 1]` towards `relaxed` (load-adaptive work: under
    /// sustained lag the gate reuses more before frames are skipped). Level 0 is `self`.
    pub fn relaxed_towards(&self, relaxed: &GateSettings, level: f32) -> GateSettings {
        let level = if level.is_nan() {
            0.0
        } else {
            level.clamp(0.0, 1.0)
        };
        let lerp = |a: f64, b: f64| a + (b - a) * f64::from(level);
        GateSettings {
            threshold: lerp(f64::from(self.threshold), f64::from(relaxed.threshold)) as f32,
            refresh_frames: lerp(
                f64::from(self.refresh_frames),
                f64::from(relaxed.refresh_frames),
            )
            .round() as u32,
            refresh_ms: lerp(self.refresh_ms as f64, relaxed.refresh_ms as f64).round() as u64,
        }
    }
}

/// What to do with one tile of a frame.
#[derive(Debug, Clone, PartialEq)]
pub enum TileDecision<T> {
    /// Run the model on it.
    Infer,
    /// Use this result of an earlier frame.
    Reuse(T),
    /// Use the result of this tile in frame `frame` (an earlier frame of the camera whose run
    /// of the tile is still under way): frames of a stream are prepared ahead of their
    /// results, so the newest reference is often in flight.
    Follow { frame: u64 },
}

/// The gate's plan for one frame: a decision per tile, in tile order.
#[derive(Debug, Clone, PartialEq)]
pub struct GatePlan<T> {
    /// One decision per tile.
    pub decisions: Vec<TileDecision<T>>,
    /// True when the frame is a full refresh (every tile inferred by rule, not by change).
    pub refresh: bool,
}

impl<T> GatePlan<T> {
    /// Tiles to infer.
    pub fn inferred(&self) -> usize {
        self.decisions
            .iter()
            .filter(|d| matches!(d, TileDecision::Infer))
            .count()
    }

    /// Tiles whose earlier result is reused.
    pub fn reused(&self) -> usize {
        self.decisions.len() - self.inferred()
    }
}

/// Results kept per tile: the reference's, and a few before it for frames that follow a
/// reference replaced since they were planned.
const RESULTS_KEPT: usize = 4;

/// One tile's reference: the signature it was last inferred on, and the results of its latest
/// runs.
#[derive(Debug, Clone)]
struct Reference<T> {
    signature: TileSignature,
    /// The frame whose inference set this reference.
    frame: u64,
    /// Results of the tile by frame, oldest first (at most [`RESULTS_KEPT`]); the
    /// reference's own is missing while its run is in flight.
    results: Vec<(u64, T)>,
}

impl<T: Clone> Reference<T> {
    fn result(&self, frame: u64) -> Option<&T> {
        self.results
            .iter()
            .find(|(f, _)| *f == frame)
            .map(|(_, result)| result)
    }
}

#[derive(Debug)]
struct CameraState<T, E> {
    /// What the references depend on besides the pixels; another epoch resets the camera.
    epoch: E,
    /// The tile rectangles the references belong to; another layout resets the camera.
    layout: Vec<PixelRect>,
    references: Vec<Reference<T>>,
    /// Frames planned since the last full refresh.
    since_refresh: u32,
    /// Stream clock of the last full refresh.
    refreshed_at_ms: u64,
    /// Recency, for dropping the least recently seen camera.
    seen: u64,
}

/// Which frame of which camera is planned.
#[derive(Debug, Clone, Copy)]
pub struct FrameStamp<'a, E> {
    pub camera: &'a str,
    /// What the camera's results depend on besides its pixels (the partition assignment the
    /// frame came from, the head applied to its tiles): a camera seen under another epoch
    /// starts afresh, so a rebalance or a new head is a full refresh.
    pub epoch: &'a E,
    /// The frame's position in the camera's stream (increasing).
    pub seq: u64,
    /// Capture time on the camera's clock, in milliseconds.
    pub now_ms: u64,
}

/// The signatures of `tiles` of `frame`, in tile order: the costly part of planning, done
/// before taking the gate (see [`ChangeGate::plan`]).
pub fn signatures(frame: &RgbImage, tiles: &[Tile]) -> Vec<TileSignature> {
    tiles
        .iter()
        .map(|tile| TileSignature::of(frame, tile.rect))
        .collect()
}

/// Per-camera tile references, bounded to `max_cameras` cameras. `T` is a tile's result, `E`
/// the epoch a camera's references belong to (see [`FrameStamp::epoch`]).
#[derive(Debug)]
pub struct ChangeGate<T, E = ()> {
    cameras: HashMap<String, CameraState<T, E>>,
    max_cameras: usize,
    tick: u64,
}

impl<T: Clone, E: Clone + PartialEq> ChangeGate<T, E> {
    /// An empty gate keeping state for at most `max_cameras` cameras (at least 1).
    pub fn new(max_cameras: usize) -> Self {
        Self {
            cameras: HashMap::new(),
            max_cameras: max_cameras.max(1),
            tick: 0,
        }
    }

    /// Cameras with state.
    pub fn cameras(&self) -> usize {
        self.cameras.len()
    }

    /// Plans frame `stamp` cut into `tiles`, whose [`signatures`] are given. Tiles to infer
    /// become the camera's new references, pending until [`ChangeGate::complete`] gives their
    /// results; a tile whose reference is still pending is inferred again rather than waited
    /// for.
    pub fn plan(
        &mut self,
        stamp: FrameStamp<'_, E>,
        signatures: Vec<TileSignature>,
        tiles: &[Tile],
        settings: &GateSettings,
    ) -> GatePlan<T> {
        debug_assert_eq!(signatures.len(), tiles.len(), "one signature per tile");
        self.tick += 1;
        let now_ms = stamp.now_ms;
        let layout: Vec<PixelRect> = tiles.iter().map(|t| t.rect).collect();
        if !self.cameras.contains_key(stamp.camera) {
            self.make_room();
        }
        let state = self
            .cameras
            .entry(stamp.camera.to_string())
            .or_insert_with(|| CameraState {
                epoch: stamp.epoch.clone(),
                layout: Vec::new(),
                references: Vec::new(),
                since_refresh: 0,
                refreshed_at_ms: now_ms,
                seen: 0,
            });
        state.seen = self.tick;
        // Frames of one camera may be planned slightly out of order (several prepare lanes):
        // only a clock that goes back by more than a period (a restarted camera) refreshes.
        let refresh = state.layout != layout
            || state.epoch != *stamp.epoch
            || state.since_refresh.saturating_add(1) >= settings.refresh_frames
            || now_ms.saturating_sub(state.refreshed_at_ms) >= settings.refresh_ms
            || now_ms.saturating_add(settings.refresh_ms) < state.refreshed_at_ms;
        if refresh {
            state.epoch = stamp.epoch.clone();
            state.layout = layout;
            state.references.clear();
            state.since_refresh = 0;
            state.refreshed_at_ms = now_ms;
        } else {
            state.since_refresh += 1;
        }

        let mut any_grid_tile_inferred = false;
        let mut signatures: Vec<Option<TileSignature>> = signatures.into_iter().map(Some).collect();
        // Grid tiles first, the full-frame pass after (it depends on them).
        let order = tiles
            .iter()
            .enumerate()
            .filter(|(_, t)| !t.full_frame)
            .chain(tiles.iter().enumerate().filter(|(_, t)| t.full_frame));
        let mut planned: Vec<Option<TileDecision<T>>> = vec![None; tiles.len()];
        for (i, tile) in order {
            let signature = signatures
                .get_mut(i)
                .and_then(Option::take)
                .unwrap_or(TileSignature { cells: Vec::new() });
            let reusable = state
                .references
                .get(i)
                .filter(|r| signature.distance(&r.signature) <= settings.threshold)
                .map(|r| match r.result(r.frame) {
                    Some(result) => TileDecision::Reuse(result.clone()),
                    None => TileDecision::Follow { frame: r.frame },
                });
            let decision = match reusable {
                Some(reuse) if !(tile.full_frame && any_grid_tile_inferred) => reuse,
                _ => {
                    any_grid_tile_inferred |= !tile.full_frame;
                    if let Some(reference) = state.references.get_mut(i) {
                        reference.signature = signature;
                        reference.frame = stamp.seq;
                    } else {
                        // References are made in refresh order (every tile inferred), so a
                        // missing one can only be the next index.
                        state.references.resize_with(i, || Reference {
                            signature: TileSignature { cells: Vec::new() },
                            frame: stamp.seq,
                            results: Vec::new(),
                        });
                        state.references.push(Reference {
                            signature,
                            frame: stamp.seq,
                            results: Vec::new(),
                        });
                    }
                    TileDecision::Infer
                }
            };
            planned[i] = Some(decision);
        }
        let decisions = planned
            .into_iter()
            .map(|d| d.unwrap_or(TileDecision::Infer))
            .collect();
        GatePlan { decisions, refresh }
    }

    /// The result of tile `index` of frame `seq` of `camera`, inferred as planned: frames
    /// planned later reuse it, and those that follow it find it with [`ChangeGate::result`].
    /// Ignored when the camera was dropped since.
    pub fn complete(&mut self, camera: &str, seq: u64, index: usize, result: T) {
        let Some(reference) = self
            .cameras
            .get_mut(camera)
            .and_then(|s| s.references.get_mut(index))
        else {
            return;
        };
        let at = reference.results.partition_point(|(f, _)| *f < seq);
        if reference.results.get(at).is_some_and(|(f, _)| *f == seq) {
            reference.results[at].1 = result;
        } else {
            reference.results.insert(at, (seq, result));
        }
        if reference.results.len() > RESULTS_KEPT {
            // The oldest goes, unless it is the reference's own.
            let oldest = usize::from(reference.results[0].0 == reference.frame);
            reference.results.remove(oldest);
        }
    }

    /// The result of tile `index` of frame `seq` of `camera`, if it was completed and is still
    /// kept (for a frame that follows it).
    pub fn result(&self, camera: &str, seq: u64, index: usize) -> Option<T> {
        self.cameras
            .get(camera)
            .and_then(|s| s.references.get(index))
            .and_then(|r| r.result(seq))
            .cloned()
    }

    /// Drops a camera's state (a frame of it failed): its next frame is a full refresh.
    pub fn forget(&mut self, camera: &str) {
        self.cameras.remove(camera);
    }

    /// Keeps the cameras whose epoch is still current (drops those of revoked partitions).
    pub fn retain(&mut self, mut current: impl FnMut(&E) -> bool) {
        self.cameras.retain(|_, state| current(&state.epoch));
    }

    fn make_room(&mut self) {
        while self.cameras.len() >= self.max_cameras {
            let Some(oldest) = self
                .cameras
                .iter()
                .min_by_key(|(_, s)| s.seen)
                .map(|(k, _)| k.clone())
            else {
                return;
            };
            self.cameras.remove(&oldest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    const SETTINGS: GateSettings = GateSettings {
        threshold: 4.0,
        refresh_frames: 100,
        refresh_ms: 60_000,
    };

    /// Two 128x128 tiles side by side and the full frame of a 256x128 frame.
    fn tiles() -> Vec<Tile> {
        vec![
            Tile {
                index: 0,
                rect: PixelRect::new(0, 0, 128, 128),
                full_frame: false,
            },
            Tile {
                index: 1,
                rect: PixelRect::new(128, 0, 128, 128),
                full_frame: false,
            },
            Tile {
                index: 2,
                rect: PixelRect::new(0, 0, 256, 128),
                full_frame: true,
            },
        ]
    }

    /// A textured background with deterministic noise of +-`noise` levels (frame `seed`).
    fn scene(seed: u32, noise: u32) -> RgbImage {
        RgbImage::from_fn(256, 128, |x, y| {
            let base = (x * 3 + y * 5) % 200 + 20;
            let hash = (x.wrapping_mul(73_856_093)
                ^ y.wrapping_mul(19_349_663)
                ^ seed.wrapping_mul(83_492_791))
                % (2 * noise + 1);
            let v = (base + hash).saturating_sub(noise).min(255) as u8;
            Rgb([v, v, v])
        })
    }

    fn kinds(plan: &GatePlan<&'static str>) -> Vec<&'static str> {
        plan.decisions
            .iter()
            .map(|d| match d {
                TileDecision::Infer => "infer",
                TileDecision::Reuse(r) => r,
                TileDecision::Follow { .. } => "follow",
            })
            .collect()
    }

    type Gate = ChangeGate<&'static str, u32>;

    /// Plans frame `frame` of `camera` (epoch 0).
    fn plan(
        gate: &mut Gate,
        camera: &str,
        frame: u64,
        now_ms: u64,
        image: &RgbImage,
        tiles: &[Tile],
        settings: &GateSettings,
    ) -> GatePlan<&'static str> {
        let stamp = FrameStamp {
            camera,
            epoch: &0,
            seq: frame,
            now_ms,
        };
        gate.plan(stamp, signatures(image, tiles), tiles, settings)
    }

    /// Plans frame `frame` and completes every inferred tile with `result`.
    fn step(
        gate: &mut Gate,
        camera: &str,
        frame: u64,
        now_ms: u64,
        image: &RgbImage,
        result: &'static str,
    ) -> GatePlan<&'static str> {
        let plan = plan(gate, camera, frame, now_ms, image, &tiles(), &SETTINGS);
        for (i, d) in plan.decisions.iter().enumerate() {
            if matches!(d, TileDecision::Infer) {
                gate.complete(camera, frame, i, result);
            }
        }
        plan
    }

    #[test]
    fn unchanged_tiles_are_reused_and_changed_ones_inferred() {
        let mut gate: Gate = ChangeGate::new(8);
        let first = step(&mut gate, "cam", 1, 0, &scene(1, 3), "f1");
        assert!(
            first.refresh,
            "a camera without state starts with a full refresh"
        );
        assert_eq!(kinds(&first), vec!["infer"; 3]);
        // The same scene with fresh noise: every tile reused, from frame 1.
        let second = step(&mut gate, "cam", 2, 200, &scene(2, 3), "f2");
        assert!(!second.refresh);
        assert_eq!(kinds(&second), vec!["f1", "f1", "f1"]);
        assert_eq!((second.inferred(), second.reused()), (0, 3));
        // An object (40x40, dark) enters the right tile: it and the full frame run again.
        let mut moved = scene(3, 3);
        for y in 40..80 {
            for x in 160..200 {
                moved.put_pixel(x, y, Rgb([0, 0, 0]));
            }
        }
        let third = step(&mut gate, "cam", 3, 400, &moved, "f3");
        assert_eq!(kinds(&third), vec!["f1", "infer", "infer"]);
        // Still there, unmoved: reused from frame 3.
        let fourth = step(&mut gate, "cam", 4, 600, &moved, "f4");
        assert_eq!(kinds(&fourth), vec!["f1", "f3", "f3"]);
    }

    #[test]
    fn a_reference_still_in_flight_is_followed() {
        let mut gate: Gate = ChangeGate::new(8);
        let image = scene(1, 0);
        let first = plan(&mut gate, "cam", 1, 0, &image, &tiles(), &SETTINGS);
        assert_eq!(first.inferred(), 3);
        // Frame 2 is planned before frame 1's results arrive: it follows frame 1.
        let second = plan(&mut gate, "cam", 2, 100, &image, &tiles(), &SETTINGS);
        assert_eq!(second.decisions, vec![TileDecision::Follow { frame: 1 }; 3]);
        assert_eq!((second.inferred(), second.reused()), (0, 3));
        assert_eq!(gate.result("cam", 1, 0), None);
        // Frame 1's results arrive; frame 3 reuses them, frame 2 finds them.
        for i in 0..3 {
            gate.complete("cam", 1, i, "f1");
        }
        assert_eq!(gate.result("cam", 1, 2), Some("f1"));
        let third = plan(&mut gate, "cam", 3, 200, &image, &tiles(), &SETTINGS);
        assert_eq!(kinds(&third), vec!["f1"; 3]);
        // A tile changes (frame 4 runs it), then changes back before frame 4's result: frame 5
        // follows frame 4, and frame 1's result is still there for any frame following it.
        let mut changed = scene(1, 0);
        for y in 40..80 {
            for x in 20..60 {
                changed.put_pixel(x, y, Rgb([0, 0, 0]));
            }
        }
        let fourth = plan(&mut gate, "cam", 4, 300, &changed, &tiles(), &SETTINGS);
        assert_eq!(kinds(&fourth), vec!["infer", "f1", "infer"]);
        let fifth = plan(&mut gate, "cam", 5, 400, &changed, &tiles(), &SETTINGS);
        assert_eq!(fifth.decisions[0], TileDecision::Follow { frame: 4 });
        assert_eq!(gate.result("cam", 1, 0), Some("f1"));
        // Results are kept for a few runs of a tile only.
        for frame in 10..10 + RESULTS_KEPT as u64 {
            gate.complete("cam", frame, 0, "later");
        }
        assert_eq!(gate.result("cam", 1, 0), None);
        assert_eq!(
            gate.result("cam", 4, 0),
            None,
            "frame 4's run never completed"
        );
    }

    #[test]
    fn the_refresh_period_is_honoured_in_frames_and_time() {
        let image = scene(1, 2);
        let settings = GateSettings {
            refresh_frames: 3,
            ..SETTINGS
        };
        let mut gate: Gate = ChangeGate::new(8);
        let mut refreshes = Vec::new();
        for frame in 1..=7 {
            let plan = plan(
                &mut gate,
                "cam",
                frame,
                frame * 100,
                &image,
                &tiles(),
                &settings,
            );
            for i in 0..3 {
                gate.complete("cam", frame, i, "r");
            }
            if plan.refresh {
                assert_eq!(plan.inferred(), 3, "frame {frame}");
                refreshes.push(frame);
            } else {
                assert_eq!(plan.inferred(), 0, "frame {frame}");
            }
        }
        assert_eq!(refreshes, vec![1, 4, 7]);

        let mut gate: Gate = ChangeGate::new(8);
        assert!(step(&mut gate, "cam", 1, 1_000, &image, "a").refresh);
        assert!(!step(&mut gate, "cam", 2, 60_999, &image, "b").refresh);
        assert!(
            step(&mut gate, "cam", 3, 61_000, &image, "c").refresh,
            "60 s after frame 1"
        );
        // A clock that goes back by more than a period refreshes too; a little (frames
        // planned out of order) does not.
        assert!(!step(&mut gate, "cam", 4, 60_900, &image, "d").refresh);
        assert!(step(&mut gate, "cam", 5, 500, &image, "e").refresh);
    }

    #[test]
    fn state_is_per_camera_bounded_and_dropped_on_demand() {
        let image = scene(1, 0);
        let mut gate: Gate = ChangeGate::new(2);
        step(&mut gate, "a", 1, 0, &image, "a1");
        step(&mut gate, "b", 1, 0, &image, "b1");
        assert_eq!(
            kinds(&step(&mut gate, "a", 2, 100, &image, "a2")),
            vec!["a1"; 3]
        );
        // A third camera evicts the least recently seen one (b).
        step(&mut gate, "c", 1, 0, &image, "c1");
        assert_eq!(gate.cameras(), 2);
        assert!(step(&mut gate, "b", 2, 100, &image, "b2").refresh);
        // forget: that camera only.
        gate.forget("b");
        assert!(step(&mut gate, "b", 3, 200, &image, "b3").refresh);
        assert!(!step(&mut gate, "c", 2, 100, &image, "c2").refresh);
        // Another frame size (another tile layout) is a refresh.
        let other = vec![Tile {
            index: 0,
            rect: PixelRect::new(0, 0, 256, 128),
            full_frame: true,
        }];
        assert!(plan(&mut gate, "c", 3, 200, &image, &other, &SETTINGS).refresh);
    }

    #[test]
    fn another_epoch_resets_the_camera_and_retain_drops_old_epochs() {
        let image = scene(1, 0);
        let mut gate: Gate = ChangeGate::new(8);
        let run = |gate: &mut Gate, camera, epoch: &u32, seq| {
            let stamp = FrameStamp {
                camera,
                epoch,
                seq,
                now_ms: seq * 100,
            };
            let plan = gate.plan(stamp, signatures(&image, &tiles()), &tiles(), &SETTINGS);
            for i in 0..3 {
                gate.complete(camera, seq, i, "r");
            }
            plan
        };
        assert!(run(&mut gate, "a", &1, 1).refresh);
        assert!(run(&mut gate, "b", &1, 1).refresh);
        assert_eq!(run(&mut gate, "a", &1, 2).reused(), 3);
        // The partition was assigned again (a rebalance): a full refresh, then reuse again.
        let after = run(&mut gate, "a", &2, 3);
        assert!(after.refresh);
        assert_eq!(after.inferred(), 3);
        assert_eq!(run(&mut gate, "a", &2, 4).reused(), 3);
        // Epoch 1 is revoked: its cameras are dropped.
        gate.retain(|epoch| *epoch != 1);
        assert_eq!(gate.cameras(), 1);
        assert!(run(&mut gate, "b", &1, 2).refresh);
    }

    #[test]
    fn signatures_see_objects_but_not_noise() {
        let clean = scene(1, 0);
        let rect = PixelRect::new(0, 0, 256, 128);
        let noisy = TileSignature::of(&scene(9, 6), rect);
        let reference = TileSignature::of(&clean, rect);
        assert!(
            reference.distance(&noisy) < 4.0,
            "{}",
            reference.distance(&noisy)
        );
        let mut object = clean.clone();
        // 12x12 pixels, most of one 16x8 cell.
        for y in 2..14 {
            for x in 2..14 {
                object.put_pixel(x, y, Rgb([255, 255, 255]));
            }
        }
        assert!(reference.distance(&TileSignature::of(&object, rect)) > 4.0);
        // Another grid never matches; a rectangle past the frame is clipped.
        let small = TileSignature::of(&clean, PixelRect::new(0, 0, 8, 8));
        assert_eq!(reference.distance(&small), f32::INFINITY);
        let clipped = TileSignature::of(&clean, PixelRect::new(252, 126, 100, 100));
        assert_eq!(clipped.cells.len(), 4 * 2);
        assert_eq!(
            TileSignature::of(&clean, PixelRect::new(256, 0, 10, 10)).distance(&small),
            f32::INFINITY
        );
    }

    #[test]
    fn relaxing_moves_every_setting_towards_its_bound() {
        let relaxed = GateSettings {
            threshold: 12.0,
            refresh_frames: 300,
            refresh_ms: 180_000,
        };
        assert_eq!(SETTINGS.relaxed_towards(&relaxed, 0.0), SETTINGS);
        assert_eq!(SETTINGS.relaxed_towards(&relaxed, 1.0), relaxed);
        assert_eq!(SETTINGS.relaxed_towards(&relaxed, 7.0), relaxed);
        assert_eq!(SETTINGS.relaxed_towards(&relaxed, f32::NAN), SETTINGS);
        let half = SETTINGS.relaxed_towards(&relaxed, 0.5);
        assert_eq!(
            (half.threshold, half.refresh_frames, half.refresh_ms),
            (8.0, 200, 120_000)
        );
    }
}
