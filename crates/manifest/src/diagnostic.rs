//! What `load` reports: one [`Diagnostic`] per problem, each with a stable [`Code`].

use serde::Serialize;
use std::fmt;

/// How bad a diagnostic is. Errors stop `switchyard dev` from starting the system; warnings
/// do not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Severity {
    Error,
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

/// A diagnostic's stable code (kebab-case in text and JSON). Tools may match on it; the
/// message is for people and may change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Code {
    // --- files and their syntax ---
    /// A manifest file exists but cannot be read (permissions, not UTF-8).
    UnreadableFile,
    /// The directory has no `switchyard.toml`.
    MissingSystemManifest,
    /// `system.services-dir` names a folder that does not exist.
    ServicesDirNotFound,
    /// A folder under the services directory has no `service.toml`.
    MissingServiceManifest,
    /// The file is not valid TOML.
    TomlSyntax,
    /// A key the format does not have (a typo, or a parameter in the wrong table).
    UnknownKey,
    /// A required key is absent.
    MissingKey,
    /// A value of the wrong type (a number where a string belongs, ...).
    InvalidType,
    /// A value of the right type outside what is allowed (a range, a set of words, a syntax).
    InvalidValue,
    // --- names ---
    /// A system, service, topic, subscription or event type name with characters or a length
    /// that is not allowed.
    InvalidName,
    /// `name` in service.toml is not the name of its folder.
    NameMismatch,
    /// Two subscriptions (of services or of the system) have the same name.
    DuplicateSubscription,
    // --- running a service ---
    /// `run` is empty or does not split into words (an unclosed quote).
    InvalidRun,
    /// The program of `run` is not on `PATH` nor a file relative to the workdir.
    RunNotFound,
    /// The program of `run` exists but is not an executable file.
    RunNotExecutable,
    /// `workdir` is not a folder.
    WorkdirNotFound,
    /// `database.migrations` is not a folder.
    MigrationsNotFound,
    /// An HTTP path (`health.path`, `subscribes[].path`) that does not start with `/`.
    InvalidPath,
    /// An `[env]` name that is not a valid environment variable name.
    InvalidEnvName,
    /// An `[env]` entry that would override a variable the dev runner injects.
    ReservedEnvVar,
    /// Two services (or a service and `[server] listen`) want the same port.
    DuplicatePort,
    // --- dependencies and failure policies ---
    /// A dependency without `on-failure`.
    MissingOnFailure,
    /// An unknown policy, a parameter of another policy, or a parameter out of range.
    InvalidPolicy,
    /// `on-failure = "queue"` on a `sync` dependency.
    QueueNeedsAsync,
    /// A dependency on a service the system does not have.
    UnknownDependency,
    /// `sync` dependencies that form a cycle (a distributed monolith).
    SyncCycle,
    // --- gateway routes ---
    /// A route whose `service` the system does not have.
    UnknownService,
    /// Two routes with the same name.
    DuplicateRoute,
    // --- topics, events, subscriptions ---
    /// A topic that is not declared in switchyard.toml `[topics]`.
    UnknownTopic,
    /// A subscribed topic that no service publishes to and that is not `external-producers`.
    NoProducer,
    /// A published event type the topic does not declare in `event-types`.
    UndeclaredPublishedType,
    /// A subscribed event type the topic does not declare in `event-types`.
    UndeclaredSubscribedType,
    /// A schema file that does not exist.
    SchemaNotFound,
    /// A schema file that is not JSON.
    SchemaInvalidJson,
    /// A schema file that is JSON but not a JSON Schema the server would compile.
    SchemaInvalid,
    /// A subscription endpoint that is not an absolute http(s) URL.
    InvalidEndpoint,
    // --- warnings ---
    /// A declared topic that nobody subscribes to.
    UnusedTopic,
    /// A published event type that no subscription takes.
    UnconsumedType,
}

