//! The seed file: its format, how it is read and validated, and the events and calls it
//! becomes. Everything here happens before the server is contacted, so a bad file is refused
//! before anything changes.

use super::yaml::{self, At, Key, Kind, Node};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use switchyard_types::{TopicConfig, TopicName};

/// A validated seed file.
#[derive(Debug)]
pub struct Seed {
    /// The file as the user named it (for messages).
    pub file: String,
    /// Topics in the order the file first names them.
    pub topics: Vec<TopicSeed>,
    pub calls: Vec<Call>,
}

#[derive(Debug)]
pub struct TopicSeed {
    pub name: String,
    /// Where the file first names the topic.
    pub line: u64,
    /// The settings to create it with when it does not exist (declared under `topics:`).
    pub create: Option<TopicConfig>,
    pub events: Vec<SeedEvent>,
}

/// One event, ready to send.
#[derive(Debug)]
pub struct SeedEvent {
    pub id: String,
    pub line: u64,
    /// What orders it on the server: `key`, else `subject`.
    pub order_key: Option<String>,
    pub kind: String,
    pub data: Option<Value>,
    /// The structured-mode CloudEvent, serialized once.
    pub json: Vec<u8>,
}

#[derive(Debug)]
pub struct Call {
    pub line: u64,
    pub method: reqwest::Method,
    /// `http(s)://...`, or a path (`/v1/...`) on the Switchyard server.
    pub url: String,
    /// The URL as the file wrote it, `${VAR}`s not filled in (for reports).
    pub shown_url: String,
    pub headers: Vec<(reqwest::header::HeaderName, reqwest::header::HeaderValue)>,
    pub body: Option<Value>,
    /// Accepted statuses; empty means any 2xx.
    pub expect: Vec<u16>,
}

impl Call {
    pub fn accepts(&self, status: u16) -> bool {
        if self.expect.is_empty() {
            (200..300).contains(&status)
        } else {
            self.expect.contains(&status)
        }
    }
}

// ---- the format ----

/// An event as the file gives it (read by hand from the YAML nodes: this is the hot path
/// of a large seed).
#[derive(Default)]
struct EventSpec {
    kind: String,
    data: Option<Value>,
    subject: Option<String>,
    key: Option<String>,
    id: Option<String>,
    source: Option<String>,
    time: Option<String>,
    extensions: BTreeMap<String, Value>,
}

const EVENT_KEYS: &str = "`type`, `data`, `subject`, `key`, `id`, `source`, `time`, `extensions`";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CallSpec {
    #[serde(default)]
    method: Option<String>,
    url: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    body: Option<Value>,
    #[serde(default)]
    expect: Option<Value>,
}

/// Attributes that have their own key in an event; `extensions` may not set them.
const OWN_KEYS: [&str; 9] = [
    "specversion",
    "id",
    "source",
    "type",
    "subject",
    "time",
    "data",
    "data_base64",
    "partitionkey",
];

/// Reads and validates `path`. Errors name the file, the line and the key.
pub fn load(path: &Path) -> anyhow::Result<Seed> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("reading the seed file {file}: {e}"))?;
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "seed".into());
    parse(&text, &file, &stem).map_err(anyhow::Error::msg)
}

/// A problem at a place in the file: where, the key path, and what.
struct Located {
    at: At,
    path: String,
    message: String,
}

fn located(at: At, path: impl Into<String>, message: impl Into<String>) -> Located {
    Located {
        at,
        path: path.into(),
        message: message.into(),
    }
}

