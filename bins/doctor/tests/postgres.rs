//! The doctor's pg_dump version checks against a real PostgreSQL 15, locally and in a pod.
#![allow(clippy::unwrap_used, dead_code)]

#[path = "../src/check.rs"]
mod check;
#[path = "../src/postgres.rs"]
mod postgres;
