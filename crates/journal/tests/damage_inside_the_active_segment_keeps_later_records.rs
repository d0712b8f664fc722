//! A damaged byte inside the active segment, with acknowledged batches after it, is not a
//! torn tail: open keeps every byte (nothing acknowledged is cut off), reports the damage as
//! corruption, never hands out the later records' offsets again, and keeps accepting appends.

mod common;

use switchyard_journal::file::{FileJournal, verify};
use switchyard_journal::{Error, Journal, ReadLimits, Record, TopicConfig, TopicName};

#[tokio::test]
async fn a_flipped_byte_before_acknowledged_batches_is_corruption_not_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let topic = TopicName::new("orders.v1").unwrap();
    let j = FileJournal::open(dir.path()).unwrap();
    j.create_topic(&topic, TopicConfig::default())
        .await
        .unwrap();
    for i in 0..10 {
        let r = Record::new(format!("payload-{i}")).with_id(format!("id-{i}"));
        let a = j.append(&topic, 0, vec![r], None).await.unwrap();
        assert_eq!(a[0].offset, i);
    }
    j.close().await.unwrap();
    drop(j);

    let part = common::partition_dir(dir.path(), "orders.v1", 0);
    let segs = common::segments(&part);
    assert_eq!(segs.len(), 1, "one active segment");
    let seg = &segs[0].1;
    let frames = common::frames(seg);
    assert_eq!(frames.len(), 10);
    let before = std::fs::read(seg).unwrap();
    let mut damaged = before.clone();
    // A byte inside the first batch's records.
    damaged[(frames[0].position + 31) as usize] ^= 0x5a;
    std::fs::write(seg, &damaged).unwrap();

    let report = verify(dir.path()).unwrap();
    assert_eq!(report.problems.len(), 1, "{report:?}");
    assert_eq!(report.problems[0].offset, 0);
    assert!(report.torn_tails.is_empty(), "{report:?}");

    let j = FileJournal::open(dir.path()).unwrap();
    // Nothing was cut off: the damaged segment keeps all its bytes.
    assert_eq!(std::fs::read(seg).unwrap(), damaged);
    // The damaged record is reported, never returned.
    match j.read(&topic, 0, 0, ReadLimits::default()).await {
        Err(Error::Corrupt {
            offset, partition, ..
        }) => {
            assert_eq!((offset, partition), (0, 0));
        }
        other => panic!("expected corruption at offset 0, got {other:?}"),
    }
    // New appends go after every offset the damaged segment holds.
    let a = j
        .append(&topic, 0, vec![Record::new("after")], None)
        .await
        .unwrap();
    assert_eq!(a[0].offset, 10);
    let back = j.read(&topic, 0, 10, ReadLimits::default()).await.unwrap();
    assert_eq!(back.records.len(), 1);
    assert_eq!(&back.records[0].payload[..], b"after");
    j.close().await.unwrap();
}
