//! After the events: the seed's HTTP calls, then waiting until every subscription has
//! caught up.

use super::file::Call;
use super::progress::Progress;
use crate::remote::{Server, call, client};
use anyhow::Context as _;
use serde::Serialize;
use serde_json::Value;
use std::time::{Duration, Instant};

/// One call as made.
#[derive(Debug, Serialize)]
pub struct CallOutcome {
    pub line: u64,
    pub method: String,
    /// The URL as the file wrote it (before `${VAR}`s were filled in: they may be secrets).
    pub url: String,
    pub status: Option<u16>,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Makes the calls in file order and stops at the first one that fails: later calls may
/// depend on it. A path (`/v1/...`) goes to the Switchyard server, with its token.
pub async fn make_calls(server: &Server, calls: &[Call], timeout: Duration) -> Vec<CallOutcome> {
    let mut out = Vec::with_capacity(calls.len());
    for c in calls {
        let outcome = make_call(server, c, timeout).await;
        let ok = outcome.ok;
        out.push(outcome);
        if !ok {
            break;
        }
    }
    out
}

async fn make_call(server: &Server, c: &Call, timeout: Duration) -> CallOutcome {
    let mut outcome = CallOutcome {
        line: c.line,
        method: c.method.to_string(),
        url: c.shown_url.clone(),
        status: None,
        ok: false,
        error: None,
    };
    let request = if c.url.starts_with('/') {
        server.request(c.method.clone(), &c.url)
    } else {
        Ok(client().request(c.method.clone(), &c.url))
    };
    let mut request = match request {
        Ok(r) => r.timeout(timeout),
        Err(e) => {
            outcome.error = Some(e.to_string());
            return outcome;
        }
    };
    for (name, value) in &c.headers {
        request = request.header(name, value);
    }
    if let Some(body) = &c.body {
        // After the headers: `json` sets the content type only if they did not.
        request = request.json(body);
    }
    match request.send().await {
        Err(e) => outcome.error = Some(crate::render(&anyhow::Error::new(e))),
        Ok(r) => {
            let status = r.status().as_u16();
            outcome.status = Some(status);
            outcome.ok = c.accepts(status);
            if !outcome.ok {
                let body = r.text().await.unwrap_or_default();
                let mut end = body.len().min(300);
                while !body.is_char_boundary(end) {
                    end -= 1;
                }
                outcome.error = Some(format!(
                    "answered {status}, expected {}: {}",
                    expected(c),
                    body[..end].trim()
                ));
            }
        }
    }
    outcome
}

fn expected(c: &Call) -> String {
    if c.expect.is_empty() {
        "2xx".into()
    } else {
        let list: Vec<String> = c.expect.iter().map(u16::to_string).collect();
        list.join(" or ")
    }
}

/// One subscription's state when the wait ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SubState {
    pub name: String,
    pub lag: u64,
    pub in_flight: u64,
    pub parked: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Events in its topics (the sum of their next offsets): unchanged between two looks
    /// means nothing was appended in between.
    #[serde(skip)]
    pub written: u64,
}

impl SubState {
    /// Caught up: nothing left to read, nothing in flight. Parked deliveries do not hold it
    /// back (they wait for a person).
    pub fn caught_up(&self) -> bool {
        self.lag == 0 && self.in_flight == 0
    }
}

#[derive(Debug)]
pub struct Waited {
    /// False when the server runs without subscriptions (no store).
    pub available: bool,
    pub caught_up: bool,
    pub subs: Vec<SubState>,
}

/// How often the subscriptions are looked at.
const POLL: Duration = Duration::from_millis(100);

