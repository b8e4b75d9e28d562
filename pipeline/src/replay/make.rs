//! `tessera replay make`: a recording built from folders of image files, one camera per
//! folder, each at a steady frame rate, so a user can start from a folder of photos.

use std::path::{Path, PathBuf};

use super::recording::{KafkaRecord, RecordingWriter, WriteSummary};
use crate::embedded::CameraFrame;
use crate::images;
use crate::progress::Progress;

/// Options of `tessera replay make`.
#[derive(Debug, Clone)]
pub struct MakeOptions {
    /// `(camera id, folder)` pairs.
    pub cameras: Vec<(String, PathBuf)>,
    /// Frames per second of each camera.
    pub fps: f64,
    /// The channel (topic) the frames are recorded under.
    pub topic: String,
    /// Capture time of every camera's first frame, ms since the epoch.
    pub start_ms: i64,
    pub out: PathBuf,
}

/// One planned frame.
#[derive(Debug, Clone, PartialEq)]
struct Planned {
    at_ms: i64,
    camera: String,
    frame_id: String,
    path: PathBuf,
}

/// Writes the recording; returns what was written.
pub fn run(options: &MakeOptions) -> anyhow::Result<WriteSummary> {
    anyhow::ensure!(
        options.fps.is_finite() && options.fps > 0.0,
        "--fps must be a positive number, not {}",
        options.fps
    );
    anyhow::ensure!(!options.cameras.is_empty(), "no --images folder given");
    let mut per_camera = Vec::new();
    for (camera, dir) in &options.cameras {
        anyhow::ensure!(!camera.is_empty(), "a camera id must not be empty");
        let files = images::image_files(std::slice::from_ref(dir))?;
        anyhow::ensure!(!files.is_empty(), "no images in {}", dir.display());
        per_camera.push((camera.clone(), dir.clone(), files));
    }
    let plan = plan(&per_camera, options.fps, options.start_ms);
    let source = options
        .cameras
        .iter()
        .map(|(camera, dir)| format!("{camera}={}", dir.display()))
        .collect::<Vec<_>>()
        .join(" ");
    let mut metadata = super::base_metadata(&format!("images: {source}"), "frames");
    metadata.insert("fps".into(), options.fps.to_string());
    let mut writer = RecordingWriter::create(&options.out, &metadata)?;
    let progress = Progress::new("make", "frames", Some(plan.len() as u64));
    for frame in plan {
        let payload = std::fs::read(&frame.path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", frame.path.display()))?;
        // A camera's frame, as `detect` and the demo publish one.
        let camera_frame = CameraFrame {
            camera: frame.camera.into_bytes(),
            frame_id: frame.frame_id,
            payload,
            content_type: images::content_type(&frame.path).map(str::to_owned),
            capture_ms: frame.at_ms,
        };
        let record = KafkaRecord {
            topic: options.topic.clone(),
            partition: -1,
            offset: -1,
            timestamp_ms: Some(frame.at_ms),
            headers: camera_frame.headers(),
            key: Some(camera_frame.camera),
            payload: Some(camera_frame.payload),
        };
        writer.write(&record, frame.at_ms)?;
        progress.inc(1);
    }
    progress.finish();
    Ok(writer.finish()?)
}

/// Every camera's frames at `fps` from `start_ms`, merged in time order (cameras in the given
/// order at equal times). A frame's id is its path inside its camera's folder.
fn plan(per_camera: &[(String, PathBuf, Vec<PathBuf>)], fps: f64, start_ms: i64) -> Vec<Planned> {
    let mut plan: Vec<(usize, Planned)> = Vec::new();
    for (order, (camera, dir, files)) in per_camera.iter().enumerate() {
        for (i, path) in files.iter().enumerate() {
            plan.push((
                order,
                Planned {
                    at_ms: start_ms + (i as f64 * 1000.0 / fps).round() as i64,
                    camera: camera.clone(),
                    frame_id: frame_id(dir, path),
                    path: path.clone(),
                },
            ));
        }
    }
    plan.sort_by(|(a_order, a), (b_order, b)| a.at_ms.cmp(&b.at_ms).then(a_order.cmp(b_order)));
    plan.into_iter().map(|(_, planned)| planned).collect()
}

/// The path inside the folder with `/` separators (the file name when the folder is a file).
fn frame_id(dir: &Path, path: &Path) -> String {
    let relative = path.strip_prefix(dir).unwrap_or(path);
    let relative = if relative.as_os_str().is_empty() {
        Path::new(path.file_name().unwrap_or_default())
    } else {
        relative
    };
    relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use tessera_actors::protocol::headers;

    use super::*;

    #[test]
    fn cameras_interleave_at_their_frame_rate_with_ids_relative_to_their_folder() {
        let a = (
            "a".to_owned(),
            PathBuf::from("/x"),
            vec![PathBuf::from("/x/1.jpg"), PathBuf::from("/x/sub/2.jpg")],
        );
        let b = (
            "b".to_owned(),
            PathBuf::from("/y"),
            vec![PathBuf::from("/y/1.jpg")],
        );
        let plan = plan(&[a, b], 4.0, 1_000);
        let seen: Vec<(i64, &str, &str)> = plan
            .iter()
            .map(|p| (p.at_ms, p.camera.as_str(), p.frame_id.as_str()))
            .collect();
        assert_eq!(
            seen,
            [
                (1_000, "a", "1.jpg"),
                (1_000, "b", "1.jpg"),
                (1_250, "a", "sub/2.jpg")
            ]
        );
        assert_eq!(
            frame_id(Path::new("/x/1.jpg"), Path::new("/x/1.jpg")),
            "1.jpg"
        );
    }

    #[test]
    fn a_recording_of_images_holds_every_image_with_its_headers() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let images = dir.path().join("images");
        std::fs::create_dir_all(&images)?;
        std::fs::write(images.join("a.jpg"), b"not really a jpeg")?;
        std::fs::write(images.join("b.png"), b"nor a png")?;
        let out = dir.path().join("rec.mcap");
        let written = run(&MakeOptions {
            cameras: vec![("cam".into(), images.clone())],
            fps: 2.0,
            topic: "frames".into(),
            start_ms: 5_000,
            out: out.clone(),
        })?;
        assert_eq!(written.messages, 2);
        let reader = super::super::recording::RecordingReader::open(&out)?;
        assert_eq!(
            reader.metadata().get("kind").map(String::as_str),
            Some("frames")
        );
        let records: Vec<_> = reader.collect::<Result<_, _>>()?;
        assert_eq!(records[1].log_time_ms, 5_500);
        let record = &records[1].record;
        assert_eq!(record.key.as_deref(), Some(&b"cam"[..]));
        assert_eq!(record.header(headers::FRAME_ID), Some(&b"b.png"[..]));
        assert_eq!(record.header(headers::CAPTURE_TS), Some(&b"5500"[..]));
        assert_eq!(
            record.header(headers::CONTENT_TYPE),
            Some(&b"image/png"[..])
        );
        assert_eq!(record.payload.as_deref(), Some(&b"nor a png"[..]));
        Ok(())
    }
}
