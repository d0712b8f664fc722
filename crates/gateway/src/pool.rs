//! [`Upstreams`]: keep-alive HTTP/1.1 connections to upstreams, each one driven by the task
//! of the request that is using it.
//!
//! hyper-util's pooled client ran every connection in a task of its own: a request crossed
//! to that task through a channel, its answer and every chunk of its body crossed back, and
//! each answer spawned one more task to put the connection back in the pool. Here the
//! request's task polls the connection while it waits for the answer's head, the answer's
//! body polls it while the client reads, and the body's end puts it back: one task, no
//! spawn per request.
//!
//! A connection taken from the pool may have been closed by the upstream meanwhile: it is
//! polled once before use, and a request it could not send goes to the next one (or to a new
//! connection). A request that reached a connection which then failed is not resent.

use axum::body::Body;
use bytes::Bytes;
use http::uri::Authority;
use http::{Request, Response};
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, Connection, SendRequest};
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// Idle connections kept per upstream, at most.
const MAX_IDLE_PER_UPSTREAM: usize = 256;
/// An idle connection older than this is closed instead of used.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a request got no answer from its upstream.
#[derive(Debug)]
pub enum SendError {
    Connect(String),
    /// Sent (or being sent) and then the connection failed.
    Http(hyper::Error),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Connect(e) => f.write_str(e),
            SendError::Http(e) => {
                write!(f, "{e}")?;
                let mut cause = std::error::Error::source(e);
                while let Some(c) = cause {
                    write!(f, ": {c}")?;
                    cause = c.source();
                }
                Ok(())
            }
        }
    }
}

/// The connections to every upstream. Cheap to clone.
#[derive(Clone)]
pub struct Upstreams {
    idle: Arc<Mutex<IdleLists>>,
    idle_timeout: Duration,
}

/// Idle connections by the serving thread they belong to ([`SERVING_THREAD`]) and upstream.
/// Looked up twice per request: Fx, not SipHash (the keys are our own upstreams, not what a
/// client chose).
type IdleLists = HashMap<(usize, Authority), Vec<Idle>, rustc_hash::FxBuildHasher>;

thread_local! {
    /// Which of the gateway's own serving threads this is (1, 2, ...; 0: any other thread).
    /// Each keeps its own idle connections: a connection is registered with the reactor of
    /// the runtime that opened it, and is used only by requests served on that thread.
    pub(crate) static SERVING_THREAD: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

fn idle_key(upstream: &Authority) -> (usize, Authority) {
    (SERVING_THREAD.with(|t| t.get()), upstream.clone())
}

impl std::fmt::Debug for Upstreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstreams").finish_non_exhaustive()
    }
}

struct Idle {
    conn: Conn,
    since: Instant,
}

/// One connection: the handle requests are sent on, and the connection itself, which only
/// moves (writes requests, reads answers) while someone polls it.
struct Conn {
    sender: SendRequest<Body>,
    /// Boxed: a connection moves in and out of the pool with every request, and hyper's
    /// state is large.
    conn: Pin<Box<Connection<TokioIo<TcpStream>, Body>>>,
    /// The connection finished (closed, or failed): it is never polled again.
    done: bool,
}

impl Conn {
    /// Lets the connection make progress, with `cx`'s waker registered for its socket.
    /// `false` once it is closed.
    fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.done && self.conn.as_mut().poll(cx).is_ready() {
            self.done = true;
        }
        !self.done
    }

    /// Open, idle and ready for a request (an upstream's close is noticed here).
    fn reusable(&mut self) -> bool {
        self.drive(&mut Context::from_waker(Waker::noop())) && self.sender.is_ready()
    }
}

impl Upstreams {
    /// An empty pool, and its sweeper: a task that closes connections idle for longer than
    /// the idle timeout, so an upstream no longer asked (after a route change, say) is not
    /// held open forever. Needs a tokio runtime.
    pub fn new() -> Self {
        Self::with_idle_timeout(IDLE_TIMEOUT)
    }

