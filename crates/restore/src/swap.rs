//! Replacing a live database by a restored copy: the parallel loader cannot run in one
//! transaction, so it loads into a new database, which is then swapped in.
//!
//! 1. [`DatabaseProfile::read`]: what the live database is beyond its content — owner,
//!    encoding, locale (libc or ICU), tablespace, connection limit, grants, settings
//!    (`ALTER DATABASE … SET`, also per role), comment. A plain dump holds none of these.
//! 2. [`DatabaseProfile::create_like`]: the new database, created with the same owner,
//!    encoding, locale, tablespace and connection limit.
//! 3. The load ([`parallel::load`](crate::parallel::load)).
//! 4. [`DatabaseProfile::apply`]: its grants, settings and comment, after the load (a setting
//!    such as `default_transaction_read_only` must not apply to the load itself).
//! 5. [`swap_in`]: new connections to the live database refused (`ALLOW_CONNECTIONS false`),
//!    its sessions ended, then in **one transaction** the live database renamed to the
//!    previous name and the new one to the live name. Either both renames happen or none; on
//!    failure connections are allowed again and the live database is as it was. The previous
//!    database is kept (connections refused) for a rollback until the caller drops it.

use serde::Deserialize;

use crate::sink::SqlSink;
use crate::verify::{quote_ident, quote_literal};
use crate::{Error, Result};

/// Settings whose value pg_catalog stores as an SQL list (`"$user", public`): written back as
/// stored, not as one string.
const LIST_SETTINGS: &[&str] = &[
    "search_path",
    "temp_tablespaces",
    "session_preload_libraries",
    "shared_preload_libraries",
    "local_preload_libraries",
];

/// One grant on the database.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct Grant {
    /// A role name, or `PUBLIC`.
    pub grantee: String,
    /// `CONNECT`, `CREATE` or `TEMPORARY`.
    pub privilege: String,
    /// `WITH GRANT OPTION`.
    pub grantable: bool,
}

/// Settings of the database, for every role (`role: None`) or one.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct RoleSettings {
    /// The role, or `None` for `ALTER DATABASE … SET`.
    pub role: Option<String>,
    /// `name=value` as pg_db_role_setting stores them.
    pub config: Vec<String>,
}

/// What a database is beyond its content.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct DatabaseProfile {
    /// Its name.
    pub name: String,
    /// Owner role.
    pub owner: String,
    /// Encoding, e.g. `UTF8`.
    pub encoding: String,
    /// `LC_COLLATE`.
    pub collate: String,
    /// `LC_CTYPE`.
    pub ctype: String,
    /// `c` (libc) or `i` (ICU).
    pub provider: Option<String>,
    /// The ICU locale, when the provider is ICU.
    pub icu_locale: Option<String>,
    /// Default tablespace.
    pub tablespace: String,
    /// Connection limit (-1: none).
    pub connlimit: i32,
    /// Whether the grants differ from the defaults (`datacl` not NULL).
    pub has_acl: bool,
    /// The grants, when `has_acl`.
    pub grants: Vec<Grant>,
    /// Database and per-role settings.
    pub settings: Vec<RoleSettings>,
    /// `COMMENT ON DATABASE`.
    pub comment: Option<String>,
}

