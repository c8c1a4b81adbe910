//! The files of one chain: rotated `<name>.000001`, `<name>.000002`, ... then the live `<name>`.

use std::path::{Path, PathBuf};

/// The folder that holds `path` (`.` for a bare file name).
pub fn folder_of(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Makes the entries of the folder holding `path` durable: after a file there was created,
/// renamed or removed.
pub fn sync_folder_of(path: &Path) -> std::io::Result<()> {
    std::fs::File::open(folder_of(path))?.sync_all()
}

/// The rotated files of the log at `live`, oldest first, with their numbers.
pub fn rotated(live: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let Some(name) = live.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return Ok(Vec::new());
    };
    let dir = folder_of(live);
    let prefix = format!("{name}.");
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for e in entries {
        let e = e?;
        let n = e.file_name().to_string_lossy().into_owned();
        if let Some(num) = n.strip_prefix(&prefix).and_then(|s| s.parse::<u64>().ok()) {
            out.push((num, e.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// The name the next rotation gives the live file.
pub fn next_rotated(live: &Path) -> std::io::Result<PathBuf> {
    let next = rotated(live)?.last().map(|(n, _)| n + 1).unwrap_or(1);
    let mut name = live.as_os_str().to_os_string();
    name.push(format!(".{next:06}"));
    Ok(PathBuf::from(name))
}

/// The live logs at `path`: a single file as itself; for a folder, each file in it ending in
/// `.jsonl`, sorted.
pub fn lives(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut lives: Vec<PathBuf> = std::fs::read_dir(path)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    lives.sort();
    Ok(lives)
}

/// Every file of the chain in order: each live log at `path` ([`lives`]) preceded by its
/// rotated files.
pub fn chain(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for live in lives(path)? {
        out.extend(rotated(&live)?.into_iter().map(|(_, p)| p));
        out.push(live);
    }
    Ok(out)
}
