//! The task names that ship with `pulp-worker`.
//!
//! The scheduler accepts a Dispatch for a func in this catalog, or for one
//! that some worker has registered (a worker may offer extra tasks). Anything
//! else is INVALID_ARGUMENT, like the seed's import error for an unknown
//! function. A catalogued func that no connected worker offers simply waits.

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
