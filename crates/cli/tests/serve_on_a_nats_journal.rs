//! `switchyard serve --journal nats://...`: the journal lives in NATS JetStream, so a second
//! instance with another data directory serves the same events; a durability the servers
//! cannot give is refused; a bad or unreachable journal URL is an error naming the flag or
//! the config key.

mod common;
use common::*;
use std::process::Command;
use switchyard_journal::nats_server::{self, NatsServer, Sync};

fn stop(mut child: std::process::Child) {
    let pid = child.id().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    assert_eq!(child.wait().expect("wait").code(), Some(0));
}

#[test]
fn two_instances_serve_one_nats_journal() {
    let Some(bin) = nats_server::for_test("two_instances_serve_one_nats_journal") else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("dir");
    let nats = rt
        .block_on(NatsServer::start(&bin, dir.path(), Sync::Always))
        .expect("nats-server");
    let url = format!("{}?sync=always", nats.url);
    let (a_data, b_data) = (Scratch::new(), Scratch::new());
    let (a, base_a, _ea) =
        start_server_with(a_data.data_str(), "127.0.0.1:0", &["--journal", &url]);
    let (b, base_b, _eb) =
        start_server_with(b_data.data_str(), "127.0.0.1:0", &["--journal", &url]);
    rt.block_on(async {
        let c = reqwest::Client::new();
        create_topic(&base_a, "orders.v1", r#"{"partitions": 2}"#).await;
        let batch = r#"[
            {"specversion":"1.0","id":"o-1","source":"/t","type":"order.placed","subject":"order-1","data":{"n":1}},
            {"specversion":"1.0","id":"o-2","source":"/t","type":"order.placed","subject":"order-2","data":{"n":2}},
            {"specversion":"1.0","id":"o-3","source":"/t","type":"order.placed","subject":"order-1","data":{"n":3}}
        ]"#;
        let r = c
            .post(format!("{base_a}/v1/topics/orders.v1/events"))
            .header("content-type", "application/cloudevents-batch+json")
            .body(batch)
            .send()
            .await
            .expect("publish");
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
        // The other instance, with its own data directory, reads them.
        let page: serde_json::Value = c
            .get(format!("{base_b}/v1/topics/orders.v1/events?from=earliest"))
            .send()
            .await
            .expect("read")
            .json()
            .await
            .expect("json");
        let mut ids: Vec<&str> = page["events"]
            .as_array()
            .unwrap_or_else(|| panic!("events in {page}"))
            .iter()
            .filter_map(|e| e["id"].as_str())
            .collect();
        ids.sort_unstable();
        assert_eq!(ids, ["o-1", "o-2", "o-3"], "{page}");
        // Publishing the same id through b is a duplicate of a's.
        let r = c
            .post(format!("{base_b}/v1/topics/orders.v1/events"))
            .header("content-type", "application/cloudevents+json")
            .body(r#"{"specversion":"1.0","id":"o-2","source":"/t","type":"order.placed","subject":"order-2","data":{"n":2}}"#)
            .send()
            .await
            .expect("publish on b");
        let body: serde_json::Value = r.json().await.expect("json");
        assert_eq!(body["events"][0]["duplicate"], true, "{body}");
    });
    stop(a);
    stop(b);
}

#[test]
fn durability_the_servers_cannot_give_is_refused() {
    let Some(bin) = nats_server::for_test("durability_the_servers_cannot_give_is_refused") else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("dir");
    let nats = rt
        .block_on(NatsServer::start(&bin, dir.path(), Sync::Default))
        .expect("nats-server");
    let data = Scratch::new();
    let (serve, base, _e) =
        start_server_with(data.data_str(), "127.0.0.1:0", &["--journal", &nats.url]);
    rt.block_on(async {
        let c = reqwest::Client::new();
        // The default durability is `always`; a server syncing every 2 minutes cannot.
        let r = c
            .put(format!("{base}/v1/topics/orders.v1"))
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .expect("PUT");
        assert_eq!(r.status(), 400);
        let p: serde_json::Value = r.json().await.expect("problem");
        assert_eq!(p["code"], "invalid-topic-config", "{p}");
        assert_eq!(p["pointer"], "durability", "{p}");
        assert!(
            p["detail"].as_str().unwrap_or("").contains("sync_interval"),
            "{p}"
        );
        create_topic(&base, "orders.v1", r#"{"durability": "os"}"#).await;
    });
    stop(serve);
}

#[test]
fn bad_journal_urls_name_the_flag_or_key() {
    let s = Scratch::new();
    let r = run(&["serve", "--data", s.data_str(), "--journal", "bogus"]).expect_code(2);
    assert!(
        r.stderr.contains("--journal") && r.stderr.contains("bogus"),
        "{}",
        r.stderr
    );
    let r = run(&[
        "serve",
        "--data",
        s.data_str(),
        "--journal",
        "nats://h?replicas=9",
    ])
    .expect_code(2);
    assert!(r.stderr.contains("--journal"), "{}", r.stderr);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let nobody = format!("nats://127.0.0.1:{port}");
    let r = run(&["serve", "--data", s.data_str(), "--journal", &nobody]).expect_code(2);
    assert!(
        r.stderr.contains("--journal") && r.stderr.contains(&port.to_string()),
        "{}",
        r.stderr
    );
    let dir = tempfile::tempdir().expect("dir");
    let cfg = dir.path().join("switchyard.toml");
    std::fs::write(&cfg, "[server]\njournal = \"kafka://x:1\"\n").expect("write");
    let r = run(&[
        "serve",
        "--data",
        s.data_str(),
        "--config",
        cfg.to_str().expect("utf-8"),
    ])
    .expect_code(2);
    assert!(r.stderr.contains("[server] journal"), "{}", r.stderr);
}
