//! `switchyard-bench gateway`: the API gateway's throughput and the latency it adds,
//! against calling the upstream directly and against Debian's nginx as a reverse proxy, all
//! in the same run on loopback.
//!
//! - The upstream is this binary's hidden `gateway-upstream` child: a hyper HTTP/1.1 server
//!   answering every request with the same small JSON body.
//! - `switchyard` is the real `switchyard serve --gateway-listen` binary (next to this one),
//!   its routes made through the admin API: `plain` (`/plain/{*rest}`, prefix stripped) and
//!   `jwt-ratelimit` (the same with HS256 JWT auth, `secret-env`, and a rate limit per
//!   consumer far above what the run sends, so it is checked on every request and never
//!   refuses one).
//! - `nginx` is `/usr/sbin/nginx` (Debian's package `nginx`) started with a generated config
//!   in a temporary directory: as many worker processes as the gateway has worker threads,
//!   keep-alive to the upstream, `access_log off`, and the headers the gateway adds too
//!   (`X-Forwarded-*`, `X-Request-Id`). It stays plain in the `jwt-ratelimit` mode (the
//!   target compares with nginx plain).
//! - `direct` is the load generator straight to the upstream.
//!
//! Throughput: the closed-loop driver (`load.rs`), `--connections` keep-alive HTTP/1.1
//! connections with one request at a time each; every answer must be 200 with the
//! upstream's body. The systems take turns within each repeat (the order rotating per
//! repeat), and each figure is the median over repeats. Added latency: a fixed rate
//! (`--rate`, 10,000/s) spread over the connections (each sends on its own schedule,
//! timed from the send; tokio's timer releases them on 1 ms ticks), direct, through the
//! gateway and through nginx in turn; each proxy's p50 and p99 minus direct's, per repeat,
//! median (nginx's figures show what the same machine allows a mature proxy).

use crate::load::{self, Measured, OpSource};
use crate::report::{median, say, thousands, verdict};
use crate::run::{RunArgs, Timing};
use anyhow::{Context as _, Result, anyhow, bail};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::json;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, BufReader};

/// What the upstream answers to every request.
const BODY: &[u8] = br#"{"status":"ok","from":"switchyard-bench upstream"}"#;
/// The variable holding the JWT route's HS256 secret, in the gateway's environment.
const SECRET_VAR: &str = "SWITCHYARD_BENCH_JWT_SECRET";
/// The rate limit of the JWT route: far more than any run sends, per consumer.
const RATE_LIMIT: u32 = 1_000_000;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub run: RunArgs,
    /// Keep-alive connections of the load generator, each with one request at a time.
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub connections: usize,
    /// Requests per second of the fixed-rate run that measures added latency.
    #[arg(long, default_value_t = 10_000, value_name = "PER_S")]
    pub rate: u32,
    /// Worker threads of the gateway (its `TOKIO_WORKER_THREADS`) and worker processes of
    /// nginx [default: the CPUs available, tokio's own default].
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
    /// The `switchyard` binary [default: the one next to this benchmark's binary; build it
    /// with `cargo build --release -p switchyard`].
    #[arg(long, value_name = "PATH")]
    pub switchyard: Option<PathBuf>,
    /// The nginx binary [default: /usr/sbin/nginx, else `nginx` on PATH; Debian's package
    /// `nginx`].
    #[arg(long, value_name = "PATH")]
    pub nginx: Option<PathBuf>,
}

/// The hidden upstream child.
#[derive(clap::Args, Debug)]
pub struct UpstreamArgs {
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
}

/// The upstream: answers every request with [`BODY`]; prints its address on stdout, and
/// exits when its stdin closes (the bench is gone, however it ended).
pub async fn upstream_child(args: UpstreamArgs) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    println!("listening on {}", listener.local_addr()?);
    let serve = async move {
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req| async {
                    let mut resp = Response::new(Full::new(Bytes::from_static(BODY)));
                    resp.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    );
                    Ok::<_, std::convert::Infallible>(resp)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    };
    // The bench holds our stdin open: end of file means it is gone, however it ended.
    std::thread::spawn(|| {
        use std::io::Read as _;
        let mut sink = [0u8; 64];
        while std::io::stdin().read(&mut sink).unwrap_or(0) > 0 {}
        std::process::exit(0);
    });
    serve.await
}

