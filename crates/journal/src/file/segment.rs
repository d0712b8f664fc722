//! One segment of a partition's log: a `.log` file and what is known about it.

use super::format::{Scanned, Scanner};
use super::sidecar::{IndexEntry, SealedIndex, last_where_mem};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

/// Segment files are named for their base offset, zero-padded to 20 digits.
pub(crate) fn segment_file_name(base: u64) -> String {
    format!("{base:020}.log")
}

/// The base offset in a segment file name, if it is one.
pub(crate) fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".log")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[derive(Debug)]
pub(crate) enum SegIndex {
    /// The active segment's index (bounded by the segment's size), or a sealed segment's
    /// whose `.index` file could not be written.
    Mem(Vec<IndexEntry>),
    /// A sealed segment's validated `.index`, searched with positioned reads.
    Disk(SealedIndex),
}

#[derive(Debug)]
pub(crate) struct SegState {
    /// Bytes of valid frames written (the active segment's may not all be visible yet).
    pub len: u64,
    pub next_offset: u64,
    pub max_ts: Option<i64>,
    pub index: SegIndex,
}

#[derive(Debug)]
pub(crate) struct Segment {
    pub base: u64,
    pub path: PathBuf,
    /// Read handle; readers use positioned reads, so one handle serves all of them, and a
    /// segment removed by retention stays readable for a reader that already holds it.
    pub file: File,
    pub state: RwLock<SegState>,
}

impl Segment {
    pub fn new(base: u64, path: PathBuf, file: File, state: SegState) -> Self {
        Self {
            base,
            path,
            file,
            state: RwLock::new(state),
        }
    }

    pub fn state(&self) -> std::sync::RwLockReadGuard<'_, SegState> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn state_mut(&self) -> std::sync::RwLockWriteGuard<'_, SegState> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The position of the last indexed batch satisfying `before` (a prefix predicate), or
    /// the segment's start: scanning from there finds the wanted batch.
    pub fn seek(&self, before: impl Fn(&IndexEntry) -> bool) -> std::io::Result<(u64, u64)> {
        let st = self.state();
        let hit = match &st.index {
            SegIndex::Mem(v) => last_where_mem(v, before),
            SegIndex::Disk(ix) => ix.last_where(before)?,
        };
        let Some(e) = hit else {
            return Ok((0, self.base));
        };
        // An index is derived data: if its entry does not point at the start of the batch it
        // names, scan from the segment's start rather than report a false corruption.
        let mut h = [0u8; super::format::FRAME_HEADER_LEN];
        use std::os::unix::fs::FileExt;
        let fits = match self.file.read_exact_at(&mut h, e.position) {
            Ok(()) => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&h[8..16]);
                u64::from_le_bytes(b) == e.offset && h[28] == 1
            }
            Err(err) if err.kind() == std::io::ErrorKind::UnexpectedEof => false,
            Err(err) => return Err(err),
        };
        Ok(if fits {
            (e.position, e.offset)
        } else {
            (0, self.base)
        })
    }
}

/// What a full scan of a segment found.
#[derive(Debug, Default)]
pub(crate) struct ScanSummary {
    /// Bytes of consecutive valid frames from the start.
    pub valid_len: u64,
    pub next_offset: u64,
    pub max_ts: Option<i64>,
    pub index: Vec<IndexEntry>,
    /// The first invalid frame: its position, the offset it should have held, and why.
    pub invalid: Option<(u64, u64, String)>,
}

/// Scans a segment from the start, checking every CRC and that offsets continue from
/// `base`, building the sparse index and calling `each` for every valid frame.
pub(crate) fn scan_segment(
    file: &File,
    base: u64,
    len: u64,
    index_interval: u64,
    mut each: impl FnMut(&super::format::Frame),
) -> std::io::Result<ScanSummary> {
    let mut s = ScanSummary {
        next_offset: base,
        ..ScanSummary::default()
    };
    let mut scanner = Scanner::new(file, 0, len, 1 << 20);
    let mut since_index = index_interval;
    loop {
        match scanner.next_frame()? {
            Scanned::End => break,
            Scanned::Invalid { position, reason } => {
                s.invalid = Some((position, s.next_offset, reason));
                break;
            }
            Scanned::Frame(f) => {
                if f.header.base != s.next_offset {
                    s.invalid = Some((
                        f.position,
                        s.next_offset,
                        format!(
                            "batch starts at offset {} instead of {}",
                            f.header.base, s.next_offset
                        ),
                    ));
                    break;
                }
                if s.max_ts.is_some_and(|m| f.header.timestamp.0 < m) {
                    s.invalid = Some((
                        f.position,
                        s.next_offset,
                        "batch timestamp goes backwards".to_string(),
                    ));
                    break;
                }
                if since_index >= index_interval {
                    s.index.push(IndexEntry {
                        offset: f.header.base,
                        position: f.position,
                        timestamp: f.header.timestamp.0,
                    });
                    since_index = 0;
                }
                since_index += f.header.frame_len as u64;
                s.next_offset = f.header.next_offset();
                s.max_ts = Some(f.header.timestamp.0);
                s.valid_len = f.position + f.header.frame_len as u64;
                each(&f);
            }
        }
    }
    Ok(s)
}

