//! The database: connecting to SQLite or PostgreSQL, and the schema.
//!
//! One relational database holds everything (DESIGN.md section 3). SQLite is
//! the default: one file in WAL mode with `synchronous=FULL`, so an
//! acknowledged write survives a crash. PostgreSQL serves several hosts.
//! Queries are plain SQL written once with `$N` placeholders, which both
//! backends accept; timestamps are BIGINT microseconds and JSON is TEXT, so
//! the same statements run on both.

mod migrations;
pub mod throwaway;

pub use migrations::migrate;

use sea_orm::{DatabaseConnection, DbBackend, DbErr, Statement, Value};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

/// Why the database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The URL is neither `sqlite:` nor `postgres:`/`postgresql:`.
    #[error("unsupported database URL {0:?}: use sqlite://PATH or postgres://USER@HOST/DB")]
    UnsupportedUrl(String),
    /// The URL could not be parsed by the driver.
    #[error("invalid database URL: {0}")]
    InvalidUrl(#[source] sqlx::Error),
    /// The directory for the SQLite file could not be created.
    #[error("cannot create the directory for the SQLite file {path}: {source}")]
    CreateDir {
        /// The directory.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The first connection failed.
    #[error("cannot connect to the database: {0}")]
    Connect(#[source] sqlx::Error),
}

/// Pool settings.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// Most connections in the pool.
    pub max_connections: u32,
    /// How long to wait for a connection before giving up (the request then
    /// fails UNAVAILABLE rather than hanging).
    pub acquire_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(5),
        }
    }
}

/// True when the URL names a SQLite database.
pub fn is_sqlite_url(url: &str) -> bool {
    url.starts_with("sqlite:")
}

/// The file of a SQLite URL (`None` for other databases or in-memory ones).
pub fn sqlite_file(url: &str) -> Option<std::path::PathBuf> {
    use sqlx::sqlite::SqliteConnectOptions;
    if !is_sqlite_url(url) {
        return None;
    }
    let options = SqliteConnectOptions::from_str(url).ok()?;
    let file = options.get_filename();
    (!file.as_os_str().is_empty() && file != Path::new(":memory:")).then(|| file.to_path_buf())
}

/// Prepared statements kept per connection. The scheduler's batched
/// statements have one text per batch size (a few hundred in all, most of
/// them small); with sqlx's default of 100 they would be parsed again and
/// again (15 % of the scheduler's instructions under load, by callgrind).
const STATEMENT_CACHE: usize = 512;

/// Opens a pool on `url` (`sqlite://PATH[?mode=rwc]` or `postgres://...`).
/// A SQLite file and its directory are created when missing.
pub async fn connect(
    url: &str,
    settings: &PoolSettings,
) -> Result<DatabaseConnection, ConnectError> {
    if is_sqlite_url(url) {
        use sqlx::sqlite::{
            SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
        };
        let options = SqliteConnectOptions::from_str(url)
            .map_err(ConnectError::InvalidUrl)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(30))
            .statement_cache_capacity(STATEMENT_CACHE);
        if let Some(dir) = options
            .get_filename()
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
        {
            create_dir(dir)?;
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(settings.acquire_timeout)
            .connect_with(options)
            .await
            .map_err(ConnectError::Connect)?;
        Ok(DatabaseConnection::from(pool))
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
        let options = PgConnectOptions::from_str(url)
            .map_err(ConnectError::InvalidUrl)?
            .statement_cache_capacity(STATEMENT_CACHE);
        let pool = PgPoolOptions::new()
            // Prepared statements are planned for their parameters and the
            // table as it is now, every time. A generic plan is made once,
            // from the statistics of the moment: made while `tasks` was
            // small (a fresh database, before autovacuum's first ANALYZE a
            // minute later), the batched updates kept a sequential scan and
            // hash join while the table grew to 20,000 rows, a millisecond
            // a statement instead of a few primary-key lookups. Planning
            // these short statements costs less than that. Set after
            // connecting rather than as a startup option, which connection
            // poolers such as PgBouncer refuse.
            .after_connect(|conn, _| {
                Box::pin(async move {
                    sqlx::raw_sql("SET plan_cache_mode = force_custom_plan")
                        .execute(conn)
                        .await
                        .map(drop)
                })
            })
            .max_connections(settings.max_connections)
            .acquire_timeout(settings.acquire_timeout)
            .connect_with(options)
            .await
            .map_err(ConnectError::Connect)?;
        Ok(sea_orm::SqlxPostgresConnector::from_sqlx_postgres_pool(
            pool,
        ))
    } else {
        Err(ConnectError::UnsupportedUrl(url.to_owned()))
    }
}

