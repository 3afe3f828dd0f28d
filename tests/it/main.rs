//! Integration tests: one binary, from in-process dataflow runs to whole-cluster runs of
//! the real executable.

mod cluster;
mod common;
mod oracle;
mod real_data;
