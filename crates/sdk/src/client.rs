//! [`Client`]: the Switchyard HTTP API v1 (topics, publish, read, streams with resume,
//! subscriptions). Every call here is idempotent (publishing is, by event id), so each is
//! retried with exponential backoff and jitter when the platform is unreachable or answers
//! 429, 502, 503 or 504 (never before its `Retry-After`); any other problem+json answer
//! becomes [`Error::Problem`] (or [`Error::Conflict`] for `offset-conflict`) at once.

use crate::error::{Error, Problem, Result};
use crate::event::CloudEvent;
use backon::BackoffBuilder as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::time::Duration;
use switchyard_types::{Expected, Partition, TopicName};

/// Where an accepted event went.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Placed {
    pub id: String,
    pub partition: Partition,
    pub offset: u64,
    /// The id was already in the journal (within the topic's dedup window): nothing was
    /// appended, `partition` and `offset` are the original's.
    pub duplicate: bool,
}

/// One page of a read, and where the next one starts (`from` of the next call).
#[derive(Clone, Debug)]
pub struct Page {
    pub events: Vec<CloudEvent>,
    pub next: String,
}

/// A partition's extent.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct PartitionExtent {
    pub partition: Partition,
    pub first_offset: u64,
    pub next_offset: u64,
}

/// A push subscription (`PUT /v1/subscriptions/{name}`); `None` fields take the server's
/// defaults.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct SubscriptionSpec {
    pub topics: Vec<String>,
    /// Event types it takes; empty: all.
    pub types: Vec<String>,
    pub endpoint: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_batch: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry: Option<Value>,
}

/// How calls are retried.
#[derive(Clone, Copy, Debug)]
pub struct ClientRetry {
    /// Retries after the first attempt (0: none).
    pub retries: usize,
    pub min_delay: Duration,
    pub max_delay: Duration,
}

impl Default for ClientRetry {
    fn default() -> Self {
        Self {
            retries: 5,
            min_delay: Duration::from_millis(50),
            max_delay: Duration::from_secs(2),
        }
    }
}

/// The HTTP API client. Cheap to clone (one connection pool).
#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    retry: ClientRetry,
}

const BODY_LIMIT: usize = 64 << 10;

