//! Prometheus metrics of one pipeline: names and label keys as constants, handles resolved
//! once (labelled children for every bounded label value are created up front, so every
//! series exists, at zero, from the first scrape).

use prometheus::core::Collector;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::protocol::{DeadLetterKind, ErrorDomain, StageId};

/// Metric names (`tessera_<subsystem>_<name>_<unit>`, `_total` for counters).
pub mod names {
    pub const FRAMES_CONSUMED: &str = "tessera_ingest_frames_consumed_total";
    pub const PARTITIONS_ASSIGNED: &str = "tessera_ingest_partitions_assigned";
    pub const PARTITIONS_PAUSED: &str = "tessera_ingest_partitions_paused";
    pub const OPERATOR_PAUSED: &str = "tessera_ingest_operator_paused";
    pub const PAUSES: &str = "tessera_ingest_pauses_total";
    pub const IDLE_MEMBER: &str = "tessera_ingest_idle_member";
    pub const CONSUMER_LAG: &str = "tessera_ingest_consumer_lag_messages";
    pub const FRAMES_IN_FLIGHT: &str = "tessera_pipeline_frames_in_flight";
    pub const STAGE_LATENCY: &str = "tessera_pipeline_stage_latency_seconds";
    pub const END_TO_END_LATENCY: &str = "tessera_pipeline_end_to_end_latency_seconds";
    pub const QUEUE_PUSHED: &str = "tessera_queue_items_pushed_total";
    pub const QUEUE_POPPED: &str = "tessera_queue_items_popped_total";
    pub const TILES_INFERRED: &str = "tessera_recognize_tiles_inferred_total";
    pub const BATCH_SIZE: &str = "tessera_recognize_batch_size_tiles";
    pub const FRAMES_PUBLISHED: &str = "tessera_publish_frames_published_total";
    pub const FRAMES_SKIPPED: &str = "tessera_publish_frames_skipped_total";
    pub const FRAMES_DEAD_LETTERED: &str = "tessera_publish_frames_dead_lettered_total";
    pub const ACTOR_RESTARTS: &str = "tessera_supervisor_actor_restarts_total";
    pub const DELIVERY_FAILURES: &str = "tessera_publish_delivery_failures_total";
    pub const COMMIT_FAILURES: &str = "tessera_ingest_commit_failures_total";
    pub const PRODUCERS_REPLACED: &str = "tessera_publish_producers_replaced_total";
    pub const MODEL_INFO: &str = "tessera_model_info";
    pub const HEADS_APPLIED: &str = "tessera_heads_applied_total";
    pub const HEADS_REFUSED: &str = "tessera_heads_refused_total";
    pub const HEAD_LIVE_VERSION: &str = "tessera_heads_live_version";
    pub const LABELS_JOINED: &str = "tessera_labels_joined_total";
    pub const FINETUNE_RUNS: &str = "tessera_finetune_runs_total";
    pub const FINETUNE_DURATION: &str = "tessera_finetune_duration_seconds";
    pub const FINETUNE_LIVE_ACCURACY: &str = "tessera_finetune_live_validation_accuracy";
    pub const REPLAY_EXAMPLES: &str = "tessera_finetune_replay_examples";
    pub const REPLAY_BYTES: &str = "tessera_finetune_replay_bytes";
    pub const SECOND_STAGE_BOXES: &str = "tessera_second_stage_boxes_total";
    pub const LABEL_REQUESTS: &str = "tessera_label_requests_total";
    pub const LABEL_REQUESTS_DROPPED: &str = "tessera_label_requests_dropped_total";
    pub const GATE_TILES: &str = "tessera_gate_tiles_total";
    pub const GATE_REFRESHES: &str = "tessera_gate_refreshes_total";
    pub const GATE_RELAXATION: &str = "tessera_gate_relaxation";
    pub const GATE_CAMERAS: &str = "tessera_gate_cameras";

