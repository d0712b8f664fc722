//! Read-only views of a journal directory for `switchyard journal inspect` and `verify`.
//! They open files read-only, take no lock and change nothing, so they are safe on a
//! journal that a running process has open.

use super::TOPICS_DIR;
use super::format::Frame;
use super::segment::{open_for_read, parse_segment_file_name, path_of, scan_segment};
use super::sidecar::SealedIndex;
use super::topic::read_topic_file;
use crate::{Error, Result};
use std::fs::File;
use std::path::{Path, PathBuf};
use switchyard_types::{Timestamp, TopicConfig};

#[derive(Clone, Debug, serde::Serialize)]
pub struct JournalReport {
    pub dir: PathBuf,
    pub topics: Vec<TopicReport>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct TopicReport {
    pub name: String,
    pub config: TopicConfig,
    pub partitions: Vec<PartitionReport>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct PartitionReport {
    pub partition: u32,
    pub first_offset: u64,
    pub next_offset: u64,
    pub bytes: u64,
    pub segments: Vec<SegmentReport>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct SegmentReport {
    pub file: PathBuf,
    pub base_offset: u64,
    pub next_offset: u64,
    pub bytes: u64,
    pub records: u64,
    pub first_timestamp: Option<Timestamp>,
    pub last_timestamp: Option<Timestamp>,
    pub sealed: bool,
    /// Whether the `.index` sidecar is present and matches the log.
    pub index_ok: bool,
}

/// One corrupt spot: a record that would never be returned as data.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Problem {
    pub topic: String,
    pub partition: u32,
    pub file: PathBuf,
    pub offset: u64,
    pub position: u64,
    pub reason: String,
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct VerifyReport {
    pub segments_checked: u64,
    pub batches_checked: u64,
    pub records_checked: u64,
    pub bytes_checked: u64,
    /// Corruption: CRC mismatches, cut-off or out-of-sequence batches in sealed segments.
    pub problems: Vec<Problem>,
    /// An invalid tail of an active segment: bytes of an append that was never acknowledged
    /// (a crash mid-write). The next open truncates them; this is not corruption.
    pub torn_tails: Vec<Problem>,
}

impl VerifyReport {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

struct PartitionDir {
    topic: String,
    partition: u32,
    dir: PathBuf,
    bases: Vec<u64>,
}

fn walk(dir: &Path) -> Result<Vec<(String, TopicConfig, Vec<PartitionDir>)>> {
    if !dir.is_dir() {
        return Err(Error::io(
            "open journal",
            dir,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such directory"),
        ));
    }
    let topics_dir = dir.join(TOPICS_DIR);
    if !topics_dir.is_dir() {
        return Err(Error::io(
            "open journal",
            dir,
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "not a Switchyard journal (no topics/ directory)",
            ),
        ));
    }
    let mut topic_dirs: Vec<PathBuf> = std::fs::read_dir(&topics_dir)
        .map_err(|e| Error::io("list", &topics_dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_dir()
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    topic_dirs.sort();
    let mut out = Vec::new();
    for tdir in topic_dirs {
        let tf = read_topic_file(&tdir)?;
        let mut parts = Vec::new();
        for p in 0..tf.config.partitions {
            let pdir = tdir.join(p.to_string());
            let mut bases: Vec<u64> = match std::fs::read_dir(&pdir) {
                Ok(rd) => rd
                    .filter_map(|e| e.ok())
                    .filter_map(|e| parse_segment_file_name(&e.file_name().to_string_lossy()))
                    .collect(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                Err(e) => return Err(Error::io("list", &pdir, e)),
            };
            bases.sort_unstable();
            parts.push(PartitionDir {
                topic: tf.name.to_string(),
                partition: p,
                dir: pdir,
                bases,
            });
        }
        out.push((tf.name.to_string(), tf.config, parts));
    }
    Ok(out)
}

fn first_timestamp(file: &File, len: u64) -> Option<Timestamp> {
    let mut s = super::format::Scanner::new(file, 0, len, 4096);
    match s.next_frame() {
        Ok(super::format::Scanned::Frame(f)) => Some(f.header.timestamp),
        _ => None,
    }
}

/// Topics, partitions, offsets, segments and sizes. Uses the `.index` sidecars where they
/// are valid and scans the log where they are not.
pub fn inspect(dir: &Path) -> Result<JournalReport> {
    let mut topics = Vec::new();
    for (name, config, parts) in walk(dir)? {
        let mut partitions = Vec::new();
        for p in parts {
            let mut segments = Vec::new();
            for (i, &base) in p.bases.iter().enumerate() {
                let path = path_of(&p.dir, base);
                let (file, bytes) = open_for_read(&path)?;
                let sealed = i + 1 < p.bases.len();
                let index = SealedIndex::open(&path, base, bytes);
                let (next_offset, last_ts) = match (&index, sealed) {
                    (Some(ix), true) => (ix.summary.next_offset, ix.summary.max_timestamp),
                    _ => {
                        let s = scan_segment(&file, base, bytes, u64::MAX, |_| {})
                            .map_err(|e| Error::io("read", &path, e))?;
                        (s.next_offset, s.max_ts)
                    }
                };
                segments.push(SegmentReport {
                    file: path,
                    base_offset: base,
                    next_offset,
                    bytes,
                    records: next_offset - base,
                    first_timestamp: first_timestamp(&file, bytes),
                    last_timestamp: last_ts.map(Timestamp),
                    sealed,
                    index_ok: sealed && index.is_some(),
                });
            }
            let first_offset = segments.first().map_or(0, |s| s.base_offset);
            let next_offset = segments.last().map_or(0, |s| s.next_offset);
            partitions.push(PartitionReport {
                partition: p.partition,
                first_offset,
                next_offset,
                bytes: segments.iter().map(|s| s.bytes).sum(),
                segments,
            });
        }
        topics.push(TopicReport {
            name,
            config,
            partitions,
        });
    }
    Ok(JournalReport {
        dir: dir.to_path_buf(),
        topics,
    })
}

/// Checks every frame's CRC and every record's structure, and that offsets run on from one
/// segment to the next.
pub fn verify(dir: &Path) -> Result<VerifyReport> {
    let mut report = VerifyReport::default();
    for (_, _, parts) in walk(dir)? {
        for p in parts {
            for (i, &base) in p.bases.iter().enumerate() {
                let path = path_of(&p.dir, base);
                let (file, len) = open_for_read(&path)?;
                let sealed = i + 1 < p.bases.len();
                let mut structure: Option<(u64, u64, String)> = None;
                let mut batches = 0u64;
                let mut records = 0u64;
                let scan = scan_segment(&file, base, len, u64::MAX, |f: &Frame| {
                    batches += 1;
                    records += u64::from(f.header.count);
                    if structure.is_none() {
                        let mut sink = Vec::new();
                        if let Err(reason) = f.decode_into(0, u64::MAX, &mut sink) {
                            structure = Some((f.header.base, f.position, reason));
                        }
                    }
                })
                .map_err(|e| Error::io("read", &path, e))?;
                report.segments_checked += 1;
                report.batches_checked += batches;
                report.records_checked += records;
                report.bytes_checked += scan.valid_len;
                let problem = |offset, position, reason: String| Problem {
                    topic: p.topic.clone(),
                    partition: p.partition,
                    file: path.clone(),
                    offset,
                    position,
                    reason,
                };
                if let Some((offset, position, reason)) = structure {
                    report.problems.push(problem(offset, position, reason));
                }
                match scan.invalid {
                    Some((position, offset, reason)) if sealed => {
                        report.problems.push(problem(offset, position, reason));
                    }
                    Some((position, offset, reason)) => {
                        // Valid batches after the bad bytes: damage, not a torn write.
                        let damaged = super::segment::resync_end(&file, position, len, offset)
                            .map_err(|e| Error::io("read", &path, e))?
                            .is_some();
                        if damaged {
                            report.problems.push(problem(offset, position, reason));
                        } else {
                            report.torn_tails.push(problem(offset, position, reason));
                        }
                    }
                    None if sealed && scan.next_offset != p.bases[i + 1] => {
                        report.problems.push(problem(
                            scan.next_offset,
                            scan.valid_len,
                            format!(
                                "segment ends at offset {} but the next segment starts at {}",
                                scan.next_offset,
                                p.bases[i + 1]
                            ),
                        ));
                    }
                    None => {}
                }
            }
        }
    }
    Ok(report)
}
