//! The task commands: `dispatch`, `get`, `list`, `cancel` and `watch`.
//!
//! Each turns its parsed arguments into one request (or one page after
//! another for `list`), and hands the answer to the [`Printer`]. Following a
//! task to its end is [`crate::watch`]'s job; [`wait_for`] adds the final
//! print and the exit code.

use std::io::Write;

use pulp_common::proto::tasking::v1::{
    CancelTaskRequest, DispatchRequest, EnqueueOptions, EnqueueRequest, GetTaskRequest,
    ListTasksRequest, Task,
};

use crate::cli::{DispatchArgs, ListArgs};
use crate::client::Scheduler;
use crate::error::CliError;
use crate::output::Printer;
use crate::watch::{exit_code, failure_message, follow, stderr_view};

/// The largest page `ListTasks` serves.
const MAX_PAGE_SIZE: usize = 1000;

/// `pulpctl dispatch`: `Tasks.Dispatch`, or `Tasks.Enqueue` when a timeout
/// is given (only Enqueue carries options). With `--wait`, follows the task
/// to its end.
pub async fn dispatch<W: Write>(
    scheduler: &Scheduler,
    args: DispatchArgs,
    printer: &mut Printer<'_, W>,
) -> Result<i32, CliError> {
    let mut client = scheduler.tasks();
    let task_args = args.args.as_ref().map(|a| a.to_proto());
    let task_kwargs = args.kwargs.as_ref().map(|k| k.to_proto());
    let task = match args.timeout {
        None => client
            .dispatch(DispatchRequest {
                func: args.func,
                args: task_args,
                kwargs: task_kwargs,
                exclusive_resources: args.exclusive,
                shared_resources: args.shared,
                task_group_id: args.group,
                ..DispatchRequest::default()
            })
            .await?
            .into_inner(),
        Some(timeout_seconds) => {
            let response = client
                .enqueue(EnqueueRequest {
                    func: args.func,
                    args: task_args,
                    kwargs: task_kwargs,
                    options: Some(EnqueueOptions {
                        timeout_seconds: Some(timeout_seconds),
                    }),
                    exclusive_resources: args.exclusive,
                    shared_resources: args.shared,
                    task_group_id: args.group,
                    ..EnqueueRequest::default()
                })
                .await?
                .into_inner();
            match response.task {
                Some(task) => task,
                None => fetch(scheduler, &response.job_id).await?,
            }
        }
    };
    if args.wait {
        return wait_for(scheduler, &task.id, printer).await;
    }
    printer.task_summary(&task)?;
    Ok(0)
}

/// `pulpctl get`: `Tasks.GetTask`, shown in full.
pub async fn get<W: Write>(
    scheduler: &Scheduler,
    id: &str,
    printer: &mut Printer<'_, W>,
) -> Result<i32, CliError> {
    let task = fetch(scheduler, id).await?;
    printer.task(&task)?;
    Ok(0)
}

/// `pulpctl list`: `Tasks.ListTasks`, page after page until the limit (or
/// the last page with `--all`).
pub async fn list<W: Write>(
    scheduler: &Scheduler,
    args: ListArgs,
    printer: &mut Printer<'_, W>,
) -> Result<i32, CliError> {
    let mut client = scheduler.tasks();
    let limit = (!args.all).then_some(args.limit as usize);
    let mut tasks = Vec::new();
    let mut page_token = String::new();
    let more = loop {
        let wanted = limit.map_or(MAX_PAGE_SIZE, |limit| limit - tasks.len());
        let page = client
            .list_tasks(ListTasksRequest {
                states: args
                    .states
                    .iter()
                    .map(|state| state.to_proto() as i32)
                    .collect(),
                func: args.func.clone().unwrap_or_default(),
                task_group_id: args.group.clone().unwrap_or_default(),
                worker: args.worker.clone().unwrap_or_default(),
                resource: args.resource.clone().unwrap_or_default(),
                page_size: wanted.min(MAX_PAGE_SIZE) as i32,
                page_token,
            })
            .await?
            .into_inner();
        let empty_page = page.tasks.is_empty();
        tasks.extend(page.tasks);
        page_token = page.next_page_token;
        if page_token.is_empty() {
            break false;
        }
        if limit.is_some_and(|limit| tasks.len() >= limit) {
            break true;
        }
        // A page with nothing on it but a token to go on would loop forever
        // against a misbehaving server.
        if empty_page {
            break true;
        }
    };
    if let Some(limit) = limit {
        tasks.truncate(limit);
    }
    printer.tasks(&tasks, pulp_common::time::now_micros())?;
    if more && !printer.is_json() {
        eprintln!(
            "(showing the first {} tasks; more match: raise --limit or pass --all)",
            tasks.len()
        );
    }
    Ok(0)
}

/// `pulpctl cancel`: `Tasks.CancelTask`, then prints the task.
pub async fn cancel<W: Write>(
    scheduler: &Scheduler,
    id: &str,
    printer: &mut Printer<'_, W>,
) -> Result<i32, CliError> {
    let task = scheduler
        .tasks()
        .cancel_task(CancelTaskRequest { id: id.to_owned() })
        .await?
        .into_inner();
    printer.task_summary(&task)?;
    Ok(0)
}

/// `pulpctl watch`, and the end of `dispatch --wait`: follows the task with
/// a display on stderr, prints the final task in full, and returns 0 when it
/// completed or 1 otherwise (after printing why on stderr).
pub async fn wait_for<W: Write>(
    scheduler: &Scheduler,
    id: &str,
    printer: &mut Printer<'_, W>,
) -> Result<i32, CliError> {
    let task = {
        let mut view = stderr_view();
        follow(&mut scheduler.tasks(), id, view.as_mut()).await?
    };
    printer.task(&task)?;
    if let Some(message) = failure_message(&task) {
        eprintln!("{message}");
    }
    Ok(exit_code(&task))
}

async fn fetch(scheduler: &Scheduler, id: &str) -> Result<Task, CliError> {
    Ok(scheduler
        .tasks()
        .get_task(GetTaskRequest { id: id.to_owned() })
        .await?
        .into_inner())
}
