//! The audit log: authentication failures, admin actions and refused DDL,
//! stored as events in the `audit` table of the reserved `system` tenant
//! (so it is durable, compacted and retained like any table) and read by
//! admins as `system.audit`.

use crate::db::Database;
use crate::ids::{TableName, TenantId};
use crate::ingest::Event;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde_json::{Map, Value};
use std::num::NonZeroU32;
use std::sync::Arc;

/// The table holding the log, under [`crate::auth::SYSTEM_TENANT`].
pub const AUDIT_TABLE: &str = "audit";

/// The tenant and table of the log.
pub fn location() -> (TenantId, TableName) {
    (
        crate::auth::SYSTEM_TENANT
            .parse()
            .expect("the system tenant name is valid"),
        AUDIT_TABLE.parse().expect("the audit table name is valid"),
    )
}

/// What kind of thing an audit record records: its event type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AuditKind {
    /// A request refused by authentication (401, 403).
    AuthFailure,
    /// An admin action.
    #[default]
    Admin,
    /// A statement refused because it would change something.
    DdlRefused,
    /// The server started.
    ServerStart,
    /// Requests a policy refused (403, or 429 for a quota), merged: one
    /// record counts the same refusal repeated within a second.
    PolicyDenied,
}

impl AuditKind {
    /// The event type the record is stored with.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditKind::AuthFailure => "auth_failure",
            AuditKind::Admin => "admin",
            AuditKind::DdlRefused => "ddl_refused",
            AuditKind::ServerStart => "server_start",
            AuditKind::PolicyDenied => "policy_denied",
        }
    }
}

/// What happened, as one audit event.
#[derive(Debug, Clone, Default)]
pub struct AuditEntry {
    /// The event type.
    pub kind: AuditKind,
    /// The token's subject, or `anonymous`: the entity id.
    pub actor: Option<String>,
    pub tenant: Option<String>,
    pub role: Option<String>,
    /// The route or statement, e.g. `POST /v1/admin/compact`.
    pub action: String,
    pub status: u16,
    pub detail: String,
    pub request_id: Option<String>,
    /// How many requests the record stands for, when it merges several.
    pub count: Option<u64>,
}

/// Writes audit records into the log of one database. The rate of
/// failure and refusal records (any status of 400 or more: bad tokens,
/// refused DDL) is bounded, so a flood of them cannot flood the log (or
/// the disk); successful admin actions are always recorded.
#[derive(Debug)]
pub struct Auditor {
    db: Arc<Database>,
    refusals: DefaultDirectRateLimiter,
    denials: Arc<DenialLog>,
}

impl AuditEntry {
    /// An entry for something `caller` did.
    pub fn by(
        caller: &crate::auth::Principal,
        kind: AuditKind,
        action: String,
        status: u16,
        detail: String,
    ) -> Self {
        AuditEntry {
            kind,
            actor: caller.subject.clone(),
            tenant: Some(caller.tenant.to_string()),
            role: Some(caller.role.to_string()),
            action,
            status,
            detail,
            request_id: None,
            count: None,
        }
    }

    fn into_event(self) -> Event {
        let mut payload = Map::new();
        let mut put = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                payload.insert(k.to_string(), Value::String(v));
            }
        };
        put("tenant", self.tenant);
        put("role", self.role);
        put("action", Some(self.action));
        put("detail", Some(self.detail));
        put("request_id", self.request_id);
        payload.insert("status".into(), Value::from(self.status));
        if let Some(count) = self.count {
            payload.insert("count".into(), Value::from(count));
        }
        Event {
            event_id: None,
            event_type: self.kind.as_str().to_string(),
            entity_id: self.actor.unwrap_or_else(|| "anonymous".into()),
            timestamp: None,
            payload,
            expected_version: Default::default(),
            schema_version: None,
        }
    }
}

impl AuditEntry {
    /// Whether the entry records something refused or failed, which one
    /// caller can produce as fast as it can send requests.
    fn is_refusal(&self) -> bool {
        self.status >= 400
    }
}

/// Counts an audit record not written, and why.
fn dropped(reason: &str) {
    crate::metrics::get()
        .audit_dropped
        .with_label_values(&[reason])
        .inc();
}

impl Auditor {
    /// Refusal records written per second, at most.
    const REFUSALS_PER_SECOND: u32 = 50;

    pub fn new(db: Arc<Database>) -> Self {
        let per_second = NonZeroU32::new(Self::REFUSALS_PER_SECOND).expect("non-zero");
        Auditor {
            denials: Arc::new(DenialLog::new(db.clone())),
            db,
            refusals: RateLimiter::direct(Quota::per_second(per_second)),
        }
    }

