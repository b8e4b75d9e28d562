//! The ceiling: ONNX Runtime alone running the same number of model runs as the pipeline, on
//! the same cores, with the best session layout it can find (sessions x intra-op threads),
//! no Kafka, no decoding, no preprocessing. Its inputs are the real tiles of the benchmark's
//! frames, prepared beforehand, so it runs exactly the inferences tessera runs.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use tessera_models::{BatchDim, Environment, Model, ModelSession, SessionConfig};
use tessera_operators::decode::{DecodeLimits, decode_image};
use tessera_operators::preprocess::Preprocessor;
use tessera_operators::tiling::TilingConfig;

/// One layout tried.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Layout {
    pub sessions: usize,
    pub intra_op_threads: usize,
    pub batch: usize,
    pub seconds: f64,
    /// Images (tiles) per second.
    pub images_per_s: f64,
}

/// Every layout tried, the best, and the best measured again between the pipeline's rounds.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Ceiling {
    pub images: usize,
    pub layouts: Vec<Layout>,
    pub best: Layout,
    /// The best layout measured again after each round of the pipeline: this machine's
    /// speed drifts by several percent over minutes, so each round is compared with the
    /// ceiling measured just before and just after it.
    pub again: Vec<Layout>,
}

impl Ceiling {
    /// Images per second of the best layout around round `round` (0-based): the mean of its
    /// measurements just before and just after.
    pub fn images_per_s_around(&self, round: usize) -> f64 {
        let measured = |i: usize| match i {
            0 => Some(self.best.images_per_s),
            i => self.again.get(i - 1).map(|l| l.images_per_s),
        };
        match (measured(round), measured(round + 1)) {
            (Some(before), Some(after)) => (before + after) / 2.0,
            (Some(before), None) => before,
            _ => self.best.images_per_s,
        }
    }

    /// Runs the best layout again (see [`Ceiling::again`]); returns its images per second.
    pub fn measure_again(
        &mut self,
        env: &Arc<Environment>,
        model: &Arc<Model>,
        tiles: &[Vec<f32>],
    ) -> anyhow::Result<f64> {
        let best = &self.best;
        let again = run_layout(
            env,
            model,
            tiles,
            self.images,
            best.batch,
            best.sessions,
            best.intra_op_threads,
        )?;
        eprintln!(
            "  ceiling again: {} session(s) x {} thread(s), batch {}: {:.1} images/s",
            again.sessions, again.intra_op_threads, again.batch, again.images_per_s
        );
        let images_per_s = again.images_per_s;
        self.again.push(again);
        Ok(images_per_s)
    }
}

/// The model inputs of every tile of `jpegs` (default tiling), in frame and tile order.
pub fn real_tiles(model: &Model, jpegs: &[Vec<u8>]) -> anyhow::Result<Vec<Vec<f32>>> {
    let input = &model.manifest.input;
    let grid = model
        .tiling(&TilingConfig::default())
        .grid(input.width, input.height);
    let mut preprocessor = Preprocessor::new(model.preprocess_spec());
    let mut tiles = Vec::new();
    for jpeg in jpegs {
        let image = decode_image(jpeg, &DecodeLimits::default())?;
        for tile in grid.tiles(image.width(), image.height()) {
            let mut tensor = vec![0.0; preprocessor.tensor_len()];
            preprocessor.prepare_into(&image, tile.rect, &mut tensor)?;
            tiles.push(tensor);
        }
    }
    anyhow::ensure!(!tiles.is_empty(), "no tiles");
    Ok(tiles)
}

/// Runs `images` model inputs (cycling through `tiles`) through `model` in batches of `batch`
/// (forced to the model's own batch when it is fixed) with every layout of at most `cores`
/// threads in all.
pub fn measure(
    env: &Arc<Environment>,
    model: &Arc<Model>,
    tiles: &[Vec<f32>],
    images: usize,
    batch: usize,
    cores: usize,
) -> anyhow::Result<Ceiling> {
    let mut layouts = Vec::new();
    for sessions in 1..=cores {
        for intra_op_threads in 1..=cores / sessions {
            let layout = run_layout(env, model, tiles, images, batch, sessions, intra_op_threads)?;
            eprintln!(
                "  ceiling: {sessions} session(s) x {intra_op_threads} thread(s), batch {}: {:.1} images/s",
                layout.batch, layout.images_per_s
            );
            layouts.push(layout);
        }
    }
    let best = layouts
        .iter()
        .max_by(|a, b| a.images_per_s.total_cmp(&b.images_per_s))
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no layout"))?;
    Ok(Ceiling {
        images,
        layouts,
        best,
        again: Vec::new(),
    })
}

fn run_layout(
    env: &Arc<Environment>,
    model: &Arc<Model>,
    tiles: &[Vec<f32>],
    images: usize,
    batch: usize,
    sessions: usize,
    intra_op_threads: usize,
) -> anyhow::Result<Layout> {
    let config = SessionConfig {
        intra_op_threads,
        ..SessionConfig::default()
    };
    let mut loaded = (0..sessions)
        .map(|_| ModelSession::load(env, model.clone(), &config))
        .collect::<Result<Vec<_>, _>>()?;
    let batch = match loaded[0].batch_dim() {
        BatchDim::Fixed(n) => n,
        BatchDim::Dynamic => batch.max(1),
    };
    // Batches of consecutive tiles, as the pipeline forms them.
    let inputs: Arc<Vec<Vec<f32>>> = Arc::new(
        tiles
            .chunks(batch)
            .map(|chunk| {
                let mut input: Vec<f32> = chunk.concat();
                input.resize(batch * tiles[0].len(), 0.0);
                input
            })
            .collect(),
    );
    anyhow::ensure!(
        inputs[0].len() == batch * loaded[0].tensor_len(),
        "tile tensors do not fit the model input"
    );
    for session in &mut loaded {
        session.run(&inputs[0], batch)?; // warm-up: first runs allocate
    }
    let runs = images.div_ceil(batch);
    let started = Instant::now();
    let workers: Vec<_> = loaded
        .into_iter()
        .enumerate()
        .map(|(i, mut session)| {
            let inputs = inputs.clone();
            // Runs split evenly; the first sessions take the remainder.
            let mine = runs / sessions + usize::from(i < runs % sessions);
            std::thread::spawn(move || -> anyhow::Result<()> {
                for run in 0..mine {
                    session.run(&inputs[(run * sessions + i) % inputs.len()], batch)?;
                }
                Ok(())
            })
        })
        .collect();
    for worker in workers {
        worker
            .join()
            .map_err(|_| anyhow::anyhow!("ceiling worker panicked"))??;
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(Layout {
        sessions,
        intra_op_threads,
        batch,
        seconds,
        images_per_s: (runs * batch) as f64 / seconds.max(f64::EPSILON),
    })
}

/// Loads `manifest`'s model from `assets`.
pub fn load_model(manifest: &Path, assets: &Path) -> anyhow::Result<Arc<Model>> {
    Ok(Arc::new(Model::load(manifest, None, Some(assets))?))
}
