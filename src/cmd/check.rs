//! `stepgate check`: load and validate config, policies and steps; print `ok` or every problem.

use std::path::Path;
use std::process::ExitCode;

use crate::authz::policies;
use crate::config;

/// Runs the check.
pub fn run(path: &Path) -> ExitCode {
    let settings = match config::load(path) {
        Ok(s) => s,
        Err(p) => {
            println!("{p}");
            return ExitCode::from(1);
        }
    };
    let result = policies::read_dir(&settings.policies_dir)
        .and_then(|src| policies::build(&src, &settings.steps));
    match result {
        Ok(bundle) => {
            println!(
                "ok: {} steps, {} issuers, {} policies",
                settings.steps.len(),
                settings.issuers.len(),
                bundle.set.policies().count()
            );
            ExitCode::SUCCESS
        }
        Err(p) => {
            println!("{p}");
            ExitCode::from(1)
        }
    }
}
