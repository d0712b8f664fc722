//! The on-disk frame of a batch, and a scanner over a segment file.
//!
//! ```text
//! batch frame (little-endian):
//!   u32 len        bytes after this field
//!   u32 crc32c     of every byte after this field
//!   u64 base       offset of the first record; record i has offset base + i
//!   i64 timestamp  milliseconds since the Unix epoch, shared by every record of the batch
//!   u32 count      number of records
//!   u8  version    1
//!   record * count:
//!     u16 id_len   (0xFFFF = no id)   id bytes (UTF-8)
//!     u16 key_len  (0xFFFF = no key)  key bytes
//!     u16 headers  then per header: u16 name_len, name (UTF-8), u32 value_len, value
//!     u32 payload_len, payload
//! ```
//!
//! One frame is one append call, so a batch is atomic: after a crash it is either whole
//! (length and CRC check out) or it is cut off and recovery truncates it.

use bytes::{Bytes, BytesMut};
use std::fs::File;
use std::os::unix::fs::FileExt;
use switchyard_types::{Record, StoredRecord, Timestamp};

pub(crate) const FRAME_HEADER_LEN: usize = 29;
const VERSION: u8 = 1;
const ABSENT: u16 = u16::MAX;

/// Limits that keep a hostile or corrupt length from making us allocate without bound.
pub(crate) const MAX_ID_LEN: usize = 1024;
pub(crate) const MAX_KEY_LEN: usize = 1024;
pub(crate) const MAX_HEADER_NAME_LEN: usize = 256;
pub(crate) const MAX_HEADERS: usize = 256;
pub(crate) const MAX_FRAME_LEN: usize = 64 << 20;

/// The encoded size of a record inside a frame.
pub(crate) fn record_len(r: &Record) -> usize {
    2 + r.id.as_ref().map_or(0, |s| s.len())
        + 2
        + r.key.as_ref().map_or(0, |k| k.len())
        + 2
        + r.headers
            .iter()
            .map(|(n, v)| 2 + n.len() + 4 + v.len())
            .sum::<usize>()
        + 4
        + r.payload.len()
}

/// Checks one record against the frame's limits and returns its encoded size; the error
/// names the bad part.
pub(crate) fn validate_record(r: &Record) -> Result<usize, String> {
    if let Some(id) = &r.id {
        if id.is_empty() {
            return Err("id must not be empty (omit it to skip dedup)".into());
        }
        if id.len() > MAX_ID_LEN {
            return Err(format!("id is {} bytes, more than {MAX_ID_LEN}", id.len()));
        }
    }
    if let Some(k) = &r.key
        && k.len() > MAX_KEY_LEN
    {
        return Err(format!("key is {} bytes, more than {MAX_KEY_LEN}", k.len()));
    }
    if r.headers.len() > MAX_HEADERS {
        return Err(format!(
            "{} headers, more than {MAX_HEADERS}",
            r.headers.len()
        ));
    }
    for (name, _) in &r.headers {
        if name.is_empty() || name.len() > MAX_HEADER_NAME_LEN {
            return Err(format!(
                "header name {name:?} must be 1 to {MAX_HEADER_NAME_LEN} bytes"
            ));
        }
    }
    let len = record_len(r);
    if len + FRAME_HEADER_LEN > MAX_FRAME_LEN {
        return Err(format!("record is larger than {MAX_FRAME_LEN} bytes"));
    }
    Ok(len)
}

/// Appends one frame holding `records` to `buf`. Records must have passed
/// [`validate_record`] and fit [`MAX_FRAME_LEN`] together.
pub(crate) fn encode_frame<'a>(
    buf: &mut Vec<u8>,
    base: u64,
    timestamp: Timestamp,
    records: impl ExactSizeIterator<Item = &'a Record>,
    body_len: usize,
) {
    let start = buf.len();
    let len = (FRAME_HEADER_LEN - 4 + body_len) as u32;
    buf.reserve(FRAME_HEADER_LEN + body_len);
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&[0; 4]);
    buf.extend_from_slice(&base.to_le_bytes());
    buf.extend_from_slice(&timestamp.0.to_le_bytes());
    buf.extend_from_slice(&(records.len() as u32).to_le_bytes());
    buf.push(VERSION);
    for r in records {
        put_opt(buf, r.id.as_ref().map(|s| s.as_bytes()));
        put_opt(buf, r.key.as_deref());
        buf.extend_from_slice(&(r.headers.len() as u16).to_le_bytes());
        for (n, v) in &r.headers {
            buf.extend_from_slice(&(n.len() as u16).to_le_bytes());
            buf.extend_from_slice(n.as_bytes());
            buf.extend_from_slice(&(v.len() as u32).to_le_bytes());
            buf.extend_from_slice(v);
        }
        buf.extend_from_slice(&(r.payload.len() as u32).to_le_bytes());
        buf.extend_from_slice(&r.payload);
    }
    debug_assert_eq!(buf.len() - start, FRAME_HEADER_LEN + body_len);
    let crc = crc32c::crc32c(&buf[start + 8..]);
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

