//! `/v1/openapi.json` is valid JSON, OpenAPI 3.1, served without a token, and lists exactly
//! the routes the router serves (each of which answers something other than `no-route`).

mod common;

use common::Server;
use serde_json::Value;
use switchyard_server::auth::{Scope, Token};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_matches_the_router() {
    let s = Server::with(switchyard_server::Options {
        tokens: vec![Token {
            name: "t".into(),
            secret: "0123456789abcdef".into(),
            scopes: vec![Scope::Read],
            topics: vec![],
        }],
        ..Default::default()
    })
    .await;
    let r = s
        .client
        .get(s.url("/v1/openapi.json"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 200);
    let doc: Value = r.json().await.expect("json");
    assert_eq!(doc["openapi"], "3.1.0");
    let mut documented: Vec<&str> = doc["paths"]
        .as_object()
        .expect("paths")
        .keys()
        .map(String::as_str)
        .collect();
    documented.sort();
    let mut served = switchyard_server::ROUTES.to_vec();
    served.sort();
    assert_eq!(documented, served);
    for route in switchyard_server::ROUTES {
        let path = route.replace("{topic}", "some.topic");
        let r = s
            .client
            .get(s.url(&path))
            .bearer_auth("0123456789abcdef")
            .send()
            .await
            .expect("get");
        let status = r.status();
        let body = r.text().await.unwrap_or_default();
        let code = serde_json::from_str::<Value>(&body)
            .ok()
            .map(|v| v["code"].clone());
        assert_ne!(
            code,
            Some(Value::from("no-route")),
            "{route} is not routed: {status}"
        );
    }
    // Every $ref points at something that exists.
    let text = doc.to_string();
    for part in text.split("\"$ref\":\"#/").skip(1) {
        let pointer = format!("/{}", part.split('"').next().expect("ref"));
        assert!(doc.pointer(&pointer).is_some(), "dangling $ref {pointer}");
    }
    s.stop().await;
}
