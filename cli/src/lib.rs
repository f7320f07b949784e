//! `pulpctl`, the command-line client of the Pulp task scheduler.
//!
//! # Layout
//! - [`cli`]: the command line (clap). Values are validated while parsing
//!   through [`input`] (`--args` must be a JSON list, `--kwargs` a JSON
//!   object, states parse in any case), so bad input is a usage error before
//!   anything is sent.
//! - [`client`]: connects to the scheduler and hands out the generated
//!   clients of `Tasks`, `TaskGroups` and `Workers` on one channel.
//! - [`tasks`], [`groups`], [`workers`], [`content`]: one function per
//!   command; each sends its request(s) and gives the answer to the
//!   printer. [`content`] covers `repo`, `artifact` and `content`
//!   (uploads stream the file with a progress bar on stderr).
//! - [`exports`]: `publication`, `exporter` and `export` (with `--wait`
//!   the live display shows the files written as a progress bar).
//! - [`watch`]: follows a task over `Tasks.WatchTask` with a live display on
//!   stderr (`watch`, `dispatch --wait`).
//! - [`output`]: tables and key/value views for people, JSON for programs.
//! - [`error`]: [`CliError`], which shows gRPC codes by name.
//!
//! Data flows `Cli` → [`run`] → a command function → the scheduler → the
//! [`output::Printer`] on the caller's writer. Only results go to that
//! writer (stdout in the binary); live progress and notes go to stderr, so
//! `--json` output is exactly one document. [`run`] takes the writer so that
//! tests can capture what a command prints.

pub mod cli;
pub mod client;
pub mod content;
pub mod error;
pub mod exports;
pub mod groups;
pub mod input;
pub mod output;
pub mod tasks;
pub mod watch;
pub mod workers;

use std::io::Write;

pub use cli::{
    ArtifactCommand, Cli, Command, ContentCommand, DispatchArgs, GroupCommand, ListArgs,
    RepoCommand,
};
pub use client::Scheduler;
pub use error::CliError;

/// Runs one parsed command against the scheduler named in `cli`, printing
/// its result to `out`; returns the process exit code (0, or 1 for a
/// followed task that did not complete).
pub async fn run(cli: Cli, out: &mut impl Write) -> anyhow::Result<i32> {
    Ok(execute(cli, out).await?)
}

/// The TLS CA and token named by `--tls-ca`, `--token` and `--token-file`.
fn credentials(cli: &Cli) -> Result<client::Credentials, CliError> {
    let read = |path: &std::path::Path, flag: &str| {
        std::fs::read(path)
            .map_err(|e| CliError::Credentials(format!("{flag} {}: {e}", path.display())))
    };
    let tls_ca = cli
        .tls_ca
        .as_deref()
        .map(|p| read(p, "--tls-ca"))
        .transpose()?;
    let token = match (&cli.token, &cli.token_file) {
        (Some(token), _) => Some(token.trim().to_owned()),
        (None, Some(path)) => {
            let text = String::from_utf8_lossy(&read(path, "--token-file")?).into_owned();
            let first = text
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty() && !l.starts_with('#'));
            Some(
                first
                    .ok_or_else(|| {
                        CliError::Credentials(format!("--token-file {} is empty", path.display()))
                    })?
                    .to_owned(),
            )
        }
        (None, None) => None,
    };
    Ok(client::Credentials { tls_ca, token })
}

/// [`run`] with the layer's own error type.
pub async fn execute<W: Write>(cli: Cli, out: &mut W) -> Result<i32, CliError> {
    let scheduler = Scheduler::connect_with(&cli.scheduler, &credentials(&cli)?).await?;
    let mut printer = output::Printer::new(out, cli.json);
    match cli.command {
        Command::Dispatch(args) => tasks::dispatch(&scheduler, args, &mut printer).await,
        Command::Get { id } => tasks::get(&scheduler, &id, &mut printer).await,
        Command::List(args) => tasks::list(&scheduler, args, &mut printer).await,
        Command::Cancel { id } => tasks::cancel(&scheduler, &id, &mut printer).await,
        Command::Watch { id } => tasks::wait_for(&scheduler, &id, &mut printer).await,
        Command::Workers => workers::list(&scheduler, &mut printer).await,
        Command::Group(command) => groups::run(&scheduler, command, &mut printer).await,
        Command::Repo(command) => content::repo(&scheduler, command, &mut printer).await,
        Command::Artifact(command) => content::artifact(&scheduler, command, &mut printer).await,
        Command::Content(command) => content::content(&scheduler, command, &mut printer).await,
        Command::Publication(command) => {
            exports::publication(&scheduler, command, &mut printer).await
        }
        Command::Exporter(command) => exports::exporter(&scheduler, command, &mut printer).await,
        Command::Export(args) => exports::export(&scheduler, args, &mut printer).await,
    }
}
