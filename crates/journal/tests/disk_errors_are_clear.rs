//! Disk trouble gives a clear error that names the file, and corrupts nothing:
//! a full disk (a small tmpfs), a read-only directory (a read-only bind mount, since the
//! tests run as root and permission bits do not stop root), and hostile files where the
//! journal expects its own (bad `topic.json`, a directory where a segment should be, ...).
//!
//! The mounts need root; without it these tests print why and skip, unless
//! `SWITCHYARD_REQUIRE_SERVICES=1`.

mod common;

use common::Mount;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use switchyard_journal::conformance::read_all;
use switchyard_journal::file::{FileJournal, verify};
use switchyard_journal::{
    Durability, Error, Journal, Offset, Record, StoredRecord, TopicConfig, TopicName,
};

fn topic(name: &str) -> TopicName {
    TopicName::new(name).expect("topic")
}

/// A tmpfs mounted on a fresh temporary directory. Field order matters: the mount goes
/// before the directory is removed.
struct SmallDisk {
    mount: Mount,
    _dir: tempfile::TempDir,
}

fn small_disk(test: &str, size: &str) -> Option<SmallDisk> {
    let dir = tempfile::tempdir().expect("tempdir");
    match Mount::tmpfs(dir.path(), size) {
        Ok(mount) => Some(SmallDisk { mount, _dir: dir }),
        Err(e) => {
            common::skip(test, &format!("cannot mount a tmpfs (needs root): {e}"));
            None
        }
    }
}

fn is_enospc(e: &Error) -> bool {
    let text = e.to_string();
    let kind = match e {
        Error::Io { source, .. } => {
            source.raw_os_error() == Some(libc::ENOSPC)
                || source.kind() == std::io::ErrorKind::StorageFull
        }
        _ => false,
    };
    kind || text.contains("No space left on device")
}

/// Fills the file system holding `path` up to the last byte.
fn fill(path: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).expect("create filler");
    let chunk = vec![0xEEu8; 4096];
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
}

/// Appending until the disk is full: a clear I/O error that says so and names the segment;
/// nothing acknowledged is lost; the failed append leaves no trace (offset, id); once space
/// is freed the partition takes appends again; the log verifies clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_a_clear_error_and_loses_nothing_acknowledged() {
    let _serial = common::SERIAL.lock().await;
    let Some(disk) = small_disk("a_full_disk_is_a_clear_error", "256k") else {
        return;
    };
    let jdir = disk.mount.path().join("journal");
    let filler = disk.mount.path().join("filler");
    std::fs::write(&filler, vec![1u8; 48 * 1024]).expect("filler");
    let j = FileJournal::open(&jdir).expect("open");
    let t = topic("full.v1");
    let config = TopicConfig {
        partitions: 1,
        durability: Durability::Always,
        segment_bytes: 64 * 1024,
        ..TopicConfig::default()
    };
    j.create_topic(&t, config).await.expect("create");

    let mut acked: Vec<(String, Offset)> = Vec::new();
    let err = loop {
        assert!(acked.len() < 10_000, "the disk never filled up");
        let id = format!("rec-{}", acked.len());
        let rec = Record::new(vec![b'x'; 1000]).with_id(&id).with_key("k");
        match j.append(&t, 0, vec![rec], None).await {
            Ok(a) => acked.push((id, a[0].offset)),
            Err(e) => break e,
        }
    };
    eprintln!("after {} acknowledged appends: {err}", acked.len());
    assert!(
        acked.len() > 50,
        "records fit before the disk filled: {}",
        acked.len()
    );
    assert!(is_enospc(&err), "the error says the disk is full: {err}");
    match &err {
        Error::Io { path, .. } => {
            assert!(
                path.starts_with(&jdir),
                "the error names a path in the journal: {err}"
            )
        }
        other => panic!("expected Error::Io, got {other:?}"),
    }
    let failed_id = format!("rec-{}", acked.len());

    // Everything acknowledged reads back; nothing of the failed append does.
    let got = read_all(&j, &t, 0).await;
    assert_eq!(
        got.len(),
        acked.len(),
        "exactly the acknowledged records are readable"
    );
    for (r, (id, o)) in got.iter().zip(&acked) {
        assert_eq!((r.offset, r.id.as_deref()), (*o, Some(id.as_str())));
        assert_eq!(r.payload.len(), 1000);
    }
    // Still full: still a clear error, not a hang or a panic.
    let again = j
        .append(&t, 0, vec![Record::new(vec![b'y'; 1000])], None)
        .await;
    match again {
        Err(e) => assert!(is_enospc(&e) || matches!(e, Error::Failed { .. }), "{e}"),
        Ok(a) => panic!("an append on a full disk succeeded: {a:?}"),
    }

    // Free space: the partition works again, at the next offset, and the failed id is new.
    std::fs::remove_file(&filler).expect("free space");
    let a = j
        .append(
            &t,
            0,
            vec![Record::new(vec![b'z'; 1000]).with_id(&failed_id)],
            None,
        )
        .await
        .unwrap_or_else(|e| panic!("append after freeing space: {e}"));
    assert_eq!(
        a[0].offset,
        acked.len() as Offset,
        "no gap where the failed append was"
    );
    assert!(!a[0].duplicate, "the failed append's id was not remembered");
    j.close().await.expect("close");
    drop(j);

    let report = verify(&jdir).expect("verify");
    assert!(
        report.is_clean(),
        "no corruption after the full disk: {report:?}"
    );
    let j = FileJournal::open(&jdir).expect("reopen");
    let got = read_all(&j, &t, 0).await;
    assert_eq!(got.len(), acked.len() + 1);
    assert_eq!(got.last().and_then(|r| r.id.clone()), Some(failed_id));
    j.close().await.expect("close");
}

