//! Recordings of Kafka topics (MCAP) and what is done with them: `tessera replay record |
//! make | play | verify | info`.

pub mod recording;