    /// Every tessera metric family, in exposition order of this list.
    pub const ALL: [&str; 36] = [
        FRAMES_CONSUMED,
        PARTITIONS_ASSIGNED,
        PARTITIONS_PAUSED,
        OPERATOR_PAUSED,
        CONSUMER_LAG,
        FRAMES_IN_FLIGHT,
        STAGE_LATENCY,
        END_TO_END_LATENCY,
        QUEUE_PUSHED,
        QUEUE_POPPED,
        TILES_INFERRED,
        BATCH_SIZE,
        FRAMES_PUBLISHED,
        FRAMES_SKIPPED,
        FRAMES_DEAD_LETTERED,
        ACTOR_RESTARTS,
        DELIVERY_FAILURES,
        COMMIT_FAILURES,
        PRODUCERS_REPLACED,
        MODEL_INFO,
        HEADS_APPLIED,
        HEADS_REFUSED,
        HEAD_LIVE_VERSION,
        LABELS_JOINED,
        FINETUNE_RUNS,
        FINETUNE_DURATION,
        FINETUNE_LIVE_ACCURACY,
        REPLAY_EXAMPLES,
        REPLAY_BYTES,
        SECOND_STAGE_BOXES,
        LABEL_REQUESTS,
        LABEL_REQUESTS_DROPPED,
        GATE_TILES,
        GATE_REFRESHES,
        GATE_RELAXATION,
        GATE_CAMERAS,
    ];

    /// The process metrics (Linux) registered beside tessera's own.
    pub const PROCESS: [&str; 6] = [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_virtual_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
    ];
}

/// Label keys.
pub mod labels {
    pub const STAGE: &str = "stage";
    pub const QUEUE: &str = "queue";
    pub const KIND: &str = "kind";
    pub const ACTOR: &str = "actor";
    pub const CAUSE: &str = "cause";
    pub const TOPIC: &str = "topic";
    pub const PARTITION: &str = "partition";
    pub const MODEL: &str = "model";
    pub const OUTCOME: &str = "outcome";
    pub const VIA: &str = "via";
    pub const VERSION: &str = "version";
    pub const HEAD_VERSION: &str = "head_version";
    pub const EXECUTION_PROVIDER: &str = "execution_provider";
    pub const SCOPE: &str = "scope";
    pub const VERDICT: &str = "verdict";
    pub const STRATEGY: &str = "strategy";
    pub const DECISION: &str = "decision";
    pub const REASON: &str = "reason";
}

/// Why consumption paused (`reason` of [`names::PAUSES`]).
pub const PAUSE_REASONS: [&str; 3] = ["budget", "operator", "draining"];

/// A pipeline stage whose latency is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Decode,
    /// Tile grid plus preprocessing into the model tensors.
    TilePreprocess,
    /// From a tile batch's dispatch to a recognize worker taking it.
    QueueWait,
    /// One model run (a batch of tiles).
    Inference,
    /// Mapping and merging a frame's tile outputs.
    Merge,
    /// Cropping a frame's boxes, embedding them and applying the head (second stage).
    SecondStage,
    /// From handing a record to the producer to Kafka's acknowledgement.
    Publish,
}

impl Step {
    pub const ALL: [Step; 7] = [
        Step::Decode,
        Step::TilePreprocess,
        Step::QueueWait,
        Step::Inference,
        Step::Merge,
        Step::SecondStage,
        Step::Publish,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Step::Decode => "decode",
            Step::TilePreprocess => "tile_preprocess",
            Step::QueueWait => "queue_wait",
            Step::Inference => "inference",
            Step::Merge => "merge",
            Step::SecondStage => "second_stage",
            Step::Publish => "publish",
        }
    }
}

/// A queue between stages, observed as items pushed and popped (depth = pushed - popped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queue {
    /// Frames handed to the prepare pool.
    Prepare,
    /// Tile batches handed to the recognize pool.
    Recognize,
    /// Finished frames handed to publish.
    Publish,
    /// Records in the producer awaiting Kafka's acknowledgement.
    Delivery,
}

