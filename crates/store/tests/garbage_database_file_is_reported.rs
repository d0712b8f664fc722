//! A file that is not a store database, a database of a newer version, a damaged file and
//! rows that do not parse are all reported with a clear error naming what is wrong, and
//! nothing panics.

use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};
use std::path::Path;
use switchyard_store::sqlite::SqliteStore;
use switchyard_store::{Cursor, Delivery, DeliveryKey, Error, Store, SubscriptionSpec};

const TOPIC: &str = "orders.v1";

fn expect_open_error(result: Result<SqliteStore, Error>, path: &Path, mentions: &str) {
    match result {
        Err(e @ Error::Open { .. }) => {
            let message = e.to_string();
            eprintln!("{message}");
            assert!(
                message.contains(&path.display().to_string()),
                "the error names the file: {message}"
            );
            assert!(
                message.to_lowercase().contains(mentions),
                "the error says `{mentions}`: {message}"
            );
        }
        Err(other) => panic!("expected Error::Open, got {other:?}"),
        Ok(_) => panic!("opening {} must fail", path.display()),
    }
}

async fn raw(path: &Path) -> SqlitePool {
    SqlitePool::connect_with(SqliteConnectOptions::new().filename(path))
        .await
        .expect("raw connection")
}

#[tokio::test]
async fn garbage_file_is_reported_at_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store.db");
    // Deterministic noise, longer than a SQLite header.
    let mut x: u32 = 0x1234_5678;
    let garbage: Vec<u8> = (0..64 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    std::fs::write(&path, &garbage).expect("write garbage");
    expect_open_error(SqliteStore::open(&path).await, &path, "not a database");
    // The file is left as it was: nothing is "repaired" by overwriting it.
    assert_eq!(std::fs::read(&path).expect("read back"), garbage);

    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "just some text, not a database\n").expect("write text");
    expect_open_error(SqliteStore::open(&text).await, &text, "not a database");
}

#[tokio::test]
async fn another_applications_database_is_reported_at_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("other.db");
    let pool = SqlitePool::connect_with(
        SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true),
    )
    .await
    .expect("create");
    sqlx::query("CREATE TABLE subscriptions (id INTEGER PRIMARY KEY, email TEXT)")
        .execute(&pool)
        .await
        .expect("create table");
    pool.close().await;
    expect_open_error(SqliteStore::open(&path).await, &path, "schema");
}

#[tokio::test]
async fn a_newer_schema_is_reported_at_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store.db");
    SqliteStore::open(&path)
        .await
        .expect("create")
        .close()
        .await;
    let pool = raw(&path).await;
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (9999, 'from the future', TRUE, x'00', 0)",
    )
    .execute(&pool)
    .await
    .expect("fake a newer migration");
    pool.close().await;
    expect_open_error(SqliteStore::open(&path).await, &path, "9999");
}

#[tokio::test]
async fn truncated_file_is_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store.db");
    let store = SqliteStore::open(&path).await.expect("open");
    store
        .put_subscription(SubscriptionSpec::new("s", [TOPIC], "http://h/"))
        .await
        .expect("put");
    store.close().await;
    let len = std::fs::metadata(&path).expect("metadata").len();
    assert!(len > 4096, "the database has more than one page ({len})");
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open for truncation");
    file.set_len(4096).expect("truncate");
    drop(file);
    match SqliteStore::open(&path).await {
        Err(e @ Error::Open { .. }) => {
            eprintln!("{e}");
            assert!(e.to_string().contains("store.db"), "{e}");
        }
        Err(other) => panic!("expected Error::Open, got {other:?}"),
        Ok(store) => {
            // If the damage is not visible at open it must be at the first read.
            let r = store.get_subscription("s").await;
            assert!(r.is_err(), "reading a truncated database must fail: {r:?}");
        }
    }
}

fn expect_corrupt<T: std::fmt::Debug>(
    result: Result<T, Error>,
    table: &str,
    key_part: &str,
    column: &str,
) {
    match result {
        Err(e @ Error::Corrupt { .. }) => {
            let Error::Corrupt {
                table: t,
                key,
                reason,
            } = &e
            else {
                unreachable!()
            };
            assert_eq!(*t, table, "{e}");
            assert!(key.contains(key_part), "the key names the row: {e}");
            assert!(reason.contains(column), "the reason names the column: {e}");
        }
        other => panic!("expected Error::Corrupt in `{table}`, got {other:?}"),
    }
}

