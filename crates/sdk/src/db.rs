//! The SDK's tables in the service's own database, SQLite or PostgreSQL (sqlx):
//!
//! - `switchyard_outbox`: events written in the service's transaction, waiting for the
//!   relay; deleted once the platform has them (`parked` when the platform refuses one for
//!   good, with the reason).
//! - `switchyard_inbox`: the events a consumer has handled (`consumer`, `source`, `id`),
//!   recorded in the handler's transaction, so a redelivery changes nothing.
//! - `switchyard_cursors`: where a pull consumer stands in each partition, moved in the
//!   same transaction as the handler's writes.
//! - `switchyard_parked`: events a pull consumer gave up on, for a person to look at.
//!
//! [`Backend`] is implemented for [`sqlx::Sqlite`] and [`sqlx::Postgres`]; the SQL of
//! each lives here and nowhere else.

use crate::error::{Error, Result};
use sqlx::{Pool, Transaction};
use std::future::Future;
use std::str::FromStr as _;
use std::time::Duration;

/// One outbox row, oldest first.
#[derive(Clone, Debug)]
pub struct OutboxRow {
    pub seq: i64,
    pub topic: String,
    /// The structured-mode CloudEvent.
    pub event: String,
}

/// Where a parked event came from and why it was given up on.
#[derive(Clone, Debug)]
pub struct ParkedEvent<'a> {
    pub consumer: &'a str,
    pub topic: &'a str,
    pub partition: u32,
    pub offset: u64,
    pub event_id: &'a str,
    pub event: &'a str,
    pub error: &'a str,
    pub attempts: u32,
}

/// Where a pulled event's cursor moves when its transaction commits.
#[derive(Clone, Copy, Debug)]
pub struct CursorMove<'a> {
    pub topic: &'a str,
    pub partition: u32,
    pub next_offset: u64,
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for sqlx::Sqlite {}
    impl Sealed for sqlx::Postgres {}
}

/// A database the SDK keeps its outbox, inbox and cursors in: [`sqlx::Sqlite`] or
/// [`sqlx::Postgres`].
pub trait Backend: sqlx::Database + sealed::Sealed {
    /// `sqlite` or `postgres`.
    const NAME: &'static str;

    /// A pool for `url` (`sqlite://PATH`, `postgres://...`). `durable`: every commit is on
    /// disk before it returns (SQLite `synchronous=FULL`); otherwise (SQLite `NORMAL`, in WAL
    /// mode) a commit survives the process being killed but the last ones may roll back on a
    /// power loss, all together (state, inbox, outbox, cursor), which a pulling service reads
    /// again from its cursor. PostgreSQL commits as the server is configured.
    fn connect(url: &str, durable: bool) -> impl Future<Output = Result<Pool<Self>>> + Send;

    /// Creates the SDK's tables if they are missing (safe to run from many processes).
    fn migrate(pool: &Pool<Self>) -> impl Future<Output = Result<()>> + Send;

    /// `SELECT 1`: the database answers (the health check).
    fn ping(pool: &Pool<Self>) -> impl Future<Output = Result<()>> + Send;

    /// A write transaction (SQLite: `BEGIN IMMEDIATE`, so it never fails half-way to upgrade).
    fn begin(pool: &Pool<Self>) -> impl Future<Output = Result<Transaction<'static, Self>>> + Send;

