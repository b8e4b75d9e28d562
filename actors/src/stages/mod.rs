//! The stages of the frame path, in the order a frame passes them. A stage never imports
//! another stage's module: it knows its input and output message types (protocol) and the
//! edge to its successor (handed to it by the wiring).

pub mod ingest;
pub mod merge;
pub mod prepare;
pub mod publish;
pub mod recognize;
pub mod sequencer;
