//! The files' serde forms: exactly the keys that may be written (kebab-case, unknown keys
//! rejected) and their types. Ranges, defaults and references between files are checked
//! when these are turned into the model (`load.rs`, `rules.rs`).

use crate::model::DatabaseKind;
use crate::policy::DependencyKind;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// A humantime duration written as a string: `"200ms"`, `"10s"`, `"1m 30s"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HumanDuration(pub(crate) Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a duration like \"200ms\" or \"10s\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<HumanDuration, E> {
                humantime::parse_duration(v.trim())
                    .map(HumanDuration)
                    .map_err(|e| {
                        E::custom(format!(
                            "invalid duration {v:?}: {e} (write it like \"200ms\", \"10s\" or \"1m 30s\")"
                        ))
                    })
            }
        }
        d.deserialize_str(Visitor)
    }
}

/// `switchyard.toml`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(crate) struct SystemFile {
    /// `switchyard serve`'s table: kept as it is, the cli reads it strictly.
    pub(crate) server: Option<toml::Table>,
    /// The integration gateway's tables (`[connect]`, `[adapters.<name>]`): not the
    /// manifest's; switchyard-connect reads them strictly.
    #[serde(default, rename = "connect")]
    _connect: Option<serde::de::IgnoredAny>,
    #[serde(default, rename = "adapters")]
    _adapters: Option<serde::de::IgnoredAny>,
    pub(crate) system: SystemSection,
    pub(crate) host: Option<HostSection>,
    #[serde(default)]
    pub(crate) topics: BTreeMap<String, TopicExtras>,
    #[serde(default)]
    pub(crate) subscriptions: BTreeMap<String, SubscriptionSection>,
    /// `[[routes]]`: the API gateway's routes (`crate::route`).
    #[serde(default)]
    pub(crate) routes: Vec<crate::route::RouteSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(crate) struct SystemSection {
    pub(crate) name: String,
    pub(crate) services_dir: Option<String>,
}

/// `[host]`: the cargo package whose binary hosts the services marked `in-process`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(crate) struct HostSection {
    pub(crate) package: String,
    /// The package's folder (its Cargo.toml), relative to the system directory.
    pub(crate) path: String,
}

/// The keys of a `[topics."<name>"]` table that are not `TopicConfig`'s. The table minus
/// these keys is read a second time as a `switchyard_types::TopicConfig`, whose
/// `deny_unknown_fields` rejects any other key; so this struct must not reject them.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) struct TopicExtras {
    #[serde(default)]
    pub(crate) event_types: BTreeMap<String, EventTypeSection>,
    #[serde(default)]
    pub(crate) external_producers: bool,
}

/// The keys of [`TopicExtras`], as written.
pub(crate) const TOPIC_EXTRA_KEYS: [&str; 2] = ["event-types", "external-producers"];

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(crate) struct EventTypeSection {
    /// A JSON Schema file, relative to the system directory.
    pub(crate) schema: Option<String>,
}

/// `[subscriptions."<name>"]` in switchyard.toml: a push subscription to an endpoint outside
/// the system.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(crate) struct SubscriptionSection {
    pub(crate) topics: Vec<String>,
    #[serde(default)]
    pub(crate) types: Vec<String>,
    pub(crate) endpoint: String,
    pub(crate) concurrency: Option<u32>,
    pub(crate) max_batch: Option<u32>,
    #[serde(default)]
    pub(crate) retry: RetrySection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(crate) struct RetrySection {
    pub(crate) initial_backoff: Option<HumanDuration>,
    pub(crate) max_backoff: Option<HumanDuration>,
    pub(crate) multiplier: Option<f64>,
    pub(crate) jitter: Option<f64>,
    pub(crate) max_attempts: Option<u32>,
    pub(crate) max_age: Option<HumanDuration>,
}

