//! The distributed backend: one PostgreSQL database that several Switchyard instances
//! share, through sqlx.
//!
//! The tables are the SQLite backend's, column for column (`migrations/postgres/`, run at
//! open by the embedded migrator, which holds PostgreSQL's migration advisory lock so
//! instances starting together migrate once). Every [`Store`] method is one transaction:
//!
//! - **reads** run in `REPEATABLE READ READ ONLY` transactions, so a method that reads
//!   several tables (a case and its counts, stats) sees one snapshot, as on SQLite;
//! - **writes** run in `READ COMMITTED` transactions and are written so that two instances
//!   (or two tasks) doing the same thing at once cannot break an invariant: inserts that
//!   may meet a concurrent one are `ON CONFLICT` (a retried or raced enqueue inserts once, a
//!   case counts every failure), state changes lock the row they read first (`FOR UPDATE`:
//!   an attempt's number and its message's state; a reply and the message it settles; a
//!   subscription's generation), and moves of a delivery between `deliveries` and `parked`
//!   (enqueue, park, unpark, seek) take a transaction-scoped advisory lock per subscription,
//!   topic and partition, so a key is never in both tables. A subscription being written to
//!   is held with `FOR KEY SHARE`, so a concurrent delete waits for the write and then
//!   removes its rows too.
//!
//! Two kinds of commits, like SQLite's `FULL` and `NORMAL`: definitions and operator
//! actions wait for the WAL flush (the server's `synchronous_commit`, `on` by default);
//! dispatcher and lane progress (`enqueue`, `advance_cursor`, `ack`, `ack_all`,
//! `retry_later`, `park`, `lane_intake`, `finish_attempt`, `record_reply`,
//! `expire_replies`) commit with `synchronous_commit = off`. A crash of the PostgreSQL
//! server may lose the last few hundred milliseconds of those commits (never corrupt
//! anything, and always a prefix: commits are applied in order), and losing them loses
//! nothing: progress is re-derived from the journal (a lost enqueue or intake rolls back
//! with its cursor, so the events are read again; a lost ack or attempt means one more
//! delivery, which at-least-once allows).
//!
//! PostgreSQL text cannot hold the NUL character: the store writes U+FFFD in its place, in
//! what it stores and in what it looks up by, so a vendor's body or an event key with a NUL
//! in it is recorded rather than refused.

mod leases;
mod messages;
mod quotas;
#[cfg(feature = "test-util")]
pub mod testing;

use crate::connect::{
    Attempt, AttemptOutcome, Case, CaseState, Failure, Intake, LaneState, Message, MessageCount,
    MessageFilter, NewMessage, NewReply, OutboundRequest, Reply, ReplyDisposition,
};
use crate::lease::Lease;
use crate::model::clip_error;
use crate::quota::{QuotaGrant, QuotaUsage};
use crate::{
    Cursor, Delivery, DeliveryKey, Error, Parked, Result, Store, Subscription, SubscriptionSpec,
    SubscriptionStats, validate_name,
};
use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::{Connection as _, Decode, Postgres, Row, Transaction, Type};
use std::borrow::Cow;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Connections an instance keeps at most, unless the URL says `pool=N`.
pub const DEFAULT_POOL: u32 = 8;
/// The most connections `pool=N` may ask for.
pub const MAX_POOL: u32 = 256;
/// How long opening waits for the server, and an operation for a free connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Advisory lock classes (the first key of `pg_advisory_xact_lock(int, int)`): "Sy" and a
/// number, so they do not collide with locks other software takes in the same database.
const LOCK_PARTITION: i32 = 0x5379_0001;
const LOCK_SCHEMAS: i32 = 0x5379_0002;

const DELIVERY_COLS: &str = "subscription, topic, partition_no, record_offset, partition_key, \
     attempts, first_attempt_at_ms, next_attempt_at_ms, last_error";
const PARKED_COLS: &str = "subscription, topic, partition_no, record_offset, partition_key, \
     attempts, first_attempt_at_ms, next_attempt_at_ms, last_error, reason, parked_at_ms";
const KEY_MATCH: &str =
    "subscription = $1 AND topic = $2 AND partition_no = $3 AND record_offset = $4";

/// Where the store lives: a `postgres://` (or `postgresql://`) URL, as libpq takes it, plus
/// `pool=N` (the most connections this instance opens; default [`DEFAULT_POOL`]).
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresOptions {
    /// The URL without `pool`, as handed to the driver.
    url: String,
    pub pool: u32,
}

impl std::fmt::Debug for PostgresOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresOptions")
            .field("url", &redact(&self.url))
            .field("pool", &self.pool)
            .finish()
    }
}

impl PostgresOptions {
    /// Parses `postgres://[user[:password]@]host[:port]/database[?param=value&...]`. The
    /// error names the bad part (and never shows the password).
    pub fn from_url(text: &str) -> Result<Self> {
        let text = text.trim();
        let invalid = |reason: String| Error::invalid("store", reason);
        if !(text.starts_with("postgres://") || text.starts_with("postgresql://")) {
            return Err(invalid(format!(
                "{} is not a postgres:// URL",
                redact(text)
            )));
        }
        let (base, query) = match text.split_once('?') {
            Some((b, q)) => (b, Some(q)),
            None => (text, None),
        };
        let mut pool = DEFAULT_POOL;
        let mut kept = Vec::new();
        for pair in query.into_iter().flat_map(|q| q.split('&')) {
            if pair.is_empty() {
                continue;
            }
            match pair.split_once('=') {
                Some(("pool", n)) => {
                    pool = n
                        .parse::<u32>()
                        .ok()
                        .filter(|n| (1..=MAX_POOL).contains(n))
                        .ok_or_else(|| {
                            invalid(format!(
                                "pool must be 1 to {MAX_POOL} connections (got {n:?})"
                            ))
                        })?;
                }
                _ => kept.push(pair),
            }
        }
        let url = if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        PgConnectOptions::from_str(&url).map_err(|e| invalid(format!("{}: {e}", redact(&url))))?;
        Ok(Self { url, pool })
    }

    /// The URL with its password (if any) replaced by `***`, for messages.
    pub fn redacted(&self) -> String {
        redact(&self.url)
    }
}

/// `url` with the password of its user info and any `password=` parameter replaced by
/// `***`.
pub fn redact(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some(parts) => parts,
        None => return url.to_owned(),
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{user}:***@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let params: Vec<String> = query
                .split('&')
                .map(|p| match p.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                    _ => p.to_owned(),
                })
                .collect();
            format!("{path}?{}", params.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
}

/// The PostgreSQL [`Store`].
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    redacted: String,
}