/// Parses and validates the text of a seed file named `file` (with stem `stem`).
pub fn parse(text: &str, file: &str, stem: &str) -> Result<Seed, String> {
    let (root, built) = load_and_build(text, file, stem)?;
    let (declared, listed, calls) = read_top(root, built).map_err(|l| render(text, file, l))?;
    if declared.is_empty() && listed.is_empty() && calls.is_empty() {
        return Err(format!(
            "{file}: nothing to seed: no `topics`, `events` or `calls`"
        ));
    }
    let at = |line: u64| format!("{file}:{line}");

    // Topics in file order; `topics:` and `events:` may each name a topic first.
    let mut topics: Vec<TopicSeed> = Vec::new();
    for (name, line, config) in declared {
        check_topic_name(file, line, "topics", &name)?;
        let config = config.unwrap_or_default();
        config
            .validate()
            .map_err(|e| format!("{}: `topics.{name}.{}`: {}", at(line), e.field, e.reason))?;
        topics.push(TopicSeed {
            name,
            line,
            create: Some(config),
            events: Vec::new(),
        });
    }
    for (name, line, built) in listed {
        check_topic_name(file, line, "events", &name)?;
        match topics.iter_mut().find(|t| t.name == name) {
            Some(t) => t.events = built,
            None => topics.push(TopicSeed {
                name,
                line,
                create: None,
                events: built,
            }),
        }
    }
    topics.sort_by_key(|t| t.line);

    let calls = calls
        .into_iter()
        .enumerate()
        .map(|(i, (line, c))| {
            build_call(c, line)
                .map_err(|(key, why)| format!("{}: `calls[{}].{key}`: {why}", at(line), i + 1))
        })
        .collect::<Result<_, _>>()?;
    Ok(Seed {
        file: file.to_string(),
        topics,
        calls,
    })
}

type Declared = Vec<(String, u64, Option<TopicConfig>)>;
type Listed = Vec<(String, u64, Vec<SeedEvent>)>;
type Calls = Vec<(u64, CallSpec)>;

/// Items handed from the parse to the thread that builds the events, at most this many at
/// a time (one hand-off per chunk, not per event).
const CHUNK: usize = 256;

/// What the parse hands to the builder, in file order.
enum Streamed {
    /// The events that follow belong to this list of `events:`.
    Topic(Key),
    Items(Vec<Node>),
}

/// Parses the file and builds its events at once: the parse streams each item of
/// `events:` to a second thread, which reads it and builds its event while the parse goes
/// on (a large seed's two halves of the work overlap, and no tree of its events is kept).
/// Returns the rest of the tree (the lists of `events:` left empty) and the topics built.
fn load_and_build(text: &str, file: &str, stem: &str) -> Result<(Node, Vec<TopicEvents>), String> {
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Streamed>(16);
        let builder = scope.spawn(move || build_streamed(rx, text, file, stem));
        let mut list: Option<Key> = None;
        let mut chunk: Vec<Node> = Vec::with_capacity(CHUNK);
        let loaded = yaml::load_streaming(text, Some("events"), |key: &Key, item: Node| {
            // A new list (keys are told apart by where they stand).
            if list.as_ref().is_none_or(|l| l.at != key.at) {
                if !chunk.is_empty() {
                    tx.send(Streamed::Items(std::mem::take(&mut chunk)))
                        .map_err(drop)?;
                }
                list = Some(key.clone());
                tx.send(Streamed::Topic(key.clone())).map_err(drop)?;
            }
            chunk.push(item);
            if chunk.len() == CHUNK {
                let full = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK));
                tx.send(Streamed::Items(full)).map_err(drop)?;
            }
            Ok(())
        });
        if !chunk.is_empty() {
            // Sent even after a YAML error, so a bad event before it is the one reported. A
            // failed send means the builder stopped on an error, which it returns.
            let _ = tx.send(Streamed::Items(chunk));
        }
        drop(tx);
        // The builder only ever saw items the parse had finished, so its error (if any) is
        // the earlier one in the file.
        let built = builder
            .join()
            .map_err(|_| format!("{file}: building the events failed (an internal error)"))??;
        match loaded {
            Ok(root) => Ok((root, built)),
            Err(yaml::Stopped::Yaml(e)) => Err(render(text, file, located(e.at, "", e.message))),
            Err(yaml::Stopped::Item(())) => Err(format!(
                "{file}: building the events stopped early (an internal error)"
            )),
        }
    })
}