impl Code {
    /// The kebab-case text, as in the JSON output.
    pub fn as_str(self) -> &'static str {
        use Code::*;
        match self {
            UnreadableFile => "unreadable-file",
            MissingSystemManifest => "missing-system-manifest",
            ServicesDirNotFound => "services-dir-not-found",
            MissingServiceManifest => "missing-service-manifest",
            TomlSyntax => "toml-syntax",
            UnknownKey => "unknown-key",
            MissingKey => "missing-key",
            InvalidType => "invalid-type",
            InvalidValue => "invalid-value",
            InvalidName => "invalid-name",
            NameMismatch => "name-mismatch",
            DuplicateSubscription => "duplicate-subscription",
            InvalidRun => "invalid-run",
            RunNotFound => "run-not-found",
            RunNotExecutable => "run-not-executable",
            WorkdirNotFound => "workdir-not-found",
            MigrationsNotFound => "migrations-not-found",
            InvalidPath => "invalid-path",
            InvalidEnvName => "invalid-env-name",
            ReservedEnvVar => "reserved-env-var",
            DuplicatePort => "duplicate-port",
            MissingOnFailure => "missing-on-failure",
            InvalidPolicy => "invalid-policy",
            QueueNeedsAsync => "queue-needs-async",
            UnknownDependency => "unknown-dependency",
            UnknownService => "unknown-service",
            DuplicateRoute => "duplicate-route",
            SyncCycle => "sync-cycle",
            UnknownTopic => "unknown-topic",
            NoProducer => "no-producer",
            UndeclaredPublishedType => "undeclared-published-type",
            UndeclaredSubscribedType => "undeclared-subscribed-type",
            SchemaNotFound => "schema-not-found",
            SchemaInvalidJson => "schema-invalid-json",
            SchemaInvalid => "schema-invalid",
            InvalidEndpoint => "invalid-endpoint",
            UnusedTopic => "unused-topic",
            UnconsumedType => "unconsumed-type",
        }
    }
}

impl Serialize for Code {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One problem, located: the file (relative to the system directory, `/`-separated), the
/// 1-based line and column where the key (or the value) is written, and the key path
/// (`dependencies.payments.on-failure`, `subscribes[0].topic`, `topics."orders.v1"`).
///
/// `line` and `column` are absent only when the file itself is what is wrong (a folder
/// without service.toml); `key` is empty when the whole file is meant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    pub code: Code,
    pub file: String,
    pub line: Option<u32>,
    pub column: Option<u32>,
    pub key: String,
    pub message: String,
}

impl Diagnostic {
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// `error[no-producer]: services/notify/service.toml:12:1: subscribes[0].topic: topic ...`
impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[{}]: {}", self.severity, self.code, self.file)?;
        if let (Some(line), Some(column)) = (self.line, self.column) {
            write!(f, ":{line}:{column}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_serialize_as_their_text() {
        let json = serde_json::to_value(Code::UndeclaredPublishedType).unwrap();
        assert_eq!(json, "undeclared-published-type");
        assert_eq!(Code::NoProducer.to_string(), "no-producer");
    }

    #[test]
    fn display_is_one_line_with_location_and_key() {
        let d = Diagnostic {
            severity: Severity::Error,
            code: Code::NoProducer,
            file: "services/notify/service.toml".into(),
            line: Some(12),
            column: Some(1),
            key: "subscribes[0].topic".into(),
            message: "topic \"payments.v1\" has no producer".into(),
        };
        assert_eq!(
            d.to_string(),
            "error[no-producer]: services/notify/service.toml:12:1: subscribes[0].topic: \
             topic \"payments.v1\" has no producer"
        );
        let d = Diagnostic {
            line: None,
            column: None,
            key: String::new(),
            ..d
        };
        assert_eq!(
            d.to_string(),
            "error[no-producer]: services/notify/service.toml: topic \"payments.v1\" has no producer"
        );
    }
}