impl Client {
    /// A client of the API at `base_url` (`http://127.0.0.1:7400`).
    pub fn new(base_url: &str) -> Result<Self> {
        let url = reqwest::Url::parse(base_url)
            .map_err(|e| Error::config("SWITCHYARD_URL", format!("{base_url:?}: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(Error::config(
                "SWITCHYARD_URL",
                format!("{base_url:?} is not an http:// or https:// URL"),
            ));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .no_proxy()
            .build()
            .map_err(|e| Error::config("http client", e.to_string()))?;
        Ok(Client {
            http,
            base: base_url.trim_end_matches('/').to_string(),
            token: None,
            retry: ClientRetry::default(),
        })
    }

    /// From `SWITCHYARD_URL` (default `http://127.0.0.1:7400`) and `SWITCHYARD_TOKEN`.
    pub fn from_env() -> Result<Self> {
        let url =
            std::env::var("SWITCHYARD_URL").unwrap_or_else(|_| "http://127.0.0.1:7400".into());
        let mut c = Client::new(&url)?;
        c.token = std::env::var("SWITCHYARD_TOKEN")
            .ok()
            .filter(|t| !t.is_empty());
        Ok(c)
    }

    /// Sends `Authorization: Bearer <token>`.
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    pub fn with_retry(mut self, retry: ClientRetry) -> Self {
        self.retry = retry;
        self
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, self.url(path));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    /// Sends what `build` makes, retrying what may be retried; a non-2xx answer is an error.
    async fn send(
        &self,
        what: &str,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response> {
        let mut delays = backon::ExponentialBuilder::default()
            .with_min_delay(self.retry.min_delay)
            .with_max_delay(self.retry.max_delay)
            .with_max_times(self.retry.retries)
            .with_jitter()
            .build();
        loop {
            let (err, retry_after) = match build().send().await {
                Ok(resp) if resp.status().is_success() => return Ok(resp),
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let retry_after = resp
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(|s| Duration::from_secs(s.min(60)));
                    let err = problem_of(what, status, resp).await;
                    if !matches!(status, 429 | 502 | 503 | 504) {
                        return Err(err);
                    }
                    (err, retry_after)
                }
                Err(e) => (
                    Error::Http {
                        what: what.to_string(),
                        detail: if e.is_timeout() {
                            "timed out".to_string()
                        } else {
                            format!("could not reach {}: {e}", self.base)
                        },
                    },
                    None,
                ),
            };
            match delays.next() {
                Some(d) => tokio::time::sleep(retry_after.map_or(d, |r| r.max(d))).await,
                None => return Err(err),
            }
        }
    }

    async fn json(&self, what: &str, build: impl Fn() -> reqwest::RequestBuilder) -> Result<Value> {
        let resp = self.send(what, build).await?;
        read_json(what, resp).await
    }

    /// Creates or updates a topic (`settings`: the topic's kebab-case keys, e.g.
    /// `{"partitions": 3, "durability": "always"}`).
    pub async fn put_topic(&self, topic: &str, settings: &Value) -> Result<Value> {
        let t = topic_name(topic)?;
        let path = format!("/v1/topics/{t}");
        self.json(&format!("PUT {path}"), || {
            self.request(reqwest::Method::PUT, &path).json(settings)
        })
        .await
    }

    /// Each partition's extent.
    pub async fn partitions(&self, topic: &str) -> Result<Vec<PartitionExtent>> {
        let t = topic_name(topic)?;
        let path = format!("/v1/topics/{t}");
        let what = format!("GET {path}");
        let v = self
            .json(&what, || self.request(reqwest::Method::GET, &path))
            .await?;
        serde_json::from_value(v["partitions"].clone()).map_err(|e| Error::Http {
            what,
            detail: format!("the answer has no valid `partitions`: {e}"),
        })
    }

    /// Publishes `events` to `topic` in one request (the CloudEvents batch mode): all are
    /// appended or none is. With `expected`, the append is conditional on the events' one
    /// partition key having that last offset ([`Error::Conflict`] otherwise).
    pub async fn publish(
        &self,
        topic: &str,
        events: &[CloudEvent],
        expected: Option<Expected>,
    ) -> Result<Vec<Placed>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let t = topic_name(topic)?;
        let path = format!("/v1/topics/{t}/events");
        let body = serde_json::to_vec(&events.iter().map(CloudEvent::as_map).collect::<Vec<_>>())
            .map_err(|e| Error::invalid("data", e.to_string()))?;
        let header = expected.map(|e| match e {
            Expected::NoRecord => "none".to_string(),
            Expected::LastOffset(o) => o.to_string(),
        });
        let what = format!("POST {path}");
        let result = self
            .json(&what, || {
                let r = self
                    .request(reqwest::Method::POST, &path)
                    .header("content-type", "application/cloudevents-batch+json")
                    .body(body.clone());
                match &header {
                    Some(h) => r.header("switchyard-expected-offset", h),
                    None => r,
                }
            })
            .await;
        let v = match result {
            Err(Error::Conflict { actual, .. }) => {
                return Err(Error::Conflict {
                    key: events[0].partition_key().unwrap_or_default().to_string(),
                    expected: header.unwrap_or_default(),
                    actual,
                });
            }
            other => other?,
        };
        let placed: Vec<Placed> =
            serde_json::from_value(v["events"].clone()).map_err(|e| Error::Http {
                what: what.clone(),
                detail: format!("the answer has no valid `events`: {e}"),
            })?;
        if placed.len() != events.len() {
            return Err(Error::Http {
                what,
                detail: format!("{} events sent, {} answered", events.len(), placed.len()),
            });
        }
        Ok(placed)
    }

