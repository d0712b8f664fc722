//! Where benchmark data goes: a real disk, never tmpfs (which would make every fsync free).

use anyhow::{Context as _, Result};
use std::path::{Path, PathBuf};

/// The file system that holds `path`: (mount point, type), from /proc/self/mounts.
pub fn filesystem_of(path: &Path) -> Option<(PathBuf, String)> {
    let path = std::fs::canonicalize(path).ok()?;
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    let mut best: Option<(PathBuf, String)> = None;
    for line in mounts.lines() {
        let mut f = line.split_whitespace();
        let (Some(_dev), Some(mount), Some(fstype)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let mount = PathBuf::from(mount.replace("\\040", " "));
        if path.starts_with(&mount)
            && best
                .as_ref()
                .is_none_or(|(m, _)| mount.as_os_str().len() >= m.as_os_str().len())
        {
            best = Some((mount, fstype.to_string()));
        }
    }
    best
}

fn is_memory_fs(fstype: &str) -> bool {
    matches!(fstype, "tmpfs" | "ramfs")
}

/// The base directory for benchmark data: `explicit` if given; else `$TMPDIR` (or /tmp)
/// unless that is a memory file system, in which case `$HOME/.cache/switchyard-bench`.
/// Returns the directory and a description of its file system for the report.
pub fn data_base_dir(explicit: Option<&Path>) -> Result<(PathBuf, String)> {
    let dir = match explicit {
        Some(d) => d.to_path_buf(),
        None => {
            let tmp = std::env::temp_dir();
            match filesystem_of(&tmp) {
                Some((_, t)) if is_memory_fs(&t) => {
                    let home = std::env::var_os("HOME")
                        .context("$TMPDIR is tmpfs and $HOME is not set: pass --data-dir")?;
                    PathBuf::from(home).join(".cache").join("switchyard-bench")
                }
                _ => tmp,
            }
        }
    };
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("creating benchmark data directory {}", dir.display()))?;
    let fs = match filesystem_of(&dir) {
        Some((mount, t)) if is_memory_fs(&t) => {
            format!(
                "{t} at {} (WARNING: memory, fsync is free)",
                mount.display()
            )
        }
        Some((mount, t)) => format!("{t} at {}", mount.display()),
        None => "unknown file system".to_string(),
    };
    Ok((dir, fs))
}

/// The `switchyard` binary: `explicit`, else the one next to this benchmark's binary; an
/// error saying how to build it when it is not there.
pub fn switchyard_binary(explicit: Option<&Path>) -> Result<PathBuf> {
    let bin = match explicit {
        Some(p) => p.to_path_buf(),
        None => std::env::current_exe()
            .context("finding this binary")?
            .with_file_name("switchyard"),
    };
    if !bin.is_file() {
        anyhow::bail!(
            "no switchyard binary at {}: build it first (cargo build --release -p switchyard) \
             or pass --switchyard PATH",
            bin.display()
        );
    }
    Ok(bin)
}
