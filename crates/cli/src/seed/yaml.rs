//! YAML for seed files: a small loader over `granit-parser`'s events (the parser under
//! serde-saphyr, with its precise syntax errors) that resolves scalars
//! by the YAML 1.2 core schema and keeps where every node starts, so an error names the
//! line, the column and the key. A seed of 100,000 events is a 7 MB file: this reads it in a
//! third of the CPU time a serde layer over the same parser took.
//!
//! Hostile input: the node count (aliases included: each use counts its nodes again) is
//! bounded by the input's length, nesting by [`MAX_DEPTH`], only one document is read, and a
//! panic inside the parser becomes an error.

use granit_parser::{Event, Parser, ScalarStyle, Tag};
use serde_json::{Map, Number, Value};
use std::collections::HashMap;

/// Nesting deeper than this is refused (no seed needs it; it bounds recursion later).
pub const MAX_DEPTH: usize = 128;

/// Where a node starts: 1-based line and column.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct At {
    pub line: u64,
    pub col: u64,
}

#[derive(Clone, Debug)]
pub struct Node {
    pub at: At,
    pub kind: Kind,
}

#[derive(Clone, Debug)]
pub enum Kind {
    /// A resolved scalar; `raw` is its text as written when it did not resolve to a string
    /// (a key or a string field uses the text: `id: 123` is the id "123").
    Scalar {
        value: Value,
        raw: Option<Box<str>>,
    },
    Seq(Vec<Node>),
    /// Keys are scalars, kept in file order; a key appears once.
    Map(Vec<(Key, Node)>),
}

#[derive(Clone, Debug)]
pub struct Key {
    pub at: At,
    pub text: String,
}

#[derive(Debug, PartialEq, Eq)]
pub struct YamlError {
    pub at: At,
    pub message: String,
}

fn err(at: At, message: impl Into<String>) -> YamlError {
    YamlError {
        at,
        message: message.into(),
    }
}

impl Node {
    /// A scalar's text as written; None for a collection.
    pub fn text(&self) -> Option<&str> {
        match &self.kind {
            Kind::Scalar {
                value: Value::String(s),
                ..
            } => Some(s),
            Kind::Scalar { raw, .. } => Some(raw.as_deref().unwrap_or_default()),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(
            &self.kind,
            Kind::Scalar {
                value: Value::Null,
                ..
            }
        )
    }

    /// What the node is, for "expected ..." messages.
    pub fn describe(&self) -> &'static str {
        match &self.kind {
            Kind::Scalar { value, .. } => match value {
                Value::Null => "null",
                Value::Bool(_) => "a boolean",
                Value::Number(_) => "a number",
                Value::String(_) => "a string",
                _ => "a value",
            },
            Kind::Seq(_) => "a sequence",
            Kind::Map(_) => "a mapping",
        }
    }

    /// [`to_json`](Self::to_json), consuming the node (nothing is copied).
    pub fn into_json(self) -> Value {
        match self.kind {
            Kind::Scalar { value, .. } => value,
            Kind::Seq(items) => Value::Array(items.into_iter().map(Node::into_json).collect()),
            Kind::Map(entries) => Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k.text, v.into_json()))
                    .collect::<Map<String, Value>>(),
            ),
        }
    }

    /// [`text`](Self::text), consuming the node.
    pub fn into_text(self) -> Option<String> {
        match self.kind {
            Kind::Scalar {
                value: Value::String(s),
                ..
            } => Some(s),
            Kind::Scalar { raw, .. } => Some(raw.map(String::from).unwrap_or_default()),
            _ => None,
        }
    }

    /// The node as JSON: mappings become objects (keys by their text), sequences arrays.
    pub fn to_json(&self) -> Value {
        match &self.kind {
            Kind::Scalar { value, .. } => value.clone(),
            Kind::Seq(items) => Value::Array(items.iter().map(Node::to_json).collect()),
            Kind::Map(entries) => Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.text.clone(), v.to_json()))
                    .collect::<Map<String, Value>>(),
            ),
        }
    }
}

