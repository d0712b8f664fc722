//! Leases on PostgreSQL (see [`crate::lease`]): the same rules as `sqlite/leases.rs`, for
//! instances on different machines. A grant starts with `INSERT ... ON CONFLICT DO
//! NOTHING`: of acquirers racing for a lease that has no row yet, exactly one inserts it;
//! the others (and every acquirer of an existing lease) then read the row `FOR UPDATE`, so
//! they decide one after the other on what the previous one wrote, and never both see the
//! lease free. Acquire, renew and release commit with `synchronous_commit = off` like
//! dispatcher progress (a grant lost to a server crash was held by nobody who saw it
//! committed for long: the holder's next renewal finds it free and takes it again, or
//! another owner's epoch); a steal (a promotion, an operator's act) waits for the flush.

use super::{PostgresStore, be, col, col_unsigned, to_i64};
use crate::Result;
use crate::lease::{
    Lease, RELEASED_AT_MS, validate_grant, validate_lease_name, validate_lease_owner,
    validate_lease_prefix,
};
use sqlx::postgres::{PgConnection, PgRow};

const COLS: &str = "name, owner, epoch, acquired_at_ms, expires_at_ms";

fn lease_from_row(row: &PgRow) -> Result<Lease> {
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

/// Inserts `lease` if the name has no row yet; returns whether it did.
async fn insert_new(conn: &mut PgConnection, op: &'static str, lease: &Lease) -> Result<bool> {
    let done = sqlx::query(
        "INSERT INTO leases (name, owner, epoch, acquired_at_ms, expires_at_ms) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO NOTHING",
    )
    .bind(&lease.name)
    .bind(&lease.owner)
    .bind(to_i64(lease.epoch))
    .bind(lease.acquired_at_ms)
    .bind(lease.expires_at_ms)
    .execute(conn)
    .await
    .map_err(be(op))?;
    Ok(done.rows_affected() == 1)
}

/// The lease's row, held `FOR UPDATE` until the transaction ends.
async fn locked(conn: &mut PgConnection, op: &'static str, name: &str) -> Result<Lease> {
    let row = sqlx::query(&format!(
        "SELECT {COLS} FROM leases WHERE name = $1 FOR UPDATE"
    ))
    .bind(name)
    .fetch_one(conn)
    .await
    .map_err(be(op))?;
    lease_from_row(&row)
}

async fn update(conn: &mut PgConnection, op: &'static str, lease: &Lease) -> Result<()> {
    sqlx::query(
        "UPDATE leases SET owner = $2, epoch = $3, acquired_at_ms = $4, expires_at_ms = $5 \
         WHERE name = $1",
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
    store: &PostgresStore,
    name: &str,
    owner: &str,
    now_ms: i64,
    ttl_ms: i64,
) -> Result<Option<Lease>> {
    const OP: &str = "acquire_lease";
    let expires_at_ms = validate_grant(name, owner, now_ms, ttl_ms)?;
    let fresh = Lease {
        name: name.to_owned(),
        owner: owner.to_owned(),
        epoch: 1,
        acquired_at_ms: now_ms,
        expires_at_ms,
    };
    let mut tx = store.write_progress(OP).await?;
    if insert_new(&mut tx, OP, &fresh).await? {
        tx.commit().await.map_err(be(OP))?;
        return Ok(Some(fresh));
    }
    let held = locked(&mut tx, OP, name).await?;
    let lease = if held.owner == owner && !held.is_released() {
        // Mine and not released: renew, same epoch (nobody else held it since).
        Lease {
            expires_at_ms: expires_at_ms.max(held.expires_at_ms),
            ..held
        }
    } else if held.is_held_at(now_ms) {
        return Ok(None);
    } else {
        // Expired or released: a new grant (a new epoch when the owner changes).
        Lease {
            epoch: if held.owner == owner {
                held.epoch
            } else {
                held.epoch.saturating_add(1)
            },
            ..fresh
        }
    };
    update(&mut tx, OP, &lease).await?;
    tx.commit().await.map_err(be(OP))?;
    Ok(Some(lease))
}

pub(super) async fn steal_lease(
    store: &PostgresStore,
    name: &str,
    owner: &str,
    now_ms: i64,
    ttl_ms: i64,
) -> Result<Lease> {
    const OP: &str = "steal_lease";
    let expires_at_ms = validate_grant(name, owner, now_ms, ttl_ms)?;
    let fresh = Lease {
        name: name.to_owned(),
        owner: owner.to_owned(),
        epoch: 1,
        acquired_at_ms: now_ms,
        expires_at_ms,
    };
    let mut tx = store.write(OP).await?;
    if insert_new(&mut tx, OP, &fresh).await? {
        tx.commit().await.map_err(be(OP))?;
        return Ok(fresh);
    }
    let held = locked(&mut tx, OP, name).await?;
    let lease = Lease {
        epoch: held.epoch.saturating_add(1),
        ..fresh
    };
    update(&mut tx, OP, &lease).await?;
    tx.commit().await.map_err(be(OP))?;
    Ok(lease)
}

pub(super) async fn release_lease(store: &PostgresStore, name: &str, owner: &str) -> Result<bool> {
    const OP: &str = "release_lease";
    validate_lease_name(name)?;
    validate_lease_owner(owner)?;
    let mut tx = store.write_progress(OP).await?;
    let done = sqlx::query(
        "UPDATE leases SET expires_at_ms = $1 \
         WHERE name = $2 AND owner = $3 AND expires_at_ms <> $1",
    )
    .bind(RELEASED_AT_MS)
    .bind(name)
    .bind(owner)
    .execute(&mut *tx)
    .await
    .map_err(be(OP))?;
    tx.commit().await.map_err(be(OP))?;
    Ok(done.rows_affected() > 0)
}

pub(super) async fn leases(store: &PostgresStore, prefix: &str) -> Result<Vec<Lease>> {
    const OP: &str = "leases";
    validate_lease_prefix(prefix)?;
    let mut tx = store.read(OP).await?;
    let rows = sqlx::query(&format!(
        "SELECT {COLS} FROM leases WHERE substr(name, 1, length($1)) = $1 ORDER BY name"
    ))
    .bind(prefix)
    .fetch_all(&mut *tx)
    .await
    .map_err(be(OP))?;
    tx.commit().await.map_err(be(OP))?;
    rows.iter().map(lease_from_row).collect()
}