    /// One page of events, oldest first: `from` is an offset (with `partition`), a position
    /// (`12.0.57`), an RFC 3339 time, `earliest` or `latest`.
    pub async fn read(
        &self,
        topic: &str,
        partition: Option<Partition>,
        from: &str,
        limit: usize,
    ) -> Result<Page> {
        let t = topic_name(topic)?;
        let path = format!("/v1/topics/{t}/events");
        let what = format!("GET {path}");
        let mut query = vec![("from", from.to_string()), ("limit", limit.to_string())];
        if let Some(p) = partition {
            query.push(("partition", p.to_string()));
        }
        let v = self
            .json(&what, || {
                self.request(reqwest::Method::GET, &path).query(&query)
            })
            .await?;
        let events = match v["events"].as_array() {
            Some(a) => a
                .iter()
                .cloned()
                .map(CloudEvent::from_json)
                .collect::<Result<Vec<_>>>()?,
            None => {
                return Err(Error::Http {
                    what,
                    detail: "the answer has no `events` array".into(),
                });
            }
        };
        let next = v["next"].as_str().unwrap_or(from).to_string();
        Ok(Page { events, next })
    }

    /// A live stream of `topic` (one `partition`, or all) from `from`, that reconnects
    /// from where it was whenever the connection drops or the server ends it.
    pub fn stream(&self, topic: &str, partition: Option<Partition>, from: &str) -> EventStream {
        EventStream {
            client: self.clone(),
            topic: topic.to_string(),
            partition,
            position: from.to_string(),
            resp: None,
            buf: Vec::new(),
            failures: 0,
        }
    }

    pub async fn put_subscription(&self, name: &str, spec: &SubscriptionSpec) -> Result<Value> {
        let path = format!("/v1/subscriptions/{}", path_segment("subscription", name)?);
        self.json(&format!("PUT {path}"), || {
            self.request(reqwest::Method::PUT, &path).json(spec)
        })
        .await
    }

    /// The subscription as the API shows it (spec, in-flight and parked counts, cursors).
    pub async fn subscription(&self, name: &str) -> Result<Value> {
        let path = format!("/v1/subscriptions/{}", path_segment("subscription", name)?);
        self.json(&format!("GET {path}"), || {
            self.request(reqwest::Method::GET, &path)
        })
        .await
    }

    pub async fn subscriptions(&self) -> Result<Vec<String>> {
        let what = "GET /v1/subscriptions";
        let v = self
            .json(what, || {
                self.request(reqwest::Method::GET, "/v1/subscriptions")
            })
            .await?;
        serde_json::from_value(v["subscriptions"].clone()).map_err(|e| Error::Http {
            what: what.into(),
            detail: format!("the answer has no valid `subscriptions`: {e}"),
        })
    }

    pub async fn delete_subscription(&self, name: &str) -> Result<()> {
        let path = format!("/v1/subscriptions/{}", path_segment("subscription", name)?);
        self.send(&format!("DELETE {path}"), || {
            self.request(reqwest::Method::DELETE, &path)
        })
        .await
        .map(drop)
    }
}

fn topic_name(topic: &str) -> Result<TopicName> {
    TopicName::new(topic).map_err(|e| Error::config("topic", format!("{topic:?}: {e}")))
}

fn path_segment<'a>(what: &str, s: &'a str) -> Result<&'a str> {
    let ok = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(s)
    } else {
        Err(Error::config(
            what,
            format!("{s:?}: names are letters, digits, `.`, `_` and `-`"),
        ))
    }
}

async fn read_json(what: &str, resp: reqwest::Response) -> Result<Value> {
    let bytes = resp.bytes().await.map_err(|e| Error::Http {
        what: what.to_string(),
        detail: format!("reading the answer: {e}"),
    })?;
    serde_json::from_slice(&bytes).map_err(|e| Error::Http {
        what: what.to_string(),
        detail: format!("the answer is not JSON: {e}"),
    })
}

