//! Hostile and unusual test images, crafted in memory: hand-built JPEG and PNG structures
//! (CMYK, EXIF orientation, headers claiming huge sizes, decompression bombs) and ordinary
//! encodes of every colour type. Shared by the decoder's unit tests, the hostile-input pipeline
//! test, the mutated-JPEG property test and (copied) the fuzz target's seed corpus. Built for
//! this crate's tests and, with the `test-images` feature, for other crates' tests.

use std::io::Cursor;

use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::{DynamicImage, ExtendedColorType, ImageEncoder, ImageFormat, Rgb, RgbImage};

/// Encodes `image` as `format` with the `image` crate's default encoder settings.
pub fn encode(image: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut bytes = Cursor::new(Vec::new());
    // Every image built here is encodable (8/16-bit, 1-4 channels); a failure is a test bug.
    image
        .write_to(&mut bytes, format)
        .expect("test image encodes");
    bytes.into_inner()
}

/// A `width x height` RGB gradient with some texture, so its JPEG has real entropy-coded data.
pub fn gradient(width: u32, height: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| {
        Rgb([
            (x * 255 / width.max(1)) as u8,
            (y * 255 / height.max(1)) as u8,
            ((x ^ y) & 0xFF) as u8,
        ])
    })
}

/// A textured baseline JPEG of `width x height` (the fallback when real photos are absent).
pub fn sample_jpeg(width: u32, height: u32) -> Vec<u8> {
    encode(&gradient(width, height).into(), ImageFormat::Jpeg)
}

/// A PNG chunk: length, type, data, CRC-32 over type and data.
pub fn png_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut chunk = Vec::with_capacity(12 + data.len());
    chunk.extend_from_slice(&(data.len() as u32).to_be_bytes());
    chunk.extend_from_slice(kind);
    chunk.extend_from_slice(data);
    let mut crc = 0xFFFF_FFFFu32;
    for &byte in kind.iter().chain(data) {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    chunk.extend_from_slice(&(!crc).to_be_bytes());
    chunk
}

/// A PNG whose IHDR claims `width x height` RGB8, with a tiny (invalid) IDAT.
pub fn png_claiming(width: u32, height: u32) -> Vec<u8> {
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(png_chunk(b"IHDR", &ihdr));
    png.extend(png_chunk(
        b"IDAT",
        &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
    ));
    png.extend(png_chunk(b"IEND", &[]));
    png
}

/// A real, valid PNG decompression bomb: `side x side` 8-bit grey, all zero. It compresses to a
/// few KiB (about 1:1000) but decodes to `side^2` bytes, plus `3 * side^2` for the RGB copy.
pub fn png_bomb(side: u32) -> Vec<u8> {
    let pixels = vec![0u8; side as usize * side as usize];
    let mut png = Vec::new();
    let encoder =
        PngEncoder::new_with_quality(&mut png, CompressionType::Best, FilterType::NoFilter);
    // A grey 8-bit buffer of exactly `side * side` bytes always encodes.
    encoder
        .write_image(&pixels, side, side, ExtendedColorType::L8)
        .expect("bomb encodes");
    png
}

/// A hand-built baseline JPEG of `width x height` with `components` components (4 = CMYK,
/// with an Adobe APP14 marker), every block flat (DC 0, i.e. mid-grey before colour
/// conversion). Huffman tables have one 1-bit code each: DC category 0 and AC end-of-block.
/// The scan is capped at 4 KiB, so a huge header stays a small (truncated-scan) payload.
pub fn flat_jpeg(width: u16, height: u16, components: u8) -> Vec<u8> {
    let mut j = vec![0xFF, 0xD8];
    if components == 4 {
        // APP14 "Adobe", version 100, flags 0, 0, transform 0 (CMYK).
        j.extend_from_slice(&[0xFF, 0xEE, 0x00, 0x0E]);
        j.extend_from_slice(b"Adobe");
        j.extend_from_slice(&[0x00, 0x64, 0x00, 0x00, 0x00, 0x00, 0x00]);
    }
    // DQT: table 0, all ones.
    j.extend_from_slice(&[0xFF, 0xDB, 0x00, 0x43, 0x00]);
    j.extend_from_slice(&[1; 64]);
    // SOF0.
    let len = 8 + 3 * u16::from(components);
    j.extend_from_slice(&[0xFF, 0xC0]);
    j.extend_from_slice(&len.to_be_bytes());
    j.push(8);
    j.extend_from_slice(&height.to_be_bytes());
    j.extend_from_slice(&width.to_be_bytes());
    j.push(components);
    for id in 1..=components {
        j.extend_from_slice(&[id, 0x11, 0x00]);
    }
    // DHT: DC table 0 and AC table 0, one code of length 1 for symbol 0.
    for class in [0x00, 0x10] {
        j.extend_from_slice(&[0xFF, 0xC4, 0x00, 0x14, class, 1]);
        j.extend_from_slice(&[0; 15]);
        j.push(0);
    }
    // SOS.
    let len = 6 + 2 * u16::from(components);
    j.extend_from_slice(&[0xFF, 0xDA]);
    j.extend_from_slice(&len.to_be_bytes());
    j.push(components);
    for id in 1..=components {
        j.extend_from_slice(&[id, 0x00]);
    }
    j.extend_from_slice(&[0x00, 0x3F, 0x00]);
    // Two zero bits per block (DC "0", EOB "0").
    let blocks = usize::from(width.div_ceil(8)) * usize::from(height.div_ceil(8));
    let bits = blocks * usize::from(components) * 2;
    j.extend(std::iter::repeat_n(0u8, bits.div_ceil(8).min(4096)));
    j.extend_from_slice(&[0xFF, 0xD9]);
    j
}

