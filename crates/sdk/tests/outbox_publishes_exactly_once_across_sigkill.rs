//! A child process writes rows and their events in one SQLite transaction each (the
//! transactional outbox) and is SIGKILLed: right after commits whose events were never
//! published; right after the platform took a batch but before the relay deleted it; and
//! at random moments while committing and relaying at once. A last child drains the
//! outbox. Every row then has its event in the journal exactly once (deduplicated by event
//! id), including rows whose commit the child never got to report, and the outbox is empty.

mod common;

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use switchyard_journal::{Journal, ReadLimits};
use switchyard_sdk::sqlx::{self, Sqlite};
use switchyard_sdk::{
    Backend, CloudEvent, Event, Lineage, Log, Outbox, Placed, Platform, Publisher,
};
use tokio::io::AsyncBufReadExt;

const DIR_ENV: &str = "SWITCHYARD_SDK_OUTBOX_CHILD_DIR";
const MODE_ENV: &str = "SWITCHYARD_SDK_OUTBOX_CHILD_MODE";
const CYCLE_ENV: &str = "SWITCHYARD_SDK_OUTBOX_CHILD_CYCLE";
const CHILD_TEST: &str = "outbox_child";
const TOPIC: &str = "things.v1";

#[derive(Event, Serialize, Deserialize)]
#[event(type = "thing.made", topic = "things.v1", key = thing)]
struct ThingMade {
    thing: String,
}

/// Hands the batch to the journal, says so, and then never returns: the relay is stuck
/// between the publish and the delete when the parent kills it.
struct PublishThenHang(Platform);

#[async_trait::async_trait]
impl Publisher for PublishThenHang {
    async fn publish(
        &self,
        topic: &str,
        events: Vec<CloudEvent>,
    ) -> switchyard_sdk::Result<Vec<Placed>> {
        let n = events.len();
        Publisher::publish(&self.0, topic, events).await?;
        println!("published {n}");
        std::future::pending().await
    }
}

async fn child_setup(dir: &Path) -> (Platform, Outbox<Sqlite>) {
    let journal = common::open_journal(&dir.join("journal"));
    let platform = Platform::Journal(Arc::new(journal));
    let pool = Sqlite::connect(&common::sqlite_url(dir, "service"), true)
        .await
        .expect("database");
    Sqlite::migrate(&pool).await.expect("sdk tables");
    sqlx::query("CREATE TABLE IF NOT EXISTS things (id TEXT PRIMARY KEY)")
        .execute(&pool)
        .await
        .expect("table");
    (platform, Outbox::new(pool, "/test/things"))
}

