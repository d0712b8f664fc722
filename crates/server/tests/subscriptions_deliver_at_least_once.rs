//! Push subscriptions against a real HTTP subscriber that fails in scripted ways: every
//! published event ends delivered or parked (none lost), events of one key arrive in order
//! even while earlier ones are retried, 429/503 wait for Retry-After, other 4xx park at
//! once, parked events can be retried or discarded, and seek replays.

mod common;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use common::{Server, event};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
struct Hit {
    id: String,
    key: String,
    status: u16,
    at: Instant,
}

#[derive(Default)]
struct Subscriber {
    hits: Mutex<Vec<Hit>>,
    attempts: Mutex<HashMap<String, u32>>,
    /// Once true, events that were rejected are accepted.
    accept_all: std::sync::atomic::AtomicBool,
}

/// The script, by event id: `bad-*` gets 400 (park); `flaky-*` fails its first two attempts
/// with 500; `busy-*` gets 503 with Retry-After: 1 on its first attempt; the rest 200.
async fn receive(State(s): State<Arc<Subscriber>>, headers: HeaderMap) -> impl IntoResponse {
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let id = h("ce-id");
    let attempt = {
        let mut a = s.attempts.lock().expect("lock");
        let n = a.entry(id.clone()).or_default();
        *n += 1;
        *n
    };
    let accept_all = s.accept_all.load(std::sync::atomic::Ordering::SeqCst);
    let (status, retry_after) = if accept_all {
        (200, None)
    } else if id.starts_with("bad-") {
        (400, None)
    } else if id.starts_with("flaky-") && attempt <= 2 {
        (500, None)
    } else if id.starts_with("busy-") && attempt == 1 {
        (503, Some("1"))
    } else {
        (200, None)
    };
    s.hits.lock().expect("lock").push(Hit {
        id,
        key: h("ce-partitionkey"),
        status,
        at: Instant::now(),
    });
    let mut resp = StatusCode::from_u16(status)
        .expect("status")
        .into_response();
    if let Some(ra) = retry_after {
        resp.headers_mut()
            .insert("retry-after", ra.parse().expect("header"));
    }
    resp
}

async fn subscriber() -> (Arc<Subscriber>, String) {
    let state = Arc::new(Subscriber::default());
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (state, url)
}

fn fast_bus() -> switchyard_bus::BusOptions {
    switchyard_bus::BusOptions {
        push_timeout: Duration::from_secs(2),
        poll: Duration::from_millis(20),
        ..Default::default()
    }
}

async fn status(s: &Server, name: &str) -> Value {
    let (st, v) = s.get(&format!("/v1/subscriptions/{name}")).await;
    assert_eq!(st, 200, "{v}");
    v
}

