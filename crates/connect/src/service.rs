//! [`Connect`]: the running integration gateway, the only way to talk to its lanes.

use crate::adapter::{Adapter, Answer};
use crate::config::Declarations;
use crate::error::{Error, Result};
use crate::lane::{Lane, LaneCounters, now_ms};
use crate::vendor::Vendor;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use switchyard_journal::Journal;
use switchyard_store::Store;
use switchyard_store::connect::{LaneState, Message, MessageFilter, MessageState, Reply};
use tokio::sync::{Mutex, watch};

/// How the gateway is started.
#[derive(Clone, Debug, Default)]
pub struct ConnectOptions {
    /// The `switchyard.toml` adapters are read from (and read again by
    /// [`Connect::reload`]); `None`: only what [`Connect::start`] is given.
    pub config_file: Option<PathBuf>,
    /// Start as the standby of a blue-green pair: read nothing, connect to no vendor and
    /// take no reply until [`Connect::promote`].
    pub standby: bool,
    /// This instance's name, the owner of its lanes' leases (`lane/<adapter>`); empty: a
    /// generated one.
    pub instance: String,
    /// How long a lane lease lasts unless renewed (renewed every third of it); zero: 10 s.
    pub lease_ttl: std::time::Duration,
}

/// The lease name of an adapter's lane.
pub fn lane_lease(adapter: &str) -> String {
    format!("lane/{adapter}")
}

/// A lane as the API shows it.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct LaneView {
    pub name: String,
    pub vendor: String,
    pub topic: String,
    pub writer: &'static str,
    /// The adapter version (hash of its configuration).
    pub hash: String,
    pub state: LaneState,
    /// Draining, with nothing pending or in flight.
    pub drained: bool,
    pub in_flight: usize,
    /// Messages per state, in the message store.
    pub messages: BTreeMap<MessageState, u64>,
    /// The send rate (messages per second) a 429 or 503 lowered the lane's vendor to;
    /// `None`: not lowered.
    pub send_rate: Option<f64>,
    /// The instance holding the lane's lease, and its epoch.
    pub lease_owner: Option<String>,
    pub lease_epoch: Option<u64>,
    /// Since this process started.
    pub counters: CountersView,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct CountersView {
    pub taken: u64,
    pub attempts: u64,
    pub delivered: u64,
    pub retried: u64,
    pub rejected: u64,
    pub failed: u64,
}

impl From<&LaneCounters> for CountersView {
    fn from(c: &LaneCounters) -> Self {
        Self {
            taken: c.taken.load(Ordering::Relaxed),
            attempts: c.attempts.load(Ordering::Relaxed),
            delivered: c.delivered.load(Ordering::Relaxed),
            retried: c.retried.load(Ordering::Relaxed),
            rejected: c.rejected.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
        }
    }
}

/// What a reload changed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ReloadReport {
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
    pub unchanged: Vec<String>,
}

/// How a replay sends a stored message again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReplayMode {
    /// The stored request, exactly as it was sent.
    Resend,
    /// The original event mapped again by the adapter's current version.
    Remap,
}

#[derive(Debug)]
struct Running {
    lanes: BTreeMap<String, Lane>,
    unrouted: Option<(watch::Sender<bool>, tokio::task::JoinHandle<()>)>,
}

struct Inner {
    journal: Arc<dyn Journal>,
    store: Arc<dyn Store>,
    options: ConnectOptions,
    running: Mutex<Running>,
    /// A standby's adapters, checked and waiting for the promotion (`None` once active).
    standby: Mutex<Option<Vec<Arc<Adapter>>>>,
    /// The adapters last applied: the keeper starts those whose lane lease another
    /// instance held (a dead one's expires, and its lanes move here).
    applied: std::sync::Mutex<Vec<Arc<Adapter>>>,
    instance: String,
    ttl_ms: i64,
    /// Each vendor's shared rate limit, holds and lowered rate (lanes of adapters naming
    /// the same `vendor` share one).
    vendors: std::sync::Mutex<BTreeMap<String, Arc<Vendor>>>,
    /// The epoch of each lane lease held.
    epochs: std::sync::Mutex<BTreeMap<String, u64>>,
    /// The lease keeper's stop switch and task.
    keeper: std::sync::Mutex<Option<(watch::Sender<bool>, tokio::task::JoinHandle<()>)>>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connect")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// The integration gateway: one lane per adapter. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Connect {
    inner: Arc<Inner>,
}

