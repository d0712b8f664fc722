//! The closed-loop load driver every suite uses.
//!
//! `appenders` tasks each keep `in_flight` single-record operations outstanding (a
//! `FuturesUnordered` window, the way NATS's async publish keeps acks pending): whenever one
//! completes, the next is issued. The measured window opens once the warm-up time has passed
//! *and* every in-flight slot has completed at least once on average (so a slow system's
//! first, queue-filling acks are not counted), and closes after `measure` once every slot has
//! completed once more (NATS with `sync_interval: always` acknowledges in bursts seconds
//! apart; this keeps whole bursts in the window). Only completions inside the window count,
//! for throughput and for latency (issue to ack, as the caller sees it).

use anyhow::{Context as _, Result, bail};
use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use hdrhistogram::Histogram;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The shape of one measured run.
#[derive(Clone, Copy, Debug)]
pub struct Load {
    pub appenders: usize,
    pub in_flight: usize,
    pub warmup: Duration,
    pub measure: Duration,
    /// Give up waiting for the pipeline to fill after this long and measure anyway.
    pub max_warmup: Duration,
    /// The window also stays open until every in-flight slot has turned over once more (a
    /// peer that acknowledges in bursts is then measured over whole bursts), up to this long.
    pub max_measure: Duration,
    /// After the window closes, wait for the operations still in flight (true) or drop them
    /// (false; for peers whose server is torn down right after).
    pub drain: bool,
}

/// What one run measured.
#[derive(Debug)]
pub struct Measured {
    /// Operations acknowledged inside the measured window.
    pub events: u64,
    /// The window's length.
    pub seconds: f64,
    /// Issue-to-ack latency of those operations, in nanoseconds.
    pub latency_ns: Histogram<u64>,
    /// CPU seconds used per wall second inside the window, by this process and by `peer_pid`.
    pub cpu_cores: f64,
}

impl Measured {
    pub fn events_per_s(&self) -> f64 {
        if self.seconds > 0.0 {
            self.events as f64 / self.seconds
        } else {
            0.0
        }
    }
    /// A latency quantile in microseconds; NaN when nothing was acknowledged in the window.
    pub fn quantile_us(&self, q: f64) -> f64 {
        if self.latency_ns.is_empty() {
            return f64::NAN;
        }
        self.latency_ns.value_at_quantile(q) as f64 / 1000.0
    }

    /// The largest latency in microseconds; NaN when nothing was acknowledged.
    pub fn max_us(&self) -> f64 {
        if self.latency_ns.is_empty() {
            return f64::NAN;
        }
        self.latency_ns.max() as f64 / 1000.0
    }
}

/// One appender's source of operations. `op(appender, seq)` issues operation number `seq`.
pub trait OpSource: Send + Sync + 'static {
    type Op: Future<Output = Result<()>> + Send + 'static;
    fn op(self: &Arc<Self>, appender: usize, seq: u64) -> Self::Op;
}

struct Shared {
    epoch: Instant,
    /// Nanoseconds after `epoch` when the window opened; 0 while warming up.
    window_start: AtomicU64,
    /// Nanoseconds after `epoch` when the window closed; 0 while open.
    window_end: AtomicU64,
    stop: AtomicBool,
    stop_rx: watch::Receiver<bool>,
    completed: AtomicU64,
}

impl Shared {
    fn since_epoch(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.epoch).as_nanos() as u64
    }
}

struct AbortAll(Vec<tokio::task::AbortHandle>);

impl Drop for AbortAll {
    fn drop(&mut self) {
        for h in &self.0 {
            h.abort();
        }
    }
}

fn new_histogram() -> Histogram<u64> {
    // 1 ns .. 10 min, 3 significant figures.
    Histogram::new_with_bounds(1, 600_000_000_000, 3).expect("static histogram bounds are valid")
}

/// Runs `load` against `source`, sampling the CPU time of this process and of `peer_pid`.
pub async fn run<S: OpSource>(
    load: Load,
    source: Arc<S>,
    peer_pid: Option<u32>,
) -> Result<Measured> {
    run_sampling(load, source, || cpu_seconds(peer_pid)).await
}

