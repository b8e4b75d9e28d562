//! Hostile input through the whole pipeline (embedded broker, real YOLOX-Nano): every kind of
//! bad record goes to the dead-letter topic with its precise `tessera-error-kind`, every odd but
//! valid image gets its result, nothing disappears, and a normal frame published after all of
//! them still gets its result, so no case crashed or stalled the pipeline.

use std::collections::HashMap;
use std::time::Duration;

use image::{DynamicImage, GrayImage, ImageBuffer, ImageFormat, Luma, Rgb, Rgba, RgbaImage};
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tessera::embedded::{EmbeddedKafka, Output, read_outputs};
use tessera_actors::PipelineConfig;
use tessera_actors::protocol::headers::{
    CAPTURE_TS as HEADER_CAPTURE_TS, FRAME_ID as HEADER_FRAME_ID,
    PAYLOAD_OMITTED as HEADER_PAYLOAD_OMITTED, SOURCE as HEADER_SOURCE,
};
use tessera_tests::hostile::{
    encode, flat_jpeg, gif_1x1, gradient, png_bomb, pseudo_random_bytes, sample_jpeg,
    with_exif_orientation,
};
use tessera_tests::{assets_dir, manifest};

/// `limits.max_bytes` of this run: small, so a 2 MiB payload is over it.
const MAX_BYTES: usize = 1024 * 1024;
/// DLQ headers of a dead letter sent without its value (too large for Kafka). Spelled out
/// here, not imported, so this test pins the wire names.
/// `limits.max_alloc_bytes` of this run: 64 MiB, so a 4096 x 4096 grey PNG bomb (16 KiB
/// compressed, 16 MiB decoded plus 48 MiB for its RGB copy) is over it without the test itself
/// having to build a 512 MiB image for the default limit.
const MAX_ALLOC_BYTES: u64 = 64 * 1024 * 1024;

/// What must come out for a record.
#[derive(Debug, Clone, PartialEq)]
enum Expect {
    /// A dead letter with this `tessera-error-kind`.
    DeadLetter(&'static str),
    /// A result for an image of this size (after EXIF orientation).
    Result { width: u32, height: u32 },
}

/// One input record, exactly as it goes on the wire.
#[derive(Debug, Clone)]
struct Case {
    name: &'static str,
    key: Option<Vec<u8>>,
    headers: Vec<(&'static str, Vec<u8>)>,
    payload: Vec<u8>,
    expect: Expect,
}

impl Case {
    /// A record keyed `cam-<name>`, with a valid frame id (`hostile-<name>`) and capture time.
    fn new(name: &'static str, payload: Vec<u8>, expect: Expect) -> Self {
        Self {
            name,
            key: Some(format!("cam-{name}").into_bytes()),
            headers: vec![
                (HEADER_FRAME_ID, format!("hostile-{name}").into_bytes()),
                (HEADER_CAPTURE_TS, b"1700000000000".to_vec()),
            ],
            payload,
            expect,
        }
    }

    fn with_key(mut self, key: Option<Vec<u8>>) -> Self {
        self.key = key;
        self
    }

    fn with_header(mut self, name: &'static str, value: &[u8]) -> Self {
        self.headers.retain(|(n, _)| *n != name);
        self.headers.push((name, value.to_vec()));
        self
    }

