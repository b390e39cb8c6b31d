//! The `pg_dump` client's major version against the server's. pg_dump refuses to dump a server
//! newer than itself ("aborting because of server version mismatch"), so a client left behind
//! after a server upgrade fails the next backup at 2 AM; this finds it by day.
//!
//! The server is asked with the same connection code the restore uses (`psql`, the password in
//! its environment, never its command line; in the pod, on its stdin).

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, AttachParams};
use litemaas_backup::dump::pod::{find_pod, read_credentials};
use litemaas_backup::dump::{PgConnection, PodTarget, Secret};
use litemaas_backup::restore::{LocalPsql, PodPsql, SqlSink};
use tokio::io::AsyncReadExt;

use crate::check::Check;

const ID: &str = "postgres.pg_dump";
const SERVER_VERSION: &str = "SHOW server_version_num;\n";

/// A PostgreSQL version as far as compatibility goes: the major version (`15`, or `9.6` before
/// PostgreSQL 10), and the full text for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Version {
    /// `major × 100` from 10 on (`1500`), `9 × 100 + 6` before (`906`): comparable.
    rank: u32,
    /// `15.14`, as printed.
    text: String,
}

impl Version {
    /// From `server_version_num` (`150014`, `90624`).
    fn from_num(num: &str) -> Option<Version> {
        let n: u32 = num.trim().parse().ok()?;
        let (rank, text) = if n >= 100_000 {
            (n / 10_000 * 100, format!("{}.{}", n / 10_000, n % 10_000))
        } else {
            (
                n / 10_000 * 100 + n / 100 % 100,
                format!("{}.{}.{}", n / 10_000, n / 100 % 100, n % 100),
            )
        };
        Some(Version { rank, text })
    }

    /// From `pg_dump --version`: `pg_dump (PostgreSQL) 15.14 (Debian 15.14-1.pgdg120+1)`.
    fn from_banner(banner: &str) -> Option<Version> {
        let line = banner.lines().find(|l| l.contains("pg_dump"))?;
        let text = line
            .split_whitespace()
            .find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()))?
            .to_owned();
        let mut parts = text
            .split(|c: char| !c.is_ascii_digit())
            .filter(|p| !p.is_empty());
        let major: u32 = parts.next()?.parse().ok()?;
        let rank = if major >= 10 {
            major * 100
        } else {
            major * 100 + parts.next().and_then(|m| m.parse().ok()).unwrap_or(0)
        };
        Some(Version { rank, text })
    }

    /// `15`, or `9.6`.
    fn major(&self) -> String {
        if self.rank >= 1000 {
            (self.rank / 100).to_string()
        } else {
            format!("{}.{}", self.rank / 100, self.rank % 100)
        }
    }
}

/// The verdict once both versions are known.
fn compare(
    what: String,
    client: &Version,
    server: &Version,
    fix: impl FnOnce(&str) -> String,
) -> Check {
    let detail = format!("pg_dump {} against server {}", client.text, server.text);
    if client.rank >= server.rank {
        Check::pass(ID, what, detail)
    } else {
        Check::fail(
            ID,
            what,
            format!(
                "{detail}: pg_dump {} cannot dump a PostgreSQL {} server (\"server version mismatch\")",
                client.major(),
                server.major()
            ),
            fix(&server.major()),
        )
    }
}

/// How to get a client of major version `major` on a bastion.
fn install_fix(major: &str, pg_dump: &Path) -> String {
    format!(
        "install the PostgreSQL {major} client (RHEL: `dnf install postgresql{major}` from the PGDG repository, binaries in /usr/pgsql-{major}/bin; Debian/Ubuntu: `apt-get install postgresql-client-{major}`, binaries in /usr/lib/postgresql/{major}/bin) and pass its pg_dump with --pg-dump (now {})",
        pg_dump.display()
    )
}

