//! The JetStream API requests the backend makes, each turning transport failures into
//! [`Error::Unavailable`] and the API's "not found" answers into `None`.

use super::options::NatsOptions;
use crate::{Error, Result};
use async_nats::jetstream::{self, stream};
use async_nats::{HeaderMap, Message};
use bytes::Bytes;
use futures::StreamExt as _;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use std::time::Duration;

/// JetStream API error codes the backend acts on.
pub mod code {
    pub const TEMPORARILY_UNAVAILABLE: u64 = 10008;
    pub const INSUFFICIENT_RESOURCES: u64 = 10023;
    pub const STORAGE_LIMIT: u64 = 10047;
    pub const STREAM_NOT_FOUND: u64 = 10059;
    pub const STREAM_NAME_IN_USE: u64 = 10058;
    pub const NO_MESSAGE_FOUND: u64 = 10037;
    pub const WRONG_LAST_SEQUENCE: u64 = 10071;
    /// A replicated stream's answer while another expectation on the subject is in flight.
    pub const WRONG_LAST_SEQUENCE_IN_FLIGHT: u64 = 10164;
    pub const WRONG_LAST_MSG_ID: u64 = 10070;
    pub const MESSAGE_TOO_LARGE: u64 = 10054;
    pub const BATCH_HAS_DUPLICATE: u64 = 10201;
    pub const BATCH_INCOMPLETE: u64 = 10176;
    pub const BATCH_UNSUPPORTED_HEADER: u64 = 10177;
}

/// An error answer of the JetStream API.
#[derive(Debug, Clone, Deserialize)]
pub struct ApiError {
    #[serde(default)]
    pub code: u64,
    #[serde(default)]
    pub err_code: u64,
    #[serde(default)]
    pub description: String,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (code {}, {})",
            self.description, self.err_code, self.code
        )
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Reply<T> {
    Err { error: ApiError },
    Ok(T),
}

/// The answer to a publish: a `PubAck` or an error.
#[derive(Debug, Default, Deserialize)]
pub struct PubAck {
    #[serde(default)]
    pub seq: u64,
    #[serde(default)]
    pub duplicate: bool,
    /// Messages in a committed atomic batch.
    #[serde(default)]
    pub count: Option<u64>,
    #[serde(default)]
    pub error: Option<ApiError>,
}

#[derive(Deserialize)]
struct Names {
    #[serde(default)]
    total: usize,
    #[serde(default)]
    streams: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct Got {
    message: GotMessage,
}

/// A message found by the leader's `STREAM.MSG.GET`.
#[derive(Debug, Deserialize)]
pub struct GotMessage {
    pub subject: String,
    pub seq: u64,
}

/// Whether a create made the stream, or found one of that name.
pub enum Created {
    Yes,
    NameInUse,
}

/// What JetStream answers when a stream's max-bytes cannot be reserved on its servers.
fn no_storage(e: &ApiError) -> Option<Error> {
    (e.err_code == code::INSUFFICIENT_RESOURCES || e.err_code == code::STORAGE_LIMIT).then(|| {
        Error::InvalidConfig(switchyard_types::ConfigError {
            field: "retention.max-bytes",
            reason: format!(
                "the NATS servers cannot reserve it ({}); JetStream reserves a topic's \
                 max-bytes (times its partitions) on the servers' disks",
                e.description
            ),
        })
    })
}

pub struct Api {
    pub client: async_nats::Client,
    js: jetstream::Context,
    pub max_payload: usize,
    timeout: Duration,
}

fn unavailable(op: &'static str, e: impl std::fmt::Display) -> Error {
    Error::Unavailable {
        op,
        reason: e.to_string(),
    }
}

/// `v2.12.3` or `2.12.3-RC.1` -> (2, 12).
pub fn parse_version(v: &str) -> Option<(u64, u64)> {
    let mut parts = v.trim().trim_start_matches('v').split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

impl Api {
    pub async fn connect(options: &NatsOptions) -> Result<Self> {
        let servers: Vec<async_nats::ServerAddr> = options
            .servers
            .iter()
            .map(|s| {
                s.parse().map_err(|e| Error::Unavailable {
                    op: "connect",
                    reason: format!("server address {s:?}: {e}"),
                })
            })
            .collect::<Result<_>>()?;
        let client = async_nats::ConnectOptions::new()
            .name("switchyard")
            .connection_timeout(options.request_timeout)
            .request_timeout(Some(options.request_timeout))
            .connect(servers)
            .await
            .map_err(|e| Error::Unavailable {
                op: "connect",
                reason: format!("{}: {e}", options.servers.join(",")),
            })?;
        let info = client.server_info();
        match parse_version(&info.version) {
            Some(v) if v >= super::MIN_SERVER => {}
            _ => {
                return Err(Error::Unavailable {
                    op: "connect",
                    reason: format!(
                        "the NATS server at {} is {}; the journal needs {}.{} or later \
                         (atomic batch publish)",
                        options.servers.join(","),
                        info.version,
                        super::MIN_SERVER.0,
                        super::MIN_SERVER.1
                    ),
                });
            }
        }
        let js = jetstream::ContextBuilder::new()
            .timeout(options.request_timeout)
            .build(client.clone());
        js.query_account().await.map_err(|e| Error::Unavailable {
            op: "connect",
            reason: format!(
                "JetStream is not usable at {}: {e} (is nats-server running with -js?)",
                options.servers.join(",")
            ),
        })?;
        Ok(Self {
            max_payload: info.max_payload,
            client,
            js,
            timeout: options.request_timeout,
        })
    }

    pub fn jetstream(&self) -> jetstream::Context {
        self.js.clone()
    }

    pub async fn close(&self) -> Result<()> {
        self.client
            .flush()
            .await
            .map_err(|e| unavailable("close", e))?;
        Ok(())
    }

    /// A JetStream API request; `()` as the body sends an empty payload.
    async fn request<T: serde::Serialize + 'static, R: DeserializeOwned>(
        &self,
        op: &'static str,
        subject: String,
        body: &T,
    ) -> Result<std::result::Result<R, ApiError>> {
        let payload = if std::any::TypeId::of::<T>() == std::any::TypeId::of::<()>() {
            Bytes::new()
        } else {
            Bytes::from(serde_json::to_vec(body).map_err(|e| unavailable(op, e))?)
        };
        // A cluster electing a leader answers "temporarily unavailable": ask again, within
        // the request timeout.
        let started = std::time::Instant::now();
        let mut pause = Duration::from_millis(10);
        loop {
            let msg = self
                .client
                .request(format!("$JS.API.{subject}"), payload.clone())
                .await
                .map_err(|e| unavailable(op, e))?;
            let reply: Reply<R> = serde_json::from_slice(&msg.payload).map_err(|e| {
                unavailable(
                    op,
                    format!(
                        "unreadable answer {:?}: {e}",
                        String::from_utf8_lossy(&msg.payload)
                    ),
                )
            })?;
            match reply {
                Reply::Ok(r) => return Ok(Ok(r)),
                Reply::Err { error }
                    if error.err_code == code::TEMPORARILY_UNAVAILABLE
                        && started.elapsed() + pause < self.timeout =>
                {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(500));
                }
                Reply::Err { error } => return Ok(Err(error)),
            }
        }
    }