impl PostgresStore {
    /// Connects to the database `options` names and brings its schema up to date. A server
    /// that cannot be reached, refuses the login, or holds a schema from a newer version is
    /// [`Error::Open`] naming the URL (its password redacted).
    pub async fn open(options: &PostgresOptions) -> Result<Self> {
        let redacted = options.redacted();
        let open_err = |reason: &str, e: Source| Error::Open {
            path: PathBuf::from(&redacted),
            reason: format!("{reason}: {}", e.message()),
            source: Some(e.boxed()),
        };
        let connect = PgConnectOptions::from_str(&options.url)
            .map_err(|e| open_err("the URL does not parse", Source::Sqlx(e)))?;
        let connect = connect.application_name("switchyard");
        // One connection first, so that a refused connection or login is reported as such
        // (the pool would retry it until its timeout and report only the timeout).
        match tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&connect)).await {
            Ok(Ok(conn)) => {
                let _ = conn.close().await;
            }
            Ok(Err(e)) => return Err(open_err("cannot connect", Source::Sqlx(e))),
            Err(_) => {
                return Err(Error::Open {
                    path: PathBuf::from(&redacted),
                    reason: format!(
                        "cannot connect: no answer within {} s",
                        CONNECT_TIMEOUT.as_secs()
                    ),
                    source: None,
                });
            }
        }
        let pool = PgPoolOptions::new()
            .max_connections(options.pool)
            .acquire_timeout(CONNECT_TIMEOUT)
            .connect_with(connect)
            .await
            .map_err(|e| open_err("cannot connect", Source::Sqlx(e)))?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| open_err("cannot bring the schema up to date", Source::Migrate(e)))?;
        let store = Self { pool, redacted };
        store.check_readable().await?;
        Ok(store)
    }

    /// The store's URL, its password redacted.
    pub fn url(&self) -> &str {
        &self.redacted
    }

    /// Closes every connection, waiting for operations in progress. Operations after this
    /// fail.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Reads every table once (no rows), so that a database whose tables are missing or
    /// not ours is reported at open rather than at the first operation.
    async fn check_readable(&self) -> Result<()> {
        for (table, cols) in [
            ("subscriptions", "name, spec, generation"),
            ("cursors", "subscription, next_offset"),
            ("deliveries", DELIVERY_COLS),
            ("parked", PARKED_COLS),
            ("event_schemas", "topic, event_type, schema_json"),
            ("lane_cursors", "lane, next_offset"),
            ("lanes", "lane, state"),
            ("messages", messages::MESSAGE_COLS),
            ("attempts", "message_id, n, outcome"),
            ("replies", "id, disposition"),
            ("cases", messages::CASE_COLS),
            (
                "leases",
                "name, owner, epoch, acquired_at_ms, expires_at_ms",
            ),
            ("quotas", "key, window_start_ms, window_end_ms, used"),
        ] {
            sqlx::query(&format!("SELECT {cols} FROM {table} LIMIT 0"))
                .fetch_all(&self.pool)
                .await
                .map_err(|e| Error::Open {
                    path: PathBuf::from(&self.redacted),
                    reason: format!("cannot read table `{table}`: {e}"),
                    source: Some(Box::new(e)),
                })?;
        }
        Ok(())
    }

    /// A write that waits for the WAL flush (definitions, operator actions).
    async fn write(&self, op: &'static str) -> Result<Transaction<'static, Postgres>> {
        self.pool.begin().await.map_err(be(op))
    }

    /// A write of dispatcher or lane progress (no wait for the WAL flush; see the module
    /// docs).
    async fn write_progress(&self, op: &'static str) -> Result<Transaction<'static, Postgres>> {
        self.pool
            .begin_with("BEGIN; SET LOCAL synchronous_commit TO off")
            .await
            .map_err(be(op))
    }

    /// A read of one snapshot.
    async fn read(&self, op: &'static str) -> Result<Transaction<'static, Postgres>> {
        self.pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .map_err(be(op))
    }
}

/// The two kinds of errors opening can fail with, shown by their message.
enum Source {
    Sqlx(sqlx::Error),
    Migrate(sqlx::migrate::MigrateError),
}

impl Source {
    fn message(&self) -> String {
        match self {
            Self::Migrate(sqlx::migrate::MigrateError::VersionMissing(version)) => format!(
                "the database was written by a newer version of Switchyard \
                 (it has migration {version}, which this version does not know)"
            ),
            Self::Sqlx(e) => e.to_string(),
            Self::Migrate(e) => e.to_string(),
        }
    }

    fn boxed(self) -> crate::BackendError {
        match self {
            Self::Sqlx(e) => Box::new(e),
            Self::Migrate(e) => Box::new(e),
        }
    }
}

/// Maps a driver error to [`Error::Backend`] naming the operation.
fn be(op: &'static str) -> impl Fn(sqlx::Error) -> Error {
    move |e| Error::backend(op, e)
}

/// Text as PostgreSQL can store it: NUL becomes U+FFFD.
fn t(text: &str) -> Cow<'_, str> {
    if text.contains('\0') {
        Cow::Owned(text.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(text)
    }
}

/// [`t`] for an optional text, owned (for binds).
fn ot(text: Option<&str>) -> Option<String> {
    text.map(|s| t(s).into_owned())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Offsets are at most `i64::MAX` (checked by validation before they get here).
fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Decodes one column of a row, naming the table and key when it does not parse.
fn col<'r, T>(row: &'r PgRow, name: &str, table: &'static str, key: &str) -> Result<T>
where
    T: Decode<'r, Postgres> + Type<Postgres>,
{
    row.try_get::<T, _>(name).map_err(|e| Error::Corrupt {
        table,
        key: key.to_owned(),
        reason: format!("column `{name}`: {e}"),
    })
}

/// An unsigned column (stored as a signed 64-bit integer), checked for range.
fn col_unsigned<T: TryFrom<i64>>(
    row: &PgRow,
    name: &str,
    table: &'static str,
    key: &str,
) -> Result<T> {
    let v: i64 = col(row, name, table, key)?;
    T::try_from(v).map_err(|_| Error::Corrupt {
        table,
        key: key.to_owned(),
        reason: format!("column `{name}` is out of range ({v})"),
    })
}

/// The key of a delivery row as far as it is readable, for error messages.
fn row_key_text(row: &PgRow) -> String {
    let text = |name: &str| {
        row.try_get::<String, _>(name)
            .unwrap_or_else(|_| "?".to_owned())
    };
    let int = |name: &str| {
        row.try_get::<i64, _>(name)
            .map(|v| v.to_string())
            .unwrap_or_else(|_| "?".to_owned())
    };
    format!(
        "{} {}/{}@{}",
        text("subscription"),
        text("topic"),
        int("partition_no"),
        int("record_offset")
    )
}

fn delivery_from_row(row: &PgRow, table: &'static str) -> Result<Delivery> {
    let key_text = row_key_text(row);
    let k = key_text.as_str();
    Ok(Delivery {
        key: DeliveryKey {
            subscription: col(row, "subscription", table, k)?,
            topic: col(row, "topic", table, k)?,
            partition: col_unsigned::<u32>(row, "partition_no", table, k)?,
            offset: col_unsigned::<u64>(row, "record_offset", table, k)?,
        },
        partition_key: col(row, "partition_key", table, k)?,
        attempts: col_unsigned::<u32>(row, "attempts", table, k)?,
        first_attempt_at_ms: col(row, "first_attempt_at_ms", table, k)?,
        next_attempt_at_ms: col(row, "next_attempt_at_ms", table, k)?,
        last_error: col(row, "last_error", table, k)?,
    })
}

fn parked_from_row(row: &PgRow) -> Result<Parked> {
    let delivery = delivery_from_row(row, "parked")?;
    let key_text = delivery.key.to_string();
    Ok(Parked {
        reason: col(row, "reason", "parked", &key_text)?,
        parked_at_ms: col(row, "parked_at_ms", "parked", &key_text)?,
        delivery,
    })
}

fn subscription_from_row(row: &PgRow) -> Result<Subscription> {
    let name = row
        .try_get::<String, _>("name")
        .unwrap_or_else(|_| "?".to_owned());
    let table = "subscriptions";
    let spec_json: String = col(row, "spec", table, &name)?;
    let spec: SubscriptionSpec = serde_json::from_str(&spec_json).map_err(|e| Error::Corrupt {
        table,
        key: name.clone(),
        reason: format!("column `spec` is not a valid subscription spec: {e}"),
    })?;
    if spec.name != name {
        return Err(Error::Corrupt {
            table,
            key: name,
            reason: format!("column `spec` names another subscription (`{}`)", spec.name),
        });
    }
    Ok(Subscription {
        created_at_ms: col(row, "created_at_ms", table, &name)?,
        updated_at_ms: col(row, "updated_at_ms", table, &name)?,
        generation: col_unsigned::<u64>(row, "generation", table, &name)?,
        spec,
    })
}

fn validate_key(key: &DeliveryKey) -> Result<()> {
    key.validate("key.")
}

fn check_topic(topic: &str) -> Result<()> {
    switchyard_types::TopicName::new(topic)
        .map(drop)
        .map_err(|e| Error::invalid("topic", e.reason))
}

fn check_offset(offset: u64) -> Result<()> {
    if offset > crate::MAX_OFFSET {
        return Err(Error::invalid(
            "offset",
            format!("must be at most {} (got {offset})", crate::MAX_OFFSET),
        ));
    }
    Ok(())
}

/// Fails with [`Error::NotFound`] unless the subscription exists. In a write (`hold`), the
/// row is held with `FOR KEY SHARE` until the transaction ends, so a concurrent delete
/// waits for it (and then deletes what it wrote).
async fn require_subscription(
    conn: &mut PgConnection,
    op: &'static str,
    name: &str,
    hold: bool,
) -> Result<()> {
    let sql = if hold {
        "SELECT 1 FROM subscriptions WHERE name = $1 FOR KEY SHARE"
    } else {
        "SELECT 1 FROM subscriptions WHERE name = $1"
    };
    let found = sqlx::query(sql)
        .bind(name)
        .fetch_optional(conn)
        .await
        .map_err(be(op))?;
    match found {
        Some(_) => Ok(()),
        None => Err(Error::not_found("subscription", name)),
    }
}

/// Takes the advisory lock of each (subscription, topic, partition), in order (so two
/// transactions never wait on each other in a cycle), until the transaction ends.
async fn lock_partitions(
    conn: &mut PgConnection,
    op: &'static str,
    subscription: &str,
    partitions: impl IntoIterator<Item = (&str, u32)>,
) -> Result<()> {
    let set: std::collections::BTreeSet<(&str, u32)> = partitions.into_iter().collect();
    for (topic, partition) in set {
        sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2 || '/' || $3 || '/' || $4))")
            .bind(LOCK_PARTITION)
            .bind(subscription)
            .bind(topic)
            .bind(i64::from(partition).to_string())
            .execute(&mut *conn)
            .await
            .map_err(be(op))?;
    }
    Ok(())
}

/// The error for a key that is not where an operation expected it: the subscription or
/// the delivery is missing.
async fn missing(
    conn: &mut PgConnection,
    op: &'static str,
    key: &DeliveryKey,
    what: &'static str,
) -> Error {
    match require_subscription(conn, op, &key.subscription, false).await {
        Ok(()) => Error::not_found(what, key.to_string()),
        Err(e) => e,
    }
}

async fn record_error(
    conn: &mut PgConnection,
    op: &'static str,
    subscription: &str,
    error: &str,
    at_ms: i64,
) -> Result<()> {
    sqlx::query("UPDATE subscriptions SET last_error = $1, last_error_at_ms = $2 WHERE name = $3")
        .bind(error)
        .bind(at_ms)
        .bind(subscription)
        .execute(conn)
        .await
        .map_err(be(op))?;
    Ok(())
}

/// Moves a cursor forward only; returns whether it moved.
async fn advance(
    conn: &mut PgConnection,
    op: &'static str,
    subscription: &str,
    topic: &str,
    partition: u32,
    offset: u64,
) -> Result<bool> {
    let done = sqlx::query(
        "INSERT INTO cursors (subscription, topic, partition_no, next_offset) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (subscription, topic, partition_no) \
         DO UPDATE SET next_offset = excluded.next_offset \
         WHERE cursors.next_offset < excluded.next_offset",
    )
    .bind(subscription)
    .bind(topic)
    .bind(i64::from(partition))
    .bind(to_i64(offset))
    .execute(conn)
    .await
    .map_err(be(op))?;
    Ok(done.rows_affected() > 0)
}

fn bind_key<'q>(
    q: sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>,
    key: &'q DeliveryKey,
) -> sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments> {
    q.bind(key.subscription.as_str())
        .bind(key.topic.as_str())
        .bind(i64::from(key.partition))
        .bind(to_i64(key.offset))
}

