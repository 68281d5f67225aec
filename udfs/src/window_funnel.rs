//! `window_funnel`: how far along a chain of steps each group got, with
//! ClickHouse's `windowFunnel` semantics.

use crate::funnel::{
    FunnelAccumulator, FunnelGroups, FunnelOutput, FunnelSpec, coerce_funnel_args,
    funnel_state_fields,
};
use datafusion::arrow::datatypes::{DataType, FieldRef};
use datafusion::common::ScalarValue;
use datafusion::error::Result;
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, GroupsAccumulator, Signature, Volatility,
};

pub use crate::funnel::MAX_STEPS;

/// `window_funnel(window, [mode,] timestamp, cond1, ..., condN)` returns the
/// number of consecutive steps (0..=N) a group reached, each within
/// `window` of the group's first step, exactly as ClickHouse's
/// `windowFunnel(window, mode...)(timestamp, cond1, ...)`.
///
/// - `window`: an `INTERVAL` or an integer number of seconds (for integer
///   timestamps: an integer in the timestamp's own unit).
/// - `mode`: optional, comma-separated: `strict_order` (any other event
///   between steps stops the chain), `strict_deduplication` (a repeated
///   step stops the chain), `strict_increase` (steps need strictly
///   increasing timestamps).
/// - rows may come in any order; a row whose timestamp or any condition is
///   NULL is ignored.
///
/// ```sql
/// SELECT entity_id,
///        window_funnel(INTERVAL '1 hour', timestamp,
///                      event_type = 'view', event_type = 'cart', event_type = 'buy') AS level
/// FROM events GROUP BY entity_id;
/// ```
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct WindowFunnel {
    signature: Signature,
}

impl Default for WindowFunnel {
    fn default() -> Self {
        WindowFunnel {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

/// The `window_funnel` aggregate.
pub fn window_funnel_udaf() -> AggregateUDF {
    AggregateUDF::from(WindowFunnel::default())
}
impl AggregateUDFImpl for WindowFunnel {
    fn name(&self) -> &str {
        "window_funnel"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        coerce_funnel_args(self.name(), arg_types)
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::UInt8)
    }

    fn is_nullable(&self) -> bool {
        false
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(funnel_state_fields(args.name))
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(FunnelAccumulator::new(
            FunnelSpec::from_args(self.name(), &args)?,
            FunnelOutput::Level,
        )))
    }

    fn groups_accumulator_supported(&self, _args: AccumulatorArgs) -> bool {
        true
    }

    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(FunnelGroups::new(
            FunnelSpec::from_args(self.name(), &args)?,
            FunnelOutput::Level,
        )))
    }

    fn default_value(&self, _data_type: &DataType) -> Result<ScalarValue> {
        Ok(ScalarValue::UInt8(Some(0)))
    }
}

/// Checks a funnel mode string (`strict_order`, ... comma-separated), for
/// callers that build funnel calls themselves.
pub fn check_mode(text: &str) -> datafusion::error::Result<()> {
    crate::funnel::Mode::parse("funnel", text).map(|_| ())
}
