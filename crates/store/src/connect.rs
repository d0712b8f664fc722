//! The integration gateway's value types (`switchyard-connect` keeps its state through
//! these [`Store`](crate::Store) methods): lane states, messages and their attempts,
//! replies from vendors, and cases.
//!
//! A message is one event that one adapter took (or that no adapter's route matched). Its
//! [`MessageState`] is exactly one of:
//!
//! | state | meaning | leaves it by |
//! |---|---|---|
//! | `pending` | in its lane, to be sent at `next-attempt-at` | an attempt's outcome |
//! | `awaiting-reply` | sent to an asynchronous vendor, its reply not yet in | a matched reply, or the reply deadline |
//! | `delivered` | the vendor accepted it (and its reply, if one was awaited, came) | replay |
//! | `rejected` | a known business error, which became an event | replay |
//! | `failed` | an unknown failure, grouped into a case | the case's retry or discard, or replay |
//! | `discarded` | given up on by a person | replay |
//! | `unmatched` | no adapter's route took the event (lane `unrouted`) | none: it is a record |
//!
//! So every event an adapter takes is delivered, rejected (as an event), in a case, or
//! still pending: never lost, never silently dropped.

use crate::model::clip_error;
use crate::{Error, Result, validate_name};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The lane name of the events that matched no adapter's route.
pub const UNROUTED_LANE: &str = "unrouted";
/// The most bytes of a vendor's response body kept per attempt or reply.
pub const MAX_BODY_LEN: usize = 16 * 1024;
/// The most sample message ids a case shows.
pub const CASE_SAMPLES: u32 = 10;
/// The most rows one query returns.
pub const MAX_PAGE: u32 = 10_000;

/// Where a message stands (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MessageState {
    Pending,
    AwaitingReply,
    Delivered,
    Rejected,
    Failed,
    Discarded,
    Unmatched,
}

impl MessageState {
    pub const ALL: [MessageState; 7] = [
        Self::Pending,
        Self::AwaitingReply,
        Self::Delivered,
        Self::Rejected,
        Self::Failed,
        Self::Discarded,
        Self::Unmatched,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::AwaitingReply => "awaiting-reply",
            Self::Delivered => "delivered",
            Self::Rejected => "rejected",
            Self::Failed => "failed",
            Self::Discarded => "discarded",
            Self::Unmatched => "unmatched",
        }
    }

    /// The state named `text`, as [`as_str`](Self::as_str) writes it.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// Whether a message in this state may be replayed (sent again).
    pub fn replayable(self) -> bool {
        matches!(
            self,
            Self::Delivered | Self::Rejected | Self::Failed | Self::Discarded
        )
    }
}

impl fmt::Display for MessageState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A lane's state, kept across restarts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LaneState {
    /// Reading its source and sending.
    Running,
    /// Reading its source (messages wait in the store) but sending nothing.
    Paused,
    /// Sending what it holds but reading nothing new.
    Draining,
}

impl LaneState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Draining => "draining",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::Running, Self::Paused, Self::Draining]
            .into_iter()
            .find(|s| s.as_str() == text)
    }
}

/// A request as an adapter mapped it, ready for its writer: kept with the message so a
/// retry or a replay sends exactly the same bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct OutboundRequest {
    /// Where it goes: a URL (HTTP), `exchange/routing-key` (AMQP) or a file name (files).
    pub target: String,
    /// The HTTP method, for HTTP writers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Headers (HTTP) or message headers (AMQP), in order.
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    pub content_type: String,
    /// The encoded body (every encoding is text).
    pub body: String,
}

/// What a case groups by: failures with equal keys are one case. The connect crate
/// computes `id` (a hash of the parts its grouping rules keep); the store upserts by it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct CaseKey {
    pub id: String,
    pub adapter: String,
    /// Where it failed: `route`, `map`, `deliver`, `classify`, `reply`.
    pub stage: String,
    /// What kind of failure: `http-status`, `timeout`, `connect`, `retries-exhausted`, ...
    pub error_class: String,
    pub status: Option<u16>,
    /// The failure's message, normalised (numbers and ids replaced) so alike ones group.
    pub message: String,
    pub vendor: String,
}

impl CaseKey {
    pub(crate) fn validate(&self, field: &str) -> Result<()> {
        if self.id.is_empty() || self.id.len() > 128 {
            return Err(Error::invalid(
                format!("{field}.id"),
                "must be 1 to 128 bytes",
            ));
        }
        validate_name(&format!("{field}.adapter"), &self.adapter)
    }
}

/// An unknown failure: the case it belongs to and the error of this occurrence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub case: CaseKey,
    pub error: String,
}

