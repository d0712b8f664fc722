//! Three `switchyard serve` processes share one NATS JetStream cluster (three nodes,
//! `sync_interval: always`, streams of 3 replicas) and one PostgreSQL database. A push
//! subscription to a real HTTP receiver has its six partitions spread over them, and an
//! adapter's lane to a fake vendor runs on one of them. Under a steady publish load, the
//! instance holding the lane is killed with SIGKILL: its partition leases and its lane lease
//! move to the two survivors within the ttl plus a stated margin (the measured time is
//! printed), and every event whose publish was acknowledged ends delivered to the receiver
//! at least once (or parked) and sent to the vendor (or failed into a case): none is lost.

mod common;
use common::*;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::BufRead as _;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use switchyard_connect::testing::FakeVendor;
use switchyard_journal::nats_server::{self, NatsCluster, Sync};
use switchyard_store::postgres::testing::TestDatabase;

const INSTANCES: [&str; 3] = ["sy-a", "sy-b", "sy-c"];
const PARTITIONS: usize = 6;
const LEASE_TTL: Duration = Duration::from_millis(1500);
/// How much later than the ttl the leases may move: the keeper's tick (500 ms here) and a
/// generous allowance for a loaded CI machine. The measured time is printed.
const MARGIN: Duration = Duration::from_secs(10);
/// Load before the kill, and after the leases moved.
const LOAD_BEFORE: Duration = Duration::from_secs(2);
const LOAD_AFTER: Duration = Duration::from_secs(2);

/// What the receiver saw: deliveries per event id.
#[derive(Default)]
struct Receiver {
    seen: Mutex<HashMap<String, u32>>,
    requests: AtomicU64,
}

/// A little slow (5 ms) and flaky (every 10th request answers 500), so that at the kill
/// there are attempts in flight and retries stored.
async fn hook(
    axum::extract::State(r): axum::extract::State<Arc<Receiver>>,
    headers: axum::http::HeaderMap,
) -> axum::http::StatusCode {
    tokio::time::sleep(Duration::from_millis(5)).await;
    if r.requests.fetch_add(1, Ordering::Relaxed) % 10 == 9 {
        return axum::http::StatusCode::INTERNAL_SERVER_ERROR;
    }
    let id = headers
        .get("ce-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    *r.seen.lock().expect("lock").entry(id).or_default() += 1;
    axum::http::StatusCode::NO_CONTENT
}

/// One running instance, its stderr drained into `log` (a full pipe would block it).
struct Instance {
    name: &'static str,
    child: Child,
    base: String,
    log: Arc<Mutex<Vec<String>>>,
    _scratch: Scratch,
}

impl Instance {
    fn start(name: &'static str, journal: &str, store: &str, config: &str) -> Self {
        let scratch = Scratch::new();
        let ttl = LEASE_TTL.as_millis().to_string();
        let (child, base, stderr) = start_server_with(
            scratch.data_str(),
            "127.0.0.1:0",
            &[
                "--journal",
                journal,
                "--store",
                store,
                "--instance",
                name,
                "--lease-ttl-ms",
                &ttl,
                "--config",
                config,
            ],
        );
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                sink.lock().expect("lock").push(line);
            }
        });
        Instance {
            name,
            child,
            base,
            log,
            _scratch: scratch,
        }
    }

    fn log_tail(&self) -> String {
        let log = self.log.lock().expect("lock");
        log[log.len().saturating_sub(30)..].join("\n")
    }

    fn stop(mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let status = self.child.wait().expect("wait");
        assert_eq!(
            status.code(),
            Some(0),
            "{}:\n{}",
            self.name,
            self.log_tail()
        );
    }
}

