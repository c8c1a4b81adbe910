//! Command entry points; each returns an exit code (DESIGN.md §2: 0 ok, 1 invalid, 2 runtime).

pub mod audit;
pub mod check;
pub mod explain;
pub mod policy_test;
pub mod serve;

use std::process::ExitCode;

use crate::app::StartError;

/// Exit code for a start error.
pub fn exit_for(e: &StartError) -> ExitCode {
    match e {
        StartError::Invalid(p) => {
            eprintln!("{p}");
            ExitCode::from(1)
        }
        StartError::Runtime(m) => {
            eprintln!("error: {m}");
            ExitCode::from(2)
        }
    }
}
