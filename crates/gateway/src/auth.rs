//! Route auth: JWT (HS256, RS256, ES256; a static key or a JWKS URL) and API keys.
//!
//! Only the route's one algorithm is accepted, so a token signed HS256 with an RSA public key
//! as secret (the HS/RS confusion) or `alg: none` fails; `exp` is required, `nbf` checked,
//! both with the leeway; `iss` and `aud` when the route names them; a token above
//! [`MAX_TOKEN_BYTES`] is refused before it is decoded.
//!
//! A JWKS ([`Jwks`], shared by every table through the [`JwksBoard`], so a route change
//! keeps what was fetched) is fetched at the first use and is fresh for `jwks-ttl`. Past it,
//! requests go on with the keys they have while one fetch runs in the background
//! (stale-while-revalidate); when fetches fail the keys stay in use up to `jwks-max-stale`
//! after the last success (stale-while-error), then requests get 503 `auth-unavailable`. A
//! `kid` the keys do not hold makes a fetch (a rotation), at most every
//! [`JWKS_MIN_REFETCH`] (the ttl, when shorter). Fetches never overlap: one runs at a time,
//! requests that need its result wait for it together (bounded by its 3 s timeout), the
//! others never wait; after a failure the next waits a backoff (doubling up to
//! [`JWKS_MAX_BACKOFF`]).
//!
//! A route whose key is fixed (a secret or a public key from the environment) remembers the
//! last [`VERIFIED_TOKENS`] tokens it accepted, as Envoy's JWT cache does: a client sends the
//! same token with every request, and a token seen again is checked only against the clock
//! (`exp` and `nbf`, with the leeway), its signature and claims being what they were. The
//! memory is the route's own (a route change compiles a new one) and holds only tokens that
//! passed every check. Tokens checked against a JWKS are always verified in full, so a key
//! taken out of the set stops its tokens at once.

use crate::problem::Problem;
use crate::service::lock;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use futures::FutureExt as _;
use futures::future::{BoxFuture, Shared};
use http_body_util::{BodyExt as _, Empty};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchyard_manifest::AuthSpec;

/// Longer tokens are refused unread.
pub const MAX_TOKEN_BYTES: usize = 8 << 10;
/// The least time between two JWKS fetches for unknown `kid`s.
pub const JWKS_MIN_REFETCH: Duration = Duration::from_secs(5);
/// The longest wait between failed JWKS fetches.
pub const JWKS_MAX_BACKOFF: Duration = Duration::from_secs(30);
const JWKS_FETCH_TIMEOUT: Duration = Duration::from_secs(3);

/// The least length of an HS256 secret, in bytes (RFC 7518 3.2: at least the hash's size).
pub const MIN_HS256_SECRET_BYTES: usize = 32;

/// Signs `claims` with HS256 and `secret`: the development tokens of `switchyard
/// dev-token`, checked by routes whose `secret-env` holds the same secret.
pub fn mint_hs256(secret: &str, claims: &serde_json::Value) -> Result<String, String> {
    if secret.len() < MIN_HS256_SECRET_BYTES {
        return Err(format!(
            "the secret holds fewer than {MIN_HS256_SECRET_BYTES} bytes"
        ));
    }
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .map_err(|e| e.to_string())
}

enum Keys {
    Static(DecodingKey),
    Jwks(Arc<Jwks>),
}

/// One JWKS URL's keys.
pub struct Jwks {
    url: String,
    ttl: Duration,
    max_stale: Duration,
    state: std::sync::Mutex<JwksState>,
}

impl std::fmt::Debug for Jwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwks")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct JwksState {
    keys: Arc<HashMap<String, DecodingKey>>,
    /// The last successful fetch.
    fetched: Option<Instant>,
    /// No fetch starts before this (the refetch interval, or the backoff after failures).
    next_fetch: Option<Instant>,
    failures: u32,
    last_error: Option<String>,
    /// The fetch running now, which waiters share.
    inflight: Option<Shared<BoxFuture<'static, ()>>>,
}

/// Why no key was found.
enum KeyError {
    /// The keys are usable and do not hold this `kid`: the token is not accepted.
    Unknown(String),
    /// There are no usable keys (never fetched, or stale past `jwks-max-stale`).
    Unavailable(String),
}

impl Jwks {
    fn new(url: &str, ttl: Duration, max_stale: Duration) -> Self {
        Self {
            url: url.to_string(),
            ttl,
            max_stale,
            state: Default::default(),
        }
    }

