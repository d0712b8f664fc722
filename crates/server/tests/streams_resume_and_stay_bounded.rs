//! SSE and NDJSON streams: live delivery, resume by `Last-Event-ID` or `from`, heartbeats,
//! a slow client ended with its resume position (nothing lost, nothing repeated when it
//! resumes there), and streams that end when the server shuts down.

mod common;

use common::{Server, event};
use futures::StreamExt as _;
use serde_json::{Value, json};
use std::time::Duration;

/// Reads a streaming body line by line.
struct Lines {
    body: std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buf: Vec<u8>,
}

impl Lines {
    fn new(r: reqwest::Response) -> Self {
        Self {
            body: Box::pin(r.bytes_stream()),
            buf: Vec::new(),
        }
    }

    /// The next line, or None at the end of the body; panics after 10 s of silence.
    async fn next(&mut self) -> Option<String> {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                return Some(String::from_utf8_lossy(&line[..i]).into_owned());
            }
            match tokio::time::timeout(Duration::from_secs(10), self.body.next())
                .await
                .expect("stream silent for 10 s")
            {
                Some(chunk) => self.buf.extend_from_slice(&chunk.expect("chunk")),
                None => return None,
            }
        }
    }

    /// The next SSE message as (id, event, data), skipping comments.
    async fn sse(&mut self) -> Option<(Option<String>, Option<String>, String)> {
        let (mut id, mut ev, mut data) = (None, None, String::new());
        loop {
            let line = self.next().await?;
            if line.is_empty() {
                if id.is_some() || ev.is_some() || !data.is_empty() {
                    return Some((id, ev, data));
                }
            } else if let Some(v) = line.strip_prefix("id: ") {
                id = Some(v.to_string());
            } else if let Some(v) = line.strip_prefix("event: ") {
                ev = Some(v.to_string());
            } else if let Some(v) = line.strip_prefix("data: ") {
                data.push_str(v);
            }
        }
    }
}

