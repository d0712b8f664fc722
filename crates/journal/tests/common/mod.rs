//! Helpers shared by the file backend's behaviour tests: the on-disk layout (as documented
//! for the CLI and for recovery), a reader of batch frames that is independent of the
//! backend's own code, directory copies, child processes and mounts.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// `DIR/topics/<topic>/<partition>`.
pub fn partition_dir(dir: &Path, topic: &str, partition: u32) -> PathBuf {
    dir.join("topics").join(topic).join(partition.to_string())
}

/// The `.log` segments of a partition directory, ordered by base offset. Panics on a
/// `.log` file whose name is not a 20-digit base offset.
pub fn segments(part_dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(part_dir).expect("read partition dir") {
        let path = entry.expect("dir entry").path();
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        if let Some(digits) = name.strip_suffix(".log") {
            assert!(
                digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()),
                "segment file name {name} is not a 20-digit base offset"
            );
            out.push((digits.parse().expect("digits"), path));
        }
    }
    out.sort();
    out
}

/// One batch frame as found on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrameInfo {
    /// Byte position of the frame's length field.
    pub position: u64,
    /// Total length including the length field.
    pub len: u64,
    pub base: u64,
    pub timestamp: i64,
    pub count: u32,
    pub version: u8,
    pub crc_ok: bool,
}

impl FrameInfo {
    pub fn end(&self) -> u64 {
        self.position + self.len
    }
    pub fn next_offset(&self) -> u64 {
        self.base + u64::from(self.count)
    }
}

/// The complete frames at the start of a segment file, following the documented layout:
/// `u32 len | u32 crc32c | u64 base | i64 timestamp ms | u32 count | u8 version | records`.
/// Stops at the first incomplete frame.
pub fn frames(path: &Path) -> Vec<FrameInfo> {
    let data = std::fs::read(path).expect("read segment");
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos + 4 <= data.len() {
        let len = u32::from_le_bytes(data[pos..pos + 4].try_into().expect("4")) as usize;
        if len < 25 || pos + 4 + len > data.len() {
            break;
        }
        let f = &data[pos..pos + 4 + len];
        let crc = u32::from_le_bytes(f[4..8].try_into().expect("4"));
        out.push(FrameInfo {
            position: pos as u64,
            len: (4 + len) as u64,
            base: u64::from_le_bytes(f[8..16].try_into().expect("8")),
            timestamp: i64::from_le_bytes(f[16..24].try_into().expect("8")),
            count: u32::from_le_bytes(f[24..28].try_into().expect("4")),
            version: f[28],
            crc_ok: crc32c::crc32c(&f[8..]) == crc,
        });
        pos += 4 + len;
    }
    out
}

/// Copies a directory tree (regular files and directories only).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create copy dir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        let ty = entry.file_type().expect("file type");
        if ty.is_dir() {
            copy_dir(&entry.path(), &target);
        } else if ty.is_file() {
            std::fs::copy(entry.path(), &target).expect("copy file");
        }
    }
}

/// Every file under `dir` whose name ends with one of `exts` (without the dot).
pub fn files_with_ext(dir: &Path, exts: &[&str]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            out.extend(files_with_ext(&path, exts));
        } else if path
            .extension()
            .is_some_and(|e| exts.iter().any(|x| e == *x))
        {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// True when the run must not skip tests for a missing facility.
pub fn services_required() -> bool {
    std::env::var("SWITCHYARD_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

/// Prints why a test is skipped, or fails it when `SWITCHYARD_REQUIRE_SERVICES=1`.
pub fn skip(test: &str, reason: &str) {
    assert!(
        !services_required(),
        "{test}: {reason} (SWITCHYARD_REQUIRE_SERVICES=1)"
    );
    eprintln!("SKIPPED {test}: {reason}");
}

/// A mount that is unmounted when dropped, also when the test panics.
#[derive(Debug)]
pub struct Mount {
    path: PathBuf,
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?}: {} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Mount {
    /// Mounts a tmpfs of `size` (for example `256k`) on `path`.
    pub fn tmpfs(path: &Path, size: &str) -> Result<Mount, String> {
        run(Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path))?;
        Ok(Mount {
            path: path.to_owned(),
        })
    }

    /// Bind-mounts `path` onto itself, read-only.
    pub fn read_only_bind(path: &Path) -> Result<Mount, String> {
        run(Command::new("mount").arg("--bind").arg(path).arg(path))?;
        let m = Mount {
            path: path.to_owned(),
        };
        run(Command::new("mount")
            .args(["-o", "remount,bind,ro"])
            .arg(path))?;
        Ok(m)
    }

    /// Remounts with `opts` (for example `ro` or `rw`).
    pub fn remount(&self, opts: &str) -> Result<(), String> {
        run(Command::new("mount")
            .args(["-o", &format!("remount,{opts}")])
            .arg(&self.path))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if run(Command::new("umount").arg(&self.path)).is_err() {
            // Busy (a file still open): detach it now, it goes once the last user closes.
            if let Err(e) = run(Command::new("umount").arg("-l").arg(&self.path)) {
                eprintln!("could not unmount {}: {e}", self.path.display());
            }
        }
    }
}

/// A small deterministic hash (FNV-1a) for deriving test data from names.
pub fn fnv(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A payload derived from an id, so that a record read back can be checked on its own:
/// 0 to 600 bytes of a pattern seeded by the id.
pub fn payload_for(id: &str) -> Vec<u8> {
    let h = fnv(id.as_bytes());
    let len = (h % 601) as usize;
    let mut out = Vec::with_capacity(len + id.len());
    out.extend_from_slice(id.as_bytes());
    let mut x = h | 1;
    for _ in 0..len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.push(x as u8);
    }
    out
}

/// Serialises the tests of one test binary that start processes (`mount`, `umount`) or
/// open journals: a process started while another thread holds a journal open inherits
/// the journal's lock between fork and exec, which would make that test's next open fail
/// with `Error::Locked` for a moment.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
