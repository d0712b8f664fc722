//! The gateway on serving threads of its own (`Gateway::serve_threads`, what `switchyard
//! serve --gateway-listen` runs): several single-threaded runtimes listening on one port,
//! every request answered whichever thread took its connection, a port another program
//! holds refused, and a stop that lets the requests in flight finish and then ends them all.

mod common;
use common::*;
use std::sync::Arc;
use switchyard_gateway::{Gateway, GatewayOptions, bind_shared};
use switchyard_journal::file::FileJournal;

/// A gateway with the one route `route_toml`, served on `threads` serving threads on a free
/// loopback port.
struct Threaded {
    gateway: Gateway,
    journal: FileJournal,
    addr: std::net::SocketAddr,
    stop: tokio::sync::watch::Sender<bool>,
    served: tokio::task::JoinHandle<std::io::Result<()>>,
    _dir: tempfile::TempDir,
}

impl Threaded {
    async fn start(route_toml: &str, threads: usize) -> Self {
        let dir = tempfile::tempdir().expect("test step");
        let journal = FileJournal::open(dir.path()).expect("test step");
        let gateway = Gateway::start(
            Arc::new(journal.clone()),
            GatewayOptions {
                declared: vec![route(route_toml)],
                ..Default::default()
            },
        )
        .await
        .expect("test step");
        let listener = bind_shared("127.0.0.1:0".parse().expect("test step")).expect("test step");
        let addr = listener.local_addr().expect("test step");
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let g = gateway.clone();
        let served = tokio::spawn(async move { g.serve_threads(listener, threads, stop_rx).await });
        Threaded {
            gateway,
            journal,
            addr,
            stop,
            served,
            _dir: dir,
        }
    }

    /// Tells the threads to stop; they all end, without error, and the port closes.
    async fn stop(self) {
        self.stop.send_replace(true);
        tokio::time::timeout(std::time::Duration::from_secs(10), self.served)
            .await
            .expect("every serving thread stops")
            .expect("test step")
            .expect("served without error");
        assert!(
            tokio::net::TcpStream::connect(self.addr).await.is_err(),
            "still listening after the stop"
        );
        self.gateway.shutdown().await;
        self.journal.close().await.expect("test step");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_on_many_connections_are_all_answered_and_stop_ends_every_thread() {
    let orders = Echo::start("orders").await;
    let gw = Threaded::start(
        &format!(
            r#"name = "api"
path = "/api/{{*rest}}"
strip-prefix = true
upstreams = [{{ url = "{}" }}]"#,
            orders.url()
        ),
        3,
    )
    .await;
    let addr = gw.addr;

    // 24 clients of one connection each, 10 requests per connection: every answer is the
    // upstream's, for the request that was sent.
    let mut clients = Vec::new();
    for k in 0..24 {
        let url = format!("http://{addr}/api/c{k}");
        clients.push(tokio::spawn(async move {
            let c = reqwest::Client::builder()
                .no_proxy()
                .pool_max_idle_per_host(1)
                // A thread that took connections and never served them fails, not hangs.
                .timeout(std::time::Duration::from_secs(10))
                .build()
                .expect("test step");
            for i in 0..10 {
                let (s, v) = get_json(&c, &format!("{url}/{i}")).await;
                assert_eq!(s, 200, "{v}");
                assert_eq!(v["upstream"], "orders");
                assert_eq!(v["uri"], format!("/c{k}/{i}"));
            }
        }));
    }
    for c in clients {
        c.await.expect("every client's requests answered");
    }

    // The port is the gateway's: a program that does not share ports cannot take it.
    let taken = std::net::TcpListener::bind(addr);
    assert!(
        taken.is_err(),
        "a plain bind on the gateway's port succeeded"
    );

    gw.stop().await;
}

#[tokio::test]
async fn a_port_another_program_holds_is_refused() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").expect("test step");
    let addr = held.local_addr().expect("test step");
    let e = bind_shared(addr).expect_err("the port is taken");
    assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse, "{e}");

    // A listener bound without sharing cannot take more threads: refused before serving.
    let dir = tempfile::tempdir().expect("test step");
    let journal = FileJournal::open(dir.path()).expect("test step");
    let gateway = Gateway::start(Arc::new(journal.clone()), GatewayOptions::default())
        .await
        .expect("test step");
    let (_stop, stop_rx) = tokio::sync::watch::channel(false);
    let e = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        gateway.serve_threads(held, 2, stop_rx),
    )
    .await
    .expect("refused at once")
    .expect_err("a second thread cannot share the port");
    assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse, "{e}");
    gateway.shutdown().await;
    journal.close().await.expect("test step");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_flight_at_the_stop_is_answered_then_the_threads_end() {
    // An upstream that says when a request reached it, then takes 500 ms to answer.
    let slow = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("test step");
    let slow_url = format!("http://{}", slow.local_addr().expect("test step"));
    let reached = Arc::new(tokio::sync::Notify::new());
    let r = reached.clone();
    let app = axum::Router::new().fallback(move || {
        let r = r.clone();
        async move {
            r.notify_one();
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            "slow answer"
        }
    });
    tokio::spawn(async move { axum::serve(slow, app).await.expect("test step") });
    let gw = Threaded::start(
        &format!(
            r#"name = "slow"
path = "/{{*rest}}"
upstreams = [{{ url = "{slow_url}" }}]"#
        ),
        2,
    )
    .await;
    let addr = gw.addr;

    let asked = tokio::spawn(async move {
        let r = client()
            .get(format!("http://{addr}/x"))
            .send()
            .await
            .expect("answered");
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    });
    // The stop comes while the request is at the upstream.
    reached.notified().await;
    let stopping = tokio::spawn(gw.stop());
    let (status, body) = asked.await.expect("test step");
    assert_eq!((status, body.as_str()), (200, "slow answer"));
    stopping.await.expect("the threads end after the answer");
}
