//! `allsource backup` (ask the server for one, or check one on disk) and
//! `allsource restore` (into a new data directory, offline).

use super::{ClientArgs, post};
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
}

pub(crate) fn run(args: &BackupArgs) -> anyhow::Result<()> {
    if let Some(dir) = &args.verify {
        let files = allsource::backup::verify(dir)?;
        println!("{}: {files} files match their checksums", dir.display());
        return Ok(());
    }
    let name = args.to.as_deref().expect("clap requires --to or --verify");
    let body = serde_json::to_vec(&serde_json::json!({ "to": name }))?;
    let url = args.client.url("/v1/admin/backup");
    let reply: serde_json::Value = post(&args.client, &url, Some(body))?.json()?;
    writeln!(std::io::stdout(), "{reply}")?;
    Ok(())
}

pub(crate) fn restore(args: &RestoreArgs) -> anyhow::Result<()> {
    let manifest = allsource::backup::restore(&args.from, &args.data_dir)?;
    for t in &manifest.tables {
        println!(
            "{}.{}: Delta version {}, positions up to {}, {} files",
            t.tenant,
            t.table,
            t.delta_version,
            t.last_position,
            t.files.len()
        );
    }
    println!(
        "restored the backup of {} into {}; start the server with --data-dir {}",
        manifest.created_at,
        args.data_dir.display(),
        args.data_dir.display()
    );
    Ok(())
}