/// Inserts an APP1 Exif segment (big-endian TIFF, one IFD entry: Orientation) after SOI.
pub fn with_exif_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
    let mut tiff = Vec::new();
    tiff.extend_from_slice(b"MM\x00\x2a\x00\x00\x00\x08"); // header, IFD at offset 8
    tiff.extend_from_slice(&[0x00, 0x01]); // one entry
    tiff.extend_from_slice(&[0x01, 0x12, 0x00, 0x03, 0x00, 0x00, 0x00, 0x01]); // SHORT x1
    tiff.extend_from_slice(&orientation.to_be_bytes());
    tiff.extend_from_slice(&[0x00, 0x00]);
    tiff.extend_from_slice(&[0x00, 0x00, 0x00, 0x00]); // no next IFD
    let mut payload = b"Exif\x00\x00".to_vec();
    payload.extend(tiff);
    let mut out = jpeg[..2.min(jpeg.len())].to_vec();
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&((payload.len() + 2) as u16).to_be_bytes());
    out.extend(payload);
    out.extend_from_slice(&jpeg[2.min(jpeg.len())..]);
    out
}

/// A complete 1x1 GIF89a (a format tessera does not accept).
pub fn gif_1x1() -> Vec<u8> {
    let mut gif = b"GIF89a\x01\x00\x01\x00\x80\x00\x00".to_vec();
    gif.extend_from_slice(&[0, 0, 0, 0xFF, 0xFF, 0xFF]); // two-colour global palette
    gif.extend_from_slice(&[0x2C, 0, 0, 0, 0, 1, 0, 1, 0, 0]); // image descriptor
    gif.extend_from_slice(&[0x02, 0x02, 0x44, 0x01, 0x00]); // LZW data
    gif.push(0x3B); // trailer
    gif
}

/// `len` bytes from a fixed-seed xorshift generator: reproducible "random bytes".
pub fn pseudo_random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// The positions of JPEG marker segments (`0xFF` + marker byte) before the first scan, with
/// their marker byte: where header-field mutations do the most damage.
pub fn jpeg_header_markers(jpeg: &[u8]) -> Vec<(usize, u8)> {
    let mut markers = Vec::new();
    let mut i = 2;
    while i + 4 <= jpeg.len() && jpeg[i] == 0xFF {
        let marker = jpeg[i + 1];
        markers.push((i, marker));
        if marker == 0xDA {
            break;
        }
        let len = usize::from(u16::from_be_bytes([jpeg[i + 2], jpeg[i + 3]]));
        i += 2 + len;
    }
    markers
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{DecodeLimits, decode_image};

    #[test]
    fn crafted_images_are_what_they_claim() {
        let limits = DecodeLimits::default();
        let cmyk = decode_image(&flat_jpeg(16, 8, 4), &limits).map(|i| i.dimensions());
        assert_eq!(cmyk.ok(), Some((16, 8)));
        let rotated = with_exif_orientation(&sample_jpeg(32, 16), 6);
        let rotated = decode_image(&rotated, &limits).map(|i| i.dimensions());
        assert_eq!(rotated.ok(), Some((16, 32)));
        assert!(png_bomb(1024).len() < 16 * 1024);
        assert_eq!(image::guess_format(&gif_1x1()).ok(), Some(ImageFormat::Gif));
        let markers = jpeg_header_markers(&sample_jpeg(16, 16));
        assert!(markers.iter().any(|&(_, m)| m == 0xC0), "{markers:?}");
        assert_eq!(markers.last().map(|&(_, m)| m), Some(0xDA));
    }
}
