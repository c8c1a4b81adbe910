//! `stepgate audit verify PATH`.

use std::path::Path;
use std::process::ExitCode;

use crate::audit::verify::{Verdict, verify_path};

/// Verifies a log (file with its rotated files, or a folder); prints `ok N records` or the first
/// broken record, and says when the log's journal holds records the live file does not have yet.
pub fn verify(path: &Path) -> ExitCode {
    match verify_path(path) {
        Ok(v) => {
            println!("{v}");
            journaled(path);
            match v {
                Verdict::Ok { .. } => ExitCode::SUCCESS,
                _ => ExitCode::from(1),
            }
        }
        Err(e) => {
            eprintln!("error: cannot read `{}`: {e}", path.display());
            ExitCode::from(2)
        }
    }
}

/// After a power cut, and until stepgate starts again, the last acknowledged records may be in
/// a live file's journal only: names them (on stderr, the verdict stands for what the files hold).
fn journaled(path: &Path) {
    use crate::audit::file::{journal, record_ending_at};
    for live in crate::audit::files::lives(path).unwrap_or_default() {
        let last_in_file = std::fs::File::open(&live)
            .and_then(|f| record_ending_at(&f, f.metadata()?.len()))
            .ok()
            .flatten()
            .map(|r| r.seq);
        if let Ok(Some(last)) = journal::last_journaled(&live)
            && last_in_file.is_none_or(|f| last > f)
        {
            eprintln!(
                "note: `{}` holds records up to seq {last} that `{}` does not have yet; the next start of stepgate restores them",
                journal::path_for(&live).display(),
                live.display()
            );
        }
    }
}

/// Which records `audit tail` shows.
#[derive(Debug, Default)]
pub struct TailFilter {
    /// Step name.
    pub step: Option<String>,
    /// `<issuer>/<sub>` or `<sub>`.
    pub caller: Option<String>,
    /// `allow` or `deny`.
    pub decision: Option<String>,
}

impl TailFilter {
    /// Whether a record passes.
    pub fn matches(&self, r: &serde_json::Value) -> bool {
        let s = |k: &str| r.get(k).and_then(|v| v.as_str()).unwrap_or_default();
        let caller = r.get("caller");
        let cs = |k: &str| {
            caller
                .and_then(|c| c.get(k))
                .and_then(|v| v.as_str())
                .unwrap_or_default()
        };
        self.step.as_deref().is_none_or(|x| s("step") == x)
            && self.decision.as_deref().is_none_or(|x| s("decision") == x)
            && self
                .caller
                .as_deref()
                .is_none_or(|x| cs("sub") == x || format!("{}/{}", cs("issuer"), cs("sub")) == x)
    }
}

/// One record as a line for people.
pub fn human(r: &serde_json::Value) -> String {
    let s = |k: &str| r.get(k).and_then(|v| v.as_str()).unwrap_or("-").to_string();
    let caller = r
        .get("caller")
        .filter(|c| !c.is_null())
        .map(|c| {
            format!(
                "{}/{}",
                c.get("issuer").and_then(|v| v.as_str()).unwrap_or("?"),
                c.get("sub").and_then(|v| v.as_str()).unwrap_or("?")
            )
        })
        .unwrap_or_else(|| "-".into());
    let status = r
        .get("status")
        .and_then(|v| v.as_u64())
        .map(|v| v.to_string())
        .unwrap_or_else(|| "-".into());
    let reasons = r
        .get("reasons")
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str())
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    let exec = s("execution_id");
    format!(
        "{} #{} {:<8} {:<5} {} {} {} by {} [{}]{}",
        s("time"),
        r.get("seq").and_then(|v| v.as_u64()).unwrap_or(0),
        s("event"),
        s("decision"),
        status,
        s("action"),
        s("step"),
        caller,
        reasons,
        if exec == "-" {
            String::new()
        } else {
            format!(" -> {exec}")
        }
    )
}

/// `stepgate audit tail`.
pub fn tail(path: &Path, filter: &TailFilter, last: usize, follow: bool, json: bool) -> ExitCode {
    let print = |line: &str| match serde_json::from_str::<serde_json::Value>(line) {
        Ok(v) if filter.matches(&v) => {
            if json {
                println!("{line}");
            } else {
                println!("{}", human(&v));
            }
        }
        Ok(_) => {}
        Err(_) => eprintln!("(unreadable line skipped)"),
    };
    let files = match crate::audit::files::chain(path) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: cannot list `{}`: {e}", path.display());
            return ExitCode::from(2);
        }
    };
    let mut matching = std::collections::VecDeque::new();
    for f in &files {
        let Ok(text) = std::fs::read_to_string(f) else {
            continue;
        };
        for line in text.lines() {
            if serde_json::from_str::<serde_json::Value>(line).is_ok_and(|v| filter.matches(&v)) {
                matching.push_back(line.to_string());
                if matching.len() > last {
                    matching.pop_front();
                }
            }
        }
    }
    for l in &matching {
        print(l);
    }
    if !follow {
        return ExitCode::SUCCESS;
    }
    // Follow the live file; a rotation shows as the file getting shorter (a new file).
    let mut offset = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let mut pending = String::new();
    loop {
        std::thread::sleep(std::time::Duration::from_millis(500));
        let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        if len < offset {
            offset = 0;
            pending.clear();
        }
        if len == offset {
            continue;
        }
        use std::io::{Read, Seek, SeekFrom};
        let Ok(mut f) = std::fs::File::open(path) else {
            continue;
        };
        if f.seek(SeekFrom::Start(offset)).is_err() {
            continue;
        }
        let mut buf = String::new();
        if f.read_to_string(&mut buf).is_err() {
            continue;
        }
        offset += buf.len() as u64;
        pending.push_str(&buf);
        while let Some(i) = pending.find('\n') {
            let line: String = pending.drain(..=i).collect();
            print(line.trim_end());
        }
    }
}