impl Drop for Instance {
    /// A test that fails half-way leaves no server running (one kept a PostgreSQL database
    /// busy after a failed CI run).
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The leases held now (not expired, not released): lease name -> owner.
async fn held_leases(db: &str) -> BTreeMap<String, String> {
    use sqlx::Connection as _;
    let mut c = sqlx::PgConnection::connect(db).await.expect("connect");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT name, owner FROM leases WHERE expires_at_ms > $1")
            .bind(now)
            .fetch_all(&mut c)
            .await
            .expect("leases");
    let _ = c.close().await;
    rows.into_iter().collect()
}

/// Partition leases per owner, and the lane's owner.
fn owners(held: &BTreeMap<String, String>) -> (BTreeMap<String, usize>, Option<String>) {
    let mut per = BTreeMap::new();
    for (name, owner) in held {
        if name.starts_with("sub/billing/orders.v1/") {
            *per.entry(owner.clone()).or_default() += 1;
        }
    }
    (per, held.get("lane/bakery").cloned())
}

/// Publishes batches round-robin to the instances in `targets` until `stop`; returns the
/// events whose publish was acknowledged (200), id -> (partition, offset), and how many
/// publishes failed.
async fn publish_load(
    targets: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
) -> (BTreeMap<String, (u64, u64)>, usize) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let (mut acked, mut failed, mut n) = (BTreeMap::new(), 0usize, 0usize);
    while !stop.load(Ordering::Relaxed) {
        let base = {
            let t = targets.lock().expect("lock");
            t[n % t.len()].clone()
        };
        let ids: Vec<String> = (n * 4..n * 4 + 4).map(|i| format!("ev-{i:06}")).collect();
        n += 1;
        let batch: Vec<serde_json::Value> = ids
            .iter()
            .enumerate()
            .map(|(j, id)| {
                serde_json::json!({"specversion": "1.0", "id": id, "source": "/load",
                    "type": "order.placed", "partitionkey": format!("k{}", (n * 4 + j) % 23),
                    "data": {"id": id}})
            })
            .collect();
        let r = client
            .post(format!("{base}/v1/topics/orders.v1/events"))
            .header("content-type", "application/cloudevents-batch+json")
            .json(&batch)
            .send()
            .await;
        match r {
            Ok(r) if r.status() == 200 => {
                let body: serde_json::Value = r.json().await.expect("publish answer");
                let events = body["events"].as_array().expect("events");
                assert_eq!(events.len(), ids.len(), "{body}");
                for (id, e) in ids.into_iter().zip(events) {
                    let at = (e["partition"].as_u64(), e["offset"].as_u64());
                    let (Some(p), Some(o)) = at else {
                        panic!("no place in {body}");
                    };
                    acked.insert(id, (p, o));
                }
            }
            Ok(r) => {
                failed += 1;
                eprintln!("publish to {base}: {}", r.status());
            }
            Err(e) => {
                failed += 1;
                eprintln!("publish to {base}: {e}");
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (acked, failed)
}

async fn wait_until<T>(
    what: &str,
    limit: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn leases_move_to_the_survivors_and_no_acknowledged_event_is_lost() {
    const TEST: &str = "leases_move_to_the_survivors_and_no_acknowledged_event_is_lost";
    let Some(bin) = nats_server::for_test(TEST) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let Some(db) = rt.block_on(TestDatabase::create(TEST)) else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let cluster = rt
        .block_on(NatsCluster::start(
            &bin,
            &dir.path().join("nats"),
            Sync::Always,
            3,
        ))
        .unwrap_or_else(|e| panic!("starting the NATS cluster: {e}"));
    let journal = format!("nats://{}?sync=always&replicas=3", cluster.urls());
    let store = format!("{}?pool=4", db.url);

    let receiver = Arc::new(Receiver::default());
    let (hook_url, vendor) = rt.block_on(async {
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(hook))
            .with_state(receiver.clone());
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/hook", l.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(l, app).await });
        (url, FakeVendor::start_local().await.expect("fake vendor"))
    });
    let config = dir.path().join("switchyard.toml");
    std::fs::write(
        &config,
        format!(
            r#"[adapters.bakery]
topic = "orders.v1"
start = "earliest"
mapping = "{{id: .id}}"
writer = {{ kind = "http", url = "{}/orders" }}
"#,
            vendor.url()
        ),
    )
    .expect("config");
    let config = config.to_str().expect("utf-8").to_owned();

    let mut instances: Vec<Instance> = INSTANCES
        .iter()
        .map(|name| Instance::start(name, &journal, &store, &config))
        .collect();
    let first = instances[0].base.clone();
    rt.block_on(async {
        let c = reqwest::Client::new();
        create_topic(
            &first,
            "orders.v1",
            &format!(r#"{{"partitions": {PARTITIONS}}}"#),
        )
        .await;
        let r = c
            .put(format!("{first}/v1/subscriptions/billing"))
            .json(&serde_json::json!({
                "topics": ["orders.v1"], "endpoint": hook_url, "concurrency": 4,
                "retry": {"initial-backoff-ms": 10, "max-backoff-ms": 100, "max-attempts": 1000,
                          "max-age-ms": 600000, "multiplier": 2.0, "jitter": 0.0}
            }))
            .send()
            .await
            .expect("subscription");
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
    });
    // Every instance holds its fair share (two partitions), one of them the lane.
    let (spread, lane_owner) = rt.block_on(wait_until(
        "the partitions are spread over the three instances",
        Duration::from_secs(30),
        async || {
            let (per, lane) = owners(&held_leases(&db.url).await);
            let even = INSTANCES
                .iter()
                .all(|i| per.get(*i) == Some(&(PARTITIONS / INSTANCES.len())));
            (even && lane.is_some()).then(|| (per, lane.unwrap_or_default()))
        },
    ));
    eprintln!("partition leases before the kill: {spread:?}, lane/bakery: {lane_owner}");

    // Steady load through every instance.
    let targets = Arc::new(Mutex::new(
        instances.iter().map(|i| i.base.clone()).collect::<Vec<_>>(),
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let load = rt.spawn(publish_load(targets.clone(), stop.clone()));
    std::thread::sleep(LOAD_BEFORE);

    // Kill the instance that holds the lane (it holds two partitions too).
    let victim_at = instances
        .iter()
        .position(|i| i.name == lane_owner)
        .expect("the lane's owner is one of ours");
    let mut victim = instances.remove(victim_at);
    targets.lock().expect("lock").retain(|b| *b != victim.base);
    let delivered_before = receiver.seen.lock().expect("lock").len();
    victim.child.kill().expect("SIGKILL");
    let killed = Instant::now();
    victim.child.wait().expect("reap");
    let survivors: Vec<&str> = instances.iter().map(|i| i.name).collect();

    let (partitions_moved, lane_moved) = rt.block_on(async {
        let (mut partitions_moved, mut lane_moved) = (None, None);
        let deadline = killed + LEASE_TTL + MARGIN;
        loop {
            let held = held_leases(&db.url).await;
            let (per, lane) = owners(&held);
            let now = killed.elapsed();
            if partitions_moved.is_none()
                && per.keys().all(|o| survivors.contains(&o.as_str()))
                && per.values().sum::<usize>() == PARTITIONS
            {
                partitions_moved = Some((now, per.clone()));
            }
            if lane_moved.is_none()
                && let Some(l) = &lane
                && survivors.contains(&l.as_str())
            {
                lane_moved = Some((now, l.clone()));
            }
            if partitions_moved.is_some() && lane_moved.is_some() {
                break;
            }
            if Instant::now() > deadline {
                let logs: Vec<String> = instances
                    .iter()
                    .map(|i| format!("{}:\n{}", i.name, i.log_tail()))
                    .collect();
                panic!(
                    "the leases of {} did not move within {:?}: partitions {per:?}, lane {lane:?}\n{}",
                    victim.name,
                    LEASE_TTL + MARGIN,
                    logs.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (
            partitions_moved.expect("set"),
            lane_moved.expect("set"),
        )
    });
    eprintln!(
        "SIGKILL of {} (lease ttl {} ms): its partition leases moved in {} ms (now {:?}), \
         its lane lease in {} ms (to {}); bound {} ms",
        victim.name,
        LEASE_TTL.as_millis(),
        partitions_moved.0.as_millis(),
        partitions_moved.1,
        lane_moved.0.as_millis(),
        lane_moved.1,
        (LEASE_TTL + MARGIN).as_millis()
    );
    // The fair share of two instances: three partitions each.
    for (owner, n) in &partitions_moved.1 {
        assert!(
            *n <= PARTITIONS.div_ceil(2),
            "{owner} holds {n}: {:?}",
            partitions_moved.1
        );
    }

    std::thread::sleep(LOAD_AFTER);
    stop.store(true, Ordering::Relaxed);
    let (acked, failed) = rt.block_on(load).expect("load");
    eprintln!(
        "{} events acknowledged ({failed} publishes failed, {delivered_before} events delivered \
         before the kill)",
        acked.len()
    );
    assert!(acked.len() > 100, "too little load to prove anything");
    assert!(
        delivered_before < acked.len(),
        "the kill came after everything was delivered"
    );

    // The accounting invariant, for the subscription and for the adapter.
    let survivor = instances[0].base.clone();
    rt.block_on(wait_until(
        "every acknowledged event is delivered or parked, and sent to the vendor or failed",
        Duration::from_secs(40),
        async || {
            let parked: serde_json::Value =
                reqwest::get(format!("{survivor}/v1/subscriptions/billing/parked"))
                    .await
                    .ok()?
                    .json()
                    .await
                    .ok()?;
            let parked: BTreeSet<(u64, u64)> = parked["parked"]
                .as_array()?
                .iter()
                .filter_map(|p| {
                    Some((
                        p["key"]["partition"].as_u64()?,
                        p["key"]["offset"].as_u64()?,
                    ))
                })
                .collect();
            let seen = receiver.seen.lock().expect("lock").clone();
            let lost: Vec<(&String, &(u64, u64))> = acked
                .iter()
                .filter(|(id, at)| !seen.contains_key(*id) && !parked.contains(at))
                .collect();
            let sent: BTreeSet<String> = vendor
                .received()
                .iter()
                .filter_map(|r| {
                    serde_json::from_str::<serde_json::Value>(&r.body)
                        .ok()
                        .and_then(|v| v["id"].as_str().map(str::to_owned))
                })
                .collect();
            let failed = failed_messages(&db.url).await;
            let unsent: Vec<&String> = acked
                .keys()
                .filter(|id| !sent.contains(*id) && !failed.contains(*id))
                .collect();
            if !lost.is_empty() || !unsent.is_empty() {
                eprintln!(
                    "waiting: {} not delivered (first {:?}), {} not sent (first {:?})",
                    lost.len(),
                    lost.first(),
                    unsent.len(),
                    unsent.first()
                );
                return None;
            }
            let twice = seen.values().filter(|n| **n > 1).count();
            eprintln!(
                "all {} acknowledged events accounted for: delivered ({twice} more than once), \
                 {} parked; sent to the vendor, {} failed",
                acked.len(),
                parked.len(),
                failed.len()
            );
            Some(())
        },
    ));

    for i in instances {
        i.stop();
    }
    drop(cluster);
    rt.block_on(db.drop_it());
}

/// The event ids of the adapter's messages that failed or were rejected (each in a case).
async fn failed_messages(db: &str) -> BTreeSet<String> {
    use sqlx::Connection as _;
    let Ok(mut c) = sqlx::PgConnection::connect(db).await else {
        return BTreeSet::new();
    };
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT event_id FROM messages WHERE adapter = 'bakery' AND state IN ('failed', 'rejected')",
    )
    .fetch_all(&mut c)
    .await
    .unwrap_or_default();
    let _ = c.close().await;
    ids.into_iter().collect()
}
