//! Who a request is: its bearer token and the tenant it names, checked
//! once for every interface. Refusals are counted and audited here.

use super::{Error, Kind, Result, Service};
use crate::audit::{AuditEntry, AuditKind};
use crate::auth::{AuthError, Principal};
use crate::ids::TenantId;

/// What a request presents about its caller, as its transport carries it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Credentials<'a> {
    /// The bearer token, without its scheme.
    pub token: Option<&'a str>,
    /// The tenant the request names to act on (`None`: the token's own).
    pub tenant: Option<&'a str>,
}

/// What a refused request was, for the audit log.
#[derive(Debug, Clone, Default)]
pub struct RequestInfo {
    /// The route or call, e.g. `POST /v1/sql` or `flight DoGet`.
    pub action: String,
    pub request_id: Option<String>,
}

/// The name of the credential that names a tenant, in error messages.
pub const TENANT_CREDENTIAL: &str = "x-allsource-tenant";

impl Service {
    /// The caller of a request. Without auth (loopback only, or
    /// `--insecure`) everyone is an admin. Tokens of the admin role may
    /// name any tenant; others only their own.
    pub fn authenticate(
        &self,
        credentials: Credentials<'_>,
        request: RequestInfo,
    ) -> Result<Principal> {
        self.principal(credentials)
            .inspect_err(|e| self.refused(e, request))
    }

    fn principal(&self, credentials: Credentials<'_>) -> Result<Principal> {
        let wanted = match credentials.tenant {
            None => None,
            Some(v) => Some(v.parse::<TenantId>().map_err(|_| {
                Error::invalid(format!(
                    "header {TENANT_CREDENTIAL}: not a valid tenant name"
                ))
            })?),
        };
        let mut principal = match &self.verifier {
            None => Principal::local_admin(TenantId::default_tenant()),
            Some(verifier) => {
                let token = credentials
                    .token
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| {
                        Error::from(AuthError::Unauthenticated(
                            "missing bearer token: send Authorization: Bearer <JWT>".into(),
                        ))
                    })?;
                verifier.verify(token)?
            }
        };
        if let Some(tenant) = wanted
            && tenant != principal.tenant
        {
            if !principal.is_admin() {
                return Err(AuthError::Forbidden(format!(
                    "a {} token may act only on its own tenant",
                    principal.role
                ))
                .into());
            }
            principal.tenant = tenant;
        }
        Ok(principal)
    }

    /// Counts a caller refused by authentication and, when its credentials
    /// were missing, wrong or not enough, writes it to the audit log.
    fn refused(&self, e: &Error, request: RequestInfo) {
        crate::metrics::get()
            .auth_failures
            .with_label_values(&[status_label(e.kind)])
            .inc();
        tracing::info!(kind = ?e.kind, reason = %e.message, "request refused");
        if matches!(e.kind, Kind::Unauthenticated | Kind::Forbidden) {
            self.audit(AuditEntry {
                kind: AuditKind::AuthFailure,
                action: request.action,
                status: status_label(e.kind).parse().unwrap_or(400),
                detail: e.message.clone(),
                request_id: request.request_id,
                ..Default::default()
            });
        }
    }
}

/// The status an authentication refusal is labelled with in metrics and
/// the audit log (the HTTP status, which both have always used).
fn status_label(kind: Kind) -> &'static str {
    match kind {
        Kind::Unauthenticated => "401",
        Kind::Forbidden => "403",
        _ => "400",
    }
}
