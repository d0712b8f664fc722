//! Reading a system directory into a [`System`], with a located diagnostic for every problem
//! in one file (this module) or between files (`rules.rs`).

use crate::diagnostic::{Code, Diagnostic, Severity};
use crate::locate::{KeyPath, Source};
use crate::model::{
    Database, DeliveryRetry, Dependency, Endpoint, EventType, Health, INJECTED_ENV, Publish,
    Service, Subscription, System, Topic,
};
use crate::raw::{self, RetrySection, ServiceFile, SystemFile, TopicExtras};
use crate::route::RouteSpec;
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;
use switchyard_types::{TopicConfig, TopicName};
use toml_edit::ImDocument;

/// The result of [`load`](crate::load): the system as far as it could be read, and every
/// diagnostic, sorted by file, line and column.
///
/// Parts that do not parse are left out of `system` (a service whose service.toml is broken,
/// a topic with a bad setting), so `system` is only fit to run when
/// [`is_ok`](Self::is_ok).
#[derive(Debug)]
pub struct Loaded {
    pub system: System,
    pub diagnostics: Vec<Diagnostic>,
}

impl Loaded {
    pub fn errors(&self) -> usize {
        self.diagnostics.iter().filter(|d| d.is_error()).count()
    }

    pub fn warnings(&self) -> usize {
        self.diagnostics.len() - self.errors()
    }

    /// No errors (warnings allowed).
    pub fn is_ok(&self) -> bool {
        self.errors() == 0
    }
}

/// The one failure that is not a diagnostic: the directory itself cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read the system directory {}: {source}", path.display())]
    UnreadableDir {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The file name of the system manifest.
pub const SYSTEM_MANIFEST: &str = "switchyard.toml";
/// The file name of a service manifest.
pub const SERVICE_MANIFEST: &str = "service.toml";

/// Loads the system in `dir` and checks it; `run` programs are looked up on `path_var`
/// (`PATH`).
pub(crate) fn load(dir: &Path, path_var: Option<OsString>) -> Result<Loaded> {
    let unreadable = |source| Error::UnreadableDir {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::read_dir(dir).map_err(unreadable)?;
    let root = std::path::absolute(dir).map_err(unreadable)?;
    let mut loader = Loader {
        root,
        path_var,
        sources: BTreeMap::new(),
        diags: Vec::new(),
        folders: BTreeSet::new(),
        all_parsed: true,
        system_parsed: false,
        origins: BTreeMap::new(),
        broken_topics: BTreeSet::new(),
        route_index: Vec::new(),
    };
    let system = loader.load_system();
    let mut diagnostics = loader.diags;
    diagnostics.extend(crate::rules::check(
        &system,
        &crate::rules::Context {
            sources: &loader.sources,
            folders: &loader.folders,
            all_parsed: loader.all_parsed,
            system_parsed: loader.system_parsed,
            origins: &loader.origins,
            broken_topics: &loader.broken_topics,
            route_index: &loader.route_index,
        },
    ));
    diagnostics.sort_by(|a, b| {
        (&a.file, a.line, a.column, a.code, &a.key)
            .cmp(&(&b.file, b.line, b.column, b.code, &b.key))
    });
    Ok(Loaded {
        system,
        diagnostics,
    })
}

/// Where a service's list entries came from: the index in the file of each entry kept in
/// `Service::publishes` and `Service::subscribes` (an entry with an error is left out).
#[derive(Debug, Default)]
pub(crate) struct Origins {
    pub(crate) publishes: Vec<usize>,
    pub(crate) subscribes: Vec<usize>,
}

struct Loader {
    root: PathBuf,
    path_var: Option<OsString>,
    sources: BTreeMap<String, Source>,
    diags: Vec<Diagnostic>,
    /// Every folder under the services directory, parsed or not.
    folders: BTreeSet<String>,
    /// Every manifest was read and parsed: rules about the system as a whole can run.
    all_parsed: bool,
    /// switchyard.toml was read and parsed: rules about topics can run.
    system_parsed: bool,
    origins: BTreeMap<String, Origins>,
    /// Topics declared with a setting in error: left out of the system, but references to
    /// them are not "undeclared".
    broken_topics: BTreeSet<TopicName>,
    /// The index in `[[routes]]` of each route of `System::routes`.
    route_index: Vec<usize>,
}

/// A diagnostic about a whole file or folder (no line: there is nothing to point into).
fn file_diagnostic(code: Code, file: &str, message: String) -> Diagnostic {
    Diagnostic {
        severity: Severity::Error,
        code,
        file: file.to_string(),
        line: None,
        column: None,
        key: String::new(),
        message,
    }
}

/// Collects one file's diagnostics.
struct Report<'a> {
    src: &'a Source,
    out: &'a mut Vec<Diagnostic>,
}

impl Report<'_> {
    fn error(&mut self, code: Code, key: &KeyPath, message: impl Into<String>) {
        self.out.push(self.src.error(code, key, message));
    }
}

impl Loader {
    /// `p` relative to the system directory, `/`-separated (as diagnostics name files).
    fn rel(&self, p: &Path) -> String {
        let r = p.strip_prefix(&self.root).unwrap_or(p);
        let s = r.to_string_lossy().replace('\\', "/");
        if s.is_empty() { ".".to_string() } else { s }
    }

    /// Reads and parses one manifest; `None`, with a diagnostic, when that fails.
    fn parse_file(&mut self, rel: &str) -> Option<ImDocument<String>> {
        let text = match std::fs::read_to_string(self.root.join(rel)) {
            Ok(t) => t,
            Err(e) => {
                self.diags.push(file_diagnostic(
                    Code::UnreadableFile,
                    rel,
                    format!("cannot read {rel}: {e}"),
                ));
                return None;
            }
        };
        match Source::parse(rel.to_string(), text) {
            Ok((source, doc)) => {
                self.sources.insert(rel.to_string(), source);
                Some(doc)
            }
            Err(d) => {
                self.diags.push(d);
                None
            }
        }
    }

    fn load_system(&mut self) -> System {
        let folder_name = self
            .root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut system = System {
            root: self.root.clone(),
            name: folder_name,
            services_dir: self.root.join("services"),
            server: None,
            host: None,
            topics: BTreeMap::new(),
            subscriptions: BTreeMap::new(),
            services: BTreeMap::new(),
            routes: Vec::new(),
        };
        let mut services_dir_explicit = false;
        if !self.root.join(SYSTEM_MANIFEST).exists() {
            self.all_parsed = false;
            self.diags.push(file_diagnostic(
                Code::MissingSystemManifest,
                SYSTEM_MANIFEST,
                format!(
                    "{} has no {SYSTEM_MANIFEST}: a system directory needs one, with at least \
                     [system] name = \"...\"",
                    self.root.display()
                ),
            ));
        } else if let Some(doc) = self.parse_file(SYSTEM_MANIFEST) {
            let parsed = self.system_manifest(doc, &mut system);
            self.system_parsed = parsed.is_some();
            self.all_parsed &= self.system_parsed;
            services_dir_explicit = parsed == Some(true);
        } else {
            self.all_parsed = false;
        }
        self.load_services(&mut system, services_dir_explicit);
        system
    }

