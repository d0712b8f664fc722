//! Every kind of bad request gets RFC 9457 problem+json with a stable code, and appends
//! nothing.

mod common;

use common::{Server, event};
use serde_json::{Value, json};

async fn problem(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    assert_eq!(
        r.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/problem+json"),
        "status {status}"
    );
    (status, r.json().await.expect("problem body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_publishes_are_refused_whole() {
    let s = Server::with(switchyard_server::Options {
        max_body_bytes: 64 * 1024,
        max_batch_events: 10,
        ..Default::default()
    })
    .await;
    s.topic("t.v1", json!({})).await;
    let good = event("g", "k", json!(1));
    let mut wrong_version = good.clone();
    wrong_version["specversion"] = json!("0.3");
    let mut no_type = good.clone();
    no_type.as_object_mut().expect("object").remove("type");
    let cases: Vec<(&str, String, u16, &str)> = vec![
        (
            "application/cloudevents+json",
            "{not json".into(),
            400,
            "malformed-json",
        ),
        (
            "application/cloudevents+json",
            wrong_version.to_string(),
            400,
            "unsupported-specversion",
        ),
        (
            "application/cloudevents+json",
            no_type.to_string(),
            400,
            "missing-attribute",
        ),
        (
            "application/cloudevents+json",
            "[]".into(),
            400,
            "invalid-event",
        ),
        (
            "application/cloudevents-batch+json",
            json!([good, wrong_version]).to_string(),
            400,
            "unsupported-specversion",
        ),
        (
            "application/cloudevents-batch+json",
            Value::Array(vec![good.clone(); 11]).to_string(),
            413,
            "batch-too-large",
        ),
        ("text/plain", "hello".into(), 415, "unsupported-media-type"),
        (
            "application/cloudevents+json",
            json!({"specversion": "1.0", "id": "big", "source": "/s", "type": "t",
                   "data": "x".repeat(100 * 1024)})
            .to_string(),
            413,
            "body-too-large",
        ),
    ];
    for (ct, body, status, code) in cases {
        let r = s
            .client
            .post(s.url("/v1/topics/t.v1/events"))
            .header("content-type", ct)
            .body(body)
            .send()
            .await
            .expect("post");
        let (st, p) = problem(r).await;
        assert_eq!((st, p["code"].as_str()), (status, Some(code)), "{p}");
    }
    let r = s
        .client
        .post(s.url("/v1/topics/nope.v1/events"))
        .header("content-type", "application/cloudevents+json")
        .body(good.to_string())
        .send()
        .await
        .expect("unknown topic");
    let (st, p) = problem(r).await;
    assert_eq!((st, p["code"].as_str()), (404, Some("topic-not-found")));
    let (_, d) = s.get("/v1/topics/t.v1").await;
    assert_eq!(
        d["partitions"][0]["next-offset"],
        json!(0),
        "nothing was appended"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_topics_and_queries_name_the_problem() {
    let s = Server::start().await;
    let put = |name: &str, body: &str| {
        s.client
            .put(s.url(&format!("/v1/topics/{name}")))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
    };
    let (st, p) = problem(put("bad%20name", "{}").await.expect("put")).await;
    assert_eq!((st, p["code"].as_str()), (400, Some("invalid-topic-name")));
    let (st, p) = problem(put("t.v1", r#"{"partitionz": 2}"#).await.expect("put")).await;
    assert_eq!(
        (st, p["code"].as_str()),
        (400, Some("invalid-topic-config"))
    );
    assert!(
        p["detail"].as_str().expect("detail").contains("partitionz"),
        "{p}"
    );
    let (st, p) = problem(put("t.v1", r#"{"partitions": 0}"#).await.expect("put")).await;
    assert_eq!((st, p["pointer"].as_str()), (400, Some("partitions")));
    s.topic("t.v1", json!({"partitions": 2})).await;
    let (st, p) = problem(put("t.v1", r#"{"partitions": 3}"#).await.expect("put")).await;
    assert_eq!(
        (st, p["code"].as_str()),
        (400, Some("invalid-topic-config"))
    );

    for (query, code) in [
        ("from=yesterday", "invalid-from"),
        ("from=5", "invalid-from"),
        ("from=1.2.3", "invalid-from"),
        ("partition=7", "partition-out-of-range"),
        ("limit=ten", "invalid-query"),
        ("colour=red", "invalid-query"),
    ] {
        let r = s
            .client
            .get(s.url(&format!("/v1/topics/t.v1/events?{query}")))
            .send()
            .await
            .expect("get");
        let (st, p) = problem(r).await;
        assert_eq!((st, p["code"].as_str()), (400, Some(code)), "{query}: {p}");
    }
    let r = s
        .client
        .get(s.url("/v1/nothing"))
        .send()
        .await
        .expect("get");
    assert_eq!(problem(r).await.0, 404);
    let r = s
        .client
        .get(s.url("/v1/topics/t.v1/stream"))
        .header("accept", "text/html")
        .send()
        .await
        .expect("get");
    assert_eq!(problem(r).await.0, 406);
    s.stop().await;
}