/// A child process, killed (its process group too, for nginx's workers) when dropped.
struct Proc {
    name: &'static str,
    child: tokio::process::Child,
    /// The child leads its own process group.
    group: bool,
}

impl Proc {
    fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    fn signal(&self, sig: &str) {
        if let Some(pid) = self.pid() {
            let target = if self.group {
                format!("-{pid}")
            } else {
                pid.to_string()
            };
            let _ = std::process::Command::new("kill")
                .args([&format!("-{sig}"), "--", &target])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        }
    }

    /// Stops it with `sig`, waiting up to 10 s before killing it.
    async fn stop(mut self, sig: &str) -> Result<ExitStatus> {
        self.signal(sig);
        match tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await {
            Ok(status) => Ok(status?),
            Err(_) => bail!("{} did not stop within 10 s of SIG{sig}", self.name),
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.signal("KILL");
            let _ = self.child.start_kill();
        }
    }
}

/// A line starting with `prefix` from `lines`, within `limit`; the lines read so far in the
/// error otherwise.
async fn line_with<R: tokio::io::AsyncBufRead + Unpin>(
    lines: &mut tokio::io::Lines<R>,
    prefix: &str,
    limit: Duration,
    what: &str,
    seen: &mut Vec<String>,
) -> Result<String> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let next = tokio::time::timeout_at(deadline, lines.next_line())
            .await
            .map_err(|_| {
                anyhow!(
                    "{what} printed no {prefix:?} line within {limit:?}; it said:\n{}",
                    seen.join("\n")
                )
            })??;
        match next {
            Some(l) if l.starts_with(prefix) => return Ok(l),
            Some(l) => seen.push(l),
            None => bail!(
                "{what} exited before printing {prefix:?}; it said:\n{}",
                seen.join("\n")
            ),
        }
    }
}

/// The first `http://ADDR` of `line`, as a socket address.
fn http_addr(line: &str) -> Result<SocketAddr> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("http://"))
        .and_then(|a| a.trim_end_matches([',', '/']).parse().ok())
        .ok_or_else(|| anyhow!("no http://ADDR in {line:?}"))
}

async fn start_upstream() -> Result<(Proc, tokio::process::ChildStdin, SocketAddr)> {
    let exe = std::env::current_exe().context("finding this binary")?;
    let mut child = tokio::process::Command::new(exe)
        .arg("gateway-upstream")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("starting the upstream (switchyard-bench gateway-upstream)")?;
    let stdin = child.stdin.take().context("the upstream's stdin")?;
    let stdout = child.stdout.take().context("the upstream's stdout")?;
    let proc = Proc {
        name: "the upstream",
        child,
        group: false,
    };
    let mut lines = BufReader::new(stdout).lines();
    let line = line_with(
        &mut lines,
        "listening on ",
        Duration::from_secs(10),
        "the upstream",
        &mut Vec::new(),
    )
    .await?;
    let addr = line["listening on ".len()..]
        .trim()
        .parse()
        .with_context(|| format!("the upstream's address in {line:?}"))?;
    Ok((proc, stdin, addr))
}

struct Switchyard {
    proc: Proc,
    api: String,
    gateway: SocketAddr,
}

async fn start_switchyard(
    bin: &Path,
    dir: &Path,
    workers: usize,
    secret: &str,
) -> Result<Switchyard> {
    // An empty config of its own, so a switchyard.toml in the working directory is not read.
    let config = dir.join("switchyard.toml");
    std::fs::write(&config, "").with_context(|| format!("writing {}", config.display()))?;
    let mut child = tokio::process::Command::new(bin)
        .arg("serve")
        .arg("--data")
        .arg(dir.join("data"))
        .arg("--config")
        .arg(&config)
        .args(["--listen", "127.0.0.1:0", "--gateway-listen", "127.0.0.1:0"])
        .env("TOKIO_WORKER_THREADS", workers.to_string())
        .env(SECRET_VAR, secret)
        // The admin API open (loopback only), whatever token this environment holds.
        .env_remove("SWITCHYARD_GATEWAY_TOKEN")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {} serve", bin.display()))?;
    let stderr = child.stderr.take().context("switchyard's stderr")?;
    let proc = Proc {
        name: "switchyard serve",
        child,
        group: false,
    };
    let mut lines = BufReader::new(stderr).lines();
    let mut seen = Vec::new();
    let limit = Duration::from_secs(30);
    let api = line_with(
        &mut lines,
        "switchyard: serving ",
        limit,
        "switchyard serve",
        &mut seen,
    )
    .await?;
    let api = format!("http://{}", http_addr(&api)?);
    let gw = line_with(
        &mut lines,
        "switchyard: gateway on ",
        limit,
        "switchyard serve",
        &mut seen,
    )
    .await?;
    let gateway = http_addr(&gw)?;
    // Keep reading, so the server never blocks on a full pipe; its warnings are shown.
    tokio::spawn(async move {
        while let Ok(Some(l)) = lines.next_line().await {
            if !l.starts_with("switchyard: ") {
                eprintln!("switchyard serve: {l}");
            }
        }
    });
    Ok(Switchyard { proc, api, gateway })
}