/// Creating a topic on a full disk fails clearly and leaves no half-made topic behind, in
/// this process or after a reopen; with space it works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_a_topic_on_a_full_disk_leaves_nothing_behind() {
    let _serial = common::SERIAL.lock().await;
    let Some(disk) = small_disk("creating_a_topic_on_a_full_disk", "128k") else {
        return;
    };
    let jdir = disk.mount.path().join("journal");
    let filler = disk.mount.path().join("filler");
    let j = FileJournal::open(&jdir).expect("open");
    fill(&filler);
    let t = topic("nospace.v1");
    let config = TopicConfig {
        partitions: 4,
        ..TopicConfig::default()
    };
    let err = j
        .create_topic(&t, config)
        .await
        .expect_err("create_topic on a full disk");
    eprintln!("create_topic on a full disk: {err}");
    assert!(is_enospc(&err), "the error says the disk is full: {err}");
    assert!(
        matches!(&err, Error::Io { path, .. } if path.starts_with(&jdir)),
        "{err:?}"
    );
    assert!(
        j.list_topics().await.expect("list").is_empty(),
        "no half-made topic is listed"
    );
    assert!(matches!(
        j.describe_topic(&t).await,
        Err(Error::TopicNotFound(_))
    ));
    j.close().await.expect("close");
    drop(j);
    let j = FileJournal::open(&jdir).expect("reopen on a full disk");
    assert!(
        j.list_topics().await.expect("list").is_empty(),
        "no half-made topic after reopen"
    );
    drop(j);

    std::fs::remove_file(&filler).expect("free space");
    let j = FileJournal::open(&jdir).expect("reopen");
    j.create_topic(&t, config)
        .await
        .expect("create_topic with space");
    let a = j
        .append(&t, 3, vec![Record::new("fits now")], None)
        .await
        .expect("append");
    assert_eq!(a[0].offset, 0);
    j.close().await.expect("close");
}

/// Every file under `dir` but the lock, with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    common::files_with_ext(dir, &["json", "log", "index", "keys"])
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).expect("read");
            (p, bytes)
        })
        .collect()
}