    fn with_idle_timeout(idle_timeout: Duration) -> Self {
        let pool = Self {
            idle: Arc::default(),
            idle_timeout,
        };
        let idle = Arc::downgrade(&pool.idle);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(idle_timeout / 2);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(idle) = idle.upgrade() else {
                    return;
                };
                let now = Instant::now();
                idle.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .retain(|_, list| {
                        list.retain(|i| now - i.since < idle_timeout);
                        !list.is_empty()
                    });
            }
        });
        pool
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, IdleLists> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The most recently used idle connection to `upstream` that is still open.
    fn checkout(&self, upstream: &Authority) -> Option<Conn> {
        loop {
            let Idle { mut conn, since } = self.idle().get_mut(&idle_key(upstream))?.pop()?;
            if since.elapsed() < self.idle_timeout && conn.reusable() {
                return Some(conn);
            }
        }
    }

    fn put_back(&self, upstream: &Authority, mut conn: Conn) {
        if !conn.reusable() {
            return;
        }
        let now = Instant::now();
        let mut idle = self.idle();
        let list = idle.entry(idle_key(upstream)).or_default();
        // The oldest are first: those idle too long are closed.
        let expired = list
            .iter()
            .take_while(|i| now - i.since >= self.idle_timeout)
            .count();
        list.drain(..expired);
        if list.len() < MAX_IDLE_PER_UPSTREAM {
            list.push(Idle { conn, since: now });
        }
    }

    async fn connect(&self, upstream: &Authority) -> Result<Conn, SendError> {
        let host = upstream.host();
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let port = upstream.port_u16().unwrap_or(80);
        let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((host, port)))
            .await
        {
            Err(_) => {
                return Err(SendError::Connect(format!(
                    "connecting to {upstream} timed out after {} s",
                    CONNECT_TIMEOUT.as_secs()
                )));
            }
            Ok(Err(e)) => return Err(SendError::Connect(format!("connecting to {upstream}: {e}"))),
            Ok(Ok(s)) => s,
        };
        let _ = stream.set_nodelay(true);
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(SendError::Http)?;
        Ok(Conn {
            sender,
            conn: Box::pin(conn),
            done: false,
        })
    }

    /// Sends `req` to `upstream` and waits for the answer's head; the answer's body reads
    /// from the same connection, which goes back to the pool when the body ends.
    pub async fn send(
        &self,
        upstream: &Authority,
        mut req: Request<Body>,
    ) -> Result<Response<Body>, SendError> {
        loop {
            let (mut conn, pooled) = match self.checkout(upstream) {
                Some(c) => (c, true),
                None => (self.connect(upstream).await?, false),
            };
            let mut answer = std::pin::pin!(conn.sender.try_send_request(req));
            let answered = std::future::poll_fn(|cx| {
                conn.drive(cx);
                answer.as_mut().poll(cx)
            })
            .await;
            match answered {
                Ok(resp) => {
                    let (parts, body) = resp.into_parts();
                    let relay = Relay {
                        body,
                        conn: Some(conn),
                        upstream: upstream.clone(),
                        pool: self.clone(),
                        failed: None,
                    };
                    return Ok(Response::from_parts(parts, Body::new(relay)));
                }
                Err(mut e) => match e.take_message() {
                    // Never written: the pooled connection was closed under it. Try the next.
                    Some(unsent) if pooled => req = unsent,
                    _ => return Err(SendError::Http(e.into_error())),
                },
            }
        }
    }
}

/// An answer's body, read from its connection: polling it moves the connection along, and
/// its end puts the connection back in the pool. Dropped before its end, it closes the
/// connection.
struct Relay {
    body: Incoming,
    conn: Option<Conn>,
    upstream: Authority,
    pool: Upstreams,
    /// The body's failure, held back for one poll (see `poll_frame`).
    failed: Option<hyper::Error>,
}

impl Relay {
    fn release(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.pool.put_back(&self.upstream, conn);
        }
    }
}

impl HttpBody for Relay {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        if let Some(e) = this.failed.take() {
            return Poll::Ready(Some(Err(e)));
        }
        if let Some(conn) = &mut this.conn {
            conn.drive(cx);
        }
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(None) => {
                this.release();
                Poll::Ready(None)
            }
            // An upstream that dies mid-body: the head and the part that came may still sit
            // in the server's write buffer, and a body error aborts the client's connection
            // without flushing it. One `Pending` first lets them reach the client, which then
            // sees the answer cut short rather than no answer at all.
            Poll::Ready(Some(Err(e))) => {
                this.failed = Some(e);
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        // A server may stop reading a body once it has its announced length, before the
        // end is polled: the connection is still good then.
        if self.body.is_end_stream() {
            self.release();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    #[tokio::test]
    async fn connections_idle_past_the_timeout_are_closed_without_traffic() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        // Answers one request, then reports when the gateway side closes the connection.
        let (closed_tx, closed_rx) = tokio::sync::oneshot::channel::<Instant>();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            let mut buf = vec![0u8; 4096];
            let mut got = Vec::new();
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut buf).await.expect("read");
                assert!(n > 0, "closed before asking");
                got.extend_from_slice(&buf[..n]);
            }
            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await
                .expect("write");
            // Keep-alive: the next read ends only when the pool closes its side.
            let n = s.read(&mut buf).await.unwrap_or(0);
            assert_eq!(n, 0, "nothing more was asked");
            let _ = closed_tx.send(Instant::now());
        });
        let pool = Upstreams::with_idle_timeout(Duration::from_millis(300));
        let authority: Authority = addr.to_string().parse().expect("authority");
        let mut req = Request::new(Body::empty());
        req.headers_mut()
            .insert(http::header::HOST, addr.to_string().parse().expect("host"));
        let resp = pool.send(&authority, req).await.expect("send");
        assert_eq!(resp.status(), 200);
        // Before the body's end, which puts the connection back: it idles from after this.
        let back = Instant::now();
        let body = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .expect("body")
            .to_bytes();
        assert_eq!(&body[..], b"ok");
        assert_eq!(
            pool.idle().get(&idle_key(&authority)).map(Vec::len),
            Some(1),
            "pooled"
        );
        let closed_at = tokio::time::timeout(Duration::from_secs(5), closed_rx)
            .await
            .expect("closed within 5 s")
            .expect("the upstream saw the close");
        let idle_for = closed_at - back;
        assert!(
            idle_for >= Duration::from_millis(300),
            "closed after {idle_for:?}, before the idle timeout"
        );
        assert!(pool.idle().get(&idle_key(&authority)).is_none(), "swept");
    }
}
