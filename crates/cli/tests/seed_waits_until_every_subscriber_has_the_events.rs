//! `switchyard seed` against a real server and a real (slow) HTTP subscriber: the seed
//! creates two topics, appends keyed events, creates the subscriptions with its `calls`, and
//! returns only once the subscriber has every event (each key's in file order); a
//! subscription whose endpoint refuses everything parks its deliveries, which counts as
//! caught up but is reported as a warning.

mod common;
use common::*;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const PER_TOPIC: usize = 30;
const KEYS: usize = 5;

#[test]
fn seeding_returns_once_the_subscriber_has_every_event() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    // (topic-qualified key, n) in the order the subscriber got them.
    let received: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
    let hook = {
        let received = received.clone();
        rt.block_on(async move {
            let app = axum::Router::new()
                .route(
                    "/hook",
                    axum::routing::post(
                        move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                            let received = received.clone();
                            async move {
                                // Slow enough that the events are not all there when the
                                // last publish returns.
                                tokio::time::sleep(Duration::from_millis(10)).await;
                                let key = headers
                                    .get("ce-partitionkey")
                                    .and_then(|v| v.to_str().ok())
                                    .unwrap_or("-")
                                    .to_string();
                                let data: serde_json::Value =
                                    serde_json::from_slice(&body).unwrap_or_default();
                                let n = data["n"].as_u64().unwrap_or(u64::MAX);
                                received.lock().expect("lock").push((key, n));
                                axum::http::StatusCode::OK
                            }
                        },
                    ),
                )
                .route(
                    "/refuse",
                    axum::routing::post(|| async { axum::http::StatusCode::BAD_REQUEST }),
                );
            let l = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let url = format!("http://{}", l.local_addr().expect("addr"));
            tokio::spawn(async move { axum::serve(l, app).await });
            url
        })
    };

    let s = Scratch::new();
    let (mut server, base, _stderr) = start_server(s.data_str(), "127.0.0.1:0");
    let mut yaml = String::from("topics:\n  orders.v1: {partitions: 3}\n  payments.v1:\nevents:\n");
    for topic in ["orders.v1", "payments.v1"] {
        writeln!(yaml, "  {topic}:").expect("write");
        for n in 0..PER_TOPIC {
            writeln!(
                yaml,
                "    - {{type: {topic}.happened, key: {topic}-k{}, data: {{n: {n}}}}}",
                n % KEYS
            )
            .expect("write");
        }
    }
    write!(
        yaml,
        "calls:
  - method: PUT
    url: /v1/subscriptions/fulfilment
    body: {{topics: [orders.v1, payments.v1], endpoint: '{hook}/hook', concurrency: 4}}
    expect: 201
  - method: PUT
    url: /v1/subscriptions/audit
    body: {{topics: [payments.v1], endpoint: '{hook}/refuse'}}
"
    )
    .expect("write");
    let file = s.data.with_file_name("shop.yaml");
    std::fs::write(&file, yaml).expect("write seed");
    let file = file.to_str().expect("utf-8 path");

    let r = run_against(&base, &["seed", file], "").expect_code(0);

    // Every event arrived before the seed returned, each key's in file order.
    let got = received.lock().expect("lock").clone();
    assert_eq!(got.len(), 2 * PER_TOPIC, "{got:?}\n{}", r.stdout);
    let mut per_key: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (key, n) in got {
        per_key.entry(key).or_default().push(n);
    }
    assert_eq!(per_key.len(), 2 * KEYS);
    for (key, ns) in &per_key {
        assert!(ns.windows(2).all(|w| w[0] < w[1]), "{key}: {ns:?}");
        assert_eq!(ns.len(), PER_TOPIC / KEYS, "{key}: {ns:?}");
    }

    let out = &r.stdout;
    assert!(
        out.contains("topic orders.v1: appended 30, already there 0 (created)"),
        "{out}"
    );
    assert!(
        out.contains("topic payments.v1: appended 30, already there 0 (created)"),
        "{out}"
    );
    assert!(
        out.contains("call PUT /v1/subscriptions/fulfilment: 201"),
        "{out}"
    );
    assert!(
        out.contains("subscription fulfilment: caught up\n"),
        "{out}"
    );
    assert!(
        out.contains("subscription audit: caught up, 30 parked (warning)"),
        "{out}"
    );
    assert!(out.contains("every subscription has caught up"), "{out}");
    assert!(
        r.stderr
            .contains("warning: subscription audit has 30 parked deliveries (last error: HTTP 400"),
        "{}",
        r.stderr
    );

    let _ = std::process::Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status();
    assert_eq!(server.wait().expect("wait").code(), Some(0));
}