impl Queue {
    pub const ALL: [Queue; 4] = [
        Queue::Prepare,
        Queue::Recognize,
        Queue::Publish,
        Queue::Delivery,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Queue::Prepare => "prepare",
            Queue::Recognize => "recognize",
            Queue::Publish => "publish",
            Queue::Delivery => "delivery",
        }
    }
}

/// Pushed and popped counters of one queue.
#[derive(Debug, Clone)]
pub struct QueueCounters {
    pub pushed: IntCounter,
    pub popped: IntCounter,
}

/// The metrics of one pipeline, in their own registry (several pipelines may share a
/// process, as in tests).
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    pub frames_consumed: IntCounter,
    pub partitions_assigned: IntGauge,
    pub partitions_paused: IntGauge,
    pub operator_paused: IntGauge,
    pauses: IntCounterVec,
    /// 1 while this replica is a group member holding no input partition.
    pub idle_member: IntGauge,
    consumer_lag: IntGaugeVec,
    pub frames_in_flight: IntGauge,
    stage_latency: [Histogram; 7],
    pub end_to_end_latency: Histogram,
    queues: [QueueCounters; 4],
    pub tiles_inferred: IntCounter,
    pub batch_size: Histogram,
    pub frames_published: IntCounter,
    pub frames_skipped: IntCounter,
    frames_dead_lettered: IntCounterVec,
    actor_restarts: IntCounterVec,
    /// Deliveries Kafka failed (each retried), by error domain.
    delivery_failures: IntCounterVec,
    /// Offset commits that failed (the next commit covers them).
    pub commit_failures: IntCounter,
    /// Producers replaced after a fatal error.
    pub producers_replaced: IntCounter,
    model_info: IntGaugeVec,
    /// Heads that went live on this replica.
    pub heads_applied: IntCounter,
    /// Records of the heads topic refused (not a head, or another backbone's).
    pub heads_refused: IntCounter,
    /// Version of the live head of each scope, 0 before the first.
    head_live_version: IntGaugeVec,
    /// Labels joined with an embedding, by how (`cache`, `fetch`, `inline`).
    labels_joined: IntCounterVec,
    /// Fine-tune rounds by outcome.
    finetune_runs: IntCounterVec,
    pub finetune_duration: Histogram,
    /// The live head's validation accuracy on the last round's held-out examples.
    pub finetune_live_accuracy: prometheus::Gauge,
    pub replay_examples: IntGauge,
    pub replay_bytes: IntGauge,
    /// Boxes the second stage classified, by verdict (`kept`, `relabelled`, `rejected`).
    second_stage_boxes: IntCounterVec,
    /// Label requests published, by strategy.
    label_requests: IntCounterVec,
    /// Label requests not published (too many pending, or Kafka refused them).
    pub label_requests_dropped: IntCounter,
    /// Tiles the change gate planned, by decision (`inferred`, `reused`).
    gate_tiles: IntCounterVec,
    /// Frames the change gate ran in full by rule.
    pub gate_refreshes: IntCounter,
    /// How far the gate's settings are relaxed under lag (0 to 1).
    pub gate_relaxation: prometheus::Gauge,
    /// Cameras whose tiles the gate keeps.
    pub gate_cameras: IntGauge,
}

/// What the second stage's head made of a box.
pub const VERDICTS: [&str; 3] = ["kept", "relabelled", "rejected"];

/// What the change gate did with a tile: ran it through the model, or reused its result.
pub const GATE_DECISIONS: [&str; 2] = ["inferred", "reused"];

/// How a label found its embedding: the recent-frames cache, the frame read back from Kafka, or
/// the image inside the label.
pub const JOINED_VIA: [&str; 3] = ["cache", "fetch", "inline"];
/// Outcomes of a fine-tune round.
pub const FINETUNE_OUTCOMES: [&str; 4] = ["promoted", "rejected", "skipped", "failed"];

