//! What each tenant's PostgreSQL connections hold: how many are open
//! (`--pg-max-connections`), and the bytes of their prepared statements
//! (`--max-prepared-bytes`, as for Flight SQL).

use crate::ids::TenantId;
use std::collections::HashMap;
use std::sync::Arc;

/// Most prepared statements one connection may hold.
pub(super) const MAX_STATEMENTS: usize = 1000;

#[derive(Debug, Default, Clone, Copy)]
struct Usage {
    connections: usize,
    prepared_bytes: usize,
}

/// Every tenant's open connections.
#[derive(Debug)]
pub(super) struct TenantConnections {
    usage: parking_lot::Mutex<HashMap<TenantId, Usage>>,
    max_per_tenant: usize,
}

impl TenantConnections {
    pub(super) fn new(max_per_tenant: usize) -> Self {
        TenantConnections {
            usage: Default::default(),
            max_per_tenant,
        }
    }

    /// A connection for `tenant`, unless it holds as many as it may.
    pub(super) fn open(self: &Arc<Self>, tenant: &TenantId) -> Result<Slot, String> {
        let mut usage = self.usage.lock();
        let held = usage.entry(tenant.clone()).or_default();
        if held.connections >= self.max_per_tenant {
            return Err(format!(
                "tenant {tenant} has {} PostgreSQL connections open, as many as it may (--pg-max-connections); close one first",
                held.connections
            ));
        }
        held.connections += 1;
        Ok(Slot {
            tenants: self.clone(),
            tenant: tenant.clone(),
            statements: HashMap::new(),
        })
    }
}

/// One open connection of a tenant and its named prepared statements;
/// dropping it closes them and frees the connection.
#[derive(Debug)]
pub(super) struct Slot {
    tenants: Arc<TenantConnections>,
    tenant: TenantId,
    /// The bytes of each prepared statement, by name.
    statements: HashMap<String, usize>,
}

impl Slot {
    /// Counts a statement called `name` of `bytes` (replacing one of the
    /// same name), within what the connection and the tenant may hold.
    pub(super) fn prepare(
        &mut self,
        name: &str,
        bytes: usize,
        max_bytes: usize,
    ) -> Result<(), String> {
        let replaced = self.statements.get(name).copied();
        if replaced.is_none() && self.statements.len() >= MAX_STATEMENTS {
            return Err(format!(
                "this connection holds {MAX_STATEMENTS} prepared statements; DEALLOCATE some first"
            ));
        }
        let mut usage = self.tenants.usage.lock();
        let held = usage.entry(self.tenant.clone()).or_default();
        let after = held.prepared_bytes - replaced.unwrap_or(0) + bytes;
        if after > max_bytes {
            return Err(format!(
                "this tenant's prepared statements would hold {after} bytes, over the {max_bytes} it may (--max-prepared-bytes); DEALLOCATE some first"
            ));
        }
        held.prepared_bytes = after;
        self.statements.insert(name.to_string(), bytes);
        Ok(())
    }

    /// The names of the prepared statements held.
    pub(super) fn names(&self) -> Vec<String> {
        self.statements.keys().cloned().collect()
    }

    /// Forgets the statement called `name`.
    pub(super) fn close(&mut self, name: &str) {
        if let Some(bytes) = self.statements.remove(name) {
            let mut usage = self.tenants.usage.lock();
            if let Some(held) = usage.get_mut(&self.tenant) {
                held.prepared_bytes -= bytes;
            }
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let bytes: usize = self.statements.values().sum();
        let mut usage = self.tenants.usage.lock();
        if let Some(held) = usage.get_mut(&self.tenant) {
            held.connections -= 1;
            held.prepared_bytes -= bytes;
            if held.connections == 0 {
                usage.remove(&self.tenant);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_and_statement_bytes_are_capped_and_given_back() {
        let tenants = Arc::new(TenantConnections::new(2));
        let acme: TenantId = "acme".parse().unwrap();
        let mut a = tenants.open(&acme).unwrap();
        let b = tenants.open(&acme).unwrap();
        assert!(
            tenants
                .open(&acme)
                .unwrap_err()
                .contains("--pg-max-connections")
        );
        a.prepare("s1", 60, 100).unwrap();
        // Replacing a statement counts only the new one.
        a.prepare("s1", 70, 100).unwrap();
        assert!(
            a.prepare("s2", 40, 100)
                .unwrap_err()
                .contains("--max-prepared-bytes")
        );
        a.close("s1");
        a.prepare("s2", 40, 100).unwrap();
        drop(b);
        drop(a);
        assert!(tenants.usage.lock().is_empty());
        let mut c = tenants.open(&acme).unwrap();
        c.prepare("s3", 100, 100).unwrap();
    }
}