/// Makes the two routes through the admin API.
async fn put_routes(api: &str, upstream: SocketAddr) -> Result<()> {
    let client = reqwest::Client::new();
    let url = format!("http://{upstream}");
    let routes = [
        (
            "plain",
            json!({"path": "/plain/{*rest}", "strip-prefix": true, "upstreams": [{"url": url}]}),
        ),
        (
            "jwt-ratelimit",
            json!({
                "path": "/jwt/{*rest}",
                "strip-prefix": true,
                "upstreams": [{"url": url}],
                "auth": {"jwt": {"algorithm": "HS256", "secret-env": SECRET_VAR}},
                "rate-limit": {"requests": RATE_LIMIT, "per": "1s", "burst": RATE_LIMIT},
            }),
        ),
    ];
    for (name, spec) in routes {
        let resp = client
            .put(format!("{api}/v1/gateway/routes/{name}"))
            .json(&spec)
            .send()
            .await
            .with_context(|| format!("creating the gateway route {name}"))?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            bail!("creating the gateway route {name}: {status}: {body}");
        }
    }
    Ok(())
}

/// The nginx binary: `explicit`, else /usr/sbin/nginx, else `nginx` on PATH.
fn find_nginx(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        anyhow::ensure!(p.is_file(), "--nginx {}: no such file", p.display());
        return Ok(p.to_path_buf());
    }
    let sbin = Path::new("/usr/sbin/nginx");
    if sbin.is_file() {
        return Ok(sbin.to_path_buf());
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("nginx"))
            .find(|p| p.is_file())
    });
    on_path.ok_or_else(|| {
        anyhow!(
            "no nginx (the peer of this suite): install Debian's package `nginx` \
             (apt-get install nginx) or pass --nginx PATH"
        )
    })
}

/// nginx's config: a reverse proxy on `listen` to `upstream`, everything in `dir`.
fn nginx_config(dir: &Path, workers: usize, listen: SocketAddr, upstream: SocketAddr) -> String {
    let d = dir.display();
    format!(
        r#"# Generated by switchyard-bench gateway.
daemon off;
master_process on;
worker_processes {workers};
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{
    worker_connections 1024;
}}
http {{
    access_log off;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_requests 1000000;
    upstream bench_upstream {{
        server {upstream};
        keepalive 256;
        keepalive_requests 1000000;
    }}
    server {{
        listen {listen};
        location /plain/ {{
            proxy_pass http://bench_upstream/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Host $host;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Request-Id $request_id;
        }}
    }}
}}
"#
    )
}

