//! `allsource import`: files of events (NDJSON, JSON, CSV, Parquet; gzip
//! or zstd) into a table, over Arrow Flight.
//!
//! A reader thread turns each file into [`chunk::Chunk`]s of Arrow rows
//! (each with an `event_id`: the file's own, or one made from the file's
//! fingerprint and the row's place, so that sending a row twice stores it
//! once); the main thread uploads them in order ([`upload`]), shows
//! progress, and records after each acknowledged chunk how far each file
//! got ([`state`]), so that an interrupted import resumes where it
//! stopped. Rows the reader or the server refuses are reported with their
//! file and line, and the rest is imported.
//!
//! Exit status: 0 when every row was stored, 2 when some rows or files
//! were not (each reported; rows refused in earlier runs of a resumed
//! import count too), 1 when the import itself failed.

mod chunk;
mod json;
mod source;
mod state;
mod tabular;
mod upload;

use chunk::{Chunk, Pending, Place, Rejected, RowSink};
use source::{Format, Input};
use std::io::Write;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

#[derive(Debug, clap::Args)]
pub(crate) struct ImportArgs {
    /// Files, directories (their files) or glob patterns (quoted).
    #[arg(required = true)]
    inputs: Vec<String>,
    /// The table to import into; it is created when missing.
    #[arg(long, default_value = "events")]
    table: String,
    /// The format of every input (by default each file's name says it:
    /// .ndjson/.jsonl, .json, .csv, .parquet, optionally .gz or .zst).
    #[arg(long, value_enum)]
    format: Option<Format>,
    /// The server's Arrow Flight address.
    #[arg(
        long,
        env = "ALLSOURCE_FLIGHT_URL",
        default_value = "http://127.0.0.1:7071"
    )]
    flight_url: String,
    /// Bearer token (see `allsource token`), when the server has auth on.
    #[arg(long, env = "ALLSOURCE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Import into this tenant (admin tokens; others may name only their own).
    #[arg(long, env = "ALLSOURCE_TENANT")]
    tenant: Option<String>,
    /// The file recording how far the import got, for resuming it
    /// (default: .allsource-import-TABLE.json in the current directory).
    #[arg(long)]
    state: Option<PathBuf>,
    /// Rows per upload.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    batch_rows: u32,
    /// Also write every rejected row (file, place, reason) to this file,
    /// one JSON object per line.
    #[arg(long)]
    rejected: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

/// One input and where it resumes.
struct Planned {
    input: Input,
    key: String,
    fingerprint: String,
    skip: u64,
    complete: bool,
    /// Rows of the file refused in earlier runs.
    rejected_before: u64,
}

/// What the reader thread hands the uploader.
enum Message {
    Chunk(Chunk),
    /// The file was read to its end; `end` records in all.
    Done {
        file: usize,
        end: u64,
    },
    /// The file could not be read past some point.
    Failed {
        file: usize,
        error: String,
    },
}

/// Rejected rows shown in the summary; the rest are counted (and written
/// to `--rejected`).
const SHOWN_REJECTED: usize = 20;

