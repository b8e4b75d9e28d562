//! Recordings of Kafka topics (MCAP) and what is done with them: `tessera replay record |
//! make | play | verify | info`.

pub mod compare;
pub mod make;
pub mod play;
pub mod record;
pub mod recording;
pub mod verify;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use rdkafka::consumer::{Consumer, ConsumerContext};

use recording::Scan;

/// The metadata every recording starts with: who made it, from what, when, and what it holds.
pub fn base_metadata(source: &str, kind: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "tessera_version".to_owned(),
            env!("CARGO_PKG_VERSION").to_owned(),
        ),
        ("source".to_owned(), source.to_owned()),
        (
            "created".to_owned(),
            humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        ),
        ("kind".to_owned(), kind.to_owned()),
    ])
}

/// The channel (source topic) to read from a recording: the one asked for, else the only
/// one, else `preferred` when the recording has it.
pub fn choose_channel(
    scan: &Scan,
    wanted: Option<&str>,
    preferred: &str,
) -> anyhow::Result<String> {
    let names: Vec<&str> = scan.channels.keys().map(String::as_str).collect();
    let chosen = match wanted {
        Some(name) => names.iter().find(|n| **n == name).copied(),
        None if names.len() == 1 => names.first().copied(),
        None => names.iter().find(|n| **n == preferred).copied(),
    };
    chosen.map(str::to_owned).ok_or_else(|| {
        anyhow::anyhow!(
            "{}: the recording's channels are [{}]; choose one with --channel",
            match wanted {
                Some(name) => format!("no channel {name:?}"),
                None => "which channel holds the frames?".to_owned(),
            },
            names.join(", ")
        )
    })
}

/// The partitions of `topic` on `brokers`; an error naming the topic when it does not exist.
pub fn partitions_of<C: ConsumerContext>(
    consumer: &impl Consumer<C>,
    topic: &str,
    brokers: &str,
) -> anyhow::Result<Vec<i32>> {
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(15))
        .map_err(|e| anyhow::anyhow!("cannot read the metadata of topic {topic}: {e}"))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    anyhow::ensure!(
        !partitions.is_empty(),
        "topic {topic} does not exist on {brokers}"
    );
    Ok(partitions)
}

/// A time given on the command line: RFC 3339 (`2026-11-30T08:00:00Z`), or a duration ago
/// (`2h`, `1day`). Milliseconds since the epoch.
pub fn parse_time(text: &str) -> Result<i64, String> {
    let at = match humantime::parse_rfc3339_weak(text) {
        Ok(at) => at,
        Err(_) => {
            let ago = humantime::parse_duration(text).map_err(|_| {
                format!("{text:?} is neither a time (2026-11-30T08:00:00Z) nor a duration ago (2h)")
            })?;
            SystemTime::now()
                .checked_sub(ago)
                .ok_or_else(|| format!("{text:?} reaches before the epoch"))?
        }
    };
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .map_err(|_| format!("{text:?} is before the epoch"))
}

/// What `tessera replay info` prints: metadata (the configuration last, it is long),
/// channels with their message counts and time ranges, and the damage if any.
pub fn describe_scan(path: &std::path::Path, scan: &Scan) -> String {
    let mut lines = vec![format!(
        "{}: {} message(s), {} bytes, profile {}",
        path.display(),
        scan.messages,
        scan.bytes,
        scan.profile.as_deref().unwrap_or("-")
    )];
    let time = |ms: Option<i64>| {
        ms.and_then(|ms| u64::try_from(ms).ok())
            .map(|ms| {
                humantime::format_rfc3339_millis(
                    SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(ms),
                )
                .to_string()
            })
            .unwrap_or_else(|| "-".into())
    };
    lines.push(format!(
        "  time      {} .. {}",
        time(scan.start_log_time_ms),
        time(scan.end_log_time_ms)
    ));
    for (topic, channel) in &scan.channels {
        lines.push(format!(
            "  channel   {topic}: {} message(s), {} .. {}",
            channel.messages,
            time(channel.start_log_time_ms),
            time(channel.end_log_time_ms)
        ));
    }
    for (key, value) in scan.metadata.iter().filter(|(k, _)| k.as_str() != "config") {
        lines.push(format!("  {key:<9} {value}"));
    }
    if let Some(config) = scan.metadata.get("config") {
        lines.push("  config:".into());
        lines.extend(config.lines().map(|line| format!("    {line}")));
    }
    match &scan.damage {
        None => lines.push("  intact".into()),
        Some(damage) => lines.push(format!("  DAMAGED: {damage}")),
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_instants_or_durations_ago() {
        assert_eq!(parse_time("2026-11-30T08:00:00Z"), Ok(1_796_025_600_000));
        let now = tessera_actors::protocol::now_ms();
        let two_hours_ago = parse_time("2h").expect("a duration");
        assert!((now - 7_200_000 - two_hours_ago).abs() < 5_000);
        assert!(
            parse_time("yesterday-ish")
                .expect_err("rejected")
                .contains("neither")
        );
    }
}
