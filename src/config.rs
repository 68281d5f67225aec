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

    /// How long files replaced by compaction or deletion are kept before
    /// vacuum deletes them: queries started before the replacement keep
    /// reading them meanwhile. Keep it above the longest query.
    #[arg(long, env = "ALLSOURCE_VACUUM_RETENTION", default_value = "1h", value_parser = humantime::parse_duration)]
    pub vacuum_retention: Duration,

    /// Default data retention: events older than this are deleted by
    /// maintenance. Unset keeps everything; a table's own setting
    /// (`POST /v1/admin/retention`) wins.
    #[arg(long, env = "ALLSOURCE_RETENTION", value_parser = humantime::parse_duration)]
    pub retention: Option<Duration>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./data"),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 7070)),
            storage_url: None,
            s3_endpoint: None,
            s3_allow_http: false,
            flush_rows: 500_000,
            flush_bytes: 128 << 20,
            flush_age: Duration::from_secs(10),
            max_buffer_bytes: 384 << 20,
            max_body_bytes: 64 << 20,
            wal_segment_bytes: 64 << 20,
            dedup_window: Duration::from_secs(3600),
            dedup_capacity: 2_000_000,
            maintenance_interval: Duration::from_secs(600),
            compaction_target_bytes: 256 << 20,
            vacuum_retention: Duration::from_secs(3600),
            retention: None,
        }
    }
}

impl Config {
    /// A configuration for tests: data in `dir`, a free port on loopback.
    pub fn for_tests(dir: &std::path::Path) -> Self {
        Config {
            data_dir: dir.to_path_buf(),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            ..Config::default()
        }
    }

    /// The directory of the write-ahead log.
    pub fn wal_dir(&self) -> PathBuf {
        self.data_dir.join("wal")
    }
}
