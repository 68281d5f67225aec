//! The integration tests: one binary (links once), one module per area.
//! Every test drives the real `allsource` binary over HTTP.

mod analytics;
mod auth;
mod compaction;
mod crash;
mod delta_interop;
mod dsl;
mod flight;
mod flight_limits;
mod ingest;
mod limits;
mod metrics;
mod query_bounds;
mod restart;
mod s3;
mod sql;
mod support;
