//! The integration gateway over HTTP: an asynchronous vendor (the fake vendor) answers
//! each request 202 and posts its reply to `POST /v1/adapters/{name}/replies` with the
//! correlation header; the reply settles the message and becomes an event. Then the
//! message store and cases endpoints, pause and resume, and their bad input: each a
//! problem with a stable code that changes nothing.

use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchyard_connect::testing::{Behaviour, Callback, FakeVendor};
use switchyard_connect::{Connect, ConnectOptions};
use switchyard_journal::Journal;

async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_over_http() {
    let dir = tempfile::tempdir().expect("tempdir");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let journal =
        switchyard_journal::file::FileJournal::open(dir.path().join("j")).expect("journal");
    let journal: Arc<dyn Journal> = Arc::new(journal);
    for t in ["inventory.v1", "vendor.v1"] {
        journal
            .create_topic(
                &switchyard_journal::TopicName::new(t).expect("name"),
                Default::default(),
            )
            .await
            .expect("topic");
    }
    let store = switchyard_store::sqlite::SqliteStore::open(dir.path().join("store.sqlite"))
        .await
        .expect("store");
    let vendor = FakeVendor::start_local().await.expect("vendor");
    vendor.set(Behaviour {
        status: Some(202),
        callback: Some(Callback {
            url: format!("{base}/v1/adapters/bakery/replies"),
            header: "x-correlation-id".into(),
            delay_ms: 20,
            body: r#"{"order":"B-1","status":"confirmed"}"#.into(),
        }),
        ..Behaviour::default()
    });
    let config = dir.path().join("switchyard.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[adapters.bakery]
topic = "inventory.v1"
route = ".data.sku < 300"
mapping = "{{sku: .data.sku}}"
start = "earliest"
writer = {{ kind = "http", url = "{}/orders" }}
correlation = {{ header = "x-correlation-id" }}
reply = {{ topic = "vendor.v1", type = "restock.confirmed", mapping = "{{order: .body.order}}" }}
classify = {{ business = [{{ status = [422], event-type = "restock.rejected" }}] }}
"#,
            vendor.url()
        ),
    )
    .expect("config");
    let connect = Connect::start(
        journal.clone(),
        Arc::new(store),
        ConnectOptions {
            config_file: Some(config.clone()),
            ..ConnectOptions::default()
        },
    )
    .await
    .expect("connect");
    let options = switchyard_server::Options {
        connect: Some(connect.clone()),
        ..Default::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(switchyard_server::serve(
        listener,
        journal.clone(),
        options,
        async {
            let _ = stopped.await;
        },
    ));
    let http = reqwest::Client::new();
    let get = |path: &str| {
        let http = http.clone();
        let url = format!("{base}{path}");
        async move {
            let r = http.get(url).send().await.expect("get");
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let post = |path: &str, body: Value| {
        let http = http.clone();
        let url = format!("{base}{path}");
        async move {
            let r = http.post(url).json(&body).send().await.expect("post");
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let publish = |id: &str, sku: u32| {
        let http = http.clone();
        let url = format!("{base}/v1/topics/inventory.v1/events");
        let body = json!({"specversion": "1.0", "id": id, "source": "/t", "type": "stock.low", "subject": format!("sku-{sku}"), "data": {"sku": sku}});
        async move {
            let r = http
                .post(url)
                .header("content-type", "application/cloudevents+json")
                .json(&body)
                .send()
                .await
                .expect("publish");
            assert_eq!(r.status(), 200);
        }
    };
    publish("e-1", 201).await;
    eventually("the reply to settle the message", || async {
        get("/v1/messages?adapter=bakery&state=delivered").await.1["messages"]
            .as_array()
            .is_some_and(|m| m.len() == 1)
    })
    .await;
    let (_, page) = get("/v1/messages?adapter=bakery").await;
    let message = &page["messages"][0];
    let id = message["id"].as_u64().expect("id");
    assert_eq!(message["request"]["body"], r#"{"sku":201}"#);
    let (status, detail) = get(&format!("/v1/messages/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(detail["attempts"][0]["status"], 202);
    assert_eq!(detail["attempts"][0]["outcome"], "awaiting-reply");
    let (_, replies) = get("/v1/adapters/bakery/replies").await;
    assert_eq!(replies["replies"][0]["disposition"], "matched");
    eventually("the reply event", || async {
        get("/v1/topics/vendor.v1/events").await.1["events"]
            .as_array()
            .is_some_and(|e| e.len() == 1)
    })
    .await;
    let (_, events) = get("/v1/topics/vendor.v1/events").await;
    assert_eq!(events["events"][0]["data"], json!({"order": "B-1"}));

    // A reply nobody asked for is recorded, not lost; the credentials the vendor sent
    // with it are not (the replies are readable over this API).
    let r = http
        .post(format!("{base}/v1/adapters/bakery/replies"))
        .header("x-correlation-id", "no-such-request")
        .header("authorization", "Bearer vendor-secret-1")
        .header("cookie", "session=vendor-secret-2")
        .header("x-api-key", "vendor-secret-3")
        .header("x-vendor-note", "kept")
        .body("{}")
        .send()
        .await
        .expect("reply");
    assert_eq!(r.status(), 202);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["disposition"], "unmatched");
    let text = http
        .get(format!(
            "{base}/v1/adapters/bakery/replies?disposition=unmatched"
        ))
        .send()
        .await
        .expect("replies")
        .text()
        .await
        .expect("text");
    assert!(!text.contains("vendor-secret"), "{text}");
    let replies: Value = serde_json::from_str(&text).expect("json");
    let headers: Vec<(String, String)> =
        serde_json::from_value(replies["replies"][0]["headers"].clone()).expect("headers");
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    for name in ["authorization", "cookie", "x-api-key"] {
        assert_eq!(header(name), Some("[redacted]"), "{name}: {headers:?}");
    }
    assert_eq!(header("x-vendor-note"), Some("kept"));
    assert_eq!(header("x-correlation-id"), Some("no-such-request"));

    // Unknown failures become a case; retry puts them back; discard settles them.
    vendor.set(Behaviour {
        status: Some(500),
        body: Some("internal error 77".into()),
        ..Behaviour::default()
    });
    std::fs::write(
        &config,
        std::fs::read_to_string(&config).expect("read").replace(
            "start = \"earliest\"",
            "start = \"earliest\"\nretry = { initial-backoff = \"10ms\", max-attempts = 1 }",
        ),
    )
    .expect("config");
    let (status, report) = post("/v1/adapters/reload", json!({})).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["changed"], json!(["bakery"]));
    publish("e-2", 202).await;
    publish("e-3", 203).await;
    eventually("a case with both failures", || async {
        get("/v1/cases?adapter=bakery").await.1["cases"]
            .as_array()
            .is_some_and(|c| c.len() == 1 && c[0]["open-messages"] == 2)
    })
    .await;
    let (_, cases) = get("/v1/cases?adapter=bakery&state=open").await;
    let case = &cases["cases"][0];
    let case_id = case["id"].as_str().expect("id").to_owned();
    assert_eq!(case["status"], 500);
    assert_eq!(case["message"], "http #: internal error #", "{case}");
    assert_eq!(get(&format!("/v1/cases/{case_id}")).await.0, 200);
    let (_, failed) = get(&format!("/v1/messages?case={case_id}&state=failed")).await;
    assert_eq!(failed["messages"].as_array().map(Vec::len), Some(2));
    let (status, lane) = post("/v1/adapters/bakery/pause", json!({})).await;
    assert_eq!((status, lane["state"].as_str()), (200, Some("paused")));
    let (status, retried) = post(&format!("/v1/cases/{case_id}/retry"), json!({})).await;
    assert_eq!((status, retried["retried"].as_u64()), (200, Some(2)));
    assert_eq!(
        get("/v1/messages?adapter=bakery&state=pending").await.1["messages"]
            .as_array()
            .map(Vec::len),
        Some(2),
        "a paused lane holds them"
    );
    post("/v1/adapters/bakery/resume", json!({})).await;
    eventually("both failed again", || async {
        get(&format!("/v1/cases/{case_id}")).await.1["open-messages"] == 2
    })
    .await;
    let (status, discarded) = post(&format!("/v1/cases/{case_id}/discard"), json!({})).await;
    assert_eq!((status, discarded["discarded"].as_u64()), (200, Some(2)));
    let (status, resolved) = post(&format!("/v1/cases/{case_id}/resolve"), json!({})).await;
    assert_eq!(
        (status, resolved["state"].as_str()),
        (200, Some("resolved"))
    );
    let (_, lanes) = get("/v1/adapters").await;
    assert_eq!(lanes["adapters"][0]["messages"]["discarded"], 2);

    // Replay of the delivered one, resent; a pending one cannot be replayed.
    vendor.set(Behaviour {
        status: Some(202),
        ..Behaviour::default()
    });
    let (status, replayed) = post("/v1/messages/replay", json!({"ids": [id]})).await;
    assert_eq!(status, 200, "{replayed}");

    // Bad input: a stable code, the field, nothing changed.
    let (status, p) = get("/v1/messages?state=lost").await;
    assert_eq!(
        (status, p["code"].as_str(), p["pointer"].as_str()),
        (400, Some("invalid-query"), Some("state"))
    );
    let (status, p) = get("/v1/messages?since=yesterday").await;
    assert_eq!((status, p["pointer"].as_str()), (400, Some("since")));
    let (status, p) = get("/v1/messages/abc").await;
    assert_eq!(
        (status, p["code"].as_str()),
        (400, Some("invalid-message-id"))
    );
    let (status, p) = get("/v1/messages/999999").await;
    assert_eq!(
        (status, p["code"].as_str()),
        (404, Some("message-not-found"))
    );
    let (status, p) = get("/v1/adapters/nosuch").await;
    assert_eq!(
        (status, p["code"].as_str()),
        (404, Some("adapter-not-found"))
    );
    // The replayed message awaits its reply again: replaying it now is refused whole.
    let (status, p) = post("/v1/messages/replay", json!({"ids": [id, 999999]})).await;
    assert_eq!(
        (status, p["code"].as_str(), p["pointer"].as_str()),
        (409, Some("not-replayable"), Some("/ids/0")),
        "{p}"
    );
    let (status, p) = post("/v1/messages/replay", json!({"ids": [999999]})).await;
    assert_eq!(
        (status, p["pointer"].as_str()),
        (404, Some("/ids/0")),
        "{p}"
    );
    let (status, p) = post("/v1/messages/replay", json!({"ids": [], "mode": "resend"})).await;
    assert_eq!(status, 400, "{p}");
    let (status, p) = post(
        "/v1/messages/replay",
        json!({"ids": [1], "mode": "sideways"}),
    )
    .await;
    assert_eq!(
        (status, p["code"].as_str()),
        (400, Some("invalid-request")),
        "{p}"
    );
    let (status, p) = get("/v1/cases/nosuch").await;
    assert_eq!((status, p["code"].as_str()), (404, Some("case-not-found")));
    std::fs::write(&config, "[adapters.bakery]\ntopic = \"inventory.v1\"\nmapping = \"{\"\nwriter = { kind = \"http\", url = \"http://x\" }\n").expect("config");
    let (status, p) = post("/v1/adapters/reload", json!({})).await;
    assert_eq!(
        (status, p["code"].as_str()),
        (422, Some("invalid-adapter-config"))
    );
    assert_eq!(p["errors"][0]["key"], "adapters.bakery.mapping");
    assert_eq!(p["errors"][0]["line"], 3);

    let _ = stop.send(());
    let _ = server.await;
    connect.shutdown().await;
}
