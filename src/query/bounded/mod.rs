//! What DataFusion builds without reserving it, bounded by the query's
//! memory budget.
//!
//! DataFusion reserves what most operators hold (a sort's rows, a join's
//! build side, an aggregate's groups) in the query's memory pool. Three
//! things escape it, and each could take the server far past
//! `--memory-limit` from a short query:
//!
//! - **Scalar functions** ([`scalar`]): `repeat('x', 3000000000)`
//!   allocates 3 GB and `range(1, 1e9)` 8 GB before any operator sees the
//!   result. [`register`] replaces each built-in that can amplify its
//!   input with a [`Bounded`] wrapper, which estimates from the arguments
//!   alone an upper bound of what the call allocates ([`Estimate`]) and
//!   reserves it before calling the function; the reservation is released
//!   when the call returns, and an operator that keeps the result
//!   reserves it again. Wrapped are the functions whose output grows with
//!   a number or a separator argument (`repeat`, `lpad`, `range`,
//!   `array_repeat`, `array_to_string`, ...) and the n-ary
//!   concatenations, whose output is the sum of their arguments however
//!   often one is repeated (`concat(x, x, x, ...)`). The others return at
//!   most a small multiple of their input.
//! - **Window operators** buffer rows: `WindowAggExec` its whole input,
//!   `BoundedWindowAggExec` the rows of the partitions it has not
//!   finished. **`UnnestExec`** turns one row into a list's length of
//!   rows, each with a copy of the row's other columns.
//!   [`OperatorMemory`], a physical optimizer rule, puts a node under each
//!   that reserves what the operator holds or builds ([`operators`]).
//!
//! A reservation that does not fit fails with DataFusion's "resources
//! exhausted", naming the function or operator and the limit, before
//! the memory is allocated.

pub mod estimate;
pub mod operators;
pub mod scalar;

pub use estimate::Estimate;
pub use operators::OperatorMemory;
pub use scalar::Bounded;

use datafusion::error::Result;
use datafusion::prelude::SessionContext;
use std::sync::Arc;

/// The built-in functions that are wrapped, with how each one's output is
/// bounded. Aliases (`list_repeat`, `array_join`, ...) follow their
/// function.
pub const BOUNDED: &[(&str, Estimate)] = &[
    ("repeat", Estimate::Repeat),
    ("lpad", Estimate::Pad),
    ("rpad", Estimate::Pad),
    ("replace", Estimate::Replace),
    ("regexp_replace", Estimate::RegexpReplace),
    ("regexp_match", Estimate::RegexpMatch),
    ("concat", Estimate::Sum),
    ("concat_ws", Estimate::ConcatWs),
    ("array_repeat", Estimate::ArrayRepeat),
    ("array_resize", Estimate::ArrayResize),
    ("range", Estimate::Series),
    ("generate_series", Estimate::Series),
    ("string_to_array", Estimate::StringToArray),
    ("array_to_string", Estimate::ArrayToString),
    ("array_replace", Estimate::ArrayReplace),
    ("array_replace_n", Estimate::ArrayReplaceN),
    ("array_replace_all", Estimate::ArrayReplaceAll),
    ("array_concat", Estimate::Sum),
    ("make_array", Estimate::Sum),
    ("arrays_zip", Estimate::Zip),
];

/// Replaces the functions of [`BOUNDED`] in `ctx` by wrappers that reserve
/// their output in the session's memory pool (the query's own).
pub fn register(ctx: &mut SessionContext) -> Result<()> {
    let pool = Arc::clone(&ctx.runtime_env().memory_pool);
    let wrapped: Vec<_> = {
        let state = ctx.state_ref();
        let state = state.read();
        BOUNDED
            .iter()
            .filter_map(|(name, estimate)| {
                let inner = state.scalar_functions().get(*name)?;
                Some(Bounded::udf(
                    Arc::clone(inner),
                    *estimate,
                    Arc::clone(&pool),
                ))
            })
            .collect()
    };
    for f in wrapped {
        ctx.register_udf(f);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