async fn start_nginx(
    bin: &Path,
    dir: &Path,
    workers: usize,
    upstream: SocketAddr,
) -> Result<(Proc, SocketAddr)> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    // nginx cannot report a port it picked: take a free one, then hand it over.
    let listen = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .context("finding a free port for nginx")?;
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, nginx_config(dir, workers, listen, upstream))
        .with_context(|| format!("writing {}", conf.display()))?;
    let mut child = tokio::process::Command::new(bin)
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&conf)
        .arg("-e")
        .arg(dir.join("error.log"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        // Its own process group: the workers go with the master when it is killed.
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let mut stderr = child.stderr.take().context("nginx's stderr")?;
    let mut proc = Proc {
        name: "nginx",
        child,
        group: true,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = proc.child.try_wait()? {
            let mut said = String::new();
            let _ = stderr.read_to_string(&mut said).await;
            let log = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
            bail!("nginx exited ({status}) at start:\n{said}{log}");
        }
        if tokio::net::TcpStream::connect(listen).await.is_ok() {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "nginx did not listen on {listen} within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::spawn(async move {
        let mut sink = Vec::new();
        let _ = stderr.read_to_end(&mut sink).await;
    });
    Ok((proc, listen))
}

/// One keep-alive connection's request sender.
type Sender = SendRequest<Empty<Bytes>>;

/// `n` HTTP/1.1 connections to `addr`; their tasks end when dropped.
struct Conns {
    senders: Vec<tokio::sync::Mutex<Sender>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Conns {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Conns {
    async fn open(addr: SocketAddr, n: usize) -> Result<Conns> {
        let mut senders = Vec::with_capacity(n);
        let mut tasks = Vec::with_capacity(n);
        for _ in 0..n {
            let stream = tokio::net::TcpStream::connect(addr)
                .await
                .with_context(|| format!("connecting to {addr}"))?;
            stream.set_nodelay(true)?;
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .with_context(|| format!("HTTP handshake with {addr}"))?;
            tasks.push(tokio::spawn(async move {
                let _ = conn.await;
            }));
            senders.push(tokio::sync::Mutex::new(sender));
        }
        Ok(Conns { senders, tasks })
    }
}

/// Where and what one system is asked.
#[derive(Clone, Debug)]
struct Endpoint {
    system: &'static str,
    addr: SocketAddr,
    path: &'static str,
    /// One bearer token per connection (each its own consumer), for the JWT route.
    tokens: Option<Arc<Vec<HeaderValue>>>,
    /// The processes whose CPU time a run reports: the proxy's (direct: the upstream's).
    pids: Vec<u32>,
}

/// CPU seconds used so far by `pids` together; `None` where /proc cannot tell.
fn cpu_of(pids: &[u32]) -> Option<f64> {
    pids.iter()
        .map(|p| load::proc_cpu_seconds(&format!("/proc/{p}/stat")))
        .sum()
}

/// The processes whose parent is `pid` (nginx's workers).
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|stat| {
                // Field 4, after the parenthesised command name, is the parent's pid.
                stat.rfind(')')
                    .and_then(|i| stat[i + 1..].split_whitespace().nth(1)?.parse().ok())
                    == Some(pid)
            })
        })
        .collect()
}

/// The requests of one run: connection `i` sends `endpoint`'s request with token `i`.
struct Target {
    endpoint: Endpoint,
    host: HeaderValue,
    conns: Conns,
}

impl Target {
    async fn open(endpoint: &Endpoint, n: usize) -> Result<Arc<Target>> {
        let host = HeaderValue::from_str(&endpoint.addr.to_string())?;
        Ok(Arc::new(Target {
            endpoint: endpoint.clone(),
            host,
            conns: Conns::open(endpoint.addr, n).await?,
        }))
    }

    /// One request on connection `i`; fails unless the answer is 200 with the upstream's body.
    async fn get(&self, i: usize) -> Result<()> {
        let mut req = Request::new(Empty::<Bytes>::new());
        *req.uri_mut() = hyper::Uri::from_static(self.endpoint.path);
        req.headers_mut().insert(header::HOST, self.host.clone());
        if let Some(tokens) = &self.endpoint.tokens {
            req.headers_mut()
                .insert(header::AUTHORIZATION, tokens[i % tokens.len()].clone());
        }
        let sent = {
            let mut sender = self.conns.senders[i].lock().await;
            sender.ready().await.context("the connection closed")?;
            sender.send_request(req)
        };
        let resp = sent.await.context("the request failed")?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .context("reading the answer")?
            .to_bytes();
        if status != StatusCode::OK || body.as_ref() != BODY {
            bail!(
                "{} answered {status}: {}",
                self.endpoint.system,
                String::from_utf8_lossy(&body[..body.len().min(300)])
            );
        }
        Ok(())
    }
}

impl OpSource for Target {
    type Op = futures::future::BoxFuture<'static, Result<()>>;
    fn op(self: &Arc<Self>, appender: usize, _seq: u64) -> Self::Op {
        let this = self.clone();
        Box::pin(async move { this.get(appender).await })
    }
}

