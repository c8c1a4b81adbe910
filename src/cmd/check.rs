//! `stepgate check`: load and validate config, policies, steps and input schemas; print `ok`
//! or every problem.

use std::path::Path;
use std::process::ExitCode;

use crate::authz::policies;
use crate::config::{self, Problems};
use crate::validate::Guardrails;

/// Runs the check.
pub fn run(path: &Path) -> ExitCode {
    let settings = match config::load(path) {
        Ok(s) => s,
        Err(p) => {
            println!("{p}");
            return ExitCode::from(1);
        }
    };
    let bundle = policies::read_dir(&settings.policies_dir)
        .and_then(|src| policies::build(&src, &settings.steps));
    let schemas = Guardrails::load(&settings.steps);
    let mut problems = Vec::new();
    if let Err(Problems(p)) = &bundle {
        problems.extend(p.iter().cloned());
    }
    if let Err(Problems(p)) = &schemas {
        problems.extend(p.iter().cloned());
    }
    match bundle {
        Ok(bundle) if problems.is_empty() => {
            println!(
                "ok: {} steps, {} issuers, {} policies",
                settings.steps.len(),
                settings.issuers.len(),
                bundle.policy_count
            );
            ExitCode::SUCCESS
        }
        _ => {
            println!("{}", Problems(problems));
            ExitCode::from(1)
        }
    }
}