impl DatabaseProfile {
    /// Reads the profile of database `name` on the sink's server.
    ///
    /// # Errors
    /// [`Error::Database`] when it does not exist; [`Error::Psql`] when it cannot be read.
    pub async fn read(admin: &dyn SqlSink, name: &str) -> Result<DatabaseProfile> {
        // to_jsonb(d) reads columns that differ between versions (daticulocale, datlocale).
        let out = admin
            .query(&format!(
                "SELECT json_build_object(\
                   'name', d.datname, 'owner', pg_get_userbyid(d.datdba), \
                   'encoding', pg_encoding_to_char(d.encoding), \
                   'collate', d.datcollate, 'ctype', d.datctype, \
                   'provider', to_jsonb(d)->>'datlocprovider', \
                   'icu_locale', coalesce(to_jsonb(d)->>'daticulocale', to_jsonb(d)->>'datlocale'), \
                   'tablespace', t.spcname, 'connlimit', d.datconnlimit, \
                   'has_acl', d.datacl IS NOT NULL, \
                   'grants', coalesce((SELECT json_agg(json_build_object(\
                       'grantee', CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END, \
                       'privilege', a.privilege_type, 'grantable', a.is_grantable)) \
                     FROM aclexplode(d.datacl) a), '[]'), \
                   'settings', coalesce((SELECT json_agg(json_build_object(\
                       'role', CASE WHEN s.setrole = 0 THEN NULL ELSE pg_get_userbyid(s.setrole) END, \
                       'config', s.setconfig)) \
                     FROM pg_db_role_setting s WHERE s.setdatabase = d.oid), '[]'), \
                   'comment', shobj_description(d.oid, 'pg_database')) \
                 FROM pg_database d JOIN pg_tablespace t ON t.oid = d.dattablespace \
                 WHERE d.datname = {};\n",
                quote_literal(name)?
            ))
            .await?;
        let line = out.lines().rev().find(|l| !l.trim().is_empty());
        let Some(line) = line else {
            return Err(Error::Database {
                context: format!("reading database {name}"),
                message: "it does not exist".into(),
            });
        };
        serde_json::from_str(line).map_err(|e| {
            Error::Internal(format!("cannot read the profile of database {name}: {e}"))
        })
    }

    /// Creates the empty database `name` like this one: owner, encoding, locale, tablespace,
    /// connection limit.
    ///
    /// # Errors
    /// [`Error::Database`] when it exists or cannot be created.
    pub async fn create_like(&self, admin: &dyn SqlSink, name: &str) -> Result<()> {
        if crate::database_exists(admin, name).await? {
            return Err(Error::Database {
                context: format!("creating database {name}"),
                message: "it already exists (nothing was changed)".into(),
            });
        }
        let mut sql = format!(
            "CREATE DATABASE {} WITH TEMPLATE template0 OWNER {} ENCODING {} LC_COLLATE {} LC_CTYPE {} CONNECTION LIMIT {}",
            quote_ident(name),
            quote_ident(&self.owner),
            quote_literal(&self.encoding)?,
            quote_literal(&self.collate)?,
            quote_literal(&self.ctype)?,
            self.connlimit
        );
        // Named only when it is not the default: naming even pg_default needs CREATE on it.
        if self.tablespace != "pg_default" {
            sql.push_str(&format!(" TABLESPACE {}", quote_ident(&self.tablespace)));
        }
        if self.provider.as_deref() == Some("i") {
            sql.push_str(" LOCALE_PROVIDER icu");
            if let Some(icu) = &self.icu_locale {
                sql.push_str(&format!(" ICU_LOCALE {}", quote_literal(icu)?));
            }
        }
        sql.push_str(";\n");
        admin.query(&sql).await.map(drop).map_err(|e| match e {
            Error::Psql { message, .. } => Error::Database {
                context: format!("creating database {name} like {}", self.name),
                message,
            },
            e => e,
        })
    }

