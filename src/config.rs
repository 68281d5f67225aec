//! Server configuration: one struct, every field a `--flag` that can also be
//! set by an `ALLSOURCE_*` environment variable.

use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Settings of `allsource serve`.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Directory for the write-ahead log and, unless --storage-url says
    /// otherwise, the tables.
    #[arg(long, env = "ALLSOURCE_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// Address the HTTP API listens on (port 0 picks a free port).
    #[arg(long, env = "ALLSOURCE_HTTP_ADDR", default_value = "127.0.0.1:7070")]
    pub http_addr: SocketAddr,

    /// Address the Arrow Flight SQL service listens on (port 0 picks a
    /// free port).
    #[arg(long, env = "ALLSOURCE_FLIGHT_ADDR", default_value = "127.0.0.1:7071")]
    pub flight_addr: SocketAddr,

    /// Address the PostgreSQL wire protocol listens on (port 0 picks a
    /// free port; `off` serves none).
    #[arg(long, env = "ALLSOURCE_PG_ADDR", default_value = "127.0.0.1:5433")]
    pub pg_addr: Listen,

    /// Most PostgreSQL connections one tenant may hold open.
    #[arg(long, env = "ALLSOURCE_PG_MAX_CONNECTIONS", default_value_t = 32)]
    pub pg_max_connections: usize,

    /// Where the Delta tables live: a local path or file:// URL, or
    /// s3://bucket/prefix (credentials from the standard AWS_* variables).
    /// Default: <data-dir>/tables.
    #[arg(long, env = "ALLSOURCE_STORAGE_URL")]
    pub storage_url: Option<String>,

    /// Endpoint of an S3-compatible store (MinIO, Ceph, R2, ...); AWS's
    /// own when unset (AWS_ENDPOINT_URL is read too).
    #[arg(long, env = "ALLSOURCE_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,

    /// Allow plain http:// to the S3 endpoint (local test stores).
    #[arg(long, env = "ALLSOURCE_S3_ALLOW_HTTP", default_value_t = false)]
    pub s3_allow_http: bool,

    /// Makes this server one of several writers on the same
    /// --storage-url, each with its own --data-dir (and so its own WAL):
    /// a number from 1 to 32767 that no other writer of the root uses. It
    /// is part of every position this server gives out, so positions stay
    /// unique across writers; the server then refreshes its view of the
    /// other writers' commits every --refresh-interval, and runs
    /// compaction, retention and vacuum only while it holds the root's
    /// maintenance lease. Unset: this server is the root's only writer.
    #[arg(long, env = "ALLSOURCE_NODE_ID")]
    pub node_id: Option<crate::ids::NodeId>,

    /// With --node-id: how often the tables' Delta snapshots are brought
    /// up to what the other writers committed (and tables they created
    /// are found).
    #[arg(long, env = "ALLSOURCE_REFRESH_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub refresh_interval: Duration,

    /// Send queries asked to run distributed (`engine=distributed`) to this
    /// Apache DataFusion Ballista scheduler (`df://host:port`), or to a
    /// scheduler and executors started inside this server (`local`).
    #[arg(long, env = "ALLSOURCE_BALLISTA")]
    pub ballista: Option<String>,

    /// With `--ballista local`: how many executors to start.
    #[arg(long, env = "ALLSOURCE_BALLISTA_EXECUTORS", default_value_t = 1)]
    pub ballista_executors: usize,

    /// A table's buffer is flushed to Delta once it holds this many rows.
    #[arg(long, env = "ALLSOURCE_FLUSH_ROWS", default_value_t = 500_000)]
    pub flush_rows: usize,

    /// A table's buffer is flushed to Delta once it holds this many bytes
    /// of Arrow data.
    #[arg(long, env = "ALLSOURCE_FLUSH_BYTES", default_value_t = 128 << 20)]
    pub flush_bytes: usize,

    /// A table's buffer is flushed once its oldest event has waited this
    /// long.
    #[arg(long, env = "ALLSOURCE_FLUSH_AGE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub flush_age: Duration,

    /// Ingest answers 503 (Retry-After) while all buffers together hold
    /// more than this many bytes, so memory stays bounded.
    #[arg(long, env = "ALLSOURCE_MAX_BUFFER_BYTES", default_value_t = 384 << 20)]
    pub max_buffer_bytes: usize,

    /// Largest request body accepted, after decompression.
    #[arg(long, env = "ALLSOURCE_MAX_BODY_BYTES", default_value_t = 64 << 20)]
    pub max_body_bytes: usize,

    /// Memory all ingest requests in flight (HTTP bodies, Flight uploads)
    /// may take together while they are read, decompressed, parsed and
    /// built into batches. A request that does not fit in what is left is
    /// answered 503 with Retry-After.
    #[arg(long, env = "ALLSOURCE_INGEST_MEMORY_BUDGET", default_value_t = 1 << 30)]
    pub ingest_memory_budget: usize,

    /// Memory one ingest request may take (at most the budget above); a
    /// request that needs more, such as a small compressed body that
    /// expands enormously or sparse events whose keys become many
    /// columns, is answered 413.
    #[arg(long, env = "ALLSOURCE_MAX_INGEST_REQUEST_BYTES", default_value_t = 256 << 20)]
    pub max_ingest_request_bytes: usize,

    /// WAL segment size before a new segment is started.
    #[arg(long, env = "ALLSOURCE_WAL_SEGMENT_BYTES", default_value_t = 64 << 20)]
    pub wal_segment_bytes: u64,

    /// How long a stored event_id is remembered to drop client retries.
    #[arg(long, env = "ALLSOURCE_DEDUP_WINDOW", default_value = "1h", value_parser = humantime::parse_duration)]
    pub dedup_window: Duration,

    /// Most event ids remembered per table for deduplication.
    #[arg(long, env = "ALLSOURCE_DEDUP_CAPACITY", default_value_t = 2_000_000)]
    pub dedup_capacity: usize,

    /// How often table maintenance runs (compaction, checkpoint, data
    /// retention, vacuum); 0 turns the schedule off.
    #[arg(long, env = "ALLSOURCE_MAINTENANCE_INTERVAL", default_value = "10m", value_parser = humantime::parse_duration)]
    pub maintenance_interval: Duration,

    /// Size compaction aims for per file.
    #[arg(long, env = "ALLSOURCE_COMPACTION_TARGET_BYTES", default_value_t = 256 << 20)]
    pub compaction_target_bytes: u64,

    /// Memory compaction may use to sort a partition it rewrites whole;
    /// past it the sort spills to `<spill-dir>/compaction` (within
    /// --max-spill-bytes). All compactions running at once share it.
    #[arg(long, env = "ALLSOURCE_COMPACTION_MEMORY_LIMIT", default_value_t = 256 << 20)]
    pub compaction_memory_limit: usize,

    /// Keep each table's entity copy: a second copy of its stored events
    /// laid out by entity, which reads of one entity's events use.
    /// `false` saves its storage and maintenance work; reads of one entity
    /// then open every daily file that holds its events.
    #[arg(long, env = "ALLSOURCE_ENTITY_COPY", default_value_t = true, action = clap::ArgAction::Set)]
    pub entity_copy: bool,

    /// Between maintenance runs, a table's entity copy is extended on its
    /// own (no compaction) once this many of the table's files hold events
    /// it does not cover, so that a read of one entity opens few files
    /// however long the interval. 0 (the default) leaves it to the
    /// maintenance runs: the extension shares the cores with ingest.
    #[arg(long, env = "ALLSOURCE_ENTITY_COPY_FOLLOW_FILES", default_value_t = 0)]
    pub entity_copy_follow_files: usize,

    /// How long files replaced by compaction or deletion are kept before
    /// vacuum deletes them: queries started before the replacement keep
    /// reading them meanwhile. Keep it above the longest query (and at most
    /// 1000years).
    #[arg(long, env = "ALLSOURCE_VACUUM_RETENTION", default_value = "1h", value_parser = parse_retention)]
    pub vacuum_retention: Duration,

    /// Default data retention: events older than this are deleted by
    /// maintenance (at most 1000years). Unset keeps everything; a table's
    /// own setting (`PUT /v1/admin/tables/{table}/settings`) wins.
    #[arg(long, env = "ALLSOURCE_RETENTION", value_parser = parse_retention)]
    pub retention: Option<Duration>,

    /// Memory one query may use (hash tables, sorts, aggregation state)
    /// before it spills where it can or fails with "resources exhausted".
    #[arg(long, env = "ALLSOURCE_QUERY_MEMORY_LIMIT", default_value_t = 2 << 30)]
    pub query_memory_limit: usize,

    /// Memory all running queries together may use.
    #[arg(long, env = "ALLSOURCE_MEMORY_LIMIT", default_value_t = 8 << 30)]
    pub memory_limit: usize,

    /// Directory where queries spill sorts and aggregations that do not fit
    /// in memory. Default: <data-dir>/spill. Give it a disk of its own to
    /// keep spills away from the WAL entirely.
    #[arg(long, env = "ALLSOURCE_SPILL_DIR")]
    pub spill_dir: Option<PathBuf>,

    /// Where server-side backups are written (`POST /v1/admin/backup`,
    /// `allsource backup`): a local directory or `s3://bucket/prefix` (with
    /// the --s3-* settings and the AWS_* variables), one subdirectory per
    /// tenant and backup name. Default: <data-dir>/backups.
    #[arg(long, env = "ALLSOURCE_BACKUP_DIR")]
    pub backup_dir: Option<String>,

    /// Most bytes all queries together may spill to disk; a query that
    /// needs more fails with "resources exhausted" (0: no spilling).
    #[arg(long, env = "ALLSOURCE_MAX_SPILL_BYTES", default_value_t = 4 << 30)]
    pub max_spill_bytes: u64,

    /// A query still running after this long is cancelled.
    #[arg(long, env = "ALLSOURCE_QUERY_TIMEOUT", default_value = "5m", value_parser = humantime::parse_duration)]
    pub query_timeout: Duration,

    /// Queries one tenant may run at once; more get 429.
    #[arg(long, env = "ALLSOURCE_MAX_CONCURRENT_QUERIES", default_value_t = 16)]
    pub max_concurrent_queries: usize,

    /// Subscriptions (live streams of events) one tenant may have open at
    /// once; more get 429.
    #[arg(long, env = "ALLSOURCE_MAX_SUBSCRIPTIONS", default_value_t = 64)]
    pub max_subscriptions: usize,

    /// Projections (`POST /v1/projections`) one tenant may keep; more get
    /// 429.
    #[arg(long, env = "ALLSOURCE_MAX_PROJECTIONS", default_value_t = 32)]
    pub max_projections: usize,

    /// Pipelines (`POST /v1/pipelines`) one tenant may keep; more get 429.
    #[arg(long, env = "ALLSOURCE_MAX_PIPELINES", default_value_t = 32)]
    pub max_pipelines: usize,

    /// Policies one tenant may keep (`/v1/policies`, the defaults
    /// included); more get 429.
    #[arg(long, env = "ALLSOURCE_MAX_POLICIES", default_value_t = 256)]
    pub max_policies: usize,

    /// Tables one tenant may govern with schemas and rules
    /// (`/v1/schemas`); more get 429.
    #[arg(long, env = "ALLSOURCE_MAX_GOVERNED_TABLES", default_value_t = 64)]
    pub max_governed_tables: usize,

    /// Schema versions one event type of a table may have; more get 429.
    #[arg(long, env = "ALLSOURCE_MAX_SCHEMA_VERSIONS", default_value_t = 64)]
    pub max_schema_versions: usize,

    /// Validation rules one table may have over its event types' latest
    /// versions (each field check and each SQL rule counts one); more get
    /// 429.
    #[arg(long, env = "ALLSOURCE_MAX_VALIDATION_RULES", default_value_t = 256)]
    pub max_validation_rules: usize,

    /// Event types one table may have schemas for; more get 429.
    #[arg(
        long,
        env = "ALLSOURCE_MAX_GOVERNED_EVENT_TYPES",
        default_value_t = 256
    )]
    pub max_governed_event_types: usize,

    /// The most one projection's state may hold, in bytes (estimated: its
    /// keys and values). A projection that grows past it stops, with the
    /// reason in `GET /v1/projections/{name}`.
    #[arg(long, env = "ALLSOURCE_MAX_PROJECTION_STATE_BYTES", default_value_t = 256 << 20)]
    pub max_projection_state_bytes: usize,

    /// The most a tenant's projections may hold together (serving and next
    /// versions), in bytes, estimated as for one. The projection whose fold
    /// takes the total past it stops, with the reason; while the total is
    /// over it, new projections are refused with 429.
    #[arg(long, env = "ALLSOURCE_MAX_TENANT_PROJECTION_STATE_BYTES", default_value_t = 1 << 30)]
    pub max_tenant_projection_state_bytes: usize,

    /// How often each projection's state is written to its snapshot (a
    /// Delta table under `<storage>/<tenant>/_snapshots/`) when it has
    /// moved on. A restart loads the snapshot and folds only the events
    /// after it, so this bounds the catch-up; 0 turns snapshots off.
    #[arg(long, env = "ALLSOURCE_PROJECTION_SNAPSHOT_INTERVAL", default_value = "60s", value_parser = humantime::parse_duration)]
    pub projection_snapshot_interval: Duration,

    /// Durable subscriptions (consumer groups, `POST /v1/subscriptions`)
    /// one tenant may keep; more get 429.
    #[arg(long, env = "ALLSOURCE_MAX_CONSUMER_GROUPS", default_value_t = 100)]
    pub max_consumer_groups: usize,

    /// Largest query: SQL text (over HTTP, Flight SQL, and inside a table
    /// function), DSL document, or set of parameters bound to a Flight SQL
    /// prepared statement. Larger ones get 400 (InvalidArgument).
    #[arg(long, env = "ALLSOURCE_MAX_QUERY_BYTES", default_value_t = DEFAULT_MAX_QUERY_BYTES)]
    pub max_query_bytes: usize,

    /// Memory one tenant's open prepared statements may hold together
    /// (their SQL text and bound parameters), on Flight SQL and, apart, on
    /// the PostgreSQL port.
    #[arg(long, env = "ALLSOURCE_MAX_PREPARED_BYTES", default_value_t = 64 << 20)]
    pub max_prepared_bytes: usize,

    /// Largest result in the JSON formats (json, ndjson), which are
    /// gathered before they are sent so that an overflow is a clean 4xx.
    /// Arrow, CSV and Parquet results stream without a limit.
    #[arg(long, env = "ALLSOURCE_MAX_RESULT_BYTES", default_value_t = 256 << 20)]
    pub max_result_bytes: usize,

    /// A client must send its request headers within this time.
    #[arg(long, env = "ALLSOURCE_HEADER_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub header_timeout: Duration,

    /// A client that sends nothing of its request body for this long is
    /// cut off.
    #[arg(long, env = "ALLSOURCE_BODY_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub body_timeout: Duration,

    /// Events per second each tenant may ingest (0: no limit). Over it,
    /// ingest answers 429 with Retry-After.
    #[arg(long, env = "ALLSOURCE_RATE_LIMIT_EVENTS", default_value_t = 0)]
    pub rate_limit_events: u32,

    /// Queries per second each tenant may start (0: no limit).
    #[arg(long, env = "ALLSOURCE_RATE_LIMIT_QUERIES", default_value_t = 0)]
    pub rate_limit_queries: u32,

    /// JSON file of per-tenant rates overriding the two above:
    /// `{"acme": {"events_per_second": 50000, "queries_per_second": 20}}`.
    #[arg(long, env = "ALLSOURCE_TENANT_LIMITS")]
    pub tenant_limits: Option<PathBuf>,

    /// Export tracing spans (one per request, with its id) over OTLP/HTTP
    /// protobuf to this collector, e.g. `http://127.0.0.1:4318`.
    #[arg(long, env = "ALLSOURCE_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,

    #[command(flatten)]
    pub auth: crate::auth::AuthConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./data"),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 7070)),
            flight_addr: SocketAddr::from(([127, 0, 0, 1], 7071)),
            pg_addr: Listen::At(SocketAddr::from(([127, 0, 0, 1], 5433))),
            pg_max_connections: 32,
            storage_url: None,
            s3_endpoint: None,
            s3_allow_http: false,
            node_id: None,
            refresh_interval: Duration::from_secs(1),
            ballista: None,
            ballista_executors: 1,
            flush_rows: 500_000,
            flush_bytes: 128 << 20,
            flush_age: Duration::from_secs(10),
            max_buffer_bytes: 384 << 20,
            max_body_bytes: 64 << 20,
            ingest_memory_budget: 1 << 30,
            max_ingest_request_bytes: 256 << 20,
            wal_segment_bytes: 64 << 20,
            dedup_window: Duration::from_secs(3600),
            dedup_capacity: 2_000_000,
            maintenance_interval: Duration::from_secs(600),
            compaction_target_bytes: 256 << 20,
            compaction_memory_limit: 256 << 20,
            entity_copy: true,
            entity_copy_follow_files: 0,
            vacuum_retention: Duration::from_secs(3600),
            retention: None,
            query_memory_limit: 2 << 30,
            memory_limit: 8 << 30,
            spill_dir: None,
            backup_dir: None,
            max_spill_bytes: 4 << 30,
            query_timeout: Duration::from_secs(300),
            max_concurrent_queries: 16,
            max_subscriptions: 64,
            max_consumer_groups: 100,
            max_projections: 32,
            max_pipelines: 32,
            max_policies: 256,
            max_governed_tables: 64,
            max_schema_versions: 64,
            max_validation_rules: 256,
            max_governed_event_types: 256,
            max_projection_state_bytes: 256 << 20,
            max_tenant_projection_state_bytes: 1 << 30,
            projection_snapshot_interval: Duration::from_secs(60),
            max_query_bytes: DEFAULT_MAX_QUERY_BYTES,
            max_prepared_bytes: 64 << 20,
            max_result_bytes: 256 << 20,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(60),
            rate_limit_events: 0,
            rate_limit_queries: 0,
            tenant_limits: None,
            otlp_endpoint: None,
            auth: crate::auth::AuthConfig::default(),
        }
    }
}

