//! Projections: aggregate queries over a table whose results are kept up
//! to date as events are acknowledged.
//!
//! [`define`] takes a projection's query apart into the parts an
//! incremental update needs, or refuses it with the part and the reason.

pub mod define;
pub mod state;

pub use define::{Aggregate, Definition, Fold, OrderKey, Refusal, define};
pub use state::State;
