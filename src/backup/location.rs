//! Where backup files are read from and written to: a local directory,
//! or a prefix in an object store (S3). Local writes go through a
//! temporary name and are fsynced; an object store's put is atomic and
//! durable once acknowledged.
//!
//! Object-store calls are async; these functions wait for them on the
//! current tokio runtime, so they must run on a thread that may block in
//! one (`spawn_blocking`, or a command-line thread that entered the
//! runtime), as the local file I/O beside them does.

use super::{Error, io};
use futures::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use std::fs::{self, File};
use std::future::Future;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::AsyncWriteExt;

/// Bytes read or written at a time.
const CHUNK: usize = 1 << 20;

/// Waits for `f` on the current runtime (see the module's notes).
fn wait<F: Future>(f: F) -> F::Output {
    tokio::runtime::Handle::current().block_on(f)
}

/// A backup's place: a local directory or a prefix in an object store.
#[derive(Clone)]
pub enum Location {
    Dir(PathBuf),
    Store {
        store: Arc<dyn ObjectStore>,
        prefix: ObjectPath,
        /// For messages: `s3://bucket/prefix`.
        url: String,
    },
}

impl std::fmt::Debug for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Dir(dir) => write!(f, "{}", dir.display()),
            Location::Store { url, .. } => f.write_str(url),
        }
    }
}

/// A file to back up: on local disk, or an object in a table's store.
#[derive(Clone)]
pub enum Source {
    File(PathBuf),
    Object {
        store: Arc<dyn ObjectStore>,
        path: ObjectPath,
    },
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::File(p) => write!(f, "{}", p.display()),
            Source::Object { path, .. } => write!(f, "object {path}"),
        }
    }
}

fn store_err(what: &str) -> impl FnOnce(object_store::Error) -> Error + '_ {
    move |source| Error::Store {
        what: what.to_string(),
        source,
    }
}

impl Source {
    fn size(&self) -> Result<u64, Error> {
        match self {
            Source::File(p) => Ok(fs::metadata(p).map_err(io(p))?.len()),
            Source::Object { store, path } => Ok(wait(store.head(path))
                .map_err(store_err(path.as_ref()))?
                .size),
        }
    }

    /// Feeds the contents to `sink`, a chunk at a time.
    fn read(&self, mut sink: impl FnMut(&[u8]) -> Result<(), Error>) -> Result<(), Error> {
        match self {
            Source::File(p) => {
                let mut f = File::open(p).map_err(io(p))?;
                let mut buf = vec![0u8; CHUNK];
                loop {
                    let n = f.read(&mut buf).map_err(io(p))?;
                    if n == 0 {
                        return Ok(());
                    }
                    sink(&buf[..n])?;
                }
            }
            Source::Object { store, path } => {
                let got = wait(store.get(path)).map_err(store_err(path.as_ref()))?;
                let mut stream = got.into_stream();
                while let Some(chunk) = wait(stream.next()) {
                    sink(&chunk.map_err(store_err(path.as_ref()))?)?;
                }
                Ok(())
            }
        }
    }
}

/// BLAKE3 (hex) and length of what `source` holds.
pub(super) fn checksum(source: &Source) -> Result<(String, u64), Error> {
    let mut hasher = blake3::Hasher::new();
    let mut bytes = 0u64;
    source.read(|chunk| {
        hasher.update(chunk);
        bytes += chunk.len() as u64;
        Ok(())
    })?;
    Ok((hasher.finalize().to_hex().to_string(), bytes))
}

impl Location {
    /// The location `part` below this one.
    pub fn join(&self, part: &str) -> Location {
        match self {
            Location::Dir(dir) => Location::Dir(dir.join(part)),
            Location::Store { store, prefix, url } => Location::Store {
                store: store.clone(),
                prefix: prefix.clone().join(part),
                url: format!("{}/{part}", url.trim_end_matches('/')),
            },
        }
    }

    /// The file at `rel` (a `/`-separated path below this location).
    pub(super) fn file(&self, rel: &str) -> Source {
        match self {
            Location::Dir(dir) => Source::File(dir.join(rel)),
            Location::Store { store, prefix, .. } => Source::Object {
                store: store.clone(),
                path: rel
                    .split('/')
                    .fold(prefix.clone(), |path, part| path.join(part)),
            },
        }
    }

