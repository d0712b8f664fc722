//! `nats://host:port[,host:port...][?sync=...&replicas=N]`: where the cluster is and what
//! its servers promise.

use std::time::Duration;
use switchyard_types::Durability;

/// How to reach a NATS cluster and what its JetStream promises.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatsOptions {
    /// Server addresses (`nats://host:port`), tried in turn; the client follows the cluster.
    pub servers: Vec<String>,
    /// What the servers' `sync_interval` guarantees: `Always` for `sync_interval: always`,
    /// `Interval(d)` for an interval (NATS's default is 2 minutes). A topic whose durability
    /// is stronger is refused, since JetStream syncs per server, not per stream.
    pub server_sync: Durability,
    /// Replicas of each new stream (1 to 5; 3 in production).
    pub replicas: usize,
    /// How long one request to the cluster may take before the operation fails as
    /// unavailable.
    pub request_timeout: Duration,
}

/// NATS's default `sync_interval`.
pub const NATS_DEFAULT_SYNC: Duration = Duration::from_secs(120);

impl Default for NatsOptions {
    fn default() -> Self {
        Self {
            servers: vec!["nats://127.0.0.1:4222".into()],
            server_sync: Durability::Interval(NATS_DEFAULT_SYNC),
            replicas: 1,
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// A journal URL that does not parse; the message names the bad part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid NATS journal URL {url:?}: {reason}")]
pub struct OptionsError {
    pub url: String,
    pub reason: String,
}

impl NatsOptions {
    /// Parses `nats://host:port[,host:port...][?sync=always|default|interval(<N>ms)&replicas=N]`.
    pub fn from_url(url: &str) -> Result<Self, OptionsError> {
        let bad = |reason: String| OptionsError {
            url: url.to_string(),
            reason,
        };
        let rest = url
            .strip_prefix("nats://")
            .ok_or_else(|| bad("must start with nats://".into()))?;
        let (hosts, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut options = NatsOptions {
            servers: Vec::new(),
            ..NatsOptions::default()
        };
        for host in hosts.split(',') {
            let host = host.trim().trim_end_matches('/');
            let (name, port) = host
                .rsplit_once(':')
                .ok_or_else(|| bad(format!("server {host:?} needs host:port")))?;
            let name = name.rsplit_once('@').map_or(name, |(_, n)| n);
            if name.is_empty() || name.contains('/') || port.parse::<u16>().is_err() {
                return Err(bad(format!("server {host:?} is not host:port")));
            }
            options.servers.push(format!("nats://{host}"));
        }
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| bad(format!("query part {pair:?} is not key=value")))?;
            match key {
                "sync" => {
                    options.server_sync = match value {
                        "default" => Durability::Interval(NATS_DEFAULT_SYNC),
                        other => other
                            .parse()
                            .map_err(|e: String| bad(format!("sync: {e}")))?,
                    };
                    if options.server_sync == Durability::Os {
                        return Err(bad(
                            "sync: JetStream syncs at an interval or always; `os` is not a \
                             server setting"
                                .into(),
                        ));
                    }
                }
                "replicas" => {
                    options.replicas = value
                        .parse()
                        .ok()
                        .filter(|r| (1..=5).contains(r))
                        .ok_or_else(|| bad(format!("replicas {value:?} is not 1 to 5")))?;
                }
                other => {
                    return Err(bad(format!(
                        "unknown query key {other:?} (known: sync, replicas)"
                    )));
                }
            }
        }
        Ok(options)
    }
}

/// Whether a server that syncs as `server` meets a topic's `wanted` durability.
pub fn server_meets(server: Durability, wanted: Durability) -> bool {
    match (server, wanted) {
        (Durability::Always, _) => true,
        (_, Durability::Always) => false,
        (Durability::Interval(s), Durability::Interval(w)) => w >= s,
        (_, Durability::Os) => true,
        (Durability::Os, Durability::Interval(_)) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_clusters_and_settings() {
        let o =
            NatsOptions::from_url("nats://a:4222,b:4223?sync=always&replicas=3").expect("parses");
        assert_eq!(o.servers, vec!["nats://a:4222", "nats://b:4223"]);
        assert_eq!(o.server_sync, Durability::Always);
        assert_eq!(o.replicas, 3);
        let o = NatsOptions::from_url("nats://user:pw@127.0.0.1:4222").expect("parses");
        assert_eq!(o.servers, vec!["nats://user:pw@127.0.0.1:4222"]);
        assert_eq!(o.server_sync, Durability::Interval(NATS_DEFAULT_SYNC));
        assert_eq!(o.replicas, 1);
        let o = NatsOptions::from_url("nats://h:1?sync=interval(50ms)").expect("parses");
        assert_eq!(
            o.server_sync,
            Durability::Interval(Duration::from_millis(50))
        );
    }

    #[test]
    fn names_the_bad_part() {
        for (url, part) in [
            ("http://h:1", "nats://"),
            ("nats://h", "host:port"),
            ("nats://h:x", "host:port"),
            ("nats://:4222", "host:port"),
            ("nats://h:1?replicas=0", "replicas"),
            ("nats://h:1?replicas=9", "replicas"),
            ("nats://h:1?sync=sometimes", "sync"),
            ("nats://h:1?sync=os", "sync"),
            ("nats://h:1?color=red", "color"),
            ("nats://h:1?sync", "key=value"),
        ] {
            let e = NatsOptions::from_url(url).expect_err(url);
            assert!(e.to_string().contains(part), "{url}: {e}");
        }
    }

    #[test]
    fn durability_is_met_only_by_a_server_at_least_as_strong() {
        use Durability::*;
        let ms = |n| Interval(Duration::from_millis(n));
        assert!(server_meets(Always, Always) && server_meets(Always, Os));
        assert!(!server_meets(ms(100), Always));
        assert!(server_meets(ms(100), ms(100)) && server_meets(ms(100), ms(200)));
        assert!(!server_meets(ms(100), ms(50)));
        assert!(server_meets(ms(100), Os));
    }
}