/// The builder's side of [`load_and_build`]: reads and builds every item it is handed;
/// stops at the first bad one (dropping `rx`, which stops the parse too).
fn build_streamed(
    rx: std::sync::mpsc::Receiver<Streamed>,
    text: &str,
    file: &str,
    stem: &str,
) -> Result<Vec<TopicEvents>, String> {
    let mut topics: Vec<TopicEvents> = Vec::new();
    for streamed in rx {
        match streamed {
            Streamed::Topic(key) => {
                // Named before the topic's events are built, as it comes first in the file.
                check_topic_name(file, key.at.line, "events", &key.text)?;
                topics.push(TopicEvents::new(key.text));
            }
            Streamed::Items(items) => {
                let Some(topic) = topics.last_mut() else {
                    return Err(format!(
                        "{file}: events before their topic (an internal error)"
                    ));
                };
                for item in items {
                    let line = item.at.line;
                    let spec = read_event(item, &topic.name, topic.events.len() + 1)
                        .map_err(|l| render(text, file, l))?;
                    topic.add(line, spec, stem, file)?;
                }
            }
        }
    }
    Ok(topics)
}

/// The three sections of the file, each in file order.
/// The events of `events:` come built (`built`, streamed while parsing): their lists in
/// the tree are empty.
fn read_top(root: Node, mut built: Vec<TopicEvents>) -> Result<(Declared, Listed, Calls), Located> {
    let mut declared = Vec::new();
    let mut listed = Vec::new();
    let mut calls = Vec::new();
    if root.is_null() {
        return Ok((declared, listed, calls));
    }
    for (key, value) in into_entries(root, "")? {
        match key.text.as_str() {
            "topics" => {
                for (name, config) in into_entries_or_null(value, "topics")? {
                    let path = format!("topics.{}", name.text);
                    let config = if config.is_null() {
                        None
                    } else {
                        Some(from_node::<TopicConfig>(&config, &path)?)
                    };
                    declared.push((name.text, name.at.line, config));
                }
            }
            "events" => {
                for (name, list) in into_entries_or_null(value, "events")? {
                    if !matches!(list.kind, Kind::Seq(_)) && !list.is_null() {
                        return Err(located(
                            list.at,
                            format!("events.{}", name.text),
                            format!("expected a list of events, found {}", list.describe()),
                        ));
                    }
                    // Keys are unique in a mapping: a name is built at most once.
                    let events = built
                        .iter()
                        .position(|t| t.name == name.text)
                        .map(|i| built.swap_remove(i).events)
                        .unwrap_or_default();
                    listed.push((name.text, name.at.line, events));
                }
            }
            "calls" => match &value.kind {
                Kind::Seq(items) => {
                    for (i, c) in items.iter().enumerate() {
                        let path = format!("calls[{}]", i + 1);
                        calls.push((c.at.line, from_node::<CallSpec>(c, &path)?));
                    }
                }
                _ if value.is_null() => {}
                _ => {
                    return Err(located(
                        value.at,
                        "calls",
                        format!("expected a list of calls, found {}", value.describe()),
                    ));
                }
            },
            other => {
                return Err(located(
                    key.at,
                    other,
                    format!("unknown field `{other}`, expected one of `topics`, `events`, `calls`"),
                ));
            }
        }
    }
    declared.sort_by_key(|(_, line, _)| *line);
    listed.sort_by_key(|(_, line, _)| *line);
    Ok((declared, listed, calls))
}

/// The entries of a mapping node, or an error naming what it is instead.
fn into_entries(node: Node, path: &str) -> Result<Vec<(Key, Node)>, Located> {
    let found = node.describe();
    match node.kind {
        Kind::Map(entries) => Ok(entries),
        _ => Err(located(
            node.at,
            path,
            format!("expected a mapping, found {found}"),
        )),
    }
}

/// As [`into_entries`], with an empty section (`topics:` alone) as no entries.
fn into_entries_or_null(node: Node, path: &str) -> Result<Vec<(Key, Node)>, Located> {
    if node.is_null() {
        return Ok(Vec::new());
    }
    into_entries(node, path)
}

