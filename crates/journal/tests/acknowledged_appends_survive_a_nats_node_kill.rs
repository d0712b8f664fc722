//! A 3-node NATS cluster (three private nats-server processes, JetStream with
//! `sync_interval: always`, streams of 3 replicas) under an appender load: the stream's
//! leader is killed with SIGKILL mid-load. Every append that was acknowledged is read back
//! afterwards at its acknowledged place (none lost, none twice), and appends continue once
//! the two remaining nodes have elected a leader. Appenders retry a failed append with the
//! same record ids, as a client of the journal should: dedup makes the retry safe.

use bytes::Bytes;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use switchyard_journal::conformance::{read_all, topic, unique_prefix};
use switchyard_journal::nats::{NatsJournal, NatsOptions};
use switchyard_journal::nats_server::{self, NatsCluster, Sync};
use switchyard_journal::{Appended, Durability, Journal, Record, TopicConfig};

const APPENDERS: usize = 4;
const PARTITIONS: u32 = 2;
const BEFORE_KILL: Duration = Duration::from_millis(1500);
/// The load goes on until this many appends were acknowledged after the kill...
const AFTER_KILL_ACKS: usize = 200;
/// ...or this long after the start, when the assertions below tell what happened.
const LOAD_FOR_AT_MOST: Duration = Duration::from_secs(60);
/// How long one append may keep failing before the test gives up on the cluster.
const RETRY_FOR: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_appends_survive_a_nats_node_kill() {
    let Some(bin) = nats_server::for_test("acknowledged_appends_survive_a_nats_node_kill") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cluster = NatsCluster::start(&bin, dir.path(), Sync::Always, 3)
        .await
        .unwrap_or_else(|e| panic!("starting the cluster: {e}"));
    let options = NatsOptions {
        request_timeout: Duration::from_secs(3),
        ..NatsOptions::from_url(&format!("nats://{}?sync=always&replicas=3", cluster.urls()))
            .expect("url")
    };
    let journal = NatsJournal::connect(options).await.expect("connect");
    let t = topic(&unique_prefix("kill"), "t");
    let cfg = TopicConfig {
        partitions: PARTITIONS,
        durability: Durability::Always,
        ..TopicConfig::default()
    };
    create_with_retry(&journal, &t, cfg).await;

    let started = Instant::now();
    let killed_at = std::sync::OnceLock::<Instant>::new();
    let acked_after_kill = std::sync::atomic::AtomicUsize::new(0);
    let appenders = (0..APPENDERS).map(|a| {
        let (journal, t, killed_at, after) =
            (journal.clone(), t.clone(), &killed_at, &acked_after_kill);
        async move {
            let mut acks: Vec<(String, Appended, Instant)> = Vec::new();
            let mut n = 0usize;
            while after.load(std::sync::atomic::Ordering::Relaxed) < AFTER_KILL_ACKS
                && started.elapsed() < LOAD_FOR_AT_MOST
            {
                let size = if n % 5 == 4 { 3 } else { 1 };
                let ids: Vec<String> = (n..n + size).map(|i| format!("a{a}-{i:06}")).collect();
                n += size;
                let records: Vec<Record> = ids
                    .iter()
                    .map(|id| {
                        Record::new(Bytes::from(format!("payload of {id}")))
                            .with_id(id.clone())
                            .with_key(format!("key-{a}-{}", n % 7))
                    })
                    .collect();
                let partition = (n as u32) % PARTITIONS;
                let out = append_with_retry(&journal, &t, partition, records).await;
                let now = Instant::now();
                if killed_at.get().is_some_and(|k| now > *k) {
                    after.fetch_add(out.len(), std::sync::atomic::Ordering::Relaxed);
                }
                for (id, ack) in ids.into_iter().zip(out) {
                    acks.push((id, ack, now));
                }
            }
            acks
        }
    });
    let killer = async {
        tokio::time::sleep(BEFORE_KILL).await;
        let leader = stream_leader(&cluster.nodes[0].url, &t).await;
        let victim = cluster
            .nodes
            .iter()
            .position(|n| n.name() == leader)
            .unwrap_or(0);
        cluster.nodes[victim].kill();
        let _ = killed_at.set(Instant::now());
        victim
    };
    let (results, victim) = tokio::join!(futures::future::join_all(appenders), killer);
    let acks: Vec<(String, Appended, Instant)> = results.into_iter().flatten().collect();
    let killed = *killed_at.get().expect("a node was killed");

    let after = acks.iter().filter(|(_, _, at)| *at > killed).count();
    assert!(
        after >= AFTER_KILL_ACKS,
        "appends continue after node {victim} was killed: {after} acknowledged after, {} in all",
        acks.len()
    );
    let resumed = acks
        .iter()
        .filter(|(_, _, at)| *at > killed)
        .map(|(_, _, at)| *at - killed)
        .min();

    // Everything acknowledged is there, once, where it was acknowledged.
    let by_id: HashMap<&str, &Appended> =
        acks.iter().map(|(id, ack, _)| (id.as_str(), ack)).collect();
    let mut seen: HashMap<String, (u32, u64)> = HashMap::new();
    for p in 0..PARTITIONS {
        for r in read_all(&journal, &t, p).await {
            let id = r.id.clone().expect("every record has an id");
            assert_eq!(r.payload, Bytes::from(format!("payload of {id}")), "{id}");
            assert!(
                seen.insert(id.clone(), (p, r.offset)).is_none(),
                "{id} was stored twice"
            );
        }
    }
    for (id, ack) in &by_id {
        assert_eq!(
            seen.get(*id),
            Some(&(ack.partition, ack.offset)),
            "acknowledged {id} at {ack:?} is read back there"
        );
    }
    eprintln!(
        "{} appends acknowledged ({after} after killing node {victim}, the first {resumed:?} \
         after the kill), {} records stored",
        by_id.len(),
        seen.len()
    );
    journal.close().await.expect("close");
}

async fn create_with_retry(j: &NatsJournal, t: &switchyard_journal::TopicName, cfg: TopicConfig) {
    let deadline = Instant::now() + RETRY_FOR;
    loop {
        match j.create_topic(t, cfg).await {
            Ok(_) => return,
            Err(e) if Instant::now() < deadline => {
                eprintln!("create_topic: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("create_topic {t}: {e}"),
        }
    }
}

async fn append_with_retry(
    j: &NatsJournal,
    t: &switchyard_journal::TopicName,
    partition: u32,
    records: Vec<Record>,
) -> Vec<Appended> {
    let deadline = Instant::now() + RETRY_FOR;
    loop {
        match j.append(t, partition, records.clone(), None).await {
            Ok(out) => return out,
            Err(e) if Instant::now() < deadline => {
                eprintln!("append: {e}; retrying with the same ids");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("append to {t}/{partition} kept failing for {RETRY_FOR:?}: {e}"),
        }
    }
}

/// The name of the server leading the topic's stream.
async fn stream_leader(url: &str, t: &switchyard_journal::TopicName) -> String {
    let client = async_nats::connect(url).await.expect("connect");
    let js = async_nats::jetstream::new(client);
    let name = format!("SY_{}", t.as_str().replace('.', "~"));
    let mut stream = js.get_stream(&name).await.expect("stream");
    let info = stream.info().await.expect("info");
    info.cluster
        .as_ref()
        .and_then(|c| c.leader.clone())
        .expect("the stream has a leader")
}
