//! What a client's statement asks: a query for the service, or one of the
//! session commands clients send around their queries (transactions,
//! `SET`, `SHOW`), answered here.

use datafusion::sql::sqlparser::ast::{Expr, Set, Statement, Value};

/// A statement, as this transport handles it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Command {
    Begin,
    Commit,
    Rollback,
    /// A session setting a client sets (`SET name = value`).
    Set {
        name: String,
        value: String,
    },
    /// A setting read back (`SHOW name`).
    Show(String),
    /// Closing a prepared statement by name (`DEALLOCATE name`), or all of
    /// them (`None`: `DEALLOCATE ALL`).
    Deallocate(Option<String>),
    /// Anything else, as SQL text for the service, which runs queries
    /// and refuses whatever would change data.
    Query(String),
}

impl Command {
    pub(super) fn of(statement: Statement) -> Result<Command, String> {
        Ok(match statement {
            Statement::StartTransaction { .. } => Command::Begin,
            Statement::Commit { .. } => Command::Commit,
            Statement::Rollback {
                savepoint: None, ..
            } => Command::Rollback,
            Statement::Set(Set::SingleAssignment {
                variable, values, ..
            }) => Command::Set {
                name: variable.to_string().to_ascii_lowercase(),
                value: values.iter().map(text).collect::<Vec<_>>().join(", "),
            },
            Statement::Set(Set::SetTimeZone { value, .. }) => Command::Set {
                name: "timezone".into(),
                value: text(&value),
            },
            Statement::Set(Set::SetNames { charset_name, .. }) => Command::Set {
                name: "client_encoding".into(),
                value: charset_name.value,
            },
            Statement::ShowVariable { variable } => {
                let name = variable
                    .iter()
                    .map(|i| i.value.to_ascii_lowercase())
                    .collect::<Vec<_>>()
                    .join("_");
                Command::Show(match name.as_str() {
                    "transaction_isolation_level" => "transaction_isolation".into(),
                    "time_zone" => "timezone".into(),
                    _ => name,
                })
            }
            Statement::Deallocate { name, .. } => {
                Command::Deallocate(Some(name.value).filter(|n| !n.eq_ignore_ascii_case("all")))
            }
            other => Command::Query(other.to_string()),
        })
    }
}

/// A setting's value as the client wrote it, without quotes.
fn text(e: &Expr) -> String {
    match e {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => s.clone(),
            other => other.to_string(),
        },
        Expr::Identifier(i) => i.value.clone(),
        other => other.to_string(),
    }
}

/// Settings a client may set. They change nothing in how queries run
/// (results are always UTF-8, times UTC, and limits are the server's),
/// but clients set them on connecting and read them back.
const SETTABLE: &[&str] = &[
    "application_name",
    "bytea_output",
    "client_min_messages",
    "datestyle",
    "default_transaction_isolation",
    "extra_float_digits",
    "idle_in_transaction_session_timeout",
    "intervalstyle",
    "jit",
    "lc_messages",
    "lock_timeout",
    "search_path",
    "standard_conforming_strings",
    "statement_timeout",
    "synchronous_commit",
    "transaction_isolation",
];

/// Checks a `SET`: the encoding must be UTF-8 and the time zone UTC, which
/// is what results are in; other settings a client may set are taken and
/// change nothing; anything else is refused.
pub(super) fn check_set(name: &str, value: &str) -> Result<(), String> {
    let value = value.trim().to_ascii_lowercase();
    match name {
        "client_encoding" => match value.as_str() {
            "utf8" | "utf-8" | "unicode" | "default" => Ok(()),
            _ => Err(format!(
                "client_encoding {value} is not supported: results are UTF8"
            )),
        },
        "timezone" => match value.as_str() {
            "utc" | "etc/utc" | "gmt" | "z" | "0" | "+00:00" | "local" | "default" => Ok(()),
            _ => Err(format!(
                "time zone {value} is not supported: times are answered in UTC"
            )),
        },
        other if SETTABLE.contains(&other) => Ok(()),
        other => Err(format!(
            "unrecognized configuration parameter \"{other}\" (settings a client may set: client_encoding, timezone, {})",
            SETTABLE.join(", ")
        )),
    }
}

/// The value `SHOW name` answers when the session has not set it.
pub(super) fn default_setting(name: &str, admin: bool) -> Option<&'static str> {
    Some(match name {
        "server_version" => "16.6",
        "server_version_num" => "160006",
        "server_encoding" | "client_encoding" => "UTF8",
        "datestyle" => "ISO, YMD",
        "intervalstyle" => "postgres",
        "timezone" => "Etc/UTC",
        "transaction_isolation" | "default_transaction_isolation" => "read committed",
        "transaction_read_only" | "default_transaction_read_only" => "on",
        "standard_conforming_strings" | "integer_datetimes" => "on",
        "search_path" => "public",
        "max_identifier_length" => "63",
        "lc_collate" | "lc_ctype" => "C",
        "bytea_output" => "hex",
        "extra_float_digits" => "1",
        "statement_timeout" | "lock_timeout" | "idle_in_transaction_session_timeout" => "0",
        "is_superuser" if admin => "on",
        "is_superuser" => "off",
        "application_name" => "",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion_postgres::datafusion_pg_catalog::sql::PostgresCompatibilityParser;

    fn command(sql: &str) -> Command {
        let mut statements = PostgresCompatibilityParser::new().parse(sql).unwrap();
        Command::of(statements.remove(0)).unwrap()
    }

    #[test]
    fn session_commands_are_told_from_queries() {
        assert_eq!(command("BEGIN"), Command::Begin);
        assert_eq!(command("start transaction read only"), Command::Begin);
        assert_eq!(command("COMMIT"), Command::Commit);
        assert_eq!(command("ROLLBACK"), Command::Rollback);
        assert_eq!(
            command("SET DateStyle = 'ISO'"),
            Command::Set {
                name: "datestyle".into(),
                value: "ISO".into()
            }
        );
        assert_eq!(
            command("SET TIME ZONE 'UTC'"),
            Command::Set {
                name: "timezone".into(),
                value: "UTC".into()
            }
        );
        assert_eq!(
            command("SHOW transaction isolation level"),
            Command::Show("transaction_isolation".into())
        );
        assert_eq!(
            command("DEALLOCATE _pg3_0"),
            Command::Deallocate(Some("_pg3_0".into()))
        );
        assert_eq!(command("DEALLOCATE ALL"), Command::Deallocate(None));
        assert!(matches!(command("SELECT 1"), Command::Query(_)));
        assert!(matches!(
            command("INSERT INTO t VALUES (1)"),
            Command::Query(_)
        ));
    }

    #[test]
    fn only_harmless_settings_may_be_set() {
        assert!(check_set("client_encoding", "UTF8").is_ok());
        assert!(check_set("client_encoding", "LATIN1").is_err());
        assert!(check_set("timezone", "UTC").is_ok());
        let refused = check_set("timezone", "Europe/Paris").unwrap_err();
        assert!(refused.contains("UTC"), "{refused}");
        assert!(check_set("extra_float_digits", "3").is_ok());
        let unknown = check_set("datafusion.execution.target_partitions", "64").unwrap_err();
        assert!(unknown.contains("unrecognized"), "{unknown}");
    }
}
