//! The IAM policy and EC2 trust relationship this tool needs (`litemaas-doctor --iam-policy`).
//!
//! Least privilege: object actions only under `arn:aws:s3:::BUCKET/PREFIX/*`; listing only
//! under the prefix; the bucket-level reads the tool makes. The original tool's policy
//! (`spec/BACKUP.md`) had `s3:PutObjectAcl` and `s3:GetObjectVersion`, which nothing here uses
//! (no ACLs are set, no versions are read), and lacked `s3:AbortMultipartUpload` and
//! `s3:ListBucketMultipartUploads`, which a streaming multipart upload needs to clean up after a
//! failure. [`S3_CALLS`] maps every S3 call the code makes to the action that allows it; a unit
//! test reads the S3 store's source and fails when a call is missing from it.

use serde_json::{Value, json};

/// Every S3 API call the tools make (the SDK method name) and the IAM action that allows it.
/// `CreateMultipartUpload`, `UploadPart` and `CompleteMultipartUpload` are allowed by
/// `s3:PutObject`; `HeadObject` by `s3:GetObject`; `HeadBucket` and `ListObjectsV2` by
/// `s3:ListBucket`.
#[cfg_attr(not(test), allow(dead_code))] // read by the tests below
pub const S3_CALLS: &[(&str, &str)] = &[
    ("put_object", "s3:PutObject"),
    ("create_multipart_upload", "s3:PutObject"),
    ("upload_part", "s3:PutObject"),
    ("complete_multipart_upload", "s3:PutObject"),
    ("get_object", "s3:GetObject"),
    ("head_object", "s3:GetObject"),
    ("delete_object", "s3:DeleteObject"),
    ("abort_multipart_upload", "s3:AbortMultipartUpload"),
    ("head_bucket", "s3:ListBucket"),
    ("list_objects_v2", "s3:ListBucket"),
    ("get_bucket_location", "s3:GetBucketLocation"),
    ("list_multipart_uploads", "s3:ListBucketMultipartUploads"),
];

/// Actions on objects (resource `arn:aws:s3:::BUCKET/PREFIX/*`).
const OBJECT_ACTIONS: [&str; 4] = [
    "s3:PutObject",
    "s3:GetObject",
    "s3:DeleteObject",
    "s3:AbortMultipartUpload",
];

/// Actions on the bucket without a prefix condition (resource `arn:aws:s3:::BUCKET`).
const BUCKET_ACTIONS: [&str; 2] = ["s3:GetBucketLocation", "s3:ListBucketMultipartUploads"];

/// `{"policy": …, "trust": …}` for `bucket` and the key `prefix` (`""`: the whole bucket).
///
/// `s3:ListBucket` carries an `s3:prefix` condition with `StringLikeIfExists`: `HeadBucket`,
/// which the tools call before any work, is authorised by `s3:ListBucket` and has no prefix, so
/// a plain `StringLike` would refuse it.
pub fn iam_policy(bucket: &str, prefix: &str) -> Value {
    let prefix = prefix.trim_matches('/');
    let objects = if prefix.is_empty() {
        format!("arn:aws:s3:::{bucket}/*")
    } else {
        format!("arn:aws:s3:::{bucket}/{prefix}/*")
    };
    let bucket_arn = format!("arn:aws:s3:::{bucket}");
    let mut list = json!({
        "Sid": "LitemaasBackupList",
        "Effect": "Allow",
        "Action": ["s3:ListBucket"],
        "Resource": bucket_arn,
    });
    if !prefix.is_empty() {
        list["Condition"] = json!({
            "StringLikeIfExists": {"s3:prefix": [prefix, format!("{prefix}/"), format!("{prefix}/*")]}
        });
    }
    json!({
        "policy": {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "LitemaasBackupObjects",
                    "Effect": "Allow",
                    "Action": OBJECT_ACTIONS,
                    "Resource": objects,
                },
                list,
                {
                    "Sid": "LitemaasBackupBucket",
                    "Effect": "Allow",
                    "Action": BUCKET_ACTIONS,
                    "Resource": bucket_arn,
                },
            ],
        },
        "trust": {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Service": "ec2.amazonaws.com"},
                    "Action": "sts:AssumeRole",
                }
            ],
        },
    })
}