/// Waits until every subscription has caught up, or `timeout`. A subscriber that reacts to
/// an event may publish more before acknowledging it, so caught-up must be seen twice in a
/// row with nothing appended in between.
pub async fn wait(
    server: &Server,
    timeout: Duration,
    progress: &Progress,
) -> anyhow::Result<Waited> {
    let deadline = Instant::now() + timeout;
    let mut previous: Option<Vec<SubState>> = None;
    loop {
        let Some(subs) = look(server).await? else {
            return Ok(Waited {
                available: false,
                caught_up: true,
                subs: Vec::new(),
            });
        };
        let settled = subs.iter().all(SubState::caught_up);
        if settled && previous.as_ref().is_some_and(|p| same_progress(p, &subs)) {
            progress.clear();
            return Ok(Waited {
                available: true,
                caught_up: true,
                subs,
            });
        }
        if Instant::now() >= deadline {
            progress.clear();
            return Ok(Waited {
                available: true,
                caught_up: settled,
                subs,
            });
        }
        if !subs.is_empty() {
            let (lag, in_flight) = subs
                .iter()
                .fold((0, 0), |(l, f), s| (l + s.lag, f + s.in_flight));
            progress.status(&format!(
                "waiting for {} subscriptions: lag {lag}, in flight {in_flight}",
                subs.len()
            ));
        }
        previous = Some(subs);
        tokio::time::sleep(POLL).await;
    }
}

fn same_progress(a: &[SubState], b: &[SubState]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.name == y.name && x.written == y.written)
}

/// Every subscription's state, or None when the server has no subscriptions at all.
async fn look(server: &Server) -> anyhow::Result<Option<Vec<SubState>>> {
    let r = server
        .request(reqwest::Method::GET, "/v1/subscriptions")?
        .send()
        .await
        .with_context(|| format!("connecting to {}", server.server))?;
    if r.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE {
        return Ok(None);
    }
    if !r.status().is_success() {
        return Err(crate::remote::problem(r)
            .await
            .context("listing subscriptions"));
    }
    let list: Value = r.json().await.context("reading the subscription list")?;
    let mut subs = Vec::new();
    for name in list["subscriptions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        let v = match call(
            server,
            reqwest::Method::GET,
            &format!("/v1/subscriptions/{name}"),
            None,
        )
        .await
        {
            Ok(v) => v,
            // Deleted since the list was read.
            Err(e) if e.to_string().starts_with("404 ") => continue,
            Err(e) => return Err(e.context(format!("reading subscription {name}"))),
        };
        let partitions = v["partitions"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        subs.push(SubState {
            name: name.to_string(),
            lag: partitions.iter().filter_map(|p| p["lag"].as_u64()).sum(),
            in_flight: v["in-flight"].as_u64().unwrap_or(0),
            parked: v["parked"].as_u64().unwrap_or(0),
            last_error: v["last-error"].as_str().map(str::to_string),
            written: partitions
                .iter()
                .filter_map(|p| p["next-offset"].as_u64())
                .sum(),
        });
    }
    subs.extend(in_process(server).await?);
    Ok(Some(subs))
}

/// The consumers of in-process services (`switchyard dev` from a host binary), which read
/// the journal themselves rather than through a subscription: one entry per service and
/// topic. None on a plain server (it has no `/v1/system/status`).
async fn in_process(server: &Server) -> anyhow::Result<Vec<SubState>> {
    let r = server
        .request(reqwest::Method::GET, "/v1/system/status")?
        .send()
        .await
        .with_context(|| format!("connecting to {}", server.server))?;
    if !r.status().is_success() {
        return Ok(Vec::new());
    }
    let status: Value = r.json().await.context("reading the system status")?;
    let mut by_consumer: std::collections::BTreeMap<String, SubState> = Default::default();
    for c in status["consumers"].as_array().into_iter().flatten() {
        let name = format!(
            "{} (in process) {}",
            c["service"].as_str().unwrap_or("?"),
            c["topic"].as_str().unwrap_or("?")
        );
        let s = by_consumer.entry(name.clone()).or_insert(SubState {
            name,
            lag: 0,
            in_flight: 0,
            parked: 0,
            last_error: None,
            written: 0,
        });
        s.lag += c["lag"].as_u64().unwrap_or(0);
        s.in_flight += c["in-flight"].as_u64().unwrap_or(0);
        s.written += c["next-offset"].as_u64().unwrap_or(0);
    }
    Ok(by_consumer.into_values().collect())
}