    /// The statements that give database `name` this profile's grants, settings and comment.
    ///
    /// # Errors
    /// [`Error::Database`] for a value that cannot be written back safely (a list setting
    /// holding `;`, a value holding a backslash).
    pub fn apply_sql(&self, name: &str) -> Result<String> {
        let db = quote_ident(name);
        let mut sql = String::new();
        if self.has_acl {
            sql.push_str(&format!(
                "REVOKE ALL ON DATABASE {db} FROM PUBLIC;\nREVOKE ALL ON DATABASE {db} FROM {};\n",
                quote_ident(&self.owner)
            ));
            for grant in &self.grants {
                let grantee = if grant.grantee == "PUBLIC" {
                    "PUBLIC".to_owned()
                } else {
                    quote_ident(&grant.grantee)
                };
                let privilege = match grant.privilege.as_str() {
                    p @ ("CONNECT" | "CREATE" | "TEMPORARY") => p,
                    other => {
                        return Err(Error::Database {
                            context: format!("carrying the grants of database {}", self.name),
                            message: format!("unknown privilege {other:?}"),
                        });
                    }
                };
                sql.push_str(&format!(
                    "GRANT {privilege} ON DATABASE {db} TO {grantee}{};\n",
                    if grant.grantable {
                        " WITH GRANT OPTION"
                    } else {
                        ""
                    }
                ));
            }
        }
        for settings in &self.settings {
            let target = match &settings.role {
                Some(role) => format!("ALTER ROLE {} IN DATABASE {db}", quote_ident(role)),
                None => format!("ALTER DATABASE {db}"),
            };
            for config in &settings.config {
                let Some((key, value)) = config.split_once('=') else {
                    continue;
                };
                let ok_name = !key.is_empty()
                    && key
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.');
                let value = if LIST_SETTINGS.contains(&key) {
                    (!value.contains([';', '\n', '\\'])).then(|| value.to_owned())
                } else {
                    quote_literal(value).ok()
                };
                match (ok_name, value) {
                    (true, Some(value)) => {
                        sql.push_str(&format!("{target} SET {key} TO {value};\n"));
                    }
                    _ => {
                        return Err(Error::Database {
                            context: format!("carrying the settings of database {}", self.name),
                            message: format!("cannot write {config:?} back safely"),
                        });
                    }
                }
            }
        }
        if let Some(comment) = &self.comment {
            sql.push_str(&format!(
                "COMMENT ON DATABASE {db} IS {};\n",
                quote_literal(comment)?
            ));
        }
        Ok(sql)
    }

    /// Gives database `name` this profile's grants, settings and comment.
    ///
    /// # Errors
    /// See [`apply_sql`](Self::apply_sql); [`Error::Psql`] from the server.
    pub async fn apply(&self, admin: &dyn SqlSink, name: &str) -> Result<()> {
        let sql = self.apply_sql(name)?;
        if sql.is_empty() {
            return Ok(());
        }
        admin
            .query(&format!("BEGIN;\n{sql}COMMIT;\n"))
            .await
            .map(drop)
    }
}

/// How a swap ended when it did not succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum SwapState {
    /// Nothing was renamed: the live database is as it was (connections allowed again).
    Unchanged,
    /// Both renames happened (the error came after them).
    Swapped,
    /// The names are in neither state, or could not be read: look before doing anything.
    Unknown,
}

/// A swap that did not succeed: the state it left, and why.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct SwapFailure {
    /// The state the names are in, read back after the failure.
    pub state: SwapState,
    /// [`Error::Database`], its message naming that state.
    pub error: Error,
}

impl From<Error> for SwapFailure {
    /// An error before anything was sent to the server.
    fn from(error: Error) -> Self {
        SwapFailure {
            state: SwapState::Unchanged,
            error,
        }
    }
}

/// Swaps `new` in as `live`; `live` becomes `previous` (connections refused, kept). No step
/// waits longer than `lock_timeout` for a lock (another session holding one on the live
/// database must not leave it refusing connections indefinitely).
///
/// # Errors
/// [`SwapFailure`] with the state reached ([`SwapState`]), also named in its message.
pub async fn swap_in(
    admin: &dyn SqlSink,
    live: &str,
    new: &str,
    previous: &str,
    lock_timeout: std::time::Duration,
) -> std::result::Result<(), SwapFailure> {
    let (l, n, p) = (quote_ident(live), quote_ident(new), quote_ident(previous));
    let script = format!(
        "SET lock_timeout = {};\n\
         ALTER DATABASE {l} ALLOW_CONNECTIONS false;\n\
         SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
           WHERE datname = {} AND pid <> pg_backend_pid();\n\
         BEGIN;\n\
         ALTER DATABASE {l} RENAME TO {p};\n\
         ALTER DATABASE {n} RENAME TO {l};\n\
         COMMIT;\n",
        lock_timeout.as_millis().max(1),
        quote_literal(live)?
    );
    let Err(error) = admin.query(&script).await else {
        return Ok(());
    };
    let state = swap_state(admin, live, new, previous).await;
    let outcome = match state {
        SwapState::Unchanged => {
            let refused = admin
                .query(&format!(
                    "SELECT NOT datallowconn FROM pg_database WHERE datname = {};\n",
                    quote_literal(live)?
                ))
                .await
                .map(|out| out.trim() != "f");
            let allowed =
                match refused {
                    Ok(false) => Ok(String::new()),
                    _ => admin
                        .query(&format!(
                            "SET lock_timeout = {};\nALTER DATABASE {l} ALLOW_CONNECTIONS true;\n",
                            lock_timeout.as_millis().max(1)
                        ))
                        .await,
                };
            match allowed {
                Ok(_) => format!("nothing was renamed; {live} is as it was"),
                Err(e) => format!(
                    "nothing was renamed, but connections to {live} are still refused: ALTER DATABASE {l} ALLOW_CONNECTIONS true; failed: {e}"
                ),
            }
        }
        SwapState::Swapped => format!(
            "both renames happened: {live} is the restored database, the previous one is {previous}"
        ),
        SwapState::Unknown => format!(
            "the state is unknown: look at the databases {live}, {new} and {previous} before doing anything"
        ),
    };
    Err(SwapFailure {
        state,
        error: Error::Database {
            context: format!("swapping {new} in as {live}"),
            message: format!("{error}; {outcome}"),
        },
    })
}

