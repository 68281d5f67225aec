//! The storage root and how to reach it.
//!
//! A local root uses deltalake's own `file://` support. For
//! `s3://bucket/prefix` we build an `object_store::aws::AmazonS3` from the
//! standard `AWS_*` variables and hand it to deltalake with a plain log
//! store (commits use conditional put, which S3 and the common
//! S3-compatible stores support).

use super::{Error, Result, Storage};
use crate::config::Config;
use deltalake::logstore::{
    LogStoreFactory, LogStoreRef, ObjectStoreRef, StorageConfig, default_logstore,
    logstore_factories,
};
use std::path::PathBuf;
use std::sync::{Arc, Once};
use url::Url;

/// Where the tables are kept. One of the two, never both: what each part
/// of the storage layer does differs by backend (how tables are found,
/// whether commits need an fsync).
#[derive(Debug, Clone)]
pub(super) enum Backend {
    /// A local directory (absolute and canonical). object_store's local
    /// backend never fsyncs, so the writer does.
    Local { dir: PathBuf },
    /// An S3 bucket or S3-compatible store; a put is durable once
    /// acknowledged.
    S3 { store: ObjectStoreRef },
}

/// deltalake's default log store, registered for `s3://` without its `s3`
/// feature (which would pull in the AWS SDK for DynamoDB locking).
#[derive(Debug)]
struct PlainLogStore;

impl LogStoreFactory for PlainLogStore {
    fn with_options(
        &self,
        prefixed_store: ObjectStoreRef,
        root_store: ObjectStoreRef,
        location: &Url,
        options: &StorageConfig,
    ) -> deltalake::DeltaResult<LogStoreRef> {
        Ok(default_logstore(
            prefixed_store,
            root_store,
            location,
            options,
        ))
    }
}

impl Storage {
    /// The storage root of `config`: `--storage-url` (a local path,
    /// `file://` URL or `s3://bucket/prefix`), by default
    /// `<data-dir>/tables`. A local root is created if missing.
    pub fn new(config: &Config) -> Result<Self> {
        let spec = config
            .storage_url
            .clone()
            .unwrap_or_else(|| config.data_dir.join("tables").display().to_string());
        let invalid = |reason: &str| Error::InvalidUrl {
            url: spec.clone(),
            reason: reason.to_string(),
        };
        if let Some(rest) = spec.strip_prefix("s3://") {
            if rest.split('/').next().unwrap_or("").is_empty() {
                return Err(invalid("no bucket name"));
            }
            let mut root = Url::parse(&spec).map_err(|e| invalid(&e.to_string()))?;
            if !root.path().ends_with('/') {
                root.set_path(&format!("{}/", root.path()));
            }
            let store = s3_store(config, root.host_str().unwrap_or_default())?;
            return Ok(Storage {
                root,
                backend: Backend::S3 { store },
                node: config.node_id,
            });
        }
        let path = match spec.strip_prefix("file://") {
            Some(p) => PathBuf::from(p),
            None if spec.contains("://") => {
                return Err(invalid("use a local path, file:// or s3://bucket/prefix"));
            }
            None => PathBuf::from(&spec),
        };
        std::fs::create_dir_all(&path).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        let dir = path.canonicalize().map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        let root =
            Url::from_directory_path(&dir).map_err(|_| invalid("not an absolute directory"))?;
        Ok(Storage {
            root,
            backend: Backend::Local { dir },
            node: config.node_id,
        })
    }
}

