//! The stages: those of the frame path (ingest, prepare, recognize, merge, the optional second
//! stage and label requests, sequencer, publish), and those of learning on the job (heads,
//! labels, finetune). A stage never imports another stage's
//! module: it knows its input and output message types (protocol) and the edge to its
//! successor (handed to it by the wiring).

pub mod finetune;
pub mod heads;
pub mod ingest;
pub mod label_requests;
pub mod labels;
pub mod merge;
pub mod prepare;
pub mod publish;
pub mod recognize;
pub mod second_stage;
pub mod sequencer;