    fn outbox_add(
        conn: &mut Self::Connection,
        topic: &str,
        event_id: &str,
        event: &str,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Up to `limit` rows not parked, oldest first.
    fn outbox_pending(
        pool: &Pool<Self>,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<OutboxRow>>> + Send;

    fn outbox_done(pool: &Pool<Self>, seqs: &[i64]) -> impl Future<Output = Result<()>> + Send;

    /// Records a refused row with its reason and sets it aside.
    fn outbox_park(
        pool: &Pool<Self>,
        seq: i64,
        error: &str,
    ) -> impl Future<Output = Result<()>> + Send;

    /// A write transaction that has already claimed `(consumer, source, id)` in the inbox
    /// and, for a pulled event, moved the consumer's cursor: what a handler runs in. `None`
    /// when the inbox had the event (it was handled before); nothing is held then.
    fn begin_claiming(
        pool: &Pool<Self>,
        consumer: &str,
        source: &str,
        id: &str,
        cursor: Option<CursorMove<'_>>,
    ) -> impl Future<Output = Result<Option<Transaction<'static, Self>>>> + Send;

    /// Records `(consumer, source, id)` as handled; false when it already was.
    fn inbox_claim(
        conn: &mut Self::Connection,
        consumer: &str,
        source: &str,
        id: &str,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Forgets handled ids older than `age` (their events are behind every cursor by then).
    fn inbox_prune(pool: &Pool<Self>, age: Duration) -> impl Future<Output = Result<u64>> + Send;

    /// The consumer's next offset in each partition of `topic` it has one for.
    fn cursors(
        pool: &Pool<Self>,
        consumer: &str,
        topic: &str,
    ) -> impl Future<Output = Result<Vec<(u32, u64)>>> + Send;

    fn set_cursor(
        conn: &mut Self::Connection,
        consumer: &str,
        topic: &str,
        partition: u32,
        next_offset: u64,
    ) -> impl Future<Output = Result<()>> + Send;

    fn park(
        conn: &mut Self::Connection,
        parked: ParkedEvent<'_>,
    ) -> impl Future<Output = Result<()>> + Send;

    /// How many events the consumer parked.
    fn parked_count(pool: &Pool<Self>, consumer: &str) -> impl Future<Output = Result<u64>> + Send;
}

fn now_ms() -> i64 {
    switchyard_types::Timestamp::now().millis()
}

/// [`Backend::begin_claiming`] one statement at a time.
async fn begin_claiming_in_steps<DB: Backend>(
    pool: &Pool<DB>,
    consumer: &str,
    source: &str,
    id: &str,
    cursor: Option<CursorMove<'_>>,
) -> Result<Option<Transaction<'static, DB>>> {
    let mut tx = DB::begin(pool).await?;
    if !DB::inbox_claim(&mut tx, consumer, source, id).await? {
        return Ok(None);
    }
    if let Some(c) = cursor {
        DB::set_cursor(&mut tx, consumer, c.topic, c.partition, c.next_offset).await?;
    }
    Ok(Some(tx))
}

/// `s` as an SQLite text literal that needs no quoting, whatever it holds: its UTF-8 bytes
/// in hex, cast to text. `None` for a string with a NUL, which SQLite text cannot hold.
fn sqlite_text(s: &str) -> Option<String> {
    use std::fmt::Write as _;
    if s.contains('\0') {
        return None;
    }
    let mut out = String::with_capacity(s.len() * 2 + 20);
    out.push_str("CAST(X'");
    for b in s.bytes() {
        let _ = write!(out, "{b:02x}");
    }
    out.push_str("' AS TEXT)");
    Some(out)
}

/// The `BEGIN` statement of [`Backend::begin_claiming`] on SQLite, with the claim and the
/// cursor in it as literals; `None` when a value cannot be one (it holds a NUL).
fn sqlite_claiming_begin(
    consumer: &str,
    source: &str,
    id: &str,
    cursor: Option<CursorMove<'_>>,
) -> Result<Option<String>> {
    let (Some(consumer), Some(source), Some(id)) =
        (sqlite_text(consumer), sqlite_text(source), sqlite_text(id))
    else {
        return Ok(None);
    };
    let mut sql = format!(
        "BEGIN IMMEDIATE; \
         INSERT OR ROLLBACK INTO switchyard_inbox (consumer, source, event_id, processed_ms) \
         VALUES ({consumer}, {source}, {id}, {})",
        now_ms()
    );
    if let Some(c) = cursor {
        let Some(topic) = sqlite_text(c.topic) else {
            return Ok(None);
        };
        sql.push_str(&format!(
            "; INSERT INTO switchyard_cursors (consumer, topic, part, next_offset) \
             VALUES ({consumer}, {topic}, {}, {}) ON CONFLICT (consumer, topic, part) \
             DO UPDATE SET next_offset = excluded.next_offset",
            c.partition,
            offset(c.next_offset)?
        ));
    }
    Ok(Some(sql))
}

fn offset(o: u64) -> Result<i64> {
    i64::try_from(o).map_err(|_| Error::config("offset", format!("{o} is beyond what SQL stores")))
}

fn unsigned(v: i64, what: &str) -> Result<u64> {
    u64::try_from(v).map_err(|_| Error::config(what, format!("the database holds {v}")))
}

const SQLITE_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS switchyard_outbox (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    topic      TEXT NOT NULL,
    event_id   TEXT NOT NULL,
    event      TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    parked     INTEGER NOT NULL DEFAULT 0,
    error      TEXT
);
CREATE TABLE IF NOT EXISTS switchyard_inbox (
    consumer     TEXT NOT NULL,
    source       TEXT NOT NULL,
    event_id     TEXT NOT NULL,
    processed_ms INTEGER NOT NULL,
    PRIMARY KEY (consumer, source, event_id)
);
CREATE INDEX IF NOT EXISTS switchyard_inbox_age ON switchyard_inbox (processed_ms);
CREATE TABLE IF NOT EXISTS switchyard_cursors (
    consumer    TEXT NOT NULL,
    topic       TEXT NOT NULL,
    part        INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (consumer, topic, part)
);
CREATE TABLE IF NOT EXISTS switchyard_parked (
    consumer  TEXT NOT NULL,
    topic     TEXT NOT NULL,
    part      INTEGER NOT NULL,
    offset_   INTEGER NOT NULL,
    event_id  TEXT NOT NULL,
    event     TEXT NOT NULL,
    error     TEXT NOT NULL,
    attempts  INTEGER NOT NULL,
    parked_ms INTEGER NOT NULL,
    PRIMARY KEY (consumer, topic, part, offset_)
);
";

/// Checkpoints `pool`'s WAL every 100 ms (`PASSIVE`: it never waits for, nor blocks, the
/// pool's writer) until the pool is closed. A failure leaves it to SQLite's own threshold.
async fn checkpoint_wal(pool: Pool<sqlx::Sqlite>, mut conn: sqlx::SqliteConnection) {
    use sqlx::Connection as _;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if pool.is_closed() {
            break;
        }
        if sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&mut conn)
            .await
            .is_err()
        {
            break;
        }
    }
    drop(pool);
    let _ = conn.close().await;
}

