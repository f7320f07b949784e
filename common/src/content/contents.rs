//! Content units (`contents`) and their files (`content_artifacts`).
//!
//! A unit has a type (`file.file`), a natural key unique within its type,
//! and files at relative paths, each backed by an artifact or, for
//! on-demand content, by none yet. The validated input types here
//! ([`PulpType`], [`RelativePath`], [`NewContent`]) are built at the gRPC
//! edge; past them the SQL trusts its input.

use super::{ContentError, get};
use crate::db::{placeholders, stmt};
use crate::names::{ArtifactId, ContentId, InvalidName};
use crate::time::now_micros;
use sea_orm::{ConnectionTrait, DbErr, Value};
use std::collections::HashMap;
use std::fmt;

/// Most files one content unit may have.
pub const MAX_ARTIFACTS_PER_CONTENT: usize = 1000;
/// Longest relative path, in bytes.
pub const MAX_RELATIVE_PATH_LEN: usize = 1024;
/// Longest natural key, in bytes.
pub const MAX_NATURAL_KEY_LEN: usize = 1024;

fn invalid(msg: String) -> InvalidName {
    InvalidName(msg)
}

/// A content type, `<plugin>.<type>`, e.g. `file.file`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PulpType(String);

impl PulpType {
    /// Two parts joined by `.`, each 1 to 64 lower-case ASCII letters,
    /// digits and `_`, starting with a letter.
    pub fn parse(s: &str) -> Result<PulpType, InvalidName> {
        let part_ok = |p: &str| {
            (1..=64).contains(&p.len())
                && p.starts_with(|c: char| c.is_ascii_lowercase())
                && p.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        };
        match s.split_once('.') {
            Some((plugin, kind)) if part_ok(plugin) && part_ok(kind) => Ok(PulpType(s.to_owned())),
            _ => Err(invalid(format!(
                "pulp_type {:?} is not valid: use <plugin>.<type>, each part lower-case letters, digits and '_', e.g. \"file.file\"",
                s.chars().take(140).collect::<String>()
            ))),
        }
    }

    /// The type.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PulpType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A path relative to a publication's root, safe to join to a directory.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelativePath(String);

impl RelativePath {
    /// 1 to 1024 bytes; not absolute; no `..` component; no NUL or other
    /// control character; no empty component (`a//b`, a trailing `/`).
    pub fn parse(s: &str) -> Result<RelativePath, InvalidName> {
        let shown = || s.chars().take(80).collect::<String>();
        if s.is_empty() {
            return Err(invalid("a relative path is empty".into()));
        }
        if s.len() > MAX_RELATIVE_PATH_LEN {
            return Err(invalid(format!(
                "relative path {:?}... is {} bytes long; the limit is {MAX_RELATIVE_PATH_LEN}",
                shown(),
                s.len()
            )));
        }
        if s.contains('\0') {
            return Err(invalid(format!("relative path {:?} contains NUL", shown())));
        }
        if let Some(c) = s.chars().find(|c| c.is_control()) {
            return Err(invalid(format!(
                "relative path {:?} contains the control character {c:?}",
                shown()
            )));
        }
        if s.starts_with('/') {
            return Err(invalid(format!(
                "relative path {s:?} is absolute: remove the leading '/'"
            )));
        }
        if s.split('/').any(|part| part == "..") {
            return Err(invalid(format!(
                "relative path {s:?} contains '..': it must stay below the publication's root"
            )));
        }
        if s.split('/').any(str::is_empty) {
            return Err(invalid(format!(
                "relative path {s:?} has an empty component ('//' or a trailing '/')"
            )));
        }
        Ok(RelativePath(s.to_owned()))
    }

    /// The path.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A natural key: 1 to 1024 bytes without control characters.
pub fn parse_natural_key(s: &str) -> Result<String, InvalidName> {
    if s.is_empty() || s.len() > MAX_NATURAL_KEY_LEN {
        return Err(invalid(format!(
            "natural_key must be 1 to {MAX_NATURAL_KEY_LEN} bytes long, not {}",
            s.len()
        )));
    }
    if let Some(c) = s.chars().find(|c| c.is_control()) {
        return Err(invalid(format!(
            "natural_key contains the control character {c:?}"
        )));
    }
    Ok(s.to_owned())
}

/// A validated content unit, not yet stored.
#[derive(Debug, Clone)]
pub struct NewContent {
    /// Its type.
    pub pulp_type: PulpType,
    /// Its natural key.
    pub natural_key: String,
    /// Its files, sorted by path; `None` for on-demand content.
    pub artifacts: Vec<(RelativePath, Option<ArtifactId>)>,
}

impl NewContent {
    /// Checks the number of files and that their paths are unique.
    pub fn new(
        pulp_type: PulpType,
        natural_key: String,
        mut artifacts: Vec<(RelativePath, Option<ArtifactId>)>,
    ) -> Result<NewContent, ContentError> {
        if artifacts.len() > MAX_ARTIFACTS_PER_CONTENT {
            return Err(ContentError::Invalid(format!(
                "a content unit has {} artifacts; the limit is {MAX_ARTIFACTS_PER_CONTENT}",
                artifacts.len()
            )));
        }
        artifacts.sort_by(|a, b| a.0.cmp(&b.0));
        if let Some(pair) = artifacts.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(ContentError::Invalid(format!(
                "relative path {:?} appears twice",
                pair[0].0.as_str()
            )));
        }
        Ok(NewContent {
            pulp_type,
            natural_key,
            artifacts,
        })
    }
}

/// A file of a stored content unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentArtifact {
    /// Its relative path.
    pub relative_path: String,
    /// The artifact with its bytes; `None` for on-demand content.
    pub artifact_id: Option<String>,
    /// The artifact's digest; `None` for on-demand content.
    pub sha256: Option<String>,
}

