//! A read that starts within the last 256 KiB of the visible active segment (bytes just
//! written, in the page cache) runs on the caller's thread; any other read goes to the
//! blocking pool. Both return the same records.

use bytes::Bytes;
use switchyard_journal::file::FileJournal;
use switchyard_journal::{Durability, Journal, ReadLimits, Record, TopicConfig, TopicName};

fn record(i: usize, size: usize) -> Record {
    Record::new(Bytes::from(vec![(i % 251) as u8; size])).with_id(format!("r{i}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_near_the_tail_run_inline_and_return_the_same_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let topic = TopicName::new("tail.v1").expect("topic");
    let j = FileJournal::open(dir.path()).expect("open");
    let config = TopicConfig {
        durability: Durability::Os,
        segment_bytes: 2 << 20,
        ..TopicConfig::default()
    };
    j.create_topic(&topic, config).await.expect("create");

    // An empty partition: nothing to scan.
    assert!(j.reads_inline(&topic, 0, 0).expect("inline?"));

    // 100 records of 1 KiB: all within the tail.
    let batch: Vec<Record> = (0..100).map(|i| record(i, 1024)).collect();
    j.append(&topic, 0, batch, None).await.expect("append");
    assert!(j.reads_inline(&topic, 0, 0).expect("inline?"));
    assert!(j.reads_inline(&topic, 0, 99).expect("inline?"));
    assert!(
        j.reads_inline(&topic, 0, 100).expect("inline?"),
        "at the end"
    );
    assert!(
        j.reads_inline(&topic, 0, u64::MAX).expect("inline?"),
        "past the end"
    );

    // 1 MiB more: the first records are now more than 256 KiB behind the end.
    for start in (100..1124).step_by(64) {
        let batch: Vec<Record> = (start..start + 64).map(|i| record(i, 1024)).collect();
        j.append(&topic, 0, batch, None).await.expect("append");
    }
    assert!(!j.reads_inline(&topic, 0, 0).expect("inline?"));
    assert!(j.reads_inline(&topic, 0, 1120).expect("inline?"));

    // Past the segment size: the old segment's records are never read inline.
    for start in (1124..2148).step_by(64) {
        let batch: Vec<Record> = (start..start + 64).map(|i| record(i, 1024)).collect();
        j.append(&topic, 0, batch, None).await.expect("append");
    }
    let info = j.describe_topic(&topic).await.expect("describe");
    assert_eq!(info.partitions[0].next_offset, 2148);
    assert!(!j.reads_inline(&topic, 0, 1000).expect("inline?"));
    assert!(j.reads_inline(&topic, 0, 2147).expect("inline?"));

    // Whichever way a read goes, it returns what was written, in order, without gaps.
    let limits = ReadLimits {
        max_records: 5000,
        max_bytes: 64 << 20,
    };
    for from in [0, 1000, 2100, 2147] {
        let got = j.read(&topic, 0, from, limits).await.expect("read");
        assert_eq!(got.next_offset, 2148, "from {from}");
        assert_eq!(got.records.len() as u64, 2148 - from, "from {from}");
        for (k, r) in got.records.iter().enumerate() {
            let i = from as usize + k;
            assert_eq!(r.offset, i as u64);
            assert_eq!(r.id.as_deref(), Some(format!("r{i}").as_str()));
            assert_eq!(r.payload, Bytes::from(vec![(i % 251) as u8; 1024]));
        }
    }
    let nothing = j
        .read(&topic, 0, 2148, limits)
        .await
        .expect("read at the end");
    assert!(nothing.records.is_empty());
    assert_eq!(nothing.next_offset, 2148);
    j.close().await.expect("close");
}