    /// The frame id as the DLQ reader reports it (header read lossily as UTF-8).
    fn frame_id(&self) -> String {
        self.headers
            .iter()
            .find(|(n, _)| *n == HEADER_FRAME_ID)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default()
    }
}

fn dead(kind: &'static str) -> Expect {
    Expect::DeadLetter(kind)
}

fn result(width: u32, height: u32) -> Expect {
    Expect::Result { width, height }
}

/// Every hostile case of the issue, then a normal frame last.
fn cases(dog: &[u8]) -> Vec<Case> {
    let small_jpeg = sample_jpeg(64, 48);

    let random = pseudo_random_bytes(4096, 0x7e55e7a);
    assert!(image::guess_format(&random).is_err(), "random bytes sniff");

    let truncated = dog[..dog.len() / 2].to_vec();

    let huge_header = flat_jpeg(60_000, 60_000, 3);
    assert!(huge_header.len() < 8 * 1024, "the 60000x60000 JPEG is tiny");

    let bomb = png_bomb(4096);
    assert!(bomb.len() < 64 * 1024, "bomb is {} bytes", bomb.len());

    // A valid JPEG, padded after its end-of-image marker to twice the byte limit.
    let mut oversized = dog.to_vec();
    oversized.resize(2 * MAX_BYTES, 0);

    let one_pixel = encode(
        &DynamicImage::ImageRgb8(ImageBuffer::from_pixel(1, 1, Rgb([200, 30, 30]))),
        ImageFormat::Png,
    );
    let below_tile = encode(&gradient(200, 120).into(), ImageFormat::Jpeg);
    let gray = encode(
        &GrayImage::from_fn(320, 240, |x, y| Luma([((x + y) % 256) as u8])).into(),
        ImageFormat::Jpeg,
    );
    let cmyk = flat_jpeg(64, 48, 4);
    let sixteen_bit = encode(
        &DynamicImage::ImageRgb16(ImageBuffer::from_fn(96, 64, |x, y| {
            Rgb([(x * 600) as u16, (y * 900) as u16, 0x8000])
        })),
        ImageFormat::Png,
    );
    let rgba = encode(
        &RgbaImage::from_fn(80, 60, |x, y| {
            Rgba([x as u8 * 3, y as u8 * 4, 90, (x * 3) as u8])
        })
        .into(),
        ImageFormat::Png,
    );
    // Stored 160 x 96; orientation 6 (rotate 90 degrees clockwise) displays it 96 x 160.
    let rotated = with_exif_orientation(&sample_jpeg(160, 96), 6);

    vec![
        Case::new("empty", Vec::new(), dead("empty_payload")),
        Case::new("random-bytes", random, dead("unsupported_format")),
        Case::new("truncated-jpeg", truncated, dead("corrupt_image")),
        Case::new("huge-header", huge_header, dead("dimensions_too_large")),
        Case::new("png-bomb", bomb, dead("allocation_limit")),
        Case::new("over-byte-limit", oversized, dead("payload_too_large")),
        Case::new("gif", gif_1x1(), dead("unsupported_format")),
        Case::new("one-pixel", one_pixel, result(1, 1)),
        Case::new("below-tile", below_tile, result(200, 120)),
        Case::new("grayscale-jpeg", gray, result(320, 240)),
        Case::new("cmyk-jpeg", cmyk, result(64, 48)),
        Case::new("png-16-bit", sixteen_bit, result(96, 64)),
        Case::new("png-rgba", rgba, result(80, 60)),
        Case::new("exif-rotated", rotated, result(96, 160)),
        Case::new("non-utf8-key", small_jpeg.clone(), dead("invalid_key"))
            .with_key(Some(b"cam-\xff\xfe\x80".to_vec())),
        Case::new("no-key", small_jpeg.clone(), dead("missing_key")).with_key(None),
        Case::new("ts-not-integer", small_jpeg.clone(), dead("invalid_header"))
            .with_header(HEADER_CAPTURE_TS, b"yesterday"),
        Case::new("frame-id-not-utf8", small_jpeg, dead("invalid_header"))
            .with_header(HEADER_FRAME_ID, b"hostile-frame-id-\xc3\x28"),
        // Last: an ordinary photo behind every hostile record in the same partition.
        Case::new("final-dog", dog.to_vec(), result(768, 576)),
    ]
}

/// Publishes raw records in order (any key bytes, any header bytes), each acknowledged before
/// the next. `publish_frames` of the embedded module only sends well-formed camera frames.
async fn publish_raw(brokers: &str, topic: &str, cases: &[Case]) -> anyhow::Result<Vec<i64>> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("message.max.bytes", "67108864")
        .create()?;
    let mut offsets = Vec::with_capacity(cases.len());
    for case in cases {
        let mut headers = OwnedHeaders::new_with_capacity(case.headers.len());
        for (name, value) in &case.headers {
            headers = headers.insert(Header {
                key: name,
                value: Some(value.as_slice()),
            });
        }
        let mut record = FutureRecord::to(topic)
            .payload(case.payload.as_slice())
            .headers(headers);
        if let Some(key) = &case.key {
            record = record.key(key.as_slice());
        }
        let delivered = producer
            .send(record, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| anyhow::anyhow!("publishing case {}: {e}", case.name))?;
        offsets.push(delivered.offset);
    }
    Ok(offsets)
}

/// The headers of the dead letter with frame id `frame_id`, read from the start of the topic.
async fn dead_letter_headers(
    brokers: &str,
    frame_id: &str,
) -> anyhow::Result<HashMap<String, Vec<u8>>> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "hostile-dlq-headers")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()?;
    consumer.subscribe(&["frames.dlq"])?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let message = tokio::time::timeout_at(deadline, consumer.recv())
            .await
            .map_err(|_| anyhow::anyhow!("no dead letter {frame_id:?}"))??;
        let headers: HashMap<String, Vec<u8>> = message
            .headers()
            .map(|headers| {
                headers
                    .iter()
                    .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
                    .collect()
            })
            .unwrap_or_default();
        if headers.get(HEADER_FRAME_ID).map(Vec::as_slice) == Some(frame_id.as_bytes()) {
            return Ok(headers);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_records_are_dead_lettered_and_the_stream_goes_on() -> anyhow::Result<()> {
    let Some(assets) = assets_dir() else {
        return Ok(());
    };
    let dog = std::fs::read(assets.join("images/dog.jpg"))?;
    let cases = cases(&dog);

    let kafka = EmbeddedKafka::start(1)?;
    let brokers = kafka.bootstrap_servers();
    // One input partition: the final frame queues behind every hostile record.
    for topic in ["frames", "detections", "frames.dlq"] {
        kafka.create_topic(topic, 1)?;
    }
    let mut config = PipelineConfig::default();
    config.kafka.brokers = brokers.clone();
    config.kafka.group_id = "hostile".into();
    config.model.manifest = manifest("yolox-nano");
    config.limits.max_bytes = MAX_BYTES;
    config.limits.max_alloc_bytes = MAX_ALLOC_BYTES;

    let offsets = publish_raw(&brokers, "frames", &cases).await?;
    let pipeline = tessera_actors::start(config, "hostile", Some(&assets)).await?;

    let expected: HashMap<String, &Case> = cases.iter().map(|c| (c.frame_id(), c)).collect();
    assert_eq!(expected.len(), cases.len(), "frame ids are distinct");
    let outputs = read_outputs(
        &brokers,
        "detections",
        "frames.dlq",
        Duration::from_secs(180),
        |output| match output {
            Output::Result { result, .. } => eprintln!("result {}", result.frame_id),
            Output::DeadLetter { frame_id, kind, .. } => {
                eprintln!("dead letter {frame_id:?}: {kind}")
            }
        },
        |outputs| {
            expected
                .keys()
                .all(|id| outputs.iter().any(|o| o.frame_id() == Some(id.as_str())))
        },
    )
    .await?;
    let report = pipeline.shutdown(Duration::from_secs(10)).await?;

    let mut by_id: HashMap<&str, Vec<&Output>> = HashMap::new();
    for output in &outputs {
        by_id
            .entry(output.frame_id().unwrap_or("?"))
            .or_default()
            .push(output);
    }
    let missing: Vec<&str> = cases
        .iter()
        .filter(|c| !by_id.contains_key(c.frame_id().as_str()))
        .map(|c| c.name)
        .collect();
    assert!(
        missing.is_empty(),
        "no output within the deadline (lost or stalled): {missing:?}"
    );
    assert_eq!(
        outputs.len(),
        cases.len(),
        "one output per record: {by_id:#?}"
    );

    for (case, offset) in cases.iter().zip(&offsets) {
        let id = case.frame_id();
        let [output] = by_id[id.as_str()].as_slice() else {
            panic!("{}: {} outputs", case.name, by_id[id.as_str()].len());
        };
        match (&case.expect, output) {
            (
                Expect::DeadLetter(want),
                Output::DeadLetter {
                    key,
                    kind,
                    error,
                    payload_len,
                    ..
                },
            ) => {
                assert_eq!(kind, want, "{}: {error}", case.name);
                assert!(!error.is_empty(), "{}: readable message", case.name);
                assert_eq!(key, &case.key, "{}: original key kept", case.name);
                if case.name == "over-byte-limit" && *payload_len == 0 {
                    // Larger than the producer's `message.max.bytes` (librdkafka's default
                    // 1,000,000): the dead letter goes without its value, saying how large it
                    // was and where the original record lies.
                    let headers = dead_letter_headers(&brokers, &id).await?;
                    assert_eq!(
                        headers.get(HEADER_PAYLOAD_OMITTED).map(Vec::as_slice),
                        Some(case.payload.len().to_string().as_bytes())
                    );
                    assert_eq!(
                        headers.get(HEADER_SOURCE).map(Vec::as_slice),
                        Some(format!("frames/0/{offset}").as_bytes())
                    );
                } else {
                    assert_eq!(
                        *payload_len,
                        case.payload.len(),
                        "{}: original payload kept",
                        case.name
                    );
                }
            }
            (Expect::Result { width, height }, Output::Result { key, result, .. }) => {
                assert_eq!(
                    (result.image.width, result.image.height),
                    (*width, *height),
                    "{}: image size",
                    case.name
                );
                assert_eq!(key, &case.key, "{}: key", case.name);
                assert_eq!(
                    result.camera.as_bytes(),
                    case.key.as_deref().unwrap_or_default()
                );
                assert_eq!(result.source.offset, *offset, "{}", case.name);
                assert!(result.tile_count >= 1, "{}", case.name);
                for d in &result.detections {
                    assert!(d.bbox.x1 >= 0.0 && d.bbox.y1 >= 0.0, "{}: {d:?}", case.name);
                    assert!(
                        d.bbox.x2 <= *width as f32 && d.bbox.y2 <= *height as f32,
                        "{}: {d:?}",
                        case.name
                    );
                }
            }
            (want, got) => panic!("{}: expected {want:?}, got {got:?}", case.name),
        }
    }

    // Below a tile: the frame is its own single tile (no extra full-frame pass).
    let below = &by_id["hostile-below-tile"];
    if let [Output::Result { result, .. }] = below.as_slice() {
        assert_eq!(result.tile_count, 1);
    }
    // The pipeline kept running: the final photo was recognised as usual.
    match by_id["hostile-final-dog"].as_slice() {
        [Output::Result { result, .. }] => {
            assert!(result.tile_count > 1, "tiles plus the full frame");
            assert!(
                result.detections.iter().any(|d| d.label == "dog"),
                "{:?}",
                result.detections
            );
        }
        other => panic!("final frame: {other:?}"),
    }
    assert_eq!(report.abandoned_frames, 0);
    Ok(())
}
