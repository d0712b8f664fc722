//! Adapters as written: the `[adapters.<name>]` tables of `switchyard.toml` and of the
//! files in `[connect] adapters-dir`, read strictly (kebab-case, unknown keys rejected) and
//! checked whole; every problem is a [`ConfigError`] with file, line, column and key.
//!
//! ```toml
//! [connect]
//! adapters-dir = "adapters"      # optional: every *.toml in it holds more [adapters.*]
//!
//! [adapters.bakery]
//! vendor = "bakery-inc"          # names the vendor in cases; adapters of one vendor share
//!                                # its rate limit and pauses (default: the adapter's name)
//! topic = "inventory.v1"         # the source
//! types = ["stock.low"]          # event types it takes (default: every type)
//! route = ".data.sku >= 200 and .data.sku < 300"   # jq predicate (default: every event)
//! key = ".data.sku"              # per-key order (default: partitionkey, else subject)
//! mapping = "{ITEM_ID: (.data.sku | pad(5)), QTY: (.data.qty | quoted)}"   # jq
//! encoding = "json"              # json | form | xml | { format = "xml", root = "order" } |
//!                                # { format = "csv", columns = [..], header = true } |
//!                                # { format = "fixed-width", fields = [{ name, width, align, pad }] }
//! start = "latest"               # where a new lane starts reading: latest | earliest
//! concurrency = 4                # attempts at once, 1 to 256
//! timeout = "10s"                # per attempt
//! rate-limit = { per-second = 50, burst = 10 }     # GCRA, one bucket per vendor (its adapters
//!                                # declare the same or none); a 429 or 503 holds the vendor
//!                                # for its Retry-After and halves its send rate (AIMD)
//! retry = { initial-backoff = "500ms", max-backoff = "1m", multiplier = 2.0, max-attempts = 10 }
//! writer = { kind = "http", method = "POST", url = "http://127.0.0.1:9001/orders/{{ .data.sku }}",
//!            headers = { "x-api-key" = "k" }, auth = { bearer-env = "BAKERY_TOKEN" } }
//! # writer = { kind = "amqp", url = "amqp://guest:guest@127.0.0.1:5672/%2f", exchange = "", routing-key = "pizzeria.orders" }
//! # writer = { kind = "file", dir = "outbox/pizzeria", name = "{{ .data.sku }}-{{ $correlation }}.txt" }
//!
//! [adapters.bakery.classify]     # the defaults shown
//! success = []                   # statuses that are success (empty: any 2xx)
//! retry = [408, 425, 429, 500, 502, 503, 504]   # an AMQP writer's returned message has its
//!                                # reply code as status (312: no queue bound): add 312 to wait
//! retry-when = '.body.code == "BUSY"'        # jq over {status, headers, body}: retry too
//! retry-delay = ".body.retry_in"             # jq: seconds to wait (else Retry-After, else backoff)
//! business = [{ status = [409], when = '.body.error == "OUT_OF_STOCK"', event-type = "restock.rejected" }]
//!                                # anything else is unknown: a case
//!
//! [adapters.bakery.reply]        # a reply (the response, or an asynchronous reply) becomes an event
//! topic = "inventory.v1"
//! type = "restock.confirmed"
//! mapping = "{order: .body.order_id, sku: .event.data.sku}"   # jq over {status, headers, body, event}
//!
//! [adapters.pizzeria.correlation]   # an asynchronous vendor: replies come later
//! header = "x-correlation-id"    # where the id goes: a request header, or
//! # path = "correlation"         # a key of the mapped object
//! reply-header = "x-correlation-id"   # where replies carry it (default: the same header), or
//! # reply-path = ".correlation"  # jq over the reply's JSON body
//! timeout = "1h"                 # no reply by then: a case
//!
//! [adapters.pizzeria.reply-queue]   # read replies from an AMQP queue (else POST /v1/adapters/{name}/replies)
//! url = "amqp://guest:guest@127.0.0.1:5672/%2f"
//! queue = "pizzeria.replies"
//!
//! [adapters.bakery.cases]
//! group-by = ["stage", "error-class", "status", "message", "vendor"]   # the default: all
//! ```

use crate::encode::Encoding;
use crate::error::{ConfigError, ConfigErrors};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A humantime duration written as a string.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl Serialize for HumanDuration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(self.0).to_string())
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(text.trim())
            .map(HumanDuration)
            .map_err(|e| {
                serde::de::Error::custom(format!(
                    "invalid duration {text:?}: {e} (write it like \"200ms\", \"10s\" or \"1m\")"
                ))
            })
    }
}

/// `encoding`: a name (`"json"`, `"form"`, `"xml"`) or a table with `format`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EncodingConfig(pub Encoding);