/// Waits until nothing is in flight and every partition's cursor is at its end.
async fn settle(s: &Server, name: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = status(s, name).await;
        let caught_up = v["partitions"]
            .as_array()
            .expect("partitions")
            .iter()
            .all(|p| p["lag"] == json!(0));
        if v["in-flight"] == json!(0) && caught_up {
            return v;
        }
        assert!(Instant::now() < deadline, "did not settle: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_is_delivered_or_parked_in_key_order() {
    let (sub, url) = subscriber().await;
    let s = Server::with_bus(Default::default(), fast_bus()).await;
    s.topic("orders.v1", json!({"partitions": 2})).await;
    let r = s
        .client
        .put(s.url("/v1/subscriptions/shipping"))
        .json(&json!({
            "topics": ["orders.v1"],
            "endpoint": url,
            "concurrency": 8,
            "retry": {"initial-backoff-ms": 20, "max-backoff-ms": 200, "max-attempts": 5,
                      "max-age-ms": 60000, "multiplier": 2.0, "jitter": 0.1}
        }))
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());

    // 60 events on 4 keys; some flaky, some busy, some bad.
    let mut published: Vec<(String, String)> = Vec::new();
    for i in 0..60 {
        let kind = match i % 10 {
            3 => "flaky",
            5 => "busy",
            7 if i < 30 => "bad",
            _ => "ok",
        };
        let id = format!("{kind}-{i}");
        let key = format!("order-{}", i % 4);
        let mut e = event(&id, "x", json!({"i": i}));
        e["partitionkey"] = json!(key);
        let (st, _) = s.publish("orders.v1", &e).await;
        assert_eq!(st, 200);
        published.push((id, key));
    }
    let v = settle(&s, "shipping").await;

    let hits = sub.hits.lock().expect("lock").clone();
    let delivered: HashSet<&str> = hits
        .iter()
        .filter(|h| h.status == 200)
        .map(|h| h.id.as_str())
        .collect();
    let (st, parked) = s.get("/v1/subscriptions/shipping/parked").await;
    assert_eq!(st, 200);
    let parked_ids: HashSet<String> = parked["parked"]
        .as_array()
        .expect("parked")
        .iter()
        .map(|p| {
            let off = p["key"]["offset"].as_u64().expect("offset");
            let part = p["key"]["partition"].as_u64().expect("partition");
            hits.iter()
                .find(|h| h.status == 400 && published.iter().any(|(id, _)| id == &h.id))
                .map(|_| format!("{part}@{off}"))
                .unwrap_or_default()
        })
        .collect();
    let bad: Vec<&str> = published
        .iter()
        .map(|(id, _)| id.as_str())
        .filter(|id| id.starts_with("bad-"))
        .collect();
    // Accounting: every event is delivered or parked; only the bad ones are parked.
    for (id, _) in &published {
        assert!(
            delivered.contains(id.as_str()) || id.starts_with("bad-"),
            "{id} was neither delivered nor parked"
        );
    }
    assert_eq!(v["parked"], json!(bad.len()), "{v}");
    assert_eq!(parked_ids.len(), bad.len());
    for b in &bad {
        let attempts: Vec<&Hit> = hits.iter().filter(|h| h.id == *b).collect();
        assert_eq!(attempts.len(), 1, "a 4xx is parked at once: {b}");
    }
    // Retry-After: the busy events' second attempt came at least ~1 s after the first.
    for (id, _) in published.iter().filter(|(id, _)| id.starts_with("busy-")) {
        let times: Vec<Instant> = hits.iter().filter(|h| &h.id == id).map(|h| h.at).collect();
        assert!(times.len() >= 2, "{id}: {times:?}");
        assert!(
            times[1] - times[0] >= Duration::from_millis(900),
            "{id} retried too early"
        );
    }
    // Per-key order: for each key, the successful deliveries come in publish order, and no
    // event of a key is attempted before the previous one of that key succeeded or parked.
    for k in 0..4 {
        let key = format!("order-{k}");
        let expected: Vec<&str> = published
            .iter()
            .filter(|(id, kk)| kk == &key && !id.starts_with("bad-"))
            .map(|(id, _)| id.as_str())
            .collect();
        let got: Vec<&str> = hits
            .iter()
            .filter(|h| h.key == key && h.status == 200)
            .map(|h| h.id.as_str())
            .collect();
        assert_eq!(got, expected, "key {key}");
        let order: Vec<&str> = published
            .iter()
            .filter(|(_, kk)| kk == &key)
            .map(|(id, _)| id.as_str())
            .collect();
        let mut done: HashSet<&str> = HashSet::new();
        for h in hits.iter().filter(|h| h.key == key) {
            let pos = order.iter().position(|id| *id == h.id).expect("known id");
            assert!(
                order[..pos].iter().all(|earlier| done.contains(earlier)),
                "{} attempted before an earlier event of {key} finished",
                h.id
            );
            if h.status == 200 || h.status == 400 {
                done.insert(order[pos]);
            }
        }
    }

    // Metrics show the subscription's gauges.
    let m = s
        .client
        .get(s.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        m.contains(&format!(
            "switchyard_subscription_parked{{subscription=\"shipping\"}} {}",
            bad.len()
        )),
        "{m}"
    );
    assert!(
        m.contains("switchyard_subscription_in_flight{subscription=\"shipping\"} 0"),
        "{m}"
    );

    // The topic shows the subscription's lag.
    let (_, topic) = s.get("/v1/topics/orders.v1").await;
    assert_eq!(
        topic["subscriptions"],
        json!([{"name": "shipping", "lag": 0, "in-flight": 0, "parked": bad.len()}])
    );

    // A parked event can be retried (now accepted) or discarded.
    sub.accept_all
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let first = parked["parked"][0]["key"].clone();
    let second = parked["parked"][1]["key"].clone();
    let key_body = |k: &Value| json!({"topic": k["topic"], "partition": k["partition"], "offset": k["offset"]});
    let r = s
        .client
        .post(s.url("/v1/subscriptions/shipping/parked/retry"))
        .json(&key_body(&first))
        .send()
        .await
        .expect("retry");
    assert_eq!(r.status(), 204);
    let r = s
        .client
        .post(s.url("/v1/subscriptions/shipping/parked/discard"))
        .json(&key_body(&second))
        .send()
        .await
        .expect("discard");
    assert_eq!(r.status(), 204);
    let v = settle(&s, "shipping").await;
    assert_eq!(v["parked"], json!(bad.len() - 2), "{v}");
    let r = s
        .client
        .post(s.url("/v1/subscriptions/shipping/parked/discard"))
        .json(&key_body(&second))
        .send()
        .await
        .expect("discard again");
    assert_eq!(r.status(), 404);

    // Seek back to the start of partition 0: its events are delivered again.
    let before = sub.hits.lock().expect("lock").len();
    let r = s
        .client
        .post(s.url("/v1/subscriptions/shipping/seek"))
        .json(&json!({"topic": "orders.v1", "partition": 0, "to": "earliest"}))
        .send()
        .await
        .expect("seek");
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    settle(&s, "shipping").await;
    let (_, d) = s.get("/v1/topics/orders.v1").await;
    let p0 = d["partitions"][0]["next-offset"].as_u64().expect("p0");
    let again = sub.hits.lock().expect("lock").len() - before;
    // Parked events of partition 0 are not enqueued again; the rest are re-delivered.
    assert!(again as u64 >= p0 - bad.len() as u64, "{again} < {p0}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_subscriptions_are_refused_and_unknown_ones_are_404() {
    let s = Server::with_bus(Default::default(), fast_bus()).await;
    s.topic("t.v1", json!({})).await;
    let put = |name: &str, body: Value| {
        s.client
            .put(s.url(&format!("/v1/subscriptions/{name}")))
            .json(&body)
            .send()
    };
    for (name, body, code) in [
        (
            "a",
            json!({"topics": ["t.v1"], "endpoint": "ftp://x"}),
            "invalid-subscription",
        ),
        (
            "a",
            json!({"topics": [], "endpoint": "http://127.0.0.1:1/x"}),
            "invalid-subscription",
        ),
        (
            "a",
            json!({"topics": ["t.v1"], "endpoint": "http://127.0.0.1:1/x", "colour": 1}),
            "invalid-subscription",
        ),
        (
            "a",
            json!({"topics": ["t.v1"], "endpoint": "http://127.0.0.1:1/x", "concurrency": 0}),
            "invalid-subscription",
        ),
        (
            "a",
            json!({"name": "b", "topics": ["t.v1"], "endpoint": "http://127.0.0.1:1/x"}),
            "invalid-subscription",
        ),
        (
            "a",
            json!({"topics": ["nope.v1"], "endpoint": "http://127.0.0.1:1/x"}),
            "topic-not-found",
        ),
    ] {
        let r = put(name, body.clone()).await.expect("put");
        let st = r.status().as_u16();
        let p: Value = r.json().await.expect("problem");
        assert_eq!(p["code"], json!(code), "{body}: {st} {p}");
    }
    let (st, p) = s.get("/v1/subscriptions/ghost").await;
    assert_eq!(
        (st, p["code"].as_str()),
        (404, Some("subscription-not-found"))
    );
    let (_, list) = s.get("/v1/subscriptions").await;
    assert_eq!(list["subscriptions"], json!([]));
    s.stop().await;
}

/// Connection resets and timeouts are retried; after `max-attempts` the event parks with
/// the reason; pointing the subscription elsewhere restarts delivery there; `deliverat`
/// holds an event back until its time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resets_and_timeouts_retry_then_park_and_deliverat_waits() {
    // A "subscriber" that accepts connections and drops them at once.
    let rude = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let rude_url = format!("http://{}/hook", rude.local_addr().expect("addr"));
    tokio::spawn(async move {
        while let Ok((sock, _)) = rude.accept().await {
            drop(sock);
        }
    });
    let s = Server::with_bus(
        Default::default(),
        switchyard_bus::BusOptions {
            push_timeout: Duration::from_millis(300),
            poll: Duration::from_millis(20),
            ..Default::default()
        },
    )
    .await;
    s.topic("t.v1", json!({})).await;
    let spec = |endpoint: &str| {
        json!({"topics": ["t.v1"], "endpoint": endpoint,
               "retry": {"initial-backoff-ms": 10, "max-backoff-ms": 20, "max-attempts": 3,
                         "max-age-ms": 60000, "multiplier": 2.0, "jitter": 0.0}})
    };
    let r = s
        .client
        .put(s.url("/v1/subscriptions/s1"))
        .json(&spec(&rude_url))
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), 201);
    s.publish("t.v1", &event("r-1", "k", json!(1))).await;
    let v = settle(&s, "s1").await;
    assert_eq!(v["parked"], json!(1), "{v}");
    let (_, parked) = s.get("/v1/subscriptions/s1/parked").await;
    let p = &parked["parked"][0];
    assert_eq!(p["attempts"], json!(3), "{p}");
    assert!(
        p["reason"]
            .as_str()
            .expect("reason")
            .contains("gave up after 3 attempt(s)"),
        "{p}"
    );

    // A subscriber that is slow on first attempts (timeouts), then answers.
    let (sub, good_url) = subscriber().await;
    let slow = Arc::new(Mutex::new(HashSet::<String>::new()));
    let slow_app = {
        let slow = slow.clone();
        let good = good_url.clone();
        axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: String| {
                let slow = slow.clone();
                let good = good.clone();
                async move {
                    let id = headers
                        .get("ce-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string();
                    if slow.lock().expect("lock").insert(id) {
                        tokio::time::sleep(Duration::from_secs(2)).await;
                    }
                    // Forward to the recording subscriber.
                    let mut req = reqwest::Client::new().post(&good).body(body);
                    for (k, v) in &headers {
                        if k.as_str().starts_with("ce-") {
                            req = req.header(k, v);
                        }
                    }
                    let code = req.send().await.map(|r| r.status().as_u16()).unwrap_or(500);
                    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
                }
            }),
        )
    };
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let slow_url = format!("http://{}/hook", l.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(l, slow_app).await });
    let r = s
        .client
        .put(s.url("/v1/subscriptions/s1"))
        .json(&spec(&slow_url))
        .send()
        .await
        .expect("update");
    assert_eq!(r.status(), 200);
    let key = parked["parked"][0]["key"].clone();
    let r = s
        .client
        .post(s.url("/v1/subscriptions/s1/parked/retry"))
        .json(
            &json!({"topic": key["topic"], "partition": key["partition"], "offset": key["offset"]}),
        )
        .send()
        .await
        .expect("retry");
    assert_eq!(r.status(), 204);
    // Delayed: not before its time.
    let at = time::OffsetDateTime::now_utc() + time::Duration::milliseconds(1500);
    let mut delayed = event("later-1", "k2", json!(2));
    delayed["deliverat"] = json!(
        at.format(&time::format_description::well_known::Rfc3339)
            .expect("format")
    );
    let published = Instant::now();
    let (st, _) = s.publish("t.v1", &delayed).await;
    assert_eq!(st, 200);
    let v = settle(&s, "s1").await;
    assert_eq!(v["parked"], json!(0), "{v}");
    let hits = sub.hits.lock().expect("lock").clone();
    let ids: Vec<&str> = hits
        .iter()
        .filter(|h| h.status == 200)
        .map(|h| h.id.as_str())
        .collect();
    assert!(ids.contains(&"r-1") && ids.contains(&"later-1"), "{ids:?}");
    let later = hits.iter().find(|h| h.id == "later-1").expect("delivered");
    assert!(
        later.at.duration_since(published) >= Duration::from_millis(1400),
        "delivered {:?} after publishing, before its deliverat",
        later.at.duration_since(published)
    );
    s.stop().await;
}

