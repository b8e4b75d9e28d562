//! `tessera demo --learn` as a new user runs it: no broker, no arguments beyond the assets. It
//! exits 0, its output shows a promoted head, and its annotated frames from after the
//! promotion differ from those before it (the head relabelled or rejected boxes).
//! (Lives in the binary's package because only it can locate the built binary.)

mod common;

use common::assets_dir;

use std::process::Command;

#[test]
fn demo_learn_promotes_a_head_that_changes_the_annotated_frames() -> anyhow::Result<()> {
    let Some(assets) = assets_dir() else {
        return Ok(());
    };
    let out = tempfile::tempdir()?;
    let run = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["demo", "--learn", "--out"])
        .arg(out.path())
        .env("TESSERA_ASSETS", &assets)
        .output()?;
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "demo --learn failed ({:?}):\n{stdout}\n{}",
        run.status,
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.contains("fine-tune round: promoted"), "{stdout}");
    assert!(stdout.contains("Head v1 promoted"), "{stdout}");
    assert!(stdout.contains("label request #1 "), "{stdout}");
    let mut compared = 0;
    for entry in std::fs::read_dir(out.path().join("before"))? {
        let before_path = entry?.path();
        let Some(name) = before_path.file_name() else {
            continue;
        };
        let after_path = out.path().join("after").join(name);
        let before = image::open(&before_path)?.to_rgb8();
        let after = image::open(&after_path)?.to_rgb8();
        assert_eq!(before.dimensions(), after.dimensions());
        let differing = before
            .pixels()
            .zip(after.pixels())
            .filter(|(a, b)| a != b)
            .count();
        // The labels above the boxes changed: far more than JPEG noise at the same spots.
        assert!(
            differing > 500,
            "{}: only {differing} pixels differ",
            name.to_string_lossy()
        );
        compared += 1;
    }
    assert!(compared >= 1, "no annotated frames written");
    Ok(())
}