/// A stored content unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Content {
    /// Its id.
    pub id: String,
    /// Its type.
    pub pulp_type: String,
    /// Its natural key.
    pub natural_key: String,
    /// Its files, sorted by relative path.
    pub artifacts: Vec<ContentArtifact>,
    /// Microseconds since the epoch.
    pub created_at: i64,
}

/// Stores a new unit with its files. NOT_FOUND for an unknown artifact,
/// ALREADY_EXISTS for a taken (type, natural key). Run it in a
/// transaction: it writes two tables.
pub async fn create(
    conn: &impl ConnectionTrait,
    new: &NewContent,
) -> Result<Content, ContentError> {
    let artifact_ids: Vec<ArtifactId> = new.artifacts.iter().filter_map(|(_, a)| *a).collect();
    if let Some(missing) = super::artifacts::first_missing(conn, &artifact_ids).await? {
        return Err(ContentError::NotFound(format!(
            "artifact {missing} not found"
        )));
    }
    let backend = conn.get_database_backend();
    let id = ContentId::new().to_string();
    let created_at = now_micros();
    let inserted = conn
        .execute_raw(stmt(
            backend,
            "INSERT INTO contents (id, pulp_type, natural_key, created_at) VALUES ($1, $2, $3, $4)",
            [
                Value::from(id.clone()),
                Value::from(new.pulp_type.as_str().to_owned()),
                Value::from(new.natural_key.clone()),
                Value::from(created_at),
            ],
        ))
        .await;
    match inserted {
        Err(err) if ContentError::is_unique_violation(&err) => {
            return Err(ContentError::AlreadyExists(format!(
                "a {} content unit with natural key {:?} exists already",
                new.pulp_type, new.natural_key
            )));
        }
        other => other?,
    };
    // At most MAX_ARTIFACTS_PER_CONTENT rows of 3 values: one statement.
    for chunk in new.artifacts.chunks(MAX_ARTIFACTS_PER_CONTENT) {
        let rows: Vec<String> = (0..chunk.len())
            .map(|i| format!("(${}, ${}, ${})", 3 * i + 1, 3 * i + 2, 3 * i + 3))
            .collect();
        let values = chunk.iter().flat_map(|(path, artifact)| {
            [
                Value::from(id.clone()),
                Value::from(path.as_str().to_owned()),
                Value::from(artifact.map(|a| a.to_string())),
            ]
        });
        let sql = format!(
            "INSERT INTO content_artifacts (content_id, relative_path, artifact_id) VALUES {}",
            rows.join(", ")
        );
        conn.execute_raw(stmt(backend, &sql, values)).await?;
    }
    let mut stored = select(
        conn,
        "FROM contents c WHERE c.id = $1",
        vec![Value::from(id)],
        None,
        1,
    )
    .await?;
    stored
        .pop()
        .ok_or_else(|| ContentError::Db(DbErr::Custom("the new content unit vanished".into())))
}

/// The unit with this id.
pub async fn get_content(
    conn: &impl ConnectionTrait,
    id: ContentId,
) -> Result<Option<Content>, DbErr> {
    Ok(select(
        conn,
        "FROM contents c WHERE c.id = $1",
        vec![Value::from(id.to_string())],
        None,
        1,
    )
    .await?
    .pop())
}

/// Up to `limit` units after `after` in creation (id) order, of one type
/// or all.
pub async fn list(
    conn: &impl ConnectionTrait,
    pulp_type: Option<&PulpType>,
    after: Option<ContentId>,
    limit: u64,
) -> Result<Vec<Content>, DbErr> {
    match pulp_type {
        Some(t) => {
            select(
                conn,
                "FROM contents c WHERE c.pulp_type = $1",
                vec![Value::from(t.as_str().to_owned())],
                after,
                limit,
            )
            .await
        }
        None => select(conn, "FROM contents c WHERE 1 = 1", vec![], after, limit).await,
    }
}

