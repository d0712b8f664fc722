//! Real HTTP peers on loopback for the gateway's tests: echo upstreams that say who they
//! are, and a gateway on a file journal in a temporary directory.
#![allow(dead_code)]

use axum::extract::Request;
use axum::response::IntoResponse;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use switchyard_gateway::{Gateway, GatewayOptions};
use switchyard_journal::file::FileJournal;

/// An upstream that answers every request with JSON naming itself and echoing what it got.
/// `/healthz` answers the status in `health` (200 or 500).
pub struct Echo {
    pub name: String,
    pub addr: SocketAddr,
    pub health: Arc<AtomicU16>,
    task: tokio::task::JoinHandle<()>,
}

impl Echo {
    pub async fn start(name: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("test step");
        let addr = listener.local_addr().expect("test step");
        let health = Arc::new(AtomicU16::new(200));
        let (n, h) = (name.to_string(), health.clone());
        let app = axum::Router::new().fallback(move |req: Request| {
            let n = n.clone();
            let h = h.clone();
            async move {
                if req.uri().path() == "/healthz" {
                    let code = axum::http::StatusCode::from_u16(h.load(Ordering::Relaxed))
                        .expect("test step");
                    return (code, "health").into_response();
                }
                let headers: serde_json::Map<String, serde_json::Value> = req
                    .headers()
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").into()))
                    .collect();
                let uri = req.uri().to_string();
                let method = req.method().to_string();
                let body = axum::body::to_bytes(req.into_body(), 1 << 20)
                    .await
                    .unwrap_or_default();
                axum::Json(serde_json::json!({
                    "upstream": n,
                    "method": method,
                    "uri": uri,
                    "headers": headers,
                    "body": String::from_utf8_lossy(&body),
                }))
                .into_response()
            }
        });
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("test step");
        });
        Self {
            name: name.to_string(),
            addr,
            health,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops answering (the port refuses connections afterwards).
    pub fn kill(&self) {
        self.task.abort();
    }
}

/// A gateway on its own journal, serving on a loopback port, its admin API on another.
pub struct Running {
    pub gateway: Gateway,
    pub url: String,
    pub admin: String,
    pub journal: FileJournal,
    stop: Arc<tokio::sync::Notify>,
    stopped: Arc<AtomicBool>,
}

impl Running {
    pub async fn start(dir: &std::path::Path, options: GatewayOptions) -> Self {
        Self::start_with(dir, options, |j| Arc::new(j)).await
    }

    /// As [`Running::start`], the gateway on what `wrap` makes of the file journal.
    pub async fn start_with(
        dir: &std::path::Path,
        options: GatewayOptions,
        wrap: impl FnOnce(FileJournal) -> Arc<dyn switchyard_journal::Journal>,
    ) -> Self {
        show_warnings();
        let journal = FileJournal::open(dir).expect("test step");
        let gateway = Gateway::start(wrap(journal.clone()), options)
            .await
            .expect("test step");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("test step");
        let url = format!("http://{}", listener.local_addr().expect("test step"));
        let admin_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("test step");
        let admin = format!("http://{}", admin_listener.local_addr().expect("test step"));
        let stop = Arc::new(tokio::sync::Notify::new());
        let s = stop.clone();
        let g = gateway.clone();
        tokio::spawn(async move {
            let _ = g.serve(listener, async move { s.notified().await }).await;
        });
        let app = gateway.admin_router();
        let s = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(admin_listener, app)
                .with_graceful_shutdown(async move { s.notified().await })
                .await;
        });
        Self {
            gateway,
            url,
            admin,
            journal,
            stop,
            stopped: Arc::new(AtomicBool::new(false)),
        }
    }

    pub async fn stop(self) {
        self.stop.notify_waiters();
        self.gateway.shutdown().await;
        self.journal.close().await.expect("test step");
        self.stopped.store(true, Ordering::Relaxed);
    }
}

/// The platform's warnings and errors on the test's output: the gateway and the store
/// report some failures only there (a quota not given back at shutdown, say), and a test
/// that fails should say why.
pub fn show_warnings() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_max_level(tracing_subscriber::filter::LevelFilter::WARN)
        .try_init();
}

pub fn route(toml_text: &str) -> switchyard_manifest::RouteSpec {
    toml::from_str(toml_text).expect("test step")
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("test step")
}

pub async fn get_json(c: &reqwest::Client, url: &str) -> (u16, serde_json::Value) {
    let r = c.get(url).send().await.expect("test step");
    let status = r.status().as_u16();
    let v = r.json().await.unwrap_or(serde_json::Value::Null);
    (status, v)
}