async fn journal_with_records(jdir: &Path) -> Vec<StoredRecord> {
    let j = FileJournal::open(jdir).expect("open");
    let t = topic("kept.v1");
    let config = TopicConfig {
        partitions: 1,
        segment_bytes: 4096,
        durability: Durability::Os,
        ..TopicConfig::default()
    };
    j.create_topic(&t, config).await.expect("create");
    for i in 0..60 {
        j.append(
            &t,
            0,
            vec![Record::new(format!("record {i} {}", "-".repeat(100)))],
            None,
        )
        .await
        .expect("append");
    }
    let stored = read_all(&j, &t, 0).await;
    j.close().await.expect("close");
    stored
}

async fn assert_intact(jdir: &Path, stored: &[StoredRecord]) {
    let j = FileJournal::open(jdir).expect("open after the trouble");
    assert_eq!(
        read_all(&j, &topic("kept.v1"), 0).await,
        stored,
        "records intact"
    );
    j.close().await.expect("close");
    assert!(verify(jdir).expect("verify").is_clean());
}

fn assert_read_only_error(e: &Error, jdir: &Path, what: &str) {
    match e {
        Error::Io { path, source, .. } => {
            assert!(
                path.starts_with(jdir),
                "{what}: names a path in the journal: {e}"
            );
            assert!(
                source.raw_os_error() == Some(libc::EROFS)
                    || source.kind() == std::io::ErrorKind::ReadOnlyFilesystem
                    || e.to_string().contains("Read-only file system"),
                "{what}: says the file system is read-only: {e}"
            );
        }
        other => panic!("{what}: expected Error::Io, got {other:?}"),
    }
}

/// A journal directory that is read-only: open fails with an I/O error naming the lock
/// file, and nothing changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_directory_fails_to_open_clearly() {
    let _serial = common::SERIAL.lock().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let jdir = dir.path().join("journal");
    let stored = journal_with_records(&jdir).await;
    let before = snapshot(&jdir);
    {
        let _ro = match Mount::read_only_bind(&jdir) {
            Ok(m) => m,
            Err(e) => return common::skip("a_read_only_directory", &format!("bind mount: {e}")),
        };
        let err = FileJournal::open(&jdir).expect_err("open on a read-only directory");
        eprintln!("open on a read-only directory: {err}");
        assert_read_only_error(&err, &jdir, "open");
        assert!(
            err.to_string().contains(&jdir.display().to_string()),
            "{err}"
        );
        assert_eq!(snapshot(&jdir), before, "a failed open changes nothing");
    }
    assert_intact(&jdir, &stored).await;
}

/// The topics directory is read-only while the journal's own directory is not: opening a
/// journal with topics fails clearly (their segments cannot be opened for appending);
/// without topics it opens, and creating a topic fails clearly without leaving a trace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_topics_fail_clearly_and_leave_no_trace() {
    let _serial = common::SERIAL.lock().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let jdir = dir.path().join("journal");
    let stored = journal_with_records(&jdir).await;
    let before = snapshot(&jdir);
    {
        let topics = jdir.join("topics");
        let _ro = match Mount::read_only_bind(&topics) {
            Ok(m) => m,
            Err(e) => return common::skip("read_only_topics", &format!("bind mount: {e}")),
        };
        let err = FileJournal::open(&jdir).expect_err("open with read-only segments");
        eprintln!("open with read-only topics: {err}");
        assert_read_only_error(&err, &jdir, "open with a read-only topic");
        assert_eq!(snapshot(&jdir), before, "a failed open changes nothing");
    }
    assert_intact(&jdir, &stored).await;

    let empty = dir.path().join("empty");
    FileJournal::open(&empty).expect("create an empty journal");
    {
        let _ro = match Mount::read_only_bind(&empty.join("topics")) {
            Ok(m) => m,
            Err(e) => return common::skip("read_only_topics", &format!("bind mount: {e}")),
        };
        let j = FileJournal::open(&empty).expect("open a journal without topics");
        let t = topic("new.v1");
        let err = j
            .create_topic(&t, TopicConfig::default())
            .await
            .expect_err("create_topic");
        eprintln!("create_topic in a read-only topics directory: {err}");
        assert_read_only_error(&err, &empty, "create_topic");
        assert!(j.list_topics().await.expect("list").is_empty());
        assert!(matches!(
            j.append(&t, 0, vec![Record::new("x")], None).await,
            Err(Error::TopicNotFound(_))
        ));
        j.close().await.expect("close");
    }
    let j = FileJournal::open(&empty).expect("open");
    assert!(
        j.list_topics().await.expect("list").is_empty(),
        "no trace of the failed create"
    );
    j.create_topic(&topic("new.v1"), TopicConfig::default())
        .await
        .expect("create when writable");
    j.close().await.expect("close");
}

