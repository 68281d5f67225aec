//! Finding the tables under the storage root: every `<tenant>/<table>/`
//! directory (or S3 prefix) with a `_delta_log`, whose names are a valid
//! tenant id and table name. Anything else under the root is ignored.

use super::backend::Backend;
use super::{Error, Result, Storage};
use crate::ids::{TableName, TenantId};
use object_store::ObjectStore;
use std::path::Path;
use url::Url;

impl Storage {
    /// Every table under the root, sorted.
    pub async fn list_tables(&self) -> Result<Vec<(TenantId, TableName)>> {
        let mut found = match &self.backend {
            Backend::Local { dir } => list_local(dir)?,
            Backend::S3 { store } => list_in_store(store.as_ref(), &self.root).await?,
        };
        found.sort();
        Ok(found)
    }
}

/// The tables in the local directory `root`.
fn list_local(root: &Path) -> Result<Vec<(TenantId, TableName)>> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { path, source }
    };
    let mut found = Vec::new();
    for tenant in std::fs::read_dir(root).map_err(io(root))? {
        let tenant = tenant.map_err(io(root))?;
        let Some(tenant_id) = tenant.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        if !tenant.path().is_dir() {
            continue;
        }
        for table in std::fs::read_dir(tenant.path()).map_err(io(&tenant.path()))? {
            let table = table.map_err(io(&tenant.path()))?;
            let Some(name) = table.file_name().to_str().and_then(|n| n.parse().ok()) else {
                continue;
            };
            if table.path().join("_delta_log").is_dir() {
                found.push((TenantId::clone(&tenant_id), name));
            }
        }
    }
    Ok(found)
}

/// The tables under `root` (a directory URL) in an object store.
async fn list_in_store(store: &dyn ObjectStore, root: &Url) -> Result<Vec<(TenantId, TableName)>> {
    let mut found = Vec::new();
    let prefix = object_store::path::Path::from(root.path().trim_matches('/'));
    let tenants = store.list_with_delimiter(Some(&prefix)).await?;
    for tenant_prefix in tenants.common_prefixes {
        let Some(tenant_id) = tenant_prefix
            .filename()
            .and_then(|n| n.parse::<TenantId>().ok())
        else {
            continue;
        };
        let tables = store.list_with_delimiter(Some(&tenant_prefix)).await?;
        for table_prefix in tables.common_prefixes {
            let Some(name) = table_prefix
                .filename()
                .and_then(|n| n.parse::<TableName>().ok())
            else {
                continue;
            };
            let log = table_prefix.clone().join("_delta_log");
            let mut listing = store.list(Some(&log));
            if futures::StreamExt::next(&mut listing).await.is_some() {
                found.push((tenant_id.clone(), name));
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(found: &[(TenantId, TableName)]) -> Vec<String> {
        found.iter().map(|(t, n)| format!("{t}.{n}")).collect()
    }

    #[test]
    fn local_tables_are_found_by_their_log() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        for dir in [
            "acme/events/_delta_log",
            "acme/clicks/_delta_log",
            "acme/no_log_yet",
            "beta/events/_delta_log",
            "bad name/events/_delta_log",
        ] {
            std::fs::create_dir_all(root.join(dir)).unwrap();
        }
        std::fs::write(root.join("stray-file"), b"").unwrap();
        std::fs::write(root.join("acme/notes.txt"), b"").unwrap();
        let mut found = list_local(root).unwrap();
        found.sort();
        assert_eq!(names(&found), ["acme.clicks", "acme.events", "beta.events"]);
    }

    #[tokio::test]
    async fn tables_in_a_store_are_found_by_their_log() {
        use object_store::memory::InMemory;
        use object_store::path::Path as StorePath;
        use object_store::{ObjectStoreExt, PutPayload};
        let store = InMemory::new();
        for key in [
            "lake/acme/events/_delta_log/00000000000000000000.json",
            "lake/acme/events/event_date=2024-01-01/part-0.parquet",
            "lake/acme/half/event_date=2024-01-01/part-0.parquet",
            "lake/beta/clicks/_delta_log/00000000000000000000.json",
            "elsewhere/gamma/events/_delta_log/00000000000000000000.json",
        ] {
            store
                .put(&StorePath::from(key), PutPayload::from_static(b"{}"))
                .await
                .unwrap();
        }
        let root = Url::parse("s3://bucket/lake/").unwrap();
        let mut found = list_in_store(&store, &root).await.unwrap();
        found.sort();
        assert_eq!(names(&found), ["acme.events", "beta.clicks"]);
    }
}
