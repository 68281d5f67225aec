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

    /// Whether `batch` (a buffered batch, in the stored shape) may hold a
    /// position in the range. Rows without a position always may.
    pub(crate) fn may_hold(&self, batch: &RecordBatch) -> bool {
        if *self == Range::ALL {
            return true;
        }
        let Some(positions) = batch
            .column_by_name(schema::POSITION)
            .and_then(|c| c.as_primitive_opt::<Int64Type>())
        else {
            return true;
        };
        if positions.null_count() > 0 {
            return true;
        }
        match (
            arrow::compute::min(positions),
            arrow::compute::max(positions),
        ) {
            (Some(lo), Some(hi)) => hi >= self.lowest && lo <= self.highest,
            _ => true,
        }
    }
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

    fn batch(positions: &[i64]) -> RecordBatch {
        RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new(
                schema::POSITION,
                DataType::Int64,
                true,
            )])),
            vec![Arc::new(Int64Array::from(positions.to_vec()))],
        )
        .unwrap()
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
        let r = Range::of(&[p().gt(lit(10i64))]);
        assert!(!r.may_hold(&batch(&[1, 5, 10])));
        assert!(r.may_hold(&batch(&[9, 10, 11])));
        assert!(r.may_hold(&batch(&[])));
    }
}
