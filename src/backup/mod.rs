//! Backups on disk: the manifest, copying files into a backup (skipping
//! those an earlier backup in the same directory already holds), checking
//! a backup against its checksums, and restoring it into a new data
//! directory.
//!
//! Layout of a backup directory:
//!
//! ```text
//! DIR/manifest.json              the latest backup (written last, atomically)
//! DIR/manifests/<time>.json      every backup taken into DIR
//! DIR/tables/<tenant>/<table>/…  the Delta tables' files, as in the data dir
//! ```
//!
//! Delta files never change once written (data files have unique names;
//! log entries are immutable), so a file an earlier manifest lists with
//! the same size and checksum is not copied again: backups into the same
//! directory are incremental.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// The manifest's format version.
pub const FORMAT: u32 = 1;

/// Errors of reading or writing a backup.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One backed-up file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Relative to the backup's `tables/` directory.
    pub path: String,
    pub bytes: u64,
    /// BLAKE3 of the contents, hex.
    pub blake3: String,
}

/// One table in a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableEntry {
    pub tenant: String,
    pub table: String,
    pub delta_version: u64,
    /// The highest event position the backup holds (0: none).
    pub last_position: u64,
    pub files: Vec<FileEntry>,
}

/// What a backup holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    /// RFC 3339.
    pub created_at: String,
    pub tables: Vec<TableEntry>,
}

impl Manifest {
    /// The manifest of the latest backup in `dir`, if there is one.
    pub fn read(dir: &Path) -> Result<Option<Manifest>, Error> {
        let path = dir.join("manifest.json");
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&path)(e)),
        };
        let manifest: Manifest = serde_json::from_str(&text).map_err(|e| {
            Error::Invalid(format!("{}: not a backup manifest: {e}", path.display()))
        })?;
        if manifest.format != FORMAT {
            return Err(Error::Invalid(format!(
                "{}: manifest format {} is not supported (this build reads {FORMAT})",
                path.display(),
                manifest.format
            )));
        }
        Ok(Some(manifest))
    }

    /// Writes the manifest as `dir`'s latest, and into its history.
    pub fn write(&self, dir: &Path) -> Result<(), Error> {
        let text = serde_json::to_vec_pretty(self).map_err(|e| Error::Invalid(e.to_string()))?;
        let history = dir.join("manifests");
        fs::create_dir_all(&history).map_err(io(&history))?;
        let stamp = self.created_at.replace(':', "-");
        write_atomically(&history.join(format!("{stamp}.json")), &text)?;
        write_atomically(&dir.join("manifest.json"), &text)
    }

    /// Every file of every table, by path.
    fn files(&self) -> HashMap<&str, &FileEntry> {
        self.tables
            .iter()
            .flat_map(|t| t.files.iter())
            .map(|f| (f.path.as_str(), f))
            .collect()
    }
}

/// Writes `bytes` to `path` through a temporary file, fsynced, then
/// renamed into place.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    fs::rename(&tmp, path).map_err(io(path))?;
    if let Some(parent) = path.parent() {
        File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(io(parent))?;
    }
    Ok(())
}