/// `services/<name>/service.toml`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(crate) struct ServiceFile {
    pub(crate) name: String,
    pub(crate) run: Option<String>,
    #[serde(default)]
    pub(crate) in_process: bool,
    pub(crate) workdir: Option<String>,
    pub(crate) port: Option<u16>,
    #[serde(default)]
    pub(crate) health: HealthSection,
    #[serde(default)]
    pub(crate) env: BTreeMap<String, String>,
    pub(crate) database: Option<DatabaseSection>,
    #[serde(default)]
    pub(crate) publishes: Vec<PublishSection>,
    #[serde(default)]
    pub(crate) subscribes: Vec<SubscribeSection>,
    #[serde(default)]
    pub(crate) dependencies: BTreeMap<String, DependencySection>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(crate) struct HealthSection {
    pub(crate) path: Option<String>,
    pub(crate) timeout: Option<HumanDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(crate) struct DatabaseSection {
    pub(crate) kind: DatabaseKind,
    pub(crate) migrations: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(crate) struct PublishSection {
    pub(crate) topic: String,
    pub(crate) types: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(crate) struct SubscribeSection {
    pub(crate) topic: String,
    #[serde(default)]
    pub(crate) types: Vec<String>,
    pub(crate) path: Option<String>,
    pub(crate) name: Option<String>,
    pub(crate) concurrency: Option<u32>,
    pub(crate) max_batch: Option<u32>,
    #[serde(default)]
    pub(crate) retry: RetrySection,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(crate) struct DependencySection {
    pub(crate) kind: DependencyKind,
    /// Required; optional here so that its absence is a located `missing-on-failure`
    /// diagnostic with a hint, not a bare serde error.
    pub(crate) on_failure: Option<RawPolicy>,
}

/// `on-failure`: a policy name, or a table with `policy` and parameters.
#[derive(Debug)]
pub(crate) enum RawPolicy {
    Name(String),
    Table(RawPolicyTable),
}

impl<'de> Deserialize<'de> for RawPolicy {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = RawPolicy;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(
                    "a policy name (fail, retry, fallback, queue, degrade) or a table with \
                     `policy` and its parameters",
                )
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawPolicy, E> {
                Ok(RawPolicy::Name(v.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<RawPolicy, A::Error> {
                // Read through the map itself, so errors keep the span of their key.
                RawPolicyTable::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(RawPolicy::Table)
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// Every parameter of every policy; `policy::resolve` checks which belong to the named one.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(crate) struct RawPolicyTable {
    pub(crate) policy: String,
    pub(crate) attempts: Option<u32>,
    pub(crate) timeout: Option<HumanDuration>,
    pub(crate) backoff: Option<HumanDuration>,
    pub(crate) status: Option<u16>,
    pub(crate) body: Option<String>,
    pub(crate) content_type: Option<String>,
    pub(crate) topic: Option<String>,
    pub(crate) header: Option<String>,
}

impl RawPolicyTable {
    /// Each parameter's key and whether it is written.
    pub(crate) fn present(&self) -> [(&'static str, bool); 8] {
        [
            ("attempts", self.attempts.is_some()),
            ("timeout", self.timeout.is_some()),
            ("backoff", self.backoff.is_some()),
            ("status", self.status.is_some()),
            ("body", self.body.is_some()),
            ("content-type", self.content_type.is_some()),
            ("topic", self.topic.is_some()),
            ("header", self.header.is_some()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_types::TopicConfig;

    #[test]
    fn durations_are_humantime_strings() {
        #[derive(Debug, Deserialize)]
        struct T {
            d: HumanDuration,
        }
        let t: T = toml::from_str("d = \"1m 30s\"").unwrap();
        assert_eq!(t.d.0, Duration::from_secs(90));
        let e = toml::from_str::<T>("d = \"10 parsecs\"").unwrap_err();
        assert!(e.message().contains("invalid duration"), "{e}");
        let e = toml::from_str::<T>("d = 10").unwrap_err();
        assert!(e.message().starts_with("invalid type"), "{e}");
    }

    #[test]
    fn topic_extras_do_not_clash_with_topic_config() {
        // TopicExtras must never take a key TopicConfig has, or the second read would see
        // the key removed.
        let config = toml::Table::try_from(TopicConfig::default()).unwrap();
        for key in TOPIC_EXTRA_KEYS {
            assert!(!config.contains_key(key), "{key}");
        }
    }

    #[test]
    fn on_failure_is_a_name_or_a_table() {
        #[derive(Debug, Deserialize)]
        #[serde(rename_all = "kebab-case")]
        struct T {
            on_failure: RawPolicy,
        }
        let t: T = toml::from_str("on-failure = \"fail\"").unwrap();
        assert!(matches!(t.on_failure, RawPolicy::Name(n) if n == "fail"));
        let t: T =
            toml::from_str("[on-failure]\npolicy = \"retry\"\nattempts = 4\ntimeout = \"1s\"")
                .unwrap();
        let RawPolicy::Table(table) = t.on_failure else {
            panic!("not a table")
        };
        assert_eq!(table.policy, "retry");
        assert_eq!(table.attempts, Some(4));
        let e = toml::from_str::<T>("on-failure = { policy = \"retry\", tries = 3 }").unwrap_err();
        assert!(e.message().starts_with("unknown field `tries`"), "{e}");
        let e = toml::from_str::<T>("on-failure = 3").unwrap_err();
        assert!(e.message().starts_with("invalid type"), "{e}");
    }
}