/// Files that are not what the journal wrote: open fails with an error naming the file, a
/// failed open changes nothing, and once the file is put back everything is intact.
/// Stray files the journal does not own are ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_files_are_named_in_the_error() {
    let _serial = common::SERIAL.lock().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("journal");
    let stored = journal_with_records(&src).await;
    let tdir = src.join("topics").join("kept.v1");
    let topic_json = tdir.join("topic.json");
    let segs = common::segments(&tdir.join("0"));
    assert!(segs.len() >= 3, "several segments: {segs:?}");
    let sealed = segs[1].1.clone();
    let active = segs.last().expect("segments").1.clone();
    let good_json = std::fs::read_to_string(&topic_json).expect("topic.json");

    let replace_with_dir = |p: &Path| {
        std::fs::remove_file(p).expect("remove");
        std::fs::create_dir(p).expect("mkdir");
    };
    let with_field = |key: &str, value: serde_json::Value| {
        let mut v: serde_json::Value = serde_json::from_str(&good_json).expect("json");
        v[key] = value;
        v.to_string()
    };
    let with_config_field = |key: &str, value: serde_json::Value| {
        let mut v: serde_json::Value = serde_json::from_str(&good_json).expect("json");
        v["config"][key] = value;
        v.to_string()
    };
    type Damage = Box<dyn Fn(&Path)>;
    let write = |rel: PathBuf, text: String| -> Damage {
        Box::new(move |root: &Path| std::fs::write(root.join(&rel), &text).expect("write"))
    };
    let rel = |p: &Path| p.strip_prefix(&src).expect("inside").to_path_buf();
    let cases: Vec<(&str, PathBuf, Vec<&str>, Damage)> = vec![
        (
            "topic.json is binary garbage",
            rel(&topic_json),
            vec![],
            Box::new({
                let r = rel(&topic_json);
                move |root: &Path| {
                    std::fs::write(root.join(&r), [0xFFu8, 0, 0x9C, 7, 0xC3]).expect("w")
                }
            }),
        ),
        (
            "topic.json is cut short",
            rel(&topic_json),
            vec![],
            write(
                rel(&topic_json),
                good_json[..good_json.len() / 2].to_owned(),
            ),
        ),
        (
            "topic.json is empty",
            rel(&topic_json),
            vec![],
            write(rel(&topic_json), String::new()),
        ),
        (
            "topic.json has an unknown field",
            rel(&topic_json),
            vec!["colour"],
            write(rel(&topic_json), with_field("colour", "blue".into())),
        ),
        (
            "topic.json config has an unknown field",
            rel(&topic_json),
            vec!["partitons"],
            write(rel(&topic_json), with_config_field("partitons", 3.into())),
        ),
        (
            "topic.json has an invalid config",
            rel(&topic_json),
            vec!["partitions"],
            write(rel(&topic_json), with_config_field("partitions", 0.into())),
        ),
        (
            "topic.json has a bad durability",
            rel(&topic_json),
            vec!["sometimes"],
            write(
                rel(&topic_json),
                with_config_field("durability", "sometimes".into()),
            ),
        ),
        (
            "topic.json names another topic",
            rel(&topic_json),
            vec!["other.v1"],
            write(rel(&topic_json), with_field("name", "other.v1".into())),
        ),
        (
            "topic.json has an invalid topic name",
            rel(&topic_json),
            vec![],
            write(rel(&topic_json), with_field("name", "../../etc".into())),
        ),
        (
            "topic.json is missing",
            rel(&topic_json),
            vec![],
            Box::new({
                let r = rel(&topic_json);
                move |root: &Path| std::fs::remove_file(root.join(&r)).expect("rm")
            }),
        ),
        (
            "topic.json is a directory",
            rel(&topic_json),
            vec![],
            Box::new({
                let r = rel(&topic_json);
                move |root: &Path| replace_with_dir(&root.join(&r))
            }),
        ),
        (
            "the active segment is a directory",
            rel(&active),
            vec![],
            Box::new({
                let r = rel(&active);
                move |root: &Path| replace_with_dir(&root.join(&r))
            }),
        ),
        (
            "a sealed segment is a directory",
            rel(&sealed),
            vec![],
            Box::new({
                let r = rel(&sealed);
                move |root: &Path| replace_with_dir(&root.join(&r))
            }),
        ),
        (
            "the partition directory is a file",
            rel(&tdir.join("0")),
            vec![],
            Box::new({
                let r = rel(&tdir.join("0"));
                move |root: &Path| {
                    std::fs::remove_dir_all(root.join(&r)).expect("rm");
                    std::fs::write(root.join(&r), "not a directory").expect("w");
                }
            }),
        ),
    ];

    for (what, file, mentions, damage) in cases {
        let case_dir = tempfile::tempdir().expect("tempdir");
        let copy = case_dir.path().join("journal");
        common::copy_dir(&src, &copy);
        damage(&copy);
        let before = snapshot(&copy);
        let err = match FileJournal::open(&copy) {
            Err(e) => e,
            Ok(j) => {
                let topics = j.list_topics().await;
                panic!("{what}: open succeeded (topics {topics:?}); it must fail naming the file")
            }
        };
        let text = err.to_string();
        eprintln!("{what}: {text}");
        let path = copy.join(&file);
        assert!(
            text.contains(&path.display().to_string()),
            "{what}: {text:?} names {}",
            path.display()
        );
        for m in mentions {
            assert!(text.contains(m), "{what}: {text:?} mentions {m:?}");
        }
        assert_eq!(
            snapshot(&copy),
            before,
            "{what}: a failed open changes nothing"
        );
        let again = FileJournal::open(&copy)
            .map(|_| ())
            .expect_err("fails again the same way");
        assert_eq!(again.to_string(), text, "{what}: the same error twice");
        // Put the original back: everything is there.
        let target = copy.join(&file);
        if target.is_dir() {
            std::fs::remove_dir_all(&target).expect("rm dir");
        } else if target.exists() {
            std::fs::remove_file(&target).expect("rm file");
        }
        let original = src.join(&file);
        if original.is_dir() {
            common::copy_dir(&original, &target);
        } else {
            std::fs::copy(&original, &target).expect("restore");
        }
        assert_intact(&copy, &stored).await;
    }

    // Stray files that are not the journal's are left alone and do not stop it.
    let case_dir = tempfile::tempdir().expect("tempdir");
    let copy = case_dir.path().join("journal");
    common::copy_dir(&src, &copy);
    let strays = [
        copy.join("README"),
        copy.join("topics").join("notes.txt"),
        copy.join("topics/kept.v1/notes.txt"),
        copy.join("topics/kept.v1/0/notes.txt"),
        copy.join("topics/kept.v1/0/42.log"),
    ];
    for s in &strays {
        std::fs::write(s, "not the journal's").expect("stray");
    }
    assert_intact(&copy, &stored).await;
    for s in &strays {
        assert!(s.exists(), "{} was left alone", s.display());
    }
}