/// One event (the `n`th of `topic`'s list), read field by field; its key path is only
/// written out for an error (this runs once per event of a large seed).
fn read_event(node: Node, topic: &str, n: usize) -> Result<EventSpec, Located> {
    let path = || format!("events.{topic}[{n}]");
    let at = node.at;
    let found = node.describe();
    let Kind::Map(entries) = node.kind else {
        return Err(located(
            at,
            path(),
            format!("expected a mapping, found {found}"),
        ));
    };
    let mut e = EventSpec::default();
    let mut has_type = false;
    for (key, value) in entries {
        let here = || format!("{}.{}", path(), key.text);
        let text = |value: Node| text_of(value).map_err(|(at, m)| located(at, here(), m));
        match key.text.as_str() {
            "type" => {
                has_type = !value.is_null();
                e.kind = text(value)?.unwrap_or_default();
            }
            "data" => e.data = (!value.is_null()).then(|| value.into_json()),
            "subject" => e.subject = text(value)?,
            "key" => e.key = text(value)?,
            "id" => e.id = text(value)?,
            "source" => e.source = text(value)?,
            "time" => e.time = text(value)?,
            "extensions" => {
                for (name, v) in into_entries_or_null(value, &here())? {
                    e.extensions.insert(name.text, v.into_json());
                }
            }
            other => {
                return Err(located(
                    key.at,
                    here(),
                    format!("unknown field `{other}`, expected one of {EVENT_KEYS}"),
                ));
            }
        }
    }
    if !has_type {
        return Err(located(at, path(), "missing field `type`"));
    }
    Ok(e)
}

/// A string field: any scalar, as written (`id: 123` is "123"); null is absent. An error
/// says where and what.
fn text_of(node: Node) -> Result<Option<String>, (At, String)> {
    match &node.kind {
        Kind::Scalar {
            value: Value::Null, ..
        } => Ok(None),
        Kind::Scalar { .. } => Ok(node.into_text()),
        _ => Err((
            node.at,
            format!("invalid type: {}, expected a string", node.describe()),
        )),
    }
}

/// A typed section read through serde from the node's JSON form; an error points at the
/// node its path leads to (at the key, for an unknown one).
fn from_node<T: serde::de::DeserializeOwned>(node: &Node, path: &str) -> Result<T, Located> {
    serde_path_to_error::deserialize(node.to_json()).map_err(|e| {
        let steps: Vec<String> = e
            .path()
            .iter()
            .filter_map(|s| match s {
                serde_path_to_error::Segment::Map { key } => Some(key.clone()),
                serde_path_to_error::Segment::Seq { index } => Some(index.to_string()),
                _ => None,
            })
            .collect();
        let message = e.into_inner().to_string();
        let at = find(node, &steps, message.starts_with("unknown field"));
        let full = steps.iter().fold(path.to_string(), |mut p, s| {
            p.push('.');
            p.push_str(s);
            p
        });
        located(at, full, message)
    })
}

/// Where the node at `steps` below `node` starts (its key's place when `at_key`); as far
/// as the path leads.
fn find(node: &Node, steps: &[String], at_key: bool) -> At {
    let mut here = node;
    for (i, step) in steps.iter().enumerate() {
        let last = i + 1 == steps.len();
        match &here.kind {
            Kind::Map(entries) => match entries.iter().find(|(k, _)| &k.text == step) {
                Some((k, _)) if last && at_key => return k.at,
                Some((_, v)) => here = v,
                None => return here.at,
            },
            Kind::Seq(items) => match step.parse::<usize>().ok().and_then(|i| items.get(i)) {
                Some(v) => here = v,
                None => return here.at,
            },
            Kind::Scalar { .. } => return here.at,
        }
    }
    here.at
}

/// `FILE:LINE:COLUMN: `path`: message`, then the line itself with a caret under the column.
fn render(text: &str, file: &str, l: Located) -> String {
    let message: String = l
        .message
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if l.at.line == 0 {
        return format!("{file}: {message}");
    }
    let mut out = format!("{file}:{}:{}: ", l.at.line, l.at.col);
    if !l.path.is_empty() {
        out.push_str(&format!("`{}`: ", l.path));
    }
    out.push_str(&message);
    let line = usize::try_from(l.at.line - 1)
        .ok()
        .and_then(|n| text.lines().nth(n));
    if let Some(source) = line {
        // Long lines (a one-line JSON-ish event) are cut around the spot.
        let col = usize::try_from(l.at.col.saturating_sub(1)).unwrap_or(0);
        let chars: Vec<char> = source.chars().collect();
        let start = col.saturating_sub(60).min(chars.len());
        let end = (col + 60).min(chars.len());
        let shown: String = chars[start..end]
            .iter()
            .map(|&c| if c.is_control() { ' ' } else { c })
            .collect();
        let gutter = l.at.line.to_string();
        out.push_str(&format!(
            "\n {gutter} | {shown}\n {} | {}^",
            " ".repeat(gutter.len()),
            " ".repeat(col - start)
        ));
    }
    out
}