/// Latency buckets from 0.5 ms to 60 s (stages span sub-millisecond merges to queued frames).
const LATENCY_BUCKETS: [f64; 18] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0,
    30.0, 45.0, 60.0,
];

impl Metrics {
    /// Creates and registers every metric, plus the process collector where supported.
    pub fn new() -> Self {
        let registry = Registry::new();
        let stage_latency = HistogramVec::new(
            HistogramOpts::new(
                names::STAGE_LATENCY,
                "Latency of each pipeline stage, per frame (per batch for inference and queue wait)",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &[labels::STAGE],
        )
        .expect("valid metric");
        let queue_pushed = IntCounterVec::new(
            Opts::new(
                names::QUEUE_PUSHED,
                "Items pushed into a queue between stages",
            ),
            &[labels::QUEUE],
        )
        .expect("valid metric");
        let queue_popped = IntCounterVec::new(
            Opts::new(
                names::QUEUE_POPPED,
                "Items taken from a queue between stages",
            ),
            &[labels::QUEUE],
        )
        .expect("valid metric");
        let frames_dead_lettered = IntCounterVec::new(
            Opts::new(
                names::FRAMES_DEAD_LETTERED,
                "Frames sent to the dead-letter topic (acknowledged by Kafka), by error kind",
            ),
            &[labels::KIND],
        )
        .expect("valid metric");
        let actor_restarts = IntCounterVec::new(
            Opts::new(
                names::ACTOR_RESTARTS,
                "Failures of supervised stages that led to a restart, by stage and cause (error domain)",
            ),
            &[labels::ACTOR, labels::CAUSE],
        )
        .expect("valid metric");
        let delivery_failures = IntCounterVec::new(
            Opts::new(
                names::DELIVERY_FAILURES,
                "Records Kafka failed to deliver (each is sent again), by cause",
            ),
            &[labels::CAUSE],
        )
        .expect("valid metric");
        let metrics = Self {
            frames_consumed: IntCounter::new(
                names::FRAMES_CONSUMED,
                "Frames (Kafka records) consumed from the input topics",
            )
            .expect("valid metric"),
            partitions_assigned: IntGauge::new(
                names::PARTITIONS_ASSIGNED,
                "Input partitions assigned to this consumer",
            )
            .expect("valid metric"),
            partitions_paused: IntGauge::new(
                names::PARTITIONS_PAUSED,
                "Input partitions paused (flow control or operator pause)",
            )
            .expect("valid metric"),
            operator_paused: IntGauge::new(
                names::OPERATOR_PAUSED,
                "1 while an operator has paused consumption (POST /v1/pause)",
            )
            .expect("valid metric"),
            pauses: IntCounterVec::new(
                Opts::new(
                    names::PAUSES,
                    "Times consumption paused, by reason: budget (back-pressure: the in-flight budget is spent, several times a second at full load), operator, draining",
                ),
                &[labels::REASON],
            )
            .expect("valid metric"),
            idle_member: IntGauge::new(
                names::IDLE_MEMBER,
                "1 while this replica is a consumer-group member with no input partition (more replicas than partitions, or a stuck rebalance)",
            )
            .expect("valid metric"),
            consumer_lag: IntGaugeVec::new(
                Opts::new(
                    names::CONSUMER_LAG,
                    "Records between the partition's high watermark and the stored offset",
                ),
                &[labels::TOPIC, labels::PARTITION],
            )
            .expect("valid metric"),
            frames_in_flight: IntGauge::new(
                names::FRAMES_IN_FLIGHT,
                "Frames consumed whose output Kafka has not acknowledged yet",
            )
            .expect("valid metric"),
            stage_latency: Step::ALL.map(|s| stage_latency.with_label_values(&[s.label()])),
            end_to_end_latency: Histogram::with_opts(
                HistogramOpts::new(
                    names::END_TO_END_LATENCY,
                    "From the frame's Kafka timestamp to Kafka acknowledging its output",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
            )
            .expect("valid metric"),
            queues: Queue::ALL.map(|q| QueueCounters {
                pushed: queue_pushed.with_label_values(&[q.label()]),
                popped: queue_popped.with_label_values(&[q.label()]),
            }),
            tiles_inferred: IntCounter::new(
                names::TILES_INFERRED,
                "Tiles run through the model (full-frame passes included, padding excluded)",
            )
            .expect("valid metric"),
            batch_size: Histogram::with_opts(
                HistogramOpts::new(names::BATCH_SIZE, "Tiles per model run")
                    .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]),
            )
            .expect("valid metric"),
            frames_published: IntCounter::new(
                names::FRAMES_PUBLISHED,
                "Results with status ok acknowledged by Kafka",
            )
            .expect("valid metric"),
            frames_skipped: IntCounter::new(
                names::FRAMES_SKIPPED,
                "Results with status skipped (lag policy drop_stale) acknowledged by Kafka",
            )
            .expect("valid metric"),
            model_info: IntGaugeVec::new(
                Opts::new(
                    names::MODEL_INFO,
                    "The model in use: 1 for its name, version, head version and execution provider",
                ),
                &[
                    labels::MODEL,
                    labels::VERSION,
                    labels::HEAD_VERSION,
                    labels::EXECUTION_PROVIDER,
                ],
            )
            .expect("valid metric"),
            commit_failures: IntCounter::new(
                names::COMMIT_FAILURES,
                "Offset commits that failed (the next commit covers their offsets)",
            )
            .expect("valid metric"),
            producers_replaced: IntCounter::new(
                names::PRODUCERS_REPLACED,
                "Kafka producers replaced after a fatal error (their records are sent again)",
            )
            .expect("valid metric"),
            heads_applied: IntCounter::new(
                names::HEADS_APPLIED,
                "Heads that went live on this replica (promoted here or read from the heads topic)",
            )
            .expect("valid metric"),
            heads_refused: IntCounter::new(
                names::HEADS_REFUSED,
                "Heads topic records refused: not a head, or trained on another backbone",
            )
            .expect("valid metric"),
            head_live_version: IntGaugeVec::new(
                Opts::new(
                    names::HEAD_LIVE_VERSION,
                    "Version of the live head of each scope (0: none; the global head, or the model itself, serves)",
                ),
                &[labels::SCOPE],
            )
            .expect("valid metric"),
            labels_joined: IntCounterVec::new(
                Opts::new(
                    names::LABELS_JOINED,
                    "Labels joined with an embedding and written as examples, by how the embedding was found",
                ),
                &[labels::VIA],
            )
            .expect("valid metric"),
            finetune_runs: IntCounterVec::new(
                Opts::new(names::FINETUNE_RUNS, "Fine-tune rounds, by outcome"),
                &[labels::OUTCOME],
            )
            .expect("valid metric"),
            finetune_duration: Histogram::with_opts(
                HistogramOpts::new(names::FINETUNE_DURATION, "Duration of a fine-tune round")
                    .buckets(vec![0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0]),
            )
            .expect("valid metric"),
            finetune_live_accuracy: prometheus::Gauge::new(
                names::FINETUNE_LIVE_ACCURACY,
                "Validation accuracy of the live head on the last round's held-out examples",
            )
            .expect("valid metric"),
            replay_examples: IntGauge::new(
                names::REPLAY_EXAMPLES,
                "Labelled examples in the replay buffer",
            )
            .expect("valid metric"),
            replay_bytes: IntGauge::new(
                names::REPLAY_BYTES,
                "Memory the replay buffer's examples hold",
            )
            .expect("valid metric"),
            second_stage_boxes: IntCounterVec::new(
                Opts::new(
                    names::SECOND_STAGE_BOXES,
                    "Detected boxes the second stage classified, by what the head made of them",
                ),
                &[labels::VERDICT],
            )
            .expect("valid metric"),
            label_requests: IntCounterVec::new(
                Opts::new(
                    names::LABEL_REQUESTS,
                    "Label requests published to the label-requests topic, by sampling strategy",
                ),
                &[labels::STRATEGY],
            )
            .expect("valid metric"),
            label_requests_dropped: IntCounter::new(
                names::LABEL_REQUESTS_DROPPED,
                "Label requests not published: too many pending, or Kafka refused them",
            )
            .expect("valid metric"),
            gate_tiles: IntCounterVec::new(
                Opts::new(
                    names::GATE_TILES,
                    "Tiles the change gate planned: run through the model, or reused from an earlier frame",
                ),
                &[labels::DECISION],
            )
            .expect("valid metric"),
            gate_refreshes: IntCounter::new(
                names::GATE_REFRESHES,
                "Frames the change gate ran in full by rule (first frame, refresh period, rebalance, new head)",
            )
            .expect("valid metric"),
            gate_relaxation: prometheus::Gauge::new(
                names::GATE_RELAXATION,
                "How far the change gate's settings are relaxed under sustained lag (0 to 1)",
            )
            .expect("valid metric"),
            gate_cameras: IntGauge::new(
                names::GATE_CAMERAS,
                "Cameras whose tiles the change gate keeps",
            )
            .expect("valid metric"),
            frames_dead_lettered,
            actor_restarts,
            delivery_failures,
            registry,
        };
        metrics
            .head_live_version
            .with_label_values(&[tessera_operators::scopes::GLOBAL_SCOPE]);
        for verdict in VERDICTS {
            metrics.second_stage_boxes.with_label_values(&[verdict]);
        }
        for strategy in tessera_operators::sampling::Strategy::ALL {
            metrics
                .label_requests
                .with_label_values(&[strategy.as_str()]);
        }
        for decision in GATE_DECISIONS {
            metrics.gate_tiles.with_label_values(&[decision]);
        }
        for via in JOINED_VIA {
            metrics.labels_joined.with_label_values(&[via]);
        }
        for reason in PAUSE_REASONS {
            metrics.pauses.with_label_values(&[reason]);
        }
        for outcome in FINETUNE_OUTCOMES {
            metrics.finetune_runs.with_label_values(&[outcome]);
        }
        for kind in DeadLetterKind::ALL {
            metrics
                .frames_dead_lettered
                .with_label_values(&[kind.as_str()]);
        }
        for stage in StageId::ALL {
            for domain in ErrorDomain::ALL {
                metrics
                    .actor_restarts
                    .with_label_values(&[stage.name(), domain.as_str()]);
            }
        }
        for domain in ErrorDomain::ALL {
            metrics
                .delivery_failures
                .with_label_values(&[domain.as_str()]);
        }
        let collectors: [Box<dyn Collector>; 38] = [
            Box::new(metrics.frames_consumed.clone()),
            Box::new(metrics.partitions_assigned.clone()),
            Box::new(metrics.partitions_paused.clone()),
            Box::new(metrics.operator_paused.clone()),
            Box::new(metrics.pauses.clone()),
            Box::new(metrics.idle_member.clone()),
            Box::new(metrics.consumer_lag.clone()),
            Box::new(metrics.frames_in_flight.clone()),
            Box::new(stage_latency),
            Box::new(metrics.end_to_end_latency.clone()),
            Box::new(queue_pushed),
            Box::new(queue_popped),
            Box::new(metrics.tiles_inferred.clone()),
            Box::new(metrics.batch_size.clone()),
            Box::new(metrics.frames_published.clone()),
            Box::new(metrics.frames_skipped.clone()),
            Box::new(metrics.frames_dead_lettered.clone()),
            Box::new(metrics.actor_restarts.clone()),
            Box::new(metrics.delivery_failures.clone()),
            Box::new(metrics.commit_failures.clone()),
            Box::new(metrics.producers_replaced.clone()),
            Box::new(metrics.model_info.clone()),
            Box::new(metrics.heads_applied.clone()),
            Box::new(metrics.heads_refused.clone()),
            Box::new(metrics.head_live_version.clone()),
            Box::new(metrics.labels_joined.clone()),
            Box::new(metrics.finetune_runs.clone()),
            Box::new(metrics.finetune_duration.clone()),
            Box::new(metrics.finetune_live_accuracy.clone()),
            Box::new(metrics.replay_examples.clone()),
            Box::new(metrics.replay_bytes.clone()),
            Box::new(metrics.second_stage_boxes.clone()),
            Box::new(metrics.label_requests.clone()),
            Box::new(metrics.label_requests_dropped.clone()),
            Box::new(metrics.gate_tiles.clone()),
            Box::new(metrics.gate_refreshes.clone()),
            Box::new(metrics.gate_relaxation.clone()),
            Box::new(metrics.gate_cameras.clone()),
        ];
        for collector in collectors {
            metrics
                .registry
                .register(collector)
                .expect("metric names are unique");
        }
        #[cfg(target_os = "linux")]
        {
            let process = prometheus::process_collector::ProcessCollector::for_self();
            metrics
                .registry
                .register(Box::new(process))
                .expect("process metrics are registered once");
        }
        metrics
    }