    fn min_refetch(&self) -> Duration {
        JWKS_MIN_REFETCH.min(self.ttl)
    }

    /// The key `kid`, fetching the set when it has to (see the module docs).
    async fn key(
        self: &Arc<Self>,
        kid: &str,
        client: &crate::upstream::prober::Client,
    ) -> Result<DecodingKey, KeyError> {
        let mut waited = false;
        loop {
            let fetch = {
                let mut st = lock(&self.state);
                let now = Instant::now();
                let age = st.fetched.map(|t| now.duration_since(t));
                let usable = age.is_some_and(|a| a < self.max_stale);
                if usable && let Some(k) = st.keys.get(kid).cloned() {
                    if age.is_some_and(|a| a >= self.ttl) {
                        // Stale: serve it, and refresh in the background.
                        self.start_fetch(&mut st, now, client);
                    }
                    return Ok(k);
                }
                let refusal = |st: &JwksState| {
                    if usable {
                        KeyError::Unknown(format!("no key with kid {kid:?} in the JWKS"))
                    } else {
                        KeyError::Unavailable(match &st.last_error {
                            Some(e) => format!(
                                "the JWKS at {} cannot be fetched ({} tries failed; last: {e})",
                                self.url, st.failures
                            ),
                            None => format!("the JWKS at {} is not fetched yet", self.url),
                        })
                    }
                };
                if waited {
                    return Err(refusal(&st));
                }
                match self.start_fetch(&mut st, now, client) {
                    Some(f) => f,
                    None => return Err(refusal(&st)),
                }
            };
            fetch.await;
            waited = true;
        }
    }

    /// The fetch in flight, or a new one when none runs and one may start now.
    fn start_fetch(
        self: &Arc<Self>,
        st: &mut JwksState,
        now: Instant,
        client: &crate::upstream::prober::Client,
    ) -> Option<Shared<BoxFuture<'static, ()>>> {
        if let Some(f) = &st.inflight {
            return Some(f.clone());
        }
        if st.next_fetch.is_some_and(|t| now < t) {
            return None;
        }
        let this = self.clone();
        let client = client.clone();
        let fut = async move {
            let got = fetch_set(&client, &this.url).await;
            let mut st = lock(&this.state);
            let done = Instant::now();
            match got {
                Ok(keys) => {
                    st.keys = Arc::new(keys);
                    st.fetched = Some(done);
                    st.failures = 0;
                    st.last_error = None;
                    st.next_fetch = Some(done + this.min_refetch());
                }
                Err(e) => {
                    st.failures = st.failures.saturating_add(1);
                    let backoff = this
                        .min_refetch()
                        .saturating_mul(1 << st.failures.min(16).saturating_sub(1))
                        .min(JWKS_MAX_BACKOFF.max(this.min_refetch()));
                    tracing::warn!(
                        "gateway: fetching the JWKS failed ({} in a row; next try in {backoff:?}): {e}",
                        st.failures
                    );
                    st.last_error = Some(e);
                    st.next_fetch = Some(done + backoff);
                }
            }
            st.inflight = None;
        }
        .boxed()
        .shared();
        st.inflight = Some(fut.clone());
        // Driven on its own, so a request that gives up does not stop it.
        tokio::spawn(fut.clone());
        Some(fut)
    }
}

async fn fetch_set(
    client: &crate::upstream::prober::Client,
    url: &str,
) -> Result<HashMap<String, DecodingKey>, String> {
    let set = client.get_json(url, JWKS_FETCH_TIMEOUT).await?;
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_value(set)
        .map_err(|e| format!("the JWKS at {url} does not parse: {e}"))?;
    Ok(set
        .keys
        .iter()
        .filter_map(|k| Some((k.common.key_id.clone()?, DecodingKey::from_jwk(k).ok()?)))
        .collect())
}

/// Every JWKS in use, by URL and cache settings, outside the tables.
#[derive(Default)]
pub struct JwksBoard {
    by_url: std::sync::Mutex<HashMap<(String, Duration, Duration), Arc<Jwks>>>,
}

impl std::fmt::Debug for JwksBoard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksBoard").finish_non_exhaustive()
    }
}

impl JwksBoard {
    fn get(&self, url: &str, ttl: Duration, max_stale: Duration) -> Arc<Jwks> {
        lock(&self.by_url)
            .entry((url.to_string(), ttl, max_stale))
            .or_insert_with(|| Arc::new(Jwks::new(url, ttl, max_stale)))
            .clone()
    }

