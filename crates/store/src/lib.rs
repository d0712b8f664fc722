//! The queryable state of Switchyard's subscription dispatcher and integration gateway: the
//! [`Store`] trait, its embedded SQLite backend ([`sqlite::SqliteStore`]), its PostgreSQL
//! backend for several instances sharing one database ([`postgres::PostgresStore`]) and,
//! behind the `test-util` feature, the [`conformance`] suite both run.
//!
//! # The model
//!
//! The journal is the source of truth for events; the store holds what a subscription has
//! done with them. Four tables, all keyed by the subscription's name:
//!
//! | table | one row per | holds |
//! |---|---|---|
//! | `subscriptions` | subscription | its [`SubscriptionSpec`] (topics, event types, endpoint, concurrency, [`RetryPolicy`]), created/updated times, a `generation` bumped by every change, and the latest error recorded for it |
//! | `cursors` | subscription, topic, partition | the next offset to read from the journal ([`Cursor`]) |
//! | `deliveries` | subscription, topic, partition, offset | a record owed to the subscription and not yet acknowledged ([`Delivery`]): how many attempts failed, when the first one did, when the next is due, the last error |
//! | `parked` | subscription, topic, partition, offset | a delivery that was given up on ([`Parked`]): the delivery as it was, the reason, when |
//! | `leases` | lease name | who holds a subscription partition or an adapter lane when several instances share the store ([`Lease`]): owner, epoch, until when (see [`lease`]) |
//! | `quotas` | counter key, window start | units of a quota used in one window of time (the API gateway's daily and monthly quotas; [`QuotaUsage`], see [`quota`]) |
//!
//! A [`DeliveryKey`] is in at most one of `deliveries` and `parked`. Every record a
//! subscription has read is therefore exactly one of: acknowledged (gone from both
//! tables, behind the cursor), in flight (in `deliveries`) or parked (in `parked`). Never
//! lost, never silently dropped. Deleting a subscription deletes all four kinds of rows.
//!
//! # How the dispatcher uses it
//!
//! For each partition of each topic of a subscription:
//!
//! 1. **Read** the journal from the partition's [`Cursor`] (offset 0, or wherever the
//!    subscription should start, when [`Store::cursors`] has none).
//! 2. **Enqueue** the records the subscription wants, and advance the cursor past
//!    everything it read (including records filtered out by event type), in one
//!    transaction: [`Store::enqueue`]. If the process dies before or after, the cursor and
//!    the in-flight rows agree; an enqueue that is retried inserts nothing twice.
//! 3. **Deliver** what [`Store::due`] returns (in `next-attempt-at` order, then offset),
//!    respecting `concurrency` and per-key order: a delivery whose `partition-key` has an
//!    earlier delivery still in flight waits for it.
//! 4. On success, [`Store::ack`] deletes the row. On a failure that should be retried,
//!    [`Store::retry_later`] counts the attempt and sets when the next one is due (from the
//!    [`RetryPolicy`]). Once `max-attempts` attempts have failed, the first failed attempt
//!    is `max-age-ms` old, or the endpoint says the event will never be accepted,
//!    [`Store::park`] moves the row to `parked` (counting that final attempt).
//!
//! A person looks at [`Store::parked`] deliveries and either [`Store::unpark`]s one (back in
//! flight, attempts reset, due now) or [`Store::discard`]s it. [`Store::seek`] moves a
//! cursor anywhere (replay or skip) and drops that partition's in-flight rows; parked rows
//! stay where they are, and re-reading a parked record does not enqueue it again.
//!
//! On restart the dispatcher needs nothing else: it reads the cursors and continues, and
//! the in-flight rows are due when they were due.
//!
//! # Errors and atomicity
//!
//! Every operation is one transaction: it happens completely or not at all. Bad input is
//! rejected with [`Error::InvalidInput`] naming the field, before anything changes. An
//! unknown subscription is [`Error::NotFound`] for every operation that names one, except
//! [`Store::ack`], which is idempotent and reports whether it removed a row. A row on disk
//! that does not parse is [`Error::Corrupt`] naming the table and the key; the store
//! never panics on its data.
//!
//! Times are Unix milliseconds chosen by the caller (`now_ms`), so that a dispatcher (and
//! a test) controls its clock; only a subscription's created/updated times come from the
//! store's own clock.