/// Runs `load` against `source`; `cpu` gives the CPU seconds `Measured::cpu_cores` counts
/// (read when the window opens and when it closes).
pub async fn run_sampling<S: OpSource>(
    load: Load,
    source: Arc<S>,
    cpu: impl Fn() -> Option<f64>,
) -> Result<Measured> {
    if load.appenders == 0 || load.in_flight == 0 {
        bail!("appenders and in-flight window must be at least 1");
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let shared = Arc::new(Shared {
        epoch: Instant::now(),
        stop_rx,
        window_start: AtomicU64::new(0),
        window_end: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        completed: AtomicU64::new(0),
    });
    let mut tasks = Vec::with_capacity(load.appenders);
    for a in 0..load.appenders {
        let shared = shared.clone();
        let source = source.clone();
        tasks.push(tokio::spawn(appender(a, load, source, shared)));
    }
    // However this function ends (an appender's error, or the caller dropping it on Ctrl-C),
    // no appender outlives it.
    let _abort = AbortAll(tasks.iter().map(|t| t.abort_handle()).collect());

    // Warm-up: the fixed time, then until the pipeline has turned over once.
    let started = Instant::now();
    tokio::time::sleep(load.warmup).await;
    let fill = (load.appenders * load.in_flight) as u64;
    while shared.completed.load(Ordering::Relaxed) < fill && started.elapsed() < load.max_warmup {
        if tasks.iter().any(|t| t.is_finished()) {
            break; // an appender failed: collect its error below
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let cpu0 = cpu();
    let t0 = Instant::now();
    let c0 = shared.completed.load(Ordering::Relaxed);
    shared
        .window_start
        .store(shared.since_epoch(t0).max(1), Ordering::Release);
    tokio::time::sleep(load.measure).await;
    while shared.completed.load(Ordering::Relaxed) < c0 + fill && t0.elapsed() < load.max_measure {
        if tasks.iter().any(|t| t.is_finished()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let t1 = Instant::now();
    shared
        .window_end
        .store(shared.since_epoch(t1).max(1), Ordering::Release);
    let cpu1 = cpu();
    shared.stop.store(true, Ordering::Release);
    stop_tx.send_replace(true);

    let mut events = 0;
    let mut latency_ns = new_histogram();
    let deadline = Duration::from_secs(if load.drain { 120 } else { 10 });
    for t in tasks {
        match tokio::time::timeout(deadline, t).await {
            Ok(joined) => {
                let (n, h) = joined.context("appender task panicked")??;
                events += n;
                latency_ns.add(&h).context("merging latency histograms")?;
            }
            Err(_) => {
                bail!("an appender did not stop within {deadline:?} after the window closed");
            }
        }
    }
    let seconds = (t1 - t0).as_secs_f64();
    let cpu_cores = match (cpu0, cpu1) {
        (Some(a), Some(b)) if seconds > 0.0 => (b - a) / seconds,
        _ => f64::NAN,
    };
    Ok(Measured {
        events,
        seconds,
        latency_ns,
        cpu_cores,
    })
}

async fn appender<S: OpSource>(
    a: usize,
    load: Load,
    source: Arc<S>,
    shared: Arc<Shared>,
) -> Result<(u64, Histogram<u64>)> {
    let mut hist = new_histogram();
    let mut events = 0u64;
    let mut seq = 0u64;
    // Completions not yet added to the shared counter (batched: one contended atomic per
    // REPORT_EVERY completions rather than per completion).
    const REPORT_EVERY: u64 = 16;
    let mut unreported = 0u64;
    let mut pending = FuturesUnordered::new();
    let issue = |seq: u64| {
        let fut = source.op(a, seq);
        let t = Instant::now();
        async move { (t, fut.await) }
    };
    while pending.len() < load.in_flight {
        pending.push(issue(seq));
        seq += 1;
    }
    let mut stop = shared.stop_rx.clone();
    loop {
        let next = tokio::select! {
            biased;
            next = pending.next() => next,
            // Wakes an appender whose next ack is far off (a slow peer) when the window closes.
            _ = stop.wait_for(|s| *s) => break,
        };
        let Some((issued, result)) = next else { break };
        let done = Instant::now();
        result.with_context(|| format!("appender {a}: operation failed"))?;
        unreported += 1;
        if unreported == REPORT_EVERY {
            shared.completed.fetch_add(unreported, Ordering::Relaxed);
            unreported = 0;
        }
        let start = shared.window_start.load(Ordering::Acquire);
        if start != 0 {
            let at = shared.since_epoch(done);
            let end = shared.window_end.load(Ordering::Acquire);
            if at >= start && (end == 0 || at <= end) {
                events += 1;
                let ns = done.saturating_duration_since(issued).as_nanos() as u64;
                hist.saturating_record(ns.max(1));
            }
        }
        if shared.stop.load(Ordering::Acquire) {
            break;
        }
        pending.push(issue(seq));
        seq += 1;
    }
    if load.drain {
        while let Some((_, result)) = pending.next().await {
            result.with_context(|| format!("appender {a}: operation failed while draining"))?;
        }
    }
    Ok((events, hist))
}

/// CPU seconds (user + system) used so far by this process and, if given, by `peer`.
/// `None` where /proc is unavailable.
pub fn cpu_seconds(peer: Option<u32>) -> Option<f64> {
    let own = proc_cpu_seconds("/proc/self/stat")?;
    let peer = match peer {
        Some(pid) => proc_cpu_seconds(&format!("/proc/{pid}/stat"))?,
        None => 0.0,
    };
    Some(own + peer)
}

pub fn proc_cpu_seconds(path: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // Linux reports these in USER_HZ ticks, 100 per second on every mainstream platform.
    Some((utime + stime) / 100.0)
}

/// Operations that allocate an id (as real appends do) and complete on their first wake-up:
/// what the driver itself costs. (Each yields once, as any real asynchronous operation
/// does; futures that are always ready would never let the runtime's timers run.)
#[derive(Debug)]
struct Noop;

impl OpSource for Noop {
    type Op = futures::future::BoxFuture<'static, Result<()>>;
    fn op(self: &Arc<Self>, appender: usize, seq: u64) -> Self::Op {
        let id = crate::ids::ulid_like(0, appender as u64, seq);
        Box::pin(async move {
            tokio::task::yield_now().await;
            std::hint::black_box(id);
            Ok(())
        })
    }
}

/// The driver's own ceiling: 64 appenders of no-op operations for half a second.
pub async fn calibrate(in_flight: usize) -> Result<Measured> {
    let load = Load {
        appenders: 64,
        in_flight,
        warmup: Duration::from_millis(100),
        measure: Duration::from_millis(500),
        max_warmup: Duration::from_secs(2),
        max_measure: Duration::from_secs(2),
        drain: true,
    };
    run(load, Arc::new(Noop), None).await
}

/// A payload of `n` bytes that every operation shares. Leaked on purpose (a few KiB per case):
/// cloning a static `Bytes` touches no shared reference count, so 64 appenders on different
/// cores don't contend on one cache line that no real producer would share.
pub fn static_payload(n: usize) -> bytes::Bytes {
    bytes::Bytes::from_static(Vec::leak(vec![b'x'; n]))
}