    /// Forgets the sets no table holds any more (a table that is being replaced still
    /// holds its own: those go at the next build).
    pub fn retain_used(&self) {
        lock(&self.by_url).retain(|_, j| Arc::strong_count(j) > 1);
    }
}

/// How many accepted tokens a route with a fixed key remembers; past it, it starts again.
pub const VERIFIED_TOKENS: usize = 1024;
/// The longest token remembered (a usual JWT is a few hundred bytes): a full memory then
/// holds at most 2 MiB of tokens, where [`MAX_TOKEN_BYTES`] would allow 8 MiB.
pub const VERIFIED_TOKEN_BYTES: usize = 2 << 10;

/// What a request's credentials granted.
#[derive(Clone, Debug)]
pub struct Granted {
    /// `user:<sub>` or `key:<name>`: whose budget rate limits and quotas count.
    pub consumer: String,
    /// The headers for the backend.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// A route's compiled auth.
pub struct Auth {
    jwt: Option<(Keys, Validation)>,
    /// Tokens accepted with a fixed key, by token.
    verified: std::sync::Mutex<HashMap<Box<str>, Verified>>,
    api_keys: Vec<(String, String)>,
    pub user_header: HeaderName,
    pub claim_headers: Vec<(HeaderName, String)>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("api_keys", &self.api_keys.len())
            .finish_non_exhaustive()
    }
}

impl Auth {
    /// Reads the secrets the spec names; a missing or bad one is an error naming it.
    pub fn compile(spec: &AuthSpec, boards: &crate::table::Boards) -> Result<Self, String> {
        let env = |var: &str| boards.var(var);
        let jwks = &boards.jwks;
        let user_header = HeaderName::from_bytes(spec.user_header.as_bytes())
            .map_err(|e| format!("auth.user-header: {e}"))?;
        let mut claim_headers = Vec::new();
        let jwt = match &spec.jwt {
            None => None,
            Some(j) => {
                let alg = match j.algorithm.as_str() {
                    "HS256" => Algorithm::HS256,
                    "RS256" => Algorithm::RS256,
                    _ => Algorithm::ES256,
                };
                let keys = if let Some(var) = &j.secret_env {
                    let secret = env(var)?;
                    if secret.len() < MIN_HS256_SECRET_BYTES {
                        return Err(format!(
                            "auth.jwt.secret-env: {var} holds fewer than {MIN_HS256_SECRET_BYTES} bytes"
                        ));
                    }
                    Keys::Static(DecodingKey::from_secret(secret.as_bytes()))
                } else if let Some(var) = &j.public_key_env {
                    let pem = env(var)?;
                    let key = if alg == Algorithm::RS256 {
                        DecodingKey::from_rsa_pem(pem.as_bytes())
                    } else {
                        DecodingKey::from_ec_pem(pem.as_bytes())
                    };
                    Keys::Static(key.map_err(|e| format!("auth.jwt.public-key-env: {var}: {e}"))?)
                } else {
                    Keys::Jwks(jwks.get(
                        j.jwks_url.as_deref().unwrap_or_default(),
                        j.jwks_ttl().0,
                        j.jwks_max_stale().0,
                    ))
                };
                let mut v = Validation::new(alg);
                v.algorithms = vec![alg];
                v.leeway = j.leeway.map_or(30, |l| l.0.as_secs());
                v.validate_nbf = true;
                v.set_required_spec_claims(&["exp", "sub"]);
                if let Some(iss) = &j.issuer {
                    v.set_issuer(&[iss]);
                }
                if j.audience.is_empty() {
                    v.validate_aud = false;
                } else {
                    v.set_audience(&j.audience);
                }
                for (h, c) in &j.claims {
                    let name = HeaderName::from_bytes(h.as_bytes())
                        .map_err(|e| format!("auth.jwt.claims.{h}: {e}"))?;
                    claim_headers.push((name, c.clone()));
                }
                Some((keys, v))
            }
        };
        let mut api_keys = Vec::new();
        if let Some(var) = &spec.api_keys_env {
            for pair in env(var)?.split(',').filter(|p| !p.trim().is_empty()) {
                let (name, key) = pair
                    .split_once('=')
                    .ok_or_else(|| format!("auth.api-keys-env: {var} must hold name=key pairs"))?;
                if key.trim().len() < 16 {
                    return Err(format!(
                        "auth.api-keys-env: {var}: key of {} is under 16 characters",
                        name.trim()
                    ));
                }
                api_keys.push((name.trim().to_string(), key.trim().to_string()));
            }
        }
        Ok(Self {
            jwt,
            verified: Default::default(),
            api_keys,
            user_header,
            claim_headers,
        })
    }

