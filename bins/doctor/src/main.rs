//! `litemaas-doctor`: every prerequisite of a LiteMaaS backup and restore, checked in order,
//! each failure with its fix (work in progress, issue 11).

#![allow(dead_code)] // until the checks land

mod check;

fn main() {}