/// A topic named at `line` under `section` (`topics` or `events`) must be a valid name.
fn check_topic_name(file: &str, line: u64, section: &str, name: &str) -> Result<(), String> {
    TopicName::new(name)
        .map(|_| ())
        .map_err(|e| format!("{file}:{line}: `{section}.{name}`: not a topic name: {e}"))
}

/// One topic's events, built as they are read: each serialized once and checked by the
/// server's own rules, its id derived (or taken) and checked against the earlier ones.
struct TopicEvents {
    name: String,
    events: Vec<SeedEvent>,
    /// Ids already used in this topic.
    ids: HashSet<String>,
    /// How often each content hash was seen (identical events get `.1`, `.2`, ... so each
    /// still has its own id).
    seen_hashes: HashMap<u64, u32>,
}

impl TopicEvents {
    fn new(name: String) -> Self {
        TopicEvents {
            name,
            events: Vec::new(),
            ids: HashSet::new(),
            seen_hashes: HashMap::new(),
        }
    }

    /// Builds the next event, read from `line`.
    fn add(&mut self, line: u64, e: EventSpec, stem: &str, file: &str) -> Result<(), String> {
        let topic = self.name.as_str();
        let n = self.events.len() + 1;
        let bad =
            |key: &str, why: String| format!("{file}:{line}: `events.{topic}[{n}].{key}`: {why}");
        let order_key = e.key.clone().or_else(|| e.subject.clone());
        let mut map = Map::new();
        map.insert("specversion".into(), "1.0".into());
        map.insert(
            "source".into(),
            e.source.unwrap_or_else(|| format!("/seed/{stem}")).into(),
        );
        map.insert("type".into(), e.kind.clone().into());
        if let Some(s) = e.subject {
            map.insert("subject".into(), s.into());
        }
        if let Some(k) = e.key {
            map.insert("partitionkey".into(), k.into());
        }
        if let Some(t) = e.time {
            map.insert("time".into(), t.into());
        }
        for (name, value) in e.extensions {
            if OWN_KEYS.contains(&name.as_str()) {
                let own = if name == "partitionkey" { "key" } else { &name };
                return Err(bad(
                    &format!("extensions.{name}"),
                    format!("set it with the event's own `{own}` key"),
                ));
            }
            map.insert(name, value);
        }
        if let Some(d) = &e.data {
            map.insert("data".into(), d.clone());
        }
        // Serialized once without the id (what a derived id hashes); the id goes in front.
        let content = serde_json::to_vec(&map).map_err(|e| bad("data", e.to_string()))?;
        let id = match e.id {
            Some(id) => id,
            None => {
                // A hash of the event's content: seeding the same file again names the same
                // events, and an event added later does not shift the ids of the others.
                let hash = xxhash_rust::xxh3::xxh3_64(&content);
                let seen = self.seen_hashes.entry(hash).or_default();
                let id = match *seen {
                    0 => format!("seed:{stem}:{topic}:{hash:016x}"),
                    k => format!("seed:{stem}:{topic}:{hash:016x}.{k}"),
                };
                *seen += 1;
                id
            }
        };
        if !self.ids.insert(id.clone()) {
            return Err(bad(
                "id",
                format!("`{id}` is already the id of an earlier event of this topic"),
            ));
        }
        let mut json = Vec::with_capacity(content.len() + id.len() + 8);
        json.extend_from_slice(b"{\"id\":");
        serde_json::to_writer(&mut json, &id).map_err(|e| bad("id", e.to_string()))?;
        json.push(b',');
        json.extend_from_slice(content.get(1..).unwrap_or_default());
        // The server's own rules for a CloudEvent, so the server refuses nothing later.
        if let Err(p) = switchyard_server::cloudevents::parse_structured(&json) {
            let attr = p
                .pointer
                .as_deref()
                .unwrap_or("")
                .trim_start_matches('/')
                .to_string();
            let key = match attr.as_str() {
                "partitionkey" => "key".to_string(),
                a if OWN_KEYS.contains(&a) => a.to_string(),
                a => format!("extensions.{a}"),
            };
            return Err(bad(&key, p.detail));
        }
        self.events.push(SeedEvent {
            id,
            line,
            order_key,
            kind: e.kind,
            data: e.data,
            json,
        });
        Ok(())
    }
}