/// Reads `text` as one YAML document; an empty file is a null node.
#[cfg(test)]
pub fn load(text: &str) -> Result<Node, YamlError> {
    load_streaming(text, None, |_, _| Ok::<(), ()>(())).map_err(|e| match e {
        Stopped::Yaml(e) => e,
        Stopped::Item(()) => unreachable!("nothing is streamed"),
    })
}

/// Why [`load_streaming`] stopped.
#[derive(Debug)]
pub enum Stopped<E> {
    Yaml(YamlError),
    /// The item callback refused an item.
    Item(E),
}

impl<E> From<YamlError> for Stopped<E> {
    fn from(e: YamlError) -> Self {
        Stopped::Yaml(e)
    }
}

/// Reads `text` as one YAML document, as [`load`], except that each item of a list two
/// mappings below the root's key `section` (`events: {topic: [item, ...]}`) goes to
/// `on_item`, with its list's key, as soon as it is read, instead of into the tree (the
/// list stays empty there): a large seed is never held whole as nodes, and its items are
/// handled while the rest is still being parsed.
pub fn load_streaming<E>(
    text: &str,
    section: Option<&str>,
    mut on_item: impl FnMut(&Key, Node) -> Result<(), E>,
) -> Result<Node, Stopped<E>> {
    // The parser is not ours: a panic in it must not take the command down.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        Loader::new(text).run(section, &mut on_item)
    }))
    .unwrap_or_else(|_| {
        Err(Stopped::Yaml(err(
            At::default(),
            "the YAML parser failed on this file (it is likely malformed)",
        )))
    })
}

/// The key of the list whose item is being finished, when that list is streamed: the open
/// collections are the root mapping (at `section`), a mapping (at the key returned) and
/// the list.
fn streamed_list<'s>(stack: &'s [Open], section: Option<&str>) -> Option<&'s Key> {
    let section = section?;
    match stack {
        [
            Open::Map { key: Some(top), .. },
            Open::Map {
                key: Some(list), ..
            },
            Open::Seq { .. },
        ] if top.text == section => Some(list),
        _ => None,
    }
}

/// A collection being built.
enum Open {
    Seq {
        at: At,
        anchor: usize,
        items: Vec<Node>,
    },
    Map {
        at: At,
        anchor: usize,
        entries: Vec<(Key, Node)>,
        key: Option<Key>,
    },
}

struct Loader<'a> {
    text: &'a str,
    anchors: HashMap<usize, Node>,
    /// Nodes left in the budget.
    budget: usize,
}

impl<'a> Loader<'a> {
    fn new(text: &'a str) -> Self {
        Loader {
            text,
            anchors: HashMap::new(),
            budget: text.len().saturating_add(1024),
        }
    }

    fn spend(&mut self, n: usize, at: At) -> Result<(), YamlError> {
        self.budget = self.budget.checked_sub(n).ok_or_else(|| {
            err(
                at,
                "too many nodes for the file's size (aliases expanding too far?)",
            )
        })?;
        Ok(())
    }

