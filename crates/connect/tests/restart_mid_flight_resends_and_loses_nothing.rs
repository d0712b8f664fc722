//! The gateway's process is killed (SIGKILL) with attempts in flight; a new one on the
//! same journal and store resends what had no recorded outcome and reads on from the
//! lane's cursor: every event is delivered, none lost.
//!
//! The first life runs in a child process: this test's own binary, run again with
//! `CRASH_CHILD_DIR` set, which publishes, starts the gateway, then waits to be killed.

mod common;

use common::{Platform, eventually};
use serde_json::json;
use std::time::Duration;
use switchyard_connect::testing::{Behaviour, FakeVendor};
use switchyard_store::connect::MessageState;

const N: usize = 12;

fn config(url: &str) -> String {
    format!(
        r#"
[adapters.bakery]
topic = "inventory.v1"
mapping = ".data"
start = "earliest"
concurrency = 4
writer = {{ kind = "http", url = "{url}/orders" }}
"#
    )
}

/// The first life: start, publish, wait to be killed.
async fn child(dir: &str, url: &str) {
    let p = Platform::open_at(std::path::Path::new(dir), &[("inventory.v1", 2)]).await;
    // Every event is in the journal before the gateway starts, so the kill can only come
    // while attempts are in flight.
    for i in 0..N {
        p.publish(
            "inventory.v1",
            &format!("e-{i}"),
            "stock.low",
            &format!("k{i}"),
            json!({"n": i}),
        )
        .await;
    }
    let _connect = p.connect(&config(url)).await;
    std::future::pending::<()>().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_mid_flight_loses_nothing() {
    if let (Ok(dir), Ok(url)) = (
        std::env::var("CRASH_CHILD_DIR"),
        std::env::var("CRASH_CHILD_URL"),
    ) {
        child(&dir, &url).await;
        return;
    }
    let v = FakeVendor::start_local().await.expect("vendor");
    v.set(Behaviour {
        latency_ms: 300,
        ..Behaviour::default()
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let mut kid = tokio::process::Command::new(std::env::current_exe().expect("exe"))
        .args(["--exact", "a_crash_mid_flight_loses_nothing", "--nocapture"])
        .env("CRASH_CHILD_DIR", dir.path())
        .env("CRASH_CHILD_URL", v.url())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("child");
    eventually(
        Duration::from_secs(30),
        "attempts in flight in the child",
        || async { !v.received().is_empty() },
    )
    .await;
    kid.start_kill().expect("SIGKILL");
    let _ = kid.wait().await;
    let sent_before = v.received().len();
    assert!(
        sent_before < N,
        "the crash came mid-flight ({sent_before} sent)"
    );

    let p = Platform::open_at(dir.path(), &[]).await;
    let connect = p.connect(&config(&v.url())).await;
    eventually(
        Duration::from_secs(30),
        "all delivered after the restart",
        || async { p.count("bakery", MessageState::Delivered).await == N as u64 },
    )
    .await;
    let mut seen: Vec<String> = v.received().into_iter().map(|r| r.body).collect();
    seen.sort();
    seen.dedup();
    assert_eq!(
        seen.len(),
        N,
        "every event reached the vendor (at least once)"
    );
    assert_eq!(p.messages("bakery").await.len(), N, "and is one message");
    connect.shutdown().await;
}
