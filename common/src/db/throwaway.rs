//! Throwaway PostgreSQL databases for the end-to-end tests (`pulp-tests`)
//! and the benchmark (`pulp-bench`); the services do not use it. A database
//! named by a prefix and a UUID is created on a server and dropped with
//! `WITH (FORCE)` afterwards.
//!
//! It lives here, not behind a cargo feature, because a feature enabled
//! only by the tests would build `pulp-common` (and everything above it)
//! twice: once for the test executables and once for the binaries the
//! harness starts, which `cargo build --bin ...` resolves without it.

use sqlx::Connection;

/// Creates the database `<prefix>_<uuid>` on the server of `server_url` (a
/// URL naming any database the user may connect to there) and returns its
/// URL: `server_url` with the database name replaced.
pub async fn create(server_url: &str, prefix: &str) -> Result<String, sqlx::Error> {
    let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(server_url).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .execute(&mut conn)
        .await?;
    let base = server_url
        .rsplit_once('/')
        .map_or(server_url, |(base, _)| base);
    Ok(format!("{base}/{name}"))
}

/// Drops the database named by `url` (a URL from [`create`]), connecting
/// through `server_url`; any session still on it is ended.
pub async fn drop(server_url: &str, url: &str) -> Result<(), sqlx::Error> {
    let Some((_, name)) = url.rsplit_once('/') else {
        return Ok(());
    };
    let mut conn = sqlx::PgConnection::connect(server_url).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
    )))
    .execute(&mut conn)
    .await?;
    Ok(())
}
