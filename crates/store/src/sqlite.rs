//! The embedded backend: one SQLite database file, through sqlx.
//!
//! The database runs in WAL mode with `synchronous=FULL` (a committed transaction survives
//! a power loss), foreign keys on and a busy timeout. Writes go through one connection and
//! start with `BEGIN IMMEDIATE`, so write transactions queue in the pool instead of failing
//! with `SQLITE_BUSY`; reads use a small pool of their own and see a consistent snapshot
//! (each read is one deferred transaction). The schema is created and upgraded at open by
//! the embedded migrations in `migrations/sqlite/`.
//!
//! Two kinds of writes: definitions (subscriptions, schemas) and operator actions (seek,
//! unpark, discard) commit with `synchronous=FULL`, waiting for the disk; dispatcher progress
//! (`enqueue`, `advance_cursor`, `ack`, `retry_later`, `park`) commits with
//! `synchronous=NORMAL`, which survives a crash of the process but may lose the latest
//! commits on a power loss. That loses nothing: progress is re-derived from the journal
//! (a lost enqueue rolls back its cursor too, so the records are read again; a lost ack
//! means one more delivery, which at-least-once allows), and it keeps an fsync off every
//! delivery's path. A later FULL commit also makes every earlier NORMAL one durable.
//!
//! The WAL is checkpointed into the database file by a task of the store's when writes
//! pause, and at least every [`CHECKPOINT_AT_LEAST_EVERY`] (`PRAGMA wal_autocheckpoint=0` on
//! every connection), not inside the commit that happens to fill it, so no commit waits for
//! a checkpoint's fsyncs.

mod leases;
mod messages;
mod quotas;

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
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};
use sqlx::{Decode, Row, Sqlite, Transaction, Type};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// How long a connection waits for another process's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections used for reads (writes use one more, of their own).
const READERS: u32 = 4;
/// How often the checkpointer looks whether writes have stopped (see [`Checkpoints`]).
const CHECKPOINT_TICK: Duration = Duration::from_millis(100);
/// The longest the WAL goes without a checkpoint while writes never stop.
const CHECKPOINT_AT_LEAST_EVERY: Duration = Duration::from_secs(5);

const DELIVERY_COLS: &str = "subscription, topic, partition_no, record_offset, partition_key, \
     attempts, first_attempt_at_ms, next_attempt_at_ms, last_error";
const PARKED_COLS: &str = "subscription, topic, partition_no, record_offset, partition_key, \
     attempts, first_attempt_at_ms, next_attempt_at_ms, last_error, reason, parked_at_ms";
const KEY_MATCH: &str = "subscription = ? AND topic = ? AND partition_no = ? AND record_offset = ?";

/// The SQLite [`Store`].
#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: SqlitePool,
    /// Writes of dispatcher progress: `synchronous=NORMAL` (see the module docs).
    progress: SqlitePool,
    reader: SqlitePool,
    path: Option<PathBuf>,
    /// The background checkpoints of a database file (stopped when the last clone goes).
    checkpoints: Option<Arc<Checkpoints>>,
    /// Writes begun so far, which the checkpointer watches for a pause.
    writes: Arc<AtomicU64>,
}

/// The task that checkpoints the WAL into the database file. SQLite would otherwise
/// checkpoint inside the commit that fills the WAL past 1000 pages (with two fsyncs under
/// `synchronous=NORMAL`): about one commit in a hundred of a lane's send path took
/// milliseconds to tens of milliseconds longer. A checkpoint's own fsyncs still stall the
/// commits that queue behind them on the disk (every 1 s, they set the integration
/// gateway's p99), so it runs once writes pause for a [`CHECKPOINT_TICK`], and under writes
/// that never pause at least every [`CHECKPOINT_AT_LEAST_EVERY`].
#[derive(Debug)]
struct Checkpoints(tokio::task::AbortHandle);

