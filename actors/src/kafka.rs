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
        .set("compression.type", "lz4");
    for (key, value) in &config.producer_properties {
        client.set(key, value);
    }
    client
}

fn base(config: &KafkaConfig) -> ClientConfig {
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &config.brokers)
        .set("client.id", "tessera");
    for (key, value) in &config.properties {
        client.set(key, value);
    }
    // Secrets stay out of config files: TESSERA_KAFKA_SASL_PASSWORD (and _USERNAME) win.
    if let Ok(user) = std::env::var("TESSERA_KAFKA_SASL_USERNAME") {
        client.set("sasl.username", user);
    }
    if let Ok(password) = std::env::var("TESSERA_KAFKA_SASL_PASSWORD") {
        client.set("sasl.password", password);
    }
    client
}
