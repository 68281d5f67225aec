//! What `allsource import` reads: the files its arguments name (a file, a
//! directory's files, or a glob), each file's format and compression, and
//! a reader over its decompressed bytes that counts the bytes taken from
//! disk, so progress is in the units the total is.

use anyhow::{Context as _, bail};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// How a file lays out its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    /// One JSON event per line.
    Ndjson,
    /// JSON events: an array of them, or objects one after another.
    Json,
    /// A header line, then one event per line.
    Csv,
    /// Parquet: flat columns, like CSV's.
    Parquet,
}

/// How a file's bytes are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compression {
    None,
    Gzip,
    Zstd,
}

/// One input file, as found.
#[derive(Debug, Clone)]
pub(crate) struct Input {
    pub path: PathBuf,
    pub format: Format,
    pub compression: Compression,
    /// Bytes on disk.
    pub size: u64,
}

/// The files `args` name, in order, each once: a directory stands for the
/// files in it (not below it) whose names say a format; a pattern with
/// `*`, `?` or `[` for the files it matches.
pub(crate) fn inputs(args: &[String], format: Option<Format>) -> anyhow::Result<Vec<Input>> {
    let mut paths: Vec<PathBuf> = Vec::new();
    for arg in args {
        let path = Path::new(arg);
        if path.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(path)
                .with_context(|| format!("cannot list {arg}"))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && detect(p).is_ok())
                .collect();
            if found.is_empty() {
                bail!(
                    "{arg} holds no .ndjson, .jsonl, .json, .csv or .parquet files (optionally .gz or .zst)"
                );
            }
            found.sort();
            paths.extend(found);
        } else if arg.contains(['*', '?', '[']) && !path.exists() {
            let mut found = Vec::new();
            for entry in glob::glob(arg).with_context(|| format!("bad pattern {arg:?}"))? {
                let p = entry.with_context(|| format!("cannot read a match of {arg}"))?;
                if p.is_file() {
                    found.push(p);
                }
            }
            if found.is_empty() {
                bail!("no file matches {arg}");
            }
            paths.extend(found);
        } else if path.is_file() {
            paths.push(path.to_path_buf());
        } else {
            bail!("no file {arg}");
        }
    }
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for path in paths {
        let canonical = path.canonicalize().unwrap_or_else(|_| path.clone());
        if !seen.insert(canonical) {
            continue;
        }
        let (detected, compression) = match (detect(&path), format) {
            (Ok(found), _) => found,
            (Err(_), Some(f)) => (f, compression_of(&path)),
            (Err(e), None) => return Err(e),
        };
        let format = format.unwrap_or(detected);
        if format == Format::Parquet && compression != Compression::None {
            bail!(
                "{}: Parquet files compress their own pages; import the .parquet file itself",
                path.display()
            );
        }
        let size = std::fs::metadata(&path)
            .with_context(|| format!("cannot read {}", path.display()))?
            .len();
        out.push(Input {
            path,
            format,
            compression,
            size,
        });
    }
    Ok(out)
}

fn compression_of(path: &Path) -> Compression {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
    {
        Some(e) if e == "gz" || e == "gzip" => Compression::Gzip,
        Some(e) if e == "zst" || e == "zstd" => Compression::Zstd,
        _ => Compression::None,
    }
}

/// The format and compression a file's name says.
fn detect(path: &Path) -> anyhow::Result<(Format, Compression)> {
    let compression = compression_of(path);
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let inner = match compression {
        Compression::None => name.as_str(),
        _ => name.rsplit_once('.').map(|(stem, _)| stem).unwrap_or(""),
    };
    let format = match inner.rsplit_once('.').map(|(_, ext)| ext) {
        Some("ndjson" | "jsonl") => Format::Ndjson,
        Some("json") => Format::Json,
        Some("csv") => Format::Csv,
        Some("parquet") => Format::Parquet,
        _ => bail!(
            "cannot tell the format of {}: name a .ndjson, .jsonl, .json, .csv or .parquet file (optionally .gz or .zst), or pass --format",
            path.display()
        ),
    };
    Ok((format, compression))
}

/// Counts the bytes read through it into a shared counter.
#[derive(Debug)]
pub(crate) struct Counting<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// The decompressed bytes of `input`, and the counter of bytes read from
/// disk so far.
pub(crate) fn open(input: &Input) -> anyhow::Result<(Box<dyn BufRead + Send>, Arc<AtomicU64>)> {
    let file = std::fs::File::open(&input.path)
        .with_context(|| format!("cannot open {}", input.path.display()))?;
    let count = Arc::new(AtomicU64::new(0));
    let raw = BufReader::with_capacity(
        1 << 16,
        Counting {
            inner: file,
            count: count.clone(),
        },
    );
    let reader: Box<dyn BufRead + Send> = match input.compression {
        Compression::None => Box::new(raw),
        Compression::Gzip => Box::new(BufReader::with_capacity(
            1 << 16,
            flate2::bufread::MultiGzDecoder::new(raw),
        )),
        Compression::Zstd => Box::new(BufReader::with_capacity(
            1 << 16,
            zstd::Decoder::with_buffer(raw).context("cannot start zstd")?,
        )),
    };
    Ok((reader, count))
}

/// A digest of the file's bytes: the same file resumes where it stopped,
/// a changed one starts over, and generated event ids are tied to it.
pub(crate) fn fingerprint(path: &Path) -> anyhow::Result<String> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(format!("{:032x}", hasher.digest128()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_say_format_and_compression() {
        let d = |n: &str| detect(Path::new(n)).ok();
        assert_eq!(d("a.ndjson"), Some((Format::Ndjson, Compression::None)));
        assert_eq!(d("a.JSONL.gz"), Some((Format::Ndjson, Compression::Gzip)));
        assert_eq!(d("x/a.json.zst"), Some((Format::Json, Compression::Zstd)));
        assert_eq!(d("a.csv"), Some((Format::Csv, Compression::None)));
        assert_eq!(d("a.parquet"), Some((Format::Parquet, Compression::None)));
        assert_eq!(d("a.txt"), None);
        assert_eq!(d("a.gz"), None);
    }
}