/// One request on a fresh connection: status, the headers, the body.
async fn fetch(
    addr: SocketAddr,
    path: &'static str,
    token: Option<&HeaderValue>,
) -> Result<(StatusCode, hyper::HeaderMap, Bytes)> {
    let conns = Conns::open(addr, 1).await?;
    let mut req = Request::new(Empty::<Bytes>::new());
    *req.uri_mut() = hyper::Uri::from_static(path);
    req.headers_mut()
        .insert(header::HOST, HeaderValue::from_str(&addr.to_string())?);
    if let Some(t) = token {
        req.headers_mut().insert(header::AUTHORIZATION, t.clone());
    }
    let mut sender = conns.senders[0].lock().await;
    sender.ready().await?;
    let resp = sender.send_request(req).await?;
    let (parts, body) = resp.into_parts();
    Ok((
        parts.status,
        parts.headers,
        body.collect().await?.to_bytes(),
    ))
}

/// Checks each system answers as the runs will need, and that the JWT route refuses a
/// request without a token and reports its rate limit (so both are really on).
async fn check_endpoints(endpoints: &[Endpoint]) -> Result<()> {
    for e in endpoints {
        let token = e.tokens.as_ref().map(|t| &t[0]);
        let (status, headers, body) = fetch(e.addr, e.path, token)
            .await
            .with_context(|| format!("asking {} ({})", e.system, e.path))?;
        if status != StatusCode::OK || body.as_ref() != BODY {
            bail!(
                "{} at {}{} answered {status}: {}",
                e.system,
                e.addr,
                e.path,
                String::from_utf8_lossy(&body)
            );
        }
        if e.tokens.is_some() {
            anyhow::ensure!(
                headers.contains_key("ratelimit-limit"),
                "the JWT route's answer has no RateLimit-Limit: its rate limit is not on"
            );
            let (status, _, _) = fetch(e.addr, e.path, None).await?;
            anyhow::ensure!(
                status == StatusCode::UNAUTHORIZED,
                "the JWT route answered {status} without a token: its auth is not on"
            );
        }
    }
    Ok(())
}

/// HS256 tokens for the consumers `bench-0` .. `bench-{n-1}`, valid for a day.
fn tokens(secret: &str, n: usize) -> Result<Vec<HeaderValue>> {
    #[derive(serde::Serialize)]
    struct Claims {
        sub: String,
        exp: u64,
        iat: u64,
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes());
    let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    (0..n)
        .map(|i| {
            let claims = Claims {
                sub: format!("bench-{i}"),
                exp: now + 86_400,
                iat: now,
            };
            let t = jsonwebtoken::encode(&header, &claims, &key)?;
            Ok(HeaderValue::from_str(&format!("Bearer {t}"))?)
        })
        .collect()
}

/// One fixed-rate run's latencies (from each send to the whole answer).
struct RateRun {
    sent: u64,
    seconds: f64,
    latency_ns: hdrhistogram::Histogram<u64>,
}

impl RateRun {
    fn quantile_us(&self, q: f64) -> f64 {
        if self.latency_ns.is_empty() {
            return f64::NAN;
        }
        self.latency_ns.value_at_quantile(q) as f64 / 1000.0
    }
}

/// `rate` requests per second over `target`'s connections: connection `k` sends at
/// `start + k / rate + j * n / rate`, or at once when its previous answer came later.
/// Requests sent within `[warmup, warmup + measure)` are timed.
async fn fixed_rate(
    target: Arc<Target>,
    rate: f64,
    warmup: Duration,
    measure: Duration,
) -> Result<RateRun> {
    let n = target.conns.senders.len();
    let start = tokio::time::Instant::now() + Duration::from_millis(10);
    let (from, until) = (start + warmup, start + warmup + measure);
    let period = Duration::from_secs_f64(n as f64 / rate);
    let mut tasks = Vec::with_capacity(n);
    for k in 0..n {
        let target = target.clone();
        tasks.push(tokio::spawn(async move {
            let mut hist = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 600_000_000_000, 3)
                .expect("static bounds");
            let mut sent = 0u64;
            let mut due = start + Duration::from_secs_f64(k as f64 / rate);
            while due < until {
                tokio::time::sleep_until(due).await;
                let t = tokio::time::Instant::now();
                target.get(k).await?;
                if t >= from && t < until {
                    sent += 1;
                    hist.saturating_record((t.elapsed().as_nanos() as u64).max(1));
                }
                due += period;
            }
            Ok::<_, anyhow::Error>((sent, hist))
        }));
    }
    let mut sent = 0;
    let mut latency_ns = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 600_000_000_000, 3)?;
    for t in tasks {
        let (s, h) = t.await.context("a sender panicked")??;
        sent += s;
        latency_ns.add(&h)?;
    }
    Ok(RateRun {
        sent,
        seconds: measure.as_secs_f64(),
        latency_ns,
    })
}