pub(crate) fn run(args: &ImportArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let inputs = source::inputs(&args.inputs, args.format)?;
    let state_path = args
        .state
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!(".allsource-import-{}.json", args.table)));
    let mut tracker = state::Tracker::load(
        &state_path,
        &args.table,
        &args.flight_url,
        args.tenant.as_deref(),
    )?;
    let mut plan = Vec::with_capacity(inputs.len());
    for input in inputs {
        let key = input
            .path
            .canonicalize()
            .unwrap_or_else(|_| input.path.clone())
            .display()
            .to_string();
        let fingerprint = source::fingerprint(&input.path)?;
        let (at, changed) = tracker.start(&key, &fingerprint);
        if changed {
            eprintln!(
                "{}: changed since it was last imported; reading it again from the start (rows sent before carry the same ids, so the server skips them within its --dedup-window)",
                input.path.display()
            );
        }
        if at.complete {
            eprintln!(
                "{}: imported before (recorded in {}); skipped",
                input.path.display(),
                state_path.display()
            );
        } else if at.records > 0 {
            eprintln!(
                "{}: resuming after record {}",
                input.path.display(),
                at.records
            );
        }
        plan.push(Planned {
            input,
            key,
            fingerprint,
            skip: at.records,
            complete: at.complete,
            rejected_before: at.rejected,
        });
    }
    let plan = std::sync::Arc::new(plan);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut uploader = runtime.block_on(upload::Uploader::connect(
        &args.flight_url,
        args.token.as_deref(),
        args.tenant.as_deref(),
        &args.table,
    ))?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Message>(4);
    let reader = {
        let (plan, rows) = (plan.clone(), args.batch_rows as usize);
        std::thread::spawn(move || read_all(&plan, rows, &tx))
    };
    let bar = progress_bar(&plan, args.quiet);
    // A resumed import adds to the list the earlier runs wrote.
    let resuming = plan.iter().any(|p| p.skip > 0);
    let mut rejected_out = match &args.rejected {
        Some(p) => Some(std::io::BufWriter::new(
            std::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .append(resuming)
                .truncate(!resuming)
                .open(p)?,
        )),
        None => None,
    };
    let mut totals = Totals::default();
    let mut failures: Vec<(usize, String)> = Vec::new();
    // Bytes of the files before the one being read, and of those skipped.
    let done_before: Vec<u64> = plan
        .iter()
        .scan(0u64, |sum, p| {
            let before = *sum;
            *sum += p.input.size;
            Some(before)
        })
        .collect();
    let result = runtime.block_on(async {
        while let Some(message) = rx.recv().await {
            match message {
                Message::Chunk(chunk) => {
                    let file = chunk.file;
                    let mut refused = chunk.rejected.clone();
                    if chunk.batch.num_rows() > 0 {
                        let outcome = uploader.send(&chunk).await?;
                        totals.stored += outcome.stored;
                        totals.duplicates += outcome.duplicates;
                        refused.extend(outcome.refused.into_iter().map(|(row, reason)| Rejected {
                            file,
                            place: chunk.places[row],
                            reason,
                        }));
                    }
                    totals.rows += chunk.batch.num_rows() as u64;
                    for r in &refused {
                        totals.note(r, &plan, rejected_out.as_mut())?;
                    }
                    tracker.advance(&plan[file].key, chunk.end, refused.len() as u64, false)?;
                    bar.set_position(done_before[file] + chunk.disk_bytes);
                    let secs = started.elapsed().as_secs_f64().max(1e-3);
                    bar.set_message(format!(
                        "{} rows, {:.0} rows/s",
                        totals.rows,
                        totals.rows as f64 / secs
                    ));
                }
                Message::Done { file, end } => {
                    tracker.advance(&plan[file].key, end, 0, true)?;
                    bar.set_position(done_before[file] + plan[file].input.size);
                }
                Message::Failed { file, error } => failures.push((file, error)),
            }
        }
        anyhow::Ok(())
    });
    bar.finish_and_clear();
    // A failed upload drops the receiver, which ends the reader.
    drop(rx);
    let read = reader.join();
    result?;
    read.map_err(|_| anyhow::anyhow!("the reader thread failed"))?;
    if let Some(out) = rejected_out.as_mut() {
        out.flush()?;
    }
    let skipped = plan.iter().filter(|p| p.complete).count();
    // Rows refused in earlier runs of a resumed import.
    let earlier: u64 = plan.iter().map(|p| p.rejected_before).sum();
    print_summary(args, &plan, &totals, &failures, (skipped, earlier), started);
    if totals.rejected + earlier > 0 || !failures.is_empty() {
        std::io::stdout().flush()?;
        std::process::exit(2);
    }
    Ok(())
}

/// The import's counts.
#[derive(Debug, Default)]
struct Totals {
    /// Rows sent (stored, duplicate or refused by the server).
    rows: u64,
    stored: u64,
    duplicates: u64,
    rejected: u64,
    /// The first [`SHOWN_REJECTED`] refusals.
    shown: Vec<Rejected>,
}

impl Totals {
    fn note(
        &mut self,
        r: &Rejected,
        plan: &[Planned],
        out: Option<&mut std::io::BufWriter<std::fs::File>>,
    ) -> anyhow::Result<()> {
        self.rejected += 1;
        if self.shown.len() < SHOWN_REJECTED {
            self.shown.push(r.clone());
        }
        if let Some(out) = out {
            let (place, at) = match r.place {
                Place::Line(n) => ("line", n),
                Place::Row(n) => ("row", n),
            };
            let line = serde_json::json!({
                "file": plan[r.file].input.path.display().to_string(),
                place: at,
                "reason": r.reason,
            });
            writeln!(out, "{line}")?;
        }
        Ok(())
    }
}