fn create_dir(dir: &Path) -> Result<(), ConnectError> {
    std::fs::create_dir_all(dir).map_err(|source| ConnectError::CreateDir {
        path: dir.display().to_string(),
        source,
    })
}

/// A statement for `backend` with `$N` placeholders bound to `values`.
pub fn stmt<I>(backend: DbBackend, sql: &str, values: I) -> Statement
where
    I: IntoIterator<Item = Value>,
{
    Statement::from_sql_and_values(backend, sql, values)
}

/// The type of a column of [`json_rows`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonType {
    /// BIGINT (a JSON integer or null).
    BigInt,
    /// TEXT (a JSON string or null).
    Text,
    /// BOOLEAN (a JSON boolean).
    Bool,
}

/// A FROM item that turns the JSON array of objects bound to `$param` into
/// rows `v(<columns>..., ord)`, `ord` being each object's position in the
/// array (order by it to keep the array's order).
///
/// Batched statements pass their rows this way instead of as a multi-row
/// `VALUES` list of placeholders: the SQL text is then the same whatever
/// the number of rows, so each connection prepares it once. Multi-row
/// lists were a new statement for every batch size (each prepared and
/// planned anew, and evicting others from the statement cache), and
/// SQLite resolves `$N` names in time quadratic in their number: together
/// about a quarter of the scheduler's instructions under load. On SQLite
/// the rows come from `jsonb_each`, whose `value` is binary JSON that `->>`
/// reads directly; `json_each` hands each object back as text to be parsed
/// again for every column.
pub fn json_rows(backend: DbBackend, param: usize, columns: &[(&str, JsonType)]) -> String {
    let names: Vec<&str> = columns.iter().map(|(name, _)| *name).collect();
    match backend {
        DbBackend::Postgres => {
            let definitions: Vec<String> = columns
                .iter()
                .map(|(name, kind)| {
                    let kind = match kind {
                        JsonType::BigInt => "bigint",
                        JsonType::Text => "text",
                        JsonType::Bool => "boolean",
                    };
                    format!("{name} {kind}")
                })
                .collect();
            format!(
                "ROWS FROM (json_to_recordset(${param}::json) AS ({})) WITH ORDINALITY AS v({}, ord)",
                definitions.join(", "),
                names.join(", ")
            )
        }
        _ => {
            let fields: Vec<String> = names
                .iter()
                .map(|name| format!("value ->> '{name}' AS {name}"))
                .collect();
            format!(
                "(SELECT {}, key AS ord FROM jsonb_each(${param})) AS v",
                fields.join(", ")
            )
        }
    }
}

/// The parameter for [`json_rows`]: the rows as one JSON array.
pub fn json_rows_value<T: serde::Serialize>(rows: &[T]) -> Value {
    Value::from(serde_json::to_string(rows).expect("rows of plain values serialise"))
}

/// `$first, $first+1, ...` for `count` placeholders, for `IN (...)` lists
/// and multi-row inserts.
pub fn placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// True when the error means the database is unreachable (connection
/// refused, pool timed out, connection lost), as opposed to a bad query.
pub fn is_unavailable(err: &DbErr) -> bool {
    match err {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => true,
        DbErr::Exec(e) | DbErr::Query(e) => {
            let text = e.to_string();
            [
                "connection",
                "pool timed out",
                "broken pipe",
                "terminating",
                "shutting down",
                "closed",
                "database is locked",
                "the database system",
            ]
            .iter()
            .any(|needle| text.contains(needle))
        }
        _ => false,
    }
}
