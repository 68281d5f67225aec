//! Validated identifiers: tenants, tables and WAL sequence numbers.
//!
//! Names are checked once, where they enter the system (an HTTP parameter, a
//! directory found on disk), so that code further in can use them in paths
//! and messages without checking again.

use std::fmt;
use std::str::FromStr;

/// Why a tenant or table name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid {kind} name {name:?}: use 1 to 64 characters from a-z, 0-9 and '_', starting with a letter"
)]
pub struct InvalidName {
    kind: &'static str,
    name: String,
}

fn check_name(kind: &'static str, s: &str) -> Result<(), InvalidName> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.as_bytes()[0].is_ascii_lowercase()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(InvalidName {
            kind,
            name: s.chars().take(80).collect(),
        })
    }
}

macro_rules! name_type {
    ($(#[$doc:meta])* $ty:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $ty(String);

        impl $ty {
            /// The name as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $ty {
            type Err = InvalidName;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                check_name($kind, s)?;
                Ok(Self(s.to_string()))
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

name_type!(
    /// A tenant: the namespace that owns tables. Lower-case, so that it is
    /// also a safe path component and SQL identifier.
    TenantId,
    "tenant"
);
name_type!(
    /// A table name within a tenant, also a path component and an unquoted
    /// SQL identifier.
    TableName,
    "table"
);

name_type!(
    /// A durable subscription (consumer group) within a tenant, also a
    /// path component.
    GroupName,
    "subscription"
);

name_type!(
    /// A projection within a tenant, also its table name in SQL
    /// (`projections.<name>`).
    ProjectionName,
    "projection"
);

name_type!(
    /// A pipeline within a tenant, also a path component.
    PipelineName,
    "pipeline"
);

/// The folder of the data directory that holds the durable state of
/// subscriptions, one folder per tenant inside.
pub const SUBSCRIPTIONS_DIR: &str = "subscriptions";

/// The folder of the data directory that holds each pipeline's definition
/// and progress, one folder per tenant inside.
pub const PIPELINES_DIR: &str = "pipelines";

/// Where table schemas and rules are kept, under the data directory.
pub const SCHEMAS_DIR: &str = "schemas";

/// Where each tenant's policies are kept, under the data directory.
pub const POLICIES_DIR: &str = "policies";

impl GroupName {
    /// Where the durable state of this subscription of `tenant` is kept,
    /// under `root` (the data directory's [`SUBSCRIPTIONS_DIR`]).
    pub fn state_file(&self, root: &std::path::Path, tenant: &TenantId) -> std::path::PathBuf {
        root.join(tenant.as_str()).join(format!("{self}.json"))
    }

    /// Every state file under `root` laid out as [`GroupName::state_file`]
    /// places them ([`tenant_json_files`]).
    pub fn state_files(
        root: &std::path::Path,
    ) -> std::io::Result<Vec<(TenantId, std::path::PathBuf)>> {
        tenant_json_files(root)
    }
}

impl PipelineName {
    /// Where `tenant`'s pipeline of this name keeps its definition and
    /// progress, under `root` (the data directory's [`PIPELINES_DIR`]).
    pub fn state_file(&self, root: &std::path::Path, tenant: &TenantId) -> std::path::PathBuf {
        root.join(tenant.as_str()).join(format!("{self}.json"))
    }
}

/// Every `<root>/<tenant>/<name>.json`, with the tenant its folder names
/// (folders that are no tenant id are skipped). None when `root` does not
/// exist yet.
pub fn tenant_json_files(
    root: &std::path::Path,
) -> std::io::Result<Vec<(TenantId, std::path::PathBuf)>> {
    let tenants = match std::fs::read_dir(root) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut found = Vec::new();
    for tenant_dir in tenants {
        let tenant_dir = tenant_dir?.path();
        let Some(tenant) = tenant_dir
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse::<TenantId>().ok())
        else {
            continue;
        };
        for entry in std::fs::read_dir(&tenant_dir)? {
            let path = entry?.path();
            if path.extension().and_then(|e| e.to_str()) == Some("json") {
                found.push((tenant.clone(), path));
            }
        }
    }
    Ok(found)
}

impl TenantId {
    /// The tenant that owns everything when auth is off.
    pub fn default_tenant() -> Self {
        Self("default".into())
    }
}

impl TableName {
    /// The table events land in when a request names none.
    pub fn default_table() -> Self {
        Self("events".into())
    }
}

/// Position of a record in the write-ahead log; strictly increasing, never
/// reused. Also recorded in each Delta commit as the application transaction
/// version, which is how recovery knows what is already persisted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct WalSeq(pub u64);

impl fmt::Display for WalSeq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// One writer among several that share a storage root (`--node-id`).
///
/// Its events' positions are `id << 48` plus a count of its own, so
/// positions stay unique per table across writers without talking to
/// each other: writer `n` owns `[n << 48, (n + 1) << 48)`. A server
/// without a node id is the root's only writer and owns the range of
/// writer 0, which is where every position written before node ids
/// existed lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(u16);

impl NodeId {
    /// Bits of a position below the node id.
    pub const SHIFT: u32 = 48;
    /// Highest node id: positions are stored as signed 64-bit integers.
    pub const MAX: u16 = (1 << 15) - 1;

    /// The first position of writer `node` (`None`: the sole writer).
    pub fn base(node: Option<NodeId>) -> u64 {
        node.map_or(0, |n| u64::from(n.0) << Self::SHIFT)
    }

    pub fn get(self) -> u16 {
        self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for NodeId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.parse::<u16>() {
            Ok(n) if (1..=Self::MAX).contains(&n) => Ok(NodeId(n)),
            _ => Err(format!(
                "a node id is a whole number from 1 to {}, not {s:?}",
                Self::MAX
            )),
        }
    }
}

/// Event ids for the rows of one batch: UUIDv7s that share one clock
/// reading and one random draw. The 62 low bits start at a random 61-bit
/// value and count up by row, so a batch's ids are distinct and ascending,
/// and ids of batches built in the same millisecond collide only if two
/// random draws land within a batch's length of each other.
///
/// `uuid::Uuid::now_v7` reads the clock and draws random bits for every
/// id, which was a tenth of the server's CPU in a bulk load.
#[derive(Debug)]
pub struct EventIds {
    high: u128,
    next: u64,
}

impl EventIds {
    /// A generator for one batch, stamped with the current time.
    pub fn new() -> Self {
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Self::at(millis, rand::random())
    }

    fn at(millis: u64, random: u128) -> Self {
        // unix_ts_ms (48) | version 7 (4) | rand_a (12) | variant 0b10 (2) | rand_b (62)
        let rand_a = (random >> 64) & 0xfff;
        let high = (u128::from(millis & 0xffff_ffff_ffff) << 80)
            | (0x7 << 76)
            | (rand_a << 64)
            | (0b10 << 62);
        Self {
            high,
            next: random as u64 >> 3,
        }
    }

    /// The next id of the batch.
    pub fn next_id(&mut self) -> uuid::Uuid {
        let id = uuid::Uuid::from_u128(self.high | u128::from(self.next));
        self.next += 1;
        id
    }
}

impl Default for EventIds {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        assert!("events".parse::<TableName>().is_ok());
        assert!("page_views_2".parse::<TableName>().is_ok());
        for bad in ["", "Events", "1abc", "a-b", "../x", "a b", &"x".repeat(65)] {
            let err = bad.parse::<TableName>().unwrap_err();
            assert!(err.to_string().contains("invalid table name"), "{err}");
        }
        assert!("acme".parse::<TenantId>().is_ok());
    }

    #[test]
    fn node_ids_own_disjoint_position_ranges() {
        let one: NodeId = "1".parse().unwrap();
        let last: NodeId = NodeId::MAX.to_string().parse().unwrap();
        assert_eq!(NodeId::base(None), 0);
        assert_eq!(NodeId::base(Some(one)), 1 << 48);
        assert_eq!(NodeId::base(Some(one)) >> NodeId::SHIFT, 1);
        // The highest position of the last node is still a signed 64-bit
        // integer.
        assert!(NodeId::base(Some(last)) + ((1 << 48) - 1) <= i64::MAX as u64);
        for bad in ["0", "32768", "-1", "x", ""] {
            let err = bad.parse::<NodeId>().unwrap_err();
            assert!(err.contains("from 1 to 32767"), "{err}");
        }
    }

    #[test]
    fn event_ids_are_version_7_distinct_and_ascending() {
        let mut ids = EventIds::new();
        let got: Vec<uuid::Uuid> = (0..1000).map(|_| ids.next_id()).collect();
        for w in got.windows(2) {
            assert!(w[0] < w[1], "{} then {}", w[0], w[1]);
        }
        for id in &got {
            assert_eq!(id.get_version_num(), 7);
            assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let (secs, nanos) = got[0].get_timestamp().unwrap().to_unix();
        let stamped = secs * 1000 + u64::from(nanos) / 1_000_000;
        assert!(now - stamped < 60_000, "stamped {stamped}, now {now}");
        // The largest random start still counts up 2^61 rows without
        // reaching the variant bits.
        let mut top = EventIds::at(now, u128::MAX);
        let first = top.next_id();
        assert_eq!(first.get_variant(), uuid::Variant::RFC4122);
        assert_eq!(first.get_version_num(), 7);
    }
}
