//! The gateway's connections to an upstream: kept alive and reused once an answer's body has
//! been read (content-length, chunked and empty bodies alike), replaced when the upstream
//! closes them while idle, and never mixed up between concurrent requests.

mod common;
use common::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use switchyard_gateway::GatewayOptions;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// A hand-written HTTP/1.1 upstream that counts its connections. Paths:
/// `/len/N` N bytes with content-length; `/chunked` a chunked body; `/empty` 204;
/// `/bye` answers, then closes the connection without saying so (as an idle timeout does);
/// `/endless` promises 1 GiB and writes until the reader goes away.
/// Every answer carries `x-path` with the path asked, to catch answers given to the wrong
/// request.
async fn counting_upstream() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("test step");
    let addr = listener.local_addr().expect("test step");
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut pending = Vec::new();
                loop {
                    let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") else {
                        let mut buf = [0u8; 4096];
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => pending.extend_from_slice(&buf[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&pending[..end]).to_string();
                    pending.drain(..end + 4);
                    let mut words = head.split_whitespace();
                    let method = words.next().unwrap_or("").to_string();
                    let path = words.next().unwrap_or("").to_string();
                    if path == "/endless" {
                        let head = format!(
                            "HTTP/1.1 200 OK\r\nx-path: {path}\r\ncontent-length: {}\r\n\r\n",
                            1u64 << 30
                        );
                        if s.write_all(head.as_bytes()).await.is_err() {
                            return;
                        }
                        let chunk = [b'e'; 65536];
                        while s.write_all(&chunk).await.is_ok() {}
                        return;
                    }
                    let answer: Vec<u8> = if let Some(n) = path.strip_prefix("/len/") {
                        let n: usize = n.parse().unwrap_or(0);
                        let mut a = format!(
                            "HTTP/1.1 200 OK\r\nx-path: {path}\r\ncontent-length: {n}\r\n\r\n"
                        )
                        .into_bytes();
                        if method != "HEAD" {
                            a.extend((0..n).map(|i| b'a' + (i % 26) as u8));
                        }
                        a
                    } else if path == "/chunked" {
                        format!(
                            "HTTP/1.1 200 OK\r\nx-path: {path}\r\ntransfer-encoding: chunked\r\n\r\n\
                             5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
                        )
                        .into_bytes()
                    } else if path == "/empty" {
                        format!("HTTP/1.1 204 No Content\r\nx-path: {path}\r\n\r\n").into_bytes()
                    } else {
                        format!("HTTP/1.1 200 OK\r\nx-path: {path}\r\ncontent-length: 3\r\n\r\nbye")
                            .into_bytes()
                    };
                    if s.write_all(&answer).await.is_err() {
                        return;
                    }
                    if path == "/bye" {
                        return;
                    }
                }
            });
        }
    });
    (addr, accepted)
}

/// A gateway whose one route sends everything to `upstream`.
async fn gateway_to(dir: &std::path::Path, upstream: std::net::SocketAddr) -> Running {
    let declared = vec![route(&format!(
        "name = \"up\"\npath = \"/{{*rest}}\"\nupstreams = [{{ url = \"http://{upstream}\" }}]"
    ))];
    Running::start(
        dir,
        GatewayOptions {
            declared,
            ..Default::default()
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_reused_after_every_kind_of_body_and_replaced_when_closed() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, accepted) = counting_upstream().await;
    let gw = gateway_to(dir.path(), addr).await;
    let c = client();

    // One request at a time: one connection serves them all.
    for round in 0..5 {
        for path in ["/len/10", "/chunked", "/empty", "/len/0", "/len/300000"] {
            let r = c.get(format!("{}{path}", gw.url)).send().await.unwrap();
            assert_eq!(r.headers()["x-path"], path, "round {round}");
            let status = r.status().as_u16();
            let body = r.bytes().await.unwrap();
            match path {
                "/chunked" => assert_eq!(&body[..], b"hello world"),
                "/empty" => assert_eq!((status, body.len()), (204, 0)),
                p => {
                    let n: usize = p.trim_start_matches("/len/").parse().unwrap();
                    assert_eq!(body.len(), n, "{p}");
                    assert!(
                        body.iter()
                            .enumerate()
                            .all(|(i, b)| *b == b'a' + (i % 26) as u8)
                    );
                }
            }
        }
        let r = c.head(format!("{}/len/50", gw.url)).send().await.unwrap();
        assert_eq!(r.headers()["content-length"], "50");
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "30 answers read to their end, one after another, need one connection"
    );

    // The upstream closes its side after answering: the next request still gets through, on
    // a new connection.
    for i in 0..5 {
        let r = c.get(format!("{}/bye", gw.url)).send().await.unwrap();
        assert_eq!(r.status(), 200, "bye {i}");
        assert_eq!(r.text().await.unwrap(), "bye");
        // Give the close time to arrive, so the pooled connection is seen closed.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let r = c.get(format!("{}/len/5", gw.url)).send().await.unwrap();
        assert_eq!(r.status(), 200, "after bye {i}");
        assert_eq!(r.text().await.unwrap(), "abcde");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 6);

    // Concurrent requests each get their own answer, on at most as many connections.
    let before = accepted.load(Ordering::SeqCst);
    let mut tasks = Vec::new();
    for t in 0..8 {
        let (c, url) = (c.clone(), gw.url.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..20 {
                let n = 1 + (t * 20 + i) % 97;
                let r = c.get(format!("{url}/len/{n}")).send().await.unwrap();
                assert_eq!(r.headers()["x-path"], format!("/len/{n}").as_str());
                assert_eq!(r.bytes().await.unwrap().len(), n);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let opened = accepted.load(Ordering::SeqCst) - before;
    assert!(
        opened <= 8,
        "8 clients opened {opened} connections upstream"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_mid_body_does_not_poison_the_pool() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, accepted) = counting_upstream().await;
    let gw = gateway_to(dir.path(), addr).await;
    let gw_addr = gw.url.trim_start_matches("http://").to_string();
    // A raw client that asks for a body no buffer can hold, reads the head and leaves.
    for _ in 0..3 {
        let mut s = tokio::net::TcpStream::connect(&gw_addr).await.unwrap();
        s.write_all(b"GET /endless HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 1024];
        let n = s.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        drop(s);
    }
    // The half-read connections are closed, not handed to the next request.
    let c = client();
    for _ in 0..10 {
        let r = c.get(format!("{}/len/7", gw.url)).send().await.unwrap();
        assert_eq!(r.headers()["x-path"], "/len/7");
        assert_eq!(r.text().await.unwrap(), "abcdefg");
    }
    // The three half-read connections can never be reused: the ten answers came on another.
    let opened = accepted.load(Ordering::SeqCst);
    assert!(
        opened >= 4,
        "only {opened} upstream connections for 3 unfinished bodies and 10 answers"
    );
    gw.stop().await;
}