    /// Where policy refusals are recorded.
    pub fn denials(&self) -> &Arc<DenialLog> {
        &self.denials
    }

    /// Records `entry` in the audit log in the background, never holding
    /// up the request. Refusals past 50 a second, and any record while the
    /// ingest buffers are over `--max-buffer-bytes`, are only counted
    /// (metric `allsource_audit_dropped_total{reason}`).
    pub fn record(&self, entry: AuditEntry) {
        if entry.is_refusal() && self.refusals.check().is_err() {
            dropped("rate");
            return;
        }
        if self.db.buffered_bytes() >= self.db.config().max_buffer_bytes {
            dropped("buffer_full");
            return;
        }
        write(self.db.clone(), vec![entry.into_event()]);
    }
}

/// Stores `events` in the log in the background.
fn write(db: Arc<Database>, events: Vec<Event>) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        dropped("error");
        return;
    };
    let (tenant, table) = location();
    runtime.spawn(async move {
        // The same admission as clients' ingest: a buffer that filled up
        // meanwhile refuses the record too.
        match db.ingest(&tenant, &table, events).await {
            Ok(_) => {}
            Err(crate::db::Error::BufferFull { .. }) => dropped("buffer_full"),
            Err(e) => {
                dropped("error");
                tracing::warn!(error = %e, "could not write an audit record");
            }
        }
    });
}

/// Policy refusals, every one counted in a record: the same refusal
/// (caller, action and reason) repeated within a second is one record
/// with its `count`; past [`DenialLog::RECORDS_PER_SECOND`] different
/// ones in a second, the rest are counted together in one more record.
#[derive(Debug)]
pub struct DenialLog {
    db: Arc<Database>,
    /// The refusals of the current second, with their counts, in order;
    /// `None` when no second is open.
    pending: parking_lot::Mutex<Option<Vec<(AuditEntry, u64)>>>,
}

impl DenialLog {
    /// Records written per second, at most (one more counts the rest).
    pub const RECORDS_PER_SECOND: usize = 200;

    fn new(db: Arc<Database>) -> Self {
        DenialLog {
            db,
            pending: Default::default(),
        }
    }

    /// Records one refusal: `entry.kind` is set to
    /// [`AuditKind::PolicyDenied`].
    pub fn record(self: &Arc<Self>, mut entry: AuditEntry) {
        entry.kind = AuditKind::PolicyDenied;
        crate::metrics::get()
            .policy_denials
            .with_label_values(&[
                entry.tenant.as_deref().unwrap_or(""),
                entry.action.split(' ').next().unwrap_or(""),
            ])
            .inc();
        let mut pending = self.pending.lock();
        let open = pending.is_some();
        let list = pending.get_or_insert_with(Vec::new);
        let same = |(e, _): &&mut (AuditEntry, u64)| {
            e.actor == entry.actor
                && e.tenant == entry.tenant
                && e.role == entry.role
                && e.action == entry.action
                && e.status == entry.status
                && e.detail == entry.detail
        };
        match list.iter_mut().find(same) {
            Some((_, n)) => *n += 1,
            None => list.push((entry, 1)),
        }
        if !open {
            let log = self.clone();
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    log.flush();
                });
            }
        }
    }

    /// Writes the second's records.
    fn flush(&self) {
        let Some(list) = self.pending.lock().take() else {
            return;
        };
        let mut events: Vec<Event> = Vec::new();
        let (mut rest, mut callers) = (0u64, std::collections::BTreeSet::new());
        for (i, (mut entry, n)) in list.into_iter().enumerate() {
            if i < Self::RECORDS_PER_SECOND {
                entry.count = Some(n);
                events.push(entry.into_event());
            } else {
                rest += n;
                callers.insert((entry.tenant.clone(), entry.actor.clone()));
            }
        }
        if rest > 0 {
            events.push(
                AuditEntry {
                    kind: AuditKind::PolicyDenied,
                    action: "many".into(),
                    status: 403,
                    detail: format!(
                        "{rest} more refusals of {} callers, not itemised",
                        callers.len()
                    ),
                    count: Some(rest),
                    ..Default::default()
                }
                .into_event(),
            );
        }
        if self.db.buffered_bytes() >= self.db.config().max_buffer_bytes {
            dropped("buffer_full");
            return;
        }
        write(self.db.clone(), events);
    }
}
