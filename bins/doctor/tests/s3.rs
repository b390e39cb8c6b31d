//! The doctor's S3 checks against moto (through the fault proxy) and a fake IMDS.
#![allow(clippy::unwrap_used, dead_code)]

#[path = "../src/check.rs"]
mod check;
#[path = "../src/iam.rs"]
mod iam;
#[path = "../src/s3.rs"]
mod s3;