/// A subscription with a type filter gets only those types, and its cursor still moves past
/// the others (its lag reaches 0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_type_filter_delivers_only_its_types() {
    let (sub, url) = subscriber().await;
    let s = Server::with_bus(Default::default(), fast_bus()).await;
    s.topic("mixed.v1", json!({})).await;
    let r = s
        .client
        .put(s.url("/v1/subscriptions/picky"))
        .json(&json!({"topics": ["mixed.v1"], "types": ["wanted"], "endpoint": url}))
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), 201);
    for i in 0..10 {
        let mut e = event(&format!("ok-{i}"), "k", json!(i));
        e["type"] = json!(if i % 2 == 0 { "wanted" } else { "other" });
        s.publish("mixed.v1", &e).await;
    }
    let v = settle(&s, "picky").await;
    assert_eq!(v["partitions"][0]["cursor"], json!(10), "{v}");
    let ids: Vec<String> = sub
        .hits
        .lock()
        .expect("lock")
        .iter()
        .map(|h| h.id.clone())
        .collect();
    assert_eq!(ids, ["ok-0", "ok-2", "ok-4", "ok-6", "ok-8"]);
    s.stop().await;
}

/// A subscription whose endpoint is down does not hold up another subscription on the same
/// topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_subscriber_does_not_hold_up_the_others() {
    let (healthy, healthy_url) = subscriber().await;
    // A port with nothing listening: every push is refused.
    let dead_url = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/hook", l.local_addr().expect("addr"));
        drop(l);
        url
    };
    let s = Server::with_bus(Default::default(), fast_bus()).await;
    s.topic("shared.v1", json!({"partitions": 2})).await;
    for (name, url) in [("down", &dead_url), ("up", &healthy_url)] {
        let r = s
            .client
            .put(s.url(&format!("/v1/subscriptions/{name}")))
            .json(&json!({"topics": ["shared.v1"], "endpoint": url,
                          "retry": {"initial-backoff-ms": 1000, "max-attempts": 100}}))
            .send()
            .await
            .expect("put");
        assert_eq!(r.status(), 201);
    }
    for i in 0..40 {
        s.publish(
            "shared.v1",
            &event(&format!("e{i}"), &format!("k{}", i % 5), json!(i)),
        )
        .await;
    }
    let v = settle(&s, "up").await;
    assert_eq!(v["parked"], json!(0));
    assert_eq!(
        healthy
            .hits
            .lock()
            .expect("lock")
            .iter()
            .filter(|h| h.status == 200)
            .count(),
        40
    );
    let down = status(&s, "down").await;
    assert_eq!(down["in-flight"], json!(40), "{down}");
    assert!(
        down["last-error"]
            .as_str()
            .expect("error")
            .contains("could not reach"),
        "{down}"
    );
    s.stop().await;
}
