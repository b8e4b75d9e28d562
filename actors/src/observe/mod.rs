//! What operators see: Prometheus metrics, the monitor behind health, readiness, status and
//! the operator pause, and rate-limited log lines. Label values come from protocol's enums,
//! never from stage modules.

pub mod metrics;
pub mod monitor;
pub mod throttle;

pub use metrics::{Metrics, Queue, Step};
pub use monitor::{ModelStatus, Monitor, NotReady, Phase, StatusReport};
pub use throttle::{LOG_INTERVAL, Throttle};
