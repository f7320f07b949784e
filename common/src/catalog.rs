//! The task names that ship with `pulp-worker`.
//!
//! The scheduler accepts a Dispatch for a func in this catalog, or for one
//! that some worker has registered (a worker may offer extra tasks). Anything
//! else is INVALID_ARGUMENT, like the seed's import error for an unknown
//! function. A catalogued func that no connected worker offers simply waits.
//!
//! The content tasks ([`CONTENT_TASKS`]) need the database; a worker
//! registers them only when it is given `--database-url`.

/// Does nothing and returns `null`.
pub const NOOP: &str = "noop";
/// Sleeps `kwargs.seconds` (default 1), reporting progress; honours
/// cancellation unless `kwargs.ignore_cancel` is true.
pub const SLEEP: &str = "sleep";
/// Fails with `kwargs.message`.
pub const FAIL: &str = "fail";
/// Panics with `kwargs.message` (tests that a panic fails only its task).
pub const PANIC: &str = "panic";

/// Every task name the shipped worker registers.
pub const BUILTIN_TASKS: &[&str] = &[NOOP, SLEEP, FAIL, PANIC];

/// The seed's `add_and_remove(repository_pk, add_content_units,
/// remove_content_units, base_version_pk=None)`: creates a repository's
/// next version. Dispatched by `pulp.content.v1.Repositories.Modify`.
pub const ADD_AND_REMOVE: &str = "add_and_remove";

/// A diagnostic content task: sleeps like [`SLEEP`], then creates the
/// repository `kwargs.repository_name` through the task's fence (tests use
/// it to show that a worker paused past its lease cannot write).
pub const SLEEP_THEN_WRITE: &str = "sleep_then_write";

/// `publish(repository_version_pk, pass_through=False)`: creates a
/// publication of a complete version. Dispatched by
/// `pulp.content.v1.Publications.CreatePublication`.
pub const PUBLISH: &str = "publish";

/// The seed's `fs_publication_export(exporter_pk, publication_pk)`: lays a
/// publication's files out under a file-system exporter's path.
pub const FS_PUBLICATION_EXPORT: &str = "fs_publication_export";

/// The seed's `fs_repo_version_export(exporter_pk, repo_version_pk,
/// start_repository_version_pk=None)`: lays a version's files (or those
/// added since the start version) out under a file-system exporter's path.
pub const FS_REPO_VERSION_EXPORT: &str = "fs_repo_version_export";

/// Every content task the shipped worker registers when it has a database.
pub const CONTENT_TASKS: &[&str] = &[
    ADD_AND_REMOVE,
    PUBLISH,
    FS_PUBLICATION_EXPORT,
    FS_REPO_VERSION_EXPORT,
    SLEEP_THEN_WRITE,
];