/// A call, or the key that is wrong and why.
fn build_call(c: CallSpec, line: u64) -> Result<Call, (String, String)> {
    let bad = |key: &str, why: String| (key.to_string(), why);
    let method = c.method.as_deref().unwrap_or("POST");
    let method = reqwest::Method::from_bytes(method.to_ascii_uppercase().as_bytes())
        .map_err(|_| bad("method", format!("{method:?} is not an HTTP method")))?;
    let url = expand_env(&c.url).map_err(|e| bad("url", e))?;
    if !(url.starts_with("http://") || url.starts_with("https://") || url.starts_with('/')) {
        return Err(bad(
            "url",
            format!(
                "{url:?} must start with http://, https:// or / (a path on the Switchyard server)"
            ),
        ));
    }
    let mut headers = Vec::new();
    for (name, value) in c.headers {
        let key = format!("headers.{name}");
        let value = expand_env(&value).map_err(|e| bad(&key, e))?;
        let n = reqwest::header::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| bad(&key, "not a valid header name".into()))?;
        let v = reqwest::header::HeaderValue::from_str(&value)
            .map_err(|_| bad(&key, "not a valid header value".into()))?;
        headers.push((n, v));
    }
    let body = match c.body {
        Some(b) => Some(expand_env_in(b).map_err(|e| bad("body", e))?),
        None => None,
    };
    let status = |v: &Value| {
        v.as_u64()
            .and_then(|n| u16::try_from(n).ok())
            .filter(|n| (100..=599).contains(n))
    };
    let bad_expect = || {
        bad(
            "expect",
            "expected a status (100 to 599) or a list of them".into(),
        )
    };
    let expect = match &c.expect {
        None => Vec::new(),
        Some(Value::Array(list)) if !list.is_empty() => list
            .iter()
            .map(|v| status(v).ok_or_else(bad_expect))
            .collect::<Result<_, _>>()?,
        Some(v) => vec![status(v).ok_or_else(bad_expect)?],
    };
    Ok(Call {
        line,
        method,
        url,
        shown_url: c.url,
        headers,
        body,
        expect,
    })
}

