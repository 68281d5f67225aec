//! `entity_partition(key, n)`: which of `n` parts a key (an entity id)
//! falls in, from 0 to n - 1, by a hash that does not change between
//! versions or processes. Consumer groups share a table's events among
//! their members with it; users may call it too, to see where an entity
//! goes.

use arrow::array::{Array, ArrayRef, AsArray, Int32Array};
use arrow::datatypes::DataType;
use datafusion::common::{Result, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature,
    Volatility,
};
use std::sync::Arc;

/// The function's name in SQL.
pub const NAME: &str = "entity_partition";

/// The part of `n` that `key` falls in.
pub fn part_of(key: &[u8], n: u32) -> u32 {
    (xxhash_rust::xxh3::xxh3_64(key) % u64::from(n.max(1))) as u32
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct EntityPartition {
    signature: Signature,
}

/// The function, to register in a session.
pub fn udf() -> ScalarUDF {
    let strings = [DataType::Utf8View, DataType::Utf8, DataType::LargeUtf8];
    let signature = Signature::one_of(
        strings
            .into_iter()
            .map(|s| TypeSignature::Exact(vec![s, DataType::Int64]))
            .collect(),
        Volatility::Immutable,
    );
    ScalarUDF::new_from_impl(EntityPartition { signature })
}

impl ScalarUDFImpl for EntityPartition {
    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Int32)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [key, n] = args.args.as_slice() else {
            return plan_err!("{NAME} takes a key and a number of parts");
        };
        let n = match n {
            ColumnarValue::Scalar(ScalarValue::Int64(Some(n)))
                if (1..=i32::MAX as i64).contains(n) =>
            {
                *n as u32
            }
            _ => {
                return exec_err!(
                    "{NAME}: the number of parts must be a constant from 1 to {}",
                    i32::MAX
                );
            }
        };
        let keys = key.to_array(args.number_rows)?;
        let parts: Int32Array = match keys.data_type() {
            DataType::Utf8View => keys
                .as_string_view()
                .iter()
                .map(|k| k.map(|k| part_of(k.as_bytes(), n) as i32))
                .collect(),
            DataType::Utf8 => keys
                .as_string::<i32>()
                .iter()
                .map(|k| k.map(|k| part_of(k.as_bytes(), n) as i32))
                .collect(),
            DataType::LargeUtf8 => keys
                .as_string::<i64>()
                .iter()
                .map(|k| k.map(|k| part_of(k.as_bytes(), n) as i32))
                .collect(),
            other => return exec_err!("{NAME}: the key must be text, not {other}"),
        };
        let parts: ArrayRef = Arc::new(parts);
        Ok(match key {
            ColumnarValue::Scalar(_) => {
                ColumnarValue::Scalar(ScalarValue::try_from_array(&parts, 0)?)
            }
            ColumnarValue::Array(_) => ColumnarValue::Array(parts),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_stable_and_in_range() {
        // A fixed value: the hash may never change, or consumer groups
        // would move entities between members on upgrade.
        assert_eq!(part_of(b"user-1", 1000), part_of(b"user-1", 1000));
        assert_eq!(xxhash_rust::xxh3::xxh3_64(b""), 0x2d06800538d394c2);
        let mut seen = [0usize; 4];
        for i in 0..4000 {
            seen[part_of(format!("e{i}").as_bytes(), 4) as usize] += 1;
        }
        assert!(seen.iter().all(|&c| c > 800), "{seen:?}");
        assert_eq!(part_of(b"x", 0), 0, "0 parts is taken as 1");
    }
}
