//! The task implementations that ship with the worker.
//!
//! Each submodule holds plain `async fn(TaskContext) -> TaskResult` bodies;
//! [`register_builtin`] and [`register_content`] put them into a
//! [`TaskRegistry`] under the names of `pulp_common::catalog`, which is how
//! the scheduler knows them.

pub mod add_and_remove;
pub mod diagnostic;
pub mod export;
pub mod publish;

use pulp_common::catalog;

use crate::registry::TaskRegistry;

/// Registers every shipped task.
pub fn register_builtin(registry: &mut TaskRegistry) {
    registry
        .register(catalog::NOOP, diagnostic::noop)
        .register(catalog::SLEEP, diagnostic::sleep)
        .register(catalog::FAIL, diagnostic::fail)
        .register(catalog::PANIC, diagnostic::panic);
}

/// Registers the content tasks (they need the worker's database).
pub fn register_content(registry: &mut TaskRegistry) {
    registry
        .register(catalog::ADD_AND_REMOVE, add_and_remove::add_and_remove)
        .register(catalog::SLEEP_THEN_WRITE, diagnostic::sleep_then_write)
        .register(catalog::PUBLISH, publish::publish)
        .register(
            catalog::FS_PUBLICATION_EXPORT,
            export::fs_publication_export,
        )
        .register(
            catalog::FS_REPO_VERSION_EXPORT,
            export::fs_repo_version_export,
        );
}

/// Refuses positional arguments and kwargs not in `known`.
pub(crate) fn check_kwargs(
    ctx: &crate::context::TaskContext,
    func: &str,
    known: &[&str],
) -> Result<(), crate::outcome::TaskError> {
    if let Some(unknown) = ctx.kwargs.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(crate::outcome::TaskError::invalid_arguments(format!(
            "kwargs.{unknown} is not an argument of {func}; it takes {}",
            known.join(", ")
        )));
    }
    if !ctx.args.is_empty() {
        return Err(crate::outcome::TaskError::invalid_arguments(format!(
            "{func} takes keyword arguments only"
        )));
    }
    Ok(())
}
