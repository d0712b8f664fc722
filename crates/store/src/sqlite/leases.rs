//! Leases on SQLite (see [`crate::lease`]). Each operation is one `BEGIN IMMEDIATE`
//! transaction, so two acquirers (tasks or processes sharing the file) are serialised by
//! SQLite's write lock and never both see the lease free. Lease writes commit with
//! `synchronous=NORMAL` like dispatcher progress: a grant lost to a power loss was held by
//! a process that died with it.

use super::{SqliteStore, be, col, col_unsigned, to_i64};
use crate::Result;
use crate::lease::{
    Lease, RELEASED_AT_MS, validate_grant, validate_lease_name, validate_lease_owner,
    validate_lease_prefix,
};
use sqlx::sqlite::{SqliteConnection, SqliteRow};

const COLS: &str = "name, owner, epoch, acquired_at_ms, expires_at_ms";

fn lease_from_row(row: &SqliteRow) -> Result<Lease> {
    let name: String = col(row, "name", "leases", "?")?;
    let k = name.as_str();
    Ok(Lease {
        owner: col(row, "owner", "leases", k)?,
        epoch: col_unsigned(row, "epoch", "leases", k)?,
        acquired_at_ms: col(row, "acquired_at_ms", "leases", k)?,
        expires_at_ms: col(row, "expires_at_ms", "leases", k)?,
        name,
    })
}

async fn current(
    conn: &mut SqliteConnection,
    op: &'static str,
    name: &str,
) -> Result<Option<Lease>> {
    let row = sqlx::query(&format!("SELECT {COLS} FROM leases WHERE name = ?"))
        .bind(name)
        .fetch_optional(conn)
        .await
        .map_err(be(op))?;
    row.as_ref().map(lease_from_row).transpose()
}

async fn put(conn: &mut SqliteConnection, op: &'static str, lease: &Lease) -> Result<()> {
    sqlx::query(
        "INSERT INTO leases (name, owner, epoch, acquired_at_ms, expires_at_ms) \
         VALUES (?, ?, ?, ?, ?) \
         ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, epoch = excluded.epoch, \
         acquired_at_ms = excluded.acquired_at_ms, expires_at_ms = excluded.expires_at_ms",
    )
    .bind(&lease.name)
    .bind(&lease.owner)
    .bind(to_i64(lease.epoch))
    .bind(lease.acquired_at_ms)
    .bind(lease.expires_at_ms)
    .execute(conn)
    .await
    .map_err(be(op))?;
    Ok(())
}

pub(super) async fn acquire_lease(
    store: &SqliteStore,
    name: &str,
    owner: &str,
    now_ms: i64,
    ttl_ms: i64,
) -> Result<Option<Lease>> {
    const OP: &str = "acquire_lease";
    let expires_at_ms = validate_grant(name, owner, now_ms, ttl_ms)?;
    let mut tx = store.write_progress(OP).await?;
    let lease = match current(&mut tx, OP, name).await? {
        None => Lease {
            name: name.to_owned(),
            owner: owner.to_owned(),
            epoch: 1,
            acquired_at_ms: now_ms,
            expires_at_ms,
        },
        // Mine and not released: renew, same epoch (nobody else held it since).
        Some(held) if held.owner == owner && !held.is_released() => Lease {
            expires_at_ms: expires_at_ms.max(held.expires_at_ms),
            ..held
        },
        Some(held) if held.is_held_at(now_ms) => return Ok(None),
        // Expired or released: a new grant (a new epoch when the owner changes).
        Some(held) => Lease {
            epoch: if held.owner == owner {
                held.epoch
            } else {
                held.epoch.saturating_add(1)
            },
            owner: owner.to_owned(),
            acquired_at_ms: now_ms,
            expires_at_ms,
            name: held.name,
        },
    };
    put(&mut tx, OP, &lease).await?;
    tx.commit().await.map_err(be(OP))?;
    Ok(Some(lease))
}

pub(super) async fn steal_lease(
    store: &SqliteStore,
    name: &str,
    owner: &str,
    now_ms: i64,
    ttl_ms: i64,
) -> Result<Lease> {
    const OP: &str = "steal_lease";
    let expires_at_ms = validate_grant(name, owner, now_ms, ttl_ms)?;
    let mut tx = store.write(OP).await?;
    let epoch = match current(&mut tx, OP, name).await? {
        None => 1,
        Some(held) => held.epoch.saturating_add(1),
    };
    let lease = Lease {
        name: name.to_owned(),
        owner: owner.to_owned(),
        epoch,
        acquired_at_ms: now_ms,
        expires_at_ms,
    };
    put(&mut tx, OP, &lease).await?;
    tx.commit().await.map_err(be(OP))?;
    Ok(lease)
}

pub(super) async fn release_lease(store: &SqliteStore, name: &str, owner: &str) -> Result<bool> {
    const OP: &str = "release_lease";
    validate_lease_name(name)?;
    validate_lease_owner(owner)?;
    let mut tx = store.write_progress(OP).await?;
    let done = sqlx::query(
        "UPDATE leases SET expires_at_ms = ? WHERE name = ? AND owner = ? AND expires_at_ms <> ?",
    )
    .bind(RELEASED_AT_MS)
    .bind(name)
    .bind(owner)
    .bind(RELEASED_AT_MS)
    .execute(&mut *tx)
    .await
    .map_err(be(OP))?;
    tx.commit().await.map_err(be(OP))?;
    Ok(done.rows_affected() > 0)
}

pub(super) async fn leases(store: &SqliteStore, prefix: &str) -> Result<Vec<Lease>> {
    const OP: &str = "leases";
    validate_lease_prefix(prefix)?;
    let mut tx = store.read(OP).await?;
    let rows = sqlx::query(&format!(
        "SELECT {COLS} FROM leases WHERE substr(name, 1, length(?1)) = ?1 ORDER BY name"
    ))
    .bind(prefix)
    .fetch_all(&mut *tx)
    .await
    .map_err(be(OP))?;
    rows.iter().map(lease_from_row).collect()
}