/// Looks for a valid batch at any byte position in `from..len` whose base offset is at least
/// `min_base`: what a torn tail never has and a damaged byte in the middle leaves behind.
pub(crate) fn find_frame_after(
    file: &File,
    from: u64,
    len: u64,
    min_base: u64,
) -> std::io::Result<Option<super::format::Frame>> {
    use super::format::FRAME_HEADER_LEN;
    use std::os::unix::fs::FileExt;
    const CHUNK: u64 = 1 << 20;
    let mut buf = vec![0u8; CHUNK as usize + FRAME_HEADER_LEN];
    let mut start = from;
    while start + FRAME_HEADER_LEN as u64 <= len {
        let n = (len - start).min(CHUNK + FRAME_HEADER_LEN as u64) as usize;
        file.read_exact_at(&mut buf[..n], start)?;
        for i in 0..=(n - FRAME_HEADER_LEN).min(CHUNK as usize - 1) {
            let h = &buf[i..i + FRAME_HEADER_LEN];
            let frame_len = u64::from(u32::from_le_bytes([h[0], h[1], h[2], h[3]])) + 4;
            let mut b = [0u8; 8];
            b.copy_from_slice(&h[8..16]);
            let base = u64::from_le_bytes(b);
            let count = u32::from_le_bytes([h[24], h[25], h[26], h[27]]);
            let at = start + i as u64;
            // Cheap filters first; only a plausible header gets its CRC checked.
            if h[28] != 1
                || count == 0
                || frame_len < FRAME_HEADER_LEN as u64
                || at + frame_len > len
                || base < min_base
                || base - min_base > len
            {
                continue;
            }
            if let Scanned::Frame(f) = Scanner::new(file, at, len, 4096).next_frame()? {
                return Ok(Some(f));
            }
        }
        start += CHUNK;
    }
    Ok(None)
}

/// After a bad frame at `from`: if valid batches follow, the offset after the last of
/// them (following every further resynchronisation), else `None` (a torn tail).
pub(crate) fn resync_end(
    file: &File,
    from: u64,
    len: u64,
    min_base: u64,
) -> std::io::Result<Option<u64>> {
    let mut end = None;
    let mut pos = from + 1;
    let mut min_base = min_base;
    while let Some(f) = find_frame_after(file, pos, len, min_base)? {
        let mut next = f.header.next_offset();
        let mut scanner = Scanner::new(file, f.position + f.header.frame_len as u64, len, 1 << 20);
        let mut resume = len;
        loop {
            match scanner.next_frame()? {
                Scanned::Frame(g) if g.header.base == next => next = g.header.next_offset(),
                Scanned::Frame(g) => {
                    resume = g.position + 1;
                    break;
                }
                Scanned::Invalid { position, .. } => {
                    resume = position + 1;
                    break;
                }
                Scanned::End => break,
            }
        }
        end = Some(next);
        min_base = next;
        pos = resume;
    }
    Ok(end)
}

/// Opens a segment file for reading, with its length.
pub(crate) fn open_for_read(path: &Path) -> crate::Result<(File, u64)> {
    let file = File::open(path).map_err(|e| crate::Error::io("open segment", path, e))?;
    let len = file
        .metadata()
        .map_err(|e| crate::Error::io("stat", path, e))?
        .len();
    Ok((file, len))
}

pub(crate) fn path_of(dir: &Path, base: u64) -> PathBuf {
    dir.join(segment_file_name(base))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_round_trip_and_reject_others() {
        assert_eq!(segment_file_name(42), "00000000000000000042.log");
        assert_eq!(
            parse_segment_file_name("00000000000000000042.log"),
            Some(42)
        );
        for bad in [
            "42.log",
            "0000000000000000004x.log",
            "00000000000000000042.index",
            "a",
        ] {
            assert_eq!(parse_segment_file_name(bad), None, "{bad}");
        }
    }
}