    pub async fn stream_info(&self, stream: &str) -> Result<Option<stream::Info>> {
        match self
            .request::<_, stream::Info>("stream info", format!("STREAM.INFO.{stream}"), &())
            .await?
        {
            Ok(info) => Ok(Some(info)),
            Err(e) if e.err_code == code::STREAM_NOT_FOUND => Ok(None),
            Err(e) => Err(unavailable("stream info", e)),
        }
    }

    pub async fn create_stream(&self, config: &stream::Config) -> Result<Created> {
        let subject = format!("STREAM.CREATE.{}", config.name);
        match self
            .request::<_, stream::Info>("create stream", subject, config)
            .await?
        {
            Ok(_) => Ok(Created::Yes),
            Err(e) if e.err_code == code::STREAM_NAME_IN_USE => Ok(Created::NameInUse),
            Err(e) => {
                // A stream that exists is compared before the new settings are judged.
                if self.stream_info(&config.name).await?.is_some() {
                    return Ok(Created::NameInUse);
                }
                Err(no_storage(&e).unwrap_or_else(|| unavailable("create stream", e)))
            }
        }
    }

    /// False when the stream does not exist.
    pub async fn update_stream(&self, config: &stream::Config) -> Result<bool> {
        let subject = format!("STREAM.UPDATE.{}", config.name);
        match self
            .request::<_, stream::Info>("update stream", subject, config)
            .await?
        {
            Ok(_) => Ok(true),
            Err(e) if e.err_code == code::STREAM_NOT_FOUND => Ok(false),
            Err(e) => Err(no_storage(&e).unwrap_or_else(|| unavailable("update stream", e))),
        }
    }

    /// False when the stream does not exist.
    pub async fn delete_stream(&self, stream: &str) -> Result<bool> {
        #[derive(Deserialize)]
        struct Deleted {}
        match self
            .request::<_, Deleted>("delete stream", format!("STREAM.DELETE.{stream}"), &())
            .await?
        {
            Ok(_) => Ok(true),
            Err(e) if e.err_code == code::STREAM_NOT_FOUND => Ok(false),
            Err(e) => Err(unavailable("delete stream", e)),
        }
    }

    pub async fn stream_names(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        loop {
            let body = serde_json::json!({ "offset": out.len(), "subject": "sy.>" });
            let page = self
                .request::<_, Names>("list streams", "STREAM.NAMES".into(), &body)
                .await?
                .map_err(|e| unavailable("list streams", e))?;
            let names = page.streams.unwrap_or_default();
            let done = names.is_empty() || out.len() + names.len() >= page.total;
            out.extend(names);
            if done {
                return Ok(out);
            }
        }
    }

