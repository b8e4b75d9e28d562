//! Kafka client construction from [`KafkaConfig`].

use rdkafka::ClientConfig;

use crate::config::KafkaConfig;

/// The consumer's librdkafka configuration.
pub fn consumer_config(config: &KafkaConfig) -> ClientConfig {
    let mut client = base(config);
    client
        .set("group.id", &config.group_id)
        .set("auto.offset.reset", &config.auto_offset_reset)
        // Offsets are stored by tessera only once a frame's output is acknowledged; the
        // stored offsets are then committed periodically and on revoke/shutdown.
        .set("enable.auto.offset.store", "false")
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set(
            "session.timeout.ms",
            config.session_timeout.as_millis().to_string(),
        )
        .set("partition.assignment.strategy", "cooperative-sticky")
        // Bounds what librdkafka pre-fetches; flow control pauses partitions beyond that.
        .set(
            "queued.max.messages.kbytes",
            config.fetch_buffer_kbytes.to_string(),
        )
        // How long a broker may hold a fetch while no data arrives. Kafka answers as soon as
        // data arrives anyway; a short wait keeps the latency low where a broker does not
        // (the embedded mock broker) at the cost of a few more idle fetches.
        .set("fetch.wait.max.ms", "100")
        .set(
            "statistics.interval.ms",
            config.statistics_interval.as_millis().to_string(),
        );
    for (key, value) in &config.consumer_properties {
        client.set(key, value);
    }
    client
}

/// The producer's librdkafka configuration.
pub fn producer_config(config: &KafkaConfig) -> ClientConfig {
    let mut client = base(config);
    client
        // Idempotence keeps each partition's results in send order across retries.
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set(
            "message.timeout.ms",
            config.message_timeout.as_millis().to_string(),
        )
        .set("linger.ms", "5")
        .set("compression.type", config.compression.as_str());
    for (key, value) in &config.producer_properties {
        client.set(key, value);
    }
    client
}

/// A consumer that reads topics it assigns itself (the heads topic, the examples topic, a
/// frame fetched by offset): its own group id, nothing committed, from the earliest offset.
pub fn reader_config(config: &KafkaConfig, purpose: &str) -> ClientConfig {
    let mut client = base(config);
    client
        .set("group.id", format!("{}.{purpose}", config.group_id))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "100");
    for (key, value) in &config.consumer_properties {
        client.set(key, value);
    }
    client
}

/// Produces one record and waits for Kafka's acknowledgement (rare records: a promoted head,
/// a rollback). Returns the partition and offset written.
pub async fn produce_one(
    config: &KafkaConfig,
    topic: &str,
    key: &str,
    value: &[u8],
) -> Result<(i32, i64), rdkafka::error::KafkaError> {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer = producer_config(config).create()?;
    producer
        .send(
            FutureRecord::to(topic).key(key).payload(value),
            config.message_timeout,
        )
        .await
        .map(|delivery| (delivery.partition, delivery.offset))
        .map_err(|(error, _)| error)
}

/// Assigns every partition of `topic` from its start; returns each partition's end offset,
/// or `None` when the topic does not exist (yet).
pub async fn assign_all(
    consumer: &rdkafka::consumer::StreamConsumer,
    topic: &str,
) -> Result<Option<Vec<(i32, i64)>>, rdkafka::error::KafkaError> {
    use rdkafka::consumer::Consumer;
    let timeout = std::time::Duration::from_secs(10);
    let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
    let Some(found) = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
    else {
        return Ok(None);
    };
    let mut assignment = rdkafka::TopicPartitionList::new();
    let mut ends = Vec::new();
    for partition in found.partitions() {
        let id = partition.id();
        assignment.add_partition_offset(topic, id, rdkafka::Offset::Beginning)?;
        let (_, high) = consumer.fetch_watermarks(topic, id, timeout)?;
        ends.push((id, high));
    }
    consumer.assign(&assignment)?;
    Ok(Some(ends))
}

/// Reads `topic` from its start to its end as it is now, handing each record's key and value
/// to `apply`; returns how many were read. An absent topic has none. Fails when the end is not
/// reached within `timeout`.
pub async fn read_to_end(
    consumer: &rdkafka::consumer::StreamConsumer,
    topic: &str,
    timeout: std::time::Duration,
    mut apply: impl FnMut(Option<&[u8]>, Option<&[u8]>),
) -> Result<usize, String> {
    use rdkafka::message::Message;
    let Some(ends) = assign_all(consumer, topic)
        .await
        .map_err(|e| format!("reading topic `{topic}`: {e}"))?
    else {
        return Ok(0);
    };
    let mut remaining: Vec<(i32, i64)> = ends.into_iter().filter(|(_, end)| *end > 0).collect();
    let mut read = 0;
    let deadline = tokio::time::Instant::now() + timeout;
    while !remaining.is_empty() {
        let message = tokio::time::timeout_at(deadline, consumer.recv())
            .await
            .map_err(|_| {
                format!("reading topic `{topic}` to its end took longer than {timeout:?}")
            })?
            .map_err(|e| format!("reading topic `{topic}`: {e}"))?;
        apply(message.key(), message.payload());
        read += 1;
        let (partition, next) = (message.partition(), message.offset() + 1);
        remaining.retain(|&(p, end)| p != partition || next < end);
    }
    Ok(read)
}

fn base(config: &KafkaConfig) -> ClientConfig {
    base_with_secrets(config, |name| std::env::var(name).ok())
}

/// Environment variables whose values become client secrets (never put secrets in files).
pub const SECRET_VARIABLES: [(&str, &str); 2] = [
    ("TESSERA_KAFKA_SASL_USERNAME", "sasl.username"),
    ("TESSERA_KAFKA_SASL_PASSWORD", "sasl.password"),
];

fn base_with_secrets(
    config: &KafkaConfig,
    secret: impl Fn(&str) -> Option<String>,
) -> ClientConfig {
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &config.brokers)
        .set("client.id", "tessera");
    for (key, value) in &config.properties {
        client.set(key, value);
    }
    // Secrets from the environment win over anything in the files.
    for (variable, property) in SECRET_VARIABLES {
        if let Some(value) = secret(variable) {
            client.set(property, value);
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use rdkafka::producer::BaseProducer;

    use super::*;

    fn secured() -> KafkaConfig {
        let mut config = KafkaConfig::default();
        for (key, value) in [
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanisms", "SCRAM-SHA-512"),
            ("sasl.username", "from-file"),
        ] {
            config.properties.insert(key.into(), value.into());
        }
        config
    }

    #[test]
    fn security_settings_pass_through_and_secrets_come_from_the_environment() {
        let client = base_with_secrets(&secured(), |name| {
            (name == "TESSERA_KAFKA_SASL_PASSWORD").then(|| "s3cret".to_owned())
        });
        assert_eq!(client.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(client.get("sasl.mechanisms"), Some("SCRAM-SHA-512"));
        assert_eq!(client.get("sasl.username"), Some("from-file"));
        assert_eq!(client.get("sasl.password"), Some("s3cret"));
    }

    #[test]
    fn tls_and_scram_are_compiled_in() {
        // librdkafka refuses SASL_SSL/SCRAM at client creation when built without OpenSSL.
        let mut client = producer_config(&secured());
        client.set("sasl.password", "s3cret");
        let producer: Result<BaseProducer, _> = client.create();
        assert!(producer.is_ok(), "{:?}", producer.err());
    }

    #[test]
    fn consumer_never_stores_offsets_by_itself() {
        let client = consumer_config(&KafkaConfig::default());
        assert_eq!(client.get("enable.auto.offset.store"), Some("false"));
    }
}
