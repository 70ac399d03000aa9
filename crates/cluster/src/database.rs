//! The cluster's databases: one per service on one PostgreSQL server, made and dropped by name.

use std::collections::BTreeMap;

use anyhow::{Context, bail};
use sqlx::Connection;

use crate::Service;

/// Creates (if missing) a database per service named `<prefix>_<service>` on the server behind
/// `admin_url`, and returns each service's URL.
pub async fn create_databases(
    admin_url: &str,
    prefix: &str,
) -> anyhow::Result<BTreeMap<String, String>> {
    check_name(prefix)?;
    let mut admin = sqlx::PgConnection::connect(admin_url)
        .await
        .with_context(|| format!("cannot connect to PostgreSQL at {admin_url}"))?;
    let mut urls = BTreeMap::new();
    for service in Service::ALL.into_iter().filter(|s| s.has_database()) {
        let name = format!("{prefix}_{service}");
        let exists: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
                .bind(&name)
                .fetch_optional(&mut admin)
                .await?;
        if exists.is_none() {
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&mut admin)
                .await
                .with_context(|| format!("cannot create database {name}"))?;
        }
        urls.insert(service.name().to_owned(), with_database(admin_url, &name)?);
    }
    Ok(urls)
}

/// Drops one database, given its URL.
pub async fn drop_database(url: &str) -> anyhow::Result<()> {
    let parsed = reqwest::Url::parse(url).with_context(|| format!("not a database URL: {url}"))?;
    let name = parsed.path().trim_start_matches('/');
    check_name(name)?;
    let mut admin = sqlx::PgConnection::connect(&with_database(url, "postgres")?)
        .await
        .with_context(|| format!("cannot connect to PostgreSQL for {name}"))?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await?;
    Ok(())
}

/// The same server URL with another database name.
pub fn with_database(url: &str, database: &str) -> anyhow::Result<String> {
    let mut parsed =
        reqwest::Url::parse(url).with_context(|| format!("not a database URL: {url}"))?;
    parsed.set_path(&format!("/{database}"));
    Ok(parsed.to_string())
}

/// Names end up unquoted in SQL and as a NATS stream name: keep them plain.
pub(crate) fn check_name(name: &str) -> anyhow::Result<()> {
    let plain = !name.is_empty()
        && name.len() <= 40
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !plain {
        bail!("the cluster name must be lower-case letters, digits and _, got {name:?}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_url_keeps_everything_but_the_name() {
        assert_eq!(
            with_database(
                "postgres://postgres@127.0.0.1:5432/test?sslmode=disable",
                "c_orders"
            )
            .unwrap(),
            "postgres://postgres@127.0.0.1:5432/c_orders?sslmode=disable"
        );
    }

    #[test]
    fn cluster_names_are_plain() {
        assert!(check_name("stubs").is_ok());
        assert!(check_name("c_1a").is_ok());
        for bad in ["", "Stubs", "1a", "a-b", "a;drop", &"a".repeat(41)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }
}