const SUBSCRIPTION_COLS: &str = "name, spec, created_at_ms, updated_at_ms, generation";

#[async_trait]
impl Store for PostgresStore {
    async fn put_subscription(&self, spec: SubscriptionSpec) -> Result<(Subscription, bool)> {
        const OP: &str = "put_subscription";
        spec.validate()?;
        let json = serde_json::to_string(&spec).map_err(|e| Error::backend(OP, e))?;
        let now = now_ms();
        let mut tx = self.write(OP).await?;
        // Two instances creating one subscription at once: one inserts, the other updates
        // (or finds it equal).
        let inserted = sqlx::query(
            "INSERT INTO subscriptions (name, spec, created_at_ms, updated_at_ms, generation) \
             VALUES ($1, $2, $3, $3, 1) ON CONFLICT (name) DO NOTHING",
        )
        .bind(&spec.name)
        .bind(t(&json).as_ref())
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(be(OP))?;
        if inserted.rows_affected() == 1 {
            tx.commit().await.map_err(be(OP))?;
            let sub = Subscription {
                spec,
                created_at_ms: now,
                updated_at_ms: now,
                generation: 1,
            };
            return Ok((sub, true));
        }
        let row = sqlx::query(&format!(
            "SELECT {SUBSCRIPTION_COLS} FROM subscriptions WHERE name = $1 FOR UPDATE"
        ))
        .bind(&spec.name)
        .fetch_optional(&mut *tx)
        .await
        .map_err(be(OP))?;
        let Some(row) = row else {
            // Deleted between the insert and the read: say so rather than guess.
            return Err(Error::Conflict {
                what: "subscription",
                name: spec.name.clone(),
                reason: "it was deleted meanwhile; put it again".into(),
            });
        };
        let table = "subscriptions";
        let created_at_ms: i64 = col(&row, "created_at_ms", table, &spec.name)?;
        let updated_at_ms: i64 = col(&row, "updated_at_ms", table, &spec.name)?;
        let generation = col_unsigned::<u64>(&row, "generation", table, &spec.name)?;
        // A stored spec that no longer parses is replaced: putting a good spec is how such a
        // row is repaired.
        let old: Option<SubscriptionSpec> = row
            .try_get::<String, _>("spec")
            .ok()
            .and_then(|s| serde_json::from_str(&s).ok());
        let subscription = if old.as_ref() == Some(&spec) {
            Subscription {
                spec,
                created_at_ms,
                updated_at_ms,
                generation,
            }
        } else {
            let updated = now.max(updated_at_ms);
            let generation = generation.saturating_add(1);
            sqlx::query(
                "UPDATE subscriptions SET spec = $1, updated_at_ms = $2, generation = $3 \
                 WHERE name = $4",
            )
            .bind(t(&json).as_ref())
            .bind(updated)
            .bind(to_i64(generation))
            .bind(&spec.name)
            .execute(&mut *tx)
            .await
            .map_err(be(OP))?;
            Subscription {
                spec,
                created_at_ms,
                updated_at_ms: updated,
                generation,
            }
        };
        tx.commit().await.map_err(be(OP))?;
        Ok((subscription, false))
    }

