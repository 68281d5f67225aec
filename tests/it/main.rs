//! The integration tests: one binary (links once), one module per area.
//! Every test drives the real `allsource` binary over HTTP.

mod analytics;
mod audit;
mod auth;
mod backup;
mod cli_resources;
mod compaction;
mod crash;
mod delta_interop;
mod dsl;
mod entity_streams;
mod flight;
mod flight_limits;
mod groups;
mod ingest;
mod ingest_memory;
mod limits;
mod live;
mod live_ws;
mod maintenance;
mod memory;
mod metrics;
mod pipeline_control;
mod pipeline_windows;
mod pipelines;
mod positions;
mod power_loss;
mod projections;
mod query_bounds;
mod reliability;
mod replay;
mod restart;
mod s3;
mod sql;
mod support;
mod time_travel;