/// The first of `ids` that names no content unit, if any.
pub async fn first_missing(
    conn: &impl ConnectionTrait,
    ids: &[ContentId],
) -> Result<Option<ContentId>, DbErr> {
    super::first_missing(conn, "contents", ids).await
}

/// Units selected by `from_where` (which names `contents` as `c` and binds
/// `values` as `$1...`), after `after` in id order, at most `limit`, each
/// with its files.
pub(crate) async fn select(
    conn: &impl ConnectionTrait,
    from_where: &str,
    mut values: Vec<Value>,
    after: Option<ContentId>,
    limit: u64,
) -> Result<Vec<Content>, DbErr> {
    let backend = conn.get_database_backend();
    let mut sql = format!("SELECT c.id, c.pulp_type, c.natural_key, c.created_at {from_where}");
    if let Some(after) = after {
        values.push(Value::from(after.to_string()));
        sql.push_str(&format!(" AND c.id > ${}", values.len()));
    }
    values.push(Value::from(limit as i64));
    sql.push_str(&format!(" ORDER BY c.id LIMIT ${}", values.len()));
    let mut units = conn
        .query_all_raw(stmt(backend, &sql, values))
        .await?
        .iter()
        .map(|row| {
            Ok(Content {
                id: get(row, "id")?,
                pulp_type: get(row, "pulp_type")?,
                natural_key: get(row, "natural_key")?,
                artifacts: Vec::new(),
                created_at: get(row, "created_at")?,
            })
        })
        .collect::<Result<Vec<_>, DbErr>>()?;
    if units.is_empty() {
        return Ok(units);
    }
    let index: HashMap<String, usize> = units
        .iter()
        .enumerate()
        .map(|(i, c)| (c.id.clone(), i))
        .collect();
    let sql = format!(
        "SELECT ca.content_id, ca.relative_path, ca.artifact_id, a.sha256 \
         FROM content_artifacts ca LEFT JOIN artifacts a ON a.id = ca.artifact_id \
         WHERE ca.content_id IN ({}) ORDER BY ca.content_id, ca.relative_path",
        placeholders(1, units.len())
    );
    let ids = units.iter().map(|c| Value::from(c.id.clone()));
    for row in conn.query_all_raw(stmt(backend, &sql, ids)).await? {
        let content_id: String = get(&row, "content_id")?;
        if let Some(&i) = index.get(&content_id) {
            units[i].artifacts.push(ContentArtifact {
                relative_path: get(&row, "relative_path")?,
                artifact_id: get(&row, "artifact_id")?,
                sha256: get(&row, "sha256")?,
            });
        }
    }
    Ok(units)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths() {
        for good in ["a", "a/b.txt", "docs/..x/y", "ü/ß", "a..b"] {
            assert!(RelativePath::parse(good).is_ok(), "{good:?} refused");
        }
        for (bad, says) in [
            ("", "empty"),
            ("/etc/passwd", "absolute"),
            ("../x", "'..'"),
            ("a/../../x", "'..'"),
            ("a/..", "'..'"),
            ("a\0b", "NUL"),
            ("a\nb", "control"),
            ("a//b", "empty component"),
            ("a/", "empty component"),
        ] {
            let err = RelativePath::parse(bad).unwrap_err();
            assert!(err.0.contains(says), "{bad:?}: {}", err.0);
        }
        assert!(RelativePath::parse(&"a".repeat(MAX_RELATIVE_PATH_LEN + 1)).is_err());
    }

    #[test]
    fn types_and_keys() {
        assert!(PulpType::parse("file.file").is_ok());
        assert!(PulpType::parse("rpm.package_2").is_ok());
        for bad in [
            "",
            "file",
            "File.file",
            "file.",
            ".file",
            "a.b.c",
            "1a.b",
            "a-b.c",
        ] {
            assert!(PulpType::parse(bad).is_err(), "{bad:?}");
        }
        assert!(parse_natural_key("a.txt:abc").is_ok());
        assert!(parse_natural_key("").is_err());
        assert!(parse_natural_key("a\tb").is_err());
    }

    #[test]
    fn duplicate_paths_are_refused() {
        let p = |s| RelativePath::parse(s).unwrap();
        let t = PulpType::parse("file.file").unwrap();
        let err = NewContent::new(t.clone(), "k".into(), vec![(p("a"), None), (p("a"), None)])
            .unwrap_err();
        assert!(err.to_string().contains("appears twice"), "{err}");
        let ok = NewContent::new(t, "k".into(), vec![(p("b"), None), (p("a"), None)]).unwrap();
        assert_eq!(ok.artifacts[0].0.as_str(), "a");
    }
}