/// The error an answer of `status` stands for: its problem+json when it has one.
async fn problem_of(what: &str, status: u16, resp: reqwest::Response) -> Error {
    let mut bytes = Vec::new();
    let mut resp = resp;
    while bytes.len() < BODY_LIMIT {
        match resp.chunk().await {
            Ok(Some(c)) => bytes.extend_from_slice(&c),
            _ => break,
        }
    }
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let Some(code) = body["code"].as_str() else {
        let text = String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).into_owned();
        return Error::Http {
            what: what.to_string(),
            detail: format!("HTTP {status}: {}", text.trim()),
        };
    };
    if status == 409 && code == "offset-conflict" {
        let actual = match &body["actual-offset"] {
            Value::String(s) => s.parse().ok(),
            Value::Number(n) => n.as_u64(),
            _ => None,
        };
        return Error::Conflict {
            key: String::new(),
            expected: String::new(),
            actual,
        };
    }
    Error::Problem(Problem {
        status,
        code: code.to_string(),
        detail: body["detail"].as_str().unwrap_or_default().to_string(),
        pointer: body["pointer"].as_str().map(str::to_string),
        body,
    })
}

/// A topic's (or a partition's) live events from a position, resumed after every drop.
#[derive(Debug)]
pub struct EventStream {
    client: Client,
    topic: String,
    partition: Option<Partition>,
    position: String,
    resp: Option<reqwest::Response>,
    buf: Vec<u8>,
    failures: u32,
}

impl EventStream {
    /// Where the stream continues: the position after the last event returned.
    pub fn position(&self) -> &str {
        &self.position
    }

    /// The next event. Waits as long as it takes; a dropped connection, a server that
    /// ends the stream or restarts, is resumed from [`Self::position`] with backoff. Errors
    /// only for what will not get better (the topic does not exist, a bad position).
    pub async fn next(&mut self) -> Result<CloudEvent> {
        loop {
            while let Some(nl) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=nl).collect();
                if let Some(event) = self.line(&line)? {
                    return Ok(event);
                }
            }
            let chunk = match &mut self.resp {
                Some(r) => r.chunk().await,
                None => {
                    self.connect().await?;
                    continue;
                }
            };
            match chunk {
                Ok(Some(c)) => {
                    self.failures = 0;
                    self.buf.extend_from_slice(&c);
                }
                // Ended or dropped: resume from the position.
                Ok(None) | Err(_) => {
                    self.resp = None;
                    self.buf.clear();
                }
            }
        }
    }

    /// One NDJSON line: an event (returned), a heartbeat or the end (position kept).
    fn line(&mut self, line: &[u8]) -> Result<Option<CloudEvent>> {
        let text = String::from_utf8_lossy(line);
        if text.trim().is_empty() {
            return Ok(None);
        }
        let mut v: Value = serde_json::from_str(&text).map_err(|e| Error::Http {
            what: format!("stream of {}", self.topic),
            detail: format!("a line is not JSON: {e}"),
        })?;
        let Some(obj) = v.as_object_mut() else {
            return Ok(None);
        };
        if let Some(p) = obj
            .remove("position")
            .and_then(|p| p.as_str().map(str::to_string))
        {
            self.position = p;
        }
        if obj.contains_key("heartbeat") {
            return Ok(None);
        }
        if obj.contains_key("end") {
            self.resp = None;
            self.buf.clear();
            return Ok(None);
        }
        CloudEvent::from_json(v).map(Some)
    }

    async fn connect(&mut self) -> Result<()> {
        if self.failures > 0 {
            let ms = (50u64 << self.failures.min(6)).min(2000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        let t = topic_name(&self.topic)?;
        let path = format!("/v1/topics/{t}/stream");
        let mut query = vec![("from", self.position.clone())];
        if let Some(p) = self.partition {
            query.push(("partition", p.to_string()));
        }
        let req = self
            .client
            .request(reqwest::Method::GET, &path)
            .header("accept", "application/x-ndjson")
            .query(&query);
        match req.send().await {
            Ok(r) if r.status().is_success() => {
                self.resp = Some(r);
                Ok(())
            }
            Ok(r) => {
                let status = r.status().as_u16();
                let err = problem_of(&format!("GET {path}"), status, r).await;
                if matches!(status, 429 | 502 | 503 | 504) {
                    self.failures += 1;
                    Ok(())
                } else {
                    Err(err)
                }
            }
            Err(_) => {
                self.failures += 1;
                Ok(())
            }
        }
    }
}
