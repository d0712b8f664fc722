//! With tokens configured: no token or a wrong one is 401, a token without the scope or the
//! topic is 403, and neither changes anything; health checks stay open.

mod common;

use common::{Server, event};
use serde_json::{Value, json};
use switchyard_server::auth::{Scope, Token};

fn token(name: &str, scopes: Vec<Scope>, topics: &[&str]) -> Token {
    Token {
        name: name.into(),
        secret: format!("secret-of-{name}"),
        scopes,
        topics: topics.iter().map(|t| t.to_string()).collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_checked_before_anything_changes() {
    let s = Server::with(switchyard_server::Options {
        tokens: vec![
            token(
                "admin",
                vec![Scope::Admin, Scope::Read, Scope::Publish],
                &[],
            ),
            token("orders-writer", vec![Scope::Publish], &["orders.*"]),
            token("reader", vec![Scope::Read], &["orders.v1"]),
        ],
        ..Default::default()
    })
    .await;
    let req = |method: reqwest::Method, path: &str, tok: Option<&str>| {
        let mut r = s.client.request(method, s.url(path));
        if let Some(t) = tok {
            r = r.bearer_auth(format!("secret-of-{t}"));
        }
        r
    };
    let status = |r: reqwest::Response| r.status().as_u16();

    assert_eq!(
        status(
            req(reqwest::Method::GET, "/healthz", None)
                .send()
                .await
                .expect("h")
        ),
        200
    );
    let r = req(reqwest::Method::PUT, "/v1/topics/orders.v1", None)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("www-authenticate"));
    let r = s
        .client
        .put(s.url("/v1/topics/orders.v1"))
        .bearer_auth("not-a-token")
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .expect("put");
    let p: Value = r.json().await.expect("problem");
    assert_eq!(p["code"], json!("unauthorized"));
    assert!(
        !p.to_string().contains("not-a-token"),
        "the secret is not echoed"
    );
    let r = req(
        reqwest::Method::PUT,
        "/v1/topics/orders.v1",
        Some("orders-writer"),
    )
    .header("content-type", "application/json")
    .body("{}")
    .send()
    .await
    .expect("put");
    assert_eq!(r.status(), 403);
    assert_eq!(
        status(
            req(reqwest::Method::GET, "/v1/topics", Some("admin"))
                .send()
                .await
                .expect("l")
        ),
        200
    );
    let (_, list) = s.get("/v1/topics").await;
    assert_eq!(list["code"], json!("unauthorized"));
    for name in ["orders.v1", "pay.v1"] {
        let r = req(
            reqwest::Method::PUT,
            &format!("/v1/topics/{name}"),
            Some("admin"),
        )
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .expect("put");
        assert_eq!(r.status(), 201);
    }
    let publish = |topic: &str, tok: &str| {
        req(
            reqwest::Method::POST,
            &format!("/v1/topics/{topic}/events"),
            Some(tok),
        )
        .header("content-type", "application/cloudevents+json")
        .body(event("e1", "k", json!(1)).to_string())
        .send()
    };
    assert_eq!(
        status(publish("orders.v1", "orders-writer").await.expect("p")),
        200
    );
    assert_eq!(
        status(publish("pay.v1", "orders-writer").await.expect("p")),
        403
    );
    assert_eq!(
        status(publish("orders.v1", "reader").await.expect("p")),
        403
    );
    assert_eq!(
        status(
            req(
                reqwest::Method::GET,
                "/v1/topics/orders.v1/events",
                Some("reader")
            )
            .send()
            .await
            .expect("r")
        ),
        200
    );
    assert_eq!(
        status(
            req(
                reqwest::Method::GET,
                "/v1/topics/pay.v1/stream",
                Some("reader")
            )
            .send()
            .await
            .expect("r")
        ),
        403
    );
    assert_eq!(
        status(
            req(reqwest::Method::GET, "/metrics", Some("reader"))
                .send()
                .await
                .expect("m")
        ),
        403
    );
    // A topic-limited token lists only its topics.
    let r = req(reqwest::Method::GET, "/v1/topics", Some("reader"))
        .send()
        .await
        .expect("list");
    let list: Value = r.json().await.expect("json");
    assert_eq!(list["topics"], json!(["orders.v1"]));
    // Nothing the refused requests tried happened.
    let r = req(reqwest::Method::GET, "/v1/topics/pay.v1", Some("admin"))
        .send()
        .await
        .expect("d");
    let d: Value = r.json().await.expect("json");
    assert_eq!(d["partitions"][0]["next-offset"], json!(0));
    s.stop().await;
}
