//! The `tessera replay` and `tessera detect` command lines as a user meets them: exit codes,
//! the diff on stdout, damage reported, a bad image named with its reason while the others
//! are answered. (Lives in the binary's package because only it can locate the built binary.)

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{assets_dir, describe};

fn tessera(args: &[&str], assets: &Path) -> anyhow::Result<Output> {
    Ok(Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(args)
        .env("TESSERA_ASSETS", assets)
        .output()?)
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn verify_exits_zero_on_a_match_and_one_with_a_diff_on_a_mismatch() -> anyhow::Result<()> {
    let Some(assets) = assets_dir() else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let recording = dir.path().join("rec.mcap");
    let recording_arg = recording.to_string_lossy().into_owned();
    let images = assets.join("images").to_string_lossy().into_owned();
    let made = tessera(
        &[
            "replay",
            "make",
            "--images",
            &images,
            "--camera",
            "cam-a",
            "--images",
            &images,
            "--camera",
            "cam-b",
            "--fps",
            "5",
            "--out",
            &recording_arg,
        ],
        &assets,
    )?;
    assert!(made.status.success(), "{}", describe(&made));

    let golden = workspace().join("tests/golden/replay/shared-images.mcap");
    let config = workspace().join("tests/golden/replay/verify.toml");
    let (golden, config) = (golden.to_string_lossy(), config.to_string_lossy());
    let verify = [
        "replay",
        "verify",
        &recording_arg,
        "--expected",
        &golden,
        "--config",
        &config,
    ];
    let matched = tessera(&verify, &assets)?;
    assert_eq!(matched.status.code(), Some(0), "{}", describe(&matched));
    assert!(
        String::from_utf8_lossy(&matched.stdout).contains("4 frame(s) compared: 4 identical"),
        "{}",
        describe(&matched)
    );

    // Tiling on, where the golden was made on full frames: more tiles, other boxes.
    let mut tiled = verify.to_vec();
    tiled.extend(["--set", "tiling.enabled=true"]);
    let mismatched = tessera(&tiled, &assets)?;
    let stdout = String::from_utf8_lossy(&mismatched.stdout);
    assert_eq!(
        mismatched.status.code(),
        Some(1),
        "{}",
        describe(&mismatched)
    );
    assert!(stdout.contains("frame cam-a / dog.jpg:"), "{stdout}");
    assert!(stdout.contains("~ tile_count: 1 -> "), "{stdout}");
    assert!(stdout.contains("verify: MISMATCH"), "{stdout}");

    // A cut recording: `info` says where, and exits non-zero.
    let bytes = std::fs::read(&recording)?;
    let cut = dir.path().join("cut.mcap");
    std::fs::write(&cut, &bytes[..bytes.len() / 2])?;
    let info = tessera(&["replay", "info", &cut.to_string_lossy()], &assets)?;
    let stdout = String::from_utf8_lossy(&info.stdout);
    assert_eq!(info.status.code(), Some(1), "{}", describe(&info));
    assert!(
        stdout.contains("DAMAGED: damaged recording: after "),
        "{stdout}"
    );
    assert!(stdout.contains("truncated"), "{stdout}");
    Ok(())
}

#[test]
fn detect_names_a_bad_image_and_answers_the_others() -> anyhow::Result<()> {
    let Some(assets) = assets_dir() else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let photos = dir.path().join("photos");
    std::fs::create_dir_all(&photos)?;
    let dog = std::fs::read(assets.join("images/dog.jpg"))?;
    std::fs::write(photos.join("dog.jpg"), &dog)?;
    std::fs::write(photos.join("broken.jpg"), &dog[..dog.len() / 4])?;
    std::fs::write(photos.join("notes.txt"), b"not an image, not taken")?;
    let json = dir.path().join("out.jsonl");
    let run = tessera(
        &[
            "detect",
            &photos.to_string_lossy(),
            "--json",
            &json.to_string_lossy(),
        ],
        &assets,
    )?;
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{}", describe(&run));
    assert!(
        stderr.contains("failed: ") && stderr.contains("broken.jpg: corrupt_image"),
        "{stderr}"
    );
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&json)?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0]["frame_id"]
            .as_str()
            .is_some_and(|id| id.ends_with("dog.jpg"))
    );
    assert!(
        stderr.contains("2 image(s): 1 result(s)"),
        "the text file is not taken: {stderr}"
    );
    Ok(())
}
