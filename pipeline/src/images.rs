//! Image files on disk: finding them in folders, their MIME types, and drawing a result's
//! detections onto one (`detect --annotate`, the demo).

use std::path::{Path, PathBuf};

use image::RgbImage;
use tessera_actors::FrameResult;
use tessera_operators::annotate::draw_detections;
use tessera_operators::decode::{DecodeLimits, decode_image};
use tessera_operators::detection::Detection;
use tessera_operators::geometry::BBox;

/// Extensions taken as images when a folder is searched (case-insensitive).
const IMAGE_EXTENSIONS: [&str; 6] = ["jpg", "jpeg", "png", "webp", "bmp", "jfif"];

/// Whether a path names an image by its extension.
pub fn is_image_path(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// The MIME type an image file's extension names, if it is one of the decoders'.
pub fn content_type(path: &Path) -> Option<&'static str> {
    let extension = path.extension()?.to_str()?.to_ascii_lowercase();
    Some(match extension.as_str() {
        "jpg" | "jpeg" | "jfif" => "image/jpeg",
        "png" => "image/png",
        "webp" => "image/webp",
        "bmp" => "image/bmp",
        _ => return None,
    })
}

/// The images named by `paths`: a file is taken as it is (the decoder judges it), a folder is
/// searched recursively for image extensions. Sorted by path within each folder; a path that
/// does not exist is an error.
pub fn image_files(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for path in paths {
        let metadata = std::fs::metadata(path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        if metadata.is_dir() {
            let mut found = Vec::new();
            walk(path, &mut found)?;
            found.sort();
            files.extend(found);
        } else {
            files.push(path.clone());
        }
    }
    Ok(files)
}

fn walk(dir: &Path, found: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", dir.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| anyhow::anyhow!("cannot read {}: {e}", dir.display()))?;
        let path = entry.path();
        let kind = entry.file_type()?;
        if kind.is_dir() {
            walk(&path, found)?;
        } else if is_image_path(&path) && (kind.is_file() || path.is_file()) {
            found.push(path);
        }
    }
    Ok(())
}

/// The frame with the result's detections drawn on it (boxes and labels).
pub fn annotate(encoded: &[u8], result: &FrameResult) -> anyhow::Result<RgbImage> {
    let mut image = decode_image(encoded, &DecodeLimits::default())?;
    let detections: Vec<Detection> = result
        .detections
        .iter()
        .map(|d| Detection {
            class_id: d.class_id,
            score: d.score,
            bbox: BBox::new(d.bbox.x1, d.bbox.y1, d.bbox.x2, d.bbox.y2),
        })
        .collect();
    draw_detections(&mut image, &detections, |class| {
        result
            .detections
            .iter()
            .find(|d| d.class_id == class)
            .map(|d| d.label.clone())
            .unwrap_or_else(|| class.to_string())
    });
    Ok(image)
}

/// A file name for a frame id: anything but ASCII letters, digits, `-` and `_` becomes `_`,
/// and a path's leading `../` or `/` is dropped.
pub fn file_name_for(frame_id: &str) -> String {
    let name: String = frame_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    match name.trim_start_matches('_') {
        "" => "_".to_owned(),
        trimmed => trimmed.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_are_searched_recursively_for_images_and_files_are_taken_as_given() {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path();
        std::fs::create_dir_all(root.join("b/c")).expect("dirs");
        for name in ["a.JPG", "b/c/d.png", "b/notes.txt", "b/e.webp"] {
            std::fs::write(root.join(name), b"x").expect("write");
        }
        let files = image_files(&[root.to_path_buf(), root.join("b/notes.txt")]).expect("found");
        let names: Vec<String> = files
            .iter()
            .map(|p| p.strip_prefix(root).expect("inside").display().to_string())
            .collect();
        assert_eq!(names, ["a.JPG", "b/c/d.png", "b/e.webp", "b/notes.txt"]);
        let missing = image_files(&[root.join("nope")]).expect_err("missing");
        assert!(missing.to_string().contains("nope"), "{missing}");
    }

    #[test]
    fn content_types_and_file_names() {
        assert_eq!(content_type(Path::new("x.JPEG")), Some("image/jpeg"));
        assert_eq!(content_type(Path::new("x.png")), Some("image/png"));
        assert_eq!(content_type(Path::new("x.txt")), None);
        assert_eq!(file_name_for("cam 1/a.jpg"), "cam_1_a_jpg");
        assert_eq!(file_name_for("../x/a.jpg"), "x_a_jpg");
        assert_eq!(file_name_for("/"), "_");
    }
}
