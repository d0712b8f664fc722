//! GET /v1/topics/{topic}/stream: live events as Server-Sent Events or NDJSON.
//!
//! One task per partition reads from the journal and waits for new records without
//! polling; the tasks feed one bounded buffer, so a slow client never makes the server
//! buffer more than `Options::stream_buffer` events. A client that has not taken the next
//! event for `Options::slow_client_timeout` gets an `end` message with its resume position
//! and the stream ends. Heartbeats go out when there is nothing else to send.
//!
//! - SSE (`Accept: text/event-stream`, the default): each event is `id: <position>` and
//!   `data: <CloudEvent JSON>`; a heartbeat is the comment `: heartbeat <position>`; the end
//!   is `event: end` with `{"code", "detail", "position"}`. `Last-Event-ID` resumes.
//! - NDJSON (`Accept: application/x-ndjson`): one CloudEvent per line with a `position`
//!   attribute added; a heartbeat is `{"heartbeat":true,"position":...}`; the end is
//!   `{"end":true,"code":...,"detail":...,"position":...}`.

use crate::api::{AppState, ReadQuery, topic_name};
use crate::cloudevents;
use crate::metrics::Metrics;
use crate::position::{From as StartFrom, Position};
use crate::problem::Problem;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::Stream;
use serde_json::{Value, json};
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use switchyard_journal::{Journal, Partition, ReadLimits, StoredRecord, TopicName};
use tokio::sync::{mpsc, watch};

enum Item {
    Record(Partition, StoredRecord),
    Failed(Problem),
}

enum Out {
    Event(Value, Position),
    Heartbeat(Position),
    End {
        code: &'static str,
        detail: String,
        position: Position,
    },
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Sse,
    Ndjson,
}

fn format(headers: &HeaderMap) -> Result<Format, Problem> {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("*/*")
        .to_ascii_lowercase();
    if accept.contains("application/x-ndjson") {
        Ok(Format::Ndjson)
    } else if accept.contains("text/event-stream") || accept.contains("*/*") {
        Ok(Format::Sse)
    } else {
        Err(Problem::new(
            StatusCode::NOT_ACCEPTABLE,
            "not-acceptable",
            format!("streams are text/event-stream or application/x-ndjson, not {accept:?}"),
        ))
    }
}

