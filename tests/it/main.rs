//! Integration tests: one binary, from in-process dataflow runs to whole-cluster runs of
//! the real executable, and the pipeline against a real Kafka-protocol broker.

mod api;
mod bench;
mod broker;
mod cluster;
mod collision;
mod common;
mod deploy;
mod fuzz;
mod http;
mod kafka;
mod ml;
mod open_meteo;
mod oracle;
mod real_data;
mod reliability;
mod state;