impl Default for EncodingConfig {
    fn default() -> Self {
        Self(Encoding::Json)
    }
}

impl<'de> Deserialize<'de> for EncodingConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = EncodingConfig;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("\"json\", \"form\", \"xml\" or a table with `format`")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<EncodingConfig, E> {
                match v {
                    "json" => Ok(EncodingConfig(Encoding::Json)),
                    "form" => Ok(EncodingConfig(Encoding::Form)),
                    "xml" => Ok(EncodingConfig(Encoding::Xml {
                        root: "message".into(),
                    })),
                    "csv" | "fixed-width" => Err(E::custom(format!(
                        "`{v}` needs settings: write {{ format = \"{v}\", ... }}"
                    ))),
                    other => Err(E::custom(format!(
                        "unknown encoding `{other}` (json, form, xml, csv, fixed-width)"
                    ))),
                }
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<EncodingConfig, A::Error> {
                Encoding::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(EncodingConfig)
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// Where a new lane starts reading its topic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Start {
    /// Only events appended after the lane first starts.
    #[default]
    Latest,
    /// Every event the topic still holds.
    Earliest,
}

/// One `[adapters.<name>]` table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct AdapterConfig {
    pub vendor: Option<String>,
    pub topic: String,
    #[serde(default)]
    pub types: Vec<String>,
    pub route: Option<String>,
    pub key: Option<String>,
    pub mapping: String,
    #[serde(default)]
    pub encoding: EncodingConfig,
    #[serde(default)]
    pub start: Start,
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    pub rate_limit: Option<RateLimit>,
    #[serde(default)]
    pub retry: Retry,
    pub writer: WriterConfig,
    #[serde(default)]
    pub classify: Classify,
    pub reply: Option<ReplyConfig>,
    pub correlation: Option<CorrelationConfig>,
    pub reply_queue: Option<ReplyQueue>,
    #[serde(default)]
    pub cases: CasesConfig,
}

fn default_concurrency() -> u32 {
    4
}

fn default_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}

/// `rate-limit`: GCRA, `per-second` sustained with bursts of `burst`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RateLimit {
    pub per_second: u32,
    pub burst: Option<u32>,
}

/// `retry`: exponential backoff for retried attempts; after `max-attempts` a case.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct Retry {
    pub initial_backoff: HumanDuration,
    pub max_backoff: HumanDuration,
    pub multiplier: f64,
    pub max_attempts: u32,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            initial_backoff: HumanDuration(Duration::from_millis(500)),
            max_backoff: HumanDuration(Duration::from_secs(60)),
            multiplier: 2.0,
            max_attempts: 10,
        }
    }
}

/// `writer`: where mapped requests go.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind", deny_unknown_fields)]
pub enum WriterConfig {
    Http {
        #[serde(default = "default_method")]
        method: String,
        /// A template (`{{ jq }}` placeholders are percent-encoded).
        url: String,
        /// Header name -> template.
        #[serde(default)]
        headers: BTreeMap<String, String>,
        auth: Option<HttpAuth>,
    },
    Amqp {
        url: String,
        #[serde(default)]
        exchange: String,
        /// A template.
        #[serde(rename = "routing-key")]
        routing_key: String,
        /// Delivery mode 2 (the broker writes it to disk).
        #[serde(default = "yes")]
        persistent: bool,
    },
    File {
        /// Relative to the system directory.
        dir: PathBuf,
        /// A template for the file name: one path component, `[A-Za-z0-9._-]`, no
        /// leading dot.
        name: String,
    },
}

fn default_method() -> String {
    "POST".into()
}

fn yes() -> bool {
    true
}

/// `auth` of an HTTP writer. Secrets come from the environment, never from the file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct HttpAuth {
    pub bearer_env: Option<String>,
    pub basic_user: Option<String>,
    pub password_env: Option<String>,
}

/// `classify`: what a vendor's answer means.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct Classify {
    pub success: Vec<u16>,
    pub retry: Vec<u16>,
    pub retry_when: Option<String>,
    pub retry_delay: Option<String>,
    pub business: Vec<BusinessRule>,
}

impl Default for Classify {
    fn default() -> Self {
        Self {
            success: Vec::new(),
            retry: vec![408, 425, 429, 500, 502, 503, 504],
            retry_when: None,
            retry_delay: None,
            business: Vec::new(),
        }
    }
}

/// A known business error: it becomes an event of `event-type`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct BusinessRule {
    #[serde(default)]
    pub status: Vec<u16>,
    pub when: Option<String>,
    pub event_type: String,
}

/// `reply`: where replies become events.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ReplyConfig {
    pub topic: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub mapping: Option<String>,
}

