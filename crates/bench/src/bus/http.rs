//! Switchyard's HTTP API in process (`switchyard_server::serve` on a free loopback port, over
//! the journal `--journal` names), published to by one pooled `reqwest` client (HTTP/1.1
//! keep-alive).

use super::backend::{self, JournalArg};
use crate::ids::ulid_like;
use crate::load::{self, Load, Measured, OpSource};
use anyhow::{Context as _, Result, bail};
use futures::future::BoxFuture;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use switchyard_journal::Durability;
use switchyard_journal::nats_server::NatsBinary;

const TOPIC: &str = "bench.events.v1";
const BATCH: &str = "application/cloudevents-batch+json";

/// What each operation sends.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    /// Events per POST.
    pub batch: usize,
    /// Bytes of each event's `data` (a text string).
    pub payload: usize,
}

struct Publishes {
    client: reqwest::Client,
    url: String,
    shape: Shape,
    /// The `data` value, quoted: `"xxx…"`.
    data: String,
    millis: u64,
}

impl Publishes {
    /// A batch body: `shape.batch` structured events, each with a fresh ULID-like id.
    fn body(&self, appender: usize, seq: u64) -> String {
        let mut body = String::with_capacity(self.shape.batch * (self.data.len() + 128) + 2);
        body.push('[');
        for i in 0..self.shape.batch {
            if i > 0 {
                body.push(',');
            }
            let id = ulid_like(
                self.millis,
                appender as u64,
                seq * self.shape.batch as u64 + i as u64,
            );
            body.push_str(r#"{"specversion":"1.0","id":""#);
            body.push_str(&id);
            body.push_str(
                r#"","source":"/bench","type":"bench.published","datacontenttype":"text/plain","data":"#,
            );
            body.push_str(&self.data);
            body.push('}');
        }
        body.push(']');
        body
    }
}

impl OpSource for Publishes {
    type Op = BoxFuture<'static, Result<()>>;

    fn op(self: &Arc<Self>, appender: usize, seq: u64) -> Self::Op {
        // The body is built before the driver starts the clock: latency is the request's.
        let send = self
            .client
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, BATCH)
            .body(self.body(appender, seq))
            .send();
        Box::pin(async move {
            let response = send.await.context("POST of a batch")?;
            let status = response.status();
            let answer = response
                .bytes()
                .await
                .context("reading the publish answer")?;
            if !status.is_success() {
                bail!(
                    "publish answered {status}: {}",
                    String::from_utf8_lossy(&answer)
                );
            }
            // Fresh ids only: a duplicate means the bench (or the dedup) is wrong.
            if answer.windows(16).any(|w| w == br#""duplicate":true"#) {
                bail!("a fresh id was acknowledged as a duplicate");
            }
            Ok(())
        })
    }
}

/// One repeat: a fresh journal (see [`backend`]), the HTTP API in front of it on a free
/// loopback port, a topic with one partition and `durability`; stopped afterwards.
pub async fn run_once(
    base: &Path,
    journal: &JournalArg,
    bin: Option<&NatsBinary>,
    durability: Durability,
    shape: Shape,
    load: Load,
) -> Result<Measured> {
    let opened = backend::open(journal, base, bin, durability, TOPIC).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding a loopback port for the HTTP API")?;
    let base_url = format!(
        "http://{}",
        listener
            .local_addr()
            .context("the HTTP API's local address")?
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(switchyard_server::serve(
        listener,
        opened.journal.clone(),
        switchyard_server::Options::default(),
        async {
            let _ = stopped.await;
        },
    ));

    let measured = publish(
        &base_url,
        opened.topic.as_str(),
        durability,
        shape,
        load,
        opened.server_pid,
    )
    .await;

    let _ = stop.send(());
    match tokio::time::timeout(Duration::from_secs(30), server).await {
        Ok(joined) => joined
            .context("the HTTP server task panicked")?
            .context("the HTTP server failed")?,
        Err(_) => bail!("the HTTP server did not stop within 30 s"),
    }
    opened.close().await?;
    measured
}

async fn publish(
    base_url: &str,
    topic: &str,
    durability: Durability,
    shape: Shape,
    load: Load,
    server_pid: Option<u32>,
) -> Result<Measured> {
    // One client shared by every publisher: its pool keeps one keep-alive connection per
    // request in flight.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(load.appenders * load.in_flight)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(60))
        .build()
        .context("building the HTTP client")?;
    let topic_url = format!("{base_url}/v1/topics/{topic}");
    let settings = serde_json::json!({ "partitions": 1, "durability": durability });
    let response = client
        .put(&topic_url)
        .json(&settings)
        .send()
        .await
        .with_context(|| format!("PUT {topic_url}"))?;
    let status = response.status();
    if status != reqwest::StatusCode::CREATED {
        let text = response.text().await.unwrap_or_default();
        bail!("PUT {topic_url} answered {status}, not 201 Created: {text}");
    }
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let source = Arc::new(Publishes {
        client,
        url: format!("{topic_url}/events"),
        shape,
        data: format!("\"{}\"", "x".repeat(shape.payload)),
        millis,
    });
    let mut measured = load::run(
        Load {
            drain: true,
            ..load
        },
        source,
        server_pid,
    )
    .await?;
    // The driver counts operations; each one acknowledged a whole batch.
    measured.events *= shape.batch as u64;
    Ok(measured)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_body_is_a_json_array_of_distinct_events() {
        let p = Publishes {
            client: reqwest::Client::new(),
            url: String::new(),
            shape: Shape {
                batch: 3,
                payload: 4,
            },
            data: "\"xxxx\"".into(),
            millis: 1,
        };
        let a: serde_json::Value = serde_json::from_str(&p.body(0, 0)).expect("json");
        let b: serde_json::Value = serde_json::from_str(&p.body(0, 1)).expect("json");
        let ids: std::collections::HashSet<String> = a
            .as_array()
            .expect("array")
            .iter()
            .chain(b.as_array().expect("array"))
            .map(|e| {
                assert_eq!(e["data"], "xxxx");
                e["id"].as_str().expect("id").to_string()
            })
            .collect();
        assert_eq!(ids.len(), 6);
    }
}
