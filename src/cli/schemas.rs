//! `allsource schemas`: lists, shows, registers and rolls back tables'
//! schemas and validation rules (`/v1/schemas`), and sets the event types
//! a table accepts; `allsource validate`: checks a file of events against a
//! table's rules without storing them (`/v1/validate`), one line per
//! violation, failing when any would be refused.

use super::resources::{print_json, table};
use super::{ClientArgs, delete, get, post, read_input, send_as};
use serde_json::{Value, json};

#[derive(Debug, clap::Args)]
pub(crate) struct SchemasArgs {
    #[command(subcommand)]
    command: SchemaCommand,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, clap::Subcommand)]
enum SchemaCommand {
    /// List the governed tables, one line each.
    List {
        /// Print the server's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print a table's governance, or one event type's versions.
    Show {
        table: String,
        event_type: Option<String>,
    },
    /// Register the next schema version of an event type from its JSON
    /// definition.
    Register {
        table: String,
        event_type: String,
        /// The definition: a JSON file, or `-` for standard input.
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: String,
    },
    /// Roll back the newest version of an event type's schema: its rules
    /// and migration stop applying; stored events are untouched.
    Rollback {
        table: String,
        event_type: String,
        version: u32,
        /// Roll it back even though events were written at it.
        #[arg(long)]
        force: bool,
    },
    /// Set the event types a table accepts (or, with --clear, accept any).
    EventTypes {
        table: String,
        /// The allowed event types, comma-separated.
        #[arg(long, value_delimiter = ',', required_unless_present = "clear")]
        allow: Vec<String>,
        /// What happens to another type: reject or warn.
        #[arg(long, default_value = "reject")]
        mode: String,
        /// Accept any event type again.
        #[arg(long, conflicts_with = "allow")]
        clear: bool,
    },
}

#[derive(Debug, clap::Args)]
pub(crate) struct ValidateArgs {
    /// A file of events (a JSON object or array, or NDJSON), or `-` for
    /// standard input.
    file: String,
    /// The table whose rules apply.
    #[arg(long, default_value = "events")]
    table: String,
    #[command(flatten)]
    client: ClientArgs,
}

pub(crate) fn encoded(part: &str) -> String {
    percent_encoding::utf8_percent_encode(part, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Runs the subcommand; a refusal goes to stderr with a failing exit
/// status.
pub(crate) fn run(args: &SchemasArgs) -> anyhow::Result<()> {
    let client = &args.client;
    match &args.command {
        SchemaCommand::List { json: true } => print_json(get(client, &client.url("/v1/schemas"))?),
        SchemaCommand::List { json: false } => {
            let answer: Value = get(client, &client.url("/v1/schemas"))?.json()?;
            let items: Vec<Value> = answer["tables"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| {
                    let types: Vec<String> = t["event_types"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|e| {
                            format!(
                                "{} v{}",
                                e["event_type"].as_str().unwrap_or("?"),
                                e["latest_version"]
                            )
                        })
                        .collect();
                    let allowed = t["allowed_event_types"]["allowed"].as_array().map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .collect::<Vec<_>>()
                            .join(",")
                    });
                    json!({"table": t["table"], "generation": t["generation"],
                           "types": types.join(" "), "allowed": allowed})
                })
                .collect();
            let columns = [
                ("TABLE", "/table"),
                ("GENERATION", "/generation"),
                ("SCHEMAS", "/types"),
                ("ALLOWED", "/allowed"),
            ];
            print!("{}", table(&columns, &items));
            Ok(())
        }
        SchemaCommand::Show { table, event_type } => {
            let path = match event_type {
                None => format!("/v1/schemas/{}", encoded(table)),
                Some(t) => format!("/v1/schemas/{}/{}", encoded(table), encoded(t)),
            };
            print_json(get(client, &client.url(&path))?)
        }
        SchemaCommand::Register {
            table,
            event_type,
            file,
        } => {
            let path = format!("/v1/schemas/{}/{}", encoded(table), encoded(event_type));
            print_json(post(client, &client.url(&path), Some(read_input(file)?))?)
        }
        SchemaCommand::Rollback {
            table,
            event_type,
            version,
            force,
        } => {
            let path = format!(
                "/v1/schemas/{}/{}/versions/{version}{}",
                encoded(table),
                encoded(event_type),
                if *force { "?force=true" } else { "" }
            );
            print_json(delete(client, &client.url(&path))?)
        }
        SchemaCommand::EventTypes {
            table,
            allow,
            mode,
            clear,
        } => {
            let body = match clear {
                true => json!({"event_types": null}),
                false => json!({"event_types": {"allowed": allow, "mode": mode}}),
            };
            let url = client.url(&format!("/v1/schemas/{}", encoded(table)));
            let body = serde_json::to_vec(&body)?;
            print_json(send_as(
                client,
                reqwest::Method::PUT,
                &url,
                Some((body, "application/json")),
            )?)
        }
    }
}

/// `allsource validate`: prints each violation, then a summary; fails when
/// any event would be refused.
pub(crate) fn validate(args: &ValidateArgs) -> anyhow::Result<()> {
    let client = &args.client;
    let body = read_input(&args.file)?;
    // A whole JSON document (an object or an array) or else NDJSON.
    let kind = match serde_json::from_slice::<serde::de::IgnoredAny>(&body) {
        Ok(_) => "application/json",
        Err(_) => "application/x-ndjson",
    };
    let url = client.url(&format!("/v1/validate?table={}", encoded(&args.table)));
    let report: Value = send_as(client, reqwest::Method::POST, &url, Some((body, kind)))?.json()?;
    for v in report["violations"].as_array().into_iter().flatten() {
        println!(
            "{}\t{}\t{}\t{}",
            v["path"].as_str().unwrap_or(""),
            v["rule"].as_str().unwrap_or(""),
            v["mode"].as_str().unwrap_or(""),
            v["message"].as_str().unwrap_or(""),
        );
    }
    if report["truncated"] == true {
        println!(
            "… {} violations in all; the first ones are listed",
            report["total"]
        );
    }
    println!(
        "{} events: {} would be refused, {} stored with warnings",
        report["events"], report["rejected"], report["warned"]
    );
    if report["valid"] != true {
        anyhow::bail!(
            "{} of {} events break reject rules of table {}",
            report["rejected"],
            report["events"],
            args.table
        );
    }
    Ok(())
}
