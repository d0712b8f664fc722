//! A JWKS that goes down, and one that rotates, behind a real HTTP server: once the keys are
//! stale and the JWKS answers 503, requests go on with the keys they have
//! (stale-while-error) and the gateway asks again at most once per backoff interval; while a
//! fetch hangs, requests with a known `kid` do not wait for it; a new `kid` (a rotation) is
//! fetched and accepted; ES256 tokens pass on an ES256 route; keys older than
//! `jwks-max-stale` are no longer trusted (503 `auth-unavailable`) until the JWKS answers
//! again, and a JWKS never reached is 503 too.

mod common;
use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, Ordering};
use std::time::{Duration, Instant};
use switchyard_gateway::GatewayOptions;

const RSA: &str = include_str!("fixtures/rsa.pem");
const RSA2: &str = include_str!("fixtures/rsa2.pem");
const EC: &str = include_str!("fixtures/ec.pem");
const JWKS: &str = include_str!("fixtures/jwks.json");
const ROTATED: &str = include_str!("fixtures/jwks-rotated.json");

const SERVE: u8 = 0;
const FAIL: u8 = 1;
const HANG: u8 = 2;

/// A JWKS endpoint whose answer the test switches: the set, 503, or a request held open.
struct JwksServer {
    url: String,
    mode: Arc<AtomicU8>,
    body: Arc<std::sync::Mutex<&'static str>>,
    hits: Arc<AtomicU32>,
    /// A held request is open now.
    holding: Arc<AtomicBool>,
    release: Arc<tokio::sync::Notify>,
}

/// Clears `holding` when the held request ends, however it ends (released, or dropped when
/// the gateway gives up on it).
struct Holding(Arc<AtomicBool>);

impl Drop for Holding {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

impl JwksServer {
    async fn start(body: &'static str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("test step");
        let url = format!(
            "http://{}/jwks.json",
            listener.local_addr().expect("test step")
        );
        let s = Self {
            url,
            mode: Arc::new(AtomicU8::new(SERVE)),
            body: Arc::new(std::sync::Mutex::new(body)),
            hits: Arc::new(AtomicU32::new(0)),
            holding: Arc::new(AtomicBool::new(false)),
            release: Arc::new(tokio::sync::Notify::new()),
        };
        let (mode, body, hits, holding, release) = (
            s.mode.clone(),
            s.body.clone(),
            s.hits.clone(),
            s.holding.clone(),
            s.release.clone(),
        );
        let app = axum::Router::new().fallback(move || {
            let (mode, body, hits, holding, release) = (
                mode.clone(),
                body.clone(),
                hits.clone(),
                holding.clone(),
                release.clone(),
            );
            async move {
                hits.fetch_add(1, Ordering::SeqCst);
                match mode.load(Ordering::SeqCst) {
                    FAIL => (axum::http::StatusCode::SERVICE_UNAVAILABLE, "down").into_response(),
                    HANG => {
                        holding.store(true, Ordering::SeqCst);
                        let _guard = Holding(holding);
                        release.notified().await;
                        (axum::http::StatusCode::SERVICE_UNAVAILABLE, "late").into_response()
                    }
                    _ => {
                        let b = *body.lock().expect("test step");
                        ([("content-type", "application/json")], b).into_response()
                    }
                }
            }
        });
        tokio::spawn(async move { axum::serve(listener, app).await.expect("test step") });
        s
    }

    fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
    }
}

use axum::response::IntoResponse as _;

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("test step")
        .as_secs()
}

fn token(alg: Algorithm, pem: &str, kid: &str, sub: &str) -> String {
    let mut h = Header::new(alg);
    h.kid = Some(kid.into());
    let key = match alg {
        Algorithm::ES256 => EncodingKey::from_ec_pem(pem.as_bytes()),
        _ => EncodingKey::from_rsa_pem(pem.as_bytes()),
    }
    .expect("test step");
    encode(&h, &json!({"sub": sub, "exp": now() + 600}), &key).expect("test step")
}

/// Status and problem code of `GET url` with `token`.
async fn call(c: &reqwest::Client, url: &str, token: &str) -> (u16, String) {
    let r = c
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .expect("test step");
    let s = r.status().as_u16();
    let v: serde_json::Value = r.json().await.unwrap_or_default();
    (s, v["code"].as_str().unwrap_or("").to_string())
}

