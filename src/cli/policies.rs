//! `allsource policies`: lists, shows, applies (creates or replaces) and
//! deletes a tenant's policies (`/v1/policies`), puts the defaults back,
//! and explains a decision (`evaluate`: one line per policy that matched,
//! failing when the request would be denied).

use super::resources::{print_json, table};
use super::schemas::encoded;
use super::{ClientArgs, delete, get, post, read_input, send_as};
use serde_json::{Value, json};

#[derive(Debug, clap::Args)]
pub(crate) struct PoliciesArgs {
    #[command(subcommand)]
    command: PolicyCommand,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, clap::Subcommand)]
enum PolicyCommand {
    /// List the policies, one line each.
    List {
        /// Print the server's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print one policy.
    Show { name: String },
    /// Create or replace the policy a JSON file defines (by its "name").
    Apply {
        /// The policy: a JSON file, or `-` for standard input.
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: String,
        /// Refuse the change if the policies changed since this
        /// generation.
        #[arg(long)]
        generation: Option<u64>,
    },
    /// Delete a policy.
    Delete {
        name: String,
        #[arg(long)]
        generation: Option<u64>,
    },
    /// Put the default policies back.
    Defaults,
    /// Explain what the policies decide for a request; fails on a deny.
    Evaluate {
        /// ingest, query, stream or admin.
        #[arg(long)]
        action: String,
        /// The table to decide on.
        #[arg(long, required_unless_present = "sql", conflicts_with = "sql")]
        table: Option<String>,
        /// Or a statement: every table it names is decided on.
        #[arg(long)]
        sql: Option<String>,
        /// For ingest: the events' type.
        #[arg(long)]
        event_type: Option<String>,
        /// Decide for this role instead of the caller (admins only).
        #[arg(long)]
        role: Option<String>,
        /// ... and this subject.
        #[arg(long, requires = "role")]
        subject: Option<String>,
    },
}

/// Runs the subcommand; a refusal goes to stderr with a failing exit
/// status.
pub(crate) fn run(args: &PoliciesArgs) -> anyhow::Result<()> {
    let client = &args.client;
    match &args.command {
        PolicyCommand::List { json: true } => print_json(get(client, &client.url("/v1/policies"))?),
        PolicyCommand::List { json: false } => {
            let answer: Value = get(client, &client.url("/v1/policies"))?.json()?;
            let items: Vec<Value> = answer["policies"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| {
                    let tables: Vec<&str> = (p["tables"].as_array().into_iter().flatten())
                        .filter_map(Value::as_str)
                        .collect();
                    json!({"name": p["name"], "kind": p["kind"], "enabled": p["enabled"],
                           "tables": tables.join(","), "what": p.get("effect").or(p.get("filter"))})
                })
                .collect();
            let columns = [
                ("NAME", "/name"),
                ("KIND", "/kind"),
                ("ENABLED", "/enabled"),
                ("TABLES", "/tables"),
                ("EFFECT/FILTER", "/what"),
            ];
            print!("{}", table(&columns, &items));
            println!("generation {}", answer["generation"]);
            Ok(())
        }
        PolicyCommand::Show { name } => {
            let url = client.url(&format!("/v1/policies/{}", encoded(name)));
            print_json(get(client, &url)?)
        }
        PolicyCommand::Apply { file, generation } => {
            let mut policy: Value = serde_json::from_slice(&read_input(file)?)
                .map_err(|e| anyhow::anyhow!("{file}: not a JSON policy: {e}"))?;
            let Some(name) = policy["name"].as_str().map(str::to_string) else {
                anyhow::bail!("{file}: the policy has no \"name\"");
            };
            if let (Some(g), Some(fields)) = (generation, policy.as_object_mut()) {
                fields.insert("generation".into(), json!(g));
            }
            let url = client.url(&format!("/v1/policies/{}", encoded(&name)));
            let body = serde_json::to_vec(&policy)?;
            print_json(send_as(
                client,
                reqwest::Method::PUT,
                &url,
                Some((body, "application/json")),
            )?)
        }
        PolicyCommand::Delete { name, generation } => {
            let query = generation.map_or(String::new(), |g| format!("?generation={g}"));
            let url = client.url(&format!("/v1/policies/{}{query}", encoded(name)));
            print_json(delete(client, &url)?)
        }
        PolicyCommand::Defaults => {
            print_json(post(client, &client.url("/v1/policies/defaults"), None)?)
        }
        PolicyCommand::Evaluate {
            action,
            table,
            sql,
            event_type,
            role,
            subject,
        } => {
            let mut body = json!({"action": action, "table": table, "sql": sql,
                                  "event_type": event_type});
            if let Some(role) = role {
                body["principal"] = json!({"role": role, "subject": subject});
            }
            let url = client.url("/v1/policies/evaluate");
            let body = serde_json::to_vec(&body)?;
            let e: Value = send_as(
                client,
                reqwest::Method::POST,
                &url,
                Some((body, "application/json")),
            )?
            .json()?;
            match e["tables"].as_array() {
                Some(tables) => tables.iter().for_each(print_evaluation),
                None => print_evaluation(&e),
            }
            if e["decision"] != "allow" {
                let because = e["because"]
                    .as_str()
                    .unwrap_or("a table the statement names is denied");
                anyhow::bail!("denied: {because}");
            }
            Ok(())
        }
    }
}

/// One table's decision: a line per matching policy, the restriction, the
/// verdict.
fn print_evaluation(e: &Value) {
    if let Some(table) = e["table"].as_str() {
        println!("table {table}:");
    }
    for m in e["matched"].as_array().into_iter().flatten() {
        let why: Vec<&str> = (m["why"].as_array().into_iter().flatten())
            .filter_map(Value::as_str)
            .collect();
        let effect = m["effect"]
            .as_str()
            .map(|e| format!(" {e}"))
            .unwrap_or_default();
        println!(
            "{}\t{}{effect}\t{}",
            m["policy"].as_str().unwrap_or("?"),
            m["kind"].as_str().unwrap_or("?"),
            why.join("; ")
        );
    }
    if let Some(filter) = e["row_filter"].as_str() {
        println!("row filter: {filter}");
    }
    if let Some(masks) = e["masks"].as_object().filter(|m| !m.is_empty()) {
        let listed: Vec<String> = masks
            .iter()
            .map(|(c, m)| format!("{c}={}", m["with"]))
            .collect();
        println!("masks: {}", listed.join(", "));
    }
    println!(
        "{}: {}",
        e["decision"].as_str().unwrap_or("?"),
        e["because"].as_str().unwrap_or("")
    );
}
