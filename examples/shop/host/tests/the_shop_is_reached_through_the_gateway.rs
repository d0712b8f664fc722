//! The shop's public API is the gateway's `/api` routes (examples/shop/switchyard.toml):
//! orders need a JWT signed with the development secret `switchyard dev` made, which
//! `dev-token` signs with; the customer is the token's user whatever the client claims; the
//! overview composes orders and payments; the stock is public. And `dev-token` refuses what
//! it cannot do, naming why.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `shop-host dev-token ARGS...`: (exit success, stdout, stderr).
fn dev_token(args: &[&str], state: &Path, env: &[(&str, &str)]) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shop-host"));
    cmd.arg("dev-token")
        .arg(common::system())
        .arg("--state")
        .arg(state)
        .args(args)
        .env_remove("SHOP_JWT_SECRET")
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run dev-token");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_go_through_the_gateway_with_a_dev_token() {
    let state = tempfile::tempdir().expect("tempdir");

    // Before any `dev` there is no secret to sign with: an error that says what to do.
    let (ok, _, err) = dev_token(&["--sub", "ada"], state.path(), &[]);
    assert!(!ok);
    assert!(
        err.contains("SHOP_JWT_SECRET is not set") && err.contains("start `switchyard dev` once"),
        "{err}"
    );

    let shop = common::Shop::start(state.path());
    let gw = shop.gateway.clone();
    let secret_file = state.path().join("secrets/SHOP_JWT_SECRET");
    let secret = std::fs::read_to_string(&secret_file).expect("the development secret");
    assert_eq!(secret.len(), 64, "32 random bytes, hex");
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&secret_file)
        .expect("meta")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "only its owner reads it");

    let (ok, token, err) = dev_token(&["--sub", "ada"], state.path(), &[]);
    assert!(ok, "{err}");
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
    let http = reqwest::Client::new();
    let bearer = format!("Bearer {token}");

    // No token, a token signed with another secret, a token whose user is empty: refused.
    let order = serde_json::json!({"customer": "mallory", "items": [{"sku": "widget", "qty": 1}]});
    let r = http
        .post(format!("{gw}/api/orders"))
        .json(&order)
        .send()
        .await
        .expect("POST without a token");
    assert_eq!(r.status(), 401);
    assert!(r.text().await.unwrap().contains("missing-credentials"));
    let other_secret = "x".repeat(40);
    let (ok, forged, err) = dev_token(
        &["--sub", "ada"],
        state.path(),
        &[("SHOP_JWT_SECRET", other_secret.as_str())],
    );
    assert!(ok, "{err}");
    let r = http
        .post(format!("{gw}/api/orders"))
        .bearer_auth(&forged)
        .json(&order)
        .send()
        .await
        .expect("POST with a forged token");
    assert_eq!(r.status(), 401);
    assert!(r.text().await.unwrap().contains("invalid-token"));

    // The customer is the token's user: the client's body and its own x-user-id are ignored.
    let r = http
        .post(format!("{gw}/api/orders"))
        .header("authorization", &bearer)
        .header("x-user-id", "mallory")
        .json(&order)
        .send()
        .await
        .expect("POST /api/orders");
    assert_eq!(r.status(), 202);
    assert!(r.headers().contains_key("ratelimit-remaining"));
    let location = r.headers()["location"]
        .to_str()
        .expect("location")
        .to_string();
    let placed: serde_json::Value = r.json().await.expect("json");
    let id = placed["order"].as_str().expect("order id").to_string();
    // orders said /orders/{id}; through the gateway that is /api/orders/{id}.
    assert_eq!(location, format!("/api/orders/{id}"));

    let deadline = Instant::now() + Duration::from_secs(30);
    let overview = loop {
        let r = http
            .get(format!("{gw}/api/orders/{id}/overview"))
            .header("authorization", &bearer)
            .send()
            .await
            .expect("GET overview");
        assert_eq!(r.status(), 200);
        let o: serde_json::Value = r.json().await.expect("json");
        if o["data"]["state"] == "confirmed" && o["partial"] == false {
            break o;
        }
        assert!(Instant::now() < deadline, "not confirmed and paid: {o}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(overview["data"]["customer"], "ada", "{overview}");
    assert_eq!(
        overview["data"]["payment"]["state"], "captured",
        "{overview}"
    );
    assert_eq!(overview["data"]["payment"]["customer"], "ada", "{overview}");
    assert_eq!(overview["parts"]["order"]["status"], 200, "{overview}");
    assert_eq!(overview["parts"]["payment"]["status"], 200, "{overview}");

    let one: serde_json::Value = http
        .get(format!("{gw}/api/orders/{id}"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("GET /api/orders/{id}")
        .json()
        .await
        .expect("json");
    assert_eq!(one["state"], "confirmed", "{one}");

    // An order of nobody's (payments has none for it): the required part fails the route.
    let r = http
        .get(format!("{gw}/api/orders/ord-nosuch/overview"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("GET overview of no order");
    assert_eq!(r.status(), 404);
    assert!(r.text().await.unwrap().contains("part-failed"));

    // The stock is public.
    let stock = http
        .get(format!("{gw}/api/stock"))
        .send()
        .await
        .expect("GET /api/stock");
    assert_eq!(stock.status(), 200);
    let stock: serde_json::Value = stock.json().await.expect("json");
    assert!(
        stock["stock"].as_array().is_some_and(|s| s.len() == 4),
        "{stock}"
    );

    // Every answer of an access-logged route is an event in the journal.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let page: serde_json::Value = http
            .get(format!(
                "{}/v1/topics/gateway.access.v1/events?from=earliest&limit=100",
                shop.api
            ))
            .send()
            .await
            .expect("read access records")
            .json()
            .await
            .expect("json");
        let records = page["events"].as_array().cloned().unwrap_or_default();
        let statuses: Vec<i64> = records
            .iter()
            .filter_map(|e| e["data"]["status"].as_i64())
            .collect();
        if statuses.contains(&202) && statuses.contains(&401) {
            break;
        }
        assert!(Instant::now() < deadline, "access records: {page}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shop.stop();

    // What dev-token refuses, each with the reason.
    for (args, says) in [
        (&["--route", "stock"][..], "the route has no HS256 auth"),
        (&["--route", "nosuch"][..], "no such route"),
        (&["--sub", ""][..], "--sub: the user may not be empty"),
        (&["--claim", "=x"][..], "give KEY=VALUE"),
        (&["--ttl", "soon"][..], "--ttl"),
    ] {
        let (ok, out, err) = dev_token(args, state.path(), &[]);
        assert!(!ok && out.is_empty(), "{args:?}: {out}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    std::fs::write(&secret_file, "short").expect("spoil the secret");
    let (ok, _, err) = dev_token(&[], state.path(), &[]);
    assert!(!ok);
    assert!(err.contains("fewer than 32 bytes"), "{err}");
}