/// BLAKE3 and size of a file.
fn checksum(path: &Path) -> Result<(String, u64), Error> {
    let mut f = File::open(path).map_err(io(path))?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut bytes = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(io(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        bytes += n as u64;
    }
    Ok((hasher.finalize().to_hex().to_string(), bytes))
}

/// Copies `src` to `dst` (through a temporary name, fsynced).
fn copy_synced(src: &Path, dst: &Path) -> Result<(), Error> {
    if let Some(parent) = dst.parent() {
        fs::create_dir_all(parent).map_err(io(parent))?;
    }
    let tmp = dst.with_extension("partial");
    fs::copy(src, &tmp).map_err(io(src))?;
    File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(io(&tmp))?;
    fs::rename(&tmp, dst).map_err(io(dst))
}

/// Copies files into a backup directory, reusing what its latest backup
/// already holds.
#[derive(Debug)]
pub struct Writer {
    dir: PathBuf,
    previous: HashMap<String, FileEntry>,
    pub copied: u64,
    pub reused: u64,
    pub bytes_copied: u64,
}

impl Writer {
    pub fn new(dir: &Path) -> Result<Writer, Error> {
        fs::create_dir_all(dir).map_err(io(dir))?;
        let previous = Manifest::read(dir)?
            .map(|m| {
                m.files()
                    .into_iter()
                    .map(|(p, f)| (p.to_string(), f.clone()))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Writer {
            dir: dir.to_path_buf(),
            previous,
            copied: 0,
            reused: 0,
            bytes_copied: 0,
        })
    }

    /// Backs up the file at `src` as `rel` (relative to `tables/`).
    pub fn add(&mut self, src: &Path, rel: &str) -> Result<FileEntry, Error> {
        let dst = self.dir.join("tables").join(rel);
        let size = fs::metadata(src).map_err(io(src))?.len();
        if let Some(prev) = self.previous.get(rel)
            && prev.bytes == size
            && fs::metadata(&dst).is_ok_and(|m| m.len() == size)
        {
            self.reused += 1;
            return Ok(prev.clone());
        }
        copy_synced(src, &dst)?;
        let (blake3, bytes) = checksum(&dst)?;
        self.copied += 1;
        self.bytes_copied += bytes;
        Ok(FileEntry {
            path: rel.to_string(),
            bytes,
            blake3,
        })
    }
}

/// Checks every file of the backup in `dir` against its manifest. Returns
/// the number of files checked, or what is wrong.
pub fn verify(dir: &Path) -> Result<usize, Error> {
    let manifest = Manifest::read(dir)?.ok_or_else(|| {
        Error::Invalid(format!("{}: no manifest.json: not a backup", dir.display()))
    })?;
    let files = manifest.files();
    for entry in files.values() {
        let path = dir.join("tables").join(&entry.path);
        let (sum, bytes) = checksum(&path)?;
        if bytes != entry.bytes || sum != entry.blake3 {
            return Err(Error::Invalid(format!(
                "{} is damaged: {bytes} bytes with checksum {sum}, the manifest says {} bytes with {}",
                path.display(),
                entry.bytes,
                entry.blake3
            )));
        }
    }
    Ok(files.len())
}

/// Restores the backup in `from` into the new data directory `data_dir`:
/// checks it whole first, refuses a directory that is not empty, and
/// writes nothing unless every file checks out. Returns the manifest.
pub fn restore(from: &Path, data_dir: &Path) -> Result<Manifest, Error> {
    if fs::read_dir(data_dir).is_ok_and(|mut d| d.next().is_some()) {
        return Err(Error::Invalid(format!(
            "{} is not empty: restore only into a new data directory",
            data_dir.display()
        )));
    }
    verify(from)?;
    let manifest = Manifest::read(from)?.expect("verified above");
    for entry in manifest.files().values() {
        copy_synced(
            &from.join("tables").join(&entry.path),
            &data_dir.join("tables").join(&entry.path),
        )?;
    }
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_backup_reuses_files_and_damage_is_found() {
        let src = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        fs::write(src.path().join("a"), b"first").unwrap();
        fs::write(src.path().join("b"), b"second").unwrap();
        let mut w = Writer::new(dir.path()).unwrap();
        let files = vec![
            w.add(&src.path().join("a"), "t/x/a").unwrap(),
            w.add(&src.path().join("b"), "t/x/b").unwrap(),
        ];
        assert_eq!((w.copied, w.reused), (2, 0));
        let manifest = Manifest {
            format: FORMAT,
            created_at: "2026-11-28T00:00:00Z".into(),
            tables: vec![TableEntry {
                tenant: "t".into(),
                table: "x".into(),
                delta_version: 1,
                last_position: 2,
                files,
            }],
        };
        manifest.write(dir.path()).unwrap();
        assert_eq!(verify(dir.path()).unwrap(), 2);
        let mut again = Writer::new(dir.path()).unwrap();
        again.add(&src.path().join("a"), "t/x/a").unwrap();
        assert_eq!((again.copied, again.reused), (0, 1));
        fs::write(dir.path().join("tables/t/x/b"), b"secoNd").unwrap();
        let err = verify(dir.path()).unwrap_err().to_string();
        assert!(err.contains("t/x/b is damaged"), "{err}");
        let target = tempfile::tempdir().unwrap();
        let err = restore(dir.path(), &target.path().join("new"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("damaged"), "{err}");
        assert!(!target.path().join("new").exists(), "nothing written");
        let err = restore(dir.path(), src.path()).unwrap_err().to_string();
        assert!(err.contains("not empty"), "{err}");
    }
}
