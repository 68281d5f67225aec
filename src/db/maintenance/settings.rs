//! Per-table maintenance settings (retention, schedule), kept in
//! `<data-dir>/table-settings.json`, and the bounds they are held to.

use super::super::Table;
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Write;

pub use crate::config::{MAX_RETENTION, parse_retention};

/// A table's own maintenance settings; unset fields follow the server's
/// flags. Values are humantime durations ("30days", "1h").
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance_interval: Option<String>,
}

impl TableSettings {
    /// Checks the values; the error names the field.
    pub fn validate(&self) -> std::result::Result<(), String> {
        for (field, value) in [
            ("retention", &self.retention),
            ("maintenance_interval", &self.maintenance_interval),
        ] {
            if let Some(v) = value
                && let Err(e) = humantime::parse_duration(v)
            {
                return Err(format!(
                    "{field}: {v:?} is not a duration like \"30days\" or \"1h\" ({e})"
                ));
            }
        }
        if let Some(v) = &self.retention {
            parse_retention(v).map_err(|e| format!("retention: {v:?} is {e}"))?;
        }
        if self
            .maintenance_interval
            .as_deref()
            .and_then(|v| humantime::parse_duration(v).ok())
            == Some(std::time::Duration::ZERO)
        {
            return Err("maintenance_interval: must be longer than 0".into());
        }
        Ok(())
    }

    pub(super) fn duration(v: &Option<String>) -> Option<std::time::Duration> {
        v.as_deref().and_then(|v| humantime::parse_duration(v).ok())
    }
}

/// Every table's settings, kept in `<data-dir>/table-settings.json`.
#[derive(Debug)]
pub struct SettingsStore {
    path: std::path::PathBuf,
    map: parking_lot::Mutex<BTreeMap<String, TableSettings>>,
}

impl SettingsStore {
    pub(crate) fn load(path: std::path::PathBuf) -> SettingsStore {
        let map = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        SettingsStore {
            path,
            map: parking_lot::Mutex::new(map),
        }
    }

    /// A table's settings.
    pub fn get(&self, table: &Table) -> TableSettings {
        self.map
            .lock()
            .get(&table.label())
            .cloned()
            .unwrap_or_default()
    }

    /// Replaces a table's settings, durably (write, fsync, rename).
    pub fn set(&self, table: &Table, settings: TableSettings) -> std::io::Result<()> {
        let mut map = self.map.lock();
        let mut next = map.clone();
        if settings == TableSettings::default() {
            next.remove(&table.label());
        } else {
            next.insert(table.label(), settings);
        }
        let tmp = self.path.with_extension("json.tmp");
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(
                serde_json::to_string_pretty(&next)
                    .unwrap_or_default()
                    .as_bytes(),
            )?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        *map = next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_is_bounded() {
        assert_eq!(
            parse_retention("1000years"),
            Ok(MAX_RETENTION),
            "the maximum itself is accepted"
        );
        let e = parse_retention("1001years").unwrap_err();
        assert_eq!(e, "longer than the maximum, 1000years");
        let settings = TableSettings {
            retention: Some("300000years".into()),
            maintenance_interval: None,
        };
        assert_eq!(
            settings.validate().unwrap_err(),
            "retention: \"300000years\" is longer than the maximum, 1000years"
        );
    }
}