/// Asks until the answer is `want` (a deadline of 60 s).
async fn until(c: &reqwest::Client, url: &str, token: &str, want: (u16, &str)) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = call(c, url, token).await;
        if (got.0, got.1.as_str()) == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "still {got:?}, waiting for {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn jwt_route(
    name: &str,
    alg: &str,
    up: &str,
    jwks: &str,
    extra: &str,
) -> switchyard_manifest::RouteSpec {
    route(&format!(
        "name = \"{name}\"\npath = \"/{name}\"\nupstreams = [{{ url = \"{up}\" }}]\n\
         [auth.jwt]\nalgorithm = \"{alg}\"\njwks-url = \"{jwks}\"\n{extra}"
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_keys_serve_through_an_outage_and_a_rotation_is_picked_up() {
    let dir = tempfile::tempdir().expect("test step");
    let echo = Echo::start("backend").await;
    let jwks = JwksServer::start(JWKS).await;
    let declared = vec![
        jwt_route("rs", "RS256", &echo.url(), &jwks.url, "jwks-ttl = \"1s\"\n"),
        jwt_route("es", "ES256", &echo.url(), &jwks.url, "jwks-ttl = \"1s\"\n"),
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
    let rs = format!("{}/rs", gw.url);
    let k1 = token(Algorithm::RS256, RSA, "k1", "ann");
    assert_eq!(call(&c, &rs, &k1).await, (200, String::new()));
    assert_eq!(jwks.hits.load(Ordering::SeqCst), 1);

    // The JWKS goes down and the keys go stale: requests still pass, all of them, and the
    // gateway asks the JWKS again at most once per backoff interval (1 s, doubling).
    jwks.set(FAIL);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let outage = Instant::now();
    let burst = futures::future::join_all((0..30).map(|_| call(&c, &rs, &k1))).await;
    assert!(burst.iter().all(|a| a.0 == 200), "{burst:?}");
    while outage.elapsed() < Duration::from_millis(2500) {
        assert_eq!(call(&c, &rs, &k1).await.0, 200);
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let tries = jwks.hits.load(Ordering::SeqCst) - 1;
    let allowed = outage.elapsed().as_secs() as u32 + 2;
    assert!(
        (1..=allowed).contains(&tries),
        "{tries} fetches in {:?} of outage",
        outage.elapsed()
    );
    // A kid it does not know is refused meanwhile (the keys it has are still usable).
    let k2 = token(Algorithm::RS256, RSA2, "k2", "bob");
    assert_eq!(call(&c, &rs, &k2).await, (401, "invalid-token".into()));

    // A fetch that hangs: requests with a known kid do not wait for it.
    jwks.set(HANG);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !jwks.holding.load(Ordering::SeqCst) {
        assert!(Instant::now() < deadline, "no fetch came");
        assert_eq!(call(&c, &rs, &k1).await.0, 200);
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let during = futures::future::join_all((0..10).map(|_| call(&c, &rs, &k1))).await;
    assert!(during.iter().all(|a| a.0 == 200), "{during:?}");
    assert!(
        jwks.holding.load(Ordering::SeqCst),
        "the requests were answered while the fetch was still open"
    );
    jwks.release.notify_waiters();

    // The JWKS is back with a new key: its tokens are accepted once it is fetched, the old
    // key's still are, and so are ES256 tokens on the ES256 route.
    *jwks.body.lock().expect("test step") = ROTATED;
    jwks.set(SERVE);
    until(&c, &rs, &k2, (200, "")).await;
    assert_eq!(call(&c, &rs, &k1).await.0, 200);
    let es = format!("{}/es", gw.url);
    let e1 = token(Algorithm::ES256, EC, "e1", "cid");
    let r = c.get(&es).bearer_auth(&e1).send().await.expect("test step");
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.expect("test step");
    assert_eq!(v["headers"]["x-user-id"], "cid");
    // Only the route's algorithm: an RS256 token on the ES256 route, and back, fail.
    assert_eq!(call(&c, &es, &k1).await.0, 401);
    assert_eq!(call(&c, &rs, &e1).await.0, 401);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_older_than_max_stale_are_not_trusted() {
    let dir = tempfile::tempdir().expect("test step");
    let echo = Echo::start("backend").await;
    let jwks = JwksServer::start(JWKS).await;
    // A port nothing listens on: bound, then released.
    let nowhere = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("test step");
        format!("http://{}/jwks.json", l.local_addr().expect("test step"))
    };
    let declared = vec![
        jwt_route(
            "short",
            "RS256",
            &echo.url(),
            &jwks.url,
            "jwks-ttl = \"1s\"\njwks-max-stale = \"2s\"\n",
        ),
        jwt_route("never", "RS256", &echo.url(), &nowhere, ""),
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
    let k1 = token(Algorithm::RS256, RSA, "k1", "ann");
    // Never fetched: the tokens cannot be checked.
    let never = format!("{}/never", gw.url);
    assert_eq!(
        call(&c, &never, &k1).await,
        (503, "auth-unavailable".into())
    );

    let short = format!("{}/short", gw.url);
    assert_eq!(call(&c, &short, &k1).await.0, 200);
    jwks.set(FAIL);
    // Stale but within max-stale: still accepted; past it: 503 with Retry-After.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(call(&c, &short, &k1).await.0, 200);
    until(&c, &short, &k1, (503, "auth-unavailable")).await;
    let r = c
        .get(&short)
        .bearer_auth(&k1)
        .send()
        .await
        .expect("test step");
    assert!(r.headers().contains_key("retry-after"));
    // The JWKS answers again: accepted again once the backoff lets a fetch through.
    jwks.set(SERVE);
    until(&c, &short, &k1, (200, "")).await;
    gw.stop().await;
}
