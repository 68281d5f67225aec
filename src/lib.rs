//! AllSource: a SQL-first analytical event database.
//!
//! # Layout
//!
//! - [`server`]: HTTP routes ([`server::http`]) and the process lifecycle.
//! - [`ingest`]: request bodies → validated events → one Arrow batch.
//! - [`wal`]: the write-ahead log; a batch is acknowledged once it is
//!   fsynced there (group commit).
//! - [`db`]: tables, their in-memory buffers and the flusher that moves
//!   buffered batches into Delta Lake; WAL replay at start-up; the
//!   background work (flusher, maintenance schedule) it owns.
//! - [`storage`]: Delta Lake tables on object storage (local or S3).
//! - [`query`]: DataFusion sessions scoped to a tenant, the table provider
//!   that unions the buffer with the Delta snapshot, result formats.
//! - [`dsl`]: the JSON query DSL, compiled to DataFusion logical plans.
//! - [`schema`]: fixed columns and how payload fields become columns.
//! - [`auth`]: JWT bearer tokens, roles and the principal of a request.
//! - [`dedup`], [`ids`], [`config`]: event-id dedup, validated names,
//!   settings.
//! - `fault`: named fault-injection points the test build can trigger.
//! - [`background`]: background loops ([`background::Worker`]) that own
//!   their threads, read the time through an injected clock and survive a
//!   panicking run.
//!
//! ARCHITECTURE.md at the repository root walks through the write and read
//! paths.

pub mod audit;
pub mod auth;
pub mod background;
pub mod backup;
pub mod config;
pub mod db;
pub mod dedup;
pub mod dsl;
mod fault;
#[cfg(test)]
mod fuzz_tests;
pub mod governance;
pub mod ids;
pub mod ingest;
#[cfg(test)]
mod layering;
pub mod metrics;
pub mod pipeline;
pub mod policy;
pub mod projection;
pub mod query;
pub mod ratelimit;
pub mod schema;
pub mod server;
pub mod service;
pub mod storage;
pub mod wal;
