//! Skipping buffered batches by position. A query that asks for a range
//! of positions (`position > P`, the read of every live stream, replay and
//! consumer) needs only the buffered batches whose positions reach into
//! it; the others are left out before they are converted to the query's
//! types, which would otherwise cost every such query the whole buffer.

use crate::schema;
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::Int64Type;
use datafusion::logical_expr::{Between, BinaryExpr, Expr, Operator};
use datafusion::scalar::ScalarValue;

/// The positions a set of conjunctive filters allows, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Range {
    pub(crate) lowest: i64,
    pub(crate) highest: i64,
}

impl Range {
    const ALL: Range = Range {
        lowest: i64::MIN,
        highest: i64::MAX,
    };

    /// The range `filters` (each one must hold) allow.
    pub(crate) fn of(filters: &[Expr]) -> Range {
        let mut range = Range::ALL;
        for f in filters {
            range.narrow(f);
        }
        range
    }

    fn narrow(&mut self, filter: &Expr) {
        match filter {
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                if *op == Operator::And {
                    self.narrow(left);
                    self.narrow(right);
                    return;
                }
                let (op, value) = match (
                    is_position(left),
                    number(right),
                    is_position(right),
                    number(left),
                ) {
                    (true, Some(v), _, _) => (*op, v),
                    // `5 < position` is `position > 5`.
                    (_, _, true, Some(v)) => match op.swap() {
                        Some(op) => (op, v),
                        None => return,
                    },
                    _ => return,
                };
                match op {
                    Operator::Gt => self.lowest = self.lowest.max(value.saturating_add(1)),
                    Operator::GtEq => self.lowest = self.lowest.max(value),
                    Operator::Lt => self.highest = self.highest.min(value.saturating_sub(1)),
                    Operator::LtEq => self.highest = self.highest.min(value),
                    Operator::Eq => {
                        self.lowest = self.lowest.max(value);
                        self.highest = self.highest.min(value);
                    }
                    _ => {}
                }
            }
            Expr::Between(Between {
                expr,
                negated: false,
                low,
                high,
            }) if is_position(expr) => {
                if let (Some(lo), Some(hi)) = (number(low), number(high)) {
                    self.lowest = self.lowest.max(lo);
                    self.highest = self.highest.min(hi);
                }
            }
            _ => {}
        }
    }

    /// The batches of `buffer` that may hold a position in the range.
    /// The buffer is in position order (batches are appended in the
    /// order of their positions, each batch's ascending), so the batches
    /// wholly below the range are found by bisection, from each batch's
    /// first and last row; a batch without positions is always kept.
    pub(crate) fn select<'a>(&self, buffer: &'a [RecordBatch]) -> Vec<&'a RecordBatch> {
        if *self == Range::ALL {
            return buffer.iter().collect();
        }
        let rows: Vec<&RecordBatch> = buffer.iter().filter(|b| b.num_rows() > 0).collect();
        let Some(ends) = rows.iter().map(|b| ends(b)).collect::<Option<Vec<_>>>() else {
            return buffer.iter().collect();
        };
        let from = ends.partition_point(|(_, last)| *last < self.lowest);
        rows[from..]
            .iter()
            .zip(&ends[from..])
            .take_while(|(_, (first, _))| *first <= self.highest)
            .filter(|(_, (first, last))| *last >= self.lowest && *first <= self.highest)
            .map(|(b, _)| *b)
            .collect()
    }
}

/// A buffered batch's first and last position (the stored shape keeps it
/// at [`schema::POSITION_INDEX`]); `None` when it has none. The batch has
/// rows.
fn ends(batch: &RecordBatch) -> Option<(i64, i64)> {
    let column = batch.columns().get(schema::POSITION_INDEX)?;
    if batch.schema_ref().field(schema::POSITION_INDEX).name() != schema::POSITION {
        return None;
    }
    let positions = column.as_primitive_opt::<Int64Type>()?;
    let last = positions.len() - 1;
    (positions.is_valid(0) && positions.is_valid(last))
        .then(|| (positions.value(0), positions.value(last)))
}

fn is_position(e: &Expr) -> bool {
    matches!(e, Expr::Column(c) if c.name == schema::POSITION)
}

/// An integer literal, possibly under a cast.
fn number(e: &Expr) -> Option<i64> {
    match e {
        Expr::Literal(v, _) => match v {
            ScalarValue::Int8(Some(n)) => Some(i64::from(*n)),
            ScalarValue::Int16(Some(n)) => Some(i64::from(*n)),
            ScalarValue::Int32(Some(n)) => Some(i64::from(*n)),
            ScalarValue::Int64(Some(n)) => Some(*n),
            ScalarValue::UInt8(Some(n)) => Some(i64::from(*n)),
            ScalarValue::UInt16(Some(n)) => Some(i64::from(*n)),
            ScalarValue::UInt32(Some(n)) => Some(i64::from(*n)),
            ScalarValue::UInt64(Some(n)) => i64::try_from(*n).ok(),
            _ => None,
        },
        Expr::Cast(c) => number(&c.expr),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::prelude::{col, lit};
    use std::sync::Arc;

    /// A batch of the stored shape's first columns, `position` at its
    /// place.
    fn batch(positions: &[i64]) -> RecordBatch {
        let mut fields: Vec<Field> = (0..schema::POSITION_INDEX)
            .map(|i| Field::new(format!("c{i}"), DataType::Int64, true))
            .collect();
        fields.push(Field::new(schema::POSITION, DataType::Int64, true));
        let columns = fields
            .iter()
            .map(|_| Arc::new(Int64Array::from(positions.to_vec())) as _)
            .collect();
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap()
    }

    #[test]
    fn ranges_follow_the_position_conditions_only() {
        let p = || col(schema::POSITION);
        assert_eq!(
            Range::of(&[p().gt(lit(10i64)), p().lt_eq(lit(20i64))]),
            Range {
                lowest: 11,
                highest: 20
            }
        );
        assert_eq!(
            Range::of(&[lit(10i64).lt(p()).and(col("x").gt(lit(1)))]),
            Range {
                lowest: 11,
                highest: i64::MAX
            }
        );
        assert_eq!(
            Range::of(&[p().between(lit(3i64), lit(4i64))]),
            Range {
                lowest: 3,
                highest: 4
            }
        );
        // An OR or another column says nothing.
        assert_eq!(
            Range::of(&[
                p().gt(lit(10i64)).or(p().lt(lit(2i64))),
                col("x").gt(lit(5))
            ]),
            Range::ALL
        );
        let buffer = [
            batch(&[1, 2, 3]),
            batch(&[4, 5]),
            batch(&[]),
            batch(&[6, 7, 8]),
            batch(&[9]),
        ];
        let firsts =
            |kept: Vec<&RecordBatch>| -> Vec<usize> { kept.iter().map(|b| b.num_rows()).collect() };
        let r = Range::of(&[p().gt(lit(4i64)), p().lt_eq(lit(7i64))]);
        assert_eq!(
            firsts(r.select(&buffer)),
            vec![2, 3],
            "[4, 5] and [6, 7, 8]"
        );
        assert_eq!(firsts(Range::ALL.select(&buffer)), vec![3, 2, 0, 3, 1]);
        let above = Range::of(&[p().gt(lit(9i64))]);
        assert!(above.select(&buffer).is_empty());
    }
}
