//! Rate limits and quotas under concurrency: many clients at once get exactly their budget
//! per consumer (JWT user, client IP) or per route, the rest 429 with a sane `Retry-After`
//! and the `RateLimit-*` headers (also on the answers that pass); quotas are counted in the
//! store and survive a restart of the gateway; a bad limit is refused by the admin API naming
//! the field, and changes nothing.

mod common;
use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use switchyard_gateway::GatewayOptions;
use switchyard_store::Store;
use switchyard_store::sqlite::SqliteStore;

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("test step")
        .as_secs()
}

/// An HS256 token of `sub`, signed with the secret the routes name (the package
/// description, a variable cargo sets for tests).
fn token(sub: &str) -> String {
    let secret = std::env::var("CARGO_PKG_DESCRIPTION").expect("cargo sets it");
    encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": sub, "exp": now() + 600}),
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("test step")
}

const HS: &str = "[auth.jwt]\nalgorithm = \"HS256\"\nsecret-env = \"CARGO_PKG_DESCRIPTION\"\n";

/// One answer: status, the headers that matter, the problem code.
#[derive(Debug)]
struct Answer {
    status: u16,
    limit: Option<u64>,
    remaining: Option<u64>,
    reset: Option<u64>,
    retry_after: Option<u64>,
    code: Option<String>,
}

async fn send(c: &reqwest::Client, url: &str, bearer: Option<&str>) -> Answer {
    let mut r = c.get(url);
    if let Some(t) = bearer {
        r = r.bearer_auth(t);
    }
    let r = r.send().await.expect("test step");
    let num = |name: &str| {
        r.headers()
            .get(name)
            .map(|v| v.to_str().expect("test step").parse::<u64>().expect(name))
    };
    let (limit, remaining, reset, retry_after) = (
        num("ratelimit-limit"),
        num("ratelimit-remaining"),
        num("ratelimit-reset"),
        num("retry-after"),
    );
    let status = r.status().as_u16();
    if status == 429 {
        assert_eq!(
            r.headers()["content-type"],
            "application/problem+json",
            "a 429 is problem+json"
        );
    }
    let body: serde_json::Value = r.json().await.unwrap_or_default();
    Answer {
        status,
        limit,
        remaining,
        reset,
        retry_after,
        code: body["code"].as_str().map(str::to_string),
    }
}

/// `n` requests at once; the answers.
async fn burst(c: &reqwest::Client, url: &str, bearer: Option<String>, n: usize) -> Vec<Answer> {
    let calls = (0..n).map(|_| {
        let (c, url, bearer) = (c.clone(), url.to_string(), bearer.clone());
        tokio::spawn(async move { send(&c, &url, bearer.as_deref()).await })
    });
    let mut out = Vec::new();
    for h in futures::future::join_all(calls).await {
        out.push(h.expect("test step"));
    }
    out
}

/// Checks a burst: exactly `allowed` passed, each reporting a different remaining count
/// from `allowed - 1` down to 0; the others are 429 `code` with `Retry-After` in
/// 1..=`max_wait` and remaining 0.
fn check_burst(what: &str, answers: &[Answer], allowed: u64, code: &str, max_wait: u64) {
    let passed: Vec<&Answer> = answers.iter().filter(|a| a.status == 200).collect();
    assert_eq!(passed.len() as u64, allowed, "{what}: {answers:?}");
    let mut remaining: Vec<u64> = passed
        .iter()
        .map(|a| a.remaining.expect("RateLimit-Remaining on a 200"))
        .collect();
    remaining.sort_unstable();
    assert_eq!(remaining, (0..allowed).collect::<Vec<_>>(), "{what}");
    for a in answers.iter().filter(|a| a.status != 200) {
        assert_eq!(a.status, 429, "{what}: {a:?}");
        assert_eq!(a.code.as_deref(), Some(code), "{what}: {a:?}");
        assert_eq!((a.remaining, a.limit.is_some()), (Some(0), true), "{what}");
        let wait = a.retry_after.expect("Retry-After on a 429");
        assert!((1..=max_wait).contains(&wait), "{what}: Retry-After {wait}");
        assert!(a.reset.expect("RateLimit-Reset") >= wait, "{what}: {a:?}");
    }
}

