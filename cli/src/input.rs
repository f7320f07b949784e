//! Validated command-line values: task args and kwargs, task states and
//! timeouts.
//!
//! Each value is checked once, while clap parses the command line, so a bad
//! value is a usage error (exit code 2) that names the flag, before any
//! connection to the scheduler is made. The types here are what the rest of
//! the crate works with; the prost forms are built from them only when a
//! request is sent.

use prost_types::{ListValue, Struct};
use pulp_common::json::{json_to_list, json_to_struct};
use pulp_common::state::TaskState;
use serde_json::{Map, Value as Json};

/// The longest timeout the scheduler accepts: 7 days, in seconds.
pub const MAX_TIMEOUT_SECONDS: f64 = 7.0 * 24.0 * 3600.0;

/// Why a command-line value was refused.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// The text is not JSON at all.
    #[error("not valid JSON: {0}")]
    NotJson(#[source] serde_json::Error),
    /// `--args` was JSON, but not a list.
    #[error("must be a JSON list, like '[1, \"a\"]', not a JSON {0}")]
    ArgsNotAList(&'static str),
    /// `--kwargs` was JSON, but not an object.
    #[error("must be a JSON object, like '{{\"key\": 1}}', not a JSON {0}")]
    KwargsNotAnObject(&'static str),
    /// A task state name that does not exist.
    #[error("unknown state '{0}'; valid states: {valid}", valid = valid_states())]
    UnknownState(String),
    /// A timeout that is not a positive number of seconds within the limit.
    #[error(
        "must be a number of seconds greater than 0 and at most {MAX_TIMEOUT_SECONDS} (7 days)"
    )]
    BadTimeout,
}

/// Positional arguments of a task: a JSON list.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskArgs(Vec<Json>);

impl TaskArgs {
    /// Parses `--args`: the text must be a JSON list.
    pub fn parse(text: &str) -> Result<Self, InputError> {
        match serde_json::from_str(text).map_err(InputError::NotJson)? {
            Json::Array(items) => Ok(TaskArgs(items)),
            other => Err(InputError::ArgsNotAList(json_kind(&other))),
        }
    }

    /// The arguments as JSON values.
    pub fn values(&self) -> &[Json] {
        &self.0
    }

    /// The wire form.
    pub fn to_proto(&self) -> ListValue {
        json_to_list(&Json::Array(self.0.clone()))
    }
}

/// Keyword arguments of a task: a JSON object.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskKwargs(Map<String, Json>);

impl TaskKwargs {
    /// Parses `--kwargs`: the text must be a JSON object.
    pub fn parse(text: &str) -> Result<Self, InputError> {
        match serde_json::from_str(text).map_err(InputError::NotJson)? {
            Json::Object(map) => Ok(TaskKwargs(map)),
            other => Err(InputError::KwargsNotAnObject(json_kind(&other))),
        }
    }

    /// The keyword arguments as a JSON object.
    pub fn values(&self) -> &Map<String, Json> {
        &self.0
    }

    /// The wire form.
    pub fn to_proto(&self) -> Struct {
        json_to_struct(&self.0)
    }
}

/// Parses a task state name, ignoring case (`waiting`, `RUNNING`, ...).
pub fn parse_state(text: &str) -> Result<TaskState, InputError> {
    TaskState::parse(&text.trim().to_ascii_lowercase())
        .ok_or_else(|| InputError::UnknownState(text.to_owned()))
}

/// Parses `--timeout`: seconds, greater than 0 and at most 7 days.
pub fn parse_timeout(text: &str) -> Result<f64, InputError> {
    let seconds: f64 = text.trim().parse().map_err(|_| InputError::BadTimeout)?;
    if seconds.is_finite() && seconds > 0.0 && seconds <= MAX_TIMEOUT_SECONDS {
        Ok(seconds)
    } else {
        Err(InputError::BadTimeout)
    }
}

/// The state names, comma-separated, for error messages.
fn valid_states() -> String {
    TaskState::ALL
        .iter()
        .map(|state| state.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// What kind of JSON value this is, for error messages.
fn json_kind(value: &Json) -> &'static str {
    match value {
        Json::Null => "null",
        Json::Bool(_) => "boolean",
        Json::Number(_) => "number",
        Json::String(_) => "string",
        Json::Array(_) => "list",
        Json::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn args_must_be_a_list() {
        let args = TaskArgs::parse(r#"[1, "a", {"b": null}]"#).unwrap();
        assert_eq!(args.values(), &[json!(1), json!("a"), json!({"b": null})]);
        assert_eq!(args.to_proto().values.len(), 3);

        for (text, kind) in [
            (r#"{"a": 1}"#, "object"),
            ("3", "number"),
            (r#""x""#, "string"),
            ("null", "null"),
        ] {
            let err = TaskArgs::parse(text).unwrap_err();
            assert!(
                matches!(err, InputError::ArgsNotAList(k) if k == kind),
                "{text}"
            );
            assert!(err.to_string().contains("must be a JSON list"), "{err}");
        }
        let err = TaskArgs::parse("[1,").unwrap_err();
        assert!(err.to_string().starts_with("not valid JSON"), "{err}");
    }

    #[test]
    fn kwargs_must_be_an_object() {
        let kwargs = TaskKwargs::parse(r#"{"seconds": 2}"#).unwrap();
        assert_eq!(kwargs.values()["seconds"], json!(2));
        assert!(kwargs.to_proto().fields.contains_key("seconds"));

        for (text, kind) in [("[1]", "list"), ("true", "boolean"), ("1.5", "number")] {
            let err = TaskKwargs::parse(text).unwrap_err();
            assert!(
                matches!(err, InputError::KwargsNotAnObject(k) if k == kind),
                "{text}"
            );
            assert!(err.to_string().contains("must be a JSON object"), "{err}");
        }
        assert!(matches!(
            TaskKwargs::parse("{nope}"),
            Err(InputError::NotJson(_))
        ));
    }

    #[test]
    fn states_parse_ignoring_case() {
        assert_eq!(parse_state("waiting").unwrap(), TaskState::Waiting);
        assert_eq!(parse_state("RUNNING").unwrap(), TaskState::Running);
        assert_eq!(parse_state("Canceled").unwrap(), TaskState::Canceled);
        let err = parse_state("done").unwrap_err();
        let message = err.to_string();
        assert!(message.contains("unknown state 'done'"), "{message}");
        for state in TaskState::ALL {
            assert!(message.contains(state.as_str()), "{message}");
        }
    }

    #[test]
    fn timeouts_are_positive_and_bounded() {
        assert_eq!(parse_timeout("30").unwrap(), 30.0);
        assert_eq!(parse_timeout("0.5").unwrap(), 0.5);
        for bad in ["0", "-1", "nan", "inf", "abc", "604801"] {
            assert!(parse_timeout(bad).is_err(), "{bad}");
        }
    }
}
