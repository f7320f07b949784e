//! `add_and_remove(repository_pk, add_content_units, remove_content_units,
//! base_version_pk=None)`: the seed's task that creates a repository's
//! next version.
//!
//! Data flow: the kwargs are checked into a
//! [`Modification`] by [`modification::from_kwargs`] (the same parser the
//! scheduler runs on a raw dispatch); one write transaction is opened on the shared database
//! ([`begin_write`]); [`versions::add_and_remove`] computes the new version
//! in set-based SQL inside it (remove first, then add; see that module for
//! the statements); then the task's [`Fence`](pulp_common::content::fence)
//! is checked and the transaction committed, and the new version is
//! recorded as the task's created resource. Between steps (and between
//! chunks of the unit lists) the cancellation token is checked: a cancelled
//! run, an error, or a failed fence rolls the whole transaction back, so no
//! incomplete version and no used version number is ever left behind. A
//! change that leaves the content equal to the latest version's creates no
//! version, and the result says so.
//!
//! [`run`] takes a [`Hook`] awaited at each [`Phase`]; the registered task
//! passes one that does nothing. Tests use it to hold a run at a known
//! point (before the transaction, or with its writes done but not
//! committed) while they cancel it or start another.

use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;
use pulp_common::content::modification::{self, Modification};
use pulp_common::content::versions::{self, Modified, Step};
use pulp_common::content::{ContentError, begin_write, repositories};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::context::TaskContext;
use crate::outcome::{TaskError, reason};
use crate::progress::ProgressReport;
use crate::registry::TaskResult;

/// Where a run stands when its [`Hook`] is called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The kwargs are valid; no transaction is open yet.
    BeforeTransaction,
    /// Inside the transaction, after this step of
    /// [`versions::add_and_remove`].
    InTransaction(Step),
    /// A new version is written but not committed; the fence check and the
    /// commit come next.
    BeforeCommit,
}

/// Awaited at every [`Phase`] with the run's cancellation token.
pub type Hook = Arc<dyn Fn(Phase, CancellationToken) -> BoxFuture<'static, ()> + Send + Sync>;

/// The registered task: [`run`] without a hook.
pub async fn add_and_remove(ctx: TaskContext) -> TaskResult {
    run(ctx, Arc::new(|_, _| async {}.boxed())).await
}

/// Runs the task, awaiting `hook` at each phase.
pub async fn run(ctx: TaskContext, hook: Hook) -> TaskResult {
    let modification = parse(&ctx)?;
    let db = ctx.database()?.clone();
    let token = ctx.cancellation().clone();
    hook(Phase::BeforeTransaction, token.clone()).await;
    if token.is_cancelled() {
        return Err(TaskError::canceled());
    }

    let txn = begin_write(&db).await.map_err(|e| task_error(e.into()))?;
    const STEPS: i64 = 5;
    let checkpoint = |step: Step| {
        let paused = hook(Phase::InTransaction(step), token.clone());
        let token = token.clone();
        let report = match step {
            Step::Loading { done, total } => ProgressReport::new(
                "Loading content units",
                "add_and_remove.units",
                done as i64,
                total as i64,
            ),
            step => ProgressReport::new(
                "Creating the repository version",
                "add_and_remove",
                match step {
                    Step::Locked | Step::Loading { .. } => 1,
                    Step::Started => 2,
                    Step::Removed => 3,
                    Step::Added => 4,
                    Step::Finished => STEPS,
                },
                STEPS,
            ),
        };
        ctx.report_progress(report);
        async move {
            paused.await;
            if token.is_cancelled() {
                Err(ContentError::Canceled)
            } else {
                Ok(())
            }
        }
    };
    let modified = match versions::add_and_remove(&txn, &modification, checkpoint).await {
        Ok(modified) => modified,
        Err(err) => {
            // Dropping the transaction rolls it back too; this says so now.
            let _ = txn.rollback().await;
            return Err(task_error(err));
        }
    };
    match modified {
        Modified::Unchanged { latest } => {
            txn.rollback().await.map_err(|e| task_error(e.into()))?;
            info!(repository_id = %modification.repository, latest = latest.number, "no change: no version created");
            Ok(json!({
                "created": false,
                "message": format!(
                    "no version was created: the content would equal that of the latest version {}",
                    latest.number
                ),
                "latest_version_id": latest.id.to_string(),
                "latest_version_number": latest.number,
            }))
        }
        Modified::Created {
            version,
            added,
            removed,
        } => {
            hook(Phase::BeforeCommit, token.clone()).await;
            if token.is_cancelled() {
                let _ = txn.rollback().await;
                return Err(TaskError::canceled());
            }
            ctx.fence().commit(txn).await.map_err(task_error)?;
            ctx.record_created_resource(
                repositories::version_resource(modification.repository, version.number).to_string(),
            );
            info!(
                repository_id = %modification.repository,
                number = version.number,
                added,
                removed,
                "repository version created"
            );
            Ok(json!({
                "created": true,
                "version_id": version.id.to_string(),
                "version_number": version.number,
                "added": added,
                "removed": removed,
            }))
        }
    }
}

