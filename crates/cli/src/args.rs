//! Argument parsers. Each returns an error that says what was expected; clap adds the name
//! of the argument (`invalid value '5x' for '--segment-bytes <SIZE>': ...`).

use std::time::Duration;
use switchyard_types::Timestamp;

/// A byte size: `4096`, `64KiB`, `64MiB`, `1GiB` (also `k`, `KB`, `M`, `MB`, `G`, `GB`; every
/// multiple is binary, 1 KiB = 1024 bytes).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad = || format!("expected a size like 4096, 64KiB, 64MiB or 1GiB, got {s:?}");
    let n: u64 = num.parse().map_err(|_| bad())?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(bad()),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// A duration: `500ms`, `30s`, `10m`, `2h`, `7d`, `1h 30m` (humantime syntax), or `0`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    if s.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("expected a duration like 500ms, 30s, 10m, 2h or 7d, got {s:?} ({e})"))
}

/// A header `NAME=VALUE` (the value may be empty and may contain `=`).
pub fn parse_header(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((name, value)) if !name.trim().is_empty() => {
            Ok((name.trim().to_string(), value.to_string()))
        }
        _ => Err(format!("expected NAME=VALUE, got {s:?}")),
    }
}

/// Where `journal read` starts in each partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum From {
    /// The oldest retained record.
    Beginning,
    /// Only records appended from now on.
    End,
    /// This offset (or the oldest retained one, if it is older).
    Offset(u64),
    /// The first record stamped at or after this time.
    Time(Timestamp),
}

/// `beginning`, `end`, an offset (`1234`), or an RFC 3339 time (`2026-11-22T10:00:00Z`,
/// `2026-11-22T12:00:00.5+02:00`).
pub fn parse_from(s: &str) -> Result<From, String> {
    let t = s.trim();
    match t {
        "beginning" | "start" => return Ok(From::Beginning),
        "end" => return Ok(From::End),
        _ => {}
    }
    if let Ok(n) = t.parse::<u64>() {
        return Ok(From::Offset(n));
    }
    let dt = time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
        .map_err(|e| {
            format!(
                "expected `beginning`, `end`, an offset (1234) or an RFC 3339 time \
                 (2026-11-22T10:00:00Z), got {s:?} ({e})"
            )
        })?;
    let ms = dt.unix_timestamp_nanos() / 1_000_000;
    let ms = i64::try_from(ms).map_err(|_| format!("time {s:?} is out of range"))?;
    Ok(From::Time(Timestamp(ms)))
}

/// A timestamp as RFC 3339 UTC with milliseconds: `2026-11-22T10:00:00.123Z`.
pub fn format_timestamp(ts: Timestamp) -> String {
    let nanos = i128::from(ts.millis()) * 1_000_000;
    match time::OffsetDateTime::from_unix_timestamp_nanos(nanos) {
        Ok(dt) => {
            let (y, mo, d) = (dt.year(), u8::from(dt.month()), dt.day());
            format!(
                "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
                dt.hour(),
                dt.minute(),
                dt.second(),
                dt.millisecond()
            )
        }
        Err(_) => format!("{}ms", ts.millis()),
    }
}

/// `1536` -> `1.5 KiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
}

/// `120000` ms -> `2m`.
pub fn human_ms(ms: u64) -> String {
    humantime::format_duration(Duration::from_millis(ms)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_size("64 MiB"), Ok(64 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert!(parse_size("").is_err());
        assert!(parse_size("12xb").is_err());
        assert!(parse_size("-1").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86400)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn headers() {
        assert_eq!(parse_header("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert_eq!(parse_header("a="), Ok(("a".into(), String::new())));
        assert!(parse_header("=b").is_err());
        assert!(parse_header("ab").is_err());
    }

    #[test]
    fn from_positions() {
        assert_eq!(parse_from("beginning"), Ok(From::Beginning));
        assert_eq!(parse_from("end"), Ok(From::End));
        assert_eq!(parse_from("42"), Ok(From::Offset(42)));
        assert_eq!(
            parse_from("1970-01-01T00:00:01.5Z"),
            Ok(From::Time(Timestamp(1500)))
        );
        assert_eq!(
            parse_from("1970-01-01T02:00:01+02:00"),
            Ok(From::Time(Timestamp(1000)))
        );
        assert!(parse_from("yesterday").is_err());
    }

    #[test]
    fn formats_timestamps() {
        assert_eq!(
            format_timestamp(Timestamp(1500)),
            "1970-01-01T00:00:01.500Z"
        );
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(10), "10 B");
        assert_eq!(human_ms(120_000), "2m");
    }
}
