//! Reading one entity's stored events from the table's entity copy
//! (`storage::entities`): a scan with `entity_id = '…'` among its filters
//! reads the events up to the copy's covered position from the entity's
//! bucket of the copy (a few files, each sorted by entity) and only the
//! events above it from the table's files, instead of every daily file.

use crate::schema::{ENTITY_ID, POSITION, TIMESTAMP};
use crate::storage::entities::{BUCKET_COLUMN, EntityCopy, bucket_of};
use arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::catalog::Session;
use datafusion::common::DFSchema;
use datafusion::error::Result;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::prelude::{col, lit};
use datafusion::scalar::ScalarValue;
use std::sync::Arc;

/// The entity `filters` (each one must hold) restrict a scan to, when one
/// of them is `entity_id = <text>`.
pub(crate) fn entity_of(filters: &[Expr]) -> Option<String> {
    filters.iter().find_map(entity_in)
}

fn entity_in(filter: &Expr) -> Option<String> {
    let Expr::BinaryExpr(BinaryExpr { left, op, right }) = filter else {
        return None;
    };
    match op {
        Operator::And => entity_in(left).or_else(|| entity_in(right)),
        Operator::Eq => match (left.as_ref(), right.as_ref()) {
            (Expr::Column(c), Expr::Literal(v, _)) | (Expr::Literal(v, _), Expr::Column(c))
                if c.name == ENTITY_ID =>
            {
                v.try_as_str().flatten().map(str::to_string)
            }
            _ => None,
        },
        _ => None,
    }
}

/// The filters that read `entity`'s bucket of `copy`, hiding the events
/// retention deleted from the table (`keep`, to apply to the rows), and
/// the filter to add to the table's own scan (`position > covered`).
pub(crate) struct Split {
    pub(crate) copy_filters: Vec<Expr>,
    pub(crate) copy_keep: Option<Expr>,
    pub(crate) table_keep: Expr,
}

/// `value` as a literal of the type `schema` gives column `name`.
pub(crate) fn typed_lit(schema: &Schema, name: &str, value: ScalarValue) -> Result<Expr> {
    Ok(lit(
        value.cast_to(schema.field_with_name(name)?.data_type())?
    ))
}

/// How a scan of `schema` with `filters` for `entity` splits between
/// `copy` and the table's files.
pub(crate) fn split(
    copy: &EntityCopy,
    schema: &Schema,
    filters: &[Expr],
    entity: &str,
) -> Result<Split> {
    let typed = |name: &str, value: ScalarValue| typed_lit(schema, name, value);
    let mut copy_filters = filters.to_vec();
    copy_filters.push(col(BUCKET_COLUMN).eq(lit(bucket_of(entity))));
    let copy_keep = match copy.hidden_before {
        0 => None,
        before => Some(col(TIMESTAMP).gt_eq(typed(
            TIMESTAMP,
            ScalarValue::TimestampMicrosecond(Some(before), Some("UTC".into())),
        )?)),
    };
    let covered = i64::try_from(copy.covered).unwrap_or(i64::MAX);
    let table_keep = col(POSITION).gt(typed(POSITION, ScalarValue::Int64(Some(covered)))?);
    Ok(Split {
        copy_filters,
        copy_keep,
        table_keep,
    })
}

/// `plan` (a scan of `wide`, whose first fields are `projected`'s) with
/// only the rows `keep` holds for, and only `projected`'s columns.
pub(crate) fn keep_rows(
    plan: Arc<dyn ExecutionPlan>,
    state: &dyn Session,
    wide: &SchemaRef,
    projected: &SchemaRef,
    keep: Expr,
) -> Result<Arc<dyn ExecutionPlan>> {
    let df_schema = DFSchema::try_from(wide.as_ref().clone())?;
    let predicate = state.create_physical_expr(keep, &df_schema)?;
    let filtered = Arc::new(FilterExec::try_new(predicate, plan)?);
    let exprs = projected
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            (
                Arc::new(Column::new(f.name(), i))
                    as Arc<dyn datafusion::physical_expr::PhysicalExpr>,
                f.name().clone(),
            )
        })
        .collect::<Vec<_>>();
    Ok(Arc::new(ProjectionExec::try_new(exprs, filtered)?))
}

/// `projected` with the columns `keep` reads appended (from `table`) when
/// it lacks them.
pub(crate) fn widened(projected: &SchemaRef, table: &Schema, keep: &Expr) -> Result<SchemaRef> {
    let mut fields: Vec<Field> = projected
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    for c in keep.column_refs() {
        if projected.field_with_name(&c.name).is_err() {
            fields.push(table.field_with_name(&c.name)?.clone());
        }
    }
    Ok(Arc::new(Schema::new(fields)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entity_equality_is_found_among_the_filters() {
        let f = col(ENTITY_ID).eq(lit("u42"));
        assert_eq!(entity_of(std::slice::from_ref(&f)), Some("u42".to_string()));
        assert_eq!(
            entity_of(&[lit("u7").eq(col(ENTITY_ID))]),
            Some("u7".to_string())
        );
        let both = col("x").gt(lit(1)).and(f);
        assert_eq!(entity_of(&[both]), Some("u42".to_string()));
        assert_eq!(entity_of(&[col(ENTITY_ID).gt(lit("u42"))]), None);
        assert_eq!(entity_of(&[col("other").eq(lit("u42"))]), None);
        let either = col(ENTITY_ID).eq(lit("a")).or(col(ENTITY_ID).eq(lit("b")));
        assert_eq!(entity_of(&[either]), None);
        assert_eq!(
            entity_of(&[col(ENTITY_ID).eq(lit(ScalarValue::Utf8(None)))]),
            None
        );
    }
}
