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
}