/// The fix text for a missing action: what to grant, and where the whole policy comes from.
pub fn grant(action: &str, bucket: &str, prefix: &str) -> String {
    format!(
        "allow {action} to the role or user of these credentials: apply the policy printed by `litemaas-doctor --iam-policy {bucket}{}`",
        if prefix.is_empty() || prefix == "litemaas-backups" {
            String::new()
        } else {
            format!(" --prefix {prefix}")
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn actions(policy: &Value) -> BTreeSet<String> {
        policy["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| s["Action"].as_array().unwrap().iter())
            .map(|a| a.as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn the_policy_is_json_with_exactly_the_actions_needed() {
        let out = iam_policy("maas-db-backup", "litemaas-backups");
        let text = serde_json::to_string_pretty(&out).unwrap();
        let back: Value = serde_json::from_str(&text).unwrap();
        let policy = &back["policy"];
        assert_eq!(policy["Version"], "2012-10-17");
        let expected: BTreeSet<String> = [
            "s3:PutObject",
            "s3:GetObject",
            "s3:DeleteObject",
            "s3:AbortMultipartUpload",
            "s3:ListBucket",
            "s3:GetBucketLocation",
            "s3:ListBucketMultipartUploads",
        ]
        .into_iter()
        .map(str::to_owned)
        .collect();
        assert_eq!(actions(policy), expected);
        let statements = policy["Statement"].as_array().unwrap();
        assert_eq!(
            statements[0]["Resource"],
            "arn:aws:s3:::maas-db-backup/litemaas-backups/*"
        );
        assert_eq!(statements[1]["Resource"], "arn:aws:s3:::maas-db-backup");
        assert_eq!(
            statements[1]["Condition"]["StringLikeIfExists"]["s3:prefix"][2],
            "litemaas-backups/*"
        );
        assert_eq!(statements[2]["Resource"], "arn:aws:s3:::maas-db-backup");
        for s in statements {
            assert_eq!(s["Effect"], "Allow");
        }
        let trust = &back["trust"]["Statement"][0];
        assert_eq!(trust["Principal"]["Service"], "ec2.amazonaws.com");
        assert_eq!(trust["Action"], "sts:AssumeRole");
        // No prefix: the whole bucket, no condition.
        let whole = iam_policy("b", "");
        assert_eq!(
            whole["policy"]["Statement"][0]["Resource"],
            "arn:aws:s3:::b/*"
        );
        assert!(whole["policy"]["Statement"][1].get("Condition").is_none());
    }

    /// The SDK methods called on an S3 client in `source`: `client` followed (maybe across
    /// lines) by `.method(`.
    fn sdk_calls(source: &str) -> BTreeSet<String> {
        let mut calls = BTreeSet::new();
        let mut rest = source;
        while let Some(at) = rest.find("client") {
            let after = &rest[at + "client".len()..];
            let trimmed = after.trim_start();
            if let Some(call) = trimmed.strip_prefix('.') {
                let name: String = call
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if call[name.len()..].starts_with("()") && !name.is_empty() {
                    calls.insert(name);
                }
            }
            rest = after;
        }
        calls
    }

    #[test]
    fn the_policy_covers_every_s3_call_the_code_makes() {
        let store = include_str!("../../../crates/s3/src/aws.rs");
        let doctor = include_str!("s3.rs");
        let mut calls = sdk_calls(store);
        assert!(
            calls.contains("upload_part") && calls.contains("list_multipart_uploads"),
            "the scan finds the store's calls: {calls:?}"
        );
        calls.extend(sdk_calls(doctor));
        let table: std::collections::BTreeMap<&str, &str> = S3_CALLS.iter().copied().collect();
        let granted = actions(&iam_policy("b", "p")["policy"]);
        for call in &calls {
            let action = table.get(call.as_str()).unwrap_or_else(|| {
                panic!("S3 call {call} is not in S3_CALLS: map it to its IAM action")
            });
            assert!(
                granted.contains(*action),
                "{call} needs {action}, not in the policy"
            );
        }
        // And the policy grants nothing that no call needs.
        let needed: BTreeSet<String> = calls.iter().map(|c| table[c.as_str()].to_owned()).collect();
        assert_eq!(granted, needed);
    }
}