/// `added-latency-10k` for the documented rate, `added-latency-N` otherwise.
fn latency_case(rate: u32) -> String {
    if rate >= 1000 && rate.is_multiple_of(1000) {
        format!("added-latency-{}k", rate / 1000)
    } else {
        format!("added-latency-{rate}")
    }
}

/// Throughput and p99 of every system, closed loop, the systems in turn within each repeat;
/// prints the rows and the ratios against the targets.
async fn closed_loop(
    timing: &Timing,
    connections: usize,
    endpoints: [&Endpoint; 4],
    json_out: bool,
) -> Result<()> {
    let note = |s: &str| say(json_out, s);
    // Closed loop: the systems in turn within each repeat.
    let [direct, via_nginx, plain, jwt] = endpoints;
    let order = [
        ("plain", direct),
        ("plain", via_nginx),
        ("plain", plain),
        ("jwt-ratelimit", jwt),
    ];
    let load = timing.load;
    let mut runs: Vec<Vec<Measured>> = order.iter().map(|_| Vec::new()).collect();
    for rep in 0..timing.repeats {
        for i in 0..order.len() {
            let k = (i + rep) % order.len();
            let (case, e) = order[k];
            let target = Target::open(e, connections).await?;
            let m = load::run_sampling(load, target, || cpu_of(&e.pids))
                .await
                .with_context(|| format!("{} {case}", e.system))?;
            if !json_out {
                println!(
                    "  repeat {}: {:<10} {:<13} {:>9} requests/s  p99 {:>7.0} us  cpu {:.2} \
                     cores",
                    rep + 1,
                    e.system,
                    case,
                    thousands(m.events_per_s()),
                    m.quantile_us(0.99),
                    m.cpu_cores
                );
            }
            runs[k].push(m);
        }
    }
    let [d, n, p, j] = &runs[..] else {
        unreachable!("one list of runs per system")
    };
    // nginx and direct do no JWT or rate limit: their jwt-ratelimit rows repeat plain's.
    let rows = [
        ("plain", "switchyard", p, false),
        ("plain", "nginx", n, false),
        ("plain", "direct", d, false),
        ("jwt-ratelimit", "switchyard", j, false),
        ("jwt-ratelimit", "nginx", n, true),
        ("jwt-ratelimit", "direct", d, true),
    ];
    if !json_out {
        println!(
            "cpu us/req: CPU time per request of the system's own processes (the proxy's; \
             direct: the upstream's), in the measured window"
        );
        println!(
            "{:<14} {:<11} {:>12} {:>9} {:>9} {:>11}  each repeat, requests/s",
            "case", "system", "requests/s", "p50 us", "p99 us", "cpu us/req"
        );
    }
    for (case, system, runs, repeated) in rows {
        let rps = median(runs.iter().map(Measured::events_per_s).collect());
        let p99 = median(runs.iter().map(|m| m.quantile_us(0.99)).collect());
        if json_out {
            println!(
                "{}",
                json!({"suite": "gateway", "case": case, "system": system,
                    "requests_per_s": rps, "p99_us": p99})
            );
        } else {
            println!(
                "{case:<14} {system:<11} {:>12} {:>9.0} {p99:>9.0} {:>11.1}  {}{}",
                thousands(rps),
                median(runs.iter().map(|m| m.quantile_us(0.5)).collect()),
                median(
                    runs.iter()
                        .map(|m| m.cpu_cores / m.events_per_s() * 1e6)
                        .collect()
                ),
                runs.iter()
                    .map(|m| thousands(m.events_per_s()))
                    .collect::<Vec<_>>()
                    .join(" "),
                if repeated {
                    "  (its plain figures)"
                } else {
                    ""
                }
            );
        }
    }
    let rps = |runs: &Vec<Measured>| median(runs.iter().map(Measured::events_per_s).collect());
    let nginx_rps = rps(n);
    let plain_ratio = rps(p) / nginx_rps;
    let jwt_ratio = rps(j) / nginx_rps;
    note(&format!(
        "switchyard / nginx plain: plain {plain_ratio:.2}x (target >= 1.0: {}), jwt-ratelimit \
         {jwt_ratio:.2}x (target >= 0.8: {})",
        verdict(plain_ratio >= 1.0),
        verdict(jwt_ratio >= 0.8)
    ));

    Ok(())
}