    /// The latency histogram of `step`.
    pub fn stage(&self, step: Step) -> &Histogram {
        &self.stage_latency[step as usize]
    }

    /// The pushed/popped counters of `queue`.
    pub fn queue(&self, queue: Queue) -> &QueueCounters {
        &self.queues[queue as usize]
    }

    /// Sets the live version of `scope`'s head.
    pub fn set_head_live_version(&self, scope: &str, version: u64) {
        self.head_live_version
            .with_label_values(&[scope])
            .set(version as i64);
    }

    /// Counts a box the second stage classified (`verdict` from [`VERDICTS`]).
    pub fn second_stage_box(&self, verdict: &str) {
        self.second_stage_boxes.with_label_values(&[verdict]).inc();
    }

    /// Counts tiles the change gate planned: `inferred` run, `reused` not.
    pub fn gate_tiles(&self, inferred: usize, reused: usize) {
        let [run, kept] = GATE_DECISIONS;
        self.gate_tiles
            .with_label_values(&[run])
            .inc_by(inferred as u64);
        self.gate_tiles
            .with_label_values(&[kept])
            .inc_by(reused as u64);
    }

    /// Counts a label request published for `strategy`.
    pub fn label_request(&self, strategy: tessera_operators::sampling::Strategy) {
        self.label_requests
            .with_label_values(&[strategy.as_str()])
            .inc();
    }

