//! The arguments of `add_and_remove`: one set of rules for every way a
//! [`Modification`] is made.
//!
//! A modification reaches the worker by two routes: `Repositories.Modify`
//! (a `ModifyRequest`, whose fields the scheduler turns into the task's
//! kwargs) and a raw `Tasks.Dispatch` / `Enqueue` of `add_and_remove` with
//! kwargs of the client's own. Both are checked here, and so is what the
//! worker finally runs, so the three cannot drift apart:
//!
//! - [`parse`] checks the four fields (ids are UUIDs, `"*"` stands alone in
//!   the remove list and never in the add list, at most
//!   [`MAX_MODIFY_UNITS`] units) and names them in its messages as the
//!   caller spells them ([`REQUEST_FIELDS`] or [`KWARGS_FIELDS`]).
//! - [`from_kwargs`] checks the JSON shape of the task's arguments (keyword
//!   arguments only, [`KWARGS`] and no others, lists of strings) and then
//!   calls [`parse`]. The scheduler runs it on a raw dispatch, the worker on
//!   every run.
//! - [`check`] looks the ids up: the repository, the base version (which
//!   must be complete) and every unit must exist. The scheduler runs it
//!   before it stores the task; the task itself meets the same conditions
//!   again inside its transaction (`versions::add_and_remove`), since any of
//!   them may be deleted while the task waits.

use super::{ContentError, contents, repositories, versions};
use crate::names::{ContentId, InvalidName, RepositoryId, RepositoryVersionId, TaskId};
use sea_orm::ConnectionTrait;
use serde_json::{Map, Value};

/// Most content units one modification may name (added plus removed).
/// The task's kwargs carry them, and the Task returned by Modify (and sent
/// to the worker) echoes them: 100,000 ids keep every message under gRPC's
/// default 4 MiB.
pub const MAX_MODIFY_UNITS: usize = 100_000;

/// The keyword arguments of `add_and_remove` (the seed's names).
pub const KWARGS: [&str; 4] = [
    "repository_pk",
    "add_content_units",
    "remove_content_units",
    "base_version_pk",
];

/// Which units `add_and_remove` removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removal {
    /// These units (absent ones are ignored).
    Units(Vec<ContentId>),
    /// `"*"`: everything in the latest version.
    All,
}

/// The seed's `add_and_remove(repository_pk, add_content_units,
/// remove_content_units, base_version_pk)`, validated.
#[derive(Debug, Clone)]
pub struct Modification {
    /// The repository to change.
    pub repository: RepositoryId,
    /// Units to add (duplicates and present ones are ignored).
    pub add: Vec<ContentId>,
    /// Units to remove, first.
    pub remove: Removal,
    /// The version to start from instead of the latest.
    pub base_version: Option<RepositoryVersionId>,
    /// The task doing it, recorded on the version.
    pub task_id: Option<TaskId>,
}

impl Modification {
    /// The task's kwargs for this modification: what [`from_kwargs`] reads.
    pub fn to_kwargs(&self) -> Value {
        let ids = |list: &[ContentId]| list.iter().map(ContentId::to_string).collect::<Vec<_>>();
        serde_json::json!({
            "repository_pk": self.repository.to_string(),
            "add_content_units": ids(&self.add),
            "remove_content_units": match &self.remove {
                Removal::All => vec!["*".to_owned()],
                Removal::Units(units) => ids(units),
            },
            "base_version_pk": self.base_version.map(|b| b.to_string()),
        })
    }
}

/// How a caller names the four fields in its messages.
#[derive(Debug, Clone, Copy)]
pub struct Fields {
    /// The repository.
    pub repository: &'static str,
    /// The units to add.
    pub add: &'static str,
    /// The units to remove.
    pub remove: &'static str,
    /// The base version.
    pub base: &'static str,
}

/// The fields of `pulp.content.v1.ModifyRequest`.
pub const REQUEST_FIELDS: Fields = Fields {
    repository: "repository_id",
    add: "add_content_units",
    remove: "remove_content_units",
    base: "base_version_id",
};