    /// Fills `system` from switchyard.toml. `None` when the file does not deserialize, else
    /// whether `services-dir` is written.
    fn system_manifest(&mut self, doc: ImDocument<String>, system: &mut System) -> Option<bool> {
        let src = self.sources.get(SYSTEM_MANIFEST)?;
        // The topic tables, taken before the document is consumed: each is read a second time
        // as a TopicConfig.
        let topic_tables: BTreeMap<String, toml_edit::Table> = doc
            .get("topics")
            .and_then(|t| t.as_table_like())
            .into_iter()
            .flat_map(|t| t.iter())
            .filter_map(|(name, item)| {
                let table = match item {
                    toml_edit::Item::Table(t) => t.clone(),
                    toml_edit::Item::Value(toml_edit::Value::InlineTable(t)) => {
                        t.clone().into_table()
                    }
                    _ => return None,
                };
                Some((name.to_string(), table))
            })
            .collect();
        let file: SystemFile = match toml_edit::de::from_document(doc) {
            Ok(f) => f,
            Err(e) => {
                self.diags.push(src.de_error(&e));
                return None;
            }
        };
        let mut r = Report {
            src,
            out: &mut self.diags,
        };
        let root = KeyPath::root();
        let sys = root.key("system");
        if let Err(why) = check_service_name(&file.system.name) {
            r.error(
                Code::InvalidName,
                &sys.key("name"),
                format!("system name {:?} {why}", file.system.name),
            );
        }
        system.name = file.system.name;
        let explicit = file.system.services_dir.is_some();
        system.services_dir = self
            .root
            .join(file.system.services_dir.as_deref().unwrap_or("services"));
        system.server = file.server;
        if let Some(h) = file.host {
            let manifest: PathBuf = self
                .root
                .join(&h.path)
                .join("Cargo.toml")
                .components()
                .collect();
            if !manifest.is_file() {
                r.error(
                    Code::InvalidPath,
                    &root.key("host").key("path"),
                    format!(
                        "host path {:?} holds no Cargo.toml (it is relative to the system directory)",
                        h.path
                    ),
                );
            }
            system.host = Some(crate::model::Host {
                package: h.package,
                manifest,
            });
        }

        for (name, extras) in file.topics {
            let path = root.key("topics").key(&name);
            let topic_name = match TopicName::new(name.as_str()) {
                Ok(t) => t,
                Err(e) => {
                    r.error(Code::InvalidName, &path, e.to_string());
                    continue;
                }
            };
            let Some(mut table) = topic_tables.get(&name).cloned() else {
                continue;
            };
            for key in raw::TOPIC_EXTRA_KEYS {
                table.remove(key);
            }
            let config: TopicConfig =
                match toml_edit::de::from_document(toml_edit::DocumentMut::from(table)) {
                    Ok(c) => c,
                    Err(e) => {
                        let mut d = r.src.de_error(&e);
                        if d.code == Code::UnknownKey && d.message.contains("expected one of") {
                            // TopicConfig lists only its own keys.
                            d.message.push_str(", `event-types`, `external-producers`");
                        }
                        r.out.push(d);
                        self.broken_topics.insert(topic_name);
                        continue;
                    }
                };
            if let Err(e) = config.validate() {
                let key = e.field.split('.').fold(path.clone(), |p, k| p.key(k));
                r.error(Code::InvalidValue, &key, e.to_string());
                self.broken_topics.insert(topic_name);
                continue;
            }
            let external_producers = extras.external_producers;
            let event_types = event_types(&self.root, &mut r, &path, extras);
            system.topics.insert(
                topic_name.clone(),
                Topic {
                    name: topic_name,
                    config,
                    event_types,
                    external_producers,
                },
            );
        }
        for (name, section) in file.subscriptions {
            let path = root.key("subscriptions").key(&name);
            if let Err(why) = check_subscription_name(&name) {
                r.error(
                    Code::InvalidName,
                    &path,
                    format!("subscription name {name:?} {why}"),
                );
            }
            let topics = topic_list(&mut r, &path.key("topics"), &section.topics);
            if section.topics.is_empty() {
                r.error(
                    Code::InvalidValue,
                    &path.key("topics"),
                    "list at least one topic",
                );
            }
            let types_ok = check_types(&mut r, &path.key("types"), &section.types);
            if let Err(why) = check_endpoint(&section.endpoint) {
                r.error(
                    Code::InvalidEndpoint,
                    &path.key("endpoint"),
                    format!("endpoint {:?} {why}", section.endpoint),
                );
            }
            let concurrency = concurrency(&mut r, &path, section.concurrency);
            let max_batch = max_batch(&mut r, &path, section.max_batch);
            let retry = retry(&mut r, &path.key("retry"), &section.retry);
            // Kept only whole, so that `topics[i]` and `types[i]` still name the file's
            // entries for the rules that run later.
            if topics.len() < section.topics.len() || !types_ok {
                continue;
            }
            system.subscriptions.insert(
                name.clone(),
                Subscription {
                    name,
                    topics,
                    types: section.types,
                    endpoint: Endpoint::Url(section.endpoint),
                    concurrency,
                    max_batch,
                    retry,
                },
            );
        }
        for (i, route) in check_routes(file.routes, &mut r) {
            system.routes.push(route);
            self.route_index.push(i);
        }
        Some(explicit)
    }

    fn load_services(&mut self, system: &mut System, explicit: bool) {
        let dir = system.services_dir.clone();
        let dir_rel = self.rel(&dir);
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) => {
                if explicit || e.kind() != std::io::ErrorKind::NotFound {
                    let message = format!("cannot read the services folder {dir_rel}: {e}");
                    let d = match self.sources.get(SYSTEM_MANIFEST) {
                        Some(src) => src.error(
                            Code::ServicesDirNotFound,
                            &KeyPath::root().key("system").key("services-dir"),
                            message,
                        ),
                        None => file_diagnostic(Code::ServicesDirNotFound, &dir_rel, message),
                    };
                    self.diags.push(d);
                }
                // Without the folder the system has no services: nothing else to report.
                return;
            }
        };
        let mut folders: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect();
        folders.sort();
        for folder in folders {
            self.folders.insert(folder.clone());
            let folder_dir = dir.join(&folder);
            let rel = self.rel(&folder_dir.join(SERVICE_MANIFEST));
            if !folder_dir.join(SERVICE_MANIFEST).exists() {
                self.all_parsed = false;
                let folder_rel = self.rel(&folder_dir);
                self.diags.push(file_diagnostic(
                    Code::MissingServiceManifest,
                    &folder_rel,
                    format!(
                        "the folder {folder_rel} has no {SERVICE_MANIFEST}: every folder in \
                         {dir_rel}/ is a service (add one, or move the folder out)"
                    ),
                ));
                continue;
            }
            let Some(doc) = self.parse_file(&rel) else {
                self.all_parsed = false;
                continue;
            };
            let Some(src) = self.sources.get(&rel) else {
                continue;
            };
            let file: ServiceFile = match toml_edit::de::from_document(doc) {
                Ok(f) => f,
                Err(e) => {
                    self.diags.push(src.de_error(&e));
                    self.all_parsed = false;
                    continue;
                }
            };
            let mut r = Report {
                src,
                out: &mut self.diags,
            };
            let (service, origins) = service(
                &mut r,
                &ServiceContext {
                    folder: &folder,
                    dir: folder_dir,
                    manifest: rel,
                    path_var: self.path_var.as_ref(),
                },
                file,
            );
            self.origins.insert(folder.clone(), origins);
            system.services.insert(folder, service);
        }
    }
}

