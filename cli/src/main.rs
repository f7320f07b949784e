//! The `pulpctl` binary: parses the command line, runs the command, and
//! turns the outcome into an exit code. Errors print as `error: <message>`
//! (with their causes) and exit 1; usage errors are clap's (exit 2).

use std::process::ExitCode;

use clap::Parser;
use pulpctl::Cli;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut stdout = std::io::stdout().lock();
    match pulpctl::run(cli, &mut stdout).await {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(err) => {
            eprintln!("error: {}", cause_chain(&err));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes joined by `: `, leaving out a cause that only
/// repeats the one before (hyper nests "tcp connect error" twice).
fn cause_chain(err: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if parts.last() != Some(&text) {
            parts.push(text);
        }
    }
    parts.join(": ")
}