#[tokio::test]
async fn rows_that_do_not_parse_are_reported_with_table_and_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store.db");
    let store = SqliteStore::open(&path).await.expect("open");
    let spec = SubscriptionSpec::new("billing", [TOPIC], "http://h/");
    store.put_subscription(spec.clone()).await.expect("put");
    let batch = (0..3)
        .map(|o| Delivery::new(DeliveryKey::new("billing", TOPIC, 1, o), None, 0))
        .collect();
    store
        .enqueue("billing", batch, Some(Cursor::new(TOPIC, 1, 3)))
        .await
        .expect("enqueue");
    store
        .park(&DeliveryKey::new("billing", TOPIC, 1, 0), 5, "r")
        .await
        .expect("park");

    let pool = raw(&path).await;
    let exec = |sql: &'static str| {
        let pool = pool.clone();
        async move { sqlx::query(sql).execute(&pool).await.expect(sql) }
    };

    exec("UPDATE subscriptions SET spec = '{not json' WHERE name = 'billing'").await;
    expect_corrupt(
        store.get_subscription("billing").await,
        "subscriptions",
        "billing",
        "spec",
    );
    expect_corrupt(
        store.list_subscriptions().await,
        "subscriptions",
        "billing",
        "spec",
    );
    // Putting a good spec repairs the row (and counts as a change).
    let (repaired, created) = store.put_subscription(spec.clone()).await.expect("repair");
    assert!(!created);
    assert_eq!(repaired.generation, 2);
    assert_eq!(
        store.get_subscription("billing").await.expect("get"),
        repaired
    );

    // A spec that names another subscription is not trusted either.
    exec(
        "UPDATE subscriptions SET spec = replace(spec, '\"billing\"', '\"other\"') \
         WHERE name = 'billing'",
    )
    .await;
    expect_corrupt(
        store.get_subscription("billing").await,
        "subscriptions",
        "billing",
        "spec",
    );
    store.put_subscription(spec).await.expect("repair again");

    exec("UPDATE deliveries SET attempts = 'many' WHERE record_offset = 2").await;
    expect_corrupt(
        store.in_flight("billing", TOPIC, 1).await,
        "deliveries",
        "orders.v1/1@2",
        "attempts",
    );
    expect_corrupt(
        store.due("billing", i64::MAX, 10).await,
        "deliveries",
        "orders.v1/1@2",
        "attempts",
    );
    expect_corrupt(
        store
            .retry_later(&DeliveryKey::new("billing", TOPIC, 1, 2), 1, 2, "e")
            .await,
        "deliveries",
        "orders.v1/1@2",
        "attempts",
    );
    exec("UPDATE deliveries SET attempts = 0, record_offset = -7 WHERE record_offset = 2").await;
    expect_corrupt(
        store.in_flight("billing", TOPIC, 1).await,
        "deliveries",
        "orders.v1/1@-7",
        "record_offset",
    );
    exec("DELETE FROM deliveries WHERE record_offset = -7").await;
    assert_eq!(
        store
            .in_flight("billing", TOPIC, 1)
            .await
            .expect("fixed")
            .len(),
        1
    );

    exec("UPDATE cursors SET next_offset = 'x'").await;
    expect_corrupt(
        store.cursors("billing").await,
        "cursors",
        "orders.v1/1",
        "next_offset",
    );

    exec("UPDATE parked SET parked_at_ms = 'yesterday'").await;
    expect_corrupt(
        store.parked("billing", None, 10).await,
        "parked",
        "orders.v1/1@0",
        "parked_at_ms",
    );
    expect_corrupt(
        store
            .unpark(&DeliveryKey::new("billing", TOPIC, 1, 0), 9)
            .await,
        "parked",
        "orders.v1/1@0",
        "parked_at_ms",
    );
    // The failed unpark changed nothing: the row is still parked (and still corrupt).
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM parked")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(count, 1);

    // Deleting the subscription still works, and clears the damaged rows.
    store.delete_subscription("billing").await.expect("delete");
    pool.close().await;
    store.close().await;
}
