//! `pulpctl workers`: `Workers.ListWorkers` as a table or JSON.

use std::io::Write;

use pulp_common::proto::tasking::v1::ListWorkersRequest;

use crate::client::Scheduler;
use crate::error::CliError;
use crate::output::Printer;

/// Lists the workers the scheduler knows, online or not.
pub async fn list<W: Write>(
    scheduler: &Scheduler,
    printer: &mut Printer<'_, W>,
) -> Result<i32, CliError> {
    let workers = scheduler
        .workers()
        .list_workers(ListWorkersRequest {})
        .await?
        .into_inner()
        .workers;
    printer.workers(&workers)?;
    Ok(0)
}