impl Connect {
    /// Reads the adapters from `options.config_file` (when given) and starts their lanes.
    pub async fn start(
        journal: Arc<dyn Journal>,
        store: Arc<dyn Store>,
        options: ConnectOptions,
    ) -> Result<Self> {
        let adapters = match &options.config_file {
            Some(file) => load(file)?,
            None => Vec::new(),
        };
        Self::start_with(journal, store, options, adapters).await
    }

    /// Starts lanes for `adapters` (already compiled).
    pub async fn start_with(
        journal: Arc<dyn Journal>,
        store: Arc<dyn Store>,
        options: ConnectOptions,
        adapters: Vec<Adapter>,
    ) -> Result<Self> {
        let instance = if options.instance.is_empty() {
            format!("connect-{}-{:08x}", std::process::id(), rand_u32())
        } else {
            options.instance.clone()
        };
        switchyard_store::lease::validate_lease_owner(&instance).map_err(|_| {
            Error::invalid(
                "instance",
                "must be 1 to 200 printable ASCII characters without spaces",
            )
        })?;
        let ttl = if options.lease_ttl.is_zero() {
            std::time::Duration::from_secs(10)
        } else {
            options.lease_ttl
        };
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        if !(300..=3_600_000).contains(&ttl_ms) {
            return Err(Error::invalid(
                "lease-ttl",
                format!("must be 300 ms to 1 h (got {ttl_ms} ms)"),
            ));
        }
        let adapters: Vec<Arc<Adapter>> = adapters.into_iter().map(Arc::new).collect();
        let connect = Self {
            inner: Arc::new(Inner {
                journal,
                store,
                options,
                instance,
                ttl_ms,
                epochs: std::sync::Mutex::default(),
                vendors: std::sync::Mutex::default(),
                keeper: std::sync::Mutex::default(),
                running: Mutex::new(Running {
                    lanes: BTreeMap::new(),
                    unrouted: None,
                }),
                standby: Mutex::new(None),
                applied: std::sync::Mutex::new(Vec::new()),
            }),
        };
        if connect.inner.options.standby {
            *connect.inner.standby.lock().await = Some(adapters);
        } else {
            connect.apply_arcs(adapters).await?;
        }
        connect.start_keeper(ttl);
        Ok(connect)
    }

    /// This instance's name (the owner of its lanes' leases).
    pub fn instance(&self) -> &str {
        &self.inner.instance
    }

