//! PostgreSQL's catalog for the sessions of the wire protocol: the
//! `pg_catalog` tables (`pg_class`, `pg_attribute`, `pg_namespace`, ...)
//! and the functions `psql`'s `\d` and BI tools call
//! (`pg_table_is_visible`, `format_type`, ...), from `datafusion-pg-catalog`.
//!
//! The tables describe what the caller's own session sees, so a tenant
//! sees its own tables (as far as its policies let it) and nothing else.
//! Each caller keeps one catalog from query to query: it numbers tables
//! (their oids) as it first meets them, and clients look a table up by
//! the oid an earlier query gave them.

use super::engine::QueryEngine;
use crate::auth::Principal;
use datafusion::catalog::SchemaProvider;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::prelude::SessionContext;
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::{
    self as pg, PgCatalogSchemaProvider, PgCatalogStaticTables,
    context::{PgCatalogContextProvider, Role},
};
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

/// Most callers whose catalogs are kept; past it they are all dropped
/// (their next query numbers tables afresh).
const MAX_CALLERS: usize = 1024;

/// The catalogs kept, by caller.
#[derive(Debug, Default)]
pub(super) struct PgCatalogs {
    by_caller: parking_lot::Mutex<HashMap<CallerKey, Arc<dyn SchemaProvider>>>,
}

/// What a caller's catalog depends on: the tenant, the role and the
/// subject its policies are decided for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct CallerKey(String, String, Option<String>);

impl CallerKey {
    fn of(caller: &Principal) -> Self {
        CallerKey(
            caller.tenant.to_string(),
            caller.role.to_string(),
            caller.subject.clone(),
        )
    }
}

/// The built-in tables (`pg_type`, `pg_proc`, ...), decoded once.
fn static_tables() -> Result<Arc<PgCatalogStaticTables>> {
    static TABLES: OnceLock<Arc<PgCatalogStaticTables>> = OnceLock::new();
    if let Some(t) = TABLES.get() {
        return Ok(t.clone());
    }
    let tables = Arc::new(PgCatalogStaticTables::try_new()?);
    Ok(TABLES.get_or_init(|| tables).clone())
}

/// The roles `pg_catalog.pg_roles` lists: the caller's own, and nobody
/// else's.
#[derive(Debug, Clone)]
struct Caller {
    name: String,
    admin: bool,
}

#[async_trait::async_trait]
impl PgCatalogContextProvider for Caller {
    async fn roles(&self) -> Vec<String> {
        vec![self.name.clone()]
    }

    async fn role(&self, name: &str) -> Option<Role> {
        (name == self.name).then(|| Role {
            name: self.name.clone(),
            is_superuser: self.admin,
            can_login: true,
            can_create_db: false,
            can_create_role: false,
            can_create_user: false,
            can_replication: false,
            grants: Vec::new(),
            inherited_roles: Vec::new(),
        })
    }
}

/// `caller`'s catalog, built over a session of its own (without a
/// `pg_catalog`) the first time.
fn catalog_of(engine: &QueryEngine, caller: &Principal) -> Result<Arc<dyn SchemaProvider>> {
    let key = CallerKey::of(caller);
    if let Some(found) = engine.pg_catalogs().by_caller.lock().get(&key) {
        return Ok(found.clone());
    }
    // The tenant's schemas read the database as it is at each call, so
    // this session's catalog list serves every later query.
    let own = super::session_with(engine, caller, &super::QueryOptions::default())?;
    let provider = Caller {
        name: caller
            .subject
            .clone()
            .unwrap_or_else(|| caller.tenant.to_string()),
        admin: caller.is_admin(),
    };
    let catalog: Arc<dyn SchemaProvider> = Arc::new(PgCatalogSchemaProvider::try_new(
        own.state().catalog_list().clone(),
        static_tables()?,
        provider,
    )?);
    let mut kept = engine.pg_catalogs().by_caller.lock();
    if kept.len() >= MAX_CALLERS {
        kept.clear();
    }
    Ok(kept.entry(key).or_insert(catalog).clone())
}

/// Adds `caller`'s `pg_catalog` and the functions PostgreSQL's clients
/// call to `ctx`, a session of `caller`.
pub(super) fn install(
    engine: &QueryEngine,
    ctx: &SessionContext,
    caller: &Principal,
) -> Result<()> {
    let catalog = ctx
        .catalog(super::CATALOG)
        .ok_or_else(|| DataFusionError::Internal("the session has no catalog".into()))?;
    catalog.register_schema("pg_catalog", catalog_of(engine, caller)?)?;
    let privilege = pg::has_privilege_udf::create_has_privilege_udf;
    for f in [
        pg::create_current_database_udf(super::CATALOG),
        pg::create_current_schema_udf(),
        pg::create_current_schemas_udf(),
        pg::create_pg_get_userbyid_udf(),
        privilege("has_table_privilege"),
        privilege("has_schema_privilege"),
        privilege("has_database_privilege"),
        privilege("has_any_column_privilege"),
        pg::create_pg_table_is_visible(),
        pg::format_type::create_format_type_udf(),
        pg::create_session_user_udf(),
        pg::pg_get_expr_udf::create_pg_get_expr_udf(),
        pg::create_pg_get_partkeydef_udf(),
        pg::create_pg_relation_is_publishable_udf(),
        pg::create_pg_get_statisticsobjdef_columns_udf(),
        pg::create_pg_encoding_to_char_udf(),
        pg::create_pg_backend_pid_udf(),
        pg::create_pg_relation_size_udf(),
        pg::create_pg_total_relation_size_udf(),
        pg::create_pg_stat_get_numscans(),
        pg::create_pg_get_constraintdef(),
        pg::create_pg_get_partition_ancestors_udf(),
        pg::quote_ident_udf::create_quote_ident_udf(),
        pg::quote_ident_udf::create_parse_ident_udf(),
        pg::array_bounds_udf::create_array_upper_udf(),
        pg::array_bounds_udf::create_array_lower_udf(),
    ] {
        ctx.register_udf(f);
    }
    // PostgreSQL's oid types (`regclass`, `regtype`, ...) as integers, so
    // that clients' casts to them plan.
    let state = ctx.state_ref();
    let existing = state.read().clone();
    *state.write() = SessionStateBuilder::new_from_existing(existing)
        .with_type_planner(Arc::new(pg::oid_type_planner::PgOidTypePlanner))
        .build();
    // `generate_series` and `range` over PostgreSQL's 4-byte integers,
    // around the (bounded) functions already registered.
    pg::generate_series_arg_coercion::CoerceIntArgsToBigInt::widen(ctx);
    Ok(())
}