/// A topic's `event-types`, with their schemas read and checked.
/// `upstreams[1].url` under `base`.
/// Checks `[[routes]]`: each route's own checks and unique names, every problem located.
/// The routes without an error, with their index in the file.
fn check_routes(routes: Vec<RouteSpec>, r: &mut Report<'_>) -> Vec<(usize, RouteSpec)> {
    let mut names = BTreeSet::new();
    let mut out = Vec::new();
    for (i, route) in routes.into_iter().enumerate() {
        let path = KeyPath::root().key("routes").index(i);
        let errors = route.validate();
        for e in &errors {
            r.error(
                Code::InvalidValue,
                &field_path(&path, &e.field),
                e.message.clone(),
            );
        }
        if !names.insert(route.name.clone()) {
            r.error(
                Code::DuplicateRoute,
                &path.key("name"),
                format!("a route named {:?} is declared before this one", route.name),
            );
            continue;
        }
        if errors.is_empty() {
            out.push((i, route));
        }
    }
    out
}

/// The `[[routes]]` of a switchyard.toml read on its own (`switchyard serve`'s config, which
/// is not a whole system): every route checked as [`crate::load`] checks them, except that
/// a route's `service` is not checked against services (there are none here). `file` names
/// the file in the diagnostics; other tables are not looked at. Any error: every
/// diagnostic, and no routes.
pub fn read_routes(file: &str, text: &str) -> Result<Vec<RouteSpec>, Vec<Diagnostic>> {
    #[derive(serde::Deserialize)]
    struct RoutesOnly {
        #[serde(default)]
        routes: Vec<RouteSpec>,
    }
    let (src, doc) = Source::parse(file.to_string(), text.to_string()).map_err(|d| vec![d])?;
    let mut table = toml_edit::Table::new();
    if let Some(item) = doc.get("routes") {
        table.insert("routes", item.clone());
    }
    let routes = toml_edit::de::from_document::<RoutesOnly>(toml_edit::DocumentMut::from(table))
        .map_err(|e| vec![src.de_error(&e)])?
        .routes;
    let mut diags = Vec::new();
    let mut r = Report {
        src: &src,
        out: &mut diags,
    };
    let good = check_routes(routes, &mut r);
    if diags.is_empty() {
        Ok(good.into_iter().map(|(_, route)| route).collect())
    } else {
        Err(diags)
    }
}

fn field_path(base: &KeyPath, field: &str) -> KeyPath {
    let mut p = base.clone();
    for part in field.split('.') {
        match part.split_once('[') {
            Some((key, index)) => {
                p = p.key(key);
                if let Ok(i) = index.trim_end_matches(']').parse() {
                    p = p.index(i);
                }
            }
            None => p = p.key(part),
        }
    }
    p
}

fn event_types(
    root: &Path,
    r: &mut Report<'_>,
    topic: &KeyPath,
    extras: TopicExtras,
) -> BTreeMap<String, EventType> {
    let mut out = BTreeMap::new();
    for (ty, section) in extras.event_types {
        let path = topic.key("event-types").key(&ty);
        if let Err(why) = check_type(&ty) {
            r.error(Code::InvalidName, &path, format!("event type {ty:?} {why}"));
        }
        let (schema_file, schema) = match section.schema {
            None => (None, None),
            Some(rel) => {
                let file = root.join(&rel);
                let schema = schema(r, &path.key("schema"), &rel, &file);
                (Some(file), schema)
            }
        };
        out.insert(
            ty,
            EventType {
                schema_file,
                schema,
            },
        );
    }
    out
}

/// Reads a schema file and checks that it is JSON and a JSON Schema that compiles (as
/// the server compiles it: no remote or file references).
fn schema(r: &mut Report<'_>, key: &KeyPath, rel: &str, file: &Path) -> Option<serde_json::Value> {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            r.error(
                Code::SchemaNotFound,
                key,
                format!("cannot read the schema file {rel}: {e}"),
            );
            return None;
        }
    };
    let value: serde_json::Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => {
            r.error(
                Code::SchemaInvalidJson,
                key,
                format!("the schema file {rel} is not JSON: {e}"),
            );
            return None;
        }
    };
    if let Err(e) = jsonschema::validator_for(&value) {
        r.error(
            Code::SchemaInvalid,
            key,
            format!("the schema file {rel} is not a JSON Schema the server accepts: {e}"),
        );
        return None;
    }
    Some(value)
}

struct ServiceContext<'a> {
    folder: &'a str,
    dir: PathBuf,
    manifest: String,
    path_var: Option<&'a OsString>,
}