fn put_opt(buf: &mut Vec<u8>, v: Option<&[u8]>) {
    match v {
        None => buf.extend_from_slice(&ABSENT.to_le_bytes()),
        Some(b) => {
            buf.extend_from_slice(&(b.len() as u16).to_le_bytes());
            buf.extend_from_slice(b);
        }
    }
}

/// A frame's fixed header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FrameHeader {
    pub base: u64,
    pub timestamp: Timestamp,
    pub count: u32,
    /// Total bytes of the frame, length field included.
    pub frame_len: usize,
}

impl FrameHeader {
    pub fn next_offset(&self) -> u64 {
        self.base + u64::from(self.count)
    }
}

/// A frame found by the scanner.
#[derive(Debug)]
pub(crate) struct Frame {
    pub position: u64,
    pub header: FrameHeader,
    /// The whole frame, so records can be sliced out without copying.
    pub bytes: Bytes,
}

impl Frame {
    /// Decodes the records whose offsets are in `from..until`, appending to `out`.
    /// The CRC has already been checked; a malformed body is still an error, not a panic.
    pub fn decode_into(
        &self,
        from: u64,
        until: u64,
        out: &mut Vec<StoredRecord>,
    ) -> Result<(), String> {
        self.walk(|offset, r| {
            if offset < from || offset >= until {
                return Ok(());
            }
            let id = match r.id {
                None => None,
                Some(b) => Some(
                    String::from_utf8(b.to_vec())
                        .map_err(|_| "record id is not UTF-8".to_string())?,
                ),
            };
            let headers = r
                .headers
                .into_iter()
                .map(|(n, v)| {
                    String::from_utf8(n.to_vec())
                        .map(|n| (n, v))
                        .map_err(|_| "header name is not UTF-8".to_string())
                })
                .collect::<Result<Vec<_>, _>>()?;
            out.push(StoredRecord {
                offset,
                timestamp: self.header.timestamp,
                id,
                key: r.key,
                headers,
                payload: r.payload,
            });
            Ok(())
        })
    }

