//! Scale-out: two `tessera run` processes in one consumer group on a 4-partition input with
//! 4 cameras, one per partition. The partitions are shared; a head promoted by the trainer
//! goes live on both; a SIGKILLed replica's partitions move to the other after the session
//! timeout; every frame gets a result (duplicates only for frames past the killed replica's
//! commits), and each camera's results stay in order. Runs on the broker `TESSERA_TEST_BROKER`
//! names (the mock cluster or tansu).
//! (Lives in the binary's package because only it can locate the built binary.)

mod common;

use common::broker::TestBroker;
use common::process::Tessera;
use common::{assets_dir, delivery};

use std::collections::{BTreeSet, HashMap};
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use delivery::{
    COMPLETION, DLQ, FRAMES, MOCK_PARTITION_LOG_BYTES, RESULTS, STARTUP, final_report,
    group_progress, read_until_covered,
};
use serde_json::Value;
use tessera::embedded::{CameraFrame, Output, publish_frames};

const PARTITIONS: i32 = 4;
const LABELS: &str = "labels";
const GROUP: &str = "scale-out";
const TOKEN: &str = "scale-out-admin-token";
const SESSION_TIMEOUT: Duration = Duration::from_secs(6);

/// librdkafka's default partitioner for keyed records: CRC-32 (IEEE) of the key, modulo the
/// partition count.
fn partition_of(key: &str, partitions: i32) -> i32 {
    let mut crc = 0xffff_ffff_u32;
    for byte in key.bytes() {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    ((!crc) % partitions as u32) as i32
}

/// One camera key per partition: the first of `cam-0`, `cam-1`, ... landing on each.
fn cameras() -> Vec<String> {
    let mut by_partition: HashMap<i32, String> = HashMap::new();
    for i in 0.. {
        let key = format!("cam-{i}");
        by_partition
            .entry(partition_of(&key, PARTITIONS))
            .or_insert(key);
        if by_partition.len() == PARTITIONS as usize {
            break;
        }
    }
    (0..PARTITIONS).map(|p| by_partition[&p].clone()).collect()
}

/// The label of a camera's frames: cameras on even partitions film the dog, the others the
/// parking lot (two classes MobileNetV2's embedding tells apart).
fn scene(camera_index: usize) -> (&'static str, &'static str) {
    if camera_index.is_multiple_of(2) {
        ("dog", "dog.jpg")
    } else {
        ("parking", "small-vehicles1.jpeg")
    }
}

/// `per_camera` frames of each camera, interleaved, frame id `{camera}-{batch}-{i}`.
fn frames(
    assets: &Path,
    cameras: &[String],
    batch: &str,
    per_camera: usize,
) -> anyhow::Result<Vec<CameraFrame>> {
    let mut images = HashMap::new();
    let mut frames = Vec::new();
    for i in 0..per_camera {
        for (c, camera) in cameras.iter().enumerate() {
            let (_, file) = scene(c);
            if !images.contains_key(file) {
                images.insert(file, small_jpeg(&assets.join("images").join(file))?);
            }
            frames.push(CameraFrame {
                camera: camera.clone().into_bytes(),
                frame_id: format!("{camera}-{batch}-{i}"),
                payload: images[file].clone(),
                content_type: None,
                capture_ms: 1_700_000_000_000 + i as i64,
            });
        }
    }
    Ok(frames)
}

/// The image at `path`, 320 pixels wide, as a JPEG: MobileNetV2 sees 224 x 224 anyway, and
/// small frames keep the 176 frames well inside the mock cluster's 5 MiB per partition.
fn small_jpeg(path: &Path) -> anyhow::Result<Vec<u8>> {
    let image = image::open(path)?.resize(320, 320, image::imageops::FilterType::Triangle);
    let mut bytes = std::io::Cursor::new(Vec::new());
    image
        .to_rgb8()
        .write_to(&mut bytes, image::ImageFormat::Jpeg)?;
    Ok(bytes.into_inner())
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// The configuration both replicas share: MobileNetV2 (it has an embedding, so heads and
/// fine-tuning are on), rounds on demand, a short session so a killed member is noticed.
fn write_config(dir: &Path, kafka: &TestBroker) -> anyhow::Result<PathBuf> {
    let path = dir.join("tessera.toml");
    let mut text = format!(
        "[kafka]\nbrokers = \"{}\"\ngroup_id = \"{GROUP}\"\ninput_topics = [\"{FRAMES}\"]\n\
         results_topic = \"{RESULTS}\"\ndlq_topic = \"{DLQ}\"\nsession_timeout = \"{}s\"\n\
         revoke_drain_timeout = \"3s\"\n\n[model]\nmanifest = \"{}\"\n\n[tiling]\nenabled = false\n\n\
         [flow]\nmax_in_flight_frames = 4\n\n[labels]\ntopic = \"{LABELS}\"\n\n\
         [finetune]\ninterval = \"0s\"\nmin_new_labels = 0\nvalidation_percent = 25\nmin_examples = 8\n",
        kafka.bootstrap_servers(),
        SESSION_TIMEOUT.as_secs(),
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../models/manifests/mobilenetv2/model.toml"
        )
    );
    text.push_str("\n[kafka.producer_properties]\n");
    for (key, value) in kafka.producer_properties() {
        text.push_str(&format!("\"{key}\" = \"{value}\"\n"));
    }
    std::fs::write(&path, text)?;
    Ok(path)
}

/// A replica, its HTTP port and a client for it.
struct Replica {
    process: Tessera,
    port: u16,
    http: ureq::Agent,
}

impl Replica {
    fn spawn(name: &'static str, config: &Path, assets: &Path) -> anyhow::Result<Self> {
        let port = free_port()?;
        let process = Tessera::spawn_with_env(
            name,
            config,
            assets,
            &[format!("http.address=127.0.0.1:{port}")],
            &[("TESSERA_ADMIN_TOKEN", TOKEN)],
        )?;
        let http = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(5)))
            .build()
            .new_agent();
        Ok(Self {
            process,
            port,
            http,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// `/v1/status`, or `None` while the replica is not serving yet.
    fn status(&self) -> Option<Value> {
        let mut response = self.http.get(&self.url("/v1/status")).call().ok()?;
        serde_json::from_reader(response.body_mut().as_reader()).ok()
    }

    /// The input partitions this replica holds.
    fn partitions(&self) -> BTreeSet<i64> {
        self.status()
            .and_then(|s| {
                s["partitions"].as_array().map(|list| {
                    list.iter()
                        .filter(|p| p["topic"] == FRAMES)
                        .filter_map(|p| p["partition"].as_i64())
                        .collect()
                })
            })
            .unwrap_or_default()
    }

    fn live_head(&self) -> Option<u64> {
        self.status()?["learning"]["live_head"].as_u64()
    }

    fn is_trainer(&self) -> bool {
        self.status()
            .is_some_and(|s| s["learning"]["trainer"] == Value::Bool(true))
    }

    fn frames_published(&self) -> u64 {
        self.status()
            .and_then(|s| s["totals"]["frames_published"].as_u64())
            .unwrap_or(0)
    }

    /// A gauge or counter of `/metrics`.
    fn metric(&self, name: &str) -> Option<f64> {
        let mut response = self.http.get(&self.url("/metrics")).call().ok()?;
        let text = response.body_mut().read_to_string().ok()?;
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    }

    /// Asks for a fine-tune round; the response's status and body.
    fn finetune(&self) -> anyhow::Result<(u16, String)> {
        let mut response = self
            .http
            .post(&self.url("/v1/finetune"))
            .header("Authorization", &format!("Bearer {TOKEN}"))
            .send_empty()?;
        let status = response.status().as_u16();
        let body = response.body_mut().read_to_string()?;
        Ok((status, body))
    }
}

/// Polls `condition` every 200 ms until it gives a value or `timeout` passes.
async fn until<T>(timeout: Duration, mut condition: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = condition() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One label per result of `frames`: the camera's scene, referring to the frame's record.
async fn send_labels(
    brokers: &str,
    cameras: &[String],
    outputs: &[Output],
    frames: &[CameraFrame],
) -> anyhow::Result<usize> {
    let wanted: BTreeSet<&str> = frames.iter().map(|f| f.frame_id.as_str()).collect();
    let producer: rdkafka::producer::FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let mut sent = BTreeSet::new();
    for result in outputs.iter().filter_map(Output::result) {
        if !wanted.contains(result.frame_id.as_str()) || !sent.insert(result.frame_id.clone()) {
            continue;
        }
        let camera = cameras
            .iter()
            .position(|c| result.frame_id.starts_with(&format!("{c}-")))
            .ok_or_else(|| anyhow::anyhow!("{} names no camera", result.frame_id))?;
        let label = serde_json::to_vec(&serde_json::json!({
            "label": scene(camera).0,
            "frame": {
                "topic": result.source.topic,
                "partition": result.source.partition,
                "offset": result.source.offset,
            },
        }))?;
        producer
            .send(
                rdkafka::producer::FutureRecord::<(), _>::to(LABELS).payload(&label),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)?;
    }
    Ok(sent.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_partitions_heads_and_a_killed_ones_work() -> anyhow::Result<()> {
    let Some(assets) = assets_dir() else {
        return Ok(());
    };
    let kafka = TestBroker::from_env()?;
    let brokers = kafka.bootstrap_servers();
    kafka.create_topic(FRAMES, PARTITIONS)?;
    kafka.create_topic(RESULTS, PARTITIONS)?;
    for topic in [DLQ, LABELS, "tessera.heads", "tessera.examples"] {
        kafka.create_topic(topic, 1)?;
    }
    let cameras = cameras();
    let dir = tempfile::tempdir()?;
    let config = write_config(dir.path(), &kafka)?;
    let mut a = Replica::spawn("a", &config, &assets)?;
    let mut b = Replica::spawn("b", &config, &assets)?;

    // The group shares the four partitions, two each.
    let shared = until(STARTUP, || {
        for replica in [&mut a, &mut b] {
            if let Ok(Some(status)) = replica.process.child.try_wait() {
                return Some(Err(anyhow::anyhow!(
                    "replica {} exited at start: {status}",
                    replica.process.name
                )));
            }
        }
        let (pa, pb) = (a.partitions(), b.partitions());
        (pa.len() == 2 && pb.len() == 2 && pa.is_disjoint(&pb)).then_some(Ok((pa, pb)))
    })
    .await
    .transpose()?;
    let (pa, pb) = shared.ok_or_else(|| {
        anyhow::anyhow!(
            "partitions not shared: a {:?}, b {:?}",
            a.partitions(),
            b.partitions()
        )
    })?;
    eprintln!("shared: a {pa:?}, b {pb:?}");
    // Their stderr is a pipe, not a terminal: plain text, no colour codes.
    assert!(
        !a.process.logged("\u{1b}[") && a.process.logged("Partitions assigned"),
        "colour codes in a log that is not a terminal"
    );

    // Batch 1, one camera per partition: both replicas serve.
    let first = frames(&assets, &cameras, "first", 8)?;
    // A camera's frames of all three batches share a partition, which the mock cluster caps.
    let largest = first.iter().map(|f| f.payload.len()).max().unwrap_or(0);
    assert!(
        (8 + 30 + 6) * (largest + 1024) < MOCK_PARTITION_LOG_BYTES * 9 / 10,
        "frames of {largest} bytes overflow the mock cluster's partition log"
    );
    let landed = publish_frames(&brokers, FRAMES, &first).await?;
    let spread: BTreeSet<i32> = landed.iter().map(|l| l.partition).collect();
    assert_eq!(
        spread.len(),
        PARTITIONS as usize,
        "the cameras land on every partition"
    );
    let outputs = read_until_covered(&brokers, RESULTS, DLQ, &first, COMPLETION).await?;
    assert!(
        a.frames_published() > 0 && b.frames_published() > 0,
        "both replicas publish: a {}, b {}",
        a.frames_published(),
        b.frames_published()
    );

    // Labels for batch 1; the trainer (the replica owning the labels topic) promotes a head,
    // which goes live on both.
    let labelled = send_labels(&brokers, &cameras, &outputs, &first).await?;
    let trainer_is_a = until(STARTUP, || {
        if a.is_trainer() {
            Some(true)
        } else {
            b.is_trainer().then_some(false)
        }
    })
    .await
    .ok_or_else(|| anyhow::anyhow!("no replica became the trainer"))?;
    let (trainer, other) = if trainer_is_a { (&a, &b) } else { (&b, &a) };
    until(Duration::from_secs(120), || {
        (trainer.metric("tessera_finetune_replay_examples")? >= labelled as f64).then_some(())
    })
    .await
    .ok_or_else(|| anyhow::anyhow!("the trainer never held the {labelled} examples"))?;
    let (code, body) = trainer.finetune()?;
    assert!(
        (200..300).contains(&code),
        "fine-tune refused: {code} {body}"
    );
    let head = until(Duration::from_secs(180), || {
        let version = trainer.live_head().filter(|v| *v > 0)?;
        (other.live_head() == Some(version)).then_some(version)
    })
    .await
    .ok_or_else(|| {
        anyhow::anyhow!(
            "the head did not go live on both: trainer {:?}, other {:?}",
            trainer.live_head(),
            other.live_head()
        )
    })?;
    eprintln!("head v{head} live on both replicas");

    // Batch 2, and a SIGKILL of the replica that is not the trainer while it is busy.
    let (victim, survivor) = if trainer_is_a {
        (&mut b, &a)
    } else {
        (&mut a, &b)
    };
    let before = victim.frames_published();
    let second = frames(&assets, &cameras, "second", 30)?;
    let second_landed = publish_frames(&brokers, FRAMES, &second).await?;
    let busy = until(COMPLETION, || {
        (victim.frames_published() > before + 5).then_some(())
    })
    .await;
    assert!(
        busy.is_some(),
        "the replica to kill published nothing of batch 2"
    );
    let victim_partitions = victim.partitions();
    victim.process.signal("KILL")?;
    let killed_at = Instant::now();
    victim.process.wait_exit(Duration::from_secs(30)).await?;
    // What the survivor may publish a second time: frames past the killed replica's commits.
    let mut sent: Vec<CameraFrame> = first.clone();
    sent.extend(second.iter().cloned());
    let mut all_landed = landed.clone();
    all_landed.extend(second_landed);
    // (Read before the session timeout lets the survivor take over and commit.)
    let progress = group_progress(&brokers, GROUP, FRAMES).await?;
    let replayed: BTreeSet<String> = sent
        .iter()
        .zip(&all_landed)
        .filter(|(_, at)| {
            let committed = progress
                .iter()
                .find(|p| p.partition == at.partition)
                .and_then(|p| p.committed)
                .unwrap_or(0);
            victim_partitions.contains(&i64::from(at.partition)) && at.offset >= committed
        })
        .map(|(frame, _)| frame.frame_id.clone())
        .collect();
    eprintln!(
        "past the killed replica's commits: {} frames",
        replayed.len()
    );
    let moved = until(SESSION_TIMEOUT * 10, || {
        (survivor.partitions().len() == PARTITIONS as usize).then_some(())
    })
    .await;
    assert!(
        moved.is_some(),
        "the killed replica's partitions never moved: the survivor holds {:?}",
        survivor.partitions()
    );
    eprintln!(
        "the survivor holds all {PARTITIONS} partitions {:.1} s after the kill (session timeout {} s)",
        killed_at.elapsed().as_secs_f64(),
        SESSION_TIMEOUT.as_secs()
    );

    // Back-pressure (4 frames in flight at most) paused the survivor's partitions again and
    // again: counted in a metric, summarised in the log rather than a line per pause.
    let pauses = survivor
        .metric("tessera_ingest_pauses_total{reason=\"budget\"}")
        .unwrap_or(0.0) as usize;
    let lines = survivor.process.logged_count("Back-pressure: ");
    eprintln!("survivor: {pauses} back-pressure pauses, {lines} log lines about them");
    assert!(pauses > 0, "no back-pressure pause was counted");
    assert!(
        lines < pauses || pauses == 1,
        "{lines} log lines for {pauses} pauses"
    );
    assert_eq!(
        survivor
            .process
            .logged_count("Paused partitions: in-flight"),
        lines
    );

    // Batch 3 after the kill: everything gets a result, under the head.
    let third = frames(&assets, &cameras, "third", 6)?;
    publish_frames(&brokers, FRAMES, &third).await?;
    sent.extend(third.iter().cloned());
    let outputs = read_until_covered(&brokers, RESULTS, DLQ, &sent, COMPLETION).await?;
    let report = final_report(&brokers, &sent, true, "scale-out").await?;
    report.assert_ok();
    assert_eq!(report.dead_letters, 0, "every frame is a valid image");
    for (id, count) in &report.duplicated {
        assert!(
            replayed.contains(id),
            "{id} published {count} times, but it was not past the killed replica's commits"
        );
    }
    let third_ids: BTreeSet<&str> = third.iter().map(|f| f.frame_id.as_str()).collect();
    for result in outputs.iter().filter_map(Output::result) {
        if third_ids.contains(result.frame_id.as_str()) {
            assert_eq!(
                result.head_version,
                Some(head),
                "{} classified without the live head",
                result.frame_id
            );
        }
    }
    Ok(())
}
