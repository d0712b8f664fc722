use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// When an append is acknowledged, relative to the disk.
///
/// Text form (TOML, JSON, CLI): `always`, `os`, or `interval(50ms)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Durability {
    /// Acknowledged only after `fdatasync`. Concurrent appenders share one sync (group commit).
    Always,
    /// Acknowledged once written to the operating system; a background `fdatasync` runs at
    /// this interval, so a power loss loses at most this much acknowledged data.
    Interval(Duration),
    /// Acknowledged once written to the operating system; synced only when a segment rolls
    /// or the journal closes. A process crash loses nothing, a power loss may.
    Os,
}

impl Durability {
    pub const MAX_INTERVAL: Duration = Duration::from_secs(3600);
}

impl fmt::Display for Durability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Durability::Always => f.write_str("always"),
            Durability::Os => f.write_str("os"),
            Durability::Interval(d) => write!(f, "interval({}ms)", d.as_millis()),
        }
    }
}

impl FromStr for Durability {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "invalid durability {s:?}: expected \"always\", \"os\" or \"interval(<N>ms)\" with 1 <= N <= 3600000"
            )
        };
        match s.trim() {
            "always" => Ok(Durability::Always),
            "os" => Ok(Durability::Os),
            other => {
                let ms = other
                    .strip_prefix("interval(")
                    .and_then(|r| r.strip_suffix("ms)"))
                    .and_then(|n| n.trim().parse::<u64>().ok())
                    .ok_or_else(bad)?;
                let d = Duration::from_millis(ms);
                if ms == 0 || d > Durability::MAX_INTERVAL {
                    return Err(bad());
                }
                Ok(Durability::Interval(d))
            }
        }
    }
}

impl serde::Serialize for Durability {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Durability {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Retention removes whole sealed segments, oldest first, never the active one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Retention {
    /// Remove a segment once its newest record is older than this (milliseconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_ms: Option<u64>,
    /// Remove the oldest segments while a partition holds more than this many bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
}

/// A topic's settings. Every field has a default; unknown fields are rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct TopicConfig {
    /// Number of partitions, 1 to 1024. Records with the same key go to the same partition.
    pub partitions: u32,
    /// When appends are acknowledged.
    pub durability: Durability,
    /// How long a record id is remembered for dedup, in milliseconds (0 disables dedup).
    pub dedup_window_ms: u64,
    /// Roll to a new segment file when the active one would exceed this many bytes.
    pub segment_bytes: u64,
    /// Retention by age and by size.
    pub retention: Retention,
    /// Write one sparse-index entry per this many bytes of log.
    pub index_interval_bytes: u32,
}

impl Default for TopicConfig {
    fn default() -> Self {
        Self {
            partitions: 1,
            durability: Durability::Always,
            dedup_window_ms: 120_000,
            segment_bytes: 64 * 1024 * 1024,
            retention: Retention::default(),
            index_interval_bytes: 4096,
        }
    }
}

/// A setting outside its allowed range. `field` is the kebab-case key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid topic setting `{field}`: {reason}")]
pub struct ConfigError {
    pub field: &'static str,
    pub reason: String,
}

impl TopicConfig {
    pub const MAX_PARTITIONS: u32 = 1024;
    pub const MIN_SEGMENT_BYTES: u64 = 4096;
    pub const MAX_SEGMENT_BYTES: u64 = 1 << 30;
    pub const MAX_DEDUP_WINDOW_MS: u64 = 7 * 24 * 3600 * 1000;
    pub const MAX_RETENTION_AGE_MS: u64 = 100 * 365 * 24 * 3600 * 1000;

    pub fn dedup_window(&self) -> Duration {
        Duration::from_millis(self.dedup_window_ms)
    }

    /// Checks every field's range; the first bad field is named.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |field, reason: String| Err(ConfigError { field, reason });
        if self.partitions == 0 || self.partitions > Self::MAX_PARTITIONS {
            return err(
                "partitions",
                format!(
                    "{} is outside 1..={}",
                    self.partitions,
                    Self::MAX_PARTITIONS
                ),
            );
        }
        if !(Self::MIN_SEGMENT_BYTES..=Self::MAX_SEGMENT_BYTES).contains(&self.segment_bytes) {
            return err(
                "segment-bytes",
                format!(
                    "{} is outside {}..={}",
                    self.segment_bytes,
                    Self::MIN_SEGMENT_BYTES,
                    Self::MAX_SEGMENT_BYTES
                ),
            );
        }
        if self.dedup_window_ms > Self::MAX_DEDUP_WINDOW_MS {
            return err(
                "dedup-window-ms",
                format!(
                    "{} exceeds 7 days ({})",
                    self.dedup_window_ms,
                    Self::MAX_DEDUP_WINDOW_MS
                ),
            );
        }
        if !(64..=1 << 20).contains(&self.index_interval_bytes) {
            return err(
                "index-interval-bytes",
                format!("{} is outside 64..=1048576", self.index_interval_bytes),
            );
        }
        if let Durability::Interval(d) = self.durability
            && (d.is_zero() || d > Durability::MAX_INTERVAL)
        {
            return err("durability", format!("interval {d:?} is outside 1ms..=1h"));
        }
        if let Some(age) = self.retention.max_age_ms
            && !(1..=Self::MAX_RETENTION_AGE_MS).contains(&age)
        {
            return err(
                "retention.max-age-ms",
                format!(
                    "{age} is outside 1..={} (100 years); omit it to keep records forever",
                    Self::MAX_RETENTION_AGE_MS
                ),
            );
        }
        if let Some(b) = self.retention.max_bytes
            && b < self.segment_bytes
        {
            return err(
                "retention.max-bytes",
                format!("{b} is smaller than segment-bytes ({})", self.segment_bytes),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durability_round_trips_through_text() {
        for d in [
            Durability::Always,
            Durability::Os,
            Durability::Interval(Duration::from_millis(50)),
        ] {
            assert_eq!(d.to_string().parse::<Durability>().unwrap(), d);
        }
        for bad in [
            "",
            "sometimes",
            "interval(0ms)",
            "interval(5s)",
            "interval(-1ms)",
        ] {
            assert!(bad.parse::<Durability>().is_err(), "{bad}");
        }
    }

    #[test]
    fn config_rejects_unknown_fields_and_names_bad_ones() {
        let err = serde_json::from_str::<TopicConfig>(r#"{"partitons": 3}"#).unwrap_err();
        assert!(err.to_string().contains("partitons"), "{err}");
        let cfg: TopicConfig =
            serde_json::from_str(r#"{"partitions": 0, "durability": "os"}"#).unwrap();
        assert_eq!(cfg.validate().unwrap_err().field, "partitions");
        let cfg = TopicConfig {
            segment_bytes: 10,
            ..TopicConfig::default()
        };
        assert_eq!(cfg.validate().unwrap_err().field, "segment-bytes");
        let cfg = TopicConfig {
            retention: Retention {
                max_age_ms: None,
                max_bytes: Some(1),
            },
            ..TopicConfig::default()
        };
        assert_eq!(cfg.validate().unwrap_err().field, "retention.max-bytes");
        let cfg = TopicConfig {
            retention: Retention {
                max_age_ms: Some(u64::MAX),
                max_bytes: None,
            },
            ..TopicConfig::default()
        };
        assert_eq!(cfg.validate().unwrap_err().field, "retention.max-age-ms");
        TopicConfig::default().validate().unwrap();
    }
}
