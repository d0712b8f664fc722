//! `switchyard serve --gateway-listen` with a route of switchyard.toml behind API keys (from
//! the environment), with a rate limit and a daily quota: a known key passes with its name
//! for the backend and the `RateLimit-*` headers, an unknown one is refused; the quota is
//! counted in the store in the data directory, so a restarted server goes on from where the
//! first stopped; and a bad limit in the config is refused with file, line and key.

mod common;
use common::*;
use std::io::BufRead as _;
use std::process::{Child, Command, Stdio};

const KEYS: &str = "ann=ann-key-0123456789abcdef, bob=bob-key-0123456789abcdef";

/// A backend that answers with the user id it was given.
async fn backend() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let app = axum::Router::new().fallback(|req: axum::extract::Request| async move {
        let user = req
            .headers()
            .get("x-user-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        axum::Json(serde_json::json!({ "user": user, "path": req.uri().path() }))
    });
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    url
}

struct Serve {
    child: Child,
    gateway: String,
}

fn start(data: &str, config: &std::path::Path) -> Serve {
    let mut child = Command::new(BIN)
        .args(["serve", "--data", data, "--config"])
        .arg(config)
        .env("TEST_SHOP_KEYS", KEYS)
        .env_remove("SWITCHYARD_GATEWAY_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start serve");
    let (gateway, stderr) = gateway_address(&mut child);
    std::thread::spawn(move || for _ in stderr.lines() {});
    Serve { child, gateway }
}

impl Serve {
    fn stop(mut self) {
        stop_cleanly(&mut self.child);
    }
}

async fn get(
    c: &reqwest::Client,
    url: &str,
    key: &str,
) -> (u16, reqwest::header::HeaderMap, serde_json::Value) {
    let r = c
        .get(url)
        .header("x-api-key", key)
        .send()
        .await
        .expect("request");
    let (s, h) = (r.status().as_u16(), r.headers().clone());
    (s, h, r.json().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_rate_limits_and_quotas_through_serve() {
    let s = Scratch::new();
    let up = backend().await;
    let dir = tempfile::tempdir().expect("dir");
    let cfg = dir.path().join("switchyard.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ngateway-listen = \"127.0.0.1:0\"\n\n\
             [[routes]]\nname = \"api\"\npath = \"/api/{{*rest}}\"\nstrip-prefix = true\n\
             upstreams = [{{ url = \"{up}\" }}]\n\
             rate-limit = {{ requests = 100, per = \"1s\" }}\nquota = {{ daily = 5 }}\n\
             [routes.auth]\napi-keys-env = \"TEST_SHOP_KEYS\"\n"
        ),
    )
    .expect("write");
    let c = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let serve = start(s.data_str(), &cfg);
    let url = format!("{}/api/orders", serve.gateway);
    let (st, h, v) = get(&c, &url, "ann-key-0123456789abcdef").await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["user"], "ann", "the backend gets the key's name");
    // The quota is the budget closest to running out: 4 of 5 left today.
    assert_eq!(h["ratelimit-limit"], "5");
    assert_eq!(h["ratelimit-remaining"], "4");
    let (st, _, v) = get(&c, &url, "not-a-key-0123456789abcdef").await;
    assert_eq!((st, v["code"].as_str()), (401, Some("invalid-api-key")));
    for _ in 0..2 {
        assert_eq!(get(&c, &url, "ann-key-0123456789abcdef").await.0, 200);
    }
    serve.stop();

    // Restarted on the same data directory: ann has 2 left today, bob all 5.
    let serve = start(s.data_str(), &cfg);
    let url = format!("{}/api/orders", serve.gateway);
    for left in ["1", "0"] {
        let (st, h, _) = get(&c, &url, "ann-key-0123456789abcdef").await;
        assert_eq!(
            (st, h["ratelimit-remaining"].to_str().expect("ascii")),
            (200, left)
        );
    }
    let (st, h, v) = get(&c, &url, "ann-key-0123456789abcdef").await;
    assert_eq!(
        (st, v["code"].as_str()),
        (429, Some("quota-exceeded")),
        "{v}"
    );
    let wait: u64 = h["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=86_400).contains(&wait), "{wait}");
    let (st, h, _) = get(&c, &url, "bob-key-0123456789abcdef").await;
    assert_eq!(
        (st, h["ratelimit-remaining"].to_str().expect("ascii")),
        (200, "4")
    );
    serve.stop();

    // A bad limit: refused at start, with file, line and key.
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n\n[[routes]]\nname = \"api\"\npath = \"/\"\n\
             upstreams = [{{ url = \"{up}\" }}]\nrate-limit = {{ requests = 0, per = \"1s\" }}\n"
        ),
    )
    .expect("write");
    let r = run(&[
        "serve",
        "--data",
        s.data_str(),
        "--config",
        cfg.to_str().expect("utf-8"),
    ])
    .expect_code(2);
    assert!(
        r.stderr.contains("switchyard.toml:8:")
            && r.stderr.contains("routes[0].rate-limit.requests"),
        "{}",
        r.stderr
    );
}
