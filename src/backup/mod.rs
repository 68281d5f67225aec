//! Backups: the manifest, copying files into a backup (skipping those an
//! earlier backup in the same place already holds), checking a backup
//! against its checksums, and restoring it into a new data directory. A
//! backup lives in a local directory or under an S3 prefix
//! ([`Location`]).
//!
//! Layout of a backup:
//!
//! ```text
//! manifest.json              the latest backup (written last, atomically)
//! manifests/<time>.json      every backup taken into this place
//! tables/<tenant>/<table>/…  the Delta tables' files, as in the data dir
//! ```
//!
//! The manifest also holds each durable subscription's state (a few
//! hundred bytes each), which a restore writes back where the server
//! keeps them: `<data-dir>/subscriptions/<tenant>/<name>.json`; and each
//! governed table's schemas and rules (`<data-dir>/schemas/…`).
//!
//! Delta files never change once written (data files have unique names;
//! log entries are immutable), so a file an earlier manifest lists with
//! the same size and checksum is not copied again: backups into the same
//! place are incremental.

mod location;

pub use location::{Location, Source};

use location::checksum;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
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
    #[error("{what}: {source}")]
    Store {
        what: String,
        source: object_store::Error,
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    /// RFC 3339.
    pub created_at: String,
    pub tables: Vec<TableEntry>,
    /// Durable subscriptions (absent in backups taken before they were
    /// backed up).
    #[serde(default)]
    pub subscriptions: Vec<SubscriptionEntry>,
    /// Governed tables' schemas and rules, as the server stores them.
    #[serde(default)]
    pub schemas: Vec<SchemaEntry>,
    /// Each tenant's policies (with the salt of its hash masks), as the
    /// server stores them; tenants still on the defaults have none.
    #[serde(default)]
    pub policies: Vec<PolicyEntry>,
}

/// One tenant's policies in a backup: the file the server keeps them in,
/// `<data-dir>/policies/<tenant>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyEntry {
    pub tenant: String,
    pub state: serde_json::Value,
}

/// One governed table's schemas and rules in a backup: the file the
/// server keeps them in, `<data-dir>/schemas/<tenant>/<table>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SchemaEntry {
    pub tenant: String,
    pub table: String,
    pub state: serde_json::Value,
}

/// One durable subscription in a backup: its state as the server stores
/// it, with its acknowledged position no later than its table's
/// `last_position` in the backup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubscriptionEntry {
    pub tenant: String,
    pub name: String,
    pub state: serde_json::Value,
}

impl Manifest {
    /// The manifest of the latest backup at `place`, if there is one.
    pub fn read(place: &Location) -> Result<Option<Manifest>, Error> {
        let Some(text) = place.read("manifest.json")? else {
            return Ok(None);
        };
        let manifest: Manifest = serde_json::from_slice(&text).map_err(|e| {
            Error::Invalid(format!("{place}/manifest.json: not a backup manifest: {e}"))
        })?;
        if manifest.format != FORMAT {
            return Err(Error::Invalid(format!(
                "{place}/manifest.json: manifest format {} is not supported (this build reads {FORMAT})",
                manifest.format
            )));
        }
        Ok(Some(manifest))
    }

