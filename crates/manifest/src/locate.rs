//! Where things are written: key paths, and the map from one TOML file's keys to their line
//! and column.
//!
//! Every file is parsed once with `toml_edit`, which keeps the byte span of every key and
//! value. A [`Source`] indexes those spans by key path, so that a diagnostic found after
//! parsing (a topic without a producer) points at the line of the key it is about, and a
//! serde error (which carries a span) is given the key path it is in.

use crate::diagnostic::{Code, Diagnostic, Severity};
use std::collections::HashMap;
use std::ops::Range;
use toml_edit::{ImDocument, Item, Table, Value};

/// A key path inside one TOML file, in the form diagnostics print:
/// `dependencies.payments.on-failure`, `subscribes[0].topic`, `topics."orders.v1".partitions`
/// (a key that is not a bare TOML key is quoted).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct KeyPath {
    text: String,
    /// The length of `text` before each segment, so `parent` can cut the last one off.
    starts: Vec<usize>,
}

impl KeyPath {
    /// The file's root table (printed as the empty string).
    pub fn root() -> Self {
        Self::default()
    }

    /// This path with `key` appended.
    pub fn key(&self, key: &str) -> Self {
        let mut next = self.clone();
        next.starts.push(next.text.len());
        if !next.text.is_empty() {
            next.text.push('.');
        }
        if is_bare_key(key) {
            next.text.push_str(key);
        } else {
            next.text.push('"');
            for c in key.chars() {
                if matches!(c, '"' | '\\') {
                    next.text.push('\\');
                }
                next.text.push(c);
            }
            next.text.push('"');
        }
        next
    }

    /// This path with the array index `i` appended: `subscribes[0]`.
    pub fn index(&self, i: usize) -> Self {
        let mut next = self.clone();
        next.starts.push(next.text.len());
        next.text.push_str(&format!("[{i}]"));
        next
    }

