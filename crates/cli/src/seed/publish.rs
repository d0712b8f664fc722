//! The events half of a seed: look at the topics on the server (exist? schemas?), create
//! the missing ones, find which of the seed's events are already there, and append the rest
//! in batches, several requests in flight but each partition key's events in file order.

use super::file::{Seed, SeedEvent, TopicSeed};
use super::progress::Progress;
use crate::remote::{Server, problem};
use anyhow::{Context as _, anyhow};
use serde::Deserialize;
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;
use tokio::sync::Semaphore;

/// Requests in flight at once, over all topics.
const IN_FLIGHT: usize = 4;
/// Each topic's events go out in this many lanes, split by partition key: a key's events
/// are all in one lane, and a lane sends one batch at a time, so they stay in file order.
const LANES: usize = 4;
/// A batch holds at most this many events and bytes (the server's defaults are 10,000
/// events and 4 MiB; a server set lower answers 413 and the batch is halved).
const BATCH_EVENTS: usize = 1000;
const BATCH_BYTES: usize = 1 << 20;
/// Events per page when looking for the seed's ids (the server's maximum read).
const PAGE: usize = 1000;

/// A topic as the server described it before the seed.
#[derive(Debug)]
pub struct TopicState {
    pub exists: bool,
    /// Each partition's first and next offset.
    pub partitions: Vec<(u32, u64, u64)>,
    /// Settings the file declares that the existing topic does not have (the seed
    /// creates topics, it does not change them): `partitions 1 (file: 3)`.
    pub differs: Vec<String>,
}

/// What happened to one topic.
#[derive(Debug, Default, Clone)]
pub struct TopicOutcome {
    pub appended: u64,
    pub already_there: u64,
}

#[derive(Deserialize)]
struct TopicJson {
    partitions: Vec<PartitionJson>,
    #[serde(default)]
    config: serde_json::Map<String, Value>,
    #[serde(default)]
    schemas: BTreeMap<String, Value>,
}

#[derive(Deserialize)]
struct PartitionJson {
    partition: u32,
    #[serde(rename = "first-offset")]
    first_offset: u64,
    #[serde(rename = "next-offset")]
    next_offset: u64,
}

/// Describes every topic of the seed and checks the seed against the server: a topic that
/// neither exists nor is declared under `topics:` is an error, and so is an event whose
/// data does not match its topic's schema. Changes nothing.
pub async fn inspect(server: &Server, seed: &Seed) -> anyhow::Result<Vec<TopicState>> {
    let mut states = Vec::with_capacity(seed.topics.len());
    for t in &seed.topics {
        let r = server
            .request(reqwest::Method::GET, &format!("/v1/topics/{}", t.name))?
            .send()
            .await
            .with_context(|| format!("connecting to {}", server.server))?;
        if r.status() == reqwest::StatusCode::NOT_FOUND && t.create.is_some() {
            states.push(TopicState {
                exists: false,
                partitions: Vec::new(),
                differs: Vec::new(),
            });
            continue;
        }
        if r.status() == reqwest::StatusCode::NOT_FOUND {
            return Err(anyhow!(
                "{}:{}: topic `{}` does not exist on {}; declare it under `topics:` to create it",
                seed.file,
                t.line,
                t.name,
                server.server
            ));
        }
        if !r.status().is_success() {
            return Err(problem(r)
                .await
                .context(format!("describing topic {}", t.name)));
        }
        let info: TopicJson = r
            .json()
            .await
            .with_context(|| format!("reading the description of topic {}", t.name))?;
        check_schemas(seed, t, &info.schemas)?;
        let declared = match serde_json::to_value(t.create) {
            Ok(Value::Object(m)) => m,
            _ => serde_json::Map::new(),
        };
        let differs = declared
            .iter()
            .filter(|(k, v)| info.config.get(*k) != Some(*v))
            .map(|(k, v)| {
                let has = info.config.get(k).unwrap_or(&Value::Null);
                format!("{k} {has} (file: {v})")
            })
            .collect();
        states.push(TopicState {
            exists: true,
            differs,
            partitions: info
                .partitions
                .iter()
                .map(|p| (p.partition, p.first_offset, p.next_offset))
                .collect(),
        });
    }
    Ok(states)
}