async fn open_store(dir: &std::path::Path) -> SqliteStore {
    SqliteStore::open(dir.join("store.sqlite"))
        .await
        .expect("test step")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_clients_get_exactly_their_budget() {
    let dir = tempfile::tempdir().expect("test step");
    let echo = Echo::start("backend").await;
    let up = echo.url();
    // 5 an hour (one every 12 minutes): nothing refills while the test runs.
    let declared = vec![
        route(&format!(
            "name = \"users\"\npath = \"/users\"\nupstreams = [{{ url = \"{up}\" }}]\n\
             rate-limit = {{ requests = 5, per = \"1h\" }}\n{HS}"
        )),
        route(&format!(
            "name = \"open\"\npath = \"/open\"\nupstreams = [{{ url = \"{up}\" }}]\n\
             rate-limit = {{ requests = 30, per = \"1h\", burst = 3 }}\n"
        )),
        route(&format!(
            "name = \"shared\"\npath = \"/shared\"\nupstreams = [{{ url = \"{up}\" }}]\n\
             rate-limit = {{ requests = 4, per = \"1h\", by = \"route\" }}\n{HS}"
        )),
        route(&format!(
            "name = \"free\"\npath = \"/free\"\nupstreams = [{{ url = \"{up}\" }}]\n"
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
    // Two users, 40 requests each, all at once: 5 each pass.
    let users = format!("{}/users", gw.url);
    let (ann, bob) = tokio::join!(
        burst(&c, &users, Some(token("ann")), 40),
        burst(&c, &users, Some(token("bob")), 40)
    );
    check_burst("ann", &ann, 5, "rate-limited", 720);
    check_burst("bob", &bob, 5, "rate-limited", 720);
    assert!(ann.iter().all(|a| a.limit == Some(5)));

    // Without auth the consumer is the client's address: 127.0.0.1 and 127.0.0.2 each get 3.
    let from = |ip: [u8; 4]| {
        reqwest::Client::builder()
            .no_proxy()
            .local_address(std::net::IpAddr::from(ip))
            .build()
            .expect("test step")
    };
    let (one, two) = (from([127, 0, 0, 1]), from([127, 0, 0, 2]));
    let open = format!("{}/open", gw.url);
    let (a, b) = tokio::join!(burst(&one, &open, None, 20), burst(&two, &open, None, 20));
    check_burst("127.0.0.1", &a, 3, "rate-limited", 120);
    check_burst("127.0.0.2", &b, 3, "rate-limited", 120);

    // `by = "route"`: every consumer shares one budget of 4.
    let shared = format!("{}/shared", gw.url);
    let (a, b) = tokio::join!(
        burst(&c, &shared, Some(token("ann")), 10),
        burst(&c, &shared, Some(token("bob")), 10)
    );
    let both: Vec<Answer> = a.into_iter().chain(b).collect();
    check_burst("shared", &both, 4, "rate-limited", 900);

    // A route without limits sends no RateLimit headers.
    let free = send(&c, &format!("{}/free", gw.url), None).await;
    assert_eq!((free.status, free.limit), (200, None));

    let (s, metrics) = {
        let r = c
            .get(format!("{}/v1/gateway/metrics", gw.admin))
            .send()
            .await
            .expect("test step");
        (r.status(), r.text().await.expect("test step"))
    };
    assert_eq!(s, 200);
    assert!(
        metrics.contains("switchyard_gateway_rate_limited_total 120\n"),
        "35 + 35 + 17 + 17 + 16: {metrics}"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_survive_a_restart_and_are_counted_per_consumer() {
    let dir = tempfile::tempdir().expect("test step");
    let echo = Echo::start("backend").await;
    let up = echo.url();
    let declared = vec![
        route(&format!(
            "name = \"q\"\npath = \"/q\"\nupstreams = [{{ url = \"{up}\" }}]\n\
             quota = {{ daily = 7, monthly = 100 }}\n{HS}"
        )),
        route(&format!(
            "name = \"big\"\npath = \"/big\"\nupstreams = [{{ url = \"{up}\" }}]\n\
             quota = {{ daily = 1000 }}\n{HS}"
        )),
    ];
    let journal = dir.path().join("journal");
    let start = |store: SqliteStore| {
        let declared = declared.clone();
        let journal = journal.clone();
        async move {
            let store: Arc<dyn Store> = Arc::new(store);
            Running::start(
                &journal,
                GatewayOptions {
                    declared,
                    store: Some(store),
                    ..Default::default()
                },
            )
            .await
        }
    };
    let store = open_store(dir.path()).await;
    let gw = start(store.clone()).await;
    let c = client();
    let q = format!("{}/q", gw.url);
    let ann = token("ann");
    for left in [6, 5, 4, 3] {
        let a = send(&c, &q, Some(&ann)).await;
        assert_eq!((a.status, a.limit, a.remaining), (200, Some(7), Some(left)));
        assert!((1..=86_400).contains(&a.reset.expect("reset")), "{a:?}");
    }
    let big = format!("{}/big", gw.url);
    for _ in 0..3 {
        assert_eq!(send(&c, &big, Some(&ann)).await.status, 200);
    }
    // Reserved in blocks of 10 while running...
    let used = |store: SqliteStore, key: &'static str| async move {
        store
            .quotas(key)
            .await
            .expect("test step")
            .iter()
            .map(|q| q.used)
            .collect::<Vec<_>>()
    };
    assert_eq!(used(store.clone(), "gateway/big/day/user:ann").await, [10]);
    gw.stop().await;
    // ... and what was not spent is given back at shutdown.
    assert_eq!(used(store.clone(), "gateway/big/day/user:ann").await, [3]);
    store.close().await;

    // A new gateway on the same journal and store: ann has 3 left today.
    let store = open_store(dir.path()).await;
    let gw = start(store.clone()).await;
    let q = format!("{}/q", gw.url);
    for left in [2, 1, 0] {
        let a = send(&c, &q, Some(&ann)).await;
        assert_eq!((a.status, a.remaining), (200, Some(left)), "{a:?}");
    }
    let over = send(&c, &q, Some(&ann)).await;
    assert_eq!(
        (
            over.status,
            over.code.as_deref(),
            over.remaining,
            over.limit
        ),
        (429, Some("quota-exceeded"), Some(0), Some(7))
    );
    let wait = over.retry_after.expect("Retry-After");
    assert!(
        (1..=86_400).contains(&wait),
        "until the UTC day ends: {wait}"
    );
    // Another consumer has its own counter: 20 at once, exactly 7 pass.
    let bob = burst(&c, &q, Some(token("bob")), 20).await;
    check_burst("bob", &bob, 7, "quota-exceeded", 86_400);
    // What the store holds, through the admin API.
    let (s, v) = get_json(&c, &format!("{}/v1/gateway/routes/q/quotas", gw.admin)).await;
    assert_eq!(s, 200, "{v}");
    let counters: BTreeMap<String, u64> = v["quotas"]
        .as_array()
        .expect("test step")
        .iter()
        .map(|q| {
            (
                q["key"].as_str().expect("test step").to_string(),
                q["used"].as_u64().expect("test step"),
            )
        })
        .collect();
    assert_eq!(
        counters,
        BTreeMap::from([
            ("gateway/q/day/user:ann".to_string(), 7),
            ("gateway/q/day/user:bob".to_string(), 7),
            // The refused requests took nothing from the month.
            ("gateway/q/month/user:ann".to_string(), 7),
            ("gateway/q/month/user:bob".to_string(), 7),
        ])
    );
    gw.stop().await;
    store.close().await;
}

#[tokio::test]
async fn bad_limits_are_refused_naming_the_field() {
    let dir = tempfile::tempdir().expect("test step");
    let store: Arc<dyn Store> = Arc::new(open_store(dir.path()).await);
    let gw = Running::start(
        &dir.path().join("journal"),
        GatewayOptions {
            store: Some(store),
            ..Default::default()
        },
    )
    .await;
    let c = client();
    let put = |admin: String, name: &'static str, body: serde_json::Value| {
        let c = c.clone();
        let url = format!("{admin}/v1/gateway/routes/{name}");
        async move {
            let r = c.put(url).json(&body).send().await.expect("test step");
            let s = r.status().as_u16();
            (s, r.json::<serde_json::Value>().await.unwrap_or_default())
        }
    };
    let base = |extra: serde_json::Value| {
        let mut v = json!({"path": "/x", "upstreams": [{"url": "http://127.0.0.1:9"}]});
        for (k, x) in extra.as_object().expect("test step") {
            v[k] = x.clone();
        }
        v
    };
    for (body, pointer) in [
        (
            json!({"rate-limit": {"requests": 0, "per": "1s"}}),
            "/rate-limit/requests",
        ),
        (
            json!({"rate-limit": {"requests": 5, "per": "0s"}}),
            "/rate-limit/per",
        ),
        (
            json!({"rate-limit": {"requests": 5, "per": "1s", "burst": 0}}),
            "/rate-limit/burst",
        ),
        (json!({"quota": {}}), "/quota"),
        (
            json!({"quota": {"daily": 10, "monthly": 5}}),
            "/quota/daily",
        ),
    ] {
        let (s, v) = put(gw.admin.clone(), "bad", base(body.clone())).await;
        assert_eq!(s, 422, "{body}: {v}");
        assert_eq!(v["pointer"], pointer, "{body}: {v}");
    }
    // What serde refuses is named in the message.
    for (body, names) in [
        (
            json!({"rate-limit": {"requests": 5, "per": "1s", "by": "planet"}}),
            "planet",
        ),
        (json!({"quota": {"daily": 5, "weekly": 1}}), "weekly"),
        (json!({"rate-limit": {"requests": 5}}), "per"),
    ] {
        let (s, v) = put(gw.admin.clone(), "bad", base(body.clone())).await;
        assert_eq!(s, 422, "{body}: {v}");
        assert!(v["detail"].as_str().unwrap_or("").contains(names), "{v}");
    }
    let (_, v) = get_json(&c, &format!("{}/v1/gateway/routes", gw.admin)).await;
    assert_eq!(v["routes"], json!([]), "nothing was written");
    // A good one is taken.
    let (s, v) = put(
        gw.admin.clone(),
        "good",
        base(json!({"rate-limit": {"requests": 5, "per": "1s"}, "quota": {"monthly": 9}})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(
        v["route"]["rate-limit"],
        json!({"requests": 5, "per": "1s"})
    );
    gw.stop().await;

    // Without a store a quota cannot be counted: refused, naming `quota`.
    let dir = tempfile::tempdir().expect("test step");
    let gw = Running::start(dir.path(), GatewayOptions::default()).await;
    let (s, v) = put(gw.admin.clone(), "q", base(json!({"quota": {"daily": 5}}))).await;
    assert_eq!((s, v["pointer"].as_str()), (422, Some("/quota")), "{v}");
    gw.stop().await;
}
