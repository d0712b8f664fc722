//! Weighted round robin, active health checks taking a dead upstream out and putting it
//! back, and route changes under load: every request answered while the table is swapped.

mod common;
use common::*;
use serde_json::json;
use std::sync::atomic::Ordering;
use std::time::Duration;
use switchyard_gateway::GatewayOptions;

#[tokio::test]
async fn weights_split_the_traffic_and_health_checks_steer_around_a_sick_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let a = Echo::start("a").await;
    let b = Echo::start("b").await;
    let declared = vec![route(&format!(
        "name = \"w\"\npath = \"/{{*rest}}\"\nupstreams = [{{ url = \"{}\", weight = 3 }}, {{ url = \"{}\", weight = 1 }}]\n\
         health = {{ path = \"/healthz\", interval = \"50ms\", timeout = \"200ms\", unhealthy-after = 2, healthy-after = 2 }}",
        a.url(),
        b.url()
    ))];
    let gw = Running::start(
        dir.path(),
        GatewayOptions {
            declared,
            ..Default::default()
        },
    )
    .await;
    let c = client();
    let mut counts = std::collections::BTreeMap::new();
    for _ in 0..40 {
        let (_, v) = get_json(&c, &format!("{}/x", gw.url)).await;
        *counts
            .entry(v["upstream"].as_str().unwrap().to_string())
            .or_insert(0) += 1;
    }
    assert_eq!(counts["a"], 30, "{counts:?}");
    assert_eq!(counts["b"], 10, "{counts:?}");

    // a turns sick: after two failed checks it gets nothing.
    a.health.store(500, Ordering::Relaxed);
    wait_until(|| async {
        // A whole cycle of the schedule (a,a,b,a) without a.
        let mut all_b = true;
        for _ in 0..4 {
            let (_, v) = get_json(&c, &format!("{}/x", gw.url)).await;
            all_b &= v["upstream"] == "b";
        }
        all_b
    })
    .await;
    for _ in 0..12 {
        let (_, v) = get_json(&c, &format!("{}/x", gw.url)).await;
        assert_eq!(v["upstream"], "b");
    }
    // Both sick: 503 problem, not a request to a sick upstream.
    b.health.store(500, Ordering::Relaxed);
    wait_until(|| async {
        let (s, _) = get_json(&c, &format!("{}/x", gw.url)).await;
        s == 503
    })
    .await;
    let r = c.get(format!("{}/x", gw.url)).send().await.unwrap();
    assert_eq!(r.headers()["retry-after"], "1");
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["code"], "no-healthy-upstream");
    // Back.
    a.health.store(200, Ordering::Relaxed);
    wait_until(|| async {
        let (s, v) = get_json(&c, &format!("{}/x", gw.url)).await;
        s == 200 && v["upstream"] == "a"
    })
    .await;
    gw.stop().await;
}

#[tokio::test]
async fn route_changes_under_load_lose_no_request() {
    let dir = tempfile::tempdir().unwrap();
    let a = Echo::start("a").await;
    let b = Echo::start("b").await;
    let declared = vec![route(&format!(
        "name = \"live\"\npath = \"/live\"\nupstreams = [{{ url = \"{}\" }}]",
        a.url()
    ))];
    let gw = Running::start(
        dir.path(),
        GatewayOptions {
            declared,
            ..Default::default()
        },
    )
    .await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..8 {
        let (url, stop) = (format!("{}/live", gw.url), stop.clone());
        load.push(tokio::spawn(async move {
            let c = client();
            let mut seen = (0u32, 0u32, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                let r = c.get(&url).send().await.unwrap();
                let status = r.status().as_u16();
                let v: serde_json::Value = r.json().await.unwrap();
                match (status, v["upstream"].as_str()) {
                    (200, Some("a")) => seen.0 += 1,
                    (200, Some("b")) => seen.1 += 1,
                    _ => seen.2.push(format!("{status} {v}")),
                }
            }
            seen
        }));
    }
    let c = client();
    for i in 0..20 {
        let target = if i % 2 == 0 { b.url() } else { a.url() };
        let r = c
            .put(format!("{}/v1/gateway/routes/live", gw.admin))
            .json(&json!({"path": "/live", "upstreams": [{"url": target}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let (mut to_a, mut to_b) = (0, 0);
    for t in load {
        let (x, y, failures) = t.await.unwrap();
        assert!(failures.is_empty(), "{failures:?}");
        to_a += x;
        to_b += y;
    }
    assert!(to_a > 0 && to_b > 0, "{to_a} {to_b}");
    // The last change (to a) holds.
    let (_, v) = get_json(&c, &format!("{}/live", gw.url)).await;
    assert_eq!(v["upstream"], "a");
    gw.stop().await;
}

async fn wait_until<F, Fut>(mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..200 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("condition not met within 5 s");
}
