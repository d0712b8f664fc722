//! The HTTP client against the real API and against a real HTTP fake that misbehaves:
//!
//! - problem+json answers become `Error::Problem` with their code and pointer (a bad event,
//!   an unknown topic), an offset conflict `Error::Conflict` with the actual offset;
//! - 503 with `Retry-After` is retried, then succeeds; a platform that stays away is an
//!   `Error::Http` after the retries; a 400 is not retried;
//! - a stream resumes where it was after the server restarts on the same port;
//! - bad names and URLs are refused before anything is sent.

mod common;

use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use switchyard_sdk::{Client, ClientRetry, CloudEvent, Error, Expected, Lineage, Outgoing};

fn event(id: &str, key: &str) -> CloudEvent {
    Outgoing {
        topic: "t.v1".into(),
        ty: "thing.made".into(),
        key: Some(key.into()),
        data: json!({"n": 1}),
    }
    .stamp(id.into(), "/test", &Lineage::root())
    .expect("event")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn problems_are_typed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let server = common::Server::start(tmp.path()).await;
    let client = Client::new(&server.url).expect("client");
    match client.publish("nope.v1", &[event("e1", "k")], None).await {
        Err(Error::Problem(p)) => assert_eq!((p.status, p.code.as_str()), (404, "topic-not-found")),
        other => panic!("{other:?}"),
    }
    client
        .put_topic("t.v1", &json!({"partitions": 2}))
        .await
        .expect("topic");
    match client.put_topic("t.v1", &json!({"partitions": 0})).await {
        Err(Error::Problem(p)) => {
            assert_eq!(p.code, "invalid-topic-config");
            assert_eq!(p.pointer.as_deref(), Some("partitions"));
        }
        other => panic!("{other:?}"),
    }
    let placed = client
        .publish(
            "t.v1",
            &[event("e1", "k"), event("e2", "k")],
            Some(Expected::NoRecord),
        )
        .await
        .expect("publish");
    assert_eq!(placed.len(), 2);
    // Sent again: duplicates, and the condition does not apply to what is not new.
    let again = client
        .publish("t.v1", &[event("e1", "k")], Some(Expected::NoRecord))
        .await
        .expect("duplicate");
    assert!(again[0].duplicate);
    match client
        .publish("t.v1", &[event("e3", "k")], Some(Expected::LastOffset(0)))
        .await
    {
        Err(Error::Conflict { actual, key, .. }) => {
            assert_eq!(actual, Some(placed[1].offset));
            assert_eq!(key, "k");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        client.partitions("bad name").await,
        Err(Error::Config { .. })
    ));
    assert!(matches!(
        client.subscription("a/b").await,
        Err(Error::Config { .. })
    ));
    assert!(Client::new("ftp://x").is_err());
    assert!(Client::new("not a url").is_err());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unavailable_is_retried_and_bad_requests_are_not() {
    // A fake that answers 503 (Retry-After: 0) twice, then 200; and 400 on /bad.
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let app = axum::Router::new()
        .route(
            "/v1/topics/{t}",
            axum::routing::get(move || {
                let c = c.clone();
                async move {
                    if c.fetch_add(1, Ordering::SeqCst) < 2 {
                        (
                            axum::http::StatusCode::SERVICE_UNAVAILABLE,
                            [("retry-after", "0")],
                            "busy",
                        )
                            .into_response_parts()
                    } else {
                        (
                            axum::http::StatusCode::OK,
                            [("content-type", "application/json")],
                            r#"{"partitions":[{"partition":0,"first-offset":0,"next-offset":3}]}"#,
                        )
                            .into_response_parts()
                    }
                }
            }),
        )
        .route(
            "/v1/subscriptions",
            axum::routing::get(|| async {
                (
                    axum::http::StatusCode::BAD_REQUEST,
                    [("content-type", "application/problem+json")],
                    r#"{"status":400,"code":"invalid-query","detail":"no"}"#,
                )
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let client = Client::new(&url).expect("client");
    let parts = client.partitions("x.v1").await.expect("third try");
    assert_eq!(parts[0].next_offset, 3);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    match client.subscriptions().await {
        Err(Error::Problem(p)) => assert_eq!(p.code, "invalid-query"),
        other => panic!("{other:?}"),
    }
    // Nothing listens: an Http error after the retries.
    let gone = Client::new(&format!("http://127.0.0.1:{}", common::free_port()))
        .expect("client")
        .with_retry(ClientRetry {
            retries: 2,
            min_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
        });
    assert!(matches!(
        gone.partitions("x.v1").await,
        Err(Error::Http { .. })
    ));
}

trait IntoParts {
    fn into_response_parts(self) -> axum::response::Response;
}

impl<T: axum::response::IntoResponse> IntoParts for T {
    fn into_response_parts(self) -> axum::response::Response {
        self.into_response()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_resumes_after_the_server_restarts() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let server = common::Server::start(tmp.path()).await;
    let addr = server.url.trim_start_matches("http://").to_string();
    let client = Client::new(&server.url).expect("client");
    client
        .put_topic("t.v1", &json!({"partitions": 1}))
        .await
        .expect("topic");
    client
        .publish("t.v1", &[event("a", "k"), event("b", "k")], None)
        .await
        .expect("publish");
    let mut stream = client.stream("t.v1", None, "earliest");
    assert_eq!(stream.next().await.expect("a").id(), "a");
    assert_eq!(stream.next().await.expect("b").id(), "b");
    assert_eq!(stream.position(), "2");
    server.stop().await;
    let server = common::Server::start_on(tmp.path(), &addr).await;
    client
        .publish("t.v1", &[event("c", "k")], None)
        .await
        .expect("publish after restart");
    let next = tokio::time::timeout(Duration::from_secs(20), stream.next())
        .await
        .expect("resumed in time")
        .expect("c");
    assert_eq!(
        next.id(),
        "c",
        "resumed from the position: nothing again, nothing lost"
    );
    assert_eq!(next.sequence(), Some(2));
    server.stop().await;
}
