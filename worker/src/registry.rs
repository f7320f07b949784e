//! The task registry: task name -> implementation.
//!
//! [`crate::run_with`] sends the registered names in `Hello.funcs`; the
//! connection loop looks each assignment's func up here and hands the
//! implementation to the runner, which calls it with a [`TaskContext`].

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;

use crate::context::TaskContext;
use crate::outcome::TaskError;

/// What a task returns: a JSON value (its result) or its error.
pub type TaskResult = Result<serde_json::Value, TaskError>;

/// A task implementation: called once per run with that run's context.
pub type TaskFn = Arc<dyn Fn(TaskContext) -> BoxFuture<'static, TaskResult> + Send + Sync>;

/// Task names and their implementations.
#[derive(Clone, Default)]
pub struct TaskRegistry {
    tasks: BTreeMap<String, TaskFn>,
}

impl TaskRegistry {
    /// An empty registry.
    pub fn new() -> TaskRegistry {
        TaskRegistry::default()
    }

    /// The tasks that ship with the worker (`pulp_common::catalog`).
    pub fn builtin() -> TaskRegistry {
        let mut registry = TaskRegistry::new();
        crate::tasks::register_builtin(&mut registry);
        registry
    }

    /// The built-in tasks plus the content tasks
    /// (`pulp_common::catalog::CONTENT_TASKS`), which need the worker to
    /// have a database (`--database-url`).
    pub fn with_content() -> TaskRegistry {
        let mut registry = TaskRegistry::builtin();
        crate::tasks::register_content(&mut registry);
        registry
    }

    /// Registers (or replaces) the task `name`. Names must be valid task
    /// names (letters, digits, `_`, `.`, `:`); the worker checks them at
    /// start.
    pub fn register<F, Fut>(&mut self, name: impl Into<String>, task: F) -> &mut TaskRegistry
    where
        F: Fn(TaskContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = TaskResult> + Send + 'static,
    {
        let task: TaskFn = Arc::new(move |ctx| task(ctx).boxed());
        self.tasks.insert(name.into(), task);
        self
    }

    /// The implementation of `name`.
    pub fn get(&self, name: &str) -> Option<&TaskFn> {
        self.tasks.get(name)
    }

    /// The registered names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tasks.keys().map(String::as_str)
    }

    /// True when nothing is registered.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }
}

impl fmt::Debug for TaskRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.names()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_registers_the_catalog() {
        let registry = TaskRegistry::builtin();
        let mut expected = pulp_common::catalog::BUILTIN_TASKS.to_vec();
        expected.sort_unstable();
        assert_eq!(registry.names().collect::<Vec<_>>(), expected);
    }

    #[test]
    fn register_adds_and_replaces() {
        let mut registry = TaskRegistry::builtin();
        registry.register("extra", |_ctx| async { Ok(serde_json::json!(1)) });
        registry.register("noop", |_ctx| async { Ok(serde_json::json!(2)) });
        assert!(registry.get("extra").is_some());
        assert_eq!(
            registry.names().count(),
            pulp_common::catalog::BUILTIN_TASKS.len() + 1
        );
    }
}