impl Backend for sqlx::Sqlite {
    const NAME: &'static str = "sqlite";

    async fn connect(url: &str, durable: bool) -> Result<Pool<Self>> {
        use sqlx::sqlite::{
            SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
        };
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| Error::config("DATABASE_URL", format!("{url:?}: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(if durable {
                SqliteSynchronous::Full
            } else {
                SqliteSynchronous::Normal
            })
            .busy_timeout(Duration::from_secs(10))
            // Small services, many of them in one process: a modest page cache each.
            .pragma("cache_size", "-512")
            .statement_cache_capacity(32);
        // Checkpoints copy the WAL into the database file and fsync it. Done by the commit
        // that crosses SQLite's threshold, that one commit (and every handler queued behind
        // it) waits for the disk: a checkpointer on its own connection does them instead,
        // and the threshold stays only as a backstop.
        let pool_options = options.clone().pragma("wal_autocheckpoint", "10000");
        let pool = SqlitePoolOptions::new()
            // One connection: SQLite has one writer at a time anyway, and a second connection
            // asking for the write lock while the first holds it is put to sleep by SQLite's
            // busy handler (1, 2, 5, 10... ms), which showed as a 47 ms p99 from publish to
            // handler. The pool's queue hands the connection over as soon as it is free.
            .max_connections(1)
            // A connection to a local file does not go stale: the ping sqlx sends before
            // handing it out is a round trip to the connection's thread on every handler.
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(10))
            .min_connections(0)
            .idle_timeout(Duration::from_secs(60))
            .connect_with(pool_options)
            .await
            .map_err(|e| Error::config("DATABASE_URL", format!("opening {url}: {e}")))?;
        let checkpointer = <sqlx::SqliteConnection as sqlx::Connection>::connect_with(&options)
            .await
            .map_err(|e| Error::config("DATABASE_URL", format!("opening {url}: {e}")))?;
        tokio::spawn(checkpoint_wal(pool.clone(), checkpointer));
        Ok(pool)
    }

    async fn migrate(pool: &Pool<Self>) -> Result<()> {
        sqlx::raw_sql(SQLITE_SCHEMA).execute(pool).await?;
        Ok(())
    }

    async fn ping(pool: &Pool<Self>) -> Result<()> {
        // The one connection busy in a handler's transaction is a database at work: a
        // health check must not wait behind it.
        if pool.size() > 0 && pool.num_idle() == 0 {
            return Ok(());
        }
        sqlx::query("SELECT 1").execute(pool).await?;
        Ok(())
    }

    async fn begin(pool: &Pool<Self>) -> Result<Transaction<'static, Self>> {
        Ok(pool.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// One round trip to the connection's thread instead of three: the claim and the cursor
    /// ride in the `BEGIN` statement (sqlx runs a custom `BEGIN` as it is, without
    /// parameters, hence the values as literals). `INSERT OR ROLLBACK` ends the transaction
    /// itself when the inbox has the event, so that answer leaves nothing open.
    async fn begin_claiming(
        pool: &Pool<Self>,
        consumer: &str,
        source: &str,
        id: &str,
        cursor: Option<CursorMove<'_>>,
    ) -> Result<Option<Transaction<'static, Self>>> {
        let Some(sql) = sqlite_claiming_begin(consumer, source, id, cursor)? else {
            return begin_claiming_in_steps(pool, consumer, source, id, cursor).await;
        };
        match pool.begin_with(sql).await {
            Ok(tx) => Ok(Some(tx)),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(None),
            Err(e) => {
                // A statement after the `BEGIN` failed some other way (a full disk, say):
                // SQLite may have left the transaction open, which sqlx does not know of.
                // Nobody else can begin one while it is, so a `ROLLBACK` once the
                // connection is back ends only that one ("no transaction is active" if
                // SQLite already did).
                let _ = sqlx::raw_sql("ROLLBACK").execute(pool).await;
                Err(e.into())
            }
        }
    }

    async fn outbox_add(
        conn: &mut sqlx::SqliteConnection,
        topic: &str,
        event_id: &str,
        event: &str,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO switchyard_outbox (topic, event_id, event, created_ms) VALUES (?, ?, ?, ?)",
        )
        .bind(topic)
        .bind(event_id)
        .bind(event)
        .bind(now_ms())
        .execute(conn)
        .await?;
        Ok(())
    }

    async fn outbox_pending(pool: &Pool<Self>, limit: i64) -> Result<Vec<OutboxRow>> {
        let rows: Vec<(i64, String, String)> = sqlx::query_as(
            "SELECT seq, topic, event FROM switchyard_outbox WHERE parked = 0 ORDER BY seq LIMIT ?",
        )
        .bind(limit)
        .fetch_all(pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(seq, topic, event)| OutboxRow { seq, topic, event })
            .collect())
    }

    async fn outbox_done(pool: &Pool<Self>, seqs: &[i64]) -> Result<()> {
        let mut tx = pool.begin().await?;
        for seq in seqs {
            sqlx::query("DELETE FROM switchyard_outbox WHERE seq = ?")
                .bind(seq)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn outbox_park(pool: &Pool<Self>, seq: i64, error: &str) -> Result<()> {
        sqlx::query("UPDATE switchyard_outbox SET parked = 1, error = ? WHERE seq = ?")
            .bind(error)
            .bind(seq)
            .execute(pool)
            .await?;
        Ok(())
    }

    async fn inbox_claim(
        conn: &mut sqlx::SqliteConnection,
        consumer: &str,
        source: &str,
        id: &str,
    ) -> Result<bool> {
        let r = sqlx::query(
            "INSERT INTO switchyard_inbox (consumer, source, event_id, processed_ms) \
             VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(consumer)
        .bind(source)
        .bind(id)
        .bind(now_ms())
        .execute(conn)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    async fn inbox_prune(pool: &Pool<Self>, age: Duration) -> Result<u64> {
        let before = now_ms().saturating_sub(age.as_millis().min(i64::MAX as u128) as i64);
        let r = sqlx::query("DELETE FROM switchyard_inbox WHERE processed_ms < ?")
            .bind(before)
            .execute(pool)
            .await?;
        Ok(r.rows_affected())
    }

    async fn cursors(pool: &Pool<Self>, consumer: &str, topic: &str) -> Result<Vec<(u32, u64)>> {
        let rows: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT part, next_offset FROM switchyard_cursors WHERE consumer = ? AND topic = ?",
        )
        .bind(consumer)
        .bind(topic)
        .fetch_all(pool)
        .await?;
        cursor_rows(rows)
    }

    async fn set_cursor(
        conn: &mut sqlx::SqliteConnection,
        consumer: &str,
        topic: &str,
        partition: u32,
        next_offset: u64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO switchyard_cursors (consumer, topic, part, next_offset) VALUES (?, ?, ?, ?) \
             ON CONFLICT (consumer, topic, part) DO UPDATE SET next_offset = excluded.next_offset",
        )
        .bind(consumer)
        .bind(topic)
        .bind(i64::from(partition))
        .bind(offset(next_offset)?)
        .execute(conn)
        .await?;
        Ok(())
    }

    async fn park(conn: &mut sqlx::SqliteConnection, p: ParkedEvent<'_>) -> Result<()> {
        sqlx::query(
            "INSERT INTO switchyard_parked \
             (consumer, topic, part, offset_, event_id, event, error, attempts, parked_ms) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(p.consumer)
        .bind(p.topic)
        .bind(i64::from(p.partition))
        .bind(offset(p.offset)?)
        .bind(p.event_id)
        .bind(p.event)
        .bind(p.error)
        .bind(i64::from(p.attempts))
        .bind(now_ms())
        .execute(conn)
        .await?;
        Ok(())
    }

    async fn parked_count(pool: &Pool<Self>, consumer: &str) -> Result<u64> {
        let (n,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM switchyard_parked WHERE consumer = ?")
                .bind(consumer)
                .fetch_one(pool)
                .await?;
        unsigned(n, "parked count")
    }
}

fn cursor_rows(rows: Vec<(i64, i64)>) -> Result<Vec<(u32, u64)>> {
    rows.into_iter()
        .map(|(p, o)| {
            let p = u32::try_from(p)
                .map_err(|_| Error::config("switchyard_cursors", format!("partition {p}")))?;
            Ok((p, unsigned(o, "switchyard_cursors.next_offset")?))
        })
        .collect()
}

const POSTGRES_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS switchyard_outbox (
    seq        BIGSERIAL PRIMARY KEY,
    topic      TEXT NOT NULL,
    event_id   TEXT NOT NULL,
    event      TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    parked     BOOLEAN NOT NULL DEFAULT FALSE,
    error      TEXT
);
CREATE TABLE IF NOT EXISTS switchyard_inbox (
    consumer     TEXT NOT NULL,
    source       TEXT NOT NULL,
    event_id     TEXT NOT NULL,
    processed_ms BIGINT NOT NULL,
    PRIMARY KEY (consumer, source, event_id)
);
CREATE INDEX IF NOT EXISTS switchyard_inbox_age ON switchyard_inbox (processed_ms);
CREATE TABLE IF NOT EXISTS switchyard_cursors (
    consumer    TEXT NOT NULL,
    topic       TEXT NOT NULL,
    part        INTEGER NOT NULL,
    next_offset BIGINT NOT NULL,
    PRIMARY KEY (consumer, topic, part)
);
CREATE TABLE IF NOT EXISTS switchyard_parked (
    consumer  TEXT NOT NULL,
    topic     TEXT NOT NULL,
    part      INTEGER NOT NULL,
    offset_   BIGINT NOT NULL,
    event_id  TEXT NOT NULL,
    event     TEXT NOT NULL,
    error     TEXT NOT NULL,
    attempts  INTEGER NOT NULL,
    parked_ms BIGINT NOT NULL,
    PRIMARY KEY (consumer, topic, part, offset_)
);
";

impl Backend for sqlx::Postgres {
    const NAME: &'static str = "postgres";

    async fn connect(url: &str, _durable: bool) -> Result<Pool<Self>> {
        use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| Error::config("DATABASE_URL", format!("{url:?}: {e}")))?;
        PgPoolOptions::new()
            .max_connections(4)
            .min_connections(0)
            .idle_timeout(Duration::from_secs(60))
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(|e| Error::config("DATABASE_URL", format!("connecting to {url}: {e}")))
    }

    async fn migrate(pool: &Pool<Self>) -> Result<()> {
        // CREATE TABLE IF NOT EXISTS races with itself across processes: one at a time.
        let mut tx = pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(7305011)")
            .execute(&mut *tx)
            .await?;
        for statement in POSTGRES_SCHEMA.split(';').filter(|s| !s.trim().is_empty()) {
            sqlx::query(statement).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn ping(pool: &Pool<Self>) -> Result<()> {
        sqlx::query("SELECT 1").execute(pool).await?;
        Ok(())
    }

    async fn begin_claiming(
        pool: &Pool<Self>,
        consumer: &str,
        source: &str,
        id: &str,
        cursor: Option<CursorMove<'_>>,
    ) -> Result<Option<Transaction<'static, Self>>> {
        begin_claiming_in_steps(pool, consumer, source, id, cursor).await
    }

    async fn begin(pool: &Pool<Self>) -> Result<Transaction<'static, Self>> {
        Ok(pool.begin().await?)
    }

    async fn outbox_add(
        conn: &mut sqlx::PgConnection,
        topic: &str,
        event_id: &str,
        event: &str,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO switchyard_outbox (topic, event_id, event, created_ms) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(topic)
        .bind(event_id)
        .bind(event)
        .bind(now_ms())
        .execute(conn)
        .await?;
        Ok(())
    }

    async fn outbox_pending(pool: &Pool<Self>, limit: i64) -> Result<Vec<OutboxRow>> {
        let rows: Vec<(i64, String, String)> = sqlx::query_as(
            "SELECT seq, topic, event FROM switchyard_outbox WHERE NOT parked ORDER BY seq LIMIT $1",
        )
        .bind(limit)
        .fetch_all(pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(seq, topic, event)| OutboxRow { seq, topic, event })
            .collect())
    }

    async fn outbox_done(pool: &Pool<Self>, seqs: &[i64]) -> Result<()> {
        sqlx::query("DELETE FROM switchyard_outbox WHERE seq = ANY($1)")
            .bind(seqs)
            .execute(pool)
            .await?;
        Ok(())
    }

    async fn outbox_park(pool: &Pool<Self>, seq: i64, error: &str) -> Result<()> {
        sqlx::query("UPDATE switchyard_outbox SET parked = TRUE, error = $1 WHERE seq = $2")
            .bind(error)
            .bind(seq)
            .execute(pool)
            .await?;
        Ok(())
    }

    async fn inbox_claim(
        conn: &mut sqlx::PgConnection,
        consumer: &str,
        source: &str,
        id: &str,
    ) -> Result<bool> {
        let r = sqlx::query(
            "INSERT INTO switchyard_inbox (consumer, source, event_id, processed_ms) \
             VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        )
        .bind(consumer)
        .bind(source)
        .bind(id)
        .bind(now_ms())
        .execute(conn)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    async fn inbox_prune(pool: &Pool<Self>, age: Duration) -> Result<u64> {
        let before = now_ms().saturating_sub(age.as_millis().min(i64::MAX as u128) as i64);
        let r = sqlx::query("DELETE FROM switchyard_inbox WHERE processed_ms < $1")
            .bind(before)
            .execute(pool)
            .await?;
        Ok(r.rows_affected())
    }

    async fn cursors(pool: &Pool<Self>, consumer: &str, topic: &str) -> Result<Vec<(u32, u64)>> {
        let rows: Vec<(i32, i64)> = sqlx::query_as(
            "SELECT part, next_offset FROM switchyard_cursors WHERE consumer = $1 AND topic = $2",
        )
        .bind(consumer)
        .bind(topic)
        .fetch_all(pool)
        .await?;
        cursor_rows(rows.into_iter().map(|(p, o)| (i64::from(p), o)).collect())
    }

    async fn set_cursor(
        conn: &mut sqlx::PgConnection,
        consumer: &str,
        topic: &str,
        partition: u32,
        next_offset: u64,
    ) -> Result<()> {
        let part = i32::try_from(partition)
            .map_err(|_| Error::config("partition", format!("{partition} is too large")))?;
        sqlx::query(
            "INSERT INTO switchyard_cursors (consumer, topic, part, next_offset) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (consumer, topic, part) \
             DO UPDATE SET next_offset = excluded.next_offset",
        )
        .bind(consumer)
        .bind(topic)
        .bind(part)
        .bind(offset(next_offset)?)
        .execute(conn)
        .await?;
        Ok(())
    }

    async fn park(conn: &mut sqlx::PgConnection, p: ParkedEvent<'_>) -> Result<()> {
        let part = i32::try_from(p.partition)
            .map_err(|_| Error::config("partition", format!("{} is too large", p.partition)))?;
        let attempts = i32::try_from(p.attempts).unwrap_or(i32::MAX);
        sqlx::query(
            "INSERT INTO switchyard_parked \
             (consumer, topic, part, offset_, event_id, event, error, attempts, parked_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING",
        )
        .bind(p.consumer)
        .bind(p.topic)
        .bind(part)
        .bind(offset(p.offset)?)
        .bind(p.event_id)
        .bind(p.event)
        .bind(p.error)
        .bind(attempts)
        .bind(now_ms())
        .execute(conn)
        .await?;
        Ok(())
    }

    async fn parked_count(pool: &Pool<Self>, consumer: &str) -> Result<u64> {
        let (n,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM switchyard_parked WHERE consumer = $1")
                .bind(consumer)
                .fetch_one(pool)
                .await?;
        unsigned(n, "parked count")
    }
}

#[cfg(test)]
mod tests {
    use super::{Backend, CursorMove};
    use sqlx::{Pool, Sqlite};

    async fn pool(dir: &tempfile::TempDir) -> Pool<Sqlite> {
        let url = format!("sqlite://{}", dir.path().join("svc.sqlite").display());
        let pool = Sqlite::connect(&url, false).await.unwrap();
        Sqlite::migrate(&pool).await.unwrap();
        pool
    }

    async fn inbox_rows(pool: &Pool<Sqlite>) -> Vec<(String, String, String)> {
        sqlx::query_as("SELECT consumer, source, event_id FROM switchyard_inbox ORDER BY rowid")
            .fetch_all(pool)
            .await
            .unwrap()
    }

    fn at(topic: &str, next_offset: u64) -> Option<CursorMove<'_>> {
        Some(CursorMove {
            topic,
            partition: 2,
            next_offset,
        })
    }

    /// Ids and sources are whatever the producer sent: quotes, SQL, other scripts, and a NUL
    /// (which goes the slow way) are stored as they are, once.
    #[tokio::test]
    async fn a_claim_stores_any_text_once_and_a_second_claim_holds_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let pool = pool(&dir).await;
        let odd = [
            ("svc", "/src", "plain-1"),
            (
                "svc",
                "it's \"quoted\"",
                "x'); DROP TABLE switchyard_inbox; --",
            ),
            ("sérvice", "/源", "ид-🚀"),
            ("svc", "/with\0nul", "id\0two"),
        ];
        for (n, (consumer, source, id)) in odd.iter().enumerate() {
            let tx = Sqlite::begin_claiming(&pool, consumer, source, id, at("t.v1", n as u64 + 1))
                .await
                .unwrap()
                .expect("a first claim holds a transaction");
            tx.commit().await.unwrap();
            let again = Sqlite::begin_claiming(&pool, consumer, source, id, at("t.v1", 99))
                .await
                .unwrap();
            assert!(again.is_none(), "claimed twice: {id:?}");
            // Nothing was left open: a plain write transaction begins at once.
            Sqlite::begin(&pool).await.unwrap().commit().await.unwrap();
        }
        let rows = inbox_rows(&pool).await;
        let want: Vec<(String, String, String)> = odd
            .iter()
            .map(|(c, s, i)| (c.to_string(), s.to_string(), i.to_string()))
            .collect();
        assert_eq!(rows, want);
        // The cursors moved with the claims that held, not with the refused ones.
        let svc = Sqlite::cursors(&pool, "svc", "t.v1").await.unwrap();
        assert_eq!(svc, vec![(2, 4)]);
        let other = Sqlite::cursors(&pool, "sérvice", "t.v1").await.unwrap();
        assert_eq!(other, vec![(2, 3)]);
    }

    #[tokio::test]
    async fn a_claim_rolled_back_leaves_neither_inbox_row_nor_cursor() {
        let dir = tempfile::tempdir().unwrap();
        let pool = pool(&dir).await;
        let tx = Sqlite::begin_claiming(&pool, "svc", "/src", "e-1", at("t.v1", 7))
            .await
            .unwrap()
            .unwrap();
        drop(tx);
        assert!(inbox_rows(&pool).await.is_empty());
        assert!(
            Sqlite::cursors(&pool, "svc", "t.v1")
                .await
                .unwrap()
                .is_empty()
        );
        // So the event can be claimed again.
        let tx = Sqlite::begin_claiming(&pool, "svc", "/src", "e-1", None)
            .await
            .unwrap();
        assert!(tx.is_some());
    }

    /// A statement after the `BEGIN` failing other than on the inbox's key (here: the cursor
    /// table is gone) is an error, and the transaction SQLite left open is ended: the inbox
    /// row does not stay, and the connection serves the next transaction.
    #[tokio::test]
    async fn a_claim_that_fails_half_way_leaves_nothing_open() {
        let dir = tempfile::tempdir().unwrap();
        let pool = pool(&dir).await;
        sqlx::query("DROP TABLE switchyard_cursors")
            .execute(&pool)
            .await
            .unwrap();
        let err = Sqlite::begin_claiming(&pool, "svc", "/src", "e-1", at("t.v1", 1))
            .await
            .expect_err("the cursor's table is missing");
        assert!(err.to_string().contains("switchyard_cursors"), "{err}");
        let mut tx = Sqlite::begin(&pool).await.expect("nothing left open");
        let rows: Vec<(String,)> = sqlx::query_as("SELECT event_id FROM switchyard_inbox")
            .fetch_all(&mut *tx)
            .await
            .unwrap();
        assert!(rows.is_empty(), "the failed claim's row stayed: {rows:?}");
        tx.commit().await.unwrap();
        // Without a cursor the claim holds.
        assert!(
            Sqlite::begin_claiming(&pool, "svc", "/src", "e-1", None)
                .await
                .unwrap()
                .is_some()
        );
    }
}
