//! The `pulpctl group` commands: `TaskGroups.CreateTaskGroup`,
//! `GetTaskGroup`, `FinishTaskGroup` and `CancelTaskGroup`, each printing
//! the group afterwards.

use std::io::Write;

use pulp_common::proto::tasking::v1::{
    CancelTaskGroupRequest, CreateTaskGroupRequest, FinishTaskGroupRequest, GetTaskGroupRequest,
};

use crate::cli::GroupCommand;
use crate::client::Scheduler;
use crate::error::CliError;
use crate::output::Printer;

/// Runs one `group` command and prints the group it returns.
pub async fn run<W: Write>(
    scheduler: &Scheduler,
    command: GroupCommand,
    printer: &mut Printer<'_, W>,
) -> Result<i32, CliError> {
    let mut client = scheduler.groups();
    let group = match command {
        GroupCommand::Create { description } => {
            client
                .create_task_group(CreateTaskGroupRequest { description })
                .await?
        }
        GroupCommand::Show { id } => client.get_task_group(GetTaskGroupRequest { id }).await?,
        GroupCommand::Finish { id } => {
            client
                .finish_task_group(FinishTaskGroupRequest { id })
                .await?
        }
        GroupCommand::Cancel { id } => {
            client
                .cancel_task_group(CancelTaskGroupRequest { id })
                .await?
        }
    }
    .into_inner();
    printer.group(&group)?;
    Ok(0)
}