/// `${NAME}` becomes the environment variable NAME (an error if it is not set); `$${`
/// stays a literal `${`.
fn expand_env(s: &str) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        if let Some(r) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = r;
        } else if let Some(r) = after.strip_prefix("${") {
            let end = r
                .find('}')
                .ok_or_else(|| format!("`${{` without a closing `}}` in {s:?}"))?;
            let name = &r[..end];
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(format!("`${{{name}}}` is not a variable name"));
            }
            let value = std::env::var(name)
                .map_err(|_| format!("the environment variable {name} is not set"))?;
            out.push_str(&value);
            rest = &r[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// [`expand_env`] in every string of a JSON value.
fn expand_env_in(v: Value) -> Result<Value, String> {
    Ok(match v {
        Value::String(s) => Value::String(expand_env(&s)?),
        Value::Array(a) => {
            Value::Array(a.into_iter().map(expand_env_in).collect::<Result<_, _>>()?)
        }
        Value::Object(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| Ok((k, expand_env_in(v)?)))
                .collect::<Result<_, String>>()?,
        ),
        other => other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        parse(text, "s.yaml", "s").expect_err("should be refused")
    }

    #[test]
    fn a_complete_file_becomes_events_and_calls() {
        let text = "\
topics:
  orders.v1:
    partitions: 3
events:
  orders.v1:
    - type: order.placed
      key: order-1
      data: {total: 42, items: [a, b]}
    - type: order.paid
      subject: order-1
      id: paid-1
      time: 2026-01-01T10:00:00Z
      extensions: {tenant: acme, urgent: true, priority: 3}
  mail.v1:
    - type: mail.queued
calls:
  - method: put
    url: http://localhost:1/users/u-1
    headers: {x-test: yes}
    body: {name: Ada}
    expect: [200, 201]
";
        let seed = parse(text, "s.yaml", "shop").expect("valid");
        assert_eq!(seed.topics.len(), 2);
        let orders = &seed.topics[0];
        assert_eq!(orders.name, "orders.v1");
        assert_eq!(orders.create.map(|c| c.partitions), Some(3));
        assert_eq!(orders.events.len(), 2);
        let first: Value = serde_json::from_slice(&orders.events[0].json).expect("json");
        assert_eq!(first["partitionkey"], "order-1");
        assert_eq!(first["source"], "/seed/shop");
        assert_eq!(first["data"]["items"][1], "b");
        assert!(orders.events[0].id.starts_with("seed:shop:orders.v1:"));
        assert_eq!(orders.events[0].line, 6);
        assert_eq!(orders.events[0].order_key.as_deref(), Some("order-1"));
        let second: Value = serde_json::from_slice(&orders.events[1].json).expect("json");
        assert_eq!(second["id"], "paid-1");
        assert_eq!(second["tenant"], "acme");
        assert_eq!(second["urgent"], true);
        assert_eq!(second["priority"], 3);
        assert_eq!(orders.events[1].order_key.as_deref(), Some("order-1"));
        assert!(seed.topics[1].create.is_none());
        assert_eq!(seed.calls[0].method, reqwest::Method::PUT);
        assert!(seed.calls[0].accepts(201) && !seed.calls[0].accepts(204));
    }

    #[test]
    fn derived_ids_are_stable_and_distinct() {
        let text = "events:\n  t.v1:\n    - {type: a, data: 1}\n    - {type: a, data: 1}\n    - {type: a, data: 2}\n";
        let a = parse(text, "s.yaml", "s").expect("valid");
        let b = parse(text, "s.yaml", "s").expect("valid");
        let ids = |s: &Seed| {
            s.topics[0]
                .events
                .iter()
                .map(|e| e.id.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(&a), ids(&b));
        let ids = ids(&a);
        assert_eq!(ids[1], format!("{}.1", ids[0]));
        assert_ne!(ids[0], ids[2]);
        // An event inserted before the others leaves their ids alone.
        let text2 = "events:\n  t.v1:\n    - {type: new}\n    - {type: a, data: 1}\n    - {type: a, data: 1}\n    - {type: a, data: 2}\n";
        let c = parse(text2, "s.yaml", "s").expect("valid");
        let later: Vec<_> = c.topics[0].events[1..]
            .iter()
            .map(|e| e.id.clone())
            .collect();
        assert_eq!(later, ids);
    }

    #[test]
    fn bad_files_name_the_line_and_the_key() {
        let e = err("events:\n  t.v1:\n    - type: a\n      tpye: b\n");
        assert!(
            e.starts_with("s.yaml:4:7: `events.t.v1[1].tpye`: unknown field"),
            "{e}"
        );
        let e = err("events:\n  t.v1:\n    - data: 1\n");
        assert!(
            e.starts_with("s.yaml:3:7: `events.t.v1[1]`: missing field `type`"),
            "{e}"
        );
        let e = err("events:\n  t.v1:\n    - type: a\n    - type: [1]\n");
        assert!(e.starts_with("s.yaml:4:13: `events.t.v1[2].type`"), "{e}");
        let e = err("events:\n  t.v1:\n    - type: a\n   bad: [\n");
        assert!(e.starts_with("s.yaml:"), "{e}");
        let e = err("events:\n  t.v1:\n    - type: a\n      time: yesterday\n");
        assert!(e.starts_with("s.yaml:3: `events.t.v1[1].time`"), "{e}");
        let e = err("events:\n  t.v1:\n    - type: a\n      extensions: {Bad: 1}\n");
        assert!(e.contains("`events.t.v1[1].extensions.Bad`"), "{e}");
        let e = err("events:\n  t.v1:\n    - type: a\n      extensions: {subject: x}\n");
        assert!(e.contains("`events.t.v1[1].extensions.subject`"), "{e}");
        let e = err("events:\n  t.v1:\n    - {type: a, id: x}\n    - {type: b, id: x}\n");
        assert!(e.starts_with("s.yaml:4: `events.t.v1[2].id`"), "{e}");
        let e = err("events:\n  'bad name': [{type: a}]\n");
        assert!(e.starts_with("s.yaml:2: `events.bad name`"), "{e}");
        let e = err("topics:\n  t.v1: {partitions: 0}\n");
        assert!(e.starts_with("s.yaml:2: `topics.t.v1.partitions`"), "{e}");
        let e = err("topics:\n  t.v1: {partitons: 2}\n");
        assert!(e.starts_with("s.yaml:2:10: `topics.t.v1.partitons`"), "{e}");
        let e = err("calls:\n  - {url: localhost/x}\n");
        assert!(e.starts_with("s.yaml:2: `calls[1].url`"), "{e}");
        let e = err("calls:\n  - {url: /x, expect: 999}\n");
        assert!(e.contains("`calls[1].expect`"), "{e}");
        let e = err("calls:\n  - {url: '/x/${SEED_TEST_SURELY_UNSET}'}\n");
        assert!(e.contains("SEED_TEST_SURELY_UNSET is not set"), "{e}");
        let e = err("evnets: {}\n");
        assert!(e.starts_with("s.yaml:1:") && e.contains("evnets"), "{e}");
    }

    #[test]
    fn many_events_over_several_topics_keep_their_topic_order_and_lines() {
        // More events than one hand-off to the builder holds, in two topics.
        let mut text = String::from("events:\n  a.v1:\n");
        for i in 0..CHUNK + 44 {
            text.push_str(&format!("    - {{type: t, id: a{i}}}\n"));
        }
        text.push_str("  b.v1:\n");
        for i in 0..CHUNK * 2 {
            text.push_str(&format!("    - {{type: t, id: b{i}}}\n"));
        }
        text.push_str("calls: []\n");
        let seed = parse(&text, "s.yaml", "s").expect("valid");
        let names: Vec<_> = seed.topics.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["a.v1", "b.v1"]);
        let a = &seed.topics[0].events;
        let b = &seed.topics[1].events;
        assert_eq!((a.len(), b.len()), (CHUNK + 44, CHUNK * 2));
        assert!(a.iter().enumerate().all(|(i, e)| e.id == format!("a{i}")));
        assert!(b.iter().enumerate().all(|(i, e)| e.id == format!("b{i}")));
        assert_eq!(a[0].line, 3);
        assert_eq!(b[0].line, 3 + CHUNK as u64 + 44 + 1);
        // A bad event past the first hand-off is named by its place in its own list.
        let mut bad = text.clone();
        bad = bad.replacen("id: b300}", "id: b300, tpye: x}", 1);
        let e = err(&bad);
        assert!(e.contains("`events.b.v1[301].tpye`: unknown field"), "{e}");
        // A bad event before a YAML error further on is the one reported (file order).
        let e = err(&format!("{bad}  - [unclosed\n"));
        assert!(e.contains("`events.b.v1[301].tpye`"), "{e}");
        // A YAML error before any bad event is the YAML's.
        let e = err("events:\n  t.v1:\n    - {type: a}\n    - {type: b\n");
        assert!(e.starts_with("s.yaml:"), "{e}");
        assert!(!e.contains("`events.t.v1"), "{e}");
    }

    #[test]
    fn env_expansion() {
        // PATH is set wherever tests run.
        let path = std::env::var("PATH").unwrap_or_default();
        assert_eq!(
            expand_env("a${PATH}b").as_deref(),
            Ok(format!("a{path}b").as_str())
        );
        assert_eq!(expand_env("$${PATH} $x $").as_deref(), Ok("${PATH} $x $"));
        assert!(expand_env("${PATH").is_err());
        assert!(expand_env("${A-B}").is_err());
    }
}