    /// Every header this auth sets, to take out of the client's request.
    pub fn strip(&self, headers: &mut HeaderMap) {
        headers.remove(&self.user_header);
        for (h, _) in &self.claim_headers {
            headers.remove(h);
        }
    }

    /// Checks the request's credentials; the headers for the backend.
    pub async fn check(
        &self,
        headers: &HeaderMap,
        client: &crate::upstream::prober::Client,
    ) -> Result<Granted, Problem> {
        let unauthorized = |code: &'static str, detail: String| {
            Problem::new(StatusCode::UNAUTHORIZED, code, detail)
                .header("www-authenticate", "Bearer")
        };
        if let Some(key) = headers.get("x-api-key") {
            let key = key.as_bytes();
            return match self
                .api_keys
                .iter()
                .find(|(_, k)| crate::admin::constant_time_eq(k.as_bytes(), key))
            {
                Some((name, _)) => Ok(Granted {
                    consumer: format!("key:{name}"),
                    headers: vec![(self.user_header.clone(), value(name))],
                }),
                None => Err(unauthorized(
                    "invalid-api-key",
                    "the API key is not known".into(),
                )),
            };
        }
        let Some((keys, validation)) = &self.jwt else {
            return Err(unauthorized(
                "missing-credentials",
                "this route needs an `X-Api-Key`".into(),
            ));
        };
        let token = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                unauthorized(
                    "missing-credentials",
                    "this route needs `Authorization: Bearer <JWT>`".into(),
                )
            })?;
        if token.len() > MAX_TOKEN_BYTES {
            return Err(unauthorized(
                "token-too-large",
                format!("the token is over {MAX_TOKEN_BYTES} bytes"),
            ));
        }
        let invalid = |e: jsonwebtoken::errors::Error| {
            unauthorized("invalid-token", format!("the token is not accepted: {e}"))
        };
        if let Keys::Static(_) = keys
            && let Some(granted) = self.remembered(token, validation.leeway)
        {
            return Ok(granted);
        }
        let claims = match keys {
            Keys::Static(k) => {
                decode::<serde_json::Value>(token, k, validation).map_err(invalid)?
            }
            Keys::Jwks(j) => {
                let header = decode_header(token).map_err(invalid)?;
                let kid = header.kid.clone().unwrap_or_default();
                let key = j.key(&kid, client).await.map_err(|e| match e {
                    KeyError::Unknown(e) => unauthorized("invalid-token", e),
                    KeyError::Unavailable(e) => Problem::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "auth-unavailable",
                        format!("tokens of this route cannot be checked now: {e}"),
                    )
                    .header("retry-after", "5"),
                })?;
                decode::<serde_json::Value>(token, &key, validation).map_err(invalid)?
            }
        }
        .claims;
        let text = |v: &serde_json::Value| match v {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let sub = claims.get("sub").map(text).unwrap_or_default();
        let mut out = vec![(self.user_header.clone(), value(&sub))];
        for (h, c) in &self.claim_headers {
            if let Some(v) = claims.get(c) {
                out.push((h.clone(), value(&text(v))));
            }
        }
        let granted = Granted {
            consumer: format!("user:{sub}"),
            headers: out,
        };
        if let Keys::Static(_) = keys {
            self.remember(token, &claims, &granted);
        }
        Ok(granted)
    }

    /// What `token` granted when it was last accepted, if it was and the clock still
    /// accepts it (an expired one is forgotten, and its full check says why it fails).
    fn remembered(&self, token: &str, leeway: u64) -> Option<Granted> {
        let mut verified = lock(&self.verified);
        let v = verified.get(token)?;
        let now = jsonwebtoken::get_current_timestamp();
        if v.exp >= now.saturating_sub(leeway) && v.nbf.is_none_or(|nbf| nbf <= now + leeway) {
            return Some(v.granted.clone());
        }
        verified.remove(token);
        None
    }

    /// Keeps an accepted token's grant and times; one whose times are not plain numbers,
    /// or longer than [`VERIFIED_TOKEN_BYTES`], is checked in full every time.
    fn remember(&self, token: &str, claims: &serde_json::Value, granted: &Granted) {
        if token.len() > VERIFIED_TOKEN_BYTES {
            return;
        }
        let Some(exp) = claims.get("exp").and_then(serde_json::Value::as_u64) else {
            return;
        };
        let nbf = match claims.get("nbf") {
            None => None,
            Some(n) => match n.as_u64() {
                Some(n) => Some(n),
                None => return,
            },
        };
        let mut verified = lock(&self.verified);
        if verified.len() >= VERIFIED_TOKENS {
            verified.clear();
        }
        verified.insert(
            token.into(),
            Verified {
                exp,
                nbf,
                granted: granted.clone(),
            },
        );
    }
}

