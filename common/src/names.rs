//! Validated names and ids, built once at the gRPC edge.
//!
//! Every constructor checks its input and says, in words a person can act
//! on, what is wrong. Past this module a `TaskName` is known to be a
//! well-formed func name, a `ResourceName` a well-formed resource, and so on.

use std::fmt;

/// Longest task name.
pub const MAX_TASK_NAME_LEN: usize = 200;
/// Longest resource name, in bytes.
pub const MAX_RESOURCE_LEN: usize = 1024;
/// Most resources (exclusive plus shared) one task may claim.
pub const MAX_RESOURCES_PER_TASK: usize = 100;
/// Longest worker name.
pub const MAX_WORKER_NAME_LEN: usize = 200;
/// Longest kind or id of a typed resource reference.
pub const MAX_REF_PART_LEN: usize = 200;

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidName(pub String);

fn invalid(msg: impl Into<String>) -> InvalidName {
    InvalidName(msg.into())
}

/// A registered task name (`func`), e.g. `add_and_remove`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskName(String);

impl TaskName {
    /// 1 to 200 characters of ASCII letters, digits, `_`, `.` and `:`.
    pub fn parse(s: &str) -> Result<TaskName, InvalidName> {
        if s.is_empty() {
            return Err(invalid(
                "func is empty: name a registered task, e.g. \"noop\"",
            ));
        }
        if s.len() > MAX_TASK_NAME_LEN {
            return Err(invalid(format!(
                "func is {} characters long; the limit is {MAX_TASK_NAME_LEN}",
                s.len()
            )));
        }
        if let Some(c) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':')))
        {
            return Err(invalid(format!(
                "func {s:?} contains {c:?}; use letters, digits, '_', '.' and ':'"
            )));
        }
        Ok(TaskName(s.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TaskName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A resource a task reserves, in canonical string form.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceName(String);

impl ResourceName {
    /// 1 to 1024 bytes of UTF-8 with no control characters (NUL included)
    /// and no leading or trailing white space.
    pub fn parse(s: &str) -> Result<ResourceName, InvalidName> {
        if s.is_empty() {
            return Err(invalid(
                "a resource is empty: name it, e.g. \"/pulp/api/v3/repositories/file/file/1/\"",
            ));
        }
        if s.len() > MAX_RESOURCE_LEN {
            return Err(invalid(format!(
                "a resource is {} bytes long; the limit is {MAX_RESOURCE_LEN}",
                s.len()
            )));
        }
        if let Some(c) = s.chars().find(|c| c.is_control()) {
            return Err(invalid(format!(
                "resource {s:?} contains the control character {c:?}"
            )));
        }
        if s.trim() != s {
            return Err(invalid(format!(
                "resource {s:?} starts or ends with white space"
            )));
        }
        Ok(ResourceName(s.to_owned()))
    }

    /// The canonical name of a typed reference: `/pulp/api/v3/<kind>/<id>/`.
    pub fn from_ref(kind: &str, id: &str) -> Result<ResourceName, InvalidName> {
        let part_ok = |s: &str, extra: &[char]| {
            !s.is_empty()
                && s.len() <= MAX_REF_PART_LEN
                && s.chars().all(|c| {
                    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') || extra.contains(&c)
                })
        };
        if !part_ok(kind, &['/'])
            || kind.starts_with('/')
            || kind.ends_with('/')
            || kind.contains("//")
        {
            return Err(invalid(format!(
                "resource kind {kind:?} is not valid: 1 to {MAX_REF_PART_LEN} letters, digits, '_', '-', '.' and inner '/'"
            )));
        }
        if !part_ok(id, &[]) {
            return Err(invalid(format!(
                "resource id {id:?} is not valid: 1 to {MAX_REF_PART_LEN} letters, digits, '_', '-' and '.'"
            )));
        }
        Ok(ResourceName(format!("/pulp/api/v3/{kind}/{id}/")))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ResourceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The resources one task claims: canonical, de-duplicated, sorted, and a
/// resource named both exclusive and shared counted as exclusive only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResourceClaims {
    /// Held alone.
    pub exclusive: Vec<ResourceName>,
    /// Held together with other shared holders.
    pub shared: Vec<ResourceName>,
}

impl ResourceClaims {
    /// Builds the claims and enforces [`MAX_RESOURCES_PER_TASK`].
    pub fn new(
        exclusive: impl IntoIterator<Item = ResourceName>,
        shared: impl IntoIterator<Item = ResourceName>,
    ) -> Result<ResourceClaims, InvalidName> {
        let mut exclusive: Vec<ResourceName> = exclusive.into_iter().collect();
        let mut shared: Vec<ResourceName> = shared.into_iter().collect();
        let given = exclusive.len() + shared.len();
        if given > MAX_RESOURCES_PER_TASK {
            return Err(invalid(format!(
                "the task claims {given} resources; the limit is {MAX_RESOURCES_PER_TASK}"
            )));
        }
        exclusive.sort();
        exclusive.dedup();
        shared.sort();
        shared.dedup();
        shared.retain(|r| exclusive.binary_search(r).is_err());
        Ok(ResourceClaims { exclusive, shared })
    }

    /// Every claimed resource with `true` when exclusive.
    pub fn iter(&self) -> impl Iterator<Item = (&ResourceName, bool)> {
        self.exclusive
            .iter()
            .map(|r| (r, true))
            .chain(self.shared.iter().map(|r| (r, false)))
    }

    /// The exclusive resources as strings.
    pub fn exclusive_names(&self) -> Vec<String> {
        self.exclusive
            .iter()
            .map(|r| r.as_str().to_owned())
            .collect()
    }

    /// The shared resources as strings.
    pub fn shared_names(&self) -> Vec<String> {
        self.shared.iter().map(|r| r.as_str().to_owned()).collect()
    }

    /// How many resources are claimed.
    pub fn len(&self) -> usize {
        self.exclusive.len() + self.shared.len()
    }

    /// True when nothing is claimed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

macro_rules! uuid_id {
    ($name:ident, $what:literal) => {
        #[doc = concat!("The id of a ", $what, ": a UUID, stored lower-case and hyphenated.")]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub uuid::Uuid);

        impl $name {
            #[doc = concat!("A new time-ordered (v7) ", $what, " id.")]
            pub fn new() -> Self {
                $name(uuid::Uuid::now_v7())
            }

            /// Parses a UUID in any of its usual text forms.
            pub fn parse(s: &str) -> Result<Self, InvalidName> {
                if s.is_empty() {
                    return Err(invalid(concat!("the ", $what, " id is empty")));
                }
                uuid::Uuid::parse_str(s).map($name).map_err(|_| {
                    invalid(format!(
                        concat!("{:?} is not a valid ", $what, " id: expected a UUID"),
                        s.chars().take(64).collect::<String>()
                    ))
                })
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }
    };
}

uuid_id!(TaskId, "task");
uuid_id!(TaskGroupId, "task group");
uuid_id!(ArtifactId, "artifact");
uuid_id!(ContentId, "content unit");
uuid_id!(RepositoryId, "repository");
uuid_id!(RepositoryVersionId, "repository version");
uuid_id!(PublicationId, "publication");
uuid_id!(ExporterId, "exporter");
uuid_id!(ExportId, "export");

/// A worker's name, unique among live workers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkerName(String);

impl WorkerName {
    /// 1 to 200 characters of ASCII letters, digits, `_`, `-`, `.`, `@`, `:`.
    pub fn parse(s: &str) -> Result<WorkerName, InvalidName> {
        if s.is_empty() || s.len() > MAX_WORKER_NAME_LEN {
            return Err(invalid(format!(
                "worker name must be 1 to {MAX_WORKER_NAME_LEN} characters long"
            )));
        }
        if let Some(c) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '@' | ':')))
        {
            return Err(invalid(format!(
                "worker name {s:?} contains {c:?}; use letters, digits, '_', '-', '.', '@' and ':'"
            )));
        }
        Ok(WorkerName(s.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for WorkerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> ResourceName {
        ResourceName::parse(s).unwrap()
    }

    #[test]
    fn resources_refuse_bad_input() {
        for bad in ["", " a", "a ", "a\0b", "a\nb", "a\u{7f}b"] {
            assert!(ResourceName::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(ResourceName::parse(&"x".repeat(MAX_RESOURCE_LEN + 1)).is_err());
        assert!(ResourceName::parse(&"x".repeat(MAX_RESOURCE_LEN)).is_ok());
        assert!(ResourceName::parse("/pulp/api/v3/repositories/ü/").is_ok());
    }

    #[test]
    fn refs_become_canonical_strings() {
        assert_eq!(
            ResourceName::from_ref("repositories/file/file", "0190-ab").unwrap(),
            r("/pulp/api/v3/repositories/file/file/0190-ab/")
        );
        for (kind, id) in [
            ("", "1"),
            ("/a", "1"),
            ("a/", "1"),
            ("a//b", "1"),
            ("a", "1/2"),
            ("a", ""),
        ] {
            assert!(ResourceName::from_ref(kind, id).is_err(), "{kind:?} {id:?}");
        }
    }

    #[test]
    fn claims_count_both_as_exclusive_and_dedup() {
        let claims = ResourceClaims::new([r("a"), r("a"), r("b")], [r("b"), r("c")]).unwrap();
        assert_eq!(claims.exclusive, vec![r("a"), r("b")]);
        assert_eq!(claims.shared, vec![r("c")]);
        let many = (0..=MAX_RESOURCES_PER_TASK).map(|i| r(&i.to_string()));
        assert!(ResourceClaims::new(many, []).is_err());
    }

    #[test]
    fn task_names_and_ids() {
        assert!(TaskName::parse("add_and_remove").is_ok());
        assert!(TaskName::parse("pulp_file.app.tasks:sync").is_ok());
        for bad in ["", "a b", "a\0", "é"] {
            assert!(TaskName::parse(bad).is_err(), "{bad:?}");
        }
        let id = TaskId::new();
        assert_eq!(TaskId::parse(&id.to_string()).unwrap(), id);
        assert!(TaskId::parse("nope").is_err());
        assert!(WorkerName::parse("w-1@host").is_ok());
        assert!(WorkerName::parse("w 1").is_err());
    }
}
