//! `allsource pipelines`: defines, lists, shows and deletes pipelines
//! (`/v1/pipelines`), and pauses or resumes one.

use super::ClientArgs;
use super::resources::{Common, Resource};

const PIPELINES: Resource = Resource {
    singular: "pipeline",
    path: "/v1/pipelines",
    list_key: "pipelines",
    columns: &[
        ("NAME", "/name"),
        ("VERSION", "/version"),
        ("SOURCE", "/source/table"),
        ("SINK", "/sink/table"),
        ("STATUS", "/status"),
        ("POSITION", "/position"),
        ("LAG", "/lag_positions"),
        ("READ", "/events_read"),
        ("WRITTEN", "/events_written"),
    ],
};

#[derive(Debug, clap::Args)]
pub(crate) struct PipelinesArgs {
    #[command(subcommand)]
    command: PipelineCommand,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, clap::Subcommand)]
enum PipelineCommand {
    #[command(flatten)]
    Common(Common),
    /// Stop it where it is; it stays paused across restarts.
    Pause {
        /// Its name.
        name: String,
    },
    /// Start a paused pipeline again from its position.
    Resume {
        /// Its name.
        name: String,
    },
}

/// Runs the subcommand; a refusal goes to stderr with a failing exit
/// status.
pub(crate) fn run(args: &PipelinesArgs) -> anyhow::Result<()> {
    let client = &args.client;
    match &args.command {
        PipelineCommand::Common(command) => PIPELINES.run(client, command),
        PipelineCommand::Pause { name } => PIPELINES.act(client, name, "pause"),
        PipelineCommand::Resume { name } => PIPELINES.act(client, name, "resume"),
    }
}
