//! `pulp-worker`: parses the configuration, installs logging, and runs the
//! worker until SIGTERM or SIGINT. The first signal drains (see
//! `pulp_worker::run`); a second one exits at once with code 130.

use std::process::ExitCode;

use pulp_worker::Config;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

fn main() -> ExitCode {
    let (config, sources) = pulp_common::settings::load::<Config>();
    if config.print_config {
        print!("{}", pulp_common::settings::render::<Config>(&sources));
        return ExitCode::SUCCESS;
    }
    pulp_common::telemetry::init(config.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            error!(error = %err, "could not start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        watch_signals(shutdown.clone())?;
        pulp_worker::run(config, shutdown).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            error!(error = format!("{err:#}"), "the worker failed");
            ExitCode::FAILURE
        }
    }
}

/// Cancels `shutdown` on the first SIGTERM/SIGINT; exits on the second.
fn watch_signals(shutdown: CancellationToken) -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        info!("signal received: draining; send another to exit at once");
        shutdown.cancel();
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        warn!("second signal: exiting at once");
        std::process::exit(130);
    });
    Ok(())
}