/// `correlation`: an asynchronous vendor's replies are matched by this id.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct CorrelationConfig {
    pub header: Option<String>,
    pub path: Option<String>,
    pub reply_header: Option<String>,
    pub reply_path: Option<String>,
    #[serde(default = "default_reply_timeout")]
    pub timeout: HumanDuration,
}

fn default_reply_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(3600))
}

/// `reply-queue`: an AMQP queue the vendor's replies arrive on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ReplyQueue {
    pub url: String,
    pub queue: String,
}

/// What a failure's case is keyed by (besides the adapter).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CasePart {
    Stage,
    ErrorClass,
    Status,
    Message,
    Vendor,
}

/// `cases`: the grouping rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct CasesConfig {
    pub group_by: Vec<CasePart>,
}

impl Default for CasesConfig {
    fn default() -> Self {
        Self {
            group_by: vec![
                CasePart::Stage,
                CasePart::ErrorClass,
                CasePart::Status,
                CasePart::Message,
                CasePart::Vendor,
            ],
        }
    }
}

/// `[connect]` in switchyard.toml.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ConnectSection {
    pub adapters_dir: Option<PathBuf>,
}

/// The two tables of switchyard.toml this crate reads (the others are the manifest's).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct SystemFileForm {
    #[serde(default)]
    connect: ConnectSection,
    #[serde(default)]
    adapters: BTreeMap<String, AdapterConfig>,
}

/// A file of `adapters-dir`: only adapters.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct AdaptersFileForm {
    #[serde(default)]
    adapters: BTreeMap<String, AdapterConfig>,
}

/// One adapter as read, with where it was written.
#[derive(Clone, Debug)]
pub struct Declared {
    pub name: String,
    pub config: AdapterConfig,
    pub file: PathBuf,
    /// The file's text and the key spans, to locate checks made after parsing.
    pub(crate) source: std::sync::Arc<Located>,
}

/// Every adapter of a system, as read from its files.
#[derive(Clone, Debug, Default)]
pub struct Declarations {
    pub adapters: Vec<Declared>,
    /// The directory relative paths are resolved against.
    pub base: PathBuf,
}

/// A file's text, parsed once for the spans of its keys.
#[derive(Debug)]
pub struct Located {
    pub file: PathBuf,
    text: String,
    doc: Option<toml_edit::ImDocument<String>>,
}

impl Located {
    fn new(file: &Path, text: String) -> Self {
        let doc = toml_edit::ImDocument::parse(text.clone()).ok();
        Self {
            file: file.to_path_buf(),
            text,
            doc,
        }
    }

    fn line_col(&self, offset: usize) -> (u32, u32) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (
            u32::try_from(line).unwrap_or(u32::MAX),
            u32::try_from(col).unwrap_or(u32::MAX),
        )
    }

    /// The span of the deepest key of `path` (dotted, `[i]` for array items) that exists.
    fn span_of(&self, path: &str) -> Option<std::ops::Range<usize>> {
        let doc = self.doc.as_ref()?;
        let mut table: Option<&dyn toml_edit::TableLike> = Some(doc.as_table());
        let mut best = None;
        for seg in path.split('.') {
            let Some(t) = table else { break };
            let mut pieces = seg.split('[');
            let key = pieces.next().unwrap_or(seg);
            let Some((k, item)) = t.get_key_value(key) else {
                break;
            };
            best = k.span().or(item.span()).or(best);
            table = item.as_table_like();
            // Array indexes (`fields[1]`): into the item when it is an inline table.
            for idx in pieces {
                let value = idx
                    .trim_end_matches(']')
                    .parse::<usize>()
                    .ok()
                    .and_then(|i| item.as_array().and_then(|a| a.get(i)));
                match value {
                    Some(v) => {
                        best = v.span().or(best);
                        table = v.as_inline_table().map(|t| t as &dyn toml_edit::TableLike);
                    }
                    None => return best,
                }
            }
        }
        best
    }

    pub(crate) fn error(&self, path: &str, message: impl Into<String>) -> ConfigError {
        let (line, column) = self
            .span_of(path)
            .map_or((1, 1), |span| self.line_col(span.start));
        ConfigError {
            file: self.file.clone(),
            line,
            column,
            key: path.to_owned(),
            message: message.into(),
        }
    }

    fn de_error(&self, e: &toml_edit::de::Error) -> ConfigError {
        let (line, column) = e.span().map_or((1, 1), |s| self.line_col(s.start));
        let key = e.span().map(|s| self.path_at(s.start)).unwrap_or_default();
        ConfigError {
            file: self.file.clone(),
            line,
            column,
            key,
            message: e.message().trim().to_owned(),
        }
    }

    /// The dotted key path at a byte offset (the deepest key whose value holds it).
    fn path_at(&self, offset: usize) -> String {
        fn walk(t: &dyn toml_edit::TableLike, offset: usize, path: &mut Vec<String>) {
            for (k, item) in t.iter() {
                let holds = |span: Option<std::ops::Range<usize>>| {
                    span.is_some_and(|s| s.start <= offset && offset <= s.end)
                };
                let key_span = t.key(k).and_then(|key| key.span());
                if holds(item.span()) || holds(key_span) {
                    path.push(k.to_owned());
                    if let Some(inner) = item.as_table_like() {
                        walk(inner, offset, path);
                    }
                    return;
                }
                if let Some(inner) = item.as_table() {
                    let before = path.len();
                    path.push(k.to_owned());
                    walk(inner, offset, path);
                    if path.len() > before + 1 {
                        return;
                    }
                    path.truncate(before);
                }
            }
        }
        let Some(doc) = &self.doc else {
            return String::new();
        };
        let mut path = Vec::new();
        walk(doc.as_table(), offset, &mut path);
        path.join(".")
    }
}

