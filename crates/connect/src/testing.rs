//! The fake vendor: a real HTTP server on loopback with scripted behaviour, for tests, the
//! bench and the demo (`switchyard fake-vendor`).
//!
//! Its behaviour is a [`Behaviour`]: answer with a status (and `Retry-After`) after some
//! latency, never answer (a timeout), reset the connection, answer garbage, rate-limit
//! with 429 above some requests per second, or be down (connections refused) and come up
//! again. A `sequence` of behaviours applies to the next requests one by one before the
//! base behaviour. It is set in process through [`FakeVendor`] or over HTTP:
//!
//! - `PUT /_vendor/behaviour` with a [`Behaviour`] as JSON;
//! - `GET /_vendor/requests`: every request received (method, path, headers, body);
//! - `DELETE /_vendor/requests`: forget them.
//!
//! With `callback`, every accepted request is answered later by a POST to the callback URL
//! carrying the request's correlation header back (an asynchronous vendor).

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, watch};

/// How the fake vendor answers.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct Behaviour {
    pub mode: Mode,
    /// The status of `answer` (200).
    pub status: Option<u16>,
    /// The body of `answer` (`{"ok":true}`).
    pub body: Option<String>,
    /// A `Retry-After` header, in seconds.
    pub retry_after: Option<u64>,
    /// Writes `retry-after` as the HTTP date that many seconds from now instead.
    pub retry_after_date: bool,
    /// Waits this long before answering.
    pub latency_ms: u64,
    /// Above this many requests per second, answers 429 with `Retry-After: 1`.
    pub rate_limit: Option<u32>,
    /// Applied to the next requests, one each, before this behaviour.
    pub sequence: Vec<Behaviour>,
    /// An asynchronous vendor: each request answered 2xx is also answered later by a POST
    /// here.
    pub callback: Option<Callback>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Answer with `status` and `body`.
    #[default]
    Answer,
    /// Never answer (the caller times out).
    Hang,
    /// Close the connection without an answer.
    Reset,
    /// Answer 200 with bytes that are no format at all.
    Garbage,
    /// Refuse connections (the listener is closed); any other mode brings it up again.
    Down,
}

/// Where and how an asynchronous vendor replies.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Callback {
    pub url: String,
    /// The request header whose value goes back in the reply's header of the same name.
    pub header: String,
    #[serde(default)]
    pub delay_ms: u64,
    #[serde(default = "default_reply_body")]
    pub body: String,
}

fn default_reply_body() -> String {
    "{\"status\":\"accepted\"}".to_owned()
}

/// A request the vendor received.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Received {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// When it arrived (for the bench's latencies).
    #[serde(skip)]
    pub at: Option<Instant>,
}

struct Shared {
    behaviour: Mutex<Behaviour>,
    sequence: Mutex<VecDeque<Behaviour>>,
    received: Mutex<Vec<Received>>,
    /// How many requests were received (a clear keeps counting), for waiting on them.
    count: watch::Sender<usize>,
    /// Requests in the current second, for `rate-limit`.
    window: Mutex<(Instant, u32)>,
    /// Turns true to close every connection and the listener (down).
    down: watch::Sender<bool>,
    client: reqwest::Client,
}

/// A running fake vendor. Dropping it stops it.
pub struct FakeVendor {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for FakeVendor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeVendor")
            .field("addr", &self.addr)
            .finish()
    }
}

impl Drop for FakeVendor {
    fn drop(&mut self) {
        self.task.abort();
        self.shared.down.send_replace(true);
    }
}

