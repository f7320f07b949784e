//! Building a validated [`NewTask`] from `DispatchRequest` / `EnqueueRequest`.

use super::ApiError;
use crate::engine::KnownFuncs;
use crate::task::NewTask;
use pulp_common::json;
use pulp_common::names::{ResourceClaims, ResourceName, TaskGroupId, TaskId, TaskName};
use pulp_common::proto::tasking::v1 as pb;

/// Largest JSON encoding of args plus kwargs.
pub const MAX_ARGUMENTS_BYTES: usize = 1024 * 1024;
/// Longest timeout accepted.
pub const MAX_TIMEOUT_SECONDS: f64 = 7.0 * 24.0 * 3600.0;

/// The fields shared by Dispatch and Enqueue.
pub struct TaskRequest<'a> {
    /// The func.
    pub func: &'a str,
    /// Positional arguments.
    pub args: Option<&'a prost_types::ListValue>,
    /// Keyword arguments.
    pub kwargs: Option<&'a prost_types::Struct>,
    /// Exclusive resource strings.
    pub exclusive: &'a [String],
    /// Shared resource strings.
    pub shared: &'a [String],
    /// Exclusive typed references.
    pub exclusive_refs: &'a [pb::ResourceRef],
    /// Shared typed references.
    pub shared_refs: &'a [pb::ResourceRef],
    /// Group id.
    pub task_group_id: Option<&'a str>,
    /// Parent id.
    pub parent_task_id: Option<&'a str>,
    /// Timeout in seconds.
    pub timeout_seconds: Option<f64>,
}

impl<'a> TaskRequest<'a> {
    /// The fields of a DispatchRequest.
    pub fn dispatch(r: &'a pb::DispatchRequest) -> Self {
        TaskRequest {
            func: &r.func,
            args: r.args.as_ref(),
            kwargs: r.kwargs.as_ref(),
            exclusive: &r.exclusive_resources,
            shared: &r.shared_resources,
            exclusive_refs: &r.exclusive_resource_refs,
            shared_refs: &r.shared_resource_refs,
            task_group_id: r.task_group_id.as_deref(),
            parent_task_id: r.parent_task_id.as_deref(),
            timeout_seconds: None,
        }
    }
}

/// Validates a request into a new task; nothing is stored yet.
pub fn new_task(
    request: TaskRequest<'_>,
    extra_exclusive: &[String],
    funcs: &KnownFuncs,
) -> Result<NewTask, ApiError> {
    let func = TaskName::parse(request.func)?;
    if !funcs.contains(func.as_str()) {
        return Err(ApiError::InvalidArgument(format!(
            "unknown func {:?}: it is not a built-in task and no worker has registered it",
            func.as_str()
        )));
    }
    let strings = |list: &[String]| {
        list.iter()
            .map(|s| ResourceName::parse(s))
            .collect::<Result<Vec<_>, _>>()
    };
    let refs = |list: &[pb::ResourceRef]| {
        list.iter()
            .map(|r| ResourceName::from_ref(&r.kind, &r.id))
            .collect::<Result<Vec<_>, _>>()
    };
    let mut exclusive = strings(extra_exclusive)?;
    exclusive.extend(strings(request.exclusive)?);
    exclusive.extend(refs(request.exclusive_refs)?);
    let mut shared = strings(request.shared)?;
    shared.extend(refs(request.shared_refs)?);
    let claims = ResourceClaims::new(exclusive, shared)?;

    let args = request
        .args
        .map_or(serde_json::Value::Array(Vec::new()), json::list_to_json);
    let kwargs =
        serde_json::Value::Object(request.kwargs.map(json::struct_to_json).unwrap_or_default());
    let args = serde_json::to_string(&args)
        .map_err(|e| ApiError::InvalidArgument(format!("args: {e}")))?;
    let kwargs = serde_json::to_string(&kwargs)
        .map_err(|e| ApiError::InvalidArgument(format!("kwargs: {e}")))?;
    if args.len() + kwargs.len() > MAX_ARGUMENTS_BYTES {
        return Err(ApiError::InvalidArgument(format!(
            "args and kwargs encode to {} bytes of JSON; the limit is {MAX_ARGUMENTS_BYTES}",
            args.len() + kwargs.len()
        )));
    }
    let task_group_id = request.task_group_id.map(TaskGroupId::parse).transpose()?;
    let parent_task_id = request
        .parent_task_id
        .filter(|p| !p.is_empty())
        .map(TaskId::parse)
        .transpose()?;
    let timeout_ms = match request.timeout_seconds {
        None => None,
        Some(0.0) => None,
        Some(t) if t.is_finite() && t > 0.0 && t <= MAX_TIMEOUT_SECONDS => {
            Some((t * 1000.0).ceil() as i64)
        }
        Some(t) => {
            return Err(ApiError::InvalidArgument(format!(
                "options.timeout_seconds is {t}; give a number of seconds above 0 and at most {MAX_TIMEOUT_SECONDS}"
            )));
        }
    };
    Ok(NewTask {
        id: TaskId::new(),
        func,
        args,
        kwargs,
        claims,
        task_group_id,
        parent_task_id,
        timeout_ms,
    })
}