/// One proxy's figures of the fixed-rate runs, a value per repeat.
#[derive(Default)]
struct Added {
    /// Its p50 and p99 minus direct's of the same repeat.
    p50: Vec<f64>,
    p99: Vec<f64>,
    /// Requests per second it reached.
    reached: Vec<f64>,
    /// Its own p99.
    own_p99: Vec<f64>,
}

/// The latency a proxy adds at a fixed rate: direct, through nginx and through the gateway
/// in turn (the order rotating per repeat), each proxy's quantiles minus direct's of the
/// same repeat; prints a row per proxy, switchyard's against the target.
async fn added_latency(
    timing: &Timing,
    connections: usize,
    rate_per_s: u32,
    direct: &Endpoint,
    proxies: [&Endpoint; 2],
    json_out: bool,
) -> Result<()> {
    let note = |s: &str| say(json_out, s);
    let rate = f64::from(rate_per_s);
    let case = latency_case(rate_per_s);
    let systems = [direct, proxies[0], proxies[1]];
    let mut added: [Added; 2] = Default::default();
    let mut direct_p99 = Vec::new();
    for rep in 0..timing.repeats {
        let mut got: [Option<RateRun>; 3] = [None, None, None];
        for i in 0..systems.len() {
            let k = (i + rep) % systems.len();
            let e = systems[k];
            let target = Target::open(e, connections).await?;
            let r = fixed_rate(target, rate, timing.load.warmup, timing.load.measure)
                .await
                .with_context(|| format!("{} at {} requests/s", e.system, rate_per_s))?;
            got[k] = Some(r);
        }
        let [Some(d), Some(a), Some(b)] = got else {
            unreachable!("every run is made")
        };
        let mut line = format!(
            "  {case} repeat {}: direct p50 {:.0} us p99 {:.0} us ({} requests/s)",
            rep + 1,
            d.quantile_us(0.5),
            d.quantile_us(0.99),
            thousands(d.sent as f64 / d.seconds),
        );
        for (j, (e, m)) in proxies.iter().zip([&a, &b]).enumerate() {
            let achieved = m.sent as f64 / m.seconds;
            line.push_str(&format!(
                "; {} p50 {:.0} us p99 {:.0} us ({} requests/s)",
                e.system,
                m.quantile_us(0.5),
                m.quantile_us(0.99),
                thousands(achieved)
            ));
            let a = &mut added[j];
            a.p50.push(m.quantile_us(0.5) - d.quantile_us(0.5));
            a.p99.push(m.quantile_us(0.99) - d.quantile_us(0.99));
            a.reached.push(achieved);
            a.own_p99.push(m.quantile_us(0.99));
        }
        note(&line);
        direct_p99.push(d.quantile_us(0.99));
    }
    let direct_p99 = median(direct_p99);
    for (e, a) in proxies.iter().zip(added) {
        let (a50, a99, achieved) = (median(a.p50), median(a.p99), median(a.reached));
        if json_out {
            println!(
                "{}",
                json!({"suite": "gateway", "case": case, "system": e.system,
                    "requests_per_s": achieved, "p50_us": a50, "p99_us": a99})
            );
        }
        let short = achieved < rate * 0.95;
        let target = if e.system == "switchyard" {
            format!(
                " (target p99 <= 500 us: {})",
                verdict(a99 <= 500.0 && !short)
            )
        } else {
            String::new()
        };
        note(&format!(
            "{case}: {} adds p50 {a50:.0} us, p99 {a99:.0} us{target} at {} requests/s{} \
             (p99 direct {direct_p99:.0} us, through {} {:.0} us; medians)",
            e.system,
            thousands(achieved),
            if short {
                format!(
                    ", short of {} requests/s: the machine cannot hold the rate",
                    thousands(rate)
                )
            } else {
                String::new()
            },
            e.system,
            median(a.own_p99)
        ));
    }
    Ok(())
}

