//! The quick start's worker processes (`--spawn-workers N`).
//!
//! The scheduler never links task code (DESIGN.md section 2), so the
//! one-command quick start launches `pulp-worker` processes found next to
//! its own executable, pointed at this scheduler, and kills them when the
//! scheduler exits. The workers get the scheduler's database URL (through
//! their environment, so a password does not show in `ps`) and storage
//! directory, so they run the content tasks too.

use anyhow::Context;
use std::net::SocketAddr;
use std::path::Path;
use tokio::process::{Child, Command};

/// Starts `count` workers connected to `listen`, on the scheduler's
/// database and storage directory.
pub fn spawn_workers(
    count: u32,
    listen: SocketAddr,
    data_dir: &Path,
    database_url: &str,
    storage_dir: &Path,
) -> anyhow::Result<Vec<Child>> {
    let exe = std::env::current_exe().context("find the scheduler's own executable")?;
    let worker = exe.with_file_name("pulp-worker");
    anyhow::ensure!(
        worker.exists(),
        "--spawn-workers needs the pulp-worker binary next to pulp-scheduler ({}); build it with `cargo build --bins`",
        worker.display()
    );
    let host = if listen.ip().is_unspecified() {
        "127.0.0.1".to_owned()
    } else {
        listen.ip().to_string()
    };
    let scheduler = format!("http://{host}:{}", listen.port());
    (0..count)
        .map(|i| {
            Command::new(&worker)
                .arg("--scheduler")
                .arg(&scheduler)
                .arg("--name")
                .arg(format!("quickstart-{i}"))
                .arg("--working-dir")
                .arg(data_dir.join("work").join(format!("quickstart-{i}")))
                .arg("--health-listen")
                .arg("none")
                .arg("--storage-dir")
                .arg(storage_dir)
                // Quick-start exports may go to `<data-dir>/exports` only.
                .arg("--allowed-export-path")
                .arg(std::path::absolute(data_dir.join("exports"))?)
                .env("PULP_DATABASE_URL", database_url)
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("start {}", worker.display()))
        })
        .collect()
}
