//! Access records: every request a route with `access-log` answers (forwarded, refused by
//! its auth) becomes a `switchyard.gateway.request` event in its topic, with method, path
//! (no query), status, latency, request id, traceparent and consumer; other routes and
//! unmatched requests write nothing. A journal that stalls never holds a request up: the
//! bounded buffer fills, further records are dropped and counted, and what was buffered is
//! written once the journal moves again (at the latest when the gateway stops).

mod common;
use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use switchyard_gateway::GatewayOptions;
use switchyard_journal::file::FileJournal;
use switchyard_journal::{
    Appended, Expectation, Journal, Offset, Partition, PartitionChoice, ReadBatch, ReadLimits,
    Record, Timestamp, TopicConfig, TopicInfo, TopicName,
};

fn topic() -> TopicName {
    TopicName::new("access.v1").expect("test step")
}

/// Every event in the topic's partitions.
async fn events(journal: &dyn Journal) -> Vec<Value> {
    let mut out = Vec::new();
    for p in 0..2 {
        let batch = journal
            .read(&topic(), p, 0, ReadLimits::default())
            .await
            .expect("test step");
        for r in batch.records {
            out.push(serde_json::from_slice(&r.payload).expect("an event"));
        }
    }
    out
}

async fn create_topic(journal: &dyn Journal) {
    journal
        .create_topic(
            &topic(),
            TopicConfig {
                partitions: 2,
                ..Default::default()
            },
        )
        .await
        .expect("test step");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_request_of_a_logged_route_is_an_event() {
    let dir = tempfile::tempdir().expect("test step");
    let echo = Echo::start("backend").await;
    let up = echo.url();
    let log = "access-log = { topic = \"access.v1\" }";
    let declared = vec![
        route(&format!(
            "name = \"logged\"\npath = \"/logged/{{*rest}}\"\nupstreams = [{{ url = \"{up}\" }}]\n{log}\n"
        )),
        route(&format!(
            "name = \"guarded\"\npath = \"/guarded\"\nupstreams = [{{ url = \"{up}\" }}]\n{log}\n\
             [auth.jwt]\nalgorithm = \"HS256\"\nsecret-env = \"CARGO_PKG_DESCRIPTION\"\n"
        )),
        route(&format!(
            "name = \"quiet\"\npath = \"/quiet\"\nupstreams = [{{ url = \"{up}\" }}]\n"
        )),
    ];
    let gw = Running::start(
        dir.path(),
        GatewayOptions {
            declared,
            ..Default::default()
        },
    )
    .await;
    create_topic(&gw.journal).await;
    let c = client();
    let trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let r = c
        .get(format!("{}/logged/a?secret=s3cr3t", gw.url))
        .header("x-request-id", "req-1")
        .header("traceparent", trace)
        .send()
        .await
        .expect("test step");
    assert_eq!(r.status(), 200);
    let r = c
        .post(format!("{}/logged/b", gw.url))
        .header("x-request-id", "req-2")
        .body("x")
        .send()
        .await
        .expect("test step");
    assert_eq!(r.status(), 200);
    let r = c
        .get(format!("{}/guarded", gw.url))
        .header("x-request-id", "req-3")
        .send()
        .await
        .expect("test step");
    assert_eq!(r.status(), 401);
    let secret = std::env::var("CARGO_PKG_DESCRIPTION").expect("cargo sets it");
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("test step")
        .as_secs()
        + 300;
    let token = encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": "ann", "exp": exp}),
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("test step");
    let r = c
        .get(format!("{}/guarded", gw.url))
        .header("x-request-id", "req-4")
        .bearer_auth(token)
        .send()
        .await
        .expect("test step");
    assert_eq!(r.status(), 200);
    for path in ["/quiet", "/nowhere"] {
        c.get(format!("{}{path}", gw.url))
            .header("x-request-id", "req-none")
            .send()
            .await
            .expect("test step");
    }

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while events(&gw.journal).await.len() < 4 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Give a stray fifth record the chance to show before counting.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let got = events(&gw.journal).await;
    assert_eq!(got.len(), 4, "{got:#?}");
    let by_id = |id: &str| {
        got.iter()
            .find(|e| e["data"]["request-id"] == id)
            .unwrap_or_else(|| panic!("no record of {id}: {got:#?}"))
            .clone()
    };
    let first = by_id("req-1");
    assert_eq!(first["type"], "switchyard.gateway.request");
    assert_eq!(first["subject"], "logged");
    assert_eq!(first["partitionkey"], "logged");
    let d = &first["data"];
    assert_eq!(
        (
            d["route"].as_str(),
            d["method"].as_str(),
            d["path"].as_str()
        ),
        (Some("logged"), Some("GET"), Some("/logged/a")),
        "the path without its query"
    );
    assert_eq!(d["status"], 200);
    assert_eq!(d["consumer"], "ip:127.0.0.1");
    assert_eq!(d["upstream"], up.as_str());
    assert!(d["latency-ms"].as_f64().expect("latency") > 0.0, "{d}");
    // The client's trace, continued by the gateway's span; the event carries it too.
    let tp = d["traceparent"].as_str().expect("traceparent");
    assert!(
        tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "{tp}"
    );
    assert_ne!(tp, trace);
    assert_eq!(first["traceparent"], tp);
    assert!(!first.to_string().contains("s3cr3t"));
    assert_eq!(by_id("req-2")["data"]["method"], "POST");
    let refused = by_id("req-3");
    assert_eq!(
        (
            refused["data"]["status"].as_u64(),
            &refused["data"]["consumer"]
        ),
        (Some(401), &Value::Null)
    );
    assert_eq!(by_id("req-4")["data"]["consumer"], "user:ann");
    let stats = gw.gateway.access_stats();
    assert_eq!(
        (
            stats.written.load(Ordering::Relaxed),
            stats.dropped.load(Ordering::Relaxed),
            stats.failed.load(Ordering::Relaxed)
        ),
        (4, 0, 0)
    );
    // Through the admin API, a topic that does not exist is refused, naming the field.
    let r = c
        .put(format!("{}/v1/gateway/routes/more", gw.admin))
        .json(&json!({"path": "/more", "upstreams": [{"url": up}],
                      "access-log": {"topic": "missing.v1"}}))
        .send()
        .await
        .expect("test step");
    assert_eq!(r.status(), 422);
    let v: Value = r.json().await.expect("test step");
    assert_eq!(v["pointer"], "/access-log/topic", "{v}");
    gw.stop().await;
}

/// The file journal, with appends to one topic held until the gate opens.
struct Gated {
    inner: FileJournal,
    topic: TopicName,
    open: tokio::sync::watch::Receiver<bool>,
}

#[async_trait::async_trait]
impl Journal for Gated {
    async fn create_topic(
        &self,
        name: &TopicName,
        config: TopicConfig,
    ) -> switchyard_journal::Result<TopicInfo> {
        self.inner.create_topic(name, config).await
    }
    async fn update_topic(
        &self,
        name: &TopicName,
        config: TopicConfig,
    ) -> switchyard_journal::Result<TopicInfo> {
        self.inner.update_topic(name, config).await
    }
    async fn describe_topic(&self, name: &TopicName) -> switchyard_journal::Result<TopicInfo> {
        self.inner.describe_topic(name).await
    }
    async fn list_topics(&self) -> switchyard_journal::Result<Vec<TopicName>> {
        self.inner.list_topics().await
    }
    async fn delete_topic(&self, name: &TopicName) -> switchyard_journal::Result<()> {
        self.inner.delete_topic(name).await
    }
    async fn choose_partition(
        &self,
        topic: &TopicName,
        choice: &PartitionChoice,
    ) -> switchyard_journal::Result<Partition> {
        self.inner.choose_partition(topic, choice).await
    }
    async fn append(
        &self,
        topic: &TopicName,
        partition: Partition,
        records: Vec<Record>,
        expectation: Option<Expectation>,
    ) -> switchyard_journal::Result<Vec<Appended>> {
        if *topic == self.topic {
            let mut open = self.open.clone();
            let _ = open.wait_for(|&o| o).await;
        }
        self.inner
            .append(topic, partition, records, expectation)
            .await
    }
    async fn read(
        &self,
        topic: &TopicName,
        partition: Partition,
        from: Offset,
        limits: ReadLimits,
    ) -> switchyard_journal::Result<ReadBatch> {
        self.inner.read(topic, partition, from, limits).await
    }
    async fn offset_for_time(
        &self,
        topic: &TopicName,
        partition: Partition,
        at: Timestamp,
    ) -> switchyard_journal::Result<Offset> {
        self.inner.offset_for_time(topic, partition, at).await
    }
    async fn wait_for(
        &self,
        topic: &TopicName,
        partition: Partition,
        offset: Offset,
    ) -> switchyard_journal::Result<Offset> {
        self.inner.wait_for(topic, partition, offset).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_journal_drops_records_instead_of_holding_requests() {
    const REQUESTS: u64 = 50;
    const BUFFER: usize = 4;
    let dir = tempfile::tempdir().expect("test step");
    let echo = Echo::start("backend").await;
    let declared = vec![route(&format!(
        "name = \"logged\"\npath = \"/logged\"\nupstreams = [{{ url = \"{}\" }}]\n\
         access-log = {{ topic = \"access.v1\" }}\n",
        echo.url()
    ))];
    let (gate, open) = tokio::sync::watch::channel(false);
    let gw = Running::start_with(
        dir.path(),
        GatewayOptions {
            declared,
            access_log_buffer: BUFFER,
            ..Default::default()
        },
        |inner| {
            Arc::new(Gated {
                inner,
                topic: topic(),
                open,
            })
        },
    )
    .await;
    create_topic(&gw.journal).await;
    let c = client();
    // Every request is answered while the journal holds every access record up.
    let all = async {
        for _ in 0..REQUESTS {
            let r = c
                .get(format!("{}/logged", gw.url))
                .send()
                .await
                .expect("test step");
            assert_eq!(r.status(), 200);
        }
    };
    tokio::time::timeout(Duration::from_secs(60), all)
        .await
        .expect("requests were held up by the stalled access log");
    let stats = gw.gateway.access_stats();
    let dropped = stats.dropped.load(Ordering::Relaxed);
    assert_eq!(
        stats.written.load(Ordering::Relaxed),
        0,
        "the journal is stalled"
    );
    assert!(
        dropped >= 1 && dropped <= REQUESTS - BUFFER as u64,
        "dropped {dropped}"
    );
    let metrics = gw.gateway.render_metrics();
    assert!(
        metrics.contains(&format!(
            "switchyard_gateway_access_records_dropped_total {dropped}\n"
        )),
        "{metrics}"
    );
    // The journal moves again; stopping the gateway writes what is still queued.
    gate.send_replace(true);
    let stats_after = {
        let g = gw.gateway.clone();
        gw.stop().await;
        let s = g.access_stats();
        (
            s.written.load(Ordering::Relaxed),
            s.dropped.load(Ordering::Relaxed),
            s.failed.load(Ordering::Relaxed),
        )
    };
    let (written, dropped_after, failed) = stats_after;
    assert_eq!(dropped_after, dropped, "nothing more was dropped");
    assert_eq!(failed, 0);
    assert_eq!(
        written + dropped,
        REQUESTS,
        "every record written or counted"
    );
    assert!(written >= BUFFER as u64, "the buffered records: {written}");
    let journal = FileJournal::open(dir.path()).expect("test step");
    assert_eq!(events(&journal).await.len() as u64, written);
    journal.close().await.expect("test step");
}
