//! The S3 prerequisites: credentials and where they came from, the bucket and its region, a
//! write/read/delete probe under the prefix, and the multipart-upload cleanup permissions; or,
//! without a bucket, the local backup directory.

use crate::check::Check;

/// Every S3 check, in order (or the local directory's, without `--bucket`).
pub async fn s3_checks(store: &litemaas_cli::StoreArgs) -> Vec<Check> {
    let _ = store;
    vec![Check::skipped(
        "s3.credentials",
        "AWS credentials",
        "not written yet",
    )]
}