/// Commits a row and its event, then says so; forever.
async fn commit_forever(outbox: &Outbox<Sqlite>, cycle: &str) {
    let lineage = Lineage::root();
    for i in 0.. {
        let id = format!("c{cycle}-{i}");
        let mut tx = Sqlite::begin(outbox.pool()).await.expect("begin");
        sqlx::query("INSERT INTO things (id) VALUES (?)")
            .bind(&id)
            .execute(&mut *tx)
            .await
            .expect("insert");
        outbox
            .add_as(
                &mut tx,
                id.clone(),
                &lineage,
                &ThingMade { thing: id.clone() },
            )
            .await
            .expect("outbox");
        outbox.commit(tx).await.expect("commit");
        println!("committed {id}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test]
async fn outbox_child() {
    let Some(dir) = std::env::var_os(DIR_ENV) else {
        return;
    };
    let dir = Path::new(&dir);
    let mode = std::env::var(MODE_ENV).expect("mode");
    let cycle = std::env::var(CYCLE_ENV).expect("cycle");
    let (platform, outbox) = child_setup(dir).await;
    let log = Log::new("child │ ");
    match mode.as_str() {
        // Commits only: nothing is published before the kill.
        "commit" => commit_forever(&outbox, &cycle).await,
        "publish-hang" => {
            let relay = outbox.relay(Arc::new(PublishThenHang(platform)), log);
            let _ = relay.flush().await;
        }
        "both" => {
            let relay = outbox.relay(Arc::new(platform), log);
            let (_stop, stop_rx) = tokio::sync::watch::channel(false);
            tokio::spawn(relay.run(stop_rx));
            commit_forever(&outbox, &cycle).await;
        }
        "drain" => {
            let relay = outbox.relay(Arc::new(platform.clone()), log);
            relay.flush().await.expect("drain");
            if let Platform::Journal(j) = &platform {
                drop(j.list_topics().await);
            }
            println!("drained");
        }
        other => panic!("unknown mode {other}"),
    }
}

struct Child {
    child: tokio::process::Child,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

fn spawn(dir: &Path, mode: &str, cycle: u32) -> Child {
    let mut child = tokio::process::Command::new(std::env::current_exe().expect("exe"))
        .args(["--exact", CHILD_TEST, "--nocapture", "--test-threads=1"])
        .env(DIR_ENV, dir)
        .env(MODE_ENV, mode)
        .env(CYCLE_ENV, cycle.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn child");
    let lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    Child { child, lines }
}

impl Child {
    /// The next line starting with `prefix` (others are the test harness's).
    async fn until(&mut self, prefix: &str, committed: &mut BTreeSet<String>) -> String {
        loop {
            let line = tokio::time::timeout(Duration::from_secs(60), self.lines.next_line())
                .await
                .expect("the child answers in time")
                .expect("read")
                .unwrap_or_else(|| panic!("the child ended before `{prefix}`"));
            // The harness's "test outbox_child ... " may stand before the child's first line.
            let line = line.rsplit("... ").next().unwrap_or_default().to_string();
            if let Some(id) = line.strip_prefix("committed ") {
                committed.insert(id.to_string());
            }
            if line.starts_with(prefix) {
                return line;
            }
        }
    }

    async fn kill(mut self, committed: &mut BTreeSet<String>) {
        self.child.start_kill().expect("SIGKILL");
        // Lines the child printed before it died still count.
        while let Ok(Some(line)) = self.lines.next_line().await {
            let line = line.rsplit("... ").next().unwrap_or_default();
            if let Some(id) = line.strip_prefix("committed ") {
                committed.insert(id.to_string());
            }
        }
        let status = self.child.wait().await.expect("wait");
        use std::os::unix::process::ExitStatusExt as _;
        assert_eq!(status.signal(), Some(9), "killed, not exited: {status}");
    }
}

#[tokio::test]
async fn every_committed_event_is_published_exactly_once() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    {
        let journal = common::open_journal(&dir.join("journal"));
        common::create_topic(&journal, TOPIC, 2).await;
        journal.close().await.expect("close");
    }
    let mut committed = BTreeSet::new();

    // Killed after commits whose events nobody published yet.
    let mut c = spawn(dir, "commit", 0);
    for _ in 0..20 {
        c.until("committed ", &mut committed).await;
    }
    c.kill(&mut committed).await;
    let pending = count(dir, "SELECT count(*) FROM switchyard_outbox").await;
    assert!(pending >= 20, "the events wait in the outbox: {pending}");

    // Killed after the journal took a batch, before the relay deleted it.
    let mut c = spawn(dir, "publish-hang", 0);
    c.until("published ", &mut committed).await;
    c.kill(&mut committed).await;
    assert!(
        count(dir, "SELECT count(*) FROM switchyard_outbox").await >= 20,
        "the published rows are still there: the next relay publishes them again"
    );

    // Killed at random moments while committing and relaying.
    for cycle in 1..=6u32 {
        let mut c = spawn(dir, "both", cycle);
        c.until("committed ", &mut committed).await;
        let ms = 20 + rand::random::<u64>() % 200;
        tokio::time::sleep(Duration::from_millis(ms)).await;
        c.kill(&mut committed).await;
    }

    let mut c = spawn(dir, "drain", 0);
    c.until("drained", &mut committed).await;
    let status = c.child.wait().await.expect("wait");
    assert!(status.success(), "{status}");

    assert_eq!(
        count(dir, "SELECT count(*) FROM switchyard_outbox").await,
        0
    );
    let rows = things(dir).await;
    assert!(
        committed.is_subset(&rows),
        "every reported commit is in the database"
    );
    let journal = common::open_journal(&dir.join("journal"));
    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    for p in 0..2 {
        let mut from = 0;
        loop {
            let batch = journal
                .read(&common::topic(TOPIC), p, from, ReadLimits::default())
                .await
                .expect("read");
            if batch.records.is_empty() {
                break;
            }
            for r in &batch.records {
                let e = CloudEvent::from_record(r, p);
                assert_eq!(e.ty(), "thing.made");
                *seen.entry(e.id().to_string()).or_default() += 1;
            }
            from = batch.next_offset;
        }
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "published more than once: {twice:?}");
    let published: BTreeSet<String> = seen.into_keys().collect();
    assert_eq!(
        published, rows,
        "every committed row's event is in the journal, and nothing else"
    );
    assert!(
        rows.len() > committed.len() / 2 && rows.len() >= 40,
        "{}",
        rows.len()
    );
    journal.close().await.expect("close");
}

async fn count(dir: &Path, sql: &str) -> i64 {
    let pool = Sqlite::connect(&common::sqlite_url(dir, "service"), true)
        .await
        .expect("db");
    let (n,): (i64,) = sqlx::query_as(sql).fetch_one(&pool).await.expect("count");
    pool.close().await;
    n
}

async fn things(dir: &Path) -> BTreeSet<String> {
    let pool = Sqlite::connect(&common::sqlite_url(dir, "service"), true)
        .await
        .expect("db");
    let rows: Vec<(String,)> = sqlx::query_as("SELECT id FROM things")
        .fetch_all(&pool)
        .await
        .expect("things");
    pool.close().await;
    rows.into_iter().map(|(id,)| id).collect()
}