impl FakeVendor {
    /// Starts on `addr` (port 0: a free port) answering 200.
    pub async fn start(addr: SocketAddr) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            behaviour: Mutex::new(Behaviour::default()),
            sequence: Mutex::new(VecDeque::new()),
            received: Mutex::new(Vec::new()),
            count: watch::channel(0).0,
            window: Mutex::new((Instant::now(), 0)),
            down: watch::channel(false).0,
            client: reqwest::Client::new(),
        });
        let task = tokio::spawn(serve(listener, shared.clone()));
        Ok(Self { addr, shared, task })
    }

    /// Starts on a free loopback port.
    pub async fn start_local() -> std::io::Result<Self> {
        Self::start(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Sets the behaviour (and its sequence).
    pub fn set(&self, behaviour: Behaviour) {
        apply(&self.shared, behaviour);
    }

    /// Every request received so far (control requests excluded).
    pub fn received(&self) -> Vec<Received> {
        self.shared
            .received
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }

    /// How many requests were received since the vendor started (control requests
    /// excluded; [`clear`](Self::clear) does not reset it).
    pub fn received_count(&self) -> usize {
        *self.shared.count.borrow()
    }

    /// Waits until [`received_count`](Self::received_count) reaches `n`, at most `limit`;
    /// returns whether it did.
    pub async fn wait_received(&self, n: usize, limit: Duration) -> bool {
        let mut rx = self.shared.count.subscribe();
        tokio::time::timeout(limit, rx.wait_for(|c| *c >= n))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// The last request received.
    pub fn last_received(&self) -> Option<Received> {
        self.shared
            .received
            .lock()
            .ok()
            .and_then(|r| r.last().cloned())
    }

    pub fn clear(&self) {
        if let Ok(mut r) = self.shared.received.lock() {
            r.clear();
        }
    }

    /// Runs until `stop` resolves (for `switchyard fake-vendor`).
    pub async fn run_until(self, stop: impl std::future::Future<Output = ()>) {
        stop.await;
        drop(self);
    }
}

fn apply(shared: &Shared, mut behaviour: Behaviour) {
    let sequence = std::mem::take(&mut behaviour.sequence);
    let down = behaviour.mode == Mode::Down;
    if let Ok(mut b) = shared.behaviour.lock() {
        *b = behaviour;
    }
    if let Ok(mut s) = shared.sequence.lock() {
        *s = sequence.into();
    }
    shared.down.send_replace(down);
}

/// Accepts connections while up; closes the listener and every connection when down,
/// and binds the same address again when up.
async fn serve(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    let addr = match listener.local_addr() {
        Ok(a) => a,
        Err(_) => return,
    };
    let mut listener = Some(listener);
    let mut down = shared.down.subscribe();
    let router = router(shared.clone());
    loop {
        if *down.borrow() {
            listener = None;
            if down.changed().await.is_err() {
                return;
            }
            continue;
        }
        let l = match listener.take() {
            Some(l) => l,
            None => match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => l,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        tokio::select! {
            accepted = l.accept() => {
                if let Ok((stream, _)) = accepted {
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(connection(stream, router.clone(), shared.down.subscribe()));
                }
                listener = Some(l);
            }
            _ = down.changed() => {
                listener = if *down.borrow() { None } else { Some(l) };
            }
        }
    }
}

/// Serves one connection until it ends, the vendor goes down, or a handler asks for a
/// reset (then the socket is closed in the middle of the exchange).
async fn connection(
    stream: tokio::net::TcpStream,
    router: Router,
    mut down: watch::Receiver<bool>,
) {
    let kill = Arc::new(Notify::new());
    let k = kill.clone();
    let svc = tower::ServiceExt::map_request(
        router,
        move |req: axum::http::Request<hyper::body::Incoming>| {
            let (mut parts, body) = req.into_parts();
            parts.extensions.insert(k.clone());
            Request::from_parts(parts, axum::body::Body::new(body))
        },
    );
    let conn = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(svc))
        .into_owned();
    tokio::select! {
        _ = conn => {}
        _ = kill.notified() => {}
        _ = async { while !*down.borrow() { if down.changed().await.is_err() { break; } } } => {}
    }
}

fn record(s: &Shared, received: Received) {
    if let Ok(mut r) = s.received.lock() {
        r.push(received);
    }
    s.count.send_modify(|c| *c += 1);
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(
            "/_vendor/behaviour",
            axum::routing::put(set_behaviour).get(get_behaviour),
        )
        .route(
            "/_vendor/requests",
            get(list_requests).delete(clear_requests),
        )
        .fallback(any(handle))
        .with_state(shared)
}

async fn set_behaviour(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    match serde_json::from_slice::<Behaviour>(&body) {
        Ok(b) => {
            apply(&s, b);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, format!("bad behaviour: {e}\n")).into_response(),
    }
}

async fn get_behaviour(State(s): State<Arc<Shared>>) -> Response {
    let b = s.behaviour.lock().map(|b| b.clone()).unwrap_or_default();
    axum::Json(b).into_response()
}

async fn list_requests(State(s): State<Arc<Shared>>) -> Response {
    let r = s.received.lock().map(|r| r.clone()).unwrap_or_default();
    axum::Json(r).into_response()
}

async fn clear_requests(State(s): State<Arc<Shared>>) -> Response {
    if let Ok(mut r) = s.received.lock() {
        r.clear();
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn handle(State(s): State<Arc<Shared>>, req: Request) -> Response {
    let kill = req.extensions().get::<Arc<Notify>>().cloned();
    let method = req.method().to_string();
    let path = req
        .uri()
        .path_and_query()
        .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
    let at = Instant::now();
    let headers: HeaderMap = req.headers().clone();
    let body = axum::body::to_bytes(req.into_body(), 16 << 20)
        .await
        .unwrap_or_default();
    let received = Received {
        method,
        path,
        headers: headers
            .iter()
            .filter_map(|(k, v)| {
                v.to_str()
                    .ok()
                    .map(|v| (k.as_str().to_owned(), v.to_owned()))
            })
            .collect(),
        body: String::from_utf8_lossy(&body).into_owned(),
        at: Some(at),
    };
    let behaviour = s
        .sequence
        .lock()
        .ok()
        .and_then(|mut q| q.pop_front())
        .or_else(|| s.behaviour.lock().ok().map(|b| b.clone()))
        .unwrap_or_default();
    if let Some(limit) = behaviour.rate_limit {
        let over = s.window.lock().is_ok_and(|mut w| {
            if w.0.elapsed() >= Duration::from_secs(1) {
                *w = (Instant::now(), 0);
            }
            w.1 += 1;
            w.1 > limit
        });
        if over {
            record(&s, received);
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", "1")],
                "slow down\n",
            )
                .into_response();
        }
    }
    record(&s, received.clone());
    if behaviour.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(behaviour.latency_ms)).await;
    }
    match behaviour.mode {
        Mode::Hang => std::future::pending::<Response>().await,
        Mode::Reset | Mode::Down => {
            if let Some(k) = kill {
                k.notify_one();
            }
            std::future::pending::<Response>().await
        }
        Mode::Garbage => (
            StatusCode::OK,
            [("content-type", "application/json")],
            Bytes::from_static(b"\x00\x9f<<<not json at all>>>\xff"),
        )
            .into_response(),
        Mode::Answer => {
            let status =
                StatusCode::from_u16(behaviour.status.unwrap_or(200)).unwrap_or(StatusCode::OK);
            if status.is_success()
                && let Some(cb) = &behaviour.callback
            {
                let value = received
                    .headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(&cb.header))
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default();
                let (client, cb) = (s.client.clone(), cb.clone());
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(cb.delay_ms)).await;
                    let _ = client
                        .post(&cb.url)
                        .header(cb.header.as_str(), value)
                        .header("content-type", "application/json")
                        .body(cb.body)
                        .send()
                        .await;
                });
            }
            let body = behaviour
                .body
                .clone()
                .unwrap_or_else(|| "{\"ok\":true}".to_owned());
            let mut resp = (status, [("content-type", "application/json")], body).into_response();
            let retry_after = behaviour.retry_after.map(|secs| {
                if behaviour.retry_after_date {
                    httpdate::fmt_http_date(
                        std::time::SystemTime::now() + Duration::from_secs(secs),
                    )
                } else {
                    secs.to_string()
                }
            });
            if let Some(v) = retry_after.and_then(|v| v.parse().ok()) {
                resp.headers_mut().insert("retry-after", v);
            }
            resp
        }
    }
}
