//! The `allsource` command's client side: what `main.rs` dispatches to
//! besides `serve`.
//!
//! - [`serve`]: the server itself, on its runtime.
//! - [`query`]: posts a query document to `/v1/query`.
//! - [`compact`]: asks the server for maintenance and shows its progress
//!   ([`progress`] draws the bar and the reports).
//! - [`stream`]: reads one entity's events from `/v1/streams`.
//! - [`backup`]: asks the server for a backup, checks one on disk, or
//!   restores one into a new data directory.
//! - [`token`]: mints a JWT locally; no server involved.
//! - [`telemetry`]: logs and traces, for every command.
//!
//! The commands that talk to a server share [`ClientArgs`], [`post`] and
//! [`get`].

pub(crate) mod backup;
pub(crate) mod compact;
mod progress;
pub(crate) mod query;
pub(crate) mod replay;
pub(crate) mod serve;
pub(crate) mod stream;
pub(crate) mod telemetry;
pub(crate) mod token;

/// How the client commands reach the server.
#[derive(Debug, clap::Args)]
pub(crate) struct ClientArgs {
    /// The server's base URL.
    #[arg(long, env = "ALLSOURCE_URL", default_value = "http://127.0.0.1:7070")]
    url: String,
    /// Bearer token (see `allsource token`), when the server has auth on.
    #[arg(long, env = "ALLSOURCE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Act on this tenant (admin tokens; others may name only their own).
    #[arg(long, env = "ALLSOURCE_TENANT")]
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

fn send(
    client: &ClientArgs,
    method: reqwest::Method,
    url: &str,
    json: Option<Vec<u8>>,
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
    if let Some(body) = json {
        request = request
            .header("content-type", "application/json")
            .body(body);
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