/// An event an adapter took, as its lane's intake hands it to the store.
#[derive(Clone, Debug, PartialEq)]
pub struct NewMessage {
    pub adapter: String,
    /// The hash of the adapter's configuration that mapped it.
    pub adapter_hash: String,
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
    pub event_id: String,
    pub event_type: String,
    /// Messages of one key are sent one at a time, in order.
    pub partition_key: Option<String>,
    pub event: serde_json::Value,
    /// `None` when the mapping failed (then `failure` says why).
    pub request: Option<OutboundRequest>,
    pub correlation_id: Option<String>,
    /// `Pending`, or `Failed` (mapping failed) or `Unmatched`, both with `failure`.
    pub state: MessageState,
    pub failure: Option<Failure>,
}

/// What a lane's intake stored ([`Store::lane_intake`](crate::Store::lane_intake)).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Intake {
    /// How many messages were inserted (positions already stored are skipped).
    pub inserted: u64,
    /// The inserted messages that `due_messages` would return at this instant: pending, due
    /// now, and first of their partition key (no older pending message of it), as stored.
    /// The lane's sender can start them without reading them back.
    pub ready: Vec<Message>,
}

/// A message in the store.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Message {
    pub id: u64,
    pub adapter: String,
    pub adapter_hash: String,
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
    pub event_id: String,
    pub event_type: String,
    pub partition_key: Option<String>,
    pub event: serde_json::Value,
    pub request: Option<OutboundRequest>,
    pub state: MessageState,
    pub attempts: u32,
    pub next_attempt_at_ms: Option<i64>,
    pub reply_deadline_ms: Option<i64>,
    pub correlation_id: Option<String>,
    pub case_id: Option<String>,
    pub last_error: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// What an attempt led to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// The vendor accepted it.
    Delivered,
    /// Accepted; its reply is due by `deadline_ms`.
    AwaitReply { deadline_ms: i64 },
    /// Send it again at `next_at_ms`.
    Retry { next_at_ms: i64 },
    /// A known business error (the connect crate appended its event).
    Rejected { reason: String },
    /// An unknown failure: into its case.
    Failed(Failure),
}

impl AttemptOutcome {
    fn name(&self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::AwaitReply { .. } => "awaiting-reply",
            Self::Retry { .. } => "retry",
            Self::Rejected { .. } => "rejected",
            Self::Failed(_) => "failed",
        }
    }
}

/// One attempt to send a message, as the message store keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Attempt {
    /// 1 for the first attempt; set by the store.
    pub n: u32,
    pub at_ms: i64,
    pub request: OutboundRequest,
    /// The vendor's status (HTTP), when it answered.
    pub status: Option<u16>,
    /// Its body, cut to [`MAX_BODY_LEN`] bytes.
    pub response_body: Option<String>,
    pub latency_us: u64,
    /// The delay the vendor imposed (Retry-After, or from its body).
    pub delay_ms: Option<u64>,
    /// What went wrong, when something did.
    pub error: Option<String>,
    /// `delivered`, `awaiting-reply`, `retry`, `rejected` or `failed`; set by the store.
    pub outcome: String,
}

/// Which messages a query returns: every given condition holds; newest first when
/// `newest_first`, else by id, starting after `after_id`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MessageFilter {
    pub adapter: Option<String>,
    pub state: Option<MessageState>,
    pub case_id: Option<String>,
    pub since_ms: Option<i64>,
    pub after_id: Option<u64>,
    pub limit: u32,
}

/// How a reply found its request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReplyDisposition {
    /// Its correlation id belongs to a message awaiting a reply, which it settled.
    Matched,
    /// No message has its correlation id (or it carried none).
    Unmatched,
    /// Its message no longer awaited a reply (settled before, or past its deadline).
    Late,
}

impl ReplyDisposition {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Matched => "matched",
            Self::Unmatched => "unmatched",
            Self::Late => "late",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::Matched, Self::Unmatched, Self::Late]
            .into_iter()
            .find(|s| s.as_str() == text)
    }
}

/// A reply as it arrived.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewReply {
    pub adapter: String,
    pub correlation_id: Option<String>,
    pub received_at_ms: i64,
    pub headers: Vec<(String, String)>,
    /// Cut to [`MAX_BODY_LEN`] bytes by the store.
    pub body: String,
}

/// A stored reply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Reply {
    pub id: u64,
    pub adapter: String,
    pub correlation_id: Option<String>,
    pub received_at_ms: i64,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub message_id: Option<u64>,
    pub disposition: ReplyDisposition,
}

/// A case's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CaseState {
    Open,
    /// Marked resolved by a person; a new failure with the same key opens it again.
    Resolved,
}

impl CaseState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Resolved => "resolved",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::Open, Self::Resolved]
            .into_iter()
            .find(|s| s.as_str() == text)
    }
}