    async fn get_subscription(&self, name: &str) -> Result<Subscription> {
        const OP: &str = "get_subscription";
        validate_name("name", name)?;
        let mut tx = self.read(OP).await?;
        let row = sqlx::query(&format!(
            "SELECT {SUBSCRIPTION_COLS} FROM subscriptions WHERE name = $1"
        ))
        .bind(name)
        .fetch_optional(&mut *tx)
        .await
        .map_err(be(OP))?;
        tx.commit().await.map_err(be(OP))?;
        match row {
            Some(row) => subscription_from_row(&row),
            None => Err(Error::not_found("subscription", name)),
        }
    }

    async fn list_subscriptions(&self) -> Result<Vec<Subscription>> {
        const OP: &str = "list_subscriptions";
        let mut tx = self.read(OP).await?;
        let rows = sqlx::query(&format!(
            "SELECT {SUBSCRIPTION_COLS} FROM subscriptions ORDER BY name"
        ))
        .fetch_all(&mut *tx)
        .await
        .map_err(be(OP))?;
        tx.commit().await.map_err(be(OP))?;
        rows.iter().map(subscription_from_row).collect()
    }

    async fn delete_subscription(&self, name: &str) -> Result<()> {
        const OP: &str = "delete_subscription";
        validate_name("name", name)?;
        let mut tx = self.write(OP).await?;
        // The subscription row first: writers holding it (FOR KEY SHARE) finish before its
        // children are deleted, and new ones wait and then find it gone.
        let done = sqlx::query("DELETE FROM subscriptions WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(be(OP))?;
        if done.rows_affected() == 0 {
            tx.rollback().await.map_err(be(OP))?;
            return Err(Error::not_found("subscription", name));
        }
        // The foreign keys cascade; explicit deletes keep the rule visible here.
        for table in ["cursors", "deliveries", "parked"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE subscription = $1"))
                .bind(name)
                .execute(&mut *tx)
                .await
                .map_err(be(OP))?;
        }
        tx.commit().await.map_err(be(OP))?;
        Ok(())
    }

    async fn cursors(&self, subscription: &str) -> Result<Vec<Cursor>> {
        const OP: &str = "cursors";
        validate_name("subscription", subscription)?;
        let mut tx = self.read(OP).await?;
        require_subscription(&mut tx, OP, subscription, false).await?;
        let rows = sqlx::query(
            "SELECT topic, partition_no, next_offset FROM cursors WHERE subscription = $1 \
             ORDER BY topic, partition_no",
        )
        .bind(subscription)
        .fetch_all(&mut *tx)
        .await
        .map_err(be(OP))?;
        tx.commit().await.map_err(be(OP))?;
        rows.iter()
            .map(|row| {
                let topic = row
                    .try_get::<String, _>("topic")
                    .unwrap_or_else(|_| "?".to_owned());
                let partition = row
                    .try_get::<i64, _>("partition_no")
                    .map(|p| p.to_string())
                    .unwrap_or_else(|_| "?".to_owned());
                let key = format!("{subscription} {topic}/{partition}");
                Ok(Cursor {
                    topic: col(row, "topic", "cursors", &key)?,
                    partition: col_unsigned::<u32>(row, "partition_no", "cursors", &key)?,
                    offset: col_unsigned::<u64>(row, "next_offset", "cursors", &key)?,
                })
            })
            .collect()
    }

    async fn advance_cursor(
        &self,
        subscription: &str,
        topic: &str,
        partition: u32,
        offset: u64,
    ) -> Result<bool> {
        const OP: &str = "advance_cursor";
        validate_name("subscription", subscription)?;
        check_topic(topic)?;
        check_offset(offset)?;
        let mut tx = self.write_progress(OP).await?;
        require_subscription(&mut tx, OP, subscription, true).await?;
        let moved = advance(&mut tx, OP, subscription, topic, partition, offset).await?;
        tx.commit().await.map_err(be(OP))?;
        Ok(moved)
    }

    async fn seek(
        &self,
        subscription: &str,
        topic: &str,
        partition: u32,
        offset: u64,
    ) -> Result<u64> {
        const OP: &str = "seek";
        validate_name("subscription", subscription)?;
        check_topic(topic)?;
        check_offset(offset)?;
        let mut tx = self.write(OP).await?;
        require_subscription(&mut tx, OP, subscription, true).await?;
        lock_partitions(&mut tx, OP, subscription, [(topic, partition)]).await?;
        sqlx::query(
            "INSERT INTO cursors (subscription, topic, partition_no, next_offset) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (subscription, topic, partition_no) \
             DO UPDATE SET next_offset = excluded.next_offset",
        )
        .bind(subscription)
        .bind(topic)
        .bind(i64::from(partition))
        .bind(to_i64(offset))
        .execute(&mut *tx)
        .await
        .map_err(be(OP))?;
        let removed = sqlx::query(
            "DELETE FROM deliveries WHERE subscription = $1 AND topic = $2 AND partition_no = $3",
        )
        .bind(subscription)
        .bind(topic)
        .bind(i64::from(partition))
        .execute(&mut *tx)
        .await
        .map_err(be(OP))?;
        tx.commit().await.map_err(be(OP))?;
        Ok(removed.rows_affected())
    }

    async fn enqueue(
        &self,
        subscription: &str,
        deliveries: Vec<Delivery>,
        cursor_after: Option<Cursor>,
    ) -> Result<u64> {
        const OP: &str = "enqueue";
        validate_name("subscription", subscription)?;
        for (i, d) in deliveries.iter().enumerate() {
            d.key.validate(&format!("deliveries[{i}].key."))?;
            if d.key.subscription != subscription {
                return Err(Error::invalid(
                    format!("deliveries[{i}].key.subscription"),
                    format!(
                        "is `{}`, but the deliveries are enqueued for `{subscription}`",
                        d.key.subscription
                    ),
                ));
            }
        }
        if let Some(cursor) = &cursor_after {
            cursor.validate().map_err(|e| match e {
                Error::InvalidInput { field, reason } => {
                    Error::invalid(format!("cursor-after.{field}"), reason)
                }
                other => other,
            })?;
        }
        let mut tx = self.write_progress(OP).await?;
        require_subscription(&mut tx, OP, subscription, true).await?;
        let mut inserted = 0;
        if !deliveries.is_empty() {
            lock_partitions(
                &mut tx,
                OP,
                subscription,
                deliveries
                    .iter()
                    .map(|d| (d.key.topic.as_str(), d.key.partition)),
            )
            .await?;
            // One statement for the whole batch; keys in flight (the conflict) or parked
            // (the NOT EXISTS, stable under the partition locks) are skipped.
            let n = deliveries.len();
            let (mut topics, mut partitions, mut offsets) = (
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
            );
            let (mut keys, mut attempts, mut firsts, mut nexts, mut errors) = (
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
            );
            for d in &deliveries {
                topics.push(d.key.topic.clone());
                partitions.push(i64::from(d.key.partition));
                offsets.push(to_i64(d.key.offset));
                keys.push(ot(d.partition_key.as_deref()));
                attempts.push(i64::from(d.attempts));
                firsts.push(d.first_attempt_at_ms);
                nexts.push(d.next_attempt_at_ms);
                errors.push(ot(d.last_error.as_deref().map(clip_error).as_deref()));
            }
            let done = sqlx::query(&format!(
                "INSERT INTO deliveries ({DELIVERY_COLS}) \
                 SELECT $1, d.topic, d.partition_no, d.record_offset, d.partition_key, \
                 d.attempts, d.first_attempt_at_ms, d.next_attempt_at_ms, d.last_error \
                 FROM UNNEST($2::text[], $3::bigint[], $4::bigint[], $5::text[], $6::bigint[], \
                 $7::bigint[], $8::bigint[], $9::text[]) WITH ORDINALITY AS d(topic, \
                 partition_no, record_offset, partition_key, attempts, first_attempt_at_ms, \
                 next_attempt_at_ms, last_error, ord) \
                 WHERE NOT EXISTS (SELECT 1 FROM parked p WHERE p.subscription = $1 \
                   AND p.topic = d.topic AND p.partition_no = d.partition_no \
                   AND p.record_offset = d.record_offset) \
                 ORDER BY d.ord \
                 ON CONFLICT (subscription, topic, partition_no, record_offset) DO NOTHING"
            ))
            .bind(subscription)
            .bind(topics)
            .bind(partitions)
            .bind(offsets)
            .bind(keys)
            .bind(attempts)
            .bind(firsts)
            .bind(nexts)
            .bind(errors)
            .execute(&mut *tx)
            .await
            .map_err(be(OP))?;
            inserted = done.rows_affected();
        }
        if let Some(cursor) = &cursor_after {
            advance(
                &mut tx,
                OP,
                subscription,
                &cursor.topic,
                cursor.partition,
                cursor.offset,
            )
            .await?;
        }
        tx.commit().await.map_err(be(OP))?;
        Ok(inserted)
    }

    async fn due(&self, subscription: &str, now_ms: i64, limit: u32) -> Result<Vec<Delivery>> {
        const OP: &str = "due";
        validate_name("subscription", subscription)?;
        let mut tx = self.read(OP).await?;
        require_subscription(&mut tx, OP, subscription, false).await?;
        let rows = sqlx::query(&format!(
            "SELECT {DELIVERY_COLS} FROM deliveries \
             WHERE subscription = $1 AND next_attempt_at_ms <= $2 \
             ORDER BY next_attempt_at_ms, topic, partition_no, record_offset LIMIT $3"
        ))
        .bind(subscription)
        .bind(now_ms)
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await
        .map_err(be(OP))?;
        tx.commit().await.map_err(be(OP))?;
        rows.iter()
            .map(|r| delivery_from_row(r, "deliveries"))
            .collect()
    }

    async fn in_flight(
        &self,
        subscription: &str,
        topic: &str,
        partition: u32,
    ) -> Result<Vec<Delivery>> {
        const OP: &str = "in_flight";
        validate_name("subscription", subscription)?;
        check_topic(topic)?;
        let mut tx = self.read(OP).await?;
        require_subscription(&mut tx, OP, subscription, false).await?;
        let rows = sqlx::query(&format!(
            "SELECT {DELIVERY_COLS} FROM deliveries \
             WHERE subscription = $1 AND topic = $2 AND partition_no = $3 \
             ORDER BY record_offset"
        ))
        .bind(subscription)
        .bind(topic)
        .bind(i64::from(partition))
        .fetch_all(&mut *tx)
        .await
        .map_err(be(OP))?;
        tx.commit().await.map_err(be(OP))?;
        rows.iter()
            .map(|r| delivery_from_row(r, "deliveries"))
            .collect()
    }

    async fn ack(&self, key: &DeliveryKey) -> Result<bool> {
        const OP: &str = "ack";
        validate_key(key)?;
        let mut tx = self.write_progress(OP).await?;
        let done = bind_key(
            sqlx::query(&format!("DELETE FROM deliveries WHERE {KEY_MATCH}")),
            key,
        )
        .execute(&mut *tx)
        .await
        .map_err(be(OP))?;
        tx.commit().await.map_err(be(OP))?;
        Ok(done.rows_affected() > 0)
    }

    async fn ack_all(&self, keys: &[DeliveryKey]) -> Result<u64> {
        const OP: &str = "ack_all";
        for k in keys {
            validate_key(k)?;
        }
        if keys.is_empty() {
            return Ok(0);
        }
        let mut subs = Vec::with_capacity(keys.len());
        let mut topics = Vec::with_capacity(keys.len());
        let mut partitions = Vec::with_capacity(keys.len());
        let mut offsets = Vec::with_capacity(keys.len());
        for k in keys {
            subs.push(k.subscription.clone());
            topics.push(k.topic.clone());
            partitions.push(i64::from(k.partition));
            offsets.push(to_i64(k.offset));
        }
        let mut tx = self.write_progress(OP).await?;
        let done = sqlx::query(
            "DELETE FROM deliveries d USING UNNEST($1::text[], $2::text[], $3::bigint[], \
             $4::bigint[]) AS k(subscription, topic, partition_no, record_offset) \
             WHERE d.subscription = k.subscription AND d.topic = k.topic \
             AND d.partition_no = k.partition_no AND d.record_offset = k.record_offset",
        )
        .bind(subs)
        .bind(topics)
        .bind(partitions)
        .bind(offsets)
        .execute(&mut *tx)
        .await
        .map_err(be(OP))?;
        tx.commit().await.map_err(be(OP))?;
        Ok(done.rows_affected())
    }

    async fn retry_later(
        &self,
        key: &DeliveryKey,
        attempted_at_ms: i64,
        next_attempt_at_ms: i64,
        error: &str,
    ) -> Result<Delivery> {
        const OP: &str = "retry_later";
        validate_key(key)?;
        let error = t(&clip_error(error)).into_owned();
        let mut tx = self.write_progress(OP).await?;
        let row = bind_key(
            sqlx::query(&format!(
                "UPDATE deliveries SET \
                 attempts = CASE WHEN attempts < 4294967295 THEN attempts + 1 ELSE attempts END, \
                 first_attempt_at_ms = COALESCE(first_attempt_at_ms, $5), \
                 next_attempt_at_ms = $6, last_error = $7 \
                 WHERE {KEY_MATCH} RETURNING {DELIVERY_COLS}"
            )),
            key,
        )
        .bind(attempted_at_ms)
        .bind(next_attempt_at_ms)
        .bind(error.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(be(OP))?;
        let Some(row) = row else {
            return Err(missing(&mut tx, OP, key, "delivery").await);
        };
        let delivery = delivery_from_row(&row, "deliveries")?;
        record_error(&mut tx, OP, &key.subscription, &error, attempted_at_ms).await?;
        tx.commit().await.map_err(be(OP))?;
        Ok(delivery)
    }

    async fn park(&self, key: &DeliveryKey, now_ms: i64, reason: &str) -> Result<Parked> {
        const OP: &str = "park";
        validate_key(key)?;
        let reason = t(&clip_error(reason)).into_owned();
        let mut tx = self.write_progress(OP).await?;
        lock_partitions(
            &mut tx,
            OP,
            &key.subscription,
            [(key.topic.as_str(), key.partition)],
        )
        .await?;
        let row = bind_key(
            sqlx::query(&format!(
                "DELETE FROM deliveries WHERE {KEY_MATCH} RETURNING {DELIVERY_COLS}"
            )),
            key,
        )
        .fetch_optional(&mut *tx)
        .await
        .map_err(be(OP))?;
        let Some(row) = row else {
            return Err(missing(&mut tx, OP, key, "delivery").await);
        };
        let mut delivery = delivery_from_row(&row, "deliveries")?;
        delivery.attempts = delivery.attempts.saturating_add(1);
        delivery.first_attempt_at_ms = Some(delivery.first_attempt_at_ms.unwrap_or(now_ms));
        delivery.last_error = Some(reason.clone());
        let done = sqlx::query(&format!(
            "INSERT INTO parked ({PARKED_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, \
             $10, $11) ON CONFLICT (subscription, topic, partition_no, record_offset) DO NOTHING"
        ))
        .bind(key.subscription.as_str())
        .bind(key.topic.as_str())
        .bind(i64::from(key.partition))
        .bind(to_i64(key.offset))
        .bind(delivery.partition_key.as_deref())
        .bind(i64::from(delivery.attempts))
        .bind(delivery.first_attempt_at_ms)
        .bind(delivery.next_attempt_at_ms)
        .bind(delivery.last_error.as_deref())
        .bind(reason.as_str())
        .bind(now_ms)
        .execute(&mut *tx)
        .await
        .map_err(be(OP))?;
        if done.rows_affected() == 0 {
            // Dropping `tx` rolls back: the delivery stays in flight.
            return Err(Error::Conflict {
                what: "delivery",
                name: key.to_string(),
                reason: "it is already parked".into(),
            });
        }
        record_error(&mut tx, OP, &key.subscription, &reason, now_ms).await?;
        tx.commit().await.map_err(be(OP))?;
        Ok(Parked {
            delivery,
            reason,
            parked_at_ms: now_ms,
        })
    }

    async fn parked(
        &self,
        subscription: &str,
        after: Option<&DeliveryKey>,
        limit: u32,
    ) -> Result<Vec<Parked>> {
        const OP: &str = "parked";
        validate_name("subscription", subscription)?;
        if let Some(after) = after {
            after.validate("after.")?;
            if after.subscription != subscription {
                return Err(Error::invalid(
                    "after.subscription",
                    format!(
                        "is `{}`, but the listing is of `{subscription}`",
                        after.subscription
                    ),
                ));
            }
        }
        let mut tx = self.read(OP).await?;
        require_subscription(&mut tx, OP, subscription, false).await?;
        let rows = match after {
            None => {
                sqlx::query(&format!(
                    "SELECT {PARKED_COLS} FROM parked WHERE subscription = $1 \
                 ORDER BY topic, partition_no, record_offset LIMIT $2"
                ))
                .bind(subscription)
                .bind(i64::from(limit))
                .fetch_all(&mut *tx)
                .await
            }
            Some(after) => {
                sqlx::query(&format!(
                    "SELECT {PARKED_COLS} FROM parked WHERE subscription = $1 \
                 AND (topic, partition_no, record_offset) > ($2, $3, $4) \
                 ORDER BY topic, partition_no, record_offset LIMIT $5"
                ))
                .bind(subscription)
                .bind(after.topic.as_str())
                .bind(i64::from(after.partition))
                .bind(to_i64(after.offset))
                .bind(i64::from(limit))
                .fetch_all(&mut *tx)
                .await
            }
        }
        .map_err(be(OP))?;
        tx.commit().await.map_err(be(OP))?;
        rows.iter().map(parked_from_row).collect()
    }

    async fn unpark(&self, key: &DeliveryKey, now_ms: i64) -> Result<Delivery> {
        const OP: &str = "unpark";
        validate_key(key)?;
        let mut tx = self.write(OP).await?;
        lock_partitions(
            &mut tx,
            OP,
            &key.subscription,
            [(key.topic.as_str(), key.partition)],
        )
        .await?;
        let row = bind_key(
            sqlx::query(&format!(
                "DELETE FROM parked WHERE {KEY_MATCH} RETURNING {PARKED_COLS}"
            )),
            key,
        )
        .fetch_optional(&mut *tx)
        .await
        .map_err(be(OP))?;
        let Some(row) = row else {
            return Err(missing(&mut tx, OP, key, "parked delivery").await);
        };
        let parked = parked_from_row(&row)?;
        let delivery = Delivery::new(key.clone(), parked.delivery.partition_key, now_ms);
        let done = sqlx::query(&format!(
            "INSERT INTO deliveries ({DELIVERY_COLS}) \
             VALUES ($1, $2, $3, $4, $5, 0, NULL, $6, NULL) \
             ON CONFLICT (subscription, topic, partition_no, record_offset) DO NOTHING"
        ))
        .bind(key.subscription.as_str())
        .bind(key.topic.as_str())
        .bind(i64::from(key.partition))
        .bind(to_i64(key.offset))
        .bind(delivery.partition_key.as_deref())
        .bind(now_ms)
        .execute(&mut *tx)
        .await
        .map_err(be(OP))?;
        if done.rows_affected() == 0 {
            // Dropping `tx` rolls back: the parked row stays.
            return Err(Error::Conflict {
                what: "delivery",
                name: key.to_string(),
                reason: "it is also in flight".into(),
            });
        }
        tx.commit().await.map_err(be(OP))?;
        Ok(delivery)
    }

    async fn discard(&self, key: &DeliveryKey) -> Result<()> {
        const OP: &str = "discard";
        validate_key(key)?;
        let mut tx = self.write(OP).await?;
        let done = bind_key(
            sqlx::query(&format!("DELETE FROM parked WHERE {KEY_MATCH}")),
            key,
        )
        .execute(&mut *tx)
        .await
        .map_err(be(OP))?;
        if done.rows_affected() == 0 {
            return Err(missing(&mut tx, OP, key, "parked delivery").await);
        }
        tx.commit().await.map_err(be(OP))?;
        Ok(())
    }

    async fn stats(&self, subscription: &str) -> Result<SubscriptionStats> {
        const OP: &str = "stats";
        validate_name("subscription", subscription)?;
        let mut tx = self.read(OP).await?;
        let row = sqlx::query(
            "SELECT last_error, last_error_at_ms, \
             (SELECT COUNT(*) FROM deliveries WHERE subscription = $1) AS in_flight, \
             (SELECT COUNT(*) FROM parked WHERE subscription = $1) AS parked \
             FROM subscriptions WHERE name = $1",
        )
        .bind(subscription)
        .fetch_optional(&mut *tx)
        .await
        .map_err(be(OP))?;
        tx.commit().await.map_err(be(OP))?;
        let Some(row) = row else {
            return Err(Error::not_found("subscription", subscription));
        };
        let table = "subscriptions";
        Ok(SubscriptionStats {
            in_flight: col_unsigned::<u64>(&row, "in_flight", table, subscription)?,
            parked: col_unsigned::<u64>(&row, "parked", table, subscription)?,
            last_error: col(&row, "last_error", table, subscription)?,
            last_error_at_ms: col(&row, "last_error_at_ms", table, subscription)?,
        })
    }

    async fn put_schemas(&self, topic: &str, schemas: crate::EventSchemas) -> Result<()> {
        const OP: &str = "put_schemas";
        crate::model::validate_schemas(topic, &schemas)?;
        let mut tx = self.write(OP).await?;
        // Two instances replacing one topic's schemas at once: one after the other.
        sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
            .bind(LOCK_SCHEMAS)
            .bind(topic)
            .execute(&mut *tx)
            .await
            .map_err(be(OP))?;
        sqlx::query("DELETE FROM event_schemas WHERE topic = $1")
            .bind(topic)
            .execute(&mut *tx)
            .await
            .map_err(be(OP))?;
        for (event_type, schema) in &schemas {
            sqlx::query(
                "INSERT INTO event_schemas (topic, event_type, schema_json) VALUES ($1, $2, $3)",
            )
            .bind(topic)
            .bind(t(event_type).as_ref())
            .bind(schema.to_string())
            .execute(&mut *tx)
            .await
            .map_err(be(OP))?;
        }
        tx.commit().await.map_err(be(OP))?;
        Ok(())
    }

    async fn schemas(&self, topic: &str) -> Result<crate::EventSchemas> {
        const OP: &str = "schemas";
        crate::model::validate_schemas(topic, &crate::EventSchemas::new())?;
        let mut tx = self.read(OP).await?;
        let rows = sqlx::query(
            "SELECT event_type, schema_json FROM event_schemas WHERE topic = $1 \
             ORDER BY event_type",
        )
        .bind(topic)
        .fetch_all(&mut *tx)
        .await
        .map_err(be(OP))?;
        tx.commit().await.map_err(be(OP))?;
        let mut out = crate::EventSchemas::new();
        for row in rows {
            let key = format!(
                "{topic} {}",
                row.try_get::<String, _>("event_type").unwrap_or_default()
            );
            let event_type: String = col(&row, "event_type", "event_schemas", &key)?;
            let text: String = col(&row, "schema_json", "event_schemas", &key)?;
            let schema = serde_json::from_str(&text).map_err(|e| Error::Corrupt {
                table: "event_schemas",
                key: key.clone(),
                reason: format!("column `schema_json` is not JSON: {e}"),
            })?;
            out.insert(event_type, schema);
        }
        Ok(out)
    }

    async fn lane_cursors(&self, lane: &str) -> Result<Vec<Cursor>> {
        messages::lane_cursors(self, lane).await
    }

    async fn set_lane_cursor(&self, lane: &str, cursor: Cursor) -> Result<()> {
        messages::set_lane_cursor(self, lane, cursor).await
    }

    async fn lane_intake(
        &self,
        lane: &str,
        messages: Vec<NewMessage>,
        cursor_after: Option<Cursor>,
        now_ms: i64,
    ) -> Result<Intake> {
        messages::lane_intake(self, lane, messages, cursor_after, now_ms).await
    }

    async fn due_messages(
        &self,
        adapter: &str,
        now_ms: i64,
        skip: &[u64],
        limit: u32,
    ) -> Result<Vec<Message>> {
        messages::due_messages(self, adapter, now_ms, skip, limit).await
    }

    async fn next_due_at(&self, adapter: &str) -> Result<Option<i64>> {
        messages::next_due_at(self, adapter).await
    }

    async fn finish_attempt(
        &self,
        message_id: u64,
        attempt: Attempt,
        outcome: AttemptOutcome,
        now_ms: i64,
    ) -> Result<Message> {
        messages::finish_attempt(self, message_id, attempt, outcome, now_ms).await
    }

    async fn message(&self, id: u64) -> Result<(Message, Vec<Attempt>)> {
        messages::message(self, id).await
    }

    async fn messages(&self, filter: &MessageFilter) -> Result<Vec<Message>> {
        messages::messages(self, filter).await
    }

    async fn replay_message(
        &self,
        id: u64,
        remapped: Option<(OutboundRequest, String)>,
        now_ms: i64,
    ) -> Result<Message> {
        messages::replay_message(self, id, remapped, now_ms).await
    }

    async fn record_reply(
        &self,
        reply: NewReply,
        settle: Option<AttemptOutcome>,
        now_ms: i64,
    ) -> Result<Reply> {
        messages::record_reply(self, reply, settle, now_ms).await
    }

    async fn message_by_correlation(
        &self,
        adapter: &str,
        correlation_id: &str,
    ) -> Result<Option<Message>> {
        messages::message_by_correlation(self, adapter, correlation_id).await
    }

    async fn replies(
        &self,
        adapter: &str,
        disposition: Option<ReplyDisposition>,
        limit: u32,
    ) -> Result<Vec<Reply>> {
        messages::replies(self, adapter, disposition, limit).await
    }

    async fn expire_replies(&self, adapter: &str, now_ms: i64, failure: Failure) -> Result<u64> {
        messages::expire_replies(self, adapter, now_ms, failure).await
    }

    async fn cases(
        &self,
        adapter: Option<&str>,
        state: Option<CaseState>,
        limit: u32,
    ) -> Result<Vec<Case>> {
        messages::cases(self, adapter, state, limit).await
    }

    async fn case(&self, id: &str) -> Result<Case> {
        messages::case(self, id).await
    }

    async fn retry_case(&self, id: &str, now_ms: i64) -> Result<u64> {
        messages::retry_case(self, id, now_ms).await
    }

    async fn discard_case(&self, id: &str, now_ms: i64) -> Result<u64> {
        messages::discard_case(self, id, now_ms).await
    }

    async fn resolve_case(&self, id: &str, now_ms: i64) -> Result<Case> {
        messages::resolve_case(self, id, now_ms).await
    }

    async fn set_lane_state(&self, lane: &str, state: LaneState, now_ms: i64) -> Result<()> {
        messages::set_lane_state(self, lane, state, now_ms).await
    }

    async fn lane_states(&self) -> Result<Vec<(String, LaneState)>> {
        messages::lane_states(self).await
    }

    async fn message_counts(&self, adapter: Option<&str>) -> Result<Vec<MessageCount>> {
        messages::message_counts(self, adapter).await
    }

    async fn acquire_lease(
        &self,
        name: &str,
        owner: &str,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<Option<Lease>> {
        leases::acquire_lease(self, name, owner, now_ms, ttl_ms).await
    }

    async fn steal_lease(
        &self,
        name: &str,
        owner: &str,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<Lease> {
        leases::steal_lease(self, name, owner, now_ms, ttl_ms).await
    }

    async fn release_lease(&self, name: &str, owner: &str) -> Result<bool> {
        leases::release_lease(self, name, owner).await
    }

    async fn leases(&self, prefix: &str) -> Result<Vec<Lease>> {
        leases::leases(self, prefix).await
    }

    async fn reserve_quota(
        &self,
        key: &str,
        window_start_ms: i64,
        window_end_ms: i64,
        limit: u64,
        want: u64,
    ) -> Result<QuotaGrant> {
        quotas::reserve_quota(self, key, window_start_ms, window_end_ms, limit, want).await
    }

    async fn release_quota(&self, key: &str, window_start_ms: i64, n: u64) -> Result<u64> {
        quotas::release_quota(self, key, window_start_ms, n).await
    }

    async fn quotas(&self, prefix: &str) -> Result<Vec<QuotaUsage>> {
        quotas::quotas(self, prefix).await
    }

    async fn prune_quotas(&self, ended_by_ms: i64) -> Result<u64> {
        quotas::prune_quotas(self, ended_by_ms).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://sy:s3cret@db.example:5432/sy?sslmode=require"),
            "postgres://sy:***@db.example:5432/sy?sslmode=require"
        );
        assert_eq!(
            redact("postgres://sy@db/sy?password=s3cret&pool=4"),
            "postgres://sy@db/sy?password=***&pool=4"
        );
        assert_eq!(redact("postgres://db/sy"), "postgres://db/sy");
        assert_eq!(redact("postgres://a:b:c@h/d"), "postgres://a:***@h/d");
    }

    #[test]
    fn options_take_pool_and_refuse_bad_urls() {
        let o = PostgresOptions::from_url("postgres://sy:pw@h:5432/db?pool=16&sslmode=prefer")
            .expect("valid");
        assert_eq!(o.pool, 16);
        assert_eq!(o.url, "postgres://sy:pw@h:5432/db?sslmode=prefer");
        assert_eq!(o.redacted(), "postgres://sy:***@h:5432/db?sslmode=prefer");
        assert!(!format!("{o:?}").contains("pw@"), "{o:?}");
        let o = PostgresOptions::from_url("postgresql://h/db").expect("valid");
        assert_eq!(o.pool, DEFAULT_POOL);
        for (bad, says) in [
            ("mysql://h/db", "not a postgres:// URL"),
            ("postgres://h/db?pool=0", "pool must be"),
            ("postgres://h/db?pool=many", "pool must be"),
            (
                "postgres://u:pw@h:notaport/db",
                "postgres://u:***@h:notaport/db",
            ),
        ] {
            match PostgresOptions::from_url(bad) {
                Err(Error::InvalidInput { field, reason }) => {
                    assert_eq!(field, "store", "{bad}");
                    assert!(reason.contains(says), "{bad}: {reason}");
                    assert!(!reason.contains("pw@"), "{bad}: {reason}");
                }
                other => panic!("{bad}: expected InvalidInput, got {other:?}"),
            }
        }
    }

    #[test]
    fn nul_becomes_the_replacement_character() {
        assert_eq!(t("a\0b"), "a\u{FFFD}b");
        assert!(matches!(t("plain"), Cow::Borrowed("plain")));
        assert_eq!(ot(Some("\0")).as_deref(), Some("\u{FFFD}"));
    }
}
