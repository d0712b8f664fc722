use std::fmt;
use std::str::FromStr;

/// A validated topic name: 1 to 200 characters from `[A-Za-z0-9._-]`, not starting with `.`
/// or `-`. Names carry their major version by convention (`orders.v1`).
///
/// The character set is what every backend can represent: a file-system directory name and,
/// with `.` escaped, a NATS subject token and stream name.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TopicName(String);

/// Why a string is not a valid [`TopicName`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid topic name {name:?}: {reason}")]
pub struct TopicNameError {
    pub name: String,
    pub reason: &'static str,
}

impl TopicName {
    pub const MAX_LEN: usize = 200;

    pub fn new(name: impl Into<String>) -> Result<Self, TopicNameError> {
        let name = name.into();
        let reason = if name.is_empty() {
            Some("must not be empty")
        } else if name.len() > Self::MAX_LEN {
            Some("must be at most 200 characters")
        } else if name.starts_with('.') || name.starts_with('-') {
            Some("must not start with '.' or '-'")
        } else if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            Some("may contain only ASCII letters, digits, '.', '_' and '-'")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(TopicNameError { name, reason }),
            None => Ok(Self(name)),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl FromStr for TopicName {
    type Err = TopicNameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl TryFrom<String> for TopicName {
    type Error = TopicNameError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl From<TopicName> for String {
    fn from(t: TopicName) -> String {
        t.0
    }
}

impl AsRef<str> for TopicName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_versioned_names() {
        for ok in ["orders.v1", "a", "payments_v2", "x-y.z_9"] {
            assert_eq!(TopicName::new(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn rejects_each_bad_shape_with_a_reason() {
        for (bad, why) in [
            ("", "empty"),
            (".hidden", "start"),
            ("-x", "start"),
            ("a/b", "only"),
            ("../etc", "start"),
            ("a b", "only"),
            ("a*", "only"),
            ("ü", "only"),
        ] {
            let err = TopicName::new(bad).unwrap_err();
            assert!(err.reason.contains(why), "{bad:?}: {}", err.reason);
        }
        assert!(TopicName::new("x".repeat(201)).is_err());
        assert!(TopicName::new("x".repeat(200)).is_ok());
    }

    #[test]
    fn deserializing_validates() {
        assert!(serde_json::from_str::<TopicName>("\"a/b\"").is_err());
        assert_eq!(
            serde_json::from_str::<TopicName>("\"orders.v1\"")
                .unwrap()
                .as_str(),
            "orders.v1"
        );
    }
}