    /// The keys of every record, with their offsets (for the key index).
    pub fn keys(&self) -> Result<Vec<(u64, Bytes)>, String> {
        let mut out = Vec::new();
        self.walk(|offset, r| {
            if let Some(k) = r.key {
                out.push((offset, k));
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// Parses every record of the batch, in order, and checks that nothing trails them: the
    /// one reader of the record layout, shared by reads and by the key index.
    fn walk(
        &self,
        mut each: impl FnMut(u64, RawRecord) -> Result<(), String>,
    ) -> Result<(), String> {
        let mut cur = Cursor {
            buf: &self.bytes,
            pos: FRAME_HEADER_LEN,
        };
        for i in 0..u64::from(self.header.count) {
            let id = cur.opt()?;
            let key = cur.opt()?;
            let nheaders = cur.u16()? as usize;
            let mut headers = Vec::with_capacity(nheaders.min(MAX_HEADERS));
            for _ in 0..nheaders {
                let nlen = cur.u16()? as usize;
                let name = cur.take(nlen)?;
                let vlen = cur.u32()? as usize;
                headers.push((name, cur.take(vlen)?));
            }
            let plen = cur.u32()? as usize;
            let payload = cur.take(plen)?;
            each(
                self.header.base + i,
                RawRecord {
                    id,
                    key,
                    headers,
                    payload,
                },
            )?;
        }
        if cur.pos != self.bytes.len() {
            return Err(format!(
                "{} trailing bytes after the batch's {} records",
                self.bytes.len() - cur.pos,
                self.header.count
            ));
        }
        Ok(())
    }
}

/// One record's fields as sliced out of its frame, not yet checked for UTF-8.
struct RawRecord {
    id: Option<Bytes>,
    key: Option<Bytes>,
    headers: Vec<(Bytes, Bytes)>,
    payload: Bytes,
}

struct Cursor<'a> {
    buf: &'a Bytes,
    pos: usize,
}

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> Result<Bytes, String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        match end {
            Some(end) => {
                let b = self.buf.slice(self.pos..end);
                self.pos = end;
                Ok(b)
            }
            None => Err(format!(
                "record field of {n} bytes runs past the end of its batch"
            )),
        }
    }
    fn u16(&mut self) -> Result<u16, String> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn opt(&mut self) -> Result<Option<Bytes>, String> {
        match self.u16()? {
            ABSENT => Ok(None),
            n => self.take(n as usize).map(Some),
        }
    }
}

/// Parses a frame header from the first bytes of `buf` (at least 8 bytes for the length).
/// Returns the total frame length when the length field is plausible.
fn frame_len(buf: &[u8]) -> Result<usize, String> {
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len < FRAME_HEADER_LEN - 4 {
        return Err(format!("frame length {len} is shorter than a frame header"));
    }
    if len + 4 > MAX_FRAME_LEN {
        return Err(format!(
            "frame length {len} exceeds the maximum {MAX_FRAME_LEN}"
        ));
    }
    Ok(len + 4)
}

/// Validates a complete frame: CRC, version, header fields.
fn check_frame(frame: &[u8]) -> Result<FrameHeader, String> {
    let stored = u32::from_le_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let actual = crc32c::crc32c(&frame[8..]);
    if stored != actual {
        return Err(format!(
            "CRC mismatch (stored {stored:#010x}, computed {actual:#010x})"
        ));
    }
    let u64_at = |i: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&frame[i..i + 8]);
        a
    };
    let base = u64::from_le_bytes(u64_at(8));
    let timestamp = Timestamp(i64::from_le_bytes(u64_at(16)));
    let count = u32::from_le_bytes([frame[24], frame[25], frame[26], frame[27]]);
    if frame[28] != VERSION {
        return Err(format!("unknown batch version {}", frame[28]));
    }
    if count == 0 {
        return Err("batch with no records".into());
    }
    if base.checked_add(u64::from(count)).is_none() {
        return Err(format!(
            "batch of {count} records at offset {base} overflows the offset range"
        ));
    }
    Ok(FrameHeader {
        base,
        timestamp,
        count,
        frame_len: frame.len(),
    })
}

/// What the scanner found at a position.
#[derive(Debug)]
pub(crate) enum Scanned {
    Frame(Frame),
    /// The bytes at `position` are not a valid frame. `reason` says why.
    Invalid {
        position: u64,
        reason: String,
    },
    /// Nothing more before the scan limit.
    End,
}

/// Reads frames sequentially from a segment file with positioned reads, in chunks.
#[derive(Debug)]
pub(crate) struct Scanner<'f> {
    file: &'f File,
    /// Absolute file position of `buf[0]`.
    buf_pos: u64,
    buf: Bytes,
    /// Next frame position.
    pos: u64,
    limit: u64,
    chunk: usize,
}

impl<'f> Scanner<'f> {
    pub fn new(file: &'f File, start: u64, limit: u64, chunk: usize) -> Self {
        Self {
            file,
            buf_pos: start,
            buf: Bytes::new(),
            pos: start,
            limit,
            chunk: chunk.max(4096),
        }
    }

