//! Leases in the store: which of several writers of a storage root does a
//! piece of work that must not run twice at once (maintenance).
//!
//! A lease is a sequence of small objects under
//! `<root>/_allsource/leases/<name>/`, one per term, named by the term's
//! number (zero-padded, so they list in order). Each holds the writer that
//! took the term and when the term ends. The newest term is the lease's
//! state. A writer takes the lease by creating the next term's object with
//! a conditional put that fails when the object exists (S3's
//! `If-None-Match: *`, a hard link on a local file system), so of writers
//! racing for one term exactly one gets it; it may do so when the newest
//! term is its own (a renewal) or has ended. Terms are compared with each
//! writer's wall clock, so clocks must agree to well within a term.
//!
//! A holder renews by taking the next term, and may end its term early
//! (`release_lease`); old terms are deleted behind it. A lease only keeps writers from doing the same work at once: the
//! work itself stays safe without it (compactions commit through Delta's
//! conflict checks, vacuum deletes only files older than its retention).

use super::backend::Backend;
use super::{Result, Storage};
use crate::ids::NodeId;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// Directory of the storage root that holds AllSource's own objects (not
/// a tenant name: those start with a letter).
pub const META_DIR: &str = "_allsource";

/// One term of a lease, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Term {
    /// The writer that holds it.
    pub node: u16,
    /// When it ends, in milliseconds since the epoch.
    pub until_ms: i64,
}

/// What [`Storage::take_lease`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Taken {
    /// This writer holds the lease until the time given (ms).
    Held { term: u64, until_ms: i64 },
    /// Another writer holds it.
    Busy { node: u16, until_ms: i64 },
}

impl Storage {
    /// The store and the directory of lease `name`.
    fn lease_dir(&self, name: &str) -> (Arc<dyn ObjectStore>, Path) {
        let (store, prefix): (Arc<dyn ObjectStore>, Path) = match &self.backend {
            Backend::Local { dir } => (
                Arc::new(
                    object_store::local::LocalFileSystem::new_with_prefix(dir)
                        .expect("the storage root is an existing directory"),
                ),
                Path::from(""),
            ),
            Backend::S3 { store } => (
                store.clone(),
                Path::from(self.root.path().trim_matches('/')),
            ),
        };
        let dir = prefix.clone().join(META_DIR).join("leases").join(name);
        (store, dir)
    }

