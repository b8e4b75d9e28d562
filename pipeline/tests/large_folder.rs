//! A folder larger than 20 MiB through `tessera detect` and `tessera demo --assets`: the
//! embedded broker keeps only about 5 MiB per partition, so publishing it all up front would
//! lose frames; both commands must answer every image.
//! (Lives in the binary's package because only it can locate the built binary.)

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::assets_dir;
use tessera_actors::FrameResult;

/// Noise images, which PNG cannot compress: 1024 x 768 x 3 bytes each.
const NOISE_IMAGES: usize = 10;
const MIN_FOLDER_BYTES: u64 = 20 << 20;

/// `dir` filled with the shared images and enough incompressible ones to pass 20 MiB.
fn large_folder(assets: &Path, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut files = Vec::new();
    for entry in std::fs::read_dir(assets.join("images"))? {
        let path = entry?.path();
        let target = dir.join(path.file_name().expect("a file name"));
        std::fs::copy(&path, &target)?;
        files.push(target);
    }
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    for i in 0..NOISE_IMAGES {
        let image = image::RgbImage::from_fn(1024, 768, |_, _| {
            // xorshift: fast, deterministic, incompressible enough.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let [r, g, b, ..] = state.to_le_bytes();
            image::Rgb([r, g, b])
        });
        let path = dir.join(format!("noise-{i:02}.png"));
        image.save(&path)?;
        files.push(path);
    }
    let bytes: u64 = files
        .iter()
        .map(|f| std::fs::metadata(f).map(|m| m.len()))
        .sum::<Result<u64, _>>()?;
    assert!(
        bytes > MIN_FOLDER_BYTES,
        "the folder holds {bytes} bytes, not over 20 MiB"
    );
    files.sort();
    Ok(files)
}

fn tessera() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tessera"))
}

#[test]
fn detect_and_the_demo_answer_every_image_of_a_folder_over_20_mib() -> anyhow::Result<()> {
    let Some(assets) = assets_dir() else {
        return Ok(());
    };
    let work = tempfile::tempdir()?;
    let folder = work.path().join("assets/images");
    let files = large_folder(&assets, &folder)?;
    let json = work.path().join("results.jsonl");

    let run = tessera()
        .arg("detect")
        .arg(&folder)
        .arg("--json")
        .arg(&json)
        .env("TESSERA_ASSETS", &assets)
        .output()?;
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "detect failed ({:?}):\n{stderr}",
        run.status
    );
    let results: Vec<FrameResult> = std::fs::read_to_string(&json)?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let answered: BTreeSet<String> = results.iter().map(|r| r.frame_id.clone()).collect();
    let expected: BTreeSet<String> = files.iter().map(|f| f.display().to_string()).collect();
    assert_eq!(answered, expected, "{stderr}");
    assert_eq!(results.len(), files.len(), "one result per image: {stderr}");
    // The real photos are recognised, not merely answered.
    let dog = results
        .iter()
        .find(|r| r.frame_id.ends_with("dog.jpg"))
        .expect("dog.jpg has a result");
    assert!(dog.detections.iter().any(|d| d.label == "dog"), "{dog:?}");

    // The demo on the same folder (its models from the shared assets).
    std::os::unix::fs::symlink(assets.join("models"), work.path().join("assets/models"))?;
    let demo = tessera()
        .args(["demo", "--rounds", "1", "--out"])
        .arg(work.path().join("demo-out"))
        .arg("--assets")
        .arg(work.path().join("assets"))
        .output()?;
    let stdout = String::from_utf8_lossy(&demo.stdout);
    assert!(
        demo.status.success(),
        "demo failed ({:?}):\n{stdout}\n{}",
        demo.status,
        String::from_utf8_lossy(&demo.stderr)
    );
    assert!(stdout.contains("every frame has its result"), "{stdout}");
    Ok(())
}
