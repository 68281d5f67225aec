//! Projections: aggregate queries over a table whose results are kept up
//! to date as events are acknowledged.
//!
//! [`define`] takes a projection's query apart into the parts an
//! incremental update needs, or refuses it with the part and the reason;
//! [`State`] folds events into groups and reads back the query's rows;
//! [`Registry`] keeps the server's projections; [`sql`] offers them to
//! SQL.

pub mod define;
pub mod registry;
pub mod sql;
pub mod state;

pub use define::{Aggregate, Definition, Fold, OrderKey, Refusal, define};
pub use registry::{Health, Language, Live, Registry, Role, Spec};
pub use state::State;
