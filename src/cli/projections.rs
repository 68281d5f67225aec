//! `allsource projections`: defines, lists, shows and deletes projections
//! (`/v1/projections`), reads one's state, and rebuilds or promotes one.

use super::ClientArgs;
use super::resources::{Common, Resource, print_json};

const PROJECTIONS: Resource = Resource {
    singular: "projection",
    path: "/v1/projections",
    list_key: "projections",
    columns: &[
        ("NAME", "/name"),
        ("VERSION", "/version"),
        ("TABLE", "/table"),
        ("STATUS", "/status"),
        ("POSITION", "/position"),
        ("LAG", "/lag_positions"),
        ("ROWS", "/rows"),
        ("NEXT", "/next/version"),
    ],
};

#[derive(Debug, clap::Args)]
pub(crate) struct ProjectionsArgs {
    #[command(subcommand)]
    command: ProjectionCommand,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, clap::Subcommand)]
enum ProjectionCommand {
    #[command(flatten)]
    Common(Common),
    /// Print its rows as a JSON array (one key's with --key), and the
    /// position they reflect on stderr.
    State {
        /// Its name.
        name: String,
        /// The value of a key column: once per key column, in order.
        #[arg(long)]
        key: Vec<String>,
    },
    /// Fold it again from the first event, in the background; the
    /// current state answers reads until the rebuild has caught up.
    Rebuild {
        /// Its name.
        name: String,
    },
    /// Put its next version in service (one defined with
    /// `"promote": "manual"`, once it has caught up).
    Promote {
        /// Its name.
        name: String,
    },
}

/// Runs the subcommand; a refusal goes to stderr with a failing exit
/// status.
pub(crate) fn run(args: &ProjectionsArgs) -> anyhow::Result<()> {
    let client = &args.client;
    match &args.command {
        ProjectionCommand::Common(command) => PROJECTIONS.run(client, command),
        ProjectionCommand::State { name, key } => {
            let mut path = "/state".to_string();
            if !key.is_empty() {
                let mut query = url::form_urlencoded::Serializer::new(String::new());
                for k in key {
                    query.append_pair("key", k);
                }
                path = format!("{path}?{}", query.finish());
            }
            let url = PROJECTIONS.url(client, name, &path);
            let response = super::get(client, &url)?;
            if let Some(position) = response.headers().get("x-allsource-position") {
                eprintln!("as of position {}", position.to_str().unwrap_or("?"));
            }
            print_json(response)
        }
        ProjectionCommand::Rebuild { name } => PROJECTIONS.act(client, name, "rebuild"),
        ProjectionCommand::Promote { name } => PROJECTIONS.act(client, name, "promote"),
    }
}
