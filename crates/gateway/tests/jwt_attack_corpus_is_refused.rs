//! The JWT attack corpus against a route on RS256 with a JWKS, and one on HS256: `alg: none`,
//! HS/RS confusion (HS256 signed with the RSA public key as the secret), expired, not yet
//! valid, wrong audience, wrong issuer, bad signature, unknown `kid`, an oversized token, no
//! token; a good one passes with the user id and a claim in headers, and the client's own
//! copies of those headers are dropped. A route whose secret variable is unset is left out.

mod common;
use base64::Engine as _;
use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::json;
use switchyard_gateway::GatewayOptions;

const RSA: &str = include_str!("fixtures/rsa.pem");
const RSA_PUB: &str = include_str!("fixtures/rsa.pub.pem");
const JWKS: &str = include_str!("fixtures/jwks.json");

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("test step")
        .as_secs()
}

fn rs(claims: &serde_json::Value, kid: &str) -> String {
    let mut h = Header::new(Algorithm::RS256);
    h.kid = Some(kid.into());
    encode(
        &h,
        claims,
        &EncodingKey::from_rsa_pem(RSA.as_bytes()).expect("test step"),
    )
    .expect("test step")
}

#[tokio::test]
async fn forged_expired_and_misdirected_tokens_are_refused() {
    let dir = tempfile::tempdir().expect("test step");
    let echo = Echo::start("backend").await;
    let jwks = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("test step");
    let jwks_url = format!("http://{}/jwks.json", jwks.local_addr().expect("test step"));
    tokio::spawn(async move {
        let app = axum::Router::new()
            .fallback(|| async { ([("content-type", "application/json")], JWKS) });
        axum::serve(jwks, app).await.expect("test step");
    });
    // The package description is a runtime variable cargo sets for tests: the HS256 secret.
    let secret = std::env::var("CARGO_PKG_DESCRIPTION").expect("cargo sets it");
    let declared = vec![
        route(&format!(
            "name = \"rs\"\npath = \"/rs\"\nupstreams = [{{ url = \"{}\" }}]\n[auth]\napi-keys-env = \"CARGO_PKG_NAME_KEYS_UNSET\"\n",
            echo.url()
        )),
        route(&format!(
            "name = \"rs2\"\npath = \"/rs2\"\nupstreams = [{{ url = \"{}\" }}]\n[auth.jwt]\nalgorithm = \"RS256\"\njwks-url = \"{jwks_url}\"\nissuer = \"https://id.test\"\naudience = [\"shop\"]\nleeway = \"5s\"\nclaims = {{ \"x-user-email\" = \"email\" }}\n",
            echo.url()
        )),
        route(&format!(
            "name = \"hs\"\npath = \"/hs\"\nupstreams = [{{ url = \"{}\" }}]\n[auth.jwt]\nalgorithm = \"HS256\"\nsecret-env = \"CARGO_PKG_DESCRIPTION\"\n",
            echo.url()
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
    // A route whose secret variable is not set is left out, named.
    assert!(gw.gateway.table().broken["rs"].contains("CARGO_PKG_NAME_KEYS_UNSET"));
    let c = client();
    let call = |path: &'static str, token: Option<String>| {
        let c = c.clone();
        let url = format!("{}{path}", gw.url);
        async move {
            let mut r = c
                .get(url)
                .header("x-user-id", "admin")
                .header("x-user-email", "forged@x");
            if let Some(t) = token {
                r = r.bearer_auth(t);
            }
            let r = r.send().await.expect("test step");
            let s = r.status().as_u16();
            (s, r.json::<serde_json::Value>().await.unwrap_or_default())
        }
    };
    let good = json!({"sub": "ann", "email": "ann@shop", "iss": "https://id.test", "aud": "shop", "exp": now() + 300});
    let (s, v) = call("/rs2", Some(rs(&good, "k1"))).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["headers"]["x-user-id"], "ann");
    assert_eq!(v["headers"]["x-user-email"], "ann@shop");

    let with = |k: &str, val: serde_json::Value| {
        let mut c = good.clone();
        c[k] = val;
        c
    };
    let b64 = |v: &serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let alg_none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&good)
    );
    let confusion = {
        let h = Header::new(Algorithm::HS256);
        encode(&h, &good, &EncodingKey::from_secret(RSA_PUB.as_bytes())).expect("test step")
    };
    let bad_signature = {
        let t = rs(&good, "k1");
        let (head, sig) = t.rsplit_once('.').expect("test step");
        let mut sig = sig.as_bytes().to_vec();
        sig[5] = if sig[5] == b'A' { b'B' } else { b'A' };
        format!("{head}.{}", String::from_utf8(sig).expect("test step"))
    };
    let corpus = [
        ("alg none", alg_none),
        ("HS/RS confusion", confusion),
        ("expired", rs(&with("exp", json!(now() - 60)), "k1")),
        ("not yet valid", rs(&with("nbf", json!(now() + 120)), "k1")),
        ("wrong audience", rs(&with("aud", json!("admin")), "k1")),
        (
            "wrong issuer",
            rs(&with("iss", json!("https://evil")), "k1"),
        ),
        (
            "no exp",
            rs(
                &json!({"sub": "ann", "iss": "https://id.test", "aud": "shop"}),
                "k1",
            ),
        ),
        ("bad signature", bad_signature),
        ("unknown kid", rs(&good, "k2")),
        ("oversized", rs(&with("pad", json!("x".repeat(9000))), "k1")),
        ("garbage", "a.b.c".to_string()),
    ];
    for (what, token) in corpus {
        let (s, v) = call("/rs2", Some(token)).await;
        assert_eq!(s, 401, "{what}: {v}");
        let code = v["code"].as_str().unwrap_or_default();
        assert!(
            ["invalid-token", "token-too-large"].contains(&code),
            "{what}: {v}"
        );
        if what == "oversized" {
            assert_eq!(code, "token-too-large");
        }
    }
    let (s, v) = call("/rs2", None).await;
    assert_eq!((s, v["code"].as_str()), (401, Some("missing-credentials")));

    // HS256: the secret's own tokens pass, an RS256 token for the same claims does not.
    let hs = encode(
        &Header::new(Algorithm::HS256),
        &good,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("test step");
    let (s, v) = call("/hs", Some(hs)).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["headers"]["x-user-id"], "ann");
    // Not one of this route's headers: passed on as the client sent it.
    assert_eq!(v["headers"]["x-user-email"], "forged@x");
    let (s, _) = call("/hs", Some(rs(&good, "k1"))).await;
    assert_eq!(s, 401);
    gw.stop().await;
}