    /// `STREAM.MSG.GET`, answered by the stream's leader, so it sees every acknowledged
    /// message. `None` when no message matches.
    pub async fn leader_get(
        &self,
        stream: &str,
        body: serde_json::Value,
    ) -> Result<Option<GotMessage>> {
        match self
            .request::<_, Got>("get message", format!("STREAM.MSG.GET.{stream}"), &body)
            .await?
        {
            Ok(g) => Ok(Some(g.message)),
            Err(e) if e.err_code == code::NO_MESSAGE_FOUND => Ok(None),
            Err(e) if e.err_code == code::STREAM_NOT_FOUND => Err(Error::Unavailable {
                op: "get message",
                reason: format!("stream {stream} not found"),
            }),
            Err(e) => Err(unavailable("get message", e)),
        }
    }

    /// A direct get (any replica answers) of at most one message. `None` on 404.
    pub async fn direct_get_one(
        &self,
        stream: &str,
        body: serde_json::Value,
    ) -> Result<Option<Message>> {
        let subject = format!("$JS.API.DIRECT.GET.{stream}");
        let payload = Bytes::from(body.to_string());
        let msg = self
            .client
            .request(subject, payload)
            .await
            .map_err(|e| no_responders_or_unavailable("direct get", e))?;
        match msg.status {
            None => Ok(Some(msg)),
            Some(s) if s.as_u16() == 404 => Ok(None),
            Some(s) => Err(unavailable(
                "direct get",
                format!("status {s} {}", msg.description.as_deref().unwrap_or("")),
            )),
        }
    }

    /// A batched direct get: the messages, and how many more match past the last one.
    pub async fn direct_get_batch(
        &self,
        stream: &str,
        body: serde_json::Value,
    ) -> Result<(Vec<Message>, u64)> {
        let inbox = self.client.new_inbox();
        let mut sub = self
            .client
            .subscribe(inbox.clone())
            .await
            .map_err(|e| unavailable("direct get", e))?;
        self.client
            .publish_with_reply(
                format!("$JS.API.DIRECT.GET.{stream}"),
                inbox,
                Bytes::from(body.to_string()),
            )
            .await
            .map_err(|e| unavailable("direct get", e))?;
        let mut out = Vec::new();
        loop {
            let msg = match tokio::time::timeout(self.timeout, sub.next()).await {
                Ok(Some(m)) => m,
                Ok(None) => return Err(unavailable("direct get", "the connection closed")),
                Err(_) => {
                    return Err(unavailable(
                        "direct get",
                        format!("no answer within {:?}", self.timeout),
                    ));
                }
            };
            match msg.status.map(|s| s.as_u16()) {
                None => out.push(msg),
                Some(204) => {
                    let pending = header_u64(msg.headers.as_ref(), "Nats-Num-Pending").unwrap_or(0);
                    return Ok((out, pending));
                }
                Some(404) => return Ok((out, 0)),
                Some(503) => {
                    return Err(Error::Unavailable {
                        op: "direct get",
                        reason: NO_RESPONDERS.into(),
                    });
                }
                Some(s) => {
                    return Err(unavailable(
                        "direct get",
                        format!("status {s} {}", msg.description.as_deref().unwrap_or("")),
                    ));
                }
            }
        }
    }

    /// Publishes and waits for the server's answer.
    pub async fn publish(
        &self,
        subject: String,
        headers: HeaderMap,
        payload: Bytes,
    ) -> Result<PubAck> {
        let msg = self
            .client
            .request_with_headers(subject, headers, payload)
            .await
            .map_err(|e| no_responders_or_unavailable("append", e))?;
        serde_json::from_slice(&msg.payload).map_err(|e| {
            unavailable(
                "append",
                format!(
                    "unreadable answer {:?}: {e}",
                    String::from_utf8_lossy(&msg.payload)
                ),
            )
        })
    }

    /// Publishes without waiting for an answer (the middle of an atomic batch).
    pub async fn publish_only(
        &self,
        subject: String,
        headers: HeaderMap,
        payload: Bytes,
    ) -> Result<()> {
        self.client
            .publish_with_headers(subject, headers, payload)
            .await
            .map_err(|e| unavailable("append", e))
    }
}

/// What [`Error::Unavailable`] says when nothing answers a stream's subjects: the stream is
/// gone, or has no leader at the moment.
pub const NO_RESPONDERS: &str = "no responders (the stream is gone or has no leader)";

fn no_responders_or_unavailable(op: &'static str, e: async_nats::RequestError) -> Error {
    match e.kind() {
        async_nats::RequestErrorKind::NoResponders => Error::Unavailable {
            op,
            reason: NO_RESPONDERS.into(),
        },
        _ => unavailable(op, e),
    }
}

pub fn header_u64(headers: Option<&HeaderMap>, name: &str) -> Option<u64> {
    headers?.get(name)?.as_str().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse() {
        assert_eq!(parse_version("v2.12.3"), Some((2, 12)));
        assert_eq!(parse_version("2.15.1-RC.2"), Some((2, 15)));
        assert_eq!(parse_version("garbage"), None);
        assert!(parse_version("2.9.10") < Some(super::super::MIN_SERVER));
        assert!(parse_version("2.12.0") >= Some(super::super::MIN_SERVER));
    }
}
