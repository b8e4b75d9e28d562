//! Learning on the job, the state the stages share: the heads of the backbone and which one
//! is live. No ractor and no rdkafka here; the stages that feed it (heads, labels, fine-tune)
//! and read it (ingest pins the live head on each frame, recognize and merge apply it) are in
//! `stages`.

pub mod registry;

pub use registry::{Applied, HeadListing, HeadRegistry};
