//! Benchmarks of tessera. `benches/micro.rs` holds the criterion micro-benchmarks; the
//! end-to-end throughput runs against the model ceiling and the Python baseline come next
//! (see BENCHMARKS.md).