pub mod connect;
mod error;
pub mod lease;
mod model;
pub mod postgres;
pub mod quota;
pub mod sqlite;

#[cfg(feature = "test-util")]
pub mod conformance;

pub use error::{BackendError, Error, Result};
pub use lease::Lease;
pub use model::{
    Cursor, Delivery, DeliveryKey, MAX_CONCURRENCY, MAX_ENDPOINT_LEN, MAX_ERROR_LEN, MAX_FILTERS,
    MAX_NAME_LEN, MAX_OFFSET, MAX_TYPE_LEN, Parked, RetryPolicy, Subscription, SubscriptionSpec,
    SubscriptionStats, validate_name,
};
pub use quota::{QuotaGrant, QuotaUsage};

use async_trait::async_trait;
use connect::{
    Attempt, AttemptOutcome, Case, CaseState, LaneState, Message, MessageCount, MessageFilter,
    NewMessage, NewReply, OutboundRequest, Reply, ReplyDisposition,
};

/// The dispatcher's queryable state. Object-safe: use it as `Arc<dyn Store>`.
///
/// Every method is atomic (one transaction). Methods that name a subscription fail with
/// [`Error::NotFound`] when it does not exist (except [`ack`](Self::ack)).
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    // ---- subscriptions ----

    /// Creates the subscription, or replaces the spec of an existing one. Returns the stored
    /// subscription and whether it was created. An update that changes the spec bumps
    /// `generation` and `updated-at`; putting the same spec again changes nothing.
    async fn put_subscription(&self, spec: SubscriptionSpec) -> Result<(Subscription, bool)>;

    /// The named subscription.
    async fn get_subscription(&self, name: &str) -> Result<Subscription>;

    /// Every subscription, ordered by name.
    async fn list_subscriptions(&self) -> Result<Vec<Subscription>>;

    /// Deletes the subscription with its cursors, in-flight and parked deliveries.
    async fn delete_subscription(&self, name: &str) -> Result<()>;

    // ---- cursors ----

    /// The subscription's cursors, ordered by topic and partition. A partition the
    /// subscription has never read has none.
    async fn cursors(&self, subscription: &str) -> Result<Vec<Cursor>>;

    /// Moves a cursor forward to `offset` (creating it if there is none). Returns whether
    /// it moved: `false` if it already was at or beyond `offset`.
    async fn advance_cursor(
        &self,
        subscription: &str,
        topic: &str,
        partition: u32,
        offset: u64,
    ) -> Result<bool>;

    /// Sets a cursor to `offset`, backwards or forwards, and removes every in-flight
    /// delivery of that partition (parked ones stay). Returns how many were removed.
    async fn seek(
        &self,
        subscription: &str,
        topic: &str,
        partition: u32,
        offset: u64,
    ) -> Result<u64>;

    // ---- deliveries ----

    /// Inserts `deliveries` (all of `subscription`) as in flight and, if given, advances the
    /// cursor of `cursor_after`'s partition forward to its offset, in one transaction.
    /// Deliveries whose key is already in flight or parked are skipped, so a retried enqueue
    /// inserts nothing twice. Returns how many were inserted.
    async fn enqueue(
        &self,
        subscription: &str,
        deliveries: Vec<Delivery>,
        cursor_after: Option<Cursor>,
    ) -> Result<u64>;

    /// Up to `limit` in-flight deliveries due at `now_ms` (`next-attempt-at <= now_ms`),
    /// ordered by `next-attempt-at`, then topic, partition and offset.
    async fn due(&self, subscription: &str, now_ms: i64, limit: u32) -> Result<Vec<Delivery>>;

    /// Every in-flight delivery of one partition, ordered by offset.
    async fn in_flight(
        &self,
        subscription: &str,
        topic: &str,
        partition: u32,
    ) -> Result<Vec<Delivery>>;

    /// Removes a delivered delivery. Idempotent: returns whether a row was removed (an
    /// unknown key, even of an unknown subscription, is `Ok(false)`).
    async fn ack(&self, key: &DeliveryKey) -> Result<bool>;

    /// [`ack`](Self::ack) for many deliveries in one transaction: every key is checked
    /// first, and a bad one removes nothing. Returns how many rows were removed.
    async fn ack_all(&self, keys: &[DeliveryKey]) -> Result<u64>;

    /// Records a failed attempt of an in-flight delivery: increments `attempts`, sets
    /// `first-attempt-at` to `attempted_at_ms` if unset, stores `error` (cut to
    /// [`MAX_ERROR_LEN`] bytes) and makes it due at `next_attempt_at_ms`. Returns the
    /// updated delivery. [`Error::NotFound`] if it is not in flight.
    async fn retry_later(
        &self,
        key: &DeliveryKey,
        attempted_at_ms: i64,
        next_attempt_at_ms: i64,
        error: &str,
    ) -> Result<Delivery>;

    /// Gives up on an in-flight delivery after a failed attempt: counts that attempt (as
    /// [`retry_later`](Self::retry_later) would, with `reason` as its error) and moves the
    /// row to `parked`, at `now_ms`. [`Error::NotFound`] if it is not in flight.
    async fn park(&self, key: &DeliveryKey, now_ms: i64, reason: &str) -> Result<Parked>;

    /// Up to `limit` parked deliveries of the subscription, ordered by topic, partition and
    /// offset, starting after `after` (keyset pagination: pass the last key of a page).
    async fn parked(
        &self,
        subscription: &str,
        after: Option<&DeliveryKey>,
        limit: u32,
    ) -> Result<Vec<Parked>>;

    /// Moves a parked delivery back in flight with no attempts and no error, due at
    /// `now_ms`. Returns it. [`Error::NotFound`] if it is not parked.
    async fn unpark(&self, key: &DeliveryKey, now_ms: i64) -> Result<Delivery>;

    /// Deletes a parked delivery for good. [`Error::NotFound`] if it is not parked.
    async fn discard(&self, key: &DeliveryKey) -> Result<()>;

    /// Counts of in-flight and parked deliveries, and the latest error.
    async fn stats(&self, subscription: &str) -> Result<SubscriptionStats>;

    // ---- event schemas ----

    /// Replaces every JSON Schema of `topic` (event type -> schema, a JSON object or
    /// boolean); an empty map removes them. The store checks names and shapes, not the
    /// schemas' meaning (the server compiles them before it calls this).
    async fn put_schemas(&self, topic: &str, schemas: EventSchemas) -> Result<()>;

    /// The JSON Schemas of `topic`'s event types (empty when it has none).
    async fn schemas(&self, topic: &str) -> Result<EventSchemas>;

    // ---- the integration gateway (switchyard-connect; see [`connect`]) ----

    /// A lane's cursors (the next offset to read per topic and partition), ordered by topic
    /// and partition. A partition the lane has never read has none.
    async fn lane_cursors(&self, lane: &str) -> Result<Vec<Cursor>>;

    /// Sets a lane's cursor (forwards or backwards; creating it if there is none).
    async fn set_lane_cursor(&self, lane: &str, cursor: Cursor) -> Result<()>;

    /// A lane's intake: inserts `messages` (the events it took since its cursor, each of
    /// them pending, or failed or unmatched with its failure counted in its case in the
    /// same transaction), then moves the cursor of `cursor_after`'s partition forward to
    /// its offset. The cursor is never ahead of the stored messages: it moves in their
    /// transaction or after it, so a failed intake leaves it where it was or behind
    /// messages already stored. A message whose (adapter, topic, partition, offset) is
    /// already stored is skipped, so a retried intake inserts nothing twice. Returns how
    /// many were inserted and those of them that are ready to send
    /// ([`connect::Intake`]).
    async fn lane_intake(
        &self,
        lane: &str,
        messages: Vec<NewMessage>,
        cursor_after: Option<Cursor>,
        now_ms: i64,
    ) -> Result<connect::Intake>;

    /// Up to `limit` pending messages of `adapter` due at `now_ms`, oldest first, leaving
    /// out any whose partition key has an older pending message (due or not): a key's
    /// messages go one at a time, in order. Messages whose id is in `skip` (in flight) are
    /// left out, and so are later ones of their keys.
    async fn due_messages(
        &self,
        adapter: &str,
        now_ms: i64,
        skip: &[u64],
        limit: u32,
    ) -> Result<Vec<Message>>;

    /// When the next pending message of `adapter` is due, if it has any.
    async fn next_due_at(&self, adapter: &str) -> Result<Option<i64>>;

    /// Records an attempt of a pending message and its outcome, in one transaction: the
    /// attempt row (numbered by the store), the message's new state, and for
    /// [`AttemptOutcome::Failed`] the case's count. Returns the updated message.
    /// [`Error::NotFound`] for an unknown id; [`Error::Conflict`] when the message is no
    /// longer pending (discarded meanwhile): nothing is recorded.
    async fn finish_attempt(
        &self,
        message_id: u64,
        attempt: Attempt,
        outcome: AttemptOutcome,
        now_ms: i64,
    ) -> Result<Message>;

    /// A message and every attempt of it, in order. [`Error::NotFound`] for an unknown id.
    async fn message(&self, id: u64) -> Result<(Message, Vec<Attempt>)>;

    /// Messages that match `filter`, by id (keyset pagination with `after_id`).
    async fn messages(&self, filter: &MessageFilter) -> Result<Vec<Message>>;

    /// Puts a delivered, rejected, failed or discarded message back in its lane, due at
    /// `now_ms` (its attempts stay on record). With `remapped`, its request and adapter
    /// hash are replaced first (mapped again by the current adapter version). Returns it.
    /// [`Error::Conflict`] for a message that is pending, awaiting a reply or unmatched.
    async fn replay_message(
        &self,
        id: u64,
        remapped: Option<(OutboundRequest, String)>,
        now_ms: i64,
    ) -> Result<Message>;

    /// Records a reply, and settles the message it answers, in one transaction. The
    /// message is found by (adapter, correlation id): if it awaits a reply it takes
    /// `settle` (`Delivered`, `Rejected` or `Failed`; `None` means `Delivered`) and the
    /// reply is `matched`; if it does not await one the reply is `late`; with no such
    /// message it is `unmatched`. Returns the stored reply.
    async fn record_reply(
        &self,
        reply: NewReply,
        settle: Option<AttemptOutcome>,
        now_ms: i64,
    ) -> Result<Reply>;

    /// The message of `adapter` with this correlation id, if there is one.
    async fn message_by_correlation(
        &self,
        adapter: &str,
        correlation_id: &str,
    ) -> Result<Option<Message>>;

    /// Up to `limit` replies of `adapter`, newest first, optionally of one disposition.
    async fn replies(
        &self,
        adapter: &str,
        disposition: Option<ReplyDisposition>,
        limit: u32,
    ) -> Result<Vec<Reply>>;

    /// Moves every message of `adapter` awaiting a reply past its deadline at `now_ms` to
    /// `failed`, in `failure`'s case. Returns how many.
    async fn expire_replies(
        &self,
        adapter: &str,
        now_ms: i64,
        failure: connect::Failure,
    ) -> Result<u64>;

    /// Cases, most recently seen first, optionally of one adapter and state.
    async fn cases(
        &self,
        adapter: Option<&str>,
        state: Option<CaseState>,
        limit: u32,
    ) -> Result<Vec<Case>>;

    /// One case. [`Error::NotFound`] for an unknown id.
    async fn case(&self, id: &str) -> Result<Case>;

    /// Puts every `failed` message of the case back in its lane, due at `now_ms`. Returns
    /// how many.
    async fn retry_case(&self, id: &str, now_ms: i64) -> Result<u64>;

    /// Marks every `failed` or `unmatched` message of the case `discarded`. Returns how
    /// many.
    async fn discard_case(&self, id: &str, now_ms: i64) -> Result<u64>;

    /// Marks the case resolved. Returns it.
    async fn resolve_case(&self, id: &str, now_ms: i64) -> Result<Case>;

    /// Sets a lane's state.
    async fn set_lane_state(&self, lane: &str, state: LaneState, now_ms: i64) -> Result<()>;

    /// Every lane's recorded state (lanes never set are running).
    async fn lane_states(&self) -> Result<Vec<(String, LaneState)>>;

    /// Messages per adapter and state (states with none are left out), optionally of one
    /// adapter.
    async fn message_counts(&self, adapter: Option<&str>) -> Result<Vec<MessageCount>>;

    // ---- leases (several instances sharing one store; see [`lease`]) ----

    /// Takes or renews the lease `name` for `owner` until `now_ms + ttl_ms`: when it is
    /// free (never taken, expired or released) or already `owner`'s. Renewing keeps the
    /// epoch (and never shortens the grant); a new owner gets the epoch plus one. `None`
    /// when another owner holds it at `now_ms`: nothing changes. Bad input (an empty or
    /// non-printable name or owner, `ttl_ms` not in 1..=[`lease::MAX_LEASE_TTL_MS`]) is
    /// [`Error::InvalidInput`].
    async fn acquire_lease(
        &self,
        name: &str,
        owner: &str,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<Option<Lease>>;

    /// Takes the lease `name` for `owner` whatever its state (promotion), with the epoch
    /// plus one: the previous holder's next [`acquire_lease`](Self::acquire_lease) fails,
    /// which fences it.
    async fn steal_lease(&self, name: &str, owner: &str, now_ms: i64, ttl_ms: i64)
    -> Result<Lease>;

    /// Gives the lease up if `owner` holds it (it becomes free at once; the epoch stays).
    /// Returns whether it did; a release by another owner changes nothing.
    async fn release_lease(&self, name: &str, owner: &str) -> Result<bool>;

    /// Every lease whose name starts with `prefix` (`""` for all), held or not, by name.
    async fn leases(&self, prefix: &str) -> Result<Vec<Lease>>;

    // ---- quota counters (the API gateway's quotas; see [`quota`]) ----

    /// Reserves up to `want` units of the counter (`key`, `window_start_ms`) under `limit`,
    /// creating it at 0 (ending at `window_end_ms`) when missing: grants
    /// `min(want, limit - used)` and adds it to `used`, in one transaction, so callers racing
    /// on one counter (tasks, instances) are never granted more than `limit` in all. A
    /// counter already above a lowered limit grants 0 and stays as it is. Commits durably:
    /// a grant forgotten by a crash would hand its units out twice.
    async fn reserve_quota(
        &self,
        key: &str,
        window_start_ms: i64,
        window_end_ms: i64,
        limit: u64,
        want: u64,
    ) -> Result<QuotaGrant>;

    /// Gives back `n` reserved units that were not spent (`used` never goes below 0; a
    /// counter that does not exist is left alone). Returns `used` after it, 0 without a
    /// counter.
    async fn release_quota(&self, key: &str, window_start_ms: i64, n: u64) -> Result<u64>;

    /// Every counter whose key starts with `prefix` (`""` for all), by key, then window.
    async fn quotas(&self, prefix: &str) -> Result<Vec<QuotaUsage>>;

    /// Deletes every counter whose window ended at or before `ended_by_ms`. Returns how
    /// many.
    async fn prune_quotas(&self, ended_by_ms: i64) -> Result<u64>;
}

/// Event type -> JSON Schema, for one topic.
pub type EventSchemas = std::collections::BTreeMap<String, serde_json::Value>;
