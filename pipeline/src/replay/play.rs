//! `tessera replay play`: publishes a recording's records to a topic with their original
//! timing scaled by a speed (or as fast as the broker takes them), keeping keys, headers,
//! Kafka timestamps and the order of each camera.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::recording::{Damage, Recorded, RecordingReader};
use crate::feed::owned_headers;
use crate::progress::Progress;

/// How fast a recording is played.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Speed {
    /// The recorded gaps divided by this factor (1.0: as recorded).
    Factor(f64),
    /// No waiting at all.
    Max,
}

impl std::str::FromStr for Speed {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.eq_ignore_ascii_case("max") {
            return Ok(Speed::Max);
        }
        match text.trim_end_matches('x').parse::<f64>() {
            Ok(factor) if factor.is_finite() && factor > 0.0 => Ok(Speed::Factor(factor)),
            _ => Err(format!(
                "{text:?}: a speed is a positive factor (1.0, 2.5) or `max`"
            )),
        }
    }
}

impl Speed {
    /// When a record recorded `since_first_ms` after the first is due, after the start.
    fn due_after(self, since_first_ms: i64) -> Option<Duration> {
        match self {
            Speed::Max => None,
            Speed::Factor(factor) => Some(Duration::from_secs_f64(
                since_first_ms.max(0) as f64 / 1000.0 / factor,
            )),
        }
    }
}

/// Options of `tessera replay play`.
#[derive(Debug, Clone)]
pub struct PlayOptions {
    pub file: PathBuf,
    pub brokers: String,
    /// Where the records go.
    pub topic: String,
    /// The recorded topic to play (default: the only one).
    pub channel: Option<String>,
    pub speed: Speed,
    /// Times the recording is played, one after the other.
    pub loops: u32,
    /// Extra producer properties (`security.protocol`, ...).
    pub properties: Vec<(String, String)>,
}

/// What was played.
#[derive(Debug, Clone, Default)]
pub struct PlayReport {
    pub published: u64,
    pub seconds: f64,
    /// Where the recording is damaged: its intact prefix was played.
    pub damage: Option<Damage>,
}

/// Deliveries awaited at most at once: enough to keep the broker busy, bounded memory.
const IN_FLIGHT: usize = 1000;

/// Plays the recording `loops` times.
pub async fn run(options: &PlayOptions) -> anyhow::Result<PlayReport> {
    let scan = super::recording::scan(&options.file)?;
    let channel = super::choose_channel(&scan, options.channel.as_deref(), "frames")?;
    let per_loop = scan.channels.get(&channel).map_or(0, |c| c.messages);
    let first_ms = scan
        .channels
        .get(&channel)
        .and_then(|c| c.start_log_time_ms)
        .unwrap_or(0);
    // A loop lasts from the first record to the last plus one average gap.
    let span_ms = scan
        .channels
        .get(&channel)
        .and_then(|c| Some(c.end_log_time_ms? - c.start_log_time_ms?))
        .map_or(0, |span| span + span / (per_loop.max(2) as i64 - 1));
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &options.brokers)
        .set("enable.idempotence", "true")
        .set("message.max.bytes", "67108864")
        .set("linger.ms", "5");
    for (key, value) in &options.properties {
        config.set(key, value);
    }
    let producer: FutureProducer = config.create()?;
    let progress = Progress::new("play", "records", Some(per_loop * u64::from(options.loops)));
    let started = Instant::now();
    let mut report = PlayReport::default();
    let mut pending: VecDeque<DeliveryFuture> = VecDeque::new();
    for round in 0..options.loops {
        let (records, mut incoming) = mpsc::channel(256);
        let reader = read_channel(options.file.clone(), channel.clone(), records);
        while let Some(recorded) = incoming.recv().await {
            let since_first = recorded.log_time_ms - first_ms + i64::from(round) * span_ms;
            if let Some(due) = options.speed.due_after(since_first) {
                tokio::time::sleep_until(started + due).await;
            }
            if pending.len() >= IN_FLIGHT {
                settle(pending.pop_front()).await?;
            }
            let delivery = send(&producer, &options.topic, &recorded, &mut pending).await?;
            pending.push_back(delivery);
            report.published += 1;
            progress.inc(1);
        }
        let damage = reader.await??;
        if let Some(damage) = damage {
            progress.println(&format!("{damage}; its intact records were played"));
            report.damage = Some(damage);
            break;
        }
    }
    while let Some(delivery) = pending.pop_front() {
        settle(Some(delivery)).await?;
    }
    progress.finish();
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Reads `channel`'s records on a blocking thread into `records`; returns the damage that
/// ended the file early, if any.
fn read_channel(
    file: PathBuf,
    channel: String,
    records: mpsc::Sender<Recorded>,
) -> tokio::task::JoinHandle<anyhow::Result<Option<Damage>>> {
    tokio::task::spawn_blocking(move || {
        for item in RecordingReader::open(&file)? {
            match item {
                Ok(recorded) if recorded.record.topic == channel => {
                    if records.blocking_send(recorded).is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(damage) => return Ok(Some(damage)),
            }
        }
        Ok(None)
    })
}

/// Enqueues one record with its key, headers and Kafka timestamp; the partitioner places it
/// by key, so a camera's records stay in one partition, in order. While the producer's queue
/// is full, the oldest deliveries are awaited first.
async fn send(
    producer: &FutureProducer,
    topic: &str,
    recorded: &Recorded,
    pending: &mut VecDeque<DeliveryFuture>,
) -> anyhow::Result<DeliveryFuture> {
    let record = &recorded.record;
    let mut out: FutureRecord<'_, [u8], [u8]> =
        FutureRecord::to(topic).headers(owned_headers(&record.headers));
    if let Some(key) = &record.key {
        out = out.key(key.as_slice());
    }
    if let Some(payload) = &record.payload {
        out = out.payload(payload.as_slice());
    }
    if let Some(timestamp) = record.timestamp_ms {
        out = out.timestamp(timestamp);
    }
    loop {
        match producer.send_result(out) {
            Ok(delivery) => return Ok(delivery),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                out = back;
                match pending.pop_front() {
                    Some(oldest) => settle(Some(oldest)).await?,
                    None => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
            Err((error, _)) => {
                anyhow::bail!("cannot enqueue record {}: {error}", recorded.index)
            }
        }
    }
}

async fn settle(delivery: Option<DeliveryFuture>) -> anyhow::Result<()> {
    let Some(delivery) = delivery else {
        return Ok(());
    };
    match delivery.await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((error, _))) => Err(anyhow::anyhow!("the broker refused a record: {error}")),
        Err(_) => Err(anyhow::anyhow!(
            "the producer closed before a record was delivered"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speeds_scale_the_recorded_gaps() {
        assert_eq!("max".parse::<Speed>(), Ok(Speed::Max));
        assert_eq!("2".parse::<Speed>(), Ok(Speed::Factor(2.0)));
        assert_eq!("0.5x".parse::<Speed>(), Ok(Speed::Factor(0.5)));
        assert!("0".parse::<Speed>().is_err());
        assert!(
            "fast"
                .parse::<Speed>()
                .expect_err("rejected")
                .contains("max")
        );
        assert_eq!(
            Speed::Factor(2.0).due_after(1_000),
            Some(Duration::from_millis(500))
        );
        assert_eq!(
            Speed::Factor(0.5).due_after(1_000),
            Some(Duration::from_secs(2))
        );
        assert_eq!(Speed::Max.due_after(1_000), None);
    }
}