/// Turns one parsed service.toml into a [`Service`], reporting what is wrong in it.
fn service(r: &mut Report<'_>, cx: &ServiceContext<'_>, file: ServiceFile) -> (Service, Origins) {
    let root = KeyPath::root();
    if let Err(why) = check_service_name(&file.name) {
        r.error(
            Code::InvalidName,
            &root.key("name"),
            format!("service name {:?} {why}", file.name),
        );
    } else if file.name != cx.folder {
        r.error(
            Code::NameMismatch,
            &root.key("name"),
            format!(
                "name {:?} is not the name of the service's folder {:?}: the folder names the \
                 service (rename one of them)",
                file.name, cx.folder
            ),
        );
    }

    // `components()` drops the `.` parts (`workdir = "."`, `run = "./serve.sh"`).
    let workdir: PathBuf = match &file.workdir {
        Some(w) => cx.dir.join(w).components().collect(),
        None => cx.dir.clone(),
    };
    let workdir_ok = workdir.is_dir();
    if !workdir_ok {
        r.error(
            Code::WorkdirNotFound,
            &root.key("workdir"),
            format!(
                "workdir {:?} is not a folder (it is relative to the service's folder)",
                file.workdir.as_deref().unwrap_or_default()
            ),
        );
    }
    let run_line = match (&file.run, file.in_process) {
        (Some(run), false) => run.clone(),
        (None, true) => "in-process".to_string(),
        (Some(_), true) => {
            r.error(
                Code::InvalidRun,
                &root.key("run"),
                "an in-process service has no `run`: it runs inside the host (drop one of \
                 `run` and `in-process`)",
            );
            String::new()
        }
        (None, false) => {
            r.error(
                Code::MissingKey,
                &root,
                "missing key `run` (the command that starts the service), or \
                 `in-process = true` for a Rust service of the system's [host]",
            );
            String::new()
        }
    };
    let argv = match shell_words::split(&run_line) {
        _ if file.in_process || file.run.is_none() => Vec::new(),
        Err(e) => {
            r.error(
                Code::InvalidRun,
                &root.key("run"),
                format!("cannot split run into words: {e}"),
            );
            Vec::new()
        }
        Ok(words) if words.is_empty() => {
            r.error(Code::InvalidRun, &root.key("run"), "run is empty");
            Vec::new()
        }
        Ok(mut words) => {
            if workdir_ok {
                match resolve_program(&words[0], &workdir, cx.path_var) {
                    Ok(Some(path)) => words[0] = path.to_string_lossy().into_owned(),
                    Ok(None) => {}
                    Err((code, message)) => r.error(code, &root.key("run"), message),
                }
            }
            words
        }
    };

    if file.port == Some(0) {
        r.error(
            Code::InvalidValue,
            &root.key("port"),
            "port must be 1 to 65535 (leave it out and the dev runner picks one)",
        );
    }

    let mut health = Health::default();
    if let Some(path) = file.health.path {
        if !path.starts_with('/') {
            r.error(
                Code::InvalidPath,
                &root.key("health").key("path"),
                format!("health path {path:?} must start with `/`"),
            );
        }
        health.path = path;
    }
    if let Some(t) = file.health.timeout {
        if t.0.is_zero() || t.0 > Duration::from_secs(600) {
            r.error(
                Code::InvalidValue,
                &root.key("health").key("timeout"),
                format!("health timeout must be 1ms to 10m (got {:?})", t.0),
            );
        }
        health.timeout = t.0;
    }

    for name in file.env.keys() {
        let key = root.key("env").key(name);
        if !is_env_name(name) {
            r.error(
                Code::InvalidEnvName,
                &key,
                format!(
                    "{name:?} is not an environment variable name (letters, digits and `_`, \
                     not starting with a digit)"
                ),
            );
        } else if INJECTED_ENV.contains(&name.as_str()) {
            r.error(
                Code::ReservedEnvVar,
                &key,
                format!(
                    "{name} is set by the dev runner and cannot be overridden (it sets {})",
                    INJECTED_ENV.join(", ")
                ),
            );
        }
    }

    let database = file.database.map(|db| {
        let migrations = db.migrations.map(|m| {
            let dir = cx.dir.join(&m);
            if !dir.is_dir() {
                r.error(
                    Code::MigrationsNotFound,
                    &root.key("database").key("migrations"),
                    format!(
                        "migrations folder {m:?} does not exist (it is relative to the \
                         service's folder)"
                    ),
                );
            }
            dir
        });
        Database {
            kind: db.kind,
            migrations,
        }
    });

    let mut origins = Origins::default();
    let mut publishes = Vec::new();
    for (i, p) in file.publishes.into_iter().enumerate() {
        let path = root.key("publishes").index(i);
        let topic = topic_name(r, &path.key("topic"), &p.topic);
        if p.types.is_empty() {
            r.error(
                Code::InvalidValue,
                &path.key("types"),
                "list the event types the service publishes to the topic",
            );
        }
        let types_ok = check_types(r, &path.key("types"), &p.types);
        if let (Some(topic), true) = (topic, types_ok) {
            origins.publishes.push(i);
            publishes.push(Publish {
                topic,
                types: p.types,
            });
        }
    }

    let mut subscribes = Vec::new();
    for (i, s) in file.subscribes.into_iter().enumerate() {
        let path = root.key("subscribes").index(i);
        let topic = topic_name(r, &path.key("topic"), &s.topic);
        let types_ok = check_types(r, &path.key("types"), &s.types);
        let endpoint_path = s.path.unwrap_or_else(|| "/events".to_string());
        if !endpoint_path.starts_with('/') {
            r.error(
                Code::InvalidPath,
                &path.key("path"),
                format!("path {endpoint_path:?} must start with `/` (a path on this service)"),
            );
        }
        let name = s
            .name
            .unwrap_or_else(|| format!("{}.{}", cx.folder, s.topic));
        if let Err(why) = check_subscription_name(&name) {
            r.error(
                Code::InvalidName,
                &path.key("name"),
                format!("subscription name {name:?} {why}"),
            );
        }
        let concurrency = concurrency(r, &path, s.concurrency);
        let max_batch = max_batch(r, &path, s.max_batch);
        let retry = retry(r, &path.key("retry"), &s.retry);
        if let (Some(topic), true) = (topic, types_ok) {
            origins.subscribes.push(i);
            subscribes.push(Subscription {
                name,
                topics: vec![topic],
                types: s.types,
                endpoint: Endpoint::Service {
                    service: cx.folder.to_string(),
                    path: endpoint_path,
                },
                concurrency,
                max_batch,
                retry,
            });
        }
    }

    let mut dependencies = BTreeMap::new();
    for (to, d) in file.dependencies {
        let path = root.key("dependencies").key(&to);
        let on_failure_key = path.key("on-failure");
        let Some(raw) = d.on_failure else {
            r.error(
                Code::MissingOnFailure,
                &on_failure_key,
                format!(
                    "the dependency on {to:?} declares no on-failure policy: say what happens \
                     while {to} is down: {} (e.g. on-failure = \"fail\")",
                    crate::policy::POLICIES.join(", ")
                ),
            );
            continue;
        };
        match crate::policy::resolve(&raw, d.kind) {
            Ok(on_failure) => {
                dependencies.insert(
                    to,
                    Dependency {
                        kind: d.kind,
                        on_failure,
                    },
                );
            }
            Err(problems) => {
                for p in problems {
                    let key = match p.key {
                        Some(k) => on_failure_key.key(k),
                        None => on_failure_key.clone(),
                    };
                    let code = if p.queue_needs_async {
                        Code::QueueNeedsAsync
                    } else {
                        Code::InvalidPolicy
                    };
                    r.error(code, &key, p.message);
                }
            }
        }
    }

    let service = Service {
        name: cx.folder.to_string(),
        dir: cx.dir.clone(),
        manifest: cx.manifest.clone(),
        run_line,
        in_process: file.in_process,
        argv,
        workdir,
        port: file.port,
        health,
        env: file.env,
        database,
        publishes,
        subscribes,
        dependencies,
    };
    (service, origins)
}

/// Finds the program of `run`. A name with a `/` is a path against `workdir` (returned
/// absolute); a bare name is looked up on `PATH` (and left as it is for the runner's own
/// lookup).
fn resolve_program(
    program: &str,
    workdir: &Path,
    path_var: Option<&OsString>,
) -> Result<Option<PathBuf>, (Code, String)> {
    if program.contains('/') {
        let path: PathBuf = workdir.join(program).components().collect();
        return match std::fs::metadata(&path) {
            Err(_) => Err((
                Code::RunNotFound,
                format!(
                    "the program {program:?} does not exist (a path is relative to the workdir)"
                ),
            )),
            Ok(m) if !m.is_file() => Err((
                Code::RunNotExecutable,
                format!("the program {program:?} is not a file"),
            )),
            Ok(m) if !is_executable(&m) => Err((
                Code::RunNotExecutable,
                format!("the program {program:?} is not executable (chmod +x it)"),
            )),
            Ok(_) => Ok(Some(path)),
        };
    }
    let found = path_var
        .map(std::env::split_paths)
        .into_iter()
        .flatten()
        .map(|dir| dir.join(program))
        .any(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file() && is_executable(&m)));
    if found {
        Ok(None)
    } else {
        Err((
            Code::RunNotFound,
            format!(
                "the program {program:?} is not on PATH (for a program in the workdir, write \
                 ./{program})"
            ),
        ))
    }
}

#[cfg(unix)]
fn is_executable(m: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    m.permissions().mode() & 0o111 != 0
}

#[cfg(not(unix))]
fn is_executable(_: &std::fs::Metadata) -> bool {
    true
}

