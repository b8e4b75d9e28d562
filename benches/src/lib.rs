//! Benchmarks of tessera. `benches/micro.rs` holds the criterion micro-benchmarks;
//! `tessera-bench` (src/bin) runs the end-to-end workloads against the ONNX Runtime ceiling
//! and the Python baseline (figures and commands in BENCHMARKS.md).

pub mod baseline;
pub mod ceiling;
pub mod frames;
pub mod publish;
pub mod stats;
pub mod tessera_run;
