//! Bringing a model as a user would, on the command line: `tessera models inspect` proposes the
//! adapter and writes a draft manifest, `tessera detect` runs the model with it, and
//! `tessera replay verify` holds it to a golden. Uses the tiny generated models of
//! `models/testdata` (no assets needed); the ONNX Runtime library comes from `make setup`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::describe;

fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../models/testdata")
        .join(name)
}

fn tessera(args: &[&str]) -> anyhow::Result<Output> {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tessera"));
    if std::env::var_os("ORT_DYLIB_PATH").is_none_or(|v| v.is_empty()) {
        command.env(
            "ORT_DYLIB_PATH",
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../.tessera/onnxruntime/lib/libonnxruntime.so.1.31.1"),
        );
    }
    Ok(command.args(args).output()?)
}

#[test]
fn inspect_then_detect_then_verify_a_model_of_another_layout() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let model_dir = dir.path().join("my-model");
    std::fs::create_dir_all(&model_dir)?;
    std::fs::copy(
        testdata("tiny_yolov5.onnx"),
        model_dir.join("tiny_yolov5.onnx"),
    )?;
    let manifest = model_dir.join("model.toml");
    let onnx = model_dir.join("tiny_yolov5.onnx");

    // 1. inspect: the adapter, and a draft written where asked.
    let onnx_arg = onnx.to_string_lossy();
    let manifest_arg = manifest.to_string_lossy();
    let inspect = ["models", "inspect", &onnx_arg, "-o", &manifest_arg];
    let out = tessera(&inspect)?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(stdout.contains("adapter: yolov5"), "{}", describe(&out));
    assert!(stdout.contains("draft model.toml:"), "{}", describe(&out));
    let draft = std::fs::read_to_string(&manifest)?;
    assert!(draft.contains("adapter = \"yolov5\""), "{draft}");
    assert!(draft.contains("# CHECK: 2 lines"), "{draft}");
    // A second run does not overwrite the (possibly edited) manifest.
    let again = tessera(&inspect)?;
    assert!(!again.status.success(), "{}", describe(&again));

    // 2. The user completes it: labels, and the thresholds they want.
    std::fs::write(model_dir.join("labels.txt"), "cat\ndog\n")?;
    let photos = dir.path().join("photos");
    std::fs::create_dir_all(&photos)?;
    // A bright 64x64 image: the tiny model's objectness is the mean input, its box
    // (8, 8, 16, 16) of 32x32 becomes (16, 16, 32, 32) of the frame.
    image::RgbImage::from_pixel(64, 64, image::Rgb([250, 250, 250]))
        .save(photos.join("bright.png"))?;
    let json = dir.path().join("out.jsonl");
    let manifest_setting = format!("model.manifest={}", manifest.display());
    let out = tessera(&[
        "detect",
        &photos.to_string_lossy(),
        "--json",
        &json.to_string_lossy(),
        "--set",
        &manifest_setting,
        "--set",
        "tiling.enabled=false",
    ])?;
    assert!(out.status.success(), "{}", describe(&out));
    let result: serde_json::Value = serde_json::from_str(std::fs::read_to_string(&json)?.trim())?;
    let detections = result["detections"]
        .as_array()
        .ok_or_else(|| anyhow::anyhow!("no detections in {result}"))?;
    assert_eq!(detections.len(), 1, "{result}");
    assert_eq!(detections[0]["label"], "dog", "{result}");

    // 3. A recording of the photos, its golden, and a verify that passes against it.
    let recording = dir.path().join("rec.mcap");
    let golden = dir.path().join("golden.mcap");
    let out = tessera(&[
        "replay",
        "make",
        "--images",
        &photos.to_string_lossy(),
        "--camera",
        "cam",
        "--out",
        &recording.to_string_lossy(),
    ])?;
    assert!(out.status.success(), "{}", describe(&out));
    for write in [true, false] {
        let mut args = vec![
            "replay".to_string(),
            "verify".into(),
            recording.to_string_lossy().into_owned(),
            "--expected".into(),
            golden.to_string_lossy().into_owned(),
            "--set".into(),
            manifest_setting.clone(),
            "--set".into(),
            "tiling.enabled=false".into(),
        ];
        if write {
            args.push("--write-golden".into());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = tessera(&args)?;
        assert!(out.status.success(), "{}", describe(&out));
    }
    Ok(())
}

#[test]
fn inspect_of_an_unknown_layout_lists_every_adapter_and_why() -> anyhow::Result<()> {
    let out = tessera(&[
        "models",
        "inspect",
        &testdata("tiny_unknown.onnx").to_string_lossy(),
    ])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        stderr.contains("no output adapter fits this model's outputs; tried:"),
        "{}",
        describe(&out)
    );
    for adapter in [
        "nms_outputs",
        "detr",
        "boxes_scores",
        "yolox",
        "yolov5",
        "yolov8",
        "classifier",
    ] {
        assert!(stderr.contains(&format!("- {adapter}: needs")), "{stderr}");
    }
    // The table of tensors is still printed, to see what the model does output.
    assert!(String::from_utf8_lossy(&out.stdout).contains("features"));
    Ok(())
}
