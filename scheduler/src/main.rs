//! `pulp-scheduler`: read settings (flags, `PULP_*`, `--config` TOML),
//! print them with `--print-config`, set up logging, serve until a signal.

use pulp_scheduler::Config;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (config, sources) = pulp_common::settings::load::<Config>();
    if config.print_config {
        print!("{}", pulp_common::settings::render::<Config>(&sources));
        return config.validate();
    }
    pulp_common::telemetry::init(config.log_format);
    config.validate()?;
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let shutdown = CancellationToken::new();
    tokio::spawn(signals(shutdown.clone()));
    pulp_scheduler::run(config, listener, shutdown).await
}

/// The first SIGTERM or SIGINT starts a graceful shutdown; a second exits.
async fn signals(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return;
    };
    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
    tracing::info!("signal received: shutting down (send another to exit at once)");
    shutdown.cancel();
    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
    tracing::warn!("second signal: exiting at once");
    std::process::exit(130);
}
