//! What a restore needs to know of the server, and the databases it creates and drops: for
//! `--into NEW_DB`, for the scratch database of a test restore, and row counts per table.

use serde::{Deserialize, Serialize};

use crate::{Error, Result, SqlSink};

/// `"name"`, doubled inner quotes: an SQL identifier.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `'text'`, doubled inner quotes: an SQL string (standard_conforming_strings, on since
/// PostgreSQL 9.1; a backslash is refused rather than interpreted).
pub fn quote_literal(text: &str) -> Result<String> {
    if text.contains('\\') || text.chars().any(char::is_control) {
        return Err(Error::Database {
            context: format!("the name {text:?}"),
            message: "holds a backslash or a control character".into(),
        });
    }
    Ok(format!("'{}'", text.replace('\'', "''")))
}

/// The target server and database, as a restore reports them before replacing anything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerInfo {
    /// The database connected to.
    pub database: String,
    /// The server's version string (`PostgreSQL 15.18 …`).
    pub version: String,
    /// The database's size in bytes.
    pub size_bytes: i64,
    /// Tables (ordinary and partitioned) outside the system schemas.
    pub tables: i64,
    /// `max_locks_per_transaction`: one transaction can lock about this × `max_connections`
    /// objects.
    pub max_locks_per_transaction: String,
    /// The role connected as.
    pub user: String,
    /// Whether that role may create databases.
    pub can_create_db: bool,
    /// Other client sessions connected to the database (an application, say; not autovacuum
    /// or background workers): a restore in place waits for the locks they hold.
    #[serde(default)]
    pub other_sessions: i64,
}

/// Connects and describes the target (this also proves the connection and password work).
///
/// # Errors
/// [`Error::Psql`]: unreachable server, wrong password, missing database.
pub async fn server_info(sink: &dyn SqlSink) -> Result<ServerInfo> {
    let out = sink
        .query(
            "SELECT json_build_object('database', current_database(), 'version', version(), \
             'size_bytes', pg_database_size(current_database()), \
             'tables', (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                        WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
                        AND n.nspname NOT LIKE 'pg\\_toast%'), \
             'max_locks_per_transaction', current_setting('max_locks_per_transaction'), \
             'user', current_user, \
             'can_create_db', (SELECT rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user), \
             'other_sessions', (SELECT count(*) FROM pg_stat_activity \
                                WHERE datname = current_database() AND pid <> pg_backend_pid() \
                                  AND backend_type = 'client backend'));\n",
        )
        .await?;
    parse_json(&out, "the server description")
}

fn parse_json<T: for<'de> Deserialize<'de>>(out: &str, what: &str) -> Result<T> {
    let line = out
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    serde_json::from_str(line)
        .map_err(|e| Error::Internal(format!("cannot read {what} from psql's output: {e}")))
}

/// Whether a database of that name exists on the sink's server.
///
/// # Errors
/// [`Error::Psql`] when the server cannot be queried.
pub async fn database_exists(sink: &dyn SqlSink, name: &str) -> Result<bool> {
    let out = sink
        .query(&format!(
            "SELECT count(*) FROM pg_database WHERE datname = {};\n",
            quote_literal(name)?
        ))
        .await?;
    Ok(out.lines().any(|l| l.trim() == "1"))
}

/// Creates an empty database (owned by the sink's role) on the sink's server.
///
/// # Errors
/// [`Error::Database`] when it already exists or the role may not create databases.
pub async fn create_database(sink: &dyn SqlSink, name: &str) -> Result<()> {
    let context = format!("creating database {name}");
    if name.is_empty() || name.len() > 63 {
        return Err(Error::Database {
            context,
            message: "a database name has 1 to 63 bytes".into(),
        });
    }
    if database_exists(sink, name).await? {
        return Err(Error::Database {
            context,
            message: "it already exists; choose a new name (nothing was changed)".into(),
        });
    }
    match sink
        .query(&format!("CREATE DATABASE {};\n", quote_ident(name)))
        .await
    {
        Ok(_) => Ok(()),
        Err(Error::Psql { message, .. }) => Err(Error::Database {
            context,
            message: if message.contains("permission denied") {
                format!("{message} (the role needs CREATEDB: ALTER ROLE … CREATEDB)")
            } else {
                message
            },
        }),
        Err(e) => Err(e),
    }
}

/// Drops a database, ending its connections first (`WITH (FORCE)`, PostgreSQL 13+).
///
/// # Errors
/// [`Error::Database`] with the server's reason.
pub async fn drop_database(sink: &dyn SqlSink, name: &str) -> Result<()> {
    match sink
        .query(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE);\n",
            quote_ident(name)
        ))
        .await
    {
        Ok(_) => Ok(()),
        Err(Error::Psql { message, .. }) => Err(Error::Database {
            context: format!("dropping database {name}"),
            message,
        }),
        Err(e) => Err(e),
    }
}

/// One table's row count after a restore.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableCount {
    /// `schema.table` as pg_dump writes it (quoted only where needed).
    pub table: String,
    /// Rows.
    pub rows: i64,
}

/// Selects from every table of the sink's database and counts its rows (a table that cannot
/// be read fails the query, naming it).
///
/// # Errors
/// [`Error::Psql`] with the server's message.
pub async fn count_rows(sink: &dyn SqlSink) -> Result<Vec<TableCount>> {
    let out = sink
        .query(
            "SELECT coalesce(json_agg(json_build_object('table', t.name, 'rows', \
               (xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM %s', t.name), false, true, '')))[1]::text::bigint) \
               ORDER BY t.name), '[]') \
             FROM (SELECT format('%s.%s', quote_ident(n.nspname), quote_ident(c.relname)) AS name \
                   FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                   WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
                   AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%') t;\n",
        )
        .await?;
    parse_json(&out, "the row counts")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's").unwrap(), "'it''s'");
        assert!(quote_literal("a\\b").is_err());
    }
}