    /// The path without its last segment; `None` for the root.
    pub fn parent(&self) -> Option<Self> {
        let start = *self.starts.last()?;
        Some(Self {
            text: self.text[..start].to_string(),
            starts: self.starts[..self.starts.len() - 1].to_vec(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl std::fmt::Display for KeyPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

fn is_bare_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// One parsed TOML file: its path for diagnostics, its text, and the span of every key.
#[derive(Debug)]
pub(crate) struct Source {
    /// Relative to the system directory, `/`-separated.
    pub(crate) file: String,
    text: String,
    /// Key path -> where to point for it: the key if it is written, else its value (an
    /// array element, a `[[table]]` header).
    points: HashMap<String, Range<usize>>,
    /// Every key span and value span with its path, to find the path of a span.
    spans: Vec<(Range<usize>, KeyPath)>,
    /// The root table's own span (its keys before the first header; may be empty), which
    /// errors about the root carry.
    root_span: Option<Range<usize>>,
}

impl Source {
    /// Parses `text`. A syntax error is returned as a located diagnostic, its key the table
    /// the error is in.
    pub(crate) fn parse(
        file: String,
        text: String,
    ) -> Result<(Source, ImDocument<String>), Diagnostic> {
        let doc = match ImDocument::parse(text.clone()) {
            Ok(doc) => doc,
            Err(e) => {
                let source = Source {
                    file,
                    text,
                    points: HashMap::new(),
                    spans: Vec::new(),
                    root_span: None,
                };
                let offset = e.span().map_or(0, |s| s.start);
                let (line, _) = source.line_col(offset);
                let key = source.enclosing_table(line);
                return Err(source.diagnostic_at(
                    Severity::Error,
                    Code::TomlSyntax,
                    Some(offset),
                    key,
                    format!("invalid TOML: {}", e.message().trim()),
                ));
            }
        };
        let mut source = Source {
            file,
            text,
            points: HashMap::new(),
            spans: Vec::new(),
            root_span: doc.as_table().span(),
        };
        source.walk_table(doc.as_table(), &KeyPath::root());
        Ok((source, doc))
    }

    fn add(&mut self, path: &KeyPath, key: Option<Range<usize>>, value: Option<Range<usize>>) {
        if let Some(point) = key.clone().or_else(|| value.clone()) {
            self.points.insert(path.as_str().to_string(), point);
        }
        for span in [key, value].into_iter().flatten() {
            self.spans.push((span, path.clone()));
        }
    }

    fn walk_table(&mut self, table: &Table, path: &KeyPath) {
        for (k, item) in table.iter() {
            let child = path.key(k);
            self.add(&child, table.key(k).and_then(|k| k.span()), item.span());
            self.walk_item(item, &child);
        }
    }

    fn walk_item(&mut self, item: &Item, path: &KeyPath) {
        match item {
            Item::None => {}
            Item::Value(v) => self.walk_value(v, path),
            Item::Table(t) => self.walk_table(t, path),
            Item::ArrayOfTables(a) => {
                for (i, t) in a.iter().enumerate() {
                    let child = path.index(i);
                    self.add(&child, None, t.span());
                    self.walk_table(t, &child);
                }
            }
        }
    }

    fn walk_value(&mut self, value: &Value, path: &KeyPath) {
        match value {
            Value::Array(a) => {
                for (i, v) in a.iter().enumerate() {
                    let child = path.index(i);
                    self.add(&child, None, v.span());
                    self.walk_value(v, &child);
                }
            }
            Value::InlineTable(t) => {
                for (k, v) in t.iter() {
                    let child = path.key(k);
                    self.add(&child, t.key(k).and_then(|k| k.span()), v.span());
                    self.walk_value(v, &child);
                }
            }
            _ => {}
        }
    }

    /// The innermost key path whose key or value span holds all of `span` (on a tie, the
    /// deeper path: a one-table `[[array]]` spans the same bytes as its element).
    fn key_at(&self, span: &Range<usize>) -> Option<KeyPath> {
        self.spans
            .iter()
            .filter(|(s, _)| s.start <= span.start && span.end <= s.end)
            .min_by_key(|(s, path)| (s.end - s.start, std::cmp::Reverse(path.starts.len())))
            .map(|(_, path)| path.clone())
    }

    /// Where to point for `path`: its own key or value, else the nearest written parent
    /// (a missing key points at the table that lacks it).
    fn offset_of(&self, path: &KeyPath) -> Option<usize> {
        let mut at = Some(path.clone());
        while let Some(p) = at {
            if let Some(span) = self.points.get(p.as_str()) {
                return Some(span.start);
            }
            at = p.parent();
        }
        None
    }

    /// A diagnostic about `path` in this file.
    pub(crate) fn diagnostic(
        &self,
        severity: Severity,
        code: Code,
        path: &KeyPath,
        message: impl Into<String>,
    ) -> Diagnostic {
        // A key that is not written anywhere (the file is empty) still gets line 1.
        let offset = self.offset_of(path).unwrap_or(0);
        self.diagnostic_at(severity, code, Some(offset), path.to_string(), message)
    }

    pub(crate) fn error(
        &self,
        code: Code,
        path: &KeyPath,
        message: impl Into<String>,
    ) -> Diagnostic {
        self.diagnostic(Severity::Error, code, path, message)
    }

    pub(crate) fn warning(
        &self,
        code: Code,
        path: &KeyPath,
        message: impl Into<String>,
    ) -> Diagnostic {
        self.diagnostic(Severity::Warning, code, path, message)
    }

    fn diagnostic_at(
        &self,
        severity: Severity,
        code: Code,
        offset: Option<usize>,
        key: String,
        message: impl Into<String>,
    ) -> Diagnostic {
        let (line, column) = match offset {
            Some(o) => {
                let (l, c) = self.line_col(o);
                (Some(l), Some(c))
            }
            None => (None, None),
        };
        Diagnostic {
            severity,
            code,
            file: self.file.clone(),
            line,
            column,
            key,
            message: message.into(),
        }
    }

    /// Turns a serde error from deserializing this file (or a table of it) into a
    /// diagnostic: its span gives the line, column and key path; its message the code.
    pub(crate) fn de_error(&self, e: &toml_edit::de::Error) -> Diagnostic {
        let message = e.message().trim();
        let span = e.span();
        let mut path = span
            .as_ref()
            .filter(|s| Some(*s) != self.root_span.as_ref())
            .and_then(|s| self.key_at(s))
            .unwrap_or_default();
        let (code, message) = if let Some(rest) = message.strip_prefix("unknown field") {
            (Code::UnknownKey, format!("unknown key{rest}"))
        } else if let Some(rest) = message.strip_prefix("missing field") {
            // The span is the table that lacks the key: name the key itself.
            if let Some(name) = backquoted(rest) {
                path = path.key(name);
            }
            (Code::MissingKey, format!("missing key{rest}"))
        } else if message.starts_with("invalid type") {
            (Code::InvalidType, message.to_string())
        } else {
            (Code::InvalidValue, message.to_string())
        };
        let offset = span.map(|s| s.start).or_else(|| self.offset_of(&path));
        self.diagnostic_at(Severity::Error, code, offset, path.to_string(), message)
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub(crate) fn line_col(&self, offset: usize) -> (u32, u32) {
        let mut end = offset.min(self.text.len());
        while !self.text.is_char_boundary(end) {
            end -= 1;
        }
        let before = &self.text[..end];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        (
            u32::try_from(line).unwrap_or(u32::MAX),
            u32::try_from(column).unwrap_or(u32::MAX),
        )
    }

    /// The header of the table that line `line` (1-based) is in, for a syntax error: the
    /// last `[...]` line at or before it (the file does not parse, so there are no spans).
    fn enclosing_table(&self, line: u32) -> String {
        let upto = usize::try_from(line).unwrap_or(usize::MAX);
        self.text
            .lines()
            .take(upto)
            .filter_map(|l| {
                let l = l.trim();
                let inner = l.strip_prefix('[')?;
                let end = inner.find(']')?;
                Some(inner[..end].trim_start_matches('[').trim().to_string())
            })
            .last()
            .unwrap_or_default()
    }
}

/// The first `` `...` `` in `s`.
fn backquoted(s: &str) -> Option<&str> {
    let start = s.find('`')? + 1;
    let len = s[start..].find('`')?;
    Some(&s[start..start + len])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    fn source(text: &str) -> Source {
        Source::parse("f.toml".into(), text.into()).unwrap().0
    }

    #[test]
    fn key_paths_quote_what_is_not_bare_and_cut_back() {
        let p = KeyPath::root()
            .key("topics")
            .key("orders.v1")
            .key("event-types");
        assert_eq!(p.as_str(), "topics.\"orders.v1\".event-types");
        let p = KeyPath::root().key("subscribes").index(2).key("topic");
        assert_eq!(p.as_str(), "subscribes[2].topic");
        assert_eq!(p.parent().unwrap().as_str(), "subscribes[2]");
        assert_eq!(p.parent().unwrap().parent().unwrap().as_str(), "subscribes");
        assert_eq!(KeyPath::root().parent(), None);
    }

    #[test]
    fn line_and_column_count_characters() {
        let s = source("a = 1\n# é\n\"é\" = \"x\"\n");
        assert_eq!(s.line_col(0), (1, 1));
        assert_eq!(s.line_col(6), (2, 1));
        // `=` on line 3 comes after `"é" ` (5 characters, 6 bytes).
        let eq = "a = 1\n# é\n\"é\" ".len();
        assert_eq!(s.line_col(eq), (3, 5));
        assert_eq!(s.line_col(10_000).0, 4);
    }

    #[test]
    fn every_key_and_element_is_located() {
        let s = source(
            "name = \"x\"\n\
             [dependencies.payments]\n\
             kind = \"sync\"\n\
             [[subscribes]]\n\
             topic = \"a\"\n\
             types = [\"t1\",\n  \"t2\"]\n\
             [topics.\"orders.v1\"]\n\
             event-types = { \"o.placed\" = { schema = \"s.json\" } }\n",
        );
        let at = |p: &KeyPath| {
            let d = s.error(Code::InvalidValue, p, "m");
            (d.line.unwrap(), d.column.unwrap())
        };
        let root = KeyPath::root();
        assert_eq!(at(&root.key("name")), (1, 1));
        assert_eq!(at(&root.key("dependencies").key("payments")), (2, 15));
        assert_eq!(
            at(&root.key("dependencies").key("payments").key("kind")),
            (3, 1)
        );
        // A key that is not there points at its table.
        let missing = root.key("dependencies").key("payments").key("on-failure");
        assert_eq!(at(&missing), (2, 15));
        assert_eq!(
            s.error(Code::InvalidValue, &missing, "m").key,
            missing.as_str()
        );
        assert_eq!(at(&root.key("subscribes").index(0)), (4, 1));
        assert_eq!(
            at(&root.key("subscribes").index(0).key("types").index(1)),
            (7, 3)
        );
        let schema = root
            .key("topics")
            .key("orders.v1")
            .key("event-types")
            .key("o.placed")
            .key("schema");
        assert_eq!(at(&schema), (9, 32));
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "kebab-case")]
    #[allow(dead_code)]
    struct Doc {
        name: String,
        #[serde(default)]
        subscribes: Vec<Sub>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "kebab-case")]
    #[allow(dead_code)]
    struct Sub {
        topic: String,
        #[serde(default)]
        types: Vec<String>,
    }

    fn de(text: &str) -> Diagnostic {
        let (s, doc) = Source::parse("f.toml".into(), text.into()).unwrap();
        let e = toml_edit::de::from_document::<Doc>(doc).unwrap_err();
        s.de_error(&e)
    }

    #[test]
    fn serde_errors_get_code_line_column_and_key() {
        let d = de("name = \"x\"\n[[subscribes]]\ntopic = \"a\"\ntpyes = []\n");
        assert_eq!(d.code, Code::UnknownKey);
        assert_eq!((d.line, d.column), (Some(4), Some(1)));
        assert_eq!(d.key, "subscribes[0].tpyes");
        assert!(
            d.message.starts_with("unknown key `tpyes`"),
            "{}",
            d.message
        );

        let d = de("name = \"x\"\n[[subscribes]]\ntopic = \"a\"\ntypes = [\"a\", 3]\n");
        assert_eq!(d.code, Code::InvalidType);
        assert_eq!((d.line, d.column), (Some(4), Some(15)));
        assert_eq!(d.key, "subscribes[0].types[1]");

        let d = de("name = \"x\"\n\n[[subscribes]]\ntypes = []\n");
        assert_eq!(d.code, Code::MissingKey);
        assert_eq!(d.line, Some(3));
        assert_eq!(d.key, "subscribes[0].topic");
        assert!(
            d.message.starts_with("missing key `topic`"),
            "{}",
            d.message
        );

        let d = de("[[subscribes]]\ntopic = \"a\"\n");
        assert_eq!(d.code, Code::MissingKey);
        assert_eq!(d.key, "name");
        assert_eq!(d.line, Some(1));
    }

    #[test]
    fn syntax_errors_name_line_column_and_table() {
        let e = Source::parse(
            "f.toml".into(),
            "name = \"x\"\n[dependencies.payments]\nkind = sync\n".into(),
        )
        .unwrap_err();
        assert_eq!(e.code, Code::TomlSyntax);
        assert_eq!((e.line, e.column), (Some(3), Some(8)));
        assert_eq!(e.key, "dependencies.payments");
        assert!(e.message.starts_with("invalid TOML"), "{}", e.message);
    }
}
