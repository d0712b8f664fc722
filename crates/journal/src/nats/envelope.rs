//! A record's id, key and headers, carried in one NATS header next to the payload.
//!
//! NATS headers are an unordered map of text values; a record's headers are an ordered list
//! of byte values with repeats, and its key is bytes. So the record keeps its payload as the
//! message data (what any NATS client reads) and puts id, key and headers, length-prefixed,
//! base64url-encoded, in the `Sy-Record` header. A message without it is a record with no
//! id, key or headers.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;

pub const HEADER: &str = "Sy-Record";
const VERSION: u8 = 1;
const HAS_ID: u8 = 1;
const HAS_KEY: u8 = 2;

/// What the envelope holds.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Meta {
    pub id: Option<String>,
    pub key: Option<Bytes>,
    pub headers: Vec<(String, Bytes)>,
}

/// The header value for a record, or `None` when it has no id, key or headers.
pub fn encode(id: Option<&str>, key: Option<&[u8]>, headers: &[(String, Bytes)]) -> Option<String> {
    if id.is_none() && key.is_none() && headers.is_empty() {
        return None;
    }
    let mut buf = vec![VERSION, 0];
    if let Some(id) = id {
        buf[1] |= HAS_ID;
        put(&mut buf, id.as_bytes());
    }
    if let Some(key) = key {
        buf[1] |= HAS_KEY;
        put(&mut buf, key);
    }
    buf.extend_from_slice(&(headers.len() as u32).to_le_bytes());
    for (name, value) in headers {
        put(&mut buf, name.as_bytes());
        put(&mut buf, value);
    }
    Some(URL_SAFE_NO_PAD.encode(buf))
}

fn put(buf: &mut Vec<u8>, bytes: &[u8]) {
    buf.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    buf.extend_from_slice(bytes);
}

/// Decodes a header value; the error says what is wrong with it.
pub fn decode(value: &str) -> Result<Meta, String> {
    let raw = URL_SAFE_NO_PAD
        .decode(value)
        .map_err(|e| format!("{HEADER} is not base64url: {e}"))?;
    let mut r = Reader { raw: &raw, at: 0 };
    let version = r.byte()?;
    if version != VERSION {
        return Err(format!("{HEADER} has unknown version {version}"));
    }
    let flags = r.byte()?;
    if flags & !(HAS_ID | HAS_KEY) != 0 {
        return Err(format!("{HEADER} has unknown flags {flags:#x}"));
    }
    let mut meta = Meta::default();
    if flags & HAS_ID != 0 {
        let id = r.chunk()?;
        meta.id = Some(
            String::from_utf8(id.to_vec()).map_err(|_| format!("{HEADER}: the id is not UTF-8"))?,
        );
    }
    if flags & HAS_KEY != 0 {
        meta.key = Some(Bytes::copy_from_slice(r.chunk()?));
    }
    let count = r.u32()? as usize;
    // Each header takes at least 8 bytes: a count beyond that is damage, not a reason to
    // allocate.
    if count > (raw.len() - r.at) / 8 {
        return Err(format!(
            "{HEADER} claims {count} headers in {} bytes",
            raw.len()
        ));
    }
    for _ in 0..count {
        let name = String::from_utf8(r.chunk()?.to_vec())
            .map_err(|_| format!("{HEADER}: a header name is not UTF-8"))?;
        let value = Bytes::copy_from_slice(r.chunk()?);
        meta.headers.push((name, value));
    }
    if r.at != raw.len() {
        return Err(format!("{HEADER} has {} trailing bytes", raw.len() - r.at));
    }
    Ok(meta)
}

struct Reader<'a> {
    raw: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&end| end <= self.raw.len())
            .ok_or_else(|| format!("{HEADER} is cut short at byte {}", self.at))?;
        let out = &self.raw[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn byte(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn chunk(&mut self) -> Result<&'a [u8], String> {
        let n = self.u32()? as usize;
        self.take(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_shape() {
        assert_eq!(encode(None, None, &[]), None);
        let headers = vec![
            ("x-dup".to_string(), Bytes::from("1")),
            ("x-dup".to_string(), Bytes::from("2")),
            ("x-bin".to_string(), Bytes::from_static(&[0, 255, 0])),
            ("x-empty".to_string(), Bytes::new()),
        ];
        for (id, key) in [
            (Some("id-ü"), Some(&b"\0key"[..])),
            (None, Some(&b""[..])),
            (Some(""), None),
        ] {
            let v = encode(id, key, &headers).expect("something to encode");
            let m = decode(&v).expect("decodes");
            assert_eq!(m.id.as_deref(), id);
            assert_eq!(m.key.as_deref(), key);
            assert_eq!(m.headers, headers);
        }
    }

    #[test]
    fn damage_is_an_error_not_a_panic() {
        let good =
            encode(Some("id"), Some(b"k"), &[("a".into(), Bytes::from("b"))]).expect("encoded");
        let raw = URL_SAFE_NO_PAD.decode(&good).expect("b64");
        for cut in 0..raw.len() {
            assert!(
                decode(&URL_SAFE_NO_PAD.encode(&raw[..cut])).is_err(),
                "cut at {cut}"
            );
        }
        let mut longer = raw.clone();
        longer.push(0);
        assert!(decode(&URL_SAFE_NO_PAD.encode(&longer)).is_err());
        let mut huge_count = vec![VERSION, 0];
        huge_count.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode(&URL_SAFE_NO_PAD.encode(&huge_count)).is_err());
        assert!(decode("not base64 !").is_err());
        let mut bad_version = raw.clone();
        bad_version[0] = 9;
        assert!(decode(&URL_SAFE_NO_PAD.encode(&bad_version)).is_err());
    }
}
