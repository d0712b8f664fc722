//! A service's SQLite pool checkpoints its WAL into the database file by itself (no commit
//! does it), after a burst of writes and under writes that never pause. Seen from outside
//! by the database file growing while the pool is open.

use std::time::{Duration, Instant};
use switchyard_sdk::Backend;
use switchyard_sdk::sqlx::{self, Pool, Sqlite};

fn file_len(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

async fn write(pool: &Pool<Sqlite>, n: usize) {
    sqlx::query("INSERT INTO notes (body) VALUES (?)")
        .bind(format!("note {n} {}", "x".repeat(500)))
        .execute(pool)
        .await
        .expect("write");
}

/// Waits up to `limit` for the database file to grow past `from`, writing a row every
/// 10 ms meanwhile when `keep_writing` (never a pause the checkpointer would take).
async fn grows_within(
    pool: &Pool<Sqlite>,
    db: &std::path::Path,
    from: u64,
    limit: Duration,
    keep_writing: bool,
) -> Option<Duration> {
    let started = Instant::now();
    let mut n = 0;
    while started.elapsed() < limit {
        if file_len(db) > from {
            return Some(started.elapsed());
        }
        if keep_writing {
            n += 1;
            write(pool, n).await;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_is_checkpointed_when_writes_pause_and_under_steady_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("service.db");
    let url = format!("sqlite://{}", db.display());
    let pool = <Sqlite as Backend>::connect(&url, false)
        .await
        .expect("connect");
    sqlx::query("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
        .execute(&pool)
        .await
        .expect("create table");
    // Let the table itself reach the file first.
    let _ = grows_within(&pool, &db, 0, Duration::from_secs(3), false).await;

    // A burst of writes, then a pause: the pages reach the database file soon after.
    let before = file_len(&db);
    for n in 0..50 {
        write(&pool, n).await;
    }
    let took = grows_within(&pool, &db, before, Duration::from_secs(3), false).await;
    assert!(took.is_some(), "no checkpoint within 3 s of a pause");

    // Writes every 10 ms that never pause: the checkpointer's 100 ms tick still copies
    // them (the store's policy, which waits for a pause for up to 5 s, measured worse here).
    let before = file_len(&db);
    let took = grows_within(&pool, &db, before, Duration::from_secs(3), true).await;
    assert!(took.is_some(), "no checkpoint in 3 s of steady writes");
    pool.close().await;
}
