//! Publishing in every content mode, reading back by offset, position and time, dedup by
//! id, per-key partitioning, and the expected-offset condition, over real HTTP.

mod common;

use common::{Server, event};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mode_appends_and_reads_back_in_order() {
    let s = Server::start().await;
    s.topic("orders.v1", json!({"partitions": 1})).await;

    let (st, body) = s
        .publish("orders.v1", &event("a", "o-1", json!({"n": 1})))
        .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(
        body["events"][0],
        json!({"id": "a", "partition": 0, "offset": 0, "duplicate": false})
    );

    let r = s
        .client
        .post(s.url("/v1/topics/orders.v1/events"))
        .header("ce-specversion", "1.0")
        .header("ce-id", "b")
        .header("ce-source", "/test")
        .header("ce-type", "test.binary")
        .header("ce-subject", "o-1")
        .header("ce-tenant", "acme%20corp")
        .header("content-type", "text/plain")
        .body("hello")
        .send()
        .await
        .expect("binary");
    assert_eq!(r.status(), 200);
    let batch = json!([event("c", "o-2", json!(3)), event("d", "o-2", json!(4))]);
    let (st, body) = s
        .post(
            "orders.v1",
            "application/cloudevents-batch+json",
            batch.to_string(),
        )
        .await;
    assert_eq!(st, 200, "{body}");
    let offsets: Vec<u64> = body["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["offset"].as_u64().expect("offset"))
        .collect();
    assert_eq!(offsets, vec![2, 3]);

    let (st, page) = s.get("/v1/topics/orders.v1/events?from=earliest").await;
    assert_eq!(st, 200);
    let events = page["events"].as_array().expect("events");
    let ids: Vec<&str> = events
        .iter()
        .map(|e| e["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, ["a", "b", "c", "d"]);
    assert_eq!(events[1]["data"], json!("hello"));
    assert_eq!(events[1]["datacontenttype"], json!("text/plain"));
    assert_eq!(events[1]["tenant"], json!("acme corp"));
    assert_eq!(events[3]["sequence"], json!("3"));
    assert_eq!(page["next"], json!("4"));

    // A page, then the rest from `next`.
    let (_, first) = s.get("/v1/topics/orders.v1/events?limit=3").await;
    assert_eq!(first["events"].as_array().expect("events").len(), 3);
    let (_, rest) = s
        .get(&format!(
            "/v1/topics/orders.v1/events?from={}",
            first["next"].as_str().expect("next")
        ))
        .await;
    assert_eq!(rest["events"][0]["id"], json!("d"));
    // By time: everything is at or after a minute ago, nothing is in the future.
    let (_, all) = s
        .get("/v1/topics/orders.v1/events?from=2000-01-01T00:00:00Z")
        .await;
    assert_eq!(all["events"].as_array().expect("events").len(), 4);
    let (_, none) = s
        .get("/v1/topics/orders.v1/events?from=2999-01-01T00:00:00Z")
        .await;
    assert_eq!(none["events"], json!([]));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_id_returns_the_original_offset() {
    let s = Server::start().await;
    s.topic("pay.v1", json!({"partitions": 3})).await;
    let (_, first) = s.publish("pay.v1", &event("p-1", "acct-9", json!(1))).await;
    let (_, again) = s.publish("pay.v1", &event("p-1", "acct-9", json!(1))).await;
    assert_eq!(again["events"][0]["duplicate"], json!(true));
    assert_eq!(again["events"][0]["offset"], first["events"][0]["offset"]);
    assert_eq!(
        again["events"][0]["partition"],
        first["events"][0]["partition"]
    );
    let (_, d) = s.get("/v1/topics/pay.v1").await;
    let total: u64 = d["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .map(|p| p["next-offset"].as_u64().expect("next"))
        .sum();
    assert_eq!(total, 1);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_one_key_share_a_partition_in_order() {
    let s = Server::start().await;
    s.topic("carts.v1", json!({"partitions": 4})).await;
    let mut seen: Vec<(Value, Value)> = Vec::new();
    for i in 0..20 {
        let key = format!("cart-{}", i % 3);
        let mut e = event(&format!("e{i}"), "ignored", json!(i));
        e["partitionkey"] = json!(key);
        let (st, body) = s.publish("carts.v1", &e).await;
        assert_eq!(st, 200, "{body}");
        seen.push((json!(key), body["events"][0].clone()));
    }
    for key in 0..3 {
        let mine: Vec<&Value> = seen
            .iter()
            .filter(|(k, _)| *k == json!(format!("cart-{key}")))
            .map(|(_, a)| a)
            .collect();
        assert!(
            mine.windows(2)
                .all(|w| w[0]["partition"] == w[1]["partition"])
        );
        assert!(
            mine.windows(2)
                .all(|w| w[0]["offset"].as_u64() < w[1]["offset"].as_u64())
        );
    }
    // Reading all partitions from a position merges them; a position resumes each.
    let (_, page) = s
        .get("/v1/topics/carts.v1/events?from=0.0.0.0&limit=1000")
        .await;
    assert_eq!(page["events"].as_array().expect("events").len(), 20);
    let (_, after) = s
        .get(&format!(
            "/v1/topics/carts.v1/events?from={}",
            page["next"].as_str().expect("next")
        ))
        .await;
    assert_eq!(after["events"], json!([]));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_expected_offset_header_guards_a_key() {
    let s = Server::start().await;
    s.topic("acct.v1", json!({})).await;
    let send = |id: &str, expected: &str| {
        s.client
            .post(s.url("/v1/topics/acct.v1/events"))
            .header("content-type", "application/cloudevents+json")
            .header("switchyard-expected-offset", expected)
            .body(event(id, "acct-1", json!(id)).to_string())
            .send()
    };
    let r = send("x1", "none").await.expect("first");
    assert_eq!(r.status(), 200);
    let r = send("x2", "none").await.expect("second");
    assert_eq!(r.status(), 409);
    let p: Value = r.json().await.expect("problem");
    assert_eq!(p["code"], json!("offset-conflict"));
    assert_eq!(p["actual-offset"], json!("0"));
    let r = send("x3", "0").await.expect("third");
    assert_eq!(r.status(), 200);
    let r = send("x4", "banana").await.expect("bad header");
    assert_eq!(r.status(), 400);
    let (_, d) = s.get("/v1/topics/acct.v1").await;
    assert_eq!(d["partitions"][0]["next-offset"], json!(2));
    s.stop().await;
}
