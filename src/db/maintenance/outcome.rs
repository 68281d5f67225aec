//! How a maintenance run ended, as a type; its text is what the HTTP
//! reply, `system.maintenance` and `maintenance.jsonl` carry.

use serde::{Serialize, Serializer};
use std::fmt;

/// How one maintenance run of one table ended.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Outcome {
    /// Something was compacted, deleted, checkpointed or vacuumed.
    Done,
    /// The table needed nothing.
    #[default]
    NothingToDo,
    /// A dry run, which found work to do.
    DryRun,
    /// Concurrent commits won the race for these many partitions; the
    /// next run retries them.
    GaveWay { partitions: usize },
    /// Another writer of the storage root holds the maintenance lease;
    /// it maintains the tables meanwhile.
    OtherWriter { node: u16 },
    /// The run failed, and why.
    Failed(String),
}

const GAVE_WAY: &str = "gave way to concurrent commits in ";
const GAVE_WAY_END: &str = " partition(s); the next run retries them";
const FAILED: &str = "failed: ";
const OTHER_WRITER: &str = "left to writer ";
const OTHER_WRITER_END: &str = ", which holds the maintenance lease";

impl Outcome {
    /// The label of `allsource_compactions_total`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Outcome::Done => "done",
            Outcome::NothingToDo | Outcome::DryRun => "nothing",
            Outcome::OtherWriter { .. } => "other_writer",
            Outcome::GaveWay { .. } => "gave_way",
            Outcome::Failed(_) => "failed",
        }
    }

    /// The outcome whose text is `text` (as [`fmt::Display`] writes it);
    /// text it never writes is kept as a failure.
    pub fn from_text(text: &str) -> Self {
        match text {
            "done" => Outcome::Done,
            "nothing to do" => Outcome::NothingToDo,
            "dry run" => Outcome::DryRun,
            _ => {
                let gave_way = text
                    .strip_prefix(GAVE_WAY)
                    .and_then(|rest| rest.strip_suffix(GAVE_WAY_END))
                    .and_then(|n| n.parse().ok());
                let other = text
                    .strip_prefix(OTHER_WRITER)
                    .and_then(|rest| rest.strip_suffix(OTHER_WRITER_END))
                    .and_then(|n| n.parse().ok());
                match (gave_way, other) {
                    (Some(partitions), _) => Outcome::GaveWay { partitions },
                    (None, Some(node)) => Outcome::OtherWriter { node },
                    (None, None) => {
                        Outcome::Failed(text.strip_prefix(FAILED).unwrap_or(text).to_string())
                    }
                }
            }
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Done => f.write_str("done"),
            Outcome::NothingToDo => f.write_str("nothing to do"),
            Outcome::DryRun => f.write_str("dry run"),
            Outcome::GaveWay { partitions } => write!(f, "{GAVE_WAY}{partitions}{GAVE_WAY_END}"),
            Outcome::OtherWriter { node } => write!(f, "{OTHER_WRITER}{node}{OTHER_WRITER_END}"),
            Outcome::Failed(why) => write!(f, "{FAILED}{why}"),
        }
    }
}

impl Serialize for Outcome {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_outcome_reads_back_from_its_text() {
        for outcome in [
            Outcome::Done,
            Outcome::NothingToDo,
            Outcome::DryRun,
            Outcome::GaveWay { partitions: 3 },
            Outcome::OtherWriter { node: 7 },
            Outcome::Failed("storage error: disk full".into()),
        ] {
            assert_eq!(Outcome::from_text(&outcome.to_string()), outcome);
            assert_eq!(
                serde_json::to_value(&outcome).unwrap(),
                serde_json::Value::String(outcome.to_string())
            );
        }
        assert_eq!(
            Outcome::GaveWay { partitions: 2 }.to_string(),
            "gave way to concurrent commits in 2 partition(s); the next run retries them"
        );
        assert_eq!(
            Outcome::from_text("something else"),
            Outcome::Failed("something else".into())
        );
    }
}