/// The task's keyword arguments.
pub const KWARGS_FIELDS: Fields = Fields {
    repository: "kwargs.repository_pk",
    add: "kwargs.add_content_units",
    remove: "kwargs.remove_content_units",
    base: "kwargs.base_version_pk",
};

fn invalid(msg: String) -> ContentError {
    ContentError::Invalid(msg)
}

/// Checks the four fields of a modification (see the module doc);
/// `fields` names them in the messages. The result has no task id.
pub fn parse<S: AsRef<str>>(
    fields: &Fields,
    repository: &str,
    add: &[S],
    remove: &[S],
    base_version: Option<&str>,
) -> Result<Modification, ContentError> {
    let named = |field: &str, e: InvalidName| invalid(format!("{field}: {}", e.0));
    let repository = RepositoryId::parse(repository).map_err(|e| named(fields.repository, e))?;
    let units = add.len() + remove.len();
    if units > MAX_MODIFY_UNITS {
        return Err(invalid(format!(
            "{} and {} name {units} content units; the limit is {MAX_MODIFY_UNITS}: split the change into several modifications",
            fields.add, fields.remove
        )));
    }
    let ids = |field: &str, list: &[S]| {
        list.iter()
            .enumerate()
            .map(|(i, id)| {
                ContentId::parse(id.as_ref()).map_err(|e| named(&format!("{field}[{i}]"), e))
            })
            .collect::<Result<Vec<_>, _>>()
    };
    let remove = if remove.iter().any(|u| u.as_ref() == "*") {
        if remove.len() > 1 {
            return Err(invalid(format!(
                "{}: \"*\" removes all content and cannot be combined with other units",
                fields.remove
            )));
        }
        Removal::All
    } else {
        Removal::Units(ids(fields.remove, remove)?)
    };
    let add = ids(fields.add, add)?;
    let base_version = base_version
        .map(|b| RepositoryVersionId::parse(b).map_err(|e| named(fields.base, e)))
        .transpose()?;
    Ok(Modification {
        repository,
        add,
        remove,
        base_version,
        task_id: None,
    })
}

/// Checks the task's arguments: no positional ones, only [`KWARGS`],
/// `repository_pk` a string, the unit lists lists of strings (or absent or
/// null), `base_version_pk` a string (or absent or null); then [`parse`]
/// with [`KWARGS_FIELDS`].
pub fn from_kwargs(
    args: &[Value],
    kwargs: &Map<String, Value>,
) -> Result<Modification, ContentError> {
    if !args.is_empty() {
        return Err(invalid(
            "add_and_remove takes keyword arguments only: move the positional args into kwargs"
                .into(),
        ));
    }
    if let Some(unknown) = kwargs.keys().find(|k| !KWARGS.contains(&k.as_str())) {
        return Err(invalid(format!(
            "kwargs.{unknown} is not an argument of add_and_remove; it takes {}",
            KWARGS.join(", ")
        )));
    }
    let string = |name: &str| match kwargs.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(_) => Err(invalid(format!("kwargs.{name} must be an id (a string)"))),
    };
    let strings = |name: &str| match kwargs.get(name) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                item.as_str().ok_or_else(|| {
                    invalid(format!("kwargs.{name} must be a list of ids (strings)"))
                })
            })
            .collect(),
        Some(_) => Err(invalid(format!(
            "kwargs.{name} must be a list of ids (strings)"
        ))),
    };
    let repository = string("repository_pk")?
        .ok_or_else(|| invalid("kwargs.repository_pk is required".into()))?;
    parse(
        &KWARGS_FIELDS,
        repository,
        &strings("add_content_units")?,
        &strings("remove_content_units")?,
        string("base_version_pk")?,
    )
}

/// What [`check`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// The base version's repository when it is another repository: Modify
    /// claims it shared.
    pub other_repository: Option<RepositoryId>,
}

