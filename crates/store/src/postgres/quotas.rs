//! Quota counters on PostgreSQL (see [`crate::quota`]): the same rules as
//! `sqlite/quotas.rs`, for instances on different machines. A reservation inserts the
//! counter `ON CONFLICT DO NOTHING`, then reads it `FOR UPDATE`, so racing reservations
//! decide one after the other on what the previous one wrote, and it waits for the WAL
//! flush (a grant lost to a server crash would hand its units out twice). Releases and
//! pruning commit with `synchronous_commit = off`: a lost release leaves units counted as
//! used (fewer requests than the quota, never more).

use super::{PostgresStore, be, col, col_unsigned, to_i64};
use crate::Result;
use crate::quota::{
    QuotaGrant, QuotaUsage, grant, validate_quota_prefix, validate_release, validate_reservation,
};
use sqlx::postgres::PgRow;

const COLS: &str = "key, window_start_ms, window_end_ms, used";

fn usage_from_row(row: &PgRow) -> Result<QuotaUsage> {
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
    store: &PostgresStore,
    key: &str,
    window_start_ms: i64,
    window_end_ms: i64,
    limit: u64,
    want: u64,
) -> Result<QuotaGrant> {
    const OP: &str = "reserve_quota";
    validate_reservation(key, window_start_ms, window_end_ms, limit, want)?;
    let mut tx = store.write(OP).await?;
    sqlx::query(
        "INSERT INTO quotas (key, window_start_ms, window_end_ms, used) VALUES ($1, $2, $3, 0) \
         ON CONFLICT (key, window_start_ms) DO NOTHING",
    )
    .bind(key)
    .bind(window_start_ms)
    .bind(window_end_ms)
    .execute(&mut *tx)
    .await
    .map_err(be(OP))?;
    let row = sqlx::query(&format!(
        "SELECT {COLS} FROM quotas WHERE key = $1 AND window_start_ms = $2 FOR UPDATE"
    ))
    .bind(key)
    .bind(window_start_ms)
    .fetch_one(&mut *tx)
    .await
    .map_err(be(OP))?;
    let g = grant(usage_from_row(&row)?.used, limit, want);
    if g.granted > 0 {
        sqlx::query("UPDATE quotas SET used = $3 WHERE key = $1 AND window_start_ms = $2")
            .bind(key)
            .bind(window_start_ms)
            .bind(to_i64(g.used))
            .execute(&mut *tx)
            .await
            .map_err(be(OP))?;
    }
    tx.commit().await.map_err(be(OP))?;
    Ok(g)
}

pub(super) async fn release_quota(
    store: &PostgresStore,
    key: &str,
    window_start_ms: i64,
    n: u64,
) -> Result<u64> {
    const OP: &str = "release_quota";
    validate_release(key, n)?;
    let mut tx = store.write_progress(OP).await?;
    let row = sqlx::query(&format!(
        "UPDATE quotas SET used = GREATEST(used - $1, 0) WHERE key = $2 AND window_start_ms = $3 \
         RETURNING {COLS}"
    ))
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

pub(super) async fn quotas(store: &PostgresStore, prefix: &str) -> Result<Vec<QuotaUsage>> {
    const OP: &str = "quotas";
    validate_quota_prefix(prefix)?;
    let mut tx = store.read(OP).await?;
    let rows = sqlx::query(&format!(
        "SELECT {COLS} FROM quotas WHERE substr(key, 1, length($1)) = $1 \
         ORDER BY key, window_start_ms"
    ))
    .bind(prefix)
    .fetch_all(&mut *tx)
    .await
    .map_err(be(OP))?;
    tx.commit().await.map_err(be(OP))?;
    rows.iter().map(usage_from_row).collect()
}

pub(super) async fn prune_quotas(store: &PostgresStore, ended_by_ms: i64) -> Result<u64> {
    const OP: &str = "prune_quotas";
    let mut tx = store.write_progress(OP).await?;
    let done = sqlx::query("DELETE FROM quotas WHERE window_end_ms <= $1")
        .bind(ended_by_ms)
        .execute(&mut *tx)
        .await
        .map_err(be(OP))?;
    tx.commit().await.map_err(be(OP))?;
    Ok(done.rows_affected())
}
