//! Database connection settings, with the password kept apart from everything that is shown
//! or passed on a command line.

use std::fmt;
use std::str::FromStr;

use url::Url;

use crate::{Error, Result, Secret};

/// Where the database is. Parsed from a libpq URL (`postgres://user:pass@host:port/db?sslmode=…`);
/// the password (from the user-info part or a `password=` query parameter) is taken out and
/// handed to `pg_dump` through its environment, never its arguments.
#[derive(Clone, PartialEq, Eq)]
pub struct PgConnection {
    url: Url,
    password: Option<Secret>,
}

impl PgConnection {
    /// Parses a `postgres://` or `postgresql://` URL.
    ///
    /// # Errors
    /// [`Error::InvalidUrl`] naming the URL with its password hidden.
    pub fn parse(raw: &str) -> Result<Self> {
        let invalid = |reason: &str| Error::InvalidUrl {
            url: redact(raw),
            reason: reason.to_owned(),
        };
        let mut url = Url::parse(raw.trim()).map_err(|e| invalid(&e.to_string()))?;
        if !matches!(url.scheme(), "postgres" | "postgresql") {
            return Err(invalid("the scheme must be postgres:// or postgresql://"));
        }
        let mut password = url
            .password()
            .map(|p| percent_decode(p).map(Secret::new))
            .transpose()
            .map_err(|()| invalid("the password is not valid percent-encoded UTF-8"))?;
        url.set_password(None)
            .map_err(|()| invalid("cannot remove the password"))?;
        // A password may also hide in the query string; move it out too.
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        // Secrets libpq can take from no environment variable would end up in the command line.
        if let Some((key, _)) = pairs
            .iter()
            .find(|(k, _)| SECRET_PARAMS.contains(&k.as_str()))
        {
            return Err(invalid(&format!(
                "{key} would be visible in the command line of pg_dump and psql; put it in a pg_service.conf (PGSERVICEFILE) and name the service with ?service=NAME"
            )));
        }
        if pairs.iter().any(|(k, _)| k == "password") {
            let mut kept = Vec::new();
            for (k, v) in pairs {
                if k == "password" {
                    password = Some(Secret::new(v));
                } else {
                    kept.push((k, v));
                }
            }
            url.set_query(None);
            if !kept.is_empty() {
                url.query_pairs_mut().extend_pairs(kept);
            }
        }
        Ok(Self { url, password })
    }

    /// The URL without any password: safe to show and to pass as an argument.
    pub fn url_without_password(&self) -> &str {
        self.url.as_str()
    }

    /// The password, if the URL held one.
    pub fn password(&self) -> Option<&Secret> {
        self.password.as_ref()
    }

    /// The database name in the URL's path, if any (libpq then defaults to the user name).
    pub fn database(&self) -> Option<String> {
        let path = self.url.path().trim_start_matches('/');
        if path.is_empty() {
            None
        } else {
            percent_decode(path).ok()
        }
    }

    /// The same server and login, another database.
    pub fn with_database(&self, database: &str) -> PgConnection {
        let mut other = self.clone();
        let encoded: String =
            percent_encoding::utf8_percent_encode(database, percent_encoding::NON_ALPHANUMERIC)
                .to_string();
        other.url.set_path(&format!("/{encoded}"));
        other
    }

    /// The user name in the URL, if any.
    pub fn username(&self) -> Option<String> {
        let user = self.url.username();
        if user.is_empty() {
            None
        } else {
            percent_decode(user).ok()
        }
    }

    /// `host:port` for messages.
    pub fn host_port(&self) -> String {
        let host = self
            .url
            .host_str()
            .filter(|h| !h.is_empty())
            .unwrap_or("local socket");
        match self.url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        }
    }
}

impl FromStr for PgConnection {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

impl fmt::Debug for PgConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgConnection")
            .field("url", &self.url.as_str())
            .field("password", &self.password)
            .finish()
    }
}

impl fmt::Display for PgConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.url.as_str())
    }
}

fn percent_decode(s: &str) -> std::result::Result<String, ()> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(std::borrow::Cow::into_owned)
        .map_err(|_| ())
}

/// Query parameters holding secrets that libpq reads from no environment variable.
const SECRET_PARAMS: [&str; 1] = ["sslpassword"];

/// A URL as text with its password (user-info or query parameter) replaced by `***`. Text that
/// does not parse as a URL is not shown at all, since it may be a password itself.
pub fn redact(raw: &str) -> String {
    match Url::parse(raw.trim()) {
        Ok(mut url) => {
            if url.password().is_some() {
                let _ = url.set_password(Some("***"));
            }
            let pairs: Vec<(String, String)> = url
                .query_pairs()
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            if pairs
                .iter()
                .any(|(k, _)| k == "password" || SECRET_PARAMS.contains(&k.as_str()))
            {
                url.set_query(None);
                url.query_pairs_mut()
                    .extend_pairs(pairs.into_iter().map(|(k, v)| {
                        if k == "password" || SECRET_PARAMS.contains(&k.as_str()) {
                            (k, "***".into())
                        } else {
                            (k, v)
                        }
                    }));
            }
            url.to_string()
        }
        Err(_) => "<not a URL>".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_is_taken_out_of_the_url() {
        let c =
            PgConnection::parse("postgres://app:s%40cret@db.example:5433/litemaas?sslmode=require")
                .unwrap();
        assert_eq!(
            c.url_without_password(),
            "postgres://app@db.example:5433/litemaas?sslmode=require"
        );
        assert_eq!(c.password().unwrap().expose(), "s@cret");
        assert_eq!(c.database().as_deref(), Some("litemaas"));
        assert_eq!(c.host_port(), "db.example:5433");
        assert!(!format!("{c:?} {c}").contains("s@cret"));
        assert!(!format!("{c:?} {c}").contains("s%40cret"));
    }

    #[test]
    fn a_password_in_the_query_is_taken_out_too() {
        let c = PgConnection::parse("postgresql://app@h/db?password=p4ss&sslmode=disable").unwrap();
        assert_eq!(c.password().unwrap().expose(), "p4ss");
        assert_eq!(
            c.url_without_password(),
            "postgresql://app@h/db?sslmode=disable"
        );
    }

    #[test]
    fn bad_urls_are_named_without_their_password() {
        for raw in [
            "mysql://u:topsecret@h/db",
            "postgres://u:topsecret@h:notaport/db",
            "host=h password=topsecret",
        ] {
            let err = PgConnection::parse(raw).unwrap_err().to_string();
            assert!(err.starts_with("invalid database URL"), "{err}");
            assert!(!err.contains("topsecret"), "{err}");
        }
    }

    #[test]
    fn an_sslpassword_is_refused_and_never_shown() {
        let err = PgConnection::parse("postgres://u@h/db?sslmode=verify-full&sslpassword=k3ypass")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("sslpassword") && err.contains("pg_service.conf"),
            "{err}"
        );
        assert!(!err.contains("k3ypass"), "{err}");
        assert_eq!(
            redact("postgres://u@h/db?sslpassword=k3ypass"),
            "postgres://u@h/db?sslpassword=***"
        );
    }

    #[test]
    fn redact_hides_passwords() {
        assert_eq!(redact("postgres://u:pw@h/db"), "postgres://u:***@h/db");
        assert_eq!(
            redact("postgres://u@h/db?password=pw"),
            "postgres://u@h/db?password=***"
        );
        assert_eq!(redact("pw only"), "<not a URL>");
    }
}