/// The server checks `data` against the topic's schema for the event's type; checking
/// here first keeps a bad event from stopping the seed halfway.
fn check_schemas(
    seed: &Seed,
    t: &TopicSeed,
    schemas: &BTreeMap<String, Value>,
) -> anyhow::Result<()> {
    for (kind, schema) in schemas {
        let Ok(validator) = jsonschema::validator_for(schema) else {
            continue; // the server compiled it; if this build cannot, the server decides
        };
        for (n, e) in t.events.iter().enumerate().filter(|(_, e)| &e.kind == kind) {
            let at = |why: String| {
                anyhow!(
                    "{}:{}: `events.{}[{}].data`: {why}",
                    seed.file,
                    e.line,
                    t.name,
                    n + 1
                )
            };
            let Some(data) = &e.data else {
                return Err(at(format!(
                    "topic {} has a schema for `{kind}`, so these events need data",
                    t.name
                )));
            };
            if let Some(err) = validator.iter_errors(data).next() {
                return Err(at(format!(
                    "does not match topic {}'s schema for `{kind}`: {err} (at /data{})",
                    t.name,
                    err.instance_path()
                )));
            }
        }
    }
    Ok(())
}

/// Creates the declared topics that do not exist yet.
pub async fn create_missing(
    server: &Server,
    seed: &Seed,
    states: &[TopicState],
) -> anyhow::Result<Vec<bool>> {
    let mut created = Vec::with_capacity(states.len());
    for (t, s) in seed.topics.iter().zip(states) {
        let Some(config) = t.create.filter(|_| !s.exists) else {
            created.push(false);
            continue;
        };
        let r = server
            .request(reqwest::Method::PUT, &format!("/v1/topics/{}", t.name))?
            .json(&config)
            .send()
            .await
            .with_context(|| format!("connecting to {}", server.server))?;
        if !r.status().is_success() {
            return Err(problem(r)
                .await
                .context(format!("creating topic {}", t.name)));
        }
        created.push(r.status() == reqwest::StatusCode::CREATED);
    }
    Ok(created)
}

/// What every request of [`append`] shares.
struct Ctx<'a> {
    server: &'a Server,
    seed: &'a Seed,
    /// Bounds the requests in flight.
    permits: Semaphore,
    progress: &'a Progress,
}