    /// Takes (or renews) lease `name` for writer `node` for `length`
    /// from `now_ms`, unless another writer holds a term that has not
    /// ended.
    pub async fn take_lease(
        &self,
        name: &str,
        node: NodeId,
        length: Duration,
        now_ms: i64,
    ) -> Result<Taken> {
        let (store, dir) = self.lease_dir(name);
        let mut terms: Vec<(u64, Path)> = store
            .list(Some(&dir))
            .try_filter_map(|meta| async move {
                Ok(meta
                    .location
                    .filename()
                    .and_then(|f| f.parse::<u64>().ok())
                    .map(|n| (n, meta.location.clone())))
            })
            .try_collect()
            .await?;
        terms.sort();
        let newest = match terms.last() {
            Some((n, path)) => Some((*n, read_term(store.as_ref(), path).await?)),
            None => None,
        };
        if let Some((_, term)) = &newest
            && term.node != node.get()
            && term.until_ms > now_ms
        {
            return Ok(Taken::Busy {
                node: term.node,
                until_ms: term.until_ms,
            });
        }
        let next = newest.as_ref().map_or(1, |(n, _)| n + 1);
        let until_ms = now_ms.saturating_add(length.as_millis() as i64);
        let body = serde_json::to_vec(&Term {
            node: node.get(),
            until_ms,
        })
        .expect("a term serializes");
        let path = dir.clone().join(format!("{next:020}"));
        let put = store
            .put_opts(
                &path,
                PutPayload::from(body),
                PutOptions::from(PutMode::Create),
            )
            .await;
        match put {
            Ok(_) => {}
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => {
                // Another writer took this term first.
                let term = read_term(store.as_ref(), &path).await?;
                return Ok(Taken::Busy {
                    node: term.node,
                    until_ms: term.until_ms,
                });
            }
            Err(e) => return Err(e.into()),
        }
        // A writer that read the terms long ago may have created a term
        // number deleted behind the holder: a newer term means this one
        // is history already.
        let newer = store
            .list(Some(&dir))
            .try_filter(|meta| {
                let later = meta
                    .location
                    .filename()
                    .and_then(|f| f.parse::<u64>().ok())
                    .is_some_and(|n| n > next);
                async move { later }
            })
            .try_collect::<Vec<_>>()
            .await?;
        if let Some(meta) = newer.last() {
            let term = read_term(store.as_ref(), &meta.location).await?;
            return Ok(Taken::Busy {
                node: term.node,
                until_ms: term.until_ms,
            });
        }
        // Terms before the previous one are history.
        for (n, old) in &terms {
            if n + 1 < next {
                match store.delete(old).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => tracing::debug!(error = %e, "cannot delete an old lease term"),
                }
            }
        }
        Ok(Taken::Held {
            term: next,
            until_ms,
        })
    }

    /// Ends this writer's term of lease `name` early, so another writer
    /// need not wait for it to run out. Best effort: a term left behind
    /// simply runs out.
    pub async fn release_lease(&self, name: &str, node: NodeId, term: u64) -> Result<()> {
        let (store, dir) = self.lease_dir(name);
        let body = serde_json::to_vec(&Term {
            node: node.get(),
            until_ms: i64::MIN,
        })
        .expect("a term serializes");
        let path = dir.join(format!("{:020}", term + 1));
        match store
            .put_opts(
                &path,
                PutPayload::from(body),
                PutOptions::from(PutMode::Create),
            )
            .await
        {
            Ok(_)
            | Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// The term stored at `path`. One that does not parse (written by a
/// newer version, or damaged) counts as ended.
async fn read_term(store: &dyn ObjectStore, path: &Path) -> Result<Term> {
    let bytes = store.get(path).await?.bytes().await?;
    Ok(serde_json::from_slice::<Term>(&bytes).unwrap_or(Term {
        node: 0,
        until_ms: i64::MIN,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn node(n: u16) -> NodeId {
        n.to_string().parse().unwrap()
    }

    #[tokio::test]
    async fn one_writer_holds_a_lease_until_its_term_ends() {
        let tmp = tempfile::tempdir().unwrap();
        let storage = Storage::new(&Config::for_tests(tmp.path())).unwrap();
        let minute = Duration::from_secs(60);
        let held = storage.take_lease("m", node(1), minute, 1_000).await;
        assert_eq!(
            held.unwrap(),
            Taken::Held {
                term: 1,
                until_ms: 61_000
            }
        );
        // Another writer waits for the term to end.
        let busy = storage.take_lease("m", node(2), minute, 30_000).await;
        assert_eq!(
            busy.unwrap(),
            Taken::Busy {
                node: 1,
                until_ms: 61_000
            }
        );
        // The holder renews.
        let renewed = storage.take_lease("m", node(1), minute, 50_000).await;
        assert!(matches!(renewed.unwrap(), Taken::Held { term: 2, .. }));
        // Once the term has ended, another writer takes it.
        let taken = storage.take_lease("m", node(2), minute, 200_000).await;
        assert!(matches!(taken.unwrap(), Taken::Held { term: 3, .. }));
        let busy = storage.take_lease("m", node(1), minute, 210_000).await;
        assert!(matches!(busy.unwrap(), Taken::Busy { node: 2, .. }));
        // A release lets the other writer in at once.
        storage.release_lease("m", node(2), 3).await.unwrap();
        let taken = storage.take_lease("m", node(1), minute, 211_000).await;
        assert!(matches!(taken.unwrap(), Taken::Held { term: 5, .. }));
        // Old terms are deleted behind the holder.
        let left = std::fs::read_dir(tmp.path().join("tables/_allsource/leases/m"))
            .unwrap()
            .count();
        assert!(left <= 3, "{left} terms kept");
    }

    #[tokio::test]
    async fn of_writers_racing_for_a_term_one_gets_it() {
        let tmp = tempfile::tempdir().unwrap();
        let storage = Arc::new(Storage::new(&Config::for_tests(tmp.path())).unwrap());
        for round in 0..20i64 {
            let now = round * 1_000_000;
            let tasks: Vec<_> = (1..=4)
                .map(|n| {
                    let storage = storage.clone();
                    tokio::spawn(async move {
                        storage
                            .take_lease("race", node(n), Duration::from_secs(1), now)
                            .await
                            .unwrap()
                    })
                })
                .collect();
            let mut held = 0;
            for t in tasks {
                if matches!(t.await.unwrap(), Taken::Held { .. }) {
                    held += 1;
                }
            }
            assert_eq!(held, 1, "round {round}");
        }
    }
}
