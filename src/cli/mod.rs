//! The `allsource` command's client side: what `main.rs` dispatches to
//! besides `serve`.
//!
//! - [`serve`]: the server itself, on its runtime.
//! - [`query`]: posts a query document to `/v1/query`.
//! - [`shell`]: `allsource sql`, the SQL shell.
//! - [`export`]: a query's result to a file.
//! - [`import`]: files of events into a table, over Arrow Flight.
//! - [`compact`]: asks the server for maintenance and shows its progress
//!   ([`progress`] draws the bar and the reports).
//! - [`stream`]: reads one entity's events from `/v1/streams`.
//! - [`backup`]: asks the server for a backup, checks one on disk, or
//!   restores one into a new data directory.
//! - [`projections`] and [`pipelines`]: define, list, show and delete
//!   them, and the verbs of each (a projection's state, a pipeline's pause
//!   and resume); [`resources`] holds what the two share.
//! - [`schemas`]: tables' schemas and validation rules, and checking a
//!   file of events against them.
//! - [`token`]: mints a JWT locally; no server involved.
//! - [`cluster`]: `allsource scheduler` and `allsource executor`, the
//!   processes of a Ballista cluster for distributed queries.
//! - [`telemetry`]: logs and traces, for every command.
//!
//! The commands that talk to a server share [`ClientArgs`], [`post`],
//! [`get`] and [`delete`]; those that take a JSON document read it with
//! [`read_input`].

pub(crate) mod backup;
pub(crate) mod cluster;
pub(crate) mod compact;
pub(crate) mod export;
pub(crate) mod import;
pub(crate) mod pipelines;
pub(crate) mod policies;
mod progress;
pub(crate) mod projections;
pub(crate) mod query;
pub(crate) mod replay;
mod resources;
pub(crate) mod schemas;
pub(crate) mod serve;
pub(crate) mod shell;
pub(crate) mod stream;
pub(crate) mod telemetry;
pub(crate) mod token;

/// How the client commands reach the server. The flags are global, so a
/// command with subcommands (`projections list`) takes them after the
/// subcommand too.
#[derive(Debug, clap::Args)]
pub(crate) struct ClientArgs {
    /// The server's base URL.
    #[arg(
        long,
        global = true,
        env = "ALLSOURCE_URL",
        default_value = "http://127.0.0.1:7070"
    )]
    url: String,
    /// Bearer token (see `allsource token`), when the server has auth on.
    #[arg(long, global = true, env = "ALLSOURCE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Act on this tenant (admin tokens; others may name only their own).
    #[arg(long, global = true, env = "ALLSOURCE_TENANT")]
    tenant: Option<String>,
}

impl ClientArgs {
    /// `path` (with its query string) on the server.
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url.trim_end_matches('/'))
    }
}

/// POSTs to `url` (with a JSON body, if any) on the server; a refusal
/// becomes an error carrying its status and the server's message.
fn post(
    client: &ClientArgs,
    url: &str,
    json: Option<Vec<u8>>,
) -> anyhow::Result<reqwest::blocking::Response> {
    send(client, reqwest::Method::POST, url, json)
}

/// GETs `url` on the server, like [`post`].
fn get(client: &ClientArgs, url: &str) -> anyhow::Result<reqwest::blocking::Response> {
    send(client, reqwest::Method::GET, url, None)
}

/// DELETEs `url` on the server, like [`post`].
fn delete(client: &ClientArgs, url: &str) -> anyhow::Result<reqwest::blocking::Response> {
    send(client, reqwest::Method::DELETE, url, None)
}

/// The bytes of `file`, or of standard input when it is `-`.
fn read_input(file: &str) -> anyhow::Result<Vec<u8>> {
    if file == "-" {
        let mut doc = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut doc)?;
        Ok(doc)
    } else {
        std::fs::read(file).map_err(|e| anyhow::anyhow!("cannot read {file}: {e}"))
    }
}

/// Sends one request to the server; a refusal becomes an error carrying
/// its status and the server's message (its JSON `error`, else its text).
fn send(
    client: &ClientArgs,
    method: reqwest::Method,
    url: &str,
    json: Option<Vec<u8>>,
) -> anyhow::Result<reqwest::blocking::Response> {
    send_as(client, method, url, json.map(|b| (b, "application/json")))
}

/// [`send`] with a body of the given content type.
fn send_as(
    client: &ClientArgs,
    method: reqwest::Method,
    url: &str,
    body: Option<(Vec<u8>, &str)>,
) -> anyhow::Result<reqwest::blocking::Response> {
    let base = &client.url;
    let mut request = reqwest::blocking::Client::builder()
        .timeout(None)
        .build()?
        .request(method, url);
    if let Some(token) = &client.token {
        request = request.bearer_auth(token);
    }
    if let Some(tenant) = &client.tenant {
        request = request.header("x-allsource-tenant", tenant);
    }
    if let Some((body, content_type)) = body {
        request = request.header("content-type", content_type).body(body);
    }
    let response = request
        .send()
        .map_err(|e| anyhow::anyhow!("cannot reach {base}: {e}"))?;
    if !response.status().is_success() {
        let status = response.status();
        let text = response.text().unwrap_or_default();
        let message = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["error"].as_str().map(String::from))
            .unwrap_or(text);
        anyhow::bail!("{status}: {message}");
    }
    Ok(response)
}
