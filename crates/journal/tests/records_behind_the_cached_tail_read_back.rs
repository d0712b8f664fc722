//! The journal drops bytes more than 16 MiB behind the end from the page cache (after each
//! sync with `always`; every 8 MiB written with `os`), and a sealed segment whole once the
//! next holds 16 MiB. That is advice to the kernel, not a change to the file: every record
//! written before, in the active segment and in the sealed ones, reads back intact, while
//! writing and after reopening.

use bytes::Bytes;
use switchyard_journal::file::FileJournal;
use switchyard_journal::{Durability, Journal, Record, TopicConfig, TopicName};

fn payload(i: usize) -> Bytes {
    // 4 KiB, different for every record, so a page read back from the wrong place shows.
    let mut p = vec![0u8; 4096];
    for (k, b) in p.iter_mut().enumerate() {
        *b = (i.wrapping_mul(31) ^ k.wrapping_mul(7)) as u8;
    }
    Bytes::from(p)
}

async fn check_all(j: &FileJournal, topic: &TopicName, n: usize) {
    let stored = switchyard_journal::conformance::read_all(j, topic, 0).await;
    assert_eq!(stored.len(), n);
    for (i, r) in stored.iter().enumerate() {
        assert_eq!(r.offset, i as u64);
        assert_eq!(r.id.as_deref(), Some(format!("r{i}").as_str()));
        assert!(r.payload == payload(i), "record {i} changed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_behind_the_cached_tail_read_back_after_syncs() {
    write_and_read_back(Durability::Always).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_behind_the_cached_tail_read_back_without_syncs() {
    write_and_read_back(Durability::Os).await;
}

async fn write_and_read_back(durability: Durability) {
    let dir = tempfile::tempdir().expect("tempdir");
    let topic = TopicName::new("trim.v1").expect("topic");
    let j = FileJournal::open(dir.path()).expect("open");
    let config = TopicConfig {
        durability,
        // Two rolls: the first segment is dropped whole, the second from its start.
        segment_bytes: 32 << 20,
        ..TopicConfig::default()
    };
    j.create_topic(&topic, config).await.expect("create");
    // ~72 MiB in batches of 64 records (each batch one sync with `always`).
    let n = 18_000;
    for start in (0..n).step_by(64) {
        let batch = (start..(start + 64).min(n))
            .map(|i| Record::new(payload(i)).with_id(format!("r{i}")))
            .collect();
        j.append(&topic, 0, batch, None).await.expect("append");
    }
    let info = j.describe_topic(&topic).await.expect("describe");
    assert_eq!(info.partitions[0].next_offset, n as u64);
    check_all(&j, &topic, n).await;
    j.close().await.expect("close");
    drop(j);

    let j = FileJournal::open(dir.path()).expect("reopen");
    check_all(&j, &topic, n).await;
}
