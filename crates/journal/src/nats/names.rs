//! How topics, partitions, keys and record ids are named in JetStream.
//!
//! A topic is one stream, `SY_<topic>` with `.` escaped as `~` (stream names cannot hold
//! `.`; topic names cannot hold `~`, so the escape is reversible). A record of partition `p`
//! with key `k` is published to `sy.<topic>.<p>.<key-token>`: subjects are tokens and keys
//! are bytes, so the token is the lowercase hex of xxh3-64 of the key, or `_` without one.

use switchyard_types::{Partition, TopicName};
use xxhash_rust::xxh3::{xxh3_64, xxh3_128};

const STREAM_PREFIX: &str = "SY_";
const SUBJECT_PREFIX: &str = "sy.";

fn escaped(topic: &TopicName) -> String {
    topic.as_str().replace('.', "~")
}

/// The stream that holds `topic`.
pub fn stream(topic: &TopicName) -> String {
    format!("{STREAM_PREFIX}{}", escaped(topic))
}

/// The topic a stream holds, when the stream is one of ours.
pub fn topic_of_stream(stream: &str) -> Option<TopicName> {
    let escaped = stream.strip_prefix(STREAM_PREFIX)?;
    TopicName::new(escaped.replace('~', ".")).ok()
}

/// The stream's subject filter: every partition and key of the topic.
pub fn all_subjects(topic: &TopicName) -> String {
    format!("{SUBJECT_PREFIX}{}.>", escaped(topic))
}

/// Every subject of one partition.
pub fn partition_filter(topic: &TopicName, partition: Partition) -> String {
    format!("{SUBJECT_PREFIX}{}.{partition}.>", escaped(topic))
}

/// The subject of a record of `partition` with `key`.
pub fn record_subject(topic: &TopicName, partition: Partition, key: Option<&[u8]>) -> String {
    format!(
        "{SUBJECT_PREFIX}{}.{partition}.{}",
        escaped(topic),
        key_token(key)
    )
}

/// `key`'s subject token.
pub fn key_token(key: Option<&[u8]>) -> String {
    match key {
        Some(k) => format!("{:016x}", xxh3_64(k)),
        None => "_".to_string(),
    }
}

/// The partition a stored message's subject names, if it is one of ours.
pub fn partition_of_subject(subject: &str) -> Option<Partition> {
    let mut tokens = subject.rsplit('.');
    let _key = tokens.next()?;
    tokens.next()?.parse().ok()
}

/// The `Nats-Msg-Id` of a record id: the id itself when it is a plain header value (1 to
/// 128 visible ASCII characters), else `sy-h:` and the hex of its xxh3-128, so any id
/// (spaces, line breaks, non-ASCII) dedups and never breaks the protocol.
pub fn msg_id(id: &str) -> String {
    let plain = (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic());
    if plain {
        id.to_string()
    } else {
        format!("sy-h:{:032x}", xxh3_128(id.as_bytes()))
    }
}

/// An expected last message id that [`msg_id`] never produces (it holds a space): a probe
/// carrying it is never stored, but the server answers a duplicate id before checking it.
pub const IMPOSSIBLE_MSG_ID: &str = "switchyard probe";

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> TopicName {
        TopicName::new(s).expect("topic")
    }

    #[test]
    fn names_round_trip_and_escape_dots() {
        let topic = t("orders.v1");
        assert_eq!(stream(&topic), "SY_orders~v1");
        assert_eq!(topic_of_stream("SY_orders~v1"), Some(topic.clone()));
        assert_eq!(topic_of_stream("OTHER"), None);
        assert_eq!(topic_of_stream("SY_bad/name"), None);
        assert_eq!(all_subjects(&topic), "sy.orders~v1.>");
        assert_eq!(partition_filter(&topic, 3), "sy.orders~v1.3.>");
        let s = record_subject(&topic, 7, Some(b"k"));
        assert!(s.starts_with("sy.orders~v1.7.") && s.len() == "sy.orders~v1.7.".len() + 16);
        assert_eq!(partition_of_subject(&s), Some(7));
        assert_eq!(record_subject(&topic, 0, None), "sy.orders~v1.0._");
        assert_eq!(partition_of_subject("sy.orders~v1.0._"), Some(0));
        assert_eq!(partition_of_subject("nonsense"), None);
        assert_ne!(key_token(Some(b"")), key_token(None));
    }

    #[test]
    fn msg_ids_are_plain_or_hashed_and_never_the_probe() {
        assert_eq!(msg_id("order-1"), "order-1");
        for odd in ["", "with space", "line\nbreak", "ü", &"x".repeat(129)] {
            let m = msg_id(odd);
            assert!(
                m.starts_with("sy-h:") && m.len() == 5 + 32,
                "{odd:?} -> {m}"
            );
        }
        assert_ne!(msg_id("a b"), msg_id("a  b"));
        assert_ne!(msg_id(IMPOSSIBLE_MSG_ID), IMPOSSIBLE_MSG_ID);
    }
}