fn topic_name(r: &mut Report<'_>, key: &KeyPath, name: &str) -> Option<TopicName> {
    match TopicName::new(name) {
        Ok(t) => Some(t),
        Err(e) => {
            r.error(Code::InvalidName, key, e.to_string());
            None
        }
    }
}

/// The valid names of a list of topics (each bad one reported).
fn topic_list(r: &mut Report<'_>, key: &KeyPath, names: &[String]) -> Vec<TopicName> {
    names
        .iter()
        .enumerate()
        .filter_map(|(i, n)| topic_name(r, &key.index(i), n))
        .collect()
}

/// Reports each bad event type of a list; true when all are good.
fn check_types(r: &mut Report<'_>, key: &KeyPath, types: &[String]) -> bool {
    let mut ok = true;
    for (i, ty) in types.iter().enumerate() {
        if let Err(why) = check_type(ty) {
            r.error(
                Code::InvalidName,
                &key.index(i),
                format!("event type {ty:?} {why}"),
            );
            ok = false;
        }
    }
    ok
}

fn concurrency(r: &mut Report<'_>, path: &KeyPath, value: Option<u32>) -> u32 {
    let c = value.unwrap_or(16);
    if !(1..=1024).contains(&c) {
        r.error(
            Code::InvalidValue,
            &path.key("concurrency"),
            format!("concurrency must be 1 to 1024 (got {c})"),
        );
    }
    c
}

fn max_batch(r: &mut Report<'_>, path: &KeyPath, value: Option<u32>) -> u32 {
    let n = value.unwrap_or(1);
    if !(1..=switchyard_types::MAX_BATCH).contains(&n) {
        r.error(
            Code::InvalidValue,
            &path.key("max-batch"),
            format!(
                "max-batch must be 1 to {} (got {n})",
                switchyard_types::MAX_BATCH
            ),
        );
    }
    n
}

/// A subscription's retry policy, with the bus's defaults and ranges.
fn retry(r: &mut Report<'_>, path: &KeyPath, raw: &RetrySection) -> DeliveryRetry {
    const DAY: Duration = Duration::from_secs(24 * 3600);
    let d = DeliveryRetry::default();
    let retry = DeliveryRetry {
        initial_backoff: raw.initial_backoff.map_or(d.initial_backoff, |x| x.0),
        max_backoff: raw.max_backoff.map_or(d.max_backoff, |x| x.0),
        multiplier: raw.multiplier.unwrap_or(d.multiplier),
        jitter: raw.jitter.unwrap_or(d.jitter),
        max_attempts: raw.max_attempts.unwrap_or(d.max_attempts),
        max_age: raw.max_age.map_or(d.max_age, |x| x.0),
    };
    let ms = Duration::from_millis(1);
    let mut bad = |key: &str, message: String| r.error(Code::InvalidValue, &path.key(key), message);
    if !(ms..=DAY).contains(&retry.initial_backoff) {
        bad(
            "initial-backoff",
            format!(
                "initial-backoff must be 1ms to 1d (got {:?})",
                retry.initial_backoff
            ),
        );
    }
    if !(retry.initial_backoff..=DAY).contains(&retry.max_backoff) {
        bad(
            "max-backoff",
            format!(
                "max-backoff must be from initial-backoff ({:?}) to 1d (got {:?})",
                retry.initial_backoff, retry.max_backoff
            ),
        );
    }
    if !(retry.multiplier.is_finite() && (1.0..=100.0).contains(&retry.multiplier)) {
        bad(
            "multiplier",
            format!("multiplier must be 1.0 to 100.0 (got {})", retry.multiplier),
        );
    }
    if !(retry.jitter.is_finite() && (0.0..=1.0).contains(&retry.jitter)) {
        bad(
            "jitter",
            format!("jitter must be 0.0 to 1.0 (got {})", retry.jitter),
        );
    }
    if retry.max_attempts == 0 {
        bad(
            "max-attempts",
            "max-attempts must be at least 1".to_string(),
        );
    }
    if !(ms..=30 * DAY).contains(&retry.max_age) {
        bad(
            "max-age",
            format!("max-age must be 1ms to 30d (got {:?})", retry.max_age),
        );
    }
    retry
}

/// A system or service name: a DNS label (lowercase letters, digits and `-`, starting with a
/// letter, at most 63 characters), so it can name a host or a Kubernetes service.
fn check_service_name(name: &str) -> std::result::Result<(), &'static str> {
    if name.is_empty() || name.len() > 63 {
        return Err("must be 1 to 63 characters");
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) || name.ends_with('-') {
        return Err("must start with a lowercase letter and not end with `-`");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err("may contain only lowercase letters, digits and `-`");
    }
    Ok(())
}

/// The store's rule for subscription names: 1 to 200 of `[A-Za-z0-9._-]`.
fn check_subscription_name(name: &str) -> std::result::Result<(), &'static str> {
    if name.is_empty() || name.len() > 200 {
        return Err("must be 1 to 200 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err("may contain only ASCII letters, digits, `.`, `_` and `-`");
    }
    Ok(())
}

/// The server's rule for event types: 1 to 200 bytes, no whitespace or control characters.
fn check_type(ty: &str) -> std::result::Result<(), &'static str> {
    if ty.is_empty() || ty.len() > 200 {
        return Err("must be 1 to 200 bytes");
    }
    if ty.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("must not contain whitespace or control characters");
    }
    Ok(())
}

/// An absolute `http://` or `https://` URL with a host.
fn check_endpoint(url: &str) -> std::result::Result<(), &'static str> {
    if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("must not contain whitespace or control characters");
    }
    let lower = url.to_ascii_lowercase();
    let Some(rest) = lower
        .strip_prefix("http://")
        .or_else(|| lower.strip_prefix("https://"))
    else {
        return Err("must be an http:// or https:// URL");
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority.rsplit('@').next().unwrap_or_default();
    if host.is_empty() || host.starts_with(':') {
        return Err("must name a host");
    }
    Ok(())
}

/// `[A-Za-z_][A-Za-z0-9_]*`.
fn is_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{DependencyKind, OnFailure};

    /// A system directory in a temp dir, written file by file.
    struct Dir(tempfile::TempDir);

    impl Dir {
        fn new(files: &[(&str, &str)]) -> Self {
            let d = Dir(tempfile::tempdir().unwrap());
            for (path, text) in files {
                d.write(path, text);
            }
            d
        }

        fn write(&self, path: &str, text: &str) {
            let p = self.0.path().join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }

        fn load(&self) -> Loaded {
            // `sh` must be found for `run`; nothing else on PATH matters.
            load(self.0.path(), Some(OsString::from("/usr/bin:/bin"))).unwrap()
        }
    }

    const SYSTEM: &str = r#"
[system]
name = "shop"

# `switchyard serve`'s: kept as written, whatever is in it.
[server]
listen = "127.0.0.1:7400"
[[server.tokens]]
name = "ops"
secret-env = "OPS_TOKEN"
scopes = ["admin"]

