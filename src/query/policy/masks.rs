//! The functions policies read through: the hash and redaction masks
//! (built into masked reads only, never registered, so no query can call
//! them), and `current_subject()`, `current_role()` and
//! `current_tenant()`, which a row filter may name and which are fixed
//! for a session (the simplifier turns them into literals).

use arrow::array::{Array, StringBuilder};
use arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::common::cast::as_string_array;
use datafusion::error::Result;
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility, cast,
};
use std::sync::Arc;

/// How many bytes of the keyed hash a hash mask shows (as hex: twice as
/// many characters).
const HASH_BYTES: usize = 16;

/// How a [`TextMask`] shows a value.
#[derive(Debug, PartialEq, Eq, Hash)]
enum Shown {
    /// Hex of a keyed hash: equal values mask equally within a tenant
    /// (so grouping and joins on them still work), and the key keeps
    /// other tenants and guessers without it from reversing them.
    Hash {
        key: [u8; 32],
        /// The column's type, hashed with the value: 1 and '1' differ.
        tag: String,
    },
    /// The first `keep` characters, then `***` (the length is not kept).
    Redact { keep: usize },
}

/// A mask over a value as text; NULL stays NULL.
#[derive(Debug, PartialEq, Eq, Hash)]
struct TextMask {
    shown: Shown,
    signature: Signature,
}

impl TextMask {
    fn show(&self, value: &str, out: &mut StringBuilder) {
        match &self.shown {
            Shown::Hash { key, tag } => {
                let mut hasher = blake3::Hasher::new_keyed(key);
                hasher.update(tag.as_bytes());
                hasher.update(&[0]);
                hasher.update(value.as_bytes());
                let hex = hasher.finalize().to_hex();
                out.append_value(&hex[..HASH_BYTES * 2]);
            }
            Shown::Redact { keep } => {
                let kept: String = value.chars().take(*keep).collect();
                out.append_value(format!("{kept}***"));
            }
        }
    }

    /// `expr` read through this mask.
    fn over(shown: Shown, expr: Expr) -> Expr {
        let udf = ScalarUDF::new_from_impl(TextMask {
            shown,
            signature: Signature::exact(vec![DataType::Utf8], Volatility::Immutable),
        });
        udf.call(vec![cast(expr, DataType::Utf8)])
    }
}

impl ScalarUDFImpl for TextMask {
    fn name(&self) -> &str {
        match self.shown {
            Shown::Hash { .. } => "masked_hash",
            Shown::Redact { .. } => "masked_redact",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let scalar = matches!(args.args[0], ColumnarValue::Scalar(_));
        let array = args.args[0].to_array(args.number_rows)?;
        let array = match array.data_type() {
            DataType::Utf8 => array,
            _ => arrow::compute::cast(&array, &DataType::Utf8)?,
        };
        let text = as_string_array(&array)?;
        let mut out = StringBuilder::with_capacity(text.len(), text.len() * HASH_BYTES * 2);
        for value in text.iter() {
            match value {
                None => out.append_null(),
                Some(v) => self.show(v, &mut out),
            }
        }
        let out = out.finish();
        Ok(match scalar {
            true => ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?),
            false => ColumnarValue::Array(Arc::new(out)),
        })
    }
}

/// `expr` (of type `dt`) read through a hash mask keyed by `key`.
pub fn hash_mask(expr: Expr, dt: &DataType, key: [u8; 32]) -> Expr {
    let tag = dt.to_string();
    TextMask::over(Shown::Hash { key, tag }, expr)
}

/// `expr` read through a redaction that keeps `keep` characters.
pub fn redact_mask(expr: Expr, keep: u8) -> Expr {
    let keep = keep.into();
    TextMask::over(Shown::Redact { keep }, expr)
}

/// One fact about the session's caller, as a function of no arguments.
#[derive(Debug, PartialEq, Eq, Hash)]
struct CallerFact {
    name: &'static str,
    value: Option<String>,
    signature: Signature,
}

impl ScalarUDFImpl for CallerFact {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, _: ScalarFunctionArgs) -> Result<ColumnarValue> {
        Ok(ColumnarValue::Scalar(ScalarValue::Utf8(self.value.clone())))
    }

    fn simplify(&self, _: Vec<Expr>, _: &SimplifyContext) -> Result<ExprSimplifyResult> {
        Ok(ExprSimplifyResult::Simplified(Expr::Literal(
            ScalarValue::Utf8(self.value.clone()),
            None,
        )))
    }
}

/// `current_subject()` (the token's `sub`, NULL without one),
/// `current_role()` and `current_tenant()` for `caller`.
pub fn caller_functions(caller: &crate::auth::Principal) -> Vec<ScalarUDF> {
    let facts = [
        ("current_subject", caller.subject.clone()),
        ("current_role", Some(caller.role.to_string())),
        ("current_tenant", Some(caller.tenant.to_string())),
    ];
    facts
        .into_iter()
        .map(|(name, value)| {
            ScalarUDF::new_from_impl(CallerFact {
                name,
                value,
                signature: Signature::exact(vec![], Volatility::Immutable),
            })
        })
        .collect()
}