async fn open(s: &Server, path: &str, accept: &str, last_id: Option<&str>) -> Lines {
    let mut req = s.client.get(s.url(path)).header("accept", accept);
    if let Some(id) = last_id {
        req = req.header("last-event-id", id);
    }
    let r = req.send().await.expect("open stream");
    assert_eq!(r.status(), 200);
    Lines::new(r)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_delivers_live_and_resumes_from_the_last_event_id() {
    let s = Server::start().await;
    s.topic("live.v1", json!({"partitions": 2})).await;
    for i in 0..3 {
        s.publish(
            "live.v1",
            &event(&format!("e{i}"), &format!("k{i}"), json!(i)),
        )
        .await;
    }
    let mut sse = open(&s, "/v1/topics/live.v1/stream", "text/event-stream", None).await;
    let mut ids = Vec::new();
    let mut last = String::new();
    for _ in 0..3 {
        let (id, _, data) = sse.sse().await.expect("event");
        let e: Value = serde_json::from_str(&data).expect("json");
        ids.push(e["id"].as_str().expect("id").to_string());
        last = id.expect("sse id");
    }
    // Live: published after the stream opened.
    s.publish("live.v1", &event("e3", "k3", json!(3))).await;
    let (_, _, data) = sse.sse().await.expect("live event");
    assert!(data.contains("\"e3\""), "{data}");
    drop(sse);
    ids.sort();
    assert_eq!(ids, ["e0", "e1", "e2"]);

    // Resume after the third event: only e3 (and what follows) comes again.
    s.publish("live.v1", &event("e4", "k4", json!(4))).await;
    let mut again = open(
        &s,
        "/v1/topics/live.v1/stream",
        "text/event-stream",
        Some(&last),
    )
    .await;
    let mut got = Vec::new();
    for _ in 0..2 {
        let (_, _, data) = again.sse().await.expect("resumed event");
        let e: Value = serde_json::from_str(&data).expect("json");
        got.push(e["id"].as_str().expect("id").to_string());
    }
    got.sort();
    assert_eq!(got, ["e3", "e4"]);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ndjson_sends_heartbeats_and_ends_on_shutdown() {
    let s = Server::with(switchyard_server::Options {
        heartbeat: Duration::from_millis(100),
        ..Default::default()
    })
    .await;
    s.topic("hb.v1", json!({})).await;
    s.publish("hb.v1", &event("only", "k", json!(1))).await;
    let mut lines = open(
        &s,
        "/v1/topics/hb.v1/stream?from=0",
        "application/x-ndjson",
        None,
    )
    .await;
    let first: Value = serde_json::from_str(&lines.next().await.expect("line")).expect("json");
    assert_eq!(
        (first["id"].as_str(), first["position"].as_str()),
        (Some("only"), Some("1"))
    );
    let beat: Value = serde_json::from_str(&lines.next().await.expect("line")).expect("json");
    assert_eq!(beat, json!({"heartbeat": true, "position": "1"}));
    let stopping = tokio::spawn(s.stop());
    let mut end = None;
    while let Some(l) = lines.next().await {
        let v: Value = serde_json::from_str(&l).expect("json");
        if v["end"] == json!(true) {
            end = Some(v);
        }
    }
    let end = end.expect("an end line before the body closed");
    assert_eq!(
        (end["code"].as_str(), end["position"].as_str()),
        (Some("shutting-down"), Some("1"))
    );
    stopping.await.expect("server stopped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_is_ended_with_a_position_that_loses_nothing() {
    let s = Server::with(switchyard_server::Options {
        stream_buffer: 4,
        slow_client_timeout: Duration::from_millis(200),
        ..Default::default()
    })
    .await;
    s.topic("big.v1", json!({})).await;
    // ~25 MiB: more than the socket buffers and the server's write buffer hold.
    let n = 400;
    let blob = "x".repeat(64 * 1024);
    for chunk in (0..n).collect::<Vec<_>>().chunks(40) {
        let batch: Vec<Value> = chunk
            .iter()
            .map(|i| event(&format!("b{i}"), "k", json!({"i": i, "blob": blob})))
            .collect();
        let (st, _) = s
            .post(
                "big.v1",
                "application/cloudevents-batch+json",
                Value::Array(batch).to_string(),
            )
            .await;
        assert_eq!(st, 200);
    }
    let mut lines = open(
        &s,
        "/v1/topics/big.v1/stream?from=0",
        "application/x-ndjson",
        None,
    )
    .await;
    // Do not read for a while: the server's buffer fills and the timeout passes.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut seen = Vec::new();
    let mut end = None;
    while let Some(l) = lines.next().await {
        let v: Value = serde_json::from_str(&l).expect("json");
        if v["end"] == json!(true) {
            end = Some(v);
        } else {
            seen.push(v["data"]["i"].as_u64().expect("i"));
        }
    }
    let end = end.expect("the stream ended with a position");
    assert_eq!(end["code"], json!("slow-client"));
    assert!(
        seen.len() < n,
        "the slow client was ended before the last event"
    );
    let position = end["position"].as_str().expect("position");
    assert_eq!(position, seen.len().to_string());
    // Resuming there delivers exactly the rest.
    let mut rest = open(
        &s,
        &format!("/v1/topics/big.v1/stream?from={position}"),
        "application/x-ndjson",
        None,
    )
    .await;
    while seen.len() < n {
        let v: Value = serde_json::from_str(&rest.next().await.expect("line")).expect("json");
        seen.push(v["data"]["i"].as_u64().expect("i"));
    }
    assert_eq!(seen, (0..n as u64).collect::<Vec<_>>());
    s.stop().await;
}

/// A client that opens a stream and never reads is disconnected once the server's writes to
/// it have been stuck for `stalled_write_timeout`; its stream is counted closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_disconnected() {
    use tokio::io::AsyncWriteExt as _;
    let s = Server::with(switchyard_server::Options {
        stream_buffer: 4,
        slow_client_timeout: Duration::from_millis(300),
        stalled_write_timeout: Duration::from_millis(300),
        ..Default::default()
    })
    .await;
    s.topic("deaf.v1", json!({})).await;
    let blob = "x".repeat(64 * 1024);
    for chunk in 0..10 {
        let batch: Vec<Value> = (0..40)
            .map(|i| event(&format!("d{chunk}-{i}"), "k", json!({"blob": blob})))
            .collect();
        let (st, _) = s
            .post(
                "deaf.v1",
                "application/cloudevents-batch+json",
                Value::Array(batch).to_string(),
            )
            .await;
        assert_eq!(st, 200);
    }
    let addr = s.base.trim_start_matches("http://").to_string();
    let mut sock = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    sock.write_all(
        format!(
            "GET /v1/topics/deaf.v1/stream?from=0 HTTP/1.1\r\nhost: {addr}\r\n\
             accept: application/x-ndjson\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .expect("request");
    let gauge = |text: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix("switchyard_streams_open "))
            .map(|v| v.trim().to_string())
    };
    let metrics = || async {
        s.client
            .get(s.url("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text")
    };
    // The stream opens ...
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while gauge(&metrics().await).as_deref() != Some("1") {
        assert!(
            std::time::Instant::now() < deadline,
            "the stream never opened"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // ... and is closed by the server while the client still holds its socket unread.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while gauge(&metrics().await).as_deref() != Some("0") {
        assert!(
            std::time::Instant::now() < deadline,
            "a client that never reads still holds its stream"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(sock);
    s.stop().await;
}