[topics."orders.v1"]
partitions = 3
event-types = { "order.placed" = {} }
"#;

    fn codes(l: &Loaded) -> Vec<(&str, Code, Option<u32>, &str)> {
        l.diagnostics
            .iter()
            .map(|d| (d.file.as_str(), d.code, d.line, d.key.as_str()))
            .collect()
    }

    #[test]
    fn a_small_system_loads_with_its_defaults_resolved() {
        let d = Dir::new(&[
            ("switchyard.toml", SYSTEM),
            (
                "services/orders/service.toml",
                r#"
name = "orders"
run = "sh -c 'exec ./serve \"$PORT\"'"
[[publishes]]
topic = "orders.v1"
types = ["order.placed"]
[[subscribes]]
topic = "orders.v1"
[dependencies.billing]
kind = "sync"
on-failure = "fail"
"#,
            ),
            (
                "services/billing/service.toml",
                "name = \"billing\"\nrun = \"./bin/serve\"\nport = 8080\n",
            ),
        ]);
        d.write("services/billing/bin/serve", "#!/bin/sh\n");
        make_executable(&d.0.path().join("services/billing/bin/serve"));
        let l = d.load();
        assert!(l.diagnostics.is_empty(), "{:#?}", l.diagnostics);
        let s = &l.system;
        assert_eq!(s.name, "shop");
        assert_eq!(s.topics.len(), 1);
        let server = s.server.as_ref().unwrap();
        assert_eq!(server["listen"].as_str(), Some("127.0.0.1:7400"));
        assert!(server["tokens"].is_array());
        let orders = &s.services["orders"];
        assert_eq!(orders.argv, ["sh", "-c", "exec ./serve \"$PORT\""]);
        assert_eq!(orders.workdir, d.0.path().join("services/orders"));
        assert_eq!(orders.health, Health::default());
        assert_eq!(orders.subscribes[0].name, "orders.orders.v1");
        assert_eq!(
            orders.subscribes[0].endpoint,
            Endpoint::Service {
                service: "orders".into(),
                path: "/events".into()
            }
        );
        assert_eq!(orders.dependencies["billing"].kind, DependencyKind::Sync);
        assert_eq!(orders.dependencies["billing"].on_failure, OnFailure::Fail);
        let billing = &s.services["billing"];
        let program = d.0.path().join("services/billing/bin/serve");
        assert_eq!(billing.argv, [program.to_string_lossy()]);
        let order: Vec<&str> = s.start_order().iter().map(|s| s.name.as_str()).collect();
        assert_eq!(order, ["billing", "orders"]);
    }

    #[cfg(unix)]
    fn make_executable(p: &Path) {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[cfg(not(unix))]
    fn make_executable(_: &Path) {}

    #[test]
    fn topic_settings_are_read_as_topic_config_with_located_errors() {
        let d = Dir::new(&[(
            "switchyard.toml",
            "[system]\nname = \"s\"\n\n[topics.\"a.v1\"]\npartitons = 3\n\n\
             [topics.\"b.v1\"]\nsegment-bytes = 10\n\n\
             [topics.\"c.v1\"]\ndurability = \"sometimes\"\n",
        )]);
        let l = d.load();
        assert_eq!(
            codes(&l),
            [
                (
                    "switchyard.toml",
                    Code::UnknownKey,
                    Some(5),
                    "topics.\"a.v1\".partitons"
                ),
                (
                    "switchyard.toml",
                    Code::InvalidValue,
                    Some(8),
                    "topics.\"b.v1\".segment-bytes"
                ),
                (
                    "switchyard.toml",
                    Code::InvalidValue,
                    Some(11),
                    "topics.\"c.v1\".durability"
                ),
            ]
        );
    }

    #[test]
    fn in_process_services_need_a_host_and_no_run() {
        let d = Dir::new(&[
            ("switchyard.toml", "[system]\nname = \"s\"\n"),
            (
                "services/a/service.toml",
                "name = \"a\"\nin-process = true\n",
            ),
            (
                "services/b/service.toml",
                "name = \"b\"\nrun = \"sh\"\nin-process = true\n",
            ),
            ("services/c/service.toml", "name = \"c\"\n"),
        ]);
        let l = d.load();
        let mut got = codes(&l);
        got.sort();
        assert_eq!(
            got,
            [
                (
                    "services/a/service.toml",
                    Code::MissingKey,
                    Some(2),
                    "in-process"
                ),
                (
                    "services/b/service.toml",
                    Code::MissingKey,
                    Some(3),
                    "in-process"
                ),
                ("services/b/service.toml", Code::InvalidRun, Some(2), "run"),
                ("services/c/service.toml", Code::MissingKey, Some(1), ""),
            ]
        );
        let a = &l.system.services["a"];
        assert!(a.in_process && a.argv.is_empty());

        // With a [host] whose folder has a Cargo.toml, in-process is fine.
        let d = Dir::new(&[
            (
                "switchyard.toml",
                "[system]\nname = \"s\"\n[host]\npackage = \"s-host\"\npath = \"host\"\n",
            ),
            ("host/Cargo.toml", "[package]\nname = \"s-host\"\n"),
            (
                "services/a/service.toml",
                "name = \"a\"\nin-process = true\n",
            ),
        ]);
        let l = d.load();
        assert!(l.diagnostics.is_empty(), "{:#?}", l.diagnostics);
        let host = l.system.host.as_ref().expect("host");
        assert_eq!(host.package, "s-host");
        assert!(host.manifest.ends_with("host/Cargo.toml"));
        // A [host] path without a Cargo.toml is named.
        let d = Dir::new(&[(
            "switchyard.toml",
            "[system]\nname = \"s\"\n[host]\npackage = \"x\"\npath = \"nowhere\"\n",
        )]);
        assert_eq!(
            codes(&d.load()),
            [("switchyard.toml", Code::InvalidPath, Some(5), "host.path")]
        );
    }

    #[test]
    fn topics_may_be_written_inline() {
        let d = Dir::new(&[(
            "switchyard.toml",
            "system = { name = \"s\" }\n\
             topics = { \"a.v1\" = { partitions = 2, external-producers = true, \
             event-types = { \"a.done\" = {} } } }\n",
        )]);
        let l = d.load();
        let topic = &l.system.topics[&TopicName::new("a.v1").unwrap()];
        assert_eq!(topic.config.partitions, 2);
        assert!(topic.external_producers);
        assert!(topic.event_types.contains_key("a.done"));
        // The one diagnostic: nobody reads it.
        assert_eq!(
            codes(&l),
            [(
                "switchyard.toml",
                Code::UnusedTopic,
                Some(2),
                "topics.\"a.v1\""
            )]
        );
    }

    #[test]
    fn rate_limits_and_quotas_are_checked_with_their_line_and_key() {
        let d = Dir::new(&[
            (
                "switchyard.toml",
                "[system]\nname = \"s\"\n\n\
                 [[routes]]\nname = \"good\"\npath = \"/g\"\nservice = \"a\"\n\
                 rate-limit = { requests = 10, per = \"1s\", burst = 5, by = \"route\" }\n\
                 quota = { daily = 100, monthly = 1000 }\n\n\
                 [[routes]]\nname = \"bad\"\npath = \"/b\"\nservice = \"a\"\n\
                 [routes.rate-limit]\nrequests = 0\nper = \"2d\"\nburst = 2000000\n\
                 [routes.quota]\ndaily = 500\nmonthly = 100\n\n\
                 [[routes]]\nname = \"empty\"\npath = \"/e\"\nservice = \"a\"\nquota = {}\n",
            ),
            ("services/a/service.toml", "name = \"a\"\nrun = \"sh\"\n"),
        ]);
        let l = d.load();
        let c = codes(&l);
        let at = |key: &str| {
            c.iter()
                .find(|x| x.3 == key)
                .map(|x| (x.0, x.1, x.2))
                .unwrap_or_else(|| panic!("no diagnostic at {key}: {c:?}"))
        };
        let bad = |line| ("switchyard.toml", Code::InvalidValue, Some(line));
        assert_eq!(at("routes[1].rate-limit.requests"), bad(16));
        assert_eq!(at("routes[1].rate-limit.per"), bad(17));
        assert_eq!(at("routes[1].rate-limit.burst"), bad(18));
        assert_eq!(at("routes[1].quota.daily"), bad(20));
        assert_eq!(at("routes[2].quota"), bad(27));
        assert_eq!(c.len(), 5, "{c:?}");
        let good = &l.system.routes[0];
        assert_eq!(good.name, "good");
        let r = good.rate_limit.as_ref().expect("a rate limit");
        assert_eq!(
            (r.requests, r.burst(), r.by),
            (10, 5, crate::LimitBy::Route)
        );
        assert_eq!(good.quota.as_ref().map(|q| q.daily), Some(Some(100)));
        // A value serde refuses (an unknown `by`, an unknown key) is located too.
        for (extra, line) in [
            (
                "rate-limit = { requests = 1, per = \"1s\", by = \"planet\" }",
                7,
            ),
            ("[routes.quota]\ndaily = 1\nweekly = 2", 9),
        ] {
            let d = Dir::new(&[(
                "switchyard.toml",
                &format!(
                    "[system]\nname = \"s\"\n[[routes]]\nname = \"a\"\npath = \"/\"\nservice = \"a\"\n{extra}\n"
                ),
            )]);
            let l = d.load();
            let c = codes(&l);
            assert_eq!(c.len(), 1, "{extra}: {c:?}");
            assert_eq!(c[0].2, Some(line), "{extra}: {c:?}");
        }
    }

    #[test]
    fn composed_routes_are_checked_with_their_line_and_key() {
        let d = Dir::new(&[
            (
                "switchyard.toml",
                "[system]\nname = \"s\"\n\n\
                 [[routes]]\nname = \"good\"\npath = \"/o/{id}\"\n\
                 [routes.compose]\nmerge = '{o: .order, p: $params.id}'\n\
                 [[routes.compose.parts]]\nname = \"order\"\nservice = \"a\"\npath = \"/orders/{id}?full={id}\"\nrequired = true\n\
                 [[routes.compose.parts]]\nname = \"other\"\nurl = \"http://127.0.0.1:9\"\npath = \"/x\"\ntimeout = \"200ms\"\n\n\
                 [[routes]]\nname = \"bad\"\npath = \"/b/{id}\"\nmethods = [\"POST\"]\n\
                 [routes.compose]\nmerge = '{o: .order'\n\
                 [[routes.compose.parts]]\nname = \"Order\"\nservice = \"nowhere\"\npath = \"/orders/{nope}\"\n\
                 [[routes.compose.parts]]\nname = \"p\"\npath = \"/p\"\n\n\
                 [[routes]]\nname = \"ghost\"\npath = \"/g\"\n\
                 compose = { parts = [{ name = \"g\", service = \"nowhere\", path = \"/\" }] }\n",
            ),
            ("services/a/service.toml", "name = \"a\"\nrun = \"sh\"\n"),
        ]);
        let l = d.load();
        let c = codes(&l);
        let at = |key: &str| {
            c.iter()
                .find(|x| x.3 == key)
                .map(|x| (x.1, x.2))
                .unwrap_or_else(|| panic!("no diagnostic at {key}: {c:?}"))
        };
        assert_eq!(at("routes[1].methods[0]"), (Code::InvalidValue, Some(23)));
        assert_eq!(
            at("routes[1].compose.merge"),
            (Code::InvalidValue, Some(25))
        );
        assert_eq!(
            at("routes[1].compose.parts[0].name"),
            (Code::InvalidValue, Some(27))
        );
        assert_eq!(
            at("routes[1].compose.parts[0].path"),
            (Code::InvalidValue, Some(29))
        );
        // A key that is missing is located at its table.
        assert_eq!(
            at("routes[1].compose.parts[1].service"),
            (Code::InvalidValue, Some(30))
        );
        // Only a route without errors of its own meets the rules between files.
        assert_eq!(
            at("routes[2].compose.parts[0].service"),
            (Code::UnknownService, Some(37))
        );
        assert_eq!(c.len(), 6, "{c:?}");
        let good = &l.system.routes[0];
        let compose = good.compose.as_ref().expect("composed");
        assert_eq!(compose.parts.len(), 2);
        assert!(compose.parts[0].required && !compose.parts[1].required);
        let merge_error = l
            .diagnostics
            .iter()
            .find(|d| d.key == "routes[1].compose.merge")
            .expect("merge");
        assert!(
            merge_error.message.contains("syntax error"),
            "{merge_error}"
        );
    }

    #[test]
    fn access_log_topics_must_be_declared() {
        let d = Dir::new(&[
            (
                "switchyard.toml",
                "[system]\nname = \"s\"\n[topics.\"access.v1\"]\n\n\
                 [[routes]]\nname = \"a\"\npath = \"/a\"\nservice = \"a\"\n\
                 access-log = { topic = \"access.v1\" }\n\n\
                 [[routes]]\nname = \"b\"\npath = \"/b\"\nservice = \"a\"\n\
                 access-log = { topic = \"nowhere.v1\" }\n",
            ),
            ("services/a/service.toml", "name = \"a\"\nrun = \"sh\"\n"),
        ]);
        let l = d.load();
        // The declared one is written by the gateway: neither unused nor without a producer.
        assert_eq!(
            codes(&l),
            [(
                "switchyard.toml",
                Code::UnknownTopic,
                Some(15),
                "routes[1].access-log.topic"
            )]
        );
        let d = Dir::new(&[(
            "switchyard.toml",
            "[system]\nname = \"s\"\n[[routes]]\nname = \"a\"\npath = \"/a\"\n\
             upstreams = [{ url = \"http://127.0.0.1:1\" }]\naccess-log = { topic = \".bad\" }\n",
        )]);
        let l = d.load();
        let c = codes(&l);
        assert_eq!((c[0].1, c[0].2), (Code::InvalidValue, Some(7)), "{c:?}");
    }

    #[test]
    fn routes_read_on_their_own_are_located_too() {
        let text = "[server]\nlisten = \"127.0.0.1:0\"\n[anything-else]\nx = 1\n\
                    [[routes]]\nname = \"a\"\npath = \"/a\"\nservice = \"nowhere\"\n\
                    rate-limit = { requests = 5, per = \"1s\" }\n";
        let routes = read_routes("cfg.toml", text).expect("good routes");
        assert_eq!(routes[0].rate_limit.as_ref().map(|r| r.requests), Some(5));
        assert!(
            read_routes("cfg.toml", "[server]\n")
                .expect("none")
                .is_empty()
        );
        let bad = format!(
            "{text}\n[[routes]]\nname = \"b\"\npath = \"/b\"\nservice = \"b\"\nquota = {{ daily = 0 }}\n"
        );
        let d = read_routes("cfg.toml", &bad).expect_err("a bad quota");
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(
            (d[0].file.as_str(), d[0].line, d[0].key.as_str()),
            ("cfg.toml", Some(15), "routes[1].quota.daily")
        );
        assert!(
            d[0].to_string()
                .starts_with("error[invalid-value]: cfg.toml:15:"),
            "{}",
            d[0]
        );
        let d = read_routes(
            "cfg.toml",
            "[[routes]]\nname = \"a\"\npath = \"/\"\nsrvice = \"a\"\n",
        )
        .expect_err("an unknown key");
        assert_eq!((d[0].code, d[0].line), (Code::UnknownKey, Some(4)), "{d:?}");
    }

    #[test]
    fn routes_are_checked_with_their_line_and_key() {
        let d = Dir::new(&[
            (
                "switchyard.toml",
                "[system]\nname = \"s\"\n\n\
                 [[routes]]\nname = \"a\"\npath = \"/a/{*rest}\"\nstrip-prefix = true\nservice = \"a\"\n\n\
                 [[routes]]\nname = \"b\"\npath = \"/b\"\nservice = \"nowhere\"\n\n\
                 [[routes]]\nname = \"c\"\npath = \"c\"\nupstreams = [{ url = \"ftp://x\" }]\n\n\
                 [[routes]]\nname = \"a\"\npath = \"/x\"\nservice = \"a\"\n",
            ),
            ("services/a/service.toml", "name = \"a\"\nrun = \"sh\"\n"),
        ]);
        let l = d.load();
        assert_eq!(
            codes(&l),
            [
                (
                    "switchyard.toml",
                    Code::UnknownService,
                    Some(13),
                    "routes[1].service"
                ),
                (
                    "switchyard.toml",
                    Code::InvalidValue,
                    Some(17),
                    "routes[2].path"
                ),
                (
                    "switchyard.toml",
                    Code::InvalidValue,
                    Some(18),
                    "routes[2].upstreams[0].url"
                ),
                (
                    "switchyard.toml",
                    Code::DuplicateRoute,
                    Some(21),
                    "routes[3].name"
                ),
            ]
        );
        assert_eq!(
            l.system
                .routes
                .iter()
                .map(|r| r.name.as_str())
                .collect::<Vec<_>>(),
            ["a", "b"]
        );
        // An unknown key is refused, located.
        let d = Dir::new(&[(
            "switchyard.toml",
            "[system]\nname = \"s\"\n[[routes]]\nname = \"a\"\npath = \"/\"\nservice = \"a\"\nprefix = \"/\"\n",
        )]);
        let l = d.load();
        let c = codes(&l);
        assert_eq!(c[0].1, Code::UnknownKey, "{c:?}");
        assert_eq!(c[0].2, Some(7), "{c:?}");
    }

    #[test]
    fn a_missing_on_failure_is_located_at_its_dependency() {
        let d = Dir::new(&[
            ("switchyard.toml", SYSTEM),
            (
                "services/a/service.toml",
                "name = \"a\"\nrun = \"sh\"\n\n[dependencies.b]\nkind = \"sync\"\n",
            ),
            ("services/b/service.toml", "name = \"b\"\nrun = \"sh\"\n"),
        ]);
        let l = d.load();
        let errors: Vec<_> = l.diagnostics.iter().filter(|d| d.is_error()).collect();
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert_eq!(errors[0].code, Code::MissingOnFailure);
        assert_eq!(errors[0].key, "dependencies.b.on-failure");
        assert_eq!(errors[0].line, Some(4));
        assert!(
            errors[0]
                .message
                .contains("fail, retry, fallback, queue, degrade")
        );
    }

    #[test]
    fn policy_problems_point_at_their_parameter() {
        let d = Dir::new(&[
            ("switchyard.toml", SYSTEM),
            (
                "services/a/service.toml",
                "name = \"a\"\nrun = \"sh\"\n\n[dependencies.b]\nkind = \"sync\"\n\
                 [dependencies.b.on-failure]\npolicy = \"fallback\"\nstatus = 42\n\n\
                 [dependencies.c]\nkind = \"sync\"\non-failure = { policy = \"queue\", topic = \"orders.v1\" }\n",
            ),
            ("services/b/service.toml", "name = \"b\"\nrun = \"sh\"\n"),
            ("services/c/service.toml", "name = \"c\"\nrun = \"sh\"\n"),
        ]);
        let l = d.load();
        let errors: Vec<_> = l
            .diagnostics
            .iter()
            .filter(|d| d.is_error())
            .map(|d| (d.code, d.line, d.key.as_str()))
            .collect();
        assert_eq!(
            errors,
            [
                (
                    Code::InvalidPolicy,
                    Some(8),
                    "dependencies.b.on-failure.status"
                ),
                (
                    Code::QueueNeedsAsync,
                    Some(12),
                    "dependencies.c.on-failure.policy"
                ),
            ]
        );
    }

    #[test]
    fn a_sync_cycle_is_named_whole_once() {
        let svc = |name: &str, dep: &str, kind: &str| {
            format!(
                "name = \"{name}\"\nrun = \"sh\"\n[dependencies.{dep}]\nkind = \"{kind}\"\non-failure = \"fail\"\n"
            )
        };
        let d = Dir::new(&[("switchyard.toml", SYSTEM)]);
        d.write("services/a/service.toml", &svc("a", "b", "sync"));
        d.write("services/b/service.toml", &svc("b", "c", "sync"));
        d.write("services/c/service.toml", &svc("c", "a", "sync"));
        // An async cycle beside it is fine.
        d.write("services/x/service.toml", &svc("x", "y", "async"));
        d.write("services/y/service.toml", &svc("y", "x", "async"));
        let l = d.load();
        let cycles: Vec<_> = l
            .diagnostics
            .iter()
            .filter(|d| d.code == Code::SyncCycle)
            .collect();
        assert_eq!(cycles.len(), 1, "{cycles:#?}");
        assert_eq!(cycles[0].file, "services/a/service.toml");
        assert_eq!(cycles[0].key, "dependencies.b");
        assert_eq!(cycles[0].line, Some(3));
        assert!(
            cycles[0].message.contains("a -> b -> c -> a"),
            "{}",
            cycles[0].message
        );
        assert!(cycles[0].message.contains("distributed monolith"));
    }

    #[test]
    fn a_broken_file_does_not_cause_follow_on_errors() {
        let d = Dir::new(&[
            ("switchyard.toml", SYSTEM),
            (
                "services/a/service.toml",
                "name = \"a\"\nrun = \"sh\"\n[[subscribes]]\ntopic = \"orders.v1\"\n",
            ),
            // The producer does not parse: `a` must not be told its topic has none.
            (
                "services/b/service.toml",
                "name = \"b\"\nrun = \"sh\"\n[[publishes]\n",
            ),
        ]);
        let l = d.load();
        assert_eq!(
            codes(&l),
            [(
                "services/b/service.toml",
                Code::TomlSyntax,
                Some(3),
                "publishes"
            )]
        );
    }

    #[test]
    fn an_unreadable_directory_is_the_only_error() {
        let e = load(Path::new("/definitely/not/here"), None).unwrap_err();
        assert!(e.to_string().contains("/definitely/not/here"), "{e}");
    }
}