    /// Counts an acknowledged dead letter of `kind`.
    /// Counts a pause of consumption for `reason`, one of [`PAUSE_REASONS`].
    pub fn paused(&self, reason: &str) {
        self.pauses.with_label_values(&[reason]).inc();
    }

    pub fn dead_lettered(&self, kind: DeadLetterKind) {
        self.frames_dead_lettered
            .with_label_values(&[kind.as_str()])
            .inc();
    }

    /// Counts a label joined with its embedding `via` one of [`JOINED_VIA`].
    pub fn label_joined(&self, via: &str) {
        self.labels_joined.with_label_values(&[via]).inc();
    }

    /// Counts a fine-tune round ending with `outcome` (one of [`FINETUNE_OUTCOMES`]).
    pub fn finetune_run(&self, outcome: &str) {
        self.finetune_runs.with_label_values(&[outcome]).inc();
    }

    /// Counts a failed delivery (the record is sent again).
    pub fn delivery_failed(&self, cause: ErrorDomain) {
        self.delivery_failures
            .with_label_values(&[cause.as_str()])
            .inc();
    }

    /// Dead letters acknowledged since start, over every kind.
    pub fn dead_lettered_total(&self) -> u64 {
        self.frames_dead_lettered
            .collect()
            .iter()
            .flat_map(|family| family.get_metric())
            .map(|metric| metric.get_counter().get_value() as u64)
            .sum()
    }