/// Failures grouped by their [`CaseKey`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Case {
    #[serde(flatten)]
    pub key: CaseKey,
    pub state: CaseState,
    /// Failures grouped here, ever (a retried message that fails again counts again).
    pub failures: u64,
    /// Messages of the case still `failed` (or `unmatched`): what retry or discard acts on.
    pub open_messages: u64,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    pub resolved_at_ms: Option<i64>,
    /// Up to [`CASE_SAMPLES`] ids of its messages, oldest first.
    pub samples: Vec<u64>,
}

/// Messages per lane and state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct MessageCount {
    pub adapter: String,
    pub state: MessageState,
    pub count: u64,
}

pub(crate) fn check_limit(limit: u32) -> Result<()> {
    if limit == 0 || limit > MAX_PAGE {
        return Err(Error::invalid(
            "limit",
            format!("must be 1 to {MAX_PAGE} (got {limit})"),
        ));
    }
    Ok(())
}

pub(crate) fn clip_body(body: &str) -> &str {
    let mut end = body.len().min(MAX_BODY_LEN);
    while !body.is_char_boundary(end) {
        end -= 1;
    }
    &body[..end]
}

pub(crate) fn clip(text: &str) -> String {
    clip_error(text)
}

impl Intake {
    /// The intake of `messages`, each with what its insert returned: `None` when its
    /// position was already stored, else its id and whether it is ready to send.
    pub(crate) fn of(
        messages: Vec<NewMessage>,
        inserted: Vec<Option<(u64, bool)>>,
        now_ms: i64,
        text: impl Fn(String) -> String,
    ) -> Self {
        let mut intake = Intake::default();
        for (m, slot) in messages.into_iter().zip(inserted) {
            if let Some((id, ready)) = slot {
                intake.inserted += 1;
                if ready {
                    intake.ready.push(m.into_stored(id, now_ms, &text));
                }
            }
        }
        intake
    }
}

impl NewMessage {
    /// The message as the store holds it once inserted as `id` at `now_ms` (pending: due
    /// at `now_ms`), its texts as the store wrote them (`text` is the backend's own change
    /// to a text, if it makes one).
    pub(crate) fn into_stored(
        self,
        id: u64,
        now_ms: i64,
        text: impl Fn(String) -> String,
    ) -> Message {
        let pending = self.state == MessageState::Pending;
        Message {
            id,
            adapter: self.adapter,
            adapter_hash: text(self.adapter_hash),
            topic: self.topic,
            partition: self.partition,
            offset: self.offset,
            event_id: text(clip(&self.event_id)),
            event_type: text(clip(&self.event_type)),
            partition_key: self.partition_key.map(&text),
            event: self.event,
            request: self.request,
            state: self.state,
            attempts: 0,
            next_attempt_at_ms: pending.then_some(now_ms),
            reply_deadline_ms: None,
            correlation_id: self.correlation_id.map(&text),
            case_id: self.failure.as_ref().map(|f| f.case.id.clone()),
            last_error: self.failure.map(|f| text(clip(&f.error))),
            created_at_ms: now_ms,
            updated_at_ms: now_ms,
        }
    }

    pub(crate) fn validate(&self, field: &str) -> Result<()> {
        validate_name(&format!("{field}.adapter"), &self.adapter)?;
        switchyard_types::TopicName::new(&self.topic)
            .map_err(|e| Error::invalid(format!("{field}.topic"), e.reason))?;
        if self.offset > crate::MAX_OFFSET {
            return Err(Error::invalid(
                format!("{field}.offset"),
                format!("must be at most {}", crate::MAX_OFFSET),
            ));
        }
        match (self.state, &self.failure, &self.request) {
            (MessageState::Pending, None, Some(_)) => Ok(()),
            (MessageState::Pending, _, _) => Err(Error::invalid(
                format!("{field}.state"),
                "a pending message needs a request and no failure",
            )),
            (MessageState::Failed | MessageState::Unmatched, Some(f), _) => {
                f.case.validate(&format!("{field}.failure.case"))
            }
            (MessageState::Failed | MessageState::Unmatched, None, _) => Err(Error::invalid(
                format!("{field}.failure"),
                "a failed or unmatched message needs its failure",
            )),
            (other, _, _) => Err(Error::invalid(
                format!("{field}.state"),
                format!("a new message is pending, failed or unmatched, not {other}"),
            )),
        }
    }
}

impl AttemptOutcome {
    pub(crate) fn validate(&self) -> Result<()> {
        match self {
            Self::Failed(f) => f.case.validate("outcome.case"),
            _ => Ok(()),
        }
    }

    pub(crate) fn label(&self) -> &'static str {
        self.name()
    }
}
