//! A write that fails (a full disk) is cut back and its keys are forgotten: a key whose
//! last record is in a sealed segment reads that record's offset again, and a key the
//! failed write introduced has no record. Needs root for the tmpfs; without it the test
//! prints why and skips, unless `SWITCHYARD_REQUIRE_SERVICES=1`.

mod common;

use bytes::Bytes;
use switchyard_journal::file::FileJournal;
use switchyard_journal::{
    Durability, Error, Expectation, Expected, Journal, Offset, Record, TopicConfig, TopicName,
};

fn expect(key: &str, expected: Expected) -> Option<Expectation> {
    Some(Expectation {
        key: Bytes::from(key.to_owned()),
        expected,
    })
}

async fn last_offset(j: &FileJournal, t: &TopicName, key: &str) -> Option<Offset> {
    let exp = expect(key, Expected::LastOffset(u64::MAX));
    match j.append(t, 0, vec![Record::new("x")], exp).await {
        Err(Error::Conflict { actual, .. }) => actual,
        other => panic!("{key}: expected a conflict, got {other:?}"),
    }
}

fn rec(key: &str) -> Record {
    Record::new(vec![b'k'; 1000]).with_key(key.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_write_leaves_every_keys_last_offset_as_it_was() {
    let _serial = common::SERIAL.lock().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let disk = match common::Mount::tmpfs(dir.path(), "256k") {
        Ok(m) => m,
        Err(e) => {
            let test = "a_failed_write_leaves_every_keys_last_offset_as_it_was";
            common::skip(test, &format!("cannot mount a tmpfs (needs root): {e}"));
            return;
        }
    };
    let jdir = disk.path().join("journal");
    let filler = disk.path().join("filler");
    std::fs::write(&filler, vec![1u8; 48 * 1024]).expect("filler");
    let j = FileJournal::open(&jdir).expect("open");
    let t = TopicName::new("keys.full").expect("topic");
    let config = TopicConfig {
        partitions: 1,
        durability: Durability::Always,
        segment_bytes: 32 * 1024,
        ..TopicConfig::default()
    };
    j.create_topic(&t, config).await.expect("create");
    let k = j
        .append(&t, 0, vec![rec("k")], expect("k", Expected::NoRecord))
        .await
        .expect("append k")[0]
        .offset;
    // Fill the disk with keyless records.
    let mut n = 0;
    loop {
        assert!(n < 10_000, "the disk never filled up");
        match j
            .append(&t, 0, vec![Record::new(vec![b'f'; 1000])], None)
            .await
        {
            Ok(_) => n += 1,
            Err(_) => break,
        }
    }
    let segs = common::segments(&common::partition_dir(&jdir, t.as_str(), 0));
    assert!(segs.len() >= 2, "k's segment was sealed: {segs:?}");
    assert_eq!(last_offset(&j, &t, "k").await, Some(k));

    // The expectation holds, so the batch is placed; its write fails.
    let failed = j
        .append(
            &t,
            0,
            vec![rec("k"), rec("fresh")],
            expect("k", Expected::LastOffset(k)),
        )
        .await;
    match failed {
        Err(Error::Io { source, .. }) => assert_eq!(
            source.kind(),
            std::io::ErrorKind::StorageFull,
            "the write failed for lack of space: {source}"
        ),
        other => panic!("expected a failed write, got {other:?}"),
    }
    assert_eq!(
        last_offset(&j, &t, "k").await,
        Some(k),
        "k: as before the failed write"
    );
    assert_eq!(
        last_offset(&j, &t, "fresh").await,
        None,
        "fresh: never written"
    );

    std::fs::remove_file(&filler).expect("free space");
    let a = j
        .append(
            &t,
            0,
            vec![rec("k"), rec("fresh")],
            expect("k", Expected::LastOffset(k)),
        )
        .await
        .expect("the same append, with space");
    assert_eq!(last_offset(&j, &t, "k").await, Some(a[0].offset));
    assert_eq!(last_offset(&j, &t, "fresh").await, Some(a[1].offset));
    j.close().await.expect("close");
    drop(j);
    drop(disk);
}
