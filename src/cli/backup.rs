//! `allsource backup` (ask the server for one, or check one on disk) and
//! `allsource restore` (into a new data directory, offline).

use super::{ClientArgs, post};
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
    /// Instead, check the backup in this directory: every file is re-read
    /// against its checksum.
    #[arg(long, value_name = "DIR")]
    verify: Option<PathBuf>,
    /// Back up every tenant's tables (admin), into `_all/NAME` under the
    /// server's `--backup-dir`.
    #[arg(long, requires = "to")]
    all_tenants: bool,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, clap::Args)]
pub(crate) struct RestoreArgs {
    /// The backup directory (holding manifest.json).
    #[arg(long)]
    from: PathBuf,
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
}

pub(crate) fn run(args: &BackupArgs) -> anyhow::Result<()> {
    if let Some(dir) = &args.verify {
        let files = allsource::backup::verify(dir)?;
        println!("{}: {files} files match their checksums", dir.display());
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
    let manifest = allsource::backup::restore(&args.from, &args.data_dir)?;
    let trimmed = match args.as_of {
        Some(pin) => trim(&manifest, &args.data_dir, pin).map_err(|e| {
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
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
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
