//! Where a read or a stream starts, and the resume position a stream hands out.
//!
//! A position lists, for each partition in order, the offset to continue from, joined by
//! dots: `57` on a one-partition topic, `12.0.57` on three. Each streamed event's `id:` is
//! the position just after it, so `Last-Event-ID` (or `from=`) resumes exactly there.

use crate::problem::Problem;
use std::sync::Arc;
use switchyard_journal::{Journal, Offset, Partition, Timestamp, TopicInfo, TopicName};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Position(pub Vec<Offset>);

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, o) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            write!(f, "{o}")?;
        }
        Ok(())
    }
}

/// A `from` as the client wrote it, before the topic is known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum From {
    Earliest,
    Latest,
    /// One offset: for the given partition, or for a one-partition topic.
    Offset(Offset),
    Position(Vec<Offset>),
    Time(Timestamp),
}

impl From {
    pub fn parse(s: &str) -> Result<Self, Problem> {
        let bad = |why: &str| {
            Problem::bad_request(
                "invalid-from",
                format!(
                    "`from` {s:?} {why}; use an offset, a position like 12.0.57, an RFC 3339 \
                     time, `earliest` or `latest`"
                ),
            )
            .at("from")
        };
        match s {
            "" | "earliest" => return Ok(From::Earliest),
            "latest" => return Ok(From::Latest),
            _ => {}
        }
        if s.bytes().all(|b| b.is_ascii_digit()) {
            return s
                .parse()
                .map(From::Offset)
                .map_err(|_| bad("is out of range"));
        }
        if s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            return s
                .split('.')
                .map(|p| p.parse::<Offset>())
                .collect::<Result<Vec<_>, _>>()
                .map(From::Position)
                .map_err(|_| bad("is not a position"));
        }
        let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
            .map_err(|_| bad("is not understood"))?;
        let millis = i64::try_from(t.unix_timestamp_nanos() / 1_000_000)
            .map_err(|_| bad("is out of range"))?;
        Ok(From::Time(Timestamp(millis)))
    }

    /// The start offset of each partition in `only` (or of every partition).
    pub async fn resolve(
        &self,
        journal: &Arc<dyn Journal>,
        topic: &TopicName,
        info: &TopicInfo,
        only: Option<Partition>,
    ) -> Result<Vec<(Partition, Offset)>, Problem> {
        let partitions: Vec<Partition> = match only {
            Some(p) if p as usize >= info.partitions.len() => {
                return Err(Problem::bad_request(
                    "partition-out-of-range",
                    format!(
                        "partition {p} is out of range: topic `{topic}` has {}",
                        info.partitions.len()
                    ),
                )
                .at("partition"));
            }
            Some(p) => vec![p],
            None => (0..info.partitions.len() as Partition).collect(),
        };
        let mut out = Vec::with_capacity(partitions.len());
        for &p in &partitions {
            let offset = match self {
                From::Earliest => 0,
                From::Latest => info.partitions[p as usize].next_offset,
                From::Offset(o) if only.is_some() || info.partitions.len() == 1 => *o,
                From::Offset(_) => {
                    return Err(Problem::bad_request(
                        "invalid-from",
                        format!(
                            "topic `{topic}` has {} partitions: give `partition` with an \
                             offset, or a position with one offset per partition",
                            info.partitions.len()
                        ),
                    )
                    .at("from"));
                }
                From::Position(v) if only.is_none() && v.len() == info.partitions.len() => {
                    v[p as usize]
                }
                From::Position(v) => {
                    return Err(Problem::bad_request(
                        "invalid-from",
                        format!(
                            "the position has {} offsets; topic `{topic}` has {} partitions",
                            v.len(),
                            info.partitions.len()
                        ),
                    )
                    .at("from"));
                }
                From::Time(t) => journal.offset_for_time(topic, p, *t).await?,
            };
            out.push((p, offset));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form_and_names_the_bad_one() {
        assert_eq!(From::parse("earliest"), Ok(From::Earliest));
        assert_eq!(From::parse("latest"), Ok(From::Latest));
        assert_eq!(From::parse("75"), Ok(From::Offset(75)));
        assert_eq!(From::parse("1.0.7"), Ok(From::Position(vec![1, 0, 7])));
        assert_eq!(
            From::parse("2026-11-22T10:00:00Z"),
            Ok(From::Time(Timestamp(1_795_341_600_000)))
        );
        for bad in ["1..2", "99999999999999999999999", "tomorrow", "-1", "1.x"] {
            let p = From::parse(bad).expect_err(bad);
            assert_eq!(
                (p.code, p.pointer.as_deref()),
                ("invalid-from", Some("from"))
            );
        }
        assert_eq!(Position(vec![12, 0, 57]).to_string(), "12.0.57");
    }
}