/// Looks a modification's ids up: NOT_FOUND for an unknown repository,
/// base version or content unit; INVALID_ARGUMENT for a base version that
/// is not complete. Reads only.
pub async fn check(conn: &impl ConnectionTrait, m: &Modification) -> Result<Checked, ContentError> {
    if repositories::get_repository(conn, m.repository)
        .await?
        .is_none()
    {
        return Err(ContentError::NotFound(format!(
            "repository {} not found",
            m.repository
        )));
    }
    let mut other_repository = None;
    if let Some(base) = m.base_version {
        let version = versions::get_version(conn, base)
            .await?
            .ok_or_else(|| ContentError::NotFound(format!("base version {base} not found")))?;
        if !version.complete {
            return Err(invalid(format!(
                "base version {base} is not complete: give a finished version"
            )));
        }
        if version.repository_id != m.repository {
            other_repository = Some(version.repository_id);
        }
    }
    let mut named = m.add.clone();
    if let Removal::Units(units) = &m.remove {
        named.extend(units);
    }
    if let Some(missing) = contents::first_missing(conn, &named).await? {
        return Err(ContentError::NotFound(format!(
            "content unit {missing} not found"
        )));
    }
    Ok(Checked { other_repository })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn kwargs(v: Value) -> Result<Modification, ContentError> {
        match v {
            Value::Object(map) => from_kwargs(&[], &map),
            _ => unreachable!("kwargs are an object"),
        }
    }

    #[test]
    fn kwargs_are_checked() {
        let repo = RepositoryId::new().to_string();
        let unit = ContentId::new().to_string();
        let ok = kwargs(json!({
            "repository_pk": repo,
            "add_content_units": [unit],
            "remove_content_units": ["*"],
            "base_version_pk": null,
        }))
        .unwrap();
        assert_eq!(ok.remove, Removal::All);
        assert_eq!(ok.add.len(), 1);
        assert_eq!(kwargs(ok.to_kwargs()).unwrap().add, ok.add, "round trip");
        for (kwargs_json, says) in [
            (json!({}), "repository_pk is required"),
            (json!({"repository_pk": "x"}), "kwargs.repository_pk: "),
            (json!({"repository_pk": 7}), "must be an id"),
            (
                json!({"repository_pk": repo, "extra": 1}),
                "kwargs.extra is not an argument",
            ),
            (
                json!({"repository_pk": repo, "remove_content_units": ["*", unit]}),
                "cannot be combined",
            ),
            (
                json!({"repository_pk": repo, "add_content_units": ["*"]}),
                "kwargs.add_content_units[0]",
            ),
            (
                json!({"repository_pk": repo, "add_content_units": "a"}),
                "must be a list",
            ),
            (
                json!({"repository_pk": repo, "add_content_units": [1]}),
                "must be a list",
            ),
            (
                json!({"repository_pk": repo, "base_version_pk": "v1"}),
                "kwargs.base_version_pk",
            ),
        ] {
            let err = kwargs(kwargs_json.clone()).unwrap_err();
            assert!(matches!(err, ContentError::Invalid(_)), "{kwargs_json}");
            assert!(err.to_string().contains(says), "{kwargs_json}: {err}");
        }
        let args = from_kwargs(&[json!(repo)], &Map::new()).unwrap_err();
        assert!(
            args.to_string().contains("keyword arguments only"),
            "{args}"
        );
    }

    #[test]
    fn request_fields_name_the_request() {
        let repo = RepositoryId::new().to_string();
        let none: &[&str] = &[];
        let err = parse(&REQUEST_FIELDS, "r", none, none, None).unwrap_err();
        assert!(err.to_string().starts_with("repository_id: "), "{err}");
        let err = parse(&REQUEST_FIELDS, &repo, &["x"], none, None).unwrap_err();
        assert!(
            err.to_string().starts_with("add_content_units[0]: "),
            "{err}"
        );
        let err = parse(&REQUEST_FIELDS, &repo, none, none, Some("v")).unwrap_err();
        assert!(err.to_string().starts_with("base_version_id: "), "{err}");
        let many = vec![ContentId::new().to_string(); MAX_MODIFY_UNITS + 1];
        let err = parse(&REQUEST_FIELDS, &repo, &many, &[], None).unwrap_err();
        assert!(err.to_string().contains("the limit is 100000"), "{err}");
        let ok = parse(&REQUEST_FIELDS, &repo, &many[1..], &[], None).unwrap();
        assert_eq!(ok.add.len(), MAX_MODIFY_UNITS);
    }
}