    /// Makes `buf` hold `[pos, pos + need)`, reading `max(need, chunk)` bytes at once.
    fn fill(&mut self, need: usize) -> std::io::Result<bool> {
        let have_from = self.pos.checked_sub(self.buf_pos).map(|o| o as usize);
        if let Some(off) = have_from
            && off + need <= self.buf.len()
        {
            return Ok(true);
        }
        let want = (self.limit - self.pos).min(need.max(self.chunk) as u64) as usize;
        if want < need {
            return Ok(false);
        }
        let mut b = BytesMut::zeroed(want);
        let mut done = 0;
        while done < want {
            match self.file.read_at(&mut b[done..], self.pos + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        b.truncate(done);
        self.buf = b.freeze();
        self.buf_pos = self.pos;
        Ok(done >= need)
    }

    pub fn next_frame(&mut self) -> std::io::Result<Scanned> {
        if self.pos >= self.limit {
            return Ok(Scanned::End);
        }
        let position = self.pos;
        if !self.fill(8)? {
            return Ok(Scanned::Invalid {
                position,
                reason: format!("{} stray bytes at the end", self.limit - self.pos),
            });
        }
        let off = (self.pos - self.buf_pos) as usize;
        let len = match frame_len(&self.buf[off..]) {
            Ok(l) => l,
            Err(reason) => return Ok(Scanned::Invalid { position, reason }),
        };
        if !self.fill(len)? {
            return Ok(Scanned::Invalid {
                position,
                reason: format!(
                    "frame of {len} bytes is cut off after {} bytes",
                    self.limit - self.pos
                ),
            });
        }
        let off = (self.pos - self.buf_pos) as usize;
        let bytes = self.buf.slice(off..off + len);
        match check_frame(&bytes) {
            Ok(header) => {
                self.pos += len as u64;
                Ok(Scanned::Frame(Frame {
                    position,
                    header,
                    bytes,
                }))
            }
            Err(reason) => Ok(Scanned::Invalid { position, reason }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn sample() -> Vec<Record> {
        vec![
            Record::new("hello")
                .with_id("a")
                .with_key("k1")
                .with_header("h", "v"),
            Record::new(Bytes::new()),
            Record::new(vec![0u8, 255, 1]).with_key(Bytes::new()),
        ]
    }

    #[test]
    fn frames_round_trip() {
        let recs = sample();
        let body: usize = recs.iter().map(record_len).sum();
        let mut buf = Vec::new();
        encode_frame(&mut buf, 7, Timestamp(42), recs.iter(), body);
        encode_frame(
            &mut buf,
            10,
            Timestamp(43),
            recs[..1].iter(),
            record_len(&recs[0]),
        );
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&buf).unwrap();
        let mut s = Scanner::new(&f, 0, buf.len() as u64, 4096);
        let Scanned::Frame(fr) = s.next_frame().unwrap() else {
            panic!()
        };
        assert_eq!(fr.header.base, 7);
        assert_eq!(fr.header.count, 3);
        let mut out = Vec::new();
        fr.decode_into(0, u64::MAX, &mut out).unwrap();
        assert_eq!(out.len(), 3);
        assert_eq!(out[0].id.as_deref(), Some("a"));
        assert_eq!(out[0].key.as_deref(), Some(&b"k1"[..]));
        assert_eq!(out[0].headers, vec![("h".to_string(), Bytes::from("v"))]);
        assert_eq!(out[1].key, None);
        assert_eq!(out[2].key.as_deref(), Some(&b""[..]));
        assert_eq!(out[2].payload, Bytes::from(vec![0u8, 255, 1]));
        assert_eq!(out[2].offset, 9);
        assert!(matches!(s.next_frame().unwrap(), Scanned::Frame(_)));
        assert!(matches!(s.next_frame().unwrap(), Scanned::End));
    }

    #[test]
    fn flipped_byte_and_cut_frame_are_invalid() {
        let recs = sample();
        let body: usize = recs.iter().map(record_len).sum();
        let mut buf = Vec::new();
        encode_frame(&mut buf, 0, Timestamp(1), recs.iter(), body);
        for i in 0..buf.len() {
            let mut bad = buf.clone();
            bad[i] ^= 0x40;
            let mut f = tempfile::tempfile().unwrap();
            f.write_all(&bad).unwrap();
            let mut s = Scanner::new(&f, 0, bad.len() as u64, 4096);
            assert!(
                matches!(s.next_frame().unwrap(), Scanned::Invalid { .. }),
                "byte {i}"
            );
        }
        for cut in 1..buf.len() {
            let mut f = tempfile::tempfile().unwrap();
            f.write_all(&buf[..cut]).unwrap();
            let mut s = Scanner::new(&f, 0, cut as u64, 4096);
            assert!(
                matches!(s.next_frame().unwrap(), Scanned::Invalid { .. }),
                "cut {cut}"
            );
        }
    }
}
