//! Quota counters on SQLite (see [`crate::quota`]). A reservation is one `BEGIN IMMEDIATE`
//! transaction on the `synchronous=FULL` writer: racing reservations are serialised by the
//! write lock, and a grant is on disk before anyone spends it. Releases and pruning commit
//! with `synchronous=NORMAL`: a release lost to a power loss leaves units counted as used
//! (fewer requests than the quota, never more).

use super::{SqliteStore, be, col, col_unsigned, to_i64};
use crate::Result;
use crate::quota::{
    QuotaGrant, QuotaUsage, grant, validate_quota_prefix, validate_release, validate_reservation,
};
use sqlx::sqlite::SqliteRow;

fn usage_from_row(row: &SqliteRow) -> Result<QuotaUsage> {
    let key: String = col(row, "key", "quotas", "?")?;
    let k = key.as_str();
    Ok(QuotaUsage {
        window_start_ms: col(row, "window_start_ms", "quotas", k)?,
        window_end_ms: col(row, "window_end_ms", "quotas", k)?,
        used: col_unsigned(row, "used", "quotas", k)?,
        key,
    })
}

pub(super) async fn reserve_quota(
    store: &SqliteStore,
    key: &str,
    window_start_ms: i64,
    window_end_ms: i64,
    limit: u64,
    want: u64,
) -> Result<QuotaGrant> {
    const OP: &str = "reserve_quota";
    validate_reservation(key, window_start_ms, window_end_ms, limit, want)?;
    let mut tx = store.write(OP).await?;
    let row = sqlx::query(
        "SELECT key, window_start_ms, window_end_ms, used FROM quotas \
         WHERE key = ? AND window_start_ms = ?",
    )
    .bind(key)
    .bind(window_start_ms)
    .fetch_optional(&mut *tx)
    .await
    .map_err(be(OP))?;
    let used = match &row {
        Some(r) => usage_from_row(r)?.used,
        None => 0,
    };
    let g = grant(used, limit, want);
    if g.granted > 0 || row.is_none() {
        sqlx::query(
            "INSERT INTO quotas (key, window_start_ms, window_end_ms, used) VALUES (?, ?, ?, ?) \
             ON CONFLICT (key, window_start_ms) DO UPDATE SET used = excluded.used",
        )
        .bind(key)
        .bind(window_start_ms)
        .bind(window_end_ms)
        .bind(to_i64(g.used))
        .execute(&mut *tx)
        .await
        .map_err(be(OP))?;
        tx.commit().await.map_err(be(OP))?;
    }
    Ok(g)
}

pub(super) async fn release_quota(
    store: &SqliteStore,
    key: &str,
    window_start_ms: i64,
    n: u64,
) -> Result<u64> {
    const OP: &str = "release_quota";
    validate_release(key, n)?;
    let mut tx = store.write_progress(OP).await?;
    let row = sqlx::query(
        "UPDATE quotas SET used = MAX(used - ?, 0) WHERE key = ? AND window_start_ms = ? \
         RETURNING key, window_start_ms, window_end_ms, used",
    )
    .bind(to_i64(n))
    .bind(key)
    .bind(window_start_ms)
    .fetch_optional(&mut *tx)
    .await
    .map_err(be(OP))?;
    tx.commit().await.map_err(be(OP))?;
    Ok(match row {
        Some(r) => usage_from_row(&r)?.used,
        None => 0,
    })
}

pub(super) async fn quotas(store: &SqliteStore, prefix: &str) -> Result<Vec<QuotaUsage>> {
    const OP: &str = "quotas";
    validate_quota_prefix(prefix)?;
    let mut tx = store.read(OP).await?;
    let rows = sqlx::query(
        "SELECT key, window_start_ms, window_end_ms, used FROM quotas \
         WHERE substr(key, 1, length(?1)) = ?1 ORDER BY key, window_start_ms",
    )
    .bind(prefix)
    .fetch_all(&mut *tx)
    .await
    .map_err(be(OP))?;
    rows.iter().map(usage_from_row).collect()
}

pub(super) async fn prune_quotas(store: &SqliteStore, ended_by_ms: i64) -> Result<u64> {
    const OP: &str = "prune_quotas";
    let mut tx = store.write_progress(OP).await?;
    let done = sqlx::query("DELETE FROM quotas WHERE window_end_ms <= ?")
        .bind(ended_by_ms)
        .execute(&mut *tx)
        .await
        .map_err(be(OP))?;
    tx.commit().await.map_err(be(OP))?;
    Ok(done.rows_affected())
}