impl Drop for Checkpoints {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn checkpoint_loop(pool: SqlitePool, writes: Arc<AtomicU64>) {
    let mut tick = tokio::time::interval(CHECKPOINT_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seen = writes.load(Ordering::Relaxed);
    let mut pending = false;
    let mut failing = false;
    let mut last = tokio::time::Instant::now();
    loop {
        tick.tick().await;
        if pool.is_closed() {
            return;
        }
        let now = writes.load(Ordering::Relaxed);
        let paused = now == seen;
        pending |= !paused;
        seen = now;
        if !pending || !(paused || last.elapsed() >= CHECKPOINT_AT_LEAST_EVERY) {
            continue;
        }
        last = tokio::time::Instant::now();
        // PASSIVE: copies what no reader still needs, blocking no writer and no reader.
        // A failed one (a full disk) or a partial one (a reader still on old pages) stays
        // pending and is tried again at the next tick; the WAL keeps every commit meanwhile.
        match sqlx::query_as::<_, (i64, i64, i64)>("PRAGMA wal_checkpoint(PASSIVE)")
            .fetch_one(&pool)
            .await
        {
            Ok((_, in_wal, copied)) => {
                pending = copied < in_wal;
                failing = false;
            }
            Err(e) => {
                if !failing {
                    tracing::warn!("store: checkpointing the WAL failed, will retry: {e}");
                }
                failing = true;
            }
        }
    }
}

/// `pool.close()`, finished. sqlx 0.8's can return with a connection still open: one being
/// given back to the pool when the close began lands among the idle ones afterwards, and is
/// closed only when the pool is dropped (launchbadge/sqlx#3217). The last connection to a
/// database closes its `-wal` file, so the files could still change after [`SqliteStore::close`]
/// (`switchyard dev` copies them for a snapshot right after; a copy failed on a `-wal` gone
/// half-way). Closing again closes what landed; each close also waits for a connection in use.
async fn close_pool(pool: &SqlitePool) {
    pool.close().await;
    while pool.size() > 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
        pool.close().await;
    }
}

impl SqliteStore {
    /// Opens (creating if missing) the database file at `path` and brings its schema up to
    /// date. A file that is not a SQLite database, or whose schema comes from a newer
    /// version, is [`Error::Open`].
    pub async fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT)
            .pragma("wal_autocheckpoint", "0");
        let open_err = |reason: &str, e: BackendErrorSource| Error::Open {
            path: path.clone(),
            reason: format!("{reason}: {}", e.message()),
            source: Some(e.boxed()),
        };
        // No ping before handing out a connection: a connection to a file cannot hang up,
        // and the ping was one more round trip to its thread before every operation.
        let pool = || SqlitePoolOptions::new().test_before_acquire(false);
        let writer = pool()
            .max_connections(1)
            .connect_with(options.clone())
            .await
            .map_err(|e| open_err("cannot open the database", BackendErrorSource::Sqlx(e)))?;
        MIGRATOR.run(&writer).await.map_err(|e| {
            open_err(
                "cannot bring the schema up to date",
                BackendErrorSource::Migrate(e),
            )
        })?;
        let progress = pool()
            .max_connections(1)
            .connect_with(options.clone().synchronous(SqliteSynchronous::Normal))
            .await
            .map_err(|e| open_err("cannot open the database", BackendErrorSource::Sqlx(e)))?;
        let reader = pool()
            .max_connections(READERS)
            .connect_with(options)
            .await
            .map_err(|e| open_err("cannot open the database", BackendErrorSource::Sqlx(e)))?;
        let writes = Arc::new(AtomicU64::new(0));
        let checkpoints =
            tokio::spawn(checkpoint_loop(reader.clone(), writes.clone())).abort_handle();
        let store = Self {
            writer,
            progress,
            reader,
            path: Some(path),
            checkpoints: Some(Arc::new(Checkpoints(checkpoints))),
            writes,
        };
        store.check_readable().await?;
        Ok(store)
    }

    /// A private in-memory database, gone when the store is dropped (for tests and
    /// throwaway runs).
    pub async fn open_in_memory() -> Result<Self> {
        let path = PathBuf::from(":memory:");
        let open_err = |reason: &str, e: BackendErrorSource| Error::Open {
            path: path.clone(),
            reason: format!("{reason}: {}", e.message()),
            source: Some(e.boxed()),
        };
        let options = SqliteConnectOptions::from_str("sqlite::memory:")
            .map_err(|e| open_err("bad options", BackendErrorSource::Sqlx(e)))?
            .foreign_keys(true);
        // Every connection to `:memory:` is its own database: keep exactly one, forever.
        let pool = SqlitePoolOptions::new()
            .min_connections(1)
            .max_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await
            .map_err(|e| open_err("cannot open the database", BackendErrorSource::Sqlx(e)))?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| open_err("cannot create the schema", BackendErrorSource::Migrate(e)))?;
        Ok(Self {
            writer: pool.clone(),
            progress: pool.clone(),
            reader: pool,
            path: None,
            checkpoints: None,
            writes: Arc::default(),
        })
    }

    /// The database file, or `None` for an in-memory store.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Closes every connection, waiting for operations in progress. Operations after this
    /// fail.
    pub async fn close(&self) {
        if let Some(c) = &self.checkpoints {
            c.0.abort();
        }
        close_pool(&self.progress).await;
        // A checkpoint on the FULL connection makes the progress written without fsync
        // durable too; if it fails the WAL is still there and replays at the next open.
        let _ = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&self.writer)
            .await;
        close_pool(&self.writer).await;
        close_pool(&self.reader).await;
    }

    /// Reads every table once, so that a database whose tables exist but are not ours (or
    /// are damaged) is reported at open rather than at the first operation.
    async fn check_readable(&self) -> Result<()> {
        for table in [
            "subscriptions",
            "cursors",
            "deliveries",
            "parked",
            "event_schemas",
            "lane_cursors",
            "lanes",
            "messages",
            "attempts",
            "replies",
            "cases",
            "leases",
            "quotas",
        ] {
            sqlx::query(&format!("SELECT COUNT(*) FROM {table}"))
                .fetch_one(&self.reader)
                .await
                .map_err(|e| Error::Open {
                    path: self.path.clone().unwrap_or_default(),
                    reason: format!("cannot read table `{table}`: {e}"),
                    source: Some(Box::new(e)),
                })?;
        }
        Ok(())
    }

    /// Counts a write about to begin, for the checkpointer.
    fn note_write(&self) {
        self.writes.fetch_add(1, Ordering::Relaxed);
    }

    async fn write(&self, op: &'static str) -> Result<Transaction<'static, Sqlite>> {
        self.note_write();
        self.writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(be(op))
    }

    /// A write of dispatcher progress (no fsync at commit; see the module docs).
    async fn write_progress(&self, op: &'static str) -> Result<Transaction<'static, Sqlite>> {
        self.note_write();
        self.progress
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(be(op))
    }

    async fn read(&self, op: &'static str) -> Result<Transaction<'static, Sqlite>> {
        self.reader.begin().await.map_err(be(op))
    }
}

/// The two kinds of errors opening can fail with, shown by their message.
enum BackendErrorSource {
    Sqlx(sqlx::Error),
    Migrate(sqlx::migrate::MigrateError),
}

impl BackendErrorSource {
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
fn col<'r, T>(row: &'r SqliteRow, name: &str, table: &'static str, key: &str) -> Result<T>
where
    T: Decode<'r, Sqlite> + Type<Sqlite>,
{
    row.try_get::<T, _>(name).map_err(|e| Error::Corrupt {
        table,
        key: key.to_owned(),
        reason: format!("column `{name}`: {e}"),
    })
}

/// An unsigned column (stored as a signed 64-bit integer), checked for range.
fn col_unsigned<T: TryFrom<i64>>(
    row: &SqliteRow,
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
fn row_key_text(row: &SqliteRow) -> String {
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

fn delivery_from_row(row: &SqliteRow, table: &'static str) -> Result<Delivery> {
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

fn parked_from_row(row: &SqliteRow) -> Result<Parked> {
    let delivery = delivery_from_row(row, "parked")?;
    let key_text = delivery.key.to_string();
    Ok(Parked {
        reason: col(row, "reason", "parked", &key_text)?,
        parked_at_ms: col(row, "parked_at_ms", "parked", &key_text)?,
        delivery,
    })
}

fn subscription_from_row(row: &SqliteRow) -> Result<Subscription> {
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

/// Fails with [`Error::NotFound`] unless the subscription exists.
async fn require_subscription(
    conn: &mut SqliteConnection,
    op: &'static str,
    name: &str,
) -> Result<()> {
    let found = sqlx::query("SELECT 1 FROM subscriptions WHERE name = ?")
        .bind(name)
        .fetch_optional(conn)
        .await
        .map_err(be(op))?;
    match found {
        Some(_) => Ok(()),
        None => Err(Error::not_found("subscription", name)),
    }
}

/// The error for a key that is not where an operation expected it: the subscription or
/// the delivery is missing.
async fn missing(
    conn: &mut SqliteConnection,
    op: &'static str,
    key: &DeliveryKey,
    what: &'static str,
) -> Error {
    match require_subscription(conn, op, &key.subscription).await {
        Ok(()) => Error::not_found(what, key.to_string()),
        Err(e) => e,
    }
}

async fn record_error(
    conn: &mut SqliteConnection,
    op: &'static str,
    subscription: &str,
    error: &str,
    at_ms: i64,
) -> Result<()> {
    sqlx::query("UPDATE subscriptions SET last_error = ?, last_error_at_ms = ? WHERE name = ?")
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
    conn: &mut SqliteConnection,
    op: &'static str,
    subscription: &str,
    topic: &str,
    partition: u32,
    offset: u64,
) -> Result<bool> {
    let done = sqlx::query(
        "INSERT INTO cursors (subscription, topic, partition_no, next_offset) VALUES (?, ?, ?, ?) \
         ON CONFLICT (subscription, topic, partition_no) \
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
    q: sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments<'q>>,
    key: &'q DeliveryKey,
) -> sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments<'q>> {
    q.bind(key.subscription.as_str())
        .bind(key.topic.as_str())
        .bind(i64::from(key.partition))
        .bind(to_i64(key.offset))
}

#[async_trait]
impl Store for SqliteStore {
    async fn put_subscription(&self, spec: SubscriptionSpec) -> Result<(Subscription, bool)> {
        const OP: &str = "put_subscription";
        spec.validate()?;
        let json = serde_json::to_string(&spec).map_err(|e| Error::backend(OP, e))?;
        let now = now_ms();
        let mut tx = self.write(OP).await?;
        let existing = sqlx::query(
            "SELECT name, spec, created_at_ms, updated_at_ms, generation \
             FROM subscriptions WHERE name = ?",
        )
        .bind(&spec.name)
        .fetch_optional(&mut *tx)
        .await
        .map_err(be(OP))?;
        let (subscription, created) = match existing {
            None => {
                sqlx::query(
                    "INSERT INTO subscriptions (name, spec, created_at_ms, updated_at_ms, \
                     generation) VALUES (?, ?, ?, ?, 1)",
                )
                .bind(&spec.name)
                .bind(&json)
                .bind(now)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(be(OP))?;
                let sub = Subscription {
                    spec,
                    created_at_ms: now,
                    updated_at_ms: now,
                    generation: 1,
                };
                (sub, true)
            }
            Some(row) => {
                let table = "subscriptions";
                let created_at_ms: i64 = col(&row, "created_at_ms", table, &spec.name)?;
                let updated_at_ms: i64 = col(&row, "updated_at_ms", table, &spec.name)?;
                let generation = col_unsigned::<u64>(&row, "generation", table, &spec.name)?;
                // A stored spec that no longer parses is replaced: putting a good spec is
                // how such a row is repaired.
                let old: Option<SubscriptionSpec> = row
                    .try_get::<String, _>("spec")
                    .ok()
                    .and_then(|s| serde_json::from_str(&s).ok());
                if old.as_ref() == Some(&spec) {
                    let sub = Subscription {
                        spec,
                        created_at_ms,
                        updated_at_ms,
                        generation,
                    };
                    (sub, false)
                } else {
                    let updated = now.max(updated_at_ms);
                    let generation = generation.saturating_add(1);
                    sqlx::query(
                        "UPDATE subscriptions SET spec = ?, updated_at_ms = ?, generation = ? \
                         WHERE name = ?",
                    )
                    .bind(&json)
                    .bind(updated)
                    .bind(to_i64(generation))
                    .bind(&spec.name)
                    .execute(&mut *tx)
                    .await
                    .map_err(be(OP))?;
                    let sub = Subscription {
                        spec,
                        created_at_ms,
                        updated_at_ms: updated,
                        generation,
                    };
                    (sub, false)
                }
            }
        };
        tx.commit().await.map_err(be(OP))?;
        Ok((subscription, created))
    }

    async fn get_subscription(&self, name: &str) -> Result<Subscription> {
        const OP: &str = "get_subscription";
        validate_name("name", name)?;
        let mut tx = self.read(OP).await?;
        let row = sqlx::query(
            "SELECT name, spec, created_at_ms, updated_at_ms, generation \
             FROM subscriptions WHERE name = ?",
        )
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
        let rows = sqlx::query(
            "SELECT name, spec, created_at_ms, updated_at_ms, generation \
             FROM subscriptions ORDER BY name",
        )
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
        // Children first, explicitly: the cascade does not depend on the foreign-key
        // setting of the connection.
        for table in ["cursors", "deliveries", "parked"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE subscription = ?"))
                .bind(name)
                .execute(&mut *tx)
                .await
                .map_err(be(OP))?;
        }
        let done = sqlx::query("DELETE FROM subscriptions WHERE name = ?")
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(be(OP))?;
        if done.rows_affected() == 0 {
            tx.rollback().await.map_err(be(OP))?;
            return Err(Error::not_found("subscription", name));
        }
        tx.commit().await.map_err(be(OP))?;
        Ok(())
    }

    async fn cursors(&self, subscription: &str) -> Result<Vec<Cursor>> {
        const OP: &str = "cursors";
        validate_name("subscription", subscription)?;
        let mut tx = self.read(OP).await?;
        require_subscription(&mut tx, OP, subscription).await?;
        let rows = sqlx::query(
            "SELECT topic, partition_no, next_offset FROM cursors WHERE subscription = ? \
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
        require_subscription(&mut tx, OP, subscription).await?;
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
        require_subscription(&mut tx, OP, subscription).await?;
        sqlx::query(
            "INSERT INTO cursors (subscription, topic, partition_no, next_offset) \
             VALUES (?, ?, ?, ?) ON CONFLICT (subscription, topic, partition_no) \
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
            "DELETE FROM deliveries WHERE subscription = ? AND topic = ? AND partition_no = ?",
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
        require_subscription(&mut tx, OP, subscription).await?;
        let mut inserted = 0;
        for d in &deliveries {
            let parked = bind_key(
                sqlx::query(&format!("SELECT 1 FROM parked WHERE {KEY_MATCH}")),
                &d.key,
            )
            .fetch_optional(&mut *tx)
            .await
            .map_err(be(OP))?;
            if parked.is_some() {
                continue;
            }
            let done = sqlx::query(&format!(
                "INSERT INTO deliveries ({DELIVERY_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) \
                 ON CONFLICT (subscription, topic, partition_no, record_offset) DO NOTHING"
            ))
            .bind(subscription)
            .bind(d.key.topic.as_str())
            .bind(i64::from(d.key.partition))
            .bind(to_i64(d.key.offset))
            .bind(d.partition_key.as_deref())
            .bind(i64::from(d.attempts))
            .bind(d.first_attempt_at_ms)
            .bind(d.next_attempt_at_ms)
            .bind(d.last_error.as_deref().map(clip_error))
            .execute(&mut *tx)
            .await
            .map_err(be(OP))?;
            inserted += done.rows_affected();
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
        require_subscription(&mut tx, OP, subscription).await?;
        let rows = sqlx::query(&format!(
            "SELECT {DELIVERY_COLS} FROM deliveries \
             WHERE subscription = ? AND next_attempt_at_ms <= ? \
             ORDER BY next_attempt_at_ms, topic, partition_no, record_offset LIMIT ?"
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
        require_subscription(&mut tx, OP, subscription).await?;
        let rows = sqlx::query(&format!(
            "SELECT {DELIVERY_COLS} FROM deliveries \
             WHERE subscription = ? AND topic = ? AND partition_no = ? \
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
        let mut tx = self.write_progress(OP).await?;
        let mut removed = 0;
        for k in keys {
            let done = bind_key(
                sqlx::query(&format!("DELETE FROM deliveries WHERE {KEY_MATCH}")),
                k,
            )
            .execute(&mut *tx)
            .await
            .map_err(be(OP))?;
            removed += done.rows_affected();
        }
        tx.commit().await.map_err(be(OP))?;
        Ok(removed)
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
        let error = clip_error(error);
        let mut tx = self.write_progress(OP).await?;
        let row = bind_key(
            sqlx::query(&format!(
                "UPDATE deliveries SET \
                 attempts = CASE WHEN attempts < 4294967295 THEN attempts + 1 ELSE attempts END, \
                 first_attempt_at_ms = COALESCE(first_attempt_at_ms, ?), \
                 next_attempt_at_ms = ?, last_error = ? \
                 WHERE {KEY_MATCH} RETURNING {DELIVERY_COLS}"
            ))
            .bind(attempted_at_ms)
            .bind(next_attempt_at_ms)
            .bind(error.as_str()),
            key,
        )
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
        let reason = clip_error(reason);
        let mut tx = self.write_progress(OP).await?;
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
        let already = bind_key(
            sqlx::query(&format!("SELECT 1 FROM parked WHERE {KEY_MATCH}")),
            key,
        )
        .fetch_optional(&mut *tx)
        .await
        .map_err(be(OP))?;
        if already.is_some() {
            return Err(Error::Conflict {
                what: "delivery",
                name: key.to_string(),
                reason: "it is already parked".into(),
            });
        }
        sqlx::query(&format!(
            "INSERT INTO parked ({PARKED_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
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
        require_subscription(&mut tx, OP, subscription).await?;
        let first_page = format!(
            "SELECT {PARKED_COLS} FROM parked WHERE subscription = ? \
             ORDER BY topic, partition_no, record_offset LIMIT ?"
        );
        // Row-value comparison spelled out, for databases without `(a, b) > (?, ?)`.
        let next_page = format!(
            "SELECT {PARKED_COLS} FROM parked WHERE subscription = ? \
             AND (topic > ? OR (topic = ? AND (partition_no > ? \
                  OR (partition_no = ? AND record_offset > ?)))) \
             ORDER BY topic, partition_no, record_offset LIMIT ?"
        );
        let rows = match after {
            None => sqlx::query(&first_page)
                .bind(subscription)
                .bind(i64::from(limit)),
            Some(after) => sqlx::query(&next_page)
                .bind(subscription)
                .bind(after.topic.as_str())
                .bind(after.topic.as_str())
                .bind(i64::from(after.partition))
                .bind(i64::from(after.partition))
                .bind(to_i64(after.offset))
                .bind(i64::from(limit)),
        }
        .fetch_all(&mut *tx)
        .await
        .map_err(be(OP))?;
        tx.commit().await.map_err(be(OP))?;
        rows.iter().map(parked_from_row).collect()
    }

    async fn unpark(&self, key: &DeliveryKey, now_ms: i64) -> Result<Delivery> {
        const OP: &str = "unpark";
        validate_key(key)?;
        let mut tx = self.write(OP).await?;
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
            "INSERT INTO deliveries ({DELIVERY_COLS}) VALUES (?, ?, ?, ?, ?, 0, NULL, ?, NULL) \
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
             (SELECT COUNT(*) FROM deliveries WHERE subscription = ?) AS in_flight, \
             (SELECT COUNT(*) FROM parked WHERE subscription = ?) AS parked \
             FROM subscriptions WHERE name = ?",
        )
        .bind(subscription)
        .bind(subscription)
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
        sqlx::query("DELETE FROM event_schemas WHERE topic = ?")
            .bind(topic)
            .execute(&mut *tx)
            .await
            .map_err(be(OP))?;
        for (event_type, schema) in &schemas {
            sqlx::query(
                "INSERT INTO event_schemas (topic, event_type, schema_json) VALUES (?, ?, ?)",
            )
            .bind(topic)
            .bind(event_type)
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
            "SELECT event_type, schema_json FROM event_schemas WHERE topic = ? \
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

    /// A connection given back just before the close (its release still in flight, as
    /// when the task that used it has just ended) is closed by the time `close_pool`
    /// returns, and with it the last connection: SQLite has removed the `-wal` file.
    #[tokio::test(flavor = "current_thread")]
    async fn a_connection_being_given_back_is_closed_before_the_close_returns() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("db.sqlite");
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .expect("open");
        sqlx::query("CREATE TABLE t (x)")
            .execute(&pool)
            .await
            .expect("create");
        let conn = pool.acquire().await.expect("acquire");
        assert!(dir.path().join("db.sqlite-wal").exists());
        // The release runs in a task of its own: let it start (it checks that the pool is
        // open, then pings the connection) before the close begins.
        drop(conn);
        tokio::task::yield_now().await;
        close_pool(&pool).await;
        assert_eq!(pool.size(), 0, "connections left open");
        assert!(
            !dir.path().join("db.sqlite-wal").exists(),
            "the -wal file is still there: a connection is open"
        );
    }
}