/// Which names exist now: the state of a swap that failed.
pub async fn swap_state(admin: &dyn SqlSink, live: &str, new: &str, previous: &str) -> SwapState {
    let (Ok(live_exists), Ok(new_exists), Ok(previous_exists)) = (
        crate::database_exists(admin, live).await,
        crate::database_exists(admin, new).await,
        crate::database_exists(admin, previous).await,
    ) else {
        return SwapState::Unknown;
    };
    match (live_exists, new_exists, previous_exists) {
        (true, true, false) => SwapState::Unchanged,
        (true, false, true) => SwapState::Swapped,
        _ => SwapState::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile() -> DatabaseProfile {
        DatabaseProfile {
            name: "litemaas".into(),
            owner: "litellm".into(),
            encoding: "UTF8".into(),
            collate: "C.UTF-8".into(),
            ctype: "C.UTF-8".into(),
            provider: Some("c".into()),
            icu_locale: None,
            tablespace: "pg_default".into(),
            connlimit: -1,
            has_acl: true,
            grants: vec![
                Grant {
                    grantee: "PUBLIC".into(),
                    privilege: "CONNECT".into(),
                    grantable: false,
                },
                Grant {
                    grantee: "report\"er".into(),
                    privilege: "TEMPORARY".into(),
                    grantable: true,
                },
            ],
            settings: vec![
                RoleSettings {
                    role: None,
                    config: vec![
                        "search_path=\"$user\", public, extensions".into(),
                        "work_mem=64MB".into(),
                    ],
                },
                RoleSettings {
                    role: Some("litellm".into()),
                    config: vec!["statement_timeout=5min".into()],
                },
            ],
            comment: Some("LiteLLM's 'db'".into()),
        }
    }

    #[test]
    fn grants_settings_and_comment_are_written_back() {
        let sql = profile().apply_sql("new").unwrap();
        assert_eq!(
            sql,
            "REVOKE ALL ON DATABASE \"new\" FROM PUBLIC;\n\
             REVOKE ALL ON DATABASE \"new\" FROM \"litellm\";\n\
             GRANT CONNECT ON DATABASE \"new\" TO PUBLIC;\n\
             GRANT TEMPORARY ON DATABASE \"new\" TO \"report\"\"er\" WITH GRANT OPTION;\n\
             ALTER DATABASE \"new\" SET search_path TO \"$user\", public, extensions;\n\
             ALTER DATABASE \"new\" SET work_mem TO '64MB';\n\
             ALTER ROLE \"litellm\" IN DATABASE \"new\" SET statement_timeout TO '5min';\n\
             COMMENT ON DATABASE \"new\" IS 'LiteLLM''s ''db''';\n"
        );
    }

    #[test]
    fn values_that_cannot_be_written_back_safely_are_refused() {
        let mut p = profile();
        p.settings[0].config = vec!["search_path=public; DROP DATABASE x".into()];
        assert!(p.apply_sql("new").is_err());
        p.settings[0].config = vec!["x; DROP=1".into()];
        assert!(p.apply_sql("new").is_err());
    }
}
