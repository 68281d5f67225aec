//! Prometheus metrics, served at `GET /metrics` in the text format.
//!
//! One process-wide registry. Counters and histograms are updated where
//! the work happens (HTTP handlers, the WAL writer, flushes, maintenance);
//! buffer gauges are read from the database when scraped.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use std::sync::OnceLock;

/// Every metric the server exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Events accepted, by tenant.
    pub ingest_events: IntCounterVec,
    /// Ingest requests, by tenant and outcome (ok, rejected, error).
    pub ingest_requests: IntCounterVec,
    /// Bytes of ingest request bodies, by tenant.
    pub ingest_bytes: IntCounterVec,
    /// Validation rules broken, by tenant, table, rule and mode (bounded
    /// by the rules a table may have).
    pub validation_violations: IntCounterVec,
    /// Events refused for breaking a rule, by tenant and table.
    pub validation_rejected: IntCounterVec,
    /// Requests a policy refused, by tenant and action.
    pub policy_denials: IntCounterVec,
    /// Per stored event, its ingest time minus its event time (0 for an
    /// event time in the future), by tenant and table: timeliness.
    pub ingest_event_lag: HistogramVec,
    /// Events a request repeated (their `event_id` was already stored),
    /// by tenant and table: answered, not stored again.
    pub ingest_duplicates: IntCounterVec,
    /// Ingest latency, request to acknowledgement.
    pub ingest_seconds: HistogramVec,
    /// HTTP requests by route (its template, so the labels are bounded)
    /// and outcome, from the request's arrival until its response starts:
    /// for a JSON result, which is gathered before it is sent, the whole
    /// of the server's work.
    pub http_seconds: HistogramVec,
    /// WAL fdatasync latency.
    pub wal_fsync_seconds: HistogramVec,
    /// WAL writes that failed and were rolled back (a full disk): their
    /// requests were refused, nothing was lost.
    pub wal_write_failures: prometheus::IntCounter,
    /// Queries, by interface (sql, dsl, flight) and outcome.
    pub queries: IntCounterVec,
    /// Query latency to the first result batch, by interface.
    pub query_seconds: HistogramVec,
    /// Flushes, by outcome.
    pub flushes: IntCounterVec,
    /// Flush duration.
    pub flush_seconds: HistogramVec,
    /// Maintenance runs, by outcome (done, nothing, gave_way, failed).
    pub compactions: IntCounterVec,
    /// Files read and written by compaction.
    pub compaction_files: IntCounterVec,
    /// Rows and bytes held by the buffers (set when scraped).
    pub buffer_rows: IntGauge,
    pub buffer_bytes: IntGauge,
    pub entity_index_bytes: IntGauge,
    /// Requests refused by authentication, by outcome (401s and 403s
    /// are both `rejected`; the status is in the label `status`).
    pub auth_failures: IntCounterVec,
    /// Audit records not written, by reason: `rate` (failures came too
    /// fast), `buffer_full` (the ingest buffers were over
    /// `--max-buffer-bytes`), `error` (the write failed).
    pub audit_dropped: IntCounterVec,
    /// Background runs (flusher, maintenance) that panicked and were
    /// recovered from, by task.
    pub background_panics: IntCounterVec,
    /// Requests refused by a tenant's rate limit, by tenant and kind
    /// (events, queries).
    pub rate_limited: IntCounterVec,
    /// Bytes reserved by running queries (set when scraped).
    pub query_memory_bytes: IntGauge,
    pub compaction_memory_bytes: IntGauge,
    /// Each durable subscription's lag: positions of its table past its
    /// committed position (set when scraped).
    pub subscription_lag_positions: IntGaugeVec,
    /// Each durable subscription's connected consumers (set when scraped).
    pub subscription_consumers: IntGaugeVec,
    /// Each projection's lag: positions of its table past its position
    /// (set when scraped).
    pub projection_lag_positions: IntGaugeVec,
    /// Each projection's rows (groups) and estimated state bytes.
    pub projection_rows: IntGaugeVec,
    pub projection_state_bytes: IntGaugeVec,
    /// 1 for a projection stopped by an error, else 0.
    pub projection_failed: IntGaugeVec,
    /// Errors met keeping a projection since the server started (set when
    /// scraped).
    pub projection_errors: IntGaugeVec,
    /// Each pipeline's lag: positions of its source past its position.
    pub pipeline_lag_positions: IntGaugeVec,
    /// Each pipeline's events by `kind`: `read`, `written`, `duplicate`,
    /// `invalid` (totals over its life, set when scraped).
    pub pipeline_events: IntGaugeVec,
    /// Each operator's events `in` and `out` (`direction`), and the
    /// microseconds it has run, by `operator` (`<index>:<op>`).
    pub pipeline_operator_events: IntGaugeVec,
    pub pipeline_operator_micros: IntGaugeVec,
    /// 0 running, 1 paused, 2 failed.
    pub pipeline_status: IntGaugeVec,
}