    fn run<E>(
        mut self,
        section: Option<&str>,
        on_item: &mut impl FnMut(&Key, Node) -> Result<(), E>,
    ) -> Result<Node, Stopped<E>> {
        let mut stack: Vec<Open> = Vec::new();
        let mut root: Option<Node> = None;
        let mut documents = 0;
        for event in Parser::new_from_str(self.text) {
            let (event, span) = event.map_err(|e| {
                let m = e.marker();
                err(
                    At {
                        line: m.line() as u64,
                        col: m.col() as u64 + 1,
                    },
                    e.info(),
                )
            })?;
            let at = At {
                line: span.start.line() as u64,
                col: span.start.col() as u64 + 1,
            };
            let done = match event {
                // `Anchor` repeats, as metadata, the anchor of the node just read.
                Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Anchor(..) => {
                    continue;
                }
                Event::UnresolvedAlias(name) => {
                    return Err(err(at, format!("an alias to an unknown anchor `{name}`")).into());
                }
                Event::DocumentStart(..) => {
                    documents += 1;
                    if documents > 1 {
                        return Err(
                            err(at, "a seed file holds one YAML document, not several").into()
                        );
                    }
                    continue;
                }
                Event::SequenceStart(_, anchor, tag) => {
                    check_collection_tag(tag.as_deref(), "seq", at)?;
                    self.open(&mut stack, at)?;
                    stack.push(Open::Seq {
                        at,
                        anchor,
                        items: Vec::new(),
                    });
                    continue;
                }
                Event::MappingStart(_, anchor, tag) => {
                    check_collection_tag(tag.as_deref(), "map", at)?;
                    self.open(&mut stack, at)?;
                    stack.push(Open::Map {
                        at,
                        anchor,
                        entries: Vec::new(),
                        key: None,
                    });
                    continue;
                }
                Event::SequenceEnd | Event::MappingEnd => match stack.pop() {
                    Some(Open::Seq { at, anchor, items }) => self.anchor(
                        anchor,
                        Node {
                            at,
                            kind: Kind::Seq(items),
                        },
                    ),
                    Some(Open::Map {
                        at,
                        anchor,
                        entries,
                        ..
                    }) => self.anchor(
                        anchor,
                        Node {
                            at,
                            kind: Kind::Map(entries),
                        },
                    ),
                    None => return Err(err(at, "unbalanced collection end").into()),
                },
                Event::Scalar(text, style, anchor, tag) => {
                    self.spend(1, at)?;
                    let value = resolve(&text, style, tag.as_deref(), at)?;
                    let raw = (!value.is_string()).then(|| text.into());
                    self.anchor(
                        anchor,
                        Node {
                            at,
                            kind: Kind::Scalar { value, raw },
                        },
                    )
                }
                Event::Alias(id) => {
                    let node = self
                        .anchors
                        .get(&id)
                        .cloned()
                        .ok_or_else(|| err(at, "an alias to an unknown anchor"))?;
                    self.spend(count(&node), at)?;
                    Node { at, ..node }
                }
                // Events that carry no data (comments; the enum is non-exhaustive).
                _ => continue,
            };
            if let Some(list) = streamed_list(&stack, section) {
                on_item(list, done).map_err(Stopped::Item)?;
                continue;
            }
            // A finished node goes into its parent, or is the document.
            match stack.last_mut() {
                None => root = Some(done),
                Some(Open::Seq { items, .. }) => items.push(done),
                Some(Open::Map { entries, key, .. }) => match key.take() {
                    None => {
                        let Some(text) = done.text().map(str::to_string) else {
                            return Err(err(
                                done.at,
                                "a mapping key must be a scalar, not a collection",
                            )
                            .into());
                        };
                        if entries.iter().any(|(k, _)| k.text == text) {
                            return Err(err(done.at, format!("duplicate key `{text}`")).into());
                        }
                        *key = Some(Key { at: done.at, text });
                    }
                    Some(k) => entries.push((k, done)),
                },
            }
        }
        Ok(root.unwrap_or(Node {
            at: At { line: 1, col: 1 },
            kind: Kind::Scalar {
                value: Value::Null,
                raw: None,
            },
        }))
    }

    fn open(&mut self, stack: &mut [Open], at: At) -> Result<(), YamlError> {
        self.spend(1, at)?;
        if stack.len() >= MAX_DEPTH {
            return Err(err(at, format!("nested more than {MAX_DEPTH} levels deep")));
        }
        Ok(())
    }

    /// Remembers a node under its anchor (0: none).
    fn anchor(&mut self, anchor: usize, node: Node) -> Node {
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        node
    }
}