fn print_summary(
    args: &ImportArgs,
    plan: &[Planned],
    totals: &Totals,
    failures: &[(usize, String)],
    (skipped, earlier): (usize, u64),
    started: Instant,
) {
    let secs = started.elapsed().as_secs_f64();
    let mut line = format!(
        "imported {} of {} files into {}: {} events stored",
        plan.len() - skipped - failures.len(),
        plan.len(),
        args.table,
        totals.stored
    );
    if totals.duplicates > 0 {
        line.push_str(&format!(", {} already there", totals.duplicates));
    }
    line.push_str(&format!(
        ", {} rows rejected, in {secs:.1} s ({:.0} rows/s)",
        totals.rejected,
        totals.rows as f64 / secs.max(1e-3)
    ));
    if earlier > 0 {
        line.push_str(&format!(" ({earlier} more in earlier runs)"));
    }
    if skipped > 0 {
        line.push_str(&format!("; {skipped} files imported before were skipped"));
    }
    println!("{line}");
    for r in &totals.shown {
        println!(
            "  rejected: {} {}: {}",
            plan[r.file].input.path.display(),
            r.place,
            r.reason
        );
    }
    if totals.rejected as usize > totals.shown.len() {
        let more = totals.rejected as usize - totals.shown.len();
        match &args.rejected {
            Some(p) => println!("  … and {more} more, all listed in {}", p.display()),
            None => println!("  … and {more} more (--rejected FILE lists them all)"),
        }
    }
    for (file, error) in failures {
        println!(
            "  failed: {}: {error}; run the import again to resume it",
            plan[*file].input.path.display()
        );
    }
}

fn progress_bar(plan: &[Planned], quiet: bool) -> indicatif::ProgressBar {
    let total: u64 = plan.iter().map(|p| p.input.size).sum();
    if quiet {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "[{elapsed_precise}] [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, ETA {eta}) {msg}",
        )
        .expect("the template is valid")
        .progress_chars("#>."),
    );
    bar.set_position(
        plan.iter()
            .filter(|p| p.complete)
            .map(|p| p.input.size)
            .sum(),
    );
    bar
}

/// Reads every planned file in turn, sending its chunks; stops when the
/// uploader is gone.
fn read_all(plan: &[Planned], rows: usize, tx: &tokio::sync::mpsc::Sender<Message>) {
    for (file, p) in plan.iter().enumerate() {
        if p.complete {
            continue;
        }
        let send = |chunk: Chunk| {
            tx.blocking_send(Message::Chunk(chunk))
                .map_err(|_| anyhow::anyhow!("the upload stopped"))
        };
        let message = match read_file(file, p, rows, send) {
            Ok(end) => Message::Done { file, end },
            Err(e) => Message::Failed {
                file,
                error: format!("{e:#}"),
            },
        };
        if tx.blocking_send(message).is_err() {
            return;
        }
    }
}

/// Reads one file into chunks; returns the number of its records.
fn read_file(
    file: usize,
    p: &Planned,
    rows: usize,
    mut send: impl FnMut(Chunk) -> anyhow::Result<()>,
) -> anyhow::Result<u64> {
    let prefix = &p.fingerprint[..24];
    let make_id = |record: u64| format!("{prefix}-{record}");
    if p.input.format == Format::Parquet {
        let mut end = p.skip;
        tabular::parquet(&p.input.path, file, p.skip, rows, make_id, |chunk| {
            end = chunk.end;
            send(chunk)
        })?;
        return Ok(end);
    }
    let (reader, disk) = source::open(&p.input)?;
    let chunk = |batch, pending_places, end, rejected| Chunk {
        file,
        batch,
        places: pending_places,
        end,
        disk_bytes: disk.load(Ordering::Relaxed),
        rejected: tabular::rejected(file, rejected),
    };
    let end = AtomicU64::new(p.skip);
    match p.input.format {
        Format::Ndjson | Format::Json => {
            let mut cut = |pending: Pending<allsource::ingest::Event>| {
                end.store(pending.end, Ordering::Relaxed);
                let batch = json::batch(pending.rows)?;
                send(chunk(batch, pending.places, pending.end, pending.rejected))
            };
            let mut sink = RowSink::new(p.skip, rows, &mut cut);
            let read = if p.input.format == Format::Ndjson {
                json::ndjson(reader, &mut sink)
            } else {
                json::json(reader, &mut sink)
            };
            // What was read before a failure is still sent.
            sink.finish()?;
            read?;
        }
        Format::Csv => {
            let columns: OnceLock<tabular::Columns> = OnceLock::new();
            let mut cut = |pending: Pending<tabular::CsvRow>| {
                end.store(pending.end, Ordering::Relaxed);
                let batch = match columns.get() {
                    Some(columns) => tabular::csv_batch(columns, &pending.rows)?,
                    None => arrow::array::RecordBatch::new_empty(std::sync::Arc::new(
                        arrow::datatypes::Schema::empty(),
                    )),
                };
                let ids = pending.rows.iter().map(|r| r.id.clone()).collect();
                let batch = tabular::with_ids(batch, ids)?;
                send(chunk(batch, pending.places, pending.end, pending.rejected))
            };
            let mut sink = RowSink::new(p.skip, rows, &mut cut);
            let read = tabular::csv(reader, &columns, &mut sink);
            sink.finish()?;
            read?;
        }
        Format::Parquet => unreachable!("read above"),
    }
    Ok(end.load(Ordering::Relaxed))
}
