//! The content API, `pulp.content.v1`: protobuf in, the validated types of
//! `pulp_common::content` to its SQL functions, protobuf out.
//!
//! - [`artifacts`] serves `Artifacts` (streamed, verified uploads into the
//!   storage directory).
//! - [`contents`] serves `Contents`.
//! - [`repositories`] serves `Repositories`; its `Modify` validates and
//!   dispatches the task `add_and_remove` through the engine (or the
//!   leader's, see [`crate::cluster`]), which a worker then runs.
//! - [`publications`] serves `Publications`; `CreatePublication` dispatches
//!   `publish` the same way.
//! - [`exporters`] serves `Exporters`; `Export` dispatches
//!   `fs_publication_export` or `fs_repo_version_export`.
//!
//! Every replica serves reads and the synchronous writes (creations,
//! uploads, deletions) from the shared database itself; each write runs in
//! one transaction, so a refused request changes nothing.

pub mod artifacts;
pub mod contents;
pub mod exporters;
pub mod publications;
pub mod repositories;

use super::ApiError;
use pulp_common::content::contents::PulpType;
use pulp_common::content::{ContentError, MAX_PAGE_SIZE};
use pulp_common::time::to_timestamp;

/// Page size when a list request gives none.
pub const DEFAULT_PAGE_SIZE: u64 = 100;

impl From<ContentError> for ApiError {
    fn from(err: ContentError) -> Self {
        match err {
            ContentError::Invalid(m) => ApiError::InvalidArgument(m),
            ContentError::NotFound(m) => ApiError::NotFound(m),
            ContentError::AlreadyExists(m) => ApiError::AlreadyExists(m),
            ContentError::FailedPrecondition(m) => ApiError::FailedPrecondition(m),
            ContentError::Db(e) => ApiError::from(e),
            err @ (ContentError::Io { .. }
            | ContentError::Fenced { .. }
            | ContentError::Canceled) => {
                tracing::error!(error = %err, "content operation failed");
                ApiError::Internal(err.to_string())
            }
        }
    }
}

/// A validated `page_size`: 0 means the default.
pub(crate) fn page_size(n: i32) -> Result<u64, ApiError> {
    match u64::try_from(n) {
        Ok(0) => Ok(DEFAULT_PAGE_SIZE),
        Ok(n) if n <= MAX_PAGE_SIZE => Ok(n),
        _ => Err(ApiError::InvalidArgument(format!(
            "page_size {n} is out of range: give 1 to {MAX_PAGE_SIZE}, or 0 for {DEFAULT_PAGE_SIZE}"
        ))),
    }
}

/// A `page_token` that is an id of the previous page, parsed by `parse`.
pub(crate) fn page_token<T, E>(
    token: &str,
    parse: impl FnOnce(&str) -> Result<T, E>,
) -> Result<Option<T>, ApiError> {
    if token.is_empty() {
        return Ok(None);
    }
    parse(token).map(Some).map_err(|_| {
        ApiError::InvalidArgument(
            "page_token is not valid: pass the next_page_token of the previous page".into(),
        )
    })
}

/// A `pulp_type` filter: empty for none.
pub(crate) fn type_filter(pulp_type: &str) -> Result<Option<PulpType>, ApiError> {
    if pulp_type.is_empty() {
        return Ok(None);
    }
    Ok(Some(PulpType::parse(pulp_type)?))
}

/// The next page token: the last item's key when the page is full.
pub(crate) fn next_token<T>(page: &[T], limit: u64, key: impl Fn(&T) -> String) -> String {
    match page.last() {
        Some(last) if page.len() as u64 == limit => key(last),
        _ => String::new(),
    }
}

/// Microseconds since the epoch as a protobuf timestamp.
pub(crate) fn timestamp(micros: i64) -> Option<prost_types::Timestamp> {
    Some(to_timestamp(micros))
}
