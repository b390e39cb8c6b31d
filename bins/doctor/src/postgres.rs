//! The `pg_dump` client's major version against the server's: a too-old client fails at 2 AM.

use crate::check::Check;

/// `pg_dump` on this host against the server `database_url` names (or libpq's environment).
pub async fn pg_dump_local(
    pg_dump: &std::path::Path,
    database_url: Option<&litemaas_backup::dump::Secret>,
) -> Check {
    let _ = (pg_dump, database_url);
    Check::skipped("postgres.pg_dump", "pg_dump version", "not written yet")
}

/// `pg_dump` in the database pod against the server it runs beside.
pub async fn pg_dump_in_pod(
    client: kube::Client,
    target: &litemaas_backup::dump::PodTarget,
) -> Check {
    let _ = (client, target);
    Check::skipped("postgres.pg_dump", "pg_dump version", "not written yet")
}