    /// Writes the manifest as `place`'s latest, and into its history.
    pub fn write(&self, place: &Location) -> Result<(), Error> {
        let text = serde_json::to_vec_pretty(self).map_err(|e| Error::Invalid(e.to_string()))?;
        let stamp = self.created_at.replace(':', "-");
        place.write(&format!("manifests/{stamp}.json"), &text)?;
        place.write("manifest.json", &text)
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

/// Copies files into a backup, reusing what the latest backup at the same
/// place already holds.
#[derive(Debug)]
pub struct Writer {
    place: Location,
    previous: HashMap<String, FileEntry>,
    pub copied: u64,
    pub reused: u64,
    pub bytes_copied: u64,
}

impl Writer {
    pub fn new(place: &Location) -> Result<Writer, Error> {
        let previous = Manifest::read(place)?
            .map(|m| {
                m.files()
                    .into_iter()
                    .map(|(p, f)| (p.to_string(), f.clone()))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Writer {
            place: place.clone(),
            previous,
            copied: 0,
            reused: 0,
            bytes_copied: 0,
        })
    }

    /// Backs up `source` as `rel` (relative to `tables/`); `size` is its
    /// length, which decides whether the previous backup's copy is reused.
    pub fn add(&mut self, source: &Source, size: u64, rel: &str) -> Result<FileEntry, Error> {
        let dst = format!("tables/{rel}");
        if let Some(prev) = self.previous.get(rel)
            && prev.bytes == size
            && self.place.size(&dst) == Some(size)
        {
            self.reused += 1;
            return Ok(prev.clone());
        }
        let (blake3, bytes) = self.place.copy_in(source, &dst)?;
        self.copied += 1;
        self.bytes_copied += bytes;
        Ok(FileEntry {
            path: rel.to_string(),
            bytes,
            blake3,
        })
    }
}

/// Checks every file of the backup at `place` against its manifest.
/// Returns the number of files checked, or what is wrong.
pub fn verify(place: &Location) -> Result<usize, Error> {
    let manifest = Manifest::read(place)?
        .ok_or_else(|| Error::Invalid(format!("{place}: no manifest.json: not a backup")))?;
    let files = manifest.files();
    for entry in files.values() {
        let rel = format!("tables/{}", entry.path);
        let (sum, bytes) = checksum(&place.file(&rel))?;
        if bytes != entry.bytes || sum != entry.blake3 {
            return Err(Error::Invalid(format!(
                "{place}/{rel} is damaged: {bytes} bytes with checksum {sum}, the manifest says {} bytes with {}",
                entry.bytes, entry.blake3
            )));
        }
    }
    Ok(files.len())
}

/// Restores the backup at `from` into the new data directory `data_dir`:
/// checks it whole first, refuses a directory that is not empty, and
/// writes nothing unless every file checks out. Returns the manifest.
pub fn restore(from: &Location, data_dir: &Path) -> Result<Manifest, Error> {
    if std::fs::read_dir(data_dir).is_ok_and(|mut d| d.next().is_some()) {
        return Err(Error::Invalid(format!(
            "{} is not empty: restore only into a new data directory",
            data_dir.display()
        )));
    }
    verify(from)?;
    let manifest = Manifest::read(from)?.expect("verified above");
    let target = Location::Dir(data_dir.to_path_buf());
    for entry in manifest.files().values() {
        let rel = format!("tables/{}", entry.path);
        target.copy_in(&from.file(&rel), &rel)?;
    }
    for entry in &manifest.subscriptions {
        let bad = |what: &str, e: String| {
            Error::Invalid(format!(
                "{from}/manifest.json: subscription {:?}: {what}: {e}",
                entry.name
            ))
        };
        let tenant = (entry.tenant.parse::<crate::ids::TenantId>())
            .map_err(|e| bad("tenant", e.to_string()))?;
        let name = (entry.name.parse::<crate::ids::GroupName>())
            .map_err(|e| bad("name", e.to_string()))?;
        let path = name.state_file(&data_dir.join(crate::ids::SUBSCRIPTIONS_DIR), &tenant);
        let dir = path.parent().unwrap_or(data_dir);
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let text =
            serde_json::to_vec_pretty(&entry.state).map_err(|e| bad("state", e.to_string()))?;
        std::fs::write(&path, text).map_err(io(&path))?;
    }
    for entry in &manifest.schemas {
        let bad = |what: &str, e: String| {
            Error::Invalid(format!(
                "{from}/manifest.json: schemas of table {:?}: {what}: {e}",
                entry.table
            ))
        };
        let tenant = (entry.tenant.parse::<crate::ids::TenantId>())
            .map_err(|e| bad("tenant", e.to_string()))?;
        let table = (entry.table.parse::<crate::ids::TableName>())
            .map_err(|e| bad("table", e.to_string()))?;
        let dir = data_dir.join(crate::ids::SCHEMAS_DIR).join(tenant.as_str());
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let path = dir.join(format!("{table}.json"));
        let text =
            serde_json::to_vec_pretty(&entry.state).map_err(|e| bad("state", e.to_string()))?;
        std::fs::write(&path, text).map_err(io(&path))?;
    }
    for entry in &manifest.policies {
        let tenant = (entry.tenant.parse::<crate::ids::TenantId>()).map_err(|e| {
            Error::Invalid(format!(
                "{from}/manifest.json: policies of tenant {:?}: {e}",
                entry.tenant
            ))
        })?;
        let dir = data_dir.join(crate::ids::POLICIES_DIR);
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let path = dir.join(format!("{tenant}.json"));
        let text = serde_json::to_vec_pretty(&entry.state)
            .map_err(|e| Error::Invalid(format!("{from}/manifest.json: policies: {e}")))?;
        std::fs::write(&path, text).map_err(io(&path))?;
    }
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn a_second_backup_reuses_files_and_damage_is_found() {
        let src = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        fs::write(src.path().join("a"), b"first").unwrap();
        fs::write(src.path().join("b"), b"second").unwrap();
        let place = Location::Dir(dir.path().to_path_buf());
        let file = |name: &str| Source::File(src.path().join(name));
        let mut w = Writer::new(&place).unwrap();
        let files = vec![
            w.add(&file("a"), 5, "t/x/a").unwrap(),
            w.add(&file("b"), 6, "t/x/b").unwrap(),
        ];
        assert_eq!((w.copied, w.reused), (2, 0));
        let manifest = Manifest {
            format: FORMAT,
            created_at: "2026-11-28T00:00:00Z".into(),
            subscriptions: Vec::new(),
            schemas: Vec::new(),
            policies: Vec::new(),
            tables: vec![TableEntry {
                tenant: "t".into(),
                table: "x".into(),
                delta_version: 1,
                last_position: 2,
                files,
            }],
        };
        manifest.write(&place).unwrap();
        assert_eq!(verify(&place).unwrap(), 2);
        let mut again = Writer::new(&place).unwrap();
        again.add(&file("a"), 5, "t/x/a").unwrap();
        assert_eq!((again.copied, again.reused), (0, 1));
        fs::write(dir.path().join("tables/t/x/b"), b"secoNd").unwrap();
        let err = verify(&place).unwrap_err().to_string();
        assert!(err.contains("t/x/b is damaged"), "{err}");
        let target = tempfile::tempdir().unwrap();
        let err = restore(&place, &target.path().join("new"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("damaged"), "{err}");
        assert!(!target.path().join("new").exists(), "nothing written");
        let err = restore(&place, src.path()).unwrap_err().to_string();
        assert!(err.contains("not empty"), "{err}");
    }
}