fn count(node: &Node) -> usize {
    match &node.kind {
        Kind::Scalar { .. } => 1,
        Kind::Seq(items) => 1 + items.iter().map(count).sum::<usize>(),
        Kind::Map(entries) => 1 + entries.iter().map(|(_, v)| 1 + count(v)).sum::<usize>(),
    }
}

fn core_tag(tag: Option<&Tag>) -> Option<&str> {
    tag.and_then(Tag::core_suffix)
}

fn check_collection_tag(tag: Option<&Tag>, expected: &str, at: At) -> Result<(), YamlError> {
    match tag {
        None => Ok(()),
        Some(_) if core_tag(tag) == Some(expected) => Ok(()),
        Some(t) => Err(err(at, format!("unsupported tag `{t}`"))),
    }
}

/// A scalar's value: quoted and block scalars are strings; plain ones follow the core schema
/// (null, booleans, integers, floats, else a string); core tags (`!!str`, ...) force a type.
fn resolve(text: &str, style: ScalarStyle, tag: Option<&Tag>, at: At) -> Result<Value, YamlError> {
    let plain = matches!(style, ScalarStyle::Plain);
    match (tag, core_tag(tag)) {
        (None, _) if plain => Ok(plain_value(text, at)?),
        (None, _) => Ok(Value::String(text.to_string())),
        (_, Some("str")) => Ok(Value::String(text.to_string())),
        (_, Some("null")) if is_null(text) => Ok(Value::Null),
        (_, Some("bool")) => bool_of(text)
            .map(Value::Bool)
            .ok_or_else(|| err(at, format!("`{text}` is not a boolean"))),
        (_, Some("int")) => int_of(text)
            .map(Value::Number)
            .ok_or_else(|| err(at, format!("`{text}` is not an integer"))),
        (_, Some("float")) => match float_of(text) {
            Some(f) => json_float(f, text, at),
            None => match int_of(text) {
                Some(n) => Ok(Value::Number(n)),
                None => Err(err(at, format!("`{text}` is not a number"))),
            },
        },
        (Some(t), _) => Err(err(at, format!("unsupported tag `{t}`"))),
    }
}

fn plain_value(text: &str, at: At) -> Result<Value, YamlError> {
    if is_null(text) {
        return Ok(Value::Null);
    }
    if let Some(b) = bool_of(text) {
        return Ok(Value::Bool(b));
    }
    if let Some(n) = int_of(text) {
        return Ok(Value::Number(n));
    }
    if let Some(f) = float_of(text) {
        return json_float(f, text, at);
    }
    Ok(Value::String(text.to_string()))
}

fn json_float(f: f64, text: &str, at: At) -> Result<Value, YamlError> {
    Number::from_f64(f).map(Value::Number).ok_or_else(|| {
        err(
            at,
            format!("`{text}` (infinity or not a number) has no JSON form: quote it"),
        )
    })
}

fn is_null(text: &str) -> bool {
    matches!(text, "" | "~" | "null" | "Null" | "NULL")
}

fn bool_of(text: &str) -> Option<bool> {
    match text {
        "true" | "True" | "TRUE" => Some(true),
        "false" | "False" | "FALSE" => Some(false),
        _ => None,
    }
}

/// `[-+]?[0-9]+`, `0o[0-7]+`, `0x[0-9a-fA-F]+`; beyond 64 bits it is not an integer (it
/// reads as a float, as JSON parsers do).
fn int_of(text: &str) -> Option<Number> {
    if let Some(oct) = text.strip_prefix("0o") {
        return u64::from_str_radix(oct, 8).ok().map(Number::from);
    }
    if let Some(hex) = text.strip_prefix("0x") {
        return u64::from_str_radix(hex, 16).ok().map(Number::from);
    }
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if text.starts_with('-') {
        text.parse::<i64>().ok().map(Number::from)
    } else {
        digits.parse::<u64>().ok().map(Number::from)
    }
}

