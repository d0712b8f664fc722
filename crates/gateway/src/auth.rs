//! Route auth: JWT (HS256, RS256, ES256; a static key or a JWKS URL) and API keys.
//!
//! Only the route's one algorithm is accepted, so a token signed HS256 with an RSA public key
//! as secret (the HS/RS confusion) or `alg: none` fails; `exp` is required, `nbf` checked,
//! both with the leeway; `iss` and `aud` when the route names them; a token above
//! [`MAX_TOKEN_BYTES`] is refused before it is decoded. A JWKS is fetched at the first use,
//! kept 5 minutes, and fetched again (at most every 5 s) for a `kid` it does not hold.

use crate::problem::Problem;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use http_body_util::{BodyExt as _, Empty};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use switchyard_manifest::AuthSpec;

/// Longer tokens are refused unread.
pub const MAX_TOKEN_BYTES: usize = 8 << 10;
const JWKS_TTL: Duration = Duration::from_secs(300);
const JWKS_MIN_REFETCH: Duration = Duration::from_secs(5);

enum Keys {
    Static(DecodingKey),
    Jwks(Jwks),
}

struct Jwks {
    url: String,
    cache: tokio::sync::Mutex<(HashMap<String, DecodingKey>, Option<Instant>)>,
}

/// A route's compiled auth.
pub struct Auth {
    jwt: Option<(Keys, Validation)>,
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

fn env(var: &str) -> Result<String, String> {
    std::env::var(var).map_err(|_| format!("environment variable {var} is not set"))
}

impl Auth {
    /// Reads the secrets the spec names; a missing or bad one is an error naming it.
    pub fn compile(spec: &AuthSpec) -> Result<Self, String> {
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
                    if secret.len() < 32 {
                        return Err(format!(
                            "auth.jwt.secret-env: {var} holds fewer than 32 bytes"
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
                    Keys::Jwks(Jwks {
                        url: j.jwks_url.clone().unwrap_or_default(),
                        cache: tokio::sync::Mutex::new((HashMap::new(), None)),
                    })
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
    ) -> Result<Vec<(HeaderName, HeaderValue)>, Problem> {
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
                Some((name, _)) => Ok(vec![(self.user_header.clone(), value(name))]),
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
        let header = decode_header(token).map_err(invalid)?;
        let claims = match keys {
            Keys::Static(k) => {
                decode::<serde_json::Value>(token, k, validation).map_err(invalid)?
            }
            Keys::Jwks(j) => {
                let kid = header.kid.clone().unwrap_or_default();
                let key = j
                    .key(&kid, client)
                    .await
                    .map_err(|e| unauthorized("invalid-token", e))?;
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
        Ok(out)
    }
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

impl Jwks {
    async fn key(
        &self,
        kid: &str,
        client: &crate::upstream::prober::Client,
    ) -> Result<DecodingKey, String> {
        let mut cache = self.cache.lock().await;
        let fresh = cache.1.is_some_and(|t| t.elapsed() < JWKS_TTL);
        if fresh && let Some(k) = cache.0.get(kid) {
            return Ok(k.clone());
        }
        let may_fetch = cache.1.is_none_or(|t| t.elapsed() >= JWKS_MIN_REFETCH);
        if may_fetch {
            let set = client.get_json(&self.url, Duration::from_secs(3)).await?;
            let set: jsonwebtoken::jwk::JwkSet = serde_json::from_value(set)
                .map_err(|e| format!("the JWKS at {} does not parse: {e}", self.url))?;
            cache.0 = set
                .keys
                .iter()
                .filter_map(|k| Some((k.common.key_id.clone()?, DecodingKey::from_jwk(k).ok()?)))
                .collect();
            cache.1 = Some(Instant::now());
        }
        cache
            .0
            .get(kid)
            .cloned()
            .ok_or_else(|| format!("no key with kid {kid:?} in the JWKS"))
    }
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