/// A route with a fixed key remembers the tokens it accepted: a remembered token still
/// expires on time, another route (another secret) does not take it, a token differing
/// only in its signature is not taken for it, and the client's own user header is still
/// replaced on a remembered grant.
#[tokio::test]
async fn a_remembered_token_still_expires_and_stays_with_its_route() {
    let dir = tempfile::tempdir().expect("test step");
    let echo = Echo::start("backend").await;
    let secret_a = "a".repeat(40);
    let secret_b = "b".repeat(40);
    let hs_route = |name: &str, var: &str| {
        route(&format!(
            "name = \"{name}\"\npath = \"/{name}\"\nupstreams = [{{ url = \"{}\" }}]\n[auth.jwt]\nalgorithm = \"HS256\"\nsecret-env = \"{var}\"\nleeway = \"0s\"\n",
            echo.url()
        ))
    };
    let gw = Running::start(
        dir.path(),
        GatewayOptions {
            declared: vec![hs_route("a", "SECRET_A"), hs_route("b", "SECRET_B")],
            secrets: [
                ("SECRET_A".to_string(), secret_a.clone()),
                ("SECRET_B".to_string(), secret_b.clone()),
            ]
            .into(),
            ..Default::default()
        },
    )
    .await;
    let c = client();
    let call = |path: &'static str, token: String| {
        let c = c.clone();
        let url = format!("{}{path}", gw.url);
        async move {
            let r = c
                .get(url)
                .header("x-user-id", "admin")
                .bearer_auth(token)
                .send()
                .await
                .expect("test step");
            let s = r.status().as_u16();
            (s, r.json::<serde_json::Value>().await.unwrap_or_default())
        }
    };
    let exp = now() + 2;
    let token = encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": "ada", "exp": exp}),
        &EncodingKey::from_secret(secret_a.as_bytes()),
    )
    .expect("test step");
    for _ in 0..3 {
        let (s, v) = call("/a", token.clone()).await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["headers"]["x-user-id"], "ada");
    }
    let (s, v) = call("/b", token.clone()).await;
    assert_eq!((s, v["code"].as_str()), (401, Some("invalid-token")), "{v}");
    let (head, sig) = token.rsplit_once('.').expect("test step");
    let mut forged = sig.as_bytes().to_vec();
    forged[3] = if forged[3] == b'A' { b'B' } else { b'A' };
    let forged = format!("{head}.{}", String::from_utf8(forged).expect("test step"));
    let (s, v) = call("/a", forged).await;
    assert_eq!((s, v["code"].as_str()), (401, Some("invalid-token")), "{v}");
    // Past `exp` (leeway 0 s): refused although it was accepted a moment ago.
    while now() <= exp {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (s, v) = call("/a", token).await;
    assert_eq!((s, v["code"].as_str()), (401, Some("invalid-token")), "{v}");
    assert!(
        v["detail"].as_str().unwrap_or_default().contains("Expired"),
        "{v}"
    );
    gw.stop().await;
}
