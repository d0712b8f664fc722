//! The seed file: its format, how it is read and validated, and the events and calls it
//! becomes. Everything here happens before the server is contacted, so a bad file is refused
//! before anything changes.

use serde::Deserialize;
use serde_json::{Map, Value};
use serde_saphyr::Spanned;
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

// ---- the format as serde reads it ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSpec {
    #[serde(default)]
    topics: HashMap<String, Spanned<Option<TopicConfig>>>,
    #[serde(default)]
    events: HashMap<String, Spanned<Vec<Spanned<EventSpec>>>>,
    #[serde(default)]
    calls: Vec<Spanned<CallSpec>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventSpec {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    data: Option<Value>,
    #[serde(default)]
    subject: Option<String>,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    time: Option<String>,
    #[serde(default)]
    extensions: BTreeMap<String, Value>,
}

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

/// Parses and validates the text of a seed file named `file` (with stem `stem`).
pub fn parse(text: &str, file: &str, stem: &str) -> Result<Seed, String> {
    // The path to a bad value (`events.orders.v1[3].type`) names the key in the error.
    let mut path = None;
    let spec: FileSpec = serde_saphyr::with_deserializer_from_str_with_options(
        text,
        yaml_options(text.len()),
        |de| {
            serde_path_to_error::deserialize(de).map_err(|e| {
                path = Some(key_path(e.path()));
                e.into_inner()
            })
        },
    )
    .map_err(|e| yaml_error(&e, file, path.as_deref()))?;
    if spec.topics.is_empty() && spec.events.is_empty() && spec.calls.is_empty() {
        return Err(format!(
            "{file}: nothing to seed: no `topics`, `events` or `calls`"
        ));
    }
    let at = |line: u64| format!("{file}:{line}");

    // Topics in file order; `topics:` and `events:` may each name a topic first.
    let mut topics: Vec<TopicSeed> = Vec::new();
    let mut declared: Vec<_> = spec.topics.into_iter().collect();
    declared.sort_by_key(|(_, v)| v.referenced.line());
    for (name, config) in declared {
        let line = config.referenced.line();
        check_topic_name(&name).map_err(|e| format!("{}: `topics.{name}`: {e}", at(line)))?;
        let config = config.value.unwrap_or_default();
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
    let mut listed: Vec<_> = spec.events.into_iter().collect();
    listed.sort_by_key(|(_, v)| v.referenced.line());
    for (name, events) in listed {
        let line = events.referenced.line();
        check_topic_name(&name).map_err(|e| format!("{}: `events.{name}`: {e}", at(line)))?;
        let built = build_events(&name, events.value, stem, file)?;
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

    let calls = spec
        .calls
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let line = c.referenced.line();
            build_call(c.value, line)
                .map_err(|(key, why)| format!("{}: `calls[{}].{key}`: {why}", at(line), i + 1))
        })
        .collect::<Result<_, _>>()?;
    Ok(Seed {
        file: file.to_string(),
        topics,
        calls,
    })
}

/// Parser limits: the defaults guard against alias bombs and deep nesting, but cap a
/// document at 250,000 nodes; a seed may hold far more events, so the counts scale with
/// the input (a node takes at least one byte).
fn yaml_options(len: usize) -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_events = budget.max_events.max(len.saturating_mul(2));
    budget.max_nodes = budget.max_nodes.max(len);
    budget.max_total_scalar_bytes = budget.max_total_scalar_bytes.max(len);
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options
}

/// `FILE:LINE:COLUMN: message`, then the parser's picture of the spot (its source lines
/// with a caret; its own first line repeats the message, so it is left out).
fn yaml_error(e: &serde_saphyr::Error, file: &str, path: Option<&str>) -> String {
    use serde_saphyr::MessageFormatter as _;
    let formatter = serde_saphyr::UserMessageFormatter;
    let message: String = formatter
        .format_message(e.without_snippet())
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let Some(l) = e.location().filter(|l| l.line() > 0) else {
        return format!("{file}: {message}");
    };
    let picture = e.render_with_options(serde_saphyr::render_options! {
        formatter: &formatter,
        source_name: Some(file),
    });
    let picture: Vec<&str> = picture.lines().skip(1).collect();
    let mut out = format!("{file}:{}:{}: ", l.line(), l.column());
    // A syntax error leaves the path at a key not yet read (`?`): then it names nothing.
    if let Some(p) = path.filter(|p| !p.is_empty() && !p.contains('?')) {
        out.push_str(&format!("`{p}`: "));
    }
    out.push_str(&message);
    if picture.iter().any(|line| line.contains(" --> ")) {
        out.push('\n');
        out.push_str(&picture.join("\n"));
    }
    out
}

/// A serde path as the file's keys: `events.orders.v1[2].type`, items counted from 1.
/// Leaves out the `value` step that [`Spanned`] adds (no key of the format is `value`).
fn key_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    let mut after_item_or_topic = false;
    for (depth, seg) in path.iter().enumerate() {
        match seg {
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !(after_item_or_topic && key == "value") {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(key);
                }
                after_item_or_topic = depth == 1;
            }
            Segment::Seq { index } => {
                out.push_str(&format!("[{}]", index + 1));
                after_item_or_topic = true;
            }
            Segment::Unknown => {
                out.push_str(".?");
                after_item_or_topic = false;
            }
        }
    }
    out
}

fn check_topic_name(name: &str) -> Result<(), String> {
    TopicName::new(name)
        .map(|_| ())
        .map_err(|e| format!("not a topic name: {e}"))
}

fn build_events(
    topic: &str,
    events: Vec<Spanned<EventSpec>>,
    stem: &str,
    file: &str,
) -> Result<Vec<SeedEvent>, String> {
    let mut out = Vec::with_capacity(events.len());
    // Ids already used in this topic, and how often each content hash was seen (identical
    // events get `.1`, `.2`, ... so each still has its own id).
    let mut ids: HashSet<String> = HashSet::with_capacity(events.len());
    let mut seen_hashes: HashMap<u64, u32> = HashMap::new();
    for (n, spanned) in events.into_iter().enumerate() {
        let line = spanned.referenced.line();
        let e = spanned.value;
        let bad = |key: &str, why: String| {
            format!(
                "{file}:{line}: `events.{topic}[{n}].{key}`: {why}",
                n = n + 1
            )
        };
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
                let seen = seen_hashes.entry(hash).or_default();
                let id = match *seen {
                    0 => format!("seed:{stem}:{topic}:{hash:016x}"),
                    k => format!("seed:{stem}:{topic}:{hash:016x}.{k}"),
                };
                *seen += 1;
                id
            }
        };
        if !ids.insert(id.clone()) {
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
        out.push(SeedEvent {
            id,
            line,
            order_key,
            kind: e.kind,
            data: e.data,
            json,
        });
    }
    Ok(out)
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
