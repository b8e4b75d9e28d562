//! Benchmarks of tessera. `benches/micro.rs` holds the criterion micro-benchmarks;
//! `tessera-bench` (src/bin) runs the end-to-end workloads against the ONNX Runtime ceiling
//! and the Python baseline (figures and commands in BENCHMARKS.md).

pub mod baseline;
pub mod ceiling;
pub mod frames;
pub mod publish;
pub mod static_camera;
pub mod stats;
pub mod tessera_run;

use std::path::{Path, PathBuf};

/// The manifest of a shipped model as the benchmark workloads run it. Classifiers see frames
/// whole by default (`aggregate = "full_frame"`); the MobileNet workload measures batched tile
/// throughput, so it runs a copy (beside the labels, in the temp folder) that tiles and keeps
/// the best score per class (`aggregate = "max"`).
pub fn workload_manifest(model: &str) -> anyhow::Result<PathBuf> {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../models/manifests")
        .join(model);
    let text = std::fs::read_to_string(shipped.join("model.toml"))?;
    let manifest = tessera_models::ModelManifest::from_toml_str(&text, &shipped)?;
    if manifest.output.aggregate() != Some(tessera_models::Aggregate::FullFrame) {
        return Ok(shipped.join("model.toml"));
    }
    let dir = std::env::temp_dir().join(format!("tessera-bench-{model}-tiled"));
    std::fs::create_dir_all(&dir)?;
    std::fs::copy(
        shipped.join(&manifest.labels.file),
        dir.join(&manifest.labels.file),
    )?;
    let tiled = text.replacen("[output]\n", "[output]\naggregate = \"max\"\n", 1);
    anyhow::ensure!(tiled != text, "no [output] table in {}", shipped.display());
    std::fs::write(dir.join("model.toml"), tiled)?;
    Ok(dir.join("model.toml"))
}