    fn start_keeper(&self, ttl: std::time::Duration) {
        let (stop, mut rx) = watch::channel(false);
        let me = self.clone();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(ttl / 3) => me.renew().await,
                    _ = rx.changed() => return,
                }
            }
        });
        *self.inner.keeper.lock().unwrap_or_else(|e| e.into_inner()) = Some((stop, task));
    }

    /// Renews the lanes' leases; when one was taken by another instance (a promotion),
    /// this instance stops every lane and becomes a standby: it sends nothing and takes no
    /// reply.
    async fn renew(&self) {
        if self.is_standby().await {
            return;
        }
        let names: Vec<String> = self
            .inner
            .running
            .lock()
            .await
            .lanes
            .keys()
            .cloned()
            .collect();
        let now = now_ms();
        let mut lost = None;
        for name in names {
            let lease = lane_lease(&name);
            let held = self.epochs().get(&name).copied();
            match self
                .inner
                .store
                .acquire_lease(&lease, &self.inner.instance, now, self.inner.ttl_ms)
                .await
            {
                Ok(Some(l)) if Some(l.epoch) == held => {}
                Ok(_) => {
                    lost = Some(name);
                    break;
                }
                Err(e) => tracing::warn!(lease, "renewing a lane lease: {e}"),
            }
        }
        if let Some(name) = lost {
            tracing::warn!(lane = %name, "lane lease taken by another instance: stopping every lane (standby)");
            self.demote().await;
            return;
        }
        // Lanes held elsewhere when they were applied: take them once their lease is free.
        let applied = self
            .inner
            .applied
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let running: Vec<String> = self
            .inner
            .running
            .lock()
            .await
            .lanes
            .keys()
            .cloned()
            .collect();
        let missing: Vec<String> = applied
            .iter()
            .filter(|a| !running.contains(&a.name))
            .map(|a| lane_lease(&a.name))
            .collect();
        if missing.is_empty() {
            return;
        }
        // Only when one of them is free: a lane a live instance holds is not retried (no
        // writers built, no warning) at every renewal.
        let free = match self.inner.store.leases("lane/").await {
            Ok(held) => missing.iter().any(|name| {
                held.iter()
                    .find(|l| &l.name == name)
                    .is_none_or(|l| l.expires_at_ms <= now || l.owner == self.inner.instance)
            }),
            Err(e) => {
                tracing::warn!("listing the lane leases: {e}");
                false
            }
        };
        if free && let Err(e) = self.apply_arcs(applied).await {
            tracing::warn!("starting lanes whose lease came free: {e}");
        }
    }

    /// Stops every lane and keeps their adapters for a promotion.
    async fn demote(&self) {
        let mut standby = self.inner.standby.lock().await;
        let mut running = self.inner.running.lock().await;
        if let Some((stop, task)) = running.unrouted.take() {
            let _ = stop.send(true);
            let _ = task.await;
        }
        let lanes = std::mem::take(&mut running.lanes);
        let mut adapters = Vec::new();
        for (_, lane) in lanes {
            adapters.push(lane.shared.adapter.clone());
            lane.stop().await;
        }
        self.epochs().clear();
        *standby = Some(adapters);
    }

    fn epochs(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, u64>> {
        self.inner.epochs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether this instance is a standby (nothing runs until it is promoted).
    pub async fn is_standby(&self) -> bool {
        self.inner.standby.lock().await.is_some()
    }

    /// Makes a standby active: its lanes start (each from its stored cursor, so it goes
    /// on where the other side stopped). Promoting an active instance changes nothing.
    pub async fn promote(&self) -> Result<ReloadReport> {
        let adapters = self.inner.standby.lock().await.take();
        match adapters {
            Some(adapters) => {
                // Take the lanes' leases whatever their state: the other side finds at its
                // next renewal that it lost them, and stops.
                let now = now_ms();
                for a in &adapters {
                    let l = self
                        .inner
                        .store
                        .steal_lease(
                            &lane_lease(&a.name),
                            &self.inner.instance,
                            now,
                            self.inner.ttl_ms,
                        )
                        .await?;
                    self.epochs().insert(a.name.clone(), l.epoch);
                }
                self.apply_arcs(adapters).await
            }
            None => Ok(ReloadReport::default()),
        }
    }

    /// The store, for queries of the message store and cases.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// Reads the adapters' files again and applies them: new adapters start, changed ones
    /// restart with their new version (their cursor and messages stay), removed ones
    /// stop. A configuration with any error changes nothing.
    pub async fn reload(&self) -> Result<ReloadReport> {
        let adapters = match &self.inner.options.config_file {
            Some(file) => load(file)?,
            None => return Ok(ReloadReport::default()),
        };
        // A standby only checks them and keeps them for its promotion.
        let mut standby = self.inner.standby.lock().await;
        if let Some(waiting) = standby.as_mut() {
            *waiting = adapters.into_iter().map(Arc::new).collect();
            return Ok(ReloadReport::default());
        }
        drop(standby);
        self.apply(adapters).await
    }

    /// Runs exactly `adapters` (see [`reload`](Self::reload)).
    pub async fn apply(&self, adapters: Vec<Adapter>) -> Result<ReloadReport> {
        self.apply_arcs(adapters.into_iter().map(Arc::new).collect())
            .await
    }

    async fn apply_arcs(&self, adapters: Vec<Arc<Adapter>>) -> Result<ReloadReport> {
        let mut writers = Vec::with_capacity(adapters.len());
        let all = adapters.clone();
        for a in adapters {
            let w = crate::writer::build(&a.writer, a.timeout)
                .map_err(|e| Error::invalid(format!("adapters.{}.writer", a.name), e))?;
            writers.push((a, w));
        }
        let states: BTreeMap<String, LaneState> =
            self.inner.store.lane_states().await?.into_iter().collect();
        // One bucket per vendor, with the rate limit its adapters declare (checked to be
        // the same by every adapter that declares one).
        let vendors: BTreeMap<String, Arc<Vendor>> = {
            let mut known = self.inner.vendors.lock().unwrap_or_else(|e| e.into_inner());
            let mut limits: BTreeMap<&str, Option<&crate::config::RateLimit>> = BTreeMap::new();
            for a in &all {
                let l = limits.entry(a.vendor.as_str()).or_default();
                if l.is_none() {
                    *l = a.config.rate_limit.as_ref();
                }
            }
            known.retain(|name, _| limits.contains_key(name.as_str()));
            for (name, limit) in limits {
                known
                    .entry(name.to_owned())
                    .or_insert_with(|| Arc::new(Vendor::new()))
                    .set_rate_limit(limit);
            }
            known.clone()
        };
        *self.inner.applied.lock().unwrap_or_else(|e| e.into_inner()) = all;
        let mut running = self.inner.running.lock().await;
        let mut report = ReloadReport::default();
        let wanted: Vec<String> = writers.iter().map(|(a, _)| a.name.clone()).collect();
        let old: Vec<String> = running.lanes.keys().cloned().collect();
        for name in old {
            if !wanted.contains(&name)
                && let Some(lane) = running.lanes.remove(&name)
            {
                lane.stop().await;
                self.epochs().remove(&name);
                let _ = self
                    .inner
                    .store
                    .release_lease(&lane_lease(&name), &self.inner.instance)
                    .await;
                report.removed.push(name);
            }
        }
        for (adapter, writer) in writers {
            let name = adapter.name.clone();
            if let Some(lane) = running.lanes.get(&name) {
                if lane.shared.adapter.hash == adapter.hash {
                    report.unchanged.push(name);
                    continue;
                }
                if let Some(lane) = running.lanes.remove(&name) {
                    lane.stop().await;
                }
                report.changed.push(name.clone());
            } else {
                // Only the holder of the lane's lease reads and sends.
                let lease = lane_lease(&name);
                match self
                    .inner
                    .store
                    .acquire_lease(&lease, &self.inner.instance, now_ms(), self.inner.ttl_ms)
                    .await?
                {
                    Some(l) => {
                        self.epochs().insert(name.clone(), l.epoch);
                    }
                    None => {
                        tracing::info!(
                            lease,
                            "the lane is held by another instance: not started here"
                        );
                        continue;
                    }
                }
                report.added.push(name.clone());
            }
            let state = states.get(&name).copied().unwrap_or(LaneState::Running);
            let vendor = vendors
                .get(&adapter.vendor)
                .cloned()
                .unwrap_or_else(|| Arc::new(Vendor::new()));
            let mut lane = Lane::start(
                adapter.clone(),
                writer,
                self.inner.store.clone(),
                self.inner.journal.clone(),
                vendor,
                state,
            );
            if let Some(q) = &adapter.config.reply_queue {
                let task = tokio::spawn(crate::reader::amqp::run(
                    lane.shared.clone(),
                    q.url.clone(),
                    q.queue.clone(),
                    lane.stop_signal(),
                ));
                lane.attach(task);
            }
            running.lanes.insert(name, lane);
        }
        // The unrouted lane follows the set of adapters.
        if let Some((stop, task)) = running.unrouted.take() {
            let _ = stop.send(true);
            let _ = task.await;
        }
        let adapters: Vec<Arc<Adapter>> = running
            .lanes
            .values()
            .map(|l| l.shared.adapter.clone())
            .collect();
        if !adapters.is_empty() {
            let (stop, rx) = watch::channel(false);
            let task = tokio::spawn(crate::unrouted::run(
                adapters,
                self.inner.journal.clone(),
                self.inner.store.clone(),
                rx,
            ));
            running.unrouted = Some((stop, task));
        }
        Ok(report)
    }

    /// Every lane, by name.
    pub async fn lanes(&self) -> Result<Vec<LaneView>> {
        let running = self.inner.running.lock().await;
        let counts = self.inner.store.message_counts(None).await?;
        let leases: BTreeMap<String, switchyard_store::Lease> = self
            .inner
            .store
            .leases("lane/")
            .await?
            .into_iter()
            .map(|l| (l.name.clone(), l))
            .collect();
        let mut out = Vec::new();
        for (name, lane) in &running.lanes {
            let a = &lane.shared.adapter;
            let messages: BTreeMap<MessageState, u64> = counts
                .iter()
                .filter(|c| &c.adapter == name)
                .map(|c| (c.state, c.count))
                .collect();
            let state = *lane.shared.state.borrow();
            let in_flight = lane.in_flight();
            out.push(LaneView {
                name: name.clone(),
                vendor: a.vendor.clone(),
                topic: a.topic.to_string(),
                writer: match a.writer {
                    crate::adapter::WriterSpec::Http { .. } => "http",
                    crate::adapter::WriterSpec::Amqp { .. } => "amqp",
                    crate::adapter::WriterSpec::File { .. } => "file",
                },
                hash: a.hash.clone(),
                state,
                drained: state == LaneState::Draining
                    && in_flight == 0
                    && messages.get(&MessageState::Pending).copied().unwrap_or(0) == 0,
                in_flight,
                messages,
                send_rate: lane.shared.vendor.lowered_rate(),
                lease_owner: leases
                    .get(&lane_lease(name))
                    .filter(|l| l.is_held_at(now_ms()))
                    .map(|l| l.owner.clone()),
                lease_epoch: leases.get(&lane_lease(name)).map(|l| l.epoch),
                counters: CountersView::from(&lane.shared.counters),
            });
        }
        Ok(out)
    }

    /// One lane.
    pub async fn lane(&self, name: &str) -> Result<LaneView> {
        self.lanes()
            .await?
            .into_iter()
            .find(|l| l.name == name)
            .ok_or_else(|| Error::UnknownAdapter(name.to_owned()))
    }

    /// Pauses, resumes or drains a lane; the state is kept in the store.
    pub async fn set_state(&self, name: &str, state: LaneState) -> Result<LaneView> {
        {
            let running = self.inner.running.lock().await;
            let lane = running
                .lanes
                .get(name)
                .ok_or_else(|| Error::UnknownAdapter(name.to_owned()))?;
            self.inner
                .store
                .set_lane_state(name, state, now_ms())
                .await?;
            lane.set_state(state);
        }
        self.lane(name).await
    }

    /// A reply from the vendor of `adapter` (the HTTP callback reader calls this).
    pub async fn receive_reply(&self, adapter: &str, answer: Answer) -> Result<Reply> {
        if self.is_standby().await {
            return Err(Error::Standby);
        }
        let shared = {
            let running = self.inner.running.lock().await;
            let lane = running
                .lanes
                .get(adapter)
                .ok_or_else(|| Error::UnknownAdapter(adapter.to_owned()))?;
            if lane.shared.adapter.correlation.is_none() {
                return Err(Error::invalid(
                    "adapter",
                    format!("adapter `{adapter}` has no [correlation]: it takes no replies"),
                ));
            }
            lane.shared.clone()
        };
        shared.receive_reply(answer).await
    }

    async fn poke(&self, adapter: &str) {
        if let Some(lane) = self.inner.running.lock().await.lanes.get(adapter) {
            lane.poke();
        }
    }

    async fn adapter(&self, name: &str) -> Result<Arc<Adapter>> {
        self.inner
            .running
            .lock()
            .await
            .lanes
            .get(name)
            .map(|l| l.shared.adapter.clone())
            .ok_or_else(|| Error::UnknownAdapter(name.to_owned()))
    }

    /// Sends a stored message again (see [`ReplayMode`]).
    pub async fn replay(&self, id: u64, mode: ReplayMode) -> Result<Message> {
        let (message, _) = self.inner.store.message(id).await?;
        let remapped = match mode {
            ReplayMode::Resend => None,
            ReplayMode::Remap => {
                let adapter = self.adapter(&message.adapter).await?;
                let prepared = adapter
                    .prepare_with(&message.event, message.correlation_id.clone())
                    .map_err(|e| Error::invalid("mode", format!("mapping again failed: {e}")))?;
                Some((prepared.request, adapter.hash.clone()))
            }
        };
        let replayed = self
            .inner
            .store
            .replay_message(id, remapped, now_ms())
            .await?;
        self.poke(&replayed.adapter).await;
        Ok(replayed)
    }

    /// Puts every failed message of a case back in its lane; with `Remap` each is mapped
    /// again by the current adapter version. Returns how many.
    pub async fn retry_case(&self, id: &str, mode: ReplayMode) -> Result<u64> {
        let case = self.inner.store.case(id).await?;
        let n = match mode {
            ReplayMode::Resend => self.inner.store.retry_case(id, now_ms()).await?,
            ReplayMode::Remap => {
                let mut n = 0;
                let mut after = None;
                loop {
                    let page = self
                        .inner
                        .store
                        .messages(&MessageFilter {
                            case_id: Some(id.to_owned()),
                            state: Some(MessageState::Failed),
                            after_id: after,
                            limit: 500,
                            ..MessageFilter::default()
                        })
                        .await?;
                    let Some(last) = page.last() else { break };
                    after = Some(last.id);
                    for m in page {
                        self.replay(m.id, ReplayMode::Remap).await?;
                        n += 1;
                    }
                }
                n
            }
        };
        self.poke(&case.key.adapter).await;
        Ok(n)
    }

    /// Stops every lane: no attempt starts; attempts in progress record their outcome.
    pub async fn shutdown(&self) {
        let keeper = self
            .inner
            .keeper
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some((stop, task)) = keeper {
            let _ = stop.send(true);
            let _ = task.await;
        }
        let mut running = self.inner.running.lock().await;
        if let Some((stop, task)) = running.unrouted.take() {
            let _ = stop.send(true);
            let _ = task.await;
        }
        let lanes = std::mem::take(&mut running.lanes);
        for (name, lane) in lanes {
            lane.stop().await;
            let _ = self
                .inner
                .store
                .release_lease(&lane_lease(&name), &self.inner.instance)
                .await;
        }
    }
}

fn rand_u32() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    nanos ^ std::process::id().rotate_left(16)
}

/// Reads and compiles the adapters of `file` (a `switchyard.toml`).
pub fn load(file: &std::path::Path) -> Result<Vec<Adapter>> {
    let decls: Declarations = crate::config::read(file).map_err(Error::Config)?;
    crate::adapter::compile_all(&decls).map_err(Error::Config)
}