/// The kwargs as a [`Modification`], by the parser the scheduler also
/// runs on a raw dispatch (so a task that got this far passes it, unless a
/// client bypassed the scheduler's checks some other way).
fn parse(ctx: &TaskContext) -> Result<Modification, TaskError> {
    let mut m = modification::from_kwargs(&ctx.args, &ctx.kwargs).map_err(task_error)?;
    m.task_id = Some(ctx.task_id);
    Ok(m)
}

/// A content error as the task's error, its reason naming the class.
pub(crate) fn task_error(err: ContentError) -> TaskError {
    let text = err.to_string();
    match err {
        ContentError::Invalid(_) => TaskError::invalid_arguments(text),
        ContentError::NotFound(_) => TaskError::new(reason::NOT_FOUND, text),
        ContentError::Fenced { .. } => TaskError::new(reason::FENCED, text),
        ContentError::Canceled => TaskError::canceled(),
        ContentError::Db(_) => TaskError::new(reason::DATABASE_ERROR, text),
        ContentError::AlreadyExists(_)
        | ContentError::FailedPrecondition(_)
        | ContentError::Io { .. } => TaskError::task(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::tests::context;
    use pulp_common::content::modification::Removal;
    use pulp_common::names::{ContentId, RepositoryId};

    /// The shared parser's own tests (pulp-common) cover every rule; this
    /// checks that the task uses it, records its id, and fails with reason
    /// "invalid arguments".
    #[test]
    fn kwargs_are_checked_by_the_shared_parser() {
        let repo = RepositoryId::new().to_string();
        let ctx = context(json!({"repository_pk": repo, "remove_content_units": ["*"]}));
        let ok = parse(&ctx).unwrap();
        assert_eq!(ok.remove, Removal::All);
        assert_eq!(ok.task_id, Some(ctx.task_id));
        let unit = ContentId::new().to_string();
        let err = parse(&context(
            json!({"repository_pk": repo, "remove_content_units": ["*", unit]}),
        ))
        .unwrap_err();
        assert_eq!(err.reason, reason::INVALID_ARGUMENTS);
        assert!(
            err.description.contains("cannot be combined"),
            "{}",
            err.description
        );
    }

    #[test]
    fn content_tasks_need_a_database_url() {
        let mut config = crate::Config::for_tests("http://127.0.0.1:1", "/tmp/x");
        let registry = crate::TaskRegistry::with_content();
        let err = crate::validate(&config, &registry).unwrap_err();
        assert!(err.to_string().contains("--database-url"), "{err}");
        config.database_url = Some("sqlite://x.sqlite".into());
        assert!(crate::validate(&config, &registry).is_ok());
        assert!(registry.get(pulp_common::catalog::ADD_AND_REMOVE).is_some());
    }

    #[tokio::test]
    async fn without_a_database_the_task_fails_clearly() {
        let ctx = context(json!({"repository_pk": RepositoryId::new().to_string()}));
        let err = add_and_remove(ctx).await.unwrap_err();
        assert_eq!(err.reason, reason::WORKER_ERROR);
        assert!(
            err.description.contains("--database-url"),
            "{}",
            err.description
        );
    }
}