impl Config {
    /// A configuration for tests: data in `dir`, a free port on loopback.
    pub fn for_tests(dir: &std::path::Path) -> Self {
        Config {
            data_dir: dir.to_path_buf(),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            flight_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            pg_addr: Listen::At(SocketAddr::from(([127, 0, 0, 1], 0))),
            ..Config::default()
        }
    }

    /// How long replaced files are kept: the configured retention, but
    /// never less than the query timeout, so no running query loses a file.
    pub fn effective_vacuum_retention(&self) -> Duration {
        self.vacuum_retention.max(self.query_timeout)
    }

    /// Where backups are written: a local directory or an `s3://` URL.
    pub fn backup_root(&self) -> String {
        self.backup_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("backups").display().to_string())
    }

    /// The directory queries spill to.
    pub fn spill_dir(&self) -> PathBuf {
        self.spill_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("spill"))
    }

    /// The directory of the write-ahead log.
    pub fn wal_dir(&self) -> PathBuf {
        self.data_dir.join("wal")
    }
}

/// The default of `--max-query-bytes`: the largest statement text (or
/// DSL document, or parameter upload) a query may send.
pub const DEFAULT_MAX_QUERY_BYTES: usize = 1 << 20;

/// The longest retention accepted (1000 years): events are dated 1900 to
/// 2200, so anything longer keeps everything anyway, and "now minus" a
/// much longer span is outside the calendar the cutoff is computed in.
pub const MAX_RETENTION: Duration = Duration::from_secs(1000 * 31_557_600);

/// A retention (or other data-age duration) as humantime text, at most
/// [`MAX_RETENTION`]. The error reads after "is": `not a duration …`,
/// `longer than …`.
pub fn parse_retention(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text)
        .map_err(|e| format!("not a duration like \"30days\" or \"1h\" ({e})"))?;
    if d > MAX_RETENTION {
        return Err(format!(
            "longer than the maximum, {}",
            humantime::format_duration(MAX_RETENTION)
        ));
    }
    Ok(d)
}

/// Where a protocol listens: an address, or nowhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listen {
    Off,
    At(SocketAddr),
}

impl Listen {
    /// The address, unless the protocol is off.
    pub fn addr(self) -> Option<SocketAddr> {
        match self {
            Listen::Off => None,
            Listen::At(addr) => Some(addr),
        }
    }
}

impl std::str::FromStr for Listen {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "off" => Ok(Listen::Off),
            other => other
                .parse()
                .map(Listen::At)
                .map_err(|e| format!("{other:?} is neither an address (host:port) nor `off`: {e}")),
        }
    }
}