fn gauges(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(g.clone()))
        .expect("unique metric");
    g
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric");
    c
}

fn histogram(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let buckets = vec![
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ];
    let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
        .expect("valid metric");
    registry
        .register(Box::new(h.clone()))
        .expect("unique metric");
    h
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric");
    registry
        .register(Box::new(g.clone()))
        .expect("unique metric");
    g
}

/// The process's metrics.
pub fn get() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let r = Registry::new();
        Metrics {
            subscription_lag_positions: gauges(
                &r,
                "allsource_subscription_lag_positions",
                "Positions of a durable subscription's table past its committed position",
                &["tenant", "subscription"],
            ),
            subscription_consumers: gauges(
                &r,
                "allsource_subscription_consumers",
                "Consumers connected to a durable subscription",
                &["tenant", "subscription"],
            ),
            projection_lag_positions: gauges(
                &r,
                "allsource_projection_lag_positions",
                "Positions of a projection's table past the last one it folded",
                &["tenant", "projection"],
            ),
            projection_rows: gauges(
                &r,
                "allsource_projection_rows",
                "Rows (groups) a projection's state holds",
                &["tenant", "projection"],
            ),
            projection_state_bytes: gauges(
                &r,
                "allsource_projection_state_bytes",
                "Estimated bytes a projection's state holds",
                &["tenant", "projection"],
            ),
            projection_failed: gauges(
                &r,
                "allsource_projection_failed",
                "1 for a projection stopped by an error",
                &["tenant", "projection"],
            ),
            projection_errors: gauges(
                &r,
                "allsource_projection_errors",
                "Errors met keeping a projection since the server started: failed reads, retried, and the error that stopped it",
                &["tenant", "projection"],
            ),
            pipeline_lag_positions: gauges(
                &r,
                "allsource_pipeline_lag_positions",
                "Positions of a pipeline's source past the last one it ran",
                &["tenant", "pipeline"],
            ),
            pipeline_events: gauges(
                &r,
                "allsource_pipeline_events",
                "A pipeline's events read, written, met as duplicates and invalid, and skipped by drop backpressure, over its life; and held in its read-ahead buffer now",
                &["tenant", "pipeline", "kind"],
            ),
            pipeline_operator_events: gauges(
                &r,
                "allsource_pipeline_operator_events",
                "Events into and out of a pipeline's operator, over its life",
                &["tenant", "pipeline", "operator", "direction"],
            ),
            pipeline_operator_micros: gauges(
                &r,
                "allsource_pipeline_operator_micros",
                "Microseconds a pipeline's operator has run, over its life",
                &["tenant", "pipeline", "operator"],
            ),
            pipeline_status: gauges(
                &r,
                "allsource_pipeline_status",
                "A pipeline's status: 0 running, 1 paused, 2 failed",
                &["tenant", "pipeline"],
            ),
            ingest_events: counter(
                &r,
                "allsource_ingest_events_total",
                "Events accepted",
                &["tenant"],
            ),
            ingest_requests: counter(
                &r,
                "allsource_ingest_requests_total",
                "Ingest requests by outcome",
                &["tenant", "outcome"],
            ),
            ingest_bytes: counter(
                &r,
                "allsource_ingest_bytes_total",
                "Ingest body bytes",
                &["tenant"],
            ),
            validation_violations: counter(
                &r,
                "allsource_validation_violations_total",
                "Validation rules broken by ingested events",
                &["tenant", "table", "rule", "mode"],
            ),
            validation_rejected: counter(
                &r,
                "allsource_validation_rejected_total",
                "Events refused for breaking a validation rule",
                &["tenant", "table"],
            ),
            policy_denials: counter(
                &r,
                "allsource_policy_denials_total",
                "Requests refused by a policy",
                &["tenant", "action"],
            ),
            ingest_event_lag: {
                let h = HistogramVec::new(
                    HistogramOpts::new(
                        "allsource_ingest_event_lag_seconds",
                        "Ingest time minus event time of stored events",
                    )
                    .buckets(vec![
                        0.01, 0.1, 1.0, 10.0, 60.0, 300.0, 900.0, 3600.0, 21600.0, 86400.0, 604800.0,
                    ]),
                    &["tenant", "table"],
                )
                .expect("valid metric");
                r.register(Box::new(h.clone())).expect("unique metric");
                h
            },
            ingest_duplicates: counter(
                &r,
                "allsource_ingest_duplicate_events_total",
                "Events whose event_id was already stored: answered, not stored again",
                &["tenant", "table"],
            ),
            ingest_seconds: histogram(
                &r,
                "allsource_ingest_seconds",
                "Ingest latency to acknowledgement",
                &["tenant"],
            ),
            wal_fsync_seconds: histogram(
                &r,
                "allsource_wal_fsync_seconds",
                "WAL fdatasync latency",
                &[],
            ),
            wal_write_failures: {
                let c = prometheus::IntCounter::new(
                    "allsource_wal_write_failures_total",
                    "WAL writes that failed and were rolled back (requests refused, nothing lost)",
                )
                .expect("valid metric");
                r.register(Box::new(c.clone())).expect("unique metric");
                c
            },
            queries: counter(
                &r,
                "allsource_queries_total",
                "Queries by interface and outcome",
                &["interface", "outcome"],
            ),
            http_seconds: histogram(
                &r,
                "allsource_http_request_seconds",
                "HTTP request latency until the response starts, by route and outcome",
                &["route", "outcome"],
            ),
            query_seconds: histogram(
                &r,
                "allsource_query_seconds",
                "Query latency to the first batch",
                &["interface"],
            ),
            flushes: counter(
                &r,
                "allsource_flushes_total",
                "Buffer flushes to Delta",
                &["outcome"],
            ),
            flush_seconds: histogram(&r, "allsource_flush_seconds", "Flush duration", &[]),
            compactions: counter(
                &r,
                "allsource_compactions_total",
                "Maintenance runs by outcome",
                &["outcome"],
            ),
            compaction_files: counter(
                &r,
                "allsource_compaction_files_total",
                "Files read (in) and written (out) by compaction",
                &["direction"],
            ),
            buffer_rows: gauge(&r, "allsource_buffer_rows", "Rows in the in-memory buffers"),
            buffer_bytes: gauge(
                &r,
                "allsource_buffer_bytes",
                "Bytes in the in-memory buffers",
            ),
            entity_index_bytes: gauge(
                &r,
                "allsource_entity_index_bytes",
                "About how many bytes the per-entity version indexes take",
            ),
            auth_failures: counter(
                &r,
                "allsource_auth_failures_total",
                "Requests refused by authentication or authorization",
                &["status"],
            ),
            audit_dropped: counter(
                &r,
                "allsource_audit_dropped_total",
                "Audit records not written, by reason (rate, buffer_full, error)",
                &["reason"],
            ),
            background_panics: counter(
                &r,
                "allsource_background_panics_total",
                "Background runs that panicked and were recovered from, by task",
                &["task"],
            ),
            rate_limited: counter(
                &r,
                "allsource_rate_limited_total",
                "Requests refused by a tenant's rate limit",
                &["tenant", "kind"],
            ),
            query_memory_bytes: gauge(
                &r,
                "allsource_query_memory_bytes",
                "Memory reserved by running queries",
            ),
            compaction_memory_bytes: gauge(
                &r,
                "allsource_compaction_memory_bytes",
                "Memory reserved by running compactions' sorts",
            ),
            registry: r,
        }
    })
}

/// The outcome label of an HTTP status.
pub fn outcome(status: u16) -> &'static str {
    match status {
        200..=299 => "ok",
        400..=499 => "rejected",
        _ => "error",
    }
}

impl Metrics {
    /// Everything in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}