    /// Counts a failure of a supervised stage that leads to a restart.
    pub fn actor_restarted(&self, stage: StageId, cause: ErrorDomain) {
        self.actor_restarts
            .with_label_values(&[stage.name(), cause.as_str()])
            .inc();
    }

    /// Sets the consumer lag of one partition.
    pub fn set_consumer_lag(&self, topic: &str, partition: i32, lag: i64) {
        self.consumer_lag
            .with_label_values(&[topic, &partition.to_string()])
            .set(lag);
    }

    /// Forgets a partition's lag (it was revoked: another replica reports it now).
    pub fn forget_consumer_lag(&self, topic: &str, partition: i32) {
        let _ = self
            .consumer_lag
            .remove_label_values(&[topic, &partition.to_string()]);
    }

    /// Publishes the model in use (replacing any earlier model or head).
    pub fn set_model(&self, model: &str, version: &str, head_version: &str, provider: &str) {
        self.model_info.reset();
        self.model_info
            .with_label_values(&[model, version, head_version, provider])
            .set(1);
    }

    /// The metric families, for exposition.
    pub fn gather(&self) -> Vec<prometheus::proto::MetricFamily> {
        self.registry.gather()
    }

    /// The text exposition format (`text/plain; version=0.0.4`).
    pub fn encode_text(&self) -> String {
        let mut buffer = Vec::new();
        // Encoding well-formed families into memory cannot fail.
        let _ = TextEncoder::new().encode(&self.gather(), &mut buffer);
        String::from_utf8(buffer).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_is_exposed_from_the_start() {
        let metrics = Metrics::new();
        metrics.set_consumer_lag("frames", 0, 3);
        metrics.set_model("yolox-nano", "1", "base", "cpu");
        let exposed: Vec<String> = metrics
            .gather()
            .iter()
            .map(|f| f.name().to_owned())
            .collect();
        for name in names::ALL {
            assert!(exposed.iter().any(|e| e == name), "{name} missing");
        }
        #[cfg(target_os = "linux")]
        for name in names::PROCESS {
            assert!(exposed.iter().any(|e| e == name), "{name} missing");
        }
    }

    #[test]
    fn every_dead_letter_kind_is_documented() {
        let readme = include_str!("../../../README.md");
        for kind in DeadLetterKind::ALL.map(DeadLetterKind::as_str) {
            assert!(
                readme.contains(&format!("`{kind}`")),
                "{kind} not in README"
            );
        }
    }

    #[test]
    fn names_follow_the_convention() {
        for name in names::ALL {
            assert!(name.starts_with("tessera_"), "{name}");
            let counter = name.ends_with("_total");
            let family = Metrics::new()
                .gather()
                .into_iter()
                .find(|f| f.name() == name);
            if let Some(family) = family {
                assert_eq!(
                    counter,
                    family.get_field_type() == prometheus::proto::MetricType::COUNTER,
                    "{name}: counters, and only counters, end in _total"
                );
            }
        }
    }

    #[test]
    fn labelled_series_are_created_up_front() {
        let text = Metrics::new().encode_text();
        assert!(
            text.contains(r#"tessera_publish_frames_dead_lettered_total{kind="corrupt_image"} 0"#)
        );
        assert!(text.contains(
            r#"tessera_supervisor_actor_restarts_total{actor="recognize",cause="internal"} 0"#
        ));
        assert!(
            text.contains(r#"tessera_pipeline_stage_latency_seconds_count{stage="queue_wait"} 0"#)
        );
        assert!(text.contains(r#"tessera_queue_items_pushed_total{queue="delivery"} 0"#));
    }

    #[test]
    fn model_info_is_replaced_not_accumulated() {
        let metrics = Metrics::new();
        metrics.set_model("m", "1", "base", "cpu");
        metrics.set_model("m", "1", "head-2", "cpu");
        let text = metrics.encode_text();
        assert!(!text.contains(r#"head_version="base""#));
        assert!(text.contains(r#"head_version="head-2""#));
    }
}
