//! Test and demo assets: the shared folder (`$TESSERA_ASSETS`, default `../shared/assets`),
//! else the official files downloaded once into a cache and checked against pinned SHA-256.

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// An official file the demo can fetch when no assets folder is present.
#[derive(Debug)]
struct Official {
    /// Path inside the assets folder.
    path: &'static str,
    url: &'static str,
    sha256: &'static str,
}

const OFFICIAL: &[Official] = &[
    Official {
        path: "models/yolox_nano.onnx",
        url: "https://github.com/Megvii-BaseDetection/YOLOX/releases/download/0.1.1rc0/yolox_nano.onnx",
        sha256: "c789161ed43c8269fcd4e67c67eeeb4e80c622da2eb296a20bc6007bd18a0b7d",
    },
    Official {
        path: "images/dog.jpg",
        url: "https://raw.githubusercontent.com/Megvii-BaseDetection/YOLOX/main/assets/dog.jpg",
        sha256: "5a9522051c3cec2bbd2f6323fccba32e8fbf3ddcc2b3e2fd46b04c720bc6f866",
    },
    Official {
        path: "images/small-vehicles1.jpeg",
        url: "https://raw.githubusercontent.com/obss/sahi/main/demo/demo_data/small-vehicles1.jpeg",
        sha256: "e5789862c8d5f828d0c2ef933902649704c3daa047ccdcd43cfeae061cfd1f09",
    },
];

/// The assets folder named by `$TESSERA_ASSETS`, else `../shared/assets`, if it exists.
pub fn local_assets_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("TESSERA_ASSETS") {
        let dir = PathBuf::from(dir);
        return dir.is_dir().then_some(dir);
    }
    let default = PathBuf::from("../shared/assets");
    default.is_dir().then_some(default)
}

/// The assets folder to use: the local one, else the download cache (filled on first use).
pub fn resolve_assets_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = local_assets_dir() {
        return Ok(dir);
    }
    let cache = cache_dir();
    eprintln!(
        "No assets folder (set TESSERA_ASSETS); using the download cache {}",
        cache.display()
    );
    for file in OFFICIAL {
        let target = cache.join(file.path);
        if target.is_file() && sha256_file(&target)? == file.sha256 {
            continue;
        }
        download(file, &target)?;
    }
    Ok(cache)
}

fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("TESSERA_CACHE") {
        return PathBuf::from(dir);
    }
    match std::env::var_os("XDG_CACHE_HOME").or_else(|| {
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache").into_os_string())
    }) {
        Some(base) => PathBuf::from(base).join("tessera/assets"),
        None => PathBuf::from(".tessera/assets"),
    }
}

fn download(file: &Official, target: &Path) -> anyhow::Result<()> {
    eprintln!("Downloading {} ...", file.url);
    let mut response = ureq::get(file.url)
        .call()
        .map_err(|e| anyhow::anyhow!("download of {} failed: {e}", file.url))?;
    let mut bytes = Vec::new();
    response
        .body_mut()
        .as_reader()
        .take(64 << 20)
        .read_to_end(&mut bytes)?;
    let digest = hex(&Sha256::digest(&bytes));
    if digest != file.sha256 {
        anyhow::bail!(
            "{} has SHA-256 {digest}, expected {}: refusing to use it",
            file.url,
            file.sha256
        );
    }
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let partial = target.with_extension("partial");
    std::fs::write(&partial, &bytes)?;
    std::fs::rename(&partial, target)?;
    Ok(())
}

fn sha256_file(path: &Path) -> anyhow::Result<String> {
    Ok(hex(&Sha256::digest(std::fs::read(path)?)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The images of an assets folder (by extension, as `detect` takes them), sorted by name.
pub fn images(assets: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let dir = assets.join("images");
    let mut images: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| crate::images::is_image_path(path))
        .collect();
    images.sort();
    if images.is_empty() {
        anyhow::bail!("no images in {}", dir.display());
    }
    Ok(images)
}

/// The shipped model manifests: `models/manifests` of the working directory, else of the
/// source tree this binary was built from.
pub fn manifest_path(model: &str) -> PathBuf {
    let relative = PathBuf::from("models/manifests")
        .join(model)
        .join("model.toml");
    if relative.is_file() {
        return relative;
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../models/manifests")
        .join(model)
        .join("model.toml")
}

/// Points a configuration's model manifest at the shipped one when it names a shipped
/// manifest by its relative path (`models/manifests/...`, the default) that the working
/// directory does not hold: commands then work from any folder.
pub fn locate_shipped_manifest(config: &mut tessera_actors::PipelineConfig) {
    let manifest = &config.model.manifest;
    if manifest.is_relative() && !manifest.is_file() {
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(manifest);
        if shipped.is_file() {
            config.model.manifest = shipped;
        }
    }
}