/// Reads the adapters of the system whose `switchyard.toml` is `file`: its
/// `[adapters.*]` and those of every `*.toml` in `[connect] adapters-dir` (sorted by
/// name). A missing `switchyard.toml` has no adapters. Every problem of every file is
/// reported, each located; nothing is half-read.
pub fn read(file: &Path) -> Result<Declarations, ConfigErrors> {
    let base = file.parent().map(Path::to_path_buf).unwrap_or_default();
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Declarations {
                adapters: Vec::new(),
                base,
            });
        }
        Err(e) => return Err(ConfigErrors(vec![unreadable(file, &e)])),
    };
    let mut errors = Vec::new();
    let mut adapters = Vec::new();
    let located = std::sync::Arc::new(Located::new(file, text));
    let form: SystemFileForm = match toml_edit::de::from_str(&located.text) {
        Ok(f) => f,
        Err(e) => return Err(ConfigErrors(vec![located.de_error(&e)])),
    };
    for (name, config) in form.adapters {
        adapters.push(Declared {
            name,
            config,
            file: file.to_path_buf(),
            source: located.clone(),
        });
    }
    if let Some(dir) = &form.connect.adapters_dir {
        let dir = base.join(dir);
        match std::fs::read_dir(&dir) {
            Err(e) => errors.push(located.error(
                "connect.adapters-dir",
                format!("cannot read {}: {e}", dir.display()),
            )),
            Ok(entries) => {
                let mut files: Vec<PathBuf> = entries
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                    .collect();
                files.sort();
                for path in files {
                    let text = match std::fs::read_to_string(&path) {
                        Ok(t) => t,
                        Err(e) => {
                            errors.push(unreadable(&path, &e));
                            continue;
                        }
                    };
                    let src = std::sync::Arc::new(Located::new(&path, text));
                    match toml_edit::de::from_str::<AdaptersFileForm>(&src.text) {
                        Err(e) => errors.push(src.de_error(&e)),
                        Ok(f) => {
                            for (name, config) in f.adapters {
                                if let Some(first) = adapters.iter().find(|d| d.name == name) {
                                    errors.push(src.error(
                                        &format!("adapters.{name}"),
                                        format!(
                                            "adapter `{name}` is already declared in {}",
                                            first.file.display()
                                        ),
                                    ));
                                    continue;
                                }
                                adapters.push(Declared {
                                    name,
                                    config,
                                    file: path.clone(),
                                    source: src.clone(),
                                });
                            }
                        }
                    }
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(Declarations { adapters, base })
    } else {
        Err(ConfigErrors(errors))
    }
}

/// Reads adapters from TOML text (as `switchyard.toml` would hold them), for tests and
/// embedders; relative paths resolve against `base`.
pub fn parse(text: &str, file: &Path, base: &Path) -> Result<Declarations, ConfigErrors> {
    let located = std::sync::Arc::new(Located::new(file, text.to_owned()));
    let form: AdaptersFileForm =
        toml_edit::de::from_str(text).map_err(|e| ConfigErrors(vec![located.de_error(&e)]))?;
    Ok(Declarations {
        adapters: form
            .adapters
            .into_iter()
            .map(|(name, config)| Declared {
                name,
                config,
                file: file.to_path_buf(),
                source: located.clone(),
            })
            .collect(),
        base: base.to_path_buf(),
    })
}

fn unreadable(file: &Path, e: &std::io::Error) -> ConfigError {
    ConfigError {
        file: file.to_path_buf(),
        line: 0,
        column: 0,
        key: String::new(),
        message: format!("cannot read the file: {e}"),
    }
}