/// `pg_dump` on this host against the server `database_url` names (or libpq's environment:
/// `PGHOST`, `PGPORT`, `PGUSER`, `PGDATABASE`, `~/.pgpass`, …).
pub async fn pg_dump_local(pg_dump: &Path, database_url: Option<&Secret>) -> Check {
    let what = format!(
        "pg_dump client ({}) major version ≥ the server's",
        pg_dump.display()
    );
    let conn = match database_url
        .map(|url| PgConnection::parse(url.expose()))
        .transpose()
    {
        Ok(conn) => conn,
        Err(e) => {
            return Check::fail(
                ID,
                what,
                e.to_string(),
                "give a postgres://USER@HOST:PORT/DATABASE URL in LITEMAAS_DATABASE_URL (the password in it or in ~/.pgpass)",
            );
        }
    };
    let where_ = conn.as_ref().map_or_else(
        || "the server named by the libpq environment (PGHOST, PGPORT, PGSERVICE; no LITEMAAS_DATABASE_URL given)".to_owned(),
        |c| format!("the server at {}", c.host_port()),
    );
    let client = match local_version(pg_dump).await {
        Ok(v) => v,
        Err(detail) => {
            let major = server_version_local(pg_dump, conn.as_ref())
                .await
                .map_or_else(|_| "NN".to_owned(), |v| v.major());
            return Check::fail(ID, what, detail, install_fix(&major, pg_dump));
        }
    };
    let server = match server_version_local(pg_dump, conn.as_ref()).await {
        Ok(v) => v,
        Err(detail) => {
            return Check::fail(
                ID,
                what,
                format!("cannot ask {where_} its version: {detail}"),
                format!(
                    "make {where_} reachable from this host (is it running? a firewall? a wrong host or port in LITEMAAS_DATABASE_URL?) and check its user and password (in LITEMAAS_DATABASE_URL or ~/.pgpass)"
                ),
            );
        }
    };
    compare(what, &client, &server, |major| install_fix(major, pg_dump))
}

