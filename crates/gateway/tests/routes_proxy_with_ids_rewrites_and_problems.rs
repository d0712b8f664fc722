//! Declared routes: matching, strip-prefix and rewrite, request ids and trace context passed
//! on, hop-by-hop headers dropped, and problem+json for what no route takes.

mod common;
use common::*;
use switchyard_gateway::GatewayOptions;

#[tokio::test]
async fn declared_routes_forward_with_ids_and_rewrites() {
    let dir = tempfile::tempdir().unwrap();
    let orders = Echo::start("orders").await;
    let other = Echo::start("other").await;
    let mut services = switchyard_gateway::Services::new();
    services.insert("orders".into(), vec![orders.url()]);
    let declared = vec![
        route(
            r#"name = "api"
path = "/api/orders/{*rest}"
strip-prefix = true
service = "orders""#,
        ),
        route(
            r#"name = "one"
path = "/api/orders/{id}"
methods = ["GET"]
rewrite = "/v2/order/{id}"
service = "orders""#,
        ),
        route(&format!(
            r#"name = "host"
path = "/{{*rest}}"
hosts = ["other.example.com"]
upstreams = [{{ url = "{}/base" }}]"#,
            other.url()
        )),
    ];
    let gw = Running::start(
        dir.path(),
        GatewayOptions {
            declared,
            services,
            ..Default::default()
        },
    )
    .await;
    let c = client();

    let (s, v) = get_json(&c, &format!("{}/api/orders/42?x=1", gw.url)).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["upstream"], "orders");
    assert_eq!(v["uri"], "/v2/order/42?x=1");
    let rid = v["headers"]["x-request-id"].as_str().unwrap().to_string();
    assert_eq!(rid.len(), 32);
    assert!(
        v["headers"]["traceparent"]
            .as_str()
            .unwrap()
            .starts_with("00-")
    );

    // POST is not `one`'s: the prefix route strips.
    let r = c
        .post(format!("{}/api/orders/42/pay", gw.url))
        .header("x-request-id", "req-7")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .header("connection", "keep-alive, x-secret-hop")
        .header("x-secret-hop", "not for upstream")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "req-7");
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["uri"], "/42/pay");
    assert_eq!(v["method"], "POST");
    assert_eq!(v["body"], "hello");
    assert_eq!(v["headers"]["x-request-id"], "req-7");
    let tp = v["headers"]["traceparent"].as_str().unwrap();
    assert!(
        tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "{tp}"
    );
    assert!(
        !tp.contains("00f067aa0ba902b7"),
        "a new span for the gateway's hop: {tp}"
    );
    assert!(v["headers"].get("x-secret-hop").is_none(), "{v}");
    assert_eq!(v["headers"]["x-forwarded-for"], "127.0.0.1");

    // By host, onto a base path.
    let r = c
        .get(format!("{}/anything", gw.url))
        .header("host", "Other.Example.com:8080")
        .send()
        .await
        .unwrap();
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["upstream"], "other");
    assert_eq!(v["uri"], "/base/anything");
    assert_eq!(v["headers"]["x-forwarded-host"], "Other.Example.com:8080");

    // Nothing takes it.
    let r = c.get(format!("{}/nowhere", gw.url)).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    assert_eq!(r.headers()["x-request-id"].len(), 32);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["code"], "no-route");
    assert!(v["detail"].as_str().unwrap().contains("GET /nowhere"));
    gw.stop().await;
}

#[tokio::test]
async fn an_upstream_dying_mid_request_is_a_502_and_the_gateway_goes_on() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let dir = tempfile::tempdir().unwrap();
    // Reads the request, then closes without answering.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = silent.accept().await {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            drop(s);
        }
    });
    // Answers headers and half the body it promised, then dies.
    let half = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let half_addr = half.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = half.accept().await {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly part")
                .await;
            drop(s);
        }
    });
    // Never answers.
    let hang = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hang_addr = hang.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = hang.accept().await {
            held.push(s);
        }
    });
    let ok = Echo::start("ok").await;
    let declared = vec![
        route(&format!(
            "name = \"silent\"\npath = \"/silent\"\nupstreams = [{{ url = \"http://{silent_addr}\" }}]"
        )),
        route(&format!(
            "name = \"half\"\npath = \"/half\"\nupstreams = [{{ url = \"http://{half_addr}\" }}]"
        )),
        route(&format!(
            "name = \"hang\"\npath = \"/hang\"\ntimeout = \"300ms\"\nupstreams = [{{ url = \"http://{hang_addr}\" }}]"
        )),
        route(&format!(
            "name = \"ok\"\npath = \"/ok\"\nupstreams = [{{ url = \"{}\" }}]",
            ok.url()
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
    let c = client();
    let (s, v) = get_json(&c, &format!("{}/silent", gw.url)).await;
    assert_eq!(s, 502, "{v}");
    assert_eq!(v["code"], "upstream-unavailable");
    assert!(
        v["detail"].as_str().unwrap().contains("route silent"),
        "{v}"
    );
    let (s, v) = get_json(&c, &format!("{}/hang", gw.url)).await;
    assert_eq!(s, 504, "{v}");
    assert_eq!(v["code"], "upstream-timeout");
    // The answer had started: the client sees it cut short, not a made-up status.
    let r = c.get(format!("{}/half", gw.url)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.bytes().await.is_err(),
        "a body cut short is an error for the client"
    );
    // And the gateway goes on.
    let (s, v) = get_json(&c, &format!("{}/ok", gw.url)).await;
    assert_eq!((s, v["upstream"].as_str()), (200, Some("ok")));
    gw.stop().await;
}