    /// The contents of the file at `rel`, or `None` if there is none.
    pub(super) fn read(&self, rel: &str) -> Result<Option<Vec<u8>>, Error> {
        match self.file(rel) {
            Source::File(path) => match fs::read(&path) {
                Ok(bytes) => Ok(Some(bytes)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(io(&path)(e)),
            },
            Source::Object { store, path } => match wait(store.get(&path)) {
                Ok(got) => Ok(Some(
                    wait(got.bytes())
                        .map_err(store_err(path.as_ref()))?
                        .to_vec(),
                )),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(store_err(path.as_ref())(e)),
            },
        }
    }

    /// The size of the file at `rel`, if there is one.
    pub(super) fn size(&self, rel: &str) -> Option<u64> {
        self.file(rel).size().ok()
    }

    /// Writes `bytes` as the file at `rel`, whole or not at all.
    pub(super) fn write(&self, rel: &str, bytes: &[u8]) -> Result<(), Error> {
        match self.file(rel) {
            Source::File(path) => {
                if let Some(parent) = path.parent() {
                    fs::create_dir_all(parent).map_err(io(parent))?;
                }
                let tmp = path.with_extension("tmp");
                let mut f = File::create(&tmp).map_err(io(&tmp))?;
                f.write_all(bytes).map_err(io(&tmp))?;
                f.sync_all().map_err(io(&tmp))?;
                fs::rename(&tmp, &path).map_err(io(&path))?;
                sync_parent(&path)
            }
            Source::Object { store, path } => {
                wait(store.put(&path, PutPayload::from(bytes.to_vec())))
                    .map_err(store_err(path.as_ref()))?;
                Ok(())
            }
        }
    }

    /// Copies `source` to the file at `rel`; answers the BLAKE3 and length
    /// of the copy (a local copy is read back; an upload is hashed as it
    /// is sent, and the store checks what it received).
    pub(super) fn copy_in(&self, source: &Source, rel: &str) -> Result<(String, u64), Error> {
        match (self.file(rel), source) {
            (Source::File(dst), Source::File(src)) => {
                let tmp = partial(&dst)?;
                fs::copy(src, &tmp).map_err(io(src))?;
                finish_local(&tmp, &dst)?;
                checksum(&Source::File(dst))
            }
            (Source::File(dst), source) => {
                let tmp = partial(&dst)?;
                let mut f = File::create(&tmp).map_err(io(&tmp))?;
                source.read(|chunk| f.write_all(chunk).map_err(io(&tmp)))?;
                drop(f);
                finish_local(&tmp, &dst)?;
                checksum(&Source::File(dst))
            }
            (Source::Object { store, path }, source) => {
                let mut hasher = blake3::Hasher::new();
                let mut bytes = 0u64;
                let mut upload = object_store::buffered::BufWriter::new(store, path.clone());
                let sent = source.read(|chunk| {
                    hasher.update(chunk);
                    bytes += chunk.len() as u64;
                    wait(upload.write_all(chunk)).map_err(|e| Error::Io {
                        path: PathBuf::from(path.as_ref()),
                        source: e,
                    })
                });
                if let Err(e) = sent {
                    let _ = wait(upload.abort());
                    return Err(e);
                }
                wait(upload.shutdown()).map_err(|e| Error::Io {
                    path: PathBuf::from(path.as_ref()),
                    source: e,
                })?;
                Ok((hasher.finalize().to_hex().to_string(), bytes))
            }
        }
    }
}

/// A temporary name beside `dst`, its directory created.
fn partial(dst: &Path) -> Result<PathBuf, Error> {
    if let Some(parent) = dst.parent() {
        fs::create_dir_all(parent).map_err(io(parent))?;
    }
    Ok(dst.with_extension("partial"))
}

/// Syncs `tmp` and renames it to `dst`, syncing the directory.
fn finish_local(tmp: &Path, dst: &Path) -> Result<(), Error> {
    File::open(tmp)
        .and_then(|f| f.sync_all())
        .map_err(io(tmp))?;
    fs::rename(tmp, dst).map_err(io(dst))?;
    sync_parent(dst)
}

fn sync_parent(path: &Path) -> Result<(), Error> {
    match path.parent() {
        Some(parent) => File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(io(parent)),
        None => Ok(()),
    }
}
