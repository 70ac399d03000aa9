//! The marketplace end to end, through the real `stubs` binary: embedded (`stubs up`) and
//! distributed (the local cluster behind nginx), in one test binary so that they link once.
//! Each module is one part of it; `support` runs the binary and the cluster.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

mod api_docs;
mod browser;
mod crossings;
mod embedded;
mod faults;
mod loadgen;
mod purchase;
mod refusals;
mod retries;
mod sessions;
mod traces;
mod web;
