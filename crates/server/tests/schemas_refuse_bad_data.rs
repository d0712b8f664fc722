//! JSON Schemas per event type: a topic's schemas are set with its settings; an event whose
//! data breaks its type's schema gets 422 naming the pointer and rule, a batch with one bad
//! event appends nothing, events of other types pass, and a schema that does not compile or
//! points at a remote document is refused.

mod common;

use common::{Server, event};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_must_match_its_types_schema() {
    let s = Server::with_bus(Default::default(), Default::default()).await;
    let schema = json!({
        "type": "object",
        "required": ["total"],
        "properties": {"total": {"type": "number", "minimum": 0}}
    });
    let r = s
        .client
        .put(s.url("/v1/topics/orders.v1"))
        .json(&json!({"partitions": 1, "schemas": {"order.placed": schema}}))
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
    let (_, d) = s.get("/v1/topics/orders.v1").await;
    assert_eq!(d["schemas"]["order.placed"], schema);

    let typed = |id: &str, t: &str, data: Value| {
        let mut e = event(id, "o-1", data);
        e["type"] = json!(t);
        e
    };
    let (st, _) = s
        .publish(
            "orders.v1",
            &typed("a", "order.placed", json!({"total": 5})),
        )
        .await;
    assert_eq!(st, 200);
    let (st, p) = s
        .publish(
            "orders.v1",
            &typed("b", "order.placed", json!({"total": -1})),
        )
        .await;
    assert_eq!(
        (st, p["code"].as_str()),
        (422, Some("schema-violation")),
        "{p}"
    );
    assert_eq!(p["pointer"], json!("/data/total"));
    assert!(
        p["detail"].as_str().expect("detail").contains("minimum"),
        "{p}"
    );
    let (st, p) = s
        .publish("orders.v1", &typed("c", "order.placed", json!({})))
        .await;
    assert_eq!(
        (st, p["code"].as_str()),
        (422, Some("schema-violation")),
        "{p}"
    );
    // Other types have no schema.
    let (st, _) = s
        .publish("orders.v1", &typed("d", "order.noted", json!("anything")))
        .await;
    assert_eq!(st, 200);
    // A batch with one bad event appends nothing, and names it.
    let batch = json!([
        typed("e", "order.placed", json!({"total": 1})),
        typed("f", "order.placed", json!({"total": "one"}))
    ]);
    let (st, p) = s
        .post(
            "orders.v1",
            "application/cloudevents-batch+json",
            batch.to_string(),
        )
        .await;
    assert_eq!(
        (st, p["pointer"].as_str()),
        (422, Some("/1/data/total")),
        "{p}"
    );
    let (_, d) = s.get("/v1/topics/orders.v1").await;
    assert_eq!(d["partitions"][0]["next-offset"], json!(2));

    // Bad schemas are refused and change nothing.
    for (schemas, code) in [
        (
            json!({"order.placed": {"type": "no-such-type"}}),
            "invalid-schema",
        ),
        (
            json!({"order.placed": {"$ref": "https://example.com/schema.json"}}),
            "invalid-schema",
        ),
        (json!({"order.placed": "string"}), "invalid-schema"),
        (json!([1]), "invalid-schema"),
    ] {
        let r = s
            .client
            .put(s.url("/v1/topics/orders.v1"))
            .json(&json!({"partitions": 1, "schemas": schemas}))
            .send()
            .await
            .expect("put");
        let st = r.status().as_u16();
        let p: Value = r.json().await.expect("problem");
        assert_eq!(
            (st, p["code"].as_str()),
            (400, Some(code)),
            "{schemas}: {p}"
        );
    }
    let (_, d) = s.get("/v1/topics/orders.v1").await;
    assert_eq!(d["schemas"]["order.placed"], schema);

    // Replacing the schemas with none lets anything through.
    let r = s
        .client
        .put(s.url("/v1/topics/orders.v1"))
        .json(&json!({"partitions": 1, "schemas": {}}))
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), 200);
    let (st, _) = s
        .publish(
            "orders.v1",
            &typed("g", "order.placed", json!({"total": -1})),
        )
        .await;
    assert_eq!(st, 200);
    s.stop().await;
}