pub(crate) async fn handler(
    State(s): State<AppState>,
    Path(topic): Path<String>,
    headers: HeaderMap,
    query: Result<Query<ReadQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Problem> {
    let Query(q) = query.map_err(|e| Problem::bad_request("invalid-query", e.body_text()))?;
    let topic = topic_name(&topic)?;
    let fmt = format(&headers)?;
    // A reconnecting EventSource sends the last id it saw: that wins over `from`.
    let from = match headers.get("last-event-id").and_then(|v| v.to_str().ok()) {
        Some(id) if !id.is_empty() => id.to_string(),
        _ => q.from.clone().unwrap_or_default(),
    };
    let from = StartFrom::parse(&from)?;
    let info = s.journal.describe_topic(&topic).await?;
    let starts = from.resolve(&s.journal, &topic, &info, q.partition).await?;
    let position = Position(starts.iter().map(|&(_, o)| o).collect());
    let slots: Vec<Partition> = starts.iter().map(|&(p, _)| p).collect();

    let (tx, rx) = mpsc::channel(s.options.stream_buffer.max(1));
    let slow = Arc::new(AtomicBool::new(false));
    for &(p, start) in &starts {
        tokio::spawn(follow(
            s.journal.clone(),
            topic.clone(),
            p,
            start,
            tx.clone(),
            s.stop.clone(),
            slow.clone(),
            s.options.slow_client_timeout,
        ));
    }
    drop(tx);
    Metrics::add(&s.metrics.streams_open, 1);
    let outs = merge(MergeState {
        rx,
        position,
        slots,
        slow,
        heartbeat: tokio::time::interval_at(
            tokio::time::Instant::now() + s.options.heartbeat,
            s.options.heartbeat,
        ),
        stop: s.stop.clone(),
        done: false,
        _open: OpenStream(s.metrics.clone()),
        metrics: s.metrics.clone(),
    });
    Ok(match fmt {
        Format::Sse => Sse::new(futures::StreamExt::map(outs, |o| {
            Ok::<_, Infallible>(sse_event(o))
        }))
        .into_response(),
        Format::Ndjson => {
            let body = Body::from_stream(futures::StreamExt::map(outs, |o| {
                Ok::<_, Infallible>(ndjson_line(o))
            }));
            (
                [
                    (header::CONTENT_TYPE, "application/x-ndjson"),
                    (header::CACHE_CONTROL, "no-cache"),
                ],
                body,
            )
                .into_response()
        }
    })
}

/// Counts the stream as open while it lives.
struct OpenStream(Arc<Metrics>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.streams_open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Reads one partition from `offset` on, forever, into `tx`.
#[allow(clippy::too_many_arguments)]
async fn follow(
    journal: Arc<dyn Journal>,
    topic: TopicName,
    partition: Partition,
    mut offset: u64,
    tx: mpsc::Sender<Item>,
    mut stop: watch::Receiver<bool>,
    slow: Arc<AtomicBool>,
    slow_after: std::time::Duration,
) {
    loop {
        let batch = match journal
            .read(
                &topic,
                partition,
                offset,
                ReadLimits {
                    max_records: 256,
                    ..ReadLimits::default()
                },
            )
            .await
        {
            Ok(b) => b,
            Err(e) => {
                let _ = tx.send(Item::Failed(e.into())).await;
                return;
            }
        };
        offset = batch.next_offset;
        if batch.records.is_empty() {
            tokio::select! {
                r = journal.wait_for(&topic, partition, offset) => if let Err(e) = r {
                    let _ = tx.send(Item::Failed(e.into())).await;
                    return;
                },
                _ = stopped(&mut stop) => return,
                _ = tx.closed() => return,
            }
            continue;
        }
        for r in batch.records {
            match tokio::time::timeout(slow_after, tx.send(Item::Record(partition, r))).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return,
                Err(_) => {
                    slow.store(true, Ordering::Release);
                    return;
                }
            }
        }
    }
}

/// Resolves once the server shuts down (never if the signal's sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

enum Next {
    Stop,
    Item(Option<Item>),
    Heartbeat,
}

struct MergeState {
    rx: mpsc::Receiver<Item>,
    position: Position,
    /// The partition of each entry of `position`.
    slots: Vec<Partition>,
    slow: Arc<AtomicBool>,
    heartbeat: tokio::time::Interval,
    stop: watch::Receiver<bool>,
    done: bool,
    _open: OpenStream,
    metrics: Arc<Metrics>,
}

fn merge(state: MergeState) -> impl Stream<Item = Out> {
    futures::stream::unfold(state, |mut st| async move {
        if st.done {
            return None;
        }
        let end = |st: &mut MergeState, code: &'static str, detail: String| {
            st.done = true;
            Out::End {
                code,
                detail,
                position: st.position.clone(),
            }
        };
        if st.slow.load(Ordering::Acquire) {
            Metrics::add(&st.metrics.streams_disconnected_slow, 1);
            let out = end(
                &mut st,
                "slow-client",
                "the client did not keep up; resume from `position`".into(),
            );
            return Some((out, st));
        }
        let next = tokio::select! {
            biased;
            _ = stopped(&mut st.stop) => Next::Stop,
            item = st.rx.recv() => Next::Item(item),
            _ = st.heartbeat.tick() => Next::Heartbeat,
        };
        let out = match next {
            Next::Stop => end(
                &mut st,
                "shutting-down",
                "the server is shutting down; resume from `position`".into(),
            ),
            Next::Item(Some(Item::Record(p, r))) => {
                if let Some(i) = st.slots.iter().position(|&s| s == p) {
                    st.position.0[i] = r.offset + 1;
                }
                Metrics::add(&st.metrics.events_read, 1);
                st.heartbeat.reset();
                Out::Event(cloudevents::render(&r, p), st.position.clone())
            }
            Next::Item(Some(Item::Failed(problem))) => end(&mut st, problem.code, problem.detail),
            Next::Item(None) if st.slow.load(Ordering::Acquire) => end(
                &mut st,
                "slow-client",
                "the client did not keep up; resume from `position`".into(),
            ),
            Next::Item(None) => end(&mut st, "ended", "the stream ended".into()),
            Next::Heartbeat => Out::Heartbeat(st.position.clone()),
        };
        Some((out, st))
    })
}

fn sse_event(o: Out) -> SseEvent {
    match o {
        Out::Event(v, pos) => SseEvent::default().id(pos.to_string()).data(v.to_string()),
        Out::Heartbeat(pos) => SseEvent::default().comment(format!("heartbeat {pos}")),
        Out::End {
            code,
            detail,
            position,
        } => SseEvent::default().event("end").data(
            json!({"code": code, "detail": detail, "position": position.to_string()}).to_string(),
        ),
    }
}

fn ndjson_line(o: Out) -> Bytes {
    let v = match o {
        Out::Event(mut v, pos) => {
            if let Value::Object(m) = &mut v {
                m.insert("position".into(), pos.to_string().into());
            }
            v
        }
        Out::Heartbeat(pos) => json!({"heartbeat": true, "position": pos.to_string()}),
        Out::End {
            code,
            detail,
            position,
        } => json!({"end": true, "code": code, "detail": detail, "position": position.to_string()}),
    };
    let mut line = v.to_string().into_bytes();
    line.push(b'\n');
    Bytes::from(line)
}