pub async fn run(args: Args) -> Result<()> {
    anyhow::ensure!(
        (1..=4096).contains(&args.connections),
        "--connections must be 1 to 4096"
    );
    anyhow::ensure!(
        (1..=1_000_000).contains(&args.rate),
        "--rate must be 1 to 1000000"
    );
    let timing = args
        .run
        .timing(args.connections, 1, Duration::from_secs(45))?;
    let json_out = args.run.json;
    let note = |s: &str| say(json_out, s);
    let bin = crate::env::switchyard_binary(args.switchyard.as_deref())?;
    let nginx_bin = find_nginx(args.nginx.as_deref())?;
    let workers = match args.workers {
        Some(0) => bail!("--workers must be at least 1"),
        Some(n) => n,
        // What tokio does when TOKIO_WORKER_THREADS is not set.
        None => std::env::var("TOKIO_WORKER_THREADS")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|&n: &usize| n > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
    };

    let scratch = tempfile::tempdir().context("creating a scratch directory")?;
    let (upstream, upstream_stdin, upstream_addr) = start_upstream().await?;
    // A fresh secret per run (std's hasher keys are random), at least 32 bytes.
    let secret = {
        use std::hash::{BuildHasher as _, Hasher as _};
        let r = || {
            std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish()
        };
        format!("switchyard-bench-gateway-{:016x}{:016x}", r(), r())
    };
    let sy = start_switchyard(&bin, scratch.path(), workers, &secret).await?;
    put_routes(&sy.api, upstream_addr).await?;
    let (nginx, nginx_addr) = start_nginx(
        &nginx_bin,
        &scratch.path().join("nginx"),
        workers,
        upstream_addr,
    )
    .await?;
    let tokens = Arc::new(tokens(&secret, args.connections)?);
    let pids = |p: &Proc| p.pid().into_iter().collect::<Vec<_>>();
    let direct = Endpoint {
        system: "direct",
        addr: upstream_addr,
        path: "/plain/hello",
        tokens: None,
        pids: pids(&upstream),
    };
    let mut nginx_pids = pids(&nginx);
    if let Some(master) = nginx.pid() {
        nginx_pids.extend(children_of(master));
    }
    let via_nginx = Endpoint {
        system: "nginx",
        addr: nginx_addr,
        path: "/plain/hello",
        tokens: None,
        pids: nginx_pids,
    };
    let plain = Endpoint {
        system: "switchyard",
        addr: sy.gateway,
        path: "/plain/hello",
        tokens: None,
        pids: pids(&sy.proc),
    };
    let jwt = Endpoint {
        system: "switchyard",
        addr: sy.gateway,
        path: "/jwt/hello",
        tokens: Some(tokens),
        pids: pids(&sy.proc),
    };
    check_endpoints(&[
        direct.clone(),
        via_nginx.clone(),
        plain.clone(),
        jwt.clone(),
    ])
    .await?;

    let load = timing.load;
    note(&format!(
        "switchyard-bench gateway: {} (workers {workers}: the gateway's TOKIO_WORKER_THREADS \
         and nginx's worker_processes) and {} against an upstream on {upstream_addr}; \
         {} keep-alive connections, one request at a time each, {:.2} s measured after \
         {:.2} s warm-up, median of {} repeat(s) taken in turn",
        bin.display(),
        nginx_bin.display(),
        args.connections,
        load.measure.as_secs_f64(),
        load.warmup.as_secs_f64(),
        timing.repeats
    ));
    note(
        "jwt-ratelimit: HS256 JWT (one consumer per connection) and a rate limit of \
         1,000,000/s per consumer, checked on every request; nginx and direct do neither: \
         their jwt-ratelimit rows repeat their plain figures (the target compares with \
         nginx plain)",
    );

    closed_loop(
        &timing,
        args.connections,
        [&direct, &via_nginx, &plain, &jwt],
        json_out,
    )
    .await?;
    added_latency(
        &timing,
        args.connections,
        args.rate,
        &direct,
        [&plain, &via_nginx],
        json_out,
    )
    .await?;

    let nginx_status = nginx.stop("QUIT").await?;
    anyhow::ensure!(nginx_status.success(), "nginx stopped with {nginx_status}");
    let sy_status = sy.proc.stop("TERM").await?;
    anyhow::ensure!(
        sy_status.success(),
        "switchyard serve stopped with {sy_status}"
    );
    drop(upstream_stdin);
    let _ = upstream.stop("TERM").await;
    Ok(())
}