/// `<pg_dump> --version`.
async fn local_version(pg_dump: &Path) -> Result<Version, String> {
    let out = tokio::process::Command::new(pg_dump)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("cannot run {}: {e}", pg_dump.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "{} --version failed ({}): {}",
            pg_dump.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Version::from_banner(&stdout).ok_or_else(|| {
        format!(
            "{} --version printed no version: {:?}",
            pg_dump.display(),
            stdout.trim()
        )
    })
}

/// psql beside `pg_dump` when there is one (the same installation), else from `PATH`.
fn psql_for(pg_dump: &Path) -> PathBuf {
    match pg_dump.parent() {
        Some(dir) if !dir.as_os_str().is_empty() && dir.join("psql").is_file() => dir.join("psql"),
        _ => PathBuf::from("psql"),
    }
}

/// The server's `server_version_num`, through psql on this host.
async fn server_version_local(
    pg_dump: &Path,
    conn: Option<&PgConnection>,
) -> Result<Version, String> {
    let psql = match conn {
        Some(conn) => LocalPsql::new(conn.clone()),
        None => LocalPsql::from_libpq_env(),
    }
    .program(psql_for(pg_dump));
    server_version(&psql).await
}

async fn server_version(sink: &dyn SqlSink) -> Result<Version, String> {
    let out = sink
        .query(SERVER_VERSION)
        .await
        .map_err(|e| e.to_string())?;
    let line = out
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    Version::from_num(line)
        .ok_or_else(|| format!("unexpected answer to SHOW server_version_num: {line:?}"))
}

/// `pg_dump` in the database pod against the server it runs beside, with the Secret's login.
pub async fn pg_dump_in_pod(client: kube::Client, target: &PodTarget) -> Check {
    let what_base = format!(
        "pg_dump in the database pod ({} in namespace {}) major version ≥ the server's",
        target.selector, target.namespace
    );
    let (credentials, pod) = match (
        read_credentials(&client, target).await,
        find_pod(&client, target).await,
    ) {
        (Ok(credentials), Ok(pod)) => (credentials, pod),
        (Err(e), _) | (_, Err(e)) => return Check::skipped(ID, what_base, e.to_string()),
    };
    let what = format!(
        "pg_dump in pod {}/{pod} (container {}) major version ≥ the server's",
        target.namespace, target.container
    );
    let image_fix = |major: &str| {
        format!(
            "use an image with pg_dump {major} or newer in container {} of the StatefulSet's pods (the postgres image of the server's own major version ships it): `oc set image statefulset/<name> -n {} {}=<image with PostgreSQL {major}>`",
            target.container, target.namespace, target.container
        )
    };
    let client_version = match pod_version(&client, target, &pod).await {
        Ok(v) => v,
        Err(detail) => return Check::fail(ID, what, detail, image_fix("NN")),
    };
    let psql = PodPsql::new(client, target, pod.clone(), &credentials, None);
    let server = match server_version(&psql).await {
        Ok(v) => v,
        Err(detail) => {
            return Check::fail(
                ID,
                what,
                format!(
                    "cannot ask the server its version from pod {}/{pod}: {detail}",
                    target.namespace
                ),
                format!(
                    "check that PostgreSQL runs in pod {}/{pod} and that Secret {}/{} holds its user and password: `oc exec -n {} {pod} -c {} -- pg_isready`",
                    target.namespace,
                    target.namespace,
                    target.secret,
                    target.namespace,
                    target.container
                ),
            );
        }
    };
    compare(what, &client_version, &server, image_fix)
}

/// `pg_dump --version` run in the pod (no credentials needed, none sent).
async fn pod_version(
    client: &kube::Client,
    target: &PodTarget,
    pod: &str,
) -> Result<Version, String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), &target.namespace);
    let params = AttachParams::default()
        .container(target.container.clone())
        .stdin(false)
        .stdout(true)
        .stderr(true);
    let context = format!("pg_dump --version in pod {}/{pod}", target.namespace);
    let mut process = pods
        .exec(pod, ["pg_dump", "--version"], &params)
        .await
        .map_err(|e| format!("{context}: exec failed: {e}"))?;
    let (Some(mut stdout), Some(mut stderr), Some(status)) =
        (process.stdout(), process.stderr(), process.take_status())
    else {
        return Err(format!("{context}: the exec gave no output streams"));
    };
    let (mut out, mut err) = (String::new(), String::new());
    let (a, b) = tokio::join!(
        stdout.read_to_string(&mut out),
        stderr.read_to_string(&mut err)
    );
    let status = status.await;
    let _ = process.join().await;
    a.and(b)
        .map_err(|e| format!("{context}: reading its output: {e}"))?;
    litemaas_backup::dump::pod::check_status(&context, status, &err).map_err(|e| e.to_string())?;
    Version::from_banner(&out)
        .ok_or_else(|| format!("{context} printed no version: {:?}", out.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_by_major() {
        let client =
            Version::from_banner("pg_dump (PostgreSQL) 15.14 (Debian 15.14-1.pgdg120+1)\n")
                .unwrap();
        assert_eq!((client.rank, client.text.as_str()), (1500, "15.14"));
        let server = Version::from_num("150018").unwrap();
        assert_eq!(
            (server.rank, server.text.as_str(), server.major().as_str()),
            (1500, "15.18", "15")
        );
        assert!(client.rank >= server.rank, "a minor behind is fine");
        let old = Version::from_banner("pg_dump (PostgreSQL) 13.2").unwrap();
        assert!(old.rank < server.rank);
        let nine = Version::from_num("90624").unwrap();
        assert_eq!(
            (nine.rank, nine.major().as_str(), nine.text.as_str()),
            (906, "9.6", "9.6.24")
        );
        assert_eq!(
            Version::from_banner("pg_dump (PostgreSQL) 9.6.24")
                .unwrap()
                .rank,
            906
        );
        assert!(
            Version::from_banner("pg_dump (PostgreSQL) 10.23")
                .unwrap()
                .rank
                > nine.rank
        );
        assert_eq!(
            Version::from_banner("pg_dump (PostgreSQL) 18beta1")
                .unwrap()
                .rank,
            1800
        );
        assert!(Version::from_banner("nothing here").is_none());
        assert!(Version::from_num("fifteen").is_none());
    }
}