/// The S3 store of `bucket`, configured from the `AWS_*` variables and
/// `config`'s endpoint settings. Registers the plain log store for
/// `s3://` URLs (once per process).
/// The object store of `url`, `s3://bucket/prefix`, with the S3 settings
/// of `config`, and the prefix as a path in it.
pub fn s3_location(
    config: &Config,
    url: &str,
) -> Result<(ObjectStoreRef, object_store::path::Path)> {
    let invalid = |reason: String| Error::InvalidUrl {
        url: url.to_string(),
        reason,
    };
    let parsed = Url::parse(url).map_err(|e| invalid(e.to_string()))?;
    let bucket = parsed.host_str().unwrap_or_default();
    if parsed.scheme() != "s3" || bucket.is_empty() {
        return Err(invalid("expected s3://bucket/prefix".into()));
    }
    let store = s3_store(config, bucket)?;
    Ok((
        store,
        object_store::path::Path::from(parsed.path().trim_matches('/')),
    ))
}

fn s3_store(config: &Config, bucket: &str) -> Result<ObjectStoreRef> {
    let mut builder = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket);
    if let Some(endpoint) = &config.s3_endpoint {
        builder = builder.with_endpoint(endpoint);
    }
    if config.s3_allow_http {
        builder = builder.with_allow_http(true);
    }
    let store = builder.build()?;
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        logstore_factories().insert(
            Url::parse("s3://").expect("static URL"),
            Arc::new(PlainLogStore),
        );
    });
    Ok(Arc::new(store))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_url(dir: &std::path::Path, url: Option<String>) -> Result<Storage> {
        Storage::new(&Config {
            storage_url: url,
            ..Config::for_tests(dir)
        })
    }

    #[test]
    fn local_roots_are_created_and_canonical() {
        let tmp = tempfile::tempdir().unwrap();
        let canonical = tmp.path().canonicalize().unwrap();
        // The default: <data-dir>/tables.
        let storage = with_url(tmp.path(), None).unwrap();
        let Backend::Local { dir } = &storage.backend else {
            panic!("a local root");
        };
        assert_eq!(dir, &canonical.join("tables"));
        assert!(dir.is_dir());
        assert_eq!(storage.root, Url::from_directory_path(dir).unwrap());
        assert!(storage.root.as_str().ends_with('/'));
        // A path and a file:// URL name the same directory.
        let plain = with_url(tmp.path(), Some(format!("{}/b/", tmp.path().display())));
        let url = with_url(
            tmp.path(),
            Some(format!("file://{}/b", tmp.path().display())),
        );
        for storage in [plain.unwrap(), url.unwrap()] {
            let Backend::Local { dir } = &storage.backend else {
                panic!("a local root");
            };
            assert_eq!(dir, &canonical.join("b"));
        }
    }

    #[test]
    fn s3_roots_need_a_bucket_and_end_in_a_slash() {
        let tmp = tempfile::tempdir().unwrap();
        let s3 = |url: &str| {
            Storage::new(&Config {
                storage_url: Some(url.to_string()),
                s3_endpoint: Some("http://127.0.0.1:1".into()),
                s3_allow_http: true,
                ..Config::for_tests(tmp.path())
            })
        };
        let storage = s3("s3://bucket/some/prefix").unwrap();
        assert!(matches!(storage.backend, Backend::S3 { .. }));
        assert_eq!(storage.root.as_str(), "s3://bucket/some/prefix/");
        assert_eq!(
            storage
                .table_url(&"acme".parse().unwrap(), &"events".parse().unwrap())
                .as_str(),
            "s3://bucket/some/prefix/acme/events/"
        );
        assert!(matches!(
            s3("s3://bucket").unwrap().backend,
            Backend::S3 { .. }
        ));
        for bad in ["s3://", "s3:///prefix"] {
            assert!(
                matches!(s3(bad), Err(Error::InvalidUrl { .. })),
                "{bad} has no bucket"
            );
        }
        // Nothing local was created for an S3 root.
        assert!(!tmp.path().join("tables").exists());
    }

    #[test]
    fn other_schemes_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let err = with_url(tmp.path(), Some("gs://bucket/x".into())).unwrap_err();
        assert!(matches!(err, Error::InvalidUrl { .. }), "{err}");
        assert!(err.to_string().contains("s3://bucket/prefix"), "{err}");
    }
}