/// Appends every event of the seed that its topic does not hold yet.
pub async fn append(
    server: &Server,
    seed: &Seed,
    states: &[TopicState],
    progress: &Progress,
) -> anyhow::Result<Vec<TopicOutcome>> {
    let ctx = &Ctx {
        server,
        seed,
        permits: Semaphore::new(IN_FLIGHT),
        progress,
    };

    // Which of the seed's ids are already in each topic: one pass over each partition that
    // holds anything, from its first offset to where it ended when the seed started.
    let to_scan: u64 = states
        .iter()
        .zip(&seed.topics)
        .filter(|(_, t)| !t.events.is_empty())
        .flat_map(|(s, _)| s.partitions.iter().map(|(_, first, next)| next - first))
        .sum();
    progress.start("checking for events already there", to_scan);
    let found: Vec<Mutex<HashSet<String>>> = seed
        .topics
        .iter()
        .map(|_| Mutex::new(HashSet::new()))
        .collect();
    let wanted: Vec<HashSet<&str>> = seed
        .topics
        .iter()
        .map(|t| t.events.iter().map(|e| e.id.as_str()).collect())
        .collect();
    let scans = seed.topics.iter().enumerate().flat_map(|(i, t)| {
        let (wanted, found) = (&wanted[i], &found[i]);
        states[i]
            .partitions
            .iter()
            .filter(|(_, first, next)| next > first && !t.events.is_empty())
            .map(move |&(p, first, next)| {
                scan_partition(ctx, &t.name, (p, first..next), wanted, found)
            })
    });
    futures::future::try_join_all(scans).await?;
    progress.finish();

    let found: Vec<HashSet<String>> = found
        .into_iter()
        .map(|f| f.into_inner().unwrap_or_else(|e| e.into_inner()))
        .collect();
    let mut outcomes: Vec<TopicOutcome> = found
        .iter()
        .map(|f| TopicOutcome {
            already_there: f.len() as u64,
            ..TopicOutcome::default()
        })
        .collect();
    let missing: Vec<Vec<&SeedEvent>> = seed
        .topics
        .iter()
        .zip(&found)
        .map(|(t, f)| t.events.iter().filter(|e| !f.contains(&e.id)).collect())
        .collect();
    let total: usize = missing.iter().map(Vec::len).sum();
    progress.start("appending", total as u64);
    let mut lanes = Vec::new();
    for (i, events) in missing.iter().enumerate() {
        let mut split: Vec<Vec<&SeedEvent>> = vec![Vec::new(); LANES];
        for e in events {
            let lane = e.order_key.as_deref().map_or(0, |k| {
                xxhash_rust::xxh3::xxh3_64(k.as_bytes()) as usize % LANES
            });
            split[lane].push(e);
        }
        for lane in split.into_iter().filter(|l| !l.is_empty()) {
            lanes.push(send_lane(ctx, i, lane));
        }
    }
    let results = futures::future::try_join_all(lanes).await;
    progress.finish();
    for (i, appended, duplicates) in results? {
        outcomes[i].appended += appended;
        outcomes[i].already_there += duplicates;
    }
    Ok(outcomes)
}

#[derive(Deserialize)]
struct Page {
    events: Vec<IdOnly>,
    next: String,
}

#[derive(Deserialize)]
struct IdOnly {
    #[serde(default)]
    id: Option<String>,
}

/// Reads the `offsets` of partition `p` of `topic`, noting which `wanted` ids it holds;
/// stops early once every one is found.
async fn scan_partition(
    ctx: &Ctx<'_>,
    topic: &str,
    (p, offsets): (u32, std::ops::Range<u64>),
    wanted: &HashSet<&str>,
    found: &Mutex<HashSet<String>>,
) -> anyhow::Result<()> {
    let (server, end) = (ctx.server, offsets.end);
    let mut from = offsets.start;
    while from < end {
        if found.lock().map_or(0, |f| f.len()) == wanted.len() {
            break;
        }
        let _permit = ctx.permits.acquire().await?;
        let r = server
            .request(
                reqwest::Method::GET,
                &format!("/v1/topics/{topic}/events?partition={p}&from={from}&limit={PAGE}"),
            )?
            .send()
            .await
            .with_context(|| format!("connecting to {}", server.server))?;
        if !r.status().is_success() {
            return Err(problem(r).await.context(format!("reading topic {topic}")));
        }
        let page: Page = r
            .json()
            .await
            .with_context(|| format!("reading topic {topic}"))?;
        if page.events.is_empty() {
            break;
        }
        let next: u64 = page
            .next
            .parse()
            .with_context(|| format!("the server's next offset {:?}", page.next))?;
        if let Ok(mut f) = found.lock() {
            for id in page.events.iter().filter_map(|e| e.id.as_deref()) {
                if wanted.contains(id) {
                    f.insert(id.to_string());
                }
            }
        }
        ctx.progress.inc(next.min(end).saturating_sub(from));
        from = next;
    }
    Ok(())
}

