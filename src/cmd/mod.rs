//! Command entry points; each returns an exit code (DESIGN.md §2: 0 ok, 1 invalid, 2 runtime).

pub mod audit;
pub mod check;
pub mod explain;
pub mod policy_test;
pub mod serve;

use std::process::ExitCode;

use crate::app::StartError;

/// Loads a config file and builds its policy bundle (the start of `explain` and `policy test`).
pub fn load_with_policies(
    path: &std::path::Path,
) -> Result<(crate::config::Settings, crate::authz::PolicyBundle), crate::config::Problems> {
    let settings = crate::config::load(path)?;
    let src = crate::authz::policies::read_dir(&settings.policies_dir)?;
    let bundle = crate::authz::policies::build(&src, &settings.steps)?;
    Ok((settings, bundle))
}

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
