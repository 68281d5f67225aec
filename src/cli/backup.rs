//! `allsource backup` (ask the server for one, or check one on disk) and
//! `allsource restore` (into a new data directory, offline).

use super::{ClientArgs, post};
use allsource::backup::Location;
use allsource::config::Config;
use allsource::ids::{TableName, TenantId};
use allsource::query::pin::Pin;
use allsource::schema;
use allsource::storage::Storage;
use datafusion::logical_expr::{col, lit};
use datafusion::scalar::ScalarValue;
use std::io::Write;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub(crate) struct BackupArgs {
    /// Take a backup with this name: the server writes it under its
    /// `--backup-dir`, in the tenant's directory, and a later backup with
    /// the same name copies only new files.
    #[arg(long, required_unless_present = "verify", conflicts_with = "verify")]
    to: Option<String>,
    /// Instead, check the backup in this directory (or at
    /// `s3://bucket/prefix`): every file is re-read against its checksum.
    #[arg(long, value_name = "DIR")]
    verify: Option<String>,
    /// Back up every tenant's tables (admin), into `_all/NAME` under the
    /// server's `--backup-dir`.
    #[arg(long, requires = "to")]
    all_tenants: bool,
    #[command(flatten)]
    s3: S3Args,
    #[command(flatten)]
    client: ClientArgs,
}

/// How to reach a backup on S3 (credentials come from the AWS_*
/// variables), as `allsource serve` reaches its own.
#[derive(Debug, clap::Args)]
pub(crate) struct S3Args {
    /// Endpoint of an S3-compatible store; AWS's own when unset.
    #[arg(long, env = "ALLSOURCE_S3_ENDPOINT")]
    s3_endpoint: Option<String>,
    /// Allow plain http:// to the S3 endpoint (local test stores).
    #[arg(long, env = "ALLSOURCE_S3_ALLOW_HTTP", default_value_t = false)]
    s3_allow_http: bool,
}

impl S3Args {
    /// The backup at `spec`: a local directory or `s3://bucket/prefix`.
    fn place(&self, spec: &str) -> anyhow::Result<Location> {
        if !spec.starts_with("s3://") {
            return Ok(Location::Dir(PathBuf::from(spec)));
        }
        let config = Config {
            s3_endpoint: self.s3_endpoint.clone(),
            s3_allow_http: self.s3_allow_http,
            ..Config::default()
        };
        let (store, prefix) = allsource::storage::s3_location(&config, spec)?;
        Ok(Location::Store {
            store,
            prefix,
            url: spec.to_string(),
        })
    }
}

/// A runtime for a command's object-store calls (the backup functions
/// wait for them on it).
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

#[derive(Debug, clap::Args)]
pub(crate) struct RestoreArgs {
    /// The backup: its directory (holding manifest.json), or
    /// `s3://bucket/prefix`.
    #[arg(long)]
    from: String,
    /// The new data directory; it must not exist or be empty. Start the
    /// server with `--data-dir` set to it.
    #[arg(long)]
    data_dir: PathBuf,
    /// Restore only what was acknowledged up to a point before the
    /// backup's own: `position:N` (the events at positions up to N) or an
    /// RFC 3339 time (the events ingested at or before it). Later events
    /// are deleted from the restored tables.
    #[arg(long, value_name = "POINT", value_parser = Pin::parse)]
    as_of: Option<Pin>,
    #[command(flatten)]
    s3: S3Args,
}

pub(crate) fn run(args: &BackupArgs) -> anyhow::Result<()> {
    if let Some(spec) = &args.verify {
        let runtime = runtime()?;
        let _in_runtime = runtime.enter();
        let place = args.s3.place(spec)?;
        let files = allsource::backup::verify(&place)?;
        println!("{place}: {files} files match their checksums");
        return Ok(());
    }
    let name = args.to.as_deref().expect("clap requires --to or --verify");
    let body = serde_json::to_vec(&serde_json::json!({
        "to": name,
        "all_tenants": args.all_tenants,
    }))?;
    let url = args.client.url("/v1/admin/backup");
    let reply: serde_json::Value = post(&args.client, &url, Some(body))?.json()?;
    writeln!(std::io::stdout(), "{reply}")?;
    Ok(())
}

pub(crate) fn restore(args: &RestoreArgs) -> anyhow::Result<()> {
    let runtime = runtime()?;
    let manifest = {
        let _in_runtime = runtime.enter();
        let place = args.s3.place(&args.from)?;
        allsource::backup::restore(&place, &args.data_dir)?
    };
    let trimmed = match args.as_of {
        Some(pin) => trim(&runtime, &manifest, &args.data_dir, pin).map_err(|e| {
            anyhow::anyhow!(
                "{e}; {} is only partly restored: delete it and restore again",
                args.data_dir.display()
            )
        })?,
        None => vec![None; manifest.tables.len()],
    };
    for (t, removed) in manifest.tables.iter().zip(trimmed) {
        let after = match removed {
            Some(Some(rows)) => format!(", {rows} later events deleted"),
            Some(None) => ", later events deleted".to_string(),
            None => String::new(),
        };
        println!(
            "{}.{}: Delta version {}, positions up to {}, {} files{after}",
            t.tenant,
            t.table,
            t.delta_version,
            t.last_position,
            t.files.len()
        );
    }
    let point = args.as_of.map_or(String::new(), |pin| match pin {
        Pin::Position(p) => format!(" as of position {p}"),
        Pin::Timestamp(t) => format!(" as of {}", micros_rfc3339(t)),
        Pin::TableVersion(v) => format!(" as of table version {v}"),
    });
    println!(
        "restored the backup of {}{point} into {}; start the server with --data-dir {}",
        manifest.created_at,
        args.data_dir.display(),
        args.data_dir.display()
    );
    Ok(())
}

/// Deletes from each restored table the events after `pin`; per table,
/// the number deleted (`None` inside when the files do not say).
fn trim(
    runtime: &tokio::runtime::Runtime,
    manifest: &allsource::backup::Manifest,
    data_dir: &std::path::Path,
    pin: Pin,
) -> anyhow::Result<Vec<Option<Option<u64>>>> {
    let config = Config {
        data_dir: data_dir.to_path_buf(),
        ..Config::default()
    };
    let storage = Storage::new(&config)?;
    // Rows without a position were stored before positions existed, so
    // before any position: a position pin keeps them.
    let later = match pin {
        Pin::Position(p) => col(schema::POSITION).gt(lit(p.min(i64::MAX as u64) as i64)),
        Pin::Timestamp(t) => col(schema::INGESTED_AT).gt(lit(ScalarValue::TimestampMicrosecond(
            Some(t),
            Some("UTC".into()),
        ))),
        Pin::TableVersion(_) => anyhow::bail!("--as-of takes a position or a time"),
    };
    runtime.block_on(async {
        let mut out = Vec::new();
        for t in &manifest.tables {
            let tenant: TenantId = t.tenant.parse()?;
            let table: TableName = t.table.parse()?;
            let deleted = storage.delete_rows(&tenant, &table, later.clone()).await?;
            out.push(Some(deleted.rows));
        }
        Ok(out)
    })
}

fn micros_rfc3339(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros).map_or(micros.to_string(), |t| {
        t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
    })
}
