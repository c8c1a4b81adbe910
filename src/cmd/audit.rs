//! `stepgate audit verify PATH`.

use std::path::Path;
use std::process::ExitCode;

use crate::audit::verify::{Verdict, verify_file};

/// Verifies a log file; prints `ok N records` or the first broken record.
pub fn verify(path: &Path) -> ExitCode {
    match verify_file(path) {
        Ok(v @ Verdict::Ok { .. }) => {
            println!("{v}");
            ExitCode::SUCCESS
        }
        Ok(v) => {
            println!("{v}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("error: cannot read `{}`: {e}", path.display());
            ExitCode::from(2)
        }
    }
}
