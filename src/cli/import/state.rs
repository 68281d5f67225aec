//! Where an import stands, kept in a small JSON file next to the work
//! (`--state`): for each input file, its fingerprint and how many of its
//! records are stored or refused. It is rewritten (to a temporary file,
//! then renamed over the old one) after every chunk the server
//! acknowledges, so an interrupted import resumes after the last
//! acknowledged chunk; the chunk that was in flight is sent again with the
//! same event ids, which the server answers as duplicates.

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The state of one import into one table.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct State {
    pub table: String,
    /// The Flight URL and tenant the files went to: a state is only
    /// valid for the server and tenant that stored its records.
    #[serde(default)]
    pub server: String,
    #[serde(default)]
    pub tenant: Option<String>,
    /// By the file's path as given.
    pub files: BTreeMap<String, FileState>,
}

/// How far one file got.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct FileState {
    pub fingerprint: String,
    /// Records read and settled (stored or refused), from the start.
    pub records: u64,
    /// Of those, how many were refused.
    pub rejected: u64,
    /// Whether the file was read to its end.
    pub complete: bool,
}

/// The state file and what it holds.
#[derive(Debug)]
pub(crate) struct Tracker {
    path: PathBuf,
    pub state: State,
}

impl Tracker {
    /// Loads the state at `path` (a fresh one when there is none). A state
    /// of another table is refused: its files' records were not stored
    /// where this import stores them.
    pub(crate) fn load(
        path: &Path,
        table: &str,
        server: &str,
        tenant: Option<&str>,
    ) -> anyhow::Result<Tracker> {
        let state = match std::fs::read(path) {
            Ok(bytes) => {
                let state: State = serde_json::from_slice(&bytes)
                    .with_context(|| format!("{} is not an import state file", path.display()))?;
                if state.table != table {
                    anyhow::bail!(
                        "{} records an import into table {:?}, not {table:?}: name another --state file",
                        path.display(),
                        state.table
                    );
                }
                if state.server != server || state.tenant.as_deref() != tenant {
                    anyhow::bail!(
                        "{} records an import to {} (tenant {}), not to {server} (tenant {}): name another --state file",
                        path.display(),
                        state.server,
                        state.tenant.as_deref().unwrap_or("of the token"),
                        tenant.unwrap_or("of the token")
                    );
                }
                state
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State {
                table: table.to_string(),
                server: server.to_string(),
                tenant: tenant.map(str::to_string),
                files: BTreeMap::new(),
            },
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        Ok(Tracker {
            path: path.to_path_buf(),
            state,
        })
    }

    /// Where `file` (with this fingerprint) resumes: its recorded state,
    /// or a fresh one when it is new or its bytes changed (then `true`
    /// if an earlier run had read some of it).
    pub(crate) fn start(&mut self, file: &str, fingerprint: &str) -> (FileState, bool) {
        let entry = self.state.files.entry(file.to_string()).or_default();
        let mut changed = false;
        if entry.fingerprint != fingerprint {
            changed = entry.records > 0;
            *entry = FileState {
                fingerprint: fingerprint.to_string(),
                ..FileState::default()
            };
        }
        (entry.clone(), changed)
    }

    /// Records progress on `file` and writes the state out.
    pub(crate) fn advance(
        &mut self,
        file: &str,
        records: u64,
        rejected: u64,
        complete: bool,
    ) -> anyhow::Result<()> {
        if let Some(entry) = self.state.files.get_mut(file) {
            entry.records = records;
            entry.rejected += rejected;
            entry.complete = complete;
        }
        self.save()
    }

    fn save(&self) -> anyhow::Result<()> {
        let dir = self
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let mut temp = tempfile::Builder::new()
            .prefix(".allsource-import-")
            .tempfile_in(dir)
            .with_context(|| format!("cannot write in {}", dir.display()))?;
        temp.write_all(&serde_json::to_vec_pretty(&self.state)?)?;
        temp.persist(&self.path)
            .with_context(|| format!("cannot write {}", self.path.display()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_survives_a_reload_and_a_changed_file_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let load = || Tracker::load(&path, "events", "http://s", None);
        let mut t = load().unwrap();
        assert_eq!(
            t.start("a.csv", "f1"),
            (
                FileState {
                    fingerprint: "f1".into(),
                    ..FileState::default()
                },
                false
            )
        );
        t.advance("a.csv", 500, 2, false).unwrap();
        t.advance("a.csv", 900, 1, true).unwrap();
        let mut t = load().unwrap();
        let (a, changed) = t.start("a.csv", "f1");
        assert_eq!(
            (a.records, a.rejected, a.complete, changed),
            (900, 3, true, false)
        );
        let (a, changed) = t.start("a.csv", "f2");
        assert_eq!((a.records, changed), (0, true));
        let err = Tracker::load(&path, "other", "http://s", None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("into table \"events\""), "{err}");
        let err = Tracker::load(&path, "events", "http://t", None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not to http://t"), "{err}");
        let err = Tracker::load(&path, "events", "http://s", Some("acme"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("tenant acme"), "{err}");
    }
}