/// Sends one lane's events in batches, one request at a time. Returns the topic's index,
/// how many were appended, and how many the server already had (its dedup window).
async fn send_lane(
    ctx: &Ctx<'_>,
    topic: usize,
    events: Vec<&SeedEvent>,
) -> anyhow::Result<(usize, u64, u64)> {
    let (server, seed) = (ctx.server, ctx.seed);
    let name = &seed.topics[topic].name;
    let (mut appended, mut duplicates) = (0, 0);
    let mut rest = events.as_slice();
    while !rest.is_empty() {
        let mut n = 0;
        let mut bytes = 2;
        while n < rest.len() && n < BATCH_EVENTS {
            bytes += rest[n].json.len() + 1;
            if n > 0 && bytes > BATCH_BYTES {
                break;
            }
            n += 1;
        }
        let (batch, tail) = rest.split_at(n);
        // A batch the server finds too large is halved until it fits.
        let mut pending = vec![batch];
        while let Some(b) = pending.pop() {
            let _permit = ctx.permits.acquire().await?;
            match post_batch(server, name, b).await? {
                Posted::Ok { new, dup } => {
                    appended += new;
                    duplicates += dup;
                    ctx.progress.inc(b.len() as u64);
                }
                Posted::TooLarge if b.len() > 1 => {
                    let (x, y) = b.split_at(b.len() / 2);
                    pending.push(y);
                    pending.push(x);
                }
                Posted::TooLarge => {
                    return Err(anyhow!(
                        "{}:{}: the server refuses this event of topic {name} as too large \
                         ({} bytes); the events sent before it are in (seeding again skips \
                         them)",
                        seed.file,
                        b[0].line,
                        b[0].json.len()
                    ));
                }
                Posted::Refused {
                    index: None,
                    message,
                } => {
                    return Err(anyhow!("appending to topic {name}: {message}"));
                }
                Posted::Refused {
                    index: Some(index),
                    message,
                } => {
                    let e = b.get(index).unwrap_or(&b[0]);
                    return Err(anyhow!(
                        "{}:{}: the server refused this event of topic {name}: {message}; \
                         the events sent before it are in (seeding again skips them)",
                        seed.file,
                        e.line,
                    ));
                }
            }
        }
        rest = tail;
    }
    Ok((topic, appended, duplicates))
}

enum Posted {
    Ok {
        new: u64,
        dup: u64,
    },
    TooLarge,
    /// The server refused the batch, because of the event at `index` if it says which.
    Refused {
        index: Option<usize>,
        message: String,
    },
}

async fn post_batch(server: &Server, topic: &str, batch: &[&SeedEvent]) -> anyhow::Result<Posted> {
    let mut body = Vec::with_capacity(batch.iter().map(|e| e.json.len() + 1).sum::<usize>() + 2);
    body.push(b'[');
    for (i, e) in batch.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(&e.json);
    }
    body.push(b']');
    let r = server
        .request(reqwest::Method::POST, &format!("/v1/topics/{topic}/events"))?
        .header("content-type", "application/cloudevents-batch+json")
        .body(body)
        .send()
        .await
        .with_context(|| format!("connecting to {}", server.server))?;
    let status = r.status();
    if status == reqwest::StatusCode::PAYLOAD_TOO_LARGE {
        return Ok(Posted::TooLarge);
    }
    if status.is_client_error() {
        // A problem whose pointer starts with the event's index (`/12/data`).
        let p: Value = r.json().await.unwrap_or_default();
        let pointer = p["pointer"].as_str().unwrap_or_default();
        let index = pointer
            .trim_start_matches('/')
            .split('/')
            .next()
            .and_then(|i| i.parse().ok());
        let message = format!(
            "{} {}: {}",
            status.as_u16(),
            p["code"].as_str().unwrap_or("error"),
            p["detail"].as_str().unwrap_or_default()
        );
        return Ok(Posted::Refused { index, message });
    }
    if !status.is_success() {
        return Err(problem(r)
            .await
            .context(format!("appending to topic {topic}")));
    }
    let answer: Value = r.json().await.context("reading the server's answer")?;
    let events = answer["events"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let dup = events.iter().filter(|e| e["duplicate"] == true).count() as u64;
    Ok(Posted::Ok {
        new: events.len() as u64 - dup,
        dup,
    })
}