/// A token accepted with a fixed key: what it granted, and until when.
struct Verified {
    exp: u64,
    nbf: Option<u64>,
    granted: Granted,
}

/// A header value; characters a header cannot hold are replaced.
fn value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| {
        let clean: String = s
            .chars()
            .map(|c| {
                if c.is_ascii_graphic() || c == ' ' {
                    c
                } else {
                    '?'
                }
            })
            .collect();
        HeaderValue::from_str(&clean).unwrap_or(HeaderValue::from_static(""))
    })
}

impl crate::upstream::prober::Client {
    /// `GET url` as JSON within `timeout`.
    pub async fn get_json(
        &self,
        url: &str,
        timeout: Duration,
    ) -> Result<serde_json::Value, String> {
        let uri: http::Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
        let req = http::Request::get(uri)
            .body(Empty::new())
            .map_err(|e| e.to_string())?;
        let fut = async {
            let resp = self
                .inner
                .request(req)
                .await
                .map_err(|e| format!("{url}: {e}"))?;
            if !resp.status().is_success() {
                return Err(format!("{url} answered {}", resp.status()));
            }
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            serde_json::from_slice(&body).map_err(|e| format!("{url}: not JSON: {e}"))
        };
        tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| format!("{url} did not answer within {timeout:?}"))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};

    fn bearer(token: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            axum::http::header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        );
        h
    }

    #[tokio::test]
    async fn an_accepted_token_is_remembered_and_a_refused_one_is_not() {
        let secret = "s".repeat(40);
        let boards = crate::table::Boards {
            secrets: [("S".to_string(), secret.clone())].into(),
            ..Default::default()
        };
        let spec: AuthSpec = serde_json::from_value(
            serde_json::json!({"jwt": {"algorithm": "HS256", "secret-env": "S"}}),
        )
        .unwrap();
        let auth = Auth::compile(&spec, &boards).unwrap();
        let client = crate::upstream::prober::Client::default();
        let exp = jsonwebtoken::get_current_timestamp() + 300;
        let sign = |claims: serde_json::Value| {
            encode(
                &Header::default(),
                &claims,
                &EncodingKey::from_secret(secret.as_bytes()),
            )
            .unwrap()
        };
        let good = sign(serde_json::json!({"sub": "ada", "exp": exp}));
        let granted = auth.check(&bearer(&good), &client).await.unwrap();
        assert_eq!(granted.consumer, "user:ada");
        assert_eq!(lock(&auth.verified).len(), 1);
        // The next check answers from memory: what is remembered is what it grants.
        lock(&auth.verified)
            .get_mut(good.as_str())
            .unwrap()
            .granted
            .consumer = "user:remembered".into();
        let again = auth.check(&bearer(&good), &client).await.unwrap();
        assert_eq!(again.consumer, "user:remembered");
        // Refused tokens are not remembered; times that are not plain numbers, or long
        // tokens, are never.
        let expired = sign(serde_json::json!({"sub": "ada", "exp": 1}));
        assert!(auth.check(&bearer(&expired), &client).await.is_err());
        let fractional = sign(serde_json::json!({"sub": "bo", "exp": exp, "nbf": 1.5}));
        auth.check(&bearer(&fractional), &client).await.unwrap();
        let long = sign(serde_json::json!({"sub": "cy", "exp": exp, "pad": "x".repeat(3000)}));
        auth.check(&bearer(&long), &client).await.unwrap();
        assert_eq!(lock(&auth.verified).len(), 1);
        // Full, it starts again rather than growing.
        for i in 0..VERIFIED_TOKENS {
            let t = sign(serde_json::json!({"sub": format!("u{i}"), "exp": exp}));
            auth.check(&bearer(&t), &client).await.unwrap();
        }
        assert!(lock(&auth.verified).len() <= VERIFIED_TOKENS);
    }
}