/// `[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?`, `[-+]?.inf`, `.nan`.
fn float_of(text: &str) -> Option<f64> {
    let unsigned = text.strip_prefix(['-', '+']).unwrap_or(text);
    let negative = text.starts_with('-');
    match unsigned {
        ".inf" | ".Inf" | ".INF" => {
            return Some(if negative {
                f64::NEG_INFINITY
            } else {
                f64::INFINITY
            });
        }
        ".nan" | ".NaN" | ".NAN" if unsigned.len() == text.len() => return Some(f64::NAN),
        _ => {}
    }
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(i) => (&unsigned[..i], Some(&unsigned[i + 1..])),
        None => (unsigned, None),
    };
    let (whole, fraction) = match mantissa.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (mantissa, None),
    };
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = match fraction {
        None => !whole.is_empty() && digits(whole),
        Some(f) => digits(whole) && digits(f) && !(whole.is_empty() && f.is_empty()),
    };
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        !e.is_empty() && digits(e)
    });
    if !(mantissa_ok && exponent_ok) {
        return None;
    }
    text.parse::<f64>().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn json_of(text: &str) -> Value {
        load(text).expect("loads").to_json()
    }

    #[test]
    fn plain_scalars_follow_the_core_schema() {
        assert_eq!(
            json_of(
                "[~, null, '', true, False, 12, -3, +4, 0x1F, 0o17, 1.5, .5, 1e3, -2.5E-1, \
                 yes, 1.2.3, 0x, '12', \"true\", 18446744073709551616, 2026-01-01T10:00:00Z]"
            ),
            json!([
                null,
                null,
                "",
                true,
                false,
                12,
                -3,
                4,
                31,
                15,
                1.5,
                0.5,
                1000.0,
                -0.25,
                "yes",
                "1.2.3",
                "0x",
                "12",
                "true",
                18446744073709551616.0,
                "2026-01-01T10:00:00Z"
            ])
        );
    }

    #[test]
    fn tags_force_a_type_and_unknown_ones_are_refused() {
        assert_eq!(
            json_of("[!!str 12, !!int '7', !!float 3, !!bool 'true', !!null '']"),
            json!(["12", 7, 3.0, true, null])
        );
        let e = load("a: !custom x").expect_err("unknown tag");
        assert!(e.message.contains("unsupported tag"), "{e:?}");
        assert!(load("a: !!int twelve").is_err());
        let e = load("a: .inf").expect_err("no JSON form");
        assert!(e.message.contains("quote it"), "{e:?}");
    }

    #[test]
    fn nodes_know_where_they_start() {
        let root = load("events:\n  t.v1:\n    - {type: a}\n    - type: b\n").expect("loads");
        let Kind::Map(top) = &root.kind else {
            panic!("a mapping")
        };
        let Kind::Map(topics) = &top[0].1.kind else {
            panic!("a mapping")
        };
        let Kind::Seq(events) = &topics[0].1.kind else {
            panic!("a sequence")
        };
        assert_eq!(top[0].0.at, At { line: 1, col: 1 });
        assert_eq!(events[0].at, At { line: 3, col: 7 });
        assert_eq!(events[1].at.line, 4);
    }

    #[test]
    fn streamed_items_go_to_the_callback_in_order_and_leave_their_lists_empty() {
        let text = "\
topics: {t.v1: [1, 2]}
events:
  t.v1:
    - &first {type: a, data: [1, 2]}
    - type: b
  u.v1: []
  w.v1:
    - *first
other: {events: [x]}
";
        let mut seen = Vec::new();
        let root = load_streaming(text, Some("events"), |list, item| {
            seen.push((
                list.text.clone(),
                list.at.line,
                item.at.line,
                item.to_json(),
            ));
            Ok::<(), ()>(())
        })
        .expect("loads");
        let got: Vec<_> = seen
            .iter()
            .map(|(t, kl, l, _)| (t.as_str(), *kl, *l))
            .collect();
        assert_eq!(got, [("t.v1", 3, 4), ("t.v1", 3, 5), ("w.v1", 7, 8)]);
        assert_eq!(seen[0].3, serde_json::json!({"type": "a", "data": [1, 2]}));
        // An alias to a streamed item is the item again.
        assert_eq!(seen[2].3, seen[0].3);
        // The lists stay in the tree, empty; nothing else is streamed.
        assert_eq!(
            root.to_json(),
            serde_json::json!({
                "topics": {"t.v1": [1, 2]},
                "events": {"t.v1": [], "u.v1": [], "w.v1": []},
                "other": {"events": ["x"]},
            })
        );
    }

    #[test]
    fn a_refused_item_stops_the_parse() {
        let text = "events:\n  t.v1:\n    - {type: a}\n    - {type: b}\n    - {type: c\n";
        let mut calls = 0;
        let e = load_streaming(text, Some("events"), |_, item| {
            calls += 1;
            if item.at.line == 4 {
                Err("no b")
            } else {
                Ok(())
            }
        })
        .expect_err("refused");
        assert!(matches!(e, Stopped::Item("no b")), "{e:?}");
        assert_eq!(calls, 2, "nothing after the refused item is read");
        // A syntax error after the streamed items is still the YAML's.
        let e = load_streaming(text, Some("events"), |_, _| Ok::<(), ()>(())).expect_err("bad");
        assert!(matches!(e, Stopped::Yaml(_)), "{e:?}");
    }

    #[test]
    fn anchors_aliases_and_their_budget() {
        assert_eq!(
            json_of("a: &x {n: 1}\nb: *x\n"),
            json!({"a": {"n": 1}, "b": {"n": 1}})
        );
        // A billion laughs: each level doubles the nodes; the budget stops it.
        let mut bomb = String::from("a0: &a0 [x, x]\n");
        for i in 1..40 {
            bomb.push_str(&format!("a{i}: &a{i} [*a{p}, *a{p}]\n", p = i - 1));
        }
        let e = load(&bomb).expect_err("bounded");
        assert!(e.message.contains("too many nodes"), "{e:?}");
    }

    #[test]
    fn bad_documents_are_refused_with_their_place() {
        let e = load("a: [1, 2\nb: 3\n").expect_err("syntax");
        assert!(e.at.line >= 1, "{e:?}");
        assert!(load("a: 1\n---\nb: 2\n").is_err(), "two documents");
        let e = load("a: 1\na: 2\n").expect_err("duplicate");
        assert_eq!((e.at.line, e.message.as_str()), (2, "duplicate key `a`"));
        assert!(load("? [1]\n: x\n").is_err(), "collection as key");
        let deep = "[".repeat(MAX_DEPTH + 1);
        assert!(load(&deep).is_err());
        let nested = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        let e = load(&nested).expect_err("too deep");
        assert!(e.message.contains("levels deep"), "{e:?}");
        let fine = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(load(&fine).is_ok());
        assert!(load("").expect("empty").is_null());
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // Every prefix and a few mutations of a realistic file: an error or a node, no panic.
        let sample = "topics:\n  t.v1: {partitions: 2}\nevents:\n  t.v1:\n    - type: a\n      \
                      data: {n: 1, s: \"x\\u00e9\", l: [1, {k: v}]}\n    - {type: b, key: &k k1}\n    \
                      - {type: c, key: *k}\ncalls:\n  - {url: /v1/x, body: |\n      text\n    }\n";
        for end in 0..=sample.len() {
            if sample.is_char_boundary(end) {
                let _ = load(&sample[..end]);
            }
        }
        let bytes = sample.as_bytes();
        for (i, b) in [
            b'{', b'}', b'[', b'&', b'*', b'!', b'"', b'\'', b':', b'\t', b'|',
        ]
        .into_iter()
        .enumerate()
        .flat_map(|(i, b)| (0..bytes.len()).step_by(7 + i).map(move |p| (p, b)))
        {
            let mut m = bytes.to_vec();
            m[i] = b;
            if let Ok(text) = std::str::from_utf8(&m) {
                let _ = load(text);
            }
        }
    }
}
